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
// This is the ring of the classic 2012 "absolutely simplest consistent hashing"
// example (Python: MD5, `bisect.bisect`, wrap to 0), and gives the same answer
// bit for bit, so clients written in any language route the same way.

import { hash } from 'node:crypto';

/**
 * Where a string sits on the ring: MD5 of its UTF-8 bytes, as 32 lowercase hex
 * digits.
 *
 * MD5 is not used for security here, only because it spreads similar strings
 * ("1", "2", ...) evenly over a large space, and because everyone agrees on it.
 * The classic example reads the digest as a 128-bit unsigned big-endian integer.
 * We keep it as hex instead: strings of the same length, made of 0-9a-f,
 * sort exactly as the numbers they spell, so comparing them is comparing
 * those integers, with no BigInt on the lookup path.
 */
export function position(s: string): string {
  return hash('md5', s, 'hex');
}

/** A position as a fraction of the way round the circle, from 0 up to 1. */
export function fraction(position: string): number {
  // The top 52 bits: as many as a double holds exactly, and plenty to draw or
  // to measure arcs with.
  return parseInt(position.slice(0, 13), 16) / 16 ** 13;
}

export type Point = { readonly position: string; readonly node: string };

export class HashRing {
  readonly replicas: number;
  #nodes: string[] = [];
  // Every node point, sorted by position: the circle, cut open at 0.
  #points: string[] = [];
  // #owners[i] is the node of #points[i]: an array index is cheaper on the
  // lookup path than a Map.
  #owners: string[] = [];
  // #start[b] is the index of the first point whose first four hex digits are
  // b or more. It narrows the binary search to the few points that share the
  // key's first four digits: the same answer, with far fewer cache misses on a
  // big ring.
  #start = new Uint32Array(BUCKETS + 1);
  #nodeAt = new Map<string, string>(); // position -> node, for collisions and removal

  constructor(nodes: Iterable<string>, replicas = 1) {
    if (!Number.isSafeInteger(replicas) || replicas < 1) {
      throw new TypeError(`replicas must be a positive integer, got ${String(replicas)}`);
    }
    this.replicas = replicas;
    for (const node of nodes) this.#place(node);
    this.#sort();
  }

  /** The nodes, in the order they joined. */
  get nodes(): readonly string[] {
    return this.#nodes;
  }

  /** Every point on the ring in clockwise order, starting just after 0. */
  get points(): Point[] {
    return this.#points.map((p, i) => ({ position: p, node: this.#owners[i]! }));
  }

  /**
   * Each node's share of the circle: the arcs that end at its points, since
   * every key on such an arc walks clockwise to that point. With evenly spread
   * keys, this is the share of keys the node gets.
   */
  shares(): Map<string, number> {
    const share = new Map(this.#nodes.map((node) => [node, 0]));
    const points = this.#points;
    points.forEach((p, i) => {
      const from = i === 0 ? fraction(points.at(-1)!) - 1 : fraction(points[i - 1]!);
      const node = this.#owners[i]!;
      share.set(node, share.get(node)! + fraction(p) - from);
    });
    return share;
  }

  add(node: string): void {
    this.#place(node);
    this.#sort();
  }

  remove(node: string): void {
    const at = this.#nodes.indexOf(node);
    if (at === -1) throw new Error(`cannot remove node ${JSON.stringify(node)}: it is not on the ring`);
    this.#nodes.splice(at, 1);
    for (const p of pointsOf(node, this.replicas)) this.#nodeAt.delete(p);
    this.#points = this.#points.filter((p) => this.#nodeAt.has(p));
    this.#index();
  }

  /** The node that owns `key`. */
  get(key: string): string {
    return this.#owners[this.#find(key)]!;
  }

  /** The point whose arc holds `key`. */
  pointOf(key: string): Point {
    const i = this.#find(key);
    return { position: this.#points[i]!, node: this.#owners[i]! };
  }

  // Sorting once is O(n log n); inserting point by point would be O(n²).
  #sort(): void {
    this.#points.sort();
    this.#index();
  }

  #index(): void {
    const points = this.#points;
    const nodeAt = this.#nodeAt;
    const start = this.#start;
    this.#owners = points.map((p) => nodeAt.get(p)!);
    let b = 0;
    for (let i = 0; i < points.length; i++) {
      const mine = bucket(points[i]!);
      while (b <= mine) start[b++] = i;
    }
    while (b <= BUCKETS) start[b++] = points.length;
  }

  /** The index of the first point clockwise from the key's hash. */
  #find(key: string): number {
    const points = this.#points;
    if (points.length === 0) throw new Error(`cannot place key ${JSON.stringify(key)}: the ring has no nodes`);
    const h = position(key);

    // Binary search for the first point strictly greater than the key's hash
    // (Python's bisect_right). "Strictly" decides the tie where a key lands
    // exactly on a point: it goes to the next point, as in the classic example.
    // Any fixed rule would do; this one keeps every implementation in step.
    // Points in earlier buckets are smaller than h and those in later ones
    // larger, so the answer lies in h's own bucket or is the next bucket's first.
    const b = bucket(h);
    let lo = this.#start[b]!;
    let hi = this.#start[b + 1]!;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid]! <= h) lo = mid + 1;
      else hi = mid;
    }
    // Past the last point the walk comes round to the first: it is a circle.
    return lo === points.length ? 0 : lo;
  }

  #place(node: string): void {
    if (typeof node !== 'string' || node === '') {
      throw new TypeError(`a node must be a non-empty string, got ${JSON.stringify(node)}`);
    }
    if (this.#nodes.includes(node)) throw new Error(`node ${JSON.stringify(node)} is already on the ring`);
    const mine = pointsOf(node, this.replicas);
    const nodeAt = this.#nodeAt;
    for (const p of mine) {
      // Two points at one position would leave one node's arc to chance.
      // With MD5 it takes different names that collide, so say so loudly.
      const other = nodeAt.get(p);
      if (other !== undefined) {
        throw new Error(`node ${JSON.stringify(node)} collides with ${JSON.stringify(other)} at ring position ${p}`);
      }
    }
    const points = this.#points;
    for (const p of mine) {
      nodeAt.set(p, node);
      points.push(p);
    }
    this.#nodes.push(node);
  }
}

const BUCKETS = 0x10000;

/** The first four hex digits of a position, as a number. */
function bucket(p: string): number {
  let v = 0;
  for (let i = 0; i < 4; i++) {
    const c = p.charCodeAt(i);
    v = v * 16 + (c <= 57 ? c - 48 : c - 87); // '0'-'9' are 48-57, 'a'-'f' are 97-102
  }
  return v;
}

/** The positions of a node's points: MD5 of "node:0", "node:1", ... */
function pointsOf(node: string, replicas: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < replicas; i++) out.push(position(`${node}:${i}`));
  return out;
}
