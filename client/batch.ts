// client/batch.ts: running many requests: how many at once, and how far along.

/** Runs fn over items with at most `limit` calls in flight. */
export async function eachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

const EVERY_MS = 5_000;

/**
 * A count of work done, on stderr. On a terminal it is one line that keeps
 * changing; in a log it is a line every few seconds, so that a run that has
 * stalled shows it. Short runs print nothing.
 */
export function progress(what: string, total?: number): { tick(): void; done(): void } {
  if (total !== undefined && total < 100) return { tick() {}, done() {} };
  let n = 0;
  const line = () => `${what} ${n}${total === undefined ? '' : `/${total}`}`;
  if (process.stderr.isTTY) {
    return {
      tick() {
        if (++n % 100 === 0 || n === total) process.stderr.write(`\r${line()}`);
      },
      done() {
        if (n >= 100) process.stderr.write('\n');
      },
    };
  }
  const timer = setInterval(() => console.error(line()), EVERY_MS).unref();
  return {
    tick() {
      n++;
    },
    done() {
      clearInterval(timer);
    },
  };
}
