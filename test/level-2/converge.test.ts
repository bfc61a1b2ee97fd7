// A half-installed map converges without an operator (api/cluster-map.ts,
// rule 9), on real processes: a reshard is killed while it puts its final map
// on the nodes, so that one node keeps the moving map. With no rerun, the
// clients' own requests tell that node of the newer epoch, it fetches the map
// from a node of its own map, checks it, and takes it. And a rerun after such
// a kill says what it finished.
//
// Each shard sits behind a gate (test/gate.ts), so that the test decides
// which node misses the final map.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { expenseFor } from '../../ch_client.ts';
import { discover, send } from '../../client/cluster.ts';
import { HashRing } from '../../ring.ts';
import { startCluster } from '../cluster.ts';
import type { Gate } from '../gate.ts';
import type { Machine } from '../machine.ts';

let gates: Gate[];
let five: string[];
let four: string[];
let a: Machine;
let stop: () => Promise<void>;
const REPLICAS = '100';

before(async () => {
  ({ gates, a, stop } = await startCluster({ count: 5, ring: 4, replicas: Number(REPLICAS), ids: 60 }));
  five = gates.map((g) => g.node);
  four = five.slice(0, 4);
});

after(() => stop?.());

async function mapOf(node: string): Promise<{ epoch: number; moving?: unknown }> {
  const res = await fetch(`http://${node}/cluster/map`);
  return ((await res.json()) as { map: { epoch: number; moving?: unknown } }).map;
}

/** Starts a reshard to `to`, and kills it once it has sent its final map (no reshard under way) to the node behind `gate`. */
async function killDuringEnd(to: string[], gate: Gate): Promise<void> {
  gate.hold((method, path, body) => method === 'PUT' && path === '/cluster/map' && !body.includes('"moving"'));
  const killed = a.start(['reshard', '--nodes', four.join(','), '--to', to.join(','), '--replicas', REPLICAS]);
  await gate.held(1);
  killed.kill('SIGKILL');
  await killed.exited;
  gate.drop();
}

describe('a reshard killed while it puts its final map on the nodes', () => {
  it('converges with no rerun: new ids whose owner changed are refused for at most about 2 s, and the lagging node takes the new epoch', async () => {
    await killDuringEnd(five, gates[4]!);
    const ahead = await mapOf(five[0]!);
    assert.equal(ahead.moving, undefined, 'the first node holds the final map');
    const behind = await mapOf(five[4]!);
    assert.ok(behind.epoch < ahead.epoch && behind.moving !== undefined, `the last node missed it: ${JSON.stringify(behind)}`);

    // New ids whose owner changed: the fifth node owns them now, and one of the four did before.
    const now = new HashRing(five, Number(REPLICAS));
    const before = new HashRing(four, Number(REPLICAS));
    const fresh = Array.from({ length: 5000 }, (_, i) => `c${i}`).filter((id) => now.get(id) === five[4] && before.get(id) !== five[4]);
    const { view } = await discover(five, Number(REPLICAS));
    assert.equal(view.map.epoch, ahead.epoch);

    // One POST every 50 ms for 4 s, each of a new id; each is timed from the first.
    const t0 = Date.now();
    const tries: Array<{ at: number; ok: boolean; why: string }> = [];
    for (const id of fresh) {
      const at = Date.now() - t0;
      if (at > 4000) break;
      const res = await send(view, id, 'POST', '/v1/expenses', expenseFor(id)).catch((err: Error) => ({ status: 0, body: { error: err.message }, node: '' }));
      tries.push({ at, ok: res.status === 201, why: `${res.status} ${JSON.stringify(res.body?.error ?? '')}` });
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const refused = tries.filter((t) => !t.ok);
    const last = refused.at(-1)?.at ?? -1;
    console.log(`${tries.length} POSTs of new ids whose owner changed, ${refused.length} refused, the last refused at ${last} ms${refused.length > 0 ? `: ${refused[0]!.why}` : ''}`);
    assert.ok(tries.length >= 10, `only ${tries.length} POSTs in 4 s`);
    assert.ok(last <= 2000, `POSTs were refused until ${last} ms after the first: ${refused.map((t) => `${t.at} ms ${t.why}`).join('; ')}`);
    assert.equal((await mapOf(five[4]!)).epoch, ahead.epoch, 'the lagging node took the new epoch');
  });

  it('a rerun says what it finished of the end', async () => {
    // Back to four: the removed fifth node gets the final map first, then the kept ones, of which the fourth misses it.
    await killDuringEnd(four, gates[3]!);
    const final = await mapOf(five[0]!);
    assert.notEqual((await mapOf(five[3]!)).epoch, final.epoch);
    const rerun = await a.client(['reshard', '--nodes', four.join(','), '--to', four.join(','), '--replicas', REPLICAS]);
    assert.equal(rerun.code, 0, rerun.stdout + rerun.stderr);
    assert.match(rerun.stdout, new RegExp(`^finished the end of an earlier reshard: .*${five[3]!.replace(/\./g, '\\.')}.* now hold the cluster's map at epoch ${final.epoch}`, 'm'));
    assert.equal((await mapOf(five[3]!)).epoch, final.epoch);
  });
});
