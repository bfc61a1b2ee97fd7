// ch_client.ts: the consistent-hashing client.
//
// It decides, from an expense's id alone, which node (shard) owns it, stores
// it there, and reads it back from there: the assignment's five steps, in
// store() below. The ring (ring.ts) does the deciding. The cluster map that
// the shards hold says which ring, so that every client agrees: that is step
// 1, and the README's level 2.
//
// The other commands (map, balance, compare, reshard, failover, check, get) are the
// lab's and the operator's; main() at the end sends each to its room.

import { realpathSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { EDITABLE, ID_RULE, isId, sameExpense, type Expense } from './api/expense.ts';
import { MAX_KEYS, OPTIONS, parseCount, parseFailover, parseIds, parseNodes, parseReplicas, parseReshard, readSecret, USAGE, UsageError } from './client/command-line.ts';
import type { HashRing } from './ring.ts';
import { balanceTable } from './lab/balance.ts';
import { eachLimit, printFailures, progress } from './client/batch.ts';
import { discover, mapRing, send, type View } from './client/cluster.ts';
import { problem } from './client/http.ts';
import { compareTable, lookupSpeeds } from './lab/compare.ts';
import { check, reshard } from './operator/reshard.ts';
import { failover } from './operator/failover.ts';
import { ringSvg } from './lab/ring-svg.ts';
import { plural } from './api/words.ts';

// Enough requests in flight to keep three shards busy, few enough to be polite.
export const IN_FLIGHT = 32;

type Options = { nodes: string[]; replicas: number; ids: string[]; verbose: boolean };
type Stored = { node: string; record: Expense };

/** The job: five steps, in order. Resolves to the process exit code. */
async function store(options: Options): Promise<number> {
  // 1. Define the nodes. The assignment takes them from --nodes. Here the
  //    shards hold the list themselves, in the cluster map, so that every
  //    client agrees on it: ask the nodes we are given for their map, and
  //    take the newest (the highest epoch, a number that grows with every
  //    change). Shards with no map leave the ring to --nodes and --replicas.
  const { view } = await discover(options.nodes, options.replicas);

  // 2. Map each id to its node with the ring: with no reshard running,
  //    view.place(id).owner.name is new HashRing(names, replicas).get(id).
  const owner = new Map(options.ids.map((id) => [id, view.place(id).owner.name]));

  // 3. Print the mapping.
  printMapping(owner);

  // 4. POST each expense to the node that owns it, and nowhere else: a record
  //    on any other node could never be found again. send() goes to the
  //    owner; a node that does not own the id says so (421), names the owner,
  //    and send() follows (client/cluster.ts, level 2).
  const stored = new Map<string, Stored>();
  const failed = new Map<string, string>();
  const posting = progress('stored', options.ids.length);
  await eachLimit(options.ids, IN_FLIGHT, async (id) => {
    const put = await postOnce(view, expenseFor(id));
    if ('why' in put) failed.set(id, put.why);
    else stored.set(id, put);
    posting.tick();
  });
  posting.done();

  // 5. GET each back from the same node (send()'s last argument: ask it
  //    first), and check it is what was stored.
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
async function postOnce(view: View, expense: Omit<Expense, 'status' | 'decision_date'>): Promise<Stored | { why: string }> {
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

// ---------------------------------------------------------------------------
// The command line.

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

  if (command === 'reshard') return reshard(parseReshard(nodes, values));
  if (command === 'failover') return failover(parseFailover(nodes, rest, values));
  const replicas = parseReplicas(values.replicas ?? '1', nodes.length);
  if (command === undefined) return store({ nodes, replicas, ids: parseIds(values.ids ?? '0-9'), verbose: values.verbose });
  if (command === 'check') return check(nodes, undefined, readSecret(values['secret-file'] ?? process.env.CLUSTER_SECRET_FILE));
  if (command === 'get') {
    if (rest.length !== 1 || !isId(rest[0]!)) throw new UsageError(`get takes exactly one id, which ${ID_RULE}`);
    return get(rest[0]!, (await discover(nodes, replicas)).view);
  }
  if (command === 'map') {
    const ids = values.ids !== undefined ? parseIds(values.ids) : rest.length > 0 ? rest : parseIds('0-9');
    const bad = ids.find((id) => !isId(id));
    if (bad !== undefined) throw new UsageError(`map: ${JSON.stringify(bad)} is not an id: an id ${ID_RULE}`);
    return map(await mapRing(nodes, replicas), ids, values);
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
  // V8 would recompile fetch's WebAssembly HTTP parser on a thread that keeps
  // a short run from exiting for 0.1 s (docs/performance.md); set here, not on import.
  setFlagsFromString('--wasm-tiering-budget=1300000000');
  main(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (err: Error) => {
      const usage = err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
      console.error(`ch_client: ${err.message}${usage ? '\n\n' + USAGE : ''}`);
      process.exitCode = usage ? 2 : 1;
    },
  );
}
