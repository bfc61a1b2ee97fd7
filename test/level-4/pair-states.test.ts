// Every state of a shard's pair has a way out by the documented commands
// alone (./start-shards.sh, stop, rejoin N, ch_client.ts failover): a stop
// and start before, during and after a failover; a promotion and a rejoin
// killed midway and run again; an old primary that diverged; two starts at
// once. A kill or a pause lands at a step the test names (PAIR_DIE_AT,
// PAIR_PAUSE_AT: mysql/replication.ts, step), never at a moment. Each ends
// with `check` exiting 0 and every acknowledged write read back.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { expenseFor } from '../../ch_client.ts';
import { discover, send, type View } from '../../client/cluster.ts';
import { reconsider } from '../../client/http.ts';
import { ROOT, run, runNode, startNode, startShardPairs, until, waitForExit } from '../shards.ts';

type Pairs = Awaited<ReturnType<typeof startShardPairs>>;
// A bound on each wait, not a guess at its length: an emergency failover with
// its rebuild took 31 s on a quiet machine, and over 60 s with the whole suite
// beside it, which left the next tests' shared pair without its promotion.
const WAIT_MS = 240_000;
type Machine = 'primary' | 'standby';

describe('a pair always has a way out', () => {
  let pairs: Pairs;
  let view: View;
  const stops: Array<() => Promise<void>> = [];
  const address = (m: Machine) => (m === 'primary' ? pairs.nodeOf(1) : pairs.standbyOf(1));
  const script = (args: string[], env: NodeJS.ProcessEnv = {}) => run(join(ROOT, 'start-shards.sh'), args, { env: { ...pairs.env, ...env } });
  const secret = () => join(pairs.dir, 'cluster-secret');
  const seeds = () => [pairs.nodeOf(1), pairs.standbyOf(1)].join(',');
  const failoverArgs = (to: Machine) => ['ch_client.ts', 'failover', pairs.nodeOf(1), '--to', address(to), '--nodes', seeds(), '--secret-file', secret()];
  const failover = (to: Machine) => runNode(failoverArgs(to));
  /**
   * An emergency failover, started: it resolves (with its end to come) once the failover has promoted
   * `to` and waits at step 4 for a standby, saying so with the rejoin to run.
   * The test acts there, as the operator would: never at a guessed moment, and
   * never on /healthz, which waits while the new primary's map waits for a
   * standby's ack (rule 5, S3).
   */
  async function emergency(to: Machine) {
    const failing = startNode(failoverArgs(to));
    const [, rejoin] = await failing.said(/^4\. waiting .* run (\.\/start-shards\.sh rejoin \S+):/);
    assert.equal(rejoin, './start-shards.sh rejoin 1', 'the rejoin names start-shards.sh\'s number of the shard');
    assert.equal(await recorded(), to, 'the promotion recorded the new primary (S6)');
    return { ended: failing.exited }; // not the promise itself, which the await would wait for
  }

  const recorded = async () => (await readFile(join(pairs.dir, 'shard-1', 'primary'), 'utf8').catch(() => 'primary')).trim();

  /** Two writers that never pause, each POSTing new ids; the ids acknowledged with a 201. */
  function writers(prefix: string) {
    const acked = new Set<string>();
    let stopped = false;
    let n = 0;
    const loops = [0, 1].map(async () => {
      while (!stopped) {
        const id = `${prefix}-${n++}`;
        const res = await send(view, id, 'POST', '/v1/expenses', expenseFor(id)).catch(() => undefined);
        if (res?.status === 201) acked.add(id);
        else await new Promise((r) => setTimeout(r, 50));
        // The one-shot client gives up a node for the rest of its run; these writers ask again, as a rerun would.
        if (res === undefined) await reconsider();
      }
    });
    const stop = async () => {
      stopped = true;
      await Promise.all(loops);
    };
    stops.push(stop);
    return { acked, stop };
  }

  /** The end of every test: writes go through again, `check` exits 0, and every acknowledged id reads back whole. */
  async function wayOut(w: ReturnType<typeof writers>): Promise<void> {
    const before = w.acked.size;
    await until('a write acknowledged after the way out', () => w.acked.size > before + 5, WAIT_MS);
    await w.stop();
    view = (await discover(seeds().split(','), 1)).view;
    // The node's name only: check counts every address it is given, and a standby's copies are outside the ring.
    const checked = await runNode(['ch_client.ts', 'check', '--nodes', pairs.nodeOf(1), '--secret-file', secret()]);
    assert.equal(checked.code, 0, checked.stdout + checked.stderr);
    const missing: string[] = [];
    for (const id of w.acked) {
      const res = await send(view, id, 'GET', `/v1/expenses/${id}`);
      if (res.status !== 200 || res.body.name !== expenseFor(id).name) missing.push(`${id}: ${res.status}`);
    }
    assert.deepEqual(missing, [], `${missing.length} of ${w.acked.size} acknowledged writes lost`);
  }

  /**
   * The loss of the primary `m` in AFTER_SYNC's window: the writers' next
   * writes are in its binlog, never received by its standby (which stops
   * receiving), so never acknowledged; then it is killed.
   */
  async function diverge(m: Machine): Promise<void> {
    await pairs.sql(1, m === 'primary' ? 'standby' : 'primary', 'STOP SLAVE IO_THREAD');
    await until('a write waiting for an ack', async () => Number((await pairs.sql(1, m, "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_wait_sessions'"))[0]![1]) > 0, WAIT_MS);
    await pairs.kill(1, m);
  }

  before(async () => {
    pairs = await startShardPairs(1);
    view = (await discover([pairs.nodeOf(1)], 1)).view;
  });
  after(async () => {
    for (const stop of stops) await stop();
    await pairs?.stop();
  });

  it('a stop and start before a failover: the killed primary comes back by ./start-shards.sh', async () => {
    const w = writers('before');
    await until('writes', () => w.acked.size >= 20, WAIT_MS);
    await pairs.kill(1, 'primary');
    const started = await script(['1']);
    assert.equal(started.code, 0, started.stdout + started.stderr);
    await wayOut(w);
  });

  it('a promotion killed after its record: ./start-shards.sh finishes it, and the same failover then ends', async () => {
    const w = writers('promote');
    await until('writes', () => w.acked.size >= 20, WAIT_MS);
    // The standby machine's server, started again with the kill at D3's record.
    const server = await pairs.pid(1, 'standby', 'server.pid');
    process.kill(server, 'SIGTERM');
    await waitForExit(server);
    assert.equal((await script(['1'], { PAIR_DIE_AT: 'promote-recorded' })).code, 0);
    const cut = await failover('standby');
    assert.equal(cut.code, 1, cut.stdout + cut.stderr);
    assert.match(cut.stderr, /3\. promoting \S+ failed: no answer/);
    assert.equal(await recorded(), 'standby', 'the record names the new primary before it takes a write');
    const started = await script(['1']);
    assert.equal(started.code, 0, started.stdout + started.stderr);
    assert.match(started.stderr, /its promotion was cut short after its record .*finished/);
    const again = await failover('standby');
    assert.equal(again.code, 0, again.stdout + again.stderr);
    assert.match((await script(['status'])).stdout, /shard 1: the primary is the standby machine since a failover/);
    await wayOut(w);
  });

  it('an emergency failover, with a stop and start while it waits and before the rejoin: the start rebuilds the old primary, which diverged, and the failover run again ends', async () => {
    const w = writers('emergency');
    await until('writes', () => w.acked.size >= 20, WAIT_MS);
    // The standby machine is the primary since the last test; it dies holding a write its standby never received.
    await diverge('standby');
    const failing = await emergency('primary');
    assert.equal((await script(['stop'])).code, 0);
    // The new primary starts without semi-sync (S4), and the start must turn it on before it waits for the rebuilt standby.
    const started = await script(['1']);
    assert.equal(started.code, 0, started.stdout + started.stderr);
    assert.match(started.stdout, /shard 1's standby machine: DIVERGED: .*rebuilding it from the primary/);
    if ((await failing.ended).code !== 0) {
      const again = await failover('primary');
      assert.equal(again.code, 0, again.stdout + again.stderr);
    }
    // A write the primary held for an ack (S3) may still be on its way back from the standby that now follows it.
    await until('status with no warning: both machines up, no write waiting for an ack', async () => !/WARNING/.test((await script(['status'])).stdout), WAIT_MS);
    await wayOut(w);
  });

  it('a rejoin killed after its copy, then after it followed, run again: each rerun goes on, and the last ends', async () => {
    const w = writers('rejoin');
    await until('writes', () => w.acked.size >= 20, WAIT_MS);
    await pairs.kill(1, 'primary');
    await rm(join(pairs.machineDir(1, 'primary'), 'mysql'), { recursive: true, force: true });
    const failing = await emergency('standby');
    const copied = await script(['rejoin', '1'], { PAIR_DIE_AT: 'copied' });
    assert.notEqual(copied.code, 0);
    const followed = await script(['rejoin', '1'], { PAIR_DIE_AT: 'followed' });
    assert.notEqual(followed.code, 0);
    assert.match(followed.stdout, /dropping a copy that never finished/);
    const rejoined = await script(['rejoin', '1']);
    assert.equal(rejoined.code, 0, rejoined.stdout + rejoined.stderr);
    assert.match(rejoined.stdout, /shard 1 has its standby again/);
    assert.equal((await failing.ended).code, 0);
    await wayOut(w);
  });

  it('an old primary that diverged is rebuilt by the rejoin, which says so and keeps what it held', async () => {
    const w = writers('diverged');
    await until('writes', () => w.acked.size >= 20, WAIT_MS);
    await diverge('standby');
    const failing = await emergency('primary');
    // An earlier kill may have left such a write too, and its own file: this rejoin's is the new one.
    const before = new Set(await readdir(pairs.machineDir(1, 'standby')));
    const rejoined = await script(['rejoin', '1']);
    assert.equal(rejoined.code, 0, rejoined.stdout + rejoined.stderr);
    assert.match(rejoined.stdout, /shard 1's standby machine: DIVERGED: it holds transactions the primary never had .*rebuilding it from the primary; what it held is kept in \S+diverged-\S+\.sql/);
    // What it held beyond the new primary is in the file it kept, and nowhere in the cluster: it was never acknowledged.
    const kept = (await readdir(pairs.machineDir(1, 'standby'))).filter((f) => f.startsWith('diverged-') && !before.has(f));
    const held = [...(await readFile(join(pairs.machineDir(1, 'standby'), kept[0]!), 'utf8')).matchAll(/'(diverged-\d+)'/g)].map((m) => m[1]!);
    const unacked = held.filter((id) => !w.acked.has(id));
    assert.ok(unacked.length > 0, 'the diverged machine held a write never acknowledged');
    for (const id of unacked) assert.equal((await send(view, id, 'GET', `/v1/expenses/${id}`)).status, 404, id);
    assert.equal((await failing.ended).code, 0);
    await wayOut(w);
  });

  it('two starts at once: the second is refused while the first runs, and the first ends with one server per machine', async () => {
    const w = writers('twice');
    await until('writes', () => w.acked.size >= 20, WAIT_MS);
    assert.equal((await script(['stop'])).code, 0);
    const first = spawn(join(ROOT, 'start-shards.sh'), ['1'], { env: { ...pairs.env, PAIR_PAUSE_AT: 'users' }, stdio: 'ignore' });
    const ended = once(first, 'exit');
    await until('the first start paused at its step', async () => (await stoppedUnder(first.pid!)) !== undefined, WAIT_MS);
    const paused = (await stoppedUnder(first.pid!))!;
    try {
      const second = await script(['1']);
      assert.equal(second.code, 1, second.stdout + second.stderr);
      assert.match(second.stderr, /another \.\/start-shards\.sh start, stop or rejoin runs on \S+ \(pid \d+\); wait for it to end/);
    } finally {
      process.kill(paused, 'SIGCONT'); // a failed assertion must not leave the first start stopped for ever
    }
    assert.deepEqual(await ended, [0, null]);
    const ours = await Promise.all((['primary', 'standby'] as const).map((m) => pairs.pid(1, m, 'server.pid')));
    assert.deepEqual((await serversIn(pairs.dir)).sort(), ours.sort(), 'one server per machine, each in its pid file');
    await wayOut(w);
  });
});

/** A stopped (SIGSTOP) process among `pid`'s descendants, if any. */
async function stoppedUnder(pid: number): Promise<number | undefined> {
  const rows = (await run('ps', ['-eo', 'pid=,ppid=,stat='])).stdout.trim().split('\n').map((l) => l.trim().split(/\s+/));
  const below = new Set([pid]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [p, pp] of rows) if (below.has(Number(pp)) && !below.has(Number(p))) (below.add(Number(p)), (grew = true));
  }
  const found = rows.find(([p, , stat]) => Number(p) !== pid && below.has(Number(p)) && stat!.startsWith('T'));
  return found === undefined ? undefined : Number(found[0]);
}

/** The pids of the server.ts processes whose MySQL lives in `dir`. */
async function serversIn(dir: string): Promise<number[]> {
  const rows = (await run('ps', ['-eo', 'pid=,args='])).stdout.trim().split('\n').map((l) => l.trim().split(/\s+/));
  const found: number[] = [];
  for (const [pid, ...args] of rows) {
    if (!args.some((a) => a.endsWith('server.ts'))) continue;
    if ((await readFile(`/proc/${pid}/environ`, 'utf8').catch(() => '')).includes(`MYSQL_SOCKET=${dir}/`)) found.push(Number(pid));
  }
  return found;
}
