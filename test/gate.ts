// test/gate.ts: an HTTP forwarder in front of one node, which holds the
// requests a test picks until the test lets them go. So a test decides where
// a pause or a kill lands in a client's run, instead of hoping for it.

import http from 'node:http';
import { once } from 'node:events';

type Held = { what: string; body: string; go: () => Promise<void>; drop: () => void };

export type Gate = {
  /** The name clients use for the node behind the gate. */
  node: string;
  /** From now on, holds every request for which `match(method, path, body)` is true. */
  hold(match: (method: string, path: string, body: string) => boolean): void;
  /** Resolves once at least `count` requests are held, with their "METHOD path". */
  held(count: number): Promise<string[]>;
  /** The bodies of the requests held now, as they came. */
  heldBodies(): string[];
  /** Stops holding, and forwards what was held; resolves once the node has answered each (or failed to). */
  release(): Promise<void>;
  /** Stops holding, and answers nothing to what was held: the node never sees it. */
  drop(): void;
  /** Every request that reached the gate, as it came: its request line, headers and body. */
  seen(): string[];
  close(): Promise<void>;
};

/**
 * A gate in front of `target`, or in front of what `target()` names at each
 * request: a gate may open before its node starts, so that the node can be
 * told the gate's name (CLUSTER_ANNOUNCE, api/signing.ts N4) as it starts.
 */
export async function startGate(target: string | (() => string)): Promise<Gate> {
  const where = () => {
    const node = typeof target === 'string' ? target : target();
    return [node.slice(0, node.lastIndexOf(':')), Number(node.slice(node.lastIndexOf(':') + 1))] as const;
  };
  let match: ((method: string, path: string, body: string) => boolean) | undefined;
  let held: Held[] = [];
  let waiting: Array<{ count: number; resolve: (what: string[]) => void }> = [];
  const seen: string[] = [];

  const forward = (req: http.IncomingMessage, body: Buffer, res: http.ServerResponse) =>
    new Promise<void>((answered) => {
      const [host, port] = where();
      const out = http.request({ host, port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode!, answer.headers);
        answer.pipe(res);
        answer.on('end', answered);
      });
      out.on('error', () => (res.destroy(), answered()));
      out.end(body);
    });

  const server = http.createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    seen.push(`${req.method} ${req.url}\n${req.rawHeaders.join('\n')}\n\n${body}`);
    if (match === undefined || !match(req.method!, req.url!, body.toString())) return forward(req, body, res);
    held.push({ what: `${req.method} ${req.url}`, body: body.toString(), go: () => forward(req, body, res), drop: () => res.destroy() });
    waiting = waiting.filter((w) => (held.length >= w.count ? (w.resolve(held.map((h) => h.what)), false) : true));
  });
  // Longer than fetch's own 4 s keep-alive, as a shard's is: a shorter one
  // races the client, which may send on a connection the gate is closing.
  server.keepAliveTimeout = 10_000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const letGo = async (how: 'go' | 'drop') => {
    match = undefined;
    const now = held;
    held = [];
    await Promise.all(now.map((h) => h[how]()));
  };

  return {
    node: `127.0.0.1:${(server.address() as { port: number }).port}`,
    hold(m) {
      match = m;
    },
    held(count) {
      if (held.length >= count) return Promise.resolve(held.map((h) => h.what));
      return new Promise((resolve) => waiting.push({ count, resolve }));
    },
    heldBodies: () => held.map((h) => h.body),
    release: () => letGo('go'),
    drop: () => void letGo('drop'),
    seen: () => seen,
    async close() {
      void letGo('drop');
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}
