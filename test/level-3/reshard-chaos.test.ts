// A reshard under fire. Writers that never pause create, update and delete
// records for the whole of a 3 -> 4 and then a 4 -> 3 reshard; some know only
// the old node list and learn better from the 421s, one never learns at all.
// Each reshard is killed with SIGKILL twice, where the test chooses (at a
// hand-off, then at an adoption), and run again until it finishes.
// Afterwards every acknowledged write must be there, every acknowledged
// delete must stay deleted, and every record must be on its owner alone.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { expenseFor } from '../../ch_client.ts';
import { discover, send, viewOf, type View } from '../../client/cluster.ts';
import { call, Unreachable } from '../../client/http.ts';
import { HashRing } from '../../ring.ts';
import { startCluster } from '../cluster.ts';
import type { Gate } from '../gate.ts';
import type { Machine } from '../machine.ts';
import { random } from '../random.ts';
import type { Shards } from '../shards.ts';

const RECORDS = 2000;
const REPLICAS = 100;
const SEED = 20161210;

let shards: Shards;
let gates: Gate[];
let operator: Machine;
let stop: () => Promise<void>;

before(async () => {
  ({ shards, gates, a: operator, stop } = await startCluster({ count: 4, ring: 3, replicas: REPLICAS, ids: RECORDS }));
});

after(() => stop?.());

/** What the writers heard acknowledged, per id: the name it now has, or null once deleted. Unsure: a request with no answer. */
type Ledger = { acked: Map<string, string | null>; unsure: Set<string>; writes: number; refused: number };

/**
 * One writer: its own ids, a random write after another, no pause, until
 * stop() resolves. `how` is how it finds the owner: it follows the cluster,
 * it starts from the old node list and follows 421s, or it sends to the old
 * list's owner and takes a 421 as a refusal, as a client of 2016 would.
 */
function writer(w: number, ids: string[], ledger: Ledger, how: 'follows' | 'stale' | 'never learns', three: string[]) {
  const next = random(SEED + w);
  let running = true;
  const done = (async () => {
    const view: View = how === 'follows' ? (await discover(three, REPLICAS)).view : viewOf(undefined, three, REPLICAS);
    const oldRing = new HashRing(three, REPLICAS);
    while (running) {
      const id = ids[Math.floor(next() * ids.length)]!;
      const deleted = ledger.acked.get(id) === null;
      const op = deleted ? 'POST' : next() < 0.2 ? 'DELETE' : 'PUT';
      const name = `writer ${w} write ${++ledger.writes}`;
      const [path, body] = op === 'POST' ? ['/v1/expenses', { ...expenseFor(id), name }] : [`/v1/expenses/${id}`, op === 'PUT' ? { name } : undefined];
      let res: { status: number; body: unknown };
      try {
        res = how === 'never learns' ? await call(oldRing.get(id), op, path, body) : await send(view, id, op, path, body);
      } catch (err) {
        // No answer at all: the write may or may not have happened.
        if (err instanceof Unreachable) {
          ledger.unsure.add(id);
          continue;
        }
        // Every node it reached answered 421 until the hop limit: refused, not written.
        if (/still sent elsewhere after \d+ hops/.test((err as Error).message)) {
          ledger.refused++;
          continue;
        }
        throw err;
      }
      if (res.status === (op === 'POST' ? 201 : op === 'PUT' ? 202 : 204)) {
        ledger.acked.set(id, op === 'DELETE' ? null : name);
        ledger.unsure.delete(id);
      } else {
        // Refused, not written: 421 (misdirected), 503 (mid-move), 404/409 after a kill's limbo.
        // Any other status (a 500) fails the test: it is outside the try, so nothing swallows it.
        assert.ok([404, 409, 421, 503].includes(res.status), `${op} ${id}: HTTP ${res.status} ${JSON.stringify(res.body)}`);
        ledger.refused++;
      }
    }
  })();
  // A writer that fails stops; stop() throws its error. Until then it is not
  // an unhandled rejection, which would end the run before after() cleans up.
  done.catch(() => {});
  return async () => {
    running = false;
    await done;
  };
}

/** Runs the reshard to `to`, killing it at the first held request of each step in `kills`, and again until it exits 0. */
async function reshardKilled(to: string[], kills: string[], seeds: string[]): Promise<number> {
  const args = ['reshard', '--nodes', seeds.join(','), '--to', to.join(',')];
  let runs = 0;
  for (const step of kills) {
    for (const gate of gates) gate.hold((method, path) => method === 'POST' && path.endsWith(`/${step}`));
    const run = operator.start(args);
    runs++;
    await Promise.race([...gates.map((g) => g.held(1)), run.exited]);
    run.kill('SIGKILL');
    await run.exited;
    for (const gate of gates) gate.drop();
  }
  for (;;) {
    const res = await operator.client(args);
    runs++;
    if (res.code === 0) return runs;
    assert.ok(runs < 8, `the reshard to ${to.length} nodes does not finish:\n${res.stdout}${res.stderr}`);
  }
}

describe('reshards killed twice each while writers never pause', () => {
  it('lose no acknowledged write, bring back no acknowledged delete, leave every record on its owner alone, and finish', async () => {
    const [three, four] = [gates.slice(0, 3).map((g) => g.node), gates.map((g) => g.node)];
    const ids = Array.from({ length: RECORDS }, (_, i) => String(i + 1));
    const ledger: Ledger = { acked: new Map(ids.map((id) => [id, `Foo ${id}`])), unsure: new Set(), writes: 0, refused: 0 };
    const kinds = ['follows', 'follows', 'stale', 'stale', 'never learns'] as const;
    const stops = kinds.map((how, w) => writer(w, ids.filter((id) => Number(id) % kinds.length === w), ledger, how, three));

    const grew = await reshardKilled(four, ['handoff', 'adopt'], three);
    const writesMidway = ledger.writes;
    const shrank = await reshardKilled(three, ['adopt', 'handoff'], three);
    for (const stop of stops) await stop();

    const ring = new HashRing(three, REPLICAS);
    const found = new Map<string, string>();
    for (let shard = 1; shard <= 4; shard++) {
      for (const [id, name, state] of await shards.sql(shard, 'SELECT id, name, state FROM expenses')) {
        assert.equal(state, 'live', `${id} on shard ${shard} is ${state} after both reshards ended`);
        assert.equal(ring.get(id!), three[shard - 1], `${id} is on its owner`);
        assert.equal(found.has(id!), false, `${id} is on one shard only`);
        found.set(id!, name!);
      }
    }
    for (const [id, name] of ledger.acked) {
      if (ledger.unsure.has(id)) continue;
      assert.equal(found.get(id) ?? null, name, name === null ? `${id} stays deleted` : `${id} keeps its last acknowledged write`);
    }
    assert.ok(writesMidway > 200 && ledger.writes - writesMidway > 200, `the writers wrote throughout both reshards (${writesMidway}, then ${ledger.writes - writesMidway})`);
    assert.ok(ledger.unsure.size <= 5, `few writes without an answer: ${[...ledger.unsure].join(', ')}`);
    const deleted = [...ledger.acked.values()].filter((name) => name === null).length;
    console.log(`# ${ledger.writes} writes (${ledger.refused} refused, ${ledger.unsure.size} unanswered) during a 3 -> 4 reshard run ${grew} times and a 4 -> 3 reshard run ${shrank} times; ${deleted} records deleted at the end, ${found.size} stored`);
  });
});
