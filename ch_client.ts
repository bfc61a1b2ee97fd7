// ch_client.ts: the consistent-hashing client.
//
// It decides, from an expense's id alone, which node (shard) owns it, stores
// it there, and reads it back from there. No node knows of the others; the
// ring is the only thing that keeps every client in agreement.

import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { HashRing } from './ring.ts';
import { balanceTable } from './client/balance.ts';
import { call, eachLimit, identical, problem, progressLine, sameExpense, unreachablePort } from './client/http.ts';
import { previousRing, readThrough, reshard } from './client/reshard.ts';
import { ringSvg } from './client/ring-svg.ts';
import type { Expense } from './db.ts';

const DEFAULT_NODES = '127.0.0.1:3000,127.0.0.1:4000,127.0.0.1:5000';
const DEFAULT_STATE = fileURLToPath(new URL('data/reshard.json', import.meta.url));

const USAGE = `Usage:
  node ch_client.ts [options]                         store expenses on their nodes, then read each back
  node ch_client.ts map [--json | --svg FILE] [options] [id ...]
                                                      which node owns each id (no HTTP), or a picture
  node ch_client.ts balance [--replicas N,N,...] [--keys N] [--nodes ...]
                                                      how evenly the ring spreads keys
  node ch_client.ts reshard --from a,b,c --to a,b,c,d [--replicas N] [--dry-run]
                                                      move the records whose owner changes
  node ch_client.ts get ID [options]                  read one expense from its owner

Options:
  --nodes a,b,c     the nodes, as host:port (default ${DEFAULT_NODES})
  --replicas N      points per node on the ring (default 1; balance: 1,10,100,1000)
  --ids SPEC        ids as a range 1-10, a list 1,2,3, or both: 0-9,42 (default 0-9)
  --json            map: print one JSON object {"id": "node", ...}
  --svg FILE        map: draw the ring, its arcs and the ids into an SVG file
  --keys N          balance: how many keys to place (default 100000)
  --dry-run         reshard: print the plan, move nothing
  --state FILE      where a reshard in progress is recorded (default data/reshard.json);
                    while it exists, reads that miss on the new owner try the old one
  -h, --help        this text`;
// Enough requests in flight to keep three shards busy, few enough to be polite.
const IN_FLIGHT = 32;

type Options = { nodes: string[]; replicas: number; ids: string[]; statePath: string };

/** The job: five steps, in order. Resolves to the process exit code. */
async function store(options: Options): Promise<number> {
  // 1. Define the nodes.
  const ring = new HashRing(options.nodes, options.replicas);

  // 2. Map each id to its node with the ring.
  const owner = new Map(options.ids.map((id) => [id, ring.get(id)]));

  // 3. Print the mapping.
  printMapping(owner);

  // 4. POST each expense to the node that owns it, and nowhere else: a record
  //    on any other node could never be found again.
  const stored = new Map<string, Expense>();
  const failed = new Map<string, string>();
  const progress = progressLine('stored', options.ids.length);
  await eachLimit(options.ids, IN_FLIGHT, async (id) => {
    const node = owner.get(id)!;
    try {
      const expense = expenseFor(id);
      const res = await call(node, 'POST', '/v1/expenses', expense);
      if (res.status === 201) stored.set(id, res.body);
      else if (res.status === 409) {
        // Already there from an earlier run: fine if it is the same expense.
        const existing = await call(node, 'GET', `/v1/expenses/${id}`);
        if (existing.status === 200 && sameExpense(existing.body, expense)) stored.set(id, existing.body);
        else failed.set(id, `a different expense with this id is already stored there (${problem(existing)})`);
      } else failed.set(id, `POST failed: ${problem(res)}`);
    } catch (err) {
      failed.set(id, (err as Error).message);
    }
    progress.tick();
  });
  progress.done();

  // 5. GET each back from the same node, and check it is what was stored.
  //    (While a reshard is in progress, a miss falls back to the old owner.)
  const previous = previousRing(options.statePath, options.nodes);
  const verified = new Map<string, number>(options.nodes.map((node) => [node, 0]));
  const checking = progressLine('read back', stored.size);
  await eachLimit([...stored.keys()], IN_FLIGHT, async (id) => {
    try {
      const found = await readThrough(id, ring, previous);
      if (found === undefined) failed.set(id, 'GET failed: HTTP 404');
      else if (!identical(found.record, stored.get(id)!)) failed.set(id, 'read back a different record than was stored');
      else verified.set(found.node, (verified.get(found.node) ?? 0) + 1);
    } catch (err) {
      failed.set(id, (err as Error).message);
    }
    checking.tick();
  });
  checking.done();

  for (const [id, why] of failed) console.error(`FAILED ${JSON.stringify(id)} on ${owner.get(id)}: ${why}`);
  for (const [node, count] of verified) console.log(`${node}: ${count} stored and read back`);
  const ok = options.ids.length - failed.size;
  console.log(`${ok} of ${options.ids.length} expenses stored on and read back from their own node`);
  return failed.size === 0 ? 0 : 1;
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

// ---------------------------------------------------------------------------
// The command line.

const ID = /^[A-Za-z0-9._-]{1,64}$/;

/** "0-9,42,abc" as a list of ids. Ranges are of whole numbers. */
function parseIds(spec: string): string[] {
  const ids: string[] = [];
  for (const part of spec.split(',')) {
    const range = /^(\d+)-(\d+)$/.exec(part);
    if (range === null) {
      if (!ID.test(part)) throw new UsageError(`--ids: ${JSON.stringify(part)} is neither an id nor a range like 1-10`);
      ids.push(part);
      continue;
    }
    const [from, to] = [Number(range[1]), Number(range[2])];
    if (from > to || to - from >= 1_000_000) throw new UsageError(`--ids: the range ${part} must go upwards and hold at most 1,000,000 ids`);
    for (let i = from; i <= to; i++) ids.push(String(i));
  }
  return [...new Set(ids)];
}

class UsageError extends Error {}

/** "host:port,host:port" as a list of nodes. */
function parseNodes(spec: string, option = '--nodes'): string[] {
  const nodes = spec.split(',').filter((n) => n !== '');
  if (nodes.length === 0) throw new UsageError(`${option} needs at least one host:port`);
  for (const node of nodes) {
    if (!/^[^\s/:,]+:\d{1,5}$/.test(node)) throw new UsageError(`${option}: ${JSON.stringify(node)} is not host:port`);
    const why = unreachablePort(node);
    if (why !== undefined) throw new UsageError(`${option}: ${node}: ${why}`);
  }
  return nodes;
}

function parseCount(spec: string, option: string): number {
  const n = Number(spec);
  if (!/^\d+$/.test(spec) || !Number.isSafeInteger(n) || n < 1) throw new UsageError(`${option} must be a positive whole number, got ${JSON.stringify(spec)}`);
  return n;
}

async function main(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      nodes: { type: 'string', default: DEFAULT_NODES },
      replicas: { type: 'string' },
      ids: { type: 'string' },
      json: { type: 'boolean', default: false },
      svg: { type: 'string' },
      keys: { type: 'string', default: '100000' },
      from: { type: 'string' },
      to: { type: 'string' },
      'dry-run': { type: 'boolean', default: false },
      state: { type: 'string', default: DEFAULT_STATE },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const nodes = parseNodes(values.nodes);
  const [command, ...rest] = positionals;
  if (command === 'balance') {
    const list = (values.replicas ?? '1,10,100,1000').split(',').map((r) => parseCount(r, '--replicas'));
    const keys = parseCount(values.keys, '--keys');
    console.log(list.map((r) => balanceTable(nodes, r, keys)).join('\n\n'));
    return 0;
  }
  const replicas = parseCount(values.replicas ?? '1', '--replicas');

  if (command === undefined) return store({ nodes, replicas, ids: parseIds(values.ids ?? '0-9'), statePath: values.state });

  if (command === 'reshard') {
    if (values.from === undefined || values.to === undefined) throw new UsageError('reshard needs --from and --to');
    return reshard({ from: parseNodes(values.from, '--from'), to: parseNodes(values.to, '--to'), replicas, dryRun: values['dry-run'], statePath: values.state });
  }

  if (command === 'get') {
    if (rest.length !== 1 || !ID.test(rest[0]!)) throw new UsageError('get takes exactly one id (A-Z a-z 0-9 . _ -)');
    const found = await readThrough(rest[0]!, new HashRing(nodes, replicas), previousRing(values.state, nodes));
    if (found === undefined) {
      console.error(`no expense with id ${JSON.stringify(rest[0])}`);
      return 1;
    }
    console.error(`found on ${found.node}`);
    console.log(JSON.stringify(found.record));
    return 0;
  }

  if (command === 'map') {
    const ids = values.ids !== undefined ? parseIds(values.ids) : rest.length > 0 ? rest : parseIds('0-9');
    const ring = new HashRing(nodes, replicas);
    if (values.svg !== undefined) {
      writeFileSync(values.svg, ringSvg(ring, ids));
      console.log(`wrote ${values.svg}: ${nodes.length} nodes × ${replicas}, ${ids.length} ids`);
      return 0;
    }
    const owner = new Map(ids.map((id) => [id, ring.get(id)]));
    if (values.json) console.log(JSON.stringify(Object.fromEntries(owner)));
    else for (const [id, node] of owner) console.log(`${JSON.stringify(id)} => ${JSON.stringify(node)}`);
    return 0;
  }

  throw new UsageError(`unknown command ${JSON.stringify(command)}`);
}

if (import.meta.main) {
  main(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (err: Error) => {
      const usage = err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
      console.error(`ch_client: ${err.message}${usage ? '\n\n' + USAGE : ''}`);
      process.exitCode = usage ? 2 : 1;
    },
  );
}
