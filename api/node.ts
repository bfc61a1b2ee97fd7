// api/node.ts: what a node name is. The ring hashes the name as written, so
// the name is checked as written: "host:port", the port in its plain form,
// and one that fetch() will connect to.

import { readFileSync } from 'node:fs';

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
