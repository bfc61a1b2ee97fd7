// shard/move-rows.ts: the SQL of a reshard's batched moves (shard/move-pages.ts
// serves them; operator/move.ts sends them), over the expenses table and its
// state and version columns (schema.sql). Each write is ONE statement over a
// whole page of records, so one transaction: it changes each row only in the
// state, and at the version, that the page names for it (api/cluster-map.ts,
// rule 4). What each row became is read back after, by id: a row a step has
// changed does not change again within the epoch except by the next step.
// Except where the statement's own count says it: a copy that met no row of
// any of its ids inserted each one incoming, at its version; a hand-off or an
// adoption that changed as many rows as the page names changed each one, as
// named. Then nothing is read back (the usual case: a read of every row fewer
// per step).
// Records cross between the wire's form and MySQL's as db.ts converts them.

import type { Arc } from '../api/arcs.ts';
import type { Versioned } from '../api/expense.ts';
import { fromRow, RECORD, STORED, values, type StoredRow } from '../db.ts';
import type { Query } from '../mysql/connections.ts';

export type Found = { state: 'live' | 'incoming' | 'moved'; version: string };

// Step 1. A page of copies arrives as incoming. Where a row of the id is
// already there, only a live one is kept (a different record: a conflict);
// an incoming copy from a run that died, or a moved row (the tombstone of a
// record that lives elsewhere now), is replaced by the copy. Every column is
// assigned on the condition of the row's state before the statement, so
// `state` is assigned last.
const keepLive = (column: string) => `${column} = IF(state = 'live', ${column}, VALUES(${column}))`;
const COPY =
  `INSERT INTO expenses (id, ${STORED.join(', ')}, version, state) VALUES ? ` +
  `ON DUPLICATE KEY UPDATE ${[...STORED, 'version'].map(keepLive).join(', ')}, state = IF(state = 'live', 'live', 'incoming')`;
// Step 2: each original stops being live, if it is still the version copied.
const HAND_OFF = "UPDATE expenses SET state = 'moved' WHERE id IN (?) AND state = 'live' AND (id, version) IN (?)";
// Step 3: each copy becomes live, at the version handed off.
const ADOPT = "UPDATE expenses SET state = 'live' WHERE id IN (?) AND state = 'incoming' AND (id, version) IN (?)";
// Instead of step 3, for originals a client deleted meanwhile: their copies go.
const DISCARD = "DELETE FROM expenses WHERE id IN (?) AND state = 'incoming' AND (id, version) IN (?)";
const FOUND = 'SELECT id, state, version FROM expenses WHERE id IN (?)';
// Before a hand-off, the rows that are not live: those a run that died handed off already (usually none).
const NOT_LIVE = `${FOUND} AND state <> 'live'`;
const LIVE_RECORDS = `SELECT ${RECORD} FROM expenses WHERE id IN (?) AND state = 'live'`;

// The ids of the live rows in some arcs of the circle, in ring order after a
// point (keyset paging on ring_position, then id), from the index (state,
// ring_position, id) alone. ARCS arcs per statement, so that its text is one
// whatever the map; unused places get an empty arc.
export const ARCS = 32;
const ARC = '(ring_position >= ? AND ring_position < ?)';
const IN_ARCS =
  'SELECT id, ring_position AS at FROM expenses ' +
  `WHERE state = 'live' AND (${Array.from({ length: ARCS }, () => ARC).join(' OR ')}) ` +
  'AND (ring_position > ? OR (ring_position = ? AND id > ?)) ORDER BY ring_position, id LIMIT ?';
const LIVE_COUNT = "SELECT COUNT(*) AS n FROM expenses WHERE state = 'live'";
const COUNT_IN_ARCS = `${LIVE_COUNT} AND (${Array.from({ length: ARCS }, () => ARC).join(' OR ')})`;

const END = 'g'; // after every hex digit: the end of the circle

/** Up to ARCS arcs as a statement's bounds, from and to each; unused places get an empty arc. */
const bounds = (arcs: Arc[]) => Array.from({ length: ARCS }, (_, j) => arcs[j] ?? ['', '']).flatMap(([from, to]) => [from, to ?? END]);

export type Moves = ReturnType<typeof createMoves>;

/** The moves' statements, on the shard's own connections. */
export function createMoves(query: Query) {
  const pairs = (page: Versioned[]) => [page.map((r) => r.expense.id), page.map((r) => [r.expense.id, r.version])];

  async function found(ids: string[], sql = FOUND): Promise<Map<string, Found>> {
    const rows = await query<Array<Found & { id: string }>>(sql, [ids]);
    return new Map(rows.map(({ id, state, version }) => [id, { state, version }]));
  }

  // Every row of a page (its ids are distinct: shard/move-pages.ts) as the step made it.
  const all = (page: Versioned[], state: Found['state']) => new Map(page.map((r) => [r.expense.id, { state, version: r.version }]));

  return {
    /** Step 1 over a page; what each id's row is after it. */
    async copy(page: Versioned[]): Promise<Map<string, Found>> {
      const rows = page.map(({ expense: e, version }) => [e.id, ...values(e), version, 'incoming']);
      const ok = await query<{ affectedRows: number; message: string }>(COPY, [rows]);
      // "Records: N  Duplicates: 0": no row of these ids was there, so each was inserted as sent.
      if (/\bDuplicates: 0\b/.test(ok.message ?? '') && ok.affectedRows === page.length) return all(page, 'incoming');
      return found(rows.map((r) => r[0] as string));
    },
    /** Step 2 over a page; what each id's row was before it where it was not live, and what each is after it. */
    async handOff(page: Versioned[]): Promise<{ before: Map<string, Found>; after: Map<string, Found> }> {
      const ids = page.map((r) => r.expense.id);
      const before = await found(ids, NOT_LIVE);
      const ok = await query<{ affectedRows: number }>(HAND_OFF, pairs(page));
      return { before, after: ok.affectedRows === page.length ? all(page, 'moved') : await found(ids) };
    },
    /** Step 3 over a page; what each id's row is after it. */
    async adopt(page: Versioned[]): Promise<Map<string, Found>> {
      const ok = await query<{ affectedRows: number }>(ADOPT, pairs(page));
      return ok.affectedRows === page.length ? all(page, 'live') : found(page.map((r) => r.expense.id));
    },
    /** Discards the copies of a page; what each id's row is after it. */
    async discard(page: Versioned[]): Promise<Map<string, Found>> {
      await query(DISCARD, pairs(page));
      return found(page.map((r) => r.expense.id));
    },
    /** The live records of these ids, as the expense API would answer them. */
    async live(ids: string[]): Promise<Versioned[]> {
      if (ids.length === 0) return [];
      return (await query<StoredRow[]>(LIVE_RECORDS, [ids])).map(fromRow);
    },
    /** The ids of up to `limit` live records in `arcs` (in ring order), after the point `after` (its position and id), with the position of each. */
    async inArcs(arcs: Arc[], after: { at: string; id: string }, limit: number): Promise<Array<{ id: string; at: string }>> {
      const out: Array<{ id: string; at: string }> = [];
      const ahead = arcs.filter(([, to]) => to === undefined || to > after.at);
      for (let i = 0; i < ahead.length && out.length < limit; i += ARCS) {
        out.push(...(await query<Array<{ id: string; at: string }>>(IN_ARCS, [...bounds(ahead.slice(i, i + ARCS)), after.at, after.at, after.id, limit - out.length])));
      }
      return out;
    },
    /** How many live records lie in `arcs`, from the index. */
    async countInArcs(arcs: Arc[]): Promise<number> {
      let n = 0;
      for (let i = 0; i < arcs.length; i += ARCS) {
        n += Number((await query<Array<{ n: number | string }>>(COUNT_IN_ARCS, bounds(arcs.slice(i, i + ARCS))))[0]!.n);
      }
      return n;
    },
    /** How many live records this shard holds. */
    async liveCount(): Promise<number> {
      return Number((await query<Array<{ n: number | string }>>(LIVE_COUNT))[0]!.n);
    },
  };
}
