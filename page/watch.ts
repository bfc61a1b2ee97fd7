// page/watch.ts: what the live page shows of every node of the map, as this
// shard sees it: whether it answers at the address the map gives (rule 7), as
// which shard, in which role, at which epoch, and its counts (page/counts.ts).
//
// One watch per server, however many pages are open: it asks every node once
// a second while some page has asked in the last few seconds, then stops. A
// page's poll only reads what the watch saw last, and never waits for a node,
// so that no poll holds up a change of map (rule 5 waits for requests).

import http from 'node:http';
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
let seen = new Map<string, Seen>(); // node's name: what it said
let version = 0; // grows whenever what the nodes said changes
let said = '';

/** What the nodes of `map` said when last asked, and its version; starts the watch, or keeps it going. */
export function watch(map: ClusterMap): { seen: ReadonlyMap<string, Seen>; version: number } {
  const changed = watched?.epoch !== map.epoch;
  watched = map;
  askedAt = Date.now();
  if (timer === undefined) timer = setInterval(tick, EVERY_MS).unref();
  // A new map may name new addresses: ask them now, not at the next round.
  if (changed) void tick();
  return { seen, version };
}

async function tick(): Promise<void> {
  if (Date.now() - askedAt > IDLE_MS) {
    clearInterval(timer);
    timer = undefined;
    seen = new Map();
    version++;
    return;
  }
  if (asking || watched === undefined) return; // a round still waits for a slow node
  asking = true;
  const map = watched;
  try {
    const round = await Promise.all(everyNode(map).map(async (n) => [n.name, await ask(addressOf(map, n.name), n.shard)] as const));
    const text = JSON.stringify(round);
    if (text !== said) [seen, said, version] = [new Map(round), text, version + 1];
  } finally {
    asking = false;
  }
}

// node:http, kept alive: a round a second costs a few requests' worth of CPU, where fetch costs
// several times that. An idle connection is closed after 2 s, before a shard closes it (5 s),
// so that no round is sent on a connection that the node is closing.
const agent = new http.Agent({ keepAlive: true, maxSockets: 1, timeout: 2_000 });

/** One node's counts, at its address; it answers only as the shard the map binds its name to. */
async function ask(address: string, shard: string): Promise<Seen> {
  try {
    const { status, body } = await get(address, '/cluster/counts');
    if (status !== 200) return { address, answers: false, why: `HTTP ${status}: ${body.error ?? ''}` };
    if (body.shard !== shard) return { address, answers: false, why: `another shard answers there (${body.shard})` };
    const { role, epoch, live, incoming, moved, handsOff } = body;
    return { address, answers: true, role, epoch, live, incoming, moved, handsOff };
  } catch (err) {
    const refused = (err as NodeJS.ErrnoException).code === 'ECONNREFUSED';
    return { address, answers: false, why: refused ? 'connection refused' : (err as Error).message };
  }
}

/** A GET of JSON from host:port, within TIMEOUT_MS. */
function get(address: string, path: string): Promise<{ status: number; body: any }> {
  const at = address.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const req = http.get({ host: address.slice(0, at), port: Number(address.slice(at + 1)), path, agent, timeout: TIMEOUT_MS }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode!, body: JSON.parse(text) });
        } catch {
          reject(new Error(`HTTP ${res.statusCode}, and not JSON`));
        }
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${TIMEOUT_MS} ms`)));
    req.on('error', reject);
  });
}
