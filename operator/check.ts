// operator/check.ts: `ch_client.ts check`, read-only: is every record on its
// owner, does every node hold the cluster's map, and does every shard have a
// writable primary with a standby? Each problem is printed with what
// happened and the exact command that gets out of it.

import { addressOf, describeMap, everyNode, sameMap, type ClusterMap, type MapNode } from '../api/cluster-map.ts';
import { ask, newest, type Said } from '../client/cluster.ts';
import { call, problem } from '../client/http.ts';
import { plural } from '../api/words.ts';
import { rejoinCommand } from '../mysql/primary-record.ts';
import { brokenOn, epochOf, lockNode, whereIn } from './maps.ts';
import { readCluster } from './plan.ts';
import { idsOn, isClean, total, walk } from './walk.ts';
import { printProblems } from './walk-report.ts';

/**
 * Is every record on its owner, and does every node hold the cluster's map?
 * It looks at every node it meets: those of the map, the seeds, and the nodes
 * the map forgot. With the cluster secret, and standbys, it also shows each
 * shard's primary and standby and flags a shard running without its standby
 * (standbys()). Resolves to the exit code.
 */
export async function check(seeds: string[], known?: Map<string, Said>, secret?: string): Promise<number> {
  // A reader that closed the pipe (check | head -1) wants no more: the rest is not written, and check still ends with its code.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE' && err.code !== 'ERR_STREAM_DESTROYED') throw err;
  });
  const said = known ?? (await readCluster(seeds));
  const forgot = newest(said)?.forgot ?? [];
  for (const [node, answer] of await ask(forgot.map((f) => f.name).filter((n) => !said.has(n)), whereIn(newest(said)))) said.set(node, answer);
  const map = newest(said);
  if (![...said.values()].some((a) => 'shard' in a)) {
    const why = [...said].map(([node, a]) => `${node}: ${'why' in a ? a.why : ''}`).join('; ');
    console.error(`check: no node of ${seeds.join(',')} answers (${why}). Are the shards running (./start-shards.sh starts them), and are these their addresses (--nodes)?`);
    return 1;
  }
  if (map === undefined) {
    console.error(`check: no node of ${seeds.join(',')} holds a cluster map; give the cluster one with: node ch_client.ts reshard --from ${seeds.join(',')} --to ${seeds.join(',')}`);
    return 1;
  }
  // The command that puts the cluster's map on every node: with a reshard under way, it finishes that one once its operator is gone.
  const ring = map.moving ?? map;
  const repair = `node ch_client.ts reshard --to ${ring.nodes.map((n) => n.name).join(',')}${map.moving === undefined ? '' : ` --replicas ${ring.replicas}`}`;
  // Two maps at one epoch: two operators collided; clients may disagree until the cluster's map goes on every node.
  const split = [...said].filter(([, a]) => 'map' in a && a.map?.epoch === map.epoch && !sameMap(a.map, map));
  for (const [node] of split) console.error(`SPLIT ${node} holds another map at epoch ${map.epoch}; put the cluster's map on every node with: ${repair}`);
  const down = await outage(map, said, seeds);
  const found = await walk(map, undefined);
  const out = total(found.misplaced);
  const uncounted = found.unlisted.size === 0 ? '' : ` (${plural(found.unlisted.size, 'node')} of ${found.nodes} could not be counted: ${[...found.unlisted.keys()].join(', ')}; their records are not in these numbers)`;
  console.log(`check: ${found.records} records on ${found.nodes - found.unlisted.size} nodes, ${describeMap(map)}: ${out} out of place${uncounted}`);
  for (const [route, n] of [...found.misplaced].sort()) console.log(`  on ${route.replace(' -> ', ', owned by ')}: ${n}`);
  const broken = [...said].filter(([, a]) => brokenOn(a) !== undefined);
  for (const [node, a] of broken) console.error(`BROKEN ${node}: its stored map (epoch ${brokenOn(a)!.epoch}) cannot be read (${brokenOn(a)!.problem}); put the cluster's map back with: ${repair}`);
  const behind = [...said].filter(([, a]) => epochOf(a) !== map.epoch && !('why' in a) && brokenOn(a) === undefined);
  for (const [node, a] of behind) console.error(`BEHIND ${node} holds ${epochOf(a) === undefined ? 'no map' : `epoch ${epochOf(a)}`}; give it epoch ${map.epoch} with: ${repair}`);
  if (map.moving !== undefined) console.error(`a reshard is under way (${describeMap(map)}): records are out of place until it ends`);
  printProblems({ ...found, unlisted: new Map([...found.unlisted].filter(([node]) => !down.has(node))) }, false);
  const outside = await outsideTheRing(map, said);
  const paired = await standbys(map, secret, down);
  return down.size === 0 && out === 0 && isClean(found) && behind.length === 0 && broken.length === 0 && split.length === 0 && map.moving === undefined && outside && paired ? 0 : 1;
}

/**
 * The nodes of the map that cannot be reached, each with the command that
 * gets its shard back: the failover to its standby (found among the seeds, or
 * beside it as start-shards.sh places it: its port + 100, or - 100 after a
 * failover), or the forget of a node gone for good. Returns their names.
 */
async function outage(map: ClusterMap, said: Map<string, Said>, seeds: string[]): Promise<Set<string>> {
  const down = new Set<string>();
  const nodes = everyNode(map);
  for (const n of nodes) {
    const a = said.get(n.name);
    if (a === undefined || !('why' in a)) continue;
    down.add(n.name);
    const at = addressOf(map, n.name);
    const how = a.status === undefined ? 'its machine does not answer' : 'its server answers but cannot say which shard it is';
    console.error(`DOWN shard ${n.shard} (${n.name} at ${at}): ${how} (${a.why}); its records are not counted, and its ids fail until it is back`);
    const standby = await standbyOf(n, at, said, seeds);
    const others = nodes.filter((m) => m.name !== n.name).map((m) => m.name).join(',');
    const list = nodes.map((m) => m.name).join(',');
    if (standby !== undefined) console.error(`  its standby ${standby} answers as shard ${n.shard}: make it the primary with: node ch_client.ts failover ${n.name} --to ${standby} --nodes ${list}`);
    else console.error(`  if it has a standby, make that the primary with: node ch_client.ts failover ${n.name} --to <the standby's HOST:PORT> --nodes ${list}`);
    console.error(`  if it is gone for good, with no standby, forget it and the records that lived only on it with: node ch_client.ts reshard --to ${others} --forget ${n.name}`);
    if (lockNode(map, map) === n.name) console.error(`  it is the lock node (rule 10): until it is failed over or forgotten, no other change of the map can pass`);
  }
  return down;
}

/** A read-only machine of `node`'s shard that answers: among the seeds, or at the port beside the node's address. */
async function standbyOf(node: MapNode, at: string, said: Map<string, Said>, seeds: string[]): Promise<string | undefined> {
  const port = Number(at.slice(at.lastIndexOf(':') + 1));
  const host = at.slice(0, at.lastIndexOf(':'));
  const beside = [port + 100, port - 100].filter((p) => p > 0 && p < 65536).map((p) => `${host}:${p}`);
  const candidates = [...new Set([...seeds, ...beside])].filter((c) => c !== at && c !== node.name);
  const asked = await ask(candidates.filter((c) => !said.has(c) || beside.includes(c)));
  const answer = (c: string) => asked.get(c) ?? said.get(c);
  return candidates.find((c) => {
    const a = answer(c);
    return a !== undefined && 'shard' in a && a.shard === node.shard && a.role === 'standby';
  });
}

/** What GET /cluster/replication says of one machine (shard/replication.ts), or why it said nothing. */
type Replication = { role: string; gtid_binlog_pos: string; gtid_slave_pos: string; follows: { master: string; io: string; sql: string } | null; semisync: Record<string, string>; peer: string | null; shard_number?: number | null };
type Answer = Replication | { why: string; status?: number };

async function replicationAt(address: string, secret: string | undefined): Promise<Answer> {
  try {
    const res = await call(address, 'GET', '/cluster/replication', undefined, {}, { timeoutMs: 5_000, secret });
    return res.status === 200 ? (res.body as Replication) : { why: problem(res), status: res.status };
  } catch (err) {
    return { why: (err as Error).message };
  }
}

/**
 * Check's look at the machines behind each node, when the cluster has
 * standbys: for each node of the map, its primary (the node's address) and its
 * standbys (the shard's other machines, which the primary's server names: its
 * CLUSTER_PEER, set by start-shards.sh), each with its replication state. A
 * shard whose primary has no standby connected, or none of whose standbys
 * replicates, is flagged WITHOUT STANDBY: its writes wait for one (S3), and an
 * acknowledged write exists on one machine only. True when no shard is. A
 * node that is down is outage()'s to report.
 */
async function standbys(map: ClusterMap, secret: string | undefined, down: Set<string>): Promise<boolean> {
  const nodes = everyNode(map).filter((n) => !down.has(n.name));
  const primaries = await Promise.all(nodes.map((n) => replicationAt(addressOf(map, n.name), secret)));
  if (primaries.some((r) => 'why' in r && r.status === 401)) {
    console.log(`  standbys: not shown (GET /cluster/replication needs the cluster secret: --secret-file)`);
    return true;
  }
  // A cluster where no node answers with its replication has none to show.
  if (!primaries.some((r) => !('why' in r))) return true;
  console.log('  standbys (GET /cluster/replication on each node and on its standby):');
  const list = everyNode(map).map((m) => m.name).join(',');
  let ok = true;
  for (const [i, n] of nodes.entries()) ok = (await pairOf(n, addressOf(map, n.name), primaries[i]!, secret, list)) && ok;
  return ok;
}

/** standbys()'s lines for one node at `at`: its primary's answer `p`, then each of its standbys. False when the shard is flagged. */
async function pairOf(n: MapNode, at: string, p: Answer, secret: string | undefined, list: string): Promise<boolean> {
  let ok = true;
  const without = (why: string) => {
    const rejoin = rejoinCommand('why' in p ? null : (p.shard_number ?? null), n.shard);
    console.error(`WITHOUT STANDBY shard ${n.shard} (${n.name} at ${at}): ${why}; its writes wait for a standby's ack. Give it one: on its host, ${rejoin}`);
    ok = false;
  };
  if ('why' in p) {
    console.log(`    shard ${n.shard}, ${n.name}: primary ${at} does not say (${p.why})`);
    // 503 without an operator user: a server started without standbys.
    if (p.status === 503 && /no MySQL operator user/.test(p.why)) without('its server has no standby (started without SHARDS_STANDBY=1)');
    return ok;
  }
  const clients = Number(p.semisync.Rpl_semi_sync_master_clients ?? 0);
  console.log(`    shard ${n.shard}, ${n.name}: primary ${at}: ${p.role}, semi-sync ${p.semisync.Rpl_semi_sync_master_status ?? '?'}, ${clients} standby connected, gtid_binlog_pos ${p.gtid_binlog_pos || 'none'}`);
  // CLUSTER_PEER: the shard's other machines, one or two standbys (start-shards.sh).
  const peers = p.peer === null ? [] : p.peer.split(',');
  const { replicates, primary } = await peersReplicate(peers, secret);
  if (p.role !== 'primary') {
    // The machine that is the primary (a failover cut short before its map), else the first other machine.
    const to = primary ?? peers[0] ?? "<its standby's HOST:PORT>";
    console.error(`NOT WRITABLE shard ${n.shard} (${n.name} at ${at}) is read-only: a fenced primary, or a standby the map names. Finish the failover with: node ch_client.ts failover ${n.name} --to ${to} --nodes ${list}`);
    ok = false;
    // Its standbys are the primary's, not this machine's: the failover's map shows them again.
    if (primary !== undefined) return ok;
  }
  if (peers.length === 0) console.log(`      standby unknown (the primary's server has no CLUSTER_PEER)`);
  if (clients < 1) without('no standby is connected to its primary');
  else if (!replicates) without(`its standby ${p.peer ?? '(unknown)'} does not replicate`);
  return ok;
}

/** A line for each standby of `peers`, with its replication; whether one of them replicates, and the one that is a primary. */
async function peersReplicate(peers: string[], secret: string | undefined): Promise<{ replicates: boolean; primary?: string }> {
  let replicates = false;
  let primary: string | undefined;
  for (const peer of peers) {
    const s = await replicationAt(peer, secret);
    if ('why' in s) {
      console.log(`      standby ${peer}: does not answer (${s.why})`);
      continue;
    }
    const f = s.follows;
    console.log(`      standby ${peer}: ${s.role}, ${f === null ? 'follows no one' : `follows ${f.master}, IO ${f.io}, SQL ${f.sql}`}, gtid_slave_pos ${s.gtid_slave_pos || 'none'}`);
    replicates ||= f !== null && f.io === 'Yes' && f.sql === 'Yes';
    if (s.role === 'primary') primary ??= peer;
  }
  return { replicates, primary };
}

/**
 * Check's look past the ring: a forgotten node that is still gone is listed,
 * and every node outside both rings that answers must hold no record, since
 * no client looks there. True when none does. A standby holds its primary's
 * records by replication: it is no stray.
 */
async function outsideTheRing(map: ClusterMap, said: Map<string, Said>): Promise<boolean> {
  // A node by its name, or at its address since a failover (a seed may be either).
  const inRing = new Set(everyNode(map).flatMap((n) => [n.name, addressOf(map, n.name)]));
  for (const f of map.forgot ?? []) {
    if (!inRing.has(f.name) && !('shard' in (said.get(f.name) ?? {}))) console.log(`  forgotten at epoch ${f.epoch}: ${f.name} (shard ${f.shard}), gone for good with the records that lived only on it`);
  }
  let clean = true;
  for (const [node, answer] of said) {
    if (inRing.has(node) || !('shard' in answer) || answer.role === 'standby') continue;
    const held = await Promise.all([idsOn(node, 'live'), idsOn(node, 'incoming')]).catch((err: Error) => err);
    if (held instanceof Error) {
      console.error(`FAILED to list the records on ${node}, outside the ring: ${held.message}`);
      clean = false;
      continue;
    }
    const [live, incoming] = held;
    if (live.length + incoming.length === 0) continue;
    clean = false;
    const was = (map.forgot ?? []).find((f) => f.shard === answer.shard);
    const why = was === undefined ? '' : `; it was forgotten at epoch ${was.epoch}, and answers again`;
    const example = [...live, ...incoming].slice(0, 3).map((id) => JSON.stringify(id)).join(', ');
    console.error(
      `OUTSIDE ${node} holds ${plural(live.length, 'live record')} and ${incoming.length} incoming (${example}${live.length + incoming.length > 3 ? ', …' : ''}), outside the ring of epoch ${map.epoch}${why}: ` +
        `no client looks there. For each, compare with what its owner holds, then move it there by hand or delete it.`,
    );
  }
  return clean;
}
