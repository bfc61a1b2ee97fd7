// shard/map-routes.ts: the cluster map over HTTP (api/cluster-map.ts). Anyone
// may read it; only the operator changes it, by compare-and-set on its epoch.

import { checkMap } from '../api/cluster-map.ts';
import { brokenMessage } from './cluster.ts';
import { HttpError, readJson, type Reply } from './http.ts';
import type { Context } from './context.ts';

/** The map this shard holds, its identity, its role (rule 8), and what is left of a reshard's lease by this shard's clock. */
export async function readMap({ held }: Context): Promise<Reply> {
  // A stored map that cannot be read: 503, with what the operator's tool needs to put one over it.
  if (held.broken !== undefined) {
    return { status: 503, body: { error: brokenMessage(held), shard: held.shard, map: null, leaseLeftMs: null, broken: held.broken }, headers: { ETag: `"${held.broken.epoch}"` } };
  }
  const leaseLeftMs = held.leaseUntil === undefined ? null : Math.max(0, held.leaseUntil - Date.now());
  const body = { shard: held.shard, role: held.writable ? 'primary' : 'standby', map: held.map ?? null, leaseLeftMs };
  return { status: 200, body, headers: held.map === undefined ? {} : { ETag: `"${held.map.epoch}"` } };
}

/** Rules 5 and 6: a new map, over the epoch the caller read (If-Match: "epoch"), or the first (If-None-Match: *). */
export async function writeMap(c: Context): Promise<Reply> {
  const ifMatch = c.req.headers['if-match']?.trim();
  const ifNoneMatch = c.req.headers['if-none-match']?.trim();
  const epoch = ifMatch === undefined ? undefined : /^"(\d{1,16})"$/.exec(ifMatch)?.[1];
  if ((epoch === undefined) === (ifNoneMatch !== '*')) {
    throw new HttpError(428, 'a new map needs If-Match: "<epoch>" with the epoch it replaces, or If-None-Match: * for a shard that has none');
  }
  const next = checkMap(readJson(c));
  const refusal = await c.cluster.install(next, epoch === undefined ? undefined : Number(epoch));
  const now = await c.cluster.load();
  const tag: Record<string, string> = now.map === undefined ? {} : { ETag: `"${now.map.epoch}"` };
  if (refusal === 'stale' && now.broken !== undefined) {
    throw new HttpError(412, `${brokenMessage(now)}; a map goes over it only with If-Match: "${now.broken.epoch}"`, { ETag: `"${now.broken.epoch}"` });
  }
  if (refusal === 'stale') throw new HttpError(412, `this shard's map is at ${now.map === undefined ? 'no epoch' : `epoch ${now.map.epoch}`}, not the one this request expects; read it again`, tag);
  if (refusal === 'older') throw new HttpError(409, `a map changes only to a higher epoch than ${now.map!.epoch}, or to itself (which renews the lease)`, tag);
  if (typeof refusal === 'object') {
    const how = 'To remove a node, move its records: node ch_client.ts reshard --to <the nodes that stay>; for a node that is gone for good, add --forget <it>';
    throw new HttpError(409, `rule 6: this shard refuses the map at epoch ${next.epoch}: ${refusal.ring}. ${how}`, tag);
  }
  if (refusal === 'incoming') throw new HttpError(409, 'copies of a move are still incoming here: finish the moves before ending the reshard', tag);
  return { status: 200, body: { shard: now.shard, map: now.map }, headers: tag };
}
