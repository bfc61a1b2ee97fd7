// bench/peers.ts: a shard's server against the Node server a developer would
// pick instead, Fastify 5 with mysql2 (bench/peers/fastify/), side by side in
// one run, on the same database and the same load.
//
// It installs the peer's own dependencies first (npm install --prefix
// bench/peers/fastify: never the project's), then starts one throwaway shard
// as start-shards.sh starts it, with its one-node cluster map, so that every
// request takes the map's path, and the peer beside it on the same MariaDB.
// Both get the same lean load (bench/load.ts): POSTs of fresh ids, then GETs
// of them, at 1, 8 and 32 in flight, in interleaved repetitions whose order
// alternates. For each cell: requests per second, the server's CPU µs per
// request (utime + stime from /proc, pooled over the repetitions), and ours
// over the peer's; then each server's private memory after the last run at
// 32 in flight.
//
// Run: npm run bench:peers
//   PEERS_REPS=3 PEERS_COUNT=3000   repetitions, and requests per cell

import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { freePorts, ROOT, run, startShards, type Shards } from '../test/shards.ts';
import { freshBodies, measure, pooled, privateMemory, target, type Op, type Sample, type Target } from './load.ts';

const REPS = Number(process.env.PEERS_REPS ?? 3);
const COUNT = Number(process.env.PEERS_COUNT ?? 3_000);
const IN_FLIGHT = [1, 8, 32];
const OPS: Op[] = ['POST', 'GET'];
const WARM_UP = 2_000;
const PEER_DIR = join(ROOT, 'bench', 'peers', 'fastify');

type Contender = { name: string; pid: number; targets: Map<number, Target> };
type Cell = `${Op} ${number}`;

await installPeer();
const shards = await startShards(1);
let peer: ChildProcess | undefined;
const contenders: Contender[] = [];
try {
  contenders.push(await ours(shards));
  const started = await startPeer(shards);
  peer = started.child;
  contenders.push(started.contender);
  for (const c of contenders) await warmUp(c);
  const { samples, memory } = await interleaved(contenders);
  report(samples, memory);
} finally {
  for (const c of contenders) for (const t of c.targets.values()) t.agent.destroy();
  if (peer !== undefined && peer.exitCode === null) {
    peer.kill('SIGTERM');
    await once(peer, 'exit');
  }
  await shards.stop();
}

/** The peer's dependencies, in its own folder: the project's package.json never names them. */
async function installPeer(): Promise<void> {
  const installed = await run('npm', ['install', '--prefix', PEER_DIR, '--no-audit', '--no-fund']);
  if (installed.code !== 0) throw new Error(`npm install --prefix bench/peers/fastify failed:\n${installed.stdout}${installed.stderr}`);
}

/** Shard 1's own server, as start-shards.sh started it, with the first cluster map. */
async function ours(shards: Shards): Promise<Contender> {
  const url = `http://${shards.nodeOf(1)}`;
  const pid = await shards.pid(1, 'server.pid');
  return { name: 'ours', pid, targets: new Map(IN_FLIGHT.map((n) => [n, target(url, pid, n)])) };
}

/** Fastify on shard 1's MariaDB, as server.mjs's header says to run it; resolves once it listens. */
async function startPeer(shards: Shards): Promise<{ child: ChildProcess; contender: Contender }> {
  const port = await freePorts(1);
  const env = { ...process.env, ...(await shards.databaseEnv(1)), MYSQL_DATABASE: 'expenses', HOST: '127.0.0.1', PORT: String(port) };
  const child = spawn(process.execPath, ['server.mjs'], { cwd: PEER_DIR, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk;
      if (output.includes('listening on')) resolve();
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`the Fastify peer exited with ${code} before listening:\n${output}`)));
  });
  const url = `http://127.0.0.1:${port}`;
  return { child, contender: { name: 'fastify', pid: child.pid!, targets: new Map(IN_FLIGHT.map((n) => [n, target(url, child.pid!, n)])) } };
}

/** JIT, connections and buffer pool warm before anything counts: POSTs and GETs at 8 in flight. */
async function warmUp({ name, targets }: Contender): Promise<void> {
  const items = freshBodies(`warm-${name}-`, WARM_UP);
  for (const op of OPS) await measure(targets.get(8)!, op, items, 8);
}

/**
 * REPS repetitions; in each, every concurrency, POSTs of fresh ids then GETs
 * of them, each on both servers, the one first that went second last time.
 */
async function interleaved(contenders: Contender[]) {
  const samples = new Map<string, Map<Cell, Sample[]>>(contenders.map((c) => [c.name, new Map()]));
  const memory = new Map<string, number>();
  for (let rep = 0; rep < REPS; rep++) {
    const order = rep % 2 === 0 ? contenders : [...contenders].reverse();
    for (const n of IN_FLIGHT) {
      const items = new Map(contenders.map((c) => [c.name, freshBodies(`r${rep}c${n}${c.name}-`, COUNT)]));
      for (const op of OPS) {
        for (const c of order) {
          const cells = samples.get(c.name)!;
          const cell: Cell = `${op} ${n}`;
          cells.set(cell, [...(cells.get(cell) ?? []), await measure(c.targets.get(n)!, op, items.get(c.name)!, n)]);
          if (n === 32 && op === 'GET') memory.set(c.name, privateMemory(c.pid));
        }
      }
    }
  }
  return { samples, memory };
}

function report(samples: Map<string, Map<Cell, Sample[]>>, memory: Map<string, number>): void {
  const cpu = cpus()[0]?.model.trim() ?? 'unknown CPU';
  console.log(`ours (server.ts, one-node cluster map) against Fastify 5 + mysql2, one MariaDB; ${REPS} interleaved repetitions of ${COUNT} requests per cell`);
  console.log(`${cpus().length} cores, ${cpu}; Node ${process.version}\n`);
  console.log('op   in flight   req/s: ours  fastify  ours/fastify   CPU µs/request: ours  fastify  ours/fastify');
  const summary: string[] = [];
  for (const n of IN_FLIGHT) {
    for (const op of OPS) {
      const cell: Cell = `${op} ${n}`;
      const o = pooled(samples.get('ours')!.get(cell)!);
      const f = pooled(samples.get('fastify')!.get(cell)!);
      const rps = o.rps / f.rps;
      const cpuRatio = o.cpuPerRequest / f.cpuPerRequest;
      console.log(
        `${op.padEnd(4)} ${String(n).padStart(9)}   ${o.rps.toFixed(0).padStart(11)}  ${f.rps.toFixed(0).padStart(7)}  ${rps.toFixed(2).padStart(12)}` +
          `   ${o.cpuPerRequest.toFixed(0).padStart(20)}  ${f.cpuPerRequest.toFixed(0).padStart(7)}  ${cpuRatio.toFixed(2).padStart(12)}`,
      );
      summary.push(`${op} ${n}: req/s ${rps.toFixed(2)}, CPU ${cpuRatio.toFixed(2)}`);
    }
  }
  const mib = (name: string) => memory.get(name)!.toFixed(0);
  console.log(`\nprivate memory (RssAnon) after the last 32-in-flight run, MiB: ours ${mib('ours')}, fastify ${mib('fastify')}`);
  console.log(`\nours/fastify: ${summary.join('; ')}`);
}
