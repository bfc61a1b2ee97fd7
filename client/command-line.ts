// client/command-line.ts: ch_client.ts's command line: its usage, its
// options, and the checks that turn each flag into a value or a clear error.

import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { MAX_POINTS, MAX_REPLICAS } from '../api/cluster-map.ts';
import { isId } from '../api/expense.ts';
import { nodeProblem } from '../api/node.ts';
import { secretFileProblem } from '../api/secret-file.ts';

export const DEFAULT_NODES = '127.0.0.1:3000,127.0.0.1:4000,127.0.0.1:5000';
// The one rule for where the cluster is: --nodes, else CH_NODES, else the
// three shards that ./start-shards.sh starts on its default ports.
const NODES = process.env.CH_NODES || DEFAULT_NODES;
const DEFAULT_SECRET = fileURLToPath(new URL('../data/cluster-secret', import.meta.url));

export const USAGE = `Usage:
  node ch_client.ts [options]                         store expenses on their nodes, then read each back
  node ch_client.ts map [--json | --svg FILE] [options] [id ...]
                                                      which node owns each id (by the nodes' cluster map, or --nodes), or a picture
  node ch_client.ts balance [--replicas N,N,...] [--keys N] [--nodes ...]
                                                      how evenly the ring spreads keys
  node ch_client.ts reshard --to a,b,c,d [--replicas N] [--dry-run] [--forget NODE]
                                                      change the cluster: move the records whose owner changes
  node ch_client.ts compare [--nodes ...] [--keys N]
                                                      the ring against mod N, rendezvous and jump hashing
  node ch_client.ts failover NODE --to HOST:PORT [--nodes ...]
                                                      give NODE's name its standby at HOST:PORT:
                                                      fence, apply, promote, new map (operator/failover.ts)
  node ch_client.ts failover NODE --automatic off|on  whether NODE's shard replaces its primary by itself
                                                      (SHARDS_STANDBY=2; election/rules.ts, E5)
  node ch_client.ts check [--nodes ...]               is every record on its owner, and has every shard
                                                      its standby? (reads only)
  node ch_client.ts get ID [options]                  read one expense from its owner

Options:
  --nodes a,b,c     the nodes, as host:port (default: $CH_NODES, else ${DEFAULT_NODES}). Where the
                    shards hold a cluster map, these are only where to read it
  --replicas N      points per node on the ring (default 1, or the cluster map's;
                    balance: 1,10,100,1000)
  --ids SPEC        ids as a range 1-10, a list 1,2,3, or both: 0-9,42 (default 0-9)
  --json            map: print one JSON object {"id": "node", ...}
  --svg FILE        map: draw the ring, its arcs and the ids into an SVG file
  --keys N          balance, compare: how many keys to place (default 100000)
  --dry-run         reshard: print the plan, move nothing
  --from a,b,c      reshard: the nodes it moves from; by default the cluster map's,
                    and refused when it is not
  --to HOST:PORT    failover: the standby's server, which takes over NODE's name
  --automatic off|on  failover: turn NODE's shard's automatic failover off or on, on each machine
  --without-vote    failover: promote --to although no majority of its shard voted for it, its other
                    machines being gone for good (writes only they acknowledged are lost)
  --secret-file F   reshard, failover, check: the cluster secret (default data/cluster-secret, or the
                    file that CLUSTER_SECRET_FILE names)
  --forget NODE     reshard: a node of the map that is gone for good (it must not answer):
                    leave it out, and lose what lived only on it (CLUSTER FORGET)
  --lease S         reshard: seconds without renewal after which another operator
                    may take the reshard over (default 15)
  --verbose         name every id that failed (by default, one line per reason)
  -h, --help        this text`;
export class UsageError extends Error {}

/** failover NODE --to HOST:PORT, or failover NODE --automatic off|on, checked (operator/failover.ts, operator/automatic.ts). */
export function parseFailover(seeds: string[], rest: string[], values: { to?: string; automatic?: string; 'without-vote'?: boolean; 'secret-file'?: string }) {
  if (rest.length !== 1) throw new UsageError('failover takes exactly one NODE: the name, as the cluster map has it, of the node whose machine is replaced');
  const [node] = parseNodes(rest[0]!, 'NODE');
  const secret = readSecret(values['secret-file'] ?? process.env.CLUSTER_SECRET_FILE);
  if (values.automatic !== undefined) {
    if (values.automatic !== 'on' && values.automatic !== 'off') throw new UsageError(`--automatic takes on or off, got ${JSON.stringify(values.automatic)}`);
    if (values.to !== undefined) throw new UsageError('failover takes --to or --automatic, not both: --automatic replaces no machine, it says whether the shard may do so by itself');
    return { seeds, node: node!, automatic: values.automatic === 'on', secret };
  }
  const to = values.to === undefined ? [] : parseNodes(values.to, '--to');
  if (to.length !== 1) throw new UsageError('failover needs --to HOST:PORT, the server of the standby that takes over (or --automatic off|on)');
  return { seeds, node: node!, to: to[0]!, secret, withoutVote: values['without-vote'] === true };
}

/** The flags of reshard, as parseArgs gives them. */
type ReshardFlags = { to?: string; from?: string; replicas?: string; forget?: string; 'dry-run': boolean; verbose: boolean; 'secret-file'?: string; lease: string };

/** reshard's options, checked: the target ring, and what the operator said of the run. */
export function parseReshard(seeds: string[], values: ReshardFlags) {
  if (values.to === undefined) throw new UsageError('reshard needs --to, the nodes the cluster is to have');
  const to = parseNodes(values.to, '--to');
  return {
    seeds,
    to,
    from: values.from === undefined ? undefined : parseNodes(values.from, '--from'),
    replicas: values.replicas === undefined ? undefined : parseReplicas(values.replicas, to.length),
    forget: values.forget === undefined ? undefined : parseNodes(values.forget, '--forget'),
    dryRun: values['dry-run'],
    verbose: values.verbose,
    secret: readSecret(values['secret-file'] ?? process.env.CLUSTER_SECRET_FILE),
    leaseMs: parseCount(values.lease, '--lease', 3600) * 1000,
  };
}

// Bounds that keep a typo from eating the machine (the ring's are in api/cluster-map.ts).
const MAX_IDS = 1_000_000;
export const MAX_KEYS = 10_000_000;

/**
 * "0-9,42,abc" as a list of ids. Ranges are of whole numbers, kept as written:
 * an id is a string, so 007-009 is "007", "008", "009" (not 7, 8, 9, which
 * are other records), and a range counts with BigInt, so that ids beyond
 * 2^53 stay exact and a range of them ends.
 */
export function parseIds(spec: string): string[] {
  const ids = new Set<string>();
  for (const part of spec.split(',')) {
    const range = /^(\d+)-(\d+)$/.exec(part);
    if (range === null) {
      if (!isId(part)) throw new UsageError(`--ids: ${JSON.stringify(part)} is neither an id nor a range like 1-10`);
      ids.add(part);
      continue;
    }
    const [first, last] = [range[1]!, range[2]!];
    if (!isId(first) || !isId(last)) throw new UsageError(`--ids: the range ${part} has an end longer than an id (64 characters)`);
    const width = rangeWidth(first, last, part);
    const [from, to] = [BigInt(first), BigInt(last)];
    if (from > to) throw new UsageError(`--ids: the range ${part} must go upwards`);
    if (to - from >= BigInt(MAX_IDS - ids.size)) throw new UsageError(`--ids: at most ${MAX_IDS} ids in one run, so that the run fits in memory`);
    for (let i = from; i <= to; i++) ids.add(String(i).padStart(width, '0'));
  }
  return [...ids];
}

/**
 * How many digits each id of a range has: as many as needed, or, when an end
 * is written with a leading zero, the width of its ends, which must agree;
 * otherwise 07-100 could mean "07".."99" or "007".."100".
 */
function rangeWidth(first: string, last: string, part: string): number {
  const padded = (end: string) => end.length > 1 && end.startsWith('0');
  if (!padded(first) && !padded(last)) return 0;
  if (first.length !== last.length) {
    throw new UsageError(`--ids: the range ${part} has leading zeros, so its ids keep the width of its ends; write both ends with the same number of digits, such as ${first.padStart(last.length, '0')}-${last.padStart(first.length, '0')}`);
  }
  return first.length;
}

/** "host:port,host:port" as a list of nodes. */
export function parseNodes(spec: string, option = '--nodes'): string[] {
  const nodes = spec.split(',').filter((n) => n !== '');
  if (nodes.length === 0) throw new UsageError(`${option} needs at least one host:port`);
  for (const node of nodes) {
    const why = nodeProblem(node);
    if (why !== undefined) throw new UsageError(`${option}: ${why}`);
  }
  if (new Set(nodes).size < nodes.length) throw new UsageError(`${option} names a node twice`);
  return nodes;
}

export function parseCount(spec: string, option: string, max: number): number {
  const n = Number(spec);
  if (!/^\d+$/.test(spec) || !Number.isSafeInteger(n) || n < 1) throw new UsageError(`${option} must be a positive whole number, got ${JSON.stringify(spec)}`);
  if (n > max) throw new UsageError(`${option} must be at most ${max}, got ${n}: beyond that the run would take too long or too much memory`);
  return n;
}

export function parseReplicas(spec: string, nodes: number): number {
  const replicas = parseCount(spec, '--replicas', MAX_REPLICAS);
  if (replicas * nodes > MAX_POINTS) {
    throw new UsageError(`--replicas ${replicas} with ${nodes} nodes makes ${replicas * nodes} points; at most ${MAX_POINTS} fit in a ring that builds in about a second`);
  }
  return replicas;
}

export const OPTIONS = {
  nodes: { type: 'string', default: NODES },
  replicas: { type: 'string' },
  ids: { type: 'string' },
  json: { type: 'boolean', default: false },
  svg: { type: 'string' },
  keys: { type: 'string', default: '100000' },
  from: { type: 'string' },
  to: { type: 'string' },
  automatic: { type: 'string' },
  'without-vote': { type: 'boolean', default: false },
  'dry-run': { type: 'boolean', default: false },
  'secret-file': { type: 'string' },
  lease: { type: 'string', default: '15' },
  forget: { type: 'string' },
  verbose: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

/** The command line, parsed: its options by OPTIONS, and the command with its arguments. */
export function parseCommandLine(args: string[]) {
  return parseArgs({ args, allowPositionals: true, options: OPTIONS });
}
export type Values = ReturnType<typeof parseCommandLine>['values'];

/**
 * The cluster secret for the operator's routes, from its file: the one named,
 * or start-shards.sh's when it exists. Undefined for shards that have none.
 */
export function readSecret(path: string | undefined): string | undefined {
  if (path === undefined && !existsSync(DEFAULT_SECRET)) return undefined;
  let problem: string | undefined;
  try {
    problem = secretFileProblem(path ?? DEFAULT_SECRET);
    if (problem === undefined) return readFileSync(path ?? DEFAULT_SECRET, 'utf8').trim();
  } catch (err) {
    throw new UsageError(`cannot read the cluster secret: ${(err as Error).message}`);
  }
  throw new UsageError(problem);
}
