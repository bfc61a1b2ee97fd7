// No stale read after a partition (election/rules.ts, E1-E3), on real
// processes: one shard, a primary and two standbys (SHARDS_STANDBY=2). Its
// primary is cut off its standbys' servers, both ways (test/peers.ts: no
// renewal leaves it, no vote, follow or fence reaches it), and off this
// test's clients (test/cut.ts). The standbys replace it with no command; a
// record is updated through the cluster; then a GET sent straight to the old
// primary, during the partition and after it heals, answers 503 or 421,
// never the old value: its lease ran out, whether or not anything told it.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { expenseFor } from '../../ch_client.ts';
import { addressOf } from '../../api/cluster-map.ts';
import { discover, send } from '../../client/cluster.ts';
import { cut, heal } from '../cut.ts';
import { gateShard, openGates, type Gates } from '../peers.ts';
import { startShardPairs, until } from '../shards.ts';
import { alone } from '../writers.ts';

describe('a primary cut off its standbys', () => {
  let shards: Awaited<ReturnType<typeof startShardPairs>>;
  let gates: Gates;
  let healPeers: (() => void) | undefined;

  before(async () => {
    gates = await openGates((s, m) => shards.serverOf(s, m), [1]);
    shards = await startShardPairs(1, { standbys: 2, env: { CLUSTER_ANNOUNCE: gates.announce } });
    await gateShard(gates, shards.machineDir, 1);
  });
  after(async () => {
    healPeers?.();
    await gates?.close();
    await shards?.stop();
  });

  it('is replaced with no command, and after a record changed, never answers its old value, before or after the partition heals', async () => {
    const node = shards.nodeOf(1);
    const old = shards.serverOf(1, 'primary');
    const standbys = [shards.serverOf(1, 'standby'), shards.serverOf(1, 'standby-2')];
    await until('the restarted primary serving under its lease', async () => (await alone(old, 'GET', '/v1/expenses/none')).status === 404, 60_000);
    const id = 'partitioned';
    const before = (await discover([node], 1)).view;
    assert.equal((await send(before, id, 'POST', '/v1/expenses', expenseFor(id))).status, 201);

    healPeers = gates.isolate(1, 'primary', old);
    cut(old);
    // The standbys' grants run out, one stands, wins and puts the map at its own address (E5, E6).
    let view = before;
    await until('another machine in the map for the shard', async () => {
      view = (await discover(standbys, 1).catch(() => ({ view: before }))).view;
      return addressOf(view.map, node) !== old && standbys.includes(addressOf(view.map, node));
    }, 120_000);
    const { id: _, ...fields } = expenseFor(id);
    const changed = { ...fields, name: 'changed while the old primary was cut off' };
    const put = await send(view, id, 'PUT', `/v1/expenses/${id}`, changed);
    assert.equal(put.status, 202, JSON.stringify(put.body));

    // Straight to the old primary, past the clients' cut, still cut off its standbys: nothing told it.
    const askOld = async (when: string) => {
      const res = await alone(old, 'GET', `/v1/expenses/${id}`);
      assert.ok(res.status === 503 || res.status === 421, `${when}, the old primary answered ${res.status} ${JSON.stringify(res.body)}`);
    };
    for (const end = Date.now() + 3_000; Date.now() < end; ) await askOld('cut off');
    healPeers();
    healPeers = undefined;
    heal(old, 'drop');
    for (const end = Date.now() + 5_000; Date.now() < end; ) await askOld('after the partition healed');
    assert.equal((await send(view, id, 'GET', `/v1/expenses/${id}`)).body.name, changed.name);
  });
});
