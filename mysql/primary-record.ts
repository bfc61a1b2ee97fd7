// mysql/primary-record.ts: rule S6 of mysql/replication.ts, the record of
// which machine of a shard is its primary (shard-N/primary), written by a
// promotion before the machine takes a write, read by every start. A machine
// is named by its birth name: its data directory's, whichever role it has now.

import { readFileSync, renameSync, writeFileSync } from 'node:fs';

const MACHINES = ['primary', 'standby', 'standby-2'] as const;
export type Machine = (typeof MACHINES)[number];
export const isMachine = (name: unknown): name is Machine => MACHINES.includes(name as Machine);

/** S6: the machine recorded as the shard's primary. */
export function recordedPrimary(file: string): Machine {
  try {
    const name = readFileSync(file, 'utf8').trim();
    return isMachine(name) ? name : 'primary';
  } catch {
    return 'primary';
  }
}

/** S6: the launcher's number N of the pair whose record is `file` (start-shards.sh keeps it at shard-N/primary), or null. */
export function shardNumber(file: string): number | null {
  const n = /(?:^|\/)shard-(\d+)\/primary$/.exec(file)?.[1];
  return n === undefined ? null : Number(n);
}

/** D4, as the operator runs it on the pair's host: the launcher's rejoin of shard N, or how to find N where it is not known. */
export function rejoinCommand(number: number | null, shard: string | undefined): string {
  return number !== null ? `./start-shards.sh rejoin ${number}` : `./start-shards.sh rejoin N, N being the number start-shards.sh gave shard ${shard ?? '?'} (./start-shards.sh status lists them)`;
}

/** S6, written whole or not at all: a kill leaves the old record or the new one. */
export function recordPrimary(file: string, machine: Machine): void {
  writeFileSync(`${file}.new`, `${machine}\n`, { mode: 0o600 });
  renameSync(`${file}.new`, file);
}
