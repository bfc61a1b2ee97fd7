// page/counts.ts: what a shard can count of its own records, cheaply, for
// the live page (page/watch.ts asks every node): its rows by state, read
// from an index alone (shard/cluster-schema.sql's, which begins with the
// state); and, while a reshard runs, how many records it has to hand off in all.
//
// A reshard's progress, from what the shards know: a record handed off
// leaves a moved row (a tombstone) on its old owner until the reshard ends
// (api/cluster-map.ts, rule 4), so the moved rows are the records moved so
// far. Those still to go are the live rows in the arcs the shard loses
// (lab/ring-changes.ts), counted by their MD5 in MariaDB. Counted once per
// reshard's epoch, moved + to go is the total: no record joins those arcs
// here while it runs (rule 3a: the old owner creates no id it lacks), and
// one deleted meanwhile leaves the total one too high.

import { HashRing } from '../ring.ts';
import { changes } from '../lab/ring-changes.ts';
import type { ClusterMap } from '../api/cluster-map.ts';
import type { Query } from '../mysql/connections.ts';
import type { State } from '../shard/rows.ts';
import type { Context } from '../shard/context.ts';
import type { Reply } from '../shard/http.ts';

type Range = { from: string; to: string }; // MD5 positions, from <= h < to; from >= to wraps past 0

// Rows by state, read from the index (state, ring_position, id) alone; and, in one statement so
// that no move falls between two counts, the moved rows with the live rows whose MD5(id),
// ring.ts's position of the id, is in one of the ranges.
const BY_STATE = 'SELECT state, COUNT(*) AS n FROM expenses GROUP BY state';
const inRange = (r: Range) => (r.from < r.to ? ' OR MD5(id) >= ? AND MD5(id) < ?' : ' OR MD5(id) >= ? OR MD5(id) < ?');
const handOff = (ranges: Range[]) => `SELECT COUNT(*) AS n FROM expenses WHERE state = 'moved' OR state = 'live' AND (FALSE${ranges.map(inRange).join('')})`;

/** This shard's rows by state, its role and epoch, and while a reshard runs, how many records it hands off in all. */
export async function counts({ mysql, held }: Context): Promise<Reply> {
  const byState = await mysql<Array<{ state: State; n: number }>>(BY_STATE);
  const rows: Record<State, number> = { live: 0, incoming: 0, moved: 0, ...Object.fromEntries(byState.map((r) => [r.state, Number(r.n)])) };
  const map = held.map;
  const handsOff = map?.moving === undefined ? null : await total(mysql, map, held.shard);
  const body = { shard: held.shard, role: held.writable ? 'primary' : 'standby', epoch: map?.epoch ?? null, ...rows, handsOff };
  return { status: 200, body, headers: { 'Cache-Control': 'no-store' } };
}

let counted: { epoch: number; shard: string; total: number } | undefined; // the last reshard's total, by its epoch

/** The records this shard hands off in the reshard under way: moved so far, and live ones in the arcs it loses. */
async function total(query: Query, map: ClusterMap, shard: string): Promise<number> {
  if (counted?.epoch === map.epoch && counted.shard === shard) return counted.total;
  const me = map.nodes.find((n) => n.shard === shard)?.name;
  const ring = new HashRing(map.nodes.map((n) => n.name), map.replicas);
  const next = new HashRing(map.moving!.nodes.map((n) => n.name), map.moving!.replicas);
  const losing = me === undefined ? [] : changes(ring, next).filter((c) => c.was === me);
  const [row] = await query<Array<{ n: number }>>(handOff(losing), losing.flatMap((r) => [r.from, r.to]));
  counted = { epoch: map.epoch, shard, total: Number(row?.n ?? 0) };
  return counted.total;
}
