// test/writers.ts: the failover tests' writes through the client
// (client/cluster.ts): clients that never pause, each POSTing new ids one
// after another and recording when each 201 came; a run of writes that must
// each be acknowledged; and the read-back of everything acknowledged.

import assert from 'node:assert/strict';
import http from 'node:http';
import { expenseFor } from '../ch_client.ts';
import { discover, send, type View } from '../client/cluster.ts';

export type Writers = ReturnType<typeof writers>;

/**
 * `count` writers. Each writes to one node's arc, taking the next id that
 * falls on it, so that every arc gets its writes however small the nodes'
 * ports make it. Call stop() before the test ends, even when it fails.
 */
export function writers(view: View, prefix: string, count: number) {
  const acked = new Map<string, number>(); // id: when its 201 came
  const sent = new Map<string, number>(); // id: when its acknowledged request was sent
  let stopped = false;
  let n = 0;
  const loops = Array.from({ length: count }, async (_, loop) => {
    while (!stopped) {
      const arc = view.map.nodes[loop % view.map.nodes.length]!.name;
      let id: string;
      do id = `${prefix}-${n++}`;
      while (view.place(id).owner.name !== arc);
      try {
        const sentAt = Date.now();
        const res = await send(view, id, 'POST', '/v1/expenses', expenseFor(id));
        if (res.status === 201) {
          acked.set(id, Date.now());
          sent.set(id, sentAt);
        }
        else await new Promise((r) => setTimeout(r, 20));
      } catch {
        await new Promise((r) => setTimeout(r, 20)); // unreachable, or sent on too often: not acknowledged
      }
    }
  });
  return {
    acked,
    /** The 201s for ids that `node` owns, after `since`. */
    ackedOn: (node: string, since: number) => [...acked].filter(([id, at]) => at > since && view.place(id).owner.name === node),
    /**
     * The 201s for ids that `node` owns, of writes sent after `since`. After a
     * machine's kill, only another machine can have acknowledged these: a 201
     * read after the kill may have been sent before it.
     */
    sentAfter: (node: string, since: number) => [...acked].filter(([id]) => sent.get(id)! > since && view.place(id).owner.name === node),
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

/**
 * `count` writes of the ids PREFIX-0, PREFIX-1, ..., one after another, each
 * asserted acknowledged (201) and added to `acked`, through a view read anew
 * from `seeds`; resolves to that view.
 */
export async function writeAcked(seeds: string[], prefix: string, count: number, acked: string[]): Promise<View> {
  const { view } = await discover(seeds, 1);
  for (let n = 0; n < count; n++) {
    const id = `${prefix}-${n}`;
    const res = await send(view, id, 'POST', '/v1/expenses', expenseFor(id));
    assert.equal(res.status, 201, `${id}: ${JSON.stringify(res.body)}`);
    acked.push(id);
  }
  return view;
}

/** Every acknowledged id, read back through the client: the ids that are missing or different. */
export async function lost(view: View, acked: Map<string, number>): Promise<string[]> {
  const missing: string[] = [];
  for (const id of acked.keys()) {
    const res = await send(view, id, 'GET', `/v1/expenses/${id}`);
    if (res.status !== 200 || res.body.name !== expenseFor(id).name) missing.push(`${id}: ${res.status}`);
  }
  return missing;
}

/**
 * One request on a connection of its own, answered with its status and body.
 * Not fetch: it may send on a kept-alive connection, which a thawed server
 * closes as idle for too long, the request in it unread.
 */
export function alone(node: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const at = node.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const headers = body === undefined ? {} : { 'content-type': 'application/json' };
    const req = http.request({ host: node.slice(0, at), port: Number(node.slice(at + 1)), method, path, agent: false, headers, timeout: 120_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text === '' ? undefined : JSON.parse(text) }));
    });
    req.on('timeout', () => req.destroy(new Error(`${node} did not answer within 120 s`)));
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}
