// The history test catches a planted bug. A copy of the code, with the
// lease's check (election/rules.ts, E1 and E2) taken out of the primary's
// request path (election/group.ts), runs a short history in which a primary
// is cut off its standbys and replaced: the old primary, which no longer
// checks its lease, keeps answering the clients that still send to it from
// data that the new primary has moved past. The checker must say that the
// history is not linearizable, and show the shortest sub-history that fails.

import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, it } from 'node:test';
import { ROOT, runNode } from '../shards.ts';

// The two checks of E2, before and after the handler, in election/group.ts.
const CHECKS = ['      if (!(await heldWithin(seat, LEASE_MS))) throw noLease(c);\n', '      if (!holds(seat)) throw noLease(c);\n'];

let copy: string | undefined;
after(() => copy && rm(copy, { recursive: true, force: true }));

it('a primary that serves without its lease gives a history that the checker finds not linearizable', async () => {
  copy = await mkdtemp(join(tmpdir(), 'planted-'));
  await cp(ROOT, copy, { recursive: true, filter: (src) => !['node_modules', '.git', 'data'].includes(basename(src)) || src === ROOT });
  await symlink(join(ROOT, 'node_modules'), join(copy, 'node_modules'));
  const file = join(copy, 'election', 'group.ts');
  let code = await readFile(file, 'utf8');
  for (const check of CHECKS) {
    assert.ok(code.includes(check), `election/group.ts no longer holds the check this test plants a bug by removing: ${check.trim()}`);
    code = code.replace(check, '');
  }
  await writeFile(file, code);
  const res = await runNode([join(copy, 'test', 'history', 'short.ts'), 'isolate:1:8000', 'isolate:2:8000']);
  console.log(res.stdout.split('\n').filter((l) => /^(history|nemesis):/.test(l)).join('\n'));
  assert.match(res.stdout, /is not linearizable; its shortest failing history/, `the history with the bug planted was found linearizable, or the run failed:\n${res.stdout}${res.stderr}`);
  assert.equal(res.code, 1);
});
