// The operator's tools under stress (issue 28), on real shards behind gates
// (test/gate.ts), so that a test decides where a pause lands: an operator
// paused within its lease finishes, renewals reach every node at once, an
// operator taken over says so, and clients name what they met.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { HashRing } from '../../ring.ts';
import { api, startCluster } from '../cluster.ts';
import type { Gate } from '../gate.ts';
import type { Machine } from '../machine.ts';
import type { Shards } from '../shards.ts';

let shards: Shards;
let gates: Gate[];
let four: string[]; // every node, by its gate
let three: string[];
// Two operators' machines, both with the cluster secret.
let a: Machine;
let b: Machine;
let stop: () => Promise<void>;
const REPLICAS = '100';

before(async () => {
  ({ shards, gates, a, b, stop } = await startCluster({ count: 4, ring: 3, replicas: Number(REPLICAS), ids: 600 }));
  four = gates.map((g) => g.node);
  three = four.slice(0, 3);
});

after(() => stop?.());

const reshardArgs = (to: string[], ...more: string[]) => ['reshard', '--nodes', three.join(','), '--to', to.join(','), ...more];
const isStep = (step: string) => (method: string, path: string) => method === 'POST' && path.endsWith(`/${step}`);

/** Brings the cluster to the ring of `nodes`, whatever shape an earlier test left: its gates open and its runs ended, even if it failed midway. */
async function settle(nodes: string[]): Promise<void> {
  for (const gate of gates) gate.release();
  await Promise.all([a.idle(), b.idle()]);
  const res = await b.client(reshardArgs(nodes, '--replicas', REPLICAS));
  assert.equal(res.code, 0, `settling on ${nodes.length} nodes:\n${res.stdout}${res.stderr}`);
}

const secret = async () => ({ authorization: `Bearer ${(await readFile(shards.secretFile, 'utf8')).trim()}` });

describe('an operator paused within its lease', () => {
  it('a reshard stopped for 12 s mid-move (SIGSTOP), with a 30 s lease, exits 0 and gives up no node', async (t) => {
    await settle(three);
    // Stopped with adopts in flight: their answers arrive while it cannot read them.
    gates[3]!.hold(isStep('adopt'));
    const run = a.start(reshardArgs(four, '--lease', '30'));
    await gates[3]!.held(1);
    run.kill('SIGSTOP');
    try {
      gates[3]!.release();
      await sleep(12_000);
    } finally {
      run.kill('SIGCONT');
    }
    const done = await run.exited;
    t.diagnostic(`paused operator: exit ${done.code}; ${done.stderr.split('\n').filter((l) => /stopped answering/.test(l)).length} nodes given up`);
    assert.doesNotMatch(done.stderr, /stopped answering/);
    assert.equal(done.code, 0, done.stdout + done.stderr);
    assert.match(done.stdout, /^the cluster is at epoch \d+: 4 nodes, replicas 100$/m);
  });
});

describe('lease renewals', () => {
  it('go to every node at once: one node that does not answer them lets the lease lapse on no other, and its failures are reported', async (t) => {
    await settle(three);
    gates[3]!.hold(isStep('adopt'));
    const run = a.start(reshardArgs(four, '--lease', '3'));
    await gates[3]!.held(1);
    // The first node takes no renewal: each waits at its gate, for longer than the lease.
    gates[0]!.hold((method, path) => method === 'PUT' && path === '/cluster/map');
    await gates[0]!.held(1);
    await sleep(4_000);
    const left = await Promise.all(four.slice(1).map(async (node) => (await api(node, 'GET', '/cluster/map')).body.leaseLeftMs as number));
    gates[0]!.drop();
    gates[3]!.release();
    const done = await run.exited;
    t.diagnostic(`renewals held at one node for 4 s, lease 3 s: ${left.join(', ')} ms left on the others; ${done.stderr.split('\n').filter((l) => /^(lease renewals|  \S+: \d+ renewal)/.test(l)).join(' / ')}`);
    assert.ok(left.every((ms) => ms > 0), `the lease is still held on the other nodes (${left.join(', ')} ms left)`);
    assert.equal(done.code, 0, done.stdout + done.stderr);
    assert.match(done.stderr, new RegExp(`^lease renewals: \\d+ of \\d+ failed, on 1 node \\(the lease holds while any node has it\\):\\n  ${four[0]}: \\d+ renewals? failed, the first \\d+\\.\\d s in: cannot reach ${four[0]}: `, 'm'));
  });
});

describe('an operator taken over', () => {
  it('says so when it resumes, with the epoch and map the cluster is at now, and never "Nothing has moved"', async (t) => {
    await settle(three);
    // Frozen while putting its map on the nodes: the first node has it, the second never gets it.
    let puts = 0;
    gates[1]!.hold((method, path) => method === 'PUT' && path === '/cluster/map' && ++puts === 2);
    const frozen = a.start(reshardArgs(four, '--lease', '2'));
    await gates[1]!.held(1);
    frozen.kill('SIGSTOP');
    gates[1]!.drop();
    try {
      for (const node of four) while ((await api(node, 'GET', '/cluster/map')).body.leaseLeftMs > 0) await sleep(100);
      const takeover = await b.client(reshardArgs(four));
      assert.equal(takeover.code, 0, takeover.stdout + takeover.stderr);
      assert.match(takeover.stdout, /moved [1-9]\d*, left in place/);
    } finally {
      frozen.kill('SIGCONT');
    }
    const thawed = await frozen.exited;
    const { map } = (await api(four[0]!, 'GET', '/cluster/map')).body;
    t.diagnostic(`thawed operator, exit ${thawed.code}: ${thawed.stderr.trim().split('\n').join(' / ')}`);
    assert.equal(thawed.code, 1);
    assert.doesNotMatch(thawed.stderr, /Nothing has moved/);
    assert.match(thawed.stderr, /^this reshard \(epoch \d+\) was taken over: its lease lapsed while it stood still, and another operator went on with the cluster\. .*this run had put it on 1 node of 4, and moved no record\.$/m);
    assert.match(thawed.stderr, new RegExp(`^  The cluster is at epoch ${map.epoch}: 4 nodes, replicas 100; records that reshard moved are on their new owners`, 'm'));
    assert.match(thawed.stderr, /^  To see where every record is: node ch_client\.ts check --nodes \S+$/m);
  });
});

describe('a node that answers as another shard than the map binds it to', () => {
  it('is named by the client, with both identities and the command to run next, not "the cluster map is changing"', async (t) => {
    await settle(three);
    const { map } = (await api(three[0]!, 'GET', '/cluster/map')).body;
    const itself = (await api(three[2]!, 'GET', '/cluster/map')).body.shard;
    const stranger = (await api(four[3]!, 'GET', '/cluster/map')).body.shard;
    // A map edited by hand: the third node bound to the fourth shard.
    const edited = { ...map, epoch: map.epoch + 1, nodes: map.nodes.map((n: { name: string }) => (n.name === three[2] ? { ...n, shard: stranger } : n)) };
    const put = async (m: unknown, over: number) => {
      for (const node of three) assert.equal((await api(node, 'PUT', '/cluster/map', m, { ...(await secret()), 'if-match': `"${over}"` })).status, 200);
    };
    await put(edited, map.epoch);
    try {
      const ring = new HashRing(three, Number(REPLICAS));
      const id = Array.from({ length: 100 }, (_, i) => `x${i}`).find((x) => ring.get(x) === three[2])!;
      const res = await a.client(['--nodes', three.join(','), '--ids', id]);
      t.diagnostic(`client: ${res.stderr.trim().split('\n').join(' / ')}`);
      assert.equal(res.code, 1);
      assert.doesNotMatch(res.stderr, /the cluster map is changing/);
      assert.match(res.stderr, new RegExp(`${three[2]} answers as shard ${itself}, but the cluster map at epoch ${edited.epoch} binds ${three[2]} to shard ${stranger}`));
      assert.match(res.stderr, /node ch_client\.ts check --nodes \S+/);
    } finally {
      await put({ ...map, epoch: edited.epoch + 1 }, edited.epoch);
    }
  });
});

describe('a new map on some nodes only', () => {
  it('a client sent back and forth waits, reads the map again, and stores once the rest have it; with no end, it says what it saw after about 2 s', async (t) => {
    // The new node must hold the three-node map, as after a reshard that removed it.
    await settle(four);
    await settle(three);
    const { map } = (await api(three[0]!, 'GET', '/cluster/map')).body;
    const fourth = (await api(four[3]!, 'GET', '/cluster/map')).body.shard;
    // A reshard to four, its map on the three old nodes only (its operator gone): at E+1 the old owner asks the new one, which at E sends it back.
    const gone = { host: 'elsewhere', machine: '', pid: 1, started: '2016-12-10T00:00:00.000Z' };
    const moving = { ...map, epoch: map.epoch + 1, moving: { nodes: [...map.nodes, { name: four[3], shard: fourth }], replicas: map.replicas, by: gone, leaseMs: 1 } };
    for (const node of three) assert.equal((await api(node, 'PUT', '/cluster/map', moving, { ...(await secret()), 'if-match': `"${map.epoch}"` })).status, 200);
    const [oldRing, newRing] = [new HashRing(three, Number(REPLICAS)), new HashRing(four, Number(REPLICAS))];
    const [never, soon] = Array.from({ length: 200 }, (_, i) => `half-${i}`).filter((id) => oldRing.get(id) !== newRing.get(id));

    // The new node never gets the map: the client gives up after about 2 s, and says what it saw.
    const start = Date.now();
    const stuck = await a.client(['--nodes', three.join(','), '--ids', never!]);
    const took = (Date.now() - start) / 1000;
    t.diagnostic(`never installed: exit ${stuck.code} after ${took.toFixed(1)} s: ${stuck.stderr.trim().split('\n').join(' / ')}`);
    assert.equal(stuck.code, 1);
    const owner = oldRing.get(never!);
    assert.match(stuck.stderr, new RegExp(`POST /v1/expenses: still sent elsewhere after \\d+ hops in [12]\\.\\d s, the map read again in between: ${owner} \\(at epoch ${moving.epoch}\\) sends it to ${four[3]}; ${four[3]} \\(at epoch ${map.epoch}\\) sends it to ${owner}\\. The nodes hold different maps`));

    // The new node gets it once the client has bounced off it twice and gone past its hop limit: the client stores.
    const post = (method: string, path: string) => method === 'POST' && path === '/v1/expenses';
    gates[3]!.hold(post);
    const run = a.start(['--nodes', three.join(','), '--ids', soon!]);
    for (let bounce = 1; bounce <= 2; bounce++) {
      await gates[3]!.held(1);
      gates[3]!.release();
      gates[3]!.hold(post);
    }
    const third = await Promise.race([gates[3]!.held(1).then(() => 'held'), run.exited.then((r) => `exited ${r.code}: ${r.stderr}`)]);
    assert.equal(third, 'held', 'the client came back after its hop limit');
    assert.equal((await api(four[3]!, 'PUT', '/cluster/map', moving, { ...(await secret()), 'if-match': `"${map.epoch}"` })).status, 200);
    gates[3]!.release();
    const done = await run.exited;
    t.diagnostic(`installed after the hop limit: exit ${done.code}; ${done.stdout.trim().split('\n').at(-1)}`);
    assert.equal(done.code, 0, done.stdout + done.stderr);
    assert.equal((await api(four[3]!, 'GET', `/v1/expenses/${soon}`, undefined, {})).status, 200);
  });
});
