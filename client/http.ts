// client/http.ts: one JSON request to one node, signed when it is an operator's.

import { setFlagsFromString } from 'node:v8';
import { hostOf, sign } from '../api/signing.ts';

export type Answer = { status: number; body: any; etag: string | undefined };

export const TIMEOUT_MS = 10_000;

/**
 * Called by a run of ch_client.ts, never on import: V8 would recompile
 * fetch's WebAssembly HTTP parser on a thread that keeps a short run from
 * exiting for 0.1 s (docs/performance.md).
 */
export function shortRun(): void {
  setFlagsFromString('--wasm-tiering-budget=1300000000');
}
// A node that fails this many requests in a row (no connection, or no
// answer in time) is given up for the rest of the run: a frozen node then
// costs one timeout, not one per record.
const STRIKES = 3;
const strikes = new Map<string, number>();
const givenUp = new Map<string, string>(); // node: why

// Time that counts only when this process runs. A stopped process (SIGSTOP,
// a long GC, a suspended laptop, a machine too busy to schedule it) reads no
// answer, however fast the node sent it: its timeouts would run out on
// answers waiting unread, and blame the node. A heartbeat that ticks every
// TICK_MS tells the two apart: a tick later than STALL_MS means this process
// did not run, and the time it lost does not count against any request.
const TICK_MS = 100;
const STALL_MS = 1_000;
// A failure this soon after a stall (a keep-alive connection that the node
// closed while we were stopped) is the stall's, not the node's.
const AFTER_STALL_MS = 2_000;
let heartbeat: { last: number; lost: number; lastStallEnd: number; largest: number } | undefined;

/** Starts the heartbeat at the first request, not at import: importing a module has no side effect. */
function clock(): NonNullable<typeof heartbeat> {
  if (heartbeat === undefined) {
    heartbeat = { last: performance.now(), lost: 0, lastStallEnd: -Infinity, largest: 0 };
    setInterval(() => lostMs(), TICK_MS).unref();
  }
  return heartbeat;
}

/** The time this process has lost to stalls so far; the heartbeat's tick, and any request, bring it up to now. */
export function lostMs(): number {
  const h = clock();
  const now = performance.now();
  const gap = now - h.last;
  if (gap > STALL_MS) {
    h.lost += gap - TICK_MS;
    h.lastStallEnd = now;
    h.largest = Math.max(h.largest, gap);
  }
  h.last = now;
  return h.lost;
}

/** The longest this process stood still so far, in ms (0: never longer than STALL_MS). */
export function largestStallMs(): number {
  lostMs();
  return clock().largest;
}

/**
 * A request that got no answer: the node could not be reached, or was given
 * up. What it asked for may or may not have happened, unlike a request that
 * got an answer of any status.
 */
export class Unreachable extends Error {}

/** How long to wait for an answer, and the cluster secret that signs an operator's request. */
export type CallOptions = { timeoutMs?: number; secret?: string };

/**
 * One JSON request to one node ("host:port"). Resolves with any HTTP status;
 * rejects with a readable reason (Unreachable) when the node cannot be reached at all.
 * Global fetch keeps connections alive between calls to the same node.
 * A failure while this process itself stood still is no strike against the
 * node, and the request is sent once more.
 */
export async function call(node: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}, { timeoutMs = TIMEOUT_MS, secret }: CallOptions = {}): Promise<Answer> {
  notGivenUp(node);
  const sent = body === undefined ? undefined : JSON.stringify(body);
  // An operator's request is signed for this node alone, never sent with the secret itself (api/signing.ts).
  const signed: Record<string, string> =
    secret === undefined ? {} : { authorization: sign(secret, { method, host: hostOf(node) ?? node, path, epoch: headers['cluster-epoch'], ifMatch: headers['if-match'], ifNoneMatch: headers['if-none-match'], body: sent ?? '' }) };
  const all = { ...(sent === undefined ? headers : { 'content-type': 'application/json', ...headers }), ...signed };
  for (let attempt = 1; ; attempt++) {
    const lostBefore = lostMs();
    const timer = runTimeout(timeoutMs);
    try {
      return await once(node, method, path, sent, all, timer.signal);
    } catch (err) {
      if (err instanceof Error && !(err instanceof Unreachable)) throw err;
      const why = reason(err, timeoutMs);
      if (stalledDuring(lostBefore, err) && attempt < 2) continue;
      if (!stalledDuring(lostBefore, err)) strike(node, why);
      throw new Unreachable(`cannot reach ${node}: ${why}`);
    } finally {
      timer.clear();
    }
  }
}

/** One attempt, with the body already serialised; a failure to get any answer rejects with something other than a plain Error (fetch's TypeError or the timeout's DOMException). */
async function once(node: string, method: string, path: string, body: string | undefined, headers: Record<string, string>, signal: AbortSignal): Promise<Answer> {
  let res: Response;
  let text: string;
  try {
    res = await fetch(`http://${node}${path}`, { method, headers, body, signal });
    text = await res.text();
  } catch (err) {
    throw new NoAnswer(err);
  }
  strikes.set(node, 0);
  try {
    return { status: res.status, body: text === '' ? undefined : JSON.parse(text), etag: res.headers.get('etag') ?? undefined };
  } catch {
    throw new Error(`${node} answered HTTP ${res.status} with a body that is not JSON`);
  }
}

/** fetch's failure, kept whole for reason(). */
class NoAnswer extends Unreachable {
  readonly original: unknown;
  constructor(original: unknown) {
    super('no answer');
    this.original = original;
  }
}

/** Did this process stand still while the request ran, or just before? Then its failure says nothing of the node. */
function stalledDuring(lostBefore: number, err: unknown): boolean {
  // A timeout already left out the time lost (runTimeout): it ran its whole length while this process ran.
  if ((err as NoAnswer).original instanceof DOMException && ((err as NoAnswer).original as DOMException).name === 'TimeoutError') return false;
  return lostMs() > lostBefore || performance.now() - clock().lastStallEnd < AFTER_STALL_MS;
}

/** Throws, naming why, when `node` was given up: no request is sent to it for the rest of the run. */
export function notGivenUp(node: string): void {
  const gone = givenUp.get(node);
  if (gone !== undefined) throw new Unreachable(`skipped: ${node} ${gone}`);
}

/**
 * What another node heard from `node` on this process's behalf (an old owner
 * that sent our copies there, operator/move.ts): an answer (`why` undefined),
 * or none, and why. It counts as this process's own request would, so that a
 * node that does not answer is given up once, whoever was asking it.
 */
export function heardVia(node: string, why: string | undefined): void {
  if (why === undefined) strikes.set(node, 0);
  else strike(node, why);
}

function strike(node: string, why: string): void {
  const n = (strikes.get(node) ?? 0) + 1;
  strikes.set(node, n);
  if (n >= STRIKES && !givenUp.has(node)) {
    givenUp.set(node, `stopped answering (${why}, ${n} times in a row), and was given up for the rest of this run`);
    console.error(`${node} ${givenUp.get(node)}`);
  }
}

/**
 * An abort signal that fires once `ms` have passed while this process ran:
 * time lost to a stall is added back, so that an answer that arrived while
 * the process was stopped is read, not timed out.
 */
function runTimeout(ms: number): { signal: AbortSignal; clear(): void } {
  const controller = new AbortController();
  const [started, lostBefore] = [performance.now(), lostMs()];
  let timer: NodeJS.Timeout;
  const check = () => {
    const ran = performance.now() - started - (lostMs() - lostBefore);
    if (ran >= ms) controller.abort(new DOMException(`no answer within ${ms / 1000} s`, 'TimeoutError'));
    else arm(ms - ran);
  };
  const arm = (left: number) => (timer = setTimeout(check, left).unref());
  arm(ms);
  return { signal: controller.signal, clear: () => clearTimeout(timer) };
}

/** A newer map names these addresses: each given-up one gets another chance (a failover may have brought it back). */
export function forgive(addresses: readonly string[]): void {
  for (const address of addresses) if (givenUp.delete(address)) strikes.delete(address);
}

function reason(err: unknown, timeoutMs: number): string {
  const e = ((err as NoAnswer).original ?? err) as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e.name === 'TimeoutError') return `no answer within ${timeoutMs / 1000} s`;
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
}

/** The error message a node sent, or its status. */
export function problem(answer: Answer): string {
  return `HTTP ${answer.status}${typeof answer.body?.error === 'string' ? `: ${answer.body.error}` : ''}`;
}

// The reshard's give-up policy. The one-shot job keeps a node given up for
// the rest of its run: its records fail, and a rerun stores them. A reshard
// runs many walks; a node given up in one is asked once more, briefly, before
// the next, and tried again if it answers: a node slow for a moment is not
// lost to a whole reshard (which then could only end incomplete), and one
// still frozen costs a walk PROBE_MS, not a timeout per record.
const PROBE_MS = 2_000;

/** Asks each node given up whether it answers again (any HTTP status); those that do are tried again. Resolves to their names. */
export async function reconsider(): Promise<string[]> {
  const back = await Promise.all(
    [...givenUp.keys()].map(async (node) => {
      const timer = runTimeout(PROBE_MS);
      try {
        await once(node, 'GET', '/cluster/rows?state=live&limit=1', undefined, {}, timer.signal); // what a walk asks first
      } catch (err) {
        if (err instanceof NoAnswer) return undefined;
      } finally {
        timer.clear();
      }
      givenUp.delete(node);
      console.error(`${node} answers again: tried again from this walk on`);
      return node;
    }),
  );
  return back.filter((node) => node !== undefined);
}
