// A move's last step landing inside a request on the new owner
// (shard/guard.ts, api/cluster-map.ts rule 4). The handler reads the id while
// its row is the incoming copy (no live record, so it finds none), the copy
// is adopted, and the guard's second look finds the row live. The record
// existed all along: the answer must be the record, never a 404. The soak
// (test/history/soak.ts, seed 3506) met this once as a PUT answered 404
// mid-reshard for a record that a DELETE then removed. And the other last
// step, the discard of a copy whose original a client deleted: a POST that
// met the copy (the id taken) and then finds no row at all must create the
// record, never answer 409 for an id nobody holds (the short history test
// met that once, a POST answered 409 after a DELETE answered 204).
//
// The guard runs here in the test's process, over the shard's own MariaDB,
// so that the test decides where the adoption lands: after the handler's
// read, before the guard's look. The adoption itself is the shard's own
// route, over HTTP, as a reshard sends it.

import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { createDb } from '../../db.ts';
import { connect, dbConfigFromEnv, type Query } from '../../mysql/connections.ts';
import { createCluster } from '../../shard/cluster.ts';
import type { Context } from '../../shard/context.ts';
import { create, read, update, type Api } from '../../shard/expenses.ts';
import { guarded } from '../../shard/guard.ts';
import { HttpError, type Reply } from '../../shard/http.ts';
import { createMoves } from '../../shard/move-rows.ts';
import { createRows } from '../../shard/rows.ts';
import { at, expense } from '../requests.ts';
import { startShards, type Shards } from '../shards.ts';

describe('a request on the new owner while the move of its id ends (adopted, or discarded)', () => {
  let cluster: Shards;
  let shard: string;
  let secret: Record<string, string>;
  let query: Query;
  let epoch: string;
  const elsewhere = { name: 'elsewhere.invalid:1000', shard: 'elsewhere' };

  before(async () => {
    cluster = await startShards(1);
    shard = `http://${cluster.nodes[0]}`;
    secret = { authorization: `Bearer ${(await readFile(cluster.secretFile, 'utf8')).trim()}` };
    const here = { name: cluster.nodes[0]!, shard: (await at(shard, 'GET', '/cluster/map')).body.shard };
    // Every id moves from elsewhere to this shard; rule 6 has the ring go to elsewhere first.
    let { map } = (await at(shard, 'GET', '/cluster/map')).body;
    const by = { host: 'test', machine: '', pid: process.pid, started: new Date().toISOString() };
    for (const [nodes, next] of [[map.nodes, [elsewhere]], [[elsewhere], [here]]]) {
      const m = { epoch: map.epoch + 1, nodes, replicas: 1, moving: { nodes: next, replicas: 1, by, leaseMs: 600_000 } };
      const res = await at(shard, 'PUT', '/cluster/map', m, { ...secret, 'if-match': `"${map.epoch}"` });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      map = m;
    }
    epoch = String(map.epoch);
    query = connect(dbConfigFromEnv(await cluster.databaseEnv(1)));
  });

  after(async () => {
    await query?.close();
    await cluster?.stop();
  });

  /** A record copied here as a move's step 1 (incoming: no client sees it); its version. */
  async function incoming(): Promise<{ id: string; version: string }> {
    const copy = expense({ status: 'approved', decision_date: '01-02-2017', version: '0123456789abcdef' });
    const res = await at(shard, 'PUT', `/v1/expenses/${copy.id}/copy`, copy, { ...secret, 'cluster-epoch': epoch, 'if-none-match': '*' });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    return { id: copy.id, version: copy.version };
  }

  /** Step 3 on the shard, as the reshard sends it. */
  async function adopt(id: string, version: string): Promise<void> {
    const res = await at(shard, 'POST', `/v1/expenses/${id}/adopt`, undefined, { ...secret, 'cluster-epoch': epoch, 'if-match': `"${version}"` });
    assert.equal(res.status, 204, JSON.stringify(res.body));
  }

  /** Instead of step 3, as the reshard sends it when the original was deleted. */
  async function discard(id: string, version: string): Promise<void> {
    const res = await at(shard, 'DELETE', `/v1/expenses/${id}/copy`, undefined, { ...secret, 'cluster-epoch': epoch, 'if-match': `"${version}"` });
    assert.equal(res.status, 204, JSON.stringify(res.body));
  }

  /**
   * `method` on `id` through the guard, over this shard's database and the map
   * it holds, with the move's last step (`then`) landing right after the
   * handler's own statement. A POST comes with the old owner's Asking word.
   */
  async function during(method: 'GET' | 'PUT' | 'POST', id: string, then: () => Promise<void>, body?: unknown): Promise<Reply> {
    const rows = createRows(query);
    const held = await createCluster(rows).load();
    const handler = { GET: read, PUT: update, POST: create }[method];
    let ran = 0;
    const thenStep = async (c: Api) => {
      try {
        return await handler(c);
      } finally {
        if (ran++ === 0) await then();
      }
    };
    const headers = { ...(body !== undefined && { 'content-type': 'application/json' }), ...(method === 'POST' && { asking: epoch }) };
    const req = { method, url: method === 'POST' ? '/v1/expenses' : `/v1/expenses/${id}`, headers } as unknown as IncomingMessage;
    const c: Context = {
      req, body: Buffer.from(body === undefined ? '' : JSON.stringify(body)), params: method === 'POST' ? [] : [id], query: new URLSearchParams(),
      db: createDb(query), rows, moves: createMoves(query), mysql: query, cluster: createCluster(rows), secret: undefined,
      address: cluster.nodes[0]!, operator: undefined, held,
    };
    assert.equal(held.place!(id).target?.name, cluster.nodes[0], 'the id moves to this shard');
    return guarded(thenStep)(c).catch((err) => {
      if (err instanceof HttpError) return { status: err.status, body: { error: err.message } };
      throw err;
    });
  }

  it('a GET answers the record, not 404', async () => {
    const { id, version } = await incoming();
    const reply = await during('GET', id, () => adopt(id, version));
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    assert.equal((reply.body as { id: string }).id, id);
  });

  it('a PUT changes the record, not 404', async () => {
    const { id, version } = await incoming();
    const reply = await during('PUT', id, () => adopt(id, version), { name: 'after the adoption' });
    assert.equal(reply.status, 202, JSON.stringify(reply.body));
    assert.equal((reply.body as { name: string }).name, 'after the adoption');
    const now = await at(shard, 'GET', `/v1/expenses/${id}`);
    assert.equal(now.status, 200);
    assert.equal(now.body.name, 'after the adoption');
  });

  it('a POST that met a copy discarded since creates the record, not 409', async () => {
    const { id, version } = await incoming();
    const reply = await during('POST', id, () => discard(id, version), expense({ id, name: 'posted after the discard' }));
    assert.equal(reply.status, 201, JSON.stringify(reply.body));
    const now = await at(shard, 'GET', `/v1/expenses/${id}`);
    assert.equal(now.status, 200);
    assert.equal(now.body.name, 'posted after the discard');
  });
});
