// bench/failover.ts: the emergency recipe as an operator runs it, timed.
// Two shards with standbys (start-shards.sh, SHARDS_STANDBY=1, in a temporary
// directory), 4 writers POSTing new ids through the client without pause.
// Each round kills shard 1's primary machine (server and MariaDB, SIGKILL,
// its data directory deleted), runs `ch_client.ts failover`, and runs the
// rejoin command that the failover prints, as printed, once it prints it.
// Every line of both is stamped with the seconds since the kill, so that the
// time is seen where it goes; then the first 201 on shard 1's arc. Last, a
// planned switchover back. The load average is printed with each round.
//
//   node bench/failover.ts [ROUNDS=3]    (npm run bench:failover)

import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { expenseFor } from '../ch_client.ts';
import { discover, send, type View } from '../client/cluster.ts';
import { reconsider } from '../client/http.ts';
import { ROOT, startShardPairs, waitForExit } from '../test/shards.ts';

const ROUNDS = Number(process.argv[2] ?? 3);
const pairs = await startShardPairs(2);
const secret = join(pairs.dir, 'cluster-secret');
const seeds = [pairs.nodeOf(1), pairs.nodeOf(2), pairs.standbyOf(1), pairs.standbyOf(2)].join(',');
const view: View = (await discover([pairs.nodeOf(1), pairs.nodeOf(2)], 1)).view;
const node = pairs.nodeOf(1);

// Writers on both arcs; each 201 on node's arc, with its time.
const acked: number[] = [];
let stopped = false;
let n = 0;
const writers = Array.from({ length: 4 }, async (_, loop) => {
  while (!stopped) {
    const arc = view.map.nodes[loop % view.map.nodes.length]!.name;
    let id: string;
    do id = `f-${n++}`;
    while (view.place(id).owner.name !== arc);
    const res = await send(view, id, 'POST', '/v1/expenses', expenseFor(id)).catch(() => undefined);
    if (res?.status === 201 && arc === node) acked.push(performance.now());
    if (res?.status !== 201) await new Promise((r) => setTimeout(r, 20));
    if (res === undefined) await reconsider();
  }
});

/** Runs a command, each line of its output printed with the seconds since `zero`; resolves to its code and output. */
function stamped(label: string, command: string, args: string[], zero: number, onLine: (line: string) => void = () => {}) {
  const child = spawn(command, args, { cwd: ROOT, env: pairs.env });
  let out = '';
  const lines = (chunk: Buffer) => {
    for (const line of String(chunk).split('\n').filter(Boolean)) {
      console.log(`  ${((performance.now() - zero) / 1000).toFixed(1).padStart(5)} s  ${label}  ${line}`);
      out += `${line}\n`;
      onLine(line);
    }
  };
  child.stdout.on('data', lines);
  child.stderr.on('data', lines);
  return new Promise<{ code: number; out: string }>((resolve) => child.on('close', (code) => resolve({ code: code ?? 1, out })));
}

const figures: string[] = [];
let primary: 'primary' | 'standby' = 'primary';
try {
  for (let round = 1; round <= ROUNDS; round++) {
    const load = loadavg().map((l) => l.toFixed(2)).join(' ');
    const standby: 'primary' | 'standby' = primary === 'primary' ? 'standby' : 'primary';
    const to = standby === 'standby' ? pairs.standbyOf(1) : pairs.nodeOf(1);
    const before = acked.length;
    while (acked.length < before + 20) await new Promise((r) => setTimeout(r, 50));
    console.log(`round ${round}: load average ${load}; killing shard 1's ${primary} machine`);
    const pids = [await pairs.pid(1, primary, 'server.pid'), await pairs.pid(1, primary, 'mysqld.pid')];
    for (const pid of pids) process.kill(pid, 'SIGKILL');
    const killed = performance.now();
    await Promise.all(pids.map((pid) => waitForExit(pid)));
    await rm(join(pairs.machineDir(1, primary), 'mysql'), { recursive: true, force: true });
    // A 201 read after this is the new primary's: one in flight at the kill may still arrive before it.
    const gone = performance.now();
    let rejoin: Promise<{ code: number; out: string }> | undefined;
    const failover = await stamped('failover', process.execPath, ['ch_client.ts', 'failover', node, '--to', to, '--nodes', seeds, '--secret-file', secret], killed, (line) => {
      const asked = /run (\.\/start-shards\.sh rejoin (\d+))/.exec(line);
      if (asked !== null && rejoin === undefined) rejoin = stamped('rejoin  ', join(ROOT, 'start-shards.sh'), ['rejoin', asked[2]!], killed);
    });
    const rejoined = await rejoin;
    if (failover.code !== 0 || rejoined?.code !== 0) throw new Error(`round ${round}: failover exit ${failover.code}, rejoin exit ${rejoined?.code ?? 'never asked for'}`);
    while (!acked.some((t) => t > gone)) await new Promise((r) => setTimeout(r, 20));
    const first = (acked.find((t) => t > gone)! - killed) / 1000;
    figures.push(`round ${round}: the arc's first 201 ${first.toFixed(1)} s after the kill (load average before ${load}, after ${loadavg().map((l) => l.toFixed(2)).join(' ')})`);
    console.log(figures.at(-1));
    primary = standby;
  }
  // Planned: shard 1 back to the other machine, both alive.
  const to = primary === 'primary' ? pairs.standbyOf(1) : pairs.nodeOf(1);
  const load = loadavg().map((l) => l.toFixed(2)).join(' ');
  const started = performance.now();
  const planned = await stamped('failover', process.execPath, ['ch_client.ts', 'failover', node, '--to', to, '--nodes', seeds, '--secret-file', secret], started);
  const done = performance.now();
  const times = acked.filter((t) => t > started - 1000 && t < done + 1000);
  const pause = Math.max(0, ...times.slice(1).map((t, i) => t - times[i]!));
  figures.push(`planned: the command ${((done - started) / 1000).toFixed(1)} s (exit ${planned.code}); the longest pause between 201s on the arc ${(pause / 1000).toFixed(2)} s (load average ${load})`);
} finally {
  stopped = true;
  await Promise.all(writers);
  await pairs.stop();
}
console.log(figures.join('\n'));
