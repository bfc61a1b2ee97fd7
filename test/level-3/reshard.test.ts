// Resharding on real shards, as operators and clients on two machines meet
// it: the cluster map on the shards, misdirected requests refused, moves that
// a kill cannot break, one reshard at a time, and clients that follow.
//
// Each shard sits behind a gate (test/gate.ts), so that a test decides where
// a pause or a kill lands. Each test first brings the cluster to the shape it
// needs (settle), so that any one runs alone. Triggers in each shard's MySQL
// record every write, so that a test can prove which records were touched.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { expenseFor } from '../../ch_client.ts';
import { discover, send } from '../../client/cluster.ts';
import { HashRing, position } from '../../ring.ts';
import { api, startCluster } from '../cluster.ts';
import type { Gate } from '../gate.ts';
import type { Machine } from '../machine.ts';
import { startShards, type Shards } from '../shards.ts';

let shards: Shards;
let gates: Gate[];
let five: string[]; // every node, by its gate
let four: string[];
let three: string[];
// Two operators' machines, both with the cluster secret.
let a: Machine;
let b: Machine;
let stop: () => Promise<void>;
const ids = Array.from({ length: 1500 }, (_, i) => String(i + 1));
// Enough points per node that about a quarter of the records move, whatever
// ports the gates happen to get.
const REPLICAS = '100';

before(async () => {
  ({ shards, gates, a, b, stop } = await startCluster({ count: 5, ring: 3, replicas: Number(REPLICAS), ids: ids.length }));
  five = gates.map((g) => g.node);
  four = five.slice(0, 4);
  three = five.slice(0, 3);
  for (let shard = 1; shard <= 5; shard++) {
    await shards.sql(
      shard,
      `CREATE TABLE audit (seq INT AUTO_INCREMENT PRIMARY KEY, op VARCHAR(6) NOT NULL, id VARCHAR(64) NOT NULL);
       CREATE TRIGGER audit_insert AFTER INSERT ON expenses FOR EACH ROW INSERT INTO audit (op, id) VALUES ('insert', NEW.id);
       CREATE TRIGGER audit_update AFTER UPDATE ON expenses FOR EACH ROW INSERT INTO audit (op, id) VALUES ('update', NEW.id);
       CREATE TRIGGER audit_delete AFTER DELETE ON expenses FOR EACH ROW INSERT INTO audit (op, id) VALUES ('delete', OLD.id);`,
    );
  }
});

after(() => stop?.());

const reshardArgs = (to: string[], ...more: string[]) => ['reshard', '--nodes', three.join(','), '--to', to.join(','), ...more];

/** Brings the cluster to the ring of `nodes` with REPLICAS, whatever shape an earlier test left: its gates open and its runs ended, even if it failed midway. */
async function settle(nodes: string[]): Promise<void> {
  for (const gate of gates) gate.release();
  await Promise.all([a.idle(), b.idle()]);
  const res = await a.client(reshardArgs(nodes, '--replicas', REPLICAS));
  assert.equal(res.code, 0, `settling on ${nodes.length} nodes:\n${res.stdout}${res.stderr}`);
  await writes();
}

/** Every shard's ids, each sorted. */
const everywhere = () => Promise.all(shards.nodes.map((_, i) => shards.ids(i + 1)));

/** The ids each node owns on the ring of `nodes`; nodes not in it own nothing. */
function owned(nodes: string[], among: string[]): string[][] {
  const ring = new HashRing(nodes, Number(REPLICAS));
  return five.map((node) => among.filter((id) => ring.get(id) === node).sort());
}

/** Every live id on the shards, and where each is; throws if one is on two shards. */
async function placement(): Promise<string[]> {
  const all = (await Promise.all(shards.nodes.map((_, i) => shards.sql(i + 1, "SELECT id FROM expenses WHERE state = 'live'")))).flat().map(([id]) => id!);
  assert.equal(new Set(all).size, all.length, 'no id is live on two shards');
  return all.sort();
}

/** The writes each shard saw since the last call: [op, id] pairs. */
async function writes(): Promise<string[][][]> {
  const seen = [];
  for (let shard = 1; shard <= 5; shard++) {
    seen.push(await shards.sql(shard, 'SELECT op, id FROM audit ORDER BY seq'));
    await shards.sql(shard, 'DELETE FROM audit');
  }
  return seen;
}

function changedOwner(from: string[], to: string[], among = ids): string[] {
  const [x, y] = [new HashRing(from, Number(REPLICAS)), new HashRing(to, Number(REPLICAS))];
  return among.filter((id) => x.get(id) !== y.get(id));
}

/** The id in a held "METHOD /v1/expenses/ID[/step]". */
/** The ids in the pages of move steps a gate holds now. */
const heldIds = (gate: Gate) => gate.heldBodies().flatMap((body) => (JSON.parse(body) as { records: Array<{ id: string }> }).records.map((r) => r.id));
const isStep = (step: string) => (method: string, path: string) => method === 'POST' && path.endsWith(`/${step}`);

describe('the cluster map', () => {
  it('a plain POST to a node that does not own the id is a 421 that names the owner and carries the map', async () => {
    await settle(three);
    const ring = new HashRing(three, Number(REPLICAS));
    const wrong = three.find((node) => node !== ring.get('stranger'))!;
    const res = await api(wrong, 'POST', '/v1/expenses', { ...expenseFor('stranger') });
    assert.equal(res.status, 421);
    assert.equal(res.body.owner, ring.get('stranger'));
    assert.deepEqual(res.body.map.nodes.map((n: { name: string }) => n.name), three);
    assert.match(res.body.error, /belongs to \S+ under the cluster map at epoch \d+, not to this shard/);
    assert.deepEqual((await writes()).flat(), [], 'nothing was stored anywhere');
  });

  it('a node that a reshard removed refuses every id with a 421 that names its owner', async () => {
    await settle(four);
    await settle(three);
    const ring = new HashRing(three, Number(REPLICAS));
    for (const id of ['1', 'new-one']) {
      const res = await api(four[3]!, id === '1' ? 'GET' : 'POST', id === '1' ? '/v1/expenses/1' : '/v1/expenses', id === '1' ? undefined : expenseFor(id));
      assert.equal(res.status, 421);
      assert.equal(res.body.owner, ring.get(id));
    }
    assert.deepEqual((await writes()).flat(), []);
  });

  it('refuses a node that answers as another shard than the map binds it to, and changes nothing', async () => {
    await settle(three);
    const secret = { authorization: `Bearer ${(await readFile(shards.secretFile, 'utf8')).trim()}` };
    const { map } = (await api(three[0]!, 'GET', '/cluster/map')).body;
    const stranger = (await api(four[3]!, 'GET', '/cluster/map')).body.shard;
    // A map edited by hand, as a confused operator might: the third node bound to the fourth shard.
    const edited = { ...map, epoch: map.epoch + 1, nodes: map.nodes.map((n: { name: string }) => (n.name === three[2] ? { ...n, shard: stranger } : n)) };
    const put = async (m: unknown, over: number) => {
      for (const node of three) assert.equal((await api(node, 'PUT', '/cluster/map', m, { ...secret, 'if-match': `"${over}"` })).status, 200);
    };
    await put(edited, map.epoch);
    try {
      const res = await a.client(reshardArgs(four));
      assert.equal(res.code, 1);
      assert.match(res.stderr, new RegExp(`^refusing: the cluster map binds ${three[2]} to shard ${stranger}, but ${three[2]} now answers as shard \\S+\\. Nothing was changed\\.$`, 'm'));
      assert.deepEqual((await writes()).flat(), []);
    } finally {
      await put({ ...map, epoch: edited.epoch + 1 }, edited.epoch);
    }
  });

  it('a stale client strands nothing: after 3 -> 4, a client with the old node list stores 200 new ids, each on its new owner', async () => {
    await settle(four);
    const late = await b.client(['--nodes', three.join(','), '--ids', '5000-5199']);
    assert.equal(late.code, 0, late.stderr);
    assert.match(late.stderr, /^the cluster is at epoch \d+: 4 nodes, replicas 100; following it$/m);
    const fresh = Array.from({ length: 200 }, (_, i) => String(5000 + i));
    const where = (await everywhere()).map((onShard) => onShard.filter((id) => fresh.includes(id)));
    assert.deepEqual(where, owned(four, fresh));
    const check = await b.client(['check', '--nodes', three.join(',')]);
    assert.equal(check.code, 0, check.stdout + check.stderr);
  });

  it('--from that disagrees with the map is refused, naming the map, and nothing changes', async () => {
    await settle(three);
    const res = await a.client(reshardArgs(four, '--from', four.join(',')));
    assert.equal(res.code, 1);
    assert.match(res.stderr, new RegExp(`^refusing: --from ${four.join(',')} is not the cluster, which is at epoch \\d+: 3 nodes, replicas 100 \\(${three.join(',')}\\)`, 'm'));
    assert.deepEqual((await writes()).flat(), []);
  });

  it('refuses two names for one shard before any write: localhost and 127.0.0.1, a gate and its shard', async () => {
    await settle(three);
    const port = shards.nodes[3]!.split(':')[1];
    for (const extra of [`localhost:${port}`, shards.nodes[0]!]) {
      const to = extra.startsWith('localhost') ? [...three, shards.nodes[3]!, extra] : [...three, extra];
      const res = await a.client(reshardArgs(to));
      assert.equal(res.code, 1, res.stdout);
      assert.match(res.stderr, /^refusing: (\S+) and (\S+) are the same shard\. .*Nothing was changed\.$/m);
    }
    assert.deepEqual((await writes()).flat(), []);
  });

  it('refuses when a node cannot say which shard it is, and changes nothing', async () => {
    await settle(three);
    const mute = http.createServer((_req, res) => res.writeHead(503).end('{"error":"down"}'));
    mute.listen(0, '127.0.0.1');
    await once(mute, 'listening');
    try {
      const nobody = `127.0.0.1:${(mute.address() as { port: number }).port}`;
      for (const more of [['--dry-run'], []]) {
        const res = await a.client(reshardArgs([...three, nobody], ...more));
        assert.equal(res.code, 1);
        assert.match(res.stderr, new RegExp(`^refusing: ${nobody} cannot say which shard it is \\(GET /cluster/map answered HTTP 503 with no shard id\\)\\. Nothing was changed\\.$`, 'm'));
      }
      assert.deepEqual((await writes()).flat(), []);
    } finally {
      mute.close();
    }
  });
});

describe('reshard', () => {
  it('--dry-run prints the plan against hash mod N, and changes nothing', async () => {
    await settle(three);
    const present = await placement();
    const res = await a.client(reshardArgs(four, '--dry-run'));
    assert.equal(res.code, 0, res.stderr);
    const moving = changedOwner(three, four, present).length;
    assert.match(res.stdout, new RegExp(`^plan: 3 nodes -> 4 nodes, replicas 100, ${present.length} records$`, 'm'));
    assert.match(res.stdout, new RegExp(`^  to move: ${moving} of ${present.length} \\(${((moving / present.length) * 100).toFixed(1)}%\\); hash mod N would move \\d+ \\(7\\d\\.\\d%\\)$`, 'm'));
    assert.deepEqual((await writes()).flat(), []);
  });

  it('3 -> 4 moves exactly the records whose owner changed, writes no other, keeps every field and version, and ends with a clean audit', async () => {
    await settle(three);
    const present = await placement();
    const moving = changedOwner(three, four, present);
    const [id] = moving;
    const before = await api(new HashRing(three, Number(REPLICAS)).get(id!), 'GET', `/v1/expenses/${id}`);
    const res = await a.client(reshardArgs(four));
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, new RegExp(`moved ${moving.length}, left in place ${present.length - moving.length}, conflicts 0, failed 0`));
    assert.match(res.stdout, new RegExp(`^audit 1: ${present.length} records on 4 nodes, 0 out of place$`, 'm'));
    assert.match(res.stdout, /^the cluster is at epoch \d+: 4 nodes, replicas 100$/m);
    assert.deepEqual(await everywhere(), owned(four, present));

    // The new owner inserted each (as incoming, then made it live); the old owners changed no other record.
    const seen = await writes();
    assert.deepEqual(seen[3]!.filter(([op]) => op === 'insert').map(([, x]) => x).sort(), [...moving].sort());
    assert.ok(seen.slice(0, 3).flat().every(([, x]) => moving.includes(x!)), 'no record that stays was written');
    const after = await api(new HashRing(four, Number(REPLICAS)).get(id!), 'GET', `/v1/expenses/${id}`);
    assert.deepEqual(after.body, before.body);
    assert.equal(after.etag, before.etag);
    assert.deepEqual(await shards.sql(1, "SELECT COUNT(*) FROM expenses WHERE state <> 'live'"), [['0']], 'the moved rows are forgotten at the end');
  });

  it('a change of replicas is a reshard like any other', async () => {
    await settle(three);
    const res = await a.client(reshardArgs(three, '--replicas', '7'));
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /^reshard: 3 nodes -> 3 nodes, replicas 7, /m);
    const ring = new HashRing(three, 7);
    assert.deepEqual((await everywhere()).slice(0, 3).map((on) => on.filter((x) => ids.includes(x))), three.map((n) => ids.filter((x) => ring.get(x) === n).sort()));
  });

  it('reports a different record live at the destination as a conflict, and overwrites nothing', async () => {
    await settle(three);
    const [id] = changedOwner(three, four);
    // Only a shard without the map could have taken this: written by hand, as an operator's mistake.
    await shards.sql(4, `INSERT INTO expenses (id, name, email, category, description, link, estimated_costs, submit_date, version)
      VALUES ('${id}', 'Not the same', 'x@y.zz', 'other', '', '', 1, '2001-01-01', '0123456789abcdef')`);
    const res = await a.client(reshardArgs(four));
    assert.equal(res.code, 1);
    assert.match(res.stderr, new RegExp(`^CONFLICT "${id}": a different record with this id is live on ${four[3]} too; both left as they are$`, 'm'));
    assert.deepEqual(await shards.sql(4, `SELECT name, state FROM expenses WHERE id = '${id}'`), [['Not the same', 'live']]);
    // Resolved by hand, the same command completes.
    await shards.sql(4, `DELETE FROM expenses WHERE id = '${id}'`);
    const rerun = await a.client(reshardArgs(four));
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.equal((await placement()).filter((x) => x === id).length, 1);
  });
});

describe('clients on another machine, during a move', () => {
  it('a new-list client creates no duplicate, and the reshard exits 0 with no conflict', async () => {
    await settle(three);
    // The move is held after its copies, before any original is handed off.
    for (const gate of gates.slice(0, 3)) gate.hold(isStep('handoff'));
    const run = a.start(reshardArgs(four));
    await Promise.race(gates.slice(0, 3).map((g) => g.held(1)));
    const waiting = gates.slice(0, 3).flatMap(heldIds);
    const pending = changedOwner(three, four).filter((id) => !waiting.includes(id)).slice(0, 10);

    // Straight to the new owner, as a client with the new list would send it: refused, naming the old owner.
    const oldRing = new HashRing(three, Number(REPLICAS));
    const direct = await api(four[3]!, 'POST', '/v1/expenses', { ...expenseFor(pending[0]!), name: 'A duplicate' });
    assert.equal(direct.status, 421);
    assert.equal(direct.body.owner, oldRing.get(pending[0]!));
    // The client follows the cluster, and finds each one where it lives.
    const late = await b.client(['--nodes', four.join(','), '--ids', pending.join(',')]);
    assert.equal(late.code, 0, late.stderr);

    for (const gate of gates) gate.release();
    const done = await run.exited;
    assert.equal(done.code, 0, done.stdout + done.stderr);
    assert.match(done.stdout, /conflicts 0, failed 0/);
    const live = await placement();
    for (const id of pending) assert.equal(live.filter((x) => x === id).length, 1, `${id} is on exactly one node`);
  });

  it('get from another machine finds a record still waiting to move, and one moved already', async () => {
    await settle(three);
    gates[3]!.hold(isStep('adopt'));
    const run = a.start(reshardArgs(four));
    // The reshard's first pages wait to be adopted; the records of the last node it walks are still there, live.
    await gates[3]!.held(1);
    const inTransit = heldIds(gates[3]!);
    const moving = changedOwner(three, four);
    const oldRing = new HashRing(three, Number(REPLICAS));
    const waiting = moving.find((id) => !inTransit.includes(id) && oldRing.get(id) === three[2])!;
    const got = await b.client(['get', waiting, '--nodes', three.join(',')]);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(JSON.parse(got.stdout).id, waiting);
    gates[3]!.release();
    assert.equal((await run.exited).code, 0);
    const moved = await b.client(['get', moving[0]!, '--nodes', three.join(',')]);
    assert.equal(moved.code, 0, moved.stderr);
  });
});

describe('a client during a move (client/cluster.ts firstNode)', () => {
  it('asks a moved id\'s new owner first once its old owner handed off an id after it on the circle; a wrong guess, or a POST, takes the old owner\'s hop', async () => {
    await settle(three);
    // Held at the second adoption: the records of the first page are live on the new node, those after them are not.
    let adoptions = 0;
    gates[3]!.hold((method, path) => isStep('adopt')(method, path) && ++adoptions > 1);
    const run = a.start(reshardArgs(four));
    await gates[3]!.held(1);
    const byPosition = (x: string, y: string) => (position(x) < position(y) ? -1 : 1);
    const moved = (await shards.sql(4, "SELECT id FROM expenses WHERE state = 'live'")).map(([id]) => id!).sort(byPosition);
    const oldRing = new HashRing(three, Number(REPLICAS));
    const from = oldRing.get(moved[0]!);
    assert.ok(moved.length >= 2 && moved.every((id) => oldRing.get(id) === from), `one page from one old owner moved: ${moved.join(',')}`);
    const seenAt = (node: string, line: string) => gates[five.indexOf(node)]!.seen().filter((r) => r.startsWith(`${line}\n`)).length;
    const { view } = await discover(three, Number(REPLICAS));
    const get = (id: string) => send(view, id, 'GET', `/v1/expenses/${id}`);

    // The furthest moved id: to its old owner first, which sends it on (ASK).
    const last = moved[moved.length - 1]!;
    const asked = await get(last);
    assert.deepEqual([asked.status, asked.body.id, asked.node, asked.sentOn], [200, last, four[3], 1]);
    // One before it on the circle, of the same old owner: to the new owner first, which serves it.
    const before = moved[0]!;
    const seen = seenAt(from, `GET /v1/expenses/${before}`);
    const direct = await get(before);
    assert.deepEqual([direct.status, direct.body.id, direct.node, direct.sentOn], [200, before, four[3], 0]);
    assert.equal(seenAt(from, `GET /v1/expenses/${before}`), seen, 'the old owner was not asked');

    // A POST of a new id before it, into the same moving arc: the old owner first, which alone can say the id is not taken.
    const fresh = changedOwner(three, four, Array.from({ length: 2000 }, (_, i) => `guessed-${i}`)).find((id) => oldRing.get(id) === from && position(id) < position(last))!;
    const posted = await send(view, fresh, 'POST', '/v1/expenses', expenseFor(fresh));
    assert.deepEqual([posted.status, posted.node, posted.sentOn], [201, four[3], 1]);

    // A wrong guess: a client that believes an old owner handed off everything. The new owner sends
    // a record still live on the old owner there (rule 3b), and an id stored nowhere on to the old owner, which asks it back.
    // The record is one its old owner's database holds live now: the first old owner may have none left, all its moving records in the two pages above.
    const live = new Set((await Promise.all(three.map((_, i) => shards.sql(i + 1, "SELECT id FROM expenses WHERE state = 'live'")))).flat().map(([id]) => id!));
    const waiting = changedOwner(three, four).find((id) => live.has(id))!;
    const holder = oldRing.get(waiting);
    view.handedOff.set(holder, 'f'.repeat(32));
    const wrong = await get(waiting);
    assert.deepEqual([wrong.status, wrong.body.id, wrong.node, wrong.sentOn], [200, waiting, holder, 1]);
    const nowhere = changedOwner(three, four, Array.from({ length: 2000 }, (_, i) => `nowhere-${i}`)).find((id) => oldRing.get(id) === holder)!;
    const missing = await get(nowhere);
    assert.deepEqual([missing.status, missing.node, missing.sentOn], [404, four[3], 2]);

    gates[3]!.release();
    const done = await run.exited;
    assert.equal(done.code, 0, done.stdout + done.stderr);
  });
});

describe('who may write where', () => {
  it('a forged Asking header is refused: the new owner takes only the old owner\'s own word for an id', async () => {
    await settle(three);
    for (const gate of gates.slice(0, 3)) gate.hold(isStep('handoff'));
    const run = a.start(reshardArgs(four));
    await Promise.race(gates.slice(0, 3).map((g) => g.held(1)));
    const { epoch } = (await api(four[3]!, 'GET', '/cluster/map')).body.map;
    const oldRing = new HashRing(three, Number(REPLICAS));
    const [id] = changedOwner(three, four);
    // The old owner still holds it: no header a client makes up lets the new owner take it too.
    for (const asking of [String(epoch), `${epoch}.${'0'.repeat(32)}`]) {
      const forged = await api(four[3]!, 'POST', '/v1/expenses', { ...expenseFor(id!), name: 'A second one' }, { asking });
      assert.equal(forged.status, 421, asking);
      assert.equal(forged.body.owner, oldRing.get(id!));
    }
    // The old owner's word for a new id is taken.
    // Enough candidates that one changes owner whatever ports the gates got: about a quarter do.
    const fresh = changedOwner(three, four, Array.from({ length: 100 }, (_, i) => `asked-${i}`))[0]!;
    const told = await api(oldRing.get(fresh), 'POST', '/v1/expenses', expenseFor(fresh));
    assert.equal(told.status, 421);
    assert.match(told.body.asking, new RegExp(`^${epoch}\\.[0-9a-f]{32}$`));
    assert.equal((await api(told.body.owner, 'POST', '/v1/expenses', expenseFor(fresh), { asking: told.body.asking })).status, 201);
    for (const gate of gates) gate.release();
    assert.equal((await run.exited).code, 0);
    assert.equal((await placement()).filter((x) => x === id).length, 1);
  });

  it('refuses a node of another cluster in --to, and changes nothing', async () => {
    await settle(three);
    const other = await startShards(1);
    try {
      const res = await a.client(reshardArgs([...three, other.nodes[0]!]));
      assert.equal(res.code, 1);
      assert.match(res.stderr, new RegExp(`^refusing: ${other.nodes[0]} holds the map of another cluster \\(epoch 1, naming none of this cluster's shards\\)`, 'm'));
      assert.deepEqual((await writes()).flat(), []);
    } finally {
      await other.stop();
    }
  });

  it('a take that fails half-way puts the map back, and the same command then runs', async () => {
    await settle(three);
    const before = (await api(three[0]!, 'GET', '/cluster/map')).body.map;
    // The new node answers the secret's check, then drops the map itself.
    let puts = 0;
    gates[3]!.hold((method, path) => method === 'PUT' && path === '/cluster/map' && ++puts === 2);
    const run = a.start(reshardArgs(four));
    await gates[3]!.held(1);
    gates[3]!.drop();
    const failed = await run.exited;
    assert.equal(failed.code, 1);
    assert.match(failed.stderr, /Nothing has moved; the nodes before it are back at the map they had \(epoch \d+\)/);
    for (const node of three) {
      const { map } = (await api(node, 'GET', '/cluster/map')).body;
      // Its MAC (rule 9) is over the epoch too, so it is left out with it.
      const { mac: _, ...plain } = map;
      const { mac: __, ...was } = before;
      assert.deepEqual({ ...plain, epoch: 0 }, { ...was, epoch: 0 }, `${node} has the map it had`);
    }
    assert.deepEqual((await writes()).flat(), []);
    const again = await a.client(reshardArgs(four));
    assert.equal(again.code, 0, again.stdout + again.stderr);
  });

  it('check finds two maps at one epoch, and the reshard settles them', async () => {
    await settle(three);
    const secret = { authorization: `Bearer ${(await readFile(shards.secretFile, 'utf8')).trim()}` };
    const { map } = (await api(three[0]!, 'GET', '/cluster/map')).body;
    const fourth = (await api(four[3]!, 'GET', '/cluster/map')).body.shard;
    // As two operators who collided might leave it: the first node moving to four, the others on three, one epoch.
    const gone = { host: 'elsewhere', machine: '', pid: 1, started: '2016-12-10T00:00:00.000Z' };
    const moving = { ...map, epoch: map.epoch + 1, moving: { nodes: [...map.nodes, { name: four[3], shard: fourth }], replicas: map.replicas, by: gone, leaseMs: 1 } };
    const still = { ...map, epoch: map.epoch + 1 };
    for (const node of four) {
      const at = (await api(node, 'GET', '/cluster/map')).body.map.epoch;
      assert.equal((await api(node, 'PUT', '/cluster/map', node === three[0] ? moving : still, { ...secret, 'if-match': `"${at}"` })).status, 200);
    }
    const split = await b.client(['check', '--nodes', three.join(',')]);
    assert.equal(split.code, 1);
    assert.match(split.stderr, new RegExp(`^SPLIT \\S+ holds another map at epoch ${map.epoch + 1}; put the cluster's map on every node with: node ch_client\\.ts reshard --to ${four.join(',')} --replicas ${REPLICAS}$`, 'm'));
    const settled = await b.client(reshardArgs(four));
    assert.equal(settled.code, 0, settled.stdout + settled.stderr);
    assert.match(settled.stdout, /^taking over the unfinished reshard of pid 1 on elsewhere/m);
    assert.equal((await b.client(['check', '--nodes', three.join(',')])).code, 0);
  });
});

describe('one reshard at a time, across machines', () => {
  it('of two conflicting reshards started at once from two machines, exactly one runs, and every record ends on its ring', async () => {
    await settle(four);
    // Both reach the first node's compare-and-set before either is answered.
    gates[0]!.hold((method, path) => method === 'PUT' && path === '/cluster/map');
    const grow = a.start(reshardArgs(five));
    const shrink = b.start(reshardArgs(three));
    await gates[0]!.held(2);
    gates[0]!.release();
    const [g, s] = await Promise.all([grow.exited, shrink.exited]);
    assert.deepEqual([g.code, s.code].sort(), [0, 1], g.stdout + g.stderr + s.stdout + s.stderr);
    const [winner, loser] = g.code === 0 ? [five, s] : [three, g];
    assert.match(loser.stderr, /^refusing: pid \d+ on \S+, started \S+, is moving the cluster to \S+ \(\S+ is at epoch \d+\)\. Nothing was changed\.$/m);
    assert.deepEqual((await everywhere()).map((on) => on.filter((x) => ids.includes(x))), owned(winner, ids));
  });

  it('a live reshard is never taken over: a second operator is refused at once, naming its host, pid, start and target', async () => {
    await settle(three);
    gates[3]!.hold(isStep('adopt'));
    const first = a.start(reshardArgs(four));
    await gates[3]!.held(1);
    for (const to of [four, three]) {
      const second = await b.client(reshardArgs(to));
      assert.equal(second.code, 1);
      assert.match(second.stderr, new RegExp(`^another reshard is running: pid ${first.pid} on \\S+, started \\S+, moving epoch \\d+: 3 nodes, replicas 100, moving to 4 nodes, replicas 100\\. Its lease has \\d+ s left`, 'm'));
    }
    gates[3]!.release();
    assert.equal((await first.exited).code, 0);
  });

  it('a reshard killed at each step is finished from another machine: nothing lost, nothing twice', async () => {
    await settle(three);
    for (const step of ['handoff', 'adopt']) {
      await a.killedAt(reshardArgs(step === 'handoff' ? four : three), gates, isStep(step));
      // Safe at that instant: no id is live twice, and each is live, or incoming where it is going.
      await placement();
      const kept = new Set((await Promise.all(shards.nodes.map((_, i) => shards.sql(i + 1, "SELECT id FROM expenses WHERE state <> 'moved'")))).flat().map(([x]) => x));
      assert.deepEqual(ids.filter((x) => !kept.has(x)), []);
      const rerun = await b.client(reshardArgs(step === 'handoff' ? four : three));
      assert.equal(rerun.code, 0, rerun.stdout + rerun.stderr);
      assert.match(rerun.stdout, /^taking over the unfinished reshard of pid \d+ .*\(no longer running\)$/m);
      await placement();
      assert.deepEqual((await everywhere()).map((on) => on.filter((x) => ids.includes(x))), owned(step === 'handoff' ? four : three, ids));
    }
  });

  it('a frozen operator loses its lease: another machine takes over, and the thawed one is fenced off and changes nothing', async () => {
    await settle(three);
    gates[3]!.hold(isStep('adopt'));
    // Long enough that the second operator, a new process on a loaded machine,
    // asks within it (renewed every 5 s, it has 10 s left at the least); short
    // enough that the test then waits little for it to end.
    const frozen = a.start(reshardArgs(four, '--lease', '15'));
    await gates[3]!.held(1);
    frozen.kill('SIGSTOP');
    gates[3]!.drop(); // what it sent before it froze never arrives
    try {
      const early = await b.client(reshardArgs(four));
      assert.equal(early.code, 1);
      assert.match(early.stderr, /^another reshard is running: .* Its lease has \d+ s left/m);
      // Every node must say the lease ran out; the test asks them rather than sleeping.
      for (const node of four) while ((await api(node, 'GET', '/cluster/map')).body.leaseLeftMs > 0) await new Promise((r) => setTimeout(r, 100));
      const takeover = await b.client(reshardArgs(four));
      assert.equal(takeover.code, 0, takeover.stdout + takeover.stderr);
      assert.match(takeover.stdout, new RegExp(`^taking over the unfinished reshard of pid ${frozen.pid} .*\\(its lease ran out\\)$`, 'm'));
      await writes();
    } finally {
      frozen.kill('SIGCONT');
    }
    const thawed = await frozen.exited;
    assert.equal(thawed.code, 1, thawed.stdout);
    assert.deepEqual((await writes()).flat(), [], 'every step it tried was refused for its epoch');
    assert.deepEqual((await everywhere()).map((on) => on.filter((x) => ids.includes(x))), owned(four, ids));
    assert.equal((await b.client(['check', '--nodes', three.join(',')])).code, 0);
  });

  it('a killed reshard can be reversed from another machine', async () => {
    await settle(three);
    await a.killedAt(reshardArgs(four), [gates[3]!], isStep('adopt'));
    const other = await b.client(reshardArgs(five));
    assert.equal(other.code, 1);
    assert.match(other.stderr, /Finish that one:\n    node ch_client\.ts reshard --to \S+ --replicas 100\n  or reverse it:\n/);
    const reverse = await b.client(reshardArgs(three));
    assert.equal(reverse.code, 0, reverse.stdout + reverse.stderr);
    assert.match(reverse.stdout, /^reversing the unfinished reshard of pid \d+/m);
    assert.deepEqual((await everywhere()).map((on) => on.filter((x) => ids.includes(x))), owned(three, ids));
  });

  it('check finds a shard that missed the new map, and the same reshard repairs it', async () => {
    await settle(three);
    // Killed while putting the final map (the one with no reshard under way) on the nodes: the new one, last, never gets it.
    await a.killedAt(reshardArgs(four), [gates[3]!], (method, path, body) => method === 'PUT' && path === '/cluster/map' && !body.includes('"moving"'));
    const check = await b.client(['check', '--nodes', three.join(',')]);
    assert.equal(check.code, 1);
    assert.match(check.stderr, new RegExp(`^BEHIND ${four[3]} holds epoch \\d+; give it epoch \\d+ with: node ch_client\\.ts reshard --to ${four.join(',')}$`, 'm'));
    const rerun = await b.client(reshardArgs(four));
    assert.equal(rerun.code, 0, rerun.stdout + rerun.stderr);
    assert.match(rerun.stdout, new RegExp(`^finished the end of an earlier reshard: .*${four[3]!.replace(/\./g, '\\.')} \\(was at epoch \\d+\\)`, 'm'));
    assert.equal((await b.client(['check', '--nodes', three.join(',')])).code, 0);
  });
});
