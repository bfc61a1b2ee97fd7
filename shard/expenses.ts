// shard/expenses.ts: the expense API, /v1/expenses. Create, read, update,
// delete and list, each a short function over db.ts.

import { checkFields, EDITABLE, etag, type Editable, type Expense, type Versioned } from '../api/expense.ts';
import type { Db } from '../db.ts';
import { HttpError, pathId, readJson, rejectBadId, type Call, type Reply } from './http.ts';
import { meets, preconditionFailed, preconditions, star } from './preconditions.ts';

/** What every handler here is given: the database, and the request. */
export type Api = Call<{ db: Db }>;

export async function create(c: Api): Promise<Reply> {
  const { ifMatch, ifNoneMatch } = preconditions(c.req);
  // A POST only creates, so no stored version can be the one If-Match names.
  if (ifMatch !== undefined) throw new HttpError(412, 'If-Match on a POST can never hold: a POST creates a record. Send a PUT to change one');
  const fields = checkFields(readJson(c), ['id', ...EDITABLE], true);
  const expense: Expense = { id: fields.id!, ...(fields as Record<Editable, string>), status: 'pending', decision_date: '' };
  // Nothing is read first: the primary key refuses a second record of an id.
  const version = await c.db.insert(expense);
  if (version !== undefined) return { status: 201, body: expense, headers: { Location: `/v1/expenses/${expense.id}`, ETag: etag(version) } };
  // If-None-Match: * asks for exactly what a POST does anyway; a refusal then says it in those terms.
  if (ifNoneMatch !== undefined && star(ifNoneMatch)) throw preconditionFailed(expense.id, (await c.db.get(expense.id))?.version);
  throw new HttpError(409, `an expense with id ${JSON.stringify(expense.id)} already exists; PUT /v1/expenses/${expense.id} to change it`);
}

export async function read(c: Api): Promise<Reply> {
  const row = await stored(c, pathId(c.params));
  return { status: 200, body: row.expense, headers: { ETag: etag(row.version) } };
}

// A PUT or DELETE reads the record, checks the request's conditions against
// it, and writes over exactly the version it read: a compare-and-set. So a PUT
// answers with the record and the version that it wrote.
export async function update(c: Api): Promise<Reply> {
  const id = pathId(c.params);
  const conditions = preconditions(c.req);
  const fields = checkFields(readJson(c), EDITABLE, false);
  if (Object.keys(fields).length === 0) throw new HttpError(400, `nothing to update: send at least one of ${EDITABLE.join(', ')}`);
  const row = await stored(c, id);
  meets(id, row.version, conditions);
  const expense = { ...row.expense, ...fields };
  const version = await c.db.replace(expense, row.version);
  if (version === undefined) throw changed(id);
  return { status: 202, body: expense, headers: { ETag: etag(version) } };
}

export async function remove(c: Api): Promise<Reply> {
  const id = pathId(c.params);
  const conditions = preconditions(c.req);
  const row = await stored(c, id);
  meets(id, row.version, conditions);
  if (!(await c.db.remove(id, row.version))) throw changed(id);
  return { status: 204 };
}

async function stored(c: Api, id: string): Promise<Versioned> {
  const row = await c.db.get(id);
  if (row === undefined) throw new HttpError(404, `no expense with id ${JSON.stringify(id)}`);
  return row;
}

/** Another write came between this one's read and its write, which therefore wrote nothing. */
function changed(id: string): HttpError {
  const message = `the expense ${JSON.stringify(id)} changed while this request was applied, and nothing was written; send it again`;
  return new HttpError(503, message, { 'Retry-After': '1' }, { code: 'changed' });
}

export async function list(c: Api): Promise<Reply> {
  const { after, limit } = pageAsked(c);
  // Ask for one more than the page: if it comes back, there is a next page.
  return page(await c.db.list(after, limit + 1), limit);
}

/** A list's after and limit, checked. */
export function pageAsked(c: Call): { after: string; limit: number } {
  for (const name of c.query.keys()) {
    if (name !== 'after' && name !== 'limit') throw new HttpError(400, `unknown query parameter ${JSON.stringify(name)}; use after and limit`);
  }
  const after = c.query.get('after') ?? '';
  if (after !== '') rejectBadId(after, 'after');
  const limit = c.query.get('limit') ?? '100';
  if (!/^\d{1,4}$/.test(limit) || +limit < 1 || +limit > 1000) {
    throw new HttpError(400, `limit must be a whole number from 1 to 1000, got ${JSON.stringify(limit)}`);
  }
  return { after, limit: +limit };
}

/** A page of records, each with its version beside it (a GET carries it in the ETag), and the id to go on after. */
export function page(rows: Versioned[], limit: number): Reply {
  const shown = rows.slice(0, limit);
  const next = rows.length > shown.length ? shown[shown.length - 1]!.expense.id : null;
  const versions = Object.fromEntries(shown.map((r) => [r.expense.id, r.version]));
  return { status: 200, body: { expenses: shown.map((r) => r.expense), versions, next } };
}

export async function health(c: Api): Promise<Reply> {
  await c.db.ping();
  return { status: 200, body: { status: 'ok' } };
}
