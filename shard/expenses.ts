// shard/expenses.ts: the expense API, /v1/expenses. Create, read, update,
// delete and list, each a short function over db.ts. Under a cluster map,
// each route first asks shard/placement.ts whether this shard answers for
// the id; with no map (assignment 1) the answer is always yes.

import { checkFields, EDITABLE, etag, preview, type Editable, type Expense } from '../api/expense.ts';
import type { Row } from '../db.ts';
import { HttpError, logLinesDropped, pathId, readJson, rejectBadId, type Reply } from './http.ts';
import type { Context } from './context.ts';
import { askingOf, decide, obey } from './placement.ts';
import { meets, preconditionFailed, preconditions, star, type Conditions } from './preconditions.ts';

export async function create(c: Context): Promise<Reply> {
  const { ifMatch, ifNoneMatch } = preconditions(c.req);
  // A POST only creates, so no stored version can be the one If-Match names.
  if (ifMatch !== undefined) throw new HttpError(412, 'If-Match on a POST can never hold: a POST creates a record. Send a PUT to change one');
  const onlyIfAbsent = ifNoneMatch !== undefined && star(ifNoneMatch);
  const fields = checkFields(readJson(c), ['id', ...EDITABLE], true);
  const expense: Expense = { id: fields.id!, ...(fields as Record<Editable, string>), status: 'pending', decision_date: '' };
  const request = { asking: askingOf(c.req), creates: true };
  // Where this shard would serve an id it has no row of, the insert itself
  // settles it (the primary key refuses a second row), so nothing is read first.
  if (decide(c, expense.id, undefined, request).answer === 'serve') {
    const version = await c.db.insert(expense);
    if (version !== undefined) return { status: 201, body: expense, headers: { Location: `/v1/expenses/${expense.id}`, ETag: etag(version) } };
  }
  const row = await c.db.get(expense.id);
  obey(c, expense.id, decide(c, expense.id, row?.state, request));
  // If-None-Match: * asks for exactly what a POST does anyway; a refusal then says it in those terms.
  if (onlyIfAbsent) throw preconditionFailed(expense.id, row?.version);
  throw new HttpError(409, `an expense with id ${JSON.stringify(expense.id)} already exists; PUT /v1/expenses/${expense.id} to change it`);
}

export async function read(c: Context): Promise<Reply> {
  const id = pathId(c.params);
  const row = await liveRow(c, id);
  return { status: 200, body: row.expense, headers: { ETag: etag(row.version) } };
}

// A PUT or DELETE reads the record, checks the request's conditions against
// it, and writes over exactly the version it read. So a PUT answers with the
// record and the version that it wrote, even when other writes come just
// before or after it.
export async function update(c: Context): Promise<Reply> {
  const id = pathId(c.params);
  const conditions = preconditions(c.req);
  const fields = checkFields(readJson(c), EDITABLE, false);
  if (Object.keys(fields).length === 0) throw new HttpError(400, `nothing to update: send at least one of ${EDITABLE.join(', ')}`);
  return overRead(c, id, conditions, async (row) => {
    const expense = { ...row.expense, ...fields };
    const version = await c.db.replace(expense, row.version, 'live');
    return version === undefined ? undefined : { status: 202, body: expense, headers: { ETag: etag(version) } };
  });
}

export async function remove(c: Context): Promise<Reply> {
  const id = pathId(c.params);
  const conditions = preconditions(c.req);
  return overRead(c, id, conditions, async (row) => ((await c.db.remove(id, 'live', [row.version])) ? { status: 204 } : undefined));
}

/** The live row of an id that this shard answers for; throws a 404, or placement's answer, when there is none. */
async function liveRow(c: Context, id: string): Promise<Row> {
  const row = await c.db.get(id);
  obey(c, id, decide(c, id, row?.state, { asking: askingOf(c.req) }));
  if (row === undefined) throw new HttpError(404, `no expense with id ${JSON.stringify(id)}`);
  return row;
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
function overRead(c: Context, id: string, conditions: Conditions, write: (row: Row) => Promise<Reply | undefined>): Promise<Reply> {
  return oneAtATime(id, async () => {
    for (let attempt = 0; attempt < WRITE_ATTEMPTS; attempt++) {
      const row = await liveRow(c, id);
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

export async function list(c: Context): Promise<Reply> {
  for (const name of c.query.keys()) {
    if (!['after', 'limit', 'state'].includes(name)) throw new HttpError(400, `unknown query parameter ${JSON.stringify(name)}; use after, limit and state`);
  }
  const after = c.query.get('after') ?? '';
  if (after !== '') rejectBadId(after, 'after');
  const limit = c.query.get('limit') ?? '100';
  if (!/^\d{1,4}$/.test(limit) || +limit < 1 || +limit > 1000) {
    throw new HttpError(400, `limit must be a whole number from 1 to 1000, got ${JSON.stringify(limit)}`);
  }
  // A reshard lists the copies a move left incoming here (rule 4); a forget counts those handed off (moved) to a dead node (rule 6).
  const state = c.query.get('state') ?? 'live';
  if (state !== 'live' && state !== 'incoming' && state !== 'moved') throw new HttpError(400, `state must be live, incoming or moved, got ${preview(state)}`);
  // Ask for one more than the page: if it comes back, there is a next page.
  const rows = await c.db.list(after, +limit + 1, state);
  const page = rows.slice(0, +limit);
  const next = rows.length > page.length ? page[page.length - 1]!.expense.id : null;
  // Each record's version travels beside it, as a GET carries it in the
  // ETag: the record itself keeps the assignment's ten fields.
  const versions = Object.fromEntries(page.map((r) => [r.expense.id, r.version]));
  return { status: 200, body: { expenses: page.map((r) => r.expense), versions, next } };
}

export async function health(c: Context): Promise<Reply> {
  const shard = await c.db.shard();
  // Up means writes can succeed: a shard out of disk is not up. A standby is up as a standby.
  const status = c.db.outOfDisk() ? 'out of disk space: writes fail, reads work' : 'ok';
  return { status: status === 'ok' ? 200 : 503, body: { status, shard, role: c.held.writable ? 'primary' : 'standby', logLinesDropped: logLinesDropped() } };
}
