// db.ts: every SQL statement of the expense service, and what its results mean.
//
// Values only ever travel as placeholders. A record arrives as one JSON
// object, built by MySQL (see COLUMNS).
// mysql/connections.ts holds the connections these statements travel on.

import { randomBytes } from 'node:crypto';
import { EDITABLE, type Expense, type Versioned } from './api/expense.ts';
import { connections, driverOptions, POOL_SIZE, type DbConfig } from './mysql/connections.ts';

export type { DbConfig };

/**
 * A row's part in a reshard (api/cluster-map.ts, rules 3 and 4): only a live
 * row is an expense. An incoming row is a move's copy, not yet committed; a
 * moved row is the original that a move has handed off.
 */
export type State = 'live' | 'incoming' | 'moved';
export type Row = Versioned & { state: State };

// Each stored field, in the order the API writes them.
const STORED = [...EDITABLE, 'status', 'decision_date'] as const;

// The wire writes dates MM-DD-YYYY, no decision date as "", and amounts in
// their shortest form, "700" or "12.5" (api/expense.ts). MySQL keeps real
// dates, YYYY-MM-DD or NULL, and exact DECIMALs, which it reads back with two
// decimals. These lines are the only code that knows both forms.
const DATES: ReadonlySet<string> = new Set(['submit_date', 'decision_date']);
const toMysqlDate = (d: string) => (d === '' ? null : `${d.slice(6)}-${d.slice(0, 2)}-${d.slice(3, 5)}`);
const fromMysqlDate = (d: string | null) => (d === null ? '' : `${d.slice(5, 7)}-${d.slice(8)}-${d.slice(0, 4)}`);
const fromMysqlAmount = (a: string) => a.replace(/\.?0+$/, ''); // "700.00" is "700", "12.50" is "12.5"
const values = (e: Expense) => STORED.map((f) => (DATES.has(f) ? toMysqlDate(e[f]) : e[f]));

// A record arrives as one column, the JSON object that MySQL builds: the
// driver decodes six strings describing each column of a result before its
// rows, and twelve columns cost a GET about 10 µs (docs/performance.md). The
// amount travels as text: as a JSON number it would be read as a double.
const COLUMNS = `JSON_OBJECT('id', id, ${STORED.map((f) => `'${f}', ${f === 'estimated_costs' ? 'CAST(estimated_costs AS CHAR)' : f}`).join(', ')}) AS expense, version, state`;

type Statement = [string, unknown[]];

// The statements' text, written once: a request builds only its values.
const GET = `SELECT ${COLUMNS} FROM expenses WHERE id = ?`;
const INSERT = `INSERT INTO expenses (id, ${STORED.join(', ')}, version, state) VALUES (?, ${STORED.map(() => '?').join(', ')}, ?, ?)`;
const REPLACE = `UPDATE expenses SET ${STORED.map((f) => `${f} = ?`).join(', ')}, version = ? WHERE id = ? AND version = ? AND state = ?`;
const LIST = `SELECT ${COLUMNS} FROM expenses WHERE id > ? AND state = ? ORDER BY id LIMIT ?`;

/**
 * Every statement the service sends, with its values. createDb runs them;
 * bench/e2e.ts sends the same ones over the bare driver, to show what
 * db.ts costs on top of it.
 */
export const statements = {
  get: (id: string): Statement => [GET, [id]],
  insert: (e: Expense, version: string, state: State = 'live'): Statement => [INSERT, [e.id, ...values(e), version, state]],
  // Every field at once, only over the version the caller read: the check and
  // the write are one statement, so no other write can slip in between.
  replace: (e: Expense, version: string, expected: string, state: State): Statement => [REPLACE, [...values(e), version, e.id, expected, state]],
  shift: (id: string, version: string, from: State, to: State): Statement => [
    'UPDATE expenses SET state = ? WHERE id = ? AND version = ? AND state = ?',
    [to, id, version, from],
  ],
  remove: (id: string, state: State, expected?: readonly string[]): Statement =>
    expected === undefined
      ? ['DELETE FROM expenses WHERE id = ? AND state = ?', [id, state]]
      : ['DELETE FROM expenses WHERE id = ? AND state = ? AND version IN (?)', [id, state, expected]],
  list: (after: string, limit: number, state: State): Statement => [LIST, [after, state, limit]],
  forgetMoved: (): Statement => ["DELETE FROM expenses WHERE state = 'moved'", []],
  shard: (): Statement => ['SELECT id FROM shard', []],
  readMap: (): Statement => ['SELECT epoch, map FROM cluster_map', []],
  readOnly: (): Statement => ['SELECT @@global.read_only AS readOnly', []], // a standby, or a fenced old primary (rule 8)
  // The map's compare-and-set: a first map only where there is none, a later
  // one only over the epoch the caller read.
  writeMap: (map: string, epoch: number, expected: number | undefined): Statement =>
    expected === undefined
      ? ['INSERT INTO cluster_map (epoch, map) VALUES (?, ?)', [epoch, map]]
      : ['UPDATE cluster_map SET epoch = ?, map = ? WHERE epoch = ?', [epoch, map, expected]],
};

// Versions come from a pool of random bytes, refilled 8 KiB at a time: one
// call into the system's generator per thousand writes, not one per write
// (it was 5% of a server's CPU under load).
let pool = Buffer.alloc(0);
let used = 0;

/** A fresh version for a write: 64 random bits, as 16 hex digits. */
function newVersion(): string {
  if (used === pool.length) [pool, used] = [randomBytes(8192), 0];
  used += 8;
  return pool.toString('hex', used - 8, used);
}

function row({ expense, version, state }: { expense: string; version: string; state: State }): Row {
  const e: Expense = JSON.parse(expense);
  e.estimated_costs = fromMysqlAmount(e.estimated_costs);
  e.submit_date = fromMysqlDate(e.submit_date);
  e.decision_date = fromMysqlDate(e.decision_date);
  return { expense: e, version, state };
}

type Changed = { affectedRows: number };

export type Db = ReturnType<typeof createDb>;

export function createDb(config: DbConfig) {
  const query = connections(driverOptions(config), POOL_SIZE);
  // When a write last failed for lack of disk space, while no write has succeeded since.
  let outOfDiskAt: number | undefined;

  /** Runs a write, noting whether the disk has room for it; true when it changed a row. */
  async function write([sql, values]: Statement): Promise<boolean> {
    try {
      // affectedRows counts the rows found, changed or not (the driver's FOUND_ROWS flag).
      const changed = (await query<Changed>(sql, values)).affectedRows > 0;
      outOfDiskAt = undefined;
      return changed;
    } catch (err) {
      if (isOutOfDisk(err)) outOfDiskAt = Date.now();
      throw err;
    }
  }

  // A delete needs no room on disk: its success says nothing about whether writes would succeed.
  const remove = async ([sql, values]: Statement) => (await query<Changed>(sql, values)).affectedRows > 0;
  const rows = async ([sql, values]: Statement) => (await query<Array<{ expense: string; version: string; state: State }>>(sql, values)).map(row);

  return {
    /** The row with this id, whatever its state. */
    get: async (id: string): Promise<Row | undefined> => (await rows(statements.get(id)))[0],

    /**
     * Stores a new row, server fields included: its version, or undefined
     * when the id has a row already. A copy from another shard keeps its version.
     */
    async insert(e: Expense, version = newVersion(), state: State = 'live'): Promise<string | undefined> {
      try {
        await write(statements.insert(e, version, state));
        return version;
      } catch (err) {
        if ((err as { code?: string }).code === 'ER_DUP_ENTRY') return undefined;
        throw err;
      }
    },

    /** Overwrites every field of a row that is still at version `expected`: its new version, or undefined. */
    async replace(e: Expense, expected: string, state: State, version = newVersion()): Promise<string | undefined> {
      return (await write(statements.replace(e, version, expected, state))) ? version : undefined;
    },

    /** Moves a row at `version` from one state to another; false when there is no such row. */
    shift: (id: string, version: string, from: State, to: State): Promise<boolean> => write(statements.shift(id, version, from, to)),

    /** False when there was nothing to delete (with expected versions, nothing at one of them). */
    remove: (id: string, state: State, expected?: readonly string[]): Promise<boolean> => remove(statements.remove(id, state, expected)),

    /** Up to `limit` rows in `state` with ids after `after`, in id order. */
    list: (after: string, limit: number, state: State): Promise<Row[]> => rows(statements.list(after, limit, state)),

    forgetMoved: async (): Promise<void> => void (await remove(statements.forgetMoved())),

    /** The shard's name for itself (schema.sql makes it); a query, so it also proves MySQL answers. */
    async shard(): Promise<string> {
      return (await query<Array<{ id: string }>>(...statements.shard()))[0]?.id ?? '';
    },

    /** True when this MySQL takes the app's writes: it is not read-only (a standby, or a fenced primary). */
    writable: async (): Promise<boolean> => Number((await query<Array<{ readOnly: string }>>(...statements.readOnly()))[0]?.readOnly) === 0,
    /** The cluster map this shard holds, as stored JSON beside its epoch column, or undefined. */
    async readMap(): Promise<{ epoch: number; map: string } | undefined> {
      const row = (await query<Array<{ epoch: number | string; map: string }>>(...statements.readMap()))[0];
      return row && { epoch: Number(row.epoch), map: row.map };
    },

    /** Stores a map at `epoch` if the stored one is still at `expected` (undefined: if there is none). */
    async writeMap(map: string, epoch: number, expected: number | undefined): Promise<boolean> {
      try {
        return await write(statements.writeMap(map, epoch, expected));
      } catch (err) {
        if ((err as { code?: string }).code === 'ER_DUP_ENTRY') return false;
        throw err;
      }
    },

    /**
     * True while writes fail for lack of disk space: the last write failed so,
     * less than 10 s ago. After that, the next write finds out again, so that
     * freed space is noticed with no restart.
     */
    outOfDisk(): boolean {
      return outOfDiskAt !== undefined && Date.now() - outOfDiskAt < 10_000;
    },

    query, // the pool itself, for the statements of later levels' own rooms (page/counts.ts)
    close: query.close,
  };
}

// MySQL's ways of saying that the disk is full: a table that cannot grow, or
// a write the operating system refused (errno 28, ENOSPC).
const OUT_OF_DISK = new Set(['ER_RECORD_FILE_FULL', 'ER_DISK_FULL', 'ER_DISK_FULL_NOWAIT']);

/** True when a write failed because MySQL's disk is full: nothing was written, and retrying will not help until space is freed. */
export function isOutOfDisk(err: unknown): boolean {
  const e = err as { code?: string; sqlMessage?: string } | null;
  return OUT_OF_DISK.has(e?.code ?? '') || /errno: 28|No space left/i.test(e?.sqlMessage ?? '');
}
