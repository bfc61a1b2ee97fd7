// Step 1 of a move sent by the old owner itself (POST /v1/moves/send,
// shard/move-pages.ts), under the timings that an adversary picks with the
// gates (test/gate.ts): a reversal that finds a dead run's original changed
// since its copy, and a copy that lands late, after a newer one was sent.
// Whatever lands when, no id is live twice, no acknowledged write is lost,
// and a rerun of the same command from another machine finishes, exit 0.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { HashRing } from '../../ring.ts';
import { api, startCluster, type Cluster } from '../cluster.ts';
import { call } from '../../client/http.ts';

const REPLICAS = 100;
const IDS = 300;
let cluster: Cluster;
let three: string[];
let four: string[];

before(async () => {
  cluster = await startCluster({ count: 4, ring: 3, replicas: REPLICAS, ids: IDS });
  four = cluster.gates.map((g) => g.node);
  three = four.slice(0, 3);
});
after(async () => {
  for (const g of cluster?.gates ?? []) g.release();
  await Promise.all([cluster?.a.idle(), cluster?.b.idle()]);
  await cluster?.stop();
});

const reshardArgs = (to: string[]) => ['reshard', '--nodes', three.join(','), '--to', to.join(','), '--replicas', String(REPLICAS)];

type Row = { shard: number; id: string; state: string; version: string; name: string };
async function rows(): Promise<Row[]> {
  const all = await Promise.all([1, 2, 3, 4].map(async (shard) => (await cluster.shards.sql(shard, 'SELECT id, state, version, name FROM expenses')).map(([id, state, version, name]) => ({ shard, id: id!, state: state!, version: version!, name: name! }))));
  return all.flat();
}

/** Every record live once, on its owner under `ring`, as `expected` names them; no other row. */
async function settledOn(ring: string[], expected: Map<string, string>, what: string): Promise<void> {
  const end = await rows();
  assert.deepEqual(end.filter((r) => r.state !== 'live'), [], `${what}: rows left that are not live`);
  assert.deepEqual(new Map(end.map((r) => [r.id, r.name])), expected, `${what}: the records differ from what clients wrote`);
  assert.equal(end.length, expected.size, `${what}: an id is on two shards`);
  const owner = new HashRing(ring, REPLICAS);
  for (const r of end) assert.equal(four.indexOf(owner.get(r.id)) + 1, r.shard, `${what}: ${r.id} is on shard ${r.shard}, not its owner`);
}

async function liveNames(): Promise<Map<string, string>> {
  return new Map((await rows()).filter((r) => r.state === 'live').map((r) => [r.id, r.name]));
}

// A test that fails leaves the cluster as it failed, and the next may wait for what never comes: each has a bound.
describe('step 1 sent by the old owner', () => {
  it('a reversal finishes a dead run whose original a client changed after its copy landed', { timeout: 60_000 }, async () => {
    // The dead run: 3 -> 4, killed at its first hand-off, so its copies are incoming on the new node.
    await cluster.a.killedAt(reshardArgs(four), cluster.gates, (m, path) => m === 'POST' && path === '/v1/moves/handoff');
    const copies = await cluster.shards.sql(4, "SELECT id FROM expenses WHERE state = 'incoming'");
    assert.ok(copies.length > 0, 'the kill left copies incoming');
    // A client changes one of them where it is still live: on its old owner.
    const id = copies[0]![0]!;
    const owner = new HashRing(three, REPLICAS).get(id);
    const put = await api(owner, 'PUT', `/v1/expenses/${id}`, { name: 'Changed after its copy' });
    assert.equal(put.status, 202, JSON.stringify(put.body));
    const expected = await liveNames();
    assert.equal(expected.get(id), 'Changed after its copy');

    const reverse = await cluster.b.client(reshardArgs(three));
    assert.equal(reverse.code, 0, `${reverse.stdout}${reverse.stderr}`);
    assert.match(reverse.stdout, /^reversing the unfinished reshard of pid \d+/m);
    await settledOn(three, expected, 'reversed');
  });

  it('a record changed or deleted between the old owner\'s read and its copy\'s landing moves as last written, or stays deleted', { timeout: 60_000 }, async () => {
    const [oldRing, newRing] = [new HashRing(three, REPLICAS), new HashRing(four, REPLICAS)];
    const gateOfNew = cluster.gates[3]!;
    // The first page of copies the new node is sent is held there: its records were read on their old owner.
    gateOfNew.hold((m, path) => m === 'PUT' && path === '/v1/moves/copy');
    const run = cluster.a.start(reshardArgs(four));
    await gateOfNew.held(1);
    const [changed, deleted] = (JSON.parse(gateOfNew.heldBodies()[0]!) as { records: Array<{ id: string }> }).records.map((r) => r.id);
    assert.ok(changed !== undefined && deleted !== undefined && newRing.get(changed) === four[3], 'a page of two records or more, to the new node');
    const put = await api(oldRing.get(changed), 'PUT', `/v1/expenses/${changed}`, { name: 'Written while its copy was on its way' });
    assert.equal(put.status, 202, JSON.stringify(put.body));
    assert.equal((await api(oldRing.get(deleted), 'DELETE', `/v1/expenses/${deleted}`)).status, 204);
    const expected = await liveNames();
    await gateOfNew.release();
    const res = await run.exited;
    assert.equal(res.code, 0, `${res.stdout}${res.stderr}`);
    await settledOn(four, expected, 'written meanwhile');
    // Back to three nodes, for the next test.
    const back = await cluster.a.client(reshardArgs(three));
    assert.equal(back.code, 0, `${back.stdout}${back.stderr}`);
  });

  it('a copy that lands late, after its sender gave up and a newer copy was sent, lands nowhere', { timeout: 60_000 }, async () => {
    const [oldRing, newRing] = [new HashRing(three, REPLICAS), new HashRing(four, REPLICAS)];
    const id = Array.from({ length: IDS }, (_, i) => String(i + 1)).find((x) => newRing.get(x) === four[3])!;
    const [owner, gateOfOwner, gateOfNew] = [oldRing.get(id), cluster.gates[three.indexOf(oldRing.get(id))]!, cluster.gates[3]!];
    const names = (body: string) => body.includes(`"id":${JSON.stringify(id)},`) || body.includes(`"id":${JSON.stringify(id)}}`);
    // The old owner's first copy of the page with `id` is held on its way to the new node, past the old owner's wait for it.
    let first = true;
    gateOfNew.hold((m, path, body) => m === 'PUT' && path === '/v1/moves/copy' && names(body) && first && !(first = false));
    const run = cluster.a.start(reshardArgs(four));
    await gateOfNew.held(1);
    // The old owner read the record before it sent it: a client changes it now.
    const put = await api(owner, 'PUT', `/v1/expenses/${id}`, { name: 'Written while its copy was held' });
    assert.equal(put.status, 202, JSON.stringify(put.body));
    const expected = await liveNames();
    // The old owner gives up on the held copy; a later walk sends the newer version, whose hand-off is held.
    gateOfOwner.hold((m, path, body) => m === 'POST' && path === '/v1/moves/handoff' && names(body));
    await gateOfOwner.held(1);
    // The late copy arrives now, between the newer copy and its hand-off.
    await gateOfNew.release();
    const live = (await rows()).filter((r) => r.state === 'live').map((r) => r.id);
    assert.equal(new Set(live).size, live.length, 'an id is live on two shards');
    await gateOfOwner.release();
    const res = await run.exited;
    const rerun = res.code === 0 ? res : await cluster.b.client(reshardArgs(four));
    assert.equal(rerun.code, 0, `the run:\n${res.stdout}${res.stderr}\nthe rerun:\n${rerun.stdout}${rerun.stderr}`);
    await settledOn(four, expected, 'after a late copy');
  });

  it('refuses a send that is malformed, stale or late, with a JSON error naming the problem, and changes nothing', { timeout: 60_000 }, async () => {
    const secret = (await readFile(cluster.shards.secretFile, 'utf8')).trim();
    const [oldRing, newRing] = [new HashRing(four, REPLICAS), new HashRing(three, REPLICAS)];
    const all = Array.from({ length: IDS }, (_, i) => String(i + 1));
    // A reshard 4 -> 3 left under way: killed at its first copy, which never lands.
    await cluster.a.killedAt(reshardArgs(three), cluster.gates, (m, path) => m === 'PUT' && path === '/v1/moves/copy');
    const [from, to] = [four[3]!, three[0]!];
    const moving = all.find((id) => oldRing.get(id) === from && newRing.get(id) === to)!;
    const elsewhere = all.find((id) => oldRing.get(id) === from && newRing.get(id) !== to)!;
    const staying = all.find((id) => oldRing.get(id) === to)!;
    const { epoch } = (await api(from, 'GET', '/cluster/map')).body.map as { epoch: number };
    const before = await rows();
    const send = (body: unknown, e = epoch) => call(from, 'POST', '/v1/moves/send', body, { 'cluster-epoch': String(e) }, { secret });
    const soon = () => Date.now() + 5_000;
    const cases: Array<[string, unknown, number, RegExp, number?]> = [
      ['no records', { to, deadline: soon(), records: [] }, 400, /^the body must be \{"records": \[\.\.\.\]\} with 1 to 1000 records$/],
      ['no "to"', { deadline: soon(), records: [{ id: moving }] }, 400, /^the body must name in "to" a node of the ring this reshard moves to, got undefined$/],
      ['no deadline', { to, records: [{ id: moving }] }, 400, /^the body must give in "deadline" the time, in ms since 1970, after which no copy may land, got undefined$/],
      ['an id moving elsewhere', { to, deadline: soon(), records: [{ id: moving }, { id: elsewhere }] }, 409, new RegExp(`^"${elsewhere}" does not move to ${to} in this reshard$`)],
      ['an id that stays', { to, deadline: soon(), records: [{ id: staying }] }, 409, new RegExp(`^"${staying}" does not move in this reshard: it stays on ${to}$`)],
      ['a past deadline', { to, deadline: Date.now() - 1, records: [{ id: moving }] }, 409, /^this send came \d+ ms after its deadline by this shard's clock: it took that long to arrive, or its sender's clock is behind this one; nothing was copied\. Check the clocks \(NTP\) and run the reshard again$/],
      ['an older epoch, to a node of no ring', { to: 'nowhere:1', deadline: soon(), records: [{ id: moving }] }, 409, new RegExp(`^this shard is at epoch ${epoch}, and takes move steps only with Cluster-Epoch: ${epoch}$`), epoch - 1],
    ];
    for (const [what, body, status, error, e] of cases) {
      const res = await send(body, e);
      assert.equal(res.status, status, `${what}: ${JSON.stringify(res.body)}`);
      assert.match(res.body.error, error, what);
    }
    const unsigned = await api(from, 'POST', '/v1/moves/send', { to, deadline: soon(), records: [{ id: moving }] }, { 'content-type': 'application/json', 'cluster-epoch': String(epoch) });
    assert.equal(unsigned.status, 401, JSON.stringify(unsigned.body));
    assert.deepEqual(await rows(), before, 'a refused send changed a row');
    // A good one, for contrast: the record arrives on its new owner as incoming, at its version.
    const good = await send({ to, deadline: soon(), records: [{ id: moving }] });
    assert.equal(good.status, 200, JSON.stringify(good.body));
    const version = before.find((r) => r.id === moving)!.version;
    assert.deepEqual(good.body, { copied: [{ id: moving, version }], conflict: [], refused: {}, gone: [] });
    assert.deepEqual(await cluster.shards.sql(1, `SELECT state, version FROM expenses WHERE id = '${moving}'`), [['incoming', version]]);
    const rerun = await cluster.b.client(reshardArgs(three));
    assert.equal(rerun.code, 0, `${rerun.stdout}${rerun.stderr}`);
  });
});
