// operator/failover.ts: give a node's name a new machine, its standby, when
// the machine behind it dies or must go: `ch_client.ts failover NODE --to
// STANDBY`. As Redis's CLUSTER FAILOVER and Vitess's PlannedReparentShard /
// EmergencyReparentShard do, in numbered steps, under the map's epoch:
//
//   0. PROVE: the standby shows that it holds the cluster secret, at the
//      address --to names (GET /cluster/proof, shard/replication.ts D0), and
//      that it is NODE's shard. A typo in --to that reaches a stranger, or
//      another shard's machine, stops here with nothing changed: it is
//      fenced nothing, sent no signed step, and written into no map. Every
//      step after names the shard and the epoch it acts for, and each
//      request is signed for the one machine it is sent to (api/signing.ts).
//   1. FENCE the old primary (POST /cluster/fence at NODE's address): it
//      acknowledges nothing more, and says the last position it wrote. If it
//      does not answer, this is an emergency: it is fenced all the same,
//      because its standby is about to leave it and its semi-sync waits for
//      an ack for ever (mysql/replication.ts, S3), so it cannot acknowledge a write.
//   2. APPLY: the standby applies all it received, up to the fenced
//      primary's position (planned), or up to all it received (emergency).
//   3. PROMOTE it: it forgets the old primary, waits for its own standby's
//      acks from now on, and becomes writable (2 and 3 are one request,
//      POST /cluster/promote; shard/replication.ts, D2-D3). A fenced old
//      primary that answers is made its standby at once (POST /cluster/follow),
//      as Vitess's PlannedReparentShard does; a dead one is rebuilt later by
//      `./start-shards.sh rejoin N` on its host, N the launcher's number that
//      the promoted machine answers (its shard-N), printed as it is. With two
//      standbys (D5), the other one follows the new primary too, so that an
//      emergency needs no rebuild before writes come back; in an emergency, a
//      --to that received less than its sibling is refused before step 2, as
//      Vitess's EmergencyReparentShard picks the most advanced replica.
//   4. MAP: the cluster's map at the next epoch, NODE at the standby's
//      address (api/cluster-map.ts, rule 7), onto every node by the one
//      installer (operator/maps.ts, rules 10 and 13). A reshard under way
//      keeps its `moving` part and its lease: the failover joins it (rule
//      12), and only the address changes. A failover that loses the lock
//      node to another change reads the cluster again and puts its address
//      into the map it finds. The new primary writes the map only once a
//      standby acknowledges it (mysql/replication.ts, S3): in an emergency, this
//      step waits for the rejoin, and says so.
//   5. FOLLOW: clients that meet the old address re-read the map from the
//      other nodes and go on (client/cluster.ts); the fenced old primary
//      names no other address and answers 503 (rule 8) until it rejoins.
//
// With the old primary alive, the same command is a planned switchover: the
// fence waits for the commits in flight, and the standby applies them all
// before it serves, so nothing acknowledged is lost. Run again after a
// failure, it goes on from where the cluster is (every step is idempotent).

import { randomBytes } from 'node:crypto';
import { addressOf, describeMap, everyNode, type ClusterMap } from '../api/cluster-map.ts';
import { hostOf, proves } from '../api/signing.ts';
import { ask, newest } from '../client/cluster.ts';
import { call, problem, type Answer, type CallOptions } from '../client/http.ts';
import { ahead } from '../mysql/gtids.ts';
import { rejoinCommand } from '../mysql/primary-record.ts';
import { install, lockNode } from './maps.ts';
import { readCluster } from './plan.ts';

/** `withoutVote`: the operator stands in for the votes of machines gone for good (election/rules.ts, E7). */
export type FailoverOptions = { seeds: string[]; node: string; to: string; secret: string | undefined; withoutVote?: boolean };

// A primary that does not answer the fence in this time is taken for dead.
const FENCE_TIMEOUT_MS = 3_000;
// How long the standby may take to apply what it received.
const APPLY_TIMEOUT_MS = 30_000;
// How long step 4 waits for the new primary to have a standby that acknowledges its writes (time this process ran).
const STANDBY_WAIT_MS = 180_000;
// How often step 4 reads the cluster again after losing the lock node to another change (rule 12).
const MAP_TRIES = 5;

/** Moves `o.node` to its standby at `o.to`. Resolves to the exit code. */
export async function failover(o: FailoverOptions): Promise<number> {
  const map = await clusterMap(o);
  if (typeof map === 'string') return fail(map);
  const from = addressOf(map, o.node);
  const standby = await standbyProblem(o, map);
  if (typeof standby === 'string') return fail(standby);
  console.log(`failover of ${o.node} (shard ${shardOf(map, o.node)}) from ${from} to ${o.to}, the cluster at ${describeMap(map)}`);
  if (o.secret !== undefined) console.log(`0. ${o.to} proved that it holds the cluster secret, as shard ${standby.shard}'s ${standby.role}`);
  // What each step acts for: the machine of another shard, or one that holds a newer map, refuses it.
  const actingFor = { shard: shardOf(map, o.node), epoch: map.epoch };

  // 1. Fence.
  const fenced = from === o.to ? undefined : await tryCall(from, 'POST', '/cluster/fence', actingFor, { timeoutMs: FENCE_TIMEOUT_MS, secret: o.secret });
  // An answer that refuses (4xx) is a live machine saying no, not a dead one: no emergency.
  if (fenced !== undefined && fenced.status >= 400 && fenced.status < 500) {
    return fail(`1. the old primary at ${from} refused the fence: ${problem(fenced)}. Nothing was changed; fix that, then run the same command again`);
  }
  const position = fenced?.status === 200 ? String(fenced.body.gtid_binlog_pos) : null;
  if (from === o.to) console.log(`1. fence: ${o.node} is at ${o.to} already; going on from step 2`);
  else if (position !== null) console.log(`1. fenced the old primary at ${from}: read-only, its last write at GTID ${position || '(none)'}`);
  else console.log(`1. the old primary at ${from} cannot be fenced (${fenced === undefined ? 'no answer' : problem(fenced)}): emergency. It cannot acknowledge a write: its standby leaves it in step 3, and it waits for a standby's ack for ever`);
  const sibling = await siblingOf(o, from, position === null);
  if (typeof sibling === 'object') return fail(sibling.refused);

  // 2 and 3. Apply, promote.
  const promoted = await tryCall(o.to, 'POST', '/cluster/promote', { ...actingFor, wait_for: position, timeout_ms: APPLY_TIMEOUT_MS, without_vote: o.withoutVote === true }, { timeoutMs: APPLY_TIMEOUT_MS + 10_000, secret: o.secret });
  if (promoted?.status !== 200) {
    return fail(`3. promoting ${o.to} failed: ${promoted === undefined ? 'no answer' : problem(promoted)}. The cluster map is unchanged; fix that, then run the same command again`);
  }
  const p = promoted.body;
  console.log(`2. the standby applied all it received, up to GTID ${p.applied || '(none)'}${position === null ? ' (its Gtid_IO_Pos)' : ' (the fenced primary\'s position)'}`);
  console.log(`3. promoted ${o.to}: ${p.promoted ? 'now' : 'already'} the primary, writable, semi-sync ${p.semisync?.Rpl_semi_sync_master_status ?? '?'}, at GTID ${p.gtid_binlog_pos}`);
  const siblingFollows = sibling === undefined ? undefined : await follow(o, sibling, { ...actingFor, mysql: p.mysql });
  const follows = position === null ? undefined : await tryCall(from, 'POST', '/cluster/follow', { ...actingFor, mysql: p.mysql }, { timeoutMs: 30_000, secret: o.secret });
  // The launcher's number of the pair, as the promoted machine knows it (its shard-N), not the shard's id.
  const rejoin = `${rejoinCommand(p.shard_number ?? null, shardOf(map, o.node))}: it makes the old machine the standby of ${o.to}, rebuilt from it if its data is gone or diverged`;
  if (follows?.status === 200) console.log(`   the old primary at ${from} follows ${p.mysql}: it is the shard's standby now`);
  else if (position !== null) console.log(`   the old primary at ${from} could not be made the standby (${follows === undefined ? 'no answer' : problem(follows)}): on the shard's host, run ${rejoin}`);
  else if (!siblingFollows) console.log(`4. waiting (up to ${STANDBY_WAIT_MS / 1000} s of this run) for a standby to acknowledge the new map: on the shard's host, run ${rejoin}`);

  // 4. The map.
  const put = await installMoved(o, map);
  if (typeof put === 'string') return fail(`4. ${put}`);
  console.log(`4. the cluster is at ${describeMap(put)}, ${o.node} at ${o.to}, on every node`);

  // 5. Clients follow.
  console.log(`5. clients follow: a request to ${from} fails or meets a fenced machine, and the client reads the map again`);
  // The map went in only once a standby acknowledged it (S3); what the new primary says now is the truth to print.
  const now = await tryCall(o.to, 'GET', '/cluster/replication', undefined, { timeoutMs: 5_000, secret: o.secret });
  const standbys = now?.status === 200 ? Number(now.body.semisync?.Rpl_semi_sync_master_clients ?? 0) : undefined;
  if (standbys === 0) console.log(`shard ${shardOf(map, o.node)} now runs without a standby, and its writes wait for one (S3). Make the old machine its standby: on the shard's host, run ${rejoin}`);
  else if (standbys !== undefined) {
    // With two standbys one may still be missing (the old machine, dead): say so, and how to bring it back.
    const peers = typeof now?.body.peer === 'string' && now.body.peer !== '' ? now.body.peer.split(',').length : standbys;
    const missing = standbys < peers ? `, of its ${peers}; to give it the old machine back as a standby, on the shard's host, run ${rejoin}` : '';
    console.log(`shard ${shardOf(map, o.node)}: ${o.to} is its primary, with ${standbys} standby${standbys === 1 ? '' : 's'} acknowledging its writes${missing}`);
  }
  return 0;
}

function fail(why: string): number {
  console.error(why);
  return 1;
}

const shardOf = (map: ClusterMap, name: string) => everyNode(map).find((n) => n.name === name)?.shard;

/**
 * The newest map of the cluster, read from the seeds and every node they name,
 * at its address (rule 7); or why there is none to fail over in. What a seed
 * holds at the address given counts too: failing a node back to the machine at
 * its name, that machine (a standby, its map replicated) may be the only one
 * left holding a map, while the node's address in it is the dead machine.
 */
async function clusterMap(o: FailoverOptions): Promise<ClusterMap | string> {
  const [seeded, read] = await Promise.all([ask(o.seeds), readCluster(o.seeds)]);
  const map = newest(new Map([...[...seeded].map(([seed, said]) => [`seed ${seed}`, said] as const), ...read]));
  if (map === undefined) return `refusing: no node of ${o.seeds.join(',')} holds a cluster map; a failover changes a node's address in it. Nothing was changed.`;
  if (!everyNode(map).some((n) => n.name === o.node)) return `refusing: ${o.node} is not a node of the cluster (${describeMap(map)}: ${everyNode(map).map((n) => n.name).join(',')}). Nothing was changed.`;
  return map;
}

/**
 * Step 0: what `o.to` is, or why it cannot take over `o.node`. It must be
 * the same shard; where the cluster has a secret, it must prove that it
 * holds it at that address (api/signing.ts, "A PROOF"), since what it says
 * to a plain GET a stranger can repeat.
 */
async function standbyProblem(o: FailoverOptions, map: ClusterMap): Promise<{ shard: string; role: string } | string> {
  const said = o.secret === undefined ? await shardSaid(o.to) : await shardProved(o.to, o.secret);
  const next = `Nothing was changed. Find the standby's address (./start-shards.sh status, on the shard's host), then run the failover with it in --to`;
  if (typeof said === 'string') return `refusing: ${said}. ${next}`;
  if (said.shard !== shardOf(map, o.node)) return `refusing: ${o.to} is shard ${said.shard}, not ${o.node}'s shard ${shardOf(map, o.node)}: it is not its standby. ${next}`;
  return said;
}

async function shardSaid(to: string): Promise<{ shard: string; role: string } | string> {
  const answer = (await ask([to])).get(to)!;
  return 'why' in answer ? `the standby ${to} cannot say which shard it is (${answer.why})` : { shard: answer.shard, role: 'standby' };
}

/** The shard that `to` proves it is, under a fresh nonce, or why it proves nothing. */
async function shardProved(to: string, secret: string): Promise<{ shard: string; role: string } | string> {
  const nonce = randomBytes(32).toString('hex');
  const answer = await tryCall(to, 'GET', `/cluster/proof?nonce=${nonce}`, undefined, {});
  if (answer === undefined) return `the standby ${to} gave no answer to read (unreachable, or not JSON)`;
  const { shard, role, mac } = answer.body ?? {};
  if (answer.status === 200 && typeof shard === 'string' && proves(secret, mac, nonce, hostOf(to) ?? to, shard)) return { shard, role: String(role) };
  const why = answer.status === 200 ? `its answer is no proof for ${to} under this secret` : problem(answer);
  return `${to} did not prove that it holds the cluster secret (${why}): it is not a machine of this cluster, or not at that address (a typo in --to?)`;
}

/** The map at the next epoch with `name` at `address`, in both rings. */
export function moved(map: ClusterMap, name: string, address: string): ClusterMap {
  const at = (nodes: ClusterMap['nodes']) => nodes.map((n) => (n.name === name ? { ...n, address } : n));
  return { ...map, epoch: map.epoch + 1, nodes: at(map.nodes), ...(map.moving && { moving: { ...map.moving, nodes: at(map.moving.nodes) } }) };
}

/**
 * Step 4: the map found, NODE at the standby's address, at the next epoch,
 * onto every node by the one installer. Rule 12: after losing the lock node
 * to another change, it reads the cluster again and builds on what it finds;
 * run again after a give-up, it finds its own map and brings the nodes behind
 * up to it (rule 13). The map now on every node, or why not.
 */
async function installMoved(o: FailoverOptions, found: ClusterMap): Promise<ClusterMap | string> {
  let map = found;
  for (let tries = 1; ; tries++) {
    const next = addressOf(map, o.node) === o.to ? map : moved(map, o.node, o.to);
    const done = await install(next, map, { secret: o.secret, wait: { node: o.node, ms: STANDBY_WAIT_MS } });
    if (done.ok) return next;
    if (done.passed) return `${done.why}. The new map is on ${lockNode(map, next)} and ${o.to} is the primary; run the same command again to finish`;
    const now = done.now === undefined ? undefined : newest(await readCluster(everyNode(done.now).map((n) => n.name)));
    const lock = lockNode(map, next);
    if (done.now === undefined && lock !== o.node) return `${done.why}. No node has the new map; ${o.to} is the primary. ${lock} is the lock node of every change of the map (rule 10): fail it over, or forget it if it is gone for good, then run the same command again`;
    if (now === undefined || tries >= MAP_TRIES) return `${done.why}. No node has the new map; ${o.to} is the primary; run the same command again`;
    console.log(`4. the cluster's map moved on to ${describeMap(now)} meanwhile: ${o.node} at ${o.to} goes into that map`);
    map = now;
  }
}

/** One request; undefined when the node does not answer at all. */
async function tryCall(node: string, method: string, path: string, body: unknown, options: CallOptions = {}): Promise<Answer | undefined> {
  try {
    return await call(node, method, path, body, {}, options);
  } catch {
    return undefined;
  }
}

// --- Two standbys (mysql/replication.ts, D5) ---------------------------------

type Received = { follows: { gtid_io_pos: string } | null; peer: string | null };

/**
 * The other standby of `o.to`'s shard, from its CLUSTER_PEER (undefined with
 * one standby). In an emergency the two may have received different writes,
 * each acknowledged by one of them: `o.to` must have received all its sibling
 * did, or the failover is refused before anything changes. A planned one
 * needs no check: the fenced primary wrote nothing past its position, which
 * the promotion applies.
 */
async function siblingOf(o: FailoverOptions, from: string, emergency: boolean): Promise<string | undefined | { refused: string }> {
  const read = async (at: string) => {
    const r = await tryCall(at, 'GET', '/cluster/replication', undefined, { timeoutMs: 5_000, secret: o.secret });
    return r?.status === 200 ? (r.body as Received) : undefined;
  };
  const to = await read(o.to);
  const sibling = (to?.peer ?? '').split(',').find((p) => p !== '' && p !== from && p !== o.to);
  if (sibling === undefined || !emergency || to?.follows == null) return sibling;
  const other = await read(sibling);
  if (other?.follows == null) {
    console.log(`   the other standby ${sibling} does not say what it received (down, or no longer a standby): ${o.to} is promoted without comparing`);
    return sibling;
  }
  const lacks = ahead(other.follows.gtid_io_pos, to.follows.gtid_io_pos);
  if (lacks.length === 0) {
    console.log(`   ${o.to} received up to ${to.follows.gtid_io_pos || '(none)'}, all that the other standby ${sibling} received (${other.follows.gtid_io_pos || '(none)'}): it may be promoted`);
    return sibling;
  }
  return {
    refused: `refusing: ${o.to} received up to GTID ${to.follows.gtid_io_pos || '(none)'}, and the other standby ${sibling} received more (${lacks.join(',')}), which may be acknowledged writes that only it holds (rule D5). Nothing was changed. Promote the most advanced standby:
  node ch_client.ts failover ${o.node} --to ${sibling}`,
  };
}

/** The other standby follows the new primary, from its own position (D5); true when it does. */
async function follow(o: FailoverOptions, sibling: string, body: object): Promise<boolean> {
  const done = await tryCall(sibling, 'POST', '/cluster/follow', body, { timeoutMs: 30_000, secret: o.secret });
  if (done?.status === 200) console.log(`   the other standby ${sibling} follows the new primary: it acknowledges its writes`);
  else console.log(`   the other standby ${sibling} could not be made to follow the new primary (${done === undefined ? 'no answer' : problem(done)}): on the shard's host, ./start-shards.sh rejoin N makes it follow`);
  return done?.status === 200;
}
