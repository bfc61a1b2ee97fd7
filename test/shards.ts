// test/shards.ts: throwaway shards for the tests, started by the real
// start-shards.sh in a temporary directory on free ports, so that a test never
// touches data/ or ports 3000, 4000 and 5000.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));

export type Run = { code: number; stdout: string; stderr: string };

/**
 * Runs a command to its end; never rejects, so that tests can assert on
 * failures. With timeoutMs, a command that would run forever is killed
 * (SIGTERM, so a code of 1) instead of hanging the suite.
 */
export function run(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(command, args, { cwd: ROOT, env: options.env ?? process.env, maxBuffer: 64 << 20, timeout: options.timeoutMs ?? 0 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
      resolve({ code, stdout, stderr });
    });
    // A child that never reads its input may be gone before we close it.
    child.stdin!.on('error', () => {});
    child.stdin!.end(options.input ?? '');
  });
}

/**
 * `node ARGS` started, as an operator's command in a terminal: `said(re)`
 * resolves with the first line of its stdout that matches, so that a test acts
 * when the command says so, never after a guessed time; it rejects, with the
 * output, if the command ends first. `exited` resolves as run's does.
 */
export function startNode(args: string[], env?: NodeJS.ProcessEnv): { said(re: RegExp): Promise<RegExpMatchArray>; exited: Promise<Run> } {
  const child = spawn(process.execPath, args, { cwd: ROOT, env: env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let [stdout, stderr] = ['', ''];
  const heard = new Set<() => void>();
  child.stdout.on('data', (c) => ((stdout += c), heard.forEach((f) => f())));
  child.stderr.on('data', (c) => (stderr += c));
  const exited = new Promise<Run>((resolve) => child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr })));
  const said = (re: RegExp) =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      const look = () => {
        const whole = stdout.split('\n').slice(0, -1); // a line counts once it has ended
        const m = whole.map((line) => line.match(re)).find((found) => found !== null);
        if (m) (heard.delete(look), resolve(m));
      };
      heard.add(look);
      look();
      void exited.then((r) => (look(), heard.has(look) && reject(new Error(`the command ended (${r.code}) without saying ${re}:\n${r.stdout}${r.stderr}`))));
    });
  return { said, exited };
}

/** `node` as the tests run it: the project's pinned Node. */
export function runNode(args: string[], env?: NodeJS.ProcessEnv): Promise<Run> {
  return run(process.execPath, args, { env });
}

/**
 * A base port with `count` free ports after it, on loopback. Below Linux's
 * ephemeral range (32768 and up): there, a client that connects to a port
 * nothing listens on can connect to itself, and block the port for a minute.
 */
export async function freePorts(count: number): Promise<number> {
  for (;;) {
    const base = 20_000 + Math.floor(Math.random() * (12_000 - count));
    const ports = Array.from({ length: count }, (_, i) => base + i);
    if ((await Promise.all(ports.map(isFree))).every(Boolean)) return base;
  }
}

async function isFree(port: number): Promise<boolean> {
  const server = createServer();
  return new Promise((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

export type Shards = Awaited<ReturnType<typeof startShards>>;

/**
 * The first cluster map, as an operator makes it: start-shards.sh gives none,
 * and a reshard to the started nodes gives them one (epoch 1, replicas 1).
 */
export async function firstMap(nodes: string[], secretFile: string): Promise<void> {
  const made = await runNode(['ch_client.ts', 'reshard', '--nodes', nodes.join(','), '--to', nodes.join(','), '--secret-file', secretFile]);
  if (made.code !== 0) throw new Error(`the first map failed:\n${made.stdout}${made.stderr}`);
}

/**
 * Starts `count` shards with start-shards.sh, in `dir` or a fresh temporary
 * one, with a first cluster map (firstMap) unless `map` is false. Call stop()
 * in an after hook.
 */
export async function startShards(count: number, { dir, map = true, env: more = {} }: { dir?: string; map?: boolean; env?: NodeJS.ProcessEnv } = {}) {
  dir ??= await mkdtemp(join(tmpdir(), 'chs-'));
  const basePort = await freePorts(count + 1);
  const env: NodeJS.ProcessEnv = { ...process.env, ...more, SHARDS_DIR: dir, SHARDS_BASE_PORT: String(basePort), SHARDS_PORT_STEP: '1' };
  const script = (...args: string[]) => run(join(ROOT, 'start-shards.sh'), args, { env });
  const nodeOf = (shard: number) => `127.0.0.1:${basePort + shard - 1}`;

  const started = await script(String(count));
  const mapped = started.code === 0 && map ? await firstMap(Array.from({ length: count }, (_, i) => nodeOf(i + 1)), join(dir, 'cluster-secret')).catch((err: Error) => err) : undefined;
  if (started.code !== 0 || mapped !== undefined) {
    await script('stop');
    await rm(dir, { recursive: true, force: true });
    throw new Error(started.code !== 0 ? `start-shards.sh failed:\n${started.stdout}${started.stderr}` : String(mapped));
  }

  return {
    dir,
    env,
    script,
    nodeOf,
    /** The nodes as the client names them, shard 1 first. */
    nodes: Array.from({ length: count }, (_, i) => nodeOf(i + 1)),
    /** The cluster secret's file, which start-shards.sh made. */
    secretFile: join(dir, 'cluster-secret'),

    /** Runs SQL as root in a shard's own MySQL; the rows, tab-separated columns split. */
    async sql(shard: number, statement: string): Promise<string[][]> {
      const result = await script('sql', String(shard), '--batch', '--skip-column-names', '--raw', '-e', statement);
      if (result.code !== 0) throw new Error(`SQL on shard ${shard} failed: ${result.stderr}`);
      return result.stdout.split('\n').filter((line) => line !== '').map((line) => line.split('\t'));
    },

    /** The ids stored in one shard, sorted. */
    async ids(shard: number): Promise<string[]> {
      return (await this.sql(shard, 'SELECT id FROM expenses ORDER BY id')).map((row) => row[0]!);
    },

    /** The pid in one of a shard's pid files (server.pid or mysqld.pid). */
    async pid(shard: number, file: 'server.pid' | 'mysqld.pid'): Promise<number> {
      return Number((await readFile(join(dir, `shard-${shard}`, file), 'utf8')).trim());
    },

    /** Shuts down one shard's MySQL, as a crash or an operator would, and waits until it is gone. */
    async stopMysql(shard: number): Promise<void> {
      const pid = await this.pid(shard, 'mysqld.pid');
      await this.sql(shard, 'SHUTDOWN');
      await waitForExit(pid);
    },

    /** What server.ts needs to reach a shard's database as the app user. */
    async databaseEnv(shard: number): Promise<NodeJS.ProcessEnv> {
      return {
        MYSQL_SOCKET: join(dir, `shard-${shard}`, 'mysqld.sock'),
        MYSQL_USER: 'expenses',
        MYSQL_PASSWORD: (await readFile(join(dir, `shard-${shard}`, 'password'), 'utf8')).trim(),
      };
    },

    async stop(): Promise<void> {
      await script('stop');
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Polls `fn` every 50 ms until it holds; fails after `timeoutMs`, naming `what` it waited for. */
export async function until(what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Resolves once the process is gone (it need not be our child). */
export async function waitForExit(pid: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (running(pid)) {
    if (Date.now() > deadline) throw new Error(`process ${pid} still runs after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A zombie has ended: it only waits for init to reap it, which here can take a second. */
export function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return true; // no /proc here, or the process ended just now: ask again
  }
}

export type Server = {
  url: string;
  child: ChildProcess;
  output: () => string;
  /** The exit code, once the process has ended (null if a signal ended it). */
  exited: Promise<number | null>;
  /** Sends a signal unless the process has already ended, then waits for it to end. */
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
};

/** Starts server.ts on a free port with extra environment; resolves once it listens. */
export async function startServer(env: NodeJS.ProcessEnv): Promise<Server> {
  const child = spawn(process.execPath, ['server.ts'], { cwd: ROOT, env: { ...process.env, HOST: '127.0.0.1', PORT: '0', ...env } });
  let output = '';
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  const url = await new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk;
      // The address ends at a space or a comma: "listening on http://…, operator routes need the cluster secret".
      const match = /listening on (http:\/\/[^\s,]+)/.exec(output);
      if (match) resolve(match[1]!);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    exited.then((code) => reject(new Error(`server.ts exited with ${code} before listening:\n${output}`)));
  });
  return {
    url,
    child,
    output: () => output,
    exited,
    stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/**
 * A base port for `count` shards with standbys (SHARDS_PORT_STEP=1): each
 * shard's four ports, base+i, base+100+i, base+200+i and base+300+i
 * (start-shards.sh, rule S2), and with two standbys base+400+i and
 * base+500+i, are free.
 */
export async function freePairPorts(count: number, standbys: 1 | 2 = 1): Promise<number> {
  const offsets = standbys === 1 ? [100, 200, 300] : [100, 200, 300, 400, 500];
  for (;;) {
    const base = await freePorts(count + 1);
    if (base + offsets.at(-1)! + count >= 32_768) continue;
    const others = offsets.flatMap((offset) => Array.from({ length: count + 1 }, (_, i) => base + offset + i));
    if ((await Promise.all(others.map(isFree))).every(Boolean)) return base;
  }
}

/** A machine of a shard, by its birth name (start-shards.sh, rule S6). */
export type Machine = 'primary' | 'standby' | 'standby-2';

/** Starts `count` shards, each with a standby (SHARDS_STANDBY=1) or two (`standbys: 2`); call stop() in an after hook. */
export async function startShardPairs(count: number, { map = true, env: more = {}, standbys = 1 }: { map?: boolean; env?: NodeJS.ProcessEnv; standbys?: 1 | 2 } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'chs-'));
  const basePort = await freePairPorts(count, standbys);
  // SHARDS_STANDBY at the first start only: the cluster keeps its mode ($SHARDS_DIR/mode).
  const env: NodeJS.ProcessEnv = { ...process.env, ...more, SHARDS_DIR: dir, SHARDS_BASE_PORT: String(basePort), SHARDS_PORT_STEP: '1' };
  const script = (...args: string[]) => run(join(ROOT, 'start-shards.sh'), args, { env });
  const started = await run(join(ROOT, 'start-shards.sh'), [String(count)], { env: { ...env, SHARDS_STANDBY: String(standbys) } });
  const mapped = started.code === 0 && map ? await firstMap(Array.from({ length: count }, (_, i) => `127.0.0.1:${basePort + i}`), join(dir, 'cluster-secret')).catch((err: Error) => err) : undefined;
  if (started.code !== 0 || mapped !== undefined) {
    await script('stop');
    await rm(dir, { recursive: true, force: true });
    throw new Error(started.code !== 0 ? `start-shards.sh failed:\n${started.stdout}${started.stderr}` : String(mapped));
  }
  const machineDir = (shard: number, machine: Machine) => join(dir, `shard-${shard}`, ...(machine === 'primary' ? [] : [machine]));
  const pid = async (shard: number, machine: Machine, file: 'server.pid' | 'mysqld.pid') => Number((await readFile(join(machineDir(shard, machine), file), 'utf8')).trim());
  return {
    dir,
    env,
    script,
    started,
    machineDir,
    /** The primary's server, as the client names it. */
    nodeOf: (shard: number) => `127.0.0.1:${basePort + shard - 1}`,
    /** The standby's server. */
    standbyOf: (shard: number) => `127.0.0.1:${basePort + 100 + shard - 1}`,
    /** Any machine's server. */
    serverOf: (shard: number, machine: Machine) => `127.0.0.1:${basePort + { primary: 0, standby: 100, 'standby-2': 400 }[machine] + shard - 1}`,
    /** Any machine's MySQL, as a standby names the primary it follows. */
    mysqlOf: (shard: number, machine: Machine) => `127.0.0.1:${basePort + { primary: 200, standby: 300, 'standby-2': 500 }[machine] + shard - 1}`,
    /** Runs SQL as root on one machine of a shard; the rows, tab-separated columns split. */
    async sql(shard: number, machine: Machine, statement: string): Promise<string[][]> {
      const result = await script(machine === 'primary' ? 'sql' : `sql-${machine}`, String(shard), '--batch', '--skip-column-names', '--raw', '-e', statement);
      if (result.code !== 0) throw new Error(`SQL on shard ${shard}'s ${machine} failed: ${result.stderr}`);
      return result.stdout.split('\n').filter((line) => line !== '').map((line) => line.split('\t'));
    },
    /** The pid in one of a machine's pid files. */
    pid,
    /** SIGKILL of a machine's server and MySQL, as a machine's loss; resolves once both are gone. */
    async kill(shard: number, machine: Machine): Promise<void> {
      const pids = [await pid(shard, machine, 'server.pid'), await pid(shard, machine, 'mysqld.pid')];
      for (const one of pids) process.kill(one, 'SIGKILL');
      await Promise.all(pids.map((one) => waitForExit(one)));
    },
    async stop(): Promise<void> {
      await script('stop');
      await rm(dir, { recursive: true, force: true });
    },
  };
}
