// Failover on real processes (operator/failover.ts, shard/replication.ts):
// two shards, each with a standby (SHARDS_STANDBY=1), writers that never
// pause, and a kill that each test places itself. One cluster, in order:
//   (a) emergency: shard 1's primary machine dies (server and MariaDB killed
//       with SIGKILL, its data directory deleted) under the writers;
//   (b) shard 2's primary is frozen (SIGSTOP), failed over, and thawed: it
//       acknowledges nothing;
//   (c) planned switchover of shard 1 back to the machine rebuilt in (a),
//       under the writers.

import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { expenseFor } from '../../ch_client.ts';
import { discover, send, type View } from '../../client/cluster.ts';
import { HashRing } from '../../ring.ts';
import { runNode, startNode, startShardPairs, until, waitForExit } from '../shards.ts';
import { alone, lost, writers, type Writers } from '../writers.ts';

type Pairs = Awaited<ReturnType<typeof startShardPairs>>;

// Writers a test started: stopped in the after hook too, so that a test that fails midway leaves none writing.
const running: Array<() => Promise<void>> = [];

/** The largest gap between two successive 201s on `node`'s arc in [from, to]. */
function longestPause(w: Writers, node: string, from: number, to: number): number {
  const times = w.ackedOn(node, from).map(([, at]) => at).filter((at) => at <= to).sort((a, b) => a - b);
  let gap = 0;
  for (let i = 1; i < times.length; i++) gap = Math.max(gap, times[i]! - times[i - 1]!);
  return gap;
}

describe('failover: a shard survives the loss of one machine', () => {
  let pairs: Pairs;
  let view: View;
  let failover: (node: string, to: string) => Promise<{ code: number; stdout: string; stderr: string }>;
  let failoverArgs: (node: string, to: string) => string[];
  /**
   * An emergency failover, started; resolves once it has promoted the standby
   * and waits at step 4 for a standby's ack, with the rejoin it printed: the
   * test acts there, as the operator reading it would, not on /healthz (which
   * waits while the new primary's map waits for that ack: rule 5, S3).
   */
  const emergency = async (node: string, to: string) => {
    const failing = startNode(failoverArgs(node, to));
    const [, rejoin] = await failing.said(/^4\. waiting .* run \.\/start-shards\.sh (rejoin \S+):/);
    return { rejoin: rejoin!.split(' '), ended: failing.exited };
  };

  before(async () => {
    pairs = await startShardPairs(2);
    view = (await discover([pairs.nodeOf(1), pairs.nodeOf(2)], 1)).view;
    const secret = join(pairs.dir, 'cluster-secret');
    const seeds = [pairs.nodeOf(1), pairs.nodeOf(2), pairs.standbyOf(1), pairs.standbyOf(2)].join(',');
    failoverArgs = (node, to) => ['ch_client.ts', 'failover', node, '--to', to, '--nodes', seeds, '--secret-file', secret];
    failover = (node, to) => runNode(failoverArgs(node, to));
  });
  after(async () => {
    for (const stop of running) await stop();
    await pairs?.stop();
  });

  it('(a) emergency: the primary machine killed and its disk gone; nothing acknowledged is lost, and writes to its arc come back', async () => {
    const node = pairs.nodeOf(1);
    const w = writers(view, 'a', 4);
    running.push(() => w.stop());
    await until('writes on both arcs', () => w.ackedOn(node, 0).length >= 20 && w.ackedOn(pairs.nodeOf(2), 0).length >= 20);
    // The kill lands here, with writes in flight on shard 1.
    const [server, mysqld] = [await pairs.pid(1, 'primary', 'server.pid'), await pairs.pid(1, 'primary', 'mysqld.pid')];
    process.kill(server, 'SIGKILL');
    process.kill(mysqld, 'SIGKILL');
    const killedAt = Date.now();
    await Promise.all([waitForExit(server), waitForExit(mysqld)]);
    await rm(join(pairs.machineDir(1, 'primary'), 'mysql'), { recursive: true, force: true });

    const started = Date.now();
    const failing = await emergency(node, pairs.standbyOf(1));
    // S3: the promoted machine's writes, the map's included, wait for a standby; the command the failover printed gives it one.
    assert.deepEqual(failing.rejoin, ['rejoin', '1'], 'the rejoin names start-shards.sh\'s number of the shard');
    const rejoin = await pairs.script(...failing.rejoin);
    assert.equal(rejoin.code, 0, rejoin.stdout + rejoin.stderr);
    const res = await failing.ended;
    const failedOver = Date.now();
    assert.equal(res.code, 0, res.stdout + res.stderr);
    assert.match(res.stdout, /1\. the old primary at \S+ cannot be fenced .*emergency/);
    assert.match(res.stdout, /3\. promoted \S+: now the primary/);
    assert.match(res.stdout, /4\. the cluster is at epoch 2: 2 nodes, replicas 1/);
    assert.match(res.stdout, /^shard \S+: \S+ is its primary, with 1 standby acknowledging its writes$/m);
    assert.match(rejoin.stdout, /shard 1's standby.*|shard 1: the primary is the machine in \S+\/standby/);
    // The old machine's processes were gone before `started`: a write sent after it is acknowledged by the new primary.
    await until('a write on the failed-over arc', () => w.sentAfter(node, started).length > 0);
    const back = Math.min(...w.sentAfter(node, started).map(([, at]) => at));
    await new Promise((r) => setTimeout(r, 500));
    await w.stop();
    console.log(`(a) failover and rejoin took ${failedOver - started} ms; the arc's first 201 came ${back - started} ms after the failover command began (${back - killedAt} ms after the kill); ${w.acked.size} writes acknowledged`);
    assert.deepEqual(await lost(view, w.acked), []);
    const status = await pairs.script('status');
    assert.match(status.stdout, /shard 1: the primary is the standby machine since a failover/);
    assert.doesNotMatch(status.stdout, /WARNING: shard 1/);
  });

  it('(b) a frozen old primary, thawed after the failover, acknowledges nothing', async () => {
    const node = pairs.nodeOf(2);
    // Ids that the node owns under its own map, so that each POST below is its to write, not a 421.
    const { map } = await (await fetch(`http://${node}/cluster/map`)).json();
    const ring = new HashRing(map.nodes.map((n: { name: string }) => n.name), map.replicas);
    const thawed: string[] = [];
    for (let i = 0; thawed.length < 3; i++) if (ring.get(`thawed-${i}`) === node) thawed.push(`thawed-${i}`);
    const [server, mysqld] = [await pairs.pid(2, 'primary', 'server.pid'), await pairs.pid(2, 'primary', 'mysqld.pid')];
    process.kill(mysqld, 'SIGSTOP');
    process.kill(server, 'SIGSTOP');
    // Clients that know only the old map send to the frozen machine, which still
    // believes it is the primary: their requests wait in its sockets, beside
    // the failover's fence. Whichever reaches its MariaDB first, the writes
    // wait for an ack from a standby that has left it (D1 in
    // shard/replication.ts) or meet read_only: a 503 either way.
    const answers = Promise.all(thawed.map(async (id) => {
      const res = await alone(node, 'POST', '/v1/expenses', expenseFor(id));
      return `${res.status} ${JSON.stringify(res.body)}`;
    }));
    let failing: Awaited<ReturnType<typeof emergency>>;
    try {
      failing = await emergency(node, pairs.standbyOf(2));
    } finally {
      process.kill(mysqld, 'SIGCONT');
      process.kill(server, 'SIGCONT');
    }
    const said = await answers;
    console.log(`(b) the thawed old primary answered: ${said.join('; ')}`);
    for (const answer of said) assert.match(answer, /^503 /, `the thawed old primary answered: ${said.join('; ')}`);
    // Its binlog may hold those writes (AFTER_SYNC writes it before the wait): it has diverged, and is rebuilt.
    process.kill(server, 'SIGKILL');
    process.kill(mysqld, 'SIGKILL');
    await Promise.all([waitForExit(server), waitForExit(mysqld)]);
    await rm(join(pairs.machineDir(2, 'primary'), 'mysql'), { recursive: true, force: true });
    assert.deepEqual(failing.rejoin, ['rejoin', '2']);
    const rejoin = await pairs.script(...failing.rejoin);
    assert.equal(rejoin.code, 0, rejoin.stdout + rejoin.stderr);
    const res = await failing.ended;
    assert.equal(res.code, 0, res.stdout + res.stderr);
    assert.match(res.stdout, /cannot be fenced .*emergency/);
    // The cluster never acknowledged them, and does not have them.
    for (const id of thawed) assert.equal((await send(view, id, 'GET', `/v1/expenses/${id}`)).status, 404);
  });

  it('(c) planned switchover under writers: nothing lost, and the pause measured', async () => {
    const node = pairs.nodeOf(1);
    const w = writers(view, 'c', 4);
    running.push(() => w.stop());
    await until('writes on shard 1', () => w.ackedOn(node, 0).length >= 20);
    const started = Date.now();
    // Shard 1's primary is now its standby machine (a); the machine rebuilt by rejoin takes over again.
    const res = await failover(node, pairs.nodeOf(1));
    const done = Date.now();
    assert.equal(res.code, 0, res.stdout + res.stderr);
    assert.match(res.stdout, /1\. fenced the old primary at \S+: read-only, its last write at GTID/);
    assert.match(res.stdout, /^   the old primary at \S+ follows \S+: it is the shard's standby now$/m);
    assert.doesNotMatch(res.stdout, /runs without a standby/);
    // Records the roles (S6); the old primary already follows.
    const rejoin = await pairs.script('rejoin', '1');
    assert.equal(rejoin.code, 0, rejoin.stdout + rejoin.stderr);
    const rejoined = Date.now();
    await until('a write on the switched arc', () => w.ackedOn(node, rejoined).length > 0);
    await new Promise((r) => setTimeout(r, 500));
    await w.stop();
    const pause = longestPause(w, node, started - 1000, Date.now());
    console.log(`(c) switchover took ${done - started} ms, rejoin ${rejoined - done} ms; longest pause between 201s on the arc ${pause} ms; ${w.acked.size} writes acknowledged`);
    assert.deepEqual(await lost(view, w.acked), []);
  });
});
