// State the operator's tools meet after something went wrong: a shard whose
// stored map cannot be read, which must say so and be repaired by the tool;
// a reshard killed half-way, whose rerun must count what is there, exactly.
//
// The shards sit behind gates (test/gate.ts), so that a kill lands between
// a move's copy and its hand-off.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { startCluster } from '../cluster.ts';
import type { Gate } from '../gate.ts';
import type { Machine } from '../machine.ts';
import { startServer, waitForExit, type Server, type Shards } from '../shards.ts';

let shards: Shards;
let gates: Gate[];
let op: Machine;
let stop: () => Promise<void>;
const ids = Array.from({ length: 400 }, (_, i) => String(i + 1));
const REPLICAS = '100';

before(async () => {
  ({ shards, gates, a: op, stop } = await startCluster({ count: 4, ring: 3, replicas: Number(REPLICAS), ids: ids.length }));
});

let restarted: Server | undefined; // shard 2's server, once a test has restarted it

after(async () => {
  await restarted?.stop();
  await stop?.();
});

const nodes = (n: number) => gates.slice(0, n).map((g) => g.node).join(',');
const isHandoff = (method: string, path: string) => method === 'POST' && path.endsWith('/handoff');

async function api(node: string, path: string) {
  const res = await fetch(`http://${node}${path}`);
  return { status: res.status, body: (await res.json()) as { error?: string; shard?: string; map?: unknown; broken?: { epoch: number } } };
}

/** Restarts shard 2's server on its own port, so that it reads its stored map again. */
async function restartShard2(): Promise<void> {
  if (restarted !== undefined) await restarted.stop();
  else {
    const pid = await shards.pid(2, 'server.pid');
    process.kill(pid, 'SIGTERM');
    await waitForExit(pid);
  }
  const port = shards.nodes[1]!.split(':')[1]!;
  // As start-shards.sh started it: knowing the gates' names as its own (api/signing.ts, N4).
  restarted = await startServer({ ...(await shards.databaseEnv(2)), PORT: port, CLUSTER_SECRET_FILE: shards.secretFile, CLUSTER_ANNOUNCE: shards.env.CLUSTER_ANNOUNCE });
}

describe('a stored map that cannot be read', () => {
  for (const [what, corrupt] of [['corrupt JSON', "'{'"], ['a map checkMap refuses', `'{"epoch":0}'`]]) {
    it(`(${what}) starts, answers 503 naming the map, the shard and the repair, and reshard --to puts the cluster's map back with no record lost`, async () => {
      const node = gates[1]!.node;
      const before = await shards.ids(2);
      const good = (await api(gates[0]!.node, '/cluster/map')).body.map;
      await shards.sql(2, `UPDATE expenses.cluster_map SET map = ${corrupt}`);
      await restartShard2();
      const health = await api(node, '/healthz');
      assert.equal(health.status, 503, JSON.stringify(health.body));
      assert.match(health.body.error!, /^shard [\w-]+: its stored cluster map \(epoch \d+\) cannot be read: .+\. Nothing stored is lost; put the cluster's map back with: node ch_client\.ts reshard --to <the cluster's nodes>$/);
      assert.equal((await api(node, `/v1/expenses/${before[0]}`)).status, 503);
      const map = await api(node, '/cluster/map');
      assert.equal(map.status, 503);
      assert.equal(typeof map.body.shard, 'string');
      assert.equal(typeof map.body.broken?.epoch, 'number');
      const checked = await op.client(['check', '--nodes', nodes(3)]);
      assert.equal(checked.code, 1);
      assert.match(checked.stderr, new RegExp(`^BROKEN ${node}: its stored map \\(epoch \\d+\\) cannot be read .*reshard --to ${nodes(3)}$`, 'm'));

      const repaired = await op.client(['reshard', '--nodes', nodes(3), '--to', nodes(3)]);
      assert.equal(repaired.code, 0, repaired.stdout + repaired.stderr);
      assert.match(repaired.stdout, new RegExp(`^${node}: its stored map \\(epoch \\d+\\) could not be read .*; put the cluster's map back$`, 'm'));
      assert.equal((await api(node, '/healthz')).status, 200);
      assert.deepEqual((await api(node, '/cluster/map')).body.map, good);
      assert.deepEqual(await shards.ids(2), before);
      const read = await op.client(['--nodes', nodes(3), '--ids', `1-${ids.length}`]);
      assert.equal(read.code, 0, read.stdout + read.stderr);
    });
  }
});

describe('the secret never travels', () => {
  it('a node in --to that has proved nothing (a typo, a stranger) receives no secret, only signed requests', async () => {
    const secret = (await readFile(shards.secretFile, 'utf8')).trim();
    const seen: string[] = [];
    // A plain HTTP server standing in for a node: it says who it is, and takes no map.
    const impostor = http.createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      seen.push(`${req.method} ${req.url}\n${req.rawHeaders.join('\n')}\n\n${Buffer.concat(chunks)}`);
      const [status, body] = req.method === 'GET' ? [200, { shard: 'impostor', map: null, leaseLeftMs: null }] : [401, { error: 'no' }];
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
    impostor.listen(0, '127.0.0.1');
    await once(impostor, 'listening');
    const stranger = `127.0.0.1:${(impostor.address() as { port: number }).port}`;
    try {
      const res = await op.client(['reshard', '--nodes', nodes(3), '--to', `${nodes(3)},${stranger}`]);
      assert.equal(res.code, 1);
      assert.match(res.stderr, new RegExp(`refusing: ${stranger} will not take this reshard's map \\(HTTP 401`), 'the real nodes took the signed request, the stranger refused it');
    } finally {
      impostor.close();
    }
    assert.ok(seen.some((r) => r.startsWith('PUT /cluster/map') && /\nauthorization\nCH-HMAC t=\d+, mac=[0-9a-f]{64}\n/i.test(r)), seen.join('\n---\n'));
    assert.deepEqual(seen.filter((r) => r.includes(secret)), [], 'the secret in a request to the stranger');
  });
});

describe('counts after a kill', () => {
  for (const [from, to, rerunTo] of [[3, 4, 4], [4, 3, 3], [3, 4, 3]] as const) {
    const how = rerunTo === to ? 'rerun' : 'reversed';
    it(`a ${from} -> ${to} reshard killed after its copies, then ${how}, reports exactly the records there are`, async () => {
      for (const gate of gates) gate.release();
      const settled = await op.client(['reshard', '--nodes', nodes(3), '--to', nodes(from), '--replicas', REPLICAS]);
      assert.equal(settled.code, 0, settled.stdout + settled.stderr);
      await op.killedAt(['reshard', '--nodes', nodes(3), '--to', nodes(to)], gates, isHandoff);
      const incoming = (await Promise.all(shards.nodes.map((_, i) => shards.sql(i + 1, "SELECT id FROM expenses WHERE state = 'incoming'")))).flat();
      assert.ok(incoming.length > 0, 'the kill left copies incoming');
      const rerun = await op.client(['reshard', '--nodes', nodes(3), '--to', nodes(rerunTo)]);
      // Reversed, the copies on the owner cannot be handed off yet (a hand-off is taken only on the old owner,
      // since f8017a5), so that run ends incomplete: a defect of its own. Its count must be right all the same.
      if (how === 'rerun') assert.equal(rerun.code, 0, rerun.stdout + rerun.stderr);
      assert.match(rerun.stdout, new RegExp(`^reshard: \\d+ nodes -> ${rerunTo} nodes, replicas ${REPLICAS}, ${ids.length} records$`, 'm'), rerun.stdout);
    });
  }
});

describe('the secret through the gates', () => {
  it('no request of any reshard above, map or move step, carried the secret through a gate', async () => {
    const secret = (await readFile(shards.secretFile, 'utf8')).trim();
    const seen = gates.flatMap((g) => g.seen());
    assert.ok(seen.some((r) => /^POST \/v1\/moves\/handoff\n/.test(r) && /\nauthorization\nCH-HMAC /i.test(r)), 'signed move steps went through the gates');
    assert.deepEqual(seen.filter((r) => r.includes(secret)), []);
  });
});
