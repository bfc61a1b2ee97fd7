// server.ts: one shard of the expense service. node:http, a hand-written
// router, and MySQL behind db.ts.
//
// Run: MYSQL_SOCKET=… MYSQL_USER=… MYSQL_PASSWORD=… PORT=3000 node server.ts

import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import { realpathSync, writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { checkFields, EDITABLE, etag, ID_RULE, Invalid, isId, preview, type Editable, type Expense } from './api/expense.ts';
import { createDb, isOutOfDisk, isUnavailable, type Db, type DbConfig } from './db.ts';

// ---------------------------------------------------------------------------
// Routes: every path, every method, on one screen.

type Context = { db: Db; req: IncomingMessage; params: string[]; query: URLSearchParams };
type Reply = { status: number; body?: unknown; headers?: Record<string, string> };
type Handler = (c: Context) => Promise<Reply>;

const routes: Array<[RegExp, Record<string, Handler>]> = [
  [/^\/v1\/expenses$/, { GET: list, POST: create }],
  [/^\/v1\/expenses\/([^/]+)$/, { GET: read, PUT: update, DELETE: remove }],
  [/^\/v1\/expenses\/([^/]+)\/copy$/, { PUT: copy }],
  [/^\/healthz$/, { GET: health }],
];

async function create({ db, req }: Context): Promise<Reply> {
  // If-None-Match: * asks for exactly what a POST does anyway; a refusal then says it in those terms.
  const onlyIfAbsent = precondition(req)?.absent;
  const fields = checkFields(await readJson(req), ['id', ...EDITABLE], true);
  const expense: Expense = { id: fields.id!, ...(fields as Record<Editable, string>), status: 'pending', decision_date: '' };
  const version = await db.insert(expense);
  if (version === undefined) {
    if (onlyIfAbsent) throw await refused(db, expense.id);
    throw new HttpError(409, `an expense with id ${JSON.stringify(expense.id)} already exists; PUT /v1/expenses/${expense.id} to change it`);
  }
  return { status: 201, body: expense, headers: { Location: `/v1/expenses/${expense.id}`, ETag: etag(version) } };
}

async function read({ db, req, params }: Context): Promise<Reply> {
  await readBody(req); // and ignore it
  const id = pathId(params);
  const found = (await db.get(id)) ?? notFound(id);
  return { status: 200, body: found.expense, headers: { ETag: etag(found.version) } };
}

async function update({ db, req, params }: Context): Promise<Reply> {
  const id = pathId(params);
  const expected = await expectedVersion(db, req, id);
  const fields = checkFields(await readJson(req), EDITABLE, false);
  if (Object.keys(fields).length === 0) {
    throw new HttpError(400, `nothing to update: send at least one of ${EDITABLE.join(', ')}`);
  }
  if (!(await db.update(id, fields, expected))) throw await refused(db, id);
  const found = (await db.get(id)) ?? notFound(id);
  return { status: 202, body: found.expense, headers: { ETag: etag(found.version) } };
}

async function remove({ db, req, params }: Context): Promise<Reply> {
  await readBody(req); // and ignore it
  const id = pathId(params);
  const expected = await expectedVersion(db, req, id);
  if (!(await db.remove(id, expected))) throw await refused(db, id);
  return { status: 204 };
}

/**
 * A record copied from another shard, written as it is: the server's fields
 * and the version too, so that an ETag means the same before and after a
 * move. Only resharding needs this, and it must say what it expects to find:
 * nothing (If-None-Match: *), or exactly the version it copied before
 * (If-Match). So a copy can never overwrite a write it has not seen.
 */
async function copy({ db, req, params }: Context): Promise<Reply> {
  const id = pathId(params);
  const condition = precondition(req);
  if (condition === undefined || (!condition.absent && condition.match?.length !== 1)) {
    throw new HttpError(428, 'a copy needs If-None-Match: * (to create) or If-Match with exactly one version (to replace that version)');
  }
  const fields = checkFields(await readJson(req), ['id', ...EDITABLE, 'status', 'decision_date', 'version'], true);
  if (fields.id !== id) throw new HttpError(400, `the id in the body (${preview(fields.id)}) is not the id in the path (${preview(id)})`);
  const { version, ...expense } = fields as Expense & { version: string };
  if (condition.absent) {
    if ((await db.insert(expense, version)) === undefined) throw await refused(db, id);
    return { status: 201, body: expense, headers: { Location: `/v1/expenses/${id}`, ETag: etag(version) } };
  }
  if (!(await db.replace(expense, version, condition.match![0]!))) throw await refused(db, id);
  return { status: 200, body: expense, headers: { ETag: etag(version) } };
}

async function list({ db, req, query }: Context): Promise<Reply> {
  await readBody(req); // and ignore it
  for (const name of query.keys()) {
    if (name !== 'after' && name !== 'limit') throw new HttpError(400, `unknown query parameter ${JSON.stringify(name)}; use after and limit`);
  }
  const after = query.get('after') ?? '';
  if (after !== '') rejectBadId(after, 'after');
  const limit = query.get('limit') ?? '100';
  if (!/^\d{1,4}$/.test(limit) || +limit < 1 || +limit > 1000) {
    throw new HttpError(400, `limit must be a whole number from 1 to 1000, got ${JSON.stringify(limit)}`);
  }
  // Ask for one more than the page: if it comes back, there is a next page.
  const rows = await db.list(after, +limit + 1);
  const page = rows.slice(0, +limit);
  const next = rows.length > page.length ? page[page.length - 1]!.expense.id : null;
  // Each record's version travels beside it, as a GET carries it in the
  // ETag: the record itself keeps the assignment's ten fields.
  const versions = Object.fromEntries(page.map((r) => [r.expense.id, r.version]));
  return { status: 200, body: { expenses: page.map((r) => r.expense), versions, next } };
}

async function health({ db, req }: Context): Promise<Reply> {
  await readBody(req); // and ignore it
  const shard = await db.shard();
  // Up means writes can succeed: a shard out of disk is not up.
  if (db.outOfDisk()) return { status: 503, body: { status: 'out of disk space: writes fail, reads work', shard, logLinesDropped } };
  return { status: 200, body: { status: 'ok', shard, logLinesDropped } };
}

function notFound(id: string): never {
  throw new HttpError(404, `no expense with id ${JSON.stringify(id)}`);
}

// ---------------------------------------------------------------------------
// Conditional requests (RFC 9110 §13): a write that goes ahead only if the
// record is still the version the client last saw, so that no one silently
// overwrites a change they have not seen.

/**
 * The request's condition on the stored record: If-Match (one of these
 * versions, or any with *), If-None-Match: * (no record at all), or none.
 */
function precondition(req: IncomingMessage): { match?: string[]; absent?: true } | undefined {
  const ifMatch = req.headers['if-match'];
  const ifNoneMatch = req.headers['if-none-match'];
  if (ifNoneMatch !== undefined) {
    if (ifNoneMatch.trim() !== '*') throw new HttpError(400, `If-None-Match: only * is supported here, got ${preview(ifNoneMatch)}`);
    return { absent: true };
  }
  if (ifMatch === undefined || ifMatch.trim() === '*') return undefined;
  const match: string[] = [];
  for (const tag of ifMatch.split(',').map((t) => t.trim())) {
    // A weak tag (W/"...") never matches under the strong comparison that writes need.
    if (/^W\/"[^"]*"$/.test(tag)) continue;
    const m = /^"([0-9a-f]{16})"$/.exec(tag);
    if (m === null) throw new HttpError(400, `If-Match must list entity tags like "0123456789abcdef", got ${preview(tag)}`);
    match.push(m[1]!);
  }
  return { match };
}

/** The versions a PUT or DELETE may overwrite, or undefined for any; refused at once when none can match. */
async function expectedVersion(db: Db, req: IncomingMessage, id: string): Promise<string[] | undefined> {
  const condition = precondition(req);
  // If-None-Match: * (there must be a record to change), or If-Match with
  // only weak tags: no stored version can match.
  if (condition?.absent || condition?.match?.length === 0) throw await refused(db, id);
  return condition?.match;
}

/** Why a conditional write did not happen: no record (404), or another version (412). */
async function refused(db: Db, id: string): Promise<HttpError> {
  const found = (await db.get(id)) ?? notFound(id);
  return new HttpError(412, `the expense ${JSON.stringify(id)} is at version ${etag(found.version)}, not the one this request expects; GET it, then send the change again`, {
    headers: { ETag: etag(found.version) },
  });
}

// ---------------------------------------------------------------------------
// The one error path: every failure becomes an HttpError, and every reply is JSON.

/** An error that knows its HTTP status. Its message is safe to show the client. */
class HttpError extends Error {
  status: number;
  headers?: Record<string, string>;
  constructor(status: number, message: string, extra: { headers?: Record<string, string> } = {}) {
    super(message);
    this.status = status;
    this.headers = extra.headers;
  }
}

async function dispatch(db: Db, req: IncomingMessage): Promise<Reply> {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const path = q === -1 ? url : url.slice(0, q);
  const query = new URLSearchParams(q === -1 ? '' : url.slice(q + 1));
  for (const [pattern, methods] of routes) {
    const match = pattern.exec(path);
    if (match === null) continue;
    const handler = methods[req.method ?? ''];
    if (handler === undefined) {
      const allow = Object.keys(methods).join(', ');
      throw new HttpError(405, `${req.method} is not allowed on ${path}; use ${allow}`, { headers: { Allow: allow } });
    }
    return handler({ db, req, params: match.slice(1), query });
  }
  throw new HttpError(404, `no route for ${path}`);
}

function toReply(err: unknown, req: IncomingMessage): Reply {
  if (err instanceof Invalid) {
    return { status: 400, body: { error: err.message, ...(err.fields && { fields: err.fields }) } };
  }
  if (err instanceof HttpError) return { status: err.status, body: { error: err.message }, headers: err.headers };
  if (isOutOfDisk(err)) {
    return { status: 507, body: { error: 'this shard is out of disk space, and nothing was written; reads and deletes still work' } };
  }
  if (isUnavailable(err)) {
    return { status: 503, body: { error: 'the database is unavailable; try again shortly' }, headers: { 'Retry-After': '1' } };
  }
  // A bug or a surprise from MySQL: log it here, and show the client nothing
  // of it. The log names the request and MySQL's code and message, never the
  // statement, whose values are someone's personal data.
  const e = err as { code?: string; sqlMessage?: string; message?: string };
  log(`internal error: ${req.method} ${req.url}: ${e.code ?? 'no code'}: ${e.sqlMessage ?? e.message ?? String(err)}`, 'stderr');
  return { status: 500, body: { error: 'internal server error' } };
}

const JSON_TYPE = 'application/json; charset=utf-8';

function send(res: ServerResponse, { status, body, headers }: Reply): void {
  // Stringify before writing the head, so that a throw cannot leave half a response.
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    ...(text && { 'Content-Type': JSON_TYPE, 'Content-Length': Buffer.byteLength(text) }),
    ...headers,
  });
  res.end(text);
}

// ---------------------------------------------------------------------------
// Reading requests.

const BODY_LIMIT = 64 * 1024;

/**
 * A POST or PUT body, parsed. It is read as JSON when it is declared as JSON,
 * and also when it is declared as nothing, text/plain or a form: the 2016
 * clients of the assignment send JSON that way, and their servers read it.
 * Any other declared type is a 415, since the client meant something else.
 */
async function readJson(req: IncomingMessage): Promise<unknown> {
  const declared = req.headers['content-type'] ?? '';
  const [type = '', ...params] = declared.split(';').map((s) => s.trim().toLowerCase());
  const json = type === 'application/json' || /^application\/[\w.-]+\+json$/.test(type);
  if (!json && type !== '' && type !== 'text/plain' && type !== 'application/x-www-form-urlencoded') {
    throw new HttpError(415, `the body must be JSON, declared as application/json or not at all; got Content-Type ${JSON.stringify(declared)}`);
  }
  const charset = params.find((p) => p.startsWith('charset='));
  if (charset !== undefined && charset.replace(/"/g, '') !== 'charset=utf-8') {
    throw new HttpError(415, `the body must be UTF-8; got Content-Type ${JSON.stringify(declared)}`);
  }
  let text: string;
  try {
    text = utf8.decode(await readBody(req));
  } catch (err) {
    if (err instanceof HttpError) throw err;
    throw new HttpError(400, 'the body is not valid UTF-8');
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    const sentAs = json || type === '' ? '' : ` (it was sent as ${type}, and is read as JSON all the same)`;
    throw new HttpError(400, `the body is not valid JSON${sentAs}: ${(err as Error).message}`);
  }
}

/**
 * The whole body, up to BODY_LIMIT. A GET or DELETE reads its body too, and
 * ignores it: HTTP gives it no meaning, and some clients send one anyway.
 */
function readBody(req: IncomingMessage): Promise<Buffer> {
  if (Number(req.headers['content-length']) > BODY_LIMIT) throw tooLarge();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= BODY_LIMIT) return void chunks.push(chunk);
      // Read on and discard the rest, so that the client gets to read our 413:
      // closing with unread data would reset the connection and lose it.
      // requestTimeout bounds how long a client can keep us reading.
      req.removeAllListeners('data');
      req.resume();
      reject(tooLarge());
    });
    // The client went away mid-body: no one is left to read the answer.
    req.on('error', () => reject(new HttpError(400, 'the body ended before its Content-Length')));
    req.on('end', () => resolve(Buffer.concat(chunks)));
  });
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

function tooLarge(): HttpError {
  return new HttpError(413, `the body is over ${BODY_LIMIT} bytes; an expense is far smaller`);
}

// ---------------------------------------------------------------------------
// Ids in paths and queries (api/expense.ts says what an expense is).

function rejectBadId(id: string, what: string): void {
  if (!isId(id)) throw new HttpError(400, `${what} ${ID_RULE}, got ${preview(id)}`);
}

function pathId(params: string[]): string {
  const id = params[0]!;
  rejectBadId(id, 'the id in the path');
  return id;
}

// ---------------------------------------------------------------------------
// The log.

let logLinesDropped = 0;

/**
 * One line to the log: stdout, or stderr for errors (start-shards.sh sends
 * both to server.log). A write that fails, on a full disk say, drops the line
 * and counts it: the log must never take the server down. Synchronous, so
 * that a line is out before the process can die.
 */
function log(line: string, to: 'stdout' | 'stderr' = 'stdout'): void {
  try {
    writeSync(to === 'stdout' ? 1 : 2, `${line}\n`);
  } catch {
    logLinesDropped++;
  }
}

// ---------------------------------------------------------------------------
// The HTTP server.

function createServer(db: Db): http.Server {
  const server = http.createServer(
    {
      // Slow or silent clients must not hold connections forever.
      headersTimeout: 10_000,
      requestTimeout: 30_000,
      keepAliveTimeout: 5_000,
      connectionsCheckingInterval: 1_000,
    },
    (req, res) => {
      dispatch(db, req)
        .catch((err) => toReply(err, req))
        .then((reply) => {
          // Shutting down: tell a keep-alive client to go, so that close() need not wait for it.
          if (!server.listening) res.setHeader('Connection', 'close');
          send(res, reply);
        });
    },
  );
  // Requests too broken to reach the router (bad syntax, huge headers,
  // timeouts) still get a JSON answer, then the connection is closed.
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable || err.code === 'ECONNRESET') return socket.destroy();
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    const text = JSON.stringify({ error: `${http.STATUS_CODES[status]}: the request could not be read` });
    socket.end(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: ${JSON_TYPE}\r\n` +
        `Content-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`,
    );
  });
  return server;
}

/** The server's settings, from the environment. Throws on a value that cannot work. */
function configFromEnv(env: NodeJS.ProcessEnv): { host: string; port: number; db: DbConfig } {
  const port = Number(env.PORT ?? 3000);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`PORT must be 0 to 65535, got ${JSON.stringify(env.PORT)}`);
  const mysqlPort = Number(env.MYSQL_PORT ?? 3306);
  if (!Number.isInteger(mysqlPort) || mysqlPort < 1 || mysqlPort > 65535) {
    throw new Error(`MYSQL_PORT must be 1 to 65535, got ${JSON.stringify(env.MYSQL_PORT)}`);
  }
  return {
    // Loopback unless asked: a shard is not meant to face the network.
    host: env.HOST ?? '127.0.0.1',
    port,
    db: {
      ...(env.MYSQL_SOCKET ? { socketPath: env.MYSQL_SOCKET } : { host: env.MYSQL_HOST ?? '127.0.0.1', port: mysqlPort }),
      user: env.MYSQL_USER ?? 'root',
      password: env.MYSQL_PASSWORD ?? '',
      database: env.MYSQL_DATABASE ?? 'expenses',
    },
  };
}

async function main(): Promise<void> {
  const config = configFromEnv(process.env);
  const db = createDb(config.db);
  const server = createServer(db);
  server.listen(config.port, config.host);
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  log(`listening on http://${config.host}:${port}`);

  // A first query says at once whether the credentials work; the server
  // serves either way, with 503s until MySQL answers.
  db.shard().then(
    () => log('database: connected'),
    (err: { code?: string; message: string }) => log(`database: not reachable yet (${err.code ?? err.message}); answering 503 until it is`, 'stderr'),
  );

  // Stop taking connections, let requests in flight finish, then close the pool.
  const stop = (signal: string) => {
    log(`${signal}: shutting down`);
    // Idle keep-alive connections close now; busy ones after their response,
    // or after 10 s at most.
    server.close(() => db.close().catch((err: Error) => log(`closing the pool: ${err.message}`, 'stderr')));
    setTimeout(() => server.closeAllConnections(), 10_000).unref();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

// Run as a script, and not when a test imports this file. (Not
// import.meta.main: Node 22 before 22.18 lacks it, and would silently do nothing.)
if (process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: Error) => {
    log(`server: ${err.message}`, 'stderr');
    process.exit(1);
  });
}
