// (d) A failover while a reshard runs, on real processes (operator/reshard.ts,
// its header; operator/failover.ts): two shards, each with a standby
// (SHARDS_STANDBY=1), writers that never pause, a reshard (replicas 1 -> 100)
// held by a gate at its first copies, and a planned failover of shard 1 to
// its standby at that moment. The failover installs the map at the next
// epoch with the reshard's moving part kept; the reshard must notice that only
// an address changed, go on under that epoch, and finish: exit 0, every record
// on its owner alone, nothing acknowledged lost, and check exits 0.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { expenseFor } from '../../ch_client.ts';
import { discover, send, type View } from '../../client/cluster.ts';
import { HashRing } from '../../ring.ts';
import { startGate, type Gate } from '../gate.ts';
import { runNode, startShardPairs, until } from '../shards.ts';

type Pairs = Awaited<ReturnType<typeof startShardPairs>>;

/** Writers that never pause: each POSTs new ids through the client, one after another, and records every 201. */
function writers(view: View, prefix: string, count: number) {
  const acked = new Set<string>();
  let stopped = false;
  let n = 0;
  const loops = Array.from({ length: count }, async () => {
    while (!stopped) {
      const id = `${prefix}-${n++}`;
      try {
        const res = await send(view, id, 'POST', '/v1/expenses', expenseFor(id));
        if (res.status === 201) acked.add(id);
        else await new Promise((r) => setTimeout(r, 20));
      } catch {
        await new Promise((r) => setTimeout(r, 20)); // not acknowledged
      }
    }
  });
  return {
    acked,
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  };
}


describe('(d) a failover while a reshard runs', () => {
  let pairs: Pairs;
  let gates: Gate[];
  let w: ReturnType<typeof writers> | undefined;

  before(async () => {
    // The gates open first, so that the shards start knowing them as their names (CLUSTER_ANNOUNCE, api/signing.ts N4).
    gates = await Promise.all([1, 2].map((n) => startGate(() => pairs.nodeOf(n))));
    pairs = await startShardPairs(2, { map: false, env: { CLUSTER_ANNOUNCE: gates.map((g) => g.node).join(',') } });
  });
  after(async () => {
    await w?.stop();
    await Promise.all((gates ?? []).map((g) => g.close()));
    await pairs?.stop();
  });

  it('the reshard goes on under the failover\'s epoch and finishes; nothing acknowledged is lost', async () => {
    const [g1, g2] = gates.map((g) => g.node) as [string, string];
    const secret = join(pairs.dir, 'cluster-secret');
    const nodes = `${g1},${g2}`;
    // The first map names the nodes by their gates; the failover then gives g1 its standby's address.
    const first = await runNode(['ch_client.ts', 'reshard', '--nodes', nodes, '--to', nodes, '--replicas', '1', '--secret-file', secret]);
    assert.equal(first.code, 0, first.stdout + first.stderr);
    const view = (await discover([g1, g2], 1)).view;
    w = writers(view, 'd', 4);
    await until('300 writes', () => w!.acked.size >= 300);
    // The test holds the reshard at its first copy to g2, so a record must move
    // there, however the gates' ports cut the ring: it stores one.
    const [ring1, ring100] = [new HashRing([g1, g2], 1), new HashRing([g1, g2], 100)];
    let mover = 'd-to-g2-0';
    for (let i = 1; ring1.get(mover) !== g1 || ring100.get(mover) !== g2; i++) mover = `d-to-g2-${i}`;
    assert.equal((await send(view, mover, 'POST', '/v1/expenses', expenseFor(mover))).status, 201);
    w.acked.add(mover);

    // The reshard's first copies to g2 are held: it is in its move, its lease renewed every second.
    const isCopy = (method: string, path: string) => method === 'PUT' && path.endsWith('/copy');
    gates[1]!.hold(isCopy);
    const resharding = runNode(['ch_client.ts', 'reshard', '--nodes', nodes, '--to', nodes, '--replicas', '100', '--lease', '3', '--secret-file', secret]);
    await gates[1]!.held(1);

    // The failover, at that moment: planned, of shard 1 to its standby.
    const seeds = [g1, g2, pairs.standbyOf(1), pairs.standbyOf(2)].join(',');
    const failed = await runNode(['ch_client.ts', 'failover', g1, '--to', pairs.standbyOf(1), '--nodes', seeds, '--secret-file', secret]);
    assert.equal(failed.code, 0, failed.stdout + failed.stderr);
    assert.match(failed.stdout, /4\. the cluster is at epoch 3: 2 nodes, replicas 1, moving to 2 nodes, replicas 100/);

    // The reshard renews its lease under the failover's epoch: it goes on (before the fix it stopped, fenced).
    let renewed!: () => void;
    const renewal = new Promise<true>((r) => (renewed = () => r(true)));
    gates[1]!.hold((method, path, body) => {
      if (method === 'PUT' && path === '/cluster/map' && body.includes('"epoch":3')) renewed();
      return isCopy(method, path);
    });
    const adopted = await Promise.race([renewal, new Promise<false>((r) => setTimeout(() => r(false), 20_000))]);
    const copies = (await gates[1]!.held(0)).length;
    gates[1]!.release();
    const res = await resharding;
    assert.ok(adopted, `the reshard never renewed its lease at epoch 3 (a failover's map); it said:\n${res.stdout}${res.stderr}`);
    assert.equal(res.code, 0, res.stdout + res.stderr);
    assert.match(res.stdout, /a failover moved \S+ from \S+ to \S+; this reshard goes on under that epoch/);
    assert.match(res.stdout, /the cluster is at epoch 4: 2 nodes, replicas 100/);

    await new Promise((r) => setTimeout(r, 500)); // writes go on after the end
    await w.stop();
    // Nothing acknowledged is lost, and every record is on its owner alone.
    const after = (await discover([g1, g2], 100)).view;
    const shardOf = new Map([[g1, 1], [g2, 2]]);
    const rows = new Map<number, Map<string, string>>();
    for (const [shard, machine] of [[1, 'standby'], [2, 'primary']] as const) {
      rows.set(shard, new Map((await pairs.sql(shard, machine, "SELECT id, state FROM expenses.expenses WHERE state <> 'moved'")).map(([id, state]) => [id!, state!])));
    }
    const wrong: string[] = [];
    for (const id of w.acked) {
      const owner = shardOf.get(after.place(id).owner.name)!;
      const other = owner === 1 ? 2 : 1;
      if (rows.get(owner)!.get(id) !== 'live' || rows.get(other)!.has(id)) wrong.push(`${id}: on its owner ${rows.get(owner)!.get(id) ?? 'absent'}, elsewhere ${rows.get(other)!.get(id) ?? 'absent'}`);
    }
    assert.deepEqual(wrong, [], `${wrong.length} of ${w.acked.size} acknowledged`);
    // check, with the secret, also sees shard 1's new primary (the standby machine) with its standby (the old primary) replicating.
    const check = await runNode(['ch_client.ts', 'check', '--nodes', nodes, '--secret-file', secret]);
    assert.equal(check.code, 0, check.stdout + check.stderr);
    assert.match(check.stdout, new RegExp(`primary ${pairs.standbyOf(1).replace(/\./g, '\\.')}: primary, semi-sync ON, 1 standby connected`));
    assert.match(check.stdout, new RegExp(`standby ${pairs.nodeOf(1).replace(/\./g, '\\.')}: standby, follows \\S+, IO Yes, SQL Yes`));
    console.log(check.stdout);
    console.log(`(d) ${w.acked.size} writes acknowledged, none lost; ${copies} copies held across the failover; ${res.stdout.split('\n').filter((l) => /audit|failover/.test(l)).join(' | ')}`);
  });
});
