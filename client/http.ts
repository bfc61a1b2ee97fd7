// client/http.ts: how the client talks to one node, and how many at once.

import type { Expense } from '../db.ts';

export type Response = { status: number; body: any };

const TIMEOUT_MS = 10_000;

// fetch() will not connect to these ports (the Fetch standard's "bad ports").
const FETCH_BLOCKED_PORTS = new Set([
  1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101, 102, 103, 104, 109, 110, 111, 113, 115,
  117, 119, 123, 135, 137, 139, 143, 161, 179, 389, 427, 465, 512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587,
  601, 636, 989, 990, 993, 995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668, 6669,
  6679, 6697, 10080,
]);

/** Why a node ("host:port") cannot be used, or undefined if it can. */
export function unreachablePort(node: string): string | undefined {
  const port = Number(node.slice(node.lastIndexOf(':') + 1));
  if (port < 1 || port > 65535) return `port ${port} does not exist`;
  if (FETCH_BLOCKED_PORTS.has(port)) return `fetch() refuses to connect to port ${port} (a "bad port" in the Fetch standard); use another, such as ${port + 1}`;
  return undefined;
}

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

const FIELDS = ['id', 'name', 'email', 'category', 'description', 'link', 'estimated_costs', 'submit_date', 'status', 'decision_date'] as const;

/** True when two records, both as a server returned them, are the same in every field. */
export function identical(a: Expense, b: Expense): boolean {
  return FIELDS.every((f) => a[f] === b[f]);
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

/** A counter on one line of stderr, only for a person watching many records. */
export function progressLine(what: string, total?: number): { tick(): void; done(): void } {
  if (!process.stderr.isTTY || (total !== undefined && total < 100)) return { tick() {}, done() {} };
  let n = 0;
  return {
    tick() {
      if (++n % 100 === 0 || n === total) process.stderr.write(`\r${what} ${n}${total === undefined ? '' : `/${total}`}`);
    },
    done() {
      if (n >= 100) process.stderr.write('\n');
    },
  };
}
