// Resharding on real shards: 3 -> 4 and back, interrupted runs, conflicts,
// dry runs, aliases, the lock, and clients writing while records move.
// Triggers in each shard's MySQL record every write, so that a test can prove
// which records were touched and which were not. Each shard sits behind a
// gate (test/gate.ts), so that a test can pause the reshard where it chooses.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HashRing } from '../ring.ts';
import { startGate, type Gate } from './gate.ts';
import { ROOT, runNode, startShards, type Shards } from './shards.ts';

let shards: Shards;
let gates: Gate[];
let three: string[];
let four: string[];
let statePath: string;
const ids = Array.from({ length: 2000 }, (_, i) => String(i + 1));
// Enough points per node that about a quarter of the records move, whatever
// ports the gates happen to get.
const REPLICAS = 100;

before(async () => {
  shards = await startShards(4);
  gates = await Promise.all(shards.nodes.map(startGate));
  four = gates.map((g) => g.node);
  three = four.slice(0, 3);
  statePath = join(shards.dir, 'reshard.json');
  for (let shard = 1; shard <= 4; shard++) {
    await shards.sql(
      shard,
      `CREATE TABLE audit (seq INT AUTO_INCREMENT PRIMARY KEY, op VARCHAR(6) NOT NULL, id VARCHAR(64) NOT NULL);
       CREATE TRIGGER audit_insert AFTER INSERT ON expenses FOR EACH ROW INSERT INTO audit (op, id) VALUES ('insert', NEW.id);
       CREATE TRIGGER audit_update AFTER UPDATE ON expenses FOR EACH ROW INSERT INTO audit (op, id) VALUES ('update', NEW.id);
       CREATE TRIGGER audit_delete AFTER DELETE ON expenses FOR EACH ROW INSERT INTO audit (op, id) VALUES ('delete', OLD.id);`,
    );
  }
  const stored = await runNode(['ch_client.ts', '--nodes', three.join(','), '--ids', '1-2000', '--replicas', String(REPLICAS)]);
  assert.equal(stored.code, 0, stored.stderr);
});

after(async () => {
  await Promise.all((gates ?? []).map((g) => g.close()));
  await shards?.stop();
});

const args = (from: string[], to: string[], ...more: string[]) => [
  'ch_client.ts', 'reshard', '--from', from.join(','), '--to', to.join(','), '--replicas', String(REPLICAS), '--state', statePath, ...more,
];
const reshard = (from: string[], to: string[], ...more: string[]) => runNode(args(from, to, ...more));

/** A reshard in the background, for a test that pauses it at a gate. */
function startReshard(from: string[], to: string[]) {
  const child = spawn(process.execPath, args(from, to), { cwd: ROOT });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c) => (stdout += c));
  child.stderr.on('data', (c) => (stderr += c));
  const exited = once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal, stdout, stderr }));
  return { child, exited };
}

/** Every shard's ids, each sorted. */
const everywhere = () => Promise.all(shards.nodes.map((_, i) => shards.ids(i + 1)));
const checksums = () => Promise.all(shards.nodes.map((_, i) => shards.sql(i + 1, 'CHECKSUM TABLE expenses')));

/** The ids each node of `nodes` owns on that ring; nodes not in it own nothing. */
function owned(nodes: string[], among = ids): string[][] {
  const ring = new HashRing(nodes, REPLICAS);
  return four.map((node) => among.filter((id) => ring.get(id) === node).sort());
}

/** The writes each shard saw since the last call: [op, id] pairs. */
async function writes(): Promise<string[][][]> {
  const seen = [];
  for (let shard = 1; shard <= 4; shard++) {
    seen.push(await shards.sql(shard, 'SELECT op, id FROM audit ORDER BY seq'));
    await shards.sql(shard, 'DELETE FROM audit');
  }
  return seen;
}

function changedOwner(from: string[], to: string[]): string[] {
  const [a, b] = [new HashRing(from, REPLICAS), new HashRing(to, REPLICAS)];
  return ids.filter((id) => a.get(id) !== b.get(id));
}

/** The shard behind a gate's node name, addressed directly: a client that bypasses every gate. */
const direct = (node: string) => shards.nodes[four.indexOf(node)]!;

async function api(node: string, method: string, path: string, body?: unknown) {
  const res = await fetch(`http://${node}${path}`, { method, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, etag: res.headers.get('etag'), body: text === '' ? undefined : JSON.parse(text) };
}

/** The id in a held "METHOD /v1/expenses/ID[/copy]". */
const heldId = (what: string) => /^\w+ \/v1\/expenses\/([^/]+)/.exec(what)![1]!;

describe('reshard', () => {
  it('--dry-run prints the plan against hash mod N, and changes nothing', async () => {
    await writes();
    const before = await checksums();
    const res = await reshard(three, four, '--dry-run');
    assert.equal(res.code, 0, res.stderr);
    const moving = changedOwner(three, four).length;
    assert.match(res.stdout, new RegExp(`^plan: 3 nodes -> 4 nodes, replicas ${REPLICAS}, 2000 records$`, 'm'));
    assert.match(res.stdout, new RegExp(`^  to move: ${moving} of 2000 \\(${((moving / 2000) * 100).toFixed(1)}%\\); hash mod N would move \\d+ \\(7\\d\\.\\d%\\)$`, 'm'));
    assert.match(res.stdout, /on average 1\/\(n\+1\) = 1\/4 = 25\.0%/);
    assert.deepEqual(await checksums(), before);
    assert.deepEqual((await writes()).flat(), []);
    assert.equal(existsSync(statePath), false);
  });

  it('3 -> 4 moves exactly the records whose owner changed, writes no other, and ends with a clean audit', async () => {
    const moving = changedOwner(three, four);
    const res = await reshard(three, four);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, new RegExp(`moved ${moving.length}, left in place ${2000 - moving.length}, conflicts 0, failed 0`));
    assert.match(res.stdout, /^audit 1: 2000 records on 4 nodes, 0 out of place$/m);
    assert.deepEqual(await everywhere(), owned(four));

    const seen = await writes();
    assert.deepEqual(seen[3]!.map(([op, id]) => `${op} ${id}`).sort(), moving.map((id) => `insert ${id}`).sort());
    const deleted = seen.slice(0, 3).flat();
    assert.ok(deleted.every(([op]) => op === 'delete'));
    assert.deepEqual(deleted.map(([, id]) => id).sort(), [...moving].sort());
    assert.equal(existsSync(statePath), false, 'a finished reshard leaves no record behind');
  });

  it('keeps every field and the version of a moved record, so its ETag still holds', async () => {
    const [id] = changedOwner(four, three);
    const before = await api(new HashRing(four, REPLICAS).get(id!), 'GET', `/v1/expenses/${id}`);
    const res = await reshard(four, three);
    assert.equal(res.code, 0, res.stderr);
    const moved = await api(new HashRing(three, REPLICAS).get(id!), 'GET', `/v1/expenses/${id}`);
    assert.deepEqual(moved.body, before.body);
    assert.equal(moved.etag, before.etag);
    assert.deepEqual(await everywhere(), owned(three));
    await writes();
  });

  it('finishes after a kill between copy and delete: nothing lost, nothing left twice', async () => {
    // Copies made just before a crash, whose deletes never happened.
    const moving = changedOwner(three, four);
    const [oldRing, newRing] = [new HashRing(three, REPLICAS), new HashRing(four, REPLICAS)];
    for (const id of moving.slice(0, 5)) {
      const original = await api(oldRing.get(id), 'GET', `/v1/expenses/${id}`);
      const copy = await fetch(`http://${newRing.get(id)}/v1/expenses/${id}/copy`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json', 'if-none-match': '*' },
        body: JSON.stringify({ ...original.body, version: original.etag!.slice(1, -1) }),
      });
      assert.equal(copy.status, 201);
    }

    // Then a real run, killed while its first deletes wait at the old nodes' gates.
    for (const gate of gates.slice(0, 3)) gate.hold((method) => method === 'DELETE');
    const run = startReshard(three, four);
    await Promise.race(gates.slice(0, 3).map((g) => g.held(1)));
    run.child.kill('SIGKILL');
    assert.equal((await run.exited).signal, 'SIGKILL');
    for (const gate of gates) gate.drop();

    // Safe at that instant: every record is somewhere, and reads still find it.
    const partial = new Set((await everywhere()).flat());
    assert.deepEqual(ids.filter((id) => !partial.has(id)), []);
    assert.equal(existsSync(statePath), true, 'the interrupted reshard is on record');
    const onNew = new Set(await shards.ids(4));
    const stillOld = moving.find((id) => !onNew.has(id));
    const read = await runNode(['ch_client.ts', 'get', stillOld!, '--nodes', four.join(','), '--replicas', String(REPLICAS), '--state', statePath]);
    assert.equal(read.code, 0, read.stderr);
    assert.equal(JSON.parse(read.stdout).id, stillOld);

    const rerun = await reshard(three, four);
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.match(rerun.stdout, /taking over the unfinished reshard of pid \d+ \(no longer running\)/);
    assert.deepEqual(await everywhere(), owned(four));
    assert.equal((await everywhere()).flat().length, 2000);
    assert.equal(existsSync(statePath), false);
  });

  it('reports a different record at the destination as a conflict, and overwrites nothing', async () => {
    const [id] = changedOwner(four, three);
    const destination = new HashRing(three, REPLICAS).get(id!);
    const theirs = { id, name: 'Not the same', email: 'x@y.zz', category: 'other', description: '', link: '', estimated_costs: '1', submit_date: '01-01-2001' };
    assert.equal((await api(destination, 'POST', '/v1/expenses', theirs)).status, 201);

    const res = await reshard(four, three);
    assert.equal(res.code, 1);
    assert.match(res.stderr, new RegExp(`^CONFLICT "${id}": a different record with this id is already on ${destination}; both left as they are$`, 'm'));
    assert.match(res.stdout, /conflicts 1, failed 0/);
    assert.equal((await api(destination, 'GET', `/v1/expenses/${id}`)).body.name, 'Not the same');
    assert.ok((await shards.ids(4)).includes(id!), 'the original stays where it was');
    assert.equal(existsSync(statePath), true);

    // Resolve it by hand, and the rerun completes.
    assert.equal((await api(destination, 'DELETE', `/v1/expenses/${id}`)).status, 204);
    const rerun = await reshard(four, three);
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.deepEqual(await everywhere(), owned(three));
  });

  it('refuses two names for one shard before any write: localhost and 127.0.0.1, a gate and its shard', async () => {
    await writes();
    const before = await checksums();
    const port = shards.nodes[0]!.split(':')[1];
    const aliased = [`localhost:${port}`, ...three.slice(1)];
    for (const to of [[...aliased, four[3]!], [...three, shards.nodes[0]!]]) {
      const res = await reshard([shards.nodes[0]!, ...three.slice(1)], to);
      assert.equal(res.code, 1, res.stdout);
      assert.match(res.stderr, /^refusing: (\S+) and (\S+) are the same shard\. .*Nothing was changed\.$/m);
    }
    const zero = await reshard(three, [`127.0.0.1:0${port}`, ...three.slice(1)]);
    assert.equal(zero.code, 2);
    assert.match(zero.stderr, /write the port without a leading zero/);
    assert.deepEqual(await checksums(), before);
    assert.deepEqual((await writes()).flat(), []);
    assert.equal(existsSync(statePath), false);
  });

  it('refuses when a node cannot say which shard it is, and changes nothing', async () => {
    const mute = http.createServer((_req, res) => res.writeHead(503).end('{"error":"down"}'));
    mute.listen(0, '127.0.0.1');
    await once(mute, 'listening');
    try {
      const nobody = `127.0.0.1:${(mute.address() as { port: number }).port}`;
      for (const more of [['--dry-run'], []]) {
        const res = await reshard(three, [...three, nobody], ...more);
        assert.equal(res.code, 1);
        assert.match(res.stderr, new RegExp(`^refusing: ${nobody} cannot say which shard it is \\(GET /healthz answered HTTP 503 with no shard id\\)\\. Nothing was changed\\.$`, 'm'));
      }
      assert.deepEqual((await writes()).flat(), []);
    } finally {
      mute.close();
    }
  });

  it('says there is nothing to move when --from and --to are the same nodes, and checks them', async () => {
    const res = await reshard(three, [...three].reverse());
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /^nothing to move: --from and --to name the same nodes/m);
    assert.match(res.stdout, /^check: 2000 records on 3 nodes, replicas 100: 0 out of place$/m);
  });

  it('refuses without --from and --to', async () => {
    const res = await runNode(['ch_client.ts', 'reshard', '--to', four.join(',')]);
    assert.equal(res.code, 2);
    assert.match(res.stderr, /reshard needs --from and --to/);
  });
});

describe('reshard while clients write', () => {
  it('keeps every PUT and DELETE made between listing and copying', async () => {
    gates[3]!.hold((method, path) => method === 'PUT' && path.endsWith('/copy'));
    const run = startReshard(three, four);
    const held = (await gates[3]!.held(4)).map(heldId);
    const oldRing = new HashRing(three, REPLICAS);
    const [updated, deleted] = [held.slice(0, 2), held.slice(2, 4)];
    for (const id of updated) assert.equal((await api(direct(oldRing.get(id)), 'PUT', `/v1/expenses/${id}`, { name: `Updated ${id}` })).status, 202);
    for (const id of deleted) assert.equal((await api(direct(oldRing.get(id)), 'DELETE', `/v1/expenses/${id}`)).status, 204);
    gates[3]!.release();

    const done = await run.exited;
    assert.equal(done.code, 0, done.stderr);
    assert.match(done.stdout, /deleted by clients meanwhile 2/);
    for (const id of updated) assert.equal((await api(shards.nodes[3]!, 'GET', `/v1/expenses/${id}`)).body.name, `Updated ${id}`);
    const stored = new Set((await everywhere()).flat());
    for (const id of deleted) assert.equal(stored.has(id), false, `${id} stays deleted`);
    ids.splice(0, ids.length, ...ids.filter((id) => !deleted.includes(id)));
    assert.deepEqual(await everywhere(), owned(four));
  });

  it('keeps every PUT and DELETE made between copying and deleting, on either node', async () => {
    gates[3]!.hold((method) => method === 'DELETE');
    const run = startReshard(four, three);
    const held = (await gates[3]!.held(5)).map(heldId);
    const newRing = new HashRing(three, REPLICAS);
    const [atOld, atNew, deleted] = [held.slice(0, 2), held.slice(2, 3), held.slice(3, 5)];
    for (const id of atOld) assert.equal((await api(shards.nodes[3]!, 'PUT', `/v1/expenses/${id}`, { name: `Old node ${id}` })).status, 202);
    for (const id of atNew) assert.equal((await api(direct(newRing.get(id)), 'PUT', `/v1/expenses/${id}`, { name: `New node ${id}` })).status, 202);
    for (const id of deleted) assert.equal((await api(shards.nodes[3]!, 'DELETE', `/v1/expenses/${id}`)).status, 204);
    gates[3]!.release();

    const done = await run.exited;
    assert.equal(done.code, 0, done.stderr);
    for (const id of atOld) assert.equal((await api(direct(newRing.get(id)), 'GET', `/v1/expenses/${id}`)).body.name, `Old node ${id}`);
    for (const id of atNew) assert.equal((await api(direct(newRing.get(id)), 'GET', `/v1/expenses/${id}`)).body.name, `New node ${id}`);
    const stored = new Set((await everywhere()).flat());
    for (const id of deleted) assert.equal(stored.has(id), false, `${id} stays deleted`);
    ids.splice(0, ids.length, ...ids.filter((id) => !deleted.includes(id)));
    assert.deepEqual(await everywhere(), owned(three));
  });

  it('moves the records that clients with the old node list wrote during the move, and exits 0 only then', async () => {
    gates[3]!.hold((method, path) => method === 'PUT' && path.endsWith('/copy'));
    const run = startReshard(three, four);
    await gates[3]!.held(1);
    const late = await runNode(['ch_client.ts', '--nodes', three.join(','), '--replicas', String(REPLICAS), '--ids', '5000-5199']);
    assert.equal(late.code, 0, late.stderr);
    gates[3]!.release();

    const done = await run.exited;
    assert.equal(done.code, 0, done.stderr);
    const newIds = Array.from({ length: 200 }, (_, i) => String(5000 + i));
    ids.push(...newIds);
    assert.deepEqual(await everywhere(), owned(four));
    const check = await runNode(['ch_client.ts', 'check', '--nodes', four.join(','), '--replicas', String(REPLICAS)]);
    assert.equal(check.code, 0, check.stdout + check.stderr);
    assert.match(check.stdout, new RegExp(`^check: ${ids.length} records on 4 nodes, replicas 100: 0 out of place$`, 'm'));
  });

  it('check names records that are not on their owner, and changes nothing', async () => {
    const ring = new HashRing(four, REPLICAS);
    const wrong = four.find((node) => node !== ring.get('stray'))!;
    const stray = { id: 'stray', name: 'Stray', email: 'a@b.cc', category: 'x', description: '', link: '', estimated_costs: '1', submit_date: '01-01-2001' };
    assert.equal((await api(wrong, 'POST', '/v1/expenses', stray)).status, 201);
    const res = await runNode(['ch_client.ts', 'check', '--nodes', four.join(','), '--replicas', String(REPLICAS)]);
    assert.equal(res.code, 1);
    assert.match(res.stdout, new RegExp(`: 1 out of place\\n  on ${wrong}, owned by ${ring.get('stray')}: 1$`, 'm'));
    assert.equal((await api(wrong, 'DELETE', '/v1/expenses/stray')).status, 204);
  });
});

describe('one reshard at a time', () => {
  it('refuses a second reshard while one runs, naming its process', async () => {
    gates[3]!.hold((method) => method === 'DELETE');
    const first = startReshard(four, three);
    await gates[3]!.held(1);
    const second = await reshard(three, four);
    assert.equal(second.code, 1);
    assert.match(second.stderr, new RegExp(`another reshard is running: pid ${first.child.pid} on \\S+, started \\S+, from ${four.join(',')} to ${three.join(',')}, replicas 100`));
    gates[3]!.release();
    const done = await first.exited;
    assert.equal(done.code, 0, done.stderr);
    assert.deepEqual(await everywhere(), owned(three));
  });

  it('refuses other parameters while one is unfinished, and takes over a dead one\'s lock to finish it', async () => {
    gates[3]!.hold((method, path) => method === 'PUT' && path.endsWith('/copy'));
    const killed = startReshard(three, four);
    await gates[3]!.held(1);
    killed.child.kill('SIGKILL');
    await killed.exited;
    gates[3]!.drop();

    const other = await runNode([...args(three, four).slice(0, -4), '--replicas', '1', '--state', statePath]);
    assert.equal(other.code, 1);
    assert.match(other.stderr, /an unfinished reshard is recorded in .*, no longer running\./);
    assert.match(other.stderr, new RegExp(`Finish that one:\\n    node ch_client.ts reshard --from ${three.join(',')} --to ${four.join(',')} --replicas 100\\n`));
    assert.match(other.stderr, new RegExp(`or reverse it:\\n    node ch_client.ts reshard --from ${four.join(',')} --to ${three.join(',')} --replicas 100`));

    const reverse = await reshard(four, three);
    assert.equal(reverse.code, 0, reverse.stderr);
    assert.match(reverse.stdout, new RegExp(`taking over the unfinished reshard of pid ${killed.child.pid}`));
    assert.deepEqual(await everywhere(), owned(three));
    assert.equal(existsSync(statePath), false);
  });

  it('names a broken record, says how to recover, and changes nothing', async () => {
    await writes();
    for (const text of ['{"from": [', '{}', 'null', '{"from": []}']) {
      writeFileSync(statePath, text);
      for (const command of [args(three, four), ['ch_client.ts', 'get', '1', '--nodes', four.join(','), '--replicas', '100', '--state', statePath]]) {
        const res = await runNode(command);
        assert.equal(res.code, 1, text);
        assert.match(res.stderr, new RegExp(`the reshard record ${statePath} is broken: .*\\n.*check where the records are`), text);
      }
    }
    assert.deepEqual((await writes()).flat(), []);
  });
});
