// test/cluster.ts: the cluster that the resharding tests start. Shards with
// no map, each behind a gate (test/gate.ts) so that a test decides where a
// pause lands; two operators' machines with the cluster secret
// (test/machine.ts); a first map, made by the reshard itself; and ids stored
// through the client.

import assert from 'node:assert/strict';
import { startGate, type Gate } from './gate.ts';
import { machine, type Machine } from './machine.ts';
import { startShards, type Shards } from './shards.ts';

export type Cluster = {
  shards: Shards;
  /** One per shard, in order; the gates' addresses are the nodes' names in every map. */
  gates: Gate[];
  /** Two operators' machines, each with its own copy of the cluster secret. `a` made the first map. */
  a: Machine;
  b: Machine;
  /** Stops everything above and removes the machines' directories. */
  stop(): Promise<void>;
};

/** Starts `count` shards behind gates, gives the first `ring` of them a map with `replicas` points per node, and stores ids 1 to `ids` on it. */
export async function startCluster({ count, ring, replicas, ids }: { count: number; ring: number; replicas: number; ids: number }): Promise<Cluster> {
  // The gates open first, so that the shards start knowing them as names of their own (CLUSTER_ANNOUNCE,
  // api/signing.ts N4): every shard knows every gate, enough for tests that replay nothing.
  let shards: Shards | undefined;
  const gates = await Promise.all(Array.from({ length: count }, (_, i) => startGate(() => shards!.nodes[i]!)));
  let machines: Machine[] = [];
  const stop = async () => {
    await Promise.all(gates.map((g) => g.close()));
    await shards?.stop();
    await Promise.all(machines.map((m) => m.remove()));
  };
  try {
    shards = await startShards(count, { map: false, env: { CLUSTER_ANNOUNCE: gates.map((g) => g.node).join(',') } });
    machines = await Promise.all([machine(shards.secretFile), machine(shards.secretFile)]);
    const [a, b] = machines as [Machine, Machine];
    const nodes = gates.slice(0, ring).map((g) => g.node).join(',');
    const first = await a.client(['reshard', '--nodes', nodes, '--to', nodes, '--replicas', String(replicas)]);
    assert.equal(first.code, 0, first.stdout + first.stderr);
    const stored = await a.client(['--nodes', nodes, '--ids', `1-${ids}`]);
    assert.equal(stored.code, 0, stored.stderr);
    return { shards, gates, a, b, stop };
  } catch (err) {
    await stop(); // a before() that fails leaves its after() nothing to stop
    throw err;
  }
}

/** One request to one node, with a JSON body if given; its status, ETag and parsed body. */
export async function api(node: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`http://${node}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, etag: res.headers.get('etag'), body: text === '' ? undefined : JSON.parse(text) };
}
