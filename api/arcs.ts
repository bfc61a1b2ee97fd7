// api/arcs.ts: the arcs of the circle whose ids a node does not own, so that
// a shard can list what a reshard must move away from it by position
// (schema.sql's ring_position), not by reading every row.

import type { HashRing } from '../ring.ts';

/** An arc of positions, from (inclusive) to (exclusive); to is undefined at the circle's end. */
export type Arc = [from: string, to: string | undefined];

/**
 * The arcs of `ring` that `node` does not own, in ring order, as
 * [from, to) ranges of positions. A key belongs to the first point strictly
 * after its position (ring.ts), so a point owns [the point before it, itself),
 * and the first point also owns the wrap, from the last point to the end.
 */
export function othersArcs(ring: HashRing, node: string): Arc[] {
  const points = ring.points;
  if (!points.some((p) => p.node === node)) return [['', undefined]];
  const arcs: Arc[] = [];
  const add = (from: string, to: string | undefined, owner: string) => {
    if (owner === node || from === to) return;
    const last = arcs[arcs.length - 1];
    if (last !== undefined && last[1] === from) last[1] = to; // adjacent: one arc
    else arcs.push([from, to]);
  };
  points.forEach((p, i) => add(i === 0 ? '' : points[i - 1]!.position, p.position, p.node));
  add(points[points.length - 1]!.position, undefined, points[0]!.node);
  return arcs;
}

/**
 * True when `node` owns under `next` some part of the circle it did not own
 * under `ring`: a reshard from one to the other may move records onto it. A
 * node that joins receives; one that leaves, or keeps its arcs, does not.
 */
export function receives(ring: HashRing, next: HashRing, node: string): boolean {
  const before = othersArcs(ring, node);
  const after = othersArcs(next, node);
  const covered = ([from, to]: Arc) => after.some(([f, t]) => f <= from && (t === undefined || (to !== undefined && to <= t)));
  return !before.every(covered);
}
