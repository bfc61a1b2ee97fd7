// client/reshard.ts: when the node set changes, move the records whose owner
// changed, and only those; then check that every record is on its owner.
//
// The walk lists every record on every node, a page at a time. A record on
// its owner under the new ring is never touched; every other one moves by
// client/move.ts, which loses no write made meanwhile. After the move, the
// same walk runs again as an audit: records written meanwhile by clients that
// still use the old node list are found there and moved too. The reshard
// exits 0 only when an audit finds every record on its owner.

import type { Versioned } from '../api/expense.ts';
import { HashRing } from '../ring.ts';
import { modN } from './alternatives.ts';
import { shares } from './balance.ts';
import { eachLimit, printFailures, progress } from './batch.ts';
import { call, problem } from './http.ts';
import { move } from './move.ts';
import { aliases, shardsOf } from './nodes.ts';
import { lock, readState, sameNodes, type Reshard } from './reshard-state.ts';

const PAGE = 1000;
const IN_FLIGHT = 16;
// Audits after the move. Each one that still finds records out of place
// moves them; one that finds none ends the reshard.
const AUDITS = 3;

/** What one walk over the nodes found and did. */
type Walk = {
  records: number;
  misplaced: Map<string, number>; // "holder -> owner": how many records
  movedByModN: number;
  moved: number;
  deletedMeanwhile: number;
  conflicts: Map<string, string>; // id: why
  failed: Map<string, string>; // id: why
  unlisted: Map<string, string>; // node: why its records could not be listed
};

/** Moves what the change from `from` to `to` requires. Resolves to the exit code. */
export async function reshard(o: Reshard & { dryRun: boolean; statePath: string; verbose: boolean }): Promise<number> {
  const ring = new HashRing(o.to, o.replicas);
  const everyNode = [...new Set([...o.from, ...o.to])];
  if (sameNodes(o.from, o.to)) {
    console.log('nothing to move: --from and --to name the same nodes. Checking that every record is on its owner:');
    return check(o.to, o.replicas);
  }
  const refusal = await aliasRefusal(everyNode);
  if (refusal !== undefined) {
    console.error(refusal);
    return 1;
  }
  if (o.dryRun) {
    const recorded = readState(o.statePath);
    if (recorded !== undefined) console.log(`note: ${o.statePath} records an unfinished reshard from ${recorded.from.join(',')} to ${recorded.to.join(',')}`);
    const plan = await walk(o.from, ring, o, false);
    report(plan, o, 'plan');
    return plan.unlisted.size === 0 ? 0 : 1;
  }

  const held = lock(o.statePath, o);
  if (held.tookOver !== undefined) console.log(`taking over the unfinished reshard of pid ${held.tookOver.pid} (no longer running), started ${held.tookOver.started}`);
  const first = await walk(o.from, ring, o, true);
  report(first, o, 'reshard');
  let last = first;
  let clean = false;
  for (let audit = 1; audit <= AUDITS && !clean; audit++) {
    last = await walk(everyNode, ring, o, true);
    const out = total(last.misplaced);
    clean = out === 0 && last.unlisted.size === 0 && last.failed.size === 0 && last.conflicts.size === 0;
    console.log(`audit ${audit}: ${last.records} records on ${everyNode.length} nodes, ${out} out of place${out > 0 ? `, moved ${last.moved}` : ''}`);
  }
  // The last walk is the truth: what it could not put right is still wrong.
  printProblems(last, o.verbose);
  if (!clean) {
    console.error(`reshard incomplete: fix the above and run the same command again; until then, ${o.statePath} keeps the reshard on record`);
    return 1;
  }
  held.release();
  return 0;
}

/** The audit alone, read-only: is every record on `nodes` on its owner? Resolves to the exit code. */
export async function check(nodes: string[], replicas: number): Promise<number> {
  const refusal = await aliasRefusal(nodes);
  if (refusal !== undefined) {
    console.error(refusal);
    return 1;
  }
  const found = await walk(nodes, new HashRing(nodes, replicas), { from: nodes, to: nodes, replicas }, false);
  const out = total(found.misplaced);
  console.log(`check: ${found.records} records on ${nodes.length} nodes, replicas ${replicas}: ${out} out of place`);
  for (const [route, n] of [...found.misplaced].sort()) console.log(`  on ${route.replace(' -> ', ', owned by ')}: ${n}`);
  printProblems(found, false);
  return out === 0 && found.unlisted.size === 0 ? 0 : 1;
}

/**
 * Why the reshard must not run on these names, if it must not: two names for
 * one shard would make it copy a record onto itself and then delete it.
 */
async function aliasRefusal(nodes: string[]): Promise<string | undefined> {
  const shards = await shardsOf(nodes);
  const silent = [...shards].filter(([, answer]) => 'why' in answer);
  if (silent.length > 0) {
    return `refusing: ${silent.map(([node, a]) => `${node} cannot say which shard it is (${'why' in a ? a.why : ''})`).join('; ')}. Nothing was changed.`;
  }
  const same = aliases(shards);
  if (same.length > 0) {
    return `refusing: ${same.map((group) => `${group.join(' and ')} are the same shard`).join('; ')}. Name each shard once, the same way in --from and --to. Nothing was changed.`;
  }
  return undefined;
}

/** Lists every record on `nodes` and, if `moving`, moves each one that is not on its owner under `ring`. */
async function walk(nodes: string[], ring: HashRing, o: Reshard, moving: boolean): Promise<Walk> {
  const w: Walk = { records: 0, misplaced: new Map(), movedByModN: 0, moved: 0, deletedMeanwhile: 0, conflicts: new Map(), failed: new Map(), unlisted: new Map() };
  // A record moved to a node that this walk lists later is met twice: count it once.
  const arrived = new Set<string>();
  const counter = progress(moving ? 'records walked and moved as needed' : 'records walked');
  for (const holder of nodes) {
    try {
      for await (const page of pages(holder)) {
        const out: Array<[Versioned, string]> = []; // each with its owner
        for (const record of page) {
          if (arrived.has(record.expense.id)) continue;
          w.records++;
          counter.tick();
          if (modN(record.expense.id, o.from) !== modN(record.expense.id, o.to)) w.movedByModN++;
          const owner = ring.get(record.expense.id);
          if (owner === holder) continue; // it stays: never touched
          const route = `${holder} -> ${owner}`;
          w.misplaced.set(route, (w.misplaced.get(route) ?? 0) + 1);
          out.push([record, owner]);
        }
        if (!moving) continue;
        await eachLimit(out, IN_FLIGHT, async ([record, owner]) => {
          const moved = await move(record, holder, owner);
          if (!moved.ok) (moved.conflict ? w.conflicts : w.failed).set(record.expense.id, moved.why);
          else if (moved.deleted) w.deletedMeanwhile++;
          else {
            w.moved++;
            arrived.add(record.expense.id);
          }
        });
      }
    } catch (err) {
      w.unlisted.set(holder, (err as Error).message);
    }
  }
  counter.done();
  return w;
}

/** Every record on a node with its version, a page at a time, by keyset paging. */
async function* pages(node: string): AsyncGenerator<Versioned[]> {
  let after = '';
  for (;;) {
    const res = await call(node, 'GET', `/v1/expenses?limit=${PAGE}${after === '' ? '' : `&after=${after}`}`);
    if (res.status !== 200) throw new Error(problem(res));
    yield res.body.expenses.map((expense: Versioned['expense']) => ({ expense, version: res.body.versions[expense.id] }));
    if (res.body.next === null) return;
    // Paging by id stays correct while we delete records we have already seen.
    after = res.body.next;
  }
}

/** The summary of the first walk: what moved where, against what hash mod N and the ring predict. */
function report(w: Walk, o: Reshard, what: 'plan' | 'reshard'): void {
  const toMove = total(w.misplaced);
  const pct = (n: number) => (w.records === 0 ? '0.0%' : `${((n / w.records) * 100).toFixed(1)}%`);
  console.log(`${what}: ${o.from.length} nodes -> ${o.to.length} nodes, replicas ${o.replicas}, ${w.records} records`);
  for (const [route, n] of [...w.misplaced].sort()) console.log(`  ${route}: ${n}`);
  console.log(`  to move: ${toMove} of ${w.records} (${pct(toMove)}); hash mod N would move ${w.movedByModN} (${pct(w.movedByModN)})`);
  const predicted = predictedShare(new HashRing(o.from, o.replicas), new HashRing(o.to, o.replicas));
  console.log(`  the ring predicts ${(predicted * 100).toFixed(1)}%${theory(o.from.length, o.to.length)}`);
  if (what === 'reshard') {
    const meanwhile = w.deletedMeanwhile > 0 ? `, deleted by clients meanwhile ${w.deletedMeanwhile}` : '';
    console.log(`  moved ${w.moved}, left in place ${w.records - toMove}${meanwhile}, conflicts ${w.conflicts.size}, failed ${w.failed.size}`);
  }
  if (what === 'plan') printProblems(w, false);
}

/** Prints what went wrong in a walk. */
function printProblems(w: Walk, verbose: boolean): void {
  for (const [id, why] of w.conflicts) console.error(`CONFLICT ${JSON.stringify(id)}: ${why}; both left as they are`);
  printFailures(new Map([...w.failed].map(([id, why]) => [id, `: ${why}`])), verbose);
  for (const [node, why] of w.unlisted) console.error(`FAILED to list the records on ${node}: ${why}`);
}

const total = (counts: Map<string, number>) => [...counts.values()].reduce((a, b) => a + b, 0);

/** The fraction of the circle that changes owner: the new nodes' arcs, plus the removed nodes' arcs. */
function predictedShare(oldRing: HashRing, newRing: HashRing): number {
  const oldShares = shares(oldRing);
  const newShares = shares(newRing);
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
