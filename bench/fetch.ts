// bench/fetch.ts: what small changes to client/http.ts's call() would save,
// without leaving fetch. Each variant makes the same requests as call() and
// reads the same answer; the baseline is call() itself, measured in the same
// run. The figure is this process's CPU per request, the client's own cost:
// a ratio under 1.00 is a saving. Rounds alternate between the variants, so
// that a machine that slows down mid-run slows them all; the median counts.
// It starts three throwaway shards and stops them at the end. Run: npm run bench:fetch
//
// First, what fetch does with a 421, the cluster's redirect: the Fetch standard
// (HTTP-network-or-cache fetch, the step for 421) sends the request once more, on
// a new connection, before fetch resolves. So a node answers each 421 twice, and
// a client pays two round trips for one hop (docs/performance.md).

import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expenseFor } from '../ch_client.ts';
import { eachLimit } from '../client/batch.ts';
import { call, TIMEOUT_MS } from '../client/http.ts';
import { HashRing } from '../ring.ts';
import { startShards } from '../test/shards.ts';

const COUNT = 4_000; // POSTs, then as many GETs, per variant and round
const ROUNDS = 5;
const IN_FLIGHT = 32;

type Request = (node: string, method: string, path: string, body?: unknown) => Promise<number>;
type Change = { timer?: 'one setTimeout' | 'none'; sharedHeaders?: boolean; json?: boolean };

const JSON_HEADERS = { 'content-type': 'application/json' };
const NO_HEADERS = {};

/** call() with one change: how it times out, whether it builds header objects, how it reads the body. */
function changed({ timer, sharedHeaders = false, json = false }: Change): Request {
  return async (node, method, path, body) => {
    const controller = timer === 'one setTimeout' ? new AbortController() : undefined;
    const clock = controller && setTimeout(() => controller.abort(), TIMEOUT_MS);
    const headers = body === undefined ? (sharedHeaders ? NO_HEADERS : {}) : sharedHeaders ? JSON_HEADERS : { 'content-type': 'application/json' };
    const res = await fetch(`http://${node}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: timer === undefined ? AbortSignal.timeout(TIMEOUT_MS) : controller?.signal,
    });
    if (json) await res.json();
    else {
      const text = await res.text();
      if (text !== '') JSON.parse(text);
    }
    res.headers.get('etag');
    clearTimeout(clock);
    return res.status;
  };
}

const variants: Array<[string, Request]> = [
  ['call() as shipped', async (...args) => (await call(...args)).status],
  ['one setTimeout, not AbortSignal.timeout', changed({ timer: 'one setTimeout' })],
  ['header objects made once', changed({ sharedHeaders: true })],
  ['res.json(), not text() + JSON.parse', changed({ json: true })],
  ['no timeout at all (not an option)', changed({ timer: 'none' })],
];

/** Requests a node receives for each fetch() it answers 421, and the time of one such fetch, GET and POST. */
async function misdirected(): Promise<void> {
  let received = 0;
  const node = createServer((req, res) => {
    received++;
    req.resume().on('end', () => res.writeHead(421, { 'content-type': 'application/json' }).end('{"error":"not here"}'));
  });
  await new Promise<void>((resolve) => node.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(node.address() as AddressInfo).port}/v1/expenses`;
  for (const [method, body] of [['GET', undefined], ['POST', JSON.stringify(expenseFor('1'))]] as const) {
    received = 0;
    const started = performance.now();
    for (let i = 0; i < 200; i++) await (await fetch(url, { method, body, headers: body === undefined ? {} : JSON_HEADERS })).text();
    console.log(`a ${method} answered 421: ${(received / 200).toFixed(2)} requests received per fetch(), ${((performance.now() - started) / 200).toFixed(2)} ms each`);
  }
  node.close();
  console.log('');
}

await misdirected();
const shards = await startShards(3);
try {
  const ring = new HashRing(shards.nodes);
  let round = 0;

  /** CPU µs of this process per POST and per GET, over COUNT fresh ids. */
  async function measure(request: Request): Promise<[number, number]> {
    const ids = Array.from({ length: COUNT }, (_, i) => `f${round}-${i}`);
    round++;
    const cpu = async (op: (id: string) => Promise<void>) => {
      const before = process.cpuUsage();
      await eachLimit(ids, IN_FLIGHT, op);
      const { user, system } = process.cpuUsage(before);
      return (user + system) / COUNT;
    };
    const expect = (status: number, wanted: number) => {
      if (status !== wanted) throw new Error(`HTTP ${status}, expected ${wanted}`);
    };
    return [
      await cpu(async (id) => expect(await request(ring.get(id), 'POST', '/v1/expenses', expenseFor(id)), 201)),
      await cpu(async (id) => expect(await request(ring.get(id), 'GET', `/v1/expenses/${id}`), 200)),
    ];
  }

  for (const [, request] of variants) await measure(request); // warm up: JIT, connections
  const samples = new Map<string, Array<[number, number]>>(variants.map(([name]) => [name, []]));
  for (let r = 0; r < ROUNDS; r++) for (const [name, request] of variants) samples.get(name)!.push(await measure(request));

  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const cost = (name: string, i: 0 | 1) => median(samples.get(name)!.map((s) => s[i]));
  const [basePost, baseGet] = [cost(variants[0]![0], 0), cost(variants[0]![0], 1)];
  console.log(`${COUNT} POSTs and ${COUNT} GETs per variant and round, median of ${ROUNDS}; ${IN_FLIGHT} in flight; Node ${process.version}\n`);
  console.log('client CPU per request                      POST µs   ratio    GET µs   ratio');
  for (const [name] of variants) {
    const [post, get] = [cost(name, 0), cost(name, 1)];
    console.log(`${name.padEnd(42)} ${post.toFixed(0).padStart(7)}   ${(post / basePost).toFixed(2)}   ${get.toFixed(0).padStart(7)}   ${(get / baseGet).toFixed(2)}`);
  }
  const spread = (i: 0 | 1) => {
    const xs = samples.get(variants[0]![0])!.map((s) => s[i]);
    return (Math.max(...xs) / Math.min(...xs) - 1) * 100;
  };
  console.log(`\ncall() itself varied by ${spread(0).toFixed(0)}% (POST) and ${spread(1).toFixed(0)}% (GET) between rounds: a ratio inside that is noise`);
} finally {
  await shards.stop();
}
