// The cluster secret (issue 21): the operator's routes, which move records
// and change the cluster's shape, answer only to it; it never shows in a log,
// a command line or an answer; and a shard that other machines can reach does
// not start without it.

import assert from 'node:assert/strict';
import { chmod, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sign, signatureProblem, WINDOW_MS } from '../../api/signing.ts';
import { run, runNode, startServer, startShards, type Shards } from '../shards.ts';

let shards: Shards;
let node: string;
let secret: string;
let other: { name: string; shard: string };
// Records stored before the reshard below began: one to attack, one to control.
const victim = { id: 'victim', name: 'Victim', email: 'v@example.com', category: 'travel', description: '', link: '', estimated_costs: '10', submit_date: '01-01-2020' };
const control = { ...victim, id: 'control' };

before(async () => {
  shards = await startShards(1);
  node = shards.nodes[0]!;
  secret = (await readFile(shards.secretFile, 'utf8')).trim();
  for (const record of [victim, control]) assert.equal((await call('POST', '/v1/expenses', record)).status, 201);
  // A reshard under way that moves every id from this shard to another node,
  // so that every move step can do what it does.
  const { map } = (await call('GET', '/cluster/map')).body;
  other = { name: 'elsewhere.invalid:1000', shard: 'elsewhere' };
  const by = { host: 'test', machine: '', pid: process.pid, started: new Date().toISOString() };
  const moving = { ...map, epoch: map.epoch + 1, moving: { nodes: [other], replicas: 1, by, leaseMs: 600_000 } };
  const res = await call('PUT', '/cluster/map', moving, { ...bearer(secret), 'if-match': `"${map.epoch}"` });
  assert.equal(res.status, 200, JSON.stringify(res.body));
});

after(async () => {
  await shards?.stop();
});

type Answer = { status: number; headers: Headers; text: string; body: any };

async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}, base = `http://${node}`): Promise<Answer> {
  const res = await fetch(base + path, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, body: text === '' ? undefined : JSON.parse(text) };
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
/** A request's Authorization as the operator's tools sign it (api/signing.ts), under `key`, at `nowMs`. */
const signed = (key: string, method: string, path: string, body: unknown, nowMs = Date.now(), signedBody = body) => ({
  authorization: sign(key, { method, host: node, path, body: signedBody === undefined ? '' : JSON.stringify(signedBody) }, nowMs),
});

/** Each operator route, with a body it would accept. */
const ROUTES: Array<[string, string, unknown]> = [
  ['PUT', '/cluster/map', { epoch: 9, nodes: [{ name: 'a.invalid:1000', shard: 'a' }], replicas: 1 }],
  ['PUT', '/v1/expenses/x/copy', { ...victim, id: 'x', status: 'approved', decision_date: '', version: '0123456789abcdef' }],
  ['DELETE', '/v1/expenses/x/copy', undefined],
  ['POST', '/v1/expenses/x/handoff', undefined],
  ['POST', '/v1/expenses/x/adopt', undefined],
];

describe('the cluster secret', () => {
  for (const [method, path, body] of ROUTES) {
    it(`${method} ${path}: 401 with WWW-Authenticate and a JSON error without the secret's proof or with a wrong one, and reached with a signature or the secret`, async () => {
      const wrong: Array<[string, Record<string, string>]> = [
        ['no Authorization', {}],
        ['another secret', bearer('0'.repeat(64))],
        ['the secret with one character more', bearer(`${secret}0`)],
        ['the secret under another scheme', { authorization: `Basic ${secret}` }],
        ['signed under another secret', signed('0'.repeat(64), method, path, body)],
        // Far outside the window, so that no delay of the request can bring
        // it back in: the edge itself is the test after this loop's.
        ['signed 90 s ago', signed(secret, method, path, body, Date.now() - 90_000)],
        ['signed for 90 s ahead', signed(secret, method, path, body, Date.now() + 90_000)],
        ['signed for another path', signed(secret, method, `${path}x`, body)],
        ['signed for another body', signed(secret, method, path, body, Date.now(), { other: true })],
      ];
      for (const [what, headers] of wrong) {
        const res = await call(method, path, body, headers);
        assert.equal(res.status, 401, what);
        assert.equal(res.headers.get('www-authenticate'), 'CH-HMAC, Bearer', what);
        assert.match(res.headers.get('content-type')!, /^application\/json/, what);
        assert.match(res.body.error, /is an operator's route: sign it with the cluster secret \(Authorization: CH-HMAC, api\/signing\.ts\), or by hand send Authorization: Bearer <the cluster secret>/, what);
        assert.equal(res.text.includes(secret), false, what);
      }
      // What the route itself then says (a missing precondition, say) does not matter here: only that it was reached.
      for (const headers of [signed(secret, method, path, body), signed(secret, method, path, body, Date.now() - 30_000), bearer(secret)]) {
        const reached = await call(method, path, body, headers);
        assert.notEqual(reached.status, 401, JSON.stringify(reached.body));
      }
    });
  }

  it('takes a signature made up to 60 s either side of the shard\'s clock, and none beyond', () => {
    // Both clocks are given, so the edge is exact: signatures carry whole seconds.
    const request = { method: 'POST', host: '127.0.0.1:3000', path: '/v1/expenses/x/adopt', body: '' };
    const at = 1_800_000_000_000;
    const header = sign(secret, request, at);
    for (const skew of [-WINDOW_MS, 0, WINDOW_MS]) assert.equal(signatureProblem(secret, request, header, at + skew), undefined, `${skew} ms`);
    for (const skew of [-WINDOW_MS - 1, WINDOW_MS + 1]) {
      assert.match(signatureProblem(secret, request, header, at + skew) ?? '', /over 60 s from this shard's clock \(\d+\): check both clocks/, `${skew} ms`);
    }
  });

  it('takes the scheme in any case, as RFC 9110 §11.1 says: bearer and BEARER are Bearer', async () => {
    for (const scheme of ['bearer', 'BEARER', 'bEaReR']) {
      const res = await call('DELETE', '/v1/expenses/x/copy', undefined, { authorization: `${scheme} ${secret}` });
      assert.notEqual(res.status, 401, `${scheme}: ${JSON.stringify(res.body)}`);
    }
  });

  it('needs no secret to read the map or the records', async () => {
    assert.equal((await call('GET', '/cluster/map')).status, 200);
    assert.equal((await call('GET', `/v1/expenses/${victim.id}`)).status, 200);
  });

  it('keeps a record from being approved through the move steps with a wrong secret: nothing changes', async () => {
    // With the secret, handing a record off, copying it back approved and
    // adopting the copy approved it, until a copy was taken only on the new
    // owner: now the copy back to the old owner is refused even with it, and
    // there is no copy to adopt.
    const approve = async (id: string, headers: Record<string, string>) => {
      const version = (await call('GET', `/v1/expenses/${id}`)).headers.get('etag')!;
      const steps = { ...headers, 'cluster-epoch': String((await call('GET', '/cluster/map')).body.map.epoch) };
      const approved = { ...(await call('GET', `/v1/expenses/${id}`)).body, status: 'approved', decision_date: '01-02-2020', version: 'aaaaaaaaaaaaaaaa' };
      return [
        await call('POST', `/v1/expenses/${id}/handoff`, undefined, { ...steps, 'if-match': version }),
        await call('PUT', `/v1/expenses/${id}/copy`, approved, { ...steps, 'if-none-match': '*' }),
        await call('POST', `/v1/expenses/${id}/adopt`, undefined, { ...steps, 'if-match': '"aaaaaaaaaaaaaaaa"' }),
      ].map((res) => res.status);
    };

    const before = await call('GET', `/v1/expenses/${victim.id}`);
    assert.deepEqual(await approve(victim.id, bearer('0'.repeat(64))), [401, 401, 401]);
    const after = await call('GET', `/v1/expenses/${victim.id}`);
    assert.equal(after.status, 200);
    assert.equal(after.text, before.text);
    assert.equal(after.headers.get('etag'), before.headers.get('etag'));

    assert.deepEqual(await approve(control.id, bearer(secret)), [204, 409, 412]);
    assert.equal((await call('GET', `/v1/expenses/${control.id}`)).status, 421, 'handed off, and not approved here');
  });

  it('shows the secret in no log line, no command line and no 401 answer', async () => {
    // A server of our own on the same database, whose output we hold whole.
    const own = await startServer({ ...(await shards.databaseEnv(1)), CLUSTER_SECRET_FILE: shards.secretFile });
    const base = own.url;
    const refused: string[] = [];
    try {
      for (const [method, path, body] of ROUTES) {
        refused.push((await call(method, path, body, {}, base)).text, (await call(method, path, body, bearer(`${secret}0`), base)).text);
        await call(method, path, body, bearer(secret), base);
      }
      // A request that carries the secret and fails inside the server: the log names it.
      const epoch = String((await call('GET', '/cluster/map', undefined, {}, base)).body.map.epoch);
      await shards.sql(1, 'RENAME TABLE expenses TO expenses_away');
      try {
        const failed = await call('POST', `/v1/expenses/${victim.id}/handoff`, undefined, { ...bearer(secret), 'cluster-epoch': epoch, 'if-match': '"0123456789abcdef"' }, base);
        assert.equal(failed.status, 500);
      } finally {
        await shards.sql(1, 'RENAME TABLE expenses_away TO expenses');
      }
    } finally {
      await own.stop();
    }
    assert.match(own.output(), /operator routes need the cluster secret/);
    assert.match(own.output(), /internal error: POST \/v1\/expenses\/victim\/handoff/);
    assert.equal(own.output().includes(secret), false, 'in the output of server.ts');
    const log = await readFile(join(shards.dir, 'shard-1', 'server.log'), 'utf8');
    assert.match(log, /listening on/);
    assert.equal(log.includes(secret), false, "in the shard's server.log");
    assert.equal(refused.length, ROUTES.length * 2);
    assert.ok(refused.every((text) => !text.includes(secret)), 'in a 401 answer');
    const ps = await run('ps', ['-eo', 'args=']);
    assert.match(ps.stdout, /server\.ts/);
    assert.equal(ps.stdout.includes(secret), false, 'on a command line');
  });
});

describe('the MySQL password', () => {
  it('is in no running server\'s environment: start-shards.sh passes its file, not the password', async () => {
    const password = (await readFile(join(shards.dir, 'shard-1', 'password'), 'utf8')).trim();
    const environ = await readFile(`/proc/${await shards.pid(1, 'server.pid')}/environ`, 'utf8');
    assert.match(environ, /(^|\0)MYSQL_PASSWORD_FILE=\S+\/shard-1\/password(\0|$)/);
    assert.equal(environ.includes(password), false, 'in /proc/PID/environ');
    assert.equal((await fetch(`http://${shards.nodes[0]}/healthz`)).status, 200, 'and MySQL is reached with it');
  });

  it('refuses a password file that other users may read, and says how to fix it', async () => {
    const { MYSQL_PASSWORD: _, ...db } = await shards.databaseEnv(1);
    const file = join(shards.dir, 'open-password');
    await writeFile(file, 'whatever');
    await chmod(file, 0o640);
    try {
      const server = await run(process.execPath, ['server.ts'], { env: { ...process.env, ...db, PORT: '0', MYSQL_PASSWORD_FILE: file }, timeoutMs: 10_000 });
      assert.equal(server.code, 1);
      assert.match(server.stderr, new RegExp(`the MySQL password in ${file} is open to other users \\(mode 640\\); make it yours alone: chmod 600 ${file}`));
    } finally {
      await rm(file);
    }
  });
});

describe('a shard that other machines can reach', () => {
  const { CLUSTER_SECRET_FILE: _, ...withoutSecret } = process.env;

  it('refuses to start without a secret, and says how to make one', async () => {
    const res = await runNode(['server.ts'], { ...withoutSecret, HOST: '0.0.0.0', PORT: '0' });
    assert.equal(res.code, 1);
    assert.match(res.stderr, /HOST=0\.0\.0\.0 lets other machines reach this shard/);
    assert.match(res.stderr, /CLUSTER_SECRET_FILE=\S+ HOST=0\.0\.0\.0 node server\.ts/);
  });

  it('refuses a secret shorter than 32 characters', async () => {
    const file = join(shards.dir, 'short-secret');
    await writeFile(file, 'too short', { mode: 0o600 });
    try {
      const res = await runNode(['server.ts'], { ...withoutSecret, HOST: '0.0.0.0', PORT: '0', CLUSTER_SECRET_FILE: file });
      assert.equal(res.code, 1);
      assert.match(res.stderr, /the cluster secret in \S+short-secret must be one word of at least 32 characters/);
    } finally {
      await rm(file);
    }
  });

  it('counts all of 127.0.0.0/8 as loopback, 127.1 included: no secret needed there', async () => {
    for (const host of ['127.1', '127.0.0.2']) {
      const server = await startServer({ ...(await shards.databaseEnv(1)), HOST: host, CLUSTER_SECRET_FILE: '' });
      const port = /:(\d+)$/.exec(server.url)?.[1];
      assert.equal((await fetch(`http://${host}:${port}/healthz`)).status, 200, host);
      assert.equal(await server.stop(), 0, host);
    }
  });

  it('refuses a secret file that other users may read, in the shard and in the client, and says how to fix it', async () => {
    const file = join(shards.dir, 'open-secret');
    await writeFile(file, 'f'.repeat(64));
    await chmod(file, 0o644);
    try {
      // Before this rule the shard started, and ran on: kill it rather than hang.
      const server = await run(process.execPath, ['server.ts'], { env: { ...withoutSecret, HOST: '0.0.0.0', PORT: '0', CLUSTER_SECRET_FILE: file }, timeoutMs: 10_000 });
      assert.equal(server.code, 1);
      assert.match(server.stderr, new RegExp(`the cluster secret in ${file} is open to other users \\(mode 644\\); make it yours alone: chmod 600 ${file}`));
      const client = await runNode(['ch_client.ts', 'reshard', '--nodes', 'x.invalid:1000', '--to', 'x.invalid:1000', '--secret-file', file]);
      assert.equal(client.code, 2, client.stderr);
      assert.match(client.stderr, new RegExp(`chmod 600 ${file}`));
    } finally {
      await rm(file);
    }
  });

  it('starts with a secret file', async () => {
    const server = await startServer({ ...(await shards.databaseEnv(1)), HOST: '0.0.0.0', CLUSTER_SECRET_FILE: shards.secretFile });
    const port = /^http:\/\/0\.0\.0\.0:(\d+)$/.exec(server.url)?.[1];
    assert.ok(port !== undefined, server.url);
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
    assert.equal(await server.stop(), 0);
  });
});
