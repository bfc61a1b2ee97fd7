// Bad input is harmless: thousands of malformed requests, each answered with a
// clear 4xx in JSON, with no stored record changed, memory bounded, and the
// server up throughout. And slow or silent clients are cut off on time.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { expenseFor } from '../../ch_client.ts';
import { eachLimit } from '../../client/batch.ts';
import { startShards, type Shards } from '../shards.ts';
import { random } from '../random.ts';

let shards: Shards;
let port: number;

before(async () => {
  shards = await startShards(1);
  port = Number(shards.nodes[0]!.split(':')[1]);
  for (let i = 0; i < 20; i++) {
    const res = await fetch(`http://${shards.nodes[0]}/v1/expenses`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(expenseFor(`keep-${i}`)) });
    assert.equal(res.status, 201);
  }
});

after(async () => {
  await shards?.stop();
});

const post = (body: string | Buffer, headers = '') =>
  Buffer.concat([Buffer.from(`POST /v1/expenses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${headers}\r\n`), Buffer.from(body)]);

/** The kinds of bad request, each a generator of raw bytes. `end` half-closes after writing. */
const kinds: Record<string, (rnd: () => number) => { bytes: Buffer; end?: boolean }> = {
  'random bytes': (rnd) => ({ bytes: Buffer.from(Array.from({ length: 1 + Math.floor(rnd() * 512) }, () => Math.floor(rnd() * 256))), end: true }),
  'truncated JSON': (rnd) => {
    const json = JSON.stringify(expenseFor('t'));
    return { bytes: post(json.slice(0, Math.floor(rnd() * (json.length - 1)))) };
  },
  'JSON nested 10,000 deep': (rnd) => ({ bytes: post(rnd() < 0.5 ? '['.repeat(10_000) + ']'.repeat(10_000) : '{"a":'.repeat(10_000) + '1' + '}'.repeat(10_000)) }),
  'a 1 MB string': () => ({ bytes: post(JSON.stringify({ ...expenseFor('big'), description: 'x'.repeat(1 << 20) })) }),
  'wrong types': (rnd) => {
    const wrong = [null, true, 1.5, -1, [], {}, [1, 2], { id: 1 }, 1e308];
    const body = Object.fromEntries(Object.keys(expenseFor('w')).map((k) => [k, wrong[Math.floor(rnd() * wrong.length)]]));
    return { bytes: post(JSON.stringify(body)) };
  },
  '__proto__ and constructor': (rnd) => {
    const key = rnd() < 0.5 ? '__proto__' : 'constructor';
    return { bytes: post(`{"${key}": {"isAdmin": true}, ${JSON.stringify(expenseFor(`p${Math.floor(rnd() * 1e6)}`)).slice(1)}`) };
  },
  'invalid UTF-8': (rnd) => ({ bytes: post(Buffer.concat([Buffer.from('{"id": "u'), Buffer.from([0xc3, 0x28, 0xff, Math.floor(rnd() * 64) + 0x80]), Buffer.from('"}')])) }),
  'SQL metacharacters': (rnd) => {
    const nasty = ["1' OR '1'='1", '1; DROP TABLE expenses; --', '" OR ""="', "x'); DELETE FROM expenses; --", '%', '\\'];
    const s = nasty[Math.floor(rnd() * nasty.length)]!;
    const where = rnd();
    if (where < 0.33) return { bytes: post(JSON.stringify(expenseFor(s))) };
    if (where < 0.66) return { bytes: Buffer.from(`GET /v1/expenses/${encodeURIComponent(s)} HTTP/1.1\r\nHost: x\r\n\r\n`) };
    return { bytes: Buffer.from(`GET /v1/expenses?after=${encodeURIComponent(s)} HTTP/1.1\r\nHost: x\r\n\r\n`) };
  },
  'huge headers': () => ({ bytes: Buffer.from(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`) }),
  'duplicate headers': (rnd) =>
    rnd() < 0.5
      ? { bytes: Buffer.from('POST /v1/expenses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 4\r\n\r\n{}{}') }
      : { bytes: post('{"id": "dup"}', 'Content-Type: text/plain\r\nContent-Type: application/json\r\n') },
  'a Content-Length that lies': (rnd) => {
    const json = JSON.stringify(expenseFor('liar'));
    const length = rnd() < 0.5 ? json.length - 5 : json.length + 50;
    return { bytes: Buffer.from(`POST /v1/expenses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n${json}`), end: true };
  },
  // A small body on GET is read and ignored; one over the body limit is not.
  'a 70 KB body on GET': () => ({ bytes: Buffer.from(`GET /v1/expenses/keep-1 HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n${'x'.repeat(70_000)}`) }),
  'path traversal in the id': (rnd) => {
    const paths = ['/v1/expenses/../../etc/passwd', '/v1/expenses/..%2f..%2fetc%2fpasswd', '/v1/expenses/%2e%2e', '/v1/expenses/..', '/v1/expenses/.%00', '/v1/expenses/keep-1%00'];
    return { bytes: Buffer.from(`${rnd() < 0.5 ? 'GET' : 'DELETE'} ${paths[Math.floor(rnd() * paths.length)]} HTTP/1.1\r\nHost: x\r\n\r\n`) };
  },
};

type Answer = { status: number; body: string };

/** Sends raw bytes on a fresh connection; every response that comes back, until the server closes or goes quiet. */
function send(bytes: Buffer, end = false): Promise<Answer[]> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let data = Buffer.alloc(0);
    let quiet: NodeJS.Timeout | undefined;
    const finish = () => {
      clearTimeout(quiet);
      socket.destroy();
      resolve(parse(data));
    };
    socket.on('connect', () => (end ? socket.end(bytes) : socket.write(bytes)));
    socket.on('data', (chunk) => {
      data = Buffer.concat([data, chunk]);
      clearTimeout(quiet);
      quiet = setTimeout(finish, 30);
    });
    // The server may close while we still write (a 413 or 431 stops reading early).
    socket.on('error', () => {});
    socket.on('close', finish);
    setTimeout(finish, 5000);
  });
}

function parse(data: Buffer): Answer[] {
  const answers: Answer[] = [];
  let rest = data.toString('latin1');
  while (rest.length > 0) {
    const head = rest.indexOf('\r\n\r\n');
    if (head === -1) break;
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(rest)?.[1]);
    const length = Number(/\r\ncontent-length: (\d+)/i.exec(rest.slice(0, head))?.[1] ?? 0);
    answers.push({ status, body: Buffer.from(rest.slice(head + 4, head + 4 + length), 'latin1').toString('utf8') });
    rest = rest.slice(head + 4 + length);
  }
  return answers;
}

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

describe('bad input', () => {
  it('answers 2,600 malformed requests each with a JSON 4xx, changes nothing, and stays up', async (t) => {
    const server = await shards.pid(1, 'server.pid');
    const checksum = () => shards.sql(1, 'CHECKSUM TABLE expenses');
    const before = await checksum();
    const rssBefore = rssMb(server);
    const seed = 20261127;
    const rnd = random(seed);
    // Every kind in turn, 200 rounds: each half of the run sees the same mix.
    const cases = Array.from({ length: 200 }, () => Object.entries(kinds).map(([kind, make]) => ({ kind, ...make(rnd) }))).flat();

    const byStatus = new Map<number, number>();
    const failures: string[] = [];
    const fuzz = (part: typeof cases) => eachLimit(part, 16, async ({ kind, bytes, end }) => {
      const answers = await send(bytes, end);
      if (answers.length === 0) failures.push(`${kind}: no answer`);
      for (const { status, body } of answers) {
        byStatus.set(status, (byStatus.get(status) ?? 0) + 1);
        let error: unknown;
        try {
          error = JSON.parse(body).error;
        } catch {
          error = undefined;
        }
        if (status < 400 || status > 499 || typeof error !== 'string') failures.push(`${kind}: ${status} ${body.slice(0, 80)}`);
      }
    });
    await fuzz(cases.slice(0, cases.length / 2));
    const rssHalf = rssMb(server);
    await fuzz(cases.slice(cases.length / 2));

    assert.deepEqual(failures.slice(0, 10), []);
    assert.deepEqual(await checksum(), before, 'no stored record changed');
    assert.equal(await shards.pid(1, 'server.pid'), server);
    assert.equal((await fetch(`http://${shards.nodes[0]}/healthz`)).status, 200);
    // Bounded: the second half, the same mix again, must not keep growing it.
    const rssAfter = rssMb(server);
    assert.ok(rssAfter < rssHalf + 24, `RSS grew from ${rssHalf.toFixed(0)} to ${rssAfter.toFixed(0)} MB in the second half`);
    assert.ok(rssAfter < 200, `RSS reached ${rssAfter.toFixed(0)} MB`);
    assert.ok(!/internal error/.test(readFileSync(`${shards.dir}/shard-1/server.log`, 'utf8')), 'no 500 was logged');
    const statuses = [...byStatus].sort().map(([s, n]) => `${s}: ${n}`).join(', ');
    t.diagnostic(`fuzz (seed ${seed}): ${cases.length} requests in ${Object.keys(kinds).length} kinds, answers ${statuses}; checksum unchanged; RSS ${rssBefore.toFixed(0)} -> ${rssHalf.toFixed(0)} (half-way) -> ${rssAfter.toFixed(0)} MB`);
  });
});

describe('slow clients', () => {
  it('cuts off, within 25 s, a client that trickles its headers and one that sends nothing, while serving others', async (t) => {
    const start = Date.now();
    const watch = (socket: net.Socket) =>
      new Promise<{ after: number; data: string }>((resolve) => {
        let data = '';
        socket.on('data', (c) => (data += c));
        socket.on('error', () => {});
        socket.on('close', () => resolve({ after: Date.now() - start, data }));
      });
    const silent = net.connect(port, '127.0.0.1');
    const trickle = net.connect(port, '127.0.0.1');
    const request = 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ' + 'a'.repeat(100) + '\r\n\r\n';
    let sent = 0;
    const dribble = setInterval(() => {
      if (!trickle.destroyed) trickle.write(request[sent++ % request.length]!);
    }, 1000);
    const [silentEnd, trickleEnd] = [watch(silent), watch(trickle)];

    // Meanwhile, normal requests are served at once.
    let served = 0;
    while (Date.now() - start < 4000) {
      const res = await fetch(`http://${shards.nodes[0]}/v1/expenses/keep-1`);
      assert.equal(res.status, 200);
      served++;
      await new Promise((r) => setTimeout(r, 100));
    }

    const [s, tr] = await Promise.all([silentEnd, trickleEnd]);
    clearInterval(dribble);
    for (const end of [s, tr]) {
      // Liveness, not speed: cut off by the 10 s header timeout, long before the 30 s request timeout.
      assert.ok(end.after < 25_000, `cut off after ${end.after} ms`);
      assert.match(end.data, /^HTTP\/1\.1 408 Request Timeout\r\n/);
      assert.match(end.data, /\{"error":"Request Timeout: the request could not be read"\}$/);
    }
    t.diagnostic(`slow clients: silent cut off after ${s.after} ms, trickling after ${tr.after} ms, both with a JSON 408; ${served} normal requests served meanwhile`);
  });
});
