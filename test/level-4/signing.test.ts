// One node per signature, and a failover's --to that proves it holds the
// secret (issue 34, item 8; api/signing.ts, N1-N4 and "A PROOF";
// shard/replication.ts, D0). Two shards, each with a standby, on real
// processes: a signed request replayed at another node, a step meant for
// another shard, a stranger in --to, and a promote that times out.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { expenseFor } from '../../ch_client.ts';
import { sign } from '../../api/signing.ts';
import { call } from '../../client/http.ts';
import { HashRing } from '../../ring.ts';
import { ownAddresses } from '../../shard/secret.ts';
import { runNode, startShardPairs, until } from '../shards.ts';

type Pairs = Awaited<ReturnType<typeof startShardPairs>>;

/** One request by node:http, with the Host header we choose: fetch() sets Host itself, as the operator's tools do. */
function raw(node: string, method: string, path: string, headers: Record<string, string>, body = ''): Promise<{ status: number; body: any }> {
  const at = node.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const req = http.request({ host: node.slice(0, at), port: Number(node.slice(at + 1)), method, path, headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, body: text === '' ? undefined : JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * A stranger on a port of its own that answers every GET as `real` does, by
 * asking it (with the Host header `real`'s, or as sent), and records every
 * request; it answers anything else 503.
 */
async function stranger(real: string, hostAsSent: boolean) {
  const seen: Array<{ method: string; path: string; authorization?: string }> = [];
  const at = real.lastIndexOf(':');
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method!, path: req.url!, authorization: req.headers.authorization });
    if (req.method !== 'GET') {
      res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":"a stranger"}');
      return;
    }
    const { host, ...rest } = req.headers;
    const relayed = http.request({ host: real.slice(0, at), port: Number(real.slice(at + 1)), path: req.url, headers: hostAsSent ? req.headers : rest, agent: false }, (answer) => {
      res.writeHead(answer.statusCode!, answer.headers);
      answer.pipe(res);
    });
    relayed.on('error', () => res.writeHead(502).end());
    relayed.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { address: `127.0.0.1:${(server.address() as { port: number }).port}`, seen, close: () => new Promise((resolve) => server.close(resolve)) };
}

describe('a server\'s own addresses (api/signing.ts, N1-N4)', () => {
  it('are HOST:PORT, its loopback names, every interface on a wildcard, and CLUSTER_ANNOUNCE, as Host headers write them', () => {
    assert.deepEqual(ownAddresses('127.0.0.1:4000', ''), ['127.0.0.1:4000', 'localhost:4000', '[::1]:4000']);
    assert.deepEqual(ownAddresses('::1:4000', ''), ['[::1]:4000', 'localhost:4000', '127.0.0.1:4000']);
    assert.deepEqual(ownAddresses('127.0.0.2:4000', ''), ['127.0.0.2:4000'], 'another loopback address is another node');
    assert.deepEqual(ownAddresses('10.0.0.5:4000', 'Shard-A.example:3001, b.example:80'), ['10.0.0.5:4000', 'shard-a.example:3001', 'b.example']);
    const wildcard = ownAddresses('0.0.0.0:4000', '');
    assert.ok(['127.0.0.1:4000', 'localhost:4000'].every((a) => wildcard.includes(a)), wildcard.join(', '));
  });
});

describe('a signature is good at one node, and a failover\'s --to proves it holds the secret', () => {
  let pairs: Pairs;
  let secret: string;
  let shard: (n: number) => Promise<string>;
  let epoch: () => Promise<number>;
  const readOnly = async (n: number, machine: 'primary' | 'standby') => (await pairs.sql(n, machine, 'SELECT @@read_only'))[0]![0];
  const receiving = async (n: number) => (await call(pairs.standbyOf(n), 'GET', '/cluster/replication', undefined, {}, { secret })).body.follows?.io;
  /** A new record's POST at `node`, for an id that `node` owns: its status. */
  const write = async (node: string, prefix: string) => {
    const { map } = await (await fetch(`http://${node}/cluster/map`)).json();
    const ring = new HashRing(map.nodes.map((n: { name: string }) => n.name), map.replicas);
    let i = 0;
    while (ring.get(`${prefix}-${i}`) !== node) i++;
    const res = await fetch(`http://${node}/v1/expenses`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(expenseFor(`${prefix}-${i}`)) });
    return res.status;
  };

  before(async () => {
    pairs = await startShardPairs(2);
    secret = (await readFile(join(pairs.dir, 'cluster-secret'), 'utf8')).trim();
    shard = async (n) => (await (await fetch(`http://${pairs.nodeOf(n)}/healthz`)).json()).shard;
    epoch = async () => (await (await fetch(`http://${pairs.nodeOf(1)}/cluster/map`)).json()).map.epoch;
  });
  after(async () => {
    await pairs?.stop();
  });

  it('refuses a signed operator request replayed at another node, and takes it at its own under any of its loopback names', async () => {
    const standby = pairs.standbyOf(1);
    const body = JSON.stringify({ shard: await shard(1), epoch: await epoch() });
    // A fence signed for shard 1's standby, as client/http.ts signs it.
    const headers = { 'content-type': 'application/json', authorization: sign(secret, { method: 'POST', host: standby, path: '/cluster/fence', body }) };
    for (const other of [pairs.nodeOf(1), pairs.nodeOf(2)]) {
      // Replayed as recorded, Host and all: the MAC fits, the node does not.
      const replayed = await raw(other, 'POST', '/cluster/fence', { ...headers, host: standby }, body);
      assert.equal(replayed.status, 401, `replayed at ${other}: ${JSON.stringify(replayed.body)}`);
      assert.match(replayed.body.error, new RegExp(`the request is for ${standby}, and this server is ${other}, localhost:\\d+, \\[::1\\]:\\d+: a signature or a proof is good at its one node`));
      // Replayed with the Host of the node it reaches: the MAC does not fit.
      const rehosted = await raw(other, 'POST', '/cluster/fence', { ...headers, host: other }, body);
      assert.equal(rehosted.status, 401, `replayed at ${other} as its own: ${JSON.stringify(rehosted.body)}`);
      assert.match(rehosted.body.error, /the signature does not match this request under the cluster secret/);
    }
    assert.equal(await readOnly(1, 'primary'), '0');
    assert.equal(await readOnly(2, 'primary'), '0');
    assert.equal(await write(pairs.nodeOf(1), 'after-replay-1'), 201);
    assert.equal(await write(pairs.nodeOf(2), 'after-replay-2'), 201);
    // At the node it was signed for it is taken, and under another loopback name of it too (N2).
    assert.equal((await raw(standby, 'POST', '/cluster/fence', { ...headers, host: standby }, body)).status, 200);
    const port = standby.slice(standby.lastIndexOf(':') + 1);
    const local = { ...headers, authorization: sign(secret, { method: 'POST', host: `localhost:${port}`, path: '/cluster/fence', body }), host: `localhost:${port}` };
    assert.equal((await raw(standby, 'POST', '/cluster/fence', local, body)).status, 200);
  });

  it('refuses a promote for another shard\'s node with a 409 naming both shards, and leaves the standby following', async () => {
    const [one, two] = [await shard(1), await shard(2)];
    // Signed for shard 1's standby, and meant for shard 2: a typo in the address.
    const res = await call(pairs.standbyOf(1), 'POST', '/cluster/promote', { shard: two, epoch: await epoch(), wait_for: null, timeout_ms: 5_000 }, {}, { secret });
    assert.equal(res.status, 409, JSON.stringify(res.body));
    assert.match(res.body.error, new RegExp(`^not done: this promote is for shard ${two}, and this machine is shard ${one}'s\\. It was sent to the wrong machine`));
    assert.deepEqual([res.body.shard, res.body.asked], [one, two]);
    assert.equal(await readOnly(1, 'standby'), '1');
    assert.equal(await receiving(1), 'Yes');
    const unnamed = await call(pairs.standbyOf(1), 'POST', '/cluster/fence', {}, {}, { secret });
    assert.equal(unnamed.status, 400);
    assert.match(unnamed.body.error, /fence needs \{"shard": "<the shard's id>", "epoch": <the map's epoch>\}/);
  });

  for (const hostAsSent of [false, true]) {
    it(`a failover whose --to is a stranger relaying the standby's GETs (Host ${hostAsSent ? 'as sent' : 'rewritten'}) changes nothing`, async () => {
      const node = pairs.nodeOf(2);
      const fake = await stranger(pairs.standbyOf(2), hostAsSent);
      const nodes = [pairs.nodeOf(1), node, pairs.standbyOf(1), pairs.standbyOf(2)];
      const maps = async () => Promise.all(nodes.map(async (n) => (await (await fetch(`http://${n}/cluster/map`)).json()).map.epoch));
      const before = await maps();
      let res;
      try {
        // It looks like shard 2's standby to a plain GET.
        assert.equal((await (await fetch(`http://${fake.address}/healthz`)).json()).shard, await shard(2));
        res = await runNode(['ch_client.ts', 'failover', node, '--to', fake.address, '--nodes', nodes.join(','), '--secret-file', join(pairs.dir, 'cluster-secret')]);
      } finally {
        await fake.close();
      }
      // No fence, no promote, no map change: the primary takes writes, its standby follows it.
      assert.equal(await readOnly(2, 'primary'), '0');
      assert.equal(await write(node, `after-stranger-${hostAsSent}`), 201);
      assert.equal(await readOnly(2, 'standby'), '1');
      assert.equal(await receiving(2), 'Yes');
      assert.deepEqual(await maps(), before);
      // Nothing was sent to it but GETs, and nothing signed.
      assert.deepEqual(fake.seen.filter((r) => r.method !== 'GET' || r.authorization !== undefined), []);
      assert.ok(fake.seen.some((r) => r.path.startsWith('/cluster/proof?nonce=')), JSON.stringify(fake.seen));
      console.log(`the failover to a stranger (Host ${hostAsSent ? 'as sent' : 'rewritten'}) said: ${res.stderr.trim()}`);
      assert.equal(res.code, 1, res.stdout + res.stderr);
      assert.match(res.stderr, new RegExp(`^refusing: ${fake.address} did not prove that it holds the cluster secret \\(.+\\): it is not a machine of this cluster, or not at that address \\(a typo in --to\\?\\)\\. Nothing was changed\\. Find the standby's address`));
    });
  }

  it('refuses a fence under an older map than the machine holds, with a 409 naming both epochs', async () => {
    const { map } = await (await fetch(`http://${pairs.nodeOf(1)}/cluster/map`)).json();
    const { mac: _, ...next } = { ...map, epoch: map.epoch + 1 };
    const put = await call(pairs.nodeOf(1), 'PUT', '/cluster/map', next, { 'if-match': `"${map.epoch}"` }, { secret });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    // The standby reads the map its primary replicated to it (rule 8), once it has applied it.
    await until('the standby holds the new map', async () => (await (await fetch(`http://${pairs.standbyOf(1)}/cluster/map`)).json()).map?.epoch === next.epoch);
    const res = await call(pairs.standbyOf(1), 'POST', '/cluster/fence', { shard: await shard(1), epoch: map.epoch }, {}, { secret });
    assert.equal(res.status, 409, JSON.stringify(res.body));
    assert.match(res.body.error, new RegExp(`^not done: this fence acts under the map at epoch ${map.epoch}, and this machine holds epoch ${map.epoch + 1}: the cluster changed since the operator read it`));
  });

  it('a promote that times out leaves the standby receiving from its primary, whose writes go on', async () => {
    await pairs.sql(1, 'standby', 'STOP SLAVE SQL_THREAD');
    try {
      // Received (the 201 says the standby acked it) but not applied: the wait below cannot end.
      assert.equal(await write(pairs.nodeOf(1), 'before-timeout'), 201);
      const res = await call(pairs.standbyOf(1), 'POST', '/cluster/promote', { shard: await shard(1), epoch: await epoch(), wait_for: null, timeout_ms: 1_000 }, {}, { secret });
      assert.equal(res.status, 409, JSON.stringify(res.body));
      assert.match(res.body.error, /^not promoted: this standby did not apply up to \S+ within 1000 ms/);
      assert.equal(await receiving(1), 'Yes');
    } finally {
      await pairs.sql(1, 'standby', 'START SLAVE SQL_THREAD');
    }
    assert.equal(await readOnly(1, 'standby'), '1');
    assert.equal(await write(pairs.nodeOf(1), 'after-timeout'), 201);
  });
});
