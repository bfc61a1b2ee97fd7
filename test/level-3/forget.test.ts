// A node that is gone for good (issue 26, api/cluster-map.ts rule 6), on real
// shards: --forget refuses a node that answers and forgets one that does not,
// saying what was lost; nothing else drops a node from the ring; check looks
// at the nodes outside the ring; and a reshard whose --to node died is
// finished without it, losing nothing that lived elsewhere.
//
// One cluster of four shards, the fourth behind a gate (test/gate.ts). The
// tests run in order, each leaving the cluster to the next: the fourth shard
// dies in one, the third in the last.

import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { api } from '../cluster.ts';
import { startGate, type Gate } from '../gate.ts';
import { machine, type Machine } from '../machine.ts';
import { startShards, waitForExit, type Shards } from '../shards.ts';

let shards: Shards;
let gate: Gate;
let three: string[];
let four: string[];
let a: Machine;
const ids = Array.from({ length: 300 }, (_, i) => String(i + 1));

before(async () => {
  // The gate opens first, so that the shards start knowing it as a name of theirs (CLUSTER_ANNOUNCE, api/signing.ts N4).
  gate = await startGate(() => shards.nodes[3]!);
  shards = await startShards(4, { map: false, env: { CLUSTER_ANNOUNCE: gate.node } });
  three = shards.nodes.slice(0, 3);
  four = [...three, gate.node];
  a = await machine(shards.secretFile);
  const first = await a.client(['reshard', '--nodes', three.join(','), '--to', three.join(','), '--replicas', '10']);
  assert.equal(first.code, 0, first.stdout + first.stderr);
  const stored = await a.client(['--nodes', three.join(','), '--ids', `1-${ids.length}`]);
  assert.equal(stored.code, 0, stored.stderr);
});

after(async () => {
  await gate?.close();
  await shards?.stop();
  await a?.remove();
});

const reshard = (to: string[], ...more: string[]) => a.client(['reshard', '--nodes', three.join(','), '--to', to.join(','), ...more]);

/** Kills a shard's server and MySQL with SIGKILL, and deletes its data: gone for good. */
async function destroy(shard: number): Promise<void> {
  const pids = [await shards.pid(shard, 'server.pid'), await shards.pid(shard, 'mysqld.pid')];
  for (const pid of pids) process.kill(pid, 'SIGKILL');
  for (const pid of pids) await waitForExit(pid);
  await rm(join(shards.dir, `shard-${shard}`), { recursive: true, force: true });
}

/** Every live id on the shards that still run, each once (throws if one is live twice). */
async function live(shardsUp: number[]): Promise<string[]> {
  const all = (await Promise.all(shardsUp.map((s) => shards.sql(s, "SELECT id FROM expenses WHERE state = 'live'")))).flat().map(([id]) => id!);
  assert.equal(new Set(all).size, all.length, 'no id is live on two shards');
  return all;
}

describe('no forget without asking', () => {
  it('a PUT /cluster/map that drops a node with no move is refused, with the secret and without it, and the map stays', async () => {
    const secret = { authorization: `Bearer ${(await readFile(shards.secretFile, 'utf8')).trim()}` };
    const { map } = (await api(three[0]!, 'GET', '/cluster/map')).body;
    const dropped = { ...map, epoch: map.epoch + 1, nodes: map.nodes.filter((n: { name: string }) => n.name !== three[2]) };
    for (const node of three) {
      const withSecret = await api(node, 'PUT', '/cluster/map', dropped, { ...secret, 'if-match': `"${map.epoch}"` });
      assert.equal(withSecret.status, 409, JSON.stringify(withSecret.body));
      assert.match(withSecret.body.error, new RegExp(`^rule 6: .*it drops ${three[2]} from the ring with no move under way and no recorded forget`));
      assert.match(withSecret.body.error, /--forget/);
      const without = await api(node, 'PUT', '/cluster/map', dropped, { 'if-match': `"${map.epoch}"` });
      assert.equal(without.status, 401);
      assert.deepEqual((await api(node, 'GET', '/cluster/map')).body.map, map);
    }
  });
});

describe('check sees outside the ring', () => {
  it('a record left on a node outside the ring makes check exit non-zero and name the node', async () => {
    // The fourth node joins and leaves again: it holds the map, and is outside the ring.
    for (const to of [four, three]) {
      const res = await reshard(to);
      assert.equal(res.code, 0, res.stdout + res.stderr);
    }
    const seeds = ['check', '--nodes', four.join(',')];
    assert.equal((await a.client(seeds)).code, 0);
    await shards.sql(4, `INSERT INTO expenses (id, name, email, category, description, link, estimated_costs, submit_date, version)
      VALUES ('left-behind', 'Left', 'x@y.zz', 'other', '', '', 1, '2001-01-01', '0123456789abcdef')`);
    const res = await a.client(seeds);
    assert.equal(res.code, 1, res.stdout + res.stderr);
    assert.match(res.stderr, new RegExp(`^OUTSIDE ${gate.node} holds 1 live record and 0 incoming \\("left-behind"\\), outside the ring of epoch \\d+`, 'm'));
    await shards.sql(4, "DELETE FROM expenses WHERE id = 'left-behind'");
    assert.equal((await a.client(seeds)).code, 0);
  });
});

describe('a --to node killed right after the take', () => {
  it('--forget finishes the reshard without it, and loses nothing that lived on the other nodes', async () => {
    // The reshard takes the cluster, then is held at its first copy to the new node, and dies there, with the node.
    gate.hold((method, path) => method === 'PUT' && path.endsWith('/copy'));
    const run = a.start(['reshard', '--nodes', three.join(','), '--to', four.join(',')]);
    await gate.held(1);
    run.kill('SIGKILL');
    await run.exited;
    await destroy(4);
    gate.drop();

    const stuck = await reshard(three);
    assert.equal(stuck.code, 1, 'without --forget, the reshard cannot go on');
    assert.match(stuck.stderr, new RegExp(`^ {4}node ch_client\\.ts reshard --to ${three.join(',')} --forget ${gate.node}$`, 'm'));
    const res = await reshard(three, '--forget', gate.node);
    assert.equal(res.code, 0, res.stdout + res.stderr);
    assert.match(res.stdout, new RegExp(`^forgetting ${gate.node} \\(shard \\S+\\), as Redis's CLUSTER FORGET or Cassandra's nodetool removenode would`, 'm'));
    assert.match(res.stdout, /^ {2}the reshard had moved 0 records to it \(counted from the moved rows their old owners keep\)/m);
    assert.match(res.stdout, /^ {2}nothing that lived on the other nodes is lost/m);
    assert.match(res.stdout, /^the cluster is at epoch \d+: 3 nodes, replicas 10$/m);
    assert.deepEqual((await live([1, 2, 3])).filter((id) => ids.includes(id)).sort(), [...ids].sort());
    const check = await a.client(['check', '--nodes', three.join(',')]);
    assert.equal(check.code, 0, check.stdout + check.stderr);
    assert.match(check.stdout, new RegExp(`^ {2}forgotten at epoch \\d+: ${gate.node} \\(shard \\S+\\), gone for good`, 'm'));
  });
});

describe('a node killed with its data deleted', () => {
  it('--forget refuses a node that answers, then forgets the dead one and says what was lost; the cluster stores 100 new ids and check exits 0', async () => {
    const two = three.slice(0, 2);
    const refused = await reshard(two, '--forget', three[2]!);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, new RegExp(`^refusing: ${three[2]} answers \\(shard \\S+, epoch \\d+\\): --forget is for a node that is gone for good.*Nothing was changed\\.$`, 'm'));

    const lost = await shards.ids(3);
    assert.ok(lost.length > 0, 'the third shard held records');
    await destroy(3);
    const res = await a.client(['reshard', '--nodes', two.join(','), '--to', two.join(','), '--forget', three[2]!]);
    assert.equal(res.code, 0, res.stdout + res.stderr);
    assert.match(res.stdout, new RegExp(`^forgetting ${three[2]} \\(shard \\S+\\), .*: the records that lived only on it are gone\\.$`, 'm'));
    assert.match(res.stdout, /^ {2}how many is not known: .* It owned \d+\.\d% of the ring, so about \d+, /m);
    assert.match(res.stdout, /^ {2}their ids now fall to .*, which answer 404 for them/m);
    assert.match(res.stdout, new RegExp(`^forgot ${three[2]}: the cluster is at epoch \\d+: 2 nodes, replicas 10$`, 'm'));

    const stored = await a.client(['--nodes', two.join(','), '--ids', '1000-1099']);
    assert.equal(stored.code, 0, stored.stdout + stored.stderr);
    assert.match(stored.stdout, /^100 of 100 expenses stored on and read back from their own node$/m);
    const gone = await a.client(['get', lost[0]!, '--nodes', two.join(',')]);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /^no expense with id /m);

    const check = await a.client(['check', '--nodes', two.join(',')]);
    assert.equal(check.code, 0, check.stdout + check.stderr);
    for (const node of [three[2]!, gate.node]) assert.match(check.stdout, new RegExp(`forgotten at epoch \\d+: ${node} `));
  });
});
