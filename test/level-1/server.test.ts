// The expense API of one shard, against a real MariaDB. The server under test
// is one server as assignment 1 has it: no cluster map, no cluster secret. The
// steps that move a record between shards run on a shard of a cluster, which
// has both.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { checkFields, EDITABLE, FIELDS, Invalid } from '../../api/expense.ts';
import { startServer, startShards, runNode, type Server, type Shards } from '../shards.ts';
import { at, expense, type Answer } from '../requests.ts';

let shards: Shards;
let server: Server;

before(async () => {
  shards = await startShards(1, { map: false });
  server = await startServer(await shards.databaseEnv(1));
});

after(async () => {
  await server?.stop();
  await shards?.stop();
});

/** A request to the server under test. */
function api(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  return at(server.url, method, path, body, headers);
}

/** A request exactly as written: no URL normalisation, any headers, any body. */
function raw(method: string, path: string, headers: Record<string, string | number>, chunks: string[] = []): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const { hostname, port } = new URL(server.url);
    const req = request({ hostname, port, path, method, headers }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c)).on('end', () => resolve({ status: res.statusCode!, body: text === '' ? undefined : JSON.parse(text) }));
    });
    req.on('error', reject);
    for (const chunk of chunks) req.write(chunk);
    req.end();
  });
}

/**
 * A JSON body with `key` first, as written, so that JSON.parse makes it an own
 * property even when it is __proto__; its value would pollute Object.prototype
 * through either key, were it merged into a plain object.
 */
function withKey(key: string, fields: Record<string, unknown>): string {
  return `{${JSON.stringify(key)}: {"polluted": true, "prototype": {"polluted": true}}, ${JSON.stringify(fields).slice(1)}`;
}

async function created(fields: Record<string, unknown> = {}): Promise<any> {
  const res = await api('POST', '/v1/expenses', expense(fields));
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body;
}

describe('POST /v1/expenses', () => {
  it('creates an expense: 201, the full record in canonical form, and its Location', async () => {
    const body = expense();
    const res = await api('POST', '/v1/expenses', body);
    assert.equal(res.status, 201);
    assert.equal(res.headers.get('location'), `/v1/expenses/${body.id}`);
    assert.deepEqual(res.body, { ...body, status: 'pending', decision_date: '' });
  });

  it('returns exactly the JSON that a later GET returns', async () => {
    const body = expense({ estimated_costs: 12.5, description: 'x'.repeat(2000) });
    const post = await fetch(`${server.url}/v1/expenses`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const get = await fetch(`${server.url}/v1/expenses/${body.id}`);
    assert.equal(await get.text(), await post.text());
  });

  it('stores a JSON integer id as its decimal string', async () => {
    const id = 9_000_000_000 + process.pid;
    const res = await api('POST', '/v1/expenses', expense({ id }));
    assert.equal(res.status, 201);
    assert.equal(res.body.id, String(id));
    assert.equal((await api('GET', `/v1/expenses/${id}`)).status, 200);
  });

  it('answers 409 for an id that exists, and leaves the stored record unchanged', async () => {
    const first = await created();
    const res = await api('POST', '/v1/expenses', expense({ id: first.id, name: 'Someone else' }));
    assert.equal(res.status, 409);
    assert.match(res.body.error, /already exists/);
    assert.deepEqual((await api('GET', `/v1/expenses/${first.id}`)).body, first);
  });

  it('lets exactly one of 50 concurrent POSTs of one id succeed, and stores that one', async () => {
    const id = `race-${process.pid}`;
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => api('POST', '/v1/expenses', expense({ id, name: `writer ${i}` }))));
    const statuses = answers.map((a) => a.status);
    assert.equal(statuses.filter((s) => s === 201).length, 1);
    assert.equal(statuses.filter((s) => s === 409).length, 49);
    const winner = answers.find((a) => a.status === 201)!.body;
    assert.deepEqual((await api('GET', `/v1/expenses/${id}`)).body, winner);
  });

  it('round-trips UTF-8 in full, emoji and other scripts included', async () => {
    const text = { name: 'Zoë Ñandú 王小明 🚀💸', description: 'naïve café — ☕ 𝄞 \u0000 tab\there', category: 'Ελληνικά' };
    const record = await created(text);
    const got = (await api('GET', `/v1/expenses/${record.id}`)).body;
    assert.deepEqual({ name: got.name, description: got.description, category: got.category }, text);
  });

  it('reads back every character that JSON escapes, and text that looks like JSON, as written', async () => {
    // MySQL builds the record's JSON (db.ts, COLUMNS): what it escapes, the client must get back unchanged.
    const text = { name: 'say "hi" \\ back\\slash {"a": 1}', description: 'lines\n\r\b\f \u0001\u001f\u007f \u2028\u2029 </script> null [1, 2]', category: '\\u0041' };
    await created({ id: 'json-escapes-1', ...text });
    const [listed] = (await api('GET', '/v1/expenses?after=json-escapes-0&limit=1')).body.expenses;
    for (const got of [(await api('GET', '/v1/expenses/json-escapes-1')).body, listed]) {
      assert.deepEqual({ name: got.name, description: got.description, category: got.category }, text);
    }
  });

  it('stores SQL metacharacters verbatim', async () => {
    const nasty = `Robert'); DROP TABLE expenses;-- " \\ % _ \` ?? ?`;
    const record = await created({ name: nasty, description: "' OR '1'='1" });
    const got = (await api('GET', `/v1/expenses/${record.id}`)).body;
    assert.equal(got.name, nasty);
    assert.equal(got.description, "' OR '1'='1");
    assert.equal((await api('GET', '/healthz')).status, 200);
  });

  it('accepts each field at the edges of its rules, in canonical form', async () => {
    const record = await created({
      id: 'Az09._-'.padEnd(64, 'x'),
      name: 'n'.repeat(200),
      email: 'a@b.co',
      link: '',
      estimated_costs: '0007.5',
      submit_date: '02-29-2016',
    });
    assert.equal(record.estimated_costs, '7.5');
    assert.equal(record.link, '');
    const money = await created({ estimated_costs: '9999999999.99', link: 'https://example.com/a?b=c#d' });
    assert.equal(money.estimated_costs, '9999999999.99');
    assert.equal((await created({ estimated_costs: 0 })).estimated_costs, '0');
  });

  const invalid: Array<[string, unknown]> = [
    ['id', ''],
    ['id', 'a'.repeat(65)],
    ['id', 'a b'],
    ['id', 'ü'],
    ['id', '..'],
    ['id', -1],
    ['id', 1.5],
    ['id', 2 ** 53],
    ['id', null],
    ['id', { id: 1 }],
    ['name', ''],
    ['name', 'n'.repeat(201)],
    ['name', 42],
    ['name', '\ud800 lone surrogate'],
    ['email', 'no-at-sign'],
    ['email', 'a@b'],
    ['email', 'a b@c.de'],
    ['category', ['office']],
    ['description', 'd'.repeat(2001)],
    ['link', 'ftp://example.com/file'],
    ['link', 'www.apple.com'],
    ['link', 'javascript:alert(1)'],
    ['link', 'http://'],
    ['estimated_costs', '-1'],
    ['estimated_costs', '7.001'],
    ['estimated_costs', '1e3'],
    ['estimated_costs', '12345678901'],
    ['estimated_costs', ''],
    ['estimated_costs', 0.1 + 0.2],
    ['estimated_costs', -5],
    ['estimated_costs', true],
    ['submit_date', '2016-12-10'],
    ['submit_date', '02-30-2016'],
    ['submit_date', '02-29-2015'],
    ['submit_date', '13-01-2016'],
    ['submit_date', '12-10-0999'],
    ['submit_date', '1-1-2016'],
    ['submit_date', 20161210],
  ];
  for (const [field, value] of invalid) {
    it(`rejects ${field} = ${JSON.stringify(value)?.slice(0, 30)} with a 400 that names the field`, async () => {
      const res = await api('POST', '/v1/expenses', expense({ [field]: value }));
      assert.equal(res.status, 400);
      assert.deepEqual(Object.keys(res.body.fields), [field]);
      assert.match(res.body.error, new RegExp(`^invalid expense: ${field} `));
    });
  }

  it('names every bad and missing field in one 400', async () => {
    const res = await api('POST', '/v1/expenses', { id: 'ok', email: 'nope', estimated_costs: 'lots' });
    assert.equal(res.status, 400);
    assert.deepEqual(Object.keys(res.body.fields).sort(), ['category', 'description', 'email', 'estimated_costs', 'link', 'name', 'submit_date']);
    assert.match(res.body.fields.name, /required/);
  });

  it('rejects fields the client may not set, unknown fields, and __proto__, and stores none of them', async () => {
    for (const key of ['status', 'decision_date', 'amount', '__proto__', 'constructor']) {
      const fields = expense();
      const res = await api('POST', '/v1/expenses', withKey(key, fields));
      assert.equal(res.status, 400, key);
      assert.deepEqual(Object.keys(res.body.fields), [key]);
      assert.equal((await api('GET', `/v1/expenses/${fields.id}`)).status, 404, key);
    }
  });

  it('is not polluted by __proto__ or constructor: refused on POST and PUT, and ordinary requests go on as before', async () => {
    const record = await created();
    for (const key of ['__proto__', 'constructor']) {
      const post = await api('POST', '/v1/expenses', withKey(key, expense()));
      assert.deepEqual([post.status, Object.keys(post.body.fields)], [400, [key]], `POST ${key}`);
      const put = await api('PUT', `/v1/expenses/${record.id}`, withKey(key, { name: 'changed' }));
      assert.deepEqual([put.status, Object.keys(put.body.fields)], [400, [key]], `PUT ${key}`);
    }
    assert.deepEqual((await api('GET', `/v1/expenses/${record.id}`)).body, record);
    const later = await created();
    assert.deepEqual(Object.keys(later).sort(), [...FIELDS].sort());
    // An answer carries only its own properties, so a polluted prototype in
    // the server would not show over HTTP: the server's own parse and check
    // of the same bodies run here too, where it would.
    for (const key of ['__proto__', 'constructor']) {
      assert.throws(() => checkFields(JSON.parse(withKey(key, expense())), ['id', ...EDITABLE], true), Invalid);
    }
    assert.equal('polluted' in {}, false);
  });

  it('answers 400 for a body that is not JSON, not an object, or not UTF-8', async () => {
    const bad: Array<[string | Uint8Array, RegExp]> = [
      ['{"id": "1",', /not valid JSON/],
      ['', /not valid JSON/],
      ['[1, 2]', /must be a JSON object, got an array/],
      ['"text"', /must be a JSON object/],
      ['null', /must be a JSON object/],
      [new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]), /not valid UTF-8/],
    ];
    for (const [body, message] of bad) {
      const res = await api('POST', '/v1/expenses', body);
      assert.equal(res.status, 400);
      assert.match(res.body.error, message);
    }
  });

  it('answers 415 when the body is declared as something other than JSON, or not UTF-8', async () => {
    for (const type of ['application/xml', 'multipart/form-data; boundary=x', 'application/json; charset=latin1']) {
      const body = expense();
      const res = await api('POST', '/v1/expenses', JSON.stringify(body), { 'content-type': type });
      assert.equal(res.status, 415, type);
      assert.match(res.body.error, /application\/json|UTF-8/);
      assert.equal((await api('GET', `/v1/expenses/${body.id}`)).status, 404);
    }
    assert.equal((await api('POST', '/v1/expenses', expense(), { 'content-type': 'Application/JSON; charset="UTF-8"' })).status, 201);
  });

  it('answers 413 for a body over 64 KiB', async () => {
    const res = await api('POST', '/v1/expenses', expense({ description: 'x'.repeat(70_000) }));
    assert.equal(res.status, 413);
    assert.equal(res.body.error, 'the body of POST /v1/expenses is over 65536 bytes, the most a shard reads');
  });

  it('names what was too large: a cluster map over 64 KiB is refused as the body of PUT /cluster/map, not as an expense', async () => {
    const nodes = Array.from({ length: 2000 }, (_, i) => ({ name: `node-${i}.invalid:1000`, shard: `shard-${i}` }));
    const res = await api('PUT', '/cluster/map', { epoch: 1, nodes, replicas: 1 });
    assert.equal(res.status, 413);
    assert.equal(res.body.error, 'the body of PUT /cluster/map is over 65536 bytes, the most a shard reads');
  });

  it('reads a body sent in chunks, with no Content-Length', async () => {
    const text = JSON.stringify(expense());
    const res = await raw('POST', '/v1/expenses', { 'content-type': 'application/json' }, [text.slice(0, 40), text.slice(40)]);
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.deepEqual((await api('GET', `/v1/expenses/${res.body.id}`)).body, res.body);
  });

  it('answers 413 for an oversized body sent without a Content-Length', async () => {
    const res = await raw('POST', '/v1/expenses', { 'content-type': 'application/json' }, Array(20).fill('x'.repeat(8192)));
    assert.equal(res.status, 413);
    assert.match(res.body.error, /over 65536 bytes/);
  });
});

describe('GET /v1/expenses/{id}', () => {
  it('answers 200 with the record', async () => {
    const record = await created();
    const res = await api('GET', `/v1/expenses/${record.id}`);
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, record);
  });

  it('answers 404 for an id that is not stored', async () => {
    const res = await api('GET', '/v1/expenses/never-stored');
    assert.equal(res.status, 404);
    assert.equal(res.body.error, 'no expense with id "never-stored"');
  });

  it('answers 400 for an id that cannot exist', async () => {
    for (const path of ['/v1/expenses/a%20b', `/v1/expenses/${'x'.repeat(65)}`, '/v1/expenses/..', '/v1/expenses/%2e%2e', '/v1/expenses/.']) {
      const res = await raw('GET', path, {});
      assert.equal(res.status, 400, path);
      assert.match(res.body.error, /the id in the path must be/);
    }
  });

  it('reads and ignores a body on GET and DELETE, and answers 413 for one over 64 KiB', async () => {
    const record = await created();
    const plain = await raw('GET', `/v1/expenses/${record.id}`, {});
    const withBody = await raw('GET', `/v1/expenses/${record.id}`, { 'content-length': 13 }, ['{"id": "zzz"}']);
    assert.deepEqual(withBody, plain);
    assert.equal(plain.status, 200);
    const big = 'x'.repeat(70_000);
    const tooBig = await raw('GET', `/v1/expenses/${record.id}`, { 'content-length': big.length }, [big]);
    assert.equal(tooBig.status, 413);
    assert.equal((await raw('DELETE', `/v1/expenses/${record.id}`, { 'content-length': big.length }, [big])).status, 413);
    assert.equal((await raw('DELETE', `/v1/expenses/${record.id}`, { 'content-length': 2 }, ['{}'])).status, 204);
    assert.equal((await raw('GET', `/v1/expenses/${record.id}`, {})).status, 404);
  });
});

describe('PUT /v1/expenses/{id}', () => {
  it('changes the given fields and answers 202 with the whole record', async () => {
    const record = await created();
    const res = await api('PUT', `/v1/expenses/${record.id}`, { estimated_costs: 99.9, submit_date: '01-31-2017' });
    assert.equal(res.status, 202);
    assert.deepEqual(res.body, { ...record, estimated_costs: '99.9', submit_date: '01-31-2017' });
    assert.deepEqual((await api('GET', `/v1/expenses/${record.id}`)).body, res.body);
  });

  it('accepts a PUT that changes nothing', async () => {
    const record = await created();
    const res = await api('PUT', `/v1/expenses/${record.id}`, { name: record.name });
    assert.equal(res.status, 202);
    assert.deepEqual(res.body, record);
  });

  it('rejects an invalid update with 400 and leaves the record as it was', async () => {
    const record = await created();
    for (const body of [{}, { id: 'other' }, { status: 'approved' }, { name: 'fine', email: 'broken' }, { nope: 1 }]) {
      const res = await api('PUT', `/v1/expenses/${record.id}`, body);
      assert.equal(res.status, 400, JSON.stringify(body));
    }
    assert.deepEqual((await api('GET', `/v1/expenses/${record.id}`)).body, record);
  });

  it('answers 404 for an id that is not stored', async () => {
    assert.equal((await api('PUT', '/v1/expenses/never-stored', { name: 'x' })).status, 404);
  });

  it('answers 413 and 415 as POST does', async () => {
    const record = await created();
    assert.equal((await api('PUT', `/v1/expenses/${record.id}`, { description: 'x'.repeat(70_000) })).status, 413);
    assert.equal((await api('PUT', `/v1/expenses/${record.id}`, '{"name":"x"}', { 'content-type': 'application/xml' })).status, 415);
    assert.deepEqual((await api('GET', `/v1/expenses/${record.id}`)).body, record);
  });

  it('answers each of 30 concurrent PUTs with the record and the ETag that this PUT wrote', async () => {
    const record = await created();
    const path = `/v1/expenses/${record.id}`;
    const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => api('PUT', path, { name: `writer ${i}` })));
    answers.forEach((answer, i) => {
      assert.equal(answer.status, 202, JSON.stringify(answer.body));
      assert.deepEqual(answer.body, { ...record, name: `writer ${i}` }, 'the record this PUT wrote, not a later one');
    });
    const tags = answers.map((answer) => answer.headers.get('etag'));
    assert.equal(new Set(tags).size, answers.length, 'each PUT wrote a version of its own');
    const now = await api('GET', path);
    const last = answers.find((answer) => answer.headers.get('etag') === now.headers.get('etag'));
    assert.ok(last !== undefined, 'the stored version is one that a PUT answered with');
    assert.deepEqual(now.body, last.body);
  });
});

describe('DELETE /v1/expenses/{id}', () => {
  it('answers 204 with no body, after which the record is gone', async () => {
    const record = await created();
    const res = await api('DELETE', `/v1/expenses/${record.id}`);
    assert.equal(res.status, 204);
    assert.equal(res.body, undefined);
    assert.equal((await api('GET', `/v1/expenses/${record.id}`)).status, 404);
    assert.equal((await api('DELETE', `/v1/expenses/${record.id}`)).status, 404);
  });
});

describe('GET /v1/expenses (list)', () => {
  it('pages through 250 records in id order with after and limit', async () => {
    const prefix = `page-${process.pid}-`;
    const ids = Array.from({ length: 250 }, (_, i) => `${prefix}${String(i).padStart(3, '0')}`);
    await Promise.all(ids.map((id) => created({ id })));

    const seen: string[] = [];
    let after = `${prefix}`;
    let pages = 0;
    for (;;) {
      const res = await api('GET', `/v1/expenses?after=${after}&limit=100`);
      assert.equal(res.status, 200);
      pages++;
      const mine = res.body.expenses.map((e: { id: string }) => e.id).filter((id: string) => id.startsWith(prefix));
      seen.push(...mine);
      if (res.body.next === null || mine.length < res.body.expenses.length) break;
      assert.equal(res.body.next, res.body.expenses.at(-1).id);
      after = res.body.next;
    }
    assert.deepEqual(seen, ids);
    assert.equal(pages, 3);
  });

  it('ends with next: null on the last page, and defaults to 100 per page', async () => {
    // 101 records that sort after every other test's: a default page is full, and they end the list.
    const ids = Array.from({ length: 101 }, (_, i) => `zz-${process.pid}-${String(i).padStart(3, '0')}`);
    await Promise.all(ids.map((id) => created({ id })));
    const res = await api('GET', '/v1/expenses');
    assert.equal(res.status, 200);
    assert.equal(res.body.expenses.length, 100);
    assert.equal(res.body.next, res.body.expenses[99].id);
    const last = await api('GET', `/v1/expenses?after=${ids[99]}&limit=1000`);
    assert.deepEqual([last.body.expenses.map((e: { id: string }) => e.id), last.body.next], [[ids[100]], null]);
    const beyond = await api('GET', `/v1/expenses?after=${ids[100]}`);
    assert.deepEqual(beyond.body, { expenses: [], versions: {}, next: null });
  });

  it('answers 400 for a bad limit, a bad after, or an unknown parameter', async () => {
    for (const query of ['limit=0', 'limit=1001', 'limit=ten', 'limit=-5', 'limit=1.5', 'after=a%20b', 'offset=10']) {
      const res = await api('GET', `/v1/expenses?${query}`);
      assert.equal(res.status, 400, query);
      assert.equal(typeof res.body.error, 'string');
    }
  });
});

describe("the assignment's dialect", () => {
  it('reads a POST or PUT body as JSON when it is declared as nothing, text/plain, a form, or a +json type', async () => {
    for (const type of [undefined, 'text/plain', 'application/x-www-form-urlencoded', 'application/vnd.api+json']) {
      const body = expense({ estimated_costs: '650.5' });
      const text = JSON.stringify(body);
      const headers = { 'content-length': Buffer.byteLength(text), ...(type && { 'content-type': type }) };
      const post = await raw('POST', '/v1/expenses', headers, [text]);
      assert.equal(post.status, 201, String(type));
      const change = JSON.stringify({ name: `sent as ${type}` });
      const put = await raw('PUT', `/v1/expenses/${body.id}`, { 'content-length': Buffer.byteLength(change), ...(type && { 'content-type': type }) }, [change]);
      assert.equal(put.status, 202, String(type));
      const stored = await api('GET', `/v1/expenses/${body.id}`);
      assert.deepEqual(stored.body, { ...body, name: `sent as ${type}`, status: 'pending', decision_date: '' });
    }
  });

  it('says which type was declared when such a body is not JSON', async () => {
    const res = await raw('POST', '/v1/expenses', { 'content-type': 'application/x-www-form-urlencoded', 'content-length': 7 }, ['id=1&a=']);
    assert.equal(res.status, 400);
    assert.match(res.body.error, /^the body is not valid JSON \(it was sent as application\/x-www-form-urlencoded, and is read as JSON all the same\): /);
  });

  it('writes amounts in their shortest exact form everywhere, and keeps two decimals in MySQL', async () => {
    const table: Array<[unknown, string, string]> = [
      ['700', '700', '700.00'],
      ['700.00', '700', '700.00'],
      [700, '700', '700.00'],
      ['12.50', '12.5', '12.50'],
      [12.5, '12.5', '12.50'],
      ['0.05', '0.05', '0.05'],
      ['0.00', '0', '0.00'],
      ['0', '0', '0.00'],
      ['0010.10', '10.1', '10.10'],
      ['9999999999.99', '9999999999.99', '9999999999.99'],
    ];
    for (const [sent, shown, held] of table) {
      const body = expense({ estimated_costs: '1' });
      const post = await api('POST', '/v1/expenses', { ...body, estimated_costs: sent });
      assert.equal(post.body.estimated_costs, shown, `POST ${sent}`);
      const put = await api('PUT', `/v1/expenses/${body.id}`, { estimated_costs: sent });
      assert.equal(put.body.estimated_costs, shown, `PUT ${sent}`);
      const get = await api('GET', `/v1/expenses/${body.id}`);
      assert.deepEqual(get.body, post.body, `GET ${sent}`);
      const page = await api('GET', `/v1/expenses?after=${body.id.slice(0, -1)}&limit=1000`);
      assert.equal(page.body.expenses.find((e: { id: string }) => e.id === body.id).estimated_costs, shown);
      const [[inMysql]] = (await shards.sql(1, `SELECT estimated_costs FROM expenses WHERE id = '${body.id}'`)) as [[string]];
      assert.equal(inMysql, held, `MySQL holds ${sent}`);
    }
  });

  it('explains why a POST needs an id', async () => {
    const { id: _, ...noId } = expense();
    const res = await api('POST', '/v1/expenses', noId);
    assert.equal(res.status, 400);
    assert.equal(res.body.fields.id, 'is required: the client chooses the id, because the id decides which shard stores the expense');
  });

  it("replays the assignment's example requests, byte for byte and with no Content-Type", async () => {
    const id = `spec${process.pid}`;
    const post = `{
    "id" : "${id}",
    "name" : "Foo Bar",
    "email" : "foo@bar.com",
    "category" : "office supplies",
    "description" : "iPad for office use",
    "link" : "http://www.apple.com/shop/buy-ipad/ipad-pro",
    "estimated_costs" : "700",
    "submit_date" : "12-10-2016"
}`;
    const expected = {
      id, name: 'Foo Bar', email: 'foo@bar.com', category: 'office supplies', description: 'iPad for office use',
      link: 'http://www.apple.com/shop/buy-ipad/ipad-pro', estimated_costs: '700', submit_date: '12-10-2016', status: 'pending', decision_date: '',
    };
    const send = (method: string, path: string, body?: string) => raw(method, path, body === undefined ? {} : { 'content-length': Buffer.byteLength(body) }, body === undefined ? [] : [body]);
    assert.deepEqual(await send('POST', '/v1/expenses', post), { status: 201, body: expected });
    assert.deepEqual(await send('GET', `/v1/expenses/${id}`), { status: 200, body: expected });
    assert.deepEqual(await send('PUT', `/v1/expenses/${id}`, '{"estimated_costs" : "800"}'), { status: 202, body: { ...expected, estimated_costs: '800' } });
    assert.deepEqual(await send('GET', `/v1/expenses/${id}`), { status: 200, body: { ...expected, estimated_costs: '800' } });
    assert.deepEqual(await send('DELETE', `/v1/expenses/${id}`), { status: 204, body: undefined });
    assert.equal((await send('GET', `/v1/expenses/${id}`)).status, 404);
  });
});

describe('versions and conditional requests', () => {
  it('gives every answer a strong ETag, changed by every write and equal to what GET says', async () => {
    const record = await created();
    const post = await api('GET', `/v1/expenses/${record.id}`);
    assert.match(post.headers.get('etag')!, /^"[0-9a-f]{16}"$/);
    const put = await api('PUT', `/v1/expenses/${record.id}`, { name: 'Bar' });
    assert.equal(put.status, 202);
    assert.notEqual(put.headers.get('etag'), post.headers.get('etag'));
    const same = await api('PUT', `/v1/expenses/${record.id}`, { name: 'Bar' });
    assert.notEqual(same.headers.get('etag'), put.headers.get('etag'), 'a write that changes no field is still a new version');
    assert.equal((await api('GET', `/v1/expenses/${record.id}`)).headers.get('etag'), same.headers.get('etag'));
    const list = await api('GET', `/v1/expenses?after=${record.id.slice(0, -1)}&limit=1000`);
    assert.equal(`"${list.body.versions[record.id]}"`, same.headers.get('etag'));
  });

  it('PUT with If-Match: the current ETag writes, a stale one gets 412 with the current ETag and changes nothing', async () => {
    const record = await created();
    const v1 = (await api('GET', `/v1/expenses/${record.id}`)).headers.get('etag')!;
    const ok = await api('PUT', `/v1/expenses/${record.id}`, { name: 'First' }, { 'if-match': v1 });
    assert.equal(ok.status, 202);
    const v2 = ok.headers.get('etag')!;
    const stale = await api('PUT', `/v1/expenses/${record.id}`, { name: 'Second' }, { 'if-match': v1 });
    assert.equal(stale.status, 412);
    assert.equal(stale.headers.get('etag'), v2);
    assert.match(stale.body.error, /is at version "[0-9a-f]{16}", not the one this request expects/);
    const now = await api('GET', `/v1/expenses/${record.id}`);
    assert.equal(now.body.name, 'First');
    assert.equal(now.headers.get('etag'), v2);
    assert.equal((await api('PUT', `/v1/expenses/${record.id}`, { name: 'Third' }, { 'if-match': `${v1}, ${v2}` })).status, 202);
    assert.equal((await api('PUT', `/v1/expenses/${record.id}`, { name: 'Any' }, { 'if-match': '*' })).status, 202);
  });

  it('DELETE with If-Match: a stale ETag gets 412 and keeps the record, the current one deletes it', async () => {
    const record = await created();
    const v1 = (await api('GET', `/v1/expenses/${record.id}`)).headers.get('etag')!;
    const v2 = (await api('PUT', `/v1/expenses/${record.id}`, { name: 'Changed' })).headers.get('etag')!;
    const stale = await api('DELETE', `/v1/expenses/${record.id}`, undefined, { 'if-match': v1 });
    assert.equal(stale.status, 412);
    assert.equal(stale.headers.get('etag'), v2);
    assert.equal((await api('GET', `/v1/expenses/${record.id}`)).body.name, 'Changed');
    assert.equal((await api('DELETE', `/v1/expenses/${record.id}`, undefined, { 'if-match': v2 })).status, 204);
    assert.equal((await api('GET', `/v1/expenses/${record.id}`)).status, 404);
    assert.equal((await api('DELETE', `/v1/expenses/${record.id}`, undefined, { 'if-match': v2 })).status, 404, 'no record: 404, whatever the condition');
  });

  it('If-None-Match: * creates only what is absent: 201, then 412 with the ETag of what is there', async () => {
    const body = expense();
    const first = await api('POST', '/v1/expenses', body, { 'if-none-match': '*' });
    assert.equal(first.status, 201);
    const again = await api('POST', '/v1/expenses', { ...body, name: 'Other' }, { 'if-none-match': '*' });
    assert.equal(again.status, 412);
    assert.equal(again.headers.get('etag'), first.headers.get('etag'));
    for (const [method, payload] of [['PUT', { name: 'Other' }], ['DELETE', undefined]] as const) {
      const res = await api(method, `/v1/expenses/${body.id}`, payload, { 'if-none-match': '*' });
      assert.equal(res.status, 412, method);
    }
    const now = await api('GET', `/v1/expenses/${body.id}`);
    assert.equal(now.body.name, body.name);
    assert.equal(now.headers.get('etag'), first.headers.get('etag'));
  });

  it('never matches a weak ETag, and answers 400 for a malformed condition', async () => {
    const record = await created();
    const tag = (await api('GET', `/v1/expenses/${record.id}`)).headers.get('etag')!;
    assert.equal((await api('PUT', `/v1/expenses/${record.id}`, { name: 'x' }, { 'if-match': `W/${tag}` })).status, 412);
    const headers: Array<Record<string, string>> = [{ 'if-match': 'abc' }, { 'if-match': '"short"' }, { 'if-none-match': tag }];
    for (const header of headers) {
      const res = await api('DELETE', `/v1/expenses/${record.id}`, undefined, header);
      assert.equal(res.status, 400, JSON.stringify(header));
    }
    assert.equal((await api('GET', `/v1/expenses/${record.id}`)).status, 200);
  });

  it('evaluates If-Match first (RFC 9110 §13.2.2): a stale one is a 412, whatever If-None-Match says', async () => {
    const record = await created();
    const stale = (await api('GET', `/v1/expenses/${record.id}`)).headers.get('etag')!;
    const current = (await api('PUT', `/v1/expenses/${record.id}`, { name: 'Changed' })).headers.get('etag')!;
    // An If-None-Match that this server does not support: If-Match has already failed, so it is never looked at.
    const conditions = { 'if-match': stale, 'if-none-match': '"0123456789abcdef"' };
    for (const [method, payload] of [['PUT', { name: 'Other' }], ['DELETE', undefined]] as const) {
      const res = await api(method, `/v1/expenses/${record.id}`, payload, conditions);
      assert.equal(res.status, 412, method);
      assert.equal(res.headers.get('etag'), current, method);
    }
    const now = await api('GET', `/v1/expenses/${record.id}`);
    assert.equal(now.body.name, 'Changed');
    assert.equal(now.headers.get('etag'), current);
  });

  it('evaluates If-None-Match once If-Match holds: the current ETag with If-None-Match: * is a 412', async () => {
    const record = await created();
    const current = (await api('GET', `/v1/expenses/${record.id}`)).headers.get('etag')!;
    const conditions = { 'if-match': current, 'if-none-match': '*' };
    for (const [method, payload] of [['PUT', { name: 'Other' }], ['DELETE', undefined]] as const) {
      const res = await api(method, `/v1/expenses/${record.id}`, payload, conditions);
      assert.equal(res.status, 412, method);
      assert.equal(res.headers.get('etag'), current, method);
    }
    const now = await api('GET', `/v1/expenses/${record.id}`);
    assert.deepEqual(now.body, record);
    assert.equal(now.headers.get('etag'), current);
  });

  it('answers If-Match on a POST with 412, and stores nothing', async () => {
    const body = expense();
    const res = await api('POST', '/v1/expenses', body, { 'if-match': '"0123456789abcdef"' });
    assert.equal(res.status, 412);
    assert.match(res.body.error, /If-Match on a POST can never hold: a POST creates a record/);
    assert.equal((await api('GET', `/v1/expenses/${body.id}`)).status, 404);
  });
});

describe('routing', () => {
  it('answers 404 with a JSON error for an unknown path', async () => {
    for (const path of ['/nothing', '/v1', '/v1/expenses/a/b', '/v2/expenses', '/v1/expenses/']) {
      const res = await api('GET', path);
      assert.equal(res.status, 404, path);
      assert.match(res.body.error, /no route/);
    }
  });

  it('answers 405 with Allow for a known path and the wrong method', async () => {
    const cases: Array<[string, string, string]> = [
      ['DELETE', '/v1/expenses', 'GET, HEAD, POST'],
      ['POST', '/v1/expenses/x', 'GET, HEAD, PUT, DELETE'],
      ['PUT', '/healthz', 'GET, HEAD'],
    ];
    for (const [method, path, allow] of cases) {
      const res = await api(method, path);
      assert.equal(res.status, 405);
      assert.equal(res.headers.get('allow'), allow);
      assert.match(res.body.error, new RegExp(`${method} is not allowed`));
    }
  });

  it('answers HEAD wherever GET works: the same head, and no body', async () => {
    const record = await created();
    for (const path of [`/v1/expenses/${record.id}`, '/v1/expenses?limit=1', '/cluster/map', '/healthz']) {
      const get = await api('GET', path);
      // On the wire, so that a body sent after the head would show. Not end():
      // with our side closed, the shard answered nothing at all.
      const socket = connect(Number(new URL(server.url).port), '127.0.0.1');
      socket.write(`HEAD ${path} HTTP/1.1\r\nHost: shard\r\nConnection: close\r\n\r\n`);
      let text = '';
      for await (const chunk of socket) text += chunk;
      const [head, after] = text.split('\r\n\r\n');
      assert.match(head!, /^HTTP\/1\.1 200 OK\r\n/, path);
      assert.equal(after, '', `${path}: no body`);
      assert.match(head!, /\r\nContent-Type: application\/json; charset=utf-8\r\n/i, path);
      if (!path.startsWith('/healthz')) {
        // The health answer changes between two requests; the others do not.
        assert.match(head!, new RegExp(`\\r\\nContent-Length: ${get.headers.get('content-length')}\\r\\n`, 'i'), path);
      }
      if (get.headers.get('etag') !== null) assert.match(head!, new RegExp(`\\r\\nETag: ${get.headers.get('etag')}\\r\\n`, 'i'), path);
    }
  });

  it('answers 200 on /healthz while the database answers', async () => {
    const res = await api('GET', '/healthz');
    assert.equal(res.status, 200);
    assert.equal(res.body.status, 'ok');
    assert.match(res.body.shard, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  });

  it('answers a 500 without internals when a query fails unexpectedly', async () => {
    await shards.sql(1, 'RENAME TABLE expenses TO expenses_away');
    try {
      const res = await api('GET', '/v1/expenses/x');
      assert.equal(res.status, 500);
      assert.deepEqual(res.body, { error: 'internal server error' });
    } finally {
      await shards.sql(1, 'RENAME TABLE expenses_away TO expenses');
    }
    assert.equal((await api('GET', '/v1/expenses/x')).status, 404);
  });

  it('answers a 500 when an answer cannot be sent, and serves the next request', async () => {
    const record = await created();
    // A version with a control character in it: its ETag is not a legal header value.
    await shards.sql(1, `UPDATE expenses SET version = CONCAT('01234567', CHAR(1), '9abcdef') WHERE id = '${record.id}'`);
    try {
      const res = await api('GET', `/v1/expenses/${record.id}`);
      assert.equal(res.status, 500);
      assert.deepEqual(res.body, { error: 'internal server error' });
      assert.match(server.output(), new RegExp(`internal error: GET /v1/expenses/${record.id}: the answer could not be sent`));
    } finally {
      await shards.sql(1, `DELETE FROM expenses WHERE id = '${record.id}'`);
    }
    assert.equal((await api('GET', '/healthz')).status, 200);
    assert.equal((await api('POST', '/v1/expenses', expense())).status, 201);
  });
});

describe('when MySQL goes away', () => {
  it('answers 503 within 15 s, not a hang, then serves again once MySQL is back, with no restart', async () => {
    const record = await created();
    await shards.stopMysql(1);
    try {
      const started = Date.now();
      const res = await api('GET', `/v1/expenses/${record.id}`);
      assert.equal(res.status, 503);
      assert.match(res.body.error, /database is unavailable/);
      // A liveness promise, not a speed: the connect and query timeouts are 2 s and 5 s.
      assert.ok(Date.now() - started < 15_000, `took ${Date.now() - started} ms`);
      assert.equal((await api('GET', '/healthz')).status, 503);
      assert.equal((await api('POST', '/v1/expenses', expense())).status, 503);
    } finally {
      assert.equal((await shards.script('1')).code, 0);
    }
    assert.deepEqual((await api('GET', `/v1/expenses/${record.id}`)).body, record);
    assert.equal((await api('GET', '/healthz')).status, 200);
  });
});

describe('lifecycle', () => {
  it('finishes a request in flight on SIGTERM, then exits 0', async () => {
    const own = await startServer(await shards.databaseEnv(1));
    const body = JSON.stringify(expense());
    const answer = new Promise<number>((resolve, reject) => {
      const headers = { 'content-type': 'application/json', 'content-length': body.length, expect: '100-continue' };
      const req = request(`${own.url}/v1/expenses`, { method: 'POST', headers }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      // 100 Continue: the server has read the headers, so the request is in flight.
      // Only then the signal, and only once it has been handled, the body.
      req.on('continue', async () => {
        own.child.kill('SIGTERM');
        while (!/SIGTERM: shutting down/.test(own.output())) await new Promise((r) => setTimeout(r, 10));
        req.end(body);
      });
    });
    assert.equal(await answer, 201);
    assert.equal(await own.exited, 0);
  });


  it('keeps a record through a restart of both the server and MariaDB', async () => {
    const record = await created({ name: 'durable 💾' });
    assert.equal(await server.stop(), 0);
    assert.equal((await shards.script('stop')).code, 0);
    assert.equal((await shards.script('1')).code, 0);
    server = await startServer(await shards.databaseEnv(1));
    assert.deepEqual((await api('GET', `/v1/expenses/${record.id}`)).body, record);
  });
});
