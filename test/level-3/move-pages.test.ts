// Batched moves killed at each step: the reshard is held at its first page of
// one step (test/gate.ts), killed there, and the page is then either dropped
// (the step never lands) or let through (it lands, and no one reads the
// answer). Meanwhile a client deletes or changes a record of that page. At
// that instant no id is live twice and none is lost; a rerun from another
// machine finishes, and then every record is live once, on its owner, as it
// was or as the client last wrote it, and the deleted one stays deleted.
// Unthrottled, the old owners' records move at once, each counted once. A
// move step's body is read up to 1 MiB, a page of 1,000 records.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { HashRing } from '../../ring.ts';
import { api, startCluster, type Cluster } from '../cluster.ts';
import { expense } from '../requests.ts';
import type { Gate } from '../gate.ts';
import { FORGET_ROWS } from '../../shard/rows.ts';

const REPLICAS = 100;
const ids = Array.from({ length: 1200 }, (_, i) => String(i + 1));
let cluster: Cluster;
let three: string[];
let four: string[];
let to: string[]; // the ring the next reshard goes to

before(async () => {
  cluster = await startCluster({ count: 4, ring: 3, replicas: REPLICAS, ids: ids.length });
  four = cluster.gates.map((g) => g.node);
  three = four.slice(0, 3);
});
after(() => cluster?.stop());

const reshardArgs = (to: string[]) => ['reshard', '--nodes', three.join(','), '--to', to.join(','), '--replicas', String(REPLICAS)];

/** Every row of the test's ids on every shard: id, state, version, name. */
async function rows(): Promise<Array<{ shard: number; id: string; state: string; version: string; name: string }>> {
  const all = await Promise.all([1, 2, 3, 4].map(async (shard) => (await cluster.shards.sql(shard, 'SELECT id, state, version, name FROM expenses')).map(([id, state, version, name]) => ({ shard, id: id!, state: state!, version: version!, name: name! }))));
  return all.flat();
}

/** The ids in the first page a gate holds. */
const heldPage = (gate: Gate) => (JSON.parse(gate.heldBodies()[0]!) as { records: Array<{ id: string }> }).records.map((r) => r.id);

// Step 1 is two requests: the operator's send to the old owner, and the old owner's copy to the new one.
const steps = [
  { method: 'POST', step: 'send' },
  { method: 'PUT', step: 'copy' },
  { method: 'POST', step: 'handoff' },
  { method: 'POST', step: 'adopt' },
] as const;

describe('a batched move killed at each step, its page dropped or landed', () => {
  it('never has an id live twice or nowhere, and a rerun finishes with every write kept and every delete kept', async () => {
    const expected = new Map((await rows()).filter((r) => r.state === 'live').map((r) => [r.id, r.name]));
    to = four;
    for (const { method, step } of steps) {
      for (const fate of ['dropped', 'landed'] as const) {
        const what = `killed at ${step}, ${fate}`;
        const from = to === four ? three : four;
        for (const gate of cluster.gates) gate.hold((m, path) => m === method && path === `/v1/moves/${step}`);
        const killed = cluster.a.start(reshardArgs(to));
        const gate = await Promise.race(cluster.gates.map((g) => g.held(1).then(() => g)));
        killed.kill('SIGKILL');
        await killed.exited;
        const page = heldPage(gate);
        for (const g of cluster.gates) if (g !== gate) g.drop();
        if (fate === 'dropped') gate.drop();
        else {
          // The step reaches MySQL though no one waits for its answer: it has once the node answered.
          await gate.release();
          const landed = { send: 'incoming', copy: 'incoming', handoff: 'moved', adopt: 'live' }[step];
          const target = new HashRing(step === 'handoff' ? from : to, REPLICAS).get(page[0]!);
          const [row] = await cluster.shards.sql(four.indexOf(target) + 1, `SELECT state FROM expenses WHERE id = '${page[0]}'`);
          assert.equal(row?.[0], landed, `${what}: the step did not land`);
        }

        // A client meanwhile: while the originals are still live (before a hand-off lands), one is changed and one deleted.
        const stillLive = step === 'send' || step === 'copy' || (step === 'handoff' && fate === 'dropped');
        if (stillLive) {
          const owner = new HashRing(from, REPLICAS).get(page[0]!);
          const [changed, deleted] = [page[0]!, page[1]!];
          const put = await api(owner, 'PUT', `/v1/expenses/${changed}`, { name: `Changed ${what}` });
          assert.equal(put.status, 202, `${what}: ${JSON.stringify(put.body)}`);
          expected.set(changed, `Changed ${what}`);
          const ownerOfDeleted = new HashRing(from, REPLICAS).get(deleted);
          assert.equal((await api(ownerOfDeleted, 'DELETE', `/v1/expenses/${deleted}`)).status, 204, what);
          expected.delete(deleted);
        }

        // At this instant: no id live twice, and every record live somewhere or incoming where it is going.
        const now = await rows();
        const live = now.filter((r) => r.state === 'live').map((r) => r.id);
        assert.equal(new Set(live).size, live.length, `${what}: an id is live on two shards`);
        const kept = new Set(now.filter((r) => r.state !== 'moved').map((r) => r.id));
        assert.deepEqual([...expected.keys()].filter((id) => !kept.has(id)), [], `${what}: records lost`);

        const rerun = await cluster.b.client(reshardArgs(to));
        assert.equal(rerun.code, 0, `${what}:\n${rerun.stdout}${rerun.stderr}`);
        assert.match(rerun.stdout, /^taking over the unfinished reshard of pid \d+ .*\(no longer running\)$/m, what);

        // Finished: each record live once, on its owner, with its last write; nothing deleted came back; no other row remains.
        const ring = new HashRing(to, REPLICAS);
        const end = await rows();
        assert.deepEqual(end.filter((r) => r.state !== 'live'), [], `${what}: rows left that are not live`);
        assert.deepEqual(new Map(end.map((r) => [r.id, r.name])), expected, `${what}: the records differ from what clients wrote`);
        assert.equal(end.length, expected.size, `${what}: an id is on two shards`);
        for (const r of end) assert.equal(four[r.shard - 1], ring.get(r.id), `${what}: ${r.id} is on shard ${r.shard}, not its owner`);
        to = to === four ? three : four;
      }
    }
  });

  it('forgets every moved row at the end, however many more than one statement deletes', async () => {
    // Tombstones of records moved away, as a large reshard leaves them: more than two statements' worth.
    const many = 2 * FORGET_ROWS + 500;
    await cluster.shards.sql(1, `INSERT INTO expenses (id, name, email, category, description, link, estimated_costs, submit_date, version, state) SELECT CONCAT('gone-', seq), 'n', 'e@x.io', 'c', 'd', 'https://x.io', 1, '2026-01-01', '0123456789abcdef', 'moved' FROM seq_1_to_${many}`);
    const res = await cluster.b.client(reshardArgs(to));
    assert.equal(res.code, 0, `${res.stdout}${res.stderr}`);
    const left = (await rows()).filter((r) => r.state !== 'live');
    assert.equal(left.length, 0, `${left.length} rows left that are not live, the first ${JSON.stringify(left[0])}`);
  });

  it('reads a move step\'s body up to 1 MiB, a page of 1,000 records, and no further', async () => {
    const node = cluster.gates[3]!.node;
    const page = (n: number, description: string) => ({ records: Array.from({ length: n }, (_, i) => ({ ...expense({ description }), id: `big-${i}`, version: '0123456789abcdef' })) });
    // About 300 KB: read, then refused for what it is (unsigned), never as too large.
    const read = await api(node, 'PUT', '/v1/moves/copy', page(1000, 'x'.repeat(100)));
    assert.notEqual(read.status, 413, JSON.stringify(read.body));
    const over = await api(node, 'PUT', '/v1/moves/copy', page(1000, 'x'.repeat(1100)));
    assert.equal(over.status, 413);
    assert.equal(over.body.error, 'the body of PUT /v1/moves/copy is over 1048576 bytes, the most a shard reads');
    // Every other route still reads 64 KiB at most.
    const expenseOver = await api(node, 'POST', '/v1/expenses', expense({ description: 'x'.repeat(70_000) }));
    assert.equal(expenseOver.status, 413);
  });

  it('unthrottled, moves from every old owner at once, and counts each record once', async () => {
    const back = await cluster.b.client(reshardArgs(three));
    assert.equal(back.code, 0, `${back.stdout}${back.stderr}`);
    const live = (await rows()).filter((r) => r.state === 'live').map((r) => r.id);
    const old = new HashRing(three, REPLICAS);
    const next = new HashRing(four, REPLICAS);
    const moving = live.filter((id) => old.get(id) !== next.get(id));
    // The new node holds every copy that reaches it: walked one old owner at a time, only the first one's would.
    const gate = cluster.gates[3]!;
    gate.hold((m, path) => m === 'PUT' && path === '/v1/moves/copy');
    process.env.RESHARD_THROTTLE = '0';
    const run = cluster.a.start(reshardArgs(four));
    delete process.env.RESHARD_THROTTLE;
    await gate.held(three.length);
    const from = new Set(gate.heldBodies().map((b) => old.get((JSON.parse(b) as { records: Array<{ id: string }> }).records[0]!.id)));
    gate.release();
    const res = await run.exited;
    assert.equal(res.code, 0, `${res.stdout}${res.stderr}`);
    assert.deepEqual([...from].sort(), [...three].sort(), 'the first pages held at the new node come from every old owner');
    assert.match(res.stdout, new RegExp(`^reshard: 3 nodes -> 4 nodes, replicas ${REPLICAS}, ${live.length} records$`, 'm'));
    assert.match(res.stdout, new RegExp(`^  moved ${moving.length}, left in place ${live.length - moving.length}, conflicts 0, failed 0$`, 'm'));
    assert.match(res.stdout, new RegExp(`^audit 1: ${live.length} records on 4 nodes, 0 out of place$`, 'm'));
    const end = await rows();
    assert.deepEqual(end.map((r) => r.id).sort(), [...live].sort(), 'each record once, none lost');
    for (const r of end) assert.equal(four[r.shard - 1], next.get(r.id), `${r.id} is on shard ${r.shard}, not its owner`);
  });
});
