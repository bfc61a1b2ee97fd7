// election/vote.ts: one vote per term (election/rules.ts, E4), and a
// standby's standing for election (E5), as Redis Cluster's replicas ask the
// masters for a failover vote at a new epoch.

import { HttpError, readJson, type Call, type Reply } from '../shard/http.ts';
import type { Shard } from '../shard/context.ts';
import { replicationHere, stopReceivingHere } from '../shard/replication.ts';
import { ask } from './ask.ts';
import { covers, majority } from './rules.ts';
import { remember, shardId, type Seat } from './seat.ts';

const VOTE_TIMEOUT_MS = 1_000;

/** E4 (c): all this machine has received: its relay log's position while it follows, else its binlog's. */
export async function received(shard: Shard): Promise<string> {
  const s = await replicationHere(shard);
  return s.follows?.gtid_io_pos || s.gtid_binlog_pos;
}

/**
 * E4: POST /cluster/vote {"shard", "term", "candidate", "received", "pre"}.
 * Granted at most once per term, and written down before it is answered; a
 * refusal changes nothing here. With "pre": true it is Raft's pre-vote: the
 * same question, answered without voting, so that a standby that cannot win
 * raises no term (E4: it cannot depose a primary that is alive).
 */
export async function vote(seat: Seat, c: Call): Promise<Reply> {
  const asked = readJson(c) as { shard?: unknown; term?: unknown; candidate?: unknown; received?: unknown; pre?: unknown } | null;
  const { shard, term, candidate, received: theirs, pre } = asked ?? {};
  if (typeof shard !== 'string' || !Number.isSafeInteger(term) || typeof candidate !== 'string' || typeof theirs !== 'string') {
    throw new HttpError(400, 'a vote needs {"shard", "term": <the next term>, "candidate": "<its address>", "received": "<its GTID position>"}');
  }
  const refuse = (why: string) => ({ status: 409, body: { granted: false, term: seat.standing.term, error: `no vote for ${candidate} in term ${term}: ${why}` } });
  const { term: known, votedFor } = seat.standing;
  const mine = await shardId(seat);
  if (shard !== mine) return refuse(`this machine is shard ${mine}'s, not ${shard}'s`);
  if ((term as number) < known || ((term as number) === known && votedFor !== candidate)) return refuse(`this machine voted in term ${known} already${votedFor === null ? '' : `, for ${votedFor}`}`);
  if (seat.granted !== undefined && seat.granted.until > performance.now()) return refuse(`its lease to the primary ${seat.granted.to} has not run out`);
  if (seat.rising) return refuse('this machine won an election and is being promoted');
  if (await seat.shard.rows.writable().catch(() => false)) return refuse('this machine is a primary');
  const had = await received(seat.shard);
  if (!covers(theirs as string, had)) return refuse(`it received ${had}, more than the candidate's ${theirs}`);
  if (pre !== true) {
    remember(seat, { ...seat.standing, term: term as number, votedFor: candidate });
    // What the old primary sends after this vote would make this machine diverge from the winner.
    await stopReceivingHere(seat.shard);
  }
  return { status: 200, body: { granted: true, term } };
}

/** E5: stands in the next term, voting for itself, once a pre-vote says that a majority would vote for it. */
export async function stand(seat: Seat, shard: string): Promise<{ won: boolean; term: number; votes: string[] }> {
  // From here until it has lost or been promoted, this machine grants no lease: a grant given during its own
  // election would let the old primary serve past the winner's first write (E5, E6).
  seat.standingFor = true;
  try {
    return await standing(seat, shard);
  } finally {
    seat.standingFor = false;
  }
}

async function standing(seat: Seat, shard: string): Promise<{ won: boolean; term: number; votes: string[] }> {
  const round = async (pre: boolean) => {
    const asked = { shard, term: seat.standing.term + (pre ? 1 : 0), candidate: seat.shard.address, received: await received(seat.shard), pre };
    const heard = await Promise.all(seat.peers.map(async (peer) => [peer, await ask(peer, '/cluster/vote', asked, seat.shard.secret, VOTE_TIMEOUT_MS)] as const));
    const votes = heard.filter(([, h]) => h?.status === 200 && h.body?.granted === true).map(([peer]) => peer);
    return { won: votes.length + 1 >= majority(seat.peers.length + 1), term: asked.term, votes };
  };
  const pre = await round(true);
  if (!pre.won) return pre;
  remember(seat, { ...seat.standing, term: seat.standing.term + 1, votedFor: seat.shard.address });
  const real = await round(false);
  // A vote this machine gave meanwhile, in a higher term, ended its own candidacy (E4).
  const still = seat.standing.term === real.term && seat.standing.votedFor === seat.shard.address;
  return { ...real, won: real.won && still };
}
