// The entry points: each runs when started as a script, and does nothing when
// imported (as tests and benches import them). Checked without import.meta.main,
// which Node 22 before 22.18 lacks: there, a guard on it would silently do nothing.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runNode } from '../shards.ts';

describe('entry points', () => {
  it('ch_client.ts runs as a script, also through a path with ./ and ..', async () => {
    for (const path of ['ch_client.ts', './test/../ch_client.ts']) {
      const res = await runNode([path, 'map', '7']);
      assert.equal(res.code, 0, res.stderr);
      assert.equal(res.stdout, '"7" => "127.0.0.1:3000"\n');
    }
  });

  it('server.ts runs as a script: a bad PORT is refused with a message', async () => {
    const res = await runNode(['server.ts'], { ...process.env, PORT: 'eighty' });
    assert.equal(res.code, 1);
    assert.match(res.stderr, /PORT must be 0 to 65535, got "eighty"/);
  });

  it('both do nothing when imported', async () => {
    const res = await runNode(['--input-type=module', '-e', "await import('./ch_client.ts'); await import('./server.ts'); console.log('imported')"], { ...process.env, PORT: 'eighty' });
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout, 'imported\n');
    assert.equal(res.stderr, '');
  });
});
