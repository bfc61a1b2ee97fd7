// test/cut.ts: a partition between this process's clients and one server,
// where no gate can stand: an automatic failover (election/takeover.ts) puts
// the winner's own address in the map, so clients that follow the map reach
// the new primary directly. This wraps the global fetch, which the client
// (client/http.ts) sends with: a request to a cut address waits, as in a
// network that queues it, until the cut ends; then it is sent (release) or
// lost unseen (drop). Requests sent with node:http (test/writers.ts alone)
// are not cut: a test reaches the server past the partition with them.

type Waiting = { go: () => void; drop: () => void };

const real = globalThis.fetch;
const cuts = new Map<string, Waiting[]>();

globalThis.fetch = (input, init) => {
  const url = new URL(input instanceof Request ? input.url : String(input));
  const waiting = cuts.get(url.host);
  if (waiting === undefined) return real(input, init);
  return new Promise<Response>((resolve, reject) => {
    const signal = init?.signal;
    const entry = { go: () => resolve(real(input, init)), drop: () => reject(new TypeError('fetch failed', { cause: new Error(`the test cut ${url.host} off (test/cut.ts)`) })) };
    signal?.addEventListener('abort', () => (waiting.splice(waiting.indexOf(entry) >>> 0, 1), reject(signal.reason)), { once: true });
    waiting.push(entry);
  });
};

/** Cuts this process off `host` ("host:port") until heal(); returns how many requests wait meanwhile. */
export function cut(host: string): () => number {
  if (!cuts.has(host)) cuts.set(host, []);
  return () => cuts.get(host)?.length ?? 0;
}

/** Ends the cut: what waits is sent now ('release') or lost ('drop'). Returns how many requests waited. */
export function heal(host: string, then: 'release' | 'drop'): number {
  const waiting = cuts.get(host) ?? [];
  cuts.delete(host);
  for (const w of waiting) w[then === 'release' ? 'go' : 'drop']();
  return waiting.length;
}
