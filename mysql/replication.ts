// mysql/replication.ts: every statement of a shard's pair (a primary and its
// standby), in one place: the settings its MySQLs start with, setting up a
// standby, fencing, promoting, following and rejoining. The server's failover
// routes (shard/replication.ts) and the launcher (start-shards.sh, through
// mysql/pair.ts) both run them from here.
//
// THE DURABILITY RULE: an acknowledged write survives the loss of any one
// machine of its shard. MariaDB's semi-synchronous replication, AFTER_SYNC,
// with no timeout, is what keeps it; the rules, cited by number in the code,
// in docs/reliability.md and docs/operations.md:
//
//   S1. A standby is a second MariaDB that replicates the primary's binlog by
//       GTID (MASTER_USE_GTID = slave_pos), semi-synchronously, with
//       rpl_semi_sync_master_wait_point = AFTER_SYNC: a commit is synced to the
//       primary's binlog, then waits until the standby has it in its relay log
//       and said so, and only then is committed in InnoDB and answered. So the
//       client's 201 exists on two machines. sync_binlog = 1 and
//       innodb_flush_log_at_trx_commit = 1 make "has it" mean "on disk".
//   S2. Each machine has its own data directory (shard-N/, shard-N/standby/ and,
//       with two standbys, shard-N/standby-2/), its own server.ts and ports,
//       and reaches the others only over TCP on 127.0.0.1, as user repl
//       (REPLICATION SLAVE; repl-password, 0600). With two standbys the
//       primary's semi-sync waits for one ack, from either (MariaDB has no
//       count to set): either standby may hold a write the other lacks (D5).
//   S3. NO TIMEOUT. With its standby gone a primary gets no ack, and MariaDB
//       would fall back to asynchronous replication after
//       rpl_semi_sync_master_timeout, acknowledging writes that exist once. The
//       timeout is about 49 days, and rpl_semi_sync_master_wait_no_slave = ON:
//       the shard's writes wait (server.ts answers 503; such a write may commit
//       later, unacknowledged), reads go on. An operator who prefers
//       availability may SET GLOBAL rpl_semi_sync_master_enabled = 0 there.
//   S4. Every MySQL of a pair starts read-only, without
//       rpl_semi_sync_master_enabled, and the app user has no READ ONLY ADMIN:
//       a standby, and a fenced or restarted old primary, refuse the app's
//       writes. A primary becomes writable last (openPrimary, promote): semi-
//       sync on, a standby connected, then read_only = 0.
//   S5. Both machines run with the same settings, so either can be the
//       primary. A standby writes nothing of its own: its copy is loaded with
//       sql_log_bin = 0, so its binlog holds the primary's GTIDs only.
//   S6. Which machine is the primary is recorded in shard-N/primary ("primary",
//       "standby" or "standby-2": the machine's birth name; absent: "primary"). The
//       promotion writes it (D3), before the machine takes a write, so every
//       failover, planned or emergency, leaves it true; a start reads it and
//       writes to no other machine (docs/operations.md; mysql/primary-record.ts).
//   S7. The failover's steps run as the MySQL user operator (operator-password,
//       0600), never as the app's user: its READ_ONLY ADMIN writes through
//       read_only, which would undo the fence for the app. It has no table
//       privileges.
//
// A failover (operator/failover.ts) runs these steps, one request each:
//
//   D1. FENCE: read_only on the old primary, which waits for the commits in
//       flight; its gtid_binlog_pos is then everything it ever acknowledged.
//       A primary that cannot be reached is fenced by its standby leaving it:
//       by S3 it waits for an ack for ever.
//   D2. APPLY: the standby applies all it received before it serves. Planned:
//       up to the fenced primary's position. Emergency: it stops receiving, and
//       applies up to its Gtid_IO_Pos; by S1 every acknowledged write is there.
//   D3. PROMOTE: the standby stops replicating, is recorded as the primary
//       (S6), forgets the old one, turns on its own semi-sync, and only then
//       becomes writable (S4). Killed anywhere, a rerun finishes it.
//   D4. FOLLOW (rejoin): the old primary replicates from the new one, starting
//       from its own history. One that holds a transaction the new primary
//       never had (possible with AFTER_SYNC if it crashed between its binlog
//       sync and the ack: never an acknowledged write) has DIVERGED: MariaDB
//       refuses it (error 1236 under gtid_strict_mode), and the launcher
//       rebuilds it from the new primary, keeping a dump of what it held.
//       First, before its server is stopped, its semi-sync is turned off
//       (release): a commit it took before it was replaced, in its binlog
//       and waiting for an ack no standby will send (S3: for ever), holds
//       its locks; its server's own fence (E3) and shutdown, and the drop of
//       a rebuild, waited behind it. Released, such a commit finishes here,
//       unacknowledged (election/rules.ts E2: its request began under a
//       lease that has ended, so it is answered 503), and is kept in the dump.
//   D5. TWO STANDBYS: the one promoted must have received every GTID its
//       sibling received (ahead(), mysql/gtids.ts, finds what it lacks), or
//       the sibling could not follow it and an acknowledged write could be on
//       the sibling alone. In an emergency the failover compares what the two
//       received (their Gtid_IO_Pos) before D2 and refuses a --to that is
//       behind; after D3 it makes the sibling follow the new primary from its
//       own position, so the shard keeps a standby that acknowledges, with no
//       rebuild. Left open: a frozen old primary that thaws between the
//       comparison and the sibling's follow could still send the sibling a
//       write the new primary lacks.

import mysql from 'mysql';
import { driverOptions } from './connections.ts';
import type { Machine } from './primary-record.ts';

export type Sql = <R = any>(statement: string, values?: unknown[]) => Promise<R>;

/** How a server reaches its own MySQL as the operator, for a failover's steps (shard/replication.ts): never as the app's user. */
export type OperatorConfig = { socketPath?: string; host?: string; port?: number; password: string; replPassword?: string; peer?: string; record?: { file: string; machine: Machine } };
export type Where = { socketPath?: string; host?: string; port?: number };

/** An error with a stable code, as mysqljs's: NOTHING_TO_PROMOTE, NOT_APPLIED, WRITABLE, DIVERGED, NO_STANDBY. */
export class ReplicationError extends Error {
  readonly code: string;
  readonly state: object | undefined;
  constructor(code: string, message: string, state?: object) {
    super(message);
    this.code = code;
    this.state = state;
  }
}

/**
 * For tests, so that a test, not timing, decides where a kill or a pause
 * lands: PAIR_DIE_AT names a step at which this process dies (SIGKILL) with
 * the start-shards.sh processes that ran it (START_SHARDS_PID), as a kill -9
 * of the whole command would; PAIR_PAUSE_AT, one at which it stops (SIGSTOP)
 * until a SIGCONT.
 */
export function step(name: string): void {
  if (process.env.PAIR_PAUSE_AT === name) process.kill(process.pid, 'SIGSTOP');
  if (process.env.PAIR_DIE_AT !== name) return;
  for (const pid of (process.env.START_SHARDS_PID ?? '').split(' ').filter(Boolean)) process.kill(Number(pid), 'SIGKILL');
  process.kill(process.pid, 'SIGKILL');
}

// The longest a statement of these steps may wait (MASTER_GTID_WAIT, a fence's commits in flight).
export const WAIT_MAX_MS = 60_000;

/** Runs `steps` on one fresh connection, then closes it. */
export async function connected<T>(where: Where & { user: string; password: string }, steps: (sql: Sql) => Promise<T>): Promise<T> {
  const connection = mysql.createConnection({ ...driverOptions({ ...where, database: '' }), database: undefined });
  const sql = <R>(statement: string, values: unknown[] = []) =>
    new Promise<R>((resolve, reject) => connection.query({ sql: statement, values, timeout: WAIT_MAX_MS + 5_000 }, (err, rows) => (err ? reject(named(err, statement)) : resolve(rows as R))));
  try {
    return await steps(sql);
  } finally {
    connection.destroy();
  }
}

/** A step's error says which statement failed, and a timeout how long it waited (the driver's "Query inactivity timeout" said neither); its code is kept. */
function named(err: mysql.MysqlError, statement: string): mysql.MysqlError {
  const why = err.code === 'PROTOCOL_SEQUENCE_TIMEOUT' ? `no answer within ${(WAIT_MAX_MS + 5_000) / 1000} s` : err.message;
  err.message = `${statement.length > 80 ? `${statement.slice(0, 80)}...` : statement}: ${why}`;
  return err;
}

/**
 * S1, S3, S4, S5: the mysqld options of a machine of a pair. Row events name
 * a row by its primary key and carry only the columns set (binlog_row_image =
 * MINIMAL): a move's hand-off and adoption change one column of a whole row,
 * and each would otherwise log that row twice, and its standby apply both.
 */
export function mysqldFlags(dir: string, port: number, serverId: number, semisyncTimeoutMs: string): string[] {
  return [
    '--bind-address=127.0.0.1', `--port=${port}`, '--skip-name-resolve', `--server-id=${serverId}`,
    `--log-bin=${dir}/mysql/binlog`, `--relay-log=${dir}/mysql/relay`, '--binlog-format=ROW', '--binlog-row-image=MINIMAL', '--sync-binlog=1',
    '--innodb-flush-log-at-trx-commit=1', '--log-slave-updates=ON', '--gtid-strict-mode=ON', '--relay-log-recovery=ON',
    '--read-only=ON', '--rpl-semi-sync-master-enabled=OFF', '--rpl-semi-sync-master-wait-point=AFTER_SYNC',
    `--rpl-semi-sync-master-timeout=${semisyncTimeoutMs}`, '--rpl-semi-sync-master-wait-no-slave=ON', '--rpl-semi-sync-slave-enabled=ON',
  ];
}

/** S2, S7: the replication and operator users, made on the primary (they reach the standby by replication, or by its copy). */
export function userStatements(passwords: { repl: string; operator: string }): Array<[string, unknown[]]> {
  return [
    ["CREATE USER IF NOT EXISTS 'repl'@'127.0.0.1' IDENTIFIED BY ?", [passwords.repl]],
    ["ALTER USER 'repl'@'127.0.0.1' IDENTIFIED BY ?", [passwords.repl]],
    ["GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'", []],
    ["CREATE USER IF NOT EXISTS 'operator'@'localhost' IDENTIFIED BY ?", [passwords.operator]],
    ["ALTER USER 'operator'@'localhost' IDENTIFIED BY ?", [passwords.operator]],
    ["GRANT READ_ONLY ADMIN, REPLICATION MASTER ADMIN, REPLICATION SLAVE ADMIN, RELOAD, SLAVE MONITOR ON *.* TO 'operator'@'localhost'", []],
  ];
}

/** What a machine's MySQL says of its role and replication. */
export async function state(sql: Sql) {
  const [v] = await sql<any[]>('SELECT @@global.read_only AS read_only, @@gtid_binlog_pos AS gtid_binlog_pos, @@gtid_binlog_state AS gtid_binlog_state, @@gtid_slave_pos AS gtid_slave_pos');
  const [slave] = await sql<any[]>('SHOW SLAVE STATUS');
  const status = await sql<any[]>("SHOW GLOBAL STATUS WHERE Variable_name IN ('Rpl_semi_sync_master_status', 'Rpl_semi_sync_master_clients', 'Rpl_semi_sync_master_wait_sessions')");
  const semisync = Object.fromEntries(status.map((r) => [r.Variable_name, r.Value]));
  return {
    role: Number(v.read_only) === 0 ? 'primary' : 'standby',
    read_only: Number(v.read_only) === 1,
    gtid_binlog_pos: v.gtid_binlog_pos as string,
    gtid_binlog_state: v.gtid_binlog_state as string,
    gtid_slave_pos: v.gtid_slave_pos as string,
    follows:
      slave === undefined
        ? null
        : { master: `${slave.Master_Host}:${slave.Master_Port}`, io: slave.Slave_IO_Running as string, sql: slave.Slave_SQL_Running as string, gtid_io_pos: slave.Gtid_IO_Pos as string, error: (slave.Last_Error || slave.Last_IO_Error || null) as string | null, errno: Number(slave.Last_IO_Errno) || Number(slave.Last_SQL_Errno) || 0 },
    semisync,
  };
}
export type State = Awaited<ReturnType<typeof state>>;

/** D1: this machine acknowledges nothing more. Idempotent. */
export async function fence(sql: Sql): Promise<State> {
  await sql('SET GLOBAL read_only = 1');
  return state(sql);
}

export type Promoted = State & { promoted: boolean; applied: string };

/**
 * D2 and D3: applies up to `waitFor` (planned) or all it received (null:
 * emergency), then becomes the primary, recorded by `record` (S6). `recorded`
 * says whether the record names this machine already: a promotion killed
 * after its record is finished by the rerun; `rejoin`, the command that makes
 * a fenced old primary a standby. Idempotent on a primary.
 */
export async function promote(sql: Sql, o: { waitFor: string | null; timeoutMs: number; recorded: boolean; record: () => void; rejoin: string }): Promise<Promoted> {
  const before = await state(sql);
  if (before.follows === null) {
    if (!before.read_only) return { ...before, promoted: false, applied: before.gtid_binlog_pos };
    if (!o.recorded) throw new ReplicationError('NOTHING_TO_PROMOTE', `this machine follows no primary and is read-only (a fenced old primary): there is nothing to promote it from. Promote its standby, or make it one: ${o.rejoin}`, before);
    return { ...(await open(sql)), promoted: true, applied: before.gtid_binlog_pos };
  }
  // D2.
  if (o.waitFor === null) await sql('STOP SLAVE IO_THREAD');
  const target: string = o.waitFor ?? (await sql<any[]>('SHOW SLAVE STATUS'))[0]?.Gtid_IO_Pos ?? '';
  const [{ reached }] = await sql<any[]>('SELECT MASTER_GTID_WAIT(?, ?) AS reached', [target, o.timeoutMs / 1000]);
  if (Number(reached) !== 0) {
    // Still a standby: it receives again, or its primary's semi-sync would wait for its ack for ever (S3).
    if (o.waitFor === null) await sql('START SLAVE IO_THREAD');
    const now = await state(sql);
    throw new ReplicationError('NOT_APPLIED', `not promoted: this standby did not apply up to ${target} within ${o.timeoutMs} ms (it has ${now.gtid_slave_pos}); see GET /cluster/replication, then run the failover again`, now);
  }
  // D3.
  await sql('STOP SLAVE');
  o.record();
  step('promote-recorded');
  await sql('RESET SLAVE ALL');
  return { ...(await open(sql)), promoted: true, applied: target };
}

/** S4: semi-sync on, then writable. */
async function open(sql: Sql): Promise<State> {
  await sql('SET GLOBAL rpl_semi_sync_master_enabled = ON');
  await sql('SET GLOBAL read_only = 0');
  return state(sql);
}

/**
 * D4, first on a machine that is not the primary: semi-sync off, which lets go
 * the commits waiting for an ack (they finish here, unacknowledged), then
 * read-only, which waits for them (D1). Idempotent.
 */
export async function release(sql: Sql): Promise<State> {
  await sql('SET GLOBAL rpl_semi_sync_master_enabled = OFF');
  await sql('SET GLOBAL read_only = 1');
  return state(sql);
}

/** Where a machine's MySQL listens for replicas: host:port. */
export async function mysqlAddress(sql: Sql): Promise<string> {
  const [v] = await sql<any[]>('SELECT @@bind_address AS host, @@port AS port');
  return `${!v.host || v.host === '*' || v.host === '0.0.0.0' ? '127.0.0.1' : v.host}:${v.port}`;
}

/**
 * D4, and a standby's every start: replicate from `primary`, semi-synchronously,
 * with no semi-sync of its own (its waits would stall the events it applies).
 * `from`: "own history" for an old primary (its gtid_slave_pos is empty or
 * old), "its position" for a standby, which goes on from where it was.
 */
export async function follow(sql: Sql, primary: { host: string; port: number; replPassword: string }, from: 'own history' | 'its position'): Promise<State> {
  await release(sql);
  await sql('STOP SLAVE');
  if (from === 'own history') await sql('SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos');
  await sql("CHANGE MASTER TO MASTER_HOST = ?, MASTER_PORT = ?, MASTER_USER = 'repl', MASTER_PASSWORD = ?, MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1", [primary.host, primary.port, primary.replPassword]);
  await sql('START SLAVE');
  return state(sql);
}

/** S5: a copy's first statement, and its last ones: the users the mysql schema (not copied) would have held. */
export function copyStatements(passwords: { app: string; repl: string; operator: string }): { before: string; after: string } {
  const users = userStatements(passwords).filter(([s]) => !s.startsWith('ALTER'));
  const literal = (v: unknown) => `'${String(v).replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
  const inline = ([s, values]: [string, unknown[]]) => values.reduce<string>((text, v) => text.replace('?', literal(v)), s);
  return {
    before: 'SET SESSION sql_log_bin = 0;\n',
    after: [
      ["CREATE USER IF NOT EXISTS 'expenses'@'localhost' IDENTIFIED BY ?", [passwords.app]] as [string, unknown[]],
      ["GRANT SELECT, INSERT, UPDATE, DELETE ON expenses.* TO 'expenses'@'localhost'", []] as [string, unknown[]],
      ...users,
    ].map((s) => `${inline(s)};\n`).join(''),
  };
}

/** Forgets a copy that never finished, or a diverged history, on a machine about to get a new copy (S5: nothing of it is logged). */
export async function wipe(sql: Sql): Promise<void> {
  await sql('STOP SLAVE');
  await sql('RESET SLAVE ALL');
  await sql('SET SESSION sql_log_bin = 0');
  await sql('DROP DATABASE IF EXISTS expenses');
  await sql('RESET MASTER');
  await sql("SET GLOBAL gtid_slave_pos = ''");
}

/** S4, the last step of a start: every one of its `standbys` acknowledging, then writable. Idempotent. */
export async function openPrimary(primary: Sql, standbys: Sql[], waitMs: number): Promise<void> {
  await acknowledged(primary, standbys, waitMs);
  await primary('SET GLOBAL read_only = 0');
}

/** S4's first half: semi-sync on (a restarted primary starts without it: a wait alone would never end), then every one of `standbys` acknowledging. Idempotent. */
export async function acknowledged(primary: Sql, standbys: Sql[], waitMs: number): Promise<void> {
  await primary('SET GLOBAL rpl_semi_sync_master_enabled = ON');
  await waitForStandbys(primary, standbys, waitMs);
}

// MariaDB's errors of a replica whose history the primary does not hold (D4).
const DIVERGED = new Set([1236, 1950]);

/**
 * Waits until the primary has as many semi-synchronous clients as
 * `standbys`; DIVERGED, with the refused one's state and its index in
 * `standby`, if one was refused for its history; NO_STANDBY after `waitMs`.
 * Each is asked, not the count alone: the count names no machine, and a
 * sibling already following stood in it for one MariaDB refused (D4).
 */
async function waitForStandbys(primary: Sql, standbys: Sql[], waitMs: number): Promise<void> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const p = await state(primary);
    if (Number(p.semisync.Rpl_semi_sync_master_clients) >= standbys.length && p.semisync.Rpl_semi_sync_master_status === 'ON') return;
    const states: State[] = [];
    for (const [i, standby] of standbys.entries()) {
      const s = await state(standby);
      if (s.follows !== null && DIVERGED.has(s.follows.errno)) {
        throw new ReplicationError('DIVERGED', `it holds transactions the primary never had (its gtid_binlog_pos ${s.gtid_binlog_pos || '(none)'}, the primary's ${p.gtid_binlog_pos || '(none)'}): ${s.follows.error}`, { ...s, standby: i });
      }
      states.push(s);
    }
    if (Date.now() > deadline) {
      const why = states.map(({ follows: f }) => (f === null ? 'it follows no primary' : `IO ${f.io}, SQL ${f.sql}, Gtid_IO_Pos ${f.gtid_io_pos || 'none'}${f.error ? `, ${f.error}` : ''}`));
      const counted = standbys.length > 1 ? ` (the primary counts ${p.semisync.Rpl_semi_sync_master_clients} of ${standbys.length})` : '';
      throw new ReplicationError('NO_STANDBY', `not a semi-synchronous replica within ${waitMs / 1000} s${counted}: ${why.join('; ')}`, states.at(-1));
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A voter in an election stops receiving from the primary it voted to replace (election/rules.ts, E4). */
export async function stopReceiving(sql: Sql): Promise<void> {
  await sql('STOP SLAVE IO_THREAD');
}
