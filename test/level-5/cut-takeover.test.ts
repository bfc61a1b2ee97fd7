// An automatic failover cut short (election/rules.ts, E6; SHARDS_STANDBY=2),
// then the operator's command. The rare timing, placed by the test: the
// servers run with PAIR_PAUSE_AT=promote-recorded, so the standby that wins
// the election freezes itself (SIGSTOP) right after its promotion's record
// (S6, D3): its replication stopped, not yet writable, before the other
// standby follows it and before the map is put. Then either the whole shard
// is stopped and started, or the dead old primary is rejoined and the winner
// thawed; each command finishes the promotion (D3) and makes every other
// machine its standby. Nothing else is run: the shard must serve its writes
// again, `check` must pass, and a later kill of the new primary is replaced
// with no command.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { expenseFor } from '../../ch_client.ts';
import { addressOf } from '../../api/cluster-map.ts';
import { discover, send, type View } from '../../client/cluster.ts';
import { runNode, startShardPairs, until, type Machine } from '../shards.ts';
import { writeAcked } from '../writers.ts';

type Pairs = Awaited<ReturnType<typeof startShardPairs>>;
const WAIT_MS = 180_000;
const ALL: Machine[] = ['primary', 'standby', 'standby-2'];
// Linux's state letter for a process: T once SIGSTOP has stopped it.
const state = (pid: number) => { const stat = readFileSync(`/proc/${pid}/stat`, 'utf8'); return stat[stat.lastIndexOf(')') + 2]; };

/** The scenario, with `act` as the operator's command once the winner is frozen. */
function cutShort(title: string, act: (pairs: Pairs, winner: Machine) => Promise<void>): void {
  describe(title, () => {
    let pairs: Pairs;
    let view: View;
    const seeds = () => ALL.map((m) => pairs.serverOf(1, m));
    const secret = () => join(pairs.dir, 'cluster-secret');
    const acked: string[] = [];
    /** `count` writes, one after another, each acknowledged, through a view read anew from every machine. */
    const write = async (prefix: string, count: number) => void (view = await writeAcked(seeds(), prefix, count, acked));
    const recorded = () => readFileSync(join(pairs.machineDir(1, 'primary'), 'primary'), 'utf8').trim() as Machine;

    before(async () => {
      pairs = await startShardPairs(1, { standbys: 2, env: { PAIR_PAUSE_AT: 'promote-recorded' } });
      view = (await discover([pairs.nodeOf(1)], 1)).view;
    });
    after(async () => {
      for (const m of ALL) await pairs?.pid(1, m, 'server.pid').then((pid) => process.kill(pid, 'SIGCONT'), () => undefined).catch(() => undefined);
      await pairs?.stop();
    });

    it('the shard serves, check passes, every acknowledged write reads back, and a second kill is replaced', async () => {
      await write('before', 10);
      await pairs.kill(1, 'primary');
      // No command: a standby wins and freezes itself after its record (PAIR_PAUSE_AT).
      let winner: Machine | undefined;
      await until('a standby frozen after its promotion was recorded', async () => {
        winner = ALL.find((m) => m !== 'primary' && (() => { try { return recorded() === m; } catch { return false; } })());
        return winner !== undefined && state(await pairs.pid(1, winner, 'server.pid')) === 'T';
      }, WAIT_MS);
      delete pairs.env.PAIR_PAUSE_AT;
      await act(pairs, winner!);
      assert.equal(recorded(), winner, 'the command keeps the election winner as the primary (S6)');
      await until('status with no warning: three machines, two following', async () => !/WARNING/.test((await pairs.script('status')).stdout), WAIT_MS);
      // The winner puts the map (E6) though its takeover was cut short: no command is run.
      await until('the map names the winner', async () => addressOf((await discover(seeds(), 1)).view.map, pairs.nodeOf(1)) === pairs.serverOf(1, winner!), WAIT_MS);
      await write('after', 10);
      const checked = await runNode(['ch_client.ts', 'check', '--nodes', pairs.nodeOf(1), '--secret-file', secret()]);
      assert.equal(checked.code, 0, checked.stdout + checked.stderr);
      // Every machine as a seed: the primary at its node's new address is in the ring, not OUTSIDE it.
      const checkedAll = await runNode(['ch_client.ts', 'check', '--nodes', seeds().join(','), '--secret-file', secret()]);
      assert.equal(checkedAll.code, 0, checkedAll.stdout + checkedAll.stderr);
      for (const id of acked) assert.equal((await send(view, id, 'GET', `/v1/expenses/${id}`)).body?.name, expenseFor(id).name, id);

      // Terms on disk let the shard elect again: the new primary killed, another standby takes over, with no command.
      await pairs.kill(1, winner!);
      const others = () => seeds().filter((s) => s !== pairs.serverOf(1, winner!));
      await until('the map names another machine', async () => !['', pairs.serverOf(1, winner!)].includes(addressOf((await discover(others(), 1)).view.map, pairs.nodeOf(1)) ?? ''), WAIT_MS);
      await until('a write acknowledged after the second kill', async () => {
        view = (await discover(others(), 1)).view;
        const id = `again-${Date.now()}`;
        if ((await send(view, id, 'POST', '/v1/expenses', expenseFor(id))).status !== 201) return false;
        acked.push(id);
        return true;
      }, WAIT_MS);
      for (const id of acked) assert.equal((await send(view, id, 'GET', `/v1/expenses/${id}`)).body?.name, expenseFor(id).name, id);
    });
  });
}

// Before E6's resume, the map kept naming the dead machine: no write was served until an operator ran the failover.
cutShort('an automatic failover cut short after the promotion, then a stop and a start', async (pairs) => {
  const stopped = await pairs.script('stop');
  assert.equal(stopped.code, 0, stopped.stdout + stopped.stderr);
  const started = await pairs.script('1');
  assert.equal(started.code, 0, started.stdout + started.stderr);
});

// A path that held: the thawed winner goes on with its own takeover.
cutShort('an automatic failover cut short after the promotion, then a rejoin, and the winner thawed', async (pairs, winner) => {
  const rejoined = await pairs.script('rejoin', '1');
  assert.equal(rejoined.code, 0, rejoined.stdout + rejoined.stderr);
  process.kill(await pairs.pid(1, winner, 'server.pid'), 'SIGCONT');
});
