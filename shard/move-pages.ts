// shard/move-pages.ts: a shard's half of moving records a page at a time: the
// three steps of shard/move-steps.ts, each over many records in one request
// and one statement (shard/move-rows.ts), and the listing of what must move.
// Each record in a page is changed only in the state and at the version the
// page names for it, exactly as its one-record step would change it, so every
// guarantee of those steps holds per record (api/cluster-map.ts, rule 4); a
// step sent again after a crash answers the same. operator/move.ts sends them.
//
// Step 1 is asked of the OLD owner, which sends its records to the new owner
// itself (sendPage): a page's records cross from one shard to the other, not
// through the operator, which names them by id and hears their versions.

import { movesAway, othersArcs, type Arc } from '../api/arcs.ts';
import { addressOf, everyNode } from '../api/cluster-map.ts';
import { checkFields, EDITABLE, etag, isId, preview, type Expense, type Versioned } from '../api/expense.ts';
import { hostOf, sign } from '../api/signing.ts';
import type { Found } from './move-rows.ts';
import { HashRing } from '../ring.ts';
import type { Context, Route } from './context.ts';
import { HttpError, readJson, type Reply } from './http.ts';
import { movableHere, type Step } from './move-steps.ts';

/** The most records a step's page carries (its body is read up to MOVE_BODY_LIMIT, shard/http.ts). */
export const PAGE_MAX = 1000;
/** The most records a page of the listing carries: an unthrottled walk cuts one into several pages of moves, in flight at once. */
export const LIST_MAX = 4000;

// The most bytes of copies one PUT carries: under what a shard reads for a move step (MOVE_BODY_LIMIT, shard/http.ts).
const COPY_BYTES = 900_000;
// How long after a send's deadline the old owner still waits for the new owner's answer: the new owner
// takes no copy after the deadline, so one that has not answered by now never will. Under the operator's
// own timeout (client/http.ts, operator/move.ts), so that the operator hears which node did not answer,
// and gives that one up after a few.
const GRACE_MS = 1_000;
// The most a send may take here, whatever deadline it names: an operator whose clock is ahead of the
// shards' would otherwise let a copy land after it gave up (operator/move.ts gives its sends as much).
const SEND_MS = 8_000;

/**
 * Step 1 over a page, on the OLD owner: its live records of these ids go to
 * their new owner `to` (PUT /v1/moves/copy there, signed for that node), as
 * they are now. Answers what the new owner answered, each copy with the
 * version it arrived at, and the ids not live here any more (a client
 * deleted them since the operator listed them: nothing to move). Nothing
 * lands after the operator's deadline, when it gives up on this request, nor
 * more than SEND_MS after it came (tooLate).
 */
export async function sendPage(c: Context): Promise<Reply> {
  const received = Date.now();
  // The page first: a reshard that was taken over hears 409 for its epoch, whatever else it sent.
  const page = records(c, 'send', idOnly);
  const { to, deadline } = readJson(c) as { to?: unknown; deadline?: unknown };
  if (typeof to !== 'string' || c.held.map!.moving!.nodes.find((n) => n.name === to) === undefined) {
    throw new HttpError(400, `the body must name in "to" a node of the ring this reshard moves to, got ${preview(to)}`);
  }
  if (!Number.isSafeInteger(deadline)) throw new HttpError(400, `the body must give in "deadline" the time, in ms since 1970, after which no copy may land, got ${preview(deadline)}`);
  for (const { expense: { id } } of page) {
    if (c.held.place!(id).target?.name !== to) throw new HttpError(409, `${JSON.stringify(id)} does not move to ${to} in this reshard`);
  }
  const until = Math.min(deadline as number, received + SEND_MS);
  tooLate(until, 'send');
  const ids = page.map((r) => r.expense.id);
  const live = await c.moves.live(ids);
  const versions = new Map(live.map((r) => [r.expense.id, r.version]));
  const body = { copied: [] as Array<{ id: string; version: string }>, conflict: [] as string[], refused: {} as Record<string, string>, gone: ids.filter((id) => !versions.has(id)) };
  for (const part of pieces(live, until)) {
    if (Date.now() > until) {
      throw new HttpError(503, `the deadline passed with ${body.copied.length} of ${live.length} copies incoming on ${to}, which the next walk finishes; the rest were not sent. Run the reshard again`);
    }
    const answer = await putCopies(c, to, part, until);
    body.copied.push(...answer.copied.map((id) => ({ id, version: versions.get(id)! })));
    body.conflict.push(...answer.conflict);
    Object.assign(body.refused, answer.refused);
  }
  return { status: 200, body };
}

/** Copies cut into PUTs of at most COPY_BYTES: a page of large records does not fit one body. */
function pieces(live: Versioned[], deadline: number): string[] {
  const body = JSON.stringify({ deadline, records: live.map((r) => ({ ...r.expense, version: r.version })) });
  if (live.length <= 1 || Buffer.byteLength(body) <= COPY_BYTES) return live.length === 0 ? [] : [body];
  const half = live.length >> 1;
  return [...pieces(live.slice(0, half), deadline), ...pieces(live.slice(half), deadline)];
}

/**
 * Refuses a step 1 that arrives after its deadline. Its sender has given up
 * on it, and may since have sent the record again, newer: a copy landing now
 * would replace the newer one, or bring back one a client deleted after its
 * move (rule 4). The clocks are the shards' (NTP keeps them milliseconds apart).
 */
function tooLate(deadline: number, what: string): void {
  const late = Date.now() - deadline;
  if (late > 0) {
    throw new HttpError(409, `this ${what} came ${late} ms after its deadline by this shard's clock: it took that long to arrive, or its sender's clock is behind this one; nothing was copied. Check the clocks (NTP) and run the reshard again`);
  }
}

/** One PUT of copies to the new owner, at this shard's epoch; its answer, which must be a 200 (else 502, naming the node). */
async function putCopies(c: Context, to: string, sent: string, deadline: number): Promise<{ copied: string[]; conflict: string[]; refused: Record<string, string> }> {
  const map = c.held.map!;
  const [address, path, epoch] = [addressOf(map, to), '/v1/moves/copy', String(map.epoch)];
  const headers: Record<string, string> = { 'content-type': 'application/json', 'cluster-epoch': epoch };
  if (c.secret !== undefined) headers.authorization = sign(c.secret, { method: 'PUT', host: hostOf(address) ?? address, path, epoch, body: sent });
  let res: Response;
  let text: string;
  try {
    res = await fetch(`http://${address}${path}`, { method: 'PUT', headers, body: sent, signal: AbortSignal.timeout(Math.max(0, deadline + GRACE_MS - Date.now())) });
    text = await res.text();
  } catch (err) {
    const why = (err as Error).name === 'TimeoutError' ? 'no answer by the deadline' : String((err as { cause?: { code?: string } }).cause?.code ?? err);
    throw new HttpError(502, `${to} (at ${address}) did not take the copies: ${why}`, {}, { unreachable: to });
  }
  const answer = JSON.parse(text === '' ? 'null' : text);
  if (res.status !== 200) throw new HttpError(502, `${to} (at ${address}) refused the copies: HTTP ${res.status}${typeof answer?.error === 'string' ? `: ${answer.error}` : ''}`);
  return answer;
}

/** Step 1 over a page, on the new owner: each record arrives as incoming, unless a live row of its id is here (a conflict: left alone). */
export async function copyPage(c: Context): Promise<Reply> {
  const page = records(c, 'copy', (r) => {
    const { version, ...expense } = checkFields(r, ['id', ...EDITABLE, 'status', 'decision_date', 'version'], true) as Expense & { version: string };
    return { expense, version };
  });
  // An old owner's copies carry the deadline of the send they belong to (sendPage).
  const { deadline } = readJson(c) as { deadline?: unknown };
  if (deadline !== undefined && !Number.isSafeInteger(deadline)) throw new HttpError(400, `"deadline" must be the time, in ms since 1970, after which the copies may not land, got ${preview(deadline)}`);
  if (deadline !== undefined) tooLate(deadline as number, 'copy');
  const after = await retried(() => c.moves.copy(page));
  return answer(page, after, (r, found) => (found?.state === 'live' ? 'conflict' : found?.state === 'incoming' && found.version === r.version ? 'copied' : undefined));
}

/**
 * Step 2 over a page: each original stops being live if it is still the
 * version copied. One that changed is named, for the operator to send again.
 */
export async function handOffPage(c: Context): Promise<Reply> {
  const page = records(c, 'handoff');
  const { before, after } = await c.moves.handOff(page);
  const reply = answer(page, after, (r, found) => {
    if (found === undefined) return 'gone';
    if (found.state === 'moved' && found.version === r.version) return 'handedOff'; // now, or by a run that died
    return found.state === 'live' ? 'changed' : undefined;
  });
  // Those a run that died had handed off already: a walk counts where a record was live when it looked.
  const already = reply.body.handedOff.filter((id) => before.get(id)?.state === 'moved');
  return { status: 200, body: { ...reply.body, already } };
}

/** Step 3 over a page: each copy becomes live, its original handed off at that version. */
export async function adoptPage(c: Context): Promise<Reply> {
  const page = records(c, 'adopt');
  const after = await c.moves.adopt(page);
  return answer(page, after, (r, found) => (found?.state === 'live' && found.version === r.version ? 'adopted' : undefined));
}

/** Instead of step 3, for originals a client deleted during the move: their copies go too, so nothing deleted comes back. */
export async function discardPage(c: Context): Promise<Reply> {
  const page = records(c, 'discard');
  const after = await c.moves.discard(page);
  return answer(page, after, (_, found) => (found === undefined ? 'discarded' : undefined));
}

/**
 * The ids of the live records here whose home is another node: under the
 * ring a reshard moves to, or the map's ring when none runs. Listed by
 * position on the circle, an arc at a time, from the index alone, so the
 * cost is what must move, not what is stored; the records themselves go
 * from here to their new owner (sendPage). The first page also counts every
 * live record here.
 */
export async function misplaced(c: Context): Promise<Reply> {
  for (const name of c.query.keys()) {
    if (name !== 'after' && name !== 'limit') throw new HttpError(400, `unknown query parameter ${JSON.stringify(name)}; use after and limit`);
  }
  const map = c.held.map;
  if (map === undefined) throw new HttpError(409, 'this shard has no cluster map, so every record here is in place');
  const after = c.query.get('after') ?? '';
  // An id may hold dots; a position is 32 hex digits, and the first dot ends it.
  const [at, id] = after === '' ? ['', ''] : [after.slice(0, 32), after.slice(33)];
  if (after !== '' && (!/^[0-9a-f]{32}\.$/.test(after.slice(0, 33)) || !isId(id))) {
    throw new HttpError(400, `after must be a position and an id, "<32 hex digits>.<id>", as the last page's next, got ${preview(after)}`);
  }
  const limit = c.query.get('limit') ?? '100';
  if (!/^\d{1,4}$/.test(limit) || +limit < 1 || +limit > LIST_MAX) throw new HttpError(400, `limit must be a whole number from 1 to ${LIST_MAX}, got ${JSON.stringify(limit)}`);
  const { nodes, replicas } = map.moving ?? map;
  const me = nodes.find((n) => n.shard === c.held.shard)?.name ?? '';
  const rows = await c.moves.inArcs(othersArcs(new HashRing(nodes.map((n) => n.name), replicas), me), { at, id }, +limit + 1);
  const page = rows.slice(0, +limit);
  const last = page[page.length - 1];
  const next = rows.length > page.length ? `${last!.at}.${last!.id}` : null;
  const live = after === '' ? { live: await c.moves.liveCount() } : {};
  // The shape of /cluster/rows, with ids alone: the operator reads both one way.
  return { status: 200, body: { ...live, expenses: page.map((r) => ({ id: r.id })), versions: {}, next } };
}

/**
 * What a reshard's plan counts here, from the index, without listing an id:
 * every live record, and those whose home under the reshard's ring is another
 * node, by that node; and strays, live here though neither ring puts them
 * here (the operator then lists them, to name them).
 */
export async function counts(c: Context): Promise<Reply> {
  const map = c.held.map;
  if (map?.moving === undefined) throw new HttpError(409, 'no reshard is under way in this shard\'s cluster map, so nothing moves from here');
  const me = everyNode(map).find((n) => n.shard === c.held.shard)?.name ?? '';
  const [ring, next] = [map, map.moving].map((m) => new HashRing(m.nodes.map((n) => n.name), m.replicas));
  const away = new Map<string, Arc[]>(); // by the node they go to
  const strays: Arc[] = [];
  for (const { arc, owner, target } of movesAway(ring!, next!, me)) {
    if (owner === me) away.set(target, [...(away.get(target) ?? []), arc]);
    else strays.push(arc);
  }
  const to = Object.fromEntries(await Promise.all([...away].map(async ([node, arcs]) => [node, await c.moves.countInArcs(arcs)] as const)));
  return { status: 200, body: { live: await c.moves.liveCount(), to, strays: await c.moves.countInArcs(strays) } };
}

export const moveRoutes: Route[] = [
  [/^\/v1\/moves\/send$/, { POST: sendPage }],
  [/^\/v1\/moves\/copy$/, { PUT: copyPage, DELETE: discardPage }],
  [/^\/v1\/moves\/handoff$/, { POST: handOffPage }],
  [/^\/v1\/moves\/adopt$/, { POST: adoptPage }],
  [/^\/v1\/moves\/misplaced$/, { GET: misplaced }],
  [/^\/v1\/moves\/counts$/, { GET: counts }],
];

/** The routes that change records: the operator's alone (the cluster secret). */
export const MOVE_STEPS = [sendPage, copyPage, discardPage, handOffPage, adoptPage];

/** A page's records, `{"records": [...]}`, checked: ids each once, each may take this step here. */
function records(c: Context, step: Step, check: (r: unknown) => Versioned = idAndVersion): Versioned[] {
  const body = readJson(c) as { records?: unknown } | null;
  const list = body?.records;
  if (!Array.isArray(list) || list.length === 0 || list.length > PAGE_MAX) {
    throw new HttpError(400, `the body must be {"records": [...]} with 1 to ${PAGE_MAX} records`);
  }
  const page = list.map(check);
  const ids = page.map((r) => r.expense.id);
  if (new Set(ids).size !== ids.length) throw new HttpError(400, 'a page names each id once');
  movableHere(c, ids, step);
  return page;
}

function idOnly(r: unknown): Versioned {
  const { id } = (r ?? {}) as { id?: unknown };
  if (typeof id !== 'string' || !isId(id)) throw new HttpError(400, `each record needs an id, got ${preview(id)}`);
  return { expense: { id } as Expense, version: '' };
}

function idAndVersion(r: unknown): Versioned {
  const { id, version } = (r ?? {}) as { id?: unknown; version?: unknown };
  if (typeof id !== 'string' || !isId(id)) throw new HttpError(400, `each record needs an id, got ${preview(id)}`);
  if (typeof version !== 'string' || !/^[0-9a-f]{16}$/.test(version)) throw new HttpError(400, `${JSON.stringify(id)} needs its version, 16 hex digits, got ${preview(version)}`);
  return { expense: { id } as Expense, version };
}

type Outcome = 'copied' | 'conflict' | 'handedOff' | 'changed' | 'gone' | 'adopted' | 'discarded';

/**
 * Each id under the outcome its step gave it; one the step left alone is
 * `refused`, with what its row is instead (a step that finds something else
 * than it expected, as a one-record step's 412 or 404 says).
 */
function answer(page: Versioned[], after: Map<string, Found>, outcome: (r: Versioned, found: Found | undefined) => Outcome | undefined) {
  const body: Record<Outcome, string[]> & { refused: Record<string, string> } = { copied: [], conflict: [], handedOff: [], changed: [], gone: [], adopted: [], discarded: [], refused: {} };
  for (const r of page) {
    const found = after.get(r.expense.id);
    const o = outcome(r, found);
    if (o !== undefined) body[o].push(r.expense.id);
    else body.refused[r.expense.id] = found === undefined ? 'no row' : `${found.state} at version ${etag(found.version)}`;
  }
  return { status: 200, body };
}

/** Concurrent pages into one table may deadlock on its gaps; MySQL then undoes the statement whole, so it is sent again. */
async function retried<T>(statement: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await statement();
    } catch (err) {
      if ((err as { code?: string }).code !== 'ER_LOCK_DEADLOCK' || attempt === 3) throw err;
    }
  }
}
