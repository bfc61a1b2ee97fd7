// The other ways to pick a shard, against an independent implementation, and
// the `compare` table against a direct count on the same keys.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { jump, modN, rendezvous } from '../../lab/alternatives.ts';
import { HashRing } from '../../ring.ts';
import { runNode } from '../shards.ts';

// Made by test/vectors/alternatives.py (Python 3); its jump agrees with the
// paper's C++ code on all of these keys.
type Vector = { key: string; modN: number[]; jump: number[]; rendezvous3: string; rendezvous4: string };
const { nodes, vectors } = JSON.parse(readFileSync(new URL('../vectors/alternatives.json', import.meta.url), 'utf8')) as { nodes: string[]; vectors: Vector[] };

describe('the alternatives to the ring, against Python', () => {
  it('has over 200 vectors, some of them not ASCII', () => {
    assert.ok(vectors.length > 200);
    assert.ok(vectors.some((v) => /[^\x00-\x7f]/.test(v.key)));
  });

  it('mod N: MD5 as a 128-bit big-endian integer, mod N', () => {
    for (const v of vectors) {
      assert.deepEqual([1, 2, 3, 4].map((n) => nodes.indexOf(modN(v.key, nodes.slice(0, n)))), v.modN, v.key);
    }
  });

  it('jump: the paper\'s algorithm on the first 64 bits of MD5', () => {
    for (const v of vectors) assert.deepEqual([1, 2, 3, 4, 10, 1000].map((n) => jump(v.key, n)), v.jump, v.key);
  });

  it('rendezvous: the highest MD5("node:key") wins', () => {
    for (const v of vectors) {
      assert.equal(rendezvous(v.key, nodes.slice(0, 3)), v.rendezvous3, v.key);
      assert.equal(rendezvous(v.key, nodes), v.rendezvous4, v.key);
    }
  });
});

describe('compare', () => {
  const KEYS = 20_000;
  const three = ['127.0.0.1:3000', '127.0.0.1:4000', '127.0.0.1:5000'];
  const grown = [...three, '127.0.0.1:5001'];
  const shrunk = ['127.0.0.1:3000', '127.0.0.1:5000'];
  const keys = Array.from({ length: KEYS }, (_, i) => String(i));
  // Each scheme written out again here, from its definition.
  const direct: Record<string, (nodes: string[]) => (key: string) => string> = {
    'mod N': (ns) => (key) => modN(key, ns),
    'ring, 1 point': (ns) => (key) => new HashRing(ns, 1).get(key),
    'ring, 100 points': (ns) => {
      const ring = new HashRing(ns, 100);
      return (key) => ring.get(key);
    },
    rendezvous: (ns) => (key) => rendezvous(key, ns),
    jump: (ns) => (key) => ns[jump(key, ns.length)]!,
  };
  const pct = (n: number) => `${((n / KEYS) * 100).toFixed(1)}%`;

  it('prints moved shares and the minimal-disruption column that a direct count gives', async () => {
    const res = await runNode(['ch_client.ts', 'compare', '--keys', String(KEYS)]);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /^3 nodes, 20000 keys; 127\.0\.0\.1:5001 joins, 127\.0\.0\.1:4000 leaves \(ideal: 25\.0% and 33\.3% move\)$/m);
    for (const [name, place] of Object.entries(direct)) {
      const count = (after: string[]) => {
        const [a, b] = [place(three), place(after)];
        const moved = keys.filter((key) => a(key) !== b(key));
        const between = moved.filter((key) => after.includes(a(key)) && three.includes(b(key)));
        return { moved: pct(moved.length), minimal: between.length === 0 ? 'yes' : `no (${pct(between.length)} between others)` };
      };
      const [add, remove] = [count(grown), count(shrunk)];
      const row = res.stdout.split('\n').find((line) => line.startsWith(`${name}  `))!;
      const cells = row.split(/\s{2,}/);
      assert.deepEqual([cells[3], cells[4], cells[5], cells[6]], [add.moved, add.minimal, remove.moved, remove.minimal], name);
    }
  });

  it('says which schemes move keys only to or from the changed node', async () => {
    const res = await runNode(['ch_client.ts', 'compare', '--keys', '5000']);
    const minimal = (name: string) => res.stdout.split('\n').find((line) => line.startsWith(`${name}  `))!.split(/\s{2,}/).filter((c) => /^(yes|no)(\s|$)/.test(c)).map((c) => c.split(' ')[0]);
    assert.deepEqual(minimal('mod N'), ['no', 'no']);
    assert.deepEqual(minimal('ring, 1 point'), ['yes', 'yes']);
    assert.deepEqual(minimal('ring, 100 points'), ['yes', 'yes']);
    assert.deepEqual(minimal('rendezvous'), ['yes', 'yes']);
    assert.deepEqual(minimal('jump'), ['yes', 'no'], 'jump cannot lose a middle bucket without renumbering');
  });
});
