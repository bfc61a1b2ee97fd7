// test/history/clients.ts: concurrent clients that record every operation
// they send through the real client path (client/cluster.ts send, which
// follows 421s, ASK redirects and failovers): its start, its end and its
// result, for the checker (test/history/linearizable.ts).

import { expenseFor } from '../../ch_client.ts';
import { discover, send, type View } from '../../client/cluster.ts';
import { reconsider } from '../../client/http.ts';
import { random } from '../random.ts';
import type { Op, Operation, Result } from './linearizable.ts';

export type Clients = {
  history: Operation[];
  /** How many requests the client did not send, having given up their node: no operation. */
  notSent: { n: number };
  /** Stops every client after the operation it is sending, and waits for them. */
  stop(): Promise<void>;
};

// Writes vastly outnumber reads in no real service, but they are what can go wrong.
const MIX: Array<[Op['kind'], number]> = [['create', 0.2], ['read', 0.4], ['update', 0.25], ['delete', 0.15]];

/** Starts `count` clients, each with its own view of the cluster from `seeds`, on the ids given; client numbers start at 1. */
export async function startClients(seeds: string[], ids: readonly string[], count: number, seed: number): Promise<Clients> {
  const history: Operation[] = [];
  const notSent = { n: 0 };
  let stopped = false;
  const views = await Promise.all(Array.from({ length: count }, async () => (await discover(seeds, 1)).view));
  const loops = views.map(async (view, i) => {
    const next = random(seed + i);
    for (let n = 0; !stopped; n++) {
      const id = ids[Math.floor(next() * ids.length)]!;
      const r = next();
      let sum = 0;
      const kind = MIX.find(([, share]) => r < (sum += share))?.[0] ?? 'read';
      const name = `c${i + 1}-${n}`;
      const op: Op = kind === 'create' || kind === 'update' ? { kind, name } : { kind };
      const done = await perform(view, i + 1, id, op);
      // Not sent at all: the client had given up the node (client/http.ts), and the request never left it.
      if ('unknown' in done.result && done.result.unknown.startsWith('skipped: ')) notSent.n++;
      else history.push(done);
      // An operation that got no answer comes back fast from a node given up: do not spin.
      if ('unknown' in done.result) await new Promise((resolve) => setTimeout(resolve, 250));
    }
  });
  // A long-running client asks the nodes it gave up whether they answer again, as the reshard does between walks.
  const probing = (async () => {
    while (!stopped) {
      await reconsider();
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    }
  })();
  return {
    history,
    notSent,
    async stop() {
      stopped = true;
      await Promise.all([...loops, probing]);
    },
  };
}

/** One operation through the client, timed, and its result as the checker reads it. */
export async function perform(view: View, client: number, id: string, op: Op): Promise<Operation> {
  const [method, path, body] =
    op.kind === 'create' ? ['POST', '/v1/expenses', { ...expenseFor(id), name: op.name }]
    : op.kind === 'read' ? ['GET', `/v1/expenses/${id}`, undefined]
    : op.kind === 'update' ? ['PUT', `/v1/expenses/${id}`, { name: op.name }]
    : ['DELETE', `/v1/expenses/${id}`, undefined];
  const start = performance.now();
  let result: Result;
  try {
    const res = await send(view, id, method, path, body);
    const version = res.etag?.replace(/^"|"$/g, '');
    result = { status: res.status, ...(typeof res.body?.name === 'string' && { name: res.body.name }), ...(version !== undefined && { version }) };
  } catch (err) {
    // No answer, or sent on until the client gave up: the request may have reached a shard.
    result = { unknown: (err as Error).message.slice(0, 200) };
  }
  return { id, client, op, start, end: performance.now(), result };
}
