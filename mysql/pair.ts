// mysql/pair.ts: start-shards.sh's decisions for one shard's machines (a
// primary and one or two standbys, or a shard alone), run as `node
// mysql/pair.ts start|status|release` with the shard in the environment. The
// statements and their rules (S1-S7, D1-D5) are mysql/replication.ts's; this
// file decides which of them each machine needs, from what its MySQL says.
//
// start: the whole shard in one Node process (each costs seconds under load,
// and a rejoin is on an outage's clock). It asks the launcher for each
// process, a line on stdout ("mysqld M OPTION..." or "server M VAR=VALUE...",
// tab-separated), and waits for its "done" on stdin. 1. Each machine whose
// MySQL is down: its data directory (initialise), then its MySQL. 2. The
// primary is the machine S6 names; a promotion killed after its record is
// finished (D3). Refused (exit 2, nothing written) when the primary's data is
// gone and a standby's is not: the way out is a failover, whose standbys'
// servers it starts. 3. schema.sql, the cluster's tables and the app user, on
// the primary alone, if it never opened (a shard alone: at every start). 4.
// Every other machine its standby: keep following, rejoin from its own
// history, or get a copy; a diverged one is rebuilt (D4); the primary opens
// (S4). 5. The servers, the primary's first. status: the shard's lines of
// `./start-shards.sh status` (mysql/pair-status.ts). release: the rejoin's
// first step (D4).
//
// The environment: the shard's machines (mysql/pair-layout.ts), PAIR_MYSQLD,
// PAIR_INSTALL_DB, PAIR_EXTRA_FLAGS (options of every run of it), PAIR_CLIENT,
// PAIR_DUMP, PAIR_FLAVOUR (mariadb or mysql); for tests, PAIR_DIE_AT and
// PAIR_PAUSE_AT (mysql/replication.ts, step).

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ahead, missingFrom } from './gtids.ts';
import { dirOf, HOST, http, httpPorts, index, label, machines, mysqldPid, mysqlPorts, on, others, recordFile, serverPid, shard, shardDir } from './pair-layout.ts';
import { status } from './pair-status.ts';
import { recordedPrimary, type Machine } from './primary-record.ts';
import {
  acknowledged, copyStatements, follow, mysqldFlags, openPrimary, release, ReplicationError, state, step, userStatements, wipe, type Sql, type State,
} from './replication.ts';

const env = process.env;
type Passwords = { app: string; repl: string; operator: string };
const OPEN_WAIT_MS = 30_000;
// mariadb-install-db's output, made once per cluster (initialise).
const TEMPLATE = join(dirname(shardDir), '.mysql-template');

const hasData = async (sql: Sql) => (await sql<any[]>("SHOW DATABASES LIKE 'expenses'")).length > 0;

class Refusal extends Error {}
/** A failure this file explains in its message: printed without a stack. */
class Failed extends Error {}
/** The launcher ended (it said why): nothing more to do or say. */
class Ended extends Error {}
const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** A machine's password file, made once (0600). */
function secretFile(m: Machine, name: string): string {
  const file = join(dirOf(m), name);
  if (!existsSync(file)) writeFileSync(file, randomBytes(16).toString('hex'), { mode: 0o600 });
  return readFileSync(file, 'utf8').trim();
}

async function start(): Promise<void> {
  const pm = recordedPrimary(recordFile);
  const order = [pm, ...others(pm)];
  for (const m of order.filter((o) => mysqldPid(o) === '-')) {
    await initialise(m);
    await ask('mysqld', m, ...flags(m));
  }
  if (machines.length === 1) await setup(pm);
  else {
    const opened = await primary(pm).catch(async (err) => {
      if (err instanceof Refusal) for (const m of others(pm).filter((o) => serverPid(o) === '-')) await ask('server', m, ...serverEnv(m));
      throw err;
    });
    // Not on a primary that opened (S4) once: its writes would wait for the standby this sets up (S3). As its MySQL starts, it is read-only, semi-sync off.
    if (!opened) await setup(pm);
    await standbys(pm);
  }
  for (const m of order.filter((o) => serverPid(o) === '-')) await ask('server', m, ...serverEnv(m));
  console.log(`shard ${shard}: http://${http(pm)} up${machines.length > 1 ? ', the primary' : ''} (data in ${dirOf(pm)})`);
  for (const m of others(pm)) console.log(`shard ${shard}'s standby: http://${http(m)} up, read-only, following mysql ${HOST}:${mysqlPorts[index(pm)]} (data in ${dirOf(m)})`);
}

/** S1-S5: a machine's mysqld options. A pair replicates over TCP on loopback (S2); a shard alone listens on its socket only. */
function flags(m: Machine): string[] {
  if (machines.length === 1) return ['--skip-networking'];
  return mysqldFlags(dirOf(m), mysqlPorts[index(m)]!, Number(shard) * 10 + index(m) + 1, env.SHARDS_SEMISYNC_TIMEOUT_MS || '4294967295');
}

/** A machine's server's environment, beside the launcher's: in a pair, the failover's routes as MySQL user operator (S7), the other machines' servers (CLUSTER_PEER, which check and the failover ask), and where a promotion records it (S6). */
function serverEnv(m: Machine): string[] {
  if (machines.length === 1) return [];
  return [`MYSQL_OPERATOR_PASSWORD_FILE=${join(dirOf(m), 'operator-password')}`, `MYSQL_REPL_PASSWORD_FILE=${join(dirOf(m), 'repl-password')}`,
    `CLUSTER_PEER=${others(m).map(http).join(',')}`, `PAIR_PRIMARY_FILE=${recordFile}`, `PAIR_MACHINE=${m}`];
}

// The launcher's answers, a line each; its input ends when it does.
let launcher: Interface | undefined;
let answers: AsyncIterator<string> | undefined;
async function ask(...request: string[]): Promise<void> {
  console.log(request.join('\t'));
  launcher ??= createInterface({ input: process.stdin });
  answers ??= launcher[Symbol.asyncIterator]();
  if ((await answers.next()).done) throw new Ended();
}

/**
 * A machine's data directory, whole or not at all: a copy of the cluster's template (the init's output, made once:
 * mariadb-install-db took 10 s under load, a copy 0.5 s, and a rejoin waits for it), renamed into place. A start
 * killed midway leaves a .new directory, which the next one replaces (a half-made one refused root until deleted).
 */
async function initialise(m: Machine): Promise<void> {
  const data = join(dirOf(m), 'mysql');
  if (existsSync(data)) return;
  mkdirSync(dirOf(m), { recursive: true });
  console.log(`${m === 'primary' ? `shard ${shard}` : label(m)}: initialising ${data}`);
  // Its own --tmpdir: a MariaDB that starts removes every #sql file in its tmpdir, and so, in a shared /tmp, those of
  // a bootstrap beside it (the init failures seen under load). A failed one leaves nothing; it is tried again.
  for (let attempt = 1; !existsSync(TEMPLATE); attempt++) {
    const log = join(dirOf(m), 'init.log');
    const init = env.PAIR_FLAVOUR === 'mysql' ? [env.PAIR_MYSQLD ?? 'mysqld', '--no-defaults', '--initialize-insecure'] : [env.PAIR_INSTALL_DB ?? 'mariadb-install-db', '--no-defaults', '--auth-root-authentication-method=normal', '--skip-test-db'];
    rmSync(`${TEMPLATE}.new`, { recursive: true, force: true });
    mkdirSync(join(dirOf(m), 'tmp'), { recursive: true });
    if ((await exited(init[0]!, [...init.slice(1), `--datadir=${TEMPLATE}.new`, `--tmpdir=${join(dirOf(m), 'tmp')}`, ...(env.PAIR_EXTRA_FLAGS ?? '').split(' ').filter(Boolean)], log)) !== 0) {
      rmSync(`${TEMPLATE}.new`, { recursive: true, force: true });
      const lines = readFileSync(log, 'utf8').trimEnd().split('\n');
      const errors = lines.filter((l) => /error|fail/i.test(l));
      if (attempt < 3) console.error(`${label(m)}: initialising MySQL failed (${errors[0] ?? lines.at(-1)}); trying again`);
      else throw new Failed(`${label(m)}: initialising MySQL failed 3 times (nothing of it is kept); see ${log}:\n${(errors.length > 0 ? errors : lines).slice(-15).join('\n')}\nOnce that is fixed, run the same command again.`);
      continue;
    }
    step('template');
    renameSync(`${TEMPLATE}.new`, TEMPLATE);
  }
  rmSync(`${data}.new`, { recursive: true, force: true });
  if ((await exited('cp', ['-a', TEMPLATE, `${data}.new`], join(dirOf(m), 'init.log'))) !== 0) throw new Failed(`${label(m)}: copying ${TEMPLATE} into ${data}.new failed; see ${join(dirOf(m), 'init.log')}`);
  step(`initialising ${m}`);
  renameSync(`${data}.new`, data);
}

/** Runs a command, its output into `log`; resolves to its exit code. */
function exited(command: string, args: string[], log: string): Promise<number | null> {
  const child = spawn(command, args, { stdio: ['ignore', openSync(log, 'w'), openSync(log, 'a')] });
  return new Promise((resolve) => {
    child.on('error', () => resolve(null));
    child.on('close', resolve);
  });
}

/** The schema, the cluster's tables, and the app user with the password on file (made once, 0600): it may read and write its rows, and nothing else. Idempotent. */
async function setup(m: Machine): Promise<void> {
  const password = secretFile(m, 'password');
  const auth = env.PAIR_FLAVOUR === 'mysql' ? 'WITH mysql_native_password ' : '';
  const users = [
    `CREATE USER IF NOT EXISTS 'expenses'@'localhost' IDENTIFIED ${auth}BY '${password}';`,
    `ALTER USER 'expenses'@'localhost' IDENTIFIED ${auth}BY '${password}';`,
    "GRANT SELECT, INSERT, UPDATE, DELETE ON expenses.* TO 'expenses'@'localhost';",
  ];
  // Through the client, not the driver: Oracle MySQL's root speaks an authentication mysqljs does not.
  const client = spawn(env.PAIR_CLIENT ?? 'mariadb', ['--no-defaults', `--socket=${join(dirOf(m), 'mysqld.sock')}`, '--user=root', '--batch'], { stdio: ['pipe', 'ignore', 'pipe'] });
  let errors = '';
  client.stderr.on('data', (c) => (errors += c));
  client.stdin.end([readFileSync(join(ROOT, 'schema.sql'), 'utf8'), readFileSync(join(ROOT, 'shard', 'cluster-schema.sql'), 'utf8'), ...users].join('\n'));
  if ((await new Promise((resolve) => client.on('close', resolve))) !== 0) throw new Failed(`${label(m)}: applying schema.sql and the app user failed: ${errors.trim()}`);
}

/** Whether the primary opened once (S4): its semi-sync is on, or it is writable. */
async function primary(pm: Machine): Promise<boolean> {
  const [pmData, pmState, [semisync]] = await on(pm, async (sql) => [await hasData(sql), await state(sql), await sql<any[]>('SELECT @@global.rpl_semi_sync_master_enabled AS enabled')] as const);
  const held = pmData ? [] : await Promise.all(others(pm).map(async (m) => (existsSync(join(dirOf(m), 'mysql')) ? on(m, async (sql) => ({ m, data: await hasData(sql), state: await state(sql) })).catch(() => undefined) : undefined)));
  const holders = held.flatMap((h) => (h?.data ? [{ m: h.m, follows: h.state.follows !== null, received: h.state.follows?.gtid_io_pos || h.state.gtid_binlog_pos }] : []));
  // The standby that received the most (D5: the failover refuses one behind its sibling); an old primary that never
  // rejoined follows no one, and the failover has nothing to promote it from (NOTHING_TO_PROMOTE).
  const holder = (holders.find((h) => h.follows && holders.every((o) => !o.follows || ahead(o.received, h.received).length === 0)) ?? holders[0])?.m;
  if (holder !== undefined) {
    throw new Refusal(`shard ${shard}: not started: its primary (${dirOf(pm)}, ${recordFile}) holds no data, and its ${holder} machine does. Nothing was written. Promote a standby (the failover checks that it is the most advanced), then rebuild this machine:
  node ch_client.ts failover ${HOST}:${httpPorts[0]} --to ${http(holder)}
  ./start-shards.sh rejoin ${shard}`);
  }
  if (pmState.follows !== null) {
    // D3: the record names this machine, so its promotion passed D2; finish it.
    await on(pm, async (sql) => {
      await sql('STOP SLAVE');
      await sql('RESET SLAVE ALL');
    });
    console.error(`${label(pm)}: its promotion was cut short after its record (${recordFile}); finished: it follows no one`);
  }
  return !pmState.read_only || Number(semisync.enabled) === 1;
}

async function standbys(pm: Machine): Promise<void> {
  const passwords = { app: secretFile(pm, 'password'), repl: secretFile(pm, 'repl-password'), operator: secretFile(pm, 'operator-password') };
  const [haveUsers, primaryState] = await on(pm, async (sql) => [(await sql<any[]>("SELECT 1 FROM mysql.user WHERE (user, host) IN (('repl', '127.0.0.1'), ('operator', 'localhost'))")).length === 2, await state(sql)] as const);
  // Only a primary not yet open takes them: an open one would wait for a standby's ack (S3), and this is its standby.
  if (!haveUsers || primaryState.read_only) await on(pm, async (sql) => { for (const [s, values] of userStatements(passwords)) await sql(s, values); });
  step('users');
  const sms = others(pm);
  const to = { host: HOST, port: mysqlPorts[index(pm)]!, replPassword: passwords.repl };
  for (const sm of sms) await standby(pm, sm, to, primaryState, passwords);
  // Every standby acknowledging; one MariaDB refused for its history is rebuilt (D4), once.
  for (const rebuilt = new Set<Machine>(); ; ) {
    try {
      await on(pm, (p) => onEach(sms, (qs) => acknowledged(p, qs, OPEN_WAIT_MS)));
      break;
    } catch (err) {
      if (!(err instanceof ReplicationError && err.code === 'DIVERGED')) throw err;
      const sm = sms[(err.state as { standby: number }).standby]!;
      if (rebuilt.has(sm)) throw err;
      rebuilt.add(sm);
      await rebuild(pm, sm, to, passwords, err.message);
    }
  }
  step('followed');
  // S4: writable once every standby acknowledges.
  await on(pm, (p) => onEach(sms, (qs) => openPrimary(p, qs, OPEN_WAIT_MS)));
}

/** As root on each of `ms` at once. */
function onEach<T>(ms: Machine[], steps: (sqls: Sql[]) => Promise<T>, open: Sql[] = []): Promise<T> {
  return open.length === ms.length ? steps(open) : on(ms[open.length]!, (sql) => onEach(ms, steps, [...open, sql]));
}

/** Makes `sm` follow `pm`; standbys() then waits for it to acknowledge. */
async function standby(pm: Machine, sm: Machine, to: Parameters<typeof follow>[1], primaryState: State, passwords: Passwords): Promise<void> {
  // S2: the machine's own copies, so that it runs, and is promoted, without the other's disk.
  for (const name of ['password', 'repl-password', 'operator-password']) copyFileSync(join(dirOf(pm), name), join(dirOf(sm), name));
  // D4: an old primary's commits that wait for an ack are let go first, so that they hold no lock over its rebuild and are in the dump of what it held.
  const s = await on(sm, async (sql) => {
    const now = await state(sql);
    return { data: await hasData(sql), state: now.follows === null ? await release(sql) : now };
  });
  const missing = s.state.follows === null && s.data ? missingFrom(primaryState, s.state) : [];
  if (s.state.follows?.master === `${HOST}:${to.port}` && s.state.follows.io === 'Yes' && s.state.follows.sql === 'Yes') {
    // Keeps following, untouched: a restart of its replication would hold the primary's writes meanwhile.
  } else if (s.state.follows !== null) {
    await on(sm, (sql) => follow(sql, to, 'its position'));
  } else if (missing.length > 0) {
    await rebuild(pm, sm, to, passwords, `it holds transactions the primary never had (${missing.join(',')}; the primary's gtid_binlog_state ${primaryState.gtid_binlog_state || '(none)'})`);
  } else if (s.data && s.state.gtid_binlog_pos !== '') {
    console.log(`${label(sm)}: was a primary; rejoins as the standby of ${HOST}:${to.port}, from its own history (gtid_binlog_pos ${s.state.gtid_binlog_pos})`);
    await on(sm, (sql) => follow(sql, to, 'own history'));
  } else {
    await copy(pm, sm, passwords, s.data ? 'a copy that never finished' : undefined);
    await on(sm, (sql) => follow(sql, to, 'its position'));
  }
}

/** D4: a diverged machine is copied again, what it held kept in a file first. */
async function rebuild(pm: Machine, sm: Machine, to: Parameters<typeof follow>[1], passwords: Passwords, why: string): Promise<void> {
  const kept = join(dirOf(sm), `diverged-${new Date().toISOString().replace(/[:.]/g, '-')}.sql`);
  console.log(`${label(sm)}: DIVERGED: ${why}. Never acknowledged (rule D4): rebuilding it from the primary; what it held is kept in ${kept}`);
  await dump(sm, kept);
  await copy(pm, sm, passwords, 'its diverged history');
  await on(sm, (sql) => follow(sql, to, 'its position'));
}

/** S5: a copy of the primary's data and users, taken at one GTID position, loaded unlogged. */
async function copy(from: Machine, into: Machine, passwords: Passwords, replacing?: string): Promise<void> {
  if (replacing !== undefined) {
    console.log(`${label(into)}: dropping ${replacing}`);
    await on(into, wipe);
  }
  console.log(`${label(into)}: copying the primary's data, then following it`);
  const { before, after } = copyStatements(passwords);
  const load = spawn(env.PAIR_CLIENT ?? 'mariadb', ['--no-defaults', `--socket=${join(dirOf(into), 'mysqld.sock')}`, '--user=root'], { stdio: ['pipe', 'ignore', 'pipe'] });
  // --gtid --master-data: the dump ends with SET GLOBAL gtid_slave_pos, the position of its consistent snapshot.
  const source = spawn(env.PAIR_DUMP ?? 'mariadb-dump', ['--no-defaults', `--socket=${join(dirOf(from), 'mysqld.sock')}`, '--user=root', '--single-transaction', '--gtid', '--master-data=1', '--databases', 'expenses', '--skip-dump-date'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let errors = '';
  load.stderr.on('data', (c) => (errors += c));
  source.stderr.on('data', (c) => (errors += c));
  load.stdin.write(before);
  source.stdout.pipe(load.stdin, { end: false });
  const dumped = await new Promise<number | null>((resolve) => source.on('close', resolve));
  load.stdin.end(dumped === 0 ? after : 'SELECT no_such_column_the_dump_failed;\n');
  const loaded = await new Promise<number | null>((resolve) => load.on('close', resolve));
  if (dumped !== 0 || loaded !== 0) throw new Error(`${label(into)}: copying the primary's data failed: ${errors.trim()}`);
  step('copied');
}

/**
 * D4, the rejoin's first step, before it stops servers: every machine but the
 * primary that does not follow it lets go of its commits that wait for an ack
 * (release), and is named, a line each, for the rejoin to stop its server. A
 * thawed old primary's server, whose own fence (E3) waits behind such a commit,
 * would not stop. A standby that follows the primary keeps its server: one
 * stopping answers no renewal of the primary's lease, and stood for election
 * meanwhile (E5). A machine this cannot reach is named; the start after says
 * what is wrong with it.
 */
async function releaseOthers(): Promise<void> {
  const pm = recordedPrimary(recordFile);
  const primaryMysql = `${HOST}:${mysqlPorts[index(pm)]}`;
  for (const m of others(pm)) {
    const follows = mysqldPid(m) !== '-' && (await on(m, async (sql) => {
      const f = (await state(sql)).follows;
      if (f?.master === primaryMysql && f.io === 'Yes' && f.sql === 'Yes') return true;
      await release(sql);
      return false;
    }).catch(() => false));
    if (!follows) console.log(m);
  }
}

/** What a machine holds, into a file, before it is dropped. */
async function dump(m: Machine, file: string): Promise<void> {
  const out = spawn(env.PAIR_DUMP ?? 'mariadb-dump', ['--no-defaults', `--socket=${join(dirOf(m), 'mysqld.sock')}`, '--user=root', '--single-transaction', '--databases', 'expenses'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let text = '';
  out.stdout.on('data', (c) => (text += c));
  if ((await new Promise((resolve) => out.on('close', resolve))) !== 0) throw new Error(`${label(m)}: could not keep what it held in ${file}; nothing was dropped`);
  writeFileSync(file, text, { mode: 0o600 });
}

const [command] = process.argv.slice(2);
try {
  if (command === 'start') await start();
  else if (command === 'status') await status();
  else if (command === 'release') await releaseOthers();
  else throw new Refusal('usage: node mysql/pair.ts start | status | release (start-shards.sh runs them)');
} catch (err) {
  const standbysOf = others(recordedPrimary(recordFile)).map(label).join(' or ');
  // A MySQL statement's error (it has a code) names the statement (mysql/replication.ts, connected); the lines above name the step and the machine.
  const said = err instanceof Refusal || err instanceof Failed ? err.message : err instanceof ReplicationError ? `${standbysOf}: ${err.message}. Run ./start-shards.sh rejoin ${shard} once that is fixed` : err instanceof Error && 'code' in err ? `shard ${shard}: ${err.message}` : err;
  if (!(err instanceof Ended)) console.error(said);
  process.exitCode = err instanceof Refusal ? 2 : 1;
} finally {
  launcher?.close();
}
