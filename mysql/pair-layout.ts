// mysql/pair-layout.ts: one shard's machines as start-shards.sh's layout()
// passes them to mysql/pair.ts and mysql/pair-status.ts in the environment:
// their directories, ports and pids, and a root connection on each.
//
// PAIR_SHARD (its number), PAIR_DIR (shard-N), PAIR_MACHINES (birth names,
// "primary" first), PAIR_MYSQL and PAIR_HTTP (their ports, in that order),
// PAIR_PIDS (server, mysqld of each; - for none).

import { join } from 'node:path';
import { isMachine, type Machine } from './primary-record.ts';
import { connected, type Sql } from './replication.ts';

const env = process.env;
export const shard = env.PAIR_SHARD ?? '?';
export const shardDir = env.PAIR_DIR ?? '.';
export const machines = (env.PAIR_MACHINES ?? 'primary standby').split(' ').filter(isMachine);
export const [mysqlPorts, httpPorts] = [env.PAIR_MYSQL, env.PAIR_HTTP].map((s) => (s ?? '').split(' ').map(Number)) as [number[], number[]];
export const HOST = '127.0.0.1';

export const dirOf = (m: Machine) => (m === 'primary' ? shardDir : join(shardDir, m));
export const index = (m: Machine) => machines.indexOf(m);
export const others = (m: Machine) => machines.filter((o) => o !== m);
export const label = (m: Machine) => (m === 'primary' ? `shard ${shard}'s primary machine` : `shard ${shard}'s ${m} machine`);
export const http = (m: Machine) => `${HOST}:${httpPorts[index(m)]}`;
export const recordFile = join(shardDir, 'primary');
export const pids = (env.PAIR_PIDS ?? '').split(' ');
export const serverPid = (m: Machine) => pids[index(m) * 2] ?? '-';
export const mysqldPid = (m: Machine) => pids[index(m) * 2 + 1] ?? '-';

/** As root, on a machine's socket. */
export const on = <T>(m: Machine, steps: (sql: Sql) => Promise<T>) => connected({ socketPath: join(dirOf(m), 'mysqld.sock'), user: 'root', password: '' }, steps);
