// bench/load.ts: what bench/peers.ts measures with: a lean load
// generator (node:http, one keep-alive agent per server, bodies serialised
// before the clock starts, as bench/e2e.ts drives its server tier), and a
// server process's CPU time and private memory, and its MariaDB's CPU time,
// from /proc.

import http from 'node:http';
import { readFileSync } from 'node:fs';
import { expenseFor } from '../ch_client.ts';
import { eachLimit } from '../client/batch.ts';

const TICK_US = 1e6 / 100; // /proc counts CPU time in clock ticks of 1/100 s (getconf CLK_TCK)

/** CPU time (µs) a process has used so far, from /proc/PID/stat: utime + stime. */
export function cpuOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * TICK_US;
}

/** A process's private (anonymous) resident memory, in MiB, from /proc/PID/status. */
export function privateMemory(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/RssAnon:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
}

/** What the load generator knows of a server: where it listens, its process, and its MariaDB's. */
export type Target = { url: string; pid: number; databasePid: number; agent: http.Agent };

export function target(url: string, pid: number, databasePid: number, inFlight: number): Target {
  return { url, pid, databasePid, agent: new http.Agent({ keepAlive: true, maxSockets: inFlight }) };
}

/** One request, its answer read to the end: the status. */
export function request({ url, agent }: Target, method: string, path: string, body?: string): Promise<number> {
  const { hostname, port } = new URL(url);
  const headers = body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
  return new Promise((resolve, reject) => {
    const req = http.request({ host: hostname, port, method, path, agent, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** `count` fresh ids under a prefix, each with its POST body, serialised now. */
export function freshBodies(prefix: string, count: number): Array<[string, string]> {
  return Array.from({ length: count }, (_, i) => {
    const id = `${prefix}${i}`;
    return [id, JSON.stringify(expenseFor(id))];
  });
}

export type Op = 'POST' | 'GET';

/** The two requests measured: a POST of a fresh id (201), and a GET of one stored (200). */
export async function send(server: Target, op: Op, [id, body]: [string, string]): Promise<void> {
  const status = op === 'POST' ? await request(server, 'POST', '/v1/expenses', body) : await request(server, 'GET', `/v1/expenses/${id}`);
  const wanted = op === 'POST' ? 201 : 200;
  if (status !== wanted) throw new Error(`${op} ${id} at ${server.url}: HTTP ${status}, not ${wanted}`);
}

export type Sample = { requests: number; seconds: number; cpuUs: number; databaseCpuUs: number };

/**
 * Sends `op` for every item, `inFlight` at a time: the wall time, and the CPU
 * the server and its MariaDB spent (no other load may use that MariaDB meanwhile).
 */
export async function measure(server: Target, op: Op, items: Array<[string, string]>, inFlight: number): Promise<Sample> {
  const [cpu, databaseCpu] = [cpuOf(server.pid), cpuOf(server.databasePid)];
  const start = performance.now();
  await eachLimit(items, inFlight, (item) => send(server, op, item));
  const seconds = (performance.now() - start) / 1000;
  return { requests: items.length, seconds, cpuUs: cpuOf(server.pid) - cpu, databaseCpuUs: cpuOf(server.databasePid) - databaseCpu };
}

/** Samples pooled: requests per second, and the server's and MariaDB's CPU µs per request. */
export function pooled(samples: Sample[]): { rps: number; cpuPerRequest: number; databaseCpuPerRequest: number } {
  const sum = (f: (s: Sample) => number) => samples.reduce((total, s) => total + f(s), 0);
  const requests = sum((s) => s.requests);
  return { rps: requests / sum((s) => s.seconds), cpuPerRequest: sum((s) => s.cpuUs) / requests, databaseCpuPerRequest: sum((s) => s.databaseCpuUs) / requests };
}

export const median = (xs: number[]): number => {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};
