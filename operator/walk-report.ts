// operator/walk-report.ts: what a walk (operator/walk.ts) found, as the
// operator reads it: a reshard's plan, against what hash mod N and the ring
// predict, and every problem by id.

import type { ClusterMap, MapNode } from '../api/cluster-map.ts';
import { HashRing } from '../ring.ts';
import { shares } from '../lab/balance.ts';
import { printFailures } from '../client/batch.ts';
import { total, type Walk } from './walk.ts';

/** The plan, from a walk that counted: what moves where, against what hash mod N and the ring predict. */
export function report(w: Walk, map: ClusterMap, what: 'plan' | 'reshard'): void {
  const to = map.moving!;
  const toMove = total(w.misplaced);
  const pct = (n: number) => (w.records === 0 ? '0.0%' : `${((n / w.records) * 100).toFixed(1)}%`);
  console.log(`${what}: ${map.nodes.length} nodes -> ${to.nodes.length} nodes, replicas ${to.replicas}, ${w.records} records${uncounted(w)}`);
  for (const [route, n] of [...w.misplaced].sort()) console.log(`  ${route}: ${n}`);
  const modN = w.movedByModN === undefined ? '' : `; hash mod N would move ${w.movedByModN} (${pct(w.movedByModN)})`;
  console.log(`  to move: ${toMove} of ${w.records} (${pct(toMove)})${modN}`);
  if (w.halfMoved > 0) console.log(`  of these, ${w.halfMoved} half-way: a run that died left them copied, and they are finished first`);
  const ring = (nodes: MapNode[], replicas: number) => new HashRing(nodes.map((n) => n.name), replicas);
  // Between rings of the same replicas, only the arcs of nodes that come or go change owner.
  if (map.replicas === to.replicas) {
    const predicted = predictedShare(ring(map.nodes, map.replicas), ring(to.nodes, to.replicas));
    console.log(`  the ring predicts ${(predicted * 100).toFixed(1)}%${theory(map.nodes.length, to.nodes.length)}`);
  }
  printProblems(w, false);
}

/** Prints what went wrong in a walk. */
export function printProblems(w: Walk, verbose: boolean): void {
  for (const [id, why] of w.conflicts) console.error(`CONFLICT ${JSON.stringify(id)}: ${why}; both left as they are`);
  for (const [id, why] of w.strays) console.error(`STRAY ${JSON.stringify(id)}: ${why}`);
  printFailures(new Map([...w.failed].map(([id, why]) => [id, `: ${why}`])), verbose);
  for (const [node, why] of w.unlisted) console.error(`FAILED to list the records on ${node}: ${why}`);
}

/** ", not counting 127.0.0.1:4000, which could not be listed", or nothing: a count never passes a node off as empty. */
export const uncounted = (w: Walk) => (w.unlisted.size === 0 ? '' : `, not counting ${[...w.unlisted.keys()].join(', ')}, which could not be listed`);

/** The fraction of the circle that changes owner: the new nodes' arcs, plus the removed nodes' arcs. */
function predictedShare(oldRing: HashRing, newRing: HashRing): number {
  const oldShares = shares(oldRing);
  const newShares = shares(newRing);
  let share = 0;
  for (const [node, s] of newShares) if (!oldShares.has(node)) share += s;
  for (const [node, s] of oldShares) if (!newShares.has(node)) share += s;
  return share;
}

function theory(from: number, to: number): string {
  if (to === from + 1) return ` (on average 1/(n+1) = 1/${to} = ${((1 / to) * 100).toFixed(1)}%)`;
  if (to === from - 1) return ` (on average 1/n = 1/${from} = ${((1 / from) * 100).toFixed(1)}%)`;
  return '';
}
