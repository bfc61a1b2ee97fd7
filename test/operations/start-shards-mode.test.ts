// start-shards.sh refuses a SHARDS_STANDBY it does not know (issue 35, item
// 1): SHARDS_STANDBY=2 once started three shards with no standby, silently;
// 2 is two standbys now, and 3 is refused.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, it } from 'node:test';
import { freePorts, ROOT, run } from '../shards.ts';

let dir = '';
let env: NodeJS.ProcessEnv = {};
after(async () => {
  if (dir === '') return;
  await run(join(ROOT, 'start-shards.sh'), ['stop'], { env }); // in case it started something after all
  await rm(dir, { recursive: true, force: true });
});

it('refuses SHARDS_STANDBY=3 with a message naming the modes, and starts nothing', async () => {
  dir = await mkdtemp(join(tmpdir(), 'chs-'));
  env = { ...process.env, SHARDS_DIR: dir, SHARDS_BASE_PORT: String(await freePorts(4)), SHARDS_PORT_STEP: '1', SHARDS_STANDBY: '3' };
  const res = await run(join(ROOT, 'start-shards.sh'), ['3'], { env, timeoutMs: 120_000 });
  assert.equal(res.code, 1, res.stdout + res.stderr);
  assert.match(res.stderr, /SHARDS_STANDBY=3 is not a mode this script knows: 0 \(no standby, the default\), 1 \(one standby per shard\) or 2 \(two standbys per shard\)/);
  assert.equal(existsSync(join(dir, 'shard-1')), false, `a shard was started: ${res.stdout}`);
});
