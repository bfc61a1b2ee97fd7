// shard/preconditions.ts: conditional requests (RFC 9110 §13). A write goes
// ahead only if the record is still the version the client last saw (its
// ETag), so that no one silently overwrites a change they have not seen: a
// compare-and-set over HTTP.

import type { IncomingMessage } from 'node:http';
import { etag, preview } from '../api/expense.ts';
import { HttpError } from './http.ts';

/** The request's conditions: If-Match (these versions, or * for any), and If-None-Match as sent. */
export type Conditions = { ifMatch?: string[] | '*'; ifNoneMatch?: string };

export function preconditions(req: IncomingMessage): Conditions {
  const ifMatch = req.headers['if-match']?.trim();
  const ifNoneMatch = req.headers['if-none-match']?.trim();
  if (ifMatch === undefined || ifMatch === '*') return { ifMatch, ifNoneMatch };
  const versions: string[] = [];
  for (const tag of ifMatch.split(',').map((t) => t.trim())) {
    // A weak tag (W/"...") never matches under the strong comparison that writes need.
    if (/^W\/"[^"]*"$/.test(tag)) continue;
    const m = /^"([0-9a-f]{16})"$/.exec(tag);
    if (m === null) throw new HttpError(400, `If-Match must list entity tags like "0123456789abcdef", got ${preview(tag)}`);
    versions.push(m[1]!);
  }
  return { ifMatch: versions, ifNoneMatch };
}

/** If-None-Match, which here can only be * ("no record at all"). */
export function star(ifNoneMatch: string): true {
  if (ifNoneMatch !== '*') throw new HttpError(400, `If-None-Match: only * is supported here, got ${preview(ifNoneMatch)}`);
  return true;
}

/**
 * Throws unless a stored record at `version` meets the conditions, taken in
 * RFC 9110's order (§13.2.2): If-Match first; then If-None-Match: *, which no
 * stored record meets.
 */
export function meets(id: string, version: string, { ifMatch, ifNoneMatch }: Conditions): void {
  if (Array.isArray(ifMatch) && !ifMatch.includes(version)) throw preconditionFailed(id, version);
  if (ifNoneMatch !== undefined && star(ifNoneMatch)) throw preconditionFailed(id, version);
}

/** 412: the record is not what the request expected; here is what it is. */
export function preconditionFailed(id: string, version: string | undefined): HttpError {
  if (version === undefined) return new HttpError(412, `the expense ${JSON.stringify(id)} is not what this request expects`);
  return new HttpError(412, `the expense ${JSON.stringify(id)} is at version ${etag(version)}, not the one this request expects; GET it, then send the change again`, {
    ETag: etag(version),
  });
}
