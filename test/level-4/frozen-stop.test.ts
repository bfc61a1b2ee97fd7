// `./start-shards.sh stop` with a machine frozen (SIGSTOP on its server and
// its MariaDB: a paused VM, a stalled disk, the old primary of
// test/level-5/automatic.test.ts (b)). The stop must end, killing what does
// not stop, and the start after must get the shard back whole. The test
// freezes the standby itself, before the stop.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { expenseFor } from '../../ch_client.ts';
import { discover, send } from '../../client/cluster.ts';
import { join } from 'node:path';
import { ROOT, run, startShardPairs, until, type Machine } from '../shards.ts';

describe('a stop with a frozen machine', () => {
  let pairs: Awaited<ReturnType<typeof startShardPairs>>;
  const frozen: number[] = [];

  before(async () => {
    pairs = await startShardPairs(1);
  });
  after(async () => {
    for (const pid of frozen) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {}
    }
    await pairs?.stop();
  });

  it('ends, and the start after gets the shard back with its standby', async () => {
    let view = (await discover([pairs.nodeOf(1)], 1)).view;
    for (const id of ['a', 'b', 'c']) assert.equal((await send(view, id, 'POST', '/v1/expenses', expenseFor(id))).status, 201);
    const machine: Machine = 'standby';
    for (const file of ['server.pid', 'mysqld.pid'] as const) {
      const pid = await pairs.pid(1, machine, file);
      process.kill(pid, 'SIGSTOP');
      frozen.push(pid);
    }
    const from = Date.now();
    // Killed after 2 minutes (code -1 or a signal): the stop's own reaps take under a minute.
    const stopped = await run(join(ROOT, 'start-shards.sh'), ['stop'], { env: pairs.env, timeoutMs: 120_000 });
    assert.equal(stopped.code, 0, `the stop ended with ${stopped.code} after ${Date.now() - from} ms: ${stopped.stdout}${stopped.stderr}`);
    const started = await pairs.script('1');
    assert.equal(started.code, 0, started.stdout + started.stderr);
    await until('status with no warning', async () => !/WARNING/.test((await pairs.script('status')).stdout), 120_000);
    view = (await discover([pairs.nodeOf(1)], 1)).view;
    for (const id of ['a', 'b', 'c']) assert.equal((await send(view, id, 'GET', `/v1/expenses/${id}`)).body?.name, expenseFor(id).name, id);
  });
});
