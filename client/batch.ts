// client/batch.ts: running many requests: how many at once, and how far along.

/** Runs fn over items with at most `limit` calls in flight. */
export async function eachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

export type Slot = <T>(task: () => Promise<T>) => Promise<T>;

/** Runs tasks with at most `n` under way at once, in the order they came. */
export function slots(n: number): Slot {
  let free = n;
  const waiting: Array<() => void> = [];
  return async (task) => {
    if (free > 0) free--;
    else await new Promise<void>((resolve) => waiting.push(resolve));
    try {
      return await task();
    } finally {
      // The slot passes straight to the next task waiting, or is free again.
      const next = waiting.shift();
      if (next !== undefined) next();
      else free++;
    }
  };
}

const EVERY_MS = 5_000;

/**
 * A count of work done, of its total when known, and its rate, on stderr. On
 * a terminal it is one line that keeps changing; in a log it is a line every
 * few seconds, so that a run that has stalled shows it. Short runs print
 * nothing.
 */
export function progress(what: string, total?: number): { tick(count?: number): void; done(): void } {
  if (total !== undefined && total < 100) return { tick() {}, done() {} };
  let n = 0;
  const started = performance.now();
  const rate = () => `, ${Math.round(n / Math.max((performance.now() - started) / 1000, 0.001))}/s`;
  const line = () => `${what} ${n}${total === undefined ? '' : `/${total}`}${rate()}`;
  if (process.stderr.isTTY) {
    return {
      tick(count = 1) {
        const before = n;
        n += count;
        if (Math.floor(n / 100) > Math.floor(before / 100) || n === total) process.stderr.write(`\r${line()}`);
      },
      done() {
        if (n >= 100) process.stderr.write('\n');
      },
    };
  }
  const timer = setInterval(() => console.error(line()), EVERY_MS).unref();
  return {
    tick(count = 1) {
      n += count;
    },
    done() {
      clearInterval(timer);
    },
  };
}

/**
 * Prints failures on stderr, one line per reason: `FAILED "7" on a:1: why`
 * for a single id (each reason starts with its separator, " on a:1: why"), and for many ids with the same reason (a node that is
 * down) one line that counts them. `verbose` prints every id on its own line.
 */
export function printFailures(failed: Map<string, string>, verbose: boolean): void {
  const byReason = new Map<string, string[]>();
  // Push onto each reason's list: copying it for every id was quadratic, and
  // 40,000 failures (one shard down in a large run) took 80 s to print.
  for (const [id, why] of failed) {
    const ids = byReason.get(why);
    if (ids === undefined) byReason.set(why, [id]);
    else ids.push(id);
  }
  for (const [why, ids] of byReason) {
    if (verbose || ids.length === 1) {
      for (const id of ids) console.error(`FAILED ${JSON.stringify(id)}${why}`);
      continue;
    }
    const shown = ids.slice(0, 5).map((id) => JSON.stringify(id)).join(', ');
    console.error(`FAILED ${ids.length} ids${why}: ${shown}${ids.length > 5 ? ` and ${ids.length - 5} more (--verbose lists them)` : ''}`);
  }
}
