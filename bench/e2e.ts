// bench/e2e.ts: the whole path, client to MySQL, in three tiers, each against
// the same natural limit, measured in one run on the same three shards.
//
//   limit        db.ts itself, in this process: the server's own statements over
//                its own connections, with no HTTP in between.
//   (driver)     the same statements on the bare mysql driver, over single
//                persistent connections taken in turn: what db.ts costs on top.
//   server tier  a lean load generator (node:http, a keep-alive agent, bodies
//                serialised before the clock starts), routed by the ring, to
//                server.ts: what one shard's server adds on top of MySQL.
//   client       the client as shipped: the ring and client/http.ts, fetch included.
//
// Each path runs 5,000 writes, then reads them back, in three rounds; the best
// round counts, and with it the CPU each kind of process spent per request,
// from /proc. It starts three throwaway shards and stops them at the end.
// Run: npm run bench:e2e

import http from 'node:http';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { expenseFor } from '../ch_client.ts';
import { eachLimit } from '../client/batch.ts';
import { call } from '../client/http.ts';
import mysql from 'mysql';
import { createDb, statements, type Db } from '../db.ts';
import { connect as connectToMysql, driverOptions, POOL_SIZE } from '../mysql/connections.ts';
import { HashRing } from '../ring.ts';
import { startShards, type Shards } from '../test/shards.ts';

const COUNT = 5_000;
const IN_FLIGHT = 32;
const ROUNDS = 3;
const TICK_US = 1e6 / 100; // /proc counts CPU time in clock ticks of 1/100 s (getconf CLK_TCK)

type Op = (id: string) => Promise<void>;
type Path = { name: string; write: Op; read: Op };
type Result = { rps: number; latencies: number[]; cpu: Cpu };
type Cpu = { generator: number; servers: number; mysql: number }; // µs per request

/** What the paths share: the ring, each shard's processes, and the connections each tier uses. */
type Setup = {
  ring: HashRing;
  servers: number[]; // pids of the shards' servers
  mysqls: number[]; // and of their MariaDBs
  dbs: Map<string, Db & { close(): Promise<void> }>; // db.ts, one per shard, and its connections' close
  bare: Map<string, mysql.Connection[]>; // the bare driver: POOL_SIZE single connections per shard, taken in turn
  agent: http.Agent; // the server tier's keep-alive agent
  bodies: Map<string, string>; // the server tier's bodies, serialised before the clock starts
};

/** CPU time (µs) a process has used so far, from /proc/PID/stat: utime + stime. */
function cpuOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * TICK_US;
}

/** Private (anonymous) and total resident memory of a process, in MB. */
function memory(pid: number): { anon: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  // A process that is exiting has no memory lines: count it as 0.
  const mb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) / 1024;
  return { anon: mb('RssAnon'), peak: mb('VmHWM') };
}

const shards = await startShards(3);
try {
  const setup = await connect(shards);
  try {
    const paths = pathsOf(setup);
    await warmUp(setup, paths);
    const [best, peakAnon] = await withPeakMemory(setup.servers, () => bestRounds(setup, paths));
    report(best, peakAnon, setup.servers);
  } finally {
    await disconnect(setup);
  }
} finally {
  await shards.stop();
}

/** Setup: every shard's pids, db.ts and bare driver connections to every shard, and the HTTP agent. */
async function connect(shards: Shards): Promise<Setup> {
  const pids = (file: 'server.pid' | 'mysqld.pid') => Promise.all(shards.nodes.map((_, i) => shards.pid(i + 1, file)));
  const dbs: Setup['dbs'] = new Map();
  const bare = new Map<string, mysql.Connection[]>();
  for (const [i, node] of shards.nodes.entries()) {
    const env = await shards.databaseEnv(i + 1);
    const config = { socketPath: env.MYSQL_SOCKET, user: env.MYSQL_USER!, password: env.MYSQL_PASSWORD!, database: 'expenses' };
    const query = connectToMysql(config);
    dbs.set(node, { ...createDb(query), close: query.close });
    const options = driverOptions(config);
    bare.set(node, Array.from({ length: POOL_SIZE }, () => mysql.createConnection(options)));
  }
  return {
    ring: new HashRing(shards.nodes),
    servers: await pids('server.pid'),
    mysqls: await pids('mysqld.pid'),
    dbs,
    bare,
    agent: new http.Agent({ keepAlive: true, maxSockets: IN_FLIGHT }),
    bodies: new Map(),
  };
}

/** Teardown: every connection that connect opened. */
async function disconnect({ dbs, bare, agent }: Setup): Promise<void> {
  await Promise.all([...dbs.values()].map((db) => db.close()));
  for (const connection of [...bare.values()].flat()) connection.end();
  agent.destroy();
}

/** The four paths, from the limit to the client as shipped: each writes one id, or reads it back. */
function pathsOf({ ring, dbs, bare, agent, bodies }: Setup): Path[] {
  let turn = 0;
  const driver = (node: string, [sql, values]: [string, unknown[]]) =>
    new Promise<unknown>((resolve, reject) => {
      const connections = bare.get(node)!;
      connections[turn++ % connections.length]!.query(sql, values, (err, result) => (err ? reject(err) : resolve(result)));
    });
  const lean = (node: string, method: string, path: string, body?: string) =>
    new Promise<number>((resolve, reject) => {
      const [host, port] = node.split(':');
      const headers = body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
      const req = http.request({ host, port, method, path, agent, headers }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode!));
      });
      req.on('error', reject);
      req.end(body);
    });
  const expect = (what: string, status: number, wanted: number) => {
    if (status !== wanted) throw new Error(`${what}: HTTP ${status}`);
  };

  return [
    {
      name: 'limit (db.ts)',
      write: async (id) => {
        if ((await dbs.get(ring.get(id))!.insert({ ...expenseFor(id), status: 'pending', decision_date: '' })) === undefined) throw new Error(`INSERT ${id}: taken`);
      },
      read: async (id) => {
        if ((await dbs.get(ring.get(id))!.get(id)) === undefined) throw new Error(`SELECT ${id}: not found`);
      },
    },
    {
      name: '(driver)',
      write: async (id) => void (await driver(ring.get(id), statements.insert({ ...expenseFor(id), status: 'pending', decision_date: '' }, '0'.repeat(16)))),
      read: async (id) => {
        if ((await driver(ring.get(id), statements.get(id)) as unknown[]).length !== 1) throw new Error(`SELECT ${id}: not found`);
      },
    },
    {
      name: 'server tier',
      write: async (id) => expect(`POST ${id}`, await lean(ring.get(id), 'POST', '/v1/expenses', bodies.get(id)), 201),
      read: async (id) => expect(`GET ${id}`, await lean(ring.get(id), 'GET', `/v1/expenses/${id}`), 200),
    },
    {
      name: 'client (fetch)',
      write: async (id) => expect(`POST ${id}`, (await call(ring.get(id), 'POST', '/v1/expenses', expenseFor(id))).status, 201),
      read: async (id) => expect(`GET ${id}`, (await call(ring.get(id), 'GET', `/v1/expenses/${id}`)).status, 200),
    },
  ];
}

/** COUNT fresh ids, with their bodies serialised for the server tier. */
function freshIds({ bodies }: Setup, prefix: string): string[] {
  const ids = Array.from({ length: COUNT }, (_, i) => `${prefix}${i}`);
  for (const id of ids) bodies.set(id, JSON.stringify(expenseFor(id)));
  return ids;
}

/** Warms up every path (JIT, connections, buffer pools) before measuring: 500 writes each. */
async function warmUp(setup: Setup, paths: Path[]): Promise<void> {
  const ids = freshIds(setup, 'warm-');
  for (const [i, path] of paths.entries()) await measure(setup, ids.slice(i * 500, i * 500 + 500), path.write);
}

/** ROUNDS rounds of writes, then reads of the same ids, on every path: the best round of each, by req/s. */
async function bestRounds(setup: Setup, paths: Path[]): Promise<Map<string, Result>> {
  const best = new Map<string, Result>();
  const keep = (key: string, result: Result) => {
    if (!best.has(key) || result.rps > best.get(key)!.rps) best.set(key, result);
  };
  for (let round = 0; round < ROUNDS; round++) {
    for (const [i, path] of paths.entries()) {
      const fresh = freshIds(setup, `r${round}p${i}-`);
      keep(`${path.name} writes`, await measure(setup, fresh, path.write));
      keep(`${path.name} reads`, await measure(setup, fresh, path.read));
    }
  }
  return best;
}

/** Runs op over every id, IN_FLIGHT at a time, timing each call and counting every process's CPU. */
async function measure({ servers, mysqls }: Setup, ids: string[], op: Op): Promise<Result> {
  const sum = (pids: number[]) => pids.reduce((total, pid) => total + cpuOf(pid), 0);
  const self = () => {
    const { user, system } = process.cpuUsage();
    return user + system;
  };
  const latencies: number[] = [];
  const before = { generator: self(), servers: sum(servers), mysql: sum(mysqls) };
  const start = performance.now();
  await eachLimit(ids, IN_FLIGHT, async (id) => {
    const t = performance.now();
    await op(id);
    latencies.push(performance.now() - t);
  });
  const seconds = (performance.now() - start) / 1000;
  const per = (now: number, then: number) => (now - then) / ids.length;
  const cpu = { generator: per(self(), before.generator), servers: per(sum(servers), before.servers), mysql: per(sum(mysqls), before.mysql) };
  return { rps: ids.length / seconds, latencies, cpu };
}

/** Runs fn while sampling the servers' private memory every 20 ms: fn's result, and the peak, in MB. */
async function withPeakMemory<T>(servers: number[], fn: () => Promise<T>): Promise<[T, number]> {
  let peak = 0;
  const sampler = setInterval(() => (peak = Math.max(peak, ...servers.map((pid) => memory(pid).anon))), 20);
  try {
    return [await fn(), peak];
  } finally {
    clearInterval(sampler);
  }
}

/** The table, each path's best against the limit, then the line that docs/performance.md quotes. */
function report(best: Map<string, Result>, peakAnon: number, servers: number[]): void {
  const cpu = cpus()[0]?.model.trim() ?? 'unknown CPU';
  console.log(`${COUNT} requests per round, best of ${ROUNDS}; ${IN_FLIGHT} in flight; ${POOL_SIZE} connections per shard; 3 shards; ${cpus().length} cores, ${cpu}\n`);
  const ratio = (key: string) => best.get(key)!.rps / best.get(`limit (db.ts) ${key.endsWith('writes') ? 'writes' : 'reads'}`)!.rps;
  const at = (r: Result, q: number) => r.latencies.sort((a, b) => a - b)[Math.floor(q * (r.latencies.length - 1))]!.toFixed(2).padStart(6);
  console.log('path                    req/s     p50 ms   p99 ms   / limit   CPU µs per request: generator  servers  MariaDBs');
  for (const [key, r] of best) {
    const c = r.cpu;
    console.log(
      `${key.padEnd(22)} ${Math.round(r.rps).toString().padStart(6)}   ${at(r, 0.5)}   ${at(r, 0.99)}   ${ratio(key).toFixed(2).padStart(6)}` +
        `   ${Math.round(c.generator).toString().padStart(27)}  ${Math.round(c.servers).toString().padStart(7)}  ${Math.round(c.mysql).toString().padStart(8)}`,
    );
  }
  const mem = servers.map(memory);
  console.log(`\nserver private (anonymous) memory, peak under load: ${peakAnon.toFixed(0)} MB (target <= 64); total RSS peak ${mem.map((m) => m.peak.toFixed(0)).join(', ')} MB`);
  const r = (key: string) => ratio(key).toFixed(2);
  console.log(
    `\ne2e server/limit writes = ${r('server tier writes')}, reads = ${r('server tier reads')}; ` +
      `client/limit writes = ${r('client (fetch) writes')}, reads = ${r('client (fetch) reads')}; server private = ${peakAnon.toFixed(0)} MB`,
  );
}
