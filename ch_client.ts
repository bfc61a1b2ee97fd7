// ch_client.ts: the consistent-hashing client.
//
// It decides, from an expense's id alone, which node (shard) owns it, stores
// it there, and reads it back from there. No node knows of the others; the
// ring is the only thing that keeps every client in agreement.

import { realpathSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { EDITABLE, ID_RULE, isId, sameExpense, type Expense } from './api/expense.ts';
import { HashRing } from './ring.ts';
import { balanceTable } from './client/balance.ts';
import { eachLimit, printFailures, progress } from './client/batch.ts';
import { call, problem } from './client/http.ts';
import { aliases, nodeProblem, shardsOf } from './client/nodes.ts';
import { compareTable, lookupSpeeds } from './client/compare.ts';
import { check, reshard } from './client/reshard.ts';
import { ringsFor } from './client/reshard-state.ts';
import { ringSvg } from './client/ring-svg.ts';

const DEFAULT_NODES = '127.0.0.1:3000,127.0.0.1:4000,127.0.0.1:5000';
const DEFAULT_STATE = fileURLToPath(new URL('data/reshard.json', import.meta.url));

const USAGE = `Usage:
  node ch_client.ts [options]                         store expenses on their nodes, then read each back
  node ch_client.ts map [--json | --svg FILE] [options] [id ...]
                                                      which node owns each id (no HTTP), or a picture
  node ch_client.ts balance [--replicas N,N,...] [--keys N] [--nodes ...]
                                                      how evenly the ring spreads keys
  node ch_client.ts reshard --from a,b,c --to a,b,c,d [--replicas N] [--dry-run]
                                                      move the records whose owner changes, then audit
  node ch_client.ts compare [--nodes ...] [--keys N]
                                                      the ring against mod N, rendezvous and jump hashing
  node ch_client.ts check [--nodes ...] [--replicas N]
                                                      is every record on its owner? (reads only)
  node ch_client.ts get ID [options]                  read one expense from its owner

Options:
  --nodes a,b,c     the nodes, as host:port (default ${DEFAULT_NODES})
  --replicas N      points per node on the ring (default 1; balance: 1,10,100,1000)
  --ids SPEC        ids as a range 1-10, a list 1,2,3, or both: 0-9,42 (default 0-9)
  --json            map: print one JSON object {"id": "node", ...}
  --svg FILE        map: draw the ring, its arcs and the ids into an SVG file
  --keys N          balance, compare: how many keys to place (default 100000)
  --dry-run         reshard: print the plan, move nothing
  --verbose         name every id that failed (by default, one line per reason)
  --state FILE      the record of a reshard in progress (default data/reshard.json);
                    while it exists, get asks an id's old owner first, then its new one
  -h, --help        this text`;
// Enough requests in flight to keep three shards busy, few enough to be polite.
const IN_FLIGHT = 32;

type Options = { nodes: string[]; replicas: number; ids: string[]; verbose: boolean };

/** The job: five steps, in order. Resolves to the process exit code. */
async function store(options: Options): Promise<number> {
  // 1. Define the nodes.
  const ring = new HashRing(options.nodes, options.replicas);
  await warnAboutAliases(options.nodes);

  // 2. Map each id to its node with the ring.
  const owner = new Map(options.ids.map((id) => [id, ring.get(id)]));

  // 3. Print the mapping.
  printMapping(owner);

  // 4. POST each expense to the node that owns it, and nowhere else: a record
  //    on any other node could never be found again.
  const stored = new Map<string, Expense>();
  const failed = new Map<string, string>();
  const posting = progress('stored', options.ids.length);
  await eachLimit(options.ids, IN_FLIGHT, async (id) => {
    const put = await putOnce(owner.get(id)!, expenseFor(id));
    if (put.ok) stored.set(id, put.record);
    else failed.set(id, put.why);
    posting.tick();
  });
  posting.done();

  // 5. GET each back from the same node, and check it is what was stored.
  const reading = progress('read back', stored.size);
  await eachLimit([...stored.keys()], IN_FLIGHT, async (id) => {
    try {
      const res = await call(owner.get(id)!, 'GET', `/v1/expenses/${id}`);
      if (res.status !== 200) failed.set(id, `GET failed: ${problem(res)}`);
      else if (!sameExpense(res.body, stored.get(id)!)) failed.set(id, 'read back a different record than was stored');
    } catch (err) {
      failed.set(id, (err as Error).message);
    }
    reading.tick();
  });
  reading.done();

  return summary(options, owner, failed);
}

/**
 * POSTs one expense. A 409 means the id is taken: fine if by this same
 * expense (an earlier run stored it), a failure if by a different one.
 */
async function putOnce(node: string, expense: Omit<Expense, 'status' | 'decision_date'>): Promise<{ ok: true; record: Expense } | { ok: false; why: string }> {
  try {
    const res = await call(node, 'POST', '/v1/expenses', expense);
    if (res.status === 201) return { ok: true, record: res.body };
    if (res.status !== 409) return { ok: false, why: `POST failed: ${problem(res)}` };
    const there = await call(node, 'GET', `/v1/expenses/${expense.id}`);
    if (there.status === 200 && sameExpense(there.body, expense, ['id', ...EDITABLE])) return { ok: true, record: there.body };
    return { ok: false, why: `a different expense with this id is already stored there (${problem(there)})` };
  } catch (err) {
    return { ok: false, why: (err as Error).message };
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

function printMapping(owner: Map<string, string>): void {
  // A long run prints the first ten, so that the output stays readable.
  const shown = owner.size <= 20 ? [...owner] : [...owner].slice(0, 10);
  for (const [id, node] of shown) console.log(`${JSON.stringify(id)} => ${JSON.stringify(node)}`);
  if (shown.length < owner.size) console.log(`... and ${owner.size - shown.length} more`);
}

function summary(options: Options, owner: Map<string, string>, failed: Map<string, string>): number {
  printFailures(new Map([...failed].map(([id, why]) => [id, ` on ${owner.get(id)}: ${why}`])), options.verbose);
  for (const node of options.nodes) {
    const ok = options.ids.filter((id) => owner.get(id) === node && !failed.has(id)).length;
    console.log(`${node}: ${ok} stored and read back`);
  }
  const ok = options.ids.length - failed.size;
  console.log(`${ok} of ${options.ids.length} expenses stored on and read back from their own node`);
  return failed.size === 0 ? 0 : 1;
}

/** Two names for one shard make the ring send its ids to two places: say so before writing. */
async function warnAboutAliases(nodes: string[]): Promise<void> {
  for (const group of aliases(await shardsOf(nodes))) {
    console.error(`warning: ${group.join(' and ')} are the same shard; the ring counts them as ${group.length} nodes`);
  }
}

// ---------------------------------------------------------------------------
// The command line.

class UsageError extends Error {}

// Bounds that keep a typo from eating the machine: a ring of a million
// points takes about a second and 200 MB to build.
const MAX_REPLICAS = 10_000;
const MAX_POINTS = 1_000_000;
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
  verbose: { type: 'boolean', default: false },
  state: { type: 'string', default: DEFAULT_STATE },
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
    if (values.from === undefined || values.to === undefined) throw new UsageError('reshard needs --from and --to');
    const [from, to] = [parseNodes(values.from, '--from'), parseNodes(values.to, '--to')];
    const replicas = parseReplicas(values.replicas ?? '1', Math.max(from.length, to.length));
    return reshard({ from, to, replicas, dryRun: values['dry-run'], statePath: values.state, verbose: values.verbose });
  }

  const replicas = parseReplicas(values.replicas ?? '1', nodes.length);
  if (command === undefined) return store({ nodes, replicas, ids: parseIds(values.ids ?? '0-9'), verbose: values.verbose });
  if (command === 'check') return check(nodes, replicas);
  if (command === 'get') {
    if (rest.length !== 1 || !isId(rest[0]!)) throw new UsageError(`get takes exactly one id, which ${ID_RULE}`);
    return get(rest[0]!, ringsFor(values.state, nodes, replicas));
  }
  if (command === 'map') {
    const ids = values.ids !== undefined ? parseIds(values.ids) : rest.length > 0 ? rest : parseIds('0-9');
    const bad = ids.find((id) => !isId(id));
    if (bad !== undefined) throw new UsageError(`map: ${JSON.stringify(bad)} is not an id: an id ${ID_RULE}`);
    return map(new HashRing(nodes, replicas), ids, values);
  }
  throw new UsageError(`unknown command ${JSON.stringify(command)}`);
}

/** Reads one expense from the first of its owners (see ringsFor) that has it. */
async function get(id: string, rings: HashRing[]): Promise<number> {
  for (const node of new Set(rings.map((ring) => ring.get(id)))) {
    const res = await call(node, 'GET', `/v1/expenses/${id}`);
    if (res.status === 200) {
      console.error(`found on ${node}`);
      console.log(JSON.stringify(res.body));
      return 0;
    }
    if (res.status !== 404) throw new Error(`${node}: ${problem(res)}`);
  }
  console.error(`no expense with id ${JSON.stringify(id)}`);
  return 1;
}

function map(ring: HashRing, ids: string[], values: { json: boolean; svg?: string }): number {
  if (values.svg !== undefined) {
    writeFileSync(values.svg, ringSvg(ring, ids));
    const n = ring.nodes.length;
    console.log(`wrote ${values.svg}: ${n} ${n === 1 ? 'node' : 'nodes'} × ${ring.replicas}, ${ids.length} ids`);
    return 0;
  }
  const owner = new Map(ids.map((id) => [id, ring.get(id)]));
  if (values.json) console.log(JSON.stringify(Object.fromEntries(owner)));
  else for (const [id, node] of owner) console.log(`${JSON.stringify(id)} => ${JSON.stringify(node)}`);
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
