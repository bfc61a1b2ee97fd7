// operator/reshard.ts: change the cluster's shape (its nodes, or its replicas),
// moving the records whose owner changes, and only those.
//
// The cluster map on the shards (api/cluster-map.ts) is the reshard's lock and
// its record, so any machine can see it, finish it or reverse it:
//
//   1. READ every node's map and identity. The map with the highest epoch is
//      the cluster's; --from, if given, must agree with it.
//   2. DECIDE: start a reshard; finish or reverse one whose operator is gone
//      (its lease ran out on every node, or its process on this machine
//      died); or refuse, naming the operator of one that runs.
//   3. TAKE the cluster: the map "moving to the new ring", at the next epoch,
//      onto every node, by compare-and-set on each node's epoch, the map's
//      first node first. Of two operators, exactly one passes that node.
//      From here the lease is renewed until the end.
//   4. MOVE: walk every node (operator/walk.ts), finishing the moves a dead
//      run left incoming, and moving each record not on its new owner
//      (operator/move.ts). Audits walk again until one finds everything in place.
//   5. END: the new map, at the next epoch again, onto every node: the
//      removed ones first, so that a node that has it proves all those did.
//
// A kill at any instant leaves the cluster consistent (the shards keep the
// invariant at every step), and the same command, from any machine, goes on.
//
// A failover during a reshard (operator/failover.ts, step 4) installs the map
// at the next epoch with one node at a new address and this reshard's moving
// part kept, holder and all. The reshard meets that epoch when it renews its
// lease (a 412). It then reads the newer map: if it is this same reshard (the
// same holder, the same names and shards in both rings, the same replicas and
// forgets) and only addresses changed, it ADOPTS it: from then on its lease,
// its move steps (their Cluster-Epoch) and its end are at the new epoch, and
// at the new addresses; a move that met the change half-way is finished by
// the next audit, as after a kill. Any other newer map means another operator
// took the reshard over, and this run stops (exit 1); the same command then
// finishes or reverses it.
//
// With --forget NODE, a node that is gone for good leaves the map first, with
// an account of what was lost (operator/forget.ts, rule 6).

import { readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { addressOf, describeMap, everyNode, sameMap, signMap, type ClusterMap, type Forgot, type Holder, type MapNode } from '../api/cluster-map.ts';
import { ask, newest, sameNodes, type Said } from '../client/cluster.ts';
import { call, problem, reconsider } from '../client/http.ts';
import { plural } from '../api/words.ts';
import { account, forgetProblem, stillInMap, withoutForgotten } from './forget.ts';
import { idsOn, isClean, printProblems, report, total, walk } from './walk.ts';

// Audits after the move. Each one that still finds records out of place
// moves them; one that finds none ends the reshard.
const AUDITS = 3;

export type ReshardOptions = {
  seeds: string[];
  to: string[];
  from?: string[];
  replicas?: number;
  dryRun: boolean;
  verbose: boolean;
  secret: string | undefined;
  leaseMs: number;
  /** Nodes gone for good, to leave the map with what they held (operator/forget.ts). */
  forget?: string[];
};

/** Changes the cluster to the ring of `o.to`. Resolves to the exit code. */
export async function reshard(o: ReshardOptions): Promise<number> {
  // 1. Read.
  const said = await ask([...new Set([...o.seeds, ...(o.from ?? []), ...o.to])]);
  const known = await ask(namedIn(said).filter((node) => !said.has(node)), whereIn(newest(said)));
  for (const [node, answer] of known) said.set(node, answer);
  // 2. Decide.
  const plan = decide(o, said, newest(said));
  if (typeof plan === 'string') {
    console.error(plan);
    return 1;
  }
  if (plan.forget !== undefined) return forgetFirst(plan.map, plan.forget, said, o);
  if (plan.next === undefined) {
    console.log(`nothing to move: the cluster is at ${describeMap(plan.map)}`);
    const finished: string[] = [];
    const repaired = await endEverywhere(plan.map, said, o.secret, undefined, finished);
    // A run killed during its end (step 5) left some nodes behind: say which this run brought up to the map.
    if (finished.length > 0 && newest(said) === undefined) {
      console.log(`gave the cluster its first map: ${finished.join(', ')} now hold it, at epoch ${plan.map.epoch}`);
    } else if (finished.length > 0) {
      console.log(`finished the end of an earlier reshard: ${finished.join(', ')} now hold the cluster's map at epoch ${plan.map.epoch}`);
    } else if (repaired) {
      console.log(`every node already held the cluster's map at epoch ${plan.map.epoch}`);
    }
    console.log('Checking that every record is on its owner:');
    return (await check([...said.keys()], undefined, o.secret)) === 0 && repaired ? 0 : 1;
  }
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
    // The map this run holds now: a failover meanwhile may have moved a node's address (see the header).
    const now = lease.map();
    const end: ClusterMap = { epoch: now.epoch + 1, nodes: now.moving!.nodes, replicas: now.moving!.replicas, ...carried(now) };
    if (!(await endEverywhere(end, said, o.secret, now))) return 1;
    console.log(`the cluster is at ${describeMap(end)}`);
    return 0;
  } finally {
    lease.stop();
    lease.report();
  }
}

/** Step 4: true when an audit found every record on its owner. */
async function moveAndAudit(o: ReshardOptions, lease: Lease, moved: { count: number }): Promise<boolean> {
  // Each move step reads the epoch and the addresses when it is sent: a map adopted meanwhile applies at once.
  const auth = { secret: o.secret, get epoch() { return lease.map().epoch; }, get where() { return whereIn(lease.map()); } };
  const first = await walk(lease.map(), auth);
  moved.count += first.moved;
  report(first, lease.map(), 'reshard');
  for (let audit = 1; audit <= AUDITS && !lease.lost(); audit++) {
    await reconsider(); // the reshard's own give-up policy: a node given up in one walk may answer in the next
    const last = await walk(lease.map(), auth);
    moved.count += last.moved;
    const out = total(last.misplaced);
    console.log(`audit ${audit}: ${last.records} records on ${last.nodes} nodes, ${out} out of place${out > 0 ? `, moved ${last.moved}` : ''}`);
    if (isClean(last)) return true;
    printProblems(last, o.verbose);
  }
  // A run taken over says so at its end (takenOver), with what it moved and where the cluster is now.
  if (lease.lost() === undefined) console.error('reshard incomplete: fix the above and run the same command again; until then the cluster map keeps the reshard on record');
  return false;
}

// ---------------------------------------------------------------------------
// 1 and 2: read the cluster and decide.

/**
 * What a run does: the moving map to take (or none: nothing to move); with
 * --forget, first a map that forgets nodes with no reshard under way
 * (`forget`), or a moving map that also forgets them (`forgets`: their names).
 */
type Plan = { map: ClusterMap; next?: ClusterMap; takeover?: string; forget?: ClusterMap; forgets?: string[] };

/** The forgot list of a map, for a map built from it: every forget is carried forward (rule 6). */
const carried = (map: ClusterMap): { forgot?: Forgot[] } => (map.forgot === undefined ? {} : { forgot: map.forgot });

/** What this run does: the moving map to take (or none: nothing to move), or why it must not run. */
function decide(o: ReshardOptions, said: Map<string, Said>, current: ClusterMap | undefined): Plan | string {
  if (o.forget !== undefined) {
    const why = forgetProblem(o.forget, o.to, said, current);
    if (why !== undefined) return why;
  }
  // A node that is forgotten, or being forgotten, is not asked to say who it is: it is gone.
  const gone = new Set([...(o.forget ?? []), ...(current?.forgot ?? []).map((f) => f.name)]);
  for (const n of current === undefined ? [] : everyNode(current)) if (!(o.forget ?? []).includes(n.name)) gone.delete(n.name);
  const silent = [...said].filter(([node, a]) => 'why' in a && !gone.has(node));
  if (silent.length > 0) return `refusing: ${silent.map(([node, a]) => `${node} cannot say which shard it is (${'why' in a ? a.why : ''})`).join('; ')}. Nothing was changed.${forgetHint(silent.map(([node]) => node), o, current)}`;
  const bind = (names: string[]) => names.map((name) => ({ name, shard: (said.get(name) as { shard: string }).shard }));
  // With no map anywhere, the cluster is the ring of --from (or of the seeds): this reshard gives it a map.
  const map: ClusterMap = current ?? { epoch: 0, nodes: bind(o.from ?? o.seeds), replicas: o.replicas ?? 1 };
  const why = identityProblem([...everyNode(map), ...bind(o.to)], said) ?? foreign(map, said);
  if (why !== undefined) return `refusing: ${why}. Nothing was changed.`;

  const forgets = o.forget === undefined ? [] : stillInMap(o.forget, map);
  if (forgets.length > 0) return forgetting(o, said, map, forgets);
  if (map.moving !== undefined) return resumeOrReverse(o, said, map);
  if (o.from !== undefined && !sameNodes(o.from, map.nodes.map((n) => n.name))) {
    return `refusing: --from ${o.from.join(',')} is not the cluster, which is at ${describeMap(map)} (${map.nodes.map((n) => n.name).join(',')}). Leave --from out. Nothing was changed.`;
  }
  const replicas = o.replicas ?? map.replicas;
  const firstMap = current === undefined;
  // The same ring: nothing moves. A cluster with no map yet gets its first one.
  if (sameNodes(o.to, map.nodes.map((n) => n.name)) && replicas === map.replicas) return { map: firstMap ? { ...map, epoch: 1 } : map };
  return { map, next: moving(map, bind(o.to), replicas, o) };
}

/** For a silent node of the map: the way out if it is gone for good (operator/forget.ts). */
function forgetHint(silent: string[], o: ReshardOptions, map: ClusterMap | undefined): string {
  const named = silent.filter((node) => map !== undefined && everyNode(map).some((n) => n.name === node));
  if (named.length === 0) return '';
  const to = o.to.filter((node) => !named.includes(node));
  return `\n  Bring it back and run the same command again. If it is gone for good (its data lost), forget it, and with it the records that lived only on it:\n    node ch_client.ts reshard --to ${to.join(',')} --forget ${named.join(',')}`;
}

/** A map at the next epoch that moves `map`'s records to the ring of `to`. */
function moving(map: ClusterMap, to: MapNode[], replicas: number, o: ReshardOptions): ClusterMap {
  return { epoch: map.epoch + 1, nodes: map.nodes, replicas: map.replicas, moving: { nodes: to, replicas, by: holder(), leaseMs: o.leaseMs }, ...carried(map) };
}

/**
 * --forget of nodes still in the map. With no reshard under way: the map
 * without them, at the next epoch, to install first. With one: the same
 * takeover as for a dead operator, finishing or reversing it over both rings
 * without them (rule 6 lets exactly this map drop them).
 */
function forgetting(o: ReshardOptions, said: Map<string, Said>, map: ClusterMap, forgets: string[]): Plan | string {
  const without = withoutForgotten(map, forgets, map.epoch + 1);
  if (map.moving === undefined) return { map, forget: { ...without, epoch: map.epoch + 1 } };
  const plan = resumeOrReverse(o, said, without, ` --forget ${forgets.join(',')}`);
  return typeof plan === 'string' ? plan : { ...plan, map, forgets };
}

/** Forgets nodes with no reshard under way, then goes on as a plain reshard to --to would. */
async function forgetFirst(map: ClusterMap, forget: ClusterMap, said: Map<string, Said>, o: ReshardOptions): Promise<number> {
  const forgets = everyNode(map).filter((n) => !everyNode(forget).some((m) => m.name === n.name)).map((n) => n.name);
  for (const line of await account(map, forgets)) console.log(line);
  if (o.dryRun) {
    console.log(`dry run: nothing was changed; without --dry-run the cluster goes to ${describeMap(forget)}, then to --to`);
    return 0;
  }
  if (!(await endEverywhere(forget, said, o.secret))) return 1;
  console.log(`forgot ${forgets.join(', ')}: the cluster is at ${describeMap(forget)}`);
  return reshard({ ...o, forget: undefined });
}

/** A reshard is on record: finish it or reverse it, if its operator is gone. */
function resumeOrReverse(o: ReshardOptions, said: Map<string, Said>, map: ClusterMap, more = ''): Plan | string {
  const m = map.moving!;
  const who = `pid ${m.by.pid} on ${m.by.host}, started ${m.by.started}, moving ${describeMap(map)}`;
  const leaseLeft = Math.max(0, ...[...said.values()].map((a) => ('leaseLeftMs' in a && a.map?.epoch === map.epoch ? (a.leaseLeftMs ?? 0) : 0)));
  const died = m.by.machine !== '' && m.by.machine === machine() && !alive(m.by.pid);
  if (leaseLeft > 0 && !died) {
    return `another reshard is running: ${who}. Its lease has ${Math.ceil(leaseLeft / 1000)} s left; wait for it to finish.`;
  }
  const command = (nodes: MapNode[], replicas: number) => `node ch_client.ts reshard --to ${nodes.map((n) => n.name).join(',')} --replicas ${replicas}${more}`;
  const names = (nodes: MapNode[]) => nodes.map((n) => n.name);
  const forward = sameNodes(o.to, names(m.nodes)) && (o.replicas ?? m.replicas) === m.replicas;
  const back = sameNodes(o.to, names(map.nodes)) && (o.replicas ?? map.replicas) === map.replicas;
  const fromOk = o.from === undefined || sameNodes(o.from, names(forward ? map.nodes : m.nodes));
  if ((!forward && !back) || !fromOk) {
    return (
      `an unfinished reshard is on record: ${who}, and its operator is gone.\n` +
      `  Another reshard now would leave records where neither ring looks. Finish that one:\n    ${command(m.nodes, m.replicas)}\n` +
      `  or reverse it:\n    ${command(map.nodes, map.replicas)}`
    );
  }
  const by = holder();
  const next: ClusterMap = forward
    ? { ...map, epoch: map.epoch + 1, moving: { ...m, by, leaseMs: o.leaseMs } }
    : { epoch: map.epoch + 1, nodes: m.nodes, replicas: m.replicas, moving: { nodes: map.nodes, replicas: map.replicas, by, leaseMs: o.leaseMs }, ...carried(map) };
  const how = died ? 'no longer running' : 'its lease ran out';
  return { map, next, takeover: `${forward ? 'taking over' : 'reversing'} the unfinished reshard of ${who} (${how})` };
}

/** Why the names cannot be trusted: two names for one shard, or a name the map binds to another shard. */
function identityProblem(nodes: MapNode[], said: Map<string, Said>): string | undefined {
  const nameOf = new Map<string, string>();
  for (const { name, shard } of nodes) {
    const answer = said.get(name);
    if (answer !== undefined && 'shard' in answer && answer.shard !== shard) {
      return `the cluster map binds ${name} to shard ${shard}, but ${name} now answers as shard ${answer.shard}`;
    }
    const other = nameOf.get(shard);
    if (other !== undefined && other !== name) return `${other} and ${name} are the same shard. Name each shard once, as the cluster map does`;
    nameOf.set(shard, name);
  }
  return undefined;
}

/** Why a node holds the map of another cluster: one that names none of this cluster's shards. */
function foreign(map: ClusterMap, said: Map<string, Said>): string | undefined {
  const ours = new Set(everyNode(map).map((n) => n.shard));
  for (const [node, answer] of said) {
    const theirs = 'map' in answer ? answer.map : undefined;
    if (theirs !== undefined && !everyNode(theirs).some((n) => ours.has(n.shard))) {
      return `${node} holds the map of another cluster (epoch ${theirs.epoch}, naming none of this cluster's shards): leave it out, or give it a fresh database`;
    }
  }
  return undefined;
}

/** Rule 7: where a node answers, by the first of `maps` that names it; a name no map knows is its own address. */
export function whereIn(...maps: Array<ClusterMap | undefined>): (node: string) => string {
  return (node) => {
    const map = maps.find((m) => m !== undefined && everyNode(m).some((n) => n.name === node));
    return map === undefined ? node : addressOf(map, node);
  };
}

/** Every node named in any map that was read. */
function namedIn(said: Map<string, Said>): string[] {
  const names = new Set<string>();
  for (const answer of said.values()) {
    if (!('map' in answer) || answer.map === undefined) continue;
    for (const n of everyNode(answer.map)) names.add(n.name);
  }
  return [...names];
}

/** True while a process runs on this machine. A zombie has ended: it only waits to be reaped, which can take a while. */
/** This run, as the holder a map names. */
function holder(): Holder {
  return { host: hostname(), machine: machine(), pid: process.pid, started: new Date().toISOString() };
}

/**
 * This machine, such that a pid found on it is the pid a holder named: its
 * host, its boot, and its pid namespace (two containers may share a hostname
 * and reuse pids). '' where that cannot be told: then only the lease can.
 */
function machine(): string {
  try {
    return `${hostname()}/${readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()}/${readlinkSync('/proc/self/ns/pid')}`;
  } catch {
    return '';
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return true; // no /proc here: the signal's answer stands
  }
}

// ---------------------------------------------------------------------------
// 3 and 5: put a map on every node, by compare-and-set.

/**
 * PUT /cluster/map on one node, at its address under `map` (rule 7), over the
 * epoch it holds now. Every map the operator puts is signed here (rule 9): with
 * the cluster secret, it carries a MAC, so that a shard may take it from another.
 */
export function putMap(node: string, map: ClusterMap, over: number | undefined, secret: string | undefined, where = whereIn(map)) {
  const condition: Record<string, string> = over === undefined ? { 'if-none-match': '*' } : { 'if-match': `"${over}"` };
  return call(where(node), 'PUT', '/cluster/map', signMap(map, secret), condition, { secret });
}

const epochOf = (answer: Said | undefined) => (answer === undefined || 'why' in answer ? undefined : (answer.broken?.epoch ?? answer.map?.epoch));
const brokenOn = (answer: Said | undefined) => (answer !== undefined && 'broken' in answer ? answer.broken : undefined);

/**
 * Step 3: the moving map onto every node of both rings. Undefined when taken,
 * or why not; a take that fails half-way puts the map it replaced back, at a
 * higher epoch still, since nothing has moved yet.
 */
async function take(map: ClusterMap, next: ClusterMap, said: Map<string, Said>, secret: string | undefined): Promise<string | undefined> {
  // The map's first node first: every operator starts there, so exactly one passes it.
  const order = everyNode(next).map((n) => n.name);
  // Each node must take the secret: asked with an epoch no node has, it says 412, or 401 to a wrong secret.
  for (const node of order) {
    const res = await putMap(node, next, 0, secret);
    if (res.status !== 412) return `refusing: ${node} will not take this reshard's map (${problem(res)}). Nothing was changed.`;
  }
  for (const [i, node] of order.entries()) {
    const res = await putMap(node, next, epochOf(said.get(node)), secret).catch((err: Error) => ({ status: 0, body: { error: err.message }, etag: undefined }));
    if (res.status === 200) continue;
    if (i === 0 && res.status === 412) {
      const now = (await ask([node], whereIn(next))).get(node);
      const m = now !== undefined && 'map' in now ? now.map?.moving : undefined;
      const holder = m === undefined ? 'another operator changed the cluster map' : `pid ${m.by.pid} on ${m.by.host}, started ${m.by.started}, is moving the cluster to ${m.nodes.map((n) => n.name).join(',')}`;
      return `refusing: ${holder} (${node} is at epoch ${res.etag?.replace(/"/g, '') ?? 'unknown'}). Nothing was changed.`;
    }
    // Its map reached the nodes before this one, and then the cluster moved past it: another operator took over while this run stood still.
    if (i > 0) {
      const now = newest(await ask([...new Set([...said.keys(), ...order])], whereIn(next)));
      if (now !== undefined && now.epoch > next.epoch) return takenOverNow(now, next, `${node} refused its map (${problem(res)}); this run had put it on ${plural(i, 'node')} of ${order.length}, and moved no record`);
    }
    const back = map.epoch === 0 ? [] : order.slice(0, i);
    const putBack = (n: string) => putMap(n, { ...map, epoch: next.epoch + 1 }, next.epoch, secret).then((r) => r.status === 200, () => false);
    const undone = await Promise.all(back.map(putBack));
    const how = undone.every(Boolean) ? `the nodes before it are back at the map they had (epoch ${next.epoch + 1})` : 'the map stays on the nodes before it';
    return `could not put the reshard's map on ${node}: ${problem(res)}. Nothing has moved; ${how}. Run the same command again.`;
  }
  return undefined;
}

/**
 * What an operator whose lease lapsed, and that was taken over, says: that
 * it was, what this run did, and what the cluster is at now. Never "nothing
 * has moved": the operator that took over may have moved every record.
 */
async function takenOver(said: Map<string, Said>, mine: ClusterMap, why: string, did: string): Promise<string> {
  const now = newest(await ask([...new Set([...said.keys(), ...everyNode(mine).map((n) => n.name)])], whereIn(mine)));
  return takenOverNow(now ?? mine, mine, `${why}; ${did}`);
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

/**
 * Step 5: `end` onto every node that has not got it, removed nodes first. True
 * when every node has it. `put` gets each node this call gave it to, with the
 * epoch it had ("127.0.0.1:4000 (was at epoch 3)").
 */
async function endEverywhere(end: ClusterMap, said: Map<string, Said>, secret: string | undefined, over?: ClusterMap, put: string[] = []): Promise<boolean> {
  const kept = new Set(end.nodes.map((n) => n.name));
  const took = new Set(over === undefined ? [] : everyNode(over).map((n) => n.name));
  // A forgotten node is gone: it gets no map (and one that answers again is check's to report).
  const forgotten = new Set((end.forgot ?? []).map((f) => f.name).filter((name) => !kept.has(name)));
  const known = [...new Set([...namedIn(said), ...said.keys(), ...took])].filter((n) => !forgotten.has(n) || 'shard' in (said.get(n) ?? {}));
  const order = [...known.filter((n) => !kept.has(n)), ...known.filter((n) => kept.has(n))];
  const where = whereIn(end, over, newest(said));
  for (const node of order) {
    const broken = took.has(node) ? undefined : brokenOn(said.get(node));
    const epoch = took.has(node) ? over!.epoch : epochOf(said.get(node));
    // A stored map that cannot be read gets the cluster's, over its epoch column, whatever that says.
    const res = epoch === end.epoch && broken === undefined ? undefined : await putMap(node, end, epoch, secret, where);
    if (res?.status === 200 && broken !== undefined) console.log(`${node}: its stored map (epoch ${broken.epoch}) could not be read (${broken.problem}); put the cluster's map back`);
    if (res?.status === 200) {
      put.push(`${node} (${epoch === undefined ? 'had no map' : `was at epoch ${epoch}`})`);
      continue;
    }
    // Already at the end's epoch: fine only if it is this very map.
    if (res === undefined || (res.status === 412 && res.etag === `"${end.epoch}"`)) {
      const now = (await ask([node], where)).get(node);
      const map = now !== undefined && 'map' in now ? now.map : undefined;
      if (map !== undefined && sameMap(map, end)) continue;
      console.error(`${node} holds another map at epoch ${end.epoch}: another operator changed the cluster meanwhile. Run the same command again to settle it.`);
      return false;
    }
    console.error(`could not put the cluster's map on ${node}: ${problem(res)}. Run the same command again once it answers.`);
    return false;
  }
  return true;
}

type Lease = { renew(): Promise<void>; stop(): void; lost(): string | undefined; map(): ClusterMap; report(): void };

/** The same reshard, where only nodes' addresses may differ: the same holder, names, shards, replicas and forgets. */
export function sameReshard(a: ClusterMap, b: ClusterMap): boolean {
  const ring = (m: ClusterMap) => ({
    nodes: m.nodes.map((n) => [n.name, n.shard]),
    replicas: m.replicas,
    moving: m.moving && { nodes: m.moving.nodes.map((n) => [n.name, n.shard]), replicas: m.moving.replicas, by: m.moving.by, leaseMs: m.moving.leaseMs },
    forgot: m.forgot ?? [],
  });
  return a.moving !== undefined && JSON.stringify(ring(a)) === JSON.stringify(ring(b));
}

/**
 * Renews the reshard's lease on every node, every third of it, until stopped;
 * `lost` says why it could not. Each round goes to every node at once: one
 * after another, a node slow to answer (up to a 10 s timeout) held back the
 * renewal of every node after it, and the lease could lapse on healthy ones.
 * Each failure is recorded, and `report` prints them, one line per node. A newer map that is this reshard with only addresses
 * changed (a failover's) is adopted: `map` is the one held now.
 */
function renewLease(first: ClusterMap, secret: string | undefined): Lease {
  let lost: string | undefined;
  let map = first;
  let sent = 0;
  const failed = new Map<string, { times: number; first: string }>(); // node: how often, and the first failure
  const started = performance.now();
  const fail = (node: string, why: string) => {
    const at = `${((performance.now() - started) / 1000).toFixed(1)} s in`;
    const seen = failed.get(node);
    if (seen === undefined) failed.set(node, { times: 1, first: `${at}: ${why}` });
    else seen.times++;
  };
  const renewOne = async (node: string) => {
    sent++;
    const res = await putMap(node, map, map.epoch, secret).catch((err: Error) => err);
    if (res instanceof Error) return fail(node, res.message);
    if (res.status === 200) return;
    if (res.status !== 412) return fail(node, problem(res));
    // 412: the map moved on. A failover's (only addresses changed) is adopted; anything else is another operator's.
    const now = (await ask([node], whereIn(map))).get(node);
    const theirs = now !== undefined && 'map' in now ? now.map : undefined;
    if (theirs !== undefined && theirs.epoch > map.epoch && sameReshard(map, theirs)) {
      console.log(`the cluster map is at epoch ${theirs.epoch}: a failover moved ${changedAddresses(map, theirs)}; this reshard goes on under that epoch`);
      map = theirs;
      return;
    }
    if (theirs !== undefined && theirs.epoch < map.epoch && sameReshard(map, theirs)) {
      // Behind the adopted map (the failover has not reached it yet): give it that map.
      await putMap(node, map, theirs.epoch, secret).catch(() => undefined);
      return;
    }
    if (theirs !== undefined && sameMap(theirs, map)) return;
    lost ??= `${node} is at epoch ${res.etag?.replace(/"/g, '')}: another operator took this reshard over`;
  };
  // A node still busy with its last renewal is not sent another: a slow one
  // holds back no other node's renewal, and never gathers a queue of them.
  const pending = new Map<string, Promise<void>>();
  const renewNode = (node: string): Promise<void> => {
    const last = pending.get(node);
    if (last !== undefined) return last;
    const next = renewOne(node).finally(() => pending.delete(node));
    pending.set(node, next);
    return next;
  };
  const renew = async (): Promise<void> => {
    await Promise.all(everyNode(map).map((n) => renewNode(n.name)));
  };
  const timer = setInterval(renew, first.moving!.leaseMs / 3);
  timer.unref();
  const report = () => {
    if (failed.size === 0) return;
    const times = [...failed.values()].reduce((n, f) => n + f.times, 0);
    console.error(`lease renewals: ${times} of ${sent} failed, on ${plural(failed.size, 'node')} (the lease holds while any node has it):`);
    for (const [node, f] of failed) console.error(`  ${node}: ${plural(f.times, 'renewal')} failed, the first ${f.first}`);
  };
  return { renew, stop: () => clearInterval(timer), lost: () => lost, map: () => map, report };
}

/** "NAME from ADDRESS to ADDRESS" for each node whose address differs. */
function changedAddresses(a: ClusterMap, b: ClusterMap): string {
  const moves = everyNode(b).filter((n) => addressOf(a, n.name) !== addressOf(b, n.name)).map((n) => `${n.name} from ${addressOf(a, n.name)} to ${addressOf(b, n.name)}`);
  return moves.length === 0 ? 'no address' : moves.join(', ');
}

// ---------------------------------------------------------------------------
// check: the audit alone, read-only.

/**
 * Is every record on its owner, and does every node hold the cluster's map?
 * It looks at every node it meets: those of the map, the seeds, and the nodes
 * the map forgot. With the cluster secret, and standbys, it also shows each
 * shard's primary and standby and flags a shard running without its standby
 * (standbys()). Resolves to the exit code.
 */
export async function check(seeds: string[], known?: Map<string, Said>, secret?: string): Promise<number> {
  const said = known ?? (await ask(seeds));
  for (const [node, answer] of await ask(namedIn(said).filter((n) => !said.has(n)), whereIn(newest(said)))) said.set(node, answer);
  const forgot = newest(said)?.forgot ?? [];
  for (const [node, answer] of await ask(forgot.map((f) => f.name).filter((n) => !said.has(n)), whereIn(newest(said)))) said.set(node, answer);
  const map = newest(said);
  if (map === undefined) {
    console.error(`check: no node of ${seeds.join(',')} holds a cluster map; give the cluster one with: node ch_client.ts reshard --from ${seeds.join(',')} --to ${seeds.join(',')}`);
    return 1;
  }
  // Two maps at one epoch: two operators collided; clients may disagree until a reshard settles it.
  const split = [...said].filter(([, a]) => 'map' in a && a.map?.epoch === map.epoch && !sameMap(a.map, map));
  for (const [node] of split) console.error(`SPLIT ${node} holds another map at epoch ${map.epoch}; run the reshard again to settle it`);
  const found = await walk(map, undefined);
  const out = total(found.misplaced);
  console.log(`check: ${found.records} records on ${found.nodes} nodes, ${describeMap(map)}: ${out} out of place`);
  for (const [route, n] of [...found.misplaced].sort()) console.log(`  on ${route.replace(' -> ', ', owned by ')}: ${n}`);
  const broken = [...said].filter(([, a]) => brokenOn(a) !== undefined);
  const to = map.nodes.map((n) => n.name).join(',');
  for (const [node, a] of broken) console.error(`BROKEN ${node}: its stored map (epoch ${brokenOn(a)!.epoch}) cannot be read (${brokenOn(a)!.problem}); put the cluster's map back with: node ch_client.ts reshard --to ${to}`);
  const behind = [...said].filter(([, a]) => epochOf(a) !== map.epoch && !('why' in a) && brokenOn(a) === undefined);
  for (const [node, a] of behind) console.error(`BEHIND ${node} holds ${epochOf(a) === undefined ? 'no map' : `epoch ${epochOf(a)}`}; run the reshard again to give it epoch ${map.epoch}`);
  if (map.moving !== undefined) console.error(`a reshard is under way (${describeMap(map)}): records are out of place until it ends`);
  printProblems(found, false);
  const outside = await outsideTheRing(map, said);
  const paired = await standbys(map, secret);
  return out === 0 && isClean(found) && behind.length === 0 && broken.length === 0 && split.length === 0 && map.moving === undefined && outside && paired ? 0 : 1;
}

/** What GET /cluster/replication says of one machine (shard/replication.ts), or why it said nothing. */
type Replication = { role: string; gtid_binlog_pos: string; gtid_slave_pos: string; follows: { master: string; io: string; sql: string } | null; semisync: Record<string, string>; peer: string | null };

async function replicationAt(address: string, secret: string | undefined): Promise<Replication | { why: string; status?: number }> {
  try {
    const res = await call(address, 'GET', '/cluster/replication', undefined, {}, { timeoutMs: 5_000, secret });
    return res.status === 200 ? (res.body as Replication) : { why: problem(res), status: res.status };
  } catch (err) {
    return { why: (err as Error).message };
  }
}

/**
 * Check's look at the machines behind each node, when the cluster has
 * standbys: for each node of the map, its primary (the node's address) and its
 * standby (the pair's other machine, which the primary's server names: its
 * CLUSTER_PEER, set by start-shards.sh), each with its replication state. A
 * shard whose primary has no standby connected, or whose standby does not
 * replicate, is flagged WITHOUT STANDBY: its writes wait for one (S3), and an
 * acknowledged write exists on one machine only. True when no shard is.
 */
async function standbys(map: ClusterMap, secret: string | undefined): Promise<boolean> {
  const nodes = everyNode(map);
  const primaries = await Promise.all(nodes.map((n) => replicationAt(addressOf(map, n.name), secret)));
  // 503 without an operator user: a server started without standbys. A cluster with none has no pairs to show.
  const unpaired = (r: (typeof primaries)[number]) => 'why' in r && r.status === 503 && /no MySQL operator user/.test(r.why);
  // A cluster where no node answers with its replication has none to show (or no node can be reached: the walk says so).
  if (!primaries.some((r) => !('why' in r))) {
    if (primaries.some((r) => 'why' in r && r.status === 401)) console.log(`  standbys: not shown (GET /cluster/replication needs the cluster secret: --secret-file)`);
    return true;
  }
  if (primaries.some((r) => 'why' in r && r.status === 401)) {
    console.log(`  standbys: not shown (GET /cluster/replication needs the cluster secret: --secret-file)`);
    return true;
  }
  console.log('  standbys (GET /cluster/replication on each node and on its standby):');
  let ok = true;
  for (const [i, n] of nodes.entries()) {
    const p = primaries[i]!;
    const at = addressOf(map, n.name);
    const without = (why: string) => {
      console.error(`WITHOUT STANDBY shard ${n.shard} (${n.name} at ${at}): ${why}; its writes wait for a standby's ack. Give it one: on its host, ./start-shards.sh rejoin N`);
      ok = false;
    };
    if ('why' in p) {
      // One that cannot be reached is the walk's to report; one with no operator user has no standby.
      console.log(`    shard ${n.shard}, ${n.name}: primary ${at} does not say (${p.why})`);
      if (unpaired(p)) without('its server has no standby (started without SHARDS_STANDBY=1)');
      continue;
    }
    const clients = Number(p.semisync.Rpl_semi_sync_master_clients ?? 0);
    console.log(`    shard ${n.shard}, ${n.name}: primary ${at}: ${p.role}, semi-sync ${p.semisync.Rpl_semi_sync_master_status ?? '?'}, ${clients} standby connected, gtid_binlog_pos ${p.gtid_binlog_pos || 'none'}`);
    if (p.role !== 'primary') {
      console.error(`NOT WRITABLE shard ${n.shard} (${n.name} at ${at}) is read-only: a fenced primary, or a standby the map names; finish the failover`);
      ok = false;
    }
    const s = p.peer === null ? undefined : await replicationAt(p.peer, secret);
    if (p.peer !== null && s !== undefined && !('why' in s)) {
      const f = s.follows;
      console.log(`      standby ${p.peer}: ${s.role}, ${f === null ? 'follows no one' : `follows ${f.master}, IO ${f.io}, SQL ${f.sql}`}, gtid_slave_pos ${s.gtid_slave_pos || 'none'}`);
    } else {
      console.log(`      standby ${p.peer ?? 'unknown (the primary\'s server has no CLUSTER_PEER)'}${s !== undefined && 'why' in s ? `: does not answer (${s.why})` : ''}`);
    }
    const replicates = s !== undefined && !('why' in s) && s.follows !== null && s.follows.io === 'Yes' && s.follows.sql === 'Yes';
    if (clients < 1) without('no standby is connected to its primary');
    else if (!replicates) without(`its standby ${p.peer ?? '(unknown)'} does not replicate`);
  }
  return ok;
}

/**
 * Check's look past the ring: a forgotten node that is still gone is listed,
 * and every node outside both rings that answers must hold no record, since
 * no client looks there. True when none does.
 */
async function outsideTheRing(map: ClusterMap, said: Map<string, Said>): Promise<boolean> {
  const inRing = new Set(everyNode(map).map((n) => n.name));
  for (const f of map.forgot ?? []) {
    if (!inRing.has(f.name) && !('shard' in (said.get(f.name) ?? {}))) console.log(`  forgotten at epoch ${f.epoch}: ${f.name} (shard ${f.shard}), gone for good with the records that lived only on it`);
  }
  let clean = true;
  for (const [node, answer] of said) {
    if (inRing.has(node) || !('shard' in answer)) continue;
    const held = await Promise.all([idsOn(node, 'live'), idsOn(node, 'incoming')]).catch((err: Error) => err);
    if (held instanceof Error) {
      console.error(`FAILED to list the records on ${node}, outside the ring: ${held.message}`);
      clean = false;
      continue;
    }
    const [live, incoming] = held;
    if (live.length + incoming.length === 0) continue;
    clean = false;
    const was = (map.forgot ?? []).find((f) => f.shard === answer.shard);
    const why = was === undefined ? '' : `; it was forgotten at epoch ${was.epoch}, and answers again`;
    const example = [...live, ...incoming].slice(0, 3).map((id) => JSON.stringify(id)).join(', ');
    console.error(
      `OUTSIDE ${node} holds ${plural(live.length, 'live record')} and ${incoming.length} incoming (${example}${live.length + incoming.length > 3 ? ', …' : ''}), outside the ring of epoch ${map.epoch}${why}: ` +
        `no client looks there. For each, compare with what its owner holds, then move it there by hand or delete it.`,
    );
  }
  return clean;
}
