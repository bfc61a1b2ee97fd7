// db.ts: the connection pool and every SQL statement of the expense service.
//
// Values only ever travel as placeholders. The columns arrive already in their
// wire form (see COLUMNS), so a row from MySQL is the JSON the API returns.

import { randomBytes } from 'node:crypto';
import mysql from 'mysql';
import { EDITABLE, type Editable, type Expense, type Versioned } from './api/expense.ts';

export type DbConfig = {
  socketPath?: string;
  host?: string;
  port?: number;
  user: string;
  password: string;
  database: string;
};

export const POOL_SIZE = 10;

// Fail fast when MySQL is gone or stuck: the caller gets a 503 in seconds, not a hang.
const CONNECT_TIMEOUT_MS = 2_000;
const QUERY_TIMEOUT_MS = 5_000;
// Queries waiting beyond this get an error at once, rather than an
// ever-growing queue.
const QUEUE_LIMIT = 1_000;

// Read each column in its wire form, so the driver has nothing left to convert.
// Amounts lose trailing zeros ("700.00" is "700"), as api/expense.ts writes them.
const COLUMNS = `id, name, email, category, description, link,
  TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM CAST(estimated_costs AS CHAR))) AS estimated_costs,
  DATE_FORMAT(submit_date, '%m-%d-%Y') AS submit_date,
  status,
  IFNULL(DATE_FORMAT(decision_date, '%m-%d-%Y'), '') AS decision_date,
  version`;

// How each stored field is written: dates arrive as MM-DD-YYYY, and an empty
// decision date is none.
const STORED = [...EDITABLE, 'status', 'decision_date'] as const;
type Stored = (typeof STORED)[number];
const WRITE: Record<Stored, string> = {
  name: '?',
  email: '?',
  category: '?',
  description: '?',
  link: '?',
  estimated_costs: '?',
  submit_date: "STR_TO_DATE(?, '%m-%d-%Y')",
  status: '?',
  decision_date: "STR_TO_DATE(NULLIF(?, ''), '%m-%d-%Y')",
};

const INSERT = `INSERT INTO expenses (id, ${STORED.join(', ')}, version) VALUES (?, ${STORED.map((f) => WRITE[f]).join(', ')}, ?)`;

/**
 * The two statements of the hot path, with their values. createDb sends
 * them; bench/e2e.ts sends the very same ones over the bare driver, to show
 * what db.ts costs on top of it.
 */
export const statements = {
  insert: (e: Expense, version: string): [string, unknown[]] => [INSERT, [e.id, ...STORED.map((f) => e[f]), version]],
  get: (id: string): [string, unknown[]] => [`SELECT ${COLUMNS} FROM expenses WHERE id = ?`, [id]],
};
const REPLACE = `UPDATE expenses SET ${STORED.map((f) => `${f} = ${WRITE[f]}`).join(', ')}, version = ? WHERE id = ? AND version = ?`;

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

/** "Only if the stored version is one of these" (never an empty list); undefined: whatever it is. */
type Expected = readonly string[] | undefined;

function versioned({ version, ...expense }: Expense & { version: string }): Versioned {
  return { expense, version };
}

export type Db = ReturnType<typeof createDb>;

export function createDb(config: DbConfig) {
  const query = connections(driverOptions(config), POOL_SIZE);
  // When a write last failed for lack of disk space, while no write has succeeded since.
  let outOfDiskAt: number | undefined;

  /** Runs a write, noting whether the disk has room for it. */
  async function write<T>(sql: string, values: unknown[]): Promise<T> {
    try {
      const result = await query<T>(sql, values);
      outOfDiskAt = undefined;
      return result;
    } catch (err) {
      if (isOutOfDisk(err)) outOfDiskAt = Date.now();
      throw err;
    }
  }

  async function get(id: string): Promise<Versioned | undefined> {
    const rows = await query<Array<Expense & { version: string }>>(...statements.get(id));
    return rows[0] === undefined ? undefined : versioned(rows[0]);
  }

  // `AND version IN (...)` when the caller expects a version: the check and
  // the write are one statement, so no other write can slip in between.
  const only = (expected: Expected) => (expected === undefined ? '' : ' AND version IN (?)');
  const values = (expected: Expected) => (expected === undefined ? [] : [expected]);

  return {
    get,

    /**
     * Stores a new record, server fields included; its version, or undefined
     * when the id is already taken. A copy from another shard keeps its version.
     */
    async insert(e: Expense, version = newVersion()): Promise<string | undefined> {
      try {
        await write(...statements.insert(e, version));
        return version;
      } catch (err) {
        if (codeOf(err) === 'ER_DUP_ENTRY') return undefined;
        throw err;
      }
    },

    /** Changes some fields; false when no record has this id (and an expected version). */
    async update(id: string, fields: Partial<Record<Editable, string>>, expected?: Expected): Promise<boolean> {
      const names = EDITABLE.filter((f) => fields[f] !== undefined);
      const sets = names.map((f) => `${f} = ${WRITE[f]}`).join(', ');
      const sql = `UPDATE expenses SET ${sets}, version = ? WHERE id = ?${only(expected)}`;
      const result = await write<{ affectedRows: number }>(sql, [...names.map((f) => fields[f]), newVersion(), id, ...values(expected)]);
      // affectedRows counts the rows found, changed or not (the driver's FOUND_ROWS flag).
      return result.affectedRows > 0;
    },

    /** Overwrites a record with a copy, every field and the version, if it still has version `expected`. */
    async replace(e: Expense, version: string, expected: string): Promise<boolean> {
      const result = await write<{ affectedRows: number }>(REPLACE, [...STORED.map((f) => e[f]), version, e.id, expected]);
      return result.affectedRows > 0;
    },

    /** False when there was nothing to delete (with an expected version, nothing of that version). */
    async remove(id: string, expected?: Expected): Promise<boolean> {
      const result = await query<{ affectedRows: number }>(`DELETE FROM expenses WHERE id = ?${only(expected)}`, [id, ...values(expected)]);
      return result.affectedRows > 0;
    },

    /** Up to `limit` records with ids after `after`, in id order. */
    async list(after: string, limit: number): Promise<Versioned[]> {
      const rows = await query<Array<Expense & { version: string }>>(`SELECT ${COLUMNS} FROM expenses WHERE id > ? ORDER BY id LIMIT ?`, [after, limit]);
      return rows.map(versioned);
    },

    /** The shard's name for itself (schema.sql makes it); a query, so it also proves MySQL answers. */
    async shard(): Promise<string> {
      const rows = await query<Array<{ id: string }>>('SELECT id FROM shard');
      return rows[0]?.id ?? '';
    },

    /**
     * True while writes fail for lack of disk space: the last write failed so,
     * less than OUT_OF_DISK_MS ago. After that, the next write finds out again,
     * so that freed space is noticed with no restart.
     */
    outOfDisk(): boolean {
      return outOfDiskAt !== undefined && Date.now() - outOfDiskAt < OUT_OF_DISK_MS;
    },

    close: query.close,
  };
}

/** The driver's settings: every trap of mysqljs configured away. */
export function driverOptions(config: DbConfig): mysql.ConnectionConfig {
  // @types/mysql does not know localInfile, which the driver reads.
  const options: mysql.ConnectionConfig & { localInfile: boolean } = {
    socketPath: config.socketPath,
    host: config.host,
    port: config.port,
    user: config.user,
    password: config.password,
    database: config.database,
    connectTimeout: CONNECT_TIMEOUT_MS,
    charset: 'UTF8MB4_UNICODE_CI',
    // The driver's defaults turn DECIMAL into a lossy Number and DATE into a
    // local-midnight Date. Strings are exact.
    supportBigNumbers: true,
    bigNumberStrings: true,
    dateStrings: true,
    // An object as a value must never expand into SQL (`id = ?` with {id: 1}
    // would become id = `id` = 1). Callers validate first; this is the backstop.
    stringifyObjects: true,
    // A server must not be able to ask us for our files.
    localInfile: false,
    multipleStatements: false,
    // Long stack traces cost a captured Error on every query.
    trace: false,
  };
  return options;
}

/**
 * A fixed set of connections, each running its queries one after another.
 *
 * Why not mysql.createPool: it pings a connection every time it hands one out,
 * so every query costs two round trips to MySQL. Here a query goes to the
 * connection with the least work queued. A connection that ends, because
 * MySQL closed it or because of a fatal error, is dropped, and the next query
 * in its place opens a fresh one: when MySQL comes back, so do we.
 */
function connections(options: mysql.ConnectionConfig, size: number) {
  type Slot = { connection: mysql.Connection; queued: number };
  const slots: Array<Slot | undefined> = Array.from({ length: size }, () => undefined);
  let pending = 0; // queries sent or queued, on all connections

  function open(i: number): Slot {
    const connection = mysql.createConnection(options);
    const slot: Slot = { connection, queued: 0 };
    const drop = () => {
      if (slots[i] === slot) slots[i] = undefined;
    };
    connection.on('end', drop);
    // A fatal error that no query is waiting for arrives as an event; unheard,
    // it would crash the process. The queries that were waiting get it too.
    connection.on('error', drop);
    // Strict mode makes MySQL refuse a value that does not fit, instead of
    // storing a truncated one with a warning nobody reads. Should this fail,
    // the connection is broken and the query queued behind it reports that.
    connection.query("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO'", () => {});
    return (slots[i] = slot);
  }

  function query<T>(sql: string, values: unknown[] = []): Promise<T> {
    if (pending >= QUEUE_LIMIT) {
      // The code mysql.createPool uses for the same condition.
      return Promise.reject(Object.assign(new Error(`more than ${QUEUE_LIMIT} queries are waiting for MySQL`), { code: 'POOL_ENQUEUELIMIT' }));
    }
    let best = 0;
    for (let i = 1; i < size; i++) if ((slots[i]?.queued ?? 0) < (slots[best]?.queued ?? 0)) best = i;
    const slot = slots[best] ?? open(best);
    slot.queued++;
    pending++;
    return new Promise((resolve, reject) => {
      slot.connection.query({ sql, values, timeout: QUERY_TIMEOUT_MS }, (err: mysql.MysqlError | null, result: T) => {
        slot.queued--;
        pending--;
        if (err) reject(err);
        else resolve(result);
      });
    });
  }

  /** Lets the queued queries finish, then closes every connection. */
  query.close = async (): Promise<void> => {
    const live = slots.filter((slot) => slot !== undefined);
    slots.fill(undefined);
    await Promise.all(live.map(({ connection }) => new Promise<void>((resolve) => connection.end(() => resolve()))));
  };

  return query;
}

function codeOf(err: unknown): string | undefined {
  return (err as { code?: string } | null)?.code;
}

// Errors that mean "MySQL cannot be reached or cannot take more work right
// now", as opposed to a bug in a query: the request may succeed if retried.
const UNAVAILABLE = new Set([
  'POOL_ENQUEUELIMIT',
  'ER_CON_COUNT_ERROR',
  'ER_SERVER_SHUTDOWN',
  'ER_LOCK_WAIT_TIMEOUT',
  'ER_LOCK_DEADLOCK',
]);

const OUT_OF_DISK_MS = 10_000;

// MySQL's ways of saying that the disk is full: a table that cannot grow, or
// a write the operating system refused (errno 28, ENOSPC).
const OUT_OF_DISK = new Set(['ER_RECORD_FILE_FULL', 'ER_DISK_FULL', 'ER_DISK_FULL_NOWAIT']);

/** True when a write failed because MySQL's disk is full: nothing was written, and retrying will not help until space is freed. */
export function isOutOfDisk(err: unknown): boolean {
  const e = err as { code?: string; sqlMessage?: string } | null;
  return OUT_OF_DISK.has(e?.code ?? '') || /errno: 28|No space left/i.test(e?.sqlMessage ?? '');
}

/** True when an error from this module means the database is unavailable, not that a query is wrong. */
export function isUnavailable(err: unknown): boolean {
  // The driver marks every error that kills a connection (refused, lost,
  // timed out, access denied) as fatal.
  return (err as { fatal?: boolean } | null)?.fatal === true || UNAVAILABLE.has(codeOf(err) ?? '');
}
