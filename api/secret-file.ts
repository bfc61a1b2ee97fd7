// api/secret-file.ts: the rule for a file that holds a secret: the cluster
// secret, which both the shard (shard/secret.ts) and the operator's client
// (client/command-line.ts) read, and the shard's MySQL password (server.ts).

import { statSync } from 'node:fs';

/**
 * Why the secret in this file cannot be trusted, or undefined: a file that
 * other users may read or write holds a secret they may know, or change.
 */
export function secretFileProblem(path: string, what = 'the cluster secret'): string | undefined {
  const mode = statSync(path).mode & 0o777;
  if ((mode & 0o077) === 0) return undefined;
  return `${what} in ${path} is open to other users (mode ${mode.toString(8).padStart(3, '0')}); make it yours alone: chmod 600 ${path}`;
}
