// page/watch.ts: what the live page shows of every node of the map, as this
// shard sees it: whether it answers at the address the map gives (rule 7), as
// which shard, in which role, at which epoch, and its counts (page/counts.ts).
//
// One watch per server, however many pages are open: it asks every node once
// a second while some page has asked in the last few seconds, then stops. A
// page's poll only reads what the watch saw last, and never waits for a node,
// so that no poll holds up a change of map (rule 5 waits for requests).

import { addressOf, everyNode, type ClusterMap } from '../api/cluster-map.ts';

const EVERY_MS = 1_000; // how often each node is asked while a page is open
const IDLE_MS = 5_000; // no page asked for this long: the watch stops
const TIMEOUT_MS = 900; // a node slower than this does not answer, for the page

/** A node as last seen: where it was asked, and what it said, or why it said nothing. */
export type Seen = {
  address: string;
  answers: boolean;
  why?: string;
  role?: string;
  epoch?: number | null;
  live?: number;
  incoming?: number;
  moved?: number;
  handsOff?: number | null;
};

let watched: ClusterMap | undefined;
let askedAt = 0;
let timer: NodeJS.Timeout | undefined;
let asking = false;
const seen = new Map<string, Seen>(); // node's name: what it said

/** What the nodes of `map` said when last asked; starts the watch, or keeps it going. */
export function watch(map: ClusterMap): ReadonlyMap<string, Seen> {
  const changed = watched?.epoch !== map.epoch;
  watched = map;
  askedAt = Date.now();
  if (timer === undefined) timer = setInterval(tick, EVERY_MS).unref();
  // A new map may name new addresses: ask them now, not at the next round.
  if (changed) void tick();
  return seen;
}

async function tick(): Promise<void> {
  if (Date.now() - askedAt > IDLE_MS) {
    clearInterval(timer);
    timer = undefined;
    seen.clear();
    return;
  }
  if (asking || watched === undefined) return; // a round still waits for a slow node
  asking = true;
  const map = watched;
  try {
    const said = await Promise.all(everyNode(map).map(async (n) => [n.name, await ask(addressOf(map, n.name), n.shard)] as const));
    seen.clear();
    for (const [name, s] of said) seen.set(name, s);
  } finally {
    asking = false;
  }
}

/** One node's counts, at its address; it answers only as the shard the map binds its name to. */
async function ask(address: string, shard: string): Promise<Seen> {
  try {
    const res = await fetch(`http://${address}/cluster/counts`, { signal: AbortSignal.timeout(TIMEOUT_MS), headers: { accept: 'application/json' } });
    const body = await res.json();
    if (!res.ok) return { address, answers: false, why: `HTTP ${res.status}: ${body.error ?? ''}` };
    if (body.shard !== shard) return { address, answers: false, why: `another shard answers there (${body.shard})` };
    const { role, epoch, live, incoming, moved, handsOff } = body;
    return { address, answers: true, role, epoch, live, incoming, moved, handsOff };
  } catch (err) {
    const why = (err as Error).name === 'TimeoutError' ? `no answer within ${TIMEOUT_MS} ms` : ((err as { cause?: Error }).cause?.message ?? (err as Error).message);
    return { address, answers: false, why };
  }
}
