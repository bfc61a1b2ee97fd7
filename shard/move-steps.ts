// shard/move-steps.ts: a shard's half of moving one record, in three steps
// (operator/move.ts sends them; api/cluster-map.ts, rule 4). Each step is
// conditional on the record's version, and each may be sent again after a
// crash with the same result. Only the reshard holding this shard's epoch may
// send them: the epoch is its fencing token.

import type { IncomingMessage } from 'node:http';
import { checkFields, EDITABLE, etag, preview, type Expense } from '../api/expense.ts';
import type { Row } from './rows.ts';
import { HttpError, pathId, readJson, type Reply } from './http.ts';
import type { Context } from './context.ts';
import { preconditions } from './preconditions.ts';

/** Step 1: the copy arrives as incoming, which no client can see; it replaces only an incoming copy. */
export async function copy(c: Context): Promise<Reply> {
  const id = movable(c, 'copy');
  const { ifMatch, ifNoneMatch } = preconditions(c.req);
  const replaced = Array.isArray(ifMatch) && ifMatch.length === 1 ? ifMatch[0]! : undefined;
  if ((ifNoneMatch === '*') === (ifMatch !== undefined) || (ifMatch !== undefined && replaced === undefined)) {
    throw new HttpError(428, 'a copy needs If-None-Match: * (to create) or If-Match with exactly one version (to replace that copy)');
  }
  const fields = checkFields(readJson(c), ['id', ...EDITABLE, 'status', 'decision_date', 'version'], true);
  if (fields.id !== id) throw new HttpError(400, `the id in the body (${preview(fields.id)}) is not the id in the path (${preview(id)})`);
  const { version, ...expense } = fields as Expense & { version: string };
  if (ifNoneMatch === '*') {
    // A moved row (a tombstone) is what is left of a record that lives elsewhere now.
    await c.rows.remove(id, 'moved');
    if (await c.rows.insert(expense, version, 'incoming')) return { status: 201, body: expense, headers: { ETag: etag(version) } };
  } else if (await c.rows.replace(expense, version, replaced!, 'incoming')) {
    return { status: 200, body: expense, headers: { ETag: etag(version) } };
  }
  throw stepRefused(await c.rows.get(id), id);
}

/** Step 2: the old owner hands its record off, if it is still the version that was copied. */
export async function handoff(c: Context): Promise<Reply> {
  const id = movable(c, 'handoff');
  const version = theVersion(c.req);
  if (await c.rows.shift(id, version, 'live', 'moved')) return { status: 204 };
  const row = await c.rows.get(id);
  if (row?.state === 'moved' && row.version === version) return { status: 204 }; // handed off before, by a run that died
  throw stepRefused(row, id);
}

/** Step 3: the copy becomes the live record, now that its original has been handed off. */
export async function adopt(c: Context): Promise<Reply> {
  const id = movable(c, 'adopt');
  const version = theVersion(c.req);
  if (await c.rows.shift(id, version, 'incoming', 'live')) return { status: 204 };
  const row = await c.rows.get(id);
  if (row?.state === 'live' && row.version === version) return { status: 204 }; // adopted before, by a run that died
  throw stepRefused(row, id);
}

/** Instead of step 3, when a client deleted the original meanwhile: the copy goes too, so nothing deleted comes back. */
export async function discard(c: Context): Promise<Reply> {
  const id = movable(c, 'discard');
  if (await c.rows.remove(id, 'incoming', [theVersion(c.req)])) return { status: 204 };
  throw stepRefused(await c.rows.get(id), id);
}

export type Step = 'send' | 'copy' | 'handoff' | 'adopt' | 'discard';

/** The id of a one-record move step, if it may be taken here (movableHere). */
function movable(c: Context, step: Step): string {
  const id = pathId(c.params);
  movableHere(c, [id], step);
  return id;
}

/**
 * Throws unless these ids may take a move step here. Only the reshard holding
 * this shard's epoch may send one (a reshard that was taken over is fenced off
 * by its old epoch), and only to one of each id's two homes. A copy is sent
 * only by the old owner, and taken only on the new owner: it creates, and on the old owner it would delete the
 * moved row, the tombstone that sends clients on to the new one. The other
 * steps change a row only in the exact state and version they name, so they
 * are taken on either home: a reversal finishes a dead run's move in its old
 * direction, from the home that is now the target back to the one that is now
 * the owner.
 */
export function movableHere(c: Context, ids: readonly string[], step: Step): void {
  const map = c.held.map;
  if (map?.moving === undefined) throw new HttpError(409, 'no reshard is under way in this shard\'s cluster map, so no record moves here');
  if (c.req.headers['cluster-epoch'] !== String(map.epoch)) {
    throw new HttpError(409, `this shard is at epoch ${map.epoch}, and takes move steps only with Cluster-Epoch: ${map.epoch}`);
  }
  for (const id of ids) {
    const { owner, target } = c.held.place!(id);
    if (target === undefined) throw new HttpError(409, `${JSON.stringify(id)} does not move in this reshard: it stays on ${owner.name}`);
    if (step === 'send' && owner.shard !== c.held.shard) throw new HttpError(409, `${JSON.stringify(id)} is sent to its new owner only by its old owner, ${owner.name}; send it there`);
    if (step === 'copy' && target.shard !== c.held.shard) throw new HttpError(409, `a copy of ${JSON.stringify(id)} is taken only on its new owner, ${target.name}; send it there`);
    if (owner.shard !== c.held.shard && target.shard !== c.held.shard) throw new HttpError(409, `${JSON.stringify(id)} neither lives here nor moves here`);
  }
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
