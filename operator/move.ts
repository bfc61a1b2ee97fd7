// operator/move.ts: moving records from their old owner to their new one
// while clients keep writing, without ever making a second live record
// (api/cluster-map.ts, rule 4). Read it first for ONE record; a page of them
// is the same three steps, each sent once for the whole page
// (shard/move-pages.ts serves them; shard/move-steps.ts is the one-record form).
//
//   1. COPY the record, version and all, to the new owner, where it arrives
//      as incoming: no client can see or change it there.
//   2. HAND OFF the original on the old owner, only if it is still the
//      version that was copied. One statement makes it stop being live
//      there: this is the instant the record moves.
//   3. ADOPT the copy on the new owner: it becomes the live record.
//
// If step 2 finds the original changed, the old owner sends the newer version
// over the incoming copy and step 2 runs again. If it finds the original gone (a
// client deleted it), the copy is discarded, so nothing deleted comes back.
//
// A kill at any instant is safe, and the next run finishes the move:
//   - before step 1 lands: nothing has changed.
//   - between 1 and 2: the original is live and serves; the copy is unseen.
//     The next run finds the copy incoming, and resumes at step 2.
//   - between 2 and 3: no live record anywhere. The old owner sends a client
//     on to the new one (421), which answers 503 until the copy is adopted.
//     The next run finds the copy incoming; step 2 answers "done already",
//     since the old owner remembers the handoff; step 3 follows.
//   - after step 3: moved. The old owner's moved row is forgotten when the
//     reshard ends.
//
// HOW A PAGE KEEPS RULE 4. Each step over a page is one statement on one
// shard, so one transaction, and its WHERE names each record's state and
// version: it does to each record exactly what that record's one-record step
// would, and nothing to a record whose row is not as named. The hand-off's
// statement makes every original of the page stop being live at its commit;
// a record a client changed since its copy is not in the page's (id,
// version) pairs, so it stays live where it is, and its stale copy stays
// incoming, unseen: it goes round again with its newer version, alone in a
// smaller page. So at every instant each id has at most one live row; a kill
// lands before or after a statement's commit, never inside one; and what the
// kill leaves is, per record, one of the four states above, which the next
// run finishes as it would finish one record. A page widens only the window
// of step 2 to 3: the page's ids answer 503 together, for one round trip.

import type { Placement } from '../api/cluster-map.ts';
import type { Expense, Versioned } from '../api/expense.ts';
import { call, heardVia, notGivenUp, problem, TIMEOUT_MS, Unreachable, type Answer } from '../client/http.ts';

export type Moved =
  // deleted: a client deleted it during the move, and it stays deleted; before: a run that died had handed it off
  | { ok: true; deleted: boolean; before?: boolean }
  | { ok: false; conflict: boolean; why: string };

/**
 * What every move step carries: the epoch of the reshard's map (it fences off
 * a reshard that was taken over), and the secret; and where each node named
 * in the map answers (rule 7 of api/cluster-map.ts), and where it places each id.
 */
export type Credentials = { epoch: number; secret: string | undefined; where: (node: string) => string; place: (id: string) => Placement };

// Each round, a client changed the original again; a record that keeps
// changing this often is left for the next walk.
const ROUNDS = 5;

// How long before this process gives up on a send its deadline falls: more
// than the old owner's grace after it (shard/move-pages.ts), and the clocks' skew.
const DEADLINE_AHEAD_MS = 2_000;

/** Moves records listed live on `from` to `to`, by id (one record is a page of one); what became of each, by id. */
export async function movePage(listed: string[], from: string, to: string, auth: Credentials): Promise<Map<string, Moved>> {
  const result = new Map<string, Moved>();
  try {
    // Step 1. Deleted by a client since it was listed: nothing to move.
    const { copied, gone } = await copy(from, to, listed, auth, result);
    for (const id of gone) result.set(id, { ok: true, deleted: true });
    return await finishPage(copied, from, to, auth, result);
  } catch (err) {
    return failAll(listed, reasonOf(err), result);
  }
}

/**
 * Why a step failed, for the report: the message of an error that says what
 * happened (a node unreachable, a copy that differs); the stack of any other
 * (a TypeError is a defect here, and its stack is where to look).
 */
export function reasonOf(err: unknown): string {
  if (err instanceof Error && (err.constructor === Error || err instanceof Unreachable)) return err.message;
  return err instanceof Error ? (err.stack ?? String(err)) : String(err);
}

/** Steps 2 and 3, for copies that are incoming on `to`: the rest of a move, or of one that a dead run left. */
export async function finishPage(copied: Versioned[], from: string, to: string, auth: Credentials, result = new Map<string, Moved>()): Promise<Map<string, Moved>> {
  try {
    for (let round = 0; round < ROUNDS && copied.length > 0; round++) {
      // Step 2.
      const handed = await step(from, 'POST', '/v1/moves/handoff', copied, auth);
      const { handedOff, already, gone, changed, refused } = handed.body as { handedOff: string[]; already: string[]; gone: string[]; changed: string[]; refused: Record<string, string> };
      for (const [id, why] of Object.entries(refused)) result.set(id, failed(`the handoff on ${from} failed: the row is ${why}`));
      const byId = new Map(copied.map((r) => [r.expense.id, r]));
      // Step 3, and for what a client deleted meanwhile, the discard.
      await adopt(to, handedOff.map((id) => byId.get(id)!), auth, result);
      for (const id of already) if (result.get(id)?.ok) result.set(id, { ok: true, deleted: false, before: true });
      await discard(from, to, gone.map((id) => byId.get(id)!), auth, result);
      // Changed on the old owner since it was copied: step 1 again, the newer versions over the copies; deleted since, their copies go.
      // Unless `from` is where this map moves them (a reversal finishing a dead run): there the original is live at its home, and its stale copy goes.
      const place = auth.place;
      const home = changed.filter((id) => place(id).target?.name === from);
      await discard(from, to, home.map((id) => byId.get(id)!), auth, result, true);
      const send = changed.filter((id) => !home.includes(id));
      const again = send.length === 0 ? { copied: [], gone: [] } : await copy(from, to, send, auth, result);
      await discard(from, to, again.gone.map((id) => byId.get(id)!), auth, result);
      copied = again.copied;
    }
    const why = `it changed on ${from} ${ROUNDS} times during the move; run the reshard again`;
    for (const r of copied) result.set(r.expense.id, failed(why));
    return result;
  } catch (err) {
    return failAll(copied, reasonOf(err), result);
  }
}

const conflict = (why: string): Moved => ({ ok: false, conflict: true, why });
const failed = (why: string): Moved => ({ ok: false, conflict: false, why });

/** Marks every record of a page not yet settled as failed, for why. */
function failAll(page: Array<Versioned | string>, why: string, result: Map<string, Moved>): Map<string, Moved> {
  for (const r of page) {
    const id = typeof r === 'string' ? r : r.expense.id;
    if (!result.has(id)) result.set(id, failed(why));
  }
  return result;
}

/**
 * Step 1 over a page: `from` sends its live records of these ids to `to`.
 * The records now incoming on `to`, each at the version it arrived at; and
 * those `from` no longer holds live: a client deleted them.
 */
async function copy(from: string, to: string, ids: string[], auth: Credentials, result: Map<string, Moved>): Promise<{ copied: Versioned[]; gone: string[] }> {
  notGivenUp(auth.where(to));
  // No copy lands after the deadline (shard/move-pages.ts), which is before this request times out: a page
  // that failed here is sent again in a later walk, and no copy of this send can land over that one.
  const deadline = Date.now() + TIMEOUT_MS - DEADLINE_AHEAD_MS;
  const res = await call(auth.where(from), 'POST', '/v1/moves/send', { to, deadline, records: ids.map((id) => ({ id })) }, { 'cluster-epoch': String(auth.epoch) }, { secret: auth.secret });
  // The new owner's silence reaches us through the old one: it counts against the new owner, whom a walk gives up after a few.
  if (res.status === 502 && res.body?.unreachable === to) heardVia(auth.where(to), problem(res));
  if (res.status !== 200) throw new Error(`copy from ${from} to ${to} failed: ${problem(res)}`);
  const { copied, conflict: live, refused, gone } = res.body as { copied: Array<{ id: string; version: string }>; conflict: string[]; refused: Record<string, string>; gone: string[] };
  if (gone.length < ids.length) heardVia(auth.where(to), undefined); // else every id was gone, and nothing was sent there
  for (const id of live) result.set(id, conflict(`a different record with this id is live on ${to} too`));
  for (const [id, why] of Object.entries(refused)) result.set(id, failed(`copy to ${to} failed: the row is ${why}`));
  return { copied: copied.map(({ id, version }) => ({ expense: { id } as Expense, version })), gone };
}

async function adopt(to: string, page: Versioned[], auth: Credentials, result: Map<string, Moved>): Promise<void> {
  if (page.length === 0) return;
  const res = await step(to, 'POST', '/v1/moves/adopt', page, auth);
  const { adopted, refused } = res.body as { adopted: string[]; refused: Record<string, string> };
  for (const id of adopted) result.set(id, { ok: true, deleted: false });
  for (const [id, why] of Object.entries(refused)) result.set(id, failed(`handed off, but adopting on ${to} failed: the row is ${why}; run the reshard again`));
}

/** The originals were deleted during the move (or, `home`, changed where they now belong): their copies go. */
async function discard(from: string, to: string, page: Versioned[], auth: Credentials, result: Map<string, Moved>, home = false): Promise<void> {
  if (page.length === 0) return;
  const res = await step(to, 'DELETE', '/v1/moves/copy', page, auth);
  const { discarded, refused } = res.body as { discarded: string[]; refused: Record<string, string> };
  for (const id of discarded) result.set(id, { ok: true, deleted: !home });
  const what = home ? `changed on ${from}, where it now belongs,` : `deleted on ${from}`;
  for (const [id, why] of Object.entries(refused)) result.set(id, failed(`it was ${what} during the move, but discarding the copy on ${to} failed: the row is ${why}`));
}

/** A step over a page that names each record by id and version; its answer, which must be a 200. */
async function step(node: string, method: string, path: string, page: Versioned[], auth: Credentials): Promise<Answer> {
  const res = await send(node, method, path, page.map((r) => ({ id: r.expense.id, version: r.version })), auth);
  if (res.status !== 200) throw new Error(`${path.slice(path.lastIndexOf('/') + 1)} on ${node} failed: ${problem(res)}`);
  return res;
}

async function send(node: string, method: string, path: string, records: unknown[], auth: Credentials): Promise<Answer> {
  return call(auth.where(node), method, path, { records }, { 'cluster-epoch': String(auth.epoch) }, { secret: auth.secret });
}
