// bench/peers.ts: a shard's server against its peers, in one run: the same
// server with no cluster map, which says what the map's path costs, and the
// Node server a developer would pick instead, Fastify 5 with mysql2
// (bench/peers/fastify/).
//
// It installs the peer's own dependencies first (npm install --prefix
// bench/peers/fastify: never the project's), then starts one throwaway shard,
// and all three servers on its MariaDB, each on a database of its own. Ours
// run as start-shards.sh runs a shard's server (same flags, same
// environment): one on the shard's own database, given a one-node cluster map
// naming itself, so that every request takes the map's path (rules 2-4); the
// other on a database made from schema.sql beside it, which holds no map
// (rule 1). Fastify serves the same two routes on a third. All three get the
// same lean load (bench/load.ts): POSTs of fresh ids, then GETs of them, at 1,
// 8 and 32 in flight, in interleaved repetitions, each in another order. For
// each cell: requests per second, and the CPU µs per request of the server and
// of MariaDB (utime + stime from /proc, pooled over the repetitions); then
// each server's private memory after its last GETs at 32 in flight.
//
// Run: npm run bench:peers
//   PEERS_REPS=6 PEERS_COUNT=3000   repetitions, and requests per cell
//   PEERS_NO_MAP=1                  neither of ours gets the map: what the
//                                   bench reads as the map's cost when there
//                                   is none (an A/A run)
//   PEERS_NODE_OPTIONS='--cpu-prof --cpu-prof-dir=/some/dir'
//                                   more flags for both of our servers (a
//                                   profile is written when the server exits)

import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { call } from '../client/http.ts';
import { freePorts, ROOT, run, startServer, startShards, type Shards } from '../test/shards.ts';
import { freshBodies, measure, median, pooled, privateMemory, target, type Op, type Sample, type Target } from './load.ts';

const REPS = Number(process.env.PEERS_REPS ?? 6);
const COUNT = Number(process.env.PEERS_COUNT ?? 3_000);
const IN_FLIGHT = [1, 8, 32];
const OPS: Op[] = ['POST', 'GET'];
// Enough that V8 has compiled each server's hot path before anything counts.
const WARM_UP = 8_000;
const PEER_DIR = join(ROOT, 'bench', 'peers', 'fastify');
// As start-shards.sh's start_server runs a shard's server.
const NODE_OPTIONS = `--max-semi-space-size=4 ${process.env.PEERS_NODE_OPTIONS ?? ''}`.trim();

// The six orders of three servers. A server's figures can depend on the one
// before it, whose writes the MariaDB they share may still be flushing: in
// rotation alone, the server with the map always followed Fastify, and in one
// run seemed to cost 8 µs a request (4 to 11) more than the same server with
// none; in the six orders, the next run found 2 (-3 to 8).
const ORDERS = [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 2, 1], [2, 1, 0], [1, 0, 2]];

type Name = 'map' | 'none' | 'fastify';
type Contender = { name: Name; pid: number; targets: Map<number, Target>; stop: () => Promise<unknown> };
type Cell = `${Op} ${number}`;
type Samples = Map<Name, Map<Cell, Sample[]>>;
type Of = (name: Name, cell: Cell) => Sample[];

await installPeer();
const shards = await startShards(1, { map: false });
const contenders: Contender[] = [];
try {
  for (const database of ['plain', 'peer']) await shards.sql(1, schemaAs(database));
  contenders.push(await ours(shards, 'map', 'expenses'), await ours(shards, 'none', 'plain'), await fastify(shards, 'peer'));
  for (const c of contenders) await warmUp(c);
  const { samples, memory } = await interleaved(contenders);
  report(samples, memory);
} finally {
  for (const c of contenders) {
    for (const t of c.targets.values()) t.agent.destroy();
    await c.stop();
  }
  await shards.stop();
}

/** The peer's dependencies, in its own folder: the project's package.json never names them. */
async function installPeer(): Promise<void> {
  const installed = await run('npm', ['install', '--prefix', PEER_DIR, '--no-audit', '--no-fund']);
  if (installed.code !== 0) throw new Error(`npm install --prefix bench/peers/fastify failed:\n${installed.stdout}${installed.stderr}`);
}

/** schema.sql and the cluster's tables again, as another database on the same MariaDB: its own tables, with no map in them. */
function schemaAs(database: string): string {
  const schema = ['schema.sql', 'shard/cluster-schema.sql'].map((f) => readFileSync(join(ROOT, f), 'utf8')).join('\n').replace('EXISTS expenses ', `EXISTS ${database} `).replace(/\bexpenses\.(?=\w)/g, `${database}.`);
  return `${schema}\nGRANT SELECT, INSERT, UPDATE, DELETE ON ${database}.* TO 'expenses'@'localhost';`;
}

async function targets(shards: Shards, url: string, pid: number): Promise<Map<number, Target>> {
  const mariadb = await shards.pid(1, 'mysqld.pid');
  return new Map(IN_FLIGHT.map((n) => [n, target(url, pid, mariadb, n)]));
}

/** server.ts on one of the shard's databases, as start-shards.sh starts it; with the map, a one-node map naming itself. */
async function ours(shards: Shards, name: 'map' | 'none', database: string): Promise<Contender> {
  const port = await freePorts(1);
  const env = { ...(await shards.databaseEnv(1)), MYSQL_DATABASE: database, CLUSTER_SECRET_FILE: shards.secretFile, PORT: String(port), NODE_OPTIONS };
  const server = await startServer(env);
  if (name === 'map' && process.env.PEERS_NO_MAP === undefined) {
    const node = new URL(server.url).host;
    const id = (await call(node, 'GET', '/healthz')).body.shard as string;
    const map = { epoch: 1, nodes: [{ name: node, shard: id }], replicas: 1 };
    const secret = readFileSync(shards.secretFile, 'utf8').trim();
    const answer = await call(node, 'PUT', '/cluster/map', map, { authorization: `Bearer ${secret}`, 'if-none-match': '*' });
    if (answer.status !== 200) throw new Error(`PUT /cluster/map: HTTP ${answer.status}: ${JSON.stringify(answer.body)}`);
  }
  return { name, pid: server.child.pid!, targets: await targets(shards, server.url, server.child.pid!), stop: () => server.stop() };
}

/** Fastify on one of the shard's databases, as server.mjs's header says to run it; resolves once it listens. */
async function fastify(shards: Shards, database: string): Promise<Contender> {
  const port = await freePorts(1);
  const env = { ...process.env, ...(await shards.databaseEnv(1)), MYSQL_DATABASE: database, HOST: '127.0.0.1', PORT: String(port) };
  const child: ChildProcess = spawn(process.execPath, ['server.mjs'], { cwd: PEER_DIR, env, stdio: ['ignore', 'pipe', 'pipe'] });
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
  const stop = async () => {
    if (child.exitCode !== null) return;
    child.kill('SIGTERM');
    await once(child, 'exit');
  };
  return { name: 'fastify', pid: child.pid!, targets: await targets(shards, `http://127.0.0.1:${port}`, child.pid!), stop };
}

/** JIT, connections and buffer pool warm before anything counts: POSTs and GETs at 8 in flight. */
async function warmUp({ name, targets }: Contender): Promise<void> {
  const items = freshBodies(`warm-${name}-`, WARM_UP);
  for (const op of OPS) await measure(targets.get(8)!, op, items, 8);
}

/**
 * REPS repetitions; in each, every concurrency, POSTs of fresh ids then GETs
 * of them, on each server in turn, in each of the six orders in turn, so that
 * each server goes first, and follows each other one, equally often.
 */
async function interleaved(contenders: Contender[]) {
  const samples: Samples = new Map(contenders.map((c) => [c.name, new Map()]));
  const memory = new Map<Name, number>();
  for (let rep = 0; rep < REPS; rep++) {
    const order = ORDERS[rep % ORDERS.length]!.map((i) => contenders[i]!);
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

function report(samples: Samples, memory: Map<Name, number>): void {
  const cpu = cpus()[0]?.model.trim() ?? 'unknown CPU';
  console.log(`server.ts with a one-node cluster map, the same server with none, and Fastify 5 + mysql2; ${REPS} interleaved repetitions of ${COUNT} requests per cell`);
  console.log(`our servers' flags: ${NODE_OPTIONS}; ${cpus().length} cores, ${cpu}; Node ${process.version}`);
  if (process.env.PEERS_NO_MAP !== undefined) console.log('PEERS_NO_MAP: the server named "map" holds no map either');
  const of: Of = (name, cell) => samples.get(name)!.get(cell)!;
  reportMapCost(of);
  reportPeers(of);
  const mib = (name: Name) => memory.get(name)!.toFixed(0);
  console.log(`\nprivate memory (RssAnon) after the last GETs at 32 in flight, MiB: map ${mib('map')}, none ${mib('none')}, fastify ${mib('fastify')} (no --max-semi-space-size)`);
}

/** The server with its map against the same server with none, cell by cell, then as one mean. */
function reportMapCost(of: Of): void {
  console.log('\nThe map\'s cost: the server with its map against the same server with none');
  console.log('op   in flight   CPU µs/request: map   none   map-none   median paired diff   map slower in   req/s: map   none');
  const diffs: number[] = [];
  const pairs: number[] = []; // map-none of every repetition of every cell
  for (const cell of cells()) {
    const [map, none] = [of('map', cell), of('none', cell)];
    const [m, o] = [pooled(map), pooled(none)];
    const diff = m.cpuPerRequest - o.cpuPerRequest;
    const each = map.map((s, i) => perRequest(s) - perRequest(none[i]!));
    pairs.push(...each);
    const slower = map.filter((s, i) => rps(s) < rps(none[i]!)).length;
    const [op, n] = cell.split(' ');
    console.log(
      `${op!.padEnd(4)} ${pad(n!, 9)}   ${pad(m.cpuPerRequest.toFixed(0), 19)}  ${pad(o.cpuPerRequest.toFixed(0), 5)}   ${pad(diff.toFixed(1), 8)}   ` +
        `${pad(median(each).toFixed(1), 18)}   ${pad(`${slower} of ${REPS}`, 13)}   ${pad(m.rps.toFixed(0), 10)}  ${pad(o.rps.toFixed(0), 5)}`,
    );
    diffs.push(diff);
  }
  // The map's path adds the same work to every request, so its cost is one
  // number: the mean of all the paired differences, with about 95% of the
  // means that runs like this one would give within two standard errors.
  const mean = pairs.reduce((a, b) => a + b, 0) / pairs.length;
  const spread = Math.sqrt(pairs.reduce((a, d) => a + (d - mean) ** 2, 0) / (pairs.length - 1) / pairs.length);
  console.log(`map-none: cells ${Math.min(...diffs).toFixed(1)} to ${Math.max(...diffs).toFixed(1)} µs; over all ${pairs.length} paired repetitions ${mean.toFixed(1)} µs, 95% interval ${(mean - 2 * spread).toFixed(1)} to ${(mean + 2 * spread).toFixed(1)}`);
}

/** The server with its map against Fastify: requests per second, and CPU per request of each server and of MariaDB. */
function reportPeers(of: Of): void {
  console.log('\nThe peers: the server with its map against Fastify 5 + mysql2, on the same MariaDB');
  console.log('op   in flight   req/s: ours  fastify  ours/fastify  ours faster in   CPU µs/request: ours  fastify  ours/fastify   MariaDB\'s: ours  fastify');
  for (const cell of cells()) {
    const [ours, peer] = [of('map', cell), of('fastify', cell)];
    const [o, f] = [pooled(ours), pooled(peer)];
    const faster = ours.filter((s, i) => rps(s) > rps(peer[i]!)).length;
    const [op, n] = cell.split(' ');
    console.log(
      `${op!.padEnd(4)} ${pad(n!, 9)}   ${pad(o.rps.toFixed(0), 11)}  ${pad(f.rps.toFixed(0), 7)}  ${pad((o.rps / f.rps).toFixed(2), 12)}  ${pad(`${faster} of ${REPS}`, 14)}` +
        `   ${pad(o.cpuPerRequest.toFixed(0), 20)}  ${pad(f.cpuPerRequest.toFixed(0), 7)}  ${pad((o.cpuPerRequest / f.cpuPerRequest).toFixed(2), 12)}` +
        `   ${pad(o.databaseCpuPerRequest.toFixed(0), 15)}  ${pad(f.databaseCpuPerRequest.toFixed(0), 7)}`,
    );
  }
  const all = (test: (o: Sample, f: Sample) => boolean) => cells().reduce((n, cell) => n + of('map', cell).filter((s, i) => test(s, of('fastify', cell)[i]!)).length, 0);
  console.log(`over all ${cells().length * REPS} paired repetitions, ours served more requests per second in ${all((o, f) => rps(o) > rps(f))}, and used less CPU per request in ${all((o, f) => perRequest(o) < perRequest(f))}`);
}

function cells(): Cell[] {
  return IN_FLIGHT.flatMap((n) => OPS.map((op): Cell => `${op} ${n}`));
}

function perRequest(s: Sample): number {
  return s.cpuUs / s.requests;
}

function rps(s: Sample): number {
  return s.requests / s.seconds;
}

function pad(s: string | number, width: number): string {
  return String(s).padStart(width);
}
