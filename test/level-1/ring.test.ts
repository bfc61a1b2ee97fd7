// The hash ring: the same answers as the classic example, and the properties
// that make consistent hashing worth having.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { shares } from '../../lab/balance.ts';
import { HashRing, position } from '../../ring.ts';

const THREE = ['127.0.0.1:3000', '127.0.0.1:4000', '127.0.0.1:5000'];
const keys = (n: number) => Array.from({ length: n }, (_, i) => `key-${i}`);

function counts(ring: HashRing, ids: string[]): Map<string, number> {
  const count = new Map(ring.nodes.map((n) => [n, 0]));
  for (const id of ids) {
    const node = ring.get(id);
    count.set(node, count.get(node)! + 1);
  }
  return count;
}

describe('HashRing: compatibility with the 2012 example', () => {
  it('routes the ids of the assignment as the Python original does', () => {
    const ring = new HashRing(THREE);
    const expected: Record<string, string> = {
      '0': '127.0.0.1:4000', '1': '127.0.0.1:4000', '2': '127.0.0.1:4000', '4': '127.0.0.1:4000', '8': '127.0.0.1:4000', '10': '127.0.0.1:4000',
      '3': '127.0.0.1:5000', '5': '127.0.0.1:5000',
      '6': '127.0.0.1:3000', '7': '127.0.0.1:3000', '9': '127.0.0.1:3000',
    };
    for (const [id, node] of Object.entries(expected)) assert.equal(ring.get(id), node, `id ${id}`);
  });

  // Computed with the Python original (hashlib.md5, bisect.bisect, wrap to 0)
  // on UTF-8 keys, independently of this code.
  it('matches further vectors, with replicas and non-ASCII keys', () => {
    const vectors: Array<[string[], number, Record<string, string>]> = [
      [['a', 'b', 'c', 'd'], 3, { alpha: 'c', 'user-42': 'c', 'expense.2016-12-10': 'd', Z: 'c', z: 'c', '9999': 'c', 'ünïcødé': 'c', '🚀': 'a' }],
      [
        ['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80'],
        100,
        { alpha: '10.0.0.3:80', 'user-42': '10.0.0.3:80', 'expense.2016-12-10': '10.0.0.2:80', Z: '10.0.0.1:80', z: '10.0.0.1:80', '9999': '10.0.0.2:80', 'ünïcødé': '10.0.0.2:80', '🚀': '10.0.0.2:80' },
      ],
    ];
    for (const [nodes, replicas, expected] of vectors) {
      const ring = new HashRing(nodes, replicas);
      for (const [key, node] of Object.entries(expected)) assert.equal(ring.get(key), node, `${key} on ${nodes} x${replicas}`);
    }
  });

  it('places a point at MD5("node:i") read as a 128-bit big-endian number', () => {
    const ring = new HashRing(['n1', 'n2'], 2);
    const expected = ['n1:0', 'n1:1', 'n2:0', 'n2:1']
      .map((name) => ({ position: createHash('md5').update(name).digest('hex'), node: name.split(':')[0] }))
      .sort((a, b) => (BigInt(`0x${a.position}`) < BigInt(`0x${b.position}`) ? -1 : 1));
    assert.deepEqual(ring.points, expected);
  });

  it('gives a key that lands exactly on a point to the next point (bisect right)', () => {
    const ring = new HashRing(['a', 'b', 'c'], 1);
    const [first, second] = ring.points;
    // The key "a:0" hashes to exactly a's point, so it belongs to the point after it.
    const key = `${first!.node}:0`;
    assert.equal(position(key), first!.position);
    assert.equal(ring.get(key), second!.node);
  });

  it('wraps a key past the last point round to the first', () => {
    const ring = new HashRing(THREE, 1);
    const last = ring.points.at(-1)!;
    // Find a key that hashes above the last point.
    const key = keys(1000).find((k) => position(k) > last.position)!;
    assert.ok(key, 'some key hashes past the last point');
    assert.equal(ring.get(key), ring.points[0]!.node);
  });
});

describe('HashRing: changing the nodes', () => {
  it('gives the same ring after add or remove as a fresh constructor', () => {
    for (const replicas of [1, 10, 100]) {
      const grown = new HashRing(THREE, replicas);
      grown.add('127.0.0.1:6000');
      const fresh = new HashRing([...THREE, '127.0.0.1:6000'], replicas);
      assert.deepEqual(grown.points, fresh.points);
      assert.deepEqual(grown.nodes, fresh.nodes);

      grown.remove('127.0.0.1:4000');
      const shrunk = new HashRing(['127.0.0.1:3000', '127.0.0.1:5000', '127.0.0.1:6000'], replicas);
      assert.deepEqual(grown.points, shrunk.points);
      for (const k of keys(2000)) assert.equal(grown.get(k), shrunk.get(k));
    }
  });

  it('refuses a node already present, an unknown node, and a bad replica count', () => {
    const ring = new HashRing(THREE);
    assert.throws(() => ring.add('127.0.0.1:3000'), /node "127.0.0.1:3000" is already on the ring/);
    assert.throws(() => ring.remove('127.0.0.1:9999'), /cannot remove node "127.0.0.1:9999": it is not on the ring/);
    assert.throws(() => new HashRing(['a', 'a']), /already on the ring/);
    assert.throws(() => new HashRing(['']), /non-empty string/);
    for (const bad of [0, -1, 1.5, NaN]) assert.throws(() => new HashRing(THREE, bad), /replicas must be a positive integer/);
    assert.deepEqual(ring.nodes, THREE);
  });

  it('refuses to place a key on an empty ring', () => {
    const ring = new HashRing([]);
    assert.throws(() => ring.get('1'), /the ring has no nodes/);
    ring.add('only');
    assert.equal(ring.get('1'), 'only');
    ring.remove('only');
    assert.throws(() => ring.get('1'), /the ring has no nodes/);
  });

  it('gives shares that sum to the whole circle, one node owning all of it alone', () => {
    const ring = new HashRing(THREE, 7);
    const total = [...shares(ring).values()].reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(total - 1) < 1e-12, String(total));
    assert.deepEqual([...shares(new HashRing(['solo'], 3))], [['solo', 1]]);
  });

  it('is deterministic: the same nodes in any order make the same ring', () => {
    const a = new HashRing(THREE, 50);
    const b = new HashRing([...THREE].reverse(), 50);
    assert.deepEqual(a.points, b.points);
    for (const k of keys(1000)) assert.equal(a.get(k), b.get(k));
  });
});

describe('HashRing: balance and movement', () => {
  it('gives each of 3 nodes a third of 100,000 keys, within 15%, with 100 replicas', () => {
    const ring = new HashRing(THREE, 100);
    for (const [node, n] of counts(ring, keys(100_000))) {
      assert.ok(Math.abs(n / 100_000 - 1 / 3) < 0.15 / 3, `${node} has ${n}`);
    }
  });

  it('moves only keys to a new 4th node, about as many as its arc holds', () => {
    const before = new HashRing(THREE, 100);
    const after = new HashRing(THREE, 100);
    const added = '127.0.0.1:6000';
    after.add(added);
    const all = keys(100_000);
    let moved = 0;
    for (const k of all) {
      const [was, is] = [before.get(k), after.get(k)];
      if (was === is) continue;
      assert.equal(is, added, `${k} moved from ${was} to ${is}, not to the new node`);
      moved++;
    }
    const arc = shares(after).get(added)!;
    assert.ok(Math.abs(moved / all.length - arc) < 0.01, `moved ${moved / all.length}, arc ${arc}`);
    // And far fewer than hash mod N would move (about 3/4 of them).
    assert.ok(moved / all.length < 0.35);
  });

  it('moves only the removed node\'s keys when a node leaves', () => {
    const before = new HashRing([...THREE, '127.0.0.1:6000'], 100);
    const after = new HashRing(THREE, 100);
    for (const k of keys(20_000)) {
      const was = before.get(k);
      if (was !== '127.0.0.1:6000') assert.equal(after.get(k), was);
    }
  });
});

