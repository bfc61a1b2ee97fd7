// operator/reshard.ts: change the cluster's shape (its nodes, or its replicas),
// moving the records whose owner changes, and only those.
//
// The cluster map on the shards (api/cluster-map.ts) is the reshard's lock and
// its record, so any machine can see it, finish it or reverse it:
//
//   1. READ every node's map and identity (operator/plan.ts). The map with
//      the highest epoch is the cluster's; --from, if given, must agree.
//   2. DECIDE: start a reshard; finish or reverse one whose operator is gone
//      (its lease ran out on every node, or its process on this machine
//      died); or refuse, naming the operator of one that runs.
//   3. TAKE the cluster: the map "moving to the new ring", at the next epoch,
//      onto every node by the one installer (operator/maps.ts), the lock
//      node first (rule 10): of two operators, exactly one passes it. From
//      here the lease is renewed until the end (operator/lease.ts, rule 11).
//   4. MOVE: first count, and print the plan; then walk every node
//      (operator/walk.ts), finishing the moves a dead run left incoming, and
//      moving each record not on its new owner (operator/move.ts). Audits walk
//      again until one finds everything in place.
//   5. END: the new map, at the next epoch again, onto every node: the lock
//      node, then the removed ones, so that a kept node that has it proves
//      all those did.
//
// A kill at any instant leaves the cluster consistent (the shards keep the
// invariant at every step), and the same command, from any machine, goes on.
//
// A failover during a reshard joins it (rule 12): its map is this reshard's
// at the next epoch with one node at a new address. The reshard meets that
// epoch when it renews its lease (a 412), or when its end loses the lock
// node, and ADOPTS it: from then on its lease, its move steps (their
// Cluster-Epoch) and its end are at the new epoch and addresses; a move that
// met the change half-way is finished by the next audit, as after a kill. Any
// other newer map means another operator took the reshard over, and this run
// stops (exit 1); the same command then finishes or reverses it.
//
// With --forget NODE, a node that is gone for good leaves the map first, with
// an account of what was lost (operator/forget.ts, rule 6).

import { describeMap, everyNode, placer, type ClusterMap } from '../api/cluster-map.ts';
import { newest, type Said } from '../client/cluster.ts';
import { problem, reconsider } from '../client/http.ts';
import { plural } from '../api/words.ts';
import { check } from './check.ts';
import { account } from './forget.ts';
import { renewLease, sameReshard, type Lease } from './lease.ts';
import { install, lockNode, putMap, whereIn } from './maps.ts';
import { carried, decide, namedIn, readCluster, type ReshardOptions } from './plan.ts';
import { isClean, total, walk } from './walk.ts';
import { printProblems, report, uncounted } from './walk-report.ts';

export type { ReshardOptions } from './plan.ts';
// ch_client.ts finds both operator commands of the reshard's family here.
export { check } from './check.ts';

// Audits after the move. Each one that still finds records out of place
// moves them; one that finds none ends the reshard.
const AUDITS = 3;
// How often an end that lost the lock node to a failover adopts its map and tries again (rule 12).
const END_TRIES = 3;

/** Changes the cluster to the ring of `o.to`. Resolves to the exit code. */
export async function reshard(o: ReshardOptions): Promise<number> {
  // 1. Read.
  const said = await readCluster([...new Set([...o.seeds, ...(o.from ?? []), ...o.to])]);
  // 2. Decide.
  const plan = decide(o, said, newest(said));
  if (typeof plan === 'string') {
    console.error(plan);
    return 1;
  }
  if (plan.forget !== undefined) return forgetFirst(plan.map, plan.forget, said, o);
  if (plan.next === undefined) return repair(plan.map, said, o);
  // A reshard whose node died: what forgetting it loses is counted before the end forgets the moved rows.
  const loss = plan.forgets === undefined ? [] : await account(plan.map, plan.forgets);
  if (o.dryRun) {
    for (const line of loss) console.log(line);
    report(await walk(plan.next, undefined), plan.next, 'plan');
    return 0;
  }

  // 3. Take the cluster.
  if (plan.takeover !== undefined) console.log(plan.takeover);
  const taken = await take(plan.map, plan.next, said, o.secret);
  if (taken !== undefined) {
    console.error(taken);
    return 1;
  }
  for (const line of loss) console.log(line);
  const lease = renewLease(plan.next, o.secret);
  try {
    // 4. Move.
    const moved = { count: 0 };
    if (!(await moveAndAudit(o, lease, moved))) {
      if (lease.lost() !== undefined) console.error(await takenOver(said, plan.next, lease.lost()!, `this run moved ${plural(moved.count, 'record')} before that`));
      return 1;
    }
    // 5. End, with a whole lease ahead, so that no takeover can meet this end half-way.
    await reconsider();
    await lease.renew();
    lease.stop();
    if (lease.lost() !== undefined) {
      console.error(await takenOver(said, plan.next, lease.lost()!, `this run moved ${plural(moved.count, 'record')} before that, and put no end map anywhere`));
      return 1;
    }
    return (await end(lease, said, o.secret)) ? 0 : 1;
  } finally {
    lease.stop();
    lease.report();
  }
}

/** Step 4: the plan first, then the move with its progress; true when an audit found every record on its owner. */
async function moveAndAudit(o: ReshardOptions, lease: Lease, moved: { count: number }): Promise<boolean> {
  // Counted by arc, each node its own: listing every record costs more than moving a quarter of
  // them (docs/performance.md). A run that died may have left copies whose originals are handed
  // off, live nowhere: only listing every record counts those, so a rerun that finds copies does.
  let counted = await walk(lease.map(), undefined, { byArc: true });
  if (counted.halfMoved > 0) counted = await walk(lease.map(), undefined);
  report(counted, lease.map(), 'reshard');
  // Each move step reads the epoch and the addresses when it is sent: a map adopted meanwhile applies at once.
  const auth = { secret: o.secret, get epoch() { return lease.map().epoch; }, get where() { return whereIn(lease.map()); }, get place() { return placer(lease.map()); } };
  const first = await walk(lease.map(), auth, { expected: counted.records });
  moved.count += first.moved;
  const meanwhile = first.deletedMeanwhile > 0 ? `, deleted by clients meanwhile ${first.deletedMeanwhile}` : '';
  console.log(`  moved ${first.moved}, left in place ${first.records - total(first.misplaced)}${meanwhile}, conflicts ${first.conflicts.size}, failed ${first.failed.size}`);
  const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  console.log(`  listing what moves took ${s(first.listingMs)}, moving it ${s(first.movingMs)}, of which giving way to clients ${s(first.throttledMs)}`);
  printProblems(first, o.verbose);
  for (let audit = 1; audit <= AUDITS && !lease.lost(); audit++) {
    await reconsider(); // the reshard's own give-up policy: a node given up in one walk may answer in the next
    const last = await walk(lease.map(), auth);
    moved.count += last.moved;
    const out = total(last.misplaced);
    console.log(`audit ${audit}: ${last.records} records on ${last.nodes} nodes, ${out} out of place${out > 0 ? `, moved ${last.moved}` : ''}${uncounted(last)}`);
    if (isClean(last)) return true;
    printProblems(last, o.verbose);
  }
  // A run taken over says so at its end (takenOver), with what it moved and where the cluster is now.
  if (lease.lost() === undefined) console.error('reshard incomplete: fix the above and run the same command again; until then the cluster map keeps the reshard on record');
  return false;
}

/** Every node this run knows of: those it read, and those any map read names. */
const known = (said: Map<string, Said>, ...maps: ClusterMap[]) => [...new Set([...said.keys(), ...namedIn(said), ...maps.flatMap((m) => everyNode(m).map((n) => n.name))])];

/**
 * Nothing to move: the cluster's map onto every node that lacks it (a run
 * killed during its end, a node restarted behind, a stored map that cannot be
 * read, or no map yet), then check.
 */
async function repair(map: ClusterMap, said: Map<string, Said>, o: ReshardOptions): Promise<number> {
  console.log(`nothing to move: the cluster is at ${describeMap(map)}`);
  const put: string[] = [];
  const first = newest(said) === undefined;
  const done = await install(map, first ? undefined : map, { secret: o.secret, also: known(said), put });
  for (const [node, a] of said) {
    if ('broken' in a && a.broken !== undefined && put.some((p) => p.startsWith(`${node} `))) console.log(`${node}: its stored map (epoch ${a.broken.epoch}) could not be read (${a.broken.problem}); put the cluster's map back`);
  }
  if (put.length > 0 && first) console.log(`gave the cluster its first map: ${put.join(', ')} now hold it, at epoch ${map.epoch}`);
  else if (put.length > 0) console.log(`finished the end of an earlier reshard: ${put.join(', ')} now hold the cluster's map at epoch ${map.epoch}`);
  else if (done.ok) console.log(`every node already held the cluster's map at epoch ${map.epoch}`);
  if (!done.ok) console.error(`could not put the cluster's map on every node: ${done.why}. Run the same command again once it answers.`);
  console.log('Checking that every record is on its owner:');
  return (await check([...said.keys()], undefined, o.secret)) === 0 && done.ok ? 0 : 1;
}

/** Forgets nodes with no reshard under way, then goes on as a plain reshard to --to would. */
async function forgetFirst(map: ClusterMap, forget: ClusterMap, said: Map<string, Said>, o: ReshardOptions): Promise<number> {
  const forgets = everyNode(map).filter((n) => !everyNode(forget).some((m) => m.name === n.name)).map((n) => n.name);
  for (const line of await account(map, forgets)) console.log(line);
  if (o.dryRun) {
    console.log(`dry run: nothing was changed; without --dry-run the cluster goes to ${describeMap(forget)}, then to --to`);
    return 0;
  }
  const done = await install(forget, map, { secret: o.secret, also: known(said) });
  if (!done.ok) {
    console.error(`could not forget ${forgets.join(', ')}: ${done.why}. ${done.passed ? 'The forget is on record on some nodes; run the same command again to finish it.' : 'Nothing was changed; run the same command again.'}`);
    return 1;
  }
  console.log(`forgot ${forgets.join(', ')}: the cluster is at ${describeMap(forget)}`);
  return reshard({ ...o, forget: undefined });
}

/**
 * Step 3: the moving map onto every node of both rings. Undefined when taken,
 * or why not; a take that fails after the lock node puts the map it replaced
 * back, at a higher epoch still, since nothing has moved yet.
 */
async function take(map: ClusterMap, next: ClusterMap, said: Map<string, Said>, secret: string | undefined): Promise<string | undefined> {
  // Each node must take the secret: asked with an epoch no node has, it says 412, or 401 to a wrong secret.
  for (const node of everyNode(next).map((n) => n.name)) {
    const res = await putMap(node, next, 0, secret).catch((err: Error) => err);
    if (res instanceof Error) return `refusing: ${node} cannot be reached to take this reshard's map (${res.message}). Nothing was changed.`;
    if (res.status !== 412) return `refusing: ${node} will not take this reshard's map (${problem(res)}). Nothing was changed.`;
  }
  const over = map.epoch === 0 ? undefined : map;
  const [put, newer] = [[] as string[], [] as Array<{ node: string; map: ClusterMap }>];
  const done = await install(next, over, { secret, put, newer });
  // A node past the lock node holds a newer map that is not this reshard's with an address changed (rule 12): this run stood still, and was taken over.
  const other = newer.find((n) => !sameReshard(next, n.map));
  if (other !== undefined) {
    const now = newest(await readCluster(known(said, next))) ?? other.map;
    return takenOverNow(now, next, `${other.node} is at epoch ${other.map.epoch}; this run had put it on ${plural(put.length, 'node')} of ${everyNode(next).length}, and moved no record`);
  }
  if (done.ok) return undefined;
  const lock = lockNode(over, next);
  if (!done.passed) {
    const m = done.now?.moving;
    if (done.now === undefined) return `refusing: the lock node ${lock} did not take this reshard's map (${done.why}). Nothing was changed.`;
    const holder = m === undefined ? 'another operator changed the cluster map' : `pid ${m.by.pid} on ${m.by.host}, started ${m.by.started}, is moving the cluster to ${m.nodes.map((n) => n.name).join(',')}`;
    return `refusing: ${holder} (${lock} is at epoch ${done.now.epoch}). Nothing was changed.`;
  }
  if (over === undefined) return `could not put the reshard's map on ${done.node}: ${done.why}. Nothing has moved; the reshard is on record on ${lock}. Run the same command again.`;
  const back = await install({ ...map, epoch: next.epoch + 1 }, next, { secret });
  const how = back.ok ? `the nodes before it are back at the map they had (epoch ${next.epoch + 1})` : `the map stays on the nodes before it (${back.why})`;
  return `could not put the reshard's map on ${done.node}: ${done.why}. Nothing has moved; ${how}. Run the same command again.`;
}

/**
 * Step 5: the end map onto every node, the removed ones right after the lock
 * node. An end that loses the lock node to a failover's map (rule 12) adopts
 * it and ends over it. True when every node has the end map.
 */
async function end(lease: Lease, said: Map<string, Said>, secret: string | undefined): Promise<boolean> {
  for (let tries = 1; ; tries++) {
    const now = lease.map();
    const map: ClusterMap = { epoch: now.epoch + 1, nodes: now.moving!.nodes, replicas: now.moving!.replicas, ...carried(now) };
    const kept = new Set(map.nodes.map((n) => n.name));
    const all = known(said, now);
    const done = await install(map, now, { secret, first: all.filter((n) => !kept.has(n)), also: all });
    if (done.ok) {
      console.log(`the cluster is at ${describeMap(map)}`);
      return true;
    }
    if (!done.passed && tries < END_TRIES && lease.adopt(done.now ?? newest(await readCluster(all)))) continue;
    const how = done.passed ? `the end map is on ${lockNode(now, map)}, and the nodes behind it get it from the same command run again` : 'no node has the end map; the reshard stays on record';
    console.error(`could not end the reshard: ${done.why}. Every record is on its new owner; ${how}. Run the same command again once it answers.`);
    return false;
  }
}

/**
 * What an operator whose lease lapsed, and that was taken over, says: that
 * it was, what this run did, and what the cluster is at now. Never "nothing
 * has moved": the operator that took over may have moved every record.
 */
async function takenOver(said: Map<string, Said>, mine: ClusterMap, why: string, did: string): Promise<string> {
  return takenOverNow(newest(await readCluster(known(said, mine))) ?? mine, mine, `${why}; ${did}`);
}

function takenOverNow(now: ClusterMap, mine: ClusterMap, what: string): string {
  const by = now.moving === undefined ? '' : `, under way by pid ${now.moving.by.pid} on ${now.moving.by.host}, started ${now.moving.by.started}`;
  const nodes = everyNode(now).map((n) => n.name).join(',');
  return (
    `this reshard (epoch ${mine.epoch}) was taken over: its lease lapsed while it stood still, and another operator went on with the cluster. ${what}.\n` +
    `  The cluster is at ${describeMap(now)}${by}; records that reshard moved are on their new owners, and nothing of this run is left to undo.\n` +
    `  To see where every record is: node ch_client.ts check --nodes ${nodes}`
  );
}
