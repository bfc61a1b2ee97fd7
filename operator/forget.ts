// operator/forget.ts: a node that is gone for good, forgotten with an honest
// account (api/cluster-map.ts, rule 6). Redis Cluster calls this CLUSTER
// FORGET, and Cassandra nodetool removenode.
//
// A reshard moves every record off a node before it leaves. A node whose
// server, MySQL and data are gone has nothing left to move: the records that
// lived only on it are lost, whatever anyone does. `reshard --to SURVIVORS
// --forget NODE` says so, and lets the cluster go on:
//
//   1. REFUSE while NODE answers: a node that answers still holds its records,
//      and a plain reshard moves them off it.
//   2. FORGET: the map without NODE, in both rings while a reshard runs, at
//      the next epoch, with the forget recorded in it (`forgot`). It is the
//      one map that rule 6 lets drop a node with no move.
//   3. ACCOUNT for what was lost, counted where the survivors can tell it.
//
// Then the reshard goes on as usual (operator/reshard.ts): with no reshard
// under way, to the ring of --to; with one whose node died, finishing it or
// reversing it, which loses nothing that lived on the other nodes.

import { addressOf, everyNode, placer, type ClusterMap, type MapNode } from '../api/cluster-map.ts';
import { plural } from '../api/words.ts';
import type { Said } from '../client/cluster.ts';
import { shares } from '../lab/balance.ts';
import { HashRing } from '../ring.ts';
import { idsOn } from './walk.ts';

/** Step 1: why these nodes may not be forgotten now, or undefined. */
export function forgetProblem(forget: string[], to: string[], said: Map<string, Said>, map: ClusterMap | undefined): string | undefined {
  if (map === undefined) return 'refusing: --forget needs a cluster map that names the node, and no node answered with one. Nothing was changed.';
  const inMap = new Set(everyNode(map).map((n) => n.name));
  for (const node of forget) {
    const answer = said.get(node);
    if (answer !== undefined && 'shard' in answer) {
      return `refusing: ${node} answers (shard ${answer.shard}, ${answer.map === undefined ? 'no map' : `epoch ${answer.map.epoch}`}): --forget is for a node that is gone for good, and would lose every record on it. Move its records off instead: node ch_client.ts reshard --to ${to.join(',')}. Nothing was changed.`;
    }
    if (answer !== undefined && 'status' in answer && answer.status !== undefined) {
      return `refusing: ${node} answers HTTP ${answer.status}: its server runs, and its records may only be out of reach for now. Bring it back and move its records off with a plain reshard, or stop it for good before you forget it. Nothing was changed.`;
    }
    if (to.includes(node)) return `refusing: --to names ${node}, which --forget forgets. Nothing was changed.`;
    if (!inMap.has(node) && !(map.forgot ?? []).some((f) => f.name === node)) {
      return `refusing: ${node} is not in the cluster map (${describeNames(map)}), so there is nothing to forget. Nothing was changed.`;
    }
  }
  const empty = (nodes: MapNode[]) => nodes.every((n) => forget.includes(n.name));
  if (empty(map.nodes) || (map.moving !== undefined && empty(map.moving.nodes))) {
    return `refusing: forgetting ${forget.join(',')} leaves a ring with no node. Nothing was changed.`;
  }
  return undefined;
}

const describeNames = (map: ClusterMap) => everyNode(map).map((n) => n.name).join(',');

/** The names among `forget` that the map still has in a ring: those not forgotten yet. */
export function stillInMap(forget: string[], map: ClusterMap): string[] {
  const inMap = new Set(everyNode(map).map((n) => n.name));
  return forget.filter((node) => inMap.has(node));
}

/** Step 2: `map` without the forgotten nodes in either ring, recording each as forgotten at `epoch`. The epoch is left to the caller. */
export function withoutForgotten(map: ClusterMap, forget: string[], epoch: number): ClusterMap {
  const gone = everyNode(map).filter((n) => forget.includes(n.name));
  const keep = (nodes: MapNode[]) => nodes.filter((n) => !forget.includes(n.name));
  return {
    epoch: map.epoch,
    nodes: keep(map.nodes),
    replicas: map.replicas,
    ...(map.moving && { moving: { ...map.moving, nodes: keep(map.moving.nodes) } }),
    forgot: [...(map.forgot ?? []), ...gone.map(({ name, shard }) => ({ name, shard, epoch }))],
  };
}

/**
 * Step 3: what forgetting `forget` from `map` loses, as lines to print. Where
 * the survivors can count it, it is counted: the records that a reshard had
 * handed off to a node (their old owners keep a moved row of each until the
 * reshard ends). What lived on a node from before has no count anywhere: it is
 * estimated from its share of the ring, and said to be an estimate.
 */
export async function account(map: ClusterMap, forget: string[]): Promise<string[]> {
  const gone = everyNode(map).filter((n) => forget.includes(n.name));
  const survivors = everyNode(map).filter((n) => !forget.includes(n.name)).map((n) => n.name);
  const lines: string[] = [];
  for (const node of gone) {
    lines.push(`forgetting ${node.name} (shard ${node.shard}), as Redis's CLUSTER FORGET or Cassandra's nodetool removenode would: the records that lived only on it are gone.`);
    if (map.nodes.some((n) => n.name === node.name)) lines.push(`  ${await ownRecords(map, node.name, survivors)}`);
    if (map.moving?.nodes.some((n) => n.name === node.name)) lines.push(`  ${await handedOff(map, node.name, survivors)}`);
  }
  const falls = fallsTo(map, forget);
  lines.push(`  their ids now fall to ${falls}, which answer 404 for them; a client that writes one again makes a new record.`);
  if (map.moving !== undefined) lines.push('  nothing that lived on the other nodes is lost: the reshard goes on over them alone.');
  return lines;
}

/** Each survivor's rows in one state, asked at its address (rule 7); one that cannot be asked is left out and named. */
async function survivorsIds(map: ClusterMap, survivors: string[], state: 'live' | 'moved'): Promise<{ ids: string[]; unasked: string[] }> {
  const got = await Promise.all(survivors.map((s) => idsOn(addressOf(map, s), state).catch((err: Error) => err)));
  const unasked = survivors.flatMap((s, i) => {
    const g = got[i]!;
    return g instanceof Error ? [`${s} (${g.message})`] : [];
  });
  return { ids: got.flatMap((g) => (g instanceof Error ? [] : g)), unasked };
}

/** "; not counted: NODE (why)", for survivors that could not be asked: their share is unknown, not 0. */
const notCounted = (unasked: string[]) => (unasked.length === 0 ? '' : `; not counted, as they could not be asked: ${unasked.join(', ')}`);

/** What a node of the current ring held: known nowhere, so estimated from its share of the ring. */
async function ownRecords(map: ClusterMap, node: string, survivors: string[]): Promise<string> {
  const share = shares(new HashRing(map.nodes.map((n) => n.name), map.replicas)).get(node) ?? 0;
  const ringSurvivors = survivors.filter((s) => map.nodes.some((n) => n.name === s));
  const { ids, unasked } = await survivorsIds(map, ringSurvivors, 'live');
  const estimate = share >= 1 || unasked.length > 0 ? 'an unknown number' : `about ${Math.round((ids.length * share) / (1 - share))}`;
  return (
    `how many is not known: no node keeps a count of another's records, and ${node} cannot be asked. ` +
    `It owned ${pct(share)} of the ring, so ${estimate}, if it held as many per share as the survivors, who hold ${plural(ids.length, 'record')}${notCounted(unasked)}.`
  );
}

/** What a reshard had moved to a node that then died: its old owners' moved rows count it. */
async function handedOff(map: ClusterMap, node: string, survivors: string[]): Promise<string> {
  const place = placer(map);
  const { ids, unasked } = await survivorsIds(map, survivors, 'moved');
  const count = ids.filter((id) => place(id).target?.name === node).length;
  const counted = unasked.length === 0 ? plural(count, 'record') : `at least ${plural(count, 'record')}`;
  return `the reshard had moved ${counted} to it (counted from the moved rows their old owners keep${notCounted(unasked)}), and clients may have written new ids to it meanwhile: how many is not known, as it cannot be asked.`;
}

/** "127.0.0.1:3000 (12.0% of the ring), …": who takes the forgotten nodes' arcs of the current ring. */
function fallsTo(map: ClusterMap, forget: string[]): string {
  const names = map.nodes.map((n) => n.name);
  const before = shares(new HashRing(names, map.replicas));
  const after = shares(new HashRing(names.filter((n) => !forget.includes(n)), map.replicas));
  const gains = [...after].map(([node, s]) => [node, s - (before.get(node) ?? 0)] as const).filter(([, g]) => g > 0);
  if (gains.length === 0) return names.filter((n) => !forget.includes(n)).join(', ');
  return gains.map(([node, g]) => `${node} (${pct(g)} of the ring)`).join(', ');
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
