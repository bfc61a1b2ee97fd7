// operator/automatic.ts: `ch_client.ts failover NODE --automatic off|on`.
// Says, on each machine of NODE's shard, whether a standby may stand for
// election by itself when the primary stops renewing its lease
// (election/rules.ts, E5). Off, the shard waits for an operator's
// `failover`, as a pair always does (E7); the lease (E1) holds either way.
// Each machine keeps the setting in its election file, across restarts.

import { addressOf, everyNode } from '../api/cluster-map.ts';
import { newest } from '../client/cluster.ts';
import { call, problem } from '../client/http.ts';
import { readCluster } from './plan.ts';

export type AutomaticOptions = { seeds: string[]; node: string; automatic: boolean; secret: string | undefined };

/** Resolves to the exit code: 0 once every machine of the shard that answered took the setting, and every one answered. */
export async function automatic(o: AutomaticOptions): Promise<number> {
  const map = newest(await readCluster(o.seeds));
  const node = map && everyNode(map).find((n) => n.name === o.node);
  if (map === undefined || node === undefined) {
    console.error(`refusing: ${map === undefined ? `no node of ${o.seeds.join(',')} holds a cluster map` : `${o.node} is not a node of the cluster`}. Nothing was changed.`);
    return 1;
  }
  const word = o.automatic ? 'on' : 'off';
  const set = (machine: string) => call(machine, 'POST', '/cluster/automatic', { shard: node.shard, automatic: o.automatic }, {}, { secret: o.secret }).catch((err: Error) => err);
  const primary = addressOf(map, o.node);
  const first = await set(primary);
  if (first instanceof Error || first.status !== 200) {
    console.error(`${primary} (shard ${node.shard}'s primary) did not take it: ${first instanceof Error ? first.message : problem(first)}. Nothing was changed; run the same command again once it answers`);
    return 1;
  }
  console.log(`${primary}: automatic failover ${word} (the primary)`);
  let code = 0;
  for (const peer of first.body.peers as string[]) {
    const answer = await set(peer);
    if (answer instanceof Error || answer.status !== 200) {
      console.error(`${peer}: not changed (${answer instanceof Error ? answer.message : problem(answer)}): run the same command again once it answers`);
      code = 1;
    } else console.log(`${peer}: automatic failover ${word}`);
  }
  return code;
}
