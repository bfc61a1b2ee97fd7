// Automatic failover (election/rules.ts, E1-E6) on real processes: two
// shards, each a primary and two standbys (SHARDS_STANDBY=2), writers that
// never pause, and no command run after the fault. One cluster, in order:
//   (a) shard 1's primary machine dies (server and MariaDB killed with
//       SIGKILL, its data deleted): a standby is elected and takes over;
//   (b) shard 2's primary machine is frozen (SIGSTOP) with a write committed
//       in its binlog and waiting for an ack no standby will send: it is
//       replaced, a record of its arc changes through the cluster meanwhile,
//       and once thawed it never answers the old value;
//   (c) that thawed old primary, its write still waiting, rejoins as a
//       standby (./start-shards.sh rejoin, as the history nemesis runs it):
//       rebuilt (D4), what it held kept in a file, the write nowhere else.
// The test places each fault itself; it waits only for what the rules say
// must happen.

import assert from 'node:assert/strict';
import { readdir, readFile, rm } from 'node:fs/promises';
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
  // (b)'s write that waits for an ack, its id and its answer, and the machine it waits on: (c)'s.
  let stuck: { id: string; answer: Promise<number>; machine: Machine } | undefined;

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
  /** `count` ids that the map puts on `node`. */
  const idsOn = (node: string, prefix: string, count: number) => {
    const ids: string[] = [];
    for (let n = 0; ids.length < count; n++) if (view.place(`${prefix}-${n}`).owner.name === node) ids.push(`${prefix}-${n}`);
    return ids;
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
    await until('a write sent after the kill acknowledged on shard 1', () => w!.sentAfter(node, killedAt).length > 0, 120_000);
    const back = Math.min(...w.sentAfter(node, killedAt).map(([, at]) => at)) - killedAt;
    console.log(`(a) from the kill to the first acknowledged write on shard 1: ${(back / 1000).toFixed(1)} s`);
    await until('more writes on shard 1', () => w!.ackedOn(node, killedAt).length >= 20, 60_000);
    await w.stop();
    const winner = await addressNow(node);
    assert.notEqual(winner, node, 'the map gives shard 1 another machine');
    assert.ok(machineAt(1, winner)?.startsWith('standby'), `${winner} is one of shard 1's standbys`);
    assert.deepEqual(await lost(view, w.acked), []);
  });

  it('(b) a primary frozen with a write waiting for its ack: replaced, a record of its arc changed meanwhile, and after the thaw the old primary never answers the old value', async () => {
    const node = shards.nodeOf(2);
    const old = await addressNow(node);
    const [id, unacked] = idsOn(node, 'b', 2) as [string, string];
    assert.equal((await send(view, id, 'POST', '/v1/expenses', expenseFor(id))).status, 201);
    const machine = machineAt(2, old)!;
    // The freeze lands after a commit is in the primary's binlog and waits for an ack (S1, S3): its standbys receive no more.
    for (const m of (['primary', 'standby', 'standby-2'] as Machine[]).filter((m) => m !== machine)) await shards.sql(2, m, 'STOP SLAVE IO_THREAD');
    const answer = alone(old, 'POST', '/v1/expenses', expenseFor(unacked)).then((r) => r.status, () => 0);
    await until('a write waiting for an ack on shard 2\'s primary', async () => Number((await shards.sql(2, machine, "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_wait_sessions'"))[0]![1]) > 0);
    stuck = { id: unacked, answer, machine };
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

  it('(c) the thawed old primary, its write still waiting for an ack, rejoins as a standby: rebuilt, what it held kept, the write never acknowledged', async (t) => {
    assert.ok(stuck !== undefined, '(b) ran');
    const dir = shards.machineDir(2, stuck.machine);
    const before = new Set(await readdir(dir));
    const from = Date.now();
    const rejoined = await shards.script('rejoin', '2');
    t.diagnostic(`(c) ./start-shards.sh rejoin 2: exit ${rejoined.code} after ${((Date.now() - from) / 1000).toFixed(1)} s`);
    assert.equal(rejoined.code, 0, rejoined.stdout + rejoined.stderr);
    assert.match(rejoined.stdout, /DIVERGED: it holds transactions the primary never had .*what it held is kept in \S+diverged-\S+\.sql/);
    // D4: what it held beyond the new primary is in the file it kept, and nowhere in the cluster.
    const kept = (await readdir(dir)).filter((f) => f.startsWith('diverged-') && !before.has(f));
    assert.equal(kept.length, 1, `the rejoin kept one file: ${kept}`);
    assert.match(await readFile(join(dir, kept[0]!), 'utf8'), new RegExp(`'${stuck.id}'`), 'the kept file holds the write that waited');
    assert.notEqual(await stuck.answer, 201, 'the write that waited was never acknowledged');
    assert.equal((await send(view, stuck.id, 'GET', `/v1/expenses/${stuck.id}`)).status, 404);
    // Shard 1's only: its machine killed in (a) never rejoined.
    await until('shard 2 with both standbys following, no warning', async () => !/WARNING: shard 2 /.test((await shards.script('status')).stdout), 120_000);
  });
});
