// bench/standbys.ts: what the second standby costs, against one and none, in
// one run. Three clusters in turn, each of SHARDS shards started by
// start-shards.sh (in a temporary directory, on free ports): no standby
// (SHARDS_STANDBY=0, a lone MySQL), a pair (1) and a primary with two
// standbys (2, semi-sync waiting for one ack, under the lease of
// election/rules.ts E1-E2). On each, the same load through the real client
// (client/cluster.ts send, with its cluster map): IN_FLIGHT loops for SECONDS
// of a write-heavy mix (9 POSTs of new ids to 1 GET), then as long of a
// read-heavy one (1 to 9), after a warm-up of writes that stores the ids the
// GETs read. For each: writes/s, reads/s, their p50 and p99, the CPU all the
// cluster's processes spent per request, the load average; then what each
// mode holds: its processes, their memory, its data directory (du), its CPU
// when idle. Last, the ratios against no standby.
//
//   node bench/standbys.ts [SECONDS=15] [SHARDS=2] [IN_FLIGHT=16]    (npm run bench:standbys)

import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { promisify } from 'node:util';
import { expenseFor } from '../ch_client.ts';
import { discover, send, type View } from '../client/cluster.ts';
import { startShardPairs, startShards } from '../test/shards.ts';
import { cpuOf } from './load.ts';

const SECONDS = Number(process.argv[2] ?? 15);
const SHARDS = Number(process.argv[3] ?? 2);
const IN_FLIGHT = Number(process.argv[4] ?? 16);
const WARM_SECONDS = 3;
// The standbys apply what they acknowledged a little later: the idle CPU is counted once they have.
const SETTLE_SECONDS = 5;
// /proc counts CPU in 10 ms ticks: 10 s gives the idle figure 1 ms/s of resolution.
const IDLE_SECONDS = 10;
const MODES = [0, 1, 2] as const;
const MIXES = [
  { name: 'write-heavy', writesInTen: 9 },
  { name: 'read-heavy', writesInTen: 1 },
] as const;

type Mix = (typeof MIXES)[number]['name'];
type Result = { writesPerSecond: number; readsPerSecond: number; write: Quantiles; read: Quantiles; cpuMsPerRequest: number; failed: number; load: [number, number] };
type Quantiles = { p50: number; p99: number };
type Footprint = { processes: number; rssMiB: number; diskMiB: number; kibPerRecord: number; idleCpuMsPerSecond: number };

/** Every process of a cluster: those its pid files name (each machine's server and MySQL), and their children. */
function clusterPids(dir: string): number[] {
  const named = readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith('server.pid') || file.endsWith('mysqld.pid'))
    .map((file) => Number(readFileSync(`${dir}/${file}`, 'utf8').trim()));
  const parentOf = new Map<number, number>();
  for (const entry of readdirSync('/proc').filter((e) => /^\d+$/.test(e))) {
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parentOf.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // ended while we looked
    }
  }
  const pids = new Set(named.filter((pid) => parentOf.has(pid)));
  for (let grown = true; grown; ) {
    grown = false;
    for (const [pid, parent] of parentOf) if (pids.has(parent) && !pids.has(pid)) (pids.add(pid), (grown = true));
  }
  return [...pids];
}

const cpuMs = (pids: number[]) => pids.reduce((sum, pid) => sum + cpuOf(pid), 0) / 1000;
const rssMiB = (pids: number[]) => pids.reduce((sum, pid) => sum + Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0), 0) / 1024;

async function duMiB(dir: string): Promise<number> {
  const { stdout } = await promisify(execFile)('du', ['-sk', dir]);
  return Number(stdout.split('\t')[0]) / 1024;
}

function quantiles(ms: number[]): Quantiles {
  const sorted = [...ms].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
  return { p50: at(0.5), p99: at(0.99) };
}

/**
 * IN_FLIGHT loops for `seconds`: of each ten requests a loop sends,
 * `writesInTen` POST a new id and the rest GET a stored one. A request that
 * fails (no answer, or not 201/200) is counted, not timed.
 */
async function drive(view: View, stored: string[], prefix: string, writesInTen: number, seconds: number, pids: number[]): Promise<Result> {
  const latencies = { write: [] as number[], read: [] as number[] };
  let failed = 0;
  let n = 0;
  const [load, cpu, started] = [loadavg()[0]!, cpuMs(pids), performance.now()];
  const end = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      for (let k = 0; performance.now() < end; k++) {
        const write = k % 10 < writesInTen;
        // A stride through the stored ids: every GET reads a record, spread over the arcs.
        const id = write ? `${prefix}-${n++}` : stored[(n++ * 7919) % stored.length]!;
        const t = performance.now();
        const res = await (write ? send(view, id, 'POST', '/v1/expenses', expenseFor(id)) : send(view, id, 'GET', `/v1/expenses/${id}`)).catch(() => undefined);
        if (res?.status !== (write ? 201 : 200)) {
          failed++;
          continue;
        }
        latencies[write ? 'write' : 'read'].push(performance.now() - t);
        if (write) stored.push(id);
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const requests = latencies.write.length + latencies.read.length;
  return {
    writesPerSecond: latencies.write.length / elapsed,
    readsPerSecond: latencies.read.length / elapsed,
    write: quantiles(latencies.write),
    read: quantiles(latencies.read),
    cpuMsPerRequest: (cpuMs(pids) - cpu) / requests,
    failed,
    load: [load, loadavg()[0]!],
  };
}

async function measure(standbys: 0 | 1 | 2): Promise<{ results: Map<Mix, Result>; footprint: Footprint }> {
  const cluster = standbys === 0 ? await startShards(SHARDS) : await startShardPairs(SHARDS, { standbys });
  try {
    const pids = clusterPids(cluster.dir);
    const diskBefore = await duMiB(cluster.dir);
    const { view } = await discover(Array.from({ length: SHARDS }, (_, i) => cluster.nodeOf(i + 1)), 1);
    const stored: string[] = [];
    await drive(view, stored, `s${standbys}-warm`, 10, WARM_SECONDS, pids);
    const results = new Map<Mix, Result>();
    for (const mix of MIXES) {
      const r = await drive(view, stored, `s${standbys}-${mix.name}`, mix.writesInTen, SECONDS, pids);
      results.set(mix.name, r);
      const ms = (q: Quantiles) => `p50 ${q.p50.toFixed(1).padStart(5)} p99 ${q.p99.toFixed(1).padStart(6)} ms`;
      console.log(
        `${standbys} standby(s)  ${mix.name.padEnd(11)}  ${r.writesPerSecond.toFixed(0).padStart(4)} writes/s (${ms(r.write)})  ${r.readsPerSecond.toFixed(0).padStart(4)} reads/s (${ms(r.read)})  ` +
          `cluster CPU ${r.cpuMsPerRequest.toFixed(2)} ms/request  failed ${r.failed}  load ${r.load[0].toFixed(1)} -> ${r.load[1].toFixed(1)}`,
      );
    }
    // Idle: what the cluster spends with no request, the lease's renewals among it (E1, every RENEW_MS).
    await new Promise((resolve) => setTimeout(resolve, SETTLE_SECONDS * 1000));
    const idleCpu = cpuMs(pids);
    await new Promise((resolve) => setTimeout(resolve, IDLE_SECONDS * 1000));
    const footprint: Footprint = {
      processes: pids.length,
      rssMiB: rssMiB(pids),
      diskMiB: diskBefore,
      kibPerRecord: ((await duMiB(cluster.dir)) - diskBefore) * 1024 / stored.length,
      idleCpuMsPerSecond: (cpuMs(pids) - idleCpu) / IDLE_SECONDS,
    };
    console.log(
      `${standbys} standby(s)  ${footprint.processes} processes, ${footprint.rssMiB.toFixed(0)} MiB resident, data dir ${footprint.diskMiB.toFixed(0)} MiB at start, ` +
        `then ${footprint.kibPerRecord.toFixed(2)} KiB more per record (${stored.length} records), idle CPU ${footprint.idleCpuMsPerSecond.toFixed(1)} ms/s`,
    );
    return { results, footprint };
  } finally {
    await cluster.stop();
  }
}

console.log(`${SHARDS} shards, ${IN_FLIGHT} in flight through client/cluster.ts send, ${SECONDS} s per mix, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')} at ${new Date().toISOString()}`);
const measured = new Map<number, Awaited<ReturnType<typeof measure>>>();
for (const standbys of MODES) measured.set(standbys, await measure(standbys));

const x = (a: number, b: number) => `${(a / b).toFixed(2)}x`.padStart(6);
const base = measured.get(0)!;
console.log('\nagainst 0 standbys, measured above (throughput: higher is better; latency, CPU, footprint: lower is better; idle CPU as a difference, its base being near 0)');
for (const standbys of MODES.slice(1)) {
  const { results, footprint } = measured.get(standbys)!;
  for (const mix of MIXES) {
    const [r, b] = [results.get(mix.name)!, base.results.get(mix.name)!];
    console.log(
      `${standbys} standby(s)  ${mix.name.padEnd(11)}  writes/s ${x(r.writesPerSecond, b.writesPerSecond)}  reads/s ${x(r.readsPerSecond, b.readsPerSecond)}  ` +
        `write p50 ${x(r.write.p50, b.write.p50)} p99 ${x(r.write.p99, b.write.p99)}  read p50 ${x(r.read.p50, b.read.p50)} p99 ${x(r.read.p99, b.read.p99)}  CPU/request ${x(r.cpuMsPerRequest, b.cpuMsPerRequest)}`,
    );
  }
  const f = base.footprint;
  console.log(
    `${standbys} standby(s)  processes ${x(footprint.processes, f.processes)}  resident ${x(footprint.rssMiB, f.rssMiB)}  data dir at start ${x(footprint.diskMiB, f.diskMiB)}  ` +
      `per record ${x(footprint.kibPerRecord, f.kibPerRecord)}  idle CPU +${(footprint.idleCpuMsPerSecond - f.idleCpuMsPerSecond).toFixed(1)} ms/s`,
  );
}
