// client/reshard-state.ts: the record of a reshard in progress (by default
// data/reshard.json). It is the reshard's lock: one reshard at a time, and
// while one is unfinished, only that one (or its reverse) may run. And it
// tells `get` which two rings hold records while a move is under way.

import { closeSync, linkSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { HashRing } from '../ring.ts';
import { nodeProblem } from './nodes.ts';

export type Reshard = { from: string[]; to: string[]; replicas: number };
type ReshardState = Reshard & { pid: number; host: string; started: string };

/** The reshard on record at `path`, or undefined when there is none. Throws, naming the file, when it cannot be trusted. */
export function readState(path: string): ReshardState | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return undefined;
    throw new Error(`cannot read the reshard record ${path}: ${(err as Error).message}`);
  }
  let state: unknown;
  try {
    state = JSON.parse(text);
  } catch (err) {
    throw broken(path, `it is not JSON (${(err as Error).message})`);
  }
  const why = invalid(state);
  if (why !== undefined) throw broken(path, why);
  return state as ReshardState;
}

function invalid(s: any): string | undefined {
  if (typeof s !== 'object' || s === null || Array.isArray(s)) return 'it is not a JSON object';
  for (const key of ['from', 'to'] as const) {
    if (!Array.isArray(s[key]) || s[key].length === 0) return `"${key}" is not a list of nodes`;
    const bad = s[key].find((node: unknown) => typeof node !== 'string' || nodeProblem(node) !== undefined);
    if (bad !== undefined) return `"${key}" holds ${JSON.stringify(bad)}, which is not host:port`;
  }
  if (!Number.isSafeInteger(s.replicas) || s.replicas < 1) return '"replicas" is not a positive whole number';
  if (!Number.isSafeInteger(s.pid) || typeof s.host !== 'string' || typeof s.started !== 'string') return '"pid", "host" or "started" is missing';
  return undefined;
}

function broken(path: string, why: string): Error {
  return new Error(
    `the reshard record ${path} is broken: ${why}.\n` +
      `  If no reshard is running, check where the records are (node ch_client.ts check --nodes ...),\n` +
      `  then remove ${path} and run the reshard you want.`,
  );
}

/**
 * Takes the lock for a reshard, or throws saying who holds it. The lock is
 * the state file, made by an exclusive link, so that of two reshards
 * started together exactly one gets it. A lock whose process has died is the
 * record of an unfinished reshard: this run takes it over if it resumes that
 * reshard or reverses it, and refuses anything else.
 */
export function lock(path: string, wanted: Reshard): { release(): void; tookOver?: ReshardState } {
  const mine: ReshardState = { ...wanted, pid: process.pid, host: hostname(), started: new Date().toISOString() };
  const record = JSON.stringify(mine, null, 2) + '\n';
  const release = () => rmSync(path, { force: true });
  mkdirSync(dirname(path), { recursive: true });
  // Written aside, then linked into place: link() fails if a record exists,
  // and a reader never sees the file half-written.
  const aside = `${path}.tmp-${process.pid}`;
  writeFileSync(aside, record);
  try {
    linkSync(aside, path);
    return { release };
  } catch (err) {
    if ((err as { code?: string }).code !== 'EEXIST') throw err;
  } finally {
    rmSync(aside, { force: true });
  }
  const held = readState(path);
  if (held === undefined) return lock(path, wanted); // released just now: try again
  const who = `pid ${held.pid} on ${held.host}, started ${held.started}, from ${held.from.join(',')} to ${held.to.join(',')}, replicas ${held.replicas}`;
  if (held.host !== hostname()) {
    throw new Error(`a reshard is recorded in ${path} by ${who}. This machine cannot tell whether it still runs: finish it there, or remove ${path} once you are sure it has ended.`);
  }
  if (alive(held.pid)) throw new Error(`another reshard is running: ${who}. Wait for it to finish.`);
  if (!resumes(wanted, held) && !resumes(wanted, { ...held, from: held.to, to: held.from })) {
    const command = (from: string[], to: string[]) => `node ch_client.ts reshard --from ${from.join(',')} --to ${to.join(',')} --replicas ${held.replicas}`;
    throw new Error(
      `an unfinished reshard is recorded in ${path}: ${who}, no longer running.\n` +
        `  Another reshard now would leave records where neither ring looks. Finish that one:\n    ${command(held.from, held.to)}\n` +
        `  or reverse it:\n    ${command(held.to, held.from)}`,
    );
  }
  // Only one process may take over from a given dead one: the marker is created exclusively.
  const marker = `${path}.takeover-${held.pid}`;
  try {
    closeSync(openSync(marker, 'wx'));
  } catch {
    throw new Error(`another process is taking over the unfinished reshard in ${path} (${marker} exists)`);
  }
  writeFileSync(aside, record);
  renameSync(aside, path);
  rmSync(marker, { force: true });
  return { release, tookOver: held };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM';
  }
}

/** True when two reshards go between the same node sets with the same replicas. */
function resumes(a: Reshard, b: Reshard): boolean {
  return a.replicas === b.replicas && sameNodes(a.from, b.from) && sameNodes(a.to, b.to);
}

/** Node lists name the same ring when they hold the same nodes, in any order. */
export function sameNodes(a: readonly string[], b: readonly string[]): boolean {
  const set = new Set(a);
  return set.size === new Set(b).size && b.every((node) => set.has(node));
}

/**
 * The rings to ask for an id, in order. Normally one. While a reshard between
 * `nodes` and another node set is on record, two: the old ring first, because
 * a record stays on its old node until it has been copied to the new one and
 * only then is deleted there; so the old node has the latest version while it
 * has any, and the new one after.
 */
export function ringsFor(statePath: string, nodes: readonly string[], replicas: number): HashRing[] {
  const state = readState(statePath);
  const ring = new HashRing(nodes, replicas);
  if (state === undefined || state.replicas !== replicas) return [ring];
  if (sameNodes(nodes, state.to)) return [new HashRing(state.from, replicas), ring];
  if (sameNodes(nodes, state.from)) return [ring, new HashRing(state.to, replicas)];
  return [ring];
}
