// lab/compare.ts: why a ring? The same keys on the same nodes, placed by
// each way of picking a shard, and what each does when a node joins or leaves.

import { hash } from 'node:crypto';
import { HashRing } from '../ring.ts';
import { jump, modN, rendezvous } from './alternatives.ts';
import { loads, spread } from './balance.ts';
import { plural } from '../api/words.ts';

/** A way of picking a shard: for a node list, the function from key to node. */
type Scheme = { name: string; place: (nodes: string[]) => (key: string) => string; holds: (nodes: string[]) => string };

const ring = (replicas: number): Scheme => ({
  name: `ring, ${plural(replicas, 'point')}`,
  place: (nodes) => {
    const r = new HashRing(nodes, replicas);
    return (key) => r.get(key);
  },
  holds: (nodes) => `${nodes.length * replicas} points`,
});

export const SCHEMES: Scheme[] = [
  { name: 'mod N', place: (nodes) => (key) => modN(key, nodes), holds: () => 'nothing' },
  ring(1),
  ring(100),
  { name: 'rendezvous', place: (nodes) => (key) => rendezvous(key, nodes), holds: () => 'nothing' },
  // Jump numbers its buckets: the list of nodes is the numbering, so removing
  // a node in the middle renumbers every node after it.
  { name: 'jump', place: (nodes) => (key) => nodes[jump(key, nodes.length)]!, holds: () => 'nothing' },
];

export type Change = { moved: number; between: number }; // keys that changed owner; of those, between nodes that stayed

/** What changes, over `keys`, when the node list goes from `before` to `after`. */
export function change(scheme: Scheme, keys: string[], before: string[], after: string[]): Change {
  const [a, b] = [scheme.place(before), scheme.place(after)];
  const stayed = new Set(before.filter((node) => after.includes(node)));
  let moved = 0;
  let between = 0;
  for (const key of keys) {
    const [from, to] = [a(key), b(key)];
    if (from === to) continue;
    moved++;
    if (stayed.has(from) && stayed.has(to)) between++;
  }
  return { moved, between };
}

/** The node that joins: named like the last one, with the next port. */
export function joining(nodes: string[]): string {
  const last = nodes.at(-1)!;
  const colon = last.lastIndexOf(':');
  return `${last.slice(0, colon)}:${Number(last.slice(colon + 1)) + 1}`;
}

/** The table that compares every scheme on `keys` keys ("0", "1", ...). Deterministic: no timings. */
export function compareTable(nodes: string[], count: number): string {
  const keys = Array.from({ length: count }, (_, i) => String(i));
  const grown = [...nodes, joining(nodes)];
  const gone = nodes[Math.floor(nodes.length / 2)]!;
  const shrunk = nodes.filter((node) => node !== gone);
  const pct = (n: number) => `${((n / count) * 100).toFixed(1)}%`;
  const minimal = (c: Change) => (c.between === 0 ? 'yes' : `no (${pct(c.between)} between others)`);
  const rows = SCHEMES.map((scheme) => {
    const { maxMean, cv } = spread([...loads(nodes, scheme.place(nodes), count).values()]);
    const [add, remove] = [change(scheme, keys, nodes, grown), change(scheme, keys, nodes, shrunk)];
    return [scheme.name, maxMean.toFixed(2), cv.toFixed(3), pct(add.moved), minimal(add), pct(remove.moved), minimal(remove), scheme.holds(nodes)];
  });
  const n = nodes.length;
  const head = ['scheme', 'max/mean', 'cv', `moved ${n}→${n + 1}`, 'only to the new node?', `moved ${n}→${n - 1}`, 'only from the removed node?', 'holds'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [
    `${n} nodes, ${count} keys; ${joining(nodes)} joins, ${gone} leaves (ideal: ${pct(count / (n + 1))} and ${pct(count / n)} move)`,
    line(head),
    ...rows.map(line),
  ].join('\n');
}

/** Lookups per bare MD5 of the same keys, each the best of three rounds: a ratio, since rates vary by machine. */
export function lookupSpeeds(nodes: string[], count: number): string {
  const keys = Array.from({ length: count }, (_, i) => `key-${i}`);
  const best = (fn: (key: string) => unknown) => {
    let fastest = Infinity;
    for (let round = 0; round < 3; round++) {
      const start = performance.now();
      for (const key of keys) fn(key);
      fastest = Math.min(fastest, performance.now() - start);
    }
    return fastest;
  };
  const md5 = best((key) => hash('md5', key));
  return SCHEMES.map((scheme) => {
    const place = scheme.place(nodes);
    return `  ${scheme.name.padEnd(16)} ${(md5 / best(place)).toFixed(2)} x bare MD5`;
  }).join('\n');
}
