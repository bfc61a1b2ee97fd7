// npm run planted, not in CI: whether a run exposes the bug is timing (with
// standbys 40 s behind it caught it in 1 run of 1, with 8 s in 0 of 1).
// The history test catches a planted bug: a promotion that skips its apply
// step (D2 in mysql/replication.ts: the winner no longer waits until it has
// applied all it received before it stops replicating and opens for writes).
// A copy of the code, with that one line changed, runs a short history in
// which a primary machine is killed while its standbys lag: they apply what
// they receive 40 s late, longer than an election takes on a loaded machine
// (with 8 s, the winner, elected 20 s after the kill, had applied it all).
// The standby elected throws away the acknowledged writes it received and
// had not applied. The checker must say that the
// history is not linearizable, and show the shortest sub-history that fails.

import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, it } from 'node:test';
import { ROOT, runNode } from '../shards.ts';

// D2: the wait until the standby has applied up to what it received.
const APPLY = "const [{ reached }] = await sql<any[]>('SELECT MASTER_GTID_WAIT(?, ?) AS reached', [target, o.timeoutMs / 1000]);";

let copy: string | undefined;
after(() => copy && rm(copy, { recursive: true, force: true }));

it('a promotion that skips its apply step gives a history that the checker finds not linearizable', async () => {
  copy = await mkdtemp(join(tmpdir(), 'planted-'));
  await cp(ROOT, copy, { recursive: true, filter: (src) => !['node_modules', '.git', 'data'].includes(basename(src)) || src === ROOT });
  await symlink(join(ROOT, 'node_modules'), join(copy, 'node_modules'));
  const file = join(copy, 'mysql', 'replication.ts');
  const code = await readFile(file, 'utf8');
  assert.ok(code.includes(APPLY), `mysql/replication.ts no longer holds the line this test plants a bug by changing: ${APPLY}`);
  await writeFile(file, code.replace(APPLY, 'const reached = 0;'));
  const res = await runNode([join(copy, 'test', 'history', 'short.ts'), 'kill:1:40']);
  console.log(res.stdout.split('\n').filter((l) => /^(history|nemesis|id |  )/.test(l)).join('\n'));
  assert.match(res.stdout, /is not linearizable; its shortest failing history/, `the history with the bug planted was found linearizable, or the run failed:\n${res.stdout}${res.stderr}`);
  assert.equal(res.code, 1);
});
