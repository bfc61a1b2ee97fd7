// client/move.ts: moving one record to its new owner while clients may still
// be writing to it, without losing a write.
//
// Every step is conditional on the record's version (its ETag), so a write
// that lands in between is never undone:
//
//   1. Copy the record, version and all, to its new owner, only if the owner
//      has no record with this id (If-None-Match: *).
//   2. Read the copy back and check it.
//   3. Delete the original, only if it is still the version that was copied
//      (If-Match).
//
// If step 3 finds the original changed, the newer version is copied over the
// first copy (only if that copy is untouched) and step 3 runs again. If it
// finds the original deleted, the copy is deleted too (only if untouched), so
// that nothing deleted comes back. Where both sides changed, there is no safe
// choice: that is a conflict, reported, and both records are left as they are.
//
// A crash at any instant leaves the record on the old node, or on both; a
// rerun finishes the move. While the original exists, it is the latest
// version; once it is gone, the copy is.

import { etag, sameExpense, type Versioned } from '../api/expense.ts';
import { call, problem, type Answer } from './http.ts';

export type Moved =
  | { ok: true; deleted: boolean } // deleted: a client deleted it during the move, and it stays deleted
  | { ok: false; conflict: boolean; why: string };

// Each round, a client changed the original again; a record that keeps
// changing this often is left for the next run.
const ROUNDS = 5;

export async function move(listed: Versioned, holder: string, owner: string): Promise<Moved> {
  const id = listed.expense.id;
  try {
    let copied = listed;
    const created = await copy(owner, listed, { 'if-none-match': '*' });
    // 412: the owner has this id already. With this very version it is our
    // copy from an interrupted run; anything else is another record.
    if (created.status === 412 && created.etag !== etag(listed.version)) {
      return conflict(`a different record with this id is already on ${owner}`);
    }
    if (created.status !== 201 && created.status !== 412) return failed(`copy to ${owner} failed: ${problem(created)}`);

    for (let round = 0; round < ROUNDS; round++) {
      const unverified = await verify(owner, copied);
      if (unverified !== undefined) return failed(unverified);

      const removed = await call(holder, 'DELETE', `/v1/expenses/${id}`, undefined, { 'if-match': etag(copied.version) });
      if (removed.status === 204) return { ok: true, deleted: false };
      if (removed.status === 404) return undoCopy(copied, holder, owner);
      if (removed.status !== 412) return failed(`copied, but the delete on ${holder} failed: ${problem(removed)}`);

      // Changed on the old node since it was copied: copy the newer version over ours.
      const newer = await read(holder, id);
      if (newer === undefined) continue; // deleted just now: the next DELETE says 404
      const replaced = await copy(owner, newer, { 'if-match': etag(copied.version) });
      if (replaced.status === 404 || replaced.status === 412) {
        return conflict(`it was changed on ${holder} and also on ${owner} during the move`);
      }
      if (replaced.status !== 200) return failed(`copy of a newer version to ${owner} failed: ${problem(replaced)}`);
      copied = newer;
    }
    return failed(`it changed on ${holder} ${ROUNDS} times during the move; run the reshard again`);
  } catch (err) {
    return failed((err as Error).message);
  }
}

const conflict = (why: string): Moved => ({ ok: false, conflict: true, why });
const failed = (why: string): Moved => ({ ok: false, conflict: false, why });

function copy(owner: string, record: Versioned, condition: Record<string, string>): Promise<Answer> {
  return call(owner, 'PUT', `/v1/expenses/${record.expense.id}/copy`, { ...record.expense, version: record.version }, condition);
}

async function read(node: string, id: string): Promise<Versioned | undefined> {
  const res = await call(node, 'GET', `/v1/expenses/${id}`);
  if (res.status === 404) return undefined;
  if (res.status !== 200 || res.etag === undefined) throw new Error(`read from ${node} failed: ${problem(res)}`);
  return { expense: res.body, version: res.etag.slice(1, -1) };
}

/**
 * Why the copy on the owner is not what was copied, or undefined when it is.
 * Another version there, or none, is a client's write after the copy: newer
 * than ours, and the move goes on without touching it.
 */
async function verify(owner: string, copied: Versioned): Promise<string | undefined> {
  const there = await read(owner, copied.expense.id);
  if (there === undefined || there.version !== copied.version) return undefined;
  return sameExpense(there.expense, copied.expense) ? undefined : `the copy on ${owner} differs from the original; the original is kept`;
}

/** The original was deleted during the move: delete the copy as well, unless a client has written to it since. */
async function undoCopy(copied: Versioned, holder: string, owner: string): Promise<Moved> {
  const undone = await call(owner, 'DELETE', `/v1/expenses/${copied.expense.id}`, undefined, { 'if-match': etag(copied.version) });
  if (undone.status === 204 || undone.status === 404) return { ok: true, deleted: true };
  if (undone.status === 412) return conflict(`it was deleted on ${holder} and changed on ${owner} during the move`);
  return failed(`it was deleted on ${holder} during the move, but deleting the copy on ${owner} failed: ${problem(undone)}`);
}
