// bench/map-cost.ts: what the cluster map's path costs a shard's server, in
// CPU per request, against the same server with no map.
//
// Two throwaway shards, each its own MariaDB. On each, this process starts
// server.ts as start-shards.sh does (same flags, same environment): the one on
// shard 1 is then given a one-node cluster map naming itself (PUT /cluster/map),
// so that every request takes the map's path; the one on shard 2 holds none
// (rule 1). The same lean load (bench/load.ts) then goes to each in turn, POSTs
// of fresh ids and GETs of them, at 1, 8 and 32 in flight, in interleaved
// repetitions whose order alternates. For each cell it prints the server's CPU
// µs per request with and without the map (utime + stime from /proc, pooled
// over the repetitions), their ratio and difference, the median of the paired
// differences, and each server's private memory after its last 32-in-flight run.
//
// Run: npm run bench:map-cost
//   MAP_COST_REPS=8 MAP_COST_COUNT=2000   repetitions, and requests per cell
//   MAP_COST_NODE_OPTIONS='--cpu-prof --cpu-prof-dir=/some/dir'
//                                         more flags for both servers (a profile
//                                         is written when the server exits)

import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { call } from '../client/http.ts';
import { freePorts, startServer, startShards, type Server, type Shards } from '../test/shards.ts';
import { freshBodies, measure, median, pooled, privateMemory, target, type Op, type Sample, type Target } from './load.ts';

const REPS = Number(process.env.MAP_COST_REPS ?? 8);
const COUNT = Number(process.env.MAP_COST_COUNT ?? 2_000);
const IN_FLIGHT = [1, 8, 32];
const OPS: Op[] = ['POST', 'GET'];
const WARM_UP = 2_000;
// As start-shards.sh's start_server runs a shard's server.
const NODE_OPTIONS = `--max-semi-space-size=4 ${process.env.MAP_COST_NODE_OPTIONS ?? ''}`.trim();

type Kind = 'map' | 'none';
type Cell = `${Op} ${number}`;
type Runner = { kind: Kind; server: Server; targets: Map<number, Target> };

const shards = await startShards(2, { map: false });
const runners: Runner[] = [];
try {
  const base = await freePorts(2);
  runners.push(await startOne(shards, 'map', 1, base), await startOne(shards, 'none', 2, base + 1));
  await giveMap(shards, runners[0]!);
  for (const r of runners) await warmUp(r);
  const { samples, memory } = await interleaved(runners);
  report(samples, memory);
} finally {
  for (const r of runners) {
    for (const t of r.targets.values()) t.agent.destroy();
    await r.server.stop();
  }
  await shards.stop();
}

/** server.ts on a shard's database, as start-shards.sh starts it, with a load target per concurrency. */
async function startOne(shards: Shards, kind: Kind, shard: number, port: number): Promise<Runner> {
  const env = { ...(await shards.databaseEnv(shard)), MYSQL_DATABASE: 'expenses', CLUSTER_SECRET_FILE: shards.secretFile, PORT: String(port), NODE_OPTIONS };
  const server = await startServer(env);
  const targets = new Map(IN_FLIGHT.map((n) => [n, target(server.url, server.child.pid!, n)]));
  return { kind, server, targets };
}

/** A one-node map naming the server itself: every id is its own, and every request takes the map's path. */
async function giveMap(shards: Shards, { server }: Runner): Promise<void> {
  const node = new URL(server.url).host;
  const shard = (await call(node, 'GET', '/healthz')).body.shard as string;
  const map = { epoch: 1, nodes: [{ name: node, shard }], replicas: 1 };
  const secret = readFileSync(shards.secretFile, 'utf8').trim();
  const answer = await call(node, 'PUT', '/cluster/map', map, { authorization: `Bearer ${secret}`, 'if-none-match': '*' });
  if (answer.status !== 200) throw new Error(`PUT /cluster/map: HTTP ${answer.status}: ${JSON.stringify(answer.body)}`);
}

/** JIT, connections and buffer pool warm before anything counts: POSTs and GETs at 8 in flight. */
async function warmUp({ kind, targets }: Runner): Promise<void> {
  const items = freshBodies(`warm-${kind}-`, WARM_UP);
  for (const op of OPS) await measure(targets.get(8)!, op, items, 8);
}

/**
 * REPS repetitions; in each, every concurrency, POSTs of fresh ids then GETs
 * of them, each on both servers, the one first that went second last time.
 */
async function interleaved(runners: Runner[]) {
  const samples = new Map<Kind, Map<Cell, Sample[]>>(runners.map((r) => [r.kind, new Map()]));
  const memory = new Map<Kind, number>();
  for (let rep = 0; rep < REPS; rep++) {
    const order = rep % 2 === 0 ? runners : [...runners].reverse();
    for (const n of IN_FLIGHT) {
      const items = new Map(runners.map((r) => [r.kind, freshBodies(`r${rep}c${n}${r.kind}-`, COUNT)]));
      for (const op of OPS) {
        for (const r of order) {
          const cells = samples.get(r.kind)!;
          const cell: Cell = `${op} ${n}`;
          cells.set(cell, [...(cells.get(cell) ?? []), await measure(r.targets.get(n)!, op, items.get(r.kind)!, n)]);
          if (n === 32 && op === 'GET') memory.set(r.kind, privateMemory(r.server.child.pid!));
        }
      }
    }
  }
  return { samples, memory };
}

function report(samples: Map<Kind, Map<Cell, Sample[]>>, memory: Map<Kind, number>): void {
  const cpu = cpus()[0]?.model.trim() ?? 'unknown CPU';
  console.log(`server.ts with a one-node cluster map against the same server with none; ${REPS} interleaved repetitions of ${COUNT} requests per cell`);
  console.log(`server flags: ${NODE_OPTIONS}; ${cpus().length} cores, ${cpu}\n`);
  console.log('op   in flight   CPU µs/request: map   none   map/none   map-none   median paired diff   map slower in   req/s: map   none');
  const lines: string[] = [];
  for (const n of IN_FLIGHT) {
    for (const op of OPS) {
      const cell: Cell = `${op} ${n}`;
      const map = samples.get('map')!.get(cell)!;
      const none = samples.get('none')!.get(cell)!;
      const [m, o] = [pooled(map), pooled(none)];
      const perRep = map.map((s, i) => s.cpuUs / s.requests - none[i]!.cpuUs / none[i]!.requests);
      const slower = map.filter((s, i) => s.requests / s.seconds < none[i]!.requests / none[i]!.seconds).length;
      const ratio = m.cpuPerRequest / o.cpuPerRequest;
      const diff = m.cpuPerRequest - o.cpuPerRequest;
      console.log(
        `${op.padEnd(4)} ${String(n).padStart(9)}   ${m.cpuPerRequest.toFixed(0).padStart(19)}  ${o.cpuPerRequest.toFixed(0).padStart(5)}   ` +
          `${ratio.toFixed(3).padStart(8)}   ${diff.toFixed(1).padStart(8)}   ${median(perRep).toFixed(1).padStart(18)}   ` +
          `${`${slower} of ${REPS}`.padStart(13)}   ${m.rps.toFixed(0).padStart(10)}  ${o.rps.toFixed(0).padStart(5)}`,
      );
      lines.push(`${op} ${n}: ${ratio.toFixed(2)} (${diff >= 0 ? '+' : ''}${diff.toFixed(0)} µs)`);
    }
  }
  const mib = (kind: Kind) => memory.get(kind)!.toFixed(0);
  console.log(`\nprivate memory (RssAnon) after the last 32-in-flight run, MiB: map ${mib('map')}, none ${mib('none')}`);
  console.log(`\nmap/none CPU per request: ${lines.join('; ')}`);
}
