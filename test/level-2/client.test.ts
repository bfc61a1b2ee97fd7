// Level 2's client: the shards hold a cluster map, and every client routes by
// it, whatever its flags say. First the failure that the map fixes: two
// clients that disagree on --replicas, on shards with no map, store the same
// ids on two shards, and each says it succeeded.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { HashRing } from '../../ring.ts';
import { runNode, startShards, type Shards } from '../shards.ts';

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => String(from + i));

/** For each id among `ids`, the shards (1-based) that hold a row of it. */
async function holders(shards: Shards, ids: string[]): Promise<Map<string, number[]>> {
  const held = new Map(ids.map((id) => [id, [] as number[]]));
  for (let shard = 1; shard <= shards.nodes.length; shard++) {
    for (const id of await shards.ids(shard)) held.get(id)?.push(shard);
  }
  return held;
}

describe('two clients that disagree on --replicas, on shards with no cluster map', () => {
  let shards: Shards;
  before(async () => {
    shards = await startShards(3, { map: false });
  });
  after(async () => {
    await shards?.stop();
  });

  it('store some ids on two shards, and both runs say that they succeeded', async () => {
    const client = (replicas: string) => runNode(['ch_client.ts', '--nodes', shards.nodes.join(','), '--replicas', replicas]);
    for (const replicas of ['1', '100']) {
      const res = await client(replicas);
      assert.equal(res.code, 0, res.stderr);
      assert.match(res.stdout, /^10 of 10 expenses stored on and read back from their own node$/m);
    }
    const twice = [...(await holders(shards, range(0, 9)))].filter(([, on]) => on.length > 1).map(([id]) => id);
    const [one, hundred] = [new HashRing(shards.nodes, 1), new HashRing(shards.nodes, 100)];
    assert.deepEqual(twice, range(0, 9).filter((id) => one.get(id) !== hundred.get(id)));
    assert.ok(twice.length > 0, 'the two rings place at least one of ids 0-9 apart');
  });
});

describe('ch_client.ts against a cluster with a map', () => {
  let cluster: Shards;
  before(async () => {
    cluster = await startShards(3);
  });
  after(async () => {
    await cluster?.stop();
  });

  it('map follows the cluster map that the nodes hold, not its flags, and says so', async () => {
    // One seed, with 5 replicas: by its flags every id would be on that seed.
    const ids = Array.from({ length: 20 }, (_, i) => `m${i}`);
    const res = await runNode(['ch_client.ts', 'map', '--json', '--nodes', cluster.nodes[0]!, '--replicas', '5', ...ids]);
    assert.equal(res.code, 0, res.stderr);
    const ring = new HashRing(cluster.nodes, 1);
    assert.deepEqual(JSON.parse(res.stdout), Object.fromEntries(ids.map((id) => [id, ring.get(id)])));
    assert.match(res.stderr, /^map: by the cluster map the nodes hold, epoch \d+: 3 nodes, replicas 1$/m);
  });

  it('a plain POST to a node that does not own the id is a 421 that names the owner, and stores nothing', async () => {
    const map = (await (await fetch(`http://${cluster.nodes[0]}/cluster/map`)).json()).map;
    const owner = new HashRing(cluster.nodes, 1).get('misdirected');
    const elsewhere = cluster.nodes.find((node) => node !== owner)!;
    const res = await fetch(`http://${elsewhere}/v1/expenses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ id: 'misdirected', name: 'n', email: 'a@b.co', category: 'c', description: '', link: '', estimated_costs: '1', submit_date: '01-01-2020' }),
    });
    assert.equal(res.status, 421);
    const body = await res.json();
    assert.equal(body.owner, owner);
    assert.equal(body.epoch, 1);
    assert.deepEqual(body.map, map);
    for (let shard = 1; shard <= 3; shard++) assert.equal((await cluster.ids(shard)).includes('misdirected'), false, `shard ${shard}`);
  });

  it('stores each id on one shard whatever --replicas two clients give: the map\'s', async () => {
    for (const replicas of ['1', '100']) {
      const res = await runNode(['ch_client.ts', '--nodes', cluster.nodes.join(','), '--replicas', replicas]);
      assert.equal(res.code, 0, res.stderr);
    }
    const ring = new HashRing(cluster.nodes, 1);
    for (const [id, on] of await holders(cluster, range(0, 9))) assert.deepEqual(on, [cluster.nodes.indexOf(ring.get(id)) + 1], id);
  });

  it('follows the map over its flags, says so once, and stores each id on the owner the map gives it', async () => {
    const ids = range(300, 329);
    const res = await runNode(['ch_client.ts', '--nodes', cluster.nodes[0]!, '--replicas', '100', '--ids', '300-329']);
    assert.equal(res.code, 0, res.stderr);
    assert.deepEqual(res.stderr.split('\n').filter((line) => line !== ''), ['the cluster is at epoch 1: 3 nodes, replicas 1; following it']);
    const ring = new HashRing(cluster.nodes, 1);
    for (const [i, node] of cluster.nodes.entries()) {
      const stored = (await cluster.ids(i + 1)).filter((id) => ids.includes(id));
      assert.deepEqual(stored, ids.filter((id) => ring.get(id) === node).sort(), node);
    }
  });
});
