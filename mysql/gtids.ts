// mysql/gtids.ts: GTID positions compared, with no MySQL to ask: which
// transactions of an old primary the new one never had (D4), and what one
// standby received beyond its sibling (D5). The rules are mysql/replication.ts's.

import type { State } from './replication.ts';

/**
 * D4, before a machine follows from its own history: the GTIDs of its binlog
 * that `primary` never had. Under gtid_strict_mode sequence numbers only grow
 * in a domain, so its last GTID d-s-n is missing if the primary's history in
 * domain d ends below n, or if the primary's last from server s is below n.
 * Empty when none is known missing (a replica MariaDB refuses later is caught
 * by waitForStandby, error 1236).
 */
export function missingFrom(primary: State, own: State): string[] {
  const gtids = (list: string) => list.split(',').filter(Boolean).map((g) => g.split('-').map(Number) as [number, number, number]);
  const theirs = gtids(`${primary.gtid_binlog_state},${primary.gtid_slave_pos}`);
  return gtids(own.gtid_binlog_pos)
    .filter(([d, s, n]) => {
      const top = Math.max(0, ...theirs.filter(([td]) => td === d).map(([, , tn]) => tn));
      const fromS = primary.gtid_binlog_state.split(',').filter(Boolean).map((g) => g.split('-').map(Number)).find(([td, ts]) => td === d && ts === s);
      return n > top || (fromS !== undefined && fromS[2]! < n);
    })
    .map((g) => g.join('-'));
}

/** D5: the GTIDs of `position` beyond `than` (a higher sequence number in a domain), as d-s-n. */
export function ahead(position: string, than: string): string[] {
  const gtids = (list: string) => list.split(',').filter(Boolean).map((g) => g.split('-').map(Number) as [number, number, number]);
  const top = new Map(gtids(than).map(([d, , n]) => [d, n]));
  return gtids(position).filter(([d, , n]) => n > (top.get(d) ?? 0)).map((g) => g.join('-'));
}
