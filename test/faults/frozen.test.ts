// A frozen node (its server stopped with SIGSTOP: connections open, nothing
// answers) must cost a run a few timeouts, not one per record: the client and
// the reshard give it up after three in a row, say so once, and touch nothing
// on it.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { IN_FLIGHT } from '../../ch_client.ts';
import { HashRing } from '../../ring.ts';
import { startGate, type Gate } from '../gate.ts';
import { runNode, startShards, type Shards } from '../shards.ts';

let shards: Shards;
let gate: Gate; // before the fourth shard, which knows its name (CLUSTER_ANNOUNCE, api/signing.ts N4)
const REPLICAS = '100';

// Four shards with no cluster map: the first three are the cluster, the ring
// of --nodes with 100 points per node, and the fourth is the one a reshard adds.
before(async () => {
  gate = await startGate(() => shards.nodes[3]!);
  shards = await startShards(4, { map: false, env: { CLUSTER_ANNOUNCE: gate.node } });
  const stored = await runNode(['ch_client.ts', '--nodes', shards.nodes.slice(0, 3).join(','), '--replicas', REPLICAS, '--ids', '1-600']);
  assert.equal(stored.code, 0, stored.stderr);
});

after(async () => {
  await gate?.close();
  for (let shard = 1; shard <= 4; shard++) process.kill(await shards.pid(shard, 'server.pid'), 'SIGCONT');
  await shards?.stop();
});

/** Runs fn with one shard's server stopped, and resumes it whatever happens. */
async function frozen<T>(shard: number, fn: () => Promise<T>): Promise<T> {
  const pid = await shards.pid(shard, 'server.pid');
  process.kill(pid, 'SIGSTOP');
  try {
    return await fn();
  } finally {
    process.kill(pid, 'SIGCONT');
  }
}

describe('a frozen node', () => {
  it('costs the client one timeout: given up once, its ids counted in one line, the rest stored', async (t) => {
    const three = shards.nodes.slice(0, 3);
    const ice = three[1]!;
    const start = Date.now();
    const res = await frozen(2, () => runNode(['ch_client.ts', '--nodes', three.join(','), '--replicas', REPLICAS, '--ids', '1000-1599']));
    assert.equal(res.code, 1);
    const givenUp = res.stderr.split('\n').filter((line) => line.startsWith(`${ice} stopped answering`));
    assert.deepEqual(givenUp, [`${ice} stopped answering (no answer within 10 s, 3 times in a row), and was given up for the rest of this run`]);

    const ring = new HashRing(three, Number(REPLICAS));
    const its = Array.from({ length: 600 }, (_, i) => String(1000 + i)).filter((id) => ring.get(id) === ice);
    const waited = Number(new RegExp(`^FAILED (\\d+) ids on ${ice}: cannot reach ${ice}: no answer within 10 s`, 'm').exec(res.stderr)?.[1]);
    const skipped = Number(new RegExp(`^FAILED (\\d+) ids on ${ice}: skipped: ${ice} stopped answering`, 'm').exec(res.stderr)?.[1]);
    // The requests in flight, plus at most two more sent as the first ones
    // timed out, before the third failure in a row gave the node up: a bound
    // that does not grow with the number of ids.
    assert.ok(waited <= IN_FLIGHT + 2, `only the requests already in flight waited (${waited})`);
    assert.equal(waited + skipped, its.length);
    assert.match(res.stdout, new RegExp(`^${600 - its.length} of 600 `, 'm'));
    t.diagnostic(`frozen node, client: ${its.length} of 600 ids on it; ${waited} waited for the timeout, ${skipped} skipped; one line named the node; run took ${((Date.now() - start) / 1000).toFixed(1)} s`);
  });

  it('makes the reshard refuse before any write when it is frozen from the start', async () => {
    const [three, four] = [shards.nodes.slice(0, 3), shards.nodes];
    const before = await Promise.all(four.map((_, i) => shards.ids(i + 1)));
    const res = await frozen(4, () => runNode(['ch_client.ts', 'reshard', '--nodes', three.join(','), '--from', three.join(','), '--to', four.join(','), '--replicas', REPLICAS, '--secret-file', shards.secretFile]));
    assert.equal(res.code, 1);
    assert.match(res.stderr, new RegExp(`^refusing: ${four[3]} cannot say which shard it is \\(cannot reach ${four[3]}: no answer within 10 s\\)\\. Nothing was changed\\.$`, 'm'));
    assert.deepEqual(await Promise.all(four.map((_, i) => shards.ids(i + 1))), before);
  });

  it('costs the reshard a few timeouts, not one per record, when it freezes mid-move, and leaves every record where it was', async (t) => {
    const three = shards.nodes.slice(0, 3);
    // The new node says who it is and takes the reshard's map, and answers nothing more.
    try {
      gate.hold((_method, path) => path !== '/cluster/map');
      const four = [...three, gate.node];
      const reshard = ['ch_client.ts', 'reshard', '--nodes', three.join(','), '--from', three.join(','), '--to', four.join(','), '--replicas', REPLICAS, '--secret-file', shards.secretFile];
      const before = await Promise.all(three.map((_, i) => shards.ids(i + 1)));
      const start = Date.now();
      const res = await runNode(reshard);
      const took = (Date.now() - start) / 1000;
      assert.equal(res.code, 1);
      assert.equal(res.stderr.split('\n').filter((line) => line.startsWith(`${gate.node} stopped answering`)).length, 1, res.stderr);
      assert.match(res.stderr, /^reshard incomplete/m);
      assert.deepEqual(await Promise.all(three.map((_, i) => shards.ids(i + 1))), before, 'nothing was deleted from the old nodes');

      // Thawed, the same command finishes the move.
      gate.drop();
      const rerun = await runNode(reshard);
      assert.equal(rerun.code, 0, rerun.stderr);
      const records = /(\d+) records, not counting/.exec(res.stdout)?.[1] ?? '?';
      t.diagnostic(`frozen node, reshard of ${records} records: given up once, exit 1 after ${took.toFixed(1)} s, nothing deleted; the rerun after thawing: exit 0`);
    } finally {
      gate.drop();
    }
  });
});
