// Two standbys (SHARDS_STANDBY=2): an old primary that diverged is found by
// the rejoin (D4) even when its sibling standby, already following the new
// primary, is the semi-synchronous client the rejoin counted. The rare timing,
// placed by the test: standby-2 is rebuilt by a copy (its binlog then holds
// none of the primary's own GTIDs, only gtid_slave_pos does), the primary
// dies holding the next write, never received (AFTER_SYNC's window), and
// standby-2 is promoted. Then a start refused for a primary whose data is
// gone names, of the two standbys, the one that received the most: the other
// is behind, and the failover refuses it (D5); and not an old primary that
// never rejoined, which follows no one. Automatic failover (level 5) is off:
// the failovers are the operator's.

import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { expenseFor } from '../../ch_client.ts';
import { discover, send, type View } from '../../client/cluster.ts';
import { runNode, startNode, startShardPairs, until, type Machine } from '../shards.ts';
import { alone } from '../writers.ts';

type Pairs = Awaited<ReturnType<typeof startShardPairs>>;
const WAIT_MS = 240_000;
const ALL: Machine[] = ['primary', 'standby', 'standby-2'];

describe('two standbys: a diverged old primary is rebuilt though its sibling acknowledges', () => {
  let pairs: Pairs;
  let view: View;
  const seeds = () => ALL.map((m) => pairs.serverOf(1, m)).join(',');
  const secret = () => join(pairs.dir, 'cluster-secret');
  const rediscover = async () => {
    const found = (await discover(seeds().split(','), 1)).view;
    if (found.map.epoch > view.map.epoch) view = found;
  };
  /** `count` writes, one after another, each acknowledged. */
  const write = async (prefix: string, count: number) => {
    const ids = Array.from({ length: count }, (_, n) => `${prefix}-${n}`);
    for (const id of ids) assert.equal((await send(view, id, 'POST', '/v1/expenses', expenseFor(id))).status, 201, id);
    return ids;
  };

  before(async () => {
    pairs = await startShardPairs(1, { standbys: 2 });
    view = (await discover([pairs.nodeOf(1)], 1)).view;
    const off = await runNode(['ch_client.ts', 'failover', pairs.nodeOf(1), '--automatic', 'off', '--nodes', seeds(), '--secret-file', secret()]);
    assert.equal(off.code, 0, off.stdout + off.stderr);
  });
  after(async () => {
    await pairs?.stop();
  });

  it('the primary diverges right after standby-2 was copied, standby-2 is promoted, and the rejoin rebuilds the old primary', async () => {
    const acked = await write('before', 10);
    await pairs.kill(1, 'standby-2');
    await rm(join(pairs.machineDir(1, 'standby-2'), 'mysql'), { recursive: true, force: true });
    const copied = await pairs.script('rejoin', '1');
    assert.equal(copied.code, 0, copied.stdout + copied.stderr);
    assert.match(copied.stdout, /standby-2 machine: copying the primary's data/);
    // The rare timing: no write since the copy, so standby-2's binlog holds none of the primary's GTIDs.
    assert.equal((await pairs.sql(1, 'standby-2', 'SELECT @@gtid_binlog_state'))[0]?.[0] ?? '', '');
    for (const m of ['standby', 'standby-2'] as const) await pairs.sql(1, m, 'STOP SLAVE IO_THREAD');
    const unacked = alone(pairs.nodeOf(1), 'POST', '/v1/expenses', expenseFor('unacked')).catch(() => undefined);
    await until('a write waiting for an ack', async () => Number((await pairs.sql(1, 'primary', "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_wait_sessions'"))[0]![1]) > 0, WAIT_MS);
    await pairs.kill(1, 'primary');
    await unacked;

    const failing = startNode(['ch_client.ts', 'failover', pairs.nodeOf(1), '--to', pairs.serverOf(1, 'standby-2'), '--nodes', seeds(), '--secret-file', secret()]);
    const failed = await failing.exited;
    assert.equal(failed.code, 0, failed.stdout + failed.stderr);
    await rediscover();
    acked.push(...(await write('after', 10)));

    const rejoined = await pairs.script('rejoin', '1');
    assert.equal(rejoined.code, 0, rejoined.stdout + rejoined.stderr);
    assert.match(rejoined.stdout, /shard 1's primary machine: DIVERGED: /);
    await until('status with no warning: three machines, two following', async () => !/WARNING/.test((await pairs.script('status')).stdout), WAIT_MS);
    acked.push(...(await write('rejoined', 10)));
    const checked = await runNode(['ch_client.ts', 'check', '--nodes', pairs.nodeOf(1), '--secret-file', secret()]);
    assert.equal(checked.code, 0, checked.stdout + checked.stderr);
    for (const id of acked) assert.equal((await send(view, id, 'GET', `/v1/expenses/${id}`)).body?.name, expenseFor(id).name, id);
    assert.equal((await send(view, 'unacked', 'GET', '/v1/expenses/unacked')).status, 404);
  });

  it('a standby lost, then the primary with its data: the start refuses, naming the standby that received the most, and that failover ends', async () => {
    // standby-2 is the primary since the last test, the others its standbys. The primary machine is lost first: it is behind.
    const acked = await write('lost', 10);
    await pairs.kill(1, 'primary');
    acked.push(...(await write('alone', 10)));
    await pairs.kill(1, 'standby-2');
    await rm(join(pairs.machineDir(1, 'standby-2'), 'mysql'), { recursive: true, force: true });
    const refused = await pairs.script('1');
    assert.equal(refused.code, 1, refused.stdout + refused.stderr);
    const named = /node ch_client\.ts failover \S+ --to (\S+)/.exec(refused.stderr)?.[1];
    assert.equal(named, pairs.serverOf(1, 'standby'), `the failover names the standby that received the most (D5):\n${refused.stderr}`);
    const failed = await runNode(['ch_client.ts', 'failover', pairs.nodeOf(1), '--to', named, '--nodes', seeds(), '--secret-file', secret()]);
    assert.equal(failed.code, 0, failed.stdout + failed.stderr);
    const rejoined = await pairs.script('rejoin', '1');
    assert.equal(rejoined.code, 0, rejoined.stdout + rejoined.stderr);
    await until('status with no warning: three machines, two following', async () => !/WARNING/.test((await pairs.script('status')).stdout), WAIT_MS);
    await rediscover();
    acked.push(...(await write('back', 10)));
    const checked = await runNode(['ch_client.ts', 'check', '--nodes', pairs.nodeOf(1), '--secret-file', secret()]);
    assert.equal(checked.code, 0, checked.stdout + checked.stderr);
    for (const id of acked) assert.equal((await send(view, id, 'GET', `/v1/expenses/${id}`)).body?.name, expenseFor(id).name, id);
  });

  it('an old primary that never rejoined, then its successor lost with its data: the start names the standby, not the old primary', async () => {
    // The standby machine is the primary since the last test. It is lost, and stays down: an emergency failover to the primary machine.
    const acked = await write('old', 10);
    await pairs.kill(1, 'standby');
    const failed = await runNode(['ch_client.ts', 'failover', pairs.nodeOf(1), '--to', pairs.serverOf(1, 'primary'), '--nodes', seeds(), '--secret-file', secret()]);
    assert.equal(failed.code, 0, failed.stdout + failed.stderr);
    await rediscover();
    acked.push(...(await write('new', 10)));
    await pairs.kill(1, 'primary');
    await rm(join(pairs.machineDir(1, 'primary'), 'mysql'), { recursive: true, force: true });
    const refused = await pairs.script('1');
    assert.equal(refused.code, 1, refused.stdout + refused.stderr);
    const named = /node ch_client\.ts failover \S+ --to (\S+)/.exec(refused.stderr)?.[1];
    assert.equal(named, pairs.serverOf(1, 'standby-2'), `the failover names the standby, not the old primary that follows no one:\n${refused.stderr}`);
    const again = await runNode(['ch_client.ts', 'failover', pairs.nodeOf(1), '--to', named, '--nodes', seeds(), '--secret-file', secret()]);
    assert.equal(again.code, 0, again.stdout + again.stderr);
    const rejoined = await pairs.script('rejoin', '1');
    assert.equal(rejoined.code, 0, rejoined.stdout + rejoined.stderr);
    await until('status with no warning: three machines, two following', async () => !/WARNING/.test((await pairs.script('status')).stdout), WAIT_MS);
    await rediscover();
    acked.push(...(await write('after-all', 10)));
    const checked = await runNode(['ch_client.ts', 'check', '--nodes', pairs.nodeOf(1), '--secret-file', secret()]);
    assert.equal(checked.code, 0, checked.stdout + checked.stderr);
    for (const id of acked) assert.equal((await send(view, id, 'GET', `/v1/expenses/${id}`)).body?.name, expenseFor(id).name, id);
  });
});
