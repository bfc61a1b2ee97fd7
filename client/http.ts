// client/http.ts: one JSON request to one node, signed when it is an operator's.

import { sign } from '../api/signing.ts';

export type Answer = { status: number; body: any; etag: string | undefined };

export const TIMEOUT_MS = 10_000;
// A node that fails this many requests in a row (no connection, or no
// answer in time) is given up for the rest of the run: a frozen node then
// costs one timeout, not one per record.
const STRIKES = 3;
const strikes = new Map<string, number>();
const givenUp = new Map<string, string>(); // node: why

/**
 * A request that got no answer: the node could not be reached, or was given
 * up. What it asked for may or may not have happened, unlike a request that
 * got an answer of any status.
 */
export class Unreachable extends Error {}

/**
 * One JSON request to one node ("host:port"). Resolves with any HTTP status;
 * rejects with a readable reason (Unreachable) when the node cannot be reached at all.
 * Global fetch keeps connections alive between calls to the same node.
 */
export async function call(node: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}, secret?: string): Promise<Answer> {
  const gone = givenUp.get(node);
  if (gone !== undefined) throw new Unreachable(`skipped: ${node} ${gone}`);
  const sent = body === undefined ? undefined : JSON.stringify(body);
  // An operator's request is signed, never sent with the secret itself (api/signing.ts).
  const signed: Record<string, string> =
    secret === undefined ? {} : { authorization: sign(secret, { method, path, epoch: headers['cluster-epoch'], ifMatch: headers['if-match'], ifNoneMatch: headers['if-none-match'], body: sent ?? '' }) };
  let res: Response;
  try {
    res = await fetch(`http://${node}${path}`, {
      method,
      headers: { ...(body === undefined ? headers : { 'content-type': 'application/json', ...headers }), ...signed },
      body: sent,
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
  } catch (err) {
    const why = reason(err);
    const n = (strikes.get(node) ?? 0) + 1;
    strikes.set(node, n);
    if (n >= STRIKES && !givenUp.has(node)) {
      givenUp.set(node, `stopped answering (${why}, ${n} times in a row), and was given up for the rest of this run`);
      console.error(`${node} ${givenUp.get(node)}`);
    }
    throw new Unreachable(`cannot reach ${node}: ${why}`);
  }
  strikes.set(node, 0);
  const text = await res.text();
  try {
    return { status: res.status, body: text === '' ? undefined : JSON.parse(text), etag: res.headers.get('etag') ?? undefined };
  } catch {
    throw new Error(`${node} answered HTTP ${res.status} with a body that is not JSON`);
  }
}

function reason(err: unknown): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e.name === 'TimeoutError') return `no answer within ${TIMEOUT_MS / 1000} s`;
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
}

/** The error message a node sent, or its status. */
export function problem(answer: Answer): string {
  return `HTTP ${answer.status}${typeof answer.body?.error === 'string' ? `: ${answer.body.error}` : ''}`;
}
