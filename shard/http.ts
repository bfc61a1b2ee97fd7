// shard/http.ts: the HTTP plumbing of a shard. A request becomes a Call, a
// handler answers with a Reply or throws, and every failure takes one path:
// an HttpError (or a known database error) becomes a JSON answer. Nothing here
// knows what an expense is.

import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { writeSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { ID_RULE, Invalid, isId, preview } from '../api/expense.ts';
import { isUnavailable } from '../mysql/connections.ts';

export type Reply = { status: number; body?: unknown; headers?: Record<string, string> };
/** A request as a handler sees it: what the server gives every handler (P), and what the client sent. */
export type Call<P = {}> = P & { req: IncomingMessage; body: Buffer; params: string[]; query: URLSearchParams };
export type Handler<C> = (c: C) => Promise<Reply>;
/** A path pattern and the handler of each method it allows. */
export type Route<C> = [RegExp, Record<string, Handler<C>>];

/** An error that knows its HTTP status. Its message is safe to show the client. */
export class HttpError extends Error {
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

// ---------------------------------------------------------------------------
// Routing.

/** The handler for a request's method and path, with the path's parameters; a 404 or 405 when there is none. */
export function findRoute<H>(routes: ReadonlyArray<[RegExp, Record<string, H>]>, req: IncomingMessage): { handler: H; path: string; params: string[]; query: URLSearchParams } {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const path = q === -1 ? url : url.slice(0, q);
  const query = new URLSearchParams(q === -1 ? '' : url.slice(q + 1));
  for (const [pattern, methods] of routes) {
    const match = pattern.exec(path);
    if (match === null) continue;
    const handler = methods[req.method ?? ''] ?? (req.method === 'HEAD' ? methods.GET : undefined);
    if (handler === undefined) {
      const allow = allowed(methods).join(', ');
      throw new HttpError(405, `${req.method} is not allowed on ${path}; use ${allow}`, { Allow: allow });
    }
    return { handler, path, params: match.slice(1), query };
  }
  throw new HttpError(404, `no route for ${path}`);
}

/**
 * The methods a route allows: its own, and HEAD wherever it has GET (RFC 9110
 * §9.1). A HEAD runs the GET handler; Node's server sends the answer's head,
 * Content-Length included, and drops its body.
 */
function allowed(methods: Record<string, unknown>): string[] {
  return Object.keys(methods).flatMap((method) => (method === 'GET' ? ['GET', 'HEAD'] : [method]));
}

/** The id in a route's path, checked. */
export function pathId(params: string[]): string {
  const id = params[0]!;
  rejectBadId(id, 'the id in the path');
  return id;
}

export function rejectBadId(id: string, what: string): void {
  if (!isId(id)) throw new HttpError(400, `${what} ${ID_RULE}, got ${preview(id)}`);
}

// ---------------------------------------------------------------------------
// Reading requests.

const BODY_LIMIT = 64 * 1024;
// A reshard's page of copies (shard/move-pages.ts): up to a thousand records, signed by the operator.
const MOVE_BODY_LIMIT = 1024 * 1024;

/**
 * A POST or PUT body, parsed. It is read as JSON when it is declared as JSON,
 * and also when it is declared as nothing, text/plain or a form: the 2016
 * clients of the assignment send JSON that way, and their servers read it.
 * Any other declared type is a 415, since the client meant something else.
 */
export function readJson({ req, body }: { req: IncomingMessage; body: Buffer }): unknown {
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

/**
 * The whole body, up to BODY_LIMIT (MOVE_BODY_LIMIT for a move step). Every body is read, once, whether or not
 * the route wants it: a GET or DELETE may carry one, which HTTP gives no meaning.
 * A 413 names the request whose body was too large.
 */
export function readBody(req: IncomingMessage): Promise<Buffer> {
  // A request with neither header has no body (RFC 9112 §6.3): a GET has nothing to wait for.
  if (req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined) return NO_BODY;
  const path = req.url?.split('?')[0] ?? '';
  const limit = path.startsWith('/v1/moves/') ? MOVE_BODY_LIMIT : BODY_LIMIT;
  const tooLarge = () => new HttpError(413, `the body of ${req.method} ${path} is over ${limit} bytes, the most a shard reads`);
  if (Number(req.headers['content-length']) > limit) throw tooLarge();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) return void chunks.push(chunk);
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

const NO_BODY = Promise.resolve(Buffer.alloc(0));
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

// ---------------------------------------------------------------------------
// Answering.

/** The one error path: every failure becomes a reply, and every reply is JSON. */
export function toReply(err: unknown, req: IncomingMessage): Reply {
  if (err instanceof Invalid) {
    return { status: 400, body: { error: err.message, ...(err.fields && { fields: err.fields }) } };
  }
  if (err instanceof HttpError) return { status: err.status, body: { error: err.message, ...err.more }, headers: err.headers };
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

export const JSON_TYPE = 'application/json; charset=utf-8';

export function send(res: ServerResponse, { status, body, headers }: Reply): void {
  // Stringify before writing the head, so that a throw cannot leave half a response.
  // A string body is a page's file (page/routes.ts), sent as it is under the Content-Type its headers give.
  const text = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
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
export function lastResort(res: ServerResponse, req: IncomingMessage, err: unknown): void {
  try {
    log(`internal error: ${req.method} ${req.url}: the answer could not be sent: ${(err as Error)?.message ?? String(err)}`, 'stderr');
    if (res.headersSent) return void res.destroy();
    res.removeHeader('Connection');
    send(res, { status: 500, body: { error: 'internal server error' } });
  } catch {
    res.destroy();
  }
}

/** The answer to a request too broken to reach the router (bad syntax, huge headers, timeouts); then the connection closes. */
export function answerBroken(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (!socket.writable || err.code === 'ECONNRESET') return void socket.destroy();
  const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
  const text = JSON.stringify({ error: `${http.STATUS_CODES[status]}: the request could not be read` });
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: ${JSON_TYPE}\r\n` +
      `Content-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`,
  );
}

// ---------------------------------------------------------------------------
// The log.

let dropped = 0;

/** How many log lines could not be written (GET /healthz reports it). */
export function logLinesDropped(): number {
  return dropped;
}

/**
 * One line to the log: stdout, or stderr for errors (start-shards.sh sends
 * both to server.log). A write that fails, on a full disk say, drops the line
 * and counts it: the log must never take the server down. Synchronous, so
 * that a line is out before the process can die.
 */
export function log(line: string, to: 'stdout' | 'stderr' = 'stdout'): void {
  try {
    writeSync(to === 'stdout' ? 1 : 2, `${line}\n`);
  } catch {
    dropped++;
  }
}
