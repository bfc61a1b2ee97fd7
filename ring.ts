// ring.ts: a consistent-hash ring, written by hand.
//
// The problem: N servers, many keys, and every client must agree on which
// server owns which key, with no coordinator. `hash(key) % N` agrees, but when N
// changes nearly every key changes owner and has to move. Consistent hashing
// moves only about 1/N of them.
//
// The idea: put the hashes on a circle. Every node gets `replicas` points on
// it, at the hashes of "node:0", "node:1", ... A key belongs to the first node
// point found walking clockwise from the key's own hash. When a node joins it
// takes over only the arcs just before its points; when one leaves, only its
// arcs pass to the next point along. All other keys stay where they were.
//
// This is the ring of Mike Bayer's 2012 "The Absolutely Simplest Consistent Hashing
// Example" (techspot.zzzeek.org/2012/07/07/the-absolutely-simplest-consistent-hashing-example/;
// Python: a sorted list of points, a dict from point to node, MD5, `bisect.bisect`,
// wrap to 0), and gives the same answer bit for bit, so clients in any language agree.

import { hash } from 'node:crypto';

/**
 * Where a string sits on the ring: MD5 of its UTF-8 bytes, as 32 lowercase hex
 * digits. MD5 is not here for security, only because it spreads similar
 * strings ("1", "2", ...) evenly, and everyone agrees on it. The 2012 example
 * reads the digest as a 128-bit big-endian integer; hex strings of one length
 * sort exactly as those integers do, so we compare the strings.
 */
export function position(s: string): string {
  return hash('md5', s, 'hex');
}

/** A position as a fraction of the circle, 0 to 1, from its top 52 bits (all a double holds exactly). */
export function fraction(at: string): number {
  return parseInt(at.slice(0, 13), 16) / 16 ** 13;
}

export class HashRing {
  readonly replicas: number;
  #nodes: readonly string[] = [];
  #points: string[] = []; // every node point, sorted: the circle, cut open at 0
  #owners: string[] = []; // #owners[i] is the node of #points[i]

  constructor(nodes: Iterable<string>, replicas = 1) {
    if (!Number.isSafeInteger(replicas) || replicas < 1) throw new TypeError(`replicas must be a positive integer, got ${String(replicas)}`);
    this.replicas = replicas;
    this.#build([...nodes]);
  }

  /** The nodes, in the order they joined. */
  get nodes(): readonly string[] {
    return this.#nodes;
  }

  /** Every point in clockwise order from 0, with its node. */
  get points(): Array<{ position: string; node: string }> {
    return this.#points.map((p, i) => ({ position: p, node: this.#owners[i]! }));
  }

  add(node: string): void {
    this.#build([...this.#nodes, node]);
  }

  remove(node: string): void {
    if (!this.#nodes.includes(node)) throw new Error(`cannot remove node ${JSON.stringify(node)}: it is not on the ring`);
    this.#build(this.#nodes.filter((n) => n !== node));
  }

  /** The node that owns `key`. */
  get(key: string): string {
    return this.#owners[this.#find(key)]!;
  }

  /** The point whose arc holds `key`: where the key's walk clockwise ends. */
  pointOf(key: string): { position: string; node: string } {
    const i = this.#find(key);
    return { position: this.#points[i]!, node: this.#owners[i]! };
  }

  /** The index of the first point clockwise from the key's hash. */
  #find(key: string): number {
    const points = this.#points;
    if (points.length === 0) throw new Error(`cannot place key ${JSON.stringify(key)}: the ring has no nodes`);
    const h = position(key);
    // Binary search for the first point strictly greater than h (Python's bisect_right):
    // a key that lands exactly on a point goes to the next one, as in the 2012 example.
    let lo = 0;
    let hi = points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid]! <= h) lo = mid + 1;
      else hi = mid;
    }
    // Past the last point the walk comes round to the first: it is a circle.
    return lo === points.length ? 0 : lo;
  }

  /** Places every node's points, then sorts them once: O(n log n), where inserting one by one is O(n²). */
  #build(nodes: string[]): void {
    const nodeAt = new Map<string, string>(); // the 2012 example's dict: point -> node
    const seen = new Set<string>(); // a Set, not nodes.indexOf: one look per node, not one scan
    for (const node of nodes) {
      if (typeof node !== 'string' || node === '') throw new TypeError(`a node must be a non-empty string, got ${JSON.stringify(node)}`);
      if (seen.has(node)) throw new Error(`node ${JSON.stringify(node)} is already on the ring`);
      seen.add(node);
      for (let i = 0; i < this.replicas; i++) {
        const p = position(`${node}:${i}`); // a node's points: MD5 of "node:0", "node:1", ...
        // Two points at one spot would leave an arc to chance: an MD5 collision, so say so loudly.
        const other = nodeAt.get(p);
        if (other !== undefined) throw new Error(`node ${JSON.stringify(node)} collides with ${JSON.stringify(other)} at ring position ${p}`);
        nodeAt.set(p, node);
      }
    }
    this.#points = [...nodeAt.keys()].sort();
    // The owners in an array beside the points: on every lookup, an index is cheaper than a Map.
    this.#owners = this.#points.map((p) => nodeAt.get(p)!);
    this.#nodes = nodes;
  }
}
