// shard/secret.ts: the cluster secret. Where a cluster has one, the routes
// that change another shard's records or the cluster's shape need a request
// signed under it (api/signing.ts), and the old owner's ASK word carries a
// MAC under a key derived from it (shard/placement.ts). And the MySQL
// password, read from its file by the same rule.

import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { isIPv6 } from 'node:net';
import { secretFileProblem } from '../api/secret-file.ts';
import { signatureProblem } from '../api/signing.ts';

// 128 bits, written as hex, at the least.
const SECRET_MIN_LENGTH = 32;

/** The cluster secret from its file (never from the command line, where ps would show it), or undefined. */
/**
 * The cluster secret of a server on `host`, or undefined. As Redis's protected
 * mode does: a shard that others can reach keeps its operator's routes shut,
 * so off loopback it must have one.
 */
export function secretFor(host: string, path: string | undefined): string | undefined {
  const secret = readSecret(path);
  if (secret === undefined && !isLoopback(host)) {
    throw new Error(
      `HOST=${host} lets other machines reach this shard, whose operator's routes (copies, the cluster map) then need a secret.\n` +
        `  Make one, readable by you alone, and name its file:\n` +
        `    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \\n' > cluster-secret)\n` +
        `    CLUSTER_SECRET_FILE=$PWD/cluster-secret HOST=${host} node server.ts\n` +
        `  start-shards.sh makes one in data/cluster-secret. See docs/operations.md.`,
    );
  }
  return secret;
}

export function readSecret(path: string | undefined): string | undefined {
  if (path === undefined || path === '') return undefined;
  const problem = secretFileProblem(path);
  if (problem !== undefined) throw new Error(problem);
  const secret = readFileSync(path, 'utf8').trim();
  if (secret.length < SECRET_MIN_LENGTH || /\s/.test(secret)) {
    throw new Error(`the cluster secret in ${path} must be one word of at least ${SECRET_MIN_LENGTH} characters (128 bits as hex)`);
  }
  return secret;
}

/**
 * Why the request does not prove the secret, or undefined when it does (or
 * the shard has none). The operator's tools sign each request
 * (api/signing.ts), so that the secret never travels. A request by hand
 * (curl) may still send the secret itself, Authorization: Bearer, over a
 * link it trusts. Schemes' names are case-insensitive (RFC 9110 §11.1).
 */
export function unauthorized(req: IncomingMessage, body: Buffer, secret: string | undefined): string | undefined {
  if (secret === undefined) return undefined;
  const authorization = req.headers.authorization ?? '';
  const bearer = /^Bearer +(\S+)$/i.exec(authorization)?.[1];
  if (bearer !== undefined) return sameSecret(bearer, secret) ? undefined : 'that is not the cluster secret';
  const header = (name: string) => (typeof req.headers[name] === 'string' ? (req.headers[name] as string) : undefined);
  return signatureProblem(secret, { method: req.method ?? '', path: req.url ?? '', epoch: header('cluster-epoch'), ifMatch: header('if-match'), ifNoneMatch: header('if-none-match'), body }, authorization);
}

/**
 * True for a HOST that only this machine can reach: localhost, ::1, and all
 * of 127.0.0.0/8, in any form listen() takes (127.1 is 127.0.0.1). The URL
 * parser writes an address in its one canonical form.
 */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  const v6 = host.replace(/^\[(.*)\]$/, '$1');
  if (isIPv6(v6)) return new URL(`http://[${v6}]`).hostname === '[::1]';
  return !host.includes(':') && URL.canParse(`http://${host}`) && /^127\.\d+\.\d+\.\d+$/.test(new URL(`http://${host}`).hostname);
}

/** Compares in constant time (of equal-length digests), so that the time taken says nothing of the secret. */
export function sameSecret(sent: string, secret: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(sent), digest(secret));
}

