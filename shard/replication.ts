// shard/replication.ts: this machine's part in a failover (operator/failover.ts,
// the README's level 4). Each route runs one step of it on this server's own
// MySQL, as the MySQL user `operator`, never as the app's user `expenses`.
//
// THE DURABILITY RULE: an acknowledged write survives the loss of any one
// machine of its shard. It holds by these steps, numbered as the failover
// runs them, and by start-shards.sh's rules S1-S5 (semi-sync AFTER_SYNC, an
// infinite timeout, every MySQL starting read-only):
//
//   D0. PROVE (GET /cluster/proof?nonce=): before anything is fenced, the
//       standby named by --to shows that it holds the cluster secret, at the
//       address the operator typed (api/signing.ts, "A PROOF"). Fence,
//       promote and follow then each name the shard and the map's epoch they
//       act for, {"shard", "epoch"}, and a machine of another shard, or one
//       that holds a newer map, refuses them (409) and changes nothing.
//   D1. FENCE (POST /cluster/fence): read_only on the old primary, which waits
//       for the commits in flight; its gtid_binlog_pos is then everything it
//       ever acknowledged. A primary that cannot be reached is fenced by its
//       standby leaving it (D3): its semi-sync waits for an ack for ever.
//   D2. APPLY: the standby applies all it received before it serves. Planned:
//       up to the fenced primary's position. Emergency: it stops receiving,
//       and applies up to its Gtid_IO_Pos; by AFTER_SYNC, every acknowledged
//       write is among what it received.
//   D3. PROMOTE (POST /cluster/promote, which runs D2 first): the standby
//       forgets its primary, turns on its own semi-sync (its writes wait for
//       the next standby's ack), and only then becomes writable.
//
// The operator's MySQL user has READ_ONLY ADMIN, REPLICATION MASTER ADMIN,
// REPLICATION SLAVE ADMIN, RELOAD and SLAVE MONITOR, and no table privileges.
// It must be a user of its own: READ_ONLY ADMIN writes through read_only,
// which would undo the fence for the app (docs/reliability.md).

import { readFileSync } from 'node:fs';
import mysql from 'mysql';
import { driverOptions } from '../mysql/connections.ts';
import { hostOf, proof as proofOf } from '../api/signing.ts';
import { HttpError, readJson, type Reply } from './http.ts';
import type { OperatorConfig } from '../mysql/connections.ts';
import type { Context, Route } from './context.ts';
import { misdirected } from './secret.ts';

/** The operator's settings from the environment, or undefined where this server has none. */
export function operatorFromEnv(env: NodeJS.ProcessEnv): OperatorConfig | undefined {
  const file = env.MYSQL_OPERATOR_PASSWORD_FILE;
  if (file === undefined || file === '') return undefined;
  const password = readFileSync(file, 'utf8').trim();
  const replPassword = env.MYSQL_REPL_PASSWORD_FILE ? readFileSync(env.MYSQL_REPL_PASSWORD_FILE, 'utf8').trim() : undefined;
  const at = env.MYSQL_SOCKET ? { socketPath: env.MYSQL_SOCKET } : { host: env.MYSQL_HOST ?? '127.0.0.1', port: Number(env.MYSQL_PORT ?? 3306) };
  // CLUSTER_PEER: the server of the other machine of this pair (start-shards.sh sets it), which `check` asks in turn.
  const peer = env.CLUSTER_PEER ? env.CLUSTER_PEER : undefined;
  return { ...at, password, replPassword, peer };
}

const WAIT_MAX_MS = 60_000;

/** Runs `steps` on one fresh connection as the operator, then closes it. */
async function asOperator<T>(c: Context, steps: (sql: <R = any>(statement: string, values?: unknown[]) => Promise<R>) => Promise<T>): Promise<T> {
  if (c.operator === undefined) {
    throw new HttpError(503, 'this server has no MySQL operator user: start it with MYSQL_OPERATOR_PASSWORD_FILE (start-shards.sh does, with SHARDS_STANDBY=1)');
  }
  const { replPassword: _, peer: __, ...at } = c.operator;
  const connection = mysql.createConnection({ ...driverOptions({ ...at, user: 'operator', database: '' }), database: undefined });
  const sql = <R>(statement: string, values: unknown[] = []) =>
    new Promise<R>((resolve, reject) => connection.query({ sql: statement, values, timeout: WAIT_MAX_MS + 5_000 }, (err, rows) => (err ? reject(err) : resolve(rows as R))));
  try {
    return await steps(sql);
  } finally {
    connection.destroy();
  }
}

type Sql = <R = any>(statement: string, values?: unknown[]) => Promise<R>;

/** What this machine's MySQL says of its role and replication (what `status` prints). */
async function state(sql: Sql) {
  const [v] = await sql<any[]>('SELECT @@global.read_only AS read_only, @@gtid_binlog_pos AS gtid_binlog_pos, @@gtid_slave_pos AS gtid_slave_pos');
  const [slave] = await sql<any[]>('SHOW SLAVE STATUS');
  const status = await sql<any[]>("SHOW GLOBAL STATUS WHERE Variable_name IN ('Rpl_semi_sync_master_status', 'Rpl_semi_sync_master_clients')");
  const semisync = Object.fromEntries(status.map((r) => [r.Variable_name, r.Value]));
  return {
    role: Number(v.read_only) === 0 ? 'primary' : 'standby',
    read_only: Number(v.read_only) === 1,
    gtid_binlog_pos: v.gtid_binlog_pos as string,
    gtid_slave_pos: v.gtid_slave_pos as string,
    follows: slave === undefined ? null : { master: `${slave.Master_Host}:${slave.Master_Port}`, io: slave.Slave_IO_Running, sql: slave.Slave_SQL_Running, gtid_io_pos: slave.Gtid_IO_Pos as string, error: slave.Last_Error || slave.Last_IO_Error || null },
    semisync,
  };
}

/** GET /cluster/replication: role, positions, replication and semi-sync state, and the pair's other machine (its server), if known. */
export async function replication(c: Context): Promise<Reply> {
  return { status: 200, body: { ...(await asOperator(c, state)), peer: c.operator?.peer ?? null } };
}

/**
 * D0. Refuses a step meant for another shard, or acting under an older map
 * than this machine holds: `asked` must name {"shard": "<its id>", "epoch":
 * <the map's epoch the operator read>}. Checked before any statement runs.
 */
function actingFor(c: Context, step: string, asked: { shard?: unknown; epoch?: unknown } | null): void {
  const { shard, epoch } = asked ?? {};
  if (typeof shard !== 'string' || !Number.isSafeInteger(epoch) || (epoch as number) < 1) {
    throw new HttpError(400, `${step} needs {"shard": "<the shard's id>", "epoch": <the map's epoch>}, the shard and the map it acts for (ch_client.ts failover sends them)`);
  }
  if (shard !== c.held.shard) {
    throw new HttpError(409, `not done: this ${step} is for shard ${shard}, and this machine is shard ${c.held.shard}'s. It was sent to the wrong machine, and nothing was done. Check the addresses (./start-shards.sh status lists each shard's machines), then run the failover again`, {}, { shard: c.held.shard, asked: shard });
  }
  const held = c.held.map?.epoch;
  if (held !== undefined && held > (epoch as number)) {
    throw new HttpError(409, `not done: this ${step} acts under the map at epoch ${epoch}, and this machine holds epoch ${held}: the cluster changed since the operator read it. Nothing was done; run the failover again, which reads the map anew`, {}, { epoch: held, asked: epoch });
  }
}

/** D0. GET /cluster/proof?nonce=<hex>: this machine's proof that it holds the secret, at the address it was asked at (api/signing.ts). */
async function proof(c: Context): Promise<Reply> {
  const nonce = c.query.get('nonce') ?? '';
  if (!/^[0-9a-f]{32,128}$/.test(nonce)) throw new HttpError(400, 'proof needs ?nonce=<32 to 128 hex digits>, fresh for each question');
  if (c.secret === undefined) throw new HttpError(503, 'this server has no cluster secret, so it cannot prove that it belongs to the cluster: start it with CLUSTER_SECRET_FILE');
  const host = hostOf(c.req.headers.host ?? '') ?? '';
  const why = misdirected(host, c.address, false); // asked by anyone: its addresses are not told
  if (why !== undefined) throw new HttpError(421, `no proof: ${why}`);
  return { status: 200, body: { shard: c.held.shard, host, role: c.held.writable ? 'primary' : 'standby', mac: proofOf(c.secret, nonce, host, c.held.shard) } };
}

/** The route of D0, for server.ts's table: it needs no signature, since it changes nothing. */
export const proofRoutes: Route[] = [[/^\/cluster\/proof$/, { GET: proof }]];

/** D1. POST /cluster/fence {"shard", "epoch"}: this machine acknowledges nothing more; answers the position the standby must reach. Idempotent. */
export async function fence(c: Context): Promise<Reply> {
  actingFor(c, 'fence', readJson(c) as { shard?: unknown; epoch?: unknown } | null);
  const body = await asOperator(c, async (sql) => {
    await sql('SET GLOBAL read_only = 1');
    return state(sql);
  });
  c.cluster.forget();
  return { status: 200, body };
}

/**
 * D2 and D3. POST /cluster/promote {"shard", "epoch", "wait_for": "<gtid
 * position>" | null, "timeout_ms"}: applies up to `wait_for` (planned) or up
 * to all it received (null: emergency), then becomes the primary. Idempotent
 * on a primary. One that times out leaves the standby receiving again.
 */
export async function promote(c: Context): Promise<Reply> {
  const asked = readJson(c) as { shard?: unknown; epoch?: unknown; wait_for?: unknown; timeout_ms?: unknown } | null;
  actingFor(c, 'promote', asked);
  const waitFor = asked?.wait_for ?? null;
  const timeoutMs = asked?.timeout_ms ?? 30_000;
  if (waitFor !== null && (typeof waitFor !== 'string' || !/^(\d+-\d+-\d+)?(,\d+-\d+-\d+)*$/.test(waitFor))) throw new HttpError(400, `wait_for must be a GTID position such as "0-11-35", or null; got ${JSON.stringify(waitFor)}`);
  if (!Number.isSafeInteger(timeoutMs) || (timeoutMs as number) < 1 || (timeoutMs as number) > WAIT_MAX_MS) throw new HttpError(400, `timeout_ms must be 1 to ${WAIT_MAX_MS}`);
  const body = await asOperator(c, async (sql) => {
    const before = await state(sql);
    if (before.follows === null) {
      if (!before.read_only) return { ...before, promoted: false, applied: before.gtid_binlog_pos };
      throw new HttpError(409, 'this machine follows no primary and is read-only (a fenced old primary): there is nothing to promote it from. Promote its standby, or make it one: ./start-shards.sh rejoin N');
    }
    // D2.
    let target = waitFor as string | null;
    if (target === null) {
      await sql('STOP SLAVE IO_THREAD');
      target = (await sql<any[]>('SHOW SLAVE STATUS'))[0]?.Gtid_IO_Pos ?? '';
    }
    const [{ reached }] = await sql<any[]>('SELECT MASTER_GTID_WAIT(?, ?) AS reached', [target, (timeoutMs as number) / 1000]);
    if (Number(reached) !== 0) {
      // Still a standby: it receives again, or its primary's semi-sync would wait for its ack for ever (S3).
      if (waitFor === null) await sql('START SLAVE IO_THREAD');
      const now = await state(sql);
      throw new HttpError(409, `not promoted: this standby did not apply up to ${target} within ${timeoutMs} ms (it has ${now.gtid_slave_pos}); see GET /cluster/replication, then run the failover again`, {}, now);
    }
    // D3: forget the old primary, wait for the next standby's acks, then take writes (S4: read_only last).
    await sql('STOP SLAVE');
    await sql('RESET SLAVE ALL');
    await sql('SET GLOBAL rpl_semi_sync_master_enabled = ON');
    await sql('SET GLOBAL read_only = 0');
    return { ...(await state(sql)), promoted: true, applied: target };
  });
  c.cluster.forget();
  return { status: 200, body: { ...body, mysql: await asOperator(c, mysqlAddress) } };
}

/** Where this machine's MySQL listens for replicas: host:port. */
async function mysqlAddress(sql: Sql): Promise<string> {
  const [v] = await sql<any[]>('SELECT @@bind_address AS host, @@port AS port');
  return `${!v.host || v.host === '*' || v.host === '0.0.0.0' ? '127.0.0.1' : v.host}:${v.port}`;
}

/**
 * POST /cluster/follow {"shard", "epoch", "mysql": "host:port"}: a fenced old primary becomes
 * the standby of the new one, from its own history (its gtid_slave_pos is
 * empty or old), with no semi-sync of its own, whose waits would stall the
 * events it applies. The replication password is this machine's own file,
 * never sent over HTTP. A machine holding writes the new primary never
 * received stops with a GTID error (gtid_strict_mode): rebuild it (rejoin).
 */
export async function follow(c: Context): Promise<Reply> {
  const asked = readJson(c) as { shard?: unknown; epoch?: unknown; mysql?: unknown } | null;
  actingFor(c, 'follow', asked);
  const m = typeof asked?.mysql === 'string' ? /^([\w.-]+):(\d{1,5})$/.exec(asked.mysql) : null;
  if (m === null) throw new HttpError(400, 'follow needs {"mysql": "host:port"}, the new primary\'s MySQL');
  if (c.operator?.replPassword === undefined) throw new HttpError(503, 'this server has no replication password: start it with MYSQL_REPL_PASSWORD_FILE (start-shards.sh does, with SHARDS_STANDBY=1)');
  const body = await asOperator(c, async (sql) => {
    if (!(await state(sql)).read_only) throw new HttpError(409, 'this machine is writable: fence it first (POST /cluster/fence); a primary follows no one');
    await sql('SET GLOBAL rpl_semi_sync_master_enabled = OFF');
    await sql('STOP SLAVE');
    await sql('SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos');
    await sql("CHANGE MASTER TO MASTER_HOST = ?, MASTER_PORT = ?, MASTER_USER = 'repl', MASTER_PASSWORD = ?, MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1", [m[1], Number(m[2]), c.operator!.replPassword]);
    await sql('START SLAVE');
    return state(sql);
  });
  c.cluster.forget();
  return { status: 200, body };
}
