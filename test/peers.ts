// test/peers.ts: a partition between the machines of a shard's group
// (election/rules.ts). A lease's renewal, a vote and a follow go over HTTP
// from one server to the others, to the addresses in its CLUSTER_PEER: each
// server is started again with a gate (test/gate.ts) in front of each of its
// peers there, so that a test can cut a primary off its standbys and let it
// back. Each server's gate must be one of its own names (CLUSTER_ANNOUNCE,
// api/signing.ts N4), which the cluster's environment gives at its start.

import { spawn } from 'node:child_process';
import { open, readFile, readlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startGate, type Gate } from './gate.ts';
import { until, waitForExit, type Machine } from './shards.ts';

export const MACHINES: Machine[] = ['primary', 'standby', 'standby-2'];

/** What a server runs with, read from /proc as a supervisor would keep it. */
async function launched(pid: number) {
  const env = Object.fromEntries(
    (await readFile(`/proc/${pid}/environ`, 'utf8')).split('\0').filter((kv) => kv !== '').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  );
  const [command, ...args] = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').filter((a) => a !== '');
  return { env: env as NodeJS.ProcessEnv, command: command!, args, cwd: await readlink(`/proc/${pid}/cwd`) };
}

/** The CLUSTER_PEER the server in `dir` runs with. */
export async function peersOf(dir: string): Promise<string> {
  const pid = Number((await readFile(join(dir, 'server.pid'), 'utf8')).trim());
  return (await launched(pid)).env.CLUSTER_PEER ?? '';
}

/**
 * Kills the server whose pid is in `dir`/server.pid (SIGKILL) and starts it
 * again with the command line, directory and environment it ran with, and
 * `change` over that environment; start-shards.sh, which would do it too,
 * takes 20 to 60 s on a loaded machine. Resolves with the ms from the kill to
 * its first healthy answer.
 */
export async function respawn(dir: string, change: NodeJS.ProcessEnv = {}): Promise<number> {
  const pid = Number((await readFile(join(dir, 'server.pid'), 'utf8')).trim());
  const { env, command, args, cwd } = await launched(pid);
  const killed = performance.now();
  process.kill(pid, 'SIGKILL');
  await waitForExit(pid);
  const log = await open(join(dir, 'server.log'), 'a');
  const child = spawn(command, args, { cwd, env: { ...env, ...change }, detached: true, stdio: ['ignore', log.fd, log.fd] });
  child.unref();
  await log.close();
  await writeFile(join(dir, 'server.pid'), `${child.pid}\n`);
  await until(`the restarted server on port ${env.PORT} answering`, async () => (await fetch(`http://127.0.0.1:${env.PORT}/healthz`).then((r) => r.status, () => 0)) !== 0, 60_000);
  return Math.round(performance.now() - killed);
}

/** A gate in front of every server of a group; the gates' names, for the cluster's CLUSTER_ANNOUNCE before it starts. */
export async function openGates(serverOf: (shard: number, m: Machine) => string, shards: number[]) {
  const gates = new Map<string, Gate>(); // by the server it stands before
  for (const s of shards) for (const m of MACHINES) gates.set(`${s} ${m}`, await startGate(() => serverOf(s, m)));
  const gate = (s: number, m: Machine) => gates.get(`${s} ${m}`)!;
  return {
    gate,
    announce: [...gates.values()].map((g) => g.node).join(','),
    /** CLUSTER_PEER for machine `m` of shard `s`: its peers' gates. */
    peersFor: (s: number, m: Machine) => MACHINES.filter((o) => o !== m).map((o) => gate(s, o).node).join(','),
    close: () => Promise.all([...gates.values()].map((g) => g.close())),
    /**
     * Cuts machine `m` of shard `s` off its peers' servers, both ways: what it
     * sends them (its lease's renewals, which name it) and all that reaches it
     * from them. Returns the end of the cut: what was held is lost.
     */
    isolate(s: number, m: Machine, address: string): () => void {
      const others = MACHINES.filter((o) => o !== m).map((o) => gate(s, o));
      for (const g of others) g.hold((_method, _path, body) => body.includes(`"${address}"`));
      gate(s, m).hold(() => true);
      return () => [gate(s, m), ...others].forEach((g) => g.drop());
    },
  };
}

export type Gates = Awaited<ReturnType<typeof openGates>>;

/**
 * Starts every server of shard `s` again with its peers behind their gates,
 * all at once, those in `only` that run without: a standby started afresh
 * stands for no election until it has granted a primary a lease (E5), so no
 * failover comes of it.
 */
export async function gateShard(gates: Gates, machineDir: (s: number, m: Machine) => string, s: number, only: Machine[] = MACHINES): Promise<void> {
  const todo: Machine[] = [];
  for (const m of only) if ((await peersOf(machineDir(s, m)).catch(() => gates.peersFor(s, m))) !== gates.peersFor(s, m)) todo.push(m);
  await Promise.all(todo.map((m) => respawn(machineDir(s, m), { CLUSTER_PEER: gates.peersFor(s, m) })));
}
