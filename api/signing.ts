// api/signing.ts: how an operator's request proves that its sender holds the
// cluster secret without sending it. The client signs (operator/), the shard
// checks (shard/secret.ts); both derive their keys here.
//
// The secret itself never travels: a request carries
//
//   Authorization: CH-HMAC t=<unix seconds>, mac=<hex>
//
// a MAC, under a key derived from the secret for signing alone, over the
// method, the node it is for (Host), the path, the epoch it acts under
// (Cluster-Epoch), its preconditions (If-Match, If-None-Match), a SHA-256 of
// its body, and the time. A node that has not proved it holds the secret (a
// typo in --to, a stranger on the port) learns from a request nothing it can
// reuse elsewhere: not the secret, and no MAC that fits another request or
// another node. The ASK words of shard/placement.ts, the map's MAC and a
// node's proof use keys derived apart, so that none of them is ever a valid
// signature, or the reverse.
//
// ONE NODE PER SIGNATURE. As AWS's Signature Version 4 does, the MAC covers
// Host: the address the operator sent the request to, in the URL's canonical
// form (hostOf), which fetch() sends. That is the node's address in the map
// (api/cluster-map.ts, rule 7) or a failover's --to. A shard takes a signed
// request only when its Host is one of the shard's own addresses
// (shard/secret.ts), so a request signed for one node is refused at every
// other, whatever they share: the secret, the shard, the epoch. A shard's own
// addresses:
//
//   N1. HOST:PORT, as it listens.
//   N2. On localhost, 127.0.0.1 or ::1, all three at its port: one machine,
//       one port, one node, whichever of the names the operator typed.
//   N3. On a wildcard HOST (0.0.0.0, ::), every address of the machine's
//       interfaces at its port.
//   N4. Each host:port in CLUSTER_ANNOUNCE (comma-separated): the names by
//       which others reach it through a tunnel or a proxy, as Redis's
//       cluster-announce-ip (docs/operations.md, "Across machines"). A proxy
//       must pass Host on as the client sent it (stunnel does: it works below
//       HTTP).
//
// A node's shard is not enough: a primary and its standby are one shard, and
// a fence meant for the old primary, replayed at the standby just promoted,
// would stop the shard. A node's name in the map is not enough either: the
// standby that a failover promotes is not in the map yet.
//
// A PROOF (GET /cluster/proof?nonce=, shard/replication.ts): before a
// failover fences anything or sends its --to a signed step, the --to answers
// the operator's fresh nonce with a MAC over the nonce, the address it was
// asked at (it answers only at its own, N1-N4) and the shard it says it is.
// A stranger cannot make one; one that relays the question to the real
// standby gets a proof for the standby's address, not its own.

import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/** The scheme's name in Authorization (matched in any case, RFC 9110 §11.1). */
export const SCHEME = 'CH-HMAC';

/**
 * How far a request's time may be from the shard's: NTP keeps machines'
 * clocks milliseconds apart, and a request takes at most the client's 10 s
 * timeout, so 60 s either way refuses no honest request, while a recorded one
 * is good for a minute at most, at its one node. Within it, a replay can only
 * repeat what the operator did there: the map and the move steps are a
 * compare-and-set on an epoch or a version, which the first delivery used up,
 * and a failover's steps are idempotent, each naming its shard and epoch.
 */
export const WINDOW_MS = 60_000;

/** The key for one use of the secret: 'sign' for requests, 'ask' for ASK words, 'map' for a cluster map's MAC, 'prove' for a node's proof. */
export function derivedKey(secret: string, use: 'sign' | 'ask' | 'map' | 'prove'): Buffer {
  return createHmac('sha256', secret).update(`cluster secret: ${use}`).digest();
}

/**
 * A node's address as the Host header of a request to it says it, or
 * undefined when it is no address: lower case, IPv6 in brackets and
 * shortened, no :80. fetch() sends exactly this.
 */
export function hostOf(address: string): string | undefined {
  return URL.canParse(`http://${address}/`) ? new URL(`http://${address}/`).host : undefined;
}

/** What a request's MAC covers, in one string. `host`: the node it is for, as hostOf writes it. */
export type Signed = { method: string; host: string; path: string; epoch?: string; ifMatch?: string; ifNoneMatch?: string; body: string | Buffer };

function mac(secret: string, r: Signed, t: number): string {
  const digest = createHash('sha256').update(r.body).digest('hex');
  const text = [r.method.toUpperCase(), r.host, r.path, r.epoch ?? '', r.ifMatch ?? '', r.ifNoneMatch ?? '', digest, String(t)].join('\n');
  return createHmac('sha256', derivedKey(secret, 'sign')).update(text).digest('hex');
}

/** The Authorization header of a request, signed now (or at `nowMs`). */
export function sign(secret: string, r: Signed, nowMs = Date.now()): string {
  const t = Math.floor(nowMs / 1000);
  return `${SCHEME} t=${t}, mac=${mac(secret, r, t)}`;
}

/** Why an Authorization header does not prove the secret for this request, or undefined when it does. */
export function signatureProblem(secret: string, r: Signed, authorization: string, nowMs = Date.now()): string | undefined {
  const m = /^CH-HMAC +t=(\d{1,12}), *mac=([0-9a-f]{64})$/i.exec(authorization.trim());
  if (m === null) return `send Authorization: ${SCHEME} t=<unix seconds>, mac=<hex> (api/signing.ts)`;
  const t = Number(m[1]);
  if (Math.abs(t * 1000 - nowMs) > WINDOW_MS) return `the request was signed at ${t}, over ${WINDOW_MS / 1000} s from this shard's clock (${Math.floor(nowMs / 1000)}): check both clocks`;
  const ok = timingSafeEqual(Buffer.from(m[2]!.toLowerCase(), 'hex'), Buffer.from(mac(secret, r, t), 'hex'));
  return ok ? undefined : 'the signature does not match this request under the cluster secret';
}

/** A node's proof that it holds the secret: a MAC over the operator's nonce, the node's address (as hostOf writes it) and its shard. */
export function proof(secret: string, nonce: string, host: string, shard: string): string {
  return createHmac('sha256', derivedKey(secret, 'prove')).update(['proof', nonce, host, shard].join('\n')).digest('hex');
}

/** Does `mac` prove the secret for this nonce, node and shard? In constant time. */
export function proves(secret: string, mac: unknown, nonce: string, host: string, shard: string): boolean {
  return typeof mac === 'string' && /^[0-9a-f]{64}$/.test(mac) && timingSafeEqual(Buffer.from(mac, 'hex'), Buffer.from(proof(secret, nonce, host, shard), 'hex'));
}
