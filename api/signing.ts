// api/signing.ts: how an operator's request proves that its sender holds the
// cluster secret without sending it. The client signs (operator/), the shard
// checks (shard/secret.ts); both derive their keys here.
//
// The secret itself never travels: a request carries
//
//   Authorization: CH-HMAC t=<unix seconds>, mac=<hex>
//
// a MAC, under a key derived from the secret for signing alone, over the
// method, the path, the epoch it acts under (Cluster-Epoch), its
// preconditions (If-Match, If-None-Match), a SHA-256 of its body, and the
// time. A node that has not proved it holds the secret (a typo in --to, a
// stranger on the port) learns from a request nothing it can reuse
// elsewhere: not the secret, and no MAC that fits another request. The ASK
// words of shard/placement.ts use a second key, derived apart, so that no
// ASK word is ever a valid signature, or the reverse.

import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/** The scheme's name in Authorization (matched in any case, RFC 9110 §11.1). */
export const SCHEME = 'CH-HMAC';

/**
 * How far a request's time may be from the shard's: NTP keeps machines'
 * clocks milliseconds apart, and a request takes at most the client's 10 s
 * timeout, so 60 s either way refuses no honest request, while a recorded one
 * is good for a minute at most. Within it, a replay can only repeat what the
 * operator did: every operator's request is a compare-and-set on an epoch or
 * a version, which the first delivery used up.
 */
export const WINDOW_MS = 60_000;

/** The key for one use of the secret: 'sign' for requests, 'ask' for ASK words, 'map' for a cluster map's MAC. */
export function derivedKey(secret: string, use: 'sign' | 'ask' | 'map'): Buffer {
  return createHmac('sha256', secret).update(`cluster secret: ${use}`).digest();
}

/** What a request's MAC covers, in one string. */
export type Signed = { method: string; path: string; epoch?: string; ifMatch?: string; ifNoneMatch?: string; body: string | Buffer };

function mac(secret: string, r: Signed, t: number): string {
  const digest = createHash('sha256').update(r.body).digest('hex');
  const text = [r.method.toUpperCase(), r.path, r.epoch ?? '', r.ifMatch ?? '', r.ifNoneMatch ?? '', digest, String(t)].join('\n');
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
