// Two standbys per shard (SHARDS_STANDBY=2; mysql/replication.ts, S2 and D5):
// a write acknowledged survives the loss of any one machine, and losing one
// leaves a primary and a standby that acknowledges. One shard, writers that
// never pause, and every kill placed by the test. In order:
//   (a) the start gives three machines, semi-sync with two clients;
//   (b) standby-2 killed and its disk gone: writes go on, acknowledged by the
//       other standby; rejoin rebuilds it;
//   (c) emergency: standby-2 is made to lag (its IO thread stopped), then the
//       primary is killed and its disk gone. A failover to the lagging
//       standby-2 is refused (D5); to the standby it succeeds, and standby-2
//       follows the new primary with no rejoin: writes come back;
//   (d) a plain stop and start after that failover: the dead machine is
//       rebuilt, and both standbys follow the recorded primary;
//   (e) a planned failover to standby-2 re-points the other standby, and a
//       stop and start keeps both following it.
// Automatic failover (level 5) is turned off: these are the operator's.

import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { expenseFor } from '../../ch_client.ts';
import { discover, send, type View } from '../../client/cluster.ts';
import { reconsider } from '../../client/http.ts';
import { ROOT, run, runNode, startShardPairs, until, type Machine } from '../shards.ts';

type Pairs = Awaited<ReturnType<typeof startShardPairs>>;

/**
 * Writers that never pause, each POSTing new ids; every 201 recorded with its
 * time. The cluster has one node, so a client cannot read the failover's map
 * from another node: after a failure it reads the map again from every
 * machine of the shard, as a client seeded with them would (`rediscover`).
 */
function writers(view: () => View, rediscover: () => Promise<void>, prefix: string, count: number) {
  const acked = new Map<string, number>();
  let stopped = false;
  let n = 0;
  const loops = Array.from({ length: count }, async () => {
    while (!stopped) {
      const id = `${prefix}-${n++}`;
      const res = await send(view(), id, 'POST', '/v1/expenses', expenseFor(id)).catch(() => undefined);
      if (res?.status === 201) acked.set(id, Date.now());
      else await Promise.all([rediscover().catch(() => {}), new Promise((r) => setTimeout(r, 20))]);
      // The one-shot client gives up a node for the rest of its run; these writers ask again, as a rerun would.
      if (res === undefined) await reconsider();
    }
  });
  return {
    acked,
    after: (since: number) => [...acked.values()].filter((at) => at > since),
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

describe('two standbys: a shard survives the loss of any one machine', () => {
  let pairs: Pairs;
  let view: View;
  let failover: (to: Machine) => ReturnType<typeof runNode>;
  let rediscover: () => Promise<void>;
  const stops: Array<() => Promise<void>> = [];

  before(async () => {
    pairs = await startShardPairs(1, { standbys: 2 });
    view = (await discover([pairs.nodeOf(1)], 1)).view;
    const seeds = (['primary', 'standby', 'standby-2'] as const).map((m) => pairs.serverOf(1, m));
    rediscover = async () => {
      const found = (await discover(seeds, 1)).view;
      if (found.map.epoch > view.map.epoch) view = found;
    };
    failover = (to) => runNode(['ch_client.ts', 'failover', pairs.nodeOf(1), '--to', pairs.serverOf(1, to), '--nodes', seeds.join(','), '--secret-file', join(pairs.dir, 'cluster-secret')]);
    // Level 4's failover, run by hand: level 5's automatic one would race it (election/rules.ts, E5).
    const off = await runNode(['ch_client.ts', 'failover', pairs.nodeOf(1), '--automatic', 'off', '--nodes', seeds.join(','), '--secret-file', join(pairs.dir, 'cluster-secret')]);
    assert.equal(off.code, 0, off.stdout + off.stderr);
    assert.equal(off.stdout.match(/automatic failover off/g)?.length, 3, off.stdout);
  });
  after(async () => {
    for (const stop of stops) await stop();
    await pairs?.stop();
  });

  const go = (prefix: string) => {
    const w = writers(() => view, () => rediscover(), prefix, 3);
    stops.push(() => w.stop());
    return w;
  };
  /** Every acknowledged id read back through the client: those missing or different. */
  const lost = async (acked: Map<string, number>) => {
    const missing: string[] = [];
    for (const id of acked.keys()) {
      const res = await send(view, id, 'GET', `/v1/expenses/${id}`);
      if (res.status !== 200 || res.body.name !== expenseFor(id).name) missing.push(`${id}: ${res.status}`);
    }
    return missing;
  };
  /** Kills a machine's server and MariaDB (SIGKILL) and deletes its data. */
  const lose = async (m: Machine) => {
    await pairs.kill(1, m);
    await rm(join(pairs.machineDir(1, m), 'mysql'), { recursive: true, force: true });
  };
  /** True when status shows both of `primary`'s other machines replicating from it, and no warning. */
  const bothFollow = async (primary: Machine) => {
    const status = (await pairs.script('status')).stdout;
    const others = (['primary', 'standby', 'standby-2'] as const).filter((m) => m !== primary);
    return !/WARNING/.test(status) && others.every((m) => new RegExp(`^  ${m} +http://.* follows ${pairs.mysqlOf(1, primary)}  Slave_IO_Running Yes  Slave_SQL_Running Yes `, 'm').test(status));
  };
  const role = async (m: Machine) => (await fetch(`http://${pairs.serverOf(1, m)}/healthz`).then((r) => r.json(), () => ({}))).role;

  it('(a) starts a primary and two standbys, each with its own MySQL and server, semi-sync with both as clients', async () => {
    assert.match(pairs.started.stdout, new RegExp(`shard 1's standby: http://${pairs.serverOf(1, 'standby')} up, read-only, following mysql ${pairs.mysqlOf(1, 'primary')} \\(data in \\S+/standby\\)`));
    assert.match(pairs.started.stdout, new RegExp(`shard 1's standby: http://${pairs.serverOf(1, 'standby-2')} up, read-only, following mysql ${pairs.mysqlOf(1, 'primary')} \\(data in \\S+/standby-2\\)`));
    assert.equal((await readFile(join(pairs.dir, 'mode'), 'utf8')).trim(), 'two-standbys');
    const fewer = await run(join(ROOT, 'start-shards.sh'), ['1'], { env: { ...pairs.env, SHARDS_STANDBY: '1' } });
    assert.equal(fewer.code, 1, fewer.stdout + fewer.stderr);
    assert.match(fewer.stderr, /this cluster runs with standbys \(\S+\/mode says so\): start it without SHARDS_STANDBY=1, or its standbys would fall behind/);
    const status = (await pairs.script('status')).stdout;
    assert.match(status, /^  primary +http:\/\/\S+ +up .*Rpl_semi_sync_master_status ON  Rpl_semi_sync_master_clients 2 /m);
    assert.ok(await bothFollow('primary'), status);
    const ids = await Promise.all((['primary', 'standby', 'standby-2'] as const).map(async (m) => (await pairs.sql(1, m, 'SELECT @@server_id'))[0]![0]));
    assert.equal(new Set(ids).size, 3, ids.join(','));
    const check = await runNode(['ch_client.ts', 'check', '--nodes', pairs.nodeOf(1), '--secret-file', join(pairs.dir, 'cluster-secret')]);
    assert.equal(check.code, 0, check.stdout + check.stderr);
    for (const m of ['standby', 'standby-2'] as const) assert.match(check.stdout, new RegExp(`standby ${pairs.serverOf(1, m).replace(/\./g, '\\.')}: standby, follows \\S+, IO Yes, SQL Yes`));
  });

  it('(b) a standby lost: writes go on, acknowledged by the other, and rejoin rebuilds it', async () => {
    const w = go('b');
    await until('writes before the loss', () => w.acked.size >= 20);
    await lose('standby-2');
    const lostAt = Date.now();
    await until('20 writes acknowledged after the loss, with no command run', () => w.after(lostAt).length >= 20);
    assert.match((await pairs.script('status')).stdout, /WARNING: shard 1 runs with 1 of its 2 standbys: the standby-2's MySQL is down/);
    const rejoin = await pairs.script('rejoin', '1');
    assert.equal(rejoin.code, 0, rejoin.stdout + rejoin.stderr);
    assert.match(rejoin.stdout, /shard 1's standby-2 machine: copying the primary's data/);
    await w.stop();
    await until('both standbys follow the primary', () => bothFollow('primary'));
    assert.deepEqual(await lost(w.acked), []);
  });

  it('(c) emergency: the failover refuses a standby behind its sibling, promotes the other, and the sibling follows it with no rejoin', async () => {
    const w = go('c');
    await until('writes before the lag', () => w.acked.size >= 20);
    // Standby-2 lags from here: the writes below are acknowledged by the standby alone.
    await pairs.sql(1, 'standby-2', 'STOP SLAVE IO_THREAD');
    const lagFrom = Date.now();
    await until('writes standby-2 never received', () => w.after(lagFrom).length >= 10);
    await lose('primary');
    const killedAt = Date.now();

    const refused = await failover('standby-2');
    assert.equal(refused.code, 1, refused.stdout + refused.stderr);
    assert.match(refused.stderr, new RegExp(`refusing: \\S+ received up to GTID \\S+, and the other standby ${pairs.serverOf(1, 'standby').replace(/\./g, '\\.')} received more \\(0-\\d+-\\d+\\).*Nothing was changed`, 's'));
    assert.match(refused.stderr, new RegExp(`failover \\S+ --to ${pairs.serverOf(1, 'standby').replace(/\./g, '\\.')}`));
    assert.equal(await role('standby-2'), 'standby');

    const started = Date.now();
    const res = await failover('standby');
    const done = Date.now();
    assert.equal(res.code, 0, res.stdout + res.stderr);
    assert.match(res.stdout, /cannot be fenced .*emergency/);
    assert.match(res.stdout, /received up to \S+, all that the other standby \S+ received/);
    assert.match(res.stdout, /the other standby \S+ follows the new primary: it acknowledges its writes/);
    assert.match(res.stdout, /is its primary, with 1 standby acknowledging its writes, of its 2; to give it the old machine back as a standby, on the shard's host, run \.\/start-shards\.sh rejoin 1/);
    await until('a write acknowledged after the failover, with no rejoin', () => w.after(done).length > 0 || w.after(started).length > 0);
    const back = Math.min(...w.after(killedAt));
    await w.stop();
    console.log(`(c) the failover took ${done - started} ms; the first 201 after the kill came ${back - killedAt} ms after it (the refused try included); ${w.acked.size} writes acknowledged`);
    assert.deepEqual(await lost(w.acked), []);
    const status = (await pairs.script('status')).stdout;
    assert.match(status, /shard 1: the primary is the standby machine since a failover/);
    assert.match(status, new RegExp(`^  standby-2 +http://.* follows ${pairs.mysqlOf(1, 'standby')}  Slave_IO_Running Yes  Slave_SQL_Running Yes `, 'm'));
  });

  it('(d) a plain stop and start after the failover rebuilds the lost machine, and both standbys follow the recorded primary', async () => {
    const w = go('d');
    await until('writes before the stop', () => w.acked.size >= 10);
    await w.stop();
    assert.equal((await pairs.script('stop')).code, 0);
    const started = await pairs.script('1');
    assert.equal(started.code, 0, started.stdout + started.stderr);
    assert.match(started.stdout, /shard 1's primary machine: copying the primary's data/);
    assert.match(started.stdout, /shard 1: http:\/\/\S+ up, the primary \(data in \S+\/standby\)/);
    await until('both standbys follow the standby machine', () => bothFollow('standby'));
    const again = go('d2');
    await until('writes after the start', () => again.acked.size >= 10);
    await again.stop();
    assert.deepEqual(await lost(new Map([...w.acked, ...again.acked])), []);
  });

  it('(e) a planned failover re-points the other standby, and a stop and start keeps both following the new primary', async () => {
    const w = go('e');
    await until('writes before the switchover', () => w.acked.size >= 20);
    const res = await failover('standby-2');
    assert.equal(res.code, 0, res.stdout + res.stderr);
    assert.match(res.stdout, /1\. fenced the old primary/);
    assert.match(res.stdout, new RegExp(`the other standby ${pairs.serverOf(1, 'primary').replace(/\./g, '\\.')} follows the new primary`));
    assert.match(res.stdout, /^   the old primary at \S+ follows \S+: it is the shard's standby now$/m);
    const switched = Date.now();
    await until('both others follow standby-2', () => bothFollow('standby-2'));
    await until('writes after the switchover', () => w.after(switched).length >= 10);
    await w.stop();
    assert.equal((await pairs.script('stop')).code, 0);
    const started = await pairs.script('1');
    assert.equal(started.code, 0, started.stdout + started.stderr);
    await until('both others follow standby-2 after the start', () => bothFollow('standby-2'));
    assert.match((await pairs.script('status')).stdout, /shard 1: the primary is the standby-2 machine since a failover/);
    assert.deepEqual(await lost(w.acked), []);
  });
});
