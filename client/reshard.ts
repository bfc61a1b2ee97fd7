// client/reshard.ts: move records when the node set changes, and only those
// whose owner changed.
//
// Each record moves in an order that is safe at every instant:
//   1. POST it to its new owner,
//   2. read it back from there and check it is the same record,
//   3. only then DELETE it from the node that held it.
// A crash anywhere leaves the record on the old node, or on both nodes, never
// on neither. A rerun finishes the job: a 409 with an identical record at the
// new owner means the copy was already made, so the old copy can go. A 409
// with a different record is a conflict. It is reported, and both records are
// left alone.

import { mkdirSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { HashRing, position } from '../ring.ts';
import { call, eachLimit, identical, problem, progressLine } from './http.ts';
import type { Expense } from '../db.ts';

export type ReshardOptions = {
  from: string[];
  to: string[];
  replicas: number;
  dryRun: boolean;
  /** Where a reshard in progress is recorded, so that clients can read through it. */
  statePath: string;
};

type ReshardState = { from: string[]; to: string[]; replicas: number; started: string };

const PAGE = 1000;
const IN_FLIGHT = 16;

/** Walks every record of every old node and moves those whose owner changed. Resolves to the exit code. */
export async function reshard(o: ReshardOptions): Promise<number> {
  const oldRing = new HashRing(o.from, o.replicas);
  const newRing = new HashRing(o.to, o.replicas);
  const plan = new Map<string, number>(); // "from -> to": how many records
  const failed = new Map<string, string>(); // id: why
  const conflicts: string[] = [];
  let total = 0;
  let movedByModN = 0;
  let moved = 0;

  if (!o.dryRun) writeState(o.statePath, { from: o.from, to: o.to, replicas: o.replicas, started: new Date().toISOString() });
  const progress = progressLine(o.dryRun ? 'records walked' : 'records walked and moved as needed');

  for (const holder of o.from) {
    try {
      for await (const page of pages(holder)) {
        const moving: Array<[Expense, string]> = [];
        for (const record of page) {
          total++;
          progress.tick();
          if (moduloOwner(record.id, o.from) !== moduloOwner(record.id, o.to)) movedByModN++;
          const owner = newRing.get(record.id);
          if (owner === holder) continue; // it stays: never touched
          const key = `${holder} -> ${owner}`;
          plan.set(key, (plan.get(key) ?? 0) + 1);
          moving.push([record, owner]);
        }
        if (o.dryRun) continue;
        await eachLimit(moving, IN_FLIGHT, async ([record, owner]) => {
          const outcome = await move(record, holder, owner);
          if (outcome === 'moved') moved++;
          else if (outcome === 'conflict') conflicts.push(record.id);
          else failed.set(record.id, outcome);
        });
      }
    } catch (err) {
      failed.set(`(all of ${holder})`, `could not list its records: ${(err as Error).message}`);
    }
  }
  progress.done();

  // The summary: what moved where, against what hash mod N and the ring predict.
  const toMove = [...plan.values()].reduce((a, b) => a + b, 0);
  const pct = (n: number) => (total === 0 ? '0.0%' : `${((n / total) * 100).toFixed(1)}%`);
  console.log(`${o.dryRun ? 'plan' : 'reshard'}: ${o.from.length} nodes -> ${o.to.length} nodes, replicas ${o.replicas}, ${total} records`);
  for (const [route, n] of [...plan].sort()) console.log(`  ${route}: ${n}`);
  console.log(`  to move: ${toMove} of ${total} (${pct(toMove)}); hash mod N would move ${movedByModN} (${pct(movedByModN)})`);
  console.log(`  the ring predicts ${(predictedShare(oldRing, newRing) * 100).toFixed(1)}%${theory(o.from.length, o.to.length)}`);
  if (!o.dryRun) console.log(`  moved ${moved}, left in place ${total - toMove}, conflicts ${conflicts.length}, failed ${failed.size}`);
  for (const id of conflicts) console.error(`CONFLICT ${JSON.stringify(id)}: a different record with this id is already on ${newRing.get(id)}; both left as they are`);
  for (const [id, why] of failed) console.error(`FAILED ${JSON.stringify(id)}: ${why}`);
  if (o.dryRun) return failed.size === 0 ? 0 : 1;
  if (conflicts.length > 0 || failed.size > 0) {
    console.error(`reshard incomplete: fix the above and run it again; until then, reads fall back to the old nodes (${o.statePath})`);
    return 1;
  }
  rmSync(o.statePath, { force: true });
  return 0;
}

/** One record's move, in the safe order: 'moved', 'conflict', or why it failed. */
async function move(record: Expense, holder: string, owner: string): Promise<string> {
  try {
    const { status: _s, decision_date: _d, ...fields } = record;
    const posted = await call(owner, 'POST', '/v1/expenses', fields);
    if (posted.status !== 201 && posted.status !== 409) return `copy to ${owner} failed: ${problem(posted)}`;
    // Read back what the new owner now holds, whether we just wrote it or an
    // earlier, interrupted run did.
    const copy = await call(owner, 'GET', `/v1/expenses/${record.id}`);
    if (copy.status !== 200) return `read-back from ${owner} failed: ${problem(copy)}`;
    if (!identical(copy.body, record)) return posted.status === 409 ? 'conflict' : `the copy on ${owner} differs from the original; original kept`;
    const removed = await call(holder, 'DELETE', `/v1/expenses/${record.id}`);
    // 404: someone (an earlier run) deleted it already; the copy is verified either way.
    if (removed.status !== 204 && removed.status !== 404) return `copied, but the delete on ${holder} failed: ${problem(removed)}`;
    return 'moved';
  } catch (err) {
    return (err as Error).message;
  }
}

/** Every record on a node, a page at a time, by keyset paging. */
async function* pages(node: string): AsyncGenerator<Expense[]> {
  let after = '';
  for (;;) {
    const res = await call(node, 'GET', `/v1/expenses?limit=${PAGE}${after === '' ? '' : `&after=${after}`}`);
    if (res.status !== 200) throw new Error(problem(res));
    yield res.body.expenses;
    if (res.body.next === null) return;
    // Paging by id stays correct while we delete records we have already seen.
    after = res.body.next;
  }
}

/** Where `hash mod N` would put an id: the scheme consistent hashing replaces. */
function moduloOwner(id: string, nodes: string[]): string {
  return nodes[Number(BigInt(`0x${position(id)}`) % BigInt(nodes.length))]!;
}

/** The fraction of the circle that changes owner: the new nodes' arcs, plus the removed nodes' arcs. */
function predictedShare(oldRing: HashRing, newRing: HashRing): number {
  const oldShares = oldRing.shares();
  const newShares = newRing.shares();
  let share = 0;
  for (const [node, s] of newShares) if (!oldShares.has(node)) share += s;
  for (const [node, s] of oldShares) if (!newShares.has(node)) share += s;
  return share;
}

function theory(from: number, to: number): string {
  if (to === from + 1) return ` (on average 1/(n+1) = 1/${to} = ${((1 / to) * 100).toFixed(1)}%)`;
  if (to === from - 1) return ` (on average 1/n = 1/${from} = ${((1 / from) * 100).toFixed(1)}%)`;
  return '';
}

function writeState(path: string, state: ReshardState): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, JSON.stringify(state, null, 2) + '\n');
}

/** The reshard in progress, if any. */
function readState(path: string): ReshardState | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return undefined;
    throw err;
  }
  return JSON.parse(text);
}

/**
 * Reads one expense from its owner. While a reshard is in progress, a record
 * may not have moved yet: if the owner says 404, ask its owner under the
 * previous ring. Resolves to where it was found, or undefined.
 */
export async function readThrough(id: string, ring: HashRing, previous?: HashRing): Promise<{ node: string; record: Expense } | undefined> {
  for (const node of new Set([ring.get(id), previous?.get(id) ?? ring.get(id)])) {
    const res = await call(node, 'GET', `/v1/expenses/${id}`);
    if (res.status === 200) return { node, record: res.body };
    if (res.status !== 404) throw new Error(`${node}: ${problem(res)}`);
  }
  return undefined;
}

/** The previous ring, if a reshard to exactly these nodes is in progress. */
export function previousRing(statePath: string, nodes: readonly string[]): HashRing | undefined {
  const state = readState(statePath);
  if (state === undefined || state.to.join(',') !== nodes.join(',')) return undefined;
  return new HashRing(state.from, state.replicas);
}
