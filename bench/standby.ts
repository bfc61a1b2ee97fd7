// bench/standby.ts: what a standby costs a write. One shard started by
// start-shards.sh without and then with SHARDS_STANDBY=1 (in a temporary
// directory, on free ports), and N POSTs through a lean node:http client at
// 1 and at 32 in flight, to the primary's server. Then, on the same pair, with
// the primary's semi-sync turned off: the binlog and its sync (sync_binlog=1)
// are still paid, the wait for the standby's ack is not. That separates the
// fsync from the round trip. Last, the ratios against the no-standby baseline.
//
//   node bench/standby.ts [POSTS=2000]

import { request, Agent } from 'node:http';
import { expenseFor } from '../ch_client.ts';
import { startShards, startShardPairs } from '../test/shards.ts';

const POSTS = Number(process.argv[2] ?? 2000);

function post(agent: Agent, port: number, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/v1/expenses', method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function load(port: number, prefix: string, inFlight: number) {
  const agent = new Agent({ keepAlive: true, maxSockets: inFlight });
  const latencies: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (next < POSTS) {
      const body = JSON.stringify(expenseFor(`${prefix}-${next++}`));
      const t = performance.now();
      const status = await post(agent, port, body);
      if (status !== 201) throw new Error(`POST answered ${status}`);
      latencies.push(performance.now() - t);
    }
  }));
  const seconds = (performance.now() - started) / 1000;
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!.toFixed(2);
  return { inFlight, perSecond: Math.round(POSTS / seconds), p50: at(0.5), p99: at(0.99), mean: (latencies.reduce((a, b) => a + b, 0) / latencies.length).toFixed(2) };
}

type Result = Awaited<ReturnType<typeof load>>;
const results = new Map<string, Result[]>();

async function measure(label: string, port: number, prefix: string) {
  await load(port, `${prefix}warm`, 8); // warm-up: JIT, connections, buffer pool
  const rows: Result[] = [];
  for (const inFlight of [1, 32]) {
    const r = await load(port, `${prefix}c${inFlight}`, inFlight);
    rows.push(r);
    console.log(`${label.padEnd(22)}  in flight ${String(r.inFlight).padStart(2)}  ${String(r.perSecond).padStart(5)} POST/s  mean ${r.mean} ms  p50 ${r.p50} ms  p99 ${r.p99} ms`);
  }
  results.set(label, rows);
}

const BASE = 'no standby';
const plain = await startShards(1);
try {
  await measure(BASE, Number(plain.nodeOf(1).split(':')[1]), 'a');
} finally {
  await plain.stop();
}
const pair = await startShardPairs(1);
try {
  const port = Number(pair.nodeOf(1).split(':')[1]);
  await measure('standby (semi-sync)', port, 'b');
  // The same primary, its binlog still synced at each commit, but no wait for the standby's ack.
  await pair.sql(1, 'primary', 'SET GLOBAL rpl_semi_sync_master_enabled = OFF');
  await measure('binlog, no ack wait', port, 'c');
  await pair.sql(1, 'primary', 'SET GLOBAL rpl_semi_sync_master_enabled = ON');
} finally {
  await pair.stop();
}

console.log(`\nagainst ${BASE} (latency: lower is better; throughput: higher is better)`);
for (const [label, rows] of results) {
  if (label === BASE) continue;
  for (const [i, r] of rows.entries()) {
    const b = results.get(BASE)![i]!;
    const x = (a: string | number, c: string | number) => `${(Number(a) / Number(c)).toFixed(2)}x`;
    console.log(`${label.padEnd(22)}  in flight ${String(r.inFlight).padStart(2)}  p50 ${x(r.p50, b.p50)}  p99 ${x(r.p99, b.p99)}  mean ${x(r.mean, b.mean)}  throughput ${x(r.perSecond, b.perSecond)}`);
  }
}
