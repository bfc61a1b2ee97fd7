// operator/throttle.ts: a reshard's moves give way to live traffic. A page
// moves only when both its nodes answer about as fast as before the moves:
// the throttle times one light request to each (GET /healthz: the node's
// event loop and a query to its MySQL, as a client's request meets them) and
// compares the last few with the same request timed before the walk moved
// anything. While a node answers slower than SLOWER times that, plus a little
// for jitter, the page waits, longer each time; when it answers as before, the
// waits shrink again; a node slow for its own reasons holds a page back by
// 2 to 3 s of waits at most (PAGE_WAIT_MS, and the last wait). Vitess's tablet throttler does the same with replication lag; here the
// latency is the signal.
//
// A probe sees only what a page left behind, not what it does while it runs,
// and a client's p99 is set by the requests that meet a page. So throttled,
// one page moves at a time, and after each the moves rest four times as long as
// it took: at most a fifth of the time, one page's work at once, lands beside clients.
//
// RESHARD_THROTTLE=0 turns it off: the records of up to NODES nodes move at
// once (operator/walk.ts: those that nothing moves onto), each node's pages
// IN_FLIGHT at a time, each page up to BULK_RECORDS, listed BULK_LIST at a
// time, without probes or rests (bench/reshard.ts measures both). Throttled,
// a page is POLITE_RECORDS, and what moves is listed as many at a time: the
// listing is not held back by probes, so each of its answers, which a node
// builds while clients wait behind it, stays as small as a page.

import { call } from '../client/http.ts';

const SLOWER = 2;
const JITTER_MS = 2;
// One probe is noise: a node is slow when the median of its last few is.
const RECENT = 3;
const PROBES = 5;
const MAX_WAIT_MS = 1_000;
const FIRST_WAIT_MS = 10;
// A node that stays slow for its own reasons must not stop the reshard: a page goes after this long.
const PAGE_WAIT_MS = 2_000;

// Unthrottled: nodes whose records move at once, and pages in flight from each. The moves are
// bound by the machines' CPU, and more pages at once into one new owner only contend there
// (docs/performance.md, "Two pages in flight": with four, the shards' CPU 7.5 to 8.1 s against 7.3 s, and no time saved).
const NODES = 4;
const IN_FLIGHT = 2;
// Throttled, after each page the moves rest this many times as long as it took. What a
// throttled reshard costs a client is mostly its creates into a moving arc: each takes two
// hops (rule 3a), 2.5% to 5% of the job's requests, and the more pages land beside them the
// longer their tail (docs/performance.md). bench/reshard.ts on a quiet machine: resting
// twice, the job's p99 1.6x to 3.0x its p99 with no reshard at 20,000 records (7 runs, 3 over
// 2x); resting four times, 1.1x to 1.8x (10 runs at 20,000 and 200,000, with and without
// standbys). Resting four times, the throttled reshard takes about 1.4x as long.
const REST = 4;
// The most records a move step's page carries (PAGE_MAX, shard/move-pages.ts).
const BULK_RECORDS = 1_000;
// Throttled, a client's p99 is set by the requests that meet a page's statements, so a page is
// small (docs/performance.md: pages of 60 KB, about 240 records, gave 1.8x to 8.6x the p99
// with no reshard on a quiet machine, four runs of five over 2x; pages of 15 KB, about 60
// records, 1.1x to 2.8x).
const POLITE_RECORDS = 60;
// Records a page of the listing holds (a shard lists up to 4,000: shard/move-pages.ts).
const BULK_LIST = 4_000;

export type Throttle = {
  /** From how many nodes records may move at once. */
  nodes: number;
  /** How many pages may move at once from one node. */
  inFlight: number;
  /** The most records one page of moves carries. */
  pageRecords: number;
  /** How many records of what must move one request lists. */
  listPage: number;
  /** Moves one page between these nodes (addresses): once they answer about as fast as before the moves, and then rests. */
  page<T>(addresses: string[], move: () => Promise<T>): Promise<T>;
  /** How long the moves waited and rested, in all. */
  waitedMs(): number;
};

export function createThrottle(enabled = process.env.RESHARD_THROTTLE !== '0'): Throttle {
  const baseline = new Map<string, Promise<number>>();
  let wait = 0;
  let waited = 0;

  // A node that does not answer is no reason to wait: the move's own request meets it, and says so.
  const probe = async (address: string): Promise<number> => {
    const started = performance.now();
    await call(address, 'GET', '/healthz');
    return performance.now() - started;
  };
  // The median of a few probes sent at once, the first time a node is moved to or from. At once, so
  // that a node frozen from the start is given up after one timeout (client/http.ts), as a burst of moves would.
  const usual = (address: string): Promise<number> => {
    let known = baseline.get(address);
    if (known === undefined) {
      known = (async () => {
        const times = await Promise.all(Array.from({ length: PROBES }, () => probe(address)));
        return times.sort((a, b) => a - b)[PROBES >> 1]!;
      })();
      baseline.set(address, known);
    }
    return known;
  };
  const recent = new Map<string, number[]>();
  const slow = async (address: string) => {
    const before = await usual(address);
    const times = [...(recent.get(address) ?? []), await probe(address)].slice(-RECENT);
    recent.set(address, times);
    return [...times].sort((a, b) => a - b)[times.length >> 1]! > before * SLOWER + JITTER_MS;
  };

  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  async function quiet(addresses: string[]): Promise<void> {
    for (let paged = 0; paged < PAGE_WAIT_MS; paged += wait) {
      const busy = (await Promise.all(addresses.map((a) => slow(a).catch(() => false)))).some(Boolean);
      if (!busy) {
        wait = Math.floor(wait / 2);
        return;
      }
      wait = Math.min(MAX_WAIT_MS, Math.max(FIRST_WAIT_MS, wait * 2));
      waited += wait;
      await sleep(wait);
    }
  }

  return {
    nodes: enabled ? 1 : NODES,
    inFlight: enabled ? 1 : IN_FLIGHT,
    pageRecords: enabled ? POLITE_RECORDS : BULK_RECORDS,
    listPage: enabled ? POLITE_RECORDS : BULK_LIST,
    async page(addresses, move) {
      if (!enabled) return move();
      await quiet(addresses);
      const started = performance.now();
      try {
        return await move();
      } finally {
        const rest = (performance.now() - started) * REST;
        waited += rest;
        await sleep(rest);
      }
    },
    waitedMs: () => waited,
  };
}
