// election/seat.ts: one machine's place in its shard's group
// (election/rules.ts): the others it talks to, the term and vote it must
// remember across a restart (E4), the grant it gave last as a standby, and
// the lease it holds as a primary (E1).
//
// The term and vote live in a file in the machine's directory, not in MySQL:
// a standby writes nothing to its database (S5). A vote must survive a
// kill -9, so the file is written anew, synced, and renamed over the old one.

import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Shard } from '../shard/context.ts';

/**
 * The highest term this machine knows (0: the launcher's first primary), whom
 * it voted for in it, and whether it may stand by itself (E5; the operator's
 * `failover NODE --automatic off|on`).
 */
export type Standing = { term: number; votedFor: string | null; automatic: boolean };

export type Seat = {
  shard: Shard;
  /** The servers of the group's other machines. */
  peers: string[];
  file: string;
  standing: Standing;
  /** E1: the last grant this machine gave, as a standby, by its clock (performance.now()). */
  granted?: { to: string; term: number; until: number };
  /** E1: as a primary, each peer's grant, counted from before it was asked; and the lease they make. */
  grants: Map<string, number>;
  leaseUntil: number;
  /** E5: a start is no failure; a standby stands only after it has granted a primary a lease. */
  sawPrimary: boolean;
  /** While this machine is promoted: it votes for no other and grants no lease. */
  rising: boolean;
  /** While this machine stands for election: it grants no lease, so that its own grant stays run out (E5). */
  standingFor: boolean;
  /** Whether this process, as a primary, checked that the map names it (E6, election/takeover.ts resume). */
  mapChecked: boolean;
  /** The time this process had lost to stalls when it last watched for its primary's loss (E5). */
  lost: number;
  /** The shard's id, read once: a grant must not need MySQL (E1). */
  id?: string;
};

/** The shard's id, from MySQL the first time. */
export async function shardId(seat: Seat): Promise<string> {
  seat.id ??= await seat.shard.rows.shard();
  return seat.id;
}

/**
 * The seat of a machine with standbys, or undefined: a server with no
 * peers (CLUSTER_PEER) or no MySQL operator has no group to keep. The file is
 * ELECTION_FILE, or election.json beside the machine's MySQL socket.
 */
export function createSeat(env: NodeJS.ProcessEnv, shard: Shard): Seat | undefined {
  const peers = (env.CLUSTER_PEER ?? '').split(',').map((p) => p.trim()).filter(Boolean);
  const file = env.ELECTION_FILE || (env.MYSQL_SOCKET ? join(dirname(env.MYSQL_SOCKET), 'election.json') : '');
  if (peers.length === 0 || shard.operator === undefined || file === '') return undefined;
  return { shard, peers, file, standing: readStanding(file), grants: new Map(), leaseUntil: 0, sawPrimary: false, rising: false, standingFor: false, mapChecked: false, lost: 0 };
}

/** E4: the seat's new term and vote, on disk before anyone is told. */
export function remember(seat: Seat, standing: Standing): void {
  const next = `${seat.file}.next`;
  const fd = openSync(next, 'w', 0o600);
  try {
    writeSync(fd, JSON.stringify(standing));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(next, seat.file);
  seat.standing = standing;
}

function readStanding(file: string): Standing {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return { term: 0, votedFor: null, automatic: true };
    throw err;
  }
  const { term, votedFor, automatic } = JSON.parse(text);
  if (Number.isSafeInteger(term) && term >= 0 && (votedFor === null || typeof votedFor === 'string') && typeof automatic === 'boolean') return { term, votedFor, automatic };
  throw new Error(`${file} holds no term and vote (${text.slice(0, 80)}): it is this machine's vote (election/rules.ts, E4). Restore it, or remove the machine's directory and rejoin it`);
}
