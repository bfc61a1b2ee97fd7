// test/history/nemesis.ts: a cluster for history tests, and the faults the
// nemesis (Jepsen's word) puts it through while clients record. Two shards,
// each a primary and two standbys (SHARDS_STANDBY=2), which replace a primary
// by themselves (election/rules.ts): no fault here runs a failover. Every
// server's peers are behind gates (test/peers.ts), so that a primary can be
// cut off its standbys; clients are cut off a server in their own process
// (test/cut.ts), since a failover puts the winner's own address in the map.
// A fault that got a primary replaced ends with the old machine back as a
// standby (./start-shards.sh rejoin N), for the faults after it.

import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { LEASE_MS } from '../../election/rules.ts';
import { cut, heal } from '../cut.ts';
import { gateShard, MACHINES, openGates, respawn, type Gates } from '../peers.ts';
import { runNode, startShardPairs, until, waitForExit, type Machine } from '../shards.ts';
import { HashRing } from '../../ring.ts';

export type Nemesis = Awaited<ReturnType<typeof startNemesis>>;

/** A freeze or a cut at least this long gets a primary replaced (E5: LEASE_MS, the wait, a tick), on any machine: the nemesis holds it until it was. */
export const REPLACED_MS = 3_500;
/** A freeze or a cut this short must not: the lease outlasts it by more than a renewal. */
export const KEPT_MS = 600;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
// ids() looks through at most this many candidate ids (about a second).
const SEARCHED = 300_000;

/** Starts the cluster: its first map at replicas 1 over the primaries' servers. Call stop() in an after hook. */
export async function startNemesis() {
  let pairs: Awaited<ReturnType<typeof startShardPairs>> | undefined;
  let gates: Gates | undefined;
  const stop = async () => {
    await gates?.close();
    await pairs?.stop();
  };
  try {
    // The gates open first, so that the servers start knowing them as names of their own (api/signing.ts N4).
    gates = await openGates((s, m) => pairs!.serverOf(s, m), [1, 2]);
    pairs = await startShardPairs(2, { standbys: 2, env: { CLUSTER_ANNOUNCE: gates.announce } });
    await Promise.all([1, 2].map((s) => gateShard(gates!, pairs!.machineDir, s)));
  } catch (err) {
    await stop();
    throw err;
  }
  const p = pairs;
  const g = gates;
  const secret = join(p.dir, 'cluster-secret');
  const names = [p.nodeOf(1), p.nodeOf(2)];
  const seeds = [1, 2].flatMap((s) => MACHINES.map((m) => p.serverOf(s, m)));
  let replicas = 1;
  /** Shard `s`'s primary now, as its promotion recorded it (rule S6). */
  const primaryOf = async (s: number): Promise<Machine> => ((await readFile(join(p.dir, `shard-${s}`, 'primary'), 'utf8').catch(() => 'primary')).trim() as Machine);
  const role = (s: number, m: Machine) => fetch(`http://${p.serverOf(s, m)}/healthz`, { signal: AbortSignal.timeout(2_000) }).then((r) => r.json() as Promise<{ role?: string }>, () => ({}) as { role?: string });
  /** Whether shard `s`'s primary serves under its lease: a GET of an id it does not hold answers 404 (or 421 for another shard's), not 503 (E1). */
  const serving = async (s: number) => {
    const status = await fetch(`http://${p.serverOf(s, await primaryOf(s))}/v1/expenses/nemesis-probe`, { signal: AbortSignal.timeout(2_000) }).then((r) => r.status, () => 0);
    return status === 404 || status === 421;
  };
  /**
   * Waits until shard `s` is settled after a fault: its primary `m` serves
   * under a lease again, or another machine was elected and answers as the
   * primary. A primary that holds a lease from a majority again cannot be
   * replaced by a vote begun meanwhile (E4: each of that majority refuses).
   */
  const settled = (s: number, m: Machine) =>
    until(`shard ${s} settled: its ${m} machine serving under its lease, or another elected`, async () => {
      const now = await primaryOf(s);
      return now === m ? serving(s) : (await role(s, now)).role === 'primary';
    }, 120_000);
  /** Waits until another machine than `old` was promoted and answers as the primary; the ms it took. */
  const replaced = async (s: number, old: Machine, what: string) => {
    const from = performance.now();
    await until(`${what}: shard ${s}'s ${old} machine replaced`, async () => {
      const now = await primaryOf(s);
      return now !== old && (await role(s, now)).role === 'primary';
    }, 120_000);
    return Math.round(performance.now() - from);
  };
  /** The old primary back as a standby, and every machine's peers behind their gates again. */
  const rejoin = async (s: number) => {
    const from = performance.now();
    // As its message says, run again when a step failed; the said line counts such runs (each one is a defect to look into).
    const failed: string[] = [];
    for (let res = await p.script('rejoin', String(s)); res.code !== 0; res = await p.script('rejoin', String(s))) {
      failed.push(res.stderr.trim().split('\n').slice(-3).join(' '));
      assert.ok(failed.length < 3, `./start-shards.sh rejoin ${s}, run ${failed.length} times:\n${res.stdout}${res.stderr}`);
    }
    const primary = await primaryOf(s);
    await gateShard(g, p.machineDir, s, MACHINES.filter((m) => m !== primary));
    return `; rejoined as a standby in ${((performance.now() - from) / 1000).toFixed(1)} s${failed.length === 0 ? '' : ` (after ${failed.length} failed runs: ${failed.join('; ')})`}`;
  };
  /** A fault of `ms` on shard `s`'s primary: held until it was replaced when long, and then rejoined; checked that it was not when short. */
  const lasting = async (s: number, ms: number, what: (who: string) => string, begin: (m: Machine) => Promise<() => void>): Promise<string> => {
    const old = await primaryOf(s);
    await settled(s, old);
    const end = await begin(old);
    const from = performance.now();
    let said = `${what(`shard ${s}'s primary (its ${old} machine)`)} for `;
    if (ms >= REPLACED_MS) {
      await sleep(ms);
      const took = await replaced(s, old, what('the primary')).finally(end);
      said += `${((performance.now() - from) / 1000).toFixed(1)} s: replaced by its ${await primaryOf(s)} machine (${(took / 1000).toFixed(1)} s after the fault's planned ${ms} ms)`;
      return said + (await rejoin(s));
    }
    await sleep(ms);
    end();
    // E1: a lease renewed just before the fault outlasts it; the standbys grant again at the next renewal.
    await sleep(LEASE_MS);
    assert.equal(await primaryOf(s), old, `${what('the primary')} for ${ms} ms got shard ${s}'s primary replaced: the lease (election/rules.ts E1) should outlast it`);
    return `${said}${ms} ms: kept, as it must be`;
  };

  return {
    pairs: p,
    /** The nodes' names, shard 1's first. */
    names,
    /** Every server, which clients may start from. */
    seeds,
    stop,
    /** The replicas per node of the map now. */
    replicas: () => replicas,
    primaryOf,

    /**
     * `perShard` ids for each shard, half of which move to the other shard
     * when the ring goes from replicas 1 to 100: every arc gets its writes,
     * and a reshard moves some whatever the ports make the ring.
     */
    ids(perShard: number, prefix = 'h'): string[] {
      const [one, hundred] = [new HashRing(names, 1), new HashRing(names, 100)];
      const wanted = new Map<string, number>(names.flatMap((a) => names.map((b) => [`${a} ${b}`, Math.ceil(perShard / 2)] as [string, number])));
      const ids: string[] = [];
      // Bounded: the ports can give a node an arc at replicas 1 so small (1 id in 30,000 was seen) that no id
      // of it moves, or none stays; that case then gets fewer ids, or none, instead of a search that never ends.
      for (let i = 0; i < SEARCHED && [...wanted.values()].some((n) => n > 0); i++) {
        const id = `${prefix}-${i}`;
        const key = `${one.get(id)} ${hundred.get(id)}`;
        if ((wanted.get(key) ?? 0) > 0) (ids.push(id), wanted.set(key, wanted.get(key)! - 1));
      }
      return ids;
    },

    /** Freezes shard `s`'s primary, its server and its MariaDB (SIGSTOP), for `ms` (until replaced, when long), then thaws it. */
    freeze(s: number, ms: number): Promise<string> {
      return lasting(s, ms, (who) => `froze ${who}`, async (m) => {
        const pids = [await p.pid(s, m, 'mysqld.pid'), await p.pid(s, m, 'server.pid')];
        for (const pid of pids) process.kill(pid, 'SIGSTOP');
        return () => pids.forEach((pid) => process.kill(pid, 'SIGCONT'));
      });
    },

    /** Cuts shard `s`'s primary off its standbys' servers, both ways (the lease's renewals, votes, follows), for `ms` (until replaced, when long). */
    isolate(s: number, ms: number): Promise<string> {
      return lasting(s, ms, (who) => `cut ${who} off its standbys`, async (m) => g.isolate(s, m, p.serverOf(s, m)));
    },

    /** Cuts clients off shard `s`'s primary for `ms`: their requests wait, then reach it (release) or are lost (drop). Its standbys still renew its lease. */
    async partition(s: number, ms: number, then: 'release' | 'drop'): Promise<string> {
      const m = await primaryOf(s);
      const host = p.serverOf(s, m);
      cut(host);
      await sleep(ms);
      const held = heal(host, then);
      return `cut clients off shard ${s}'s primary (its ${m} machine) for ${ms} ms; ${then === 'release' ? 'delivered' : 'lost'} the ${held} requests held`;
    },

    /** Kills shard `s`'s primary's server (SIGKILL) with requests in flight and starts it again as it ran; if it was replaced meanwhile, the old machine rejoins. */
    async killServer(s: number): Promise<string> {
      const m = await primaryOf(s);
      const ms = await respawn(p.machineDir(s, m));
      // A restart longer than the lease may get it replaced, by an election that ends after it answers.
      await settled(s, m);
      const now = await primaryOf(s);
      const said = `killed shard ${s}'s primary server (its ${m} machine, SIGKILL) and started it again, answering ${ms} ms after the kill`;
      return now === m ? said : `${said}; meanwhile its ${now} machine was elected` + (await rejoin(s));
    },

    /**
     * The emergency: shard `s`'s primary machine killed (server and MariaDB,
     * SIGKILL) and its data deleted, and no command: a standby is elected and
     * takes over (E5, E6). With `lagS`, both standbys first apply what they
     * receive that late (MASTER_DELAY), so that the winner has received writes
     * to apply before it is promoted (D2). Then the dead machine is rebuilt as
     * a standby, and no standby lags any more.
     */
    async kill(s: number, lagS = 0): Promise<string> {
      const dead = await primaryOf(s);
      await settled(s, dead);
      const standbys = MACHINES.filter((m) => m !== dead);
      if (lagS > 0) {
        for (const m of standbys) await p.sql(s, m, `STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = ${lagS}; START SLAVE`);
        await sleep(lagS * 1000 + 500);
      }
      const pids = [await p.pid(s, dead, 'server.pid'), await p.pid(s, dead, 'mysqld.pid')];
      for (const pid of pids) process.kill(pid, 'SIGKILL');
      await Promise.all(pids.map((pid) => waitForExit(pid)));
      await rm(join(p.machineDir(s, dead), 'mysql'), { recursive: true, force: true });
      const took = await replaced(s, dead, 'killed');
      const winner = await primaryOf(s);
      const said = `killed shard ${s}'s primary machine (its ${dead} machine: server and MariaDB, SIGKILL) and deleted its data${lagS > 0 ? `, its standbys lagging ${lagS} s` : ''}, ran no command: its ${winner} machine took over ${(took / 1000).toFixed(1)} s after the kill`;
      const back = await rejoin(s);
      if (lagS > 0) for (const m of MACHINES.filter((m) => m !== winner)) await p.sql(s, m, 'STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 0; START SLAVE');
      return said + back;
    },

    /** Reshards between replicas 1 and 100, whichever the map is not at; run again as its message says, up to 3 times, if a step timed out on a loaded machine. */
    async reshard(): Promise<string> {
      replicas = replicas === 1 ? 100 : 1;
      const args = ['ch_client.ts', 'reshard', '--nodes', names.join(','), '--to', names.join(','), '--replicas', String(replicas), '--secret-file', secret];
      const failed: string[] = [];
      for (;;) {
        const res = await runNode(args);
        if (res.code === 0) return `resharded to replicas ${replicas}: ${res.stdout.split('\n').filter((l) => /moved|cluster is at/.test(l)).slice(-2).join(' ')}${failed.length === 0 ? '' : ` (after ${failed.length} failed runs: ${failed.join('; ')})`}`;
        failed.push((res.stderr.trim() || res.stdout.trim()).split('\n').at(-1)!);
        assert.ok(failed.length < 3, `${args.join(' ')}, run ${failed.length} times:\n${res.stdout}${res.stderr}`);
      }
    },
  };
}
