// operator/lease.ts: the reshard's lease (api/cluster-map.ts, rule 11): who
// holds it, renewing it on every node while the reshard runs, and adopting a
// failover's map that joined it (rule 12).

import { readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { addressOf, everyNode, sameMap, type ClusterMap, type Holder } from '../api/cluster-map.ts';
import { ask } from '../client/cluster.ts';
import { problem } from '../client/http.ts';
import { plural } from '../api/words.ts';
import { putMap, whereIn } from './maps.ts';

/** This run, as the holder a map names. */
export function holder(): Holder {
  return { host: hostname(), machine: machine(), pid: process.pid, started: new Date().toISOString() };
}

/**
 * This machine, such that a pid found on it is the pid a holder named: its
 * host, its boot, and its pid namespace (two containers may share a hostname
 * and reuse pids). '' where that cannot be told: then only the lease can.
 */
export function machine(): string {
  try {
    return `${hostname()}/${readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()}/${readlinkSync('/proc/self/ns/pid')}`;
  } catch {
    return '';
  }
}

/** True while a process runs on this machine. A zombie has ended: it only waits to be reaped, which can take a while. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return true; // no /proc here: the signal's answer stands
  }
}

/** The same reshard, where only nodes' addresses may differ: the same holder, names, shards, replicas and forgets. */
export function sameReshard(a: ClusterMap, b: ClusterMap): boolean {
  const ring = (m: ClusterMap) => ({
    nodes: m.nodes.map((n) => [n.name, n.shard]),
    replicas: m.replicas,
    moving: m.moving && { nodes: m.moving.nodes.map((n) => [n.name, n.shard]), replicas: m.moving.replicas, by: m.moving.by, leaseMs: m.moving.leaseMs },
    forgot: m.forgot ?? [],
  });
  return a.moving !== undefined && JSON.stringify(ring(a)) === JSON.stringify(ring(b));
}

/** "NAME from ADDRESS to ADDRESS" for each node whose address differs. */
export function changedAddresses(a: ClusterMap, b: ClusterMap): string {
  const moves = everyNode(b).filter((n) => addressOf(a, n.name) !== addressOf(b, n.name)).map((n) => `${n.name} from ${addressOf(a, n.name)} to ${addressOf(b, n.name)}`);
  return moves.length === 0 ? 'no address' : moves.join(', ');
}

export type Lease = {
  renew(): Promise<void>;
  stop(): void;
  /** Why the lease was lost (another operator took the reshard over), or undefined. */
  lost(): string | undefined;
  /** The map this reshard holds now: its own, or a failover's that it adopted. */
  map(): ClusterMap;
  /** Rule 12: adopts `theirs` when it is this reshard at a higher epoch with only addresses changed. True when it did. */
  adopt(theirs: ClusterMap | undefined): boolean;
  report(): void;
};

/**
 * Renews the reshard's lease on every node, every third of it, until stopped;
 * `lost` says why it could not. Each round goes to every node at once: one
 * after another, a node slow to answer (up to a 10 s timeout) held back the
 * renewal of every node after it, and the lease could lapse on healthy ones.
 * Each failure is recorded, and `report` prints them, one line per node. A
 * newer map that is this reshard with only addresses changed (a failover's,
 * rule 12) is adopted: `map` is the one held now.
 */
export function renewLease(first: ClusterMap, secret: string | undefined): Lease {
  let lost: string | undefined;
  let map = first;
  let sent = 0;
  const failed = new Map<string, { times: number; first: string }>(); // node: how often, and the first failure
  const started = performance.now();
  const fail = (node: string, why: string) => {
    const at = `${((performance.now() - started) / 1000).toFixed(1)} s in`;
    const seen = failed.get(node);
    if (seen === undefined) failed.set(node, { times: 1, first: `${at}: ${why}` });
    else seen.times++;
  };
  const adopt = (theirs: ClusterMap | undefined): boolean => {
    if (theirs === undefined || theirs.epoch <= map.epoch || !sameReshard(map, theirs)) return false;
    console.log(`the cluster map is at epoch ${theirs.epoch}: a failover moved ${changedAddresses(map, theirs)}; this reshard goes on under that epoch`);
    map = theirs;
    return true;
  };
  const renewOne = async (node: string) => {
    sent++;
    const res = await putMap(node, map, map.epoch, secret).catch((err: Error) => err);
    if (res instanceof Error) return fail(node, res.message);
    if (res.status === 200) return;
    if (res.status !== 412) return fail(node, problem(res));
    // 412: the map moved on. A failover's (only addresses changed) is adopted; anything else is another operator's.
    const now = (await ask([node], whereIn(map))).get(node);
    const theirs = now !== undefined && 'map' in now ? now.map : undefined;
    if (adopt(theirs)) return;
    if (theirs !== undefined && theirs.epoch < map.epoch && sameReshard(map, theirs)) {
      // Behind the adopted map (the failover has not reached it yet): give it that map.
      await putMap(node, map, theirs.epoch, secret).catch(() => undefined);
      return;
    }
    if (theirs !== undefined && sameMap(theirs, map)) return;
    lost ??= `${node} is at epoch ${res.etag?.replace(/"/g, '')}: another operator took this reshard over`;
  };
  // A node still busy with its last renewal is not sent another: a slow one
  // holds back no other node's renewal, and never gathers a queue of them.
  const pending = new Map<string, Promise<void>>();
  const renewNode = (node: string): Promise<void> => {
    const last = pending.get(node);
    if (last !== undefined) return last;
    const next = renewOne(node).finally(() => pending.delete(node));
    pending.set(node, next);
    return next;
  };
  const renew = async (): Promise<void> => {
    await Promise.all(everyNode(map).map((n) => renewNode(n.name)));
  };
  const timer = setInterval(renew, first.moving!.leaseMs / 3);
  timer.unref();
  const report = () => {
    if (failed.size === 0) return;
    const times = [...failed.values()].reduce((n, f) => n + f.times, 0);
    console.error(`lease renewals: ${times} of ${sent} failed, on ${plural(failed.size, 'node')} (the lease holds while any node has it):`);
    for (const [node, f] of failed) console.error(`  ${node}: ${plural(f.times, 'renewal')} failed, the first ${f.first}`);
  };
  return { renew, stop: () => clearInterval(timer), lost: () => lost, map: () => map, adopt, report };
}
