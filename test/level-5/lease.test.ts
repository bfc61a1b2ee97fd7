// The primary's lease (election/rules.ts, E1 and E2), on a pair
// (SHARDS_STANDBY=1): a primary serves only while its standby grants it a
// lease, and answers a request only if the lease held when it began and
// holds when it ends. The test freezes machines with SIGSTOP, so that it,
// not timing, decides which grants can arrive.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { LEASE_MS } from '../../election/rules.ts';
import { at, expense } from '../requests.ts';
import { startShardPairs, until } from '../shards.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("a primary's lease, on a pair", () => {
  let pairs: Awaited<ReturnType<typeof startShardPairs>>;
  let base: string;
  const frozen: number[] = [];
  const freeze = (pid: number) => (process.kill(pid, 'SIGSTOP'), frozen.push(pid));
  // Linux's state letter for a process: T once SIGSTOP has stopped it.
  const state = (pid: number) => { const stat = readFileSync(`/proc/${pid}/stat`, 'utf8'); return stat[stat.lastIndexOf(')') + 2]; };
  const thaw = () => frozen.splice(0).forEach((pid) => process.kill(pid, 'SIGCONT'));

  before(async () => {
    pairs = await startShardPairs(1);
    base = `http://${pairs.nodeOf(1)}`;
  });
  after(async () => {
    thaw();
    await pairs?.stop();
  });

  it('serves while its standby grants the lease; once the grants stop, it answers 503 naming the lease, never the record', async () => {
    const posted = await at(base, 'POST', '/v1/expenses', expense({ id: 'leased' }));
    assert.equal(posted.status, 201, JSON.stringify(posted.body));
    freeze(await pairs.pid(1, 'standby', 'server.pid'));
    // E1: the last grant came before the freeze, so the lease ends within LEASE_MS of it.
    await sleep(LEASE_MS);
    const res = await at(base, 'GET', '/v1/expenses/leased');
    assert.equal(res.status, 503, JSON.stringify(res.body));
    assert.equal(res.body.lease, false);
    assert.match(res.body.error, /holds no lease from its standbys \(election\/rules\.ts, E1\)/);
    thaw();
    await until('the lease back with the standby', async () => (await at(base, 'GET', '/v1/expenses/leased')).status === 200, 10_000);
    assert.deepEqual((await at(base, 'GET', '/v1/expenses/leased')).body, posted.body);
  });

  it('a read that began under the lease and ends after it is answered 503 (E2): what it read may be old by then', async () => {
    assert.equal((await at(base, 'GET', '/v1/expenses/leased')).status, 200);
    // The read starts under the lease and stalls in MySQL; meanwhile no grant can come.
    freeze(await pairs.pid(1, 'primary', 'mysqld.pid'));
    const read = at(base, 'GET', '/v1/expenses/leased');
    let answeredAt = NaN;
    void read.then(() => (answeredAt = performance.now()), () => undefined);
    await sleep(200);
    freeze(await pairs.pid(1, 'standby', 'server.pid'));
    const standbyStoppedAt = performance.now();
    await sleep(LEASE_MS + 500);
    assert.deepEqual(frozen.map(state), ['T', 'T'], 'both the MySQL under the read and the standby are stopped');
    process.kill(frozen.shift()!, 'SIGCONT'); // MySQL answers the read now, after the lease ran out
    const thawedAt = performance.now();
    const res = await read;
    // Said when it fails: whether the answer came before the MySQL under it was thawed, and what the primary logged.
    const late = `answered ${Math.round(answeredAt - standbyStoppedAt)} ms after the standby stopped, ${answeredAt < thawedAt ? 'before' : 'after'} its MySQL was thawed`;
    const log = () => readFileSync(join(pairs.machineDir(1, 'primary'), 'server.log'), 'utf8').split('\n').slice(-15).join('\n');
    assert.equal(res.status, 503, `${late}: ${JSON.stringify(res.body)}\nthe primary's log ends:\n${res.status === 503 ? '' : log()}`);
    assert.equal(res.body.lease, false);
    thaw();
    await until('the lease back with the standby', async () => (await at(base, 'GET', '/v1/expenses/leased')).status === 200, 10_000);
  });
});
