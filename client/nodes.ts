// client/nodes.ts: what a node is. To the ring, a name ("host:port") to hash;
// to the cluster, the shard that answers there. Two names can reach one
// shard (127.0.0.1:3000 and localhost:3000), and the ring cannot tell.

import { readFileSync } from 'node:fs';
import { call } from './http.ts';

const BAD_PORTS = new Set(
  readFileSync(new URL('bad-ports.txt', import.meta.url), 'utf8')
    .split('\n')
    .filter((line) => !line.startsWith('#'))
    .join(' ')
    .split(/\s+/)
    .filter((port) => port !== '')
    .map(Number),
);

/** What is wrong with a node name, or undefined if the client can use it. */
export function nodeProblem(node: string): string | undefined {
  const m = /^[^\s/:,]+:(\d+)$/.exec(node);
  if (m === null) return `${JSON.stringify(node)} is not host:port`;
  const port = Number(m[1]);
  // The ring hashes the name as written, so 03000 would be another node.
  if (m[1]!.startsWith('0')) return `${node}: write the port without a leading zero`;
  if (!(port >= 1 && port <= 65535)) return `${node}: port ${port} does not exist`;
  if (BAD_PORTS.has(port)) return `${node}: fetch() refuses to connect to port ${port} (a "bad port" in the Fetch standard); use another, such as ${port + 1}`;
  return undefined;
}

/** Asks each node which shard it is (GET /healthz). Each answer is a shard id or why there is none. */
export async function shardsOf(nodes: readonly string[]): Promise<Map<string, { shard: string } | { why: string }>> {
  const answers = await Promise.all(
    nodes.map(async (node) => {
      try {
        const res = await call(node, 'GET', '/healthz');
        const shard = res.body?.shard;
        return typeof shard === 'string' && shard !== '' ? { shard } : { why: `GET /healthz answered HTTP ${res.status} with no shard id` };
      } catch (err) {
        return { why: (err as Error).message };
      }
    }),
  );
  return new Map(nodes.map((node, i) => [node, answers[i]!]));
}

/** Groups of two or more names that reach the same shard. */
export function aliases(shards: Map<string, { shard: string } | { why: string }>): string[][] {
  const names = new Map<string, string[]>();
  for (const [node, answer] of shards) {
    if ('shard' in answer) names.set(answer.shard, [...(names.get(answer.shard) ?? []), node]);
  }
  return [...names.values()].filter((group) => group.length > 1);
}
