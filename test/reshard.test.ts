// Resharding on real shards: 3 -> 4 and back, interrupted runs, conflicts and
// dry runs. Triggers in each shard's MySQL record every write, so that a test
// can prove which records were touched and which were not.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HashRing } from '../ring.ts';
import { freePorts, ROOT, runNode, startShards, type Shards } from './shards.ts';

let shards: Shards;
let three: string[];
let four: string[];
let statePath: string;
const ids = Array.from({ length: 2000 }, (_, i) => String(i + 1));
// Enough points per node that about a quarter of the records move, whatever
// free ports the shards happen to get.
const REPLICAS = 100;

before(async () => {
  shards = await startShards(4);
  three = shards.nodes.slice(0, 3);
  four = shards.nodes;
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
  await shards?.stop();
});

const reshard = (from: string[], to: string[], ...more: string[]) =>
  runNode(['ch_client.ts', 'reshard', '--from', from.join(','), '--to', to.join(','), '--replicas', String(REPLICAS), '--state', statePath, ...more]);

/** Every shard's ids, each sorted. */
const everywhere = () => Promise.all(shards.nodes.map((_, i) => shards.ids(i + 1)));

/** The ids each node of `nodes` owns on that ring; nodes not in it own nothing. */
function owned(nodes: string[]): string[][] {
  const ring = new HashRing(nodes, REPLICAS);
  return shards.nodes.map((node) => ids.filter((id) => ring.get(id) === node).sort());
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

describe('reshard', () => {
  it('--dry-run prints the plan against hash mod N, and changes nothing', async () => {
    await writes();
    const checksums = () => Promise.all(shards.nodes.map((_, i) => shards.sql(i + 1, 'CHECKSUM TABLE expenses')));
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

  it('3 -> 4 moves exactly the records whose owner changed, and writes no other', async () => {
    const moving = changedOwner(three, four);
    const res = await reshard(three, four);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, new RegExp(`moved ${moving.length}, left in place ${2000 - moving.length}, conflicts 0, failed 0`));
    assert.deepEqual(await everywhere(), owned(four));

    const seen = await writes();
    assert.deepEqual(seen[3]!.map(([op, id]) => `${op} ${id}`).sort(), moving.map((id) => `insert ${id}`).sort());
    const deleted = seen.slice(0, 3).flat();
    assert.ok(deleted.every(([op]) => op === 'delete'));
    assert.deepEqual(deleted.map(([, id]) => id).sort(), [...moving].sort());
    assert.equal(existsSync(statePath), false, 'a finished reshard leaves no state behind');
  });

  it('4 -> 3 moves the fourth node\'s records back, and nothing else', async () => {
    const moving = changedOwner(four, three);
    const res = await reshard(four, three);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, new RegExp(`moved ${moving.length}, left in place ${2000 - moving.length}, `));
    assert.deepEqual(await everywhere(), owned(three));
    const seen = await writes();
    assert.deepEqual(seen[3]!.map(([op, id]) => `${op} ${id}`).sort(), moving.map((id) => `delete ${id}`).sort());
    assert.deepEqual(seen.slice(0, 3).flat().map(([op, id]) => `${op} ${id}`).sort(), moving.map((id) => `insert ${id}`).sort());
  });

  it('finishes after a kill at any point: nothing lost, nothing left twice', async () => {
    // A copy made just before a crash, whose delete never happened.
    const moving = changedOwner(three, four);
    const ring = new HashRing(four, REPLICAS);
    for (const id of moving.slice(0, 5)) {
      const record = await (await fetch(`http://${new HashRing(three, REPLICAS).get(id)}/v1/expenses/${id}`)).json();
      const { status: _s, decision_date: _d, ...fields } = record;
      const copy = await fetch(`http://${ring.get(id)}/v1/expenses`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(fields) });
      assert.equal(copy.status, 201);
    }

    // Then a real run, killed with SIGKILL part-way through.
    const args = ['ch_client.ts', 'reshard', '--from', three.join(','), '--to', four.join(','), '--replicas', String(REPLICAS), '--state', statePath];
    const child = spawn(process.execPath, args, { cwd: ROOT, stdio: 'ignore' });
    const exited = new Promise((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
    for (;;) {
      const [[count]] = (await shards.sql(4, 'SELECT COUNT(*) FROM expenses')) as [[string]];
      if (Number(count) >= moving.length / 4 || child.exitCode !== null) break;
    }
    child.kill('SIGKILL');
    assert.equal(await exited, 'SIGKILL', 'killed while it was still moving records');

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
    assert.deepEqual(await everywhere(), owned(four));
    assert.equal((await everywhere()).flat().length, 2000);
    assert.equal(existsSync(statePath), false);
  });

  it('reports a different record at the destination as a conflict, and overwrites nothing', async () => {
    const [id] = changedOwner(four, three);
    const destination = new HashRing(three, REPLICAS).get(id!);
    const theirs = { id, name: 'Not the same', email: 'x@y.zz', category: 'other', description: '', link: '', estimated_costs: '1', submit_date: '01-01-2001' };
    const put = await fetch(`http://${destination}/v1/expenses`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(theirs) });
    assert.equal(put.status, 201);

    const res = await reshard(four, three);
    assert.equal(res.code, 1);
    assert.match(res.stderr, new RegExp(`^CONFLICT "${id}": a different record with this id is already on ${destination}; both left as they are$`, 'm'));
    assert.match(res.stdout, /conflicts 1, failed 0/);
    const atDestination = await (await fetch(`http://${destination}/v1/expenses/${id}`)).json();
    assert.equal(atDestination.name, 'Not the same');
    assert.ok((await shards.ids(4)).includes(id!), 'the original stays where it was');
    assert.equal(existsSync(statePath), true);

    // Resolve it by hand, and the rerun completes.
    assert.equal((await fetch(`http://${destination}/v1/expenses/${id}`, { method: 'DELETE' })).status, 204);
    const rerun = await reshard(four, three);
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.deepEqual(await everywhere(), owned(three));
  });

  it('names an old node it cannot list, and exits 1, in a dry run too', async () => {
    const nobody = `127.0.0.1:${await freePorts(1)}`;
    for (const more of [['--dry-run'], []]) {
      const res = await reshard([nobody], [nobody, four[0]!], ...more);
      assert.equal(res.code, 1);
      assert.match(res.stderr, new RegExp(`^FAILED "\\(all of ${nobody}\\)": could not list its records: cannot reach ${nobody}: ECONNREFUSED$`, 'm'));
    }
  });

  it('refuses to start without --from and --to', async () => {
    const res = await runNode(['ch_client.ts', 'reshard', '--to', four.join(',')]);
    assert.equal(res.code, 2);
    assert.match(res.stderr, /reshard needs --from and --to/);
  });
});
