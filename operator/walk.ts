// operator/walk.ts: one walk over a cluster's nodes, as a reshard and check
// make it. First the plan: records are listed, a page at a time, and sorted
// into those on their owner (never touched), those that must move, and the
// copies that a run which died left half-way. Then, for a reshard, the move:
// those go by operator/move.ts, a page to each new owner at a time, from
// several nodes at once where the throttle lets (walk below). The walk counts
// what it found and did, and reports it.
//
// A check or a dry run lists every record, to count them all. A reshard lists
// on each node only the ids of the records whose home is elsewhere, by their
// position on the circle (GET /v1/moves/misplaced, shard/move-pages.ts), and
// counts the rest: its cost is what moves, not what is stored. Its plan lists
// nothing: each node counts, by arc, what goes where (GET /v1/moves/counts).

import { receives } from '../api/arcs.ts';
import { addressOf, everyNode, placer, type ClusterMap } from '../api/cluster-map.ts';
import type { Versioned } from '../api/expense.ts';
import { HashRing } from '../ring.ts';
import { modN } from '../lab/alternatives.ts';
import { eachLimit, progress, slots, type Slot } from '../client/batch.ts';
import { call, problem } from '../client/http.ts';
import { finishPage, movePage, reasonOf, type Credentials, type Moved } from './move.ts';
import { createThrottle, type Throttle } from './throttle.ts';

const PAGE = 1000;
// What must move is listed as many at a time as the throttle says (a shard lists up to
// LIST_MAX, shard/move-pages.ts): an unthrottled walk moves one listed page as several
// pages of moves at once. A count, which moves nothing, lists the most.
const COUNT_PAGE = 4000;
/** What one walk over the nodes found and did. */
export type Walk = {
  nodes: number;
  records: number;
  misplaced: Map<string, number>; // "holder -> owner": how many records
  halfMoved: number; // of those, copies a run that died left incoming
  movedByModN: number | undefined; // undefined where the walk listed only what is out of place
  moved: number;
  deletedMeanwhile: number;
  strays: Map<string, string>; // id: where it is, though neither ring puts it there
  conflicts: Map<string, string>; // id: why
  failed: Map<string, string>; // id: why
  unlisted: Map<string, string>; // node: why its records could not be listed
  listingMs: number; // spent waiting for pages of the listing
  movingMs: number; // spent moving what they held
  throttledMs: number; // of that, spent giving way to live traffic (operator/throttle.ts)
};

/** A page of one node's rows, sorted into what stays and what must move. */
// counted: records that must move, by the node they go to, counted by their holder and not listed.
type Sorted = { holder: string; live?: number; staying: string[]; movedByModN: number; out: Array<{ record: Versioned; to: string }>; counted?: Map<string, number>; incoming: Array<{ copy: Versioned; from: string }>; strays: Versioned[] };

/**
 * Walks every node of both rings. With credentials it moves what is out of
 * place (finishing first the moves a dead run left incoming); without, it
 * only counts. `expected`: how many records a walk before this one counted,
 * for its progress. `byArc`: list only what is out of place under a moving
 * map, and count the rest, as a reshard's walks do (a count without moving
 * asks for it).
 *
 * Two rounds. First the copies a dead run left incoming, node by node, before
 * any node is counted: each record finished is then live on one node only
 * when the counts are taken, and counted there. Then the live records: the
 * nodes that nothing can move onto (a reshard's sources, and those it leaves
 * alone) are walked at once, as many as the throttle lets, since no move
 * changes another's count; then the nodes that receive, one at a time, each
 * counted less what this walk moved onto it before.
 */
export async function walk(map: ClusterMap, auth: Credentials | undefined, o: { expected?: number; byArc?: boolean } = {}): Promise<Walk> {
  const { expected } = o;
  const nodes = everyNode(map).map((n) => n.name);
  const byArc = map.moving !== undefined && (o.byArc ?? auth !== undefined);
  const w: Walk = { nodes: nodes.length, records: 0, misplaced: new Map(), halfMoved: 0, movedByModN: byArc ? undefined : 0, moved: 0, deletedMeanwhile: 0, strays: new Map(), conflicts: new Map(), failed: new Map(), unlisted: new Map(), listingMs: 0, movingMs: 0, throttledMs: 0 };
  // A record moved to a node that this walk counts later is in two counts: it is taken off the second.
  const arrived = new Map<string, string>(); // id: the node it moved to
  // An id is one record, however many rows of it the walk meets: a copy a dead run left
  // incoming on one node and its original still live on another are counted once.
  const counted = new Set<string>();
  const counter = progress(auth === undefined ? 'records walked' : 'records walked and moved as needed', expected);
  const throttle = createThrottle();
  // Wall time, while nodes are walked at once: each is the time at least one node spent on it.
  const listing = stopwatch();
  const moving = stopwatch();
  const walkNode = async (holder: string, sorted: AsyncGenerator<Sorted>) => {
    if (w.unlisted.has(holder)) return; // its incoming copies could not be listed: it is not counted
    // A node's pages of moves in flight, whichever listed page they came from: the next listed
    // page's moves start as this one's end, with no pause between them. Every one has ended when
    // the node's walk does.
    const slot = slots(throttle.inFlight);
    const moves: Array<Promise<void>> = [];
    try {
      for (;;) {
        const got = await listing.time(() => sorted.next());
        if (got.done) break;
        const page = got.value;
        // A count is taken before this node's own moves out: less what this walk moved in before it.
        if (page.live !== undefined) w.records += page.live - [...arrived.values()].filter((to) => to === holder).length;
        tally(w, page, counted, byArc);
        counter.tick(page.staying.length + page.out.length + total(page.counted ?? new Map()));
        if (auth === undefined) continue;
        moves.push(moving.time(() => moveAll(w, page, auth, arrived, throttle, slot)));
        // The page after this one is taken once the one before it has moved: two listed pages at most.
        if (moves.length > 1) await moves[moves.length - 2];
      }
      await Promise.all(moves);
    } catch (err) {
      w.unlisted.set(holder, reasonOf(err));
    } finally {
      await Promise.allSettled(moves);
    }
  };
  for (const holder of nodes) await walkNode(holder, incomingPages(holder, map));
  const onto = receiving(map);
  // By arc, ids alone are listed: a record moves from its old owner to its new one, not through
  // here. A count by arc lists none: each node counts its own.
  const listed = (holder: string) => (!byArc ? listedPages(holder, map, 'live', PAGE) : auth === undefined ? countedPages(holder, map) : listedPages(holder, map, 'ids', throttle.listPage));
  await eachLimit(nodes.filter((n) => !onto.has(n)), throttle.nodes, (holder) => walkNode(holder, listed(holder)));
  for (const holder of nodes.filter((n) => onto.has(n))) await walkNode(holder, listed(holder));
  counter.done();
  w.listingMs = listing.ms();
  w.movingMs = moving.ms();
  w.throttledMs = throttle.waitedMs();
  return w;
}

/** The nodes a moving map may move records onto (api/arcs.ts); none when no reshard runs. */
function receiving(map: ClusterMap): Set<string> {
  if (map.moving === undefined) return new Set();
  const [ring, next] = [map, map.moving].map((m) => new HashRing(m.nodes.map((n) => n.name), m.replicas));
  return new Set(everyNode(map).map((n) => n.name).filter((n) => receives(ring!, next!, n)));
}

/** The copies on one node that a run which died left incoming, a page at a time, each with where its original is. */
async function* incomingPages(holder: string, map: ClusterMap): AsyncGenerator<Sorted> {
  const place = placer(map);
  for await (const copies of pages(addressOf(map, holder), 'incoming')) {
    const page: Sorted = { holder, staying: [], movedByModN: 0, out: [], incoming: [], strays: [] };
    for (const copy of copies) {
      const { owner, target } = place(copy.expense.id);
      const from = holder === target?.name ? owner.name : holder === owner.name ? target?.name : undefined;
      if (from === undefined) page.strays.push(copy);
      else page.incoming.push({ copy, from });
    }
    yield page;
  }
}

/**
 * The live records on one node, a page at a time, sorted into those that stay and those that move:
 * every one ('live'), or the ids of those out of place ('ids').
 */
async function* listedPages(holder: string, map: ClusterMap, listing: 'live' | 'ids', limit: number): AsyncGenerator<Sorted> {
  const place = placer(map);
  const byArc = listing !== 'live';
  const [from, to] = [map.nodes, map.moving?.nodes ?? map.nodes].map((nodes) => nodes.map((n) => n.name));
  // The next page is listed while this one's records move: what moves from here is before it (keyset paging).
  for await (const records of ahead(pages(addressOf(map, holder), listing, limit))) {
    const page: Sorted = { holder, live: records.live, staying: [], movedByModN: 0, out: [], incoming: [], strays: [] };
    for (const record of records) {
      // What hash mod N would move is counted only where every record is listed (a check, a dry run).
      if (!byArc && modN(record.expense.id, from!) !== modN(record.expense.id, to!)) page.movedByModN++;
      const { owner, target } = place(record.expense.id);
      const home = (target ?? owner).name;
      if (home === holder) page.staying.push(record.expense.id);
      else if (holder === owner.name) page.out.push({ record, to: home });
      else page.strays.push(record);
    }
    yield page;
  }
}

/**
 * A count by arc on one node: its own counts (GET /v1/moves/counts), as one page. Where it
 * holds strays, its listing instead, which names each of them.
 */
async function* countedPages(holder: string, map: ClusterMap): AsyncGenerator<Sorted> {
  const res = await call(addressOf(map, holder), 'GET', '/v1/moves/counts');
  if (res.status !== 200) throw new Error(problem(res));
  if (res.body.strays > 0) return yield* listedPages(holder, map, 'ids', COUNT_PAGE);
  yield { holder, live: res.body.live, staying: [], movedByModN: 0, out: [], counted: new Map(Object.entries(res.body.to)), incoming: [], strays: [] };
}

/** Wall time during which at least one of some tasks, run at once, is under way. */
function stopwatch() {
  let running = 0;
  let since = 0;
  let total = 0;
  return {
    async time<T>(task: () => Promise<T>): Promise<T> {
      if (running++ === 0) since = performance.now();
      try {
        return await task();
      } finally {
        if (--running === 0) total += performance.now() - since;
      }
    },
    ms: () => total,
  };
}

/**
 * Every row on a node (at its address) in one state, with its version, a page
 * at a time, by keyset paging; or the ids of its live rows whose home is
 * elsewhere ('ids'), the first page with the count of all its live rows.
 */
async function* pages(node: string, state: 'live' | 'incoming' | 'moved' | 'ids', limit = PAGE): AsyncGenerator<Versioned[] & { live?: number }> {
  let after = '';
  const path = state === 'ids' ? `/v1/moves/misplaced?limit=${limit}` : `/cluster/rows?state=${state}&limit=${limit}`;
  for (;;) {
    const res = await call(node, 'GET', `${path}${after === '' ? '' : `&after=${after}`}`);
    if (res.status !== 200) throw new Error(problem(res));
    const page: Versioned[] & { live?: number } = res.body.expenses.map((expense: Versioned['expense']) => ({ expense, version: res.body.versions[expense.id] }));
    page.live = res.body.live;
    yield page;
    if (res.body.next === null) return;
    // Paging by id (or position) stays correct while records we have seen move away.
    after = res.body.next;
  }
}

/** The pages of `listed`, each next one asked for as soon as the one before is handed on. */
async function* ahead<T>(listed: AsyncGenerator<T>): AsyncGenerator<T> {
  let next = listed.next();
  for (;;) {
    const got = await next;
    if (got.done) return;
    next = listed.next();
    next.catch(() => {}); // a failure is thrown where it is awaited, if it ever is
    yield got.value;
  }
}

/** The ids of one node's rows in one state: what a forget and check count where no ring looks. */
export async function idsOn(node: string, state: 'live' | 'incoming' | 'moved'): Promise<string[]> {
  const ids: string[] = [];
  for await (const page of pages(node, state)) ids.push(...page.map((r) => r.expense.id));
  return ids;
}

function tally(w: Walk, page: Sorted, counted: Set<string>, byArc: boolean): void {
  // A copy a dead run left incoming is a record on its way: counted once, where it comes from.
  // Listed by arc, a record is counted where it is live (Sorted.live), and its copy is finished before that count.
  for (const id of byArc ? [] : [...page.staying, ...page.out.map((o) => o.record.expense.id), ...page.incoming.map((i) => i.copy.expense.id)]) {
    if (counted.has(id)) continue;
    counted.add(id);
    w.records++;
  }
  w.halfMoved += page.incoming.length;
  if (w.movedByModN !== undefined) w.movedByModN += page.movedByModN;
  const routes = [...page.out.map(({ to }) => `${page.holder} -> ${to}`), ...page.incoming.map(({ from }) => `${from} -> ${page.holder}`)];
  for (const route of routes) w.misplaced.set(route, (w.misplaced.get(route) ?? 0) + 1);
  for (const [to, n] of page.counted ?? []) if (n > 0) w.misplaced.set(`${page.holder} -> ${to}`, (w.misplaced.get(`${page.holder} -> ${to}`) ?? 0) + n);
  for (const stray of page.strays) w.strays.set(stray.expense.id, `on ${page.holder}, where neither ring puts it (written there without the cluster map?): move or delete it by hand`);
}

async function moveAll(w: Walk, page: Sorted, auth: Credentials, arrived: Map<string, string>, throttle: Throttle, slot: Slot): Promise<void> {
  // A record that arrives at a node before it is counted was counted already where it came from:
  // each one moved from here, after this node's count. A copy a dead run left is finished before
  // any node is counted, and is counted where it became live.
  const count = (moved: Map<string, Moved>, to: string, countedThere: boolean) => {
    for (const [id, m] of moved) {
      if (!m.ok) (m.conflict ? w.conflicts : w.failed).set(id, m.why);
      else if (m.deleted) w.deletedMeanwhile++;
      else {
        w.moved++;
        if (countedThere && !m.before) arrived.set(id, to);
      }
    }
  };
  const finishing = batches(page.incoming, (i) => i.from, (i) => i.copy, throttle.pageRecords);
  // Pages of moves in flight from this node: at most as many as the throttle lets (slot).
  const polite = <T>(other: string, move: () => Promise<T>) => slot(() => throttle.page([auth.where(page.holder), auth.where(other)], move));
  await Promise.all(finishing.map(async ([from, copies]) => {
    count(await polite(from, () => finishPage(copies, from, page.holder, auth)), page.holder, false);
  }));
  const moving = batches(page.out, (o) => o.to, (o) => o.record.expense.id, throttle.pageRecords);
  await Promise.all(moving.map(async ([to, ids]) => {
    count(await polite(to, () => movePage(ids, page.holder, to, auth)), to, true);
  }));
}

/** What a page's items carry, grouped by the node at the other end of their move, and cut into pages of at most `most`. */
function batches<T, R>(items: T[], node: (item: T) => string, carried: (item: T) => R, most: number): Array<[string, R[]]> {
  const open = new Map<string, R[]>();
  const full: Array<[string, R[]]> = [];
  for (const item of items) {
    const at = node(item);
    const batch = open.get(at) ?? [];
    batch.push(carried(item));
    if (batch.length === most) {
      full.push([at, batch]);
      open.delete(at);
    } else open.set(at, batch);
  }
  return [...full, ...open];
}

export const total = (counts: Map<string, number>) => [...counts.values()].reduce((a, b) => a + b, 0);

export const isClean = (w: Walk) => [w.misplaced, w.strays, w.conflicts, w.failed, w.unlisted].every((m) => m.size === 0);
