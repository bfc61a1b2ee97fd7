// operator/move.ts: moving one record from its old owner to its new one while
// clients keep writing, without ever making a second live record
// (api/cluster-map.ts, rule 4). server.ts serves each step.
//
//   1. COPY the record, version and all, to the new owner, where it arrives
//      as incoming: no client can see or change it there.
//   2. HAND OFF the original on the old owner, only if it is still the
//      version that was copied. One statement makes it stop being live
//      there: this is the instant the record moves.
//   3. ADOPT the copy on the new owner: it becomes the live record.
//
// If step 2 finds the original changed, the newer version is copied over the
// incoming copy and step 2 runs again. If it finds the original gone (a
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

import { etag, sameExpense, type Versioned } from '../api/expense.ts';
import { call, problem, Unreachable, type Answer } from '../client/http.ts';

export type Moved =
  | { ok: true; deleted: boolean } // deleted: a client deleted it during the move, and it stays deleted
  | { ok: false; conflict: boolean; why: string };

/**
 * What every move step carries: the epoch of the reshard's map (it fences off
 * a reshard that was taken over), and the secret; and where each node named
 * in the map answers (rule 7 of api/cluster-map.ts).
 */
export type Credentials = { epoch: number; secret: string | undefined; where: (node: string) => string };

// Each round, a client changed the original again; a record that keeps
// changing this often is left for the next walk.
const ROUNDS = 5;

/** Moves a record listed live on `from` to `to`. */
export async function move(listed: Versioned, from: string, to: string, auth: Credentials): Promise<Moved> {
  try {
    // Step 1.
    const created = await copy(to, listed, { 'if-none-match': '*' }, auth);
    if (created.status === 201) return await finish(listed, from, to, auth);
    if (created.status !== 412) return failed(`copy to ${to} failed: ${problem(created)}`);
    if (created.body?.state === 'live') return conflict(`a different record with this id is live on ${to} too`);
    // An incoming copy of ours from a run that died: bring it up to date, and go on from there.
    const replaced = await copy(to, listed, { 'if-match': created.etag! }, auth);
    if (replaced.status !== 200) return failed(`copy to ${to} failed: ${problem(replaced)}`);
    return await finish(listed, from, to, auth);
  } catch (err) {
    return failed(reasonOf(err));
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

/** Steps 2 and 3, for a copy that is incoming on `to`: the rest of a move, or of one that a dead run left. */
export async function finish(copied: Versioned, from: string, to: string, auth: Credentials): Promise<Moved> {
  const id = copied.expense.id;
  try {
    for (let round = 0; round < ROUNDS; round++) {
      // Step 2.
      const handed = await step(from, 'POST', `/v1/expenses/${id}/handoff`, copied, auth);
      if (handed.status === 404) return await discard(copied, from, to, auth);
      if (handed.status === 204) {
        // Step 3.
        const adopted = await step(to, 'POST', `/v1/expenses/${id}/adopt`, copied, auth);
        return adopted.status === 204 ? { ok: true, deleted: false } : failed(`handed off, but adopting on ${to} failed: ${problem(adopted)}; run the reshard again`);
      }
      if (handed.status !== 412 || handed.body?.state !== 'live') return failed(`the handoff on ${from} failed: ${problem(handed)}`);

      // Changed on the old owner since it was copied: step 1 again, with the newer version over ours.
      const newer = await read(from, id, auth.where);
      if (newer === undefined) continue; // deleted just now: the next handoff says 404
      const replaced = await copy(to, newer, { 'if-match': etag(copied.version) }, auth);
      if (replaced.status !== 200) return failed(`copy of a newer version to ${to} failed: ${problem(replaced)}`);
      copied = newer;
    }
    return failed(`it changed on ${from} ${ROUNDS} times during the move; run the reshard again`);
  } catch (err) {
    return failed(reasonOf(err));
  }
}

const conflict = (why: string): Moved => ({ ok: false, conflict: true, why });
const failed = (why: string): Moved => ({ ok: false, conflict: false, why });

function headers(auth: Credentials, condition: Record<string, string>): Record<string, string> {
  return { ...condition, 'cluster-epoch': String(auth.epoch) };
}

async function copy(to: string, record: Versioned, condition: Record<string, string>, auth: Credentials): Promise<Answer> {
  const res = await call(auth.where(to), 'PUT', `/v1/expenses/${record.expense.id}/copy`, { ...record.expense, version: record.version }, headers(auth, condition), { secret: auth.secret });
  // The owner answers with what it stored: it must be the record, in canonical form.
  if (res.status < 300 && !sameExpense(res.body, record.expense)) throw new Error(`the copy on ${to} differs from the original; the original is kept`);
  return res;
}

function step(node: string, method: string, path: string, copied: Versioned, auth: Credentials): Promise<Answer> {
  return call(auth.where(node), method, path, undefined, headers(auth, { 'if-match': etag(copied.version) }), { secret: auth.secret });
}

/** The live record on a node, or undefined when it has none (gone, or mid-move). */
async function read(node: string, id: string, where: (node: string) => string): Promise<Versioned | undefined> {
  const res = await call(where(node), 'GET', `/v1/expenses/${id}`);
  if (res.status === 200 && res.etag !== undefined) return { expense: res.body, version: res.etag.slice(1, -1) };
  if (res.status === 404 || res.status === 421 || res.status === 503) return undefined;
  throw new Error(`read from ${node} failed: ${problem(res)}`);
}

/** The original was deleted during the move: the copy goes too. */
async function discard(copied: Versioned, from: string, to: string, auth: Credentials): Promise<Moved> {
  const gone = await step(to, 'DELETE', `/v1/expenses/${copied.expense.id}/copy`, copied, auth);
  if (gone.status === 204 || gone.status === 404) return { ok: true, deleted: true };
  return failed(`it was deleted on ${from} during the move, but discarding the copy on ${to} failed: ${problem(gone)}`);
}
