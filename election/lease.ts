// election/lease.ts: the primary's lease (election/rules.ts, E1-E3): a
// primary renews it with its standbys, and serves only while it holds it; a
// standby grants it, and by granting promises to stand for nothing meanwhile.

import { HttpError, log, readJson, type Call, type Reply } from '../shard/http.ts';
import { fenceHere } from '../shard/replication.ts';
import { ask } from './ask.ts';
import { DRIFT, LEASE_MS, majority } from './rules.ts';
import { remember, shardId, type Seat } from './seat.ts';

/** E1: whether this primary may serve now. */
export const holds = (seat: Seat) => performance.now() < seat.leaseUntil;

/**
 * E1: one round of renewal. Each grant counts from before its request was
 * sent, for LEASE_MS * (1 - DRIFT); the lease runs to the time that a
 * majority, this machine with enough grants, still covers.
 */
export async function renew(seat: Seat): Promise<void> {
  const { term } = seat.standing;
  const asked = { shard: await shardId(seat), term, from: seat.shard.address };
  await Promise.all(
    seat.peers.map(async (peer) => {
      const sentAt = performance.now();
      const heard = await ask(peer, '/cluster/lease', asked, seat.shard.secret, LEASE_MS / 2);
      if (heard?.status === 200 && heard.body?.granted === true) seat.grants.set(peer, sentAt + LEASE_MS * (1 - DRIFT));
      else if (Number.isSafeInteger(heard?.body?.term) && heard!.body.term > term) await deposed(seat, peer, heard!.body.term);
    }),
  );
  const needed = majority(seat.peers.length + 1) - 1;
  const until = [...seat.grants.values()].sort((a, b) => b - a)[needed - 1] ?? 0;
  if (seat.standing.term === term) seat.leaseUntil = Math.max(seat.leaseUntil, until);
}

/** E3: a higher term exists, so another machine was elected: this one fences itself and serves nothing. */
async function deposed(seat: Seat, peer: string, term: number): Promise<void> {
  if (term <= seat.standing.term) return;
  seat.leaseUntil = 0;
  seat.grants.clear();
  remember(seat, { ...seat.standing, term, votedFor: null });
  log(`election: ${peer} knows term ${term}, above this primary's: another machine was elected. Fencing this one (D1); it serves nothing until it rejoins as a standby: ./start-shards.sh rejoin N on its host`);
  await fenceHere(seat.shard).catch((err) => log(`election: the fence failed (${(err as Error).message}); this machine still serves nothing, having no lease`, 'stderr'));
}

/**
 * E1, E3: POST /cluster/lease {"shard", "term", "from"}, from the group's
 * primary. A standby grants it for LEASE_MS by its own clock; a primary, a
 * machine being promoted, or one that knows a higher term refuses, and says
 * the term it knows.
 */
export async function grant(seat: Seat, c: Call): Promise<Reply> {
  const asked = readJson(c) as { shard?: unknown; term?: unknown; from?: unknown } | null;
  const { shard, term, from } = asked ?? {};
  if (typeof shard !== 'string' || !Number.isSafeInteger(term) || (term as number) < 0 || typeof from !== 'string') {
    throw new HttpError(400, 'a lease needs {"shard": "<the shard\'s id>", "term": <the primary\'s term>, "from": "<its address>"}');
  }
  const refuse = (why: string) => ({ status: 409, body: { granted: false, term: seat.standing.term, error: `no lease for ${from}: ${why}` } });
  const mine = await shardId(seat);
  if (shard !== mine) return refuse(`this machine is shard ${mine}'s, not ${shard}'s`);
  if ((term as number) < seat.standing.term) return refuse(`term ${term} is over: this machine knows term ${seat.standing.term}`);
  if (seat.rising || seat.standingFor) return refuse('this machine stands for election, or is being promoted');
  // A machine whose MySQL is down is no primary: its promise (E1) needs no database.
  if (await seat.shard.rows.writable().catch(() => false)) return refuse('this machine is a primary: it grants no lease');
  const now = performance.now();
  if (seat.granted !== undefined && seat.granted.to !== from && seat.granted.until > now && seat.granted.term === term) return refuse(`its lease is ${seat.granted.to}'s`);
  if ((term as number) > seat.standing.term) remember(seat, { ...seat.standing, term: term as number, votedFor: null });
  seat.granted = { to: from, term: term as number, until: now + LEASE_MS };
  seat.sawPrimary = true;
  return { status: 200, body: { granted: true, term, ms: LEASE_MS } };
}
