// bench/startup.ts: how long the assignment's job takes from process start to
// exit (10 ids, three running shards), and how long a shard's server takes to
// its first answer; each without and with Node's compile cache, which keeps
// the type-stripped, compiled modules between runs. Best of 5 runs each.
// It starts three throwaway shards and stops them at the end. Run: npm run bench:startup

import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout } from 'node:timers/promises';
import { run, startServer, startShards } from '../test/shards.ts';

const RUNS = 5;
// A server first answers after 0.15 s or more: polling every 2 ms adds at most
// 2 ms to that, and leaves the CPU to the server being timed.
const POLL_MS = 2;
const ANSWER_DEADLINE_MS = 10_000; // far beyond any healthy start
const shards = await startShards(3);
const cache = await mkdtemp(join(tmpdir(), 'chs-cache-'));
try {
  /** Wall seconds and peak RSS (MB) of one process, start to exit, from /usr/bin/time. */
  async function job(env: NodeJS.ProcessEnv): Promise<{ seconds: number; mb: number }> {
    const res = await run('/usr/bin/time', ['-f', '%e %M', process.execPath, 'ch_client.ts', '--nodes', shards.nodes.join(',')], { env });
    if (!/^10 of 10 /m.test(res.stdout)) throw new Error(`the job failed: ${res.stdout}${res.stderr}`);
    const [seconds, kb] = res.stderr.trim().split('\n').at(-1)!.split(' ').map(Number);
    return { seconds: seconds!, mb: kb! / 1024 };
  }

  /** Seconds from spawning server.ts to its first 200 on /healthz. */
  async function firstAnswer(env: NodeJS.ProcessEnv): Promise<number> {
    const start = performance.now();
    const server = await startServer({ ...(await shards.databaseEnv(1)), ...env });
    try {
      for (;;) {
        const res = await fetch(`${server.url}/healthz`).catch(() => undefined);
        if (res?.status === 200) return (performance.now() - start) / 1000;
        if (performance.now() - start > ANSWER_DEADLINE_MS) {
          const last = res === undefined ? 'no connection' : `status ${res.status}`;
          throw new Error(`server.ts gave no 200 on /healthz within ${ANSWER_DEADLINE_MS / 1000} s (last: ${last}):\n${server.output()}`);
        }
        await setTimeout(POLL_MS);
      }
    } finally {
      await server.stop();
    }
  }

  const best = async <T extends number | { seconds: number }>(fn: () => Promise<T>): Promise<T> => {
    let fastest: T | undefined;
    for (let i = 0; i < RUNS; i++) {
      const t = await fn();
      const s = (x: T) => (typeof x === 'number' ? x : x.seconds);
      if (fastest === undefined || s(t) < s(fastest)) fastest = t;
    }
    return fastest!;
  };

  const plain = { ...process.env, NODE_COMPILE_CACHE: '' };
  const cached = { ...process.env, NODE_COMPILE_CACHE: cache };
  await job(cached); // fills the cache
  const bare = await best(async () => {
    const start = performance.now();
    await new Promise((resolve) => spawn(process.execPath, ['-e', '0']).on('exit', resolve));
    return (performance.now() - start) / 1000;
  });
  const [jobPlain, jobCached] = [await best(() => job(plain)), await best(() => job(cached))];
  await firstAnswer(cached);
  const [serverPlain, serverCached] = [await best(() => firstAnswer(plain)), await best(() => firstAnswer(cached))];

  console.log(`best of ${RUNS}; Node ${process.version}; bare \`node -e 0\` takes ${bare.toFixed(2)} s\n`);
  console.log('                                   no cache     compile cache');
  console.log(`the 10-id job, start to exit       ${jobPlain.seconds.toFixed(2)} s       ${jobCached.seconds.toFixed(2)} s`);
  console.log(`  its peak memory                  ${jobPlain.mb.toFixed(0)} MB        ${jobCached.mb.toFixed(0)} MB`);
  console.log(`a server, spawn to first answer    ${serverPlain.toFixed(2)} s       ${serverCached.toFixed(2)} s`);
  console.log(`\nstartup job = ${jobCached.seconds.toFixed(2)} s with the cache (target < 0.30), ${jobPlain.seconds.toFixed(2)} s without`);
} finally {
  await shards.stop();
  await rm(cache, { recursive: true, force: true });
}
