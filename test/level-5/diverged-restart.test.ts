// A whole-shard stop and start after an automatic failover whose old primary
// diverged (SHARDS_STANDBY=2), then a second loss. The rare timing, placed by
// the test: the primary dies holding a write committed in its binlog and
// waiting for an ack that no standby sends (S1, S3). A standby is elected and
// takes over (E5, E6) with no command. Then `./start-shards.sh stop` and
// `./start-shards.sh`: the start keeps the winner (S6) and rebuilds the old
// primary (D4). The shard serves, `check` passes, the unacknowledged write is
// nowhere, and a kill of the new primary is replaced again with no command.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { expenseFor } from '../../ch_client.ts';
import { addressOf } from '../../api/cluster-map.ts';
import { discover, send, type View } from '../../client/cluster.ts';
import { runNode, startShardPairs, until, type Machine } from '../shards.ts';
import { alone, writeAcked } from '../writers.ts';

type Pairs = Awaited<ReturnType<typeof startShardPairs>>;
const WAIT_MS = 180_000;
const ALL: Machine[] = ['primary', 'standby', 'standby-2'];

describe('a stop and a start after an automatic failover whose old primary diverged', () => {
  let pairs: Pairs;
  let view: View;
  const seeds = (but?: Machine) => ALL.filter((m) => m !== but).map((m) => pairs.serverOf(1, m));
  const secret = () => join(pairs.dir, 'cluster-secret');
  const acked: string[] = [];
  const write = async (prefix: string, count: number, but?: Machine) => void (view = await writeAcked(seeds(but), prefix, count, acked));
  const recorded = () => readFileSync(join(pairs.machineDir(1, 'primary'), 'primary'), 'utf8').trim() as Machine;
  const mapAddress = async (but?: Machine) => addressOf((await discover(seeds(but), 1)).view.map, pairs.nodeOf(1));

  before(async () => {
    pairs = await startShardPairs(1, { standbys: 2 });
  });
  after(async () => {
    await pairs?.stop();
  });

  it('the old primary rebuilt by the start, the winner kept; a second kill is replaced with no command', async () => {
    await write('before', 10);
    for (const m of ['standby', 'standby-2'] as const) await pairs.sql(1, m, 'STOP SLAVE IO_THREAD');
    const unacked = alone(pairs.nodeOf(1), 'POST', '/v1/expenses', expenseFor('unacked')).then((r) => r.status, () => 0);
    await until('a write waiting for an ack', async () => Number((await pairs.sql(1, 'primary', "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_wait_sessions'"))[0]![1]) > 0, WAIT_MS);
    await pairs.kill(1, 'primary');
    assert.notEqual(await unacked, 201);
    await until('the map names a standby', async () => (await mapAddress('primary')) !== pairs.nodeOf(1), WAIT_MS);
    const winner = recorded();
    assert.notEqual(winner, 'primary');
    await write('failed-over', 10, 'primary');

    const stopped = await pairs.script('stop');
    assert.equal(stopped.code, 0, stopped.stdout + stopped.stderr);
    const started = await pairs.script('1');
    assert.equal(started.code, 0, started.stdout + started.stderr);
    assert.match(started.stdout, /shard 1's primary machine: DIVERGED: /);
    assert.equal(recorded(), winner, 'the start keeps the election winner as the primary (S6)');
    await until('status with no warning: three machines, two following', async () => !/WARNING/.test((await pairs.script('status')).stdout), WAIT_MS);
    await write('restarted', 10);
    const checked = await runNode(['ch_client.ts', 'check', '--nodes', pairs.nodeOf(1), '--secret-file', secret()]);
    assert.equal(checked.code, 0, checked.stdout + checked.stderr);
    for (const id of acked) assert.equal((await send(view, id, 'GET', `/v1/expenses/${id}`)).body?.name, expenseFor(id).name, id);
    assert.equal((await send(view, 'unacked', 'GET', '/v1/expenses/unacked')).status, 404);

    await pairs.kill(1, winner);
    await until('the map names another machine', async () => ![undefined, pairs.serverOf(1, winner)].includes(await mapAddress(winner)), WAIT_MS);
    await until('a write acknowledged after the second kill', async () => {
      view = (await discover(seeds(winner), 1)).view;
      const id = `again-${Date.now()}`;
      if ((await send(view, id, 'POST', '/v1/expenses', expenseFor(id))).status !== 201) return false;
      acked.push(id);
      return true;
    }, WAIT_MS);
    for (const id of acked) assert.equal((await send(view, id, 'GET', `/v1/expenses/${id}`)).body?.name, expenseFor(id).name, id);
  });
});
