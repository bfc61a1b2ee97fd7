// server.ts: one shard of the expense service. node:http, a hand-written
// router, and MySQL behind db.ts. A shard that holds a cluster map serves only
// the ids the map places on it (api/cluster-map.ts, whose rules the comments
// here cite by number).
//
// Run: MYSQL_SOCKET=… MYSQL_USER=… MYSQL_PASSWORD=… PORT=3000 node server.ts

import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { readFileSync, realpathSync, writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { checkMap, type MapNode, type Placement } from './api/cluster-map.ts';
import { checkFields, EDITABLE, etag, ID_RULE, Invalid, isId, preview, type Editable, type Expense } from './api/expense.ts';
import { createDb, isOutOfDisk, type Db, type DbConfig, type Row } from './db.ts';
import { createCluster, type Cluster, type Held } from './shard/cluster.ts';
import { isUnavailable } from './mysql/connections.ts';

// ---------------------------------------------------------------------------
// Routes: every path, every method, on one screen.

type Context = Shard & { held: Held; req: IncomingMessage; body: Buffer; params: string[]; query: URLSearchParams };
/** What every request may use: the database, the map this shard holds, and the cluster secret. */
type Shard = { db: Db; cluster: Cluster; secret: string | undefined };
type Reply = { status: number; body?: unknown; headers?: Record<string, string> };
type Handler = (c: Context) => Promise<Reply>;

const routes: Array<[RegExp, Record<string, Handler>]> = [
  [/^\/v1\/expenses$/, { GET: list, POST: create }],
  [/^\/v1\/expenses\/([^/]+)$/, { GET: read, PUT: update, DELETE: remove }],
  // The three steps of a reshard's move (operator/move.ts), and its map: the operator's routes.
  [/^\/v1\/expenses\/([^/]+)\/copy$/, { PUT: copy, DELETE: discard }],
  [/^\/v1\/expenses\/([^/]+)\/handoff$/, { POST: handoff }],
  [/^\/v1\/expenses\/([^/]+)\/adopt$/, { POST: adopt }],
  [/^\/cluster\/map$/, { GET: readMap, PUT: writeMap }],
  [/^\/healthz$/, { GET: health }],
];

/** The routes that change another shard's records or the cluster's shape: they need the cluster secret. */
const OPERATOR: ReadonlySet<Handler> = new Set([copy, discard, handoff, adopt, writeMap]);

async function create(c: Context): Promise<Reply> {
  const { ifMatch, ifNoneMatch } = preconditions(c.req);
  // A POST only creates, so no stored version can be the one If-Match names.
  if (ifMatch !== undefined) throw new HttpError(412, 'If-Match on a POST can never hold: a POST creates a record. Send a PUT to change one');
  const onlyIfAbsent = ifNoneMatch !== undefined && star(ifNoneMatch);
  const fields = checkFields(readJson(c), ['id', ...EDITABLE], true);
  const expense: Expense = { id: fields.id!, ...(fields as Record<Editable, string>), status: 'pending', decision_date: '' };
  const { part, at } = placeOf(c, expense.id);
  if (part === 'target') throw misdirected(c, at.owner, expense.id); // rule 3b: only an asked request creates here
  if (part === 'source') {
    // Rule 3a: the old owner never creates an id that moves away.
    if ((await c.db.get(expense.id))?.state !== 'live') throw ask(c, at, expense.id);
  } else {
    const version = await c.db.insert(expense);
    if (version !== undefined) return { status: 201, body: expense, headers: { Location: `/v1/expenses/${expense.id}`, ETag: etag(version) } };
  }
  const row = await c.db.get(expense.id);
  if (row !== undefined && row.state !== 'live') throw inTransit(expense.id); // rule 4
  // If-None-Match: * asks for exactly what a POST does anyway; a refusal then says it in those terms.
  if (onlyIfAbsent) throw preconditionFailed(expense.id, row?.version);
  throw new HttpError(409, `an expense with id ${JSON.stringify(expense.id)} already exists; PUT /v1/expenses/${expense.id} to change it`);
}

async function read(c: Context): Promise<Reply> {
  const id = pathId(c.params);
  const here = placeOf(c, id);
  const row = await c.db.get(id);
  if (row?.state !== 'live') return notHere(c, here, id, row);
  return { status: 200, body: row.expense, headers: { ETag: etag(row.version) } };
}

// A PUT or DELETE reads the record, checks the request's conditions against
// it, and writes over exactly the version it read. So a PUT answers with the
// record and the version that it wrote, even when other writes come just
// before or after it.
async function update(c: Context): Promise<Reply> {
  const id = pathId(c.params);
  const conditions = preconditions(c.req);
  const fields = checkFields(readJson(c), EDITABLE, false);
  if (Object.keys(fields).length === 0) throw new HttpError(400, `nothing to update: send at least one of ${EDITABLE.join(', ')}`);
  const here = placeOf(c, id);
  return overRead(c, here, id, conditions, async (row) => {
    const expense = { ...row.expense, ...fields };
    const version = await c.db.replace(expense, row.version, 'live');
    return version === undefined ? undefined : { status: 202, body: expense, headers: { ETag: etag(version) } };
  });
}

async function remove(c: Context): Promise<Reply> {
  const id = pathId(c.params);
  const conditions = preconditions(c.req);
  const here = placeOf(c, id);
  return overRead(c, here, id, conditions, async (row) => ((await c.db.remove(id, 'live', [row.version])) ? { status: 204 } : undefined));
}

// Another writer (a reshard's hand-off, another server on this database) can
// still slip in between the read and the write: then read again.
const WRITE_ATTEMPTS = 5;

/**
 * Runs `write` over the live record as read, once the request's conditions
 * hold for it; writes to one id queue in this server, so that they do not
 * race each other's reads. `write` answers undefined when the record changed
 * before it could write.
 */
function overRead(c: Context, here: Here, id: string, conditions: Conditions, write: (row: Row) => Promise<Reply | undefined>): Promise<Reply> {
  return oneAtATime(id, async () => {
    for (let attempt = 0; attempt < WRITE_ATTEMPTS; attempt++) {
      const row = await c.db.get(id);
      if (row?.state !== 'live') return notHere(c, here, id, row);
      meets(id, row.version, conditions);
      const reply = await write(row);
      if (reply !== undefined) return reply;
    }
    throw new HttpError(503, `the expense ${JSON.stringify(id)} changed ${WRITE_ATTEMPTS} times while this request was applied; send it again`, { 'Retry-After': '1' });
  });
}

const writing = new Map<string, Promise<unknown>>(); // id: the last write queued for it

function oneAtATime<T>(id: string, write: () => Promise<T>): Promise<T> {
  const mine = (writing.get(id) ?? Promise.resolve()).then(write, write);
  const settled = mine.then(
    () => {},
    () => {},
  );
  writing.set(id, settled);
  void settled.then(() => writing.get(id) === settled && writing.delete(id));
  return mine;
}

async function list(c: Context): Promise<Reply> {
  for (const name of c.query.keys()) {
    if (!['after', 'limit', 'state'].includes(name)) throw new HttpError(400, `unknown query parameter ${JSON.stringify(name)}; use after, limit and state`);
  }
  const after = c.query.get('after') ?? '';
  if (after !== '') rejectBadId(after, 'after');
  const limit = c.query.get('limit') ?? '100';
  if (!/^\d{1,4}$/.test(limit) || +limit < 1 || +limit > 1000) {
    throw new HttpError(400, `limit must be a whole number from 1 to 1000, got ${JSON.stringify(limit)}`);
  }
  // A reshard lists the copies that a move left incoming here (rule 4), to finish those moves.
  const state = c.query.get('state') ?? 'live';
  if (state !== 'live' && state !== 'incoming') throw new HttpError(400, `state must be live or incoming, got ${preview(state)}`);
  // Ask for one more than the page: if it comes back, there is a next page.
  const rows = await c.db.list(after, +limit + 1, state);
  const page = rows.slice(0, +limit);
  const next = rows.length > page.length ? page[page.length - 1]!.expense.id : null;
  // Each record's version travels beside it, as a GET carries it in the
  // ETag: the record itself keeps the assignment's ten fields.
  const versions = Object.fromEntries(page.map((r) => [r.expense.id, r.version]));
  return { status: 200, body: { expenses: page.map((r) => r.expense), versions, next } };
}

async function health(c: Context): Promise<Reply> {
  const shard = await c.db.shard();
  // Up means writes can succeed: a shard out of disk is not up.
  if (c.db.outOfDisk()) return { status: 503, body: { status: 'out of disk space: writes fail, reads work', shard, logLinesDropped } };
  return { status: 200, body: { status: 'ok', shard, logLinesDropped } };
}

function notFound(id: string): never {
  throw new HttpError(404, `no expense with id ${JSON.stringify(id)}`);
}

// ---------------------------------------------------------------------------
// Where an id lives (api/cluster-map.ts, rules 1-3).

/**
 * This shard's part in an id's placement: its owner; while a reshard moves
 * it, its old owner (source) or its new owner (target, or asked when the old
 * owner sent the request). Throws the 421 for a shard that is neither.
 */
type Part = 'owner' | 'source' | 'target' | 'asked';
type Here = { part: Part; at: Placement };

function placeOf(c: Context, id: string): Here {
  const { held } = c;
  if (held.place === undefined) return { part: 'owner', at: { owner: { name: '', shard: held.shard } } }; // rule 1
  const at = held.place(id);
  const mine = (node?: MapNode) => node?.shard === held.shard;
  if (at.target === undefined && mine(at.owner)) return { part: 'owner', at }; // rule 2
  if (at.target === undefined) throw misdirected(c, at.owner, id);
  if (mine(at.owner)) return { part: 'source', at }; // rule 3a
  if (!mine(at.target)) throw misdirected(c, at.owner, id);
  // Rule 3b: only the old owner's own word, for this id and this epoch, makes the request an asked one.
  const sent = c.req.headers.asking;
  return { part: typeof sent === 'string' && sameSecret(sent, askingWord(c, id)) ? 'asked' : 'target', at };
}

/**
 * What an old owner gives a client for an id it does not hold (rule 3a), and
 * what the new owner takes as proof that the old one sent the request (rule
 * 3b). It names the epoch, so that an answer from another epoch is not taken
 * for one from this one; where the cluster has a secret, it carries a MAC of
 * the id and the epoch under it, so that no client can make it up.
 */
function askingWord(c: Context, id: string): string {
  const epoch = String(c.held.map!.epoch);
  if (c.secret === undefined) return epoch;
  return `${epoch}.${createHmac('sha256', c.secret).update(`${epoch}:${id}`).digest('hex').slice(0, 32)}`;
}

/** The answer for an id with no live record here, by this shard's part in its placement. */
function notHere(c: Context, { part, at }: Here, id: string, row: Row | undefined): never {
  if (part === 'source') throw ask(c, at, id); // rule 3a
  if (part === 'target') throw misdirected(c, at.owner, id); // rule 3b: the old owner decides
  if (row !== undefined) throw inTransit(id); // rule 4: neither side serves it mid-move
  notFound(id);
}

/** 421 (rule 2): the id lives elsewhere; here is where, and the map that says so. */
function misdirected(c: Context, owner: MapNode, id: string): HttpError {
  const map = c.held.map!;
  return new HttpError(421, `${JSON.stringify(id)} belongs to ${owner.name} under the cluster map at epoch ${map.epoch}, not to this shard`, {}, { owner: owner.name, epoch: map.epoch, map });
}

/** 421 with asking (rule 3a): the id is moving to its new owner, and is not here; ask there, naming this epoch. */
function ask(c: Context, at: Placement, id: string): HttpError {
  const map = c.held.map!;
  const asking = askingWord(c, id);
  const message = `${JSON.stringify(id)} is moving to ${at.target!.name} and is not here: send the request there with the header Asking: ${asking}`;
  return new HttpError(421, message, {}, { owner: at.target!.name, asking, epoch: map.epoch, map });
}

function inTransit(id: string): HttpError {
  const message = `the expense ${JSON.stringify(id)} is being moved between shards at this moment; try again shortly`;
  return new HttpError(503, message, { 'Retry-After': '1' }, { moving: true });
}

// ---------------------------------------------------------------------------
// The move of one record, in three steps (operator/move.ts; api/cluster-map.ts,
// rule 4). Each step is conditional on the record's version, and each may be
// sent again after a crash with the same result.

/** Step 1: the copy arrives as incoming, which no client can see; it replaces only an incoming copy. */
async function copy(c: Context): Promise<Reply> {
  const id = movable(c);
  const { ifMatch, ifNoneMatch } = preconditions(c.req);
  const replaced = Array.isArray(ifMatch) && ifMatch.length === 1 ? ifMatch[0]! : undefined;
  if ((ifNoneMatch === '*') === (ifMatch !== undefined) || (ifMatch !== undefined && replaced === undefined)) {
    throw new HttpError(428, 'a copy needs If-None-Match: * (to create) or If-Match with exactly one version (to replace that copy)');
  }
  const fields = checkFields(readJson(c), ['id', ...EDITABLE, 'status', 'decision_date', 'version'], true);
  if (fields.id !== id) throw new HttpError(400, `the id in the body (${preview(fields.id)}) is not the id in the path (${preview(id)})`);
  const { version, ...expense } = fields as Expense & { version: string };
  if (ifNoneMatch === '*') {
    // A moved row is what is left of a record that lives elsewhere now.
    await c.db.remove(id, 'moved');
    if ((await c.db.insert(expense, version, 'incoming')) !== undefined) return { status: 201, body: expense, headers: { ETag: etag(version) } };
  } else if ((await c.db.replace(expense, replaced!, 'incoming', version)) !== undefined) {
    return { status: 200, body: expense, headers: { ETag: etag(version) } };
  }
  throw stepRefused(await c.db.get(id), id);
}

/** Step 2: the old owner hands its record off, if it is still the version that was copied. */
async function handoff(c: Context): Promise<Reply> {
  const id = movable(c);
  const version = theVersion(c.req);
  if (await c.db.shift(id, version, 'live', 'moved')) return { status: 204 };
  const row = await c.db.get(id);
  if (row?.state === 'moved' && row.version === version) return { status: 204 }; // handed off before, by a run that died
  throw stepRefused(row, id);
}

/** Step 3: the copy becomes the live record, now that its original has been handed off. */
async function adopt(c: Context): Promise<Reply> {
  const id = movable(c);
  const version = theVersion(c.req);
  if (await c.db.shift(id, version, 'incoming', 'live')) return { status: 204 };
  const row = await c.db.get(id);
  if (row?.state === 'live' && row.version === version) return { status: 204 }; // adopted before, by a run that died
  throw stepRefused(row, id);
}

/** Instead of step 3, when a client deleted the original meanwhile: the copy goes too, so nothing deleted comes back. */
async function discard(c: Context): Promise<Reply> {
  const id = movable(c);
  if (await c.db.remove(id, 'incoming', [theVersion(c.req)])) return { status: 204 };
  throw stepRefused(await c.db.get(id), id);
}

/**
 * The id of a move step, which only the reshard holding this shard's epoch
 * may send (a reshard that was taken over is fenced off by its old epoch),
 * and only to one of the id's two homes.
 */
function movable(c: Context): string {
  const id = pathId(c.params);
  const map = c.held.map;
  if (map?.moving === undefined) throw new HttpError(409, 'no reshard is under way in this shard\'s cluster map, so no record moves here');
  if (c.req.headers['cluster-epoch'] !== String(map.epoch)) {
    throw new HttpError(409, `this shard is at epoch ${map.epoch}, and takes move steps only with Cluster-Epoch: ${map.epoch}`);
  }
  const { owner, target } = c.held.place!(id);
  if (owner.shard !== c.held.shard && target?.shard !== c.held.shard) throw new HttpError(409, `${JSON.stringify(id)} neither lives here nor moves here`);
  return id;
}

/** Why a move step found something else than it expected: another version (412), or nothing (404). */
function stepRefused(row: Row | undefined, id: string): HttpError {
  if (row === undefined) return new HttpError(404, `no row with id ${JSON.stringify(id)}`);
  return new HttpError(412, `the row ${JSON.stringify(id)} is ${row.state} at version ${etag(row.version)}`, { ETag: etag(row.version) }, { state: row.state });
}

/** The one version a move step names in If-Match. */
function theVersion(req: IncomingMessage): string {
  const { ifMatch } = preconditions(req);
  if (!Array.isArray(ifMatch) || ifMatch.length !== 1) throw new HttpError(428, 'a move step needs If-Match with exactly one version');
  return ifMatch[0]!;
}

// ---------------------------------------------------------------------------
// The cluster map (api/cluster-map.ts): read by anyone, changed by a reshard.

async function readMap({ held }: Context): Promise<Reply> {
  const leaseLeftMs = held.leaseUntil === undefined ? null : Math.max(0, held.leaseUntil - Date.now());
  const body = { shard: held.shard, map: held.map ?? null, leaseLeftMs };
  return { status: 200, body, headers: held.map === undefined ? {} : { ETag: `"${held.map.epoch}"` } };
}

/** Rule 5: a new map, over the epoch the caller read (If-Match: "epoch"), or the first (If-None-Match: *). */
async function writeMap(c: Context): Promise<Reply> {
  const ifMatch = c.req.headers['if-match']?.trim();
  const ifNoneMatch = c.req.headers['if-none-match']?.trim();
  const epoch = ifMatch === undefined ? undefined : /^"(\d{1,16})"$/.exec(ifMatch)?.[1];
  if ((epoch === undefined) === (ifNoneMatch !== '*')) {
    throw new HttpError(428, 'a new map needs If-Match: "<epoch>" with the epoch it replaces, or If-None-Match: * for a shard that has none');
  }
  const next = checkMap(readJson(c));
  const refusal = await c.cluster.install(next, epoch === undefined ? undefined : Number(epoch));
  const now = await c.cluster.load();
  const tag: Record<string, string> = now.map === undefined ? {} : { ETag: `"${now.map.epoch}"` };
  if (refusal === 'stale') throw new HttpError(412, `this shard's map is at ${now.map === undefined ? 'no epoch' : `epoch ${now.map.epoch}`}, not the one this request expects; read it again`, tag);
  if (refusal === 'older') throw new HttpError(409, `a map changes only to a higher epoch than ${now.map!.epoch}, or to itself (which renews the lease)`, tag);
  if (refusal === 'incoming') throw new HttpError(409, 'copies of a move are still incoming here: finish the moves before ending the reshard', tag);
  return { status: 200, body: { shard: now.shard, map: now.map }, headers: tag };
}

// ---------------------------------------------------------------------------
// Conditional requests (RFC 9110 §13): a write that goes ahead only if the
// record is still the version the client last saw, so that no one silently
// overwrites a change they have not seen.

/** The request's conditions: If-Match (these versions, or * for any), and If-None-Match as sent. */
type Conditions = { ifMatch?: string[] | '*'; ifNoneMatch?: string };

function preconditions(req: IncomingMessage): Conditions {
  const ifMatch = req.headers['if-match']?.trim();
  const ifNoneMatch = req.headers['if-none-match']?.trim();
  if (ifMatch === undefined || ifMatch === '*') return { ifMatch, ifNoneMatch };
  const versions: string[] = [];
  for (const tag of ifMatch.split(',').map((t) => t.trim())) {
    // A weak tag (W/"...") never matches under the strong comparison that writes need.
    if (/^W\/"[^"]*"$/.test(tag)) continue;
    const m = /^"([0-9a-f]{16})"$/.exec(tag);
    if (m === null) throw new HttpError(400, `If-Match must list entity tags like "0123456789abcdef", got ${preview(tag)}`);
    versions.push(m[1]!);
  }
  return { ifMatch: versions, ifNoneMatch };
}

/** If-None-Match, which here can only be * ("no record at all"). */
function star(ifNoneMatch: string): true {
  if (ifNoneMatch !== '*') throw new HttpError(400, `If-None-Match: only * is supported here, got ${preview(ifNoneMatch)}`);
  return true;
}

/**
 * Throws unless a stored record at `version` meets the conditions, taken in
 * RFC 9110's order (§13.2.2): If-Match first; then If-None-Match: *, which no
 * stored record meets.
 */
function meets(id: string, version: string, { ifMatch, ifNoneMatch }: Conditions): void {
  if (Array.isArray(ifMatch) && !ifMatch.includes(version)) throw preconditionFailed(id, version);
  if (ifNoneMatch !== undefined && star(ifNoneMatch)) throw preconditionFailed(id, version);
}

/** 412: the record is not what the request expected; here is what it is. */
function preconditionFailed(id: string, version: string | undefined): HttpError {
  if (version === undefined) return new HttpError(412, `the expense ${JSON.stringify(id)} is not what this request expects`);
  return new HttpError(412, `the expense ${JSON.stringify(id)} is at version ${etag(version)}, not the one this request expects; GET it, then send the change again`, {
    ETag: etag(version),
  });
}

// ---------------------------------------------------------------------------
// The cluster secret: the operator's routes need it, when the server has one.

/** True when the request carries the secret. */
function authorized(req: IncomingMessage, secret: string | undefined): boolean {
  return secret === undefined || sameSecret(/^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1] ?? '', secret);
}

/** Compares in constant time (of equal-length digests), so that the time taken says nothing of the secret. */
function sameSecret(sent: string, secret: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(sent), digest(secret));
}

// ---------------------------------------------------------------------------
// The one error path: every failure becomes an HttpError, and every reply is JSON.

/** An error that knows its HTTP status. Its message is safe to show the client. */
class HttpError extends Error {
  status: number;
  headers: Record<string, string>;
  more: Record<string, unknown>; // fields of the JSON answer besides "error"
  constructor(status: number, message: string, headers: Record<string, string> = {}, more: Record<string, unknown> = {}) {
    super(message);
    this.status = status;
    this.headers = headers;
    this.more = more;
  }
}

async function dispatch(shard: Shard, req: IncomingMessage): Promise<Reply> {
  // Every body is read, here and once, whether or not the route wants it: a
  // GET or DELETE may carry one, which HTTP gives no meaning.
  const body = await readBody(req);
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
      throw new HttpError(405, `${req.method} is not allowed on ${path}; use ${allow}`, { Allow: allow });
    }
    if (OPERATOR.has(handler) && !authorized(req, shard.secret)) {
      throw new HttpError(401, `${req.method} ${path} is an operator's route: send Authorization: Bearer <the cluster secret>`, { 'WWW-Authenticate': 'Bearer' });
    }
    const context = (held: Held): Context => ({ ...shard, held, req, body, params: match.slice(1), query });
    // Rule 5: a change of map is not a request under a map; it waits for them.
    if (handler === writeMap) return handler(context(await shard.cluster.load()));
    return shard.cluster.during((held) => handler(context(held)));
  }
  throw new HttpError(404, `no route for ${path}`);
}

function toReply(err: unknown, req: IncomingMessage): Reply {
  if (err instanceof Invalid) {
    return { status: 400, body: { error: err.message, ...(err.fields && { fields: err.fields }) } };
  }
  if (err instanceof HttpError) return { status: err.status, body: { error: err.message, ...err.more }, headers: err.headers };
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

/**
 * The answer when sending the real one failed (a header value that is not
 * allowed, say): a 500 if nothing was sent yet, else the connection is cut.
 * It cannot throw, so no request can end the process.
 */
function lastResort(res: ServerResponse, req: IncomingMessage, err: unknown): void {
  try {
    log(`internal error: ${req.method} ${req.url}: the answer could not be sent: ${(err as Error)?.message ?? String(err)}`, 'stderr');
    if (res.headersSent) return void res.destroy();
    res.removeHeader('Connection');
    send(res, { status: 500, body: { error: 'internal server error' } });
  } catch {
    res.destroy();
  }
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
function readJson({ req, body }: Context): unknown {
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
    text = utf8.decode(body);
  } catch {
    throw new HttpError(400, 'the body is not valid UTF-8');
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    const sentAs = json || type === '' ? '' : ` (it was sent as ${type}, and is read as JSON all the same)`;
    throw new HttpError(400, `the body is not valid JSON${sentAs}: ${(err as Error).message}`);
  }
}

/** The whole body, up to BODY_LIMIT. */
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
  const secret = readSecret(env.CLUSTER_SECRET_FILE);
  // As Redis's protected mode does: a shard that others can reach keeps its operator's routes shut.
  if (secret === undefined && !/^(127\.\d+\.\d+\.\d+|::1|localhost)$/.test(host)) {
    throw new Error(
      `HOST=${host} lets other machines reach this shard, whose operator's routes (copies, the cluster map) then need a secret.\n` +
        `  Make one, readable by you alone, and name its file:\n` +
        `    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \\n' > cluster-secret)\n` +
        `    CLUSTER_SECRET_FILE=$PWD/cluster-secret HOST=${host} node server.ts\n` +
        `  start-shards.sh makes one in data/cluster-secret. See docs/operations.md.`,
    );
  }
  return {
    host,
    port,
    secret,
    db: {
      ...(env.MYSQL_SOCKET ? { socketPath: env.MYSQL_SOCKET } : { host: env.MYSQL_HOST ?? '127.0.0.1', port: mysqlPort }),
      user: env.MYSQL_USER ?? 'root',
      password: env.MYSQL_PASSWORD ?? '',
      database: env.MYSQL_DATABASE ?? 'expenses',
    },
  };
}

// 128 bits, written as hex, at the least.
const SECRET_MIN_LENGTH = 32;

/** The cluster secret from its file (never from the command line, where ps would show it), or undefined. */
function readSecret(path: string | undefined): string | undefined {
  if (path === undefined || path === '') return undefined;
  const secret = readFileSync(path, 'utf8').trim();
  if (secret.length < SECRET_MIN_LENGTH || /\s/.test(secret)) {
    throw new Error(`the cluster secret in ${path} must be one word of at least ${SECRET_MIN_LENGTH} characters (128 bits as hex)`);
  }
  return secret;
}

async function main(): Promise<void> {
  const config = configFromEnv(process.env);
  const db = createDb(config.db);
  const server = createServer({ db, cluster: createCluster(db), secret: config.secret });
  // Stop taking connections, let requests in flight finish, then close the
  // pool. Set before listening: a signal that comes early still shuts down cleanly.
  const stop = (signal: string) => {
    log(`${signal}: shutting down`);
    // Idle keep-alive connections close now; busy ones after their response,
    // or after 10 s at most.
    server.close(() => db.close().catch((err: Error) => log(`closing the pool: ${err.message}`, 'stderr')));
    setTimeout(() => server.closeAllConnections(), 10_000).unref();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  server.listen(config.port, config.host);
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
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
