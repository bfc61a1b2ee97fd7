// api/arcs.ts: the arcs of the circle whose ids a node does not own, so that
// a shard can list (or count) what a reshard must move away from it by
// position (schema.sql's ring_position), not by reading every row.

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

/**
 * The arcs that `node` does not own under `next`, each with its owner under
 * `ring` and under `next`: where a reshard from one to the other takes them.
 * The circle is cut at every point of either ring; an arc [from, to) belongs,
 * in each ring, to that ring's first point at or after `to` (ring.ts: a key
 * belongs to the first point strictly after it), past the last point to the
 * first. Adjacent arcs of the same two owners are one.
 */
export function movesAway(ring: HashRing, next: HashRing, node: string): Array<{ arc: Arc; owner: string; target: string }> {
  const [before, after] = [ring.points, next.points];
  const cuts = [...new Set([...before, ...after].map((p) => p.position))].sort();
  const out: Array<{ arc: Arc; owner: string; target: string }> = [];
  const ownerAt = (points: typeof before, i: number) => (i === points.length ? points[0]! : points[i]!).node;
  let [i, j, from] = [0, 0, ''];
  for (const to of [...cuts, undefined]) {
    if (to !== undefined) {
      while (i < before.length && before[i]!.position < to) i++;
      while (j < after.length && after[j]!.position < to) j++;
    }
    const [owner, target] = to === undefined ? [before[0]!.node, after[0]!.node] : [ownerAt(before, i), ownerAt(after, j)];
    const last = out[out.length - 1];
    if (target !== node && from !== to) {
      if (last !== undefined && last.arc[1] === from && last.owner === owner && last.target === target) last.arc[1] = to;
      else out.push({ arc: [from, to], owner, target });
    }
    if (to !== undefined) from = to;
  }
  return out;
}
