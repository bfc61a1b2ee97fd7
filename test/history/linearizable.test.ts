// The checker itself (test/history/linearizable.ts), on histories written by
// hand that are known to be linearizable or known not to be, and on random
// ones made linearizable by construction.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { random } from '../random.ts';
import { check, linearizable, report, shortest, type Op, type Operation, type Result } from './linearizable.ts';

/** One operation on id "x" (or `id`): [start, end] in ms; an unknown outcome when the result is a string. */
function op(client: number, start: number, end: number, what: Op, result: Result | string, id = 'x'): Operation {
  return { id, client, op: what, start, end, result: typeof result === 'string' ? { unknown: result } : result };
}
const create = (name: string): Op => ({ kind: 'create', name });
const read: Op = { kind: 'read' };
const update = (name: string, ifMatch?: string): Op => ({ kind: 'update', name, ifMatch });
const del = (ifMatch?: string): Op => ({ kind: 'delete', ifMatch });
const got = (name: string, version: string): Result => ({ status: 200, name, version });
const wrote = (status: number, version?: string): Result => ({ status, version });

describe('the linearizability checker, on histories written by hand', () => {
  it('accepts a sequential life: create, read, update, read, delete, read', () => {
    const h = [
      op(1, 0, 1, create('a'), wrote(201, 'v1')),
      op(1, 2, 3, read, got('a', 'v1')),
      op(1, 4, 5, update('b'), wrote(202, 'v2')),
      op(2, 6, 7, read, got('b', 'v2')),
      op(2, 8, 9, del(), wrote(204)),
      op(1, 10, 11, read, wrote(404)),
      op(1, 12, 13, update('c'), wrote(404)),
      op(2, 14, 15, create('d'), wrote(201, 'v4')),
      op(1, 16, 17, create('e'), wrote(409)),
    ];
    assert.equal(linearizable(h), true);
  });

  it('accepts overlapping writes seen in either order, and reads that overlap them seeing old or new', () => {
    const h = [
      op(1, 0, 1, create('a'), wrote(201, 'v1')),
      op(1, 2, 20, update('b'), wrote(202, 'v2')),
      op(2, 3, 19, update('c'), wrote(202, 'v3')),
      op(3, 4, 5, read, got('a', 'v1')), // before either took effect
      op(3, 6, 7, read, got('c', 'v3')),
      op(3, 8, 9, read, got('b', 'v2')), // c, then b over it
      op(3, 21, 22, read, got('b', 'v2')),
    ];
    assert.equal(linearizable(h), true);
  });

  it('refuses overlapping writes seen in both orders: each write takes effect once', () => {
    const h = [
      op(1, 0, 1, create('a'), wrote(201, 'v1')),
      op(1, 2, 20, update('b'), wrote(202, 'v2')),
      op(2, 2, 20, update('c'), wrote(202, 'v3')),
      op(3, 4, 5, read, got('b', 'v2')),
      op(3, 6, 7, read, got('c', 'v3')),
      op(3, 8, 9, read, got('b', 'v2')),
    ];
    assert.equal(linearizable(h), false);
  });

  it('refuses a stale read: a read that began after a write was acknowledged sees the value before it', () => {
    const h = [op(1, 0, 1, create('a'), wrote(201, 'v1')), op(1, 2, 3, update('b'), wrote(202, 'v2')), op(2, 4, 5, read, got('a', 'v1'))];
    assert.equal(linearizable(h), false);
    assert.equal(linearizable(h.slice(0, 2).concat(op(2, 2.5, 5, read, got('a', 'v1')))), true, 'a read that overlaps the write may see the old value');
  });

  it('refuses a lost write: an acknowledged create read as absent, and an acknowledged update read as the value before', () => {
    assert.equal(linearizable([op(1, 0, 1, create('a'), wrote(201, 'v1')), op(2, 5, 6, read, wrote(404))]), false);
    assert.equal(linearizable([op(1, 0, 1, create('a'), wrote(201, 'v1')), op(1, 2, 3, update('b'), wrote(202, 'v2')), op(2, 4, 5, update('c'), wrote(404))]), false);
  });

  it('refuses a resurrection: a record read back after its delete was acknowledged', () => {
    const h = [op(1, 0, 1, create('a'), wrote(201, 'v1')), op(1, 2, 3, del(), wrote(204)), op(2, 4, 5, read, got('a', 'v1'))];
    assert.equal(linearizable(h), false);
  });

  it('refuses a 409 for an id that was never created, and a read of a version no write gave', () => {
    assert.equal(linearizable([op(1, 0, 1, create('a'), wrote(409))]), false);
    assert.equal(linearizable([op(1, 0, 1, create('a'), wrote(201, 'v1')), op(1, 2, 3, read, got('a', 'v9'))]), false);
  });

  it('takes a write with no known outcome as taking effect at any time after its start, or never', () => {
    const created = op(1, 0, 1, create('a'), 'no answer');
    assert.equal(linearizable([created, op(2, 2, 3, read, wrote(404)), op(2, 4, 5, read, got('a', 'v1'))]), true, 'it took effect late');
    assert.equal(linearizable([created, op(2, 2, 3, read, wrote(404)), op(2, 4, 5, create('b'), wrote(201, 'v2'))]), true, 'it never took effect');
    assert.equal(linearizable([created, op(2, 2, 3, read, got('a', 'v1')), op(2, 4, 5, read, wrote(404))]), false, 'it cannot be undone');
    const base = [op(1, 0, 1, create('a'), wrote(201, 'v1')), op(1, 2, 3, update('b'), { status: 503 })];
    assert.equal(linearizable([...base, op(2, 4, 5, read, got('a', 'v1')), op(2, 6, 7, read, got('b', 'v2'))]), true, 'a 503 may come after its commit');
    assert.equal(linearizable([...base, op(2, 4, 5, read, got('b', 'v2')), op(2, 6, 7, read, got('a', 'v1'))]), false, 'but it takes effect once');
    assert.equal(linearizable([op(1, 0, 1, read, 'no answer'), op(1, 2, 3, read, { status: 503 })]), true, 'a read with no answer constrains nothing');
  });

  it('decides a history with 40 writes of unknown outcome quickly: the updates whose name no read saw are left out', () => {
    const lost = Array.from({ length: 40 }, (_, i) => op(10 + i, 2 + i, 3 + i, update(`lost-${i}`), 'no answer'));
    const reads = Array.from({ length: 40 }, (_, i) => op(2, 50 + i, 50.5 + i, read, got('a', 'v1')));
    const h = [op(1, 0, 1, create('a'), wrote(201, 'v1')), ...lost, ...reads];
    assert.equal(linearizable(h, 10_000), true);
    assert.equal(linearizable([...h, op(3, 100, 101, del(), wrote(404))], 10_000), false, 'none of them was a delete');
    assert.equal(linearizable([...h, op(3, 100, 101, read, got('lost-7', 'v9'))], 10_000), true, 'one read shows that one took effect');
  });

  it('checks If-Match as a compare-and-set: two updates over one version cannot both succeed', () => {
    const base = [op(1, 0, 1, create('a'), wrote(201, 'v1')), op(1, 2, 3, update('b', 'v1'), wrote(202, 'v2'))];
    assert.equal(linearizable([...base, op(2, 4, 5, update('c', 'v1'), wrote(412))]), true);
    assert.equal(linearizable([...base, op(2, 4, 5, update('c', 'v2'), wrote(202, 'v3'))]), true);
    assert.equal(linearizable([...base, op(2, 4, 5, update('c', 'v1'), wrote(202, 'v3'))]), false, 'a lost update');
    assert.equal(linearizable([...base, op(2, 4, 5, del('v2'), wrote(412))]), false, 'the version it names is the current one');
  });

  it('splits the history by id: each id is checked alone, and only the failing one is reported, with its shortest failing history', () => {
    const noise = Array.from({ length: 40 }, (_, i) => op(3, 10 + i, 10.5 + i, read, got('b', 'v2')));
    const h = [
      op(1, 0, 1, create('a'), wrote(201, 'v1')),
      op(2, 0, 1, create('q'), wrote(201, 'w1'), 'y'),
      op(1, 2, 3, update('b'), wrote(202, 'v2')),
      ...noise,
      op(2, 60, 61, del(), wrote(204)),
      op(3, 62, 63, read, got('b', 'v2')), // resurrected
      ...noise.map((o) => ({ ...o, start: o.start + 60, end: o.end + 60 })),
      op(2, 200, 201, read, got('q', 'w1'), 'y'),
    ];
    const verdicts = check(h);
    assert.deepEqual(verdicts.map((v) => [v.id, v.ok]), [['x', false], ['y', true]]);
    const bad = verdicts[0]!;
    assert.ok(bad.ok === false);
    // Of 81 reads, one; the delete's answer and the read's fail, whatever the create and the update did.
    assert.deepEqual(bad.shortest.map((o) => `${o.op.kind}@${o.start} ${'status' in o.result ? o.result.status : 'any'}`), ['create@0 any', 'update@2 any', 'delete@60 204', 'read@62 200']);
    const said = report(verdicts);
    assert.match(said, /2 ids, 86 operations: 1 linearizable, 1 not, 0 undecided/);
    assert.match(said, /id x is not linearizable; its shortest failing history, 4 of its 84 operations, 2 of them with the answers that fail:\n +60\.0 ms .. +61\.0 ms +client 2 +DELETE +-> 204\n +62\.0 ms .. +63\.0 ms +client 3 +GET +-> 200 name=b "v2"\n +and 2 more writes in that time/);
  });

  it('leaves out of the shortest failing history a write not answered by the failing read, which could explain nothing', () => {
    // The update is answered only after the bad read: up to that read, its outcome is unknown, and no read saw its name.
    const h = [op(1, 0, 1, create('a'), wrote(201, 'v1')), op(1, 2, 3, del(), wrote(204)), op(2, 4, 100, update('b'), wrote(404)), op(3, 5, 6, read, got('a', 'v1'))];
    assert.deepEqual(shortest(h).map((o) => `${o.op.kind} ${'status' in o.result ? o.result.status : 'any'}`), ['create any', 'delete 204', 'read 200']);
  });
});

/**
 * A random history that is linearizable by construction: each operation
 * takes effect at one instant inside its interval, on a register simulated
 * in that order; some writes lose their answer.
 */
function randomHistory(seed: number, count: number, clients: number): Operation[] {
  const next = random(seed);
  let clock = 0;
  const busyUntil = new Array<number>(clients).fill(0);
  const points: Array<{ at: number; o: Operation }> = [];
  for (let i = 0; i < count; i++) {
    const client = Math.floor(next() * clients);
    const start = Math.max(busyUntil[client]!, clock) + next() * 2;
    const end = start + 0.1 + next() * 6;
    busyUntil[client] = end;
    clock = start;
    const r = next();
    const kind = r < 0.2 ? 'create' : r < 0.55 ? 'read' : r < 0.85 ? 'update' : 'delete';
    const op: Op = kind === 'create' ? create(`c${i}`) : kind === 'read' ? read : kind === 'update' ? update(`u${i}`) : del();
    points.push({ at: start + next() * (end - start), o: { id: 'x', client, op, start, end, result: { unknown: 'filled below' } } });
  }
  let state: { name: string; version: string } | null = null;
  for (const { o } of points.sort((a, b) => a.at - b.at)) {
    const v = `v-${o.start.toFixed(3)}`;
    const { op } = o;
    if (op.kind === 'read') o.result = state === null ? { status: 404 } : { status: 200, ...state };
    else if (op.kind === 'create') [o.result, state] = state === null ? [wrote(201, v), { name: op.name, version: v }] : [wrote(409), state];
    else if (op.kind === 'update') [o.result, state] = state === null ? [wrote(404), state] : [wrote(202, v), { name: op.name, version: v }];
    else [o.result, state] = state === null ? [wrote(404), state] : [wrote(204), null];
    // One write in ten loses its answer after taking effect, as a write through a failover may.
    if (op.kind !== 'read' && next() < 0.1) o.result = { unknown: 'its answer lost' };
  }
  return points.map((p) => p.o).sort((a, b) => a.start - b.start);
}

describe('the linearizability checker, on random histories', () => {
  it('accepts 200 random linearizable histories of 60 operations by 5 clients, with unknown outcomes', () => {
    for (let seed = 1; seed <= 200; seed++) assert.equal(linearizable(randomHistory(seed, 60, 5)), true, `seed ${seed}`);
  });

  it('refuses each of them once one read is made to see a value no write wrote', () => {
    let refused = 0;
    for (let seed = 1; seed <= 50; seed++) {
      const h = randomHistory(seed, 60, 5);
      const i = h.findLastIndex((o) => o.op.kind === 'read' && 'status' in o.result && o.result.status === 200);
      if (i < 0) continue;
      h[i] = { ...h[i]!, result: got('never-written', 'v0') };
      assert.equal(linearizable(h), false, `seed ${seed}`);
      refused++;
    }
    assert.ok(refused >= 40, `only ${refused} of 50 histories had a read to spoil`);
  });
});
