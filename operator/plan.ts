// operator/plan.ts: what a reshard does, decided from what the nodes say
// (steps 1 and 2 of operator/reshard.ts): read every node's identity and map,
// then start a reshard, finish or reverse one whose operator is gone, forget
// nodes gone for good, or refuse, saying why.

import { addressOf, describeMap, everyNode, type ClusterMap, type Forgot, type MapNode } from '../api/cluster-map.ts';
import { ask, newest, sameNodes, type Said } from '../client/cluster.ts';
import { forgetProblem, stillInMap, withoutForgotten } from './forget.ts';
import { alive, holder, machine } from './lease.ts';
import { whereIn } from './maps.ts';

export type ReshardOptions = {
  seeds: string[];
  to: string[];
  from?: string[];
  replicas?: number;
  dryRun: boolean;
  verbose: boolean;
  secret: string | undefined;
  leaseMs: number;
  /** Nodes gone for good, to leave the map with what they held (operator/forget.ts). */
  forget?: string[];
};

/**
 * What a run does: the moving map to take (or none: nothing to move); with
 * --forget, first a map that forgets nodes with no reshard under way
 * (`forget`), or a moving map that also forgets them (`forgets`: their names).
 */
export type Plan = { map: ClusterMap; next?: ClusterMap; takeover?: string; forget?: ClusterMap; forgets?: string[] };

/** The forgot list of a map, for a map built from it: every forget is carried forward (rule 6). */
export const carried = (map: ClusterMap): { forgot?: Forgot[] } => (map.forgot === undefined ? {} : { forgot: map.forgot });

/**
 * Step 1: every node's identity and map: the nodes given, and every node that
 * a map read names. Rule 7: a node that the newest map gives another address
 * is asked there, not at its name (a failover's old machine, dead or fenced).
 */
export async function readCluster(nodes: string[]): Promise<Map<string, Said>> {
  const said = await ask(nodes);
  for (let seen: ClusterMap | undefined, round = 0; round < 3 && newest(said) !== seen; round++) {
    seen = newest(said);
    const where = whereIn(seen);
    const again = [...new Set([...namedIn(said), ...nodes])].filter((n) => !said.has(n) || where(n) !== n);
    for (const [node, answer] of await ask(again, where)) said.set(node, answer);
  }
  return said;
}

/** Every node named in any map that was read. */
export function namedIn(said: Map<string, Said>): string[] {
  const names = new Set<string>();
  for (const answer of said.values()) {
    if (!('map' in answer) || answer.map === undefined) continue;
    for (const n of everyNode(answer.map)) names.add(n.name);
  }
  return [...names];
}

/** Step 2: what this run does: the moving map to take (or none: nothing to move), or why it must not run. */
export function decide(o: ReshardOptions, said: Map<string, Said>, current: ClusterMap | undefined): Plan | string {
  if (o.forget !== undefined) {
    const why = forgetProblem(o.forget, o.to, said, current);
    if (why !== undefined) return why;
  }
  // A node that is forgotten, or being forgotten, is not asked to say who it is: it is gone.
  const gone = new Set([...(o.forget ?? []), ...(current?.forgot ?? []).map((f) => f.name)]);
  for (const n of current === undefined ? [] : everyNode(current)) if (!(o.forget ?? []).includes(n.name)) gone.delete(n.name);
  const silent = [...said].filter(([node, a]) => 'why' in a && !gone.has(node));
  if (silent.length > 0) return `refusing: ${silent.map(([node, a]) => `${node} cannot say which shard it is (${'why' in a ? a.why : ''})`).join('; ')}. Nothing was changed.${forgetHint(silent.map(([node]) => node), o, current)}`;
  // A node keeps the address the map gives it (rule 7): after a failover, its name is not where it answers.
  const bind = (names: string[]): MapNode[] =>
    names.map((name) => {
      const address = current === undefined ? name : addressOf(current, name);
      return { name, shard: (said.get(name) as { shard: string }).shard, ...(address !== name && { address }) };
    });
  // With no map anywhere, the cluster is the ring of --from (or of the seeds): this reshard gives it a map.
  const map: ClusterMap = current ?? { epoch: 0, nodes: bind(o.from ?? o.seeds), replicas: o.replicas ?? 1 };
  const why = identityProblem([...everyNode(map), ...bind(o.to)], said) ?? foreign(map, said);
  if (why !== undefined) return `refusing: ${why}. Nothing was changed.`;

  const forgets = o.forget === undefined ? [] : stillInMap(o.forget, map);
  if (forgets.length > 0) return forgetting(o, said, map, forgets);
  if (map.moving !== undefined) return resumeOrReverse(o, said, map);
  if (o.from !== undefined && !sameNodes(o.from, map.nodes.map((n) => n.name))) {
    return `refusing: --from ${o.from.join(',')} is not the cluster, which is at ${describeMap(map)} (${map.nodes.map((n) => n.name).join(',')}). Leave --from out. Nothing was changed.`;
  }
  const replicas = o.replicas ?? map.replicas;
  const firstMap = current === undefined;
  // The same ring: nothing moves. A cluster with no map yet gets its first one.
  if (sameNodes(o.to, map.nodes.map((n) => n.name)) && replicas === map.replicas) return { map: firstMap ? { ...map, epoch: 1 } : map };
  return { map, next: moving(map, bind(o.to), replicas, o) };
}

/** For a silent node of the map: the way out if it is gone for good (operator/forget.ts). */
function forgetHint(silent: string[], o: ReshardOptions, map: ClusterMap | undefined): string {
  const named = silent.filter((node) => map !== undefined && everyNode(map).some((n) => n.name === node));
  if (named.length === 0) return '';
  const to = o.to.filter((node) => !named.includes(node));
  return `\n  Bring it back and run the same command again. If it is gone for good (its data lost), forget it, and with it the records that lived only on it:\n    node ch_client.ts reshard --to ${to.join(',')} --forget ${named.join(',')}`;
}

/** A map at the next epoch that moves `map`'s records to the ring of `to`. */
function moving(map: ClusterMap, to: MapNode[], replicas: number, o: ReshardOptions): ClusterMap {
  return { epoch: map.epoch + 1, nodes: map.nodes, replicas: map.replicas, moving: { nodes: to, replicas, by: holder(), leaseMs: o.leaseMs }, ...carried(map) };
}

/**
 * --forget of nodes still in the map. With no reshard under way: the map
 * without them, at the next epoch, to install first. With one: the same
 * takeover as for a dead operator, finishing or reversing it over both rings
 * without them (rule 6 lets exactly this map drop them).
 */
function forgetting(o: ReshardOptions, said: Map<string, Said>, map: ClusterMap, forgets: string[]): Plan | string {
  const without = withoutForgotten(map, forgets, map.epoch + 1);
  if (map.moving === undefined) return { map, forget: { ...without, epoch: map.epoch + 1 } };
  const plan = resumeOrReverse(o, said, without, ` --forget ${forgets.join(',')}`);
  return typeof plan === 'string' ? plan : { ...plan, map, forgets };
}

/** A reshard is on record: finish it or reverse it, if its operator is gone (rule 11). */
function resumeOrReverse(o: ReshardOptions, said: Map<string, Said>, map: ClusterMap, more = ''): Plan | string {
  const m = map.moving!;
  const who = `pid ${m.by.pid} on ${m.by.host}, started ${m.by.started}, moving ${describeMap(map)}`;
  const leaseLeft = Math.max(0, ...[...said.values()].map((a) => ('leaseLeftMs' in a && a.map?.epoch === map.epoch ? (a.leaseLeftMs ?? 0) : 0)));
  const died = m.by.machine !== '' && m.by.machine === machine() && !alive(m.by.pid);
  if (leaseLeft > 0 && !died) {
    return `another reshard is running: ${who}. Its lease has ${Math.ceil(leaseLeft / 1000)} s left; wait for it to finish.`;
  }
  const command = (nodes: MapNode[], replicas: number) => `node ch_client.ts reshard --to ${nodes.map((n) => n.name).join(',')} --replicas ${replicas}${more}`;
  const names = (nodes: MapNode[]) => nodes.map((n) => n.name);
  const forward = sameNodes(o.to, names(m.nodes)) && (o.replicas ?? m.replicas) === m.replicas;
  const back = sameNodes(o.to, names(map.nodes)) && (o.replicas ?? map.replicas) === map.replicas;
  const fromOk = o.from === undefined || sameNodes(o.from, names(forward ? map.nodes : m.nodes));
  if ((!forward && !back) || !fromOk) {
    return (
      `an unfinished reshard is on record: ${who}, and its operator is gone.\n` +
      `  Another reshard now would leave records where neither ring looks. Finish that one:\n    ${command(m.nodes, m.replicas)}\n` +
      `  or reverse it:\n    ${command(map.nodes, map.replicas)}`
    );
  }
  const by = holder();
  const next: ClusterMap = forward
    ? { ...map, epoch: map.epoch + 1, moving: { ...m, by, leaseMs: o.leaseMs } }
    : { epoch: map.epoch + 1, nodes: m.nodes, replicas: m.replicas, moving: { nodes: map.nodes, replicas: map.replicas, by, leaseMs: o.leaseMs }, ...carried(map) };
  const how = died ? 'no longer running' : 'its lease ran out';
  return { map, next, takeover: `${forward ? 'taking over' : 'reversing'} the unfinished reshard of ${who} (${how})` };
}

/** Why the names cannot be trusted: two names for one shard, or a name the map binds to another shard. */
function identityProblem(nodes: MapNode[], said: Map<string, Said>): string | undefined {
  const nameOf = new Map<string, string>();
  for (const { name, shard } of nodes) {
    const answer = said.get(name);
    if (answer !== undefined && 'shard' in answer && answer.shard !== shard) {
      return `the cluster map binds ${name} to shard ${shard}, but ${name} now answers as shard ${answer.shard}`;
    }
    const other = nameOf.get(shard);
    if (other !== undefined && other !== name) return `${other} and ${name} are the same shard. Name each shard once, as the cluster map does`;
    nameOf.set(shard, name);
  }
  return undefined;
}

/** Why a node holds the map of another cluster: one that names none of this cluster's shards. */
function foreign(map: ClusterMap, said: Map<string, Said>): string | undefined {
  const ours = new Set(everyNode(map).map((n) => n.shard));
  for (const [node, answer] of said) {
    const theirs = 'map' in answer ? answer.map : undefined;
    if (theirs !== undefined && !everyNode(theirs).some((n) => ours.has(n.shard))) {
      return `${node} holds the map of another cluster (epoch ${theirs.epoch}, naming none of this cluster's shards): leave it out, or give it a fresh database`;
    }
  }
  return undefined;
}
