// election/rules.ts: the rules by which a shard replaces its primary without
// a person (the README's level 5, "Nobody has to wake up"), beside the map's
// rules 1-13 (api/cluster-map.ts) and the pair's S1-S7, D1-D4
// (mysql/replication.ts). The code cites them by number.
//
// THE RULE BEFORE THE CODE: an acknowledged write survives the loss of any
// one machine of its shard (S1), and no client is ever answered from a
// machine that another has replaced: no stale read, no write acknowledged
// twice. The GROUP of a shard is its machines, the primary and its standbys
// (CLUSTER_PEER names the others to each); a MAJORITY is more than half of
// the group. Clocks are trusted for the rate at which they run, never for
// the time they show.
//
//   E1. THE LEASE (a leader lease). A primary with standbys serves a request
//       only while it holds a lease: its own, and GRANTS from enough
//       standbys that with itself they are a majority (1 of 1, 1 of 2). A
//       grant says "I vote for no other, and take no other's writes, for
//       LEASE_MS by my clock from when I got this". The primary counts it
//       from before it sent the request, for LEASE_MS * (1 - DRIFT): with
//       clock rates that differ by less than DRIFT, its lease ends before
//       any grant behind it does. It renews every RENEW_MS.
//   E2. BEFORE AND AFTER. A request is answered only if the lease held when
//       it began and holds when it ends; otherwise 503, and the outcome of a
//       write is unknown to the client. A process paused in between (SIGSTOP,
//       a stall, a slow disk) has lost it: a thawed old primary never answers
//       from what it read before it was replaced.
//   E3. TERMS. Every primary rules in a term, a number that only grows (the
//       launcher's first primary: 0). A grant names the term; a machine
//       grants nothing to a term below the highest it knows. A primary told
//       of a higher term has been replaced: it fences itself (D1) and serves
//       nothing until it rejoins as a standby.
//   E4. ONE VOTE PER TERM, on disk before it is told (election/standing.ts),
//       as Redis Cluster's masters grant one failover vote per epoch. A
//       machine votes for a candidate in a higher term only if (a) its own
//       grant has run out, (b) it is not a primary, nor a winner being
//       promoted, and (c) the candidate has received everything it
//       received (a GTID position that covers its own), so that the winner
//       holds every acknowledged write.
//       Once it voted, it receives nothing more from the old primary (which
//       would make it diverge from the winner). A refusal changes nothing,
//       not even the term it knows, and a candidate asks first without
//       asking for the vote (Raft's pre-vote): a standby that cannot win
//       cannot depose a primary that is alive.
//   E5. THE CANDIDATE. A standby stands when the grant it last gave has
//       run out and no renewal came: its primary has not reached it for
//       LEASE_MS. It stands only after it has seen a primary since it
//       started (a start is no failure), never right after a stall of its
//       own (it gives its primary a fresh LEASE_MS), after a random wait (so
//       that two standbys rarely stand at once), in the next term, voting
//       for itself. From then until it has lost or been promoted it grants
//       no lease, so that its own grant stays run out.
//       With votes from a majority it is the only winner of its term,
//       unless it voted meanwhile for another in a higher term: then it
//       lost.
//   E6. THE TAKEOVER. The winner applies all it received (D2), promotes
//       (D3), makes the group's other standbys follow it (D4), holds a lease
//       in its term (E1), and puts the map at the next epoch with the shard's
//       node at its address, by the one installer (rules 10 and 12), for as
//       long as it is still the primary of its term: one deposed meanwhile
//       (E3) puts no map; one whose takeover was cut short (a stop and a
//       start after its promotion) puts it once it holds its lease again. By E1
//       and E4 the old primary's lease ran out before the winner's first
//       write: each grant it needed came from a majority, and a majority
//       voted only once their grants had run out.
//   E7. A PAIR (one standby) has no majority without its primary, so it
//       never stands by itself: there the person who runs `ch_client.ts
//       failover` stands in for the missing vote; so does one who runs it
//       with --without-vote, for machines gone for good. The standby still waits
//       for its own grant to run out first, so E1 and E2 hold in a pair too.
//       A shard with no standby holds no lease: no machine can replace it.

/** How long a grant lasts, by the granting machine's clock. */
export const LEASE_MS = 2_000;
/** How much faster one clock may run than another; NTP keeps real clocks within 0.05 per mille. */
export const DRIFT = 0.05;
/** How often a primary renews its lease. */
export const RENEW_MS = 400;
/** E5's random wait before a standby stands, at most. */
export const STAND_JITTER_MS = 400;

/** More than half of a group of `size` machines. */
export const majority = (size: number) => Math.floor(size / 2) + 1;

/**
 * E4 (c): whether GTID position `a` holds everything `b` holds: for each
 * replication domain of b, a has a sequence number at least as high.
 * Positions are MariaDB's "domain-server-seq,..." lists.
 */
export function covers(a: string, b: string): boolean {
  const seqs = (pos: string) => new Map(pos.split(',').filter(Boolean).map((g) => { const [d, , s] = g.trim().split('-'); return [d!, Number(s)] as const; }));
  const mine = seqs(a);
  return [...seqs(b)].every(([domain, seq]) => (mine.get(domain) ?? -1) >= seq);
}
