// bench/standby.ts: what a standby costs a write. One shard started by
// start-shards.sh without and then with SHARDS_STANDBY=1 (in a temporary
// directory, on free ports), and N POSTs through a lean node:http client at
// 1 and at 32 in flight, to the primary's server.
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

for (const standby of [false, true]) {
  const shards = standby ? await startShardPairs(1) : await startShards(1);
  const port = Number(shards.nodeOf(1).split(':')[1]);
  try {
    await load(port, 'warm', 8); // warm-up: JIT, connections, buffer pool
    for (const inFlight of [1, 32]) {
      const r = await load(port, `c${inFlight}`, inFlight);
      console.log(`${standby ? 'standby   ' : 'no standby'}  in flight ${String(r.inFlight).padStart(2)}  ${String(r.perSecond).padStart(5)} POST/s  mean ${r.mean} ms  p50 ${r.p50} ms  p99 ${r.p99} ms`);
    }
  } finally {
    await shards.stop();
  }
}
