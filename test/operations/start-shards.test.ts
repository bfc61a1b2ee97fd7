// start-shards.sh: its lifecycle, its security defaults, and every failure it
// must explain without leaving half-started processes behind.

import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { expenseFor } from '../../ch_client.ts';
import { HashRing } from '../../ring.ts';
import { freePorts, ROOT, run, running, startShards, waitForExit, type Shards } from '../shards.ts';

/** Runs start-shards.sh in a fresh temp dir of its own; the dir is removed afterwards. */
async function inTempDir<T>(fn: (dir: string, script: (args: string[], env?: NodeJS.ProcessEnv) => ReturnType<typeof run>) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'chs-'));
  const base = await freePorts(3);
  const script = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    run(join(ROOT, 'start-shards.sh'), args, { env: { ...process.env, SHARDS_DIR: dir, SHARDS_BASE_PORT: String(base), SHARDS_PORT_STEP: '1', ...env } });
  try {
    return await fn(dir, script);
  } finally {
    await script(['stop']);
    await rm(dir, { recursive: true, force: true });
  }
}

/** The processes whose command line mentions a directory. */
async function processesIn(dir: string): Promise<string[]> {
  const ps = await run('ps', ['-eo', 'pid=,args=']);
  return ps.stdout
    .split('\n')
    .filter((line) => line.includes(dir) && running(Number(line.trim().split(/\s+/)[0])));
}

describe('start-shards.sh', () => {
  let shards: Shards;
  before(async () => {
    shards = await startShards(2);
  });
  after(async () => {
    await shards?.stop();
  });

  it('reports each shard as up, with its address, pids and data directory', async () => {
    const res = await shards.script('status');
    assert.equal(res.code, 0);
    const lines = res.stdout.trim().split('\n');
    assert.equal(lines.length, 2);
    for (const [i, line] of lines.entries()) {
      const server = await shards.pid(i + 1, 'server.pid');
      const mysql = await shards.pid(i + 1, 'mysqld.pid');
      assert.match(line, new RegExp(`^shard ${i + 1}  http://${shards.nodes[i]}  up +server pid ${server} +mysql pid ${mysql} +${join(shards.dir, `shard-${i + 1}`)}$`));
    }
  });

  it('changes nothing, and says so, when everything is already up', async () => {
    const before = await shards.pid(1, 'server.pid');
    const res = await shards.script('2');
    assert.equal(res.code, 0);
    assert.match(res.stdout, /all 2 shards are already up; nothing to do/);
    assert.equal(await shards.pid(1, 'server.pid'), before);
  });

  it('starts a shard whose stored map cannot be read, says so in one line, and reshard --to repairs it', async () => {
    const map = await (await fetch(`http://${shards.nodes[0]}/cluster/map`)).json();
    const server = await shards.pid(2, 'server.pid');
    await shards.sql(2, "UPDATE expenses.cluster_map SET map = '{'");
    process.kill(server, 'SIGTERM');
    await waitForExit(server);
    const again = await shards.script('2');
    assert.equal(again.code, 0, again.stdout + again.stderr);
    assert.match(again.stderr, /^shard 2: up, but shard [\w-]+: its stored cluster map \(epoch 1\) cannot be read: .*JSON.*reshard --to <the cluster's nodes>$/m);
    const client = await run(process.execPath, ['ch_client.ts', 'reshard', '--nodes', shards.nodes.join(','), '--to', shards.nodes.join(','), '--secret-file', shards.secretFile]);
    assert.equal(client.code, 0, client.stdout + client.stderr);
    assert.equal((await fetch(`http://${shards.nodes[1]}/healthz`)).status, 200);
    // The repaired map is the cluster's, signed by the operator's tool (rule 9).
    const repaired = await (await fetch(`http://${shards.nodes[1]}/cluster/map`)).json();
    assert.deepEqual({ ...repaired, map: unsigned(repaired.map) }, { ...map, map: unsigned(map.map), shard: (await (await fetch(`http://${shards.nodes[1]}/healthz`)).json()).shard });
  });

  it('brings up only what is down, and keeps the data', async () => {
    // An id that the cluster map places on shard 2, which takes no other.
    const ring = new HashRing(shards.nodes);
    let kept = 'kept-0';
    for (let i = 1; ring.get(kept) !== shards.nodes[1]; i++) kept = `kept-${i}`;
    const res = await fetch(`http://${shards.nodes[1]}/v1/expenses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(expenseFor(kept)),
    });
    assert.equal(res.status, 201);
    const untouched = await shards.pid(1, 'server.pid');
    const server = await shards.pid(2, 'server.pid');
    const mysql = await shards.pid(2, 'mysqld.pid');
    process.kill(server, 'SIGKILL');
    process.kill(mysql, 'SIGKILL');
    await waitForExit(server);
    await waitForExit(mysql);
    assert.match((await shards.script('status')).stdout, /^shard 2 .* down /m);

    const again = await shards.script('2');
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /shard 2: http:\/\/\S+ up/);
    assert.doesNotMatch(again.stdout, /shard 1:/);
    assert.equal(await shards.pid(1, 'server.pid'), untouched);
    assert.deepEqual(await shards.ids(2), [kept]);
  });

  it('keeps MySQL off TCP, the servers on loopback, and the secrets private', async () => {
    const [[networking]] = (await shards.sql(1, 'SELECT @@skip_networking')) as [[string]];
    assert.equal(networking, '1');
    for (const shard of [1, 2]) {
      const dir = join(shards.dir, `shard-${shard}`);
      assert.equal((await stat(join(dir, 'password'))).mode & 0o777, 0o600);
      assert.equal((await stat(dir)).mode & 0o777, 0o700);
      assert.match(await readFile(join(dir, 'password'), 'utf8'), /^[0-9a-f]{32}$/);
    }
    const ss = await run('ss', ['-ltnpH']);
    const server = await shards.pid(1, 'server.pid');
    const listening = ss.stdout.split('\n').filter((line) => line.includes(`pid=${server},`));
    assert.equal(listening.length, 1);
    assert.match(listening[0]!, new RegExp(`\\s127\\.0\\.0\\.1:${shards.nodes[0]!.split(':')[1]}\\s`));
    const mysql = await shards.pid(1, 'mysqld.pid');
    assert.equal(ss.stdout.split('\n').filter((line) => line.includes(`pid=${mysql},`)).length, 0);
  });

  it('gives the app user its own rows and nothing more', async () => {
    const env = await shards.databaseEnv(1);
    const asApp = (statement: string) =>
      run('mariadb', ['--no-defaults', `--socket=${env.MYSQL_SOCKET}`, '--user=expenses', `--password=${env.MYSQL_PASSWORD}`, '--batch', '-e', statement]);
    assert.equal((await asApp('SELECT COUNT(*) FROM expenses.expenses')).code, 0);
    for (const forbidden of ['SELECT * FROM mysql.user', 'DROP TABLE expenses.expenses', 'CREATE DATABASE other', 'SELECT * FROM expenses.expenses INTO OUTFILE "/tmp/x"']) {
      const res = await asApp(forbidden);
      assert.notEqual(res.code, 0, forbidden);
      assert.match(res.stderr, /denied/i, forbidden);
    }
    const wrong = await run('mariadb', ['--no-defaults', `--socket=${env.MYSQL_SOCKET}`, '--user=expenses', '--password=wrong', '-e', 'SELECT 1']);
    assert.match(wrong.stderr, /Access denied/);
  });

  it('stops servers and MySQL cleanly, leaving no process behind', async () => {
    const own = await startShards(1);
    const pids = [await own.pid(1, 'server.pid'), await own.pid(1, 'mysqld.pid')];
    const res = await own.script('stop');
    assert.equal(res.code, 0);
    assert.match(res.stdout, /shard 1: stopped/);
    for (const pid of pids) assert.equal(running(pid), false);
    assert.match(await readFile(join(own.dir, 'shard-1', 'server.log'), 'utf8'), /SIGTERM: shutting down/);
    assert.match(await readFile(join(own.dir, 'shard-1', 'mysqld.err'), 'utf8'), /Shutdown complete/);
    assert.match((await own.script('status')).stdout, /^shard 1 .* down +server pid - +mysql pid - /m);
    await own.stop();
  });

  it('makes a cluster secret of 64 hex characters, readable by its owner alone, and gives the servers only its path', async () => {
    assert.equal((await stat(shards.secretFile)).mode & 0o777, 0o600);
    const secret = await readFile(shards.secretFile, 'utf8');
    assert.match(secret, /^[0-9a-f]{64}$/);
    for (const shard of [1, 2]) {
      const pid = await shards.pid(shard, 'server.pid');
      const environ = (await readFile(`/proc/${pid}/environ`, 'utf8')).split('\0');
      assert.ok(environ.includes(`CLUSTER_SECRET_FILE=${shards.secretFile}`), `shard ${shard} is told where the secret is`);
      assert.equal(environ.some((variable) => variable.includes(secret)), false, `shard ${shard} gets no secret in its environment`);
      assert.equal((await readFile(`/proc/${pid}/cmdline`, 'utf8')).includes(secret), false, `shard ${shard} gets no secret on its command line`);
    }
  });

  it('gives a shard started next to a running cluster no map; the reshard to every node makes it a member', async () => {
    const cluster = (await (await fetch(`http://${shards.nodes[0]}/cluster/map`)).json()).map;
    const res = await shards.script('3');
    assert.equal(res.code, 0, res.stderr);
    const newcomer = shards.nodeOf(3);
    assert.equal((await (await fetch(`http://${newcomer}/cluster/map`)).json()).map, null);
    const nodes = [...shards.nodes, newcomer].join(',');
    const joined = await run(process.execPath, ['ch_client.ts', 'reshard', '--nodes', shards.nodes.join(','), '--to', nodes, '--secret-file', shards.secretFile]);
    assert.equal(joined.code, 0, joined.stdout + joined.stderr);
    const its = (await (await fetch(`http://${newcomer}/cluster/map`)).json()).map;
    assert.ok(its.epoch > cluster.epoch, `epoch ${its.epoch} after ${cluster.epoch}`);
    assert.deepEqual(its.nodes.map((n: { name: string }) => n.name), [...shards.nodes, newcomer]);
  });
});

describe('start-shards.sh failures', () => {
  it('gives the install commands when there is no MySQL server', async () => {
    await inTempDir(async (dir, script) => {
      const res = await script(['1'], { MYSQLD: '/nonexistent/mysqld' });
      assert.equal(res.code, 1);
      assert.match(res.stderr, /no MySQL server found/);
      assert.match(res.stderr, /apt-get install mariadb-server/);
      assert.match(res.stderr, /brew install mariadb/);
      assert.deepEqual(await processesIn(dir), []);
    });
  });

  it('refuses MySQL 9, whose authentication the driver cannot speak', async () => {
    await inTempDir(async (dir, script) => {
      const fake = join(dir, 'mysqld');
      await writeFile(fake, '#!/bin/sh\necho "mysqld  Ver 9.1.0 for Linux on x86_64 (MySQL Community Server - GPL)"\n');
      await chmod(fake, 0o755);
      const res = await script(['1'], { MYSQLD: fake });
      assert.equal(res.code, 1);
      assert.match(res.stderr, /unsupported MySQL server: mysqld +Ver 9\.1\.0/);
      assert.match(res.stderr, /mysql_native_password/);
      assert.match(res.stderr, /Use MariaDB/);
    });
  });

  it('names a port already in use and its holder, and starts nothing; a port taken late fails that shard alone, and a start with other ports serves', async () => {
    await inTempDir(async (dir, script) => {
      const blocker = createServer();
      await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
      const port = (blocker.address() as { port: number }).port;
      try {
        const res = await script(['2'], { SHARDS_BASE_PORT: String(port - 1) });
        assert.equal(res.code, 1);
        assert.match(res.stderr, new RegExp(`port ${port} \\(shard 2\\) is already in use by pid ${process.pid} `));
        assert.deepEqual(await processesIn(dir), []);
      } finally {
        blocker.close();
      }
      // Taken after the check, once shard 2's MySQL runs: its server cannot listen.
      const base = await freePorts(2);
      const late = createServer();
      const failed = script(['2'], { SHARDS_BASE_PORT: String(base) });
      await until(async () => (await stat(join(dir, 'shard-2', 'mysqld.pid')).catch(() => undefined)) !== undefined);
      await new Promise<void>((resolve) => late.listen(base + 1, '127.0.0.1', resolve));
      try {
        const res = await failed;
        assert.equal(res.code, 1, res.stdout + res.stderr);
        assert.match(res.stderr, /shard 2: the server stopped while starting/);
        assert.match(res.stderr, /shard\(s\) 2 did not start \(see above\); the others are up/);
        assert.deepEqual(await processesIn(join(dir, 'shard-2')), []);
        assert.equal((await fetch(`http://127.0.0.1:${base}/healthz`)).status, 200, 'shard 1 stays up');
      } finally {
        late.close();
      }
      assert.equal((await script(['stop'])).code, 0);
      // Then a start with other ports works and serves.
      const other = await freePorts(2);
      const started = await script(['2'], { SHARDS_BASE_PORT: String(other) });
      assert.equal(started.code, 0, started.stdout + started.stderr);
      // With no map (the operator's reshard makes the first one), each shard serves every id: level 1.
      assert.equal((await (await fetch(`http://127.0.0.1:${other}/cluster/map`)).json()).map, null);
      const stored = await fetch(`http://127.0.0.1:${other + 1}/v1/expenses`, { method: 'POST', body: JSON.stringify(expenseFor('late-1')) });
      assert.equal(stored.status, 201);
    });
  });

  it('refuses a socket path longer than a Unix socket allows', async () => {
    const deep = join(tmpdir(), 'chs-long-'.padEnd(90, 'x'));
    const res = await run(join(ROOT, 'start-shards.sh'), ['1'], { env: { ...process.env, SHARDS_DIR: deep } });
    assert.equal(res.code, 1);
    assert.match(res.stderr, /socket path .*mysqld\.sock is over the 107-byte limit/);
    assert.match(res.stderr, /Set SHARDS_DIR to a shorter directory/);
    await assert.rejects(stat(deep));
  });

  it('shows the end of the error log when MySQL dies on start, and stops what it started for that shard', async () => {
    await inTempDir(async (dir, script) => {
      // An empty data directory looks initialised, but MySQL cannot run on it.
      await mkdir(join(dir, 'shard-2', 'mysql'), { recursive: true });
      const res = await script(['2']);
      assert.equal(res.code, 1);
      assert.match(res.stderr, /shard 2: MySQL stopped while starting\. The end of .*mysqld\.err:/);
      assert.match(res.stderr, /\[ERROR\]/);
      assert.match(res.stderr, /stopping what this run started/);
      assert.match(res.stderr, /shard\(s\) 2 did not start/);
      assert.deepEqual(await processesIn(join(dir, 'shard-2')), []);
    });
  });
});

/** Resolves once `done` holds, asking every 50 ms for up to 60 s. */
async function until(done: () => Promise<boolean>): Promise<void> {
  for (const deadline = Date.now() + 60_000; !(await done()); ) {
    if (Date.now() > deadline) throw new Error('gave up waiting');
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A cluster map without the MAC the operator's tool adds (rule 9). */
function unsigned({ mac: _, ...map }: Record<string, unknown>): Record<string, unknown> {
  return map;
}
