// Many writers at once, and the security basics a shard promises.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { expenseFor } from '../../ch_client.ts';
import { call } from '../../client/http.ts';
import { HashRing } from '../../ring.ts';
import { run, startShards, type Shards } from '../shards.ts';

let shards: Shards;
before(async () => {
  shards = await startShards(3);
});
after(async () => {
  await shards?.stop();
});

describe('concurrency', () => {
  it('lets exactly one of 100 concurrent POSTs of the same id win, and stores the winner', async (t) => {
    // Its owner under the cluster map: any other shard would answer 421 to all of them.
    const node = new HashRing(shards.nodes).get('contested');
    const answers = await Promise.all(Array.from({ length: 100 }, (_, i) => call(node, 'POST', '/v1/expenses', { ...expenseFor('contested'), name: `writer ${i}` })));
    const won = answers.filter((a) => a.status === 201);
    assert.equal(won.length, 1);
    assert.equal(answers.filter((a) => a.status === 409).length, 99);
    assert.deepEqual((await call(node, 'GET', '/v1/expenses/contested')).body, won[0]!.body);
    t.diagnostic(`100 concurrent POSTs of one id: 1 x 201 (${won[0]!.body.name}), 99 x 409`);
  });

  it('stores 1,000 concurrent POSTs across three shards exactly once, each on its owner', async (t) => {
    const ring = new HashRing(shards.nodes);
    const ids = Array.from({ length: 1000 }, (_, i) => `c-${i}`);
    const answers = await Promise.all(ids.map((id) => call(ring.get(id), 'POST', '/v1/expenses', expenseFor(id))));
    assert.deepEqual(answers.filter((a) => a.status !== 201), []);
    const wanted = new Set(ids);
    let total = 0;
    for (const [i, node] of shards.nodes.entries()) {
      const stored = (await shards.ids(i + 1)).filter((id) => wanted.has(id));
      assert.deepEqual(stored, ids.filter((id) => ring.get(id) === node).sort());
      total += stored.length;
    }
    assert.equal(total, 1000);
    t.diagnostic('1,000 concurrent POSTs over 3 shards: 1,000 x 201, each stored once, on its owner');
  });
});

describe('security basics', () => {
  // start-shards.test.ts checks the rest: no TCP port for MySQL, servers on
  // loopback only, password files 0600, and an app user without DDL or the
  // mysql schema.
  it("gives no shard's app user a way into another shard's database", async () => {
    const mine = await shards.databaseEnv(1);
    const theirs = await shards.databaseEnv(2);
    assert.notEqual(mine.MYSQL_PASSWORD, theirs.MYSQL_PASSWORD, 'each shard has its own password');
    const res = await run('mariadb', ['--no-defaults', `--socket=${theirs.MYSQL_SOCKET}`, '--user=expenses', `--password=${mine.MYSQL_PASSWORD}`, '-e', 'SELECT COUNT(*) FROM expenses.expenses']);
    assert.notEqual(res.code, 0);
    assert.match(res.stderr, /Access denied/);
    const asApp = await run('mariadb', ['--no-defaults', `--socket=${mine.MYSQL_SOCKET}`, '--user=expenses', `--password=${mine.MYSQL_PASSWORD}`, '-e', 'SHOW DATABASES']);
    assert.deepEqual(asApp.stdout.trim().split('\n').slice(1).sort(), ['expenses', 'information_schema']);
    const log = await readFile(join(shards.dir, 'shard-1', 'mysqld.err'), 'utf8');
    assert.doesNotMatch(log, new RegExp(mine.MYSQL_PASSWORD!), 'the password never reaches a log');
  });
});
