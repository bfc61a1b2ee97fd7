// cli/commands.ts: ch_client.ts's commands besides the job, one table: the
// lab's (map, balance, compare), the operator's (reshard, failover, check),
// and get. ch_client.ts sends each command here by its name.

import { writeFileSync } from 'node:fs';
import { ID_RULE, isId } from '../api/expense.ts';
import { plural } from '../api/words.ts';
import { discover, mapRing, send } from '../client/cluster.ts';
import { MAX_KEYS, parseCount, parseFailover, parseIds, parseReplicas, parseReshard, readSecret, UsageError, type Values } from '../client/command-line.ts';
import { problem, shortRun } from '../client/http.ts';
import { balanceTable } from '../lab/balance.ts';
import { compareTable, lookupSpeeds } from '../lab/compare.ts';
import { ringSvg } from '../lab/ring-svg.ts';
import { automatic } from '../operator/automatic.ts';
import { failover } from '../operator/failover.ts';
import { check, reshard } from '../operator/reshard.ts';
import type { HashRing } from '../ring.ts';

type Command = (nodes: string[], rest: string[], values: Values) => Promise<number>;

export const commands: Record<string, Command> = {
  async balance(nodes, _rest, values) {
    const list = (values.replicas ?? '1,10,100,1000').split(',').map((r) => parseReplicas(r, nodes.length));
    const keys = parseCount(values.keys, '--keys', MAX_KEYS);
    console.log(list.map((r) => balanceTable(nodes, r, keys)).join('\n\n'));
    return 0;
  },

  async compare(nodes, _rest, values) {
    const keys = parseCount(values.keys, '--keys', MAX_KEYS);
    const timed = Math.min(keys, 100_000);
    console.log(compareTable(nodes, keys));
    console.log(`\nlookup speed, best of 3 rounds of ${timed} keys:\n${lookupSpeeds(nodes, timed)}`);
    return 0;
  },

  reshard: async (nodes, _rest, values) => (shortRun(), reshard(parseReshard(nodes, values))),
  async failover(nodes, rest, values) {
    shortRun();
    const o = parseFailover(nodes, rest, values);
    return o.to === undefined ? automatic(o) : failover(o);
  },
  check: async (nodes, _rest, values) => (shortRun(), check(nodes, undefined, readSecret(values['secret-file'] ?? process.env.CLUSTER_SECRET_FILE))),

  /** Reads one expense from its owner, wherever the cluster says that is. */
  async get(nodes, rest, values) {
    if (rest.length !== 1 || !isId(rest[0]!)) throw new UsageError(`get takes exactly one id, which ${ID_RULE}`);
    shortRun();
    const id = rest[0]!;
    const { view } = await discover(nodes, parseReplicas(values.replicas ?? '1', nodes.length));
    const res = await send(view, id, 'GET', `/v1/expenses/${id}`);
    if (res.status === 404) {
      console.error(`no expense with id ${JSON.stringify(id)}`);
      return 1;
    }
    if (res.status !== 200) throw new Error(`${res.node}: ${problem(res)}`);
    console.error(`found on ${res.node}`);
    console.log(JSON.stringify(res.body));
    return 0;
  },

  /** Which node owns each id, by the cluster map the nodes hold (or --nodes), as text, JSON or a picture. */
  async map(nodes, rest, values) {
    const ids = values.ids !== undefined ? parseIds(values.ids) : rest.length > 0 ? rest : parseIds('0-9');
    const bad = ids.find((id) => !isId(id));
    if (bad !== undefined) throw new UsageError(`map: ${JSON.stringify(bad)} is not an id: an id ${ID_RULE}`);
    shortRun();
    const ring: HashRing = await mapRing(nodes, parseReplicas(values.replicas ?? '1', nodes.length));
    if (values.svg !== undefined) {
      writeFileSync(values.svg, ringSvg(ring, ids));
      console.log(`wrote ${values.svg}: ${plural(ring.nodes.length, 'node')} × ${ring.replicas}, ${ids.length} ids`);
      return 0;
    }
    const owner = new Map(ids.map((id) => [id, ring.get(id)]));
    if (values.json) console.log(JSON.stringify(Object.fromEntries(owner)));
    else for (const [id, node] of owner) console.log(`${JSON.stringify(id)} => ${JSON.stringify(node)}`);
    return 0;
  },
};
