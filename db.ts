// db.ts: every SQL statement of the expense API, and what its results mean.
// Values only ever travel as placeholders, on mysql/connections.ts's connections.
//
// Plumbing (README, level 1): a row's version is its ETag, so that a write can
// go only over what a client read; and each statement touches only rows whose
// state is 'live': later levels keep other rows of an id in the same table,
// under its one primary key, so that a shard never holds two rows of an id.

import { EDITABLE, newVersion, type Expense, type Versioned } from './api/expense.ts';
import { asOneColumn, type Query } from './mysql/connections.ts';

// Each stored field, in the order the API writes them.
export const STORED = [...EDITABLE, 'status', 'decision_date'] as const;

// The wire writes dates MM-DD-YYYY, no decision date as "", and amounts in
// their shortest form, "700" or "12.5" (api/expense.ts). MySQL keeps real
// dates, YYYY-MM-DD or NULL, and exact DECIMALs, which it reads back with two
// decimals. These lines are the only code that knows both forms.
const DATES: ReadonlySet<string> = new Set(['submit_date', 'decision_date']);
const toMysqlDate = (d: string) => (d === '' ? null : `${d.slice(6)}-${d.slice(0, 2)}-${d.slice(3, 5)}`);
const fromMysqlDate = (d: string | null) => (d === null ? '' : `${d.slice(5, 7)}-${d.slice(8)}-${d.slice(0, 4)}`);
const fromMysqlAmount = (a: string) => a.replace(/\.?0+$/, ''); // "700.00" is "700", "12.50" is "12.5"
/** A record's stored fields, in STORED's order, as MySQL takes them. */
export const values = (e: Expense) => STORED.map((f) => (DATES.has(f) ? toMysqlDate(e[f]) : e[f]));

/** A stored row as MySQL hands it back: the record as one JSON column (mysql/connections.ts says why), and its version. */
export type StoredRow = { expense: string; version: string };

/** A stored row as the API writes it. */
export function fromRow({ expense, version }: StoredRow): Versioned {
  const e: Expense = JSON.parse(expense);
  e.estimated_costs = fromMysqlAmount(e.estimated_costs);
  e.submit_date = fromMysqlDate(e.submit_date);
  e.decision_date = fromMysqlDate(e.decision_date);
  return { expense: e, version };
}

/** What a SELECT of records names: the record, then its version. */
export const RECORD = `${asOneColumn(['id', ...STORED], ['estimated_costs'])} AS expense, version`;

type Statement = [string, unknown[]];

// The statements' text, written once: a request builds only its values.
const GET = `SELECT ${RECORD} FROM expenses WHERE id = ? AND state = 'live'`;
const INSERT = `INSERT INTO expenses (id, ${STORED.join(', ')}, version) VALUES (?, ${STORED.map(() => '?').join(', ')}, ?)`;
const REPLACE = `UPDATE expenses SET ${STORED.map((f) => `${f} = ?`).join(', ')}, version = ? WHERE id = ? AND version = ? AND state = 'live'`;
const DELETE = `DELETE FROM expenses WHERE id = ? AND version = ? AND state = 'live'`;
const LIST = `SELECT ${RECORD} FROM expenses WHERE id > ? AND state = 'live' ORDER BY id LIMIT ?`;

/** Every statement of the API, with its values. bench/e2e.ts sends them over the bare driver too. */
export const statements = {
  get: (id: string): Statement => [GET, [id]],
  insert: (e: Expense, version: string): Statement => [INSERT, [e.id, ...values(e), version]],
  // Every field at once, only over the version the caller read: the check and
  // the write are one statement, so no other write can slip in between.
  replace: (e: Expense, version: string, expected: string): Statement => [REPLACE, [...values(e), version, e.id, expected]],
  remove: (id: string, expected: string): Statement => [DELETE, [id, expected]],
  list: (after: string, limit: number): Statement => [LIST, [after, limit]],
};

export type Db = ReturnType<typeof createDb>;

export function createDb(query: Query) {
  const changed = async ([sql, values]: Statement) => (await query<{ affectedRows: number }>(sql, values)).affectedRows > 0;
  const rows = async ([sql, values]: Statement) => (await query<StoredRow[]>(sql, values)).map(fromRow);

  return {
    get: async (id: string): Promise<Versioned | undefined> => (await rows(statements.get(id)))[0],

    /** Stores a new record: its version, or undefined when the id is taken. */
    async insert(e: Expense): Promise<string | undefined> {
      const version = newVersion();
      try {
        await query(...statements.insert(e, version));
        return version;
      } catch (err) {
        if ((err as { code?: string }).code === 'ER_DUP_ENTRY') return undefined;
        throw err;
      }
    },

    /** Overwrites a record that is still at version `expected`: its new version, or undefined when it changed. */
    async replace(e: Expense, expected: string): Promise<string | undefined> {
      const version = newVersion();
      return (await changed(statements.replace(e, version, expected))) ? version : undefined;
    },

    /** Deletes a record that is still at version `expected`; false when it changed or is gone. */
    remove: (id: string, expected: string): Promise<boolean> => changed(statements.remove(id, expected)),

    /** Up to `limit` records with ids after `after`, in id order. */
    list: (after: string, limit: number): Promise<Versioned[]> => rows(statements.list(after, limit)),

    ping: async (): Promise<void> => void (await query('SELECT 1')), // proves that MySQL answers
  };
}
