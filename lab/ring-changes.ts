// lab/ring-changes.ts: the arcs of the circle whose owner differs between two
// rings, as a reshard from one to the other moves them. The ring's picture
// draws them (lab/ring-svg.ts), and a shard counts the records in its own
// (page/counts.ts), by the same rule as ring.ts: a key belongs to the first
// point strictly greater than its hash, wrapping past the last to the first.

import type { HashRing } from '../ring.ts';

/** Keys whose hash h is from <= h < to change owner from `was` to `now`; from >= to wraps past 0. */
export type Change = { from: string; to: string; was: string; now: string };

/** Every arc that changes owner from `ring` to `next`, neighbours with the same two owners merged. */
export function changes(ring: HashRing, next: HashRing): Change[] {
  const [a, b] = [ring.points, next.points];
  const bounds = [...new Set([...a, ...b].map((p) => p.position))].sort();
  const out: Change[] = [];
  bounds.forEach((from, i) => {
    // No point of either ring lies strictly inside [from, to): one owner in each across all of it.
    const to = bounds[(i + 1) % bounds.length]!;
    const [was, now] = [ownerAfter(a, from), ownerAfter(b, from)];
    if (was === now) return;
    const last = out[out.length - 1];
    if (last !== undefined && last.to === from && last.was === was && last.now === now) last.to = to;
    else out.push({ from, to, was, now });
  });
  return out;
}

/** The node of the first point strictly greater than h, or of the first point of all: the key's owner. */
function ownerAfter(points: Array<{ position: string; node: string }>, h: string): string {
  let lo = 0;
  let hi = points.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (points[mid]!.position <= h) lo = mid + 1;
    else hi = mid;
  }
  return points[lo === points.length ? 0 : lo]!.node;
}
