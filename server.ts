// server.ts: one shard of the expense service: node:http, a hand-written
// router, the handlers of shard/expenses.ts, and MySQL behind db.ts. The
// levels above the assignment (the cluster map, moves, failover) join at one
// seam, in main(): cluster/join.ts wraps these routes and adds its own.
//
// Run: MYSQL_SOCKET=… MYSQL_USER=… MYSQL_PASSWORD_FILE=… PORT=3000 node server.ts
// (or MYSQL_PASSWORD=… by hand; a file keeps it out of the process's environment)

import http, { type IncomingMessage } from 'node:http';
import { once } from 'node:events';
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createDb } from './db.ts';
import { connect, dbConfigFromEnv } from './mysql/connections.ts';
import { create, health, list, read, remove, update, type Api } from './shard/expenses.ts';
import { answerBroken, findRoute, lastResort, log, readBody, send, toReply, type Reply, type Route } from './shard/http.ts';
import { joinCluster } from './cluster/join.ts';

// The expense API: every path, every method, on one screen. The cluster adds its own at the seam.
const routes: Array<Route<Api>> = [
  [/^\/v1\/expenses$/, { GET: list, POST: create }],
  [/^\/v1\/expenses\/([^/]+)$/, { GET: read, PUT: update, DELETE: remove }],
  [/^\/healthz$/, { GET: health }],
];

type Served = { routes: Array<Route<Api>>; db: Api['db'] };

/** One request, start to finish: its body, its route, its handler. */
async function dispatch({ routes, db }: Served, req: IncomingMessage): Promise<Reply> {
  const body = await readBody(req);
  const { handler, params, query } = findRoute(routes, req);
  return handler({ db, req, body, params, query });
}

function createServer(served: Served): http.Server {
  const server = http.createServer(
    {
      // Slow or silent clients must not hold connections forever.
      headersTimeout: 10_000,
      requestTimeout: 30_000,
      keepAliveTimeout: 5_000,
      connectionsCheckingInterval: 1_000,
    },
    (req, res) => {
      dispatch(served, req)
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

async function main(env: NodeJS.ProcessEnv): Promise<void> {
  const port = Number(env.PORT ?? 3000);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`PORT must be 0 to 65535, got ${JSON.stringify(env.PORT)}`);
  // Loopback unless asked: a shard is not meant to face the network.
  const host = env.HOST ?? '127.0.0.1';
  const query = connect(dbConfigFromEnv(env));
  const db = createDb(query);
  // The seam: the cluster's routes, around and beside the expense API's.
  const cluster = joinCluster(routes, db, query, env, host);
  const server = createServer({ routes: cluster.routes, db });
  // Stop taking connections, let requests in flight finish, then close the
  // connections to MySQL. Set before listening: a signal that comes early still shuts down cleanly.
  const stop = (signal: string) => {
    log(`${signal}: shutting down`);
    // Idle keep-alive connections close now; busy ones after their response, or after 10 s at most.
    server.close(() => query.close().catch((err: Error) => log(`closing the connections to MySQL: ${err.message}`, 'stderr')));
    setTimeout(() => server.closeAllConnections(), 10_000).unref();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  server.listen(port, host);
  await once(server, 'listening');
  const address = `${host}:${(server.address() as { port: number }).port}`;
  cluster.listening(address);
  log(`listening on http://${address}`);

  // A first query says at once whether the credentials work; the server
  // serves either way, with 503s until MySQL answers.
  db.ping().then(
    () => log('database: connected'),
    (err: { code?: string; message: string }) => log(`database: not reachable yet (${err.code ?? err.message}); answering 503 until it is`, 'stderr'),
  );
}

// Run as a script, and not when a test imports this file. (Not
// import.meta.main: Node 22 before 22.18 lacks it, and would silently do nothing.)
if (process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.env).catch((err: Error) => {
    log(`server: ${err.message}`, 'stderr');
    process.exit(1);
  });
}
