// ch_client.ts: the consistent-hashing client.
//
// It decides, from an expense's id alone, which node (shard) owns it, stores
// it there, and reads it back from there. The ring does the deciding; the
// cluster map that the shards hold says which ring, so that every client
// agrees (api/cluster-map.ts).

import { existsSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { MAX_POINTS, MAX_REPLICAS } from './api/cluster-map.ts';
import { EDITABLE, ID_RULE, isId, sameExpense, type Expense } from './api/expense.ts';
import { nodeProblem } from './api/node.ts';
import { HashRing } from './ring.ts';
import { balanceTable } from './lab/balance.ts';
import { eachLimit, printFailures, progress } from './client/batch.ts';
import { discover, send, type Said, type View } from './client/cluster.ts';
import { problem } from './client/http.ts';
import { compareTable, lookupSpeeds } from './lab/compare.ts';
import { check, reshard } from './operator/reshard.ts';
import { ringSvg } from './lab/ring-svg.ts';
import { plural } from './api/words.ts';

const DEFAULT_NODES = '127.0.0.1:3000,127.0.0.1:4000,127.0.0.1:5000';
const DEFAULT_SECRET = fileURLToPath(new URL('data/cluster-secret', import.meta.url));

const USAGE = `Usage:
  node ch_client.ts [options]                         store expenses on their nodes, then read each back
  node ch_client.ts map [--json | --svg FILE] [options] [id ...]
                                                      which node owns each id (no HTTP), or a picture
  node ch_client.ts balance [--replicas N,N,...] [--keys N] [--nodes ...]
                                                      how evenly the ring spreads keys
  node ch_client.ts reshard --to a,b,c,d [--replicas N] [--dry-run]
                                                      change the cluster: move the records whose owner changes
  node ch_client.ts compare [--nodes ...] [--keys N]
                                                      the ring against mod N, rendezvous and jump hashing
  node ch_client.ts check [--nodes ...]               is every record on its owner? (reads only)
  node ch_client.ts get ID [options]                  read one expense from its owner

Options:
  --nodes a,b,c     the nodes, as host:port (default ${DEFAULT_NODES}). Where the
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
  --secret-file F   reshard: the cluster secret (default data/cluster-secret, or the
                    file that CLUSTER_SECRET_FILE names)
  --lease S         reshard: seconds without renewal after which another operator
                    may take the reshard over (default 15)
  --verbose         name every id that failed (by default, one line per reason)
  -h, --help        this text`;
// Enough requests in flight to keep three shards busy, few enough to be polite.
export const IN_FLIGHT = 32;

type Options = { nodes: string[]; replicas: number; ids: string[]; verbose: boolean };
type Stored = { node: string; record: Expense };

/** The job: five steps, in order. Resolves to the process exit code. */
async function store(options: Options): Promise<number> {
  // 1. Define the nodes: the cluster's map, read from the nodes we are given.
  const view = await join(options.nodes, options.replicas);

  // 2. Map each id to its node with the ring.
  const owner = new Map(options.ids.map((id) => [id, view.place(id).owner.name]));

  // 3. Print the mapping.
  printMapping(owner);

  // 4. POST each expense to the node that owns it, and nowhere else: a record
  //    on any other node could never be found again. A node that does not own
  //    it says so (421), and names the owner.
  const stored = new Map<string, Stored>();
  const failed = new Map<string, string>();
  const posting = progress('stored', options.ids.length);
  await eachLimit(options.ids, IN_FLIGHT, async (id) => {
    const put = await putOnce(view, expenseFor(id));
    if ('why' in put) failed.set(id, put.why);
    else stored.set(id, put);
    posting.tick();
  });
  posting.done();

  // 5. GET each back from the same node, and check it is what was stored.
  const reading = progress('read back', stored.size);
  await eachLimit([...stored.keys()], IN_FLIGHT, async (id) => {
    try {
      const res = await send(view, id, 'GET', `/v1/expenses/${id}`, undefined, stored.get(id)!.node);
      if (res.status !== 200) failed.set(id, `GET failed: ${problem(res)}`);
      else if (!sameExpense(res.body, stored.get(id)!.record)) failed.set(id, 'read back a different record than was stored');
    } catch (err) {
      failed.set(id, (err as Error).message);
    }
    reading.tick();
  });
  reading.done();

  return summary(view, options, stored, failed);
}

/**
 * POSTs one expense. A 409 means the id is taken: fine if by this same
 * expense (an earlier run stored it), a failure if by a different one.
 */
async function putOnce(view: View, expense: Omit<Expense, 'status' | 'decision_date'>): Promise<Stored | { why: string }> {
  try {
    const res = await send(view, expense.id, 'POST', '/v1/expenses', expense);
    if (res.status === 201) return { node: res.node, record: res.body };
    if (res.status !== 409) return { why: `POST failed: ${problem(res)}` };
    const there = await send(view, expense.id, 'GET', `/v1/expenses/${expense.id}`, undefined, res.node);
    if (there.status === 200 && sameExpense(there.body, expense, ['id', ...EDITABLE])) return { node: there.node, record: there.body };
    return { why: `a different expense with this id is already stored there (${problem(there)})` };
  } catch (err) {
    return { why: (err as Error).message };
  }
}

/** Expense N of the assignment's test data. */
export function expenseFor(id: string): Omit<Expense, 'status' | 'decision_date'> {
  return {
    id,
    name: `Foo ${id}`,
    email: `foo${id}@bar.com`,
    category: 'office supplies',
    description: 'iPad for office use',
    link: 'http://www.apple.com/shop/buy-ipad/ipad-pro',
    estimated_costs: id === '1' ? '700' : '800',
    submit_date: '12-10-2016',
  };
}

/** Prints `"id" => "node"` lines; a long run prints the first ten, so that the output stays readable. */
function printMapping(owner: Map<string, string>, all = false): void {
  const shown = all || owner.size <= 20 ? [...owner] : [...owner].slice(0, 10);
  for (const [id, node] of shown) console.log(`${JSON.stringify(id)} => ${JSON.stringify(node)}`);
  if (shown.length < owner.size) console.log(`... and ${owner.size - shown.length} more`);
}

function summary(view: View, options: Options, stored: Map<string, Stored>, failed: Map<string, string>): number {
  printFailures(new Map([...failed].map(([id, why]) => [id, ` on ${stored.get(id)?.node ?? view.place(id).owner.name}: ${why}`])), options.verbose);
  for (const { name } of view.map.nodes) {
    const ok = options.ids.filter((id) => stored.get(id)?.node === name && !failed.has(id)).length;
    console.log(`${name}: ${ok} stored and read back`);
  }
  const ok = options.ids.length - failed.size;
  console.log(`${ok} of ${options.ids.length} expenses stored on and read back from their own node`);
  return failed.size === 0 ? 0 : 1;
}

/** The view to route by; where no node holds a map, a warning for two names that reach one shard. */
async function join(nodes: string[], replicas: number): Promise<View> {
  const { view, said } = await discover(nodes, replicas);
  if (view.map.epoch === 0) {
    for (const group of aliases(said)) {
      console.error(`warning: ${group.join(' and ')} are the same shard; the ring counts them as ${group.length} nodes`);
    }
  }
  return view;
}

/** Groups of two or more names that reach the same shard. */
function aliases(said: Map<string, Said>): string[][] {
  const names = new Map<string, string[]>();
  for (const [node, answer] of said) {
    if ('shard' in answer) names.set(answer.shard, [...(names.get(answer.shard) ?? []), node]);
  }
  return [...names.values()].filter((group) => group.length > 1);
}

// ---------------------------------------------------------------------------
// The command line.

class UsageError extends Error {}

// Bounds that keep a typo from eating the machine (the ring's are in api/cluster-map.ts).
const MAX_IDS = 1_000_000;
const MAX_KEYS = 10_000_000;

/** "0-9,42,abc" as a list of ids. Ranges are of whole numbers. */
function parseIds(spec: string): string[] {
  const ids = new Set<string>();
  for (const part of spec.split(',')) {
    const range = /^(\d+)-(\d+)$/.exec(part);
    if (range === null) {
      if (!isId(part)) throw new UsageError(`--ids: ${JSON.stringify(part)} is neither an id nor a range like 1-10`);
      ids.add(part);
      continue;
    }
    const [from, to] = [Number(range[1]), Number(range[2])];
    if (from > to) throw new UsageError(`--ids: the range ${part} must go upwards`);
    if (to - from >= MAX_IDS - ids.size) throw new UsageError(`--ids: at most ${MAX_IDS} ids in one run, so that the run fits in memory`);
    for (let i = from; i <= to; i++) ids.add(String(i));
  }
  return [...ids];
}

/** "host:port,host:port" as a list of nodes. */
function parseNodes(spec: string, option = '--nodes'): string[] {
  const nodes = spec.split(',').filter((n) => n !== '');
  if (nodes.length === 0) throw new UsageError(`${option} needs at least one host:port`);
  for (const node of nodes) {
    const why = nodeProblem(node);
    if (why !== undefined) throw new UsageError(`${option}: ${why}`);
  }
  if (new Set(nodes).size < nodes.length) throw new UsageError(`${option} names a node twice`);
  return nodes;
}

function parseCount(spec: string, option: string, max: number): number {
  const n = Number(spec);
  if (!/^\d+$/.test(spec) || !Number.isSafeInteger(n) || n < 1) throw new UsageError(`${option} must be a positive whole number, got ${JSON.stringify(spec)}`);
  if (n > max) throw new UsageError(`${option} must be at most ${max}, got ${n}: beyond that the run would take too long or too much memory`);
  return n;
}

function parseReplicas(spec: string, nodes: number): number {
  const replicas = parseCount(spec, '--replicas', MAX_REPLICAS);
  if (replicas * nodes > MAX_POINTS) {
    throw new UsageError(`--replicas ${replicas} with ${nodes} nodes makes ${replicas * nodes} points; at most ${MAX_POINTS} fit in a ring that builds in about a second`);
  }
  return replicas;
}

const OPTIONS = {
  nodes: { type: 'string', default: DEFAULT_NODES },
  replicas: { type: 'string' },
  ids: { type: 'string' },
  json: { type: 'boolean', default: false },
  svg: { type: 'string' },
  keys: { type: 'string', default: '100000' },
  from: { type: 'string' },
  to: { type: 'string' },
  'dry-run': { type: 'boolean', default: false },
  'secret-file': { type: 'string' },
  lease: { type: 'string', default: '15' },
  verbose: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

async function main(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: OPTIONS });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const nodes = parseNodes(values.nodes);
  const [command, ...rest] = positionals;
  if (command === 'balance') {
    const list = (values.replicas ?? '1,10,100,1000').split(',').map((r) => parseReplicas(r, nodes.length));
    const keys = parseCount(values.keys, '--keys', MAX_KEYS);
    console.log(list.map((r) => balanceTable(nodes, r, keys)).join('\n\n'));
    return 0;
  }

  if (command === 'compare') {
    const keys = parseCount(values.keys, '--keys', MAX_KEYS);
    const timed = Math.min(keys, 100_000);
    console.log(compareTable(nodes, keys));
    console.log(`\nlookup speed, best of 3 rounds of ${timed} keys:\n${lookupSpeeds(nodes, timed)}`);
    return 0;
  }

  if (command === 'reshard') {
    if (values.to === undefined) throw new UsageError('reshard needs --to, the nodes the cluster is to have');
    const to = parseNodes(values.to, '--to');
    const from = values.from === undefined ? undefined : parseNodes(values.from, '--from');
    const replicas = values.replicas === undefined ? undefined : parseReplicas(values.replicas, to.length);
    const leaseMs = parseCount(values.lease, '--lease', 3600) * 1000;
    const secret = readSecret(values['secret-file'] ?? process.env.CLUSTER_SECRET_FILE);
    return reshard({ seeds: nodes, from, to, replicas, dryRun: values['dry-run'], verbose: values.verbose, secret, leaseMs });
  }

  const replicas = parseReplicas(values.replicas ?? '1', nodes.length);
  if (command === undefined) return store({ nodes, replicas, ids: parseIds(values.ids ?? '0-9'), verbose: values.verbose });
  if (command === 'check') return check(nodes);
  if (command === 'get') {
    if (rest.length !== 1 || !isId(rest[0]!)) throw new UsageError(`get takes exactly one id, which ${ID_RULE}`);
    return get(rest[0]!, await join(nodes, replicas));
  }
  if (command === 'map') {
    const ids = values.ids !== undefined ? parseIds(values.ids) : rest.length > 0 ? rest : parseIds('0-9');
    const bad = ids.find((id) => !isId(id));
    if (bad !== undefined) throw new UsageError(`map: ${JSON.stringify(bad)} is not an id: an id ${ID_RULE}`);
    return map(new HashRing(nodes, replicas), ids, values);
  }
  throw new UsageError(`unknown command ${JSON.stringify(command)}`);
}

/** Reads one expense from its owner, wherever the cluster says that is. */
async function get(id: string, view: View): Promise<number> {
  const res = await send(view, id, 'GET', `/v1/expenses/${id}`);
  if (res.status === 404) {
    console.error(`no expense with id ${JSON.stringify(id)}`);
    return 1;
  }
  if (res.status !== 200) throw new Error(`${res.node}: ${problem(res)}`);
  console.error(`found on ${res.node}`);
  console.log(JSON.stringify(res.body));
  return 0;
}

/**
 * The cluster secret for the operator's routes, from its file: the one named,
 * or start-shards.sh's when it exists. Undefined for shards that have none.
 */
function readSecret(path: string | undefined): string | undefined {
  if (path === undefined && !existsSync(DEFAULT_SECRET)) return undefined;
  try {
    return readFileSync(path ?? DEFAULT_SECRET, 'utf8').trim();
  } catch (err) {
    throw new UsageError(`cannot read the cluster secret: ${(err as Error).message}`);
  }
}

function map(ring: HashRing, ids: string[], values: { json: boolean; svg?: string }): number {
  if (values.svg !== undefined) {
    writeFileSync(values.svg, ringSvg(ring, ids));
    console.log(`wrote ${values.svg}: ${plural(ring.nodes.length, 'node')} × ${ring.replicas}, ${ids.length} ids`);
    return 0;
  }
  const owner = new Map(ids.map((id) => [id, ring.get(id)]));
  if (values.json) console.log(JSON.stringify(Object.fromEntries(owner)));
  else printMapping(owner, true);
  return 0;
}

// Run as a script, and not when a test or a bench imports this file. (Not
// import.meta.main: Node 22 before 22.18 lacks it, and would silently do nothing.)
if (process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (err: Error) => {
      const usage = err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
      console.error(`ch_client: ${err.message}${usage ? '\n\n' + USAGE : ''}`);
      process.exitCode = usage ? 2 : 1;
    },
  );
}
