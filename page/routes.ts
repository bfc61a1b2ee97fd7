// page/routes.ts: the live page, served by any shard: GET / and its script,
// and the read-only routes it draws from. Nothing here changes anything or
// needs the cluster secret: the map, each node's health and counts, and
// where an id would live are what any client may read; no record's data.
//
// The ring's layout has one source, lab/ring-svg.ts, the code of `map --svg`:
// the shard draws the picture of the map it holds, and the page shows it. So
// the browser runs no copy of the layout and no MD5 of its own: where an id
// lives is ring.ts's answer, asked of the shard (GET /cluster/place/ID).

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { addressOf, everyNode, type ClusterMap } from '../api/cluster-map.ts';
import { nodesOf, ringSvg } from '../lab/ring-svg.ts';
import { fraction, HashRing, position } from '../ring.ts';
import type { Context, Route } from '../shard/context.ts';
import { HttpError, pathId, rejectBadId, type Reply } from '../shard/http.ts';
import { counts } from './counts.ts';
import { watch, type Seen } from './watch.ts';

// How often an open page asks for the cluster's state: a change of map shows within it.
const POLL_MS = 500;

// The page's own files only: no framework, nothing from elsewhere, and no inline script to allow.
const POLICY = "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** A file of this folder, read at its first request and kept. */
function file(name: string, type: string) {
  let text: string | undefined;
  return async (): Promise<Reply> => {
    text ??= readFileSync(new URL(name, import.meta.url), 'utf8');
    return { status: 200, body: text, headers: { 'Content-Type': type, 'Content-Security-Policy': POLICY, 'X-Content-Type-Options': 'nosniff', 'Cache-Control': 'no-cache' } };
  };
}

/** The map's rings, and its picture without ids, made once per map (a map's epoch names it: rule 5). */
let drawn: { epoch: number; ring: HashRing; next?: HashRing; svg: string } | undefined;

function rings(map: ClusterMap): NonNullable<typeof drawn> {
  if (drawn?.epoch === map.epoch) return drawn;
  const ring = new HashRing(map.nodes.map((n) => n.name), map.replicas);
  const next = map.moving && new HashRing(map.moving.nodes.map((n) => n.name), map.moving.replicas);
  drawn = { epoch: map.epoch, ring, next, svg: ringSvg(ring, [], { next }) };
  return drawn;
}

function held(c: Context): ClusterMap {
  if (c.held.map === undefined) throw new HttpError(404, `shard ${c.held.shard} holds no cluster map: it serves every id itself (rule 1), and has no ring to show`);
  return c.held.map;
}

// The state's ETag names what it is made of: this process, the map (its epoch names it), the
// machine's role, and what the nodes said. So a poll that changes nothing costs a 304, and no JSON.
const BOOT = randomBytes(6).toString('base64url');
let last: { tag: string; body: unknown } | undefined;

/** The cluster as this shard sees it: its map, every node as last seen, and a reshard's progress. 304 when nothing changed. */
async function live(c: Context): Promise<Reply> {
  const map = c.held.map;
  const watched = map && watch(map);
  const tag = `"${BOOT}.${map?.epoch ?? 0}.${watched?.version ?? 0}.${c.held.writable ? 'p' : 's'}"`;
  if (c.req.headers['if-none-match'] === tag) return { status: 304, headers: { ETag: tag } };
  if (last?.tag !== tag) {
    const here = { shard: c.held.shard, role: c.held.writable ? 'primary' : 'standby', address: c.address, pollMs: POLL_MS };
    last = { tag, body: map === undefined ? { ...here, map: null, nodes: [], progress: null } : { ...here, ...cluster(map, watched!.seen) } };
  }
  return { status: 200, body: last.body, headers: { ETag: tag, 'Cache-Control': 'no-cache' } };
}

function cluster(map: ClusterMap, seen: ReadonlyMap<string, Seen>) {
  const { ring, next } = rings(map);
  const byName = new Map(everyNode(map).map((n) => [n.name, n]));
  const nodes = nodesOf(ring, next).map(({ node, key, colour }) => {
    const address = addressOf(map, node);
    const s = seen.get(node);
    // What was seen at another address (before a failover) says nothing of this one.
    const said: Omit<Seen, 'answers'> & { answers: boolean | null } = s?.address === address ? s : { address, answers: null };
    const place = !ring.nodes.includes(node) ? 'joins' : next !== undefined && !next.nodes.includes(node) ? 'leaves' : 'serves';
    return { key, colour, name: node, shard: byName.get(node)!.shard, place, ...said };
  });
  const sum = (f: (n: (typeof nodes)[number]) => number | null | undefined) => nodes.reduce((t, n) => t + (f(n) ?? 0), 0);
  const progress = map.moving && { moved: sum((n) => n.moved), handsOff: sum((n) => n.handsOff), incoming: sum((n) => n.incoming), silent: nodes.filter((n) => !n.answers).length };
  const { mac: _, ...shown } = map;
  return { map: shown, nodes, progress: progress ?? null, forgot: map.forgot ?? [] };
}

/** The picture of the held map: `map --svg`'s, with the reshard under way, and with ?id= that id's walk to its owner. */
async function picture(c: Context): Promise<Reply> {
  const map = held(c);
  const id = c.query.get('id');
  const { ring, next, svg } = rings(map);
  if (id !== null) rejectBadId(id, 'id');
  const text = id === null ? svg : ringSvg(ring, [id], { next, walk: true });
  return { status: 200, body: text, headers: { 'Content-Type': 'image/svg+xml; charset=utf-8', 'Cache-Control': 'no-cache', 'X-Content-Type-Options': 'nosniff' } };
}

/** Where an id lives under the held map, by ring.ts: its hash, the point its walk clockwise ends at, and the owner. */
async function place(c: Context): Promise<Reply> {
  const map = held(c);
  const id = pathId(c.params);
  const { ring, next } = rings(map);
  const point = ring.pointOf(id);
  const node = (name: string) => ({ name, address: addressOf(map, name), key: nodesOf(ring, next).find((n) => n.node === name)!.key });
  const target = next?.get(id);
  const body = {
    epoch: map.epoch,
    id,
    hash: position(id),
    at: fraction(position(id)),
    point: { ...point, at: fraction(point.position) },
    owner: node(point.node),
    ...(target !== undefined && target !== point.node && { movesTo: node(target) }),
  };
  return { status: 200, body };
}

export const pageRoutes: Route[] = [
  [/^\/$/, { GET: file('index.html', 'text/html; charset=utf-8') }],
  [/^\/page\/live\.js$/, { GET: file('live.js', 'text/javascript; charset=utf-8') }],
  [/^\/cluster\/live$/, { GET: live }],
  [/^\/cluster\/ring\.svg$/, { GET: picture }],
  [/^\/cluster\/place\/([^/]+)$/, { GET: place }],
  [/^\/cluster\/counts$/, { GET: counts }],
];
