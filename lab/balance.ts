// lab/balance.ts: how evenly a ring spreads keys, and how replicas help.
//
// With k points per node, a node's share of the circle is the sum of k of the
// n·k arcs between random points. Such a share has a coefficient of variation
// (spread ÷ mean) of √((n−1)/(n·k+1)): it shrinks with the square root of k.
// That is why virtual nodes exist.

import { fraction, HashRing } from '../ring.ts';
import { plural } from '../api/words.ts';

/** The balance table of one ring over keys "0" .. String(keys - 1). */
export function balanceTable(nodes: readonly string[], replicas: number, keys: number): string {
  const ring = new HashRing(nodes, replicas);
  const load = loads(nodes, (key) => ring.get(key), keys);
  const share = shares(ring);
  const { maxMean, cv } = spread([...load.values()]);
  const expected = Math.sqrt((nodes.length - 1) / (nodes.length * replicas + 1));
  const width = Math.max(4, ...nodes.map((n) => n.length));

  const lines = [
    `${plural(nodes.length, 'node')} × ${plural(replicas, 'replica')}, ${keys} keys`,
    `  ${'node'.padEnd(width)}  ring share  keys${' '.repeat(Math.max(0, String(keys).length - 4))}  key share`,
  ];
  for (const node of nodes) {
    const count = load.get(node)!;
    lines.push(`  ${node.padEnd(width)}  ${percent(share.get(node)!).padStart(10)}  ${String(count).padStart(Math.max(4, String(keys).length))}  ${percent(count / keys).padStart(9)}`);
  }
  lines.push(`  max/mean load ${maxMean.toFixed(2)}, cv ${cv.toFixed(3)} (expected ${expected.toFixed(3)})`);
  return lines.join('\n');
}

/** How many of the keys "0" .. String(keys - 1) each node gets, where `owner` places a key. */
export function loads(nodes: readonly string[], owner: (key: string) => string, keys: number): Map<string, number> {
  const load = new Map(nodes.map((node) => [node, 0]));
  for (let i = 0; i < keys; i++) {
    const node = owner(String(i));
    load.set(node, load.get(node)! + 1);
  }
  return load;
}

/** How unevenly keys fall, from each node's count: the busiest against the mean, and the cv (spread ÷ mean). */
export function spread(counts: number[]): { maxMean: number; cv: number } {
  const mean = counts.reduce((sum, c) => sum + c, 0) / counts.length;
  const sd = Math.sqrt(counts.reduce((sum, c) => sum + (c - mean) ** 2, 0) / counts.length);
  return { maxMean: Math.max(...counts) / mean, cv: sd / mean };
}

function percent(f: number): string {
  return `${(f * 100).toFixed(1)}%`;
}

/**
 * Each node's share of the circle: the arcs that end at its points, since
 * every key on such an arc walks clockwise to that point. With evenly
 * spread keys, this is the share of keys the node gets.
 */
export function shares(ring: HashRing): Map<string, number> {
  const share = new Map(ring.nodes.map((node) => [node, 0]));
  const points = ring.points;
  let previous = fraction(points.at(-1)?.position ?? '0') - 1; // the last point's arc wraps past 0
  for (const { position, node } of points) {
    share.set(node, share.get(node)! + fraction(position) - previous);
    previous = fraction(position);
  }
  return share;
}
