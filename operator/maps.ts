// operator/maps.ts: the one installer. Every map an operator puts on the
// nodes (a reshard's take and end, a failover's, a forget's, a repair) goes
// through install(), by compare-and-set on each node's epoch, under rules 10
// and 13 of api/cluster-map.ts: the replaced map's lock node first, then the
// others over whatever older map each holds.

import { addressOf, everyNode, sameMap, signMap, type ClusterMap } from '../api/cluster-map.ts';
import { ask, type Said } from '../client/cluster.ts';
import { call, forgive, lostMs, problem, type Answer } from '../client/http.ts';

/** Rule 7: where a node answers, by the first of `maps` that names it; a name no map knows is its own address. */
export function whereIn(...maps: Array<ClusterMap | undefined>): (node: string) => string {
  return (node) => {
    const map = maps.find((m) => m !== undefined && everyNode(m).some((n) => n.name === node));
    return map === undefined ? node : addressOf(map, node);
  };
}

/**
 * PUT /cluster/map on one node, at its address under `map` (rule 7), over the
 * epoch it holds now. Every map the operator puts is signed here (rule 9): with
 * the cluster secret, it carries a MAC, so that a shard may take it from another.
 */
export function putMap(node: string, map: ClusterMap, over: number | undefined, secret: string | undefined, where = whereIn(map)): Promise<Answer> {
  const condition: Record<string, string> = over === undefined ? { 'if-none-match': '*' } : { 'if-match': `"${over}"` };
  return call(where(node), 'PUT', '/cluster/map', signMap(map, secret), condition, { secret });
}

/** The epoch a node's answer holds: its map's, or the epoch column of a stored map it cannot read. */
export const epochOf = (answer: Said | undefined) => (answer === undefined || 'why' in answer ? undefined : (answer.broken?.epoch ?? answer.map?.epoch));
export const brokenOn = (answer: Said | undefined) => (answer !== undefined && 'broken' in answer ? answer.broken : undefined);

/** Rule 10: the replaced map's first node that `next` does not forget; with no map before, `next`'s first. */
export function lockNode(over: ClusterMap | undefined, next: ClusterMap): string {
  const forgotten = new Set((next.forgot ?? []).map((f) => f.name));
  return (over ?? next).nodes.map((n) => n.name).find((name) => !forgotten.has(name)) ?? next.nodes[0]!.name;
}

/** Rule 13: a clock of the time this process ran, in ms since it was made. */
export function runClock(): () => number {
  const [started, lost] = [performance.now(), lostMs()];
  return () => performance.now() - started - (lostMs() - lost);
}

export type InstallOptions = {
  secret: string | undefined;
  /** Nodes to give the map right after the lock node (a reshard's end: the nodes it removes). */
  first?: string[];
  /** Nodes beyond both maps' rings that must get it too (those a reshard read, the removed ones of an earlier map). */
  also?: string[];
  /** A node that may answer 503, or not at all, for a while before the install gives up on it: a new primary waits for its standby's ack (S3). */
  wait?: { node: string; ms: number };
  /** Each node this install gave the map to, with the epoch it had ("127.0.0.1:4000 (was at epoch 3)"). */
  put?: string[];
  /** The newer maps that nodes after the lock node held, and kept (rule 10): a take must know whether one is not its own reshard's. */
  newer?: Array<{ node: string; map: ClusterMap }>;
};

/**
 * What an install did. `passed: false`: it stopped at the lock node, and put
 * the map nowhere (unless a put that got no answer landed there: the next
 * reader then finds it, rule 13); `now` is the map the lock node holds, when
 * another change passed it first. `passed: true`: the map is on the lock node,
 * and `node` is the one it could not give it to.
 */
export type Installed = { ok: true } | { ok: false; passed: false; why: string; now?: ClusterMap } | { ok: false; passed: true; why: string; node: string };

const RETRY_MS = 500;
// A node that keeps changing under an install (412 each time) is another operator's: give up after this many.
const TRIES_412 = 5;

/** `next` onto every node, over `over` (undefined: no node has a map yet), by rules 10 and 13. */
export async function install(next: ClusterMap, over: ClusterMap | undefined, o: InstallOptions): Promise<Installed> {
  const lock = lockNode(over, next);
  const forgotten = new Set((next.forgot ?? []).filter((f) => f.epoch === next.epoch).map((f) => f.name));
  const rest = [...(o.first ?? []), ...everyNode(next).map((n) => n.name), ...(over === undefined ? [] : everyNode(over).map((n) => n.name)), ...(o.also ?? [])];
  // A node forgotten by this very map is gone: it gets no map. One forgotten before that answers again gets it (check reports it).
  const order = [...new Set([lock, ...rest])].filter((n) => n === lock || !forgotten.has(n));
  const where = whereIn(next, over);
  for (const node of order) {
    const done = await putOne(node, next, over, node === lock, where, o);
    if (done === undefined) continue;
    if (node === lock) return { ok: false, passed: false, why: done.why, ...(done.now && { now: done.now }) };
    return { ok: false, passed: true, why: done.why, node };
  }
  return { ok: true };
}

/**
 * One node: read what it holds, and put `next` over it. Undefined when it holds
 * `next` (or, after the lock node, a newer map); else why not, and, at the lock
 * node, the map it holds.
 */
async function putOne(node: string, next: ClusterMap, over: ClusterMap | undefined, isLock: boolean, where: (node: string) => string, o: InstallOptions): Promise<{ why: string; now?: ClusterMap } | undefined> {
  const ran = runClock();
  const forgotten = new Set([...(next.forgot ?? []), ...(over?.forgot ?? [])].map((f) => f.name));
  // Only the node the install waits for (a new primary waiting for its standby's ack, S3) is asked again when it does not answer.
  const waitMs = o.wait?.node === node ? o.wait.ms : 0;
  for (let changes = 0; ; ) {
    // Asked again on purpose: a stop and start of it on the way (three misses) must not leave it given up for the rest of the wait.
    if (waitMs > 0) forgive([where(node)]);
    const said = (await ask([node], where)).get(node)!;
    const held = 'map' in said ? said.map : undefined;
    const epoch = epochOf(said);
    if (held !== undefined && sameMap(held, next)) return undefined;
    if (held !== undefined && held.epoch > next.epoch && !isLock) {
      o.newer?.push({ node, map: held }); // rule 10: a later change's map
      return undefined;
    }
    // Rule 10: the lock node must hold the replaced map, or one before it (an install that gave up, rule 13).
    const behind = epoch === undefined || (over !== undefined && (epoch < over.epoch || (epoch === over.epoch && (held === undefined || sameMap(held, over)))));
    if (isLock && !('why' in said) && !behind) return { why: `${node} holds ${held === undefined ? 'a map' : `epoch ${held.epoch}`}, not the map this run read (epoch ${over?.epoch ?? 'none'}): another operator changed the cluster meanwhile`, now: held };
    if (!isLock && held !== undefined && held.epoch === next.epoch) return { why: `${node} holds another map at epoch ${next.epoch}: another operator changed the cluster meanwhile` };
    const waited = waitMs > 0 ? ` (waited ${Math.round(ran() / 1000)} s of this run)` : '';
    if ('why' in said && said.status === undefined) {
      if (forgotten.has(node)) return undefined; // gone, as the map says
      if (ran() >= waitMs) return { why: `${node} cannot be reached at ${where(node)} (${said.why})${waited}` };
    } else {
      const res = await putMap(node, next, epoch, o.secret, where).catch((err: Error) => err);
      if (!(res instanceof Error) && res.status === 200) {
        o.put?.push(`${node} (${epoch === undefined ? 'had no map' : `was at epoch ${epoch}`})`);
        return undefined;
      }
      // 412: it changed under us: read it again, and try over what it holds now.
      const changed = !(res instanceof Error) && res.status === 412 && ++changes < TRIES_412;
      const slow = (res instanceof Error || res.status === 503) && ran() < waitMs;
      if (!changed && !slow) return { why: `${node} did not take the map: ${res instanceof Error ? res.message : problem(res)}${waited}` };
    }
    await new Promise((r) => setTimeout(r, RETRY_MS));
  }
}
