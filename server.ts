// server.ts: one shard of the expense service, and its table of contents.
// node:http, a hand-written router, and MySQL behind db.ts. Each route lives
// in a room named for its job:
//
//   shard/expenses.ts       the expense API (level 1 of the README's reading order)
//   shard/http.ts           the plumbing: routing, bodies, answers, the one error path
//   shard/context.ts        what a handler is given: the shard's parts, the map, the request
//   shard/preconditions.ts  If-Match and If-None-Match: a compare-and-set over HTTP
//   shard/placement.ts      who answers for an id under the cluster map (level 2)
//   shard/cluster.ts        the map this shard holds, and how it changes (level 2)
//   shard/move-steps.ts     this shard's half of moving a record (level 3)
//   shard/map-routes.ts     the map over HTTP, changed by the operator (level 3)
//   shard/converge.ts       a newer map a client names, fetched from a peer and taken (level 3)
//   shard/secret.ts         the cluster secret of the operator's routes
//   shard/replication.ts    this machine's steps of a failover: fence, promote, follow (level 4)
//
// Run: MYSQL_SOCKET=… MYSQL_USER=… MYSQL_PASSWORD_FILE=… PORT=3000 node server.ts
// (MYSQL_PASSWORD=… works too, by hand; a file keeps it out of the process's environment)

import http, { type IncomingMessage } from 'node:http';
import { once } from 'node:events';
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createDb, type DbConfig } from './db.ts';
import { brokenMessage, createCluster } from './shard/cluster.ts';
import { createConverge } from './shard/converge.ts';
import { create, health, list, read, remove, update } from './shard/expenses.ts';
import type { Context, Handler, Route, Shard } from './shard/context.ts';
import { answerBroken, findRoute, HttpError, lastResort, log, readBody, send, toReply, type Reply } from './shard/http.ts';
import { readMap, writeMap } from './shard/map-routes.ts';
import { adopt, copy, discard, handoff } from './shard/move-steps.ts';
import { MOVE_STEPS, moveRoutes } from './shard/move-pages.ts';
import { createMoves } from './mysql/moves.ts';
import { fence, follow, operatorFromEnv, promote, replication } from './shard/replication.ts';
import { mysqlPassword, secretFor, unauthorized } from './shard/secret.ts';

// ---------------------------------------------------------------------------
// Routes: every path, every method, on one screen.

const routes: Route[] = [
  [/^\/v1\/expenses$/, { GET: list, POST: create }],
  [/^\/v1\/expenses\/([^/]+)$/, { GET: read, PUT: update, DELETE: remove }],
  // The three steps of a reshard's move (operator/move.ts), and its map: the operator's routes.
  [/^\/v1\/expenses\/([^/]+)\/copy$/, { PUT: copy, DELETE: discard }],
  [/^\/v1\/expenses\/([^/]+)\/handoff$/, { POST: handoff }],
  [/^\/v1\/expenses\/([^/]+)\/adopt$/, { POST: adopt }],
  ...moveRoutes, // the same steps a page at a time (shard/move-pages.ts)
  [/^\/cluster\/map$/, { GET: readMap, PUT: writeMap }],
  // A failover's steps on this machine's MySQL (operator/failover.ts): the operator's routes.
  [/^\/cluster\/replication$/, { GET: replication }],
  [/^\/cluster\/fence$/, { POST: fence }],
  [/^\/cluster\/promote$/, { POST: promote }],
  [/^\/cluster\/follow$/, { POST: follow }],
  [/^\/healthz$/, { GET: health }],
];

/** A failover's steps (operator/failover.ts): they run under no map, since they may change this machine's role. */
const FAILOVER: ReadonlySet<Handler> = new Set([replication, fence, promote, follow]);
/** The routes that change another shard's records or the cluster's shape: they need the cluster secret. */
const OPERATOR: ReadonlySet<Handler> = new Set([copy, discard, handoff, adopt, ...MOVE_STEPS, writeMap, ...FAILOVER]);

/** One request, start to finish: its route, its right to it, and the map it runs under. */
async function dispatch(shard: Shard, req: IncomingMessage): Promise<Reply> {
  const body = await readBody(req);
  const { handler, path, params, query } = findRoute(routes, req);
  const why = OPERATOR.has(handler) ? unauthorized(req, body, shard.secret) : undefined;
  if (why !== undefined) {
    const how = 'sign it with the cluster secret (Authorization: CH-HMAC, api/signing.ts), or by hand send Authorization: Bearer <the cluster secret>';
    throw new HttpError(401, `${req.method} ${path} is an operator's route: ${how} (${why})`, { 'WWW-Authenticate': 'CH-HMAC, Bearer' });
  }
  // Rule 9: a client that routes by a newer map says so; this shard fetches it in the background.
  if (!OPERATOR.has(handler)) shard.converge?.(req);
  const context = (held: Context['held']): Context => ({ ...shard, held, req, body, params, query });
  // Rule 5 (api/cluster-map.ts): a change of map is not a request under a map; it waits for them.
  if (handler === writeMap || FAILOVER.has(handler)) return handler(context(await shard.cluster.load()));
  return shard.cluster.during((held) => {
    // A stored map that cannot be read: nothing is served by a map this shard does not know, but the map itself is.
    if (held.broken !== undefined && handler !== readMap) throw new HttpError(503, brokenMessage(held), { 'Retry-After': '10' });
    return handler(context(held));
  });
}

// ---------------------------------------------------------------------------
// The HTTP server.

function createServer(shard: Shard): http.Server {
  const server = http.createServer(
    {
      // Slow or silent clients must not hold connections forever.
      headersTimeout: 10_000,
      requestTimeout: 30_000,
      keepAliveTimeout: 5_000,
      connectionsCheckingInterval: 1_000,
    },
    (req, res) => {
      dispatch(shard, req)
        .catch((err) => toReply(err, req))
        .then((reply) => {
          // Shutting down: tell a keep-alive client to go, so that close() need not wait for it.
          if (!server.listening) res.setHeader('Connection', 'close');
          send(res, reply);
        })
        .catch((err) => lastResort(res, req, err));
    },
  );
  // Requests too broken to reach the router still get a JSON answer.
  server.on('clientError', answerBroken);
  return server;
}

type Config = { host: string; port: number; db: DbConfig; secret: string | undefined };

/** The server's settings, from the environment. Throws on a value that cannot work. */
function configFromEnv(env: NodeJS.ProcessEnv): Config {
  const port = Number(env.PORT ?? 3000);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`PORT must be 0 to 65535, got ${JSON.stringify(env.PORT)}`);
  const mysqlPort = Number(env.MYSQL_PORT ?? 3306);
  if (!Number.isInteger(mysqlPort) || mysqlPort < 1 || mysqlPort > 65535) {
    throw new Error(`MYSQL_PORT must be 1 to 65535, got ${JSON.stringify(env.MYSQL_PORT)}`);
  }
  // Loopback unless asked: a shard is not meant to face the network.
  const host = env.HOST ?? '127.0.0.1';
  const secret = secretFor(host, env.CLUSTER_SECRET_FILE);
  return {
    host,
    port,
    secret,
    db: {
      ...(env.MYSQL_SOCKET ? { socketPath: env.MYSQL_SOCKET } : { host: env.MYSQL_HOST ?? '127.0.0.1', port: mysqlPort }),
      user: env.MYSQL_USER ?? 'root',
      password: mysqlPassword(env),
      database: env.MYSQL_DATABASE ?? 'expenses',
    },
  };
}

async function main(): Promise<void> {
  const config = configFromEnv(process.env);
  const db = createDb(config.db);
  const moves = createMoves(config.db);
  const cluster = createCluster(db);
  const shard = { db, moves, cluster, secret: config.secret, address: `${config.host}:${config.port}`, operator: operatorFromEnv(process.env), converge: createConverge(cluster, config.secret) };
  const server = createServer(shard);
  // Stop taking connections, let requests in flight finish, then close the
  // pool. Set before listening: a signal that comes early still shuts down cleanly.
  const stop = (signal: string) => {
    log(`${signal}: shutting down`);
    // Idle keep-alive connections close now; busy ones after their response,
    // or after 10 s at most.
    server.close(() => Promise.all([db.close(), moves.close()]).catch((err: Error) => log(`closing the pool: ${err.message}`, 'stderr')));
    setTimeout(() => server.closeAllConnections(), 10_000).unref();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  server.listen(config.port, config.host);
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  shard.address = `${config.host}:${port}`; // rule 8: a standby compares it with the owner's address
  log(`listening on http://${config.host}:${port}${config.secret === undefined ? '' : ', operator routes need the cluster secret'}`);

  // A first query says at once whether the credentials work; the server
  // serves either way, with 503s until MySQL answers.
  db.shard().then(
    () => log('database: connected'),
    (err: { code?: string; message: string }) => log(`database: not reachable yet (${err.code ?? err.message}); answering 503 until it is`, 'stderr'),
  );
}

// Run as a script, and not when a test imports this file. (Not
// import.meta.main: Node 22 before 22.18 lacks it, and would silently do nothing.)
if (process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: Error) => {
    log(`server: ${err.message}`, 'stderr');
    process.exit(1);
  });
}
