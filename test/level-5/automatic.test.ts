// Automatic failover (election/rules.ts, E1-E6) on real processes: two
// shards, each a primary and two standbys (SHARDS_STANDBY=2), writers that
// never pause, and no command run after the fault. One cluster, in order:
//   (a) shard 1's primary machine dies (server and MariaDB killed with
//       SIGKILL, its data deleted): a standby is elected and takes over;
//   (b) shard 2's primary machine is frozen (SIGSTOP): it is replaced, a
//       record of its arc changes through the cluster meanwhile, and once
//       thawed it never answers the old value.
// The test places each fault itself; it waits only for what the rules say
// must happen.

import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { expenseFor } from '../../ch_client.ts';
import { addressOf } from '../../api/cluster-map.ts';
import { discover, send, type View } from '../../client/cluster.ts';
import { startShardPairs, until, waitForExit, type Machine } from '../shards.ts';
import { alone, lost, writers, type Writers } from '../writers.ts';

type Group = Awaited<ReturnType<typeof startShardPairs>>;

describe('automatic failover: nobody has to wake up', () => {
  let shards: Group;
  let view: View;
  let w: Writers | undefined;
  const frozen: number[] = [];

  before(async () => {
    shards = await startShardPairs(2, { standbys: 2 });
    view = (await discover([shards.nodeOf(1), shards.nodeOf(2)], 1)).view;
  });
  after(async () => {
    for (const pid of frozen) process.kill(pid, 'SIGCONT');
    await w?.stop();
    await shards?.stop();
  });

  /** The machine whose server answers at `address`. */
  const machineAt = (shard: number, address: string) => (['primary', 'standby', 'standby-2'] as Machine[]).find((m) => shards.serverOf(shard, m) === address);
  /** Where the newest map the cluster holds puts `node`. */
  const addressNow = async (node: string) => {
    await send(view, `probe-${Date.now()}`, 'GET', '/v1/expenses/none').catch(() => undefined);
    return addressOf(view.map, node);
  };

  it('(a) a primary machine killed with its data: a standby takes over by itself; writes to its arc come back, and every acknowledged write reads back', async () => {
    const node = shards.nodeOf(1);
    w = writers(view, 'a', 4);
    await until('writes on both arcs', () => w!.ackedOn(node, 0).length >= 20 && w!.ackedOn(shards.nodeOf(2), 0).length >= 20);
    const [server, mysqld] = [await shards.pid(1, 'primary', 'server.pid'), await shards.pid(1, 'primary', 'mysqld.pid')];
    process.kill(server, 'SIGKILL');
    process.kill(mysqld, 'SIGKILL');
    const killedAt = Date.now();
    await Promise.all([waitForExit(server), waitForExit(mysqld)]);
    await rm(join(shards.machineDir(1, 'primary'), 'mysql'), { recursive: true, force: true });

    // No command: the standbys see the lease run out, vote, and one takes over.
    await until('a write acknowledged on shard 1 after the kill', () => w!.ackedOn(node, killedAt).length > 0, 120_000);
    const back = Math.min(...w.ackedOn(node, killedAt).map(([, at]) => at)) - killedAt;
    console.log(`(a) from the kill to the first acknowledged write on shard 1: ${(back / 1000).toFixed(1)} s`);
    await until('more writes on shard 1', () => w!.ackedOn(node, killedAt).length >= 20, 60_000);
    await w.stop();
    const winner = await addressNow(node);
    assert.notEqual(winner, node, 'the map gives shard 1 another machine');
    assert.ok(machineAt(1, winner)?.startsWith('standby'), `${winner} is one of shard 1's standbys`);
    assert.deepEqual(await lost(view, w.acked), []);
  });

  it('(b) a primary frozen: replaced, a record of its arc changed meanwhile, and after the thaw the old primary never answers the old value', async () => {
    const node = shards.nodeOf(2);
    const old = await addressNow(node);
    let id: string;
    let n = 0;
    do id = `b-${n++}`;
    while (view.place(id).owner.name !== node);
    assert.equal((await send(view, id, 'POST', '/v1/expenses', expenseFor(id))).status, 201);
    const machine = machineAt(2, old)!;
    for (const file of ['server.pid', 'mysqld.pid'] as const) {
      const pid = await shards.pid(2, machine, file);
      process.kill(pid, 'SIGSTOP');
      frozen.push(pid);
    }
    await until('shard 2 on another machine', async () => (await addressNow(node)) !== old, 120_000);
    const { id: _, ...fields } = expenseFor(id);
    const changed = { ...fields, name: 'changed while the old primary was frozen' };
    const put = await send(view, id, 'PUT', `/v1/expenses/${id}`, changed);
    assert.equal(put.status, 202, JSON.stringify(put.body));
    for (const pid of frozen.splice(0)) process.kill(pid, 'SIGCONT');
    // Straight to the old primary, on fresh connections, for a while after the thaw.
    for (const end = Date.now() + 5_000; Date.now() < end; ) {
      const res = await alone(old, 'GET', `/v1/expenses/${id}`);
      assert.ok(res.status !== 200 || res.body.name === changed.name, `the thawed old primary answered ${res.status} ${JSON.stringify(res.body)}`);
    }
    assert.equal((await send(view, id, 'GET', `/v1/expenses/${id}`)).body.name, changed.name);
  });
});
