// shard/secret.ts: the cluster secret. Where a cluster has one, the routes
// that change another shard's records or the cluster's shape need it, and the
// old owner's ASK word carries a MAC under it (shard/placement.ts).

import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';

// 128 bits, written as hex, at the least.
const SECRET_MIN_LENGTH = 32;

/** The cluster secret from its file (never from the command line, where ps would show it), or undefined. */
export function readSecret(path: string | undefined): string | undefined {
  if (path === undefined || path === '') return undefined;
  const secret = readFileSync(path, 'utf8').trim();
  if (secret.length < SECRET_MIN_LENGTH || /\s/.test(secret)) {
    throw new Error(`the cluster secret in ${path} must be one word of at least ${SECRET_MIN_LENGTH} characters (128 bits as hex)`);
  }
  return secret;
}

/** True when the request carries the secret (Authorization: Bearer), or the shard has none. */
export function authorized(req: IncomingMessage, secret: string | undefined): boolean {
  return secret === undefined || sameSecret(/^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1] ?? '', secret);
}

/** Compares in constant time (of equal-length digests), so that the time taken says nothing of the secret. */
export function sameSecret(sent: string, secret: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(sent), digest(secret));
}
