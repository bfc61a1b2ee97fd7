// bench/reshard.ts: a reshard's speed against the disk's. Four shards (with
// standbys: SHARDS_STANDBY=1), three of them holding N records (loaded by SQL),
// replicas 100; the fourth joins, and about a quarter of the records move.
// First the limit: the rows that must move are copied from each old owner to
// the new shard with `mariadb-dump | mariadb` and deleted at their source, timed,
// then put back. Then the reshard 3 -> 4 as fast as it goes (RESHARD_THROTTLE=0),
// and the same rows back, 4 -> 3, throttled, each while a steady job of clients
// (GETs and POSTs through client/cluster.ts, JOB_RATE a second) runs; the
// job's p99 during each reshard against its p99 with none (before, between
// and after them), in the same run, split by whether the node a request went
// to first answered it or sent it on (421); and the machine's load average.
//
//   node bench/reshard.ts [RECORDS=20000,200000] [standby: 0,1]

import { spawn } from 'node:child_process';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { expenseFor } from '../ch_client.ts';
import { HashRing } from '../ring.ts';
import { discover, send } from '../client/cluster.ts';
import { ROOT, run, startShardPairs, startShards } from '../test/shards.ts';

const SIZES = (process.argv[2] ?? '20000,200000').split(',').map(Number);
const STANDBYS = (process.argv[3] ?? '0,1').split(',').map((s) => s === '1');
const REPLICAS = 100;
const JOB_RATE = 100; // requests a second
const JOB_WORKERS = 4;
const QUIET_MS = 10_000; // each stretch of the job with no reshard

type Cluster = { dir: string; env: NodeJS.ProcessEnv; nodes: string[]; stop(): Promise<void> };

async function cluster(standby: boolean): Promise<Cluster> {
  return retried(async () => {
    const s = standby ? await startShardPairs(4, { map: false }) : await startShards(4, { map: false });
    return { dir: s.dir, env: s.env, nodes: [1, 2, 3, 4].map((i) => s.nodeOf(i)), stop: () => s.stop() };
  });
}

/** On a loaded machine, initialising a MariaDB now and then fails (mariadb-install-db): start afresh, twice at most. */
async function retried<T>(start: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start();
    } catch (err) {
      if (attempt === 3) throw err;
      console.error(`starting the shards failed, starting again: ${(err as Error).message.split('\n')[0]}`);
    }
  }
}

/** Runs a mariadb client on shard i's primary, reading SQL from `input`. */
async function sql(c: Cluster, shard: number, input: string): Promise<string> {
  const res = await run(join(ROOT, 'start-shards.sh'), ['sql', String(shard), '--batch', '--skip-column-names'], { env: c.env, input });
  if (res.code !== 0) throw new Error(`SQL on shard ${shard}: ${res.stderr}`);
  return res.stdout;
}

const socket = (c: Cluster, shard: number) => join(c.dir, `shard-${shard}`, 'mysqld.sock');

/** `mariadb-dump ... | mariadb`: the rows that `where` picks on one shard, into another. */
function pipe(c: Cluster, from: number, to: number, where: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const dump = spawn('mariadb-dump', ['--no-defaults', `--socket=${socket(c, from)}`, '--user=root', '--no-create-info', '--complete-insert', '--skip-triggers', '--single-transaction', `--where=${where}`, 'expenses', 'expenses']);
    const load = spawn('mariadb', ['--no-defaults', `--socket=${socket(c, to)}`, '--user=root', 'expenses']);
    dump.stdout.pipe(load.stdin);
    let err = '';
    dump.stderr.on('data', (d) => (err += d));
    load.stderr.on('data', (d) => (err += d));
    load.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`dump ${from} | load ${to}: ${err}`))));
  });
}

const quote = (s: string) => `'${s.replace(/'/g, "''")}'`;
const version = () => Math.floor(Math.random() * 2 ** 52).toString(16).padStart(16, '0');
const toMysql = (d: string) => `${d.slice(6)}-${d.slice(0, 2)}-${d.slice(3, 5)}`;

async function load(c: Cluster, three: HashRing, records: number): Promise<string[]> {
  const ids = Array.from({ length: records }, (_, i) => `r${i + 1}`);
  const byShard = [1, 2, 3].map((i) => ids.filter((id) => three.get(id) === c.nodes[i - 1]));
  await Promise.all(byShard.map(async (mine, i) => {
    const rows: string[] = [];
    for (let at = 0; at < mine.length; at += 1000) {
      const values = mine.slice(at, at + 1000).map((id) => {
        const e = expenseFor(id);
        return `(${[id, e.name, e.email, e.category, e.description, e.link, e.estimated_costs].map(quote).join(', ')}, '${toMysql(e.submit_date)}', '${version()}')`;
      });
      rows.push(`INSERT INTO expenses (id, name, email, category, description, link, estimated_costs, submit_date, version) VALUES ${values.join(',\n')};`);
    }
    await sql(c, i + 1, rows.join('\n'));
  }));
  return ids;
}

/** The bulk copy of exactly the rows that move, and their delete at the source: seconds. Then it is undone. */
async function bulk(c: Cluster, moving: string[][]): Promise<number> {
  for (const [i, ids] of moving.entries()) {
    await sql(c, i + 1, `CREATE TABLE bench_move (id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY); INSERT INTO bench_move VALUES ${ids.map((id) => `(${quote(id)})`).join(',')};`);
  }
  const where = 'id IN (SELECT id FROM bench_move)';
  const started = performance.now();
  for (const i of [1, 2, 3]) {
    await pipe(c, i, 4, where);
    await sql(c, i, `DELETE FROM expenses WHERE ${where};`);
  }
  const seconds = (performance.now() - started) / 1000;
  // Undone, untimed: the rows back from the fourth shard to where they were.
  await sql(c, 4, `CREATE TABLE bench_move (id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY);`);
  for (const [i, ids] of moving.entries()) {
    await sql(c, 4, `DELETE FROM bench_move; INSERT INTO bench_move VALUES ${ids.map((id) => `(${quote(id)})`).join(',')};`);
    await pipe(c, 4, i + 1, where);
    await sql(c, 4, `DELETE FROM expenses WHERE ${where};`);
    await sql(c, i + 1, 'DROP TABLE bench_move;');
  }
  await sql(c, 4, 'DROP TABLE bench_move;');
  return seconds;
}

/**
 * A steady job of clients: each worker sends a request every JOB_WORKERS / JOB_RATE s. Latencies (ms) by
 * the phase they started in, and by phase and whether the node the client asked first answered or sent it on (421).
 */
function job(nodes: string[], ids: string[]) {
  const latencies = new Map<string, number[]>();
  let phase = 'before';
  let running = true;
  let failures = 0;
  let fresh = 0;
  const done = (async () => {
    const { view } = await discover(nodes, REPLICAS);
    await Promise.all(Array.from({ length: JOB_WORKERS }, async (_, w) => {
      const every = (JOB_WORKERS * 1000) / JOB_RATE;
      let next = performance.now() + (w * every) / JOB_WORKERS;
      while (running) {
        await new Promise((r) => setTimeout(r, Math.max(0, next - performance.now())));
        next += every;
        const at = phase;
        const started = performance.now();
        let sentOn = false;
        try {
          const post = Math.random() < 0.1;
          const id = post ? `job-${w}-${fresh++}` : ids[Math.floor(Math.random() * ids.length)]!;
          const res = post ? await send(view, id, 'POST', '/v1/expenses', expenseFor(id)) : await send(view, id, 'GET', `/v1/expenses/${id}`);
          if (res.status !== (post ? 201 : 200)) failures++;
          sentOn = res.sentOn > 0;
        } catch {
          failures++;
        }
        const took = performance.now() - started;
        for (const key of [at, `${at}, ${sentOn ? 'sent on' : 'first node'}`]) {
          const list = latencies.get(key) ?? [];
          list.push(took);
          latencies.set(key, list);
        }
      }
    }));
  })();
  return {
    phase: (p: string) => void (phase = p),
    async stop() {
      running = false;
      await done;
      return { latencies, failures };
    },
  };
}

const p99 = (xs: number[] = []) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.99)] ?? NaN;

async function reshard(c: Cluster, from: string[], to: string[], env: NodeJS.ProcessEnv = {}, more: string[] = []): Promise<{ seconds: number; out: string }> {
  const args = ['ch_client.ts', 'reshard', '--nodes', from.join(','), '--to', to.join(','), '--replicas', String(REPLICAS), '--secret-file', join(c.dir, 'cluster-secret'), ...more];
  const started = performance.now();
  // As an operator runs it (docs/operations.md): with Node's compile cache, which the first map's run fills.
  const res = await run(process.execPath, args, { env: { ...process.env, NODE_COMPILE_CACHE: join(c.dir, '.compile-cache'), ...env } });
  // A failed reshard is reported with what it printed, and the run goes on (its rerun finishes the move).
  if (res.code !== 0) console.log(`reshard ${from.length} -> ${to.length} FAILED (exit ${res.code}):\n${res.stdout}${res.stderr.split('\n').filter((l) => !l.startsWith('records walked')).join('\n')}`);
  return { seconds: (performance.now() - started) / 1000, out: res.stdout };
}

const rows: string[] = [];
for (const standby of STANDBYS) {
  for (const records of SIZES) {
    const c = await cluster(standby);
    try {
      const [three, four] = [c.nodes.slice(0, 3), c.nodes];
      await reshard(c, three, three); // the first map
      const ring3 = new HashRing(three, REPLICAS);
      const ring4 = new HashRing(four, REPLICAS);
      const ids = await load(c, ring3, records);
      const moving = [0, 1, 2].map((i) => ids.filter((id) => ring3.get(id) === three[i] && ring4.get(id) === four[3]));
      const moved = moving.flat().length;
      const bulkSeconds = await bulk(c, moving);
      console.log(`${standby ? 'standbys' : 'no standby'}, ${records} records, ${moved} move: bulk copy ${bulkSeconds.toFixed(2)} s`);
      // What listing every record would cost: the plan of a dry run lists them all, as every walk did before.
      const plan = await reshard(c, three, four, {}, ['--dry-run']);
      const loadBefore = loadavg()[0]!;
      const clients = job(three, ids);
      const quiet = (name: string) => {
        clients.phase(name);
        return new Promise((r) => setTimeout(r, QUIET_MS));
      };
      await quiet('before');
      clients.phase('unthrottled');
      const unthrottled = await reshard(c, three, four, { RESHARD_THROTTLE: '0' });
      // A failed end (see docs/performance.md) is finished by the same command before the way back.
      if (!/^the cluster is at epoch \d+: 4 nodes/m.test(unthrottled.out)) await reshard(c, three, four);
      await quiet('between');
      clients.phase('throttled');
      const throttled = await reshard(c, three, three);
      await quiet('after');
      const { latencies, failures } = await clients.stop();
      const loadAfter = loadavg()[0]!;
      const without = ['before', 'between', 'after'].flatMap((p) => latencies.get(p) ?? []);
      const rate = (s: number) => Math.round(moved / s);
      const ms = (xs: number[] | undefined) => `${p99(xs).toFixed(1)} ms`;
      const ratio = (p: string) => `${(p99(latencies.get(p)) / p99(without)).toFixed(2)}x`;
      const hops = (p: string) => ['first node', 'sent on'].map((h) => `${latencies.get(`${p}, ${h}`)?.length ?? 0} at p99 ${ms(latencies.get(`${p}, ${h}`))}`).join(' / ');
      const split = (out: string) => /listing what moves took (\S+ s), moving it (\S+ s), of which giving way to clients (\S+ s)/.exec(out)?.slice(1).join(' / ');
      const line =
        `${standby ? 'standbys' : 'no standby'}, ${records} records, ${moved} move, load average ${loadBefore.toFixed(2)} -> ${loadAfter.toFixed(2)}: bulk copy ${bulkSeconds.toFixed(2)} s (${rate(bulkSeconds)}/s); ` +
        `reshard 3 -> 4 unthrottled ${unthrottled.seconds.toFixed(2)} s (${rate(unthrottled.seconds)}/s, ${(unthrottled.seconds / bulkSeconds).toFixed(2)}x the bulk copy), ` +
        `4 -> 3 throttled ${throttled.seconds.toFixed(2)} s (${rate(throttled.seconds)}/s, ${(throttled.seconds / bulkSeconds).toFixed(2)}x); ` +
        `job p99 with no reshard ${ms(without)} (before ${ms(latencies.get('before'))}, between ${ms(latencies.get('between'))}, after ${ms(latencies.get('after'))}), ` +
        `unthrottled ${ms(latencies.get('unthrottled'))} (${ratio('unthrottled')}), throttled ${ms(latencies.get('throttled'))} (${ratio('throttled')}); ` +
        `of which answered by the node asked first / sent on (421): unthrottled ${hops('unthrottled')}, throttled ${hops('throttled')}; ` +
        `requests ${without.length + ['unthrottled', 'throttled'].reduce((n, p) => n + (latencies.get(p)?.length ?? 0), 0)}, failures ${failures}; ` +
        `first walk listing / moving / giving way: unthrottled ${split(unthrottled.out)}, throttled ${split(throttled.out)}; a dry run listing every record ${plan.seconds.toFixed(2)} s`;
      console.log(line);
      rows.push(line);
      if (process.env.BENCH_VERBOSE === '1') console.log(throttled.out, unthrottled.out);
    } finally {
      await c.stop();
    }
  }
}
