// A reshard under fire: four writers update and delete records at random for
// the whole of a 3 -> 4 reshard of 5,000 records. Afterwards, every record
// must be exactly what its writer last heard acknowledged, on its owner alone.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { call } from '../client/http.ts';
import { ringsFor } from '../client/reshard-state.ts';
import { HashRing } from '../ring.ts';
import { ROOT, runNode, startShards, type Shards } from './shards.ts';
import { random } from './random.ts';

const RECORDS = 5000;
const WRITERS = 4;
const REPLICAS = 100;
const SEED = 20161210;

let shards: Shards;

before(async () => {
  shards = await startShards(4);
  const stored = await runNode(['ch_client.ts', '--nodes', shards.nodes.slice(0, 3).join(','), '--ids', `1-${RECORDS}`, '--replicas', String(REPLICAS)]);
  assert.equal(stored.code, 0, stored.stderr);
});

after(async () => {
  await shards?.stop();
});

describe('a reshard while four writers update and delete', () => {
  it('ends with every record as its last acknowledged write left it, on its owner alone', async () => {
    const [three, four] = [shards.nodes.slice(0, 3), shards.nodes];
    const statePath = join(shards.dir, 'reshard.json');
    // What each writer heard acknowledged: the last name a PUT set, or deleted.
    const expected = new Map<string, string | null>(Array.from({ length: RECORDS }, (_, i) => [String(i + 1), `Foo ${i + 1}`]));
    const lost: string[] = [];

    const child = spawn(process.execPath, ['ch_client.ts', 'reshard', '--from', three.join(','), '--to', four.join(','), '--replicas', String(REPLICAS), '--state', statePath], { cwd: ROOT });
    let output = '';
    child.stdout.on('data', (c) => (output += c));
    child.stderr.on('data', (c) => (output += c));
    const exited = once(child, 'exit').then(([code]) => code as number);
    let running = true;
    exited.then(() => (running = false));
    // The writers start once the reshard is on record, as a client that reads the record would.
    while (!existsSync(statePath) && running) await new Promise((r) => setTimeout(r, 5));

    let writes = 0;
    const writer = async (w: number) => {
      const next = random(SEED + w);
      const mine = [...expected.keys()].filter((id) => Number(id) % WRITERS === w);
      while (running) {
        const id = mine[Math.floor(next() * mine.length)]!;
        if (expected.get(id) === null) continue;
        const del = next() < 0.2;
        const name = `writer ${w} write ${++writes}`;
        // Old owner first, then new: see ringsFor.
        let done = false;
        for (const node of new Set(ringsFor(statePath, four, REPLICAS).map((ring) => ring.get(id)))) {
          const res = del ? await call(node, 'DELETE', `/v1/expenses/${id}`) : await call(node, 'PUT', `/v1/expenses/${id}`, { name });
          if (res.status === 404) continue;
          assert.equal(res.status, del ? 204 : 202, `${id} on ${node}`);
          expected.set(id, del ? null : name);
          done = true;
          break;
        }
        if (!done) lost.push(id);
      }
    };
    await Promise.all(Array.from({ length: WRITERS }, (_, w) => writer(w)));
    assert.equal(await exited, 0, output);
    assert.deepEqual(lost, [], 'a record that was never deleted was found nowhere');
    assert.ok(writes > 500, `the writers wrote throughout the reshard (${writes} writes)`);

    const ring = new HashRing(four, REPLICAS);
    for (let shard = 1; shard <= 4; shard++) {
      const rows = await shards.sql(shard, 'SELECT id, name FROM expenses');
      for (const [id, name] of rows) {
        assert.equal(ring.get(id!), four[shard - 1], `${id} is on its owner`);
        assert.equal(name, expected.get(id!), `${id} is what its writer last wrote`);
      }
    }
    const stored = (await Promise.all(four.map((_, i) => shards.ids(i + 1)))).flat();
    const alive = [...expected].filter(([, name]) => name !== null).map(([id]) => id);
    assert.deepEqual(stored.sort(), alive.sort(), 'every record not deleted is stored once, and no deleted one');
    console.log(`# ${writes} writes during the reshard; ${RECORDS - alive.length} deleted; ${output.match(/moved \d+/)?.[0]}`);
  });
});
