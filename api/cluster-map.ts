// api/cluster-map.ts: what a cluster map is, and what it promises.
//
// Every shard of a cluster holds the map in its own database (schema.sql),
// and every client routes by it. The map names the nodes as clients name
// them, each bound to the shard that answers there; the replicas; an epoch
// that only grows; and, while a reshard runs, the ring it moves records to
// and who runs it. So the cluster, not each client's flags, says where an id
// lives, and a client with an older map is told so at its first request.
//
// THE INVARIANT: at no instant do two shards accept a write for one id, and
// no id ever has two live records. The shards keep it by nine rules, which
// the code cites by number where it enforces them (rules 1-4 and 8 in
// shard/placement.ts, rules 5 and 6 in shard/cluster.ts, rule 7 here and
// wherever a request is sent: client/cluster.ts, operator/; rule 9 in
// shard/converge.ts, and where the operator signs a map, operator/maps.ts):
//
//   1. A shard with no map serves every id: one server, no cluster.
//   2. A shard with a map serves an id only where the map places it. Any
//      other shard answers 421 Misdirected Request, naming the owner and
//      carrying its map, so that a client with an older map catches up.
//   3. While a reshard moves an id from its old owner S (under `nodes`) to
//      its new owner T (under `moving.nodes`):
//      a. S serves the id while it holds it live. For an id it does not hold
//         it answers 421 "ask T", and it never creates one: once S has given
//         an id up, it does not get it back within the epoch.
//      b. T serves the id when it holds it live. When it does not, it accepts
//         the id only from a request that S sent there (the Asking header,
//         naming this epoch), and only if it has no row of that id at all.
//   4. A move (operator/move.ts) never makes a second live record. The copy
//      arrives at T as incoming, which no client can see or change. S turns
//      its record into moved, in one statement conditional on its version;
//      only then does T turn the copy live. In between, neither serves the
//      id: a client hears 503 and tries again.
//   5. A shard takes a new map only at a higher epoch, and between requests,
//      never during one. A map with no reshard under way is refused while an
//      incoming copy remains; taking it forgets the moved rows.
//   6. Nothing drops a node from the ring unasked. A new map's ring (`nodes`
//      and `replicas`) is the old map's ring, or, while a reshard runs, the
//      ring it moves to (`moving`), short only of the nodes that the new map
//      records as forgotten (`forgot`). A map that starts a reshard keeps the
//      old ring beside the new one. A forget is never unrecorded: every later
//      map carries it. A node is forgotten only when it is gone for good
//      (operator/forget.ts): the records that lived only on it are lost, and
//      the map says so. Redis Cluster's CLUSTER FORGET and Cassandra's
//      nodetool removenode are the same act.
//   7. A node's place on the ring is its name; where it answers is its
//      address (the name itself unless the map gives another). The ring
//      hashes names only, so a failover, which gives a name a new address at
//      a higher epoch, moves no record, and the ring stays the 2012 example's.
//      Whatever sends a request to a node sends it to its address.
//   8. Only a writable machine serves ids. A read-only one (a standby, or an
//      old primary that was fenced) writes nothing, not even when it loads a
//      map, and answers every id with 421 naming the owner at the address its
//      map gives, or with 503 when that address is its own: it knows no better.
//      A standby becomes writable only when promoted (shard/replication.ts).
//   9. A shard that learns of a newer map takes it without an operator, as
//      Redis nodes spread a newer config epoch. A client names the epoch it
//      routes by in every request (Cluster-Map-Epoch); a writable shard at a
//      lower one fetches GET /cluster/map, in the background, one fetch at a
//      time and a few a second at most, from the other nodes of its own map,
//      at the addresses its own map gives (never from an address a client
//      names). It takes a map only when all of these hold: the node it came
//      from answered as the shard its own map binds that name to (so the map
//      is what a node of this cluster holds); its epoch is higher; no reshard
//      is under way in it (a moving map is the operator's alone to install,
//      in its order, and its take may be undone); and, where the cluster has
//      a secret, it carries a MAC under that secret (`mac`, which the
//      operator computes over the rest of the map as it puts it on the
//      nodes), so that no client and no stranger can make a shard take a map
//      it forged. It takes it by the one path the operator's maps take, so
//      rules 5 and 6 hold as for any other.
//
// THE OPERATOR'S LOCK. Every change of the map by an operator (a reshard's
// take, renewal and end, a failover, a forget, a repair) keeps four more
// rules, which operator/maps.ts and operator/lease.ts cite:
//
//   10. One installer, one order. A change is a compare-and-set install of a
//      new map over the map it replaces (operator/maps.ts). It goes first to
//      that map's LOCK NODE: the first node of its `nodes` that the new map
//      does not forget, at its address in the new map. Of two changes over
//      one map, exactly one passes the lock node; the other has changed
//      nothing, reads the cluster again, and builds on what it finds. The
//      lock node is the replaced map's, so two operators who finish one dead
//      reshard, forward or back, meet at the same node, whatever else each
//      read. After the lock node, every other node gets the new map over the
//      older one it holds; a node that holds a newer one keeps it: only a
//      change that passed the lock node after this one can have put it there.
//      While the lock node cannot be reached, the only changes that can pass
//      are its own failover (which reaches it at its new address) and its
//      forget (which makes the next node the lock node).
//   11. The lease. While a reshard runs, its map's `moving.by` and
//      `moving.leaseMs` are the cluster's lease: the holder puts the same map
//      again on every node, every third of it. No other reshard, and no
//      forget, starts until the lease has run out on every node, or the
//      holder's process is seen dead on its own machine; then either may take
//      the lease over, through the lock node (rule 10).
//   12. A failover joins a reshard, never waits for it: it moves no record
//      and changes one address (rule 7), and a machine's loss cannot wait. Its
//      map is the map it found at the next epoch, with the one address
//      changed and everything else kept, the reshard's `moving` and lease
//      included. The holder adopts it (operator/lease.ts) at its next
//      renewal, or when its end loses the lock node to it, and ends over it.
//      A failover that loses the lock node (to a reshard's take or end, a
//      forget, or another failover) reads again and puts its address into
//      the map it found.
//   13. Give-up. An install that stops after the lock node has left the new
//      map on the lock node, where the next reader finds it as the newest, so
//      the same command run again (or any later change) brings the other
//      nodes up to it. Waits count only the time the operator ran
//      (client/http.ts, lostMs): a stopped operator blames no node.
//
// Redis Cluster works the same way: a config epoch, -MOVED for a key on the
// wrong node, and during a slot migration -ASK from the source for a key it no
// longer has, which the target accepts only after ASKING.

import { createHmac, timingSafeEqual } from 'node:crypto';
import { HashRing } from '../ring.ts';
import { plural } from './words.ts';
import { Invalid, preview } from './expense.ts';
import { derivedKey } from './signing.ts';
import { nodeProblem } from './node.ts';

/**
 * A node as clients name it, bound to the shard identity that answered there
 * (GET /healthz), and where it answers now when that is not its name (rule 7).
 */
export type MapNode = { name: string; shard: string; address?: string };

/**
 * Who holds a reshard's lease (rule 11, operator/lease.ts): its host, for people; its machine,
 * which tells whether its pid can be checked from here ('' where it cannot);
 * its process and start time.
 */
export type Holder = { host: string; machine: string; pid: number; started: string };

/** A node that the cluster forgot (rule 6): its name, the shard that answered there, and the map's epoch that forgot it. */
export type Forgot = { name: string; shard: string; epoch: number };

export type ClusterMap = {
  epoch: number;
  nodes: MapNode[];
  replicas: number;
  /** While a reshard runs: the ring it moves records to, who runs it, and its lease. */
  moving?: { nodes: MapNode[]; replicas: number; by: Holder; leaseMs: number };
  /** The nodes forgotten so far, oldest first: absent until the first forget (rule 6). */
  forgot?: Forgot[];
  /** Rule 9: HMAC-SHA256 of the rest of the map under the cluster secret, as hex; the operator adds it. */
  mac?: string;
};

// Bounds that keep a typo from eating a machine: a ring of a million points
// takes about a second and 200 MB to build. A shard builds its map's rings
// while it answers nothing else, so a map's rings are ten times smaller.
export const MAX_REPLICAS = 10_000;
export const MAX_POINTS = 1_000_000;
const MAX_MAP_POINTS = 100_000;
// Epochs keep headroom: every map change adds 1 or 2, and an epoch must stay a
// safe integer (2^53 - 1) for JSON, the ETag and MySQL's BIGINT alike. A map
// taken at 2^53 - 1 would refuse every later one, with only SQL to get out.
// 2^52 leaves 2^52 changes: a change a microsecond for 142 years.
export const MAX_EPOCH = 2 ** 52;

/**
 * A map from JSON, checked, in canonical form (the same map always
 * serialises the same way). Throws Invalid, naming the problem.
 */
export function checkMap(value: unknown): ClusterMap {
  const m = object(value, 'the map');
  if (!Number.isSafeInteger(m.epoch) || (m.epoch as number) < 1 || (m.epoch as number) > MAX_EPOCH) {
    throw new Invalid(`epoch must be a whole number from 1 to ${MAX_EPOCH} (2^52, so that every later map has room to grow), got ${preview(m.epoch)}`);
  }
  const map: ClusterMap = { epoch: m.epoch as number, nodes: nodes(m.nodes, 'nodes'), replicas: replicas(m.replicas, m.nodes as unknown[]) };
  if (m.moving !== undefined) {
    const moving = object(m.moving, 'moving');
    const by = object(moving.by, 'moving.by');
    if (typeof by.host !== 'string' || typeof by.machine !== 'string' || !Number.isSafeInteger(by.pid) || typeof by.started !== 'string') {
      throw new Invalid('moving.by must be {"host": string, "machine": string, "pid": integer, "started": string}');
    }
    if (!Number.isSafeInteger(moving.leaseMs) || (moving.leaseMs as number) < 1) throw new Invalid(`moving.leaseMs must be a positive whole number, got ${preview(moving.leaseMs)}`);
    map.moving = {
      nodes: nodes(moving.nodes, 'moving.nodes'),
      replicas: replicas(moving.replicas, moving.nodes as unknown[]),
      by: { host: by.host, machine: by.machine, pid: by.pid as number, started: by.started },
      leaseMs: moving.leaseMs as number,
    };
  }
  if (m.forgot !== undefined) map.forgot = forgotten(m.forgot, map);
  if (m.mac !== undefined) {
    if (typeof m.mac !== 'string' || !/^[0-9a-f]{64}$/.test(m.mac)) throw new Invalid(`mac must be 64 hex digits (HMAC-SHA256), got ${preview(m.mac)}`);
    map.mac = m.mac;
  }
  // One name, one shard, one address, in both rings: otherwise one shard would count as two nodes.
  const shardOf = new Map<string, string>();
  const nameOf = new Map<string, string>();
  const at = new Map<string, string>();
  const nameAt = new Map<string, string>();
  for (const node of [...map.nodes, ...(map.moving?.nodes ?? [])]) {
    const { name, shard } = node;
    const address = node.address ?? name;
    if ((shardOf.get(name) ?? shard) !== shard || (nameOf.get(shard) ?? name) !== name) {
      throw new Invalid(`the map binds ${name} and shard ${shard} inconsistently: each shard must have exactly one name`);
    }
    if ((at.get(name) ?? address) !== address) throw new Invalid(`the map gives ${name} two addresses, ${at.get(name)} and ${address}`);
    if ((nameAt.get(address) ?? name) !== name) throw new Invalid(`the map puts ${nameAt.get(address)} and ${name} at one address, ${address}`);
    shardOf.set(name, shard);
    nameOf.set(shard, name);
    at.set(name, address);
    nameAt.set(address, name);
  }
  return map;
}

function object(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Invalid(`${what} must be a JSON object, got ${preview(v)}`);
  return v as Record<string, unknown>;
}

function nodes(v: unknown, what: string): MapNode[] {
  if (!Array.isArray(v) || v.length === 0) throw new Invalid(`${what} must be a non-empty list of {"name": "host:port", "shard": id}`);
  const seen = new Set<string>();
  return v.map((n) => {
    const { name, shard, address } = object(n, `an entry of ${what}`);
    const why = typeof name === 'string' ? nodeProblem(name) : `${preview(name)} is not host:port`;
    if (why !== undefined) throw new Invalid(`${what}: ${why}`);
    if (typeof shard !== 'string' || !/^[\w-]{1,64}$/.test(shard)) throw new Invalid(`${what}: ${name} has no shard identity, got ${preview(shard)}`);
    if (seen.has(name as string)) throw new Invalid(`${what} names ${name} twice`);
    seen.add(name as string);
    // Rule 7: an address is checked as a name is; one equal to the name is left out (the canonical form).
    if (address === undefined || address === name) return { name: name as string, shard };
    const bad = typeof address === 'string' ? nodeProblem(address) : `${preview(address)} is not host:port`;
    if (bad !== undefined) throw new Invalid(`${what}: the address of ${name}: ${bad}`);
    return { name: name as string, shard, address: address as string };
  });
}

/** The forgot list: each a shard gone for good, forgotten at or before this epoch, and in neither ring. */
function forgotten(v: unknown, map: ClusterMap): Forgot[] {
  if (!Array.isArray(v) || v.length === 0) throw new Invalid('forgot must be a non-empty list of {"name": "host:port", "shard": id, "epoch": n}');
  const inRing = new Set(everyNode(map).map((n) => n.shard));
  const seen = new Set<string>();
  return v.map((f) => {
    const { name, shard, epoch } = object(f, 'an entry of forgot');
    const why = typeof name === 'string' ? nodeProblem(name) : `${preview(name)} is not host:port`;
    if (why !== undefined) throw new Invalid(`forgot: ${why}`);
    if (typeof shard !== 'string' || !/^[\w-]{1,64}$/.test(shard)) throw new Invalid(`forgot: ${name} has no shard identity, got ${preview(shard)}`);
    if (!Number.isSafeInteger(epoch) || (epoch as number) < 1 || (epoch as number) > map.epoch) throw new Invalid(`forgot: ${name} must name the epoch that forgot it, from 1 to ${map.epoch}, got ${preview(epoch)}`);
    if (inRing.has(shard) || seen.has(shard)) throw new Invalid(`forgot: shard ${shard} (${name}) is forgotten, so it cannot be in a ring or forgotten twice`);
    seen.add(shard);
    return { name: name as string, shard, epoch: epoch as number };
  });
}

function replicas(v: unknown, nodes: unknown[]): number {
  if (!Number.isSafeInteger(v) || (v as number) < 1 || (v as number) > MAX_REPLICAS) throw new Invalid(`replicas must be 1 to ${MAX_REPLICAS}, got ${preview(v)}`);
  if ((v as number) * nodes.length > MAX_MAP_POINTS) throw new Invalid(`replicas ${v} with ${nodes.length} nodes makes more than the ${MAX_MAP_POINTS} points a cluster map may have`);
  return v as number;
}

/** Every node of the map, of both rings while a reshard runs, each once. */
export function everyNode(map: ClusterMap): MapNode[] {
  const byName = new Map([...map.nodes, ...(map.moving?.nodes ?? [])].map((n) => [n.name, n]));
  return [...byName.values()];
}

/** Rule 7: where the node named `name` answers under this map (its name, unless the map says otherwise). */
export function addressOf(map: ClusterMap, name: string): string {
  return everyNode(map).find((n) => n.name === name)?.address ?? name;
}

/** Where an id lives: its owner, and while a reshard moves it elsewhere, its new owner (rule 3). */
export type Placement = { owner: MapNode; target?: MapNode };

/** The map's rings, built once, as a function from id to placement. */
export function placer(map: ClusterMap): (id: string) => Placement {
  const byName = new Map(everyNode(map).map((n) => [n.name, n]));
  const ring = new HashRing(map.nodes.map((n) => n.name), map.replicas);
  const next = map.moving && new HashRing(map.moving.nodes.map((n) => n.name), map.moving.replicas);
  // Outside a reshard an id's placement is one of these, made once per map; none is made per id.
  const alone = new Map([...byName.values()].map((n) => [n.name, Object.freeze({ owner: n })]));
  if (next === undefined) return (id) => alone.get(ring.get(id))!;
  return (id) => {
    const owner = byName.get(ring.get(id))!;
    const target = byName.get(next.get(id))!;
    return target === owner ? alone.get(owner.name)! : { owner, target };
  };
}

/** True when two maps say the same thing (checkMap writes every map in one form). A MAC says nothing: it is left out. */
export function sameMap(a: ClusterMap, b: ClusterMap): boolean {
  return JSON.stringify(unsigned(a)) === JSON.stringify(unsigned(b));
}

/** The map without its MAC, in canonical form: what the MAC is computed over. */
function unsigned(map: ClusterMap): ClusterMap {
  const { mac: _, ...rest } = checkMap(map);
  return rest;
}

/** Rule 9: the map's MAC under the cluster secret's key for maps, over its canonical form without a MAC. */
function macOf(map: ClusterMap, secret: string): string {
  return createHmac('sha256', derivedKey(secret, 'map')).update(JSON.stringify(unsigned(map))).digest('hex');
}

/** Rule 9: the map as the operator puts it on the nodes: with its MAC where the cluster has a secret (any MAC it had is replaced). */
export function signMap(map: ClusterMap, secret: string | undefined): ClusterMap {
  const plain = unsigned(map);
  return secret === undefined ? plain : { ...plain, mac: macOf(plain, secret) };
}

/** Rule 9: true when the map carries a MAC under `secret` (compared in constant time). */
export function signedBy(map: ClusterMap, secret: string): boolean {
  if (map.mac === undefined) return false;
  return timingSafeEqual(Buffer.from(map.mac, 'hex'), Buffer.from(macOf(map, secret), 'hex'));
}

/**
 * Rule 6: why `next` may not follow `now` (a ring changed with no move under
 * way and no recorded forget), or undefined when it may. The ring is what
 * clients hash, so it is compared as names and replicas.
 */
export function ringChange(now: ClusterMap, next: ClusterMap): string | undefined {
  const kept = (now.forgot ?? []).filter((f) => !(next.forgot ?? []).some((g) => g.shard === f.shard));
  if (kept.length > 0) return `it drops the record that ${kept.map((f) => f.name).join(', ')} was forgotten at epoch ${kept[0]!.epoch}: a forget is never unrecorded`;
  // Only this map's own forgets excuse a node's absence: a name forgotten once may come back as a new shard.
  const forgotNow = new Set((next.forgot ?? []).filter((f) => !(now.forgot ?? []).some((g) => g.shard === f.shard)).map((f) => f.name));
  const names = (nodes: MapNode[]) => nodes.map((n) => n.name).filter((name) => !forgotNow.has(name)).sort().join(',');
  const same = (a: MapNode[], ra: number, b: MapNode[], rb: number) => ra === rb && names(a) === names(b);
  const rings = [{ nodes: now.nodes, replicas: now.replicas }, ...(now.moving === undefined ? [] : [now.moving])];
  if (rings.some((r) => same(next.nodes, next.replicas, r.nodes, r.replicas))) return undefined;
  const lost = now.nodes.filter((n) => !next.nodes.some((m) => m.name === n.name)).map((n) => n.name);
  const what = lost.length > 0 ? `it drops ${lost.join(', ')} from the ring` : 'it changes the ring';
  return `${what} with no move under way and no recorded forget: records there would be invisible to every client`;
}

/** "epoch 3: 4 nodes, replicas 1", and the reshard under way, for messages. */
export function describeMap(map: ClusterMap): string {
  const ring = (nodes: MapNode[], replicas: number) => `${plural(nodes.length, 'node')}, replicas ${replicas}`;
  const moving = map.moving && `, moving to ${ring(map.moving.nodes, map.moving.replicas)}`;
  return `epoch ${map.epoch}: ${ring(map.nodes, map.replicas)}${moving ?? ''}`;
}
