// shard/replication.ts: this machine's part in a failover (operator/failover.ts,
// the README's level 4). Each route runs one step of it on this server's own
// MySQL, as the MySQL user `operator`, never as the app's user `expenses`.
//
// The statements, and the rules they keep (S1-S7, D1-D4), are in
// mysql/replication.ts; here are the requests that run them, and D0:
//
//   D0. PROVE (GET /cluster/proof?nonce=): before anything is fenced, the
//       standby named by --to shows that it holds the cluster secret, at the
//       address the operator typed (api/signing.ts, "A PROOF"). Fence,
//       promote and follow then each name the shard and the map's epoch they
//       act for, {"shard", "epoch"}, and a machine of another shard, or one
//       that holds a newer map, refuses them (409) and changes nothing.

import { readFileSync } from 'node:fs';
import { HttpError, readJson, type Reply } from './http.ts';
import { isMachine, recordedPrimary, recordPrimary, rejoinCommand, shardNumber } from '../mysql/primary-record.ts';
import { connected, stopReceiving, fence as fenceMysql, follow as followMysql, mysqlAddress, promote as promoteMysql, ReplicationError, state, WAIT_MAX_MS, type OperatorConfig, type Sql } from '../mysql/replication.ts';
import { hostOf, proof as proofOf } from '../api/signing.ts';
import type { Context, Route, Shard } from './context.ts';
import { misdirected } from './secret.ts';

/** The operator's settings from the environment, or undefined where this server has none. */
export function operatorFromEnv(env: NodeJS.ProcessEnv): OperatorConfig | undefined {
  const file = env.MYSQL_OPERATOR_PASSWORD_FILE;
  if (file === undefined || file === '') return undefined;
  const password = readFileSync(file, 'utf8').trim();
  const replPassword = env.MYSQL_REPL_PASSWORD_FILE ? readFileSync(env.MYSQL_REPL_PASSWORD_FILE, 'utf8').trim() : undefined;
  const at = env.MYSQL_SOCKET ? { socketPath: env.MYSQL_SOCKET } : { host: env.MYSQL_HOST ?? '127.0.0.1', port: Number(env.MYSQL_PORT ?? 3306) };
  // CLUSTER_PEER: the servers of the shard's other machines, comma-separated (start-shards.sh sets it), which `check` and the failover ask in turn.
  const peer = env.CLUSTER_PEER ? env.CLUSTER_PEER : undefined;
  // PAIR_PRIMARY_FILE, PAIR_MACHINE: where a promotion records this machine as the primary (rule S6).
  const record = env.PAIR_PRIMARY_FILE && isMachine(env.PAIR_MACHINE) ? { file: env.PAIR_PRIMARY_FILE, machine: env.PAIR_MACHINE } : undefined;
  return { ...at, password, replPassword, peer, record };
}

/** Runs `steps` on this machine's MySQL as the operator (S7); a refusal of mysql/replication.ts is a 409. */
async function asOperator<T>(c: Pick<Shard, 'operator'>, steps: (sql: Sql) => Promise<T>): Promise<T> {
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

/** The launcher's number of this machine's shard (shard-N), for `./start-shards.sh rejoin N`; null where start-shards.sh did not start it. */
const numberOf = (c: Pick<Shard, 'operator'>) => (c.operator?.record === undefined ? null : shardNumber(c.operator.record.file));

/** GET /cluster/replication: role, positions, replication and semi-sync state, the shard's other machines (their servers, comma-separated), if known, and the launcher's number of the shard. */
export async function replication(c: Context): Promise<Reply> {
  return { status: 200, body: { ...(await asOperator(c, state)), peer: c.operator?.peer ?? null, shard_number: numberOf(c) } };
}

/**
 * D0. Refuses a step meant for another shard, or acting under an older map
 * than this machine holds: `asked` must name {"shard": "<its id>", "epoch":
 * <the map's epoch the operator read>}. Checked before any statement runs.
 */
export function actingFor(c: Context, step: string, asked: { shard?: unknown; epoch?: unknown } | null): void {
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
  return { status: 200, body: await fenceHere(c) };
}

/** D1 on this machine: the operator's fence, and a primary's own when it learns that it was replaced (election/rules.ts, E3). */
export async function fenceHere(shard: Shard) {
  const body = await asOperator(shard, fenceMysql);
  shard.cluster.forget();
  return body;
}

/**
 * D2 and D3. POST /cluster/promote {"shard", "epoch", "wait_for": "<gtid position>" | null,
 * "timeout_ms"}: applies up to `wait_for` (planned) or up to all it received
 * (null: emergency), then becomes the primary. Idempotent on a primary. The
 * answer names the pair's launcher number, for the rejoin the operator runs.
 */
export async function promote(c: Context): Promise<Reply> {
  const asked = readJson(c) as { shard?: unknown; epoch?: unknown; wait_for?: unknown; timeout_ms?: unknown } | null;
  actingFor(c, 'promote', asked);
  const waitFor = asked?.wait_for ?? null;
  const timeoutMs = asked?.timeout_ms ?? 30_000;
  if (waitFor !== null && (typeof waitFor !== 'string' || !/^(\d+-\d+-\d+)?(,\d+-\d+-\d+)*$/.test(waitFor))) throw new HttpError(400, `wait_for must be a GTID position such as "0-11-35", or null; got ${JSON.stringify(waitFor)}`);
  if (!Number.isSafeInteger(timeoutMs) || (timeoutMs as number) < 1 || (timeoutMs as number) > WAIT_MAX_MS) throw new HttpError(400, `timeout_ms must be 1 to ${WAIT_MAX_MS}`);
  return { status: 200, body: await promoteHere(c, c.held.shard, waitFor as string | null, timeoutMs as number) };
}

/** D2 and D3 on this machine, for the operator's promote and for an election's winner (election/takeover.ts). */
export async function promoteHere(shard: Shard, id: string, waitFor: string | null, timeoutMs: number) {
  const record = shard.operator?.record;
  const body = await asOperator(shard, (sql) =>
    promoteMysql(sql, {
      waitFor,
      timeoutMs,
      recorded: record !== undefined && recordedPrimary(record.file) === record.machine,
      record: () => record && recordPrimary(record.file, record.machine),
      rejoin: rejoinCommand(numberOf(shard), id),
    }),
  );
  shard.cluster.forget();
  return { ...body, mysql: await asOperator(shard, mysqlAddress), shard_number: numberOf(shard) };
}

/** This machine's replication state (GET /cluster/replication's), for an election's positions (E4). */
export const replicationHere = (shard: Shard) => asOperator(shard, state);
/** A voter's, once it voted: it takes nothing more from the primary it voted to replace (E4). */
export const stopReceivingHere = (shard: Shard) => asOperator(shard, stopReceiving);

/**
 * D4, D5. POST /cluster/follow {"shard", "epoch", "mysql": "host:port"}: a fenced old primary becomes
 * the standby of the new one, from its own history; a standby follows it from its position. The replication password
 * is this machine's own file, never sent over HTTP.
 */
export async function follow(c: Context): Promise<Reply> {
  const asked = readJson(c) as { shard?: unknown; epoch?: unknown; mysql?: unknown } | null;
  actingFor(c, 'follow', asked);
  const m = typeof asked?.mysql === 'string' ? /^([\w.-]+):(\d{1,5})$/.exec(asked.mysql) : null;
  if (m === null) throw new HttpError(400, 'follow needs {"mysql": "host:port"}, the new primary\'s MySQL');
  const replPassword = c.operator?.replPassword;
  if (replPassword === undefined) throw new HttpError(503, 'this server has no replication password: start it with MYSQL_REPL_PASSWORD_FILE (start-shards.sh does, with SHARDS_STANDBY=1)');
  const body = await asOperator(c, async (sql) => {
    const now = await state(sql);
    if (!now.read_only) throw new HttpError(409, 'this machine is writable: fence it first (POST /cluster/fence); a primary follows no one');
    // A standby (the promoted one's sibling, D5) goes on from its position; an old primary, from its own history.
    return followMysql(sql, { host: m[1]!, port: Number(m[2]), replPassword }, now.follows === null ? 'own history' : 'its position');
  });
  c.cluster.forget();
  return { status: 200, body };
}
