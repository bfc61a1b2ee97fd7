// lab/alternatives.ts: the other ways to pick a shard, for `compare`.
// The ring (ring.ts) is the star; these are what it is measured against.
// test/vectors/ holds their outputs from an independent Python version.

import { position } from '../ring.ts';

/**
 * mod N: the key's MD5 as a 128-bit big-endian integer, modulo the number of
 * nodes. Even and simple, but change N and nearly every key changes owner.
 */
export function modN(key: string, nodes: readonly string[]): string {
  return nodes[Number(BigInt(`0x${position(key)}`) % BigInt(nodes.length))]!;
}

/**
 * Rendezvous, or highest-random-weight, hashing (Thaler and Ravishankar,
 * 1996): every node scores the key, MD5("node:key") as a 128-bit big-endian
 * integer (compared as hex of one length), and the highest score wins; a tie,
 * to the smaller node name. A removed node's keys go to their second choice
 * and nothing else moves. It stores nothing, and pays a hash per node on
 * every lookup.
 */
export function rendezvous(key: string, nodes: readonly string[]): string {
  let best = '';
  let top = '';
  for (const node of nodes) {
    const score = position(`${node}:${key}`);
    if (score > top || (score === top && node < best)) [best, top] = [node, score];
  }
  return best;
}

/**
 * Jump consistent hash (Lamping and Veach, Google, 2014), on the first 64
 * bits of the key's MD5, exactly as the paper's code: a generator seeded by
 * the key jumps forward through bucket numbers, and the last jump below N is
 * the bucket. It stores nothing and is perfectly even, but buckets are the
 * numbers 0 to N-1, so it can only grow or shrink at the end.
 */
export function jump(key: string, buckets: number): number {
  let k = BigInt(`0x${position(key).slice(0, 16)}`);
  let b = -1;
  let j = 0;
  while (j < buckets) {
    b = j;
    k = BigInt.asUintN(64, k * 2862933555777941757n + 1n);
    j = Math.floor((b + 1) * (2 ** 31 / (Number(k >> 33n) + 1)));
  }
  return b;
}
