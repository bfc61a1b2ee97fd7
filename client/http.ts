// client/http.ts: how the client talks to one node, and how many at once.

import type { Expense } from '../db.ts';

export type Response = { status: number; body: any };

const TIMEOUT_MS = 10_000;

/**
 * One JSON request to one node ("host:port"). Resolves with any HTTP status;
 * rejects with a readable reason when the node cannot be reached at all.
 * Global fetch keeps connections alive between calls to the same node.
 */
export async function call(node: string, method: string, path: string, body?: unknown): Promise<Response> {
  let res: globalThis.Response;
  try {
    res = await fetch(`http://${node}${path}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
  } catch (err) {
    throw new Error(`cannot reach ${node}: ${reason(err)}`);
  }
  const text = await res.text();
  try {
    return { status: res.status, body: text === '' ? undefined : JSON.parse(text) };
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
export function problem(res: Response): string {
  return `HTTP ${res.status}${typeof res.body?.error === 'string' ? `: ${res.body.error}` : ''}`;
}

/** Runs fn over items with at most `limit` calls in flight. */
export async function eachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/**
 * True when two expenses hold the same data. The server returns amounts in
 * canonical form ("700.00" for "700"), so amounts compare as numbers: with at
 * most 12 significant digits, two different amounts are never the same double.
 */
export function sameExpense(a: Partial<Expense>, b: Partial<Expense>): boolean {
  return (
    a.id === b.id &&
    a.name === b.name &&
    a.email === b.email &&
    a.category === b.category &&
    a.description === b.description &&
    a.link === b.link &&
    Number(a.estimated_costs) === Number(b.estimated_costs) &&
    a.submit_date === b.submit_date
  );
}
