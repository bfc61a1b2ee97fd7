// test/history/nemesis.ts: a cluster for history tests, and the faults the
// nemesis (Jepsen's word) puts it through while clients record. Two shards,
// each a primary and a standby (SHARDS_STANDBY=1); every server behind a gate
// (test/gate.ts), the primaries' gates the nodes' names in the map, so that a
// partition cuts clients off whichever machine is a shard's primary now, and
// a failover gives a name the other machine's gate.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { open, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HashRing } from '../../ring.ts';
import { startGate, type Gate } from '../gate.ts';
import { runNode, startShardPairs, until, waitForExit } from '../shards.ts';

type Machine = 'primary' | 'standby';
const other = (m: Machine): Machine => (m === 'primary' ? 'standby' : 'primary');

export type Nemesis = Awaited<ReturnType<typeof startNemesis>>;

/**
 * Kills the server whose pid is in `dir`/server.pid and starts it again, with
 * the command line, directory and environment it ran with (read from /proc),
 * as a supervisor would: start-shards.sh, which would do it too, takes 20 to
 * 60 s on a loaded machine. Resolves with the ms from the kill to its first
 * healthy answer.
 */
async function restart(dir: string): Promise<number> {
  const pid = Number((await readFile(join(dir, 'server.pid'), 'utf8')).trim());
  const env = Object.fromEntries(
    (await readFile(`/proc/${pid}/environ`, 'utf8')).split('\0').filter((kv) => kv !== '').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  );
  const [command, ...args] = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').filter((a) => a !== '');
  const cwd = await readlink(`/proc/${pid}/cwd`);
  const killed = performance.now();
  process.kill(pid, 'SIGKILL');
  await waitForExit(pid);
  const log = await open(join(dir, 'server.log'), 'a');
  const child = spawn(command!, args, { cwd, env, detached: true, stdio: ['ignore', log.fd, log.fd] });
  child.unref();
  await log.close();
  await writeFile(join(dir, 'server.pid'), `${child.pid}\n`);
  await until(`the restarted server on port ${env.PORT} healthy`, async () => (await fetch(`http://127.0.0.1:${env.PORT}/healthz`).then((r) => r.status, () => 0)) === 200, 30_000);
  return Math.round(performance.now() - killed);
}

/** What a failover says of its steps 2 and 3: what the standby applied, and where it was promoted. */
const steps = (said: string) => said.split('\n').filter((l) => /^(2\. |3\. promoted)/.test(l)).join(' ');

/** Starts the cluster: its first map at replicas 1 over the primaries' gates. Call stop() in an after hook. */
export async function startNemesis() {
  // The gates open first, so that the servers start knowing them as names of
  // their own (CLUSTER_ANNOUNCE, api/signing.ts N4): signed steps go through them.
  let pairs: Awaited<ReturnType<typeof startShardPairs>> | undefined;
  const gates: Record<Machine, Gate[]> = { primary: [], standby: [] };
  const stop = async () => {
    await Promise.all([...gates.primary, ...gates.standby].map((g) => g.close()));
    await pairs?.stop();
  };
  try {
    gates.primary = await Promise.all([1, 2].map((s) => startGate(() => pairs!.nodeOf(s))));
    gates.standby = await Promise.all([1, 2].map((s) => startGate(() => pairs!.standbyOf(s))));
    const announce = [...gates.primary, ...gates.standby].map((g) => g.node).join(',');
    pairs = await startShardPairs(2, { map: false, env: { CLUSTER_ANNOUNCE: announce } });
  } catch (err) {
    await stop();
    throw err;
  }
  const secret = join(pairs.dir, 'cluster-secret');
  const names = gates.primary.map((g) => g.node);
  const seeds = [...names, ...gates.standby.map((g) => g.node)];
  // Which machine of each shard is its primary now (shard 1 first).
  const primary: Machine[] = ['primary', 'primary'];
  let replicas = 1;
  /**
   * Runs an operator's command until it exits 0, up to `runs` times, as its
   * own message says to ("run the same command again to finish"): on a loaded
   * machine a step can time out. Each failed run's last line is kept in `also`.
   */
  const client = async (args: string[], runs = 1) => {
    const failed: string[] = [];
    for (;;) {
      const res = await runNode(['ch_client.ts', ...args, '--secret-file', secret]);
      if (res.code === 0) return { ...res, also: failed.length === 0 ? '' : ` (after ${failed.length} failed runs: ${failed.join('; ')})` };
      failed.push((res.stderr.trim() || res.stdout.trim()).split('\n').at(-1)!);
      assert.ok(failed.length < runs, `ch_client.ts ${args.join(' ')}, run ${failed.length} times:\n${res.stdout}${res.stderr}`);
    }
  };
  await client(['reshard', '--nodes', names.join(','), '--to', names.join(','), '--replicas', '1']);
  const pid = (shard: number, machine: Machine, file: 'server.pid' | 'mysqld.pid') => pairs.pid(shard, machine, file);
  const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  /** Makes a standby apply what it receives `lagS` s late (MASTER_DELAY), and waits until it has that much unapplied. */
  const lag = async (s: number, standby: Machine, lagS: number) => {
    await pairs.sql(s, standby, `STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = ${lagS}; START SLAVE`);
    await pause(lagS * 1000 + 500);
  };

  return {
    pairs,
    /** The nodes' names, shard 1's first. */
    names,
    /** Every server's gate, which clients and the operator's tools may start from. */
    seeds,
    stop,
    /** The replicas per node of the map now. */
    replicas: () => replicas,

    /**
     * `perShard` ids for each shard, half of which move to the other shard
     * when the ring goes from replicas 1 to 100: every arc gets its writes,
     * and a reshard moves some whatever the gates' ports make the ring.
     */
    ids(perShard: number, prefix = 'h'): string[] {
      const [one, hundred] = [new HashRing(names, 1), new HashRing(names, 100)];
      const wanted = new Map<string, number>(names.flatMap((a) => names.map((b) => [`${a} ${b}`, Math.ceil(perShard / 2)] as [string, number])));
      const ids: string[] = [];
      for (let i = 0; [...wanted.values()].some((n) => n > 0); i++) {
        const id = `${prefix}-${i}`;
        const key = `${one.get(id)} ${hundred.get(id)}`;
        if ((wanted.get(key) ?? 0) > 0) (ids.push(id), wanted.set(key, wanted.get(key)! - 1));
      }
      return ids;
    },

    /** Freezes shard `s`'s primary, its server and its MariaDB (SIGSTOP), for `ms`, then thaws it. No failover: clients wait. */
    async pause(s: number, ms: number): Promise<string> {
      const pids = [await pid(s, primary[s - 1]!, 'mysqld.pid'), await pid(s, primary[s - 1]!, 'server.pid')];
      for (const p of pids) process.kill(p, 'SIGSTOP');
      await pause(ms);
      for (const p of pids) process.kill(p, 'SIGCONT');
      return `froze shard ${s}'s primary for ${ms} ms`;
    },

    /** Freezes shard `s`'s standby's MariaDB for `ms`: the primary is cut off from its standby, and its writes wait for the ack (semi-sync). */
    async pauseStandby(s: number, ms: number): Promise<string> {
      const p = await pid(s, other(primary[s - 1]!), 'mysqld.pid');
      process.kill(p, 'SIGSTOP');
      await pause(ms);
      process.kill(p, 'SIGCONT');
      return `froze shard ${s}'s standby MariaDB for ${ms} ms`;
    },

    /** Cuts clients off shard `s`'s primary for `ms`: the requests wait in the gate, then reach it (release) or are lost (drop). */
    async partition(s: number, ms: number, then: 'release' | 'drop'): Promise<string> {
      const gate = gates[primary[s - 1]!][s - 1]!;
      gate.hold(() => true);
      await pause(ms);
      const held = (await gate.held(0)).length;
      gate[then]();
      return `cut clients off shard ${s}'s primary for ${ms} ms; ${then === 'release' ? 'delivered' : 'lost'} the ${held} requests held`;
    },

    /** Kills shard `s`'s primary's server (SIGKILL), with requests in flight, and starts it again as it ran. */
    async kill(s: number): Promise<string> {
      const ms = await restart(pairs.machineDir(s, primary[s - 1]!));
      return `killed shard ${s}'s primary server (SIGKILL) and started it again, answering ${ms} ms after the kill`;
    },

    /**
     * A planned failover of shard `s` to its standby, which lags: it applies
     * what it receives `lagS` seconds late (MASTER_DELAY), so the promotion
     * has writes to apply first (D2 in shard/replication.ts). Then the roles
     * are recorded (start-shards.sh rejoin).
     */
    async failover(s: number, lagS = 1): Promise<string> {
      const to = other(primary[s - 1]!);
      await lag(s, to, lagS);
      const started = performance.now();
      const res = await client(['failover', names[s - 1]!, '--to', gates[to][s - 1]!.node, '--nodes', seeds.join(',')], 3);
      const failedOver = performance.now();
      primary[s - 1] = to;
      const rejoin = await pairs.script('rejoin', String(s));
      assert.equal(rejoin.code, 0, rejoin.stdout + rejoin.stderr);
      const took = `failover ${((failedOver - started) / 1000).toFixed(1)} s, rejoin ${((performance.now() - failedOver) / 1000).toFixed(1)} s`;
      return `failed shard ${s} over to its ${to} machine, which lagged ${lagS} s (${took}): ${steps(res.stdout)}${res.also}`;
    },

    /** Reshards between replicas 1 and 100, whichever the map is not at. */
    async reshard(): Promise<string> {
      replicas = replicas === 1 ? 100 : 1;
      const res = await client(['reshard', '--nodes', names.join(','), '--to', names.join(','), '--replicas', String(replicas)]);
      return `resharded to replicas ${replicas}: ${res.stdout.split('\n').filter((l) => /moved|cluster is at/.test(l)).slice(-2).join(' ')}`;
    },

    /**
     * The emergency: shard `s`'s primary machine killed (server and MariaDB)
     * and its data deleted, a failover to its standby, which lags `lagS`
     * seconds (as failover() says), and the dead machine rebuilt as the standby.
     * The lag must outlast the time from the kill to the promotion (the
     * fence's 3 s timeout, and more under load), or the standby has applied
     * everything by then and the promotion's apply step is not tested.
     */
    async crash(s: number, lagS = 8): Promise<string> {
      const dead = primary[s - 1]!;
      await lag(s, other(dead), lagS);
      const pids = [await pid(s, dead, 'server.pid'), await pid(s, dead, 'mysqld.pid')];
      const started = performance.now();
      for (const p of pids) process.kill(p, 'SIGKILL');
      await Promise.all(pids.map((p) => waitForExit(p)));
      await rm(join(pairs.machineDir(s, dead), 'mysql'), { recursive: true, force: true });
      const failover = ['failover', names[s - 1]!, '--to', gates[other(dead)][s - 1]!.node, '--nodes', seeds.join(',')];
      // Its step 4 waits for the rebuild below; on a loaded machine it may give up first, and is run again after it.
      const failing = runNode(['ch_client.ts', ...failover, '--secret-file', secret]);
      // The promoted machine's writes wait for a standby (S3): the rebuild gives it one.
      for (let i = 0; i < 600; i++) {
        const role = await fetch(`http://${gates[other(dead)][s - 1]!.node}/healthz`).then((r) => r.json(), () => ({}));
        if (role.role === 'primary') break;
        await pause(100);
      }
      const rejoin = await pairs.script('rejoin', String(s));
      assert.equal(rejoin.code, 0, rejoin.stdout + rejoin.stderr);
      const first = await failing;
      const res = first.code === 0 ? { ...first, also: '' } : await client(failover, 3);
      primary[s - 1] = other(dead);
      return `killed shard ${s}'s primary machine (server and MariaDB, SIGKILL), deleted its data, failed over to its standby, which lagged ${lagS} s, and rebuilt the dead machine as the standby (${((performance.now() - started) / 1000).toFixed(1)} s from the kill): ${steps(first.stdout)}${first.code === 0 ? '' : ` (the failover gave up while the rebuild ran: "${(first.stderr.trim() || first.stdout.trim()).split('\n').at(-1)}"; run again after it${res.also})`}`;
    },
  };
}
