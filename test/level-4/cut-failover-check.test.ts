// What `check` names after an operator's failover cut short (SHARDS_STANDBY=2,
// automatic failover off): the failover --to standby-2 --without-vote freezes
// standby-2 right after its promotion's record (PAIR_PAUSE_AT=promote-recorded
// in the servers' environment), before the map is put; then `./start-shards.sh
// stop` and `./start-shards.sh`, which finish the promotion (D3) and make the
// other machines its standbys. The map still names the old primary's machine,
// now a standby: check must name the failover to the machine that is the
// primary, standby-2, not the first of the old primary's peers (a standby
// whose promotion the vote refuses, and --without-vote would make a second
// primary).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { expenseFor } from '../../ch_client.ts';
import { discover, send } from '../../client/cluster.ts';
import { runNode, startNode, startShardPairs, until, type Machine } from '../shards.ts';

const ALL: Machine[] = ['primary', 'standby', 'standby-2'];
const state = (pid: number) => { const stat = readFileSync(`/proc/${pid}/stat`, 'utf8'); return stat[stat.lastIndexOf(')') + 2]; };

describe("check after an operator's failover cut short before the map", () => {
  let pairs: Awaited<ReturnType<typeof startShardPairs>>;
  const seeds = () => ALL.map((m) => pairs.serverOf(1, m)).join(',');
  const secret = () => join(pairs.dir, 'cluster-secret');

  before(async () => {
    pairs = await startShardPairs(1, { standbys: 2, env: { PAIR_PAUSE_AT: 'promote-recorded' } });
    const off = await runNode(['ch_client.ts', 'failover', pairs.nodeOf(1), '--automatic', 'off', '--nodes', seeds(), '--secret-file', secret()]);
    assert.equal(off.code, 0, off.stdout + off.stderr);
  });
  after(async () => {
    await pairs.pid(1, 'standby-2', 'server.pid').then((pid) => process.kill(pid, 'SIGCONT')).catch(() => undefined);
    await pairs?.stop();
  });

  it('names the failover to the machine that is the primary, and that failover ends', async () => {
    const view = (await discover([pairs.nodeOf(1)], 1)).view;
    for (const id of ['a', 'b']) assert.equal((await send(view, id, 'POST', '/v1/expenses', expenseFor(id))).status, 201);
    const failing = startNode(['ch_client.ts', 'failover', pairs.nodeOf(1), '--to', pairs.serverOf(1, 'standby-2'), '--without-vote', '--nodes', seeds(), '--secret-file', secret()]);
    await until('standby-2 frozen after its record', async () => state(await pairs.pid(1, 'standby-2', 'server.pid')) === 'T', 120_000);
    delete pairs.env.PAIR_PAUSE_AT;
    const stopped = await pairs.script('stop');
    assert.equal(stopped.code, 0, stopped.stdout + stopped.stderr);
    await failing.exited;
    const started = await pairs.script('1');
    assert.equal(started.code, 0, started.stdout + started.stderr);
    const checked = await runNode(['ch_client.ts', 'check', '--nodes', pairs.nodeOf(1), '--secret-file', secret()]);
    assert.equal(checked.code, 1, checked.stdout + checked.stderr);
    const named = /node ch_client\.ts failover \S+ --to (\S+)/.exec(checked.stderr)?.[1];
    assert.equal(named, pairs.serverOf(1, 'standby-2'), `check names the failover to the primary:\n${checked.stdout}${checked.stderr}`);
    const finished = await runNode(['ch_client.ts', 'failover', pairs.nodeOf(1), '--to', named!, '--nodes', seeds(), '--secret-file', secret()]);
    assert.equal(finished.code, 0, finished.stdout + finished.stderr);
    const again = await runNode(['ch_client.ts', 'check', '--nodes', pairs.nodeOf(1), '--secret-file', secret()]);
    assert.equal(again.code, 0, again.stdout + again.stderr);
    const now = (await discover(seeds().split(','), 1)).view;
    for (const id of ['a', 'b']) assert.equal((await send(now, id, 'GET', `/v1/expenses/${id}`)).body?.name, expenseFor(id).name, id);
  });
});
