// operator/throttle.ts: a reshard's moves give way to live traffic. Before a
// page moves, the throttle times one light request to each node of the move
// (GET /healthz: the node's event loop and a query to its MySQL, as a
// client's request meets them) and compares the last few with the same
// request timed before the walk moved anything. While a node answers slower
// than SLOWER times that, plus a little for jitter, the page waits, longer each time; when
// it answers as before, the waits shrink again; a node slow for its own
// reasons holds a page back 2 s at most. Vitess's tablet throttler
// does the same with replication lag; here the latency is the signal.
//
// RESHARD_THROTTLE=0 turns it off (bench/reshard.ts measures both).

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

export type Throttle = {
  /** Resolves when every one of these nodes (addresses) answers about as fast as before the moves. */
  before(addresses: string[]): Promise<void>;
  /** How long the moves waited, in all. */
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

  return {
    async before(addresses) {
      if (!enabled) return;
      for (let paged = 0; paged < PAGE_WAIT_MS; paged += wait) {
        const busy = (await Promise.all(addresses.map((a) => slow(a).catch(() => false)))).some(Boolean);
        if (!busy) {
          wait = Math.floor(wait / 2);
          return;
        }
        wait = Math.min(MAX_WAIT_MS, Math.max(FIRST_WAIT_MS, wait * 2));
        waited += wait;
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    },
    waitedMs: () => waited,
  };
}
