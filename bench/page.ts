// bench/page.ts: what the live page (page/) costs the shard that serves it,
// in one run: the API's CPU per request with 10 pages open against none.
//
// Three throwaway shards with their map; the load (bench/load.ts: POSTs of
// fresh ids that shard 1 owns, then GETs of them, 8 in flight) goes to shard
// 1, which also serves the pages. The pages are real: 10 tabs of one headless
// Chromium (test/browser.ts), each polling as page/live.js does. For "none"
// the tabs go to about:blank, and the run waits until the shard's watch of
// its peers has stopped (page/watch.ts); for "pages" they load the page again
// and draw the ring before anything counts. The two alternate, each first in
// every other repetition. The CPU counted is the shard's server process's
// own (utime + stime from /proc), all of it: the pages' polls and its watch
// of the nodes are part of what each API request costs it.
//
// Run: node bench/page.ts
//   PAGE_REPS=8 PAGE_COUNT=3000 PAGE_TABS=10   repetitions, requests per phase, tabs

import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { HashRing } from '../ring.ts';
import { chromium, startBrowser, type Page } from '../test/browser.ts';
import { startShards } from '../test/shards.ts';
import { expenseFor } from '../ch_client.ts';
import { cpuOf, measure, median, pooled, target, type Op, type Sample } from './load.ts';

const REPS = Number(process.env.PAGE_REPS ?? 8);
const COUNT = Number(process.env.PAGE_COUNT ?? 3_000);
const TABS = Number(process.env.PAGE_TABS ?? 10);
const IN_FLIGHT = 8;
const OPS: Op[] = ['POST', 'GET'];
const WARM_UP = 6_000;
const WATCH_STOPS_MS = 6_500; // page/watch.ts stops 5 s after the last poll, at its next round
const PAGES_SETTLE_MS = 2_000;
const IDLE_MS = 10_000; // with no load: how long the server's CPU is counted

type Phase = 'none' | 'pages';

const command = await chromium();
if (command === undefined) throw new Error('bench/page.ts needs Chromium (Debian: apt-get install chromium)');
const dir = await mkdtemp(join(tmpdir(), 'chs-bench-page-'));
const shards = await startShards(3);
const browser = await startBrowser(command, dir);
try {
  const node = shards.nodes[0]!;
  const ring = new HashRing(shards.nodes, 1);
  const server = target(`http://${node}`, await shards.pid(1, 'server.pid'), await shards.pid(1, 'mysqld.pid'), IN_FLIGHT);
  // Ids this shard owns, however small its arc, so that every request is served here (201, 200), not sent on (421).
  const owned = (prefix: string, count: number): Array<[string, string]> => {
    const items: Array<[string, string]> = [];
    for (let i = 0; items.length < count; i++) if (ring.get(`${prefix}${i}`) === node) items.push([`${prefix}${i}`, JSON.stringify(expenseFor(`${prefix}${i}`))]);
    return items;
  };
  for (const op of OPS) await measure(server, op, owned('warm-', WARM_UP), IN_FLIGHT);

  const tabs: Page[] = [];
  for (let i = 0; i < TABS; i++) tabs.push(await browser.open('about:blank'));
  const samples: Record<Phase, Sample[]> = { none: [], pages: [] };
  for (let rep = 0; rep < REPS; rep++) {
    const order: Phase[] = rep % 2 === 0 ? ['none', 'pages'] : ['pages', 'none'];
    for (const phase of order) {
      await showPages(tabs, phase === 'pages' ? `http://${node}/` : 'about:blank');
      const items = owned(`r${rep}${phase}-`, COUNT);
      let total: Sample = { requests: 0, seconds: 0, cpuUs: 0, databaseCpuUs: 0 };
      for (const op of OPS) {
        const got = await measure(server, op, items, IN_FLIGHT);
        total = { requests: total.requests + got.requests, seconds: total.seconds + got.seconds, cpuUs: total.cpuUs + got.cpuUs, databaseCpuUs: total.databaseCpuUs + got.databaseCpuUs };
      }
      samples[phase].push(total);
      console.log(`rep ${rep + 1} ${phase.padEnd(5)}  ${total.requests} requests  ${(total.cpuUs / total.requests).toFixed(0).padStart(5)} µs/request  ${(total.requests / total.seconds).toFixed(0).padStart(5)} req/s`);
    }
  }
  report(samples);
  // With no load at all: what the open pages cost the server each second, whatever the rate of requests.
  const idle: Record<Phase, number[]> = { none: [], pages: [] };
  for (let rep = 0; rep < 2; rep++) {
    for (const phase of ['none', 'pages'] as const) {
      await showPages(tabs, phase === 'pages' ? `http://${node}/` : 'about:blank');
      const cpu = cpuOf(server.pid);
      await new Promise((r) => setTimeout(r, IDLE_MS));
      idle[phase].push(((cpuOf(server.pid) - cpu) / IDLE_MS) * 1000);
    }
  }
  const perSecond = (xs: number[]) => (xs.reduce((a, b) => a + b, 0) / xs.length / 1000).toFixed(1);
  console.log(`with no load, the server's CPU ms per second: none ${perSecond(idle.none)}, ${TABS} pages ${perSecond(idle.pages)} (${IDLE_MS / 1000} s twice each; /proc counts in 10 ms ticks)`);
} finally {
  await browser.close();
  await shards.stop();
  await rm(dir, { recursive: true, force: true });
}

/** Every tab to `url`; then the wait that makes the phase what it says (see the header). */
async function showPages(tabs: Page[], url: string): Promise<void> {
  await Promise.all(tabs.map((tab) => tab.goto(url)));
  if (url === 'about:blank') return void (await new Promise((r) => setTimeout(r, WATCH_STOPS_MS)));
  await Promise.all(tabs.map((tab) => tab.until('the ring', `document.querySelector('#ring svg')`, 30_000)));
  await new Promise((r) => setTimeout(r, PAGES_SETTLE_MS));
}

function report(samples: Record<Phase, Sample[]>): void {
  const [none, pages] = [pooled(samples.none), pooled(samples.pages)];
  const diffs = samples.pages.map((s, i) => s.cpuUs / s.requests - samples.none[i]!.cpuUs / samples.none[i]!.requests);
  const mean = diffs.reduce((a, b) => a + b, 0) / diffs.length;
  const spread = Math.sqrt(diffs.reduce((a, d) => a + (d - mean) ** 2, 0) / (diffs.length - 1) / diffs.length);
  console.log(`\n${TABS} pages open against none: shard 1's server, POSTs then GETs of ${COUNT} ids at ${IN_FLIGHT} in flight, ${REPS} interleaved repetitions`);
  console.log(`${cpus().length} cores, ${cpus()[0]?.model.trim() ?? 'unknown CPU'}; Node ${process.version}`);
  console.log(`CPU µs per API request: none ${none.cpuPerRequest.toFixed(1)}, pages ${pages.cpuPerRequest.toFixed(1)}; ratio pages/none ${(pages.cpuPerRequest / none.cpuPerRequest).toFixed(3)}`);
  console.log(`paired differences (pages - none), µs: median ${median(diffs).toFixed(1)}, mean ${mean.toFixed(1)}, 95% interval ${(mean - 2 * spread).toFixed(1)} to ${(mean + 2 * spread).toFixed(1)}`);
  console.log(`requests per second: none ${none.rps.toFixed(0)}, pages ${pages.rps.toFixed(0)}; MariaDB's CPU µs per request: none ${none.databaseCpuPerRequest.toFixed(1)}, pages ${pages.databaseCpuPerRequest.toFixed(1)}`);
}
