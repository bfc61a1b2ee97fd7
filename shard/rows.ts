// shard/rows.ts: the statements of the levels above the assignment: a
// record's row in any state (a move's incoming copy, its moved original, the
// tombstone), who this shard is, the cluster map it holds, and whether its
// MySQL takes writes. db.ts holds the expense API's own, over live rows only.

import type { Expense, Versioned } from '../api/expense.ts';
import { fromRow, RECORD, STORED, values, type StoredRow } from '../db.ts';
import type { Query } from '../mysql/connections.ts';

/**
 * A row's part in a reshard (api/cluster-map.ts, rules 3 and 4): only a live
 * row is an expense. An incoming row is a move's copy, not yet committed; a
 * moved row is the original that a move has handed off.
 */
export type State = 'live' | 'incoming' | 'moved';
export type Row = Versioned & { state: State };

type Statement = [string, unknown[]];

// A finished reshard forgets its moved rows this many at a time (the state
// index finds them): each statement stays far under the query timeout
// (mysql/connections.ts) however many moved, and the whole is linear in them.
export const FORGET_ROWS = 2_000;

const GET = `SELECT ${RECORD}, state FROM expenses WHERE id = ?`;
const INSERT = `INSERT INTO expenses (id, ${STORED.join(', ')}, version, state) VALUES (?, ${STORED.map(() => '?').join(', ')}, ?, ?)`;
const REPLACE = `UPDATE expenses SET ${STORED.map((f) => `${f} = ?`).join(', ')}, version = ? WHERE id = ? AND version = ? AND state = ?`;
const LIST = `SELECT ${RECORD}, state FROM expenses WHERE id > ? AND state = ? ORDER BY id LIMIT ?`;

export const statements = {
  get: (id: string): Statement => [GET, [id]],
  insert: (e: Expense, version: string, state: State): Statement => [INSERT, [e.id, ...values(e), version, state]],
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
  forgetMoved: (): Statement => ["DELETE FROM expenses WHERE state = 'moved' LIMIT ?", [FORGET_ROWS]],
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

export type Rows = ReturnType<typeof createRows>;

export function createRows(query: Query) {
  const changed = async ([sql, values]: Statement) => (await query<{ affectedRows: number }>(sql, values)).affectedRows > 0;
  const rows = async ([sql, values]: Statement) =>
    (await query<Array<StoredRow & { state: State }>>(sql, values)).map((r) => ({ ...fromRow(r), state: r.state }));
  const dupIsFalse = (err: unknown) => {
    if ((err as { code?: string }).code === 'ER_DUP_ENTRY') return false;
    throw err;
  };

  return {
    /** The row with this id, whatever its state. */
    get: async (id: string): Promise<Row | undefined> => (await rows(statements.get(id)))[0],
    /** Stores a row in `state` at `version` (a copy keeps its original's); false when the id has a row already. */
    insert: (e: Expense, version: string, state: State): Promise<boolean> => changed(statements.insert(e, version, state)).catch(dupIsFalse),
    /** Overwrites every field of a row in `state` that is still at version `expected`. */
    replace: (e: Expense, version: string, expected: string, state: State): Promise<boolean> => changed(statements.replace(e, version, expected, state)),
    /** Moves a row at `version` from one state to another; false when there is no such row. */
    shift: (id: string, version: string, from: State, to: State): Promise<boolean> => changed(statements.shift(id, version, from, to)),
    /** False when there was nothing to delete (with expected versions, nothing at one of them). */
    remove: (id: string, state: State, expected?: readonly string[]): Promise<boolean> => changed(statements.remove(id, state, expected)),
    /** Up to `limit` rows in `state` with ids after `after`, in id order. */
    list: (after: string, limit: number, state: State): Promise<Row[]> => rows(statements.list(after, limit, state)),
    /** Deletes every moved row, FORGET_ROWS at a time, until a statement finds fewer. */
    async forgetMoved(): Promise<void> {
      for (;;) if ((await query<{ affectedRows: number }>(...statements.forgetMoved())).affectedRows < FORGET_ROWS) return;
    },

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
    writeMap: (map: string, epoch: number, expected: number | undefined): Promise<boolean> => changed(statements.writeMap(map, epoch, expected)).catch(dupIsFalse),
  };
}
