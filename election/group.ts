// election/group.ts: where the election joins a shard's server
// (cluster/join.ts): its routes (a lease, a vote, the operator's switch);
// the tick that renews a primary's lease or watches for its loss; the
// lease's check around every request for an id (E2); and the vote that
// comes before the operator's promote (E7).

import type { Context, Handler, Shard } from '../shard/context.ts';
import { HttpError, log, readJson, type Call, type Reply, type Route } from '../shard/http.ts';
import { actingFor } from '../shard/replication.ts';
import { grant, holds, renew } from './lease.ts';
import { LEASE_MS, RENEW_MS } from './rules.ts';
import { createSeat, remember, shardId, type Seat } from './seat.ts';
import { resume, watch } from './takeover.ts';
import { stand, vote } from './vote.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export type Group = {
  /** A lease's and a vote's routes: signed, and run under no map, nor any statement they do not need (E1). */
  routes: Array<Route<Call>>;
  /** E2: an expense handler that a primary runs only under its lease. */
  leased(handler: Handler): Handler;
  /** E7: the operator's promote, after this machine's grant ran out and a majority voted for it. */
  rising(promote: Handler): Handler;
};

/** The group of a machine with standbys (CLUSTER_PEER), or undefined for one without. */
export function joinGroup(env: NodeJS.ProcessEnv, shard: Shard): Group | undefined {
  const seat = createSeat(env, shard);
  if (seat === undefined) return undefined;
  tick(seat);
  return {
    routes: [
      [/^\/cluster\/lease$/, { POST: (c) => grant(seat, c) }],
      [/^\/cluster\/vote$/, { POST: (c) => vote(seat, c) }],
      [/^\/cluster\/automatic$/, { POST: (c) => setAutomatic(seat, c) }],
    ],
    leased: (handler) => async (c) => {
      if (!c.held.writable) return handler(c); // a standby answers 421 or 503 by rule 8
      if (!(await heldWithin(seat, LEASE_MS))) throw noLease(c);
      const reply = await handler(c);
      if (!holds(seat)) throw noLease(c);
      return reply;
    },
    rising: (promote) => (c) => rise(seat, c, promote),
  };
}

/** Every RENEW_MS, one at a time: a primary renews its lease; a standby watches for its primary's loss. */
function tick(seat: Seat): void {
  const next = () => setTimeout(() => tick(seat), RENEW_MS).unref();
  seat.shard.rows
    .writable()
    .then((writable) => (writable ? renew(seat).then(() => resume(seat)) : seat.rising ? undefined : watch(seat)))
    .catch((err) => log(`election: ${(err as Error).message}`, 'stderr'))
    .finally(next);
}

/** POST /cluster/automatic {"shard", "automatic": bool} (operator/automatic.ts): whether this machine may stand by itself (E5). */
async function setAutomatic(seat: Seat, c: Call): Promise<Reply> {
  const { shard, automatic } = (readJson(c) ?? {}) as { shard?: unknown; automatic?: unknown };
  if (typeof automatic !== 'boolean' || typeof shard !== 'string') throw new HttpError(400, 'automatic needs {"shard": "<the shard\'s id>", "automatic": true or false}');
  const mine = await shardId(seat);
  if (shard !== mine) throw new HttpError(409, `not changed: this machine is shard ${mine}'s, not ${shard}'s`);
  remember(seat, { ...seat.standing, automatic });
  return { status: 200, body: { automatic, term: seat.standing.term, peers: seat.peers } };
}

async function heldWithin(seat: Seat, ms: number): Promise<boolean> {
  for (const end = performance.now() + ms; !holds(seat); await sleep(20)) if (performance.now() > end) return false;
  return true;
}

function noLease(c: Context): HttpError {
  const why = `shard ${c.held.shard}'s primary holds no lease from its standbys (election/rules.ts, E1), so it cannot tell that it was not replaced, and answers nothing`;
  return new HttpError(503, `${why}: try again; a client reads the cluster map again from the other nodes`, { 'Retry-After': '1' }, { role: 'primary', lease: false });
}

/**
 * E7 and E4 for the operator's promote: no machine becomes the primary while a
 * grant it gave runs, nor without a majority. A promote meant for another
 * shard, or under an older map, is refused first (D0), changing nothing.
 */
async function rise(seat: Seat, c: Context, promote: Handler): Promise<Reply> {
  const asked = readJson(c) as { shard?: unknown; epoch?: unknown; without_vote?: unknown } | null;
  actingFor(c, 'promote', asked);
  if (await seat.shard.rows.writable()) return promote(c); // already the primary: the promote is idempotent
  seat.rising = true;
  seat.mapChecked = true; // the operator's failover puts the map
  try {
    const left = (seat.granted?.until ?? 0) - performance.now();
    if (left > 0) await sleep(left);
    // E7: in a pair, or when the operator says the others are gone for good, the operator stands in for their votes.
    const standIn = seat.peers.length < 2 || asked?.without_vote === true;
    if (!standIn) {
      const { won, term, votes } = await stand(seat, c.held.shard);
      if (!won) {
        throw new HttpError(409, `not promoted: in term ${term} only ${votes.length + 1} of ${seat.peers.length + 1} machines voted for it (E4): another standby received more, or the primary still renews its lease, or the others do not answer. See GET /cluster/replication on each machine, then run the failover again. If the machines that did not vote are gone for good, run it with --without-vote: writes that only they acknowledged are then lost`);
      }
    }
    const reply = await promote(c);
    // The stand-in's term comes after the promotion: a promotion that failed deposes no one (E3).
    if (standIn) remember(seat, { ...seat.standing, term: seat.standing.term + 1, votedFor: seat.shard.address });
    return reply;
  } finally {
    seat.rising = false;
  }
}
