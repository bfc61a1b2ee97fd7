// election/takeover.ts: a standby that finds its primary gone takes its place
// (election/rules.ts, E5 and E6), with no person: it stands for election,
// and the winner runs the failover's steps on itself (operator/failover.ts),
// as Vitess's VTOrc runs EmergencyReparentShard.

import { addressOf, everyNode, type ClusterMap } from '../api/cluster-map.ts';
import { newest } from '../client/cluster.ts';
import { lostMs } from '../client/http.ts';
import { moved } from '../operator/failover.ts';
import { install } from '../operator/maps.ts';
import { readCluster } from '../operator/plan.ts';
import { log } from '../shard/http.ts';
import { promoteHere } from '../shard/replication.ts';
import { ask } from './ask.ts';
import { holds } from './lease.ts';
import { LEASE_MS, STAND_JITTER_MS } from './rules.ts';
import { shardId, type Seat } from './seat.ts';
import { stand } from './vote.ts';

// D2: how long the winner may take to apply what it received.
const APPLY_MS = 30_000;
// How often the winner reads the cluster again to put its address into the map it finds (rule 12).
const MAP_TRIES = 10;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const lapsed = (seat: Seat) => seat.granted !== undefined && seat.granted.until <= performance.now();

/** E5: on a standby, at each tick: stands when its primary stopped renewing, and if it wins, is promoted and takes over. */
export async function watch(seat: Seat): Promise<void> {
  // A standby that was stopped itself (a stall, SIGSTOP: client/http.ts's heartbeat counts the time lost) cannot
  // tell its primary's silence from its own: it gives the primary a fresh LEASE_MS. A longer promise is always safe (E1).
  const lost = lostMs();
  if (lost > seat.lost && seat.granted !== undefined) seat.granted.until = Math.max(seat.granted.until, performance.now() + LEASE_MS);
  seat.lost = lost;
  // E7: a pair never stands by itself; nor a machine the operator turned off; and a start, before any primary was seen, is no failure.
  if (seat.peers.length < 2 || !seat.standing.automatic || !seat.sawPrimary || !lapsed(seat)) return;
  const held = await seat.shard.cluster.load();
  // With no map, no client could find the winner: the operator's first reshard makes one.
  const node = held.map && everyNode(held.map).find((n) => n.shard === held.shard);
  if (held.map === undefined || node === undefined) return;
  // A random wait first, so that two standbys that lost one primary rarely stand at once (E5).
  await sleep(Math.random() * STAND_JITTER_MS);
  if (!lapsed(seat)) return; // a renewal came meanwhile: the primary is back
  const won = await stand(seat, held.shard).catch((err: Error) => log(`election: standing for ${node.name} failed (${err.message}); this standby tries again at its next tick`, 'stderr'));
  if (!won?.won) return;
  log(`election: ${node.name}'s primary stopped renewing its lease; this standby won term ${won.term} (votes: itself, ${won.votes.join(', ')}) and takes over`);
  let promoted: Awaited<ReturnType<typeof promoteHere>>;
  seat.mapChecked = true; // its takeover puts the map
  seat.rising = true; // E4 (b): until promoted, this machine votes for no other and grants no lease
  try {
    promoted = await promoteHere(seat.shard, held.shard, null, APPLY_MS);
    seat.grants.clear();
    seat.leaseUntil = 0;
  } catch (err) {
    log(`election: the promotion failed (${(err as Error).message}); this machine stays a standby, and stands again at its next tick`, 'stderr');
    return;
  } finally {
    seat.rising = false;
  }
  log(`election: promoted, at GTID ${promoted.gtid_binlog_pos}; semi-sync ${promoted.semisync?.Rpl_semi_sync_master_status ?? '?'}`);
  // The rest runs on its own: the new primary's lease must not wait for the map (E6).
  void takeOver(seat, won.term, held.map, node.name, promoted.mysql).catch((err) => log(`election: the takeover stopped (${(err as Error).message})`, 'stderr'));
}

/** E6, after the promotion: the other standbys follow this machine, and the map puts the shard's node at its address. */
async function takeOver(seat: Seat, term: number, found: ClusterMap, name: string, mysql: string): Promise<void> {
  const { shard } = seat;
  const acting = { shard: await shardId(seat), epoch: found.epoch, mysql };
  await Promise.all(
    seat.peers.map(async (peer) => {
      const heard = await ask(peer, '/cluster/follow', acting, shard.secret, APPLY_MS);
      log(`election: ${peer} ${heard?.status === 200 ? `follows ${mysql}` : `does not follow yet (${heard === undefined ? 'no answer' : heard.body?.error ?? heard.status}): ./start-shards.sh rejoin N on its host makes it a standby`}`);
    }),
  );
  await putMap(seat, term, found, name);
}

/**
 * E6 after a restart: a winner whose takeover was cut short before it put the
 * map (a stop and a start, which finished its promotion, D3, and made the
 * others its standbys) puts it once it holds its lease in the term it won.
 * Checked once per process; a process promoted itself puts it in its takeover.
 */
export async function resume(seat: Seat): Promise<void> {
  if (seat.mapChecked || !holds(seat)) return;
  seat.mapChecked = true;
  if (seat.standing.votedFor !== seat.shard.address) return; // the launcher's first primary, or an operator's stand-in failover, which puts its map
  const held = await seat.shard.cluster.load();
  const node = held.map && everyNode(held.map).find((n) => n.shard === held.shard);
  if (held.map === undefined || node === undefined || addressOf(held.map, node.name) === seat.shard.address) return;
  log(`election: this machine won term ${seat.standing.term} and is the primary, and the map still puts ${node.name} at ${addressOf(held.map, node.name)}: its takeover was cut short; it puts the map now (E6)`);
  // On its own, as in the takeover: the lease's renewals must not wait for the map.
  void putMap(seat, seat.standing.term, held.map, node.name).catch((err) => log(`election: putting the map stopped (${(err as Error).message})`, 'stderr'));
}

/** Rules 10 and 12: the map found, this address in it, over whatever map the cluster holds by then; only while this machine still rules (E3). */
async function putMap(seat: Seat, term: number, found: ClusterMap, name: string): Promise<void> {
  const { shard } = seat;
  const seeds = everyNode(found).map((n) => n.name);
  for (let map: ClusterMap | undefined = found, tries = 0; map !== undefined && tries < MAP_TRIES; tries++) {
    if (seat.standing.term !== term || !(await shard.rows.writable())) return log(`election: deposed before the map was put (E3): it puts none`);
    if (addressOf(map, name) === shard.address) return log(`election: the cluster's map is at epoch ${map.epoch}, ${name} at ${shard.address}`);
    const done = await install(moved(map, name, shard.address), map, { secret: shard.secret, wait: { node: name, ms: APPLY_MS } });
    if (!done.ok) log(`election: the map was not put everywhere (${done.why}); reading the cluster again`);
    map = newest(await readCluster(seeds));
  }
  log(`election: the cluster's map does not name this machine yet; to finish, run: node ch_client.ts failover ${name} --to ${shard.address}`, 'stderr');
}
