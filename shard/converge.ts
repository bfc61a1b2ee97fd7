// shard/converge.ts: a shard that learns of a newer map takes it without an
// operator (api/cluster-map.ts, rule 9), as Redis nodes spread a newer config
// epoch. A reshard killed while it put its final map on the nodes leaves some
// of them behind; their clients, who route by the newer map, tell them so.
//
// A client names the epoch it routes by in every request (Cluster-Map-Epoch).
// When that is higher than this shard's, the shard asks the other nodes of its
// own map for theirs, in the background: the request that told it goes on
// under the map it started with (rule 5), one round runs at a time, and a new
// round starts at most every ROUND_GAP_MS, so that no client's word, true or
// not, can make a shard do more than that.

import { everyNode, signedBy, checkMap, addressOf, describeMap, type ClusterMap } from '../api/cluster-map.ts';
import type { Cluster } from './cluster.ts';
import { log } from './http.ts';

/** The header in which a client names the epoch of the map it routes by. */
export const HINT = 'cluster-map-epoch';

// A round asks every other node of the map at once; each has this long to answer.
const ASK_TIMEOUT_MS = 1_000;
// At most one round in this long, however many requests name a newer epoch.
const ROUND_GAP_MS = 250;

/** Takes a client's word that a newer map exists, and converges on it (rule 9). */
export type Converge = (req: { headers: Record<string, string | string[] | undefined> }) => void;

export function createConverge(cluster: Cluster, secret: string | undefined): Converge {
  let running = false;
  let last = 0;

  /** One round: ask the other nodes of our own map, take the newest map that passes rule 9's checks. */
  async function round(): Promise<void> {
    const held = await cluster.load();
    const mine = held.map;
    if (!held.writable || mine === undefined) return;
    // At the addresses our own map gives (rule 7), never one a client named, and each must answer as the shard our map binds it to.
    const others = everyNode(mine).filter((n) => n.shard !== held.shard);
    const answers = await Promise.all(others.map(async (n): Promise<{ from: string; map: ClusterMap } | undefined> => {
      try {
        const res = await fetch(`http://${addressOf(mine, n.name)}/cluster/map`, { signal: AbortSignal.timeout(ASK_TIMEOUT_MS) });
        const body = (await res.json()) as { shard?: unknown; map?: unknown };
        if (res.status !== 200 || body.shard !== n.shard || body.map === null || body.map === undefined) return undefined;
        return { from: n.name, map: checkMap(body.map) };
      } catch {
        return undefined;
      }
    }));
    const fit = answers
      .filter((a) => a !== undefined)
      .filter(({ map }) => map.epoch > mine.epoch && map.moving === undefined && (secret === undefined || signedBy(map, secret)))
      .sort((x, y) => y.map.epoch - x.map.epoch);
    const best = fit[0];
    if (best === undefined) return;
    // Rules 5 and 6: by the operator's own path, over the epoch we hold; a refusal leaves the map we had.
    const refusal = await cluster.install(best.map, mine.epoch);
    const why = refusal === undefined ? '' : typeof refusal === 'object' ? refusal.ring : refusal;
    log(refusal === undefined
      ? `rule 9: took the cluster map at ${describeMap(best.map)} from ${best.from}; this shard was at epoch ${mine.epoch}`
      : `rule 9: did not take the map at epoch ${best.map.epoch} from ${best.from}: ${why}`);
  }

  return (req) => {
    const sent = req.headers[HINT];
    if (typeof sent !== 'string' || !/^\d{1,16}$/.test(sent)) return;
    const held = cluster.current();
    if (held?.map === undefined || !held.writable || Number(sent) <= held.map.epoch) return;
    const now = Date.now();
    if (running || now - last < ROUND_GAP_MS) return;
    running = true;
    last = now;
    round()
      .catch((err: Error) => log(`rule 9: could not fetch a newer cluster map: ${err.message}`, 'stderr'))
      .finally(() => {
        running = false;
        last = Date.now();
      });
  };
}
