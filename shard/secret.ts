// shard/secret.ts: the cluster secret. Where a cluster has one, the routes
// that change another shard's records or the cluster's shape need a request
// signed under it (api/signing.ts), and the old owner's ASK word carries a
// MAC under a key derived from it (shard/placement.ts). And the MySQL
// password, read from its file by the same rule.

import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { isIPv6 } from 'node:net';
import { networkInterfaces } from 'node:os';
import { secretFileProblem } from '../api/secret-file.ts';
import { hostOf, signatureProblem } from '../api/signing.ts';

// 128 bits, written as hex, at the least.
const SECRET_MIN_LENGTH = 32;

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

/** The cluster secret from its file (never from the command line, where ps would show it), or undefined. */
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
 * the shard has none). The operator's tools sign each request for the node
 * they send it to (api/signing.ts), so that the secret never travels and a
 * signature is good at `address` (this server, N1-N4) alone. A request by
 * hand (curl) may still send the secret itself, Authorization: Bearer, over
 * a link it trusts. Schemes' names are case-insensitive (RFC 9110 §11.1).
 */
export function unauthorized(req: IncomingMessage, body: Buffer, secret: string | undefined, address: string): string | undefined {
  if (secret === undefined) return undefined;
  const authorization = req.headers.authorization ?? '';
  const bearer = /^Bearer +(\S+)$/i.exec(authorization)?.[1];
  if (bearer !== undefined) return sameSecret(bearer, secret) ? undefined : 'that is not the cluster secret';
  const header = (name: string) => (typeof req.headers[name] === 'string' ? (req.headers[name] as string) : undefined);
  const host = hostOf(req.headers.host ?? '') ?? '';
  const problem = signatureProblem(secret, { method: req.method ?? '', host, path: req.url ?? '', epoch: header('cluster-epoch'), ifMatch: header('if-match'), ifNoneMatch: header('if-none-match'), body }, authorization);
  // Checked after the MAC, so that only a holder of the secret learns this server's addresses.
  return problem ?? misdirected(host, address);
}

/**
 * Why a request for `host` is not for this server at `address`, or undefined
 * when it is (api/signing.ts, N1-N4). Its addresses are named only to whom
 * `tell`: a holder of the secret.
 */
export function misdirected(host: string, address: string, tell = true): string | undefined {
  const own = ownAddresses(address);
  if (own.includes(host)) return undefined;
  return (
    `the request is for ${host || 'no Host'}, ${tell ? `and this server is ${own.join(', ')}` : 'which is not this server'}: a signature or a proof is good at its one node (api/signing.ts). ` +
    `If ${host || 'that name'} does reach this server (a tunnel, a proxy), start it with CLUSTER_ANNOUNCE=${host || 'host:port'}`
  );
}

const LOOPBACK = ['localhost', '127.0.0.1', '[::1]'];
const WILDCARD = ['0.0.0.0', '[::]'];

/** This server's own addresses, as hostOf writes them (api/signing.ts, N1-N4). `address`: HOST:PORT as it listens. */
export function ownAddresses(address: string, announce = process.env.CLUSTER_ANNOUNCE ?? ''): string[] {
  const at = address.lastIndexOf(':');
  const [host, port] = [address.slice(0, at), address.slice(at + 1)];
  const bracketed = isIPv6(host) ? `[${host}]` : host;
  const self = hostOf(`${bracketed}:${port}`);
  const names = [self ? new URL(`http://${self}`).hostname : bracketed];
  if (LOOPBACK.includes(names[0]!)) names.push(...LOOPBACK);
  if (WILDCARD.includes(names[0]!)) {
    names.push(...LOOPBACK, ...Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((i) => (i.family === 'IPv6' ? `[${i.address}]` : i.address))));
  }
  const announced = announce.split(',').map((a) => a.trim()).filter((a) => a !== '');
  return [...new Set([...names.map((name) => hostOf(`${name}:${port}`)), ...announced.map(hostOf)].filter((a) => a !== undefined))];
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

