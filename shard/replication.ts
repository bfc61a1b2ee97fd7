// shard/replication.ts: this machine's part in a failover (operator/failover.ts,
// the README's level 4). Each route runs one step of it on this server's own
// MySQL, as the MySQL user `operator`, never as the app's user `expenses`.
//
// The statements, and the rules they keep (S1-S7, D1-D4), are in
// mysql/replication.ts; here are the requests that run them.

import { readFileSync } from 'node:fs';
import { HttpError, readJson, type Reply } from './http.ts';
import type { OperatorConfig } from '../mysql/connections.ts';
import { connected, fence as fenceMysql, follow as followMysql, mysqlAddress, promote as promoteMysql, recordedPrimary, recordPrimary, ReplicationError, state, WAIT_MAX_MS, type Sql } from '../mysql/replication.ts';
import type { Context } from './context.ts';

/** The operator's settings from the environment, or undefined where this server has none. */
export function operatorFromEnv(env: NodeJS.ProcessEnv): OperatorConfig | undefined {
  const file = env.MYSQL_OPERATOR_PASSWORD_FILE;
  if (file === undefined || file === '') return undefined;
  const password = readFileSync(file, 'utf8').trim();
  const replPassword = env.MYSQL_REPL_PASSWORD_FILE ? readFileSync(env.MYSQL_REPL_PASSWORD_FILE, 'utf8').trim() : undefined;
  const at = env.MYSQL_SOCKET ? { socketPath: env.MYSQL_SOCKET } : { host: env.MYSQL_HOST ?? '127.0.0.1', port: Number(env.MYSQL_PORT ?? 3306) };
  // CLUSTER_PEER: the server of the other machine of this pair (start-shards.sh sets it), which `check` asks in turn.
  const peer = env.CLUSTER_PEER ? env.CLUSTER_PEER : undefined;
  // PAIR_PRIMARY_FILE, PAIR_MACHINE: where a promotion records this machine as the primary (rule S6).
  const record = env.PAIR_PRIMARY_FILE && (env.PAIR_MACHINE === 'primary' || env.PAIR_MACHINE === 'standby') ? { file: env.PAIR_PRIMARY_FILE, machine: env.PAIR_MACHINE as 'primary' | 'standby' } : undefined;
  return { ...at, password, replPassword, peer, record };
}

/** Runs `steps` on this machine's MySQL as the operator (S7); a refusal of mysql/replication.ts is a 409. */
async function asOperator<T>(c: Context, steps: (sql: Sql) => Promise<T>): Promise<T> {
  if (c.operator === undefined) {
    throw new HttpError(503, 'this server has no MySQL operator user: start it with MYSQL_OPERATOR_PASSWORD_FILE (start-shards.sh does, with SHARDS_STANDBY=1)');
  }
  const { replPassword: _, peer: __, record: ___, ...at } = c.operator;
  try {
    return await connected({ ...at, user: 'operator' }, steps);
  } catch (err) {
    if (err instanceof ReplicationError) throw new HttpError(409, err.message, {}, err.state as Record<string, unknown> | undefined);
    throw err;
  }
}

/** GET /cluster/replication: role, positions, replication and semi-sync state, and the pair's other machine (its server), if known. */
export async function replication(c: Context): Promise<Reply> {
  return { status: 200, body: { ...(await asOperator(c, state)), peer: c.operator?.peer ?? null } };
}

/** D1. POST /cluster/fence: this machine acknowledges nothing more; answers the position the standby must reach. Idempotent. */
export async function fence(c: Context): Promise<Reply> {
  const body = await asOperator(c, fenceMysql);
  c.cluster.forget();
  return { status: 200, body };
}

/**
 * D2 and D3. POST /cluster/promote {"wait_for": "<gtid position>" | null,
 * "timeout_ms"}: applies up to `wait_for` (planned) or up to all it received
 * (null: emergency), then becomes the primary. Idempotent on a primary.
 */
export async function promote(c: Context): Promise<Reply> {
  const asked = readJson(c) as { wait_for?: unknown; timeout_ms?: unknown } | null;
  const waitFor = asked?.wait_for ?? null;
  const timeoutMs = asked?.timeout_ms ?? 30_000;
  if (waitFor !== null && (typeof waitFor !== 'string' || !/^(\d+-\d+-\d+)?(,\d+-\d+-\d+)*$/.test(waitFor))) throw new HttpError(400, `wait_for must be a GTID position such as "0-11-35", or null; got ${JSON.stringify(waitFor)}`);
  if (!Number.isSafeInteger(timeoutMs) || (timeoutMs as number) < 1 || (timeoutMs as number) > WAIT_MAX_MS) throw new HttpError(400, `timeout_ms must be 1 to ${WAIT_MAX_MS}`);
  const record = c.operator?.record;
  const body = await asOperator(c, (sql) =>
    promoteMysql(sql, {
      waitFor: waitFor as string | null,
      timeoutMs: timeoutMs as number,
      recorded: record !== undefined && recordedPrimary(record.file) === record.machine,
      record: () => record && recordPrimary(record.file, record.machine),
    }),
  );
  c.cluster.forget();
  return { status: 200, body: { ...body, mysql: await asOperator(c, mysqlAddress) } };
}

/**
 * D4. POST /cluster/follow {"mysql": "host:port"}: a fenced old primary becomes
 * the standby of the new one, from its own history. The replication password
 * is this machine's own file, never sent over HTTP.
 */
export async function follow(c: Context): Promise<Reply> {
  const asked = readJson(c) as { mysql?: unknown } | null;
  const m = typeof asked?.mysql === 'string' ? /^([\w.-]+):(\d{1,5})$/.exec(asked.mysql) : null;
  if (m === null) throw new HttpError(400, 'follow needs {"mysql": "host:port"}, the new primary\'s MySQL');
  const replPassword = c.operator?.replPassword;
  if (replPassword === undefined) throw new HttpError(503, 'this server has no replication password: start it with MYSQL_REPL_PASSWORD_FILE (start-shards.sh does, with SHARDS_STANDBY=1)');
  const body = await asOperator(c, async (sql) => {
    if (!(await state(sql)).read_only) throw new HttpError(409, 'this machine is writable: fence it first (POST /cluster/fence); a primary follows no one');
    return followMysql(sql, { host: m[1]!, port: Number(m[2]), replPassword }, 'own history');
  });
  c.cluster.forget();
  return { status: 200, body };
}
