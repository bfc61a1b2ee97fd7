// ch_client.ts: the consistent-hashing client. It decides, from an expense's
// id alone, which node (shard) owns it, stores it there, and reads it back
// from there: the assignment's five steps, in store(). The ring decides.
// Later levels join at one seam, in main(): the cluster map names the ring's
// nodes (client/cluster.ts), and the other commands are one table (cli/commands.ts).

import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { EDITABLE, sameExpense, type Expense } from './api/expense.ts';
import { eachLimit, printFailures, progress } from './client/batch.ts';
import { parseCommandLine, parseIds, parseNodes, parseReplicas, USAGE, UsageError } from './client/command-line.ts';
import { call, problem, type Answer } from './client/http.ts';
import { HashRing } from './ring.ts';
import { joinCluster } from './client/cluster.ts';
import { commands } from './cli/commands.ts';

// Enough requests in flight to keep three shards busy, few enough to be polite.
export const IN_FLIGHT = 32;

/** What the job needs: the ring's nodes and replicas, and a way to send a node a request about an id; it answers with the node that answered. */
export type Cluster = { readonly nodes: readonly string[]; readonly replicas: number; send(node: string, id: string, method: string, path: string, body?: unknown): Promise<Answer & { node: string }> };

/** The assignment's cluster: the nodes as given, each answering for itself. */
export function given(nodes: string[], replicas: number): Cluster {
  return { nodes, replicas, send: async (node, _id, method, path, body) => ({ ...(await call(node, method, path, body)), node }) };
}

type Stored = { node: string; record: Expense };

/** The job: five steps, in order. Resolves to the process exit code. */
export async function store(cluster: Cluster, ids: string[], verbose = false): Promise<number> {
  // 1. Define the nodes: the ring of the cluster's nodes, each with `replicas` points.
  const ring = new HashRing(cluster.nodes, cluster.replicas);

  // 2. Map each id to its node with the ring.
  const owner = new Map(ids.map((id) => [id, ring.get(id)]));

  // 3. Print the mapping.
  printMapping(owner);

  // 4. POST each expense to the node that owns it, and nowhere else: a record
  //    on any other node could never be found again.
  const stored = new Map<string, Stored>();
  const failed = new Map<string, string>();
  const posting = progress('stored', ids.length);
  await eachLimit(ids, IN_FLIGHT, async (id) => {
    const put = await postOnce(cluster, owner.get(id)!, expenseFor(id));
    if ('why' in put) failed.set(id, put.why);
    else stored.set(id, put);
    posting.tick();
  });
  posting.done();

  // 5. GET each back from the node that stored it, and check it is what was stored.
  const reading = progress('read back', stored.size);
  await eachLimit([...stored.keys()], IN_FLIGHT, async (id) => {
    const { node, record } = stored.get(id)!;
    try {
      const res = await cluster.send(node, id, 'GET', `/v1/expenses/${id}`);
      if (res.status !== 200) failed.set(id, `GET failed: ${problem(res)}`);
      else if (!sameExpense(res.body, record)) failed.set(id, 'read back a different record than was stored');
    } catch (err) {
      failed.set(id, (err as Error).message);
    }
    reading.tick();
  });
  reading.done();

  return report(cluster, ids, owner, stored, failed, verbose);
}

/** One line per failure reason, one per node, and the total; the exit code: 0 only when every id was stored and read back. */
function report(cluster: Cluster, ids: string[], owner: Map<string, string>, stored: Map<string, Stored>, failed: Map<string, string>, verbose: boolean): number {
  printFailures(new Map([...failed].map(([id, why]) => [id, ` on ${stored.get(id)?.node ?? owner.get(id)}: ${why}`])), verbose);
  for (const node of cluster.nodes) {
    const ok = ids.filter((id) => stored.get(id)?.node === node && !failed.has(id)).length;
    console.log(`${node}: ${ok} stored and read back`);
  }
  console.log(`${ids.length - failed.size} of ${ids.length} expenses stored on and read back from their own node`);
  return failed.size === 0 ? 0 : 1;
}

/**
 * POSTs one expense. A 409 means the id is taken: fine if by this same
 * expense (an earlier run stored it), a failure if by a different one.
 */
async function postOnce(cluster: Cluster, node: string, expense: Omit<Expense, 'status' | 'decision_date'>): Promise<Stored | { why: string }> {
  try {
    const res = await cluster.send(node, expense.id, 'POST', '/v1/expenses', expense);
    if (res.status === 201) return { node: res.node, record: res.body };
    if (res.status !== 409) return { why: `POST failed: ${problem(res)}` };
    const there = await cluster.send(res.node, expense.id, 'GET', `/v1/expenses/${expense.id}`);
    if (there.status !== 200) return { why: `the id is taken (409), and reading what is stored failed: ${problem(there)}` };
    if (sameExpense(there.body, expense, ['id', ...EDITABLE])) return { node: there.node, record: there.body };
    return { why: 'a different expense with this id is already stored there (409)' };
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
function printMapping(owner: Map<string, string>): void {
  const shown = owner.size <= 20 ? [...owner] : [...owner].slice(0, 10);
  for (const [id, node] of shown) console.log(`${JSON.stringify(id)} => ${JSON.stringify(node)}`);
  if (shown.length < owner.size) console.log(`... and ${owner.size - shown.length} more`);
}

async function main(args: string[]): Promise<number> {
  const { values, positionals } = parseCommandLine(args);
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const nodes = parseNodes(values.nodes);
  const [command, ...rest] = positionals;
  if (command !== undefined) {
    const run = commands[command];
    if (run === undefined) throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    return run(nodes, rest, values);
  }
  const replicas = parseReplicas(values.replicas ?? '1', nodes.length);
  // The seam: where the shards hold a cluster map, it says which ring, and a shard says where an id went.
  return store(await joinCluster(given(nodes, replicas)), parseIds(values.ids ?? '0-9'), values.verbose);
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
