// A shard's half of moving a record (shard/move-steps.ts): copy, hand off,
// adopt and discard, on a shard of a cluster, with the map and the secret that
// start-shards.sh gives it. The other end of every move is a node that exists
// only in the maps these tests put on the shard.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { startShards, type Shards } from '../shards.ts';
import { at, expense } from '../requests.ts';

describe('moving a record between shards: copy, hand off, adopt', () => {
  // A shard of a cluster, with the map and the secret that start-shards.sh
  // gives it. The other end of every move is a node that exists only in the
  // maps these tests put on the shard.
  let cluster: Shards;
  let shard: string;
  let here: { name: string; shard: string };
  const elsewhere = { name: 'elsewhere.invalid:1000', shard: 'elsewhere' };
  let secret: Record<string, string>;

  before(async () => {
    cluster = await startShards(1);
    shard = `http://${cluster.nodes[0]}`;
    secret = { authorization: `Bearer ${(await readFile(cluster.secretFile, 'utf8')).trim()}` };
    here = { name: cluster.nodes[0]!, shard: (await at(shard, 'GET', '/cluster/map')).body.shard };
  });

  after(async () => {
    await cluster?.stop();
  });

  /**
   * Puts a map on the shard, one epoch on, under which every id moves from
   * `from` to `to`. Resolves to the headers that the move steps then need.
   */
  async function moving(from: typeof here, to: typeof here): Promise<Record<string, string>> {
    let { map } = (await at(shard, 'GET', '/cluster/map')).body;
    const by = { host: 'test', machine: '', pid: process.pid, started: new Date().toISOString() };
    const put = async (nodes: unknown[], next: unknown[]) => {
      const m = { epoch: map.epoch + 1, nodes, replicas: 1, moving: { nodes: next, replicas: 1, by, leaseMs: 600_000 } };
      const res = await at(shard, 'PUT', '/cluster/map', m, { ...secret, 'if-match': `"${map.epoch}"` });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      map = m;
    };
    // Rule 6: a ring changes only by a move, so a shard whose ring is not `from` first moves to it.
    const rings = [map.nodes, map.moving?.nodes ?? []].map((nodes: Array<{ name: string }>) => nodes.map((n) => n.name).join());
    if (!rings.includes(from.name)) await put(map.nodes, [from]);
    await put([from], [to]);
    return { ...secret, 'cluster-epoch': String(map.epoch) };
  }

  const step = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => at(shard, method, path, body, headers);

  /** A record as a copy carries it: every field, the server's included, and its version. */
  const copyOf = (fields: Record<string, unknown> = {}) => expense({ status: 'approved', decision_date: '01-02-2017', version: '0123456789abcdef', ...fields });

  /** The incoming copies on the shard, by id: each record with its version. */
  async function incoming(): Promise<Map<string, { expense: unknown; version: string }>> {
    const res = await step('GET', '/cluster/rows?state=incoming&limit=1000');
    assert.equal(res.status, 200);
    return new Map(res.body.expenses.map((e: { id: string }) => [e.id, { expense: e, version: res.body.versions[e.id] }]));
  }

  async function listed(id: string): Promise<boolean> {
    return (await step('GET', '/v1/expenses?limit=1000')).body.expenses.some((e: { id: string }) => e.id === id);
  }

  it('takes a copy only while a reshard is under way, and only with its epoch: 409 otherwise', async () => {
    const copy = copyOf();
    const path = `/v1/expenses/${copy.id}/copy`;
    // The shard's first map has no reshard under way.
    const settled = await step('PUT', path, copy, { ...secret, 'if-none-match': '*' });
    assert.equal(settled.status, 409);
    assert.match(settled.body.error, /no reshard is under way/);
    const { 'cluster-epoch': epoch, ...noEpoch } = await moving(elsewhere, here);
    for (const headers of [noEpoch, { ...noEpoch, 'cluster-epoch': String(Number(epoch) - 1) }]) {
      const res = await step('PUT', path, copy, { ...headers, 'if-none-match': '*' });
      assert.equal(res.status, 409, JSON.stringify(headers));
      assert.match(res.body.error, new RegExp(`takes move steps only with Cluster-Epoch: ${epoch}$`));
    }
    assert.equal((await incoming()).has(copy.id), false);
    assert.notEqual((await step('GET', `/v1/expenses/${copy.id}`)).status, 200);
  });

  it('takes a copy as incoming, which no client can read or list; only ?state=incoming shows it', async () => {
    const headers = await moving(elsewhere, here);
    const copy = copyOf();
    const { version, ...record } = copy;
    const path = `/v1/expenses/${copy.id}/copy`;
    assert.equal((await step('PUT', path, copy, headers)).status, 428, 'a copy says what it expects to find');
    const made = await step('PUT', path, copy, { ...headers, 'if-none-match': '*' });
    assert.equal(made.status, 201);
    assert.equal(made.headers.get('etag'), `"${version}"`);
    // Until the copy is adopted, the old owner decides about the id.
    const read = await step('GET', `/v1/expenses/${copy.id}`);
    assert.equal(read.status, 421);
    assert.equal(read.body.owner, elsewhere.name);
    assert.equal(await listed(copy.id), false);
    assert.deepEqual((await incoming()).get(copy.id), { expense: record, version });
  });

  it('replaces an incoming copy only at the version it names, and never makes a second one', async () => {
    const headers = await moving(elsewhere, here);
    const copy = copyOf();
    const path = `/v1/expenses/${copy.id}/copy`;
    assert.equal((await step('PUT', path, copy, { ...headers, 'if-none-match': '*' })).status, 201);
    const again = await step('PUT', path, { ...copy, name: 'Again' }, { ...headers, 'if-none-match': '*' });
    assert.equal(again.status, 412);
    assert.equal(again.body.state, 'incoming');
    const newer = { ...copy, name: 'Newer', version: 'fedcba9876543210' };
    assert.equal((await step('PUT', path, newer, { ...headers, 'if-match': '"1111111111111111"' })).status, 412);
    const replaced = await step('PUT', path, newer, { ...headers, 'if-match': `"${copy.version}"` });
    assert.equal(replaced.status, 200);
    assert.equal(replaced.headers.get('etag'), '"fedcba9876543210"');
    const { version, ...record } = newer;
    assert.deepEqual((await incoming()).get(copy.id), { expense: record, version });
  });

  it('adopts a copy at its version: it is live, with every field and its version as the ETag, and no copy replaces it', async () => {
    const headers = await moving(elsewhere, here);
    const copy = copyOf();
    const { version, ...record } = copy;
    assert.equal((await step('PUT', `/v1/expenses/${copy.id}/copy`, copy, { ...headers, 'if-none-match': '*' })).status, 201);
    const adopt = `/v1/expenses/${copy.id}/adopt`;
    assert.equal((await step('POST', adopt, undefined, headers)).status, 428);
    assert.equal((await step('POST', adopt, undefined, { ...headers, 'if-match': '"1111111111111111"' })).status, 412);
    assert.equal((await step('POST', adopt, undefined, { ...headers, 'if-match': `"${version}"` })).status, 204);

    const read = await step('GET', `/v1/expenses/${copy.id}`);
    assert.equal(read.status, 200);
    assert.deepEqual(read.body, record);
    assert.equal(read.headers.get('etag'), `"${version}"`);
    assert.equal(await listed(copy.id), true);
    assert.equal((await incoming()).has(copy.id), false);
    const over = await step('PUT', `/v1/expenses/${copy.id}/copy`, { ...copy, name: 'Over' }, { ...headers, 'if-none-match': '*' });
    assert.equal(over.status, 412);
    assert.equal(over.body.state, 'live');
    assert.deepEqual((await step('GET', `/v1/expenses/${copy.id}`)).body, record);
  });

  it('hands a live record off at its version: its old owner no longer serves it, and says where to ask', async () => {
    // The record arrives here first (as the test above shows), then leaves again.
    const arriving = await moving(elsewhere, here);
    const copy = copyOf();
    const { version, ...record } = copy;
    assert.equal((await step('PUT', `/v1/expenses/${copy.id}/copy`, copy, { ...arriving, 'if-none-match': '*' })).status, 201);
    assert.equal((await step('POST', `/v1/expenses/${copy.id}/adopt`, undefined, { ...arriving, 'if-match': `"${version}"` })).status, 204);
    const leaving = await moving(here, elsewhere);
    assert.deepEqual((await step('GET', `/v1/expenses/${copy.id}`)).body, record, 'the old owner serves it until the handoff');

    const handoff = `/v1/expenses/${copy.id}/handoff`;
    assert.equal((await step('POST', handoff, undefined, leaving)).status, 428);
    const other = await step('POST', handoff, undefined, { ...leaving, 'if-match': '"1111111111111111"' });
    assert.equal(other.status, 412);
    assert.equal(other.body.state, 'live');
    assert.equal((await step('POST', handoff, undefined, { ...leaving, 'if-match': `"${version}"` })).status, 204);

    const read = await step('GET', `/v1/expenses/${copy.id}`);
    assert.equal(read.status, 421);
    assert.equal(read.body.owner, elsewhere.name);
    // The epoch, and a MAC under the cluster secret that a client cannot make up.
    assert.match(read.body.asking, new RegExp(`^${leaving['cluster-epoch']}\\.[0-9a-f]{32}$`));
    assert.equal(await listed(copy.id), false);
    assert.equal((await step('POST', handoff, undefined, { ...leaving, 'if-match': `"${version}"` })).status, 204, 'sent again after a crash: done already');
  });

  it('takes a copy only on the new owner, and the other steps on either home only in the state and version they name', async () => {
    // The record arrives here; a hand-off sent here, its new owner, finds no live row at that version, and changes nothing.
    const arriving = await moving(elsewhere, here);
    const copy = copyOf();
    const { version } = copy;
    const [path, id] = [`/v1/expenses/${copy.id}`, JSON.stringify(copy.id)];
    assert.equal((await step('PUT', `${path}/copy`, copy, { ...arriving, 'if-none-match': '*' })).status, 201);
    const wrongHandoff = await step('POST', `${path}/handoff`, undefined, { ...arriving, 'if-match': `"${version}"` });
    assert.equal(wrongHandoff.status, 412);
    assert.equal(wrongHandoff.body.state, 'incoming');
    assert.equal((await step('POST', `${path}/adopt`, undefined, { ...arriving, 'if-match': `"${version}"` })).status, 204);

    // It leaves again: here is its old owner now, and keeps a moved row after the hand-off.
    const leaving = await moving(here, elsewhere);
    assert.equal((await step('POST', `${path}/handoff`, undefined, { ...leaving, 'if-match': `"${version}"` })).status, 204);
    const stray = await step('PUT', `${path}/copy`, copy, { ...leaving, 'if-none-match': '*' });
    assert.equal(stray.status, 409, 'a stray copy sent to the old owner');
    assert.equal(stray.body.error, `a copy of ${id} is taken only on its new owner, ${elsewhere.name}; send it there`);
    for (const [method, what] of [['POST', 'adopt'], ['DELETE', 'copy']] as const) {
      assert.equal((await step(method, `${path}/${what}`, undefined, { ...leaving, 'if-match': `"${version}"` })).status, 412, `${method} ${what}`);
    }
    assert.deepEqual(await cluster.sql(1, `SELECT state, version FROM expenses WHERE id = '${copy.id}'`), [['moved', version]], 'the tombstone stays');
    assert.equal((await step('GET', path)).body.owner, elsewhere.name);
  });

  it('discards an incoming copy at its version', async () => {
    const headers = await moving(elsewhere, here);
    const copy = copyOf();
    const path = `/v1/expenses/${copy.id}/copy`;
    assert.equal((await step('PUT', path, copy, { ...headers, 'if-none-match': '*' })).status, 201);
    assert.equal((await step('DELETE', path, undefined, { ...headers, 'if-match': '"1111111111111111"' })).status, 412);
    assert.equal((await incoming()).has(copy.id), true);
    assert.equal((await step('DELETE', path, undefined, { ...headers, 'if-match': `"${copy.version}"` })).status, 204);
    assert.equal((await incoming()).has(copy.id), false);
    assert.equal((await step('DELETE', path, undefined, { ...headers, 'if-match': `"${copy.version}"` })).status, 404);
  });

  it("refuses a copy whose id is not the path's, and lets no ordinary write set status, decision_date or version", async () => {
    const headers = await moving(elsewhere, here);
    const copy = copyOf({ decision_date: '' });
    const wrongPath = await step('PUT', `/v1/expenses/${copy.id}x/copy`, copy, { ...headers, 'if-none-match': '*' });
    assert.equal(wrongPath.status, 400);
    assert.match(wrongPath.body.error, /is not the id in the path/);
    assert.equal((await incoming()).has(copy.id), false);
    const post = await step('POST', '/v1/expenses', copy);
    assert.equal(post.status, 400);
    assert.deepEqual(Object.keys(post.body.fields).sort(), ['decision_date', 'status', 'version']);
    assert.equal(post.body.fields.version, 'is set by the server');
    assert.notEqual((await step('GET', `/v1/expenses/${copy.id}`)).status, 200);
  });

  it('answers a POST of an id its old owner still holds live mid-move with 409, never an ASK that would make it twice', async () => {
    await moving(here, elsewhere);
    const record = expense();
    await cluster.sql(1, `INSERT INTO expenses (id, name, email, category, description, link, estimated_costs, submit_date, version) VALUES ('${record.id}', 'n', 'e@x.co', 'c', 'd', '', 1, '2016-12-10', '0123456789abcdef')`);
    const again = await step('POST', '/v1/expenses', record);
    assert.equal(again.status, 409, JSON.stringify(again.body));
    assert.equal(again.body.asking, undefined);
  });
});
