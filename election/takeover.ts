// election/takeover.ts: a standby that finds its primary gone takes its place
// (election/rules.ts, E5 and E6), with no person: it stands for election,
// and the winner runs the failover's steps on itself (operator/failover.ts),
// as Vitess's VTOrc runs EmergencyReparentShard.

import { everyNode, type ClusterMap } from '../api/cluster-map.ts';
import { installMoved } from '../operator/failover.ts';
import { log } from '../shard/http.ts';
import { promoteHere } from '../shard/replication.ts';
import { ask } from './ask.ts';
import { LEASE_MS, RENEW_MS, STAND_JITTER_MS } from './rules.ts';
import type { Seat } from './seat.ts';
import { stand } from './vote.ts';

// D2: how long the winner may take to apply what it received.
const APPLY_MS = 30_000;
// A gap between two watches longer than this is this process's stall, not its primary's silence.
const STALL_MS = 3 * RENEW_MS;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const lapsed = (seat: Seat) => seat.granted !== undefined && seat.granted.until <= performance.now();

/** E5: on a standby, at each tick: stands when its primary stopped renewing, and takes over if it wins. */
export async function watch(seat: Seat): Promise<void> {
  // A standby that was stopped itself (a stall, SIGSTOP) cannot tell its primary's silence from its own:
  // it gives the primary a fresh LEASE_MS. A longer promise is always safe (E1).
  const now = performance.now();
  if (now - seat.lastWatch > STALL_MS && seat.granted !== undefined) seat.granted.until = Math.max(seat.granted.until, now + LEASE_MS);
  seat.lastWatch = now;
  // E7: a pair never stands by itself; nor a machine the operator turned off; and a start, before any primary was seen, is no failure.
  if (seat.peers.length < 2 || !seat.standing.automatic || !seat.sawPrimary || !lapsed(seat)) return;
  const held = await seat.shard.cluster.load();
  // With no map, no client could find the winner: the operator's first reshard makes one.
  const node = held.map && everyNode(held.map).find((n) => n.shard === held.shard);
  if (held.map === undefined || node === undefined) return;
  seat.rising = true;
  try {
    await sleep(Math.random() * STAND_JITTER_MS);
    if (!lapsed(seat)) return; // a renewal came meanwhile: the primary is back
    const { won, term, votes } = await stand(seat, held.shard);
    if (!won) return;
    log(`election: ${node.name}'s primary stopped renewing its lease; this standby won term ${term} (votes: itself, ${votes.join(', ')}) and takes over`);
    await takeOver(seat, held.map, node.name);
  } catch (err) {
    log(`election: standing for ${node.name} failed (${(err as Error).message}); this standby tries again at its next tick`, 'stderr');
  } finally {
    seat.rising = false;
  }
}

/** E6: apply, promote, make the other standbys follow, and put the map with this machine at the shard's node. */
async function takeOver(seat: Seat, map: ClusterMap, name: string): Promise<void> {
  const { shard } = seat;
  const promoted = await promoteHere(shard, null, APPLY_MS);
  log(`election: promoted, at GTID ${promoted.gtid_binlog_pos}; semi-sync ${promoted.semisync?.Rpl_semi_sync_master_status ?? '?'}`);
  const acting = { shard: await shard.rows.shard(), epoch: map.epoch, mysql: promoted.mysql };
  await Promise.all(
    seat.peers.map(async (peer) => {
      const heard = await ask(peer, '/cluster/follow', acting, shard.secret, APPLY_MS);
      log(`election: ${peer} ${heard?.status === 200 ? `follows ${promoted.mysql}` : `does not follow yet (${heard === undefined ? 'no answer' : heard.body?.error ?? heard.status}): ./start-shards.sh rejoin N on its host makes it a standby`}`);
    }),
  );
  const seeds = everyNode(map).map((n) => n.name);
  const put = await installMoved({ seeds, node: name, to: shard.address, secret: shard.secret }, map);
  log(typeof put === 'string' ? `election: the map was not put everywhere: ${put}` : `election: the cluster's map is at epoch ${put.epoch}, ${name} at ${shard.address}`);
}
