// test/machine.ts: another machine, played by a working directory of its
// own. It holds a copy of the client's code and, if given, the cluster
// secret, and none of the first machine's local files: only the shards are
// shared.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { cp, mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Gate } from './gate.ts';
import type { Run } from './shards.ts';
import { ROOT } from './shards.ts';

export type Machine = {
  dir: string;
  /** Runs ch_client.ts there to its end. */
  client(args: string[]): Promise<Run>;
  /** Starts ch_client.ts there; `exited` resolves with its code, or its signal, and its output. */
  start(args: string[]): { pid: number; kill(signal: NodeJS.Signals): void; exited: Promise<Run & { signal: string | null }> };
  /** Runs ch_client.ts here until one of `gates` holds a request that `held` picks, then kills it (SIGKILL) and drops what the gates held: an operator who died at that instant. */
  killedAt(args: string[], gates: Gate[], held: Parameters<Gate['hold']>[0]): Promise<void>;
  /** Wakes every process started here that is still running, and waits for each to exit: a test that failed midway leaves none behind for the next. */
  idle(): Promise<void>;
  /** Removes the working directory. */
  remove(): Promise<void>;
};

export async function machine(secretFile?: string): Promise<Machine> {
  const dir = await mkdtemp(join(tmpdir(), 'chm-'));
  for (const path of ['ch_client.ts', 'ring.ts', 'package.json', 'api', 'client', 'cli', 'lab', 'mysql', 'operator']) await cp(join(ROOT, path), join(dir, path), { recursive: true });
  await symlink(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  if (secretFile !== undefined) {
    await mkdir(join(dir, 'data'));
    await cp(secretFile, join(dir, 'data', 'cluster-secret'));
  }
  const running = new Set<{ wake(): void; exited: Promise<unknown> }>();
  const start = (args: string[]) => {
    const { CLUSTER_SECRET_FILE, ...env } = process.env; // this machine's secret is its own file, or none
    const child = spawn(process.execPath, ['ch_client.ts', ...args], { cwd: dir, env });
    let [stdout, stderr] = ['', ''];
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    const exited = once(child, 'exit').then(([code, signal]) => ({ code: (code as number | null) ?? 1, signal: signal as string | null, stdout, stderr }));
    const run = { wake: () => void child.kill('SIGCONT'), exited };
    running.add(run);
    void exited.then(() => running.delete(run));
    return { pid: child.pid!, kill: (signal: NodeJS.Signals) => void child.kill(signal), exited };
  };
  const idle = async () => {
    for (const run of running) run.wake();
    await Promise.all([...running].map((run) => run.exited));
  };
  const killedAt = async (args: string[], gates: Gate[], held: Parameters<Gate['hold']>[0]) => {
    for (const gate of gates) gate.hold(held);
    const run = start(args);
    await Promise.race(gates.map((gate) => gate.held(1)));
    run.kill('SIGKILL');
    await run.exited;
    for (const gate of gates) gate.drop();
  };
  return { dir, start, client: (args) => start(args).exited, killedAt, idle, remove: () => rm(dir, { recursive: true, force: true }) };
}
