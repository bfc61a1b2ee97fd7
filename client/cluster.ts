// client/cluster.ts: what a client knows of the cluster, and how it follows
// when a shard says "not here, there" (api/cluster-map.ts).
//
// The client reads the map from the nodes it is given, its seeds, and routes
// by the newest one. With no map anywhere (one server of assignment 1, or
// shards that predate maps), the seeds themselves make the ring, as before.
// A 421 carries the answering shard's map: a newer one replaces ours, and the
// request goes where the 421 says, with Asking when the old owner of a moving
// id sent it on.
//
// A request goes to its node's address (rule 7), which a failover changes.
// A node that cannot be reached, or a standby that knows no better, cannot
// say where its name went: then the client reads the map from the other
// nodes it knows, once per request, and goes on if the address changed.

import { addressOf, checkMap, describeMap, everyNode, placer, type ClusterMap, type Placement } from '../api/cluster-map.ts';
import { HashRing, position } from '../ring.ts';
import { call, forgive, shortRun, type Answer } from './http.ts';

/**
 * The map a client routes by. Epoch 0: no shard has one, and the seeds are the
 * ring. `handedOff`: for each old owner of a reshard under way in this map,
 * the furthest position on the circle of an id it was seen to have handed off
 * (see firstNode); a new map starts it empty.
 */
export type View = { map: ClusterMap; place: (id: string) => Placement; handedOff: Map<string, string> };

/** A node's answer: its identity, role (rule 8) and map (or none); or, where its stored map cannot be read, that map's epoch column and why; or why it said nothing (and its HTTP status, if it answered at all). */
export type Said = { shard: string; role?: string; map?: ClusterMap; leaseLeftMs?: number; broken?: { epoch: number; problem: string } } | { why: string; status?: number };

/** Asks each node, at its address, for its identity and its map (GET /cluster/map), all at once. */
export async function ask(nodes: readonly string[], where: (node: string) => string = (node) => node): Promise<Map<string, Said>> {
  const answers = await Promise.all(
    nodes.map(async (node): Promise<Said> => {
      try {
        const res = await call(where(node), 'GET', '/cluster/map');
        const shard = res.body?.shard;
        const broken = res.body?.broken;
        if (res.status === 503 && typeof shard === 'string' && shard !== '' && Number.isSafeInteger(broken?.epoch) && typeof broken?.problem === 'string') {
          return { shard, broken: { epoch: broken.epoch, problem: broken.problem } };
        }
        if (res.status !== 200 || typeof shard !== 'string' || shard === '') return { why: `GET /cluster/map answered HTTP ${res.status} with no shard id`, status: res.status };
        const role = typeof res.body.role === 'string' ? { role: res.body.role as string } : {};
        return { shard, ...role, map: res.body.map === null ? undefined : checkMap(res.body.map), leaseLeftMs: res.body.leaseLeftMs ?? undefined };
      } catch (err) {
        return { why: (err as Error).message };
      }
    }),
  );
  return new Map(nodes.map((node, i) => [node, answers[i]!]));
}

/**
 * The newest map among the answers, or undefined when no node has one. Of two
 * at one epoch (two operators collided), the one with a reshard under way: it
 * holds both rings, and the reshard run again settles it.
 */
export function newest(said: Map<string, Said>): ClusterMap | undefined {
  let best: ClusterMap | undefined;
  for (const answer of said.values()) {
    if (!('map' in answer) || answer.map === undefined) continue;
    const { map } = answer;
    if (map.epoch > (best?.epoch ?? 0) || (map.epoch === best?.epoch && map.moving !== undefined)) best = map;
  }
  return best;
}

/** A view from a map, or from the seeds alone. */
export function viewOf(map: ClusterMap | undefined, seeds: readonly string[], replicas: number): View {
  const chosen = map ?? { epoch: 0, nodes: seeds.map((name) => ({ name, shard: name })), replicas };
  return { map: chosen, place: placer(chosen), handedOff: new Map() };
}

/**
 * The view a client starts with: the newest map its seeds hold. When the map
 * and the flags disagree, one line says which one the client follows. Where
 * no node holds a map, the seeds are the ring, and a warning names two seeds
 * that reach one shard: the ring would count it twice.
 */
export async function discover(seeds: readonly string[], replicas: number): Promise<{ view: View; said: Map<string, Said> }> {
  const said = await ask(seeds);
  const map = newest(said);
  if (map !== undefined && !(sameNodes(map.nodes.map((n) => n.name), seeds) && map.replicas === replicas && map.moving === undefined)) {
    console.error(`the cluster is at ${describeMap(map)}; following it`);
  }
  if (map === undefined) {
    for (const group of aliases(said)) {
      console.error(`warning: ${group.join(' and ')} are the same shard; the ring counts them as ${group.length} nodes`);
    }
  }
  return { view: viewOf(map, seeds, replicas), said };
}

/** What ch_client.ts's job needs of the cluster: the ring's nodes and replicas, and a send about an id to a node. */
type Job = {
  readonly nodes: readonly string[];
  readonly replicas: number;
  send(node: string, id: string, method: string, path: string, body?: unknown): Promise<Answer & { node: string }>;
};

/**
 * The cluster as ch_client.ts's job sees it, at its one seam. Where no seed
 * holds a map, the nodes as given, as in the assignment. Else the nodes and
 * replicas of the newest map, and a send that goes on wherever a shard
 * answers 421 (ask `first` first).
 */
export async function joinCluster(given: Job): Promise<Job> {
  shortRun();
  const { view } = await discover(given.nodes, given.replicas);
  if (view.map.epoch === 0) return given;
  return {
    // A getter: a 421 can bring a newer map, whose nodes the job's summary then counts.
    get nodes() {
      return view.map.nodes.map((n) => n.name);
    },
    replicas: view.map.replicas,
    send: (first: string, id: string, method: string, path: string, body?: unknown) => send(view, id, method, path, body, first),
  };
}

/**
 * The ring that places ids for `map`: the cluster map's when a node answers
 * with one (after a reshard, --nodes may name the nodes before it), else the
 * ring of --nodes and --replicas, as in assignment 1, with no more HTTP. One
 * line on stderr says which, so that --json stays one object on stdout.
 */
export async function mapRing(nodes: string[], replicas: number): Promise<HashRing> {
  const { view, said } = await discover(nodes, replicas);
  if (view.map.epoch > 0) {
    const moving = view.map.moving === undefined ? '' : ' (each id on its owner now, before the reshard under way moves it)';
    console.error(`map: by the cluster map the nodes hold, ${describeMap(view.map)}${moving}`);
    return new HashRing(view.map.nodes.map((n) => n.name), view.map.replicas);
  }
  const answered = [...said.values()].some((answer) => 'shard' in answer);
  console.error(`map: by --nodes and --replicas, since ${answered ? 'no node holds a cluster map' : 'no node answered'}`);
  return new HashRing(nodes, replicas);
}

/** Groups of two or more names that reach the same shard. */
function aliases(said: Map<string, Said>): string[][] {
  const names = new Map<string, string[]>();
  for (const [node, answer] of said) {
    if ('shard' in answer) names.set(answer.shard, [...(names.get(answer.shard) ?? []), node]);
  }
  return [...names.values()].filter((group) => group.length > 1);
}

/** Node lists name the same ring when they hold the same nodes, in any order. */
export function sameNodes(a: readonly string[], b: readonly string[]): boolean {
  const set = new Set(a);
  return set.size === new Set(b).size && b.every((node) => set.has(node));
}

// A request is sent on at most this many times: a misdirected one and its
// new owner, an old owner that asks on, and room for a map that changes once.
const HOPS = 5;
// A record between the two steps of a move is away for milliseconds (503).
const IN_TRANSIT_TRIES = 5;
const IN_TRANSIT_WAIT_MS = 50;
// While a new map goes onto the nodes, the old owner (at epoch E+1) and the
// new one (still at E) send a request back and forth, for up to a few hundred
// ms (about 1 write in 17,000 under load met it). Past the hop limit, the
// client waits, reads the map again, and tries again, for about this long.
const SETTLE_MS = 2_000;
const SETTLE_FIRST_WAIT_MS = 50;

/** What sent a request on: "node (epoch E) sends it to owner", in the order first seen. */
type Trail = Set<string>;

/** An answer that settled a request: the node that gave it, and how many times the request was sent on (421) before it. */
export type Settled = Answer & { node: string; sentOn: number };

/**
 * One request about one id, sent to where the view places it (firstNode), or
 * to `first`, and on to wherever the cluster answers 421. Resolves with the
 * answer that settled it.
 */
export async function send(view: View, id: string, method: string, path: string, body?: unknown, first?: string): Promise<Settled> {
  const started = performance.now();
  const trail: Trail = new Set();
  let hops = 0;
  for (let wait = SETTLE_FIRST_WAIT_MS; ; wait *= 2) {
    const sent = await hop(view, id, method, path, body, first, trail);
    if ('status' in sent) return hops === 0 ? sent : { ...sent, sentOn: sent.sentOn + hops };
    hops += HOPS;
    const why = await misbound(view, sent.last);
    if (why !== undefined) throw new Error(`${method} ${path}: ${why}`);
    if (performance.now() + wait - started > SETTLE_MS) throw new Error(`${method} ${path}: ${bounced(view, trail, hops, performance.now() - started)}`);
    // The nodes disagree: a new map is on some of them only. Wait for the rest, and route by the newest map.
    await new Promise((resolve) => setTimeout(resolve, wait));
    await reread(view);
    first = undefined;
  }
}

/** Up to HOPS sends of one request: the answer that settled it, or the node it was last sent to. */
async function hop(view: View, id: string, method: string, path: string, body: unknown, first: string | undefined, trail: Trail): Promise<Settled | { last: string }> {
  let node = first ?? firstNode(view, id, method);
  let headers: Record<string, string> = {};
  let askedBy: string | undefined; // the old owner whose ASK sent the request here
  let waits = 0;
  let askedOthers = false;
  for (let hop = 0; hop < HOPS; ) {
    const address = addressOf(view.map, node);
    let res: Answer;
    try {
      // Rule 9: every request names the epoch this client routes by, so that a shard behind it fetches the newer map.
      const hint: Record<string, string> = view.map.epoch > 0 ? { 'cluster-map-epoch': String(view.map.epoch) } : {};
      res = await call(address, method, path, body, { ...hint, ...headers });
    } catch (err) {
      // Dead, perhaps failed over: no 421 can come from there. Once per request, ask the others.
      if (askedOthers) throw err;
      askedOthers = true;
      if (await moved(view, node, address)) continue;
      throw err;
    }
    // A standby, or a fenced old primary, that knows no better than its own address (rule 8), or a
    // primary without its lease, which may have been replaced (election/rules.ts, E1).
    if (res.status === 503 && (res.body?.role === 'standby' || res.body?.lease === false) && !askedOthers) {
      askedOthers = true;
      if (await moved(view, node, address)) continue;
    }
    if (res.status === 503 && res.body?.moving === true && ++waits < IN_TRANSIT_TRIES) {
      await new Promise((resolve) => setTimeout(resolve, IN_TRANSIT_WAIT_MS * waits));
      continue;
    }
    if (res.status !== 421 || typeof res.body?.owner !== 'string') {
      if (askedBy !== undefined && res.status < 300 && method !== 'POST') handedOff(view, askedBy, id);
      return { ...res, node, sentOn: hop };
    }
    follow(view, res.body.map);
    // A node that sends a request to itself is not the shard its map binds it to: no hop will help.
    const why = res.body.owner === node ? await misbound(view, node) : undefined;
    if (why !== undefined) throw new Error(`${method} ${path}: ${why}`);
    trail.add(`${node} (at epoch ${res.body.epoch ?? 'unknown'}) sends it to ${res.body.owner}`);
    headers = res.body.asking === undefined ? {} : { asking: String(res.body.asking) };
    askedBy = res.body.asking === undefined ? undefined : node;
    node = res.body.owner;
    hop++;
  }
  return { last: node };
}

/**
 * Where a request about `id` goes first: its owner under the view; or, while
 * a reshard moves the id, its new owner, when the old owner has most likely
 * handed it off already. An old owner's records move in order of their
 * position on the circle (listed ORDER BY ring_position: shard/move-pages.ts
 * misplaced()), so an id at or before one that the old owner was seen to hand
 * off (its ASK, and the new owner serving the record) has most likely moved
 * too. A guess costs nothing in safety: under rule 3b the new owner serves
 * only a live row unasked, and answers any other with a 421 naming the old
 * owner, so a wrong one costs the hop that the old owner's ASK costs when
 * right. A POST goes to the old owner always: only it can vouch that the id
 * is not there (rule 3a), so a POST into a moving arc takes two hops.
 */
function firstNode(view: View, id: string, method: string): string {
  const { owner, target } = view.place(id);
  if (target === undefined || method === 'POST') return owner.name;
  const past = view.handedOff.get(owner.name);
  return past !== undefined && position(id) <= past ? target.name : owner.name;
}

/** The old owner `from` handed `id` off: every id of it up to the id's position has most likely moved (firstNode). */
function handedOff(view: View, from: string, id: string): void {
  if (view.place(id).owner.name !== from) return; // an ASK under another map than the view's
  const at = position(id);
  if (at > (view.handedOff.get(from) ?? '')) view.handedOff.set(from, at);
}

/** The newest map the view's nodes hold now. */
async function reread(view: View): Promise<void> {
  const map = newest(await ask(everyNode(view.map).map((n) => n.name), (name) => addressOf(view.map, name)));
  if (map !== undefined) follow(view, map);
}

/** What a client that kept being sent back and forth saw, and what to run. */
function bounced(view: View, trail: Trail, hops: number, ms: number): string {
  const nodes = everyNode(view.map).map((n) => n.name).join(',');
  return (
    `still sent elsewhere after ${hops} hops in ${(ms / 1000).toFixed(1)} s, the map read again in between: ${[...trail].join('; ')}. ` +
    `The nodes hold different maps: a new one is not on every node yet. If that lasts, the reshard that was putting it there stopped; ` +
    `see which node is behind with: node ch_client.ts check --nodes ${nodes}, and run that reshard again`
  );
}

/**
 * Why `node` cannot serve what the map sends to it: it says it is another
 * shard than the one the map binds to its name (it runs on another shard's
 * database, or the map was edited by hand). Undefined when it is the shard
 * the map names, or cannot say.
 */
async function misbound(view: View, node: string): Promise<string | undefined> {
  const bound = everyNode(view.map).find((n) => n.name === node)?.shard;
  const said = (await ask([node], (name) => addressOf(view.map, name))).get(node);
  if (bound === undefined || said === undefined || !('shard' in said) || said.shard === bound) return undefined;
  const nodes = everyNode(view.map).map((n) => n.name).join(',');
  return (
    `${node} answers as shard ${said.shard}, but the cluster map at epoch ${view.map.epoch} binds ${node} to shard ${bound}, so no node serves this id. ` +
    `Either ${node} runs on another shard's database, or the map was edited by hand. See where the cluster stands with: node ch_client.ts check --nodes ${nodes}; ` +
    `then start ${node} on shard ${bound}'s database, or put back a map that binds each node to its own shard`
  );
}

/**
 * Reads the map from every other node the view knows; true when a newer one
 * gives `node` another address than `address`, which the view now follows.
 */
async function moved(view: View, node: string, address: string): Promise<boolean> {
  const others = everyNode(view.map).map((n) => n.name).filter((name) => name !== node);
  const map = newest(await ask(others, (name) => addressOf(view.map, name)));
  if (map === undefined || map.epoch <= view.map.epoch) return false;
  follow(view, map);
  return addressOf(view.map, node) !== address;
}

/** Takes a newer map from a 421's answer. */
function follow(view: View, map: unknown): void {
  if (map === undefined || map === null) return;
  const next = checkMap(map);
  if (next.epoch <= view.map.epoch) return;
  console.error(`the cluster is at ${describeMap(next)}; following it`);
  forgive(everyNode(next).map((n) => addressOf(next, n.name)));
  Object.assign(view, viewOf(next, [], next.replicas));
}
