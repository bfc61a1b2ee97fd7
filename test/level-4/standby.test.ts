// start-shards.sh with SHARDS_STANDBY=1: a standby per shard, on MariaDB's own
// replication (GTID, semi-synchronous), and the status that shows each pair.
// Rules S1-S7 are in mysql/replication.ts.

import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { expenseFor } from '../../ch_client.ts';
import { ROOT, run, runNode, running, startShardPairs, until, waitForExit } from '../shards.ts';

type Pairs = Awaited<ReturnType<typeof startShardPairs>>;

function post(node: string, id: string): Promise<Response> {
  return fetch(`http://${node}/v1/expenses`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(expenseFor(id)),
  });
}


describe('start-shards.sh with SHARDS_STANDBY=1', () => {
  let pairs: Pairs;
  before(async () => {
    pairs = await startShardPairs(1);
  });
  after(async () => {
    await pairs?.stop();
  });

  const value = async (machine: 'primary' | 'standby', statement: string) => (await pairs.sql(1, machine, statement))[0]?.[0];
  const check = () => runNode(['ch_client.ts', 'check', '--nodes', pairs.nodeOf(1), '--secret-file', join(pairs.dir, 'cluster-secret')]);

  it('starts a standby beside each shard: its own MySQL, data directory and server', async () => {
    assert.match(pairs.started.stdout, /shard 1: http:\/\/\S+ up/);
    assert.match(pairs.started.stdout, /shard 1's standby: http:\/\/\S+ up, read-only, following mysql 127\.0\.0\.1:\d+/);
    const pids = [
      await pairs.pid(1, 'primary', 'mysqld.pid'),
      await pairs.pid(1, 'standby', 'mysqld.pid'),
      await pairs.pid(1, 'primary', 'server.pid'),
      await pairs.pid(1, 'standby', 'server.pid'),
    ];
    assert.equal(new Set(pids).size, 4);
    for (const pid of pids) assert.ok(running(pid), `pid ${pid} runs`);
    assert.ok((await stat(join(pairs.machineDir(1, 'standby'), 'mysql'))).isDirectory());
    assert.notEqual(await value('primary', 'SELECT @@server_id'), await value('standby', 'SELECT @@server_id'));
  });

  it('replicates a write through the primary\'s server to the standby', async () => {
    const res = await post(pairs.nodeOf(1), 'copied-1');
    assert.equal(res.status, 201);
    // AFTER_SYNC: at the 201 the write is in the standby's relay log; applied a moment later.
    await until('the standby has applied copied-1', async () => (await value('standby', "SELECT COUNT(*) FROM expenses.expenses WHERE id = 'copied-1'")) === '1', 10_000);
    assert.equal(await value('standby', 'SELECT @@gtid_slave_pos'), await value('primary', 'SELECT @@gtid_binlog_pos'));
  });

  it('acknowledges a write only once the standby has it: semi-sync ON, AFTER_SYNC, no fallback to asynchronous, everything synced', async () => {
    assert.equal(await value('primary', "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_STATUS'"), 'ON');
    assert.equal(await value('primary', "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_CLIENTS'"), '1');
    const settings = 'SELECT @@rpl_semi_sync_master_wait_point, @@rpl_semi_sync_master_timeout, @@rpl_semi_sync_master_wait_no_slave, @@sync_binlog, @@innodb_flush_log_at_trx_commit, @@log_slave_updates, @@gtid_strict_mode, @@relay_log_recovery, @@binlog_format, @@rpl_semi_sync_slave_enabled';
    const expected = ['AFTER_SYNC', '4294967295', '1', '1', '1', '1', '1', '1', 'ROW', '1'];
    assert.deepEqual((await pairs.sql(1, 'primary', settings))[0], expected);
    assert.deepEqual((await pairs.sql(1, 'standby', settings))[0], expected);
    assert.match((await value('standby', 'SELECT @@gtid_slave_pos'))!, /^0-11-\d+$/);
  });

  it('keeps the standby read-only: the app user cannot write there, and its server sends writes to the primary (rule 8)', async () => {
    assert.equal(await value('standby', 'SELECT @@read_only'), '1');
    assert.equal(await value('primary', 'SELECT @@read_only'), '0');
    const password = (await run('cat', [join(pairs.machineDir(1, 'standby'), 'password')])).stdout.trim();
    const asApp = await run('mariadb', ['--no-defaults', `--socket=${join(pairs.machineDir(1, 'standby'), 'mysqld.sock')}`, '--user=expenses', `--password=${password}`, 'expenses', '-e', "DELETE FROM expenses WHERE id = 'copied-1'"]);
    assert.notEqual(asApp.code, 0);
    assert.match(asApp.stderr, /ERROR 1290 .*--read-only/);
    // Rule 7 (api/cluster-map.ts): the standby's server serves no id; it names the owner at its address.
    const res = await post(pairs.standbyOf(1), 'never-on-standby');
    assert.equal(res.status, 421);
    const body = await res.json();
    assert.equal(body.address, pairs.nodeOf(1));
    assert.match(body.error, /a standby, or a fenced old primary, and serves no id/);
    assert.equal(await value('standby', "SELECT COUNT(*) FROM expenses.expenses WHERE id = 'never-on-standby'"), '0');
    const health = await (await fetch(`http://${pairs.standbyOf(1)}/healthz`)).json();
    assert.equal(health.role, 'standby');
    assert.equal((await (await fetch(`http://${pairs.nodeOf(1)}/healthz`)).json()).role, 'primary');
  });

  it('keeps each MySQL on loopback, and the replication password private', async () => {
    const ss = await run('ss', ['-ltnpH']);
    for (const machine of ['primary', 'standby'] as const) {
      const pid = await pairs.pid(1, machine, 'mysqld.pid');
      const listening = ss.stdout.split('\n').filter((line) => line.includes(`pid=${pid},`));
      assert.equal(listening.length, 1, machine);
      assert.match(listening[0]!, /\s127\.0\.0\.1:\d+\s/, machine);
      assert.equal((await stat(join(pairs.machineDir(1, machine), 'repl-password'))).mode & 0o777, 0o600);
    }
  });

  it('shows the pair in status: address, pids, replication state and semi-sync', async () => {
    const res = await pairs.script('status');
    assert.equal(res.code, 0, res.stderr);
    const lines = res.stdout.trim().split('\n');
    assert.equal(lines.length, 3, res.stdout);
    const [primaryServer, primaryMysql, standbyServer, standbyMysql] = [
      await pairs.pid(1, 'primary', 'server.pid'),
      await pairs.pid(1, 'primary', 'mysqld.pid'),
      await pairs.pid(1, 'standby', 'server.pid'),
      await pairs.pid(1, 'standby', 'mysqld.pid'),
    ];
    assert.match(lines[0]!, new RegExp(`^shard 1  http://${pairs.nodeOf(1)}  up +server pid ${primaryServer} `));
    assert.match(lines[1]!, new RegExp(`^  primary  http://${pairs.nodeOf(1)} +up +server pid ${primaryServer} +mysql pid ${primaryMysql} +mysql 127\\.0\\.0\\.1:\\d+  read_only OFF  gtid_binlog_pos (0-11-\\d+)  Rpl_semi_sync_master_status ON  Rpl_semi_sync_master_clients 1 `));
    const pos = /gtid_binlog_pos (\S+)/.exec(lines[1]!)![1];
    assert.match(lines[2]!, new RegExp(`^  standby  http://${pairs.standbyOf(1)} +\\S+ +server pid ${standbyServer} +mysql pid ${standbyMysql} +mysql 127\\.0\\.0\\.1:\\d+  read_only ON  .*Slave_IO_Running Yes  Slave_SQL_Running Yes  Gtid_IO_Pos ${pos}  gtid_slave_pos ${pos} `));
    assert.doesNotMatch(res.stdout, /WARNING/);
  });

  it('check shows each shard\'s primary and standby with their replication state (GET /cluster/replication on both)', async () => {
    const res = await check();
    assert.equal(res.code, 0, res.stdout + res.stderr);
    const esc = (s: string) => s.replace(/\./g, '\\.');
    assert.match(res.stdout, new RegExp(`shard \\S+, ${esc(pairs.nodeOf(1))}: primary ${esc(pairs.nodeOf(1))}: primary, semi-sync ON, 1 standby connected, gtid_binlog_pos 0-11-\\d+`));
    assert.match(res.stdout, new RegExp(`standby ${esc(pairs.standbyOf(1))}: standby, follows 127\\.0\\.0\\.1:\\d+, IO Yes, SQL Yes, gtid_slave_pos 0-11-\\d+`));
    assert.doesNotMatch(res.stderr, /WITHOUT STANDBY/);
  });

  it('flags a shard whose standby is gone, holds its writes unacknowledged, and lets them through when the standby is back', async () => {
    const standby = await pairs.pid(1, 'standby', 'mysqld.pid');
    await pairs.sql(1, 'standby', 'SHUTDOWN');
    await waitForExit(standby);
    const status = await pairs.script('status');
    assert.match(status.stdout, /WARNING: shard 1 runs without its standby: .*the standby's MySQL is down/);
    // check flags it too, and fails.
    const checked = await check();
    assert.equal(checked.code, 1, checked.stdout + checked.stderr);
    assert.match(checked.stderr, /WITHOUT STANDBY shard \S+ \(\S+ at \S+\): (no standby is connected to its primary|its standby \S+ does not replicate)/);
    // The launcher's number of the shard (its shard-N), not the shard's id, in the command to run.
    assert.match(checked.stderr, /Give it one: on its host, \.\/start-shards\.sh rejoin 1$/m);

    // S3: no ack, no 201. server.ts gives up after its 5 s query timeout.
    const started = Date.now();
    const res = await post(pairs.nodeOf(1), 'waits-for-standby');
    assert.equal(res.status, 503);
    assert.ok(Date.now() - started >= 4_500);
    assert.match((await pairs.script('status')).stdout, /1 write\(s\) on the primary wait for a standby's ack/);
    assert.equal(await value('primary', "SELECT COUNT(*) FROM expenses.expenses WHERE id = 'waits-for-standby'"), '0');

    const again = await pairs.script('1');
    assert.equal(again.code, 0, again.stderr);
    await until('the held write committed on both machines', async () =>
      (await value('primary', "SELECT COUNT(*) FROM expenses.expenses WHERE id = 'waits-for-standby'")) === '1' &&
      (await value('standby', "SELECT COUNT(*) FROM expenses.expenses WHERE id = 'waits-for-standby'")) === '1', 10_000);
    assert.doesNotMatch((await pairs.script('status')).stdout, /WARNING/);
  });

  it('keeps the mode of its first start: a start without SHARDS_STANDBY keeps the standbys, and SHARDS_STANDBY=0 is refused', async () => {
    assert.equal('SHARDS_STANDBY' in pairs.env, process.env.SHARDS_STANDBY !== undefined);
    assert.equal((await readFile(join(pairs.dir, 'mode'), 'utf8')).trim(), 'standby');
    const plain = await run(join(ROOT, 'start-shards.sh'), ['1'], { env: { ...pairs.env, SHARDS_STANDBY: '0' } });
    assert.equal(plain.code, 1);
    assert.match(plain.stderr, /this cluster runs with standbys \(\S+\/mode says so\): start it without SHARDS_STANDBY=0/);
  });

  it('stops standbys too, leaving no process behind', async () => {
    const pids = [
      await pairs.pid(1, 'primary', 'server.pid'),
      await pairs.pid(1, 'primary', 'mysqld.pid'),
      await pairs.pid(1, 'standby', 'server.pid'),
      await pairs.pid(1, 'standby', 'mysqld.pid'),
    ];
    const res = await pairs.script('stop');
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /shard 1: stopped/);
    for (const pid of pids) assert.equal(running(pid), false, `pid ${pid}`);
    const ps = await run('ps', ['-eo', 'pid=,args=']);
    assert.deepEqual(ps.stdout.split('\n').filter((line) => line.includes(pairs.dir) && running(Number(line.trim().split(/\s+/)[0]))), []);
  });
});
