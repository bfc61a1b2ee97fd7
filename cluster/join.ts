// cluster/join.ts: where the levels above the assignment join a shard, at the
// one seam in server.ts. They wrap the expense API and add routes beside it:
//
//   shard/guard.ts          placement around each expense handler (level 2)
//   shard/placement.ts      who answers for an id under the cluster map (level 2)
//   shard/cluster.ts        the map this shard holds, and how it changes (level 2)
//   shard/map-routes.ts     the map over HTTP, changed by the operator (level 3)
//   shard/move-steps.ts     this shard's half of moving a record (level 3)
//   shard/move-pages.ts     the same, a page of records at a time
//   shard/converge.ts       a newer map a client names, fetched from a peer and taken (level 3)
//   shard/secret.ts         the cluster secret of the operator's routes
//   shard/replication.ts    this machine's steps of a failover: fence, promote, follow (level 4)
//   shard/rows.ts           the statements of all these: rows in any state, the map, the role
//   shard/disk.ts           a full disk, said as such
//   page/routes.ts          the live page of the cluster, GET / (read-only)
//   election/group.ts       a primary's lease, and a standby's election in its place (level 5)

import { preview } from '../api/expense.ts';
import type { Db } from '../db.ts';
import { isReadOnly, type Query } from '../mysql/connections.ts';
import { brokenMessage, createCluster } from '../shard/cluster.ts';
import type { Context, Handler, Shard } from '../shard/context.ts';
import { createConverge } from '../shard/converge.ts';
import { page, pageAsked, type Api } from '../shard/expenses.ts';
import { guarded } from '../shard/guard.ts';
import { HttpError, log, logLinesDropped, type Reply, type Route } from '../shard/http.ts';
import { readMap, writeMap } from '../shard/map-routes.ts';
import { adopt, copy, discard, handoff } from '../shard/move-steps.ts';
import { MOVE_STEPS, moveRoutes } from '../shard/move-pages.ts';
import { createMoves } from '../shard/move-rows.ts';
import { readOnly } from '../shard/placement.ts';
import { fence, follow, operatorFromEnv, promote, proofRoutes, replication } from '../shard/replication.ts';
import { createRows, type State } from '../shard/rows.ts';
import { secretFor, unauthorized } from '../shard/secret.ts';
import { noteWrite, outOfDisk } from '../shard/disk.ts';
import { pageRoutes } from '../page/routes.ts';
import { joinGroup } from '../election/group.ts';

/**
 * The expense API's routes, guarded, with the cluster's beside them. `host`
 * is where the server listens: off loopback, the operator's routes need a
 * secret, and the server refuses to start without one. Call listening() with
 * the address once the server has one (rule 8 compares it with the owner's).
 */
export function joinCluster(api: Array<Route<Api>>, db: Db, query: Query, env: NodeJS.ProcessEnv, host: string) {
  const rows = createRows(query);
  const cluster = createCluster(rows);
  const secret = secretFor(host, env.CLUSTER_SECRET_FILE);
  const shard: Shard = { db, rows, moves: createMoves(query), mysql: query, cluster, secret, address: host, operator: operatorFromEnv(env), converge: createConverge(cluster, secret) };
  // Level 5: a machine with standbys serves only under its lease, and is promoted only by a vote.
  const group = joinGroup(env, shard);
  const leased = group?.leased ?? ((h: Handler) => h);
  const promoteStep = group?.rising(promote) ?? promote;
  const steps: Steps = { failover: new Set([replication, fence, promoteStep, follow]), operator: new Set([copy, discard, handoff, adopt, ...MOVE_STEPS, writeMap]) };
  for (const step of steps.failover) steps.operator.add(step);
  const routes: Array<Route<Context>> = [
    // Before the expense API's: this shard's health says its name and role too.
    [/^\/healthz$/, { GET: health }],
    ...api.map(([path, methods]): Route<Context> => [path, mapValues(methods, (h) => leased(guarded(h)))]),
    // The rows a move left incoming or moved, for the reshard and the forget (rules 4 and 6).
    [/^\/cluster\/rows$/, { GET: rowsInState }],
    // The three steps of a reshard's move (operator/move.ts), and its map: the operator's routes.
    [/^\/v1\/expenses\/([^/]+)\/copy$/, { PUT: copy, DELETE: discard }],
    [/^\/v1\/expenses\/([^/]+)\/handoff$/, { POST: handoff }],
    [/^\/v1\/expenses\/([^/]+)\/adopt$/, { POST: adopt }],
    // The same steps a page at a time (shard/move-pages.ts).
    ...moveRoutes,
    [/^\/cluster\/map$/, { GET: readMap, PUT: writeMap }],
    // A failover's steps on this machine's MySQL (operator/failover.ts): the operator's routes.
    [/^\/cluster\/replication$/, { GET: replication }],
    [/^\/cluster\/fence$/, { POST: fence }],
    [/^\/cluster\/promote$/, { POST: promoteStep }],
    [/^\/cluster\/follow$/, { POST: follow }],
    // Open to anyone: this machine proves that it holds the secret, at the address it is asked at.
    ...proofRoutes,
    // The live page, GET /, and the read-only routes it draws from (page/routes.ts).
    ...pageRoutes,
  ];
  const run = (handler: Handler) => (c: Api) => under(shard, steps, handler, c);
  return {
    routes: [
      ...routes.map(([path, methods]): Route<Api> => [path, mapValues(methods, run)]),
      // A primary's lease, and a standby's vote (election/rules.ts): signed, and nothing else.
      ...(group?.routes ?? []).map(([path, methods]): Route<Api> => [path, mapValues(methods, (h) => async (c: Api) => (authorize(shard, c), h(c)))]),
    ],
    listening(address: string): void {
      shard.address = address;
      if (secret !== undefined) log('operator routes need the cluster secret');
    },
  };
}

/**
 * `failover`: a failover's and an election's steps, which run under no map,
 * since they may change this machine's role. `operator`: those, and the
 * routes that change another shard's records or the cluster's shape: they
 * need the cluster secret.
 */
type Steps = { failover: Set<Handler>; operator: Set<Handler> };

/** One request of the cluster's: its right to its route, and the map it runs under. */
async function under(shard: Shard, { failover, operator }: Steps, handler: Handler, c: Api): Promise<Reply> {
  // Rule 9: a client that routes by a newer map says so; this shard fetches it in the background.
  if (operator.has(handler)) authorize(shard, c);
  else shard.converge?.(c.req);
  const writes = c.req.method !== 'GET' && c.req.method !== 'HEAD';
  const context = (held: Context['held']): Context => ({ ...c, ...shard, held });
  try {
    // Rule 5 (api/cluster-map.ts): a change of map is not a request under a map; it waits for them.
    const reply = handler === writeMap || failover.has(handler)
      ? await handler(context(await shard.cluster.load()))
      : await shard.cluster.during((held) => {
          // A stored map that cannot be read: nothing is served by a map this shard does not know, but the map itself is.
          if (held.broken !== undefined && handler !== readMap) throw new HttpError(503, brokenMessage(held), { 'Retry-After': '10' });
          return handler(context(held));
        });
    if (writes) noteWrite();
    return reply;
  } catch (err) {
    // Rule 8: MySQL turned read-only under a request (fenced): nothing was written.
    if (isReadOnly(err)) throw readOnly();
    if (writes) noteWrite(err);
    throw err;
  }
}

/** An operator's route: refused unless signed with the cluster secret (or, on loopback with no secret, open). */
function authorize(shard: Shard, c: Api): void {
  const why = unauthorized(c.req, c.body, shard.secret, shard.address);
  if (why === undefined) return;
  const path = c.req.url?.split('?')[0];
  const how = 'sign it with the cluster secret (Authorization: CH-HMAC, api/signing.ts), or by hand send Authorization: Bearer <the cluster secret>';
  throw new HttpError(401, `${c.req.method} ${path} is an operator's route: ${how} (${why})`, { 'WWW-Authenticate': 'CH-HMAC, Bearer' });
}

const mapValues = <A, B>(methods: Record<string, A>, f: (a: A) => B) => Object.fromEntries(Object.entries(methods).map(([m, h]) => [m, f(h)]));

/** GET /cluster/rows?state=: a page of rows in one state, as GET /v1/expenses pages live ones. */
async function rowsInState(c: Context): Promise<Reply> {
  const state = c.query.get('state') ?? 'live';
  c.query.delete('state'); // the rest is a page, as the expense API's list asks for one
  const { after, limit } = pageAsked(c);
  if (state !== 'live' && state !== 'incoming' && state !== 'moved') throw new HttpError(400, `state must be live, incoming or moved, got ${preview(state)}`);
  return page(await c.rows.list(after, limit + 1, state as State), limit);
}

async function health(c: Context): Promise<Reply> {
  const shard = await c.rows.shard();
  // Up means writes can succeed: a shard out of disk is not up. A standby is up as a standby.
  const status = outOfDisk() ? 'out of disk space: writes fail, reads work' : 'ok';
  return { status: status === 'ok' ? 200 : 503, body: { status, shard, role: c.held.writable ? 'primary' : 'standby', logLinesDropped: logLinesDropped() } };
}
