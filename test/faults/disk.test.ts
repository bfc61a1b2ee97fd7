// A full disk, for real: one shard whose data directory, MySQL and logs all
// live on a small tmpfs. Writes must turn into 507s, the server must stay up,
// nothing acknowledged may be lost, and freed space must work again with no
// restart. Needs root (to mount); skipped with a message otherwise.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import { startShards, type Shards } from '../shards.ts';

const mountpoint = mkdtempSync(join(tmpdir(), 'chs-disk-'));
let mounted = false;
let shards: Shards | undefined;

after(async () => {
  await shards?.stop();
  if (mounted) execFileSync('umount', [mountpoint]);
  rmSync(mountpoint, { recursive: true, force: true });
});

const MARK = 'personal-data-marker';

/** A record of about 2 KB, with a marker that must never reach a log. */
const record = (id: string) => ({ id, name: `${MARK} ${id}`, email: 'a@b.cc', category: 'c', description: 'd'.repeat(2000), link: '', estimated_costs: '1', submit_date: '01-01-2001' });

async function api(method: string, path: string, body?: unknown) {
  const res = await fetch(`http://${shards!.nodes[0]}${path}`, { method, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text === '' ? undefined : JSON.parse(text) };
}

const resize = (mb: number) => execFileSync('mount', ['-o', `remount,size=${mb}m`, mountpoint]);
const usedMb = () => Number(execFileSync('df', ['-k', '--output=used', mountpoint], { encoding: 'utf8' }).split('\n')[1]) / 1024;

describe('a full disk', () => {
  it('turns writes into 507s, keeps the server up and every acknowledged record, and writes again once space is freed', async (t: TestContext) => {
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=400m', 'tmpfs', mountpoint], { stdio: 'pipe' }); // MariaDB's data directory and the launcher's template of it, about 125 MB each
      mounted = true;
    } catch (err) {
      t.skip(`cannot mount a tmpfs here (needs root): ${(err as Error).message.split('\n')[0]}`);
      return;
    }
    shards = await startShards(1, { dir: join(mountpoint, 'shards') });
    const server = await shards.pid(1, 'server.pid');
    // Leave about 8 MB for records: MariaDB itself takes about 125 MB.
    resize(Math.ceil(usedMb() + 8));

    const acked = new Map<string, unknown>();
    let full = 0;
    for (let i = 0; full < 20; i++) {
      assert.ok(i < 20_000, 'the disk never filled');
      const res = await api('POST', '/v1/expenses', record(`r${i}`));
      if (res.status === 201) acked.set(`r${i}`, res.body);
      else {
        assert.equal(res.status, 507, JSON.stringify(res.body));
        assert.match(res.body.error, /out of disk space, and nothing was written/);
        full++;
      }
    }
    assert.ok(acked.size > 100, `${acked.size} records fitted first`);
    const health = await api('GET', '/healthz');
    assert.equal(health.status, 503);
    assert.match(health.body.status, /out of disk space/);

    // Even the log's disk is full now: a line that cannot be written is dropped, and the server stays up.
    try {
      const filler = join(mountpoint, 'filler');
      try {
        writeFileSync(filler, Buffer.alloc(64 << 20));
      } catch {
        // ENOSPC: the filler took what was left
      }
      await shards.sql(1, 'RENAME TABLE expenses TO expenses_away');
      // Enough 500s that their log lines overflow the log file's last page.
      for (let i = 0; i < 100; i++) assert.equal((await api('GET', '/v1/expenses/r0')).status, 500);
      await shards.sql(1, 'RENAME TABLE expenses_away TO expenses');
      rmSync(filler);
    } finally {
      await shards.sql(1, 'RENAME TABLE IF EXISTS expenses_away TO expenses');
    }
    assert.ok((await api('GET', '/healthz')).body.logLinesDropped >= 1, 'the unwritable log line was counted');
    assert.equal(await shards.pid(1, 'server.pid'), server);

    // Reads, a PUT that fits and DELETEs still work.
    for (const [id, body] of acked) assert.deepEqual((await api('GET', `/v1/expenses/${id}`)).body, body);
    assert.equal((await api('PUT', '/v1/expenses/r0', { name: 'changed' })).status, 202);
    acked.set('r0', { ...(acked.get('r0') as object), name: 'changed' });
    for (let i = 1; i <= 100; i++) {
      assert.equal((await api('DELETE', `/v1/expenses/r${i}`)).status, 204);
      acked.delete(`r${i}`);
    }
    // Space freed by deletes is used again, with no restart.
    assert.equal((await api('POST', '/v1/expenses', record('after-delete'))).status, 201);
    assert.equal((await api('GET', '/healthz')).status, 200);

    // So is a disk that grows.
    for (let i = 0; ; i++) {
      if ((await api('POST', '/v1/expenses', record(`more${i}`))).status === 507) break;
      assert.ok(i < 20_000);
    }
    resize(Math.ceil(usedMb() + 8));
    assert.equal((await api('POST', '/v1/expenses', record('after-growth'))).status, 201);
    assert.equal(await shards.pid(1, 'server.pid'), server, 'the same server process throughout');

    for (const [id, body] of acked) assert.deepEqual((await api('GET', `/v1/expenses/${id}`)).body, body, `${id} intact`);
    const log = readFileSync(join(mountpoint, 'shards', 'shard-1', 'server.log'), 'utf8');
    assert.ok(!log.includes(MARK), 'the log holds no record data');
    t.diagnostic(`full disk: ${acked.size + 100} records fitted, then 507; the server kept pid ${server}; a log line dropped; writes resumed after deletes and after growth`);
  });
});
