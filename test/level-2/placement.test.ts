// Placement as a table: every routing case of api/cluster-map.ts's rules 1-4,
// one row each, decided by shard/placement.ts with no server and no MySQL.
// The map: two nodes, a and b, moving to three, a, b and c. Ids are chosen so
// that each row's case holds on this map. Rule 6, which rings a new map may
// have, is a table too. Rule 5, how a shard takes a new map, is checked last,
// on a real shard.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { movesAway, receives } from '../../api/arcs.ts';
import { addressOf, checkMap, placer, ringChange, type ClusterMap } from '../../api/cluster-map.ts';
import { Invalid } from '../../api/expense.ts';
import { derivedKey } from '../../api/signing.ts';
import type { State } from '../../shard/rows.ts';
import type { Held } from '../../shard/cluster.ts';
import { decide, type Verdict } from '../../shard/placement.ts';
import { HashRing, position } from '../../ring.ts';
import { startShards, type Shards } from '../shards.ts';

const SECRET = 'f'.repeat(64);
const node = (name: string) => ({ name: `127.0.0.1:${name}`, shard: `shard-${name}` });
const [A, B, C] = [node('3000'), node('4000'), node('5000')];
const settled: ClusterMap = { epoch: 7, nodes: [A, B], replicas: 1 };
const moving: ClusterMap = { ...settled, epoch: 8, moving: { nodes: [A, B, C], replicas: 1, by: { host: 'h', machine: '', pid: 1, started: '' }, leaseMs: 15_000 } };

const held = (map: ClusterMap | undefined, shard: string, writable = true): Held => ({ shard, writable, map, place: map && placer(map) });

/** The first id (1, 2, 3 …) whose placement under `map` satisfies `wanted`. */
function idWhere(map: ClusterMap, wanted: (owner: string, target: string | undefined) => boolean): string {
  const place = placer(map);
  for (let i = 1; ; i++) {
    const { owner, target } = place(String(i));
    if (wanted(owner.shard, target?.shard)) return String(i);
  }
}

// Ids for each case, found on the maps above (the ring is fixed, so they are too).
const onA = idWhere(settled, (owner) => owner === A.shard);
const fromAtoC = idWhere(moving, (owner, target) => owner === A.shard && target === C.shard);
const stayOnA = idWhere(moving, (owner, target) => owner === A.shard && target === undefined);

/** The old owner's word for an id at the moving map's epoch, as the server makes it. */
const word = (id: string) => `8.${createHmac('sha256', derivedKey(SECRET, 'ask')).update(`8:${id}`).digest('hex').slice(0, 32)}`;

type Row = {
  rule: string;
  why: string;
  map: ClusterMap | undefined;
  at: string; // the deciding shard
  id: string;
  row: State | undefined;
  asking?: string;
  creates?: boolean;
  expect: Omit<Verdict, 'to'> & { to?: string };
};

const TABLE: Row[] = [
  { rule: '1', why: 'no map: one server serves every id', map: undefined, at: A.shard, id: 'anything', row: undefined, expect: { answer: 'serve', rule: '1' } },
  { rule: '1', why: 'no map, a live row', map: undefined, at: A.shard, id: 'x', row: 'live', expect: { answer: 'serve', rule: '1' } },
  { rule: '4', why: 'no map, but a row left mid-move: wait', map: undefined, at: A.shard, id: 'x', row: 'incoming', expect: { answer: 'wait', rule: '4' } },
  { rule: '2', why: 'the owner serves its live row', map: settled, at: A.shard, id: onA, row: 'live', expect: { answer: 'serve', rule: '2' } },
  { rule: '2', why: 'the owner serves an id it has no row of (a create, or a 404)', map: settled, at: A.shard, id: onA, row: undefined, expect: { answer: 'serve', rule: '2' } },
  { rule: '2', why: 'another shard redirects to the owner (MOVED)', map: settled, at: B.shard, id: onA, row: undefined, expect: { answer: 'redirect', rule: '2', to: A.name } },
  { rule: '2', why: 'another shard redirects even when it holds a stray row', map: settled, at: B.shard, id: onA, row: 'live', expect: { answer: 'redirect', rule: '2', to: A.name } },
  { rule: '2', why: 'an id that stays put during a reshard is served by its owner', map: moving, at: A.shard, id: stayOnA, row: 'live', expect: { answer: 'serve', rule: '2' } },
  { rule: '2', why: 'a shard that is neither home of a moving id redirects to its old owner', map: moving, at: B.shard, id: fromAtoC, row: undefined, expect: { answer: 'redirect', rule: '2', to: A.name } },
  { rule: '3a', why: 'the old owner serves what it still holds live', map: moving, at: A.shard, id: fromAtoC, row: 'live', expect: { answer: 'serve', rule: '3a' } },
  { rule: '3a', why: 'the old owner sends an id it does not hold to the new owner (ASK)', map: moving, at: A.shard, id: fromAtoC, row: undefined, expect: { answer: 'ask', rule: '3a', to: C.name } },
  { rule: '3a', why: 'the old owner never serves its moved row (a tombstone): ASK', map: moving, at: A.shard, id: fromAtoC, row: 'moved', expect: { answer: 'ask', rule: '3a', to: C.name } },
  { rule: '3b', why: 'the new owner serves a record it holds live, asked or not', map: moving, at: C.shard, id: fromAtoC, row: 'live', expect: { answer: 'serve', rule: '3b' } },
  { rule: '3b', why: 'without the old owner\'s word, the new owner sends a read back to the old owner', map: moving, at: C.shard, id: fromAtoC, row: undefined, expect: { answer: 'redirect', rule: '3b', to: A.name } },
  { rule: '3b', why: 'without the old owner\'s word, the new owner never creates', map: moving, at: C.shard, id: fromAtoC, row: 'live', creates: true, expect: { answer: 'redirect', rule: '3b', to: A.name } },
  { rule: '3b', why: 'a forged word is no word', map: moving, at: C.shard, id: fromAtoC, row: undefined, asking: '8', creates: true, expect: { answer: 'redirect', rule: '3b', to: A.name } },
  { rule: '3b', why: 'a word for another id is no word', map: moving, at: C.shard, id: fromAtoC, row: undefined, asking: word(stayOnA), creates: true, expect: { answer: 'redirect', rule: '3b', to: A.name } },
  { rule: '3b', why: 'asked, the new owner creates an id it has no row of', map: moving, at: C.shard, id: fromAtoC, row: undefined, asking: word(fromAtoC), creates: true, expect: { answer: 'serve', rule: '3b' } },
  { rule: '3b', why: 'asked, the new owner answers a read of an id it has no row of (a 404)', map: moving, at: C.shard, id: fromAtoC, row: undefined, asking: word(fromAtoC), expect: { answer: 'serve', rule: '3b' } },
  { rule: '4', why: 'asked, a copy still incoming waits (503)', map: moving, at: C.shard, id: fromAtoC, row: 'incoming', asking: word(fromAtoC), expect: { answer: 'wait', rule: '4' } },
  { rule: '4', why: 'the owner\'s row caught mid-move waits (503)', map: settled, at: A.shard, id: onA, row: 'moved', expect: { answer: 'wait', rule: '4' } },
];

describe('placement: who answers for an id (shard/placement.ts, one row per case)', () => {
  for (const t of TABLE) {
    it(`rule ${t.rule}: ${t.why}`, () => {
      const verdict = decide({ held: held(t.map, t.at), secret: SECRET }, t.id, t.row, { asking: t.asking, creates: t.creates });
      const got = { answer: verdict.answer, rule: verdict.rule, ...('to' in verdict && { to: verdict.to.name }) };
      assert.deepEqual(got, t.expect);
    });
  }

  it('covers every numbered rule that places an id (1 to 4; rule 5 is below)', () => {
    assert.deepEqual([...new Set(TABLE.map((t) => t.rule))].sort(), ['1', '2', '3a', '3b', '4']);
  });

  it('without a cluster secret, the old owner\'s word is the epoch alone', () => {
    const verdict = decide({ held: held(moving, C.shard), secret: undefined }, fromAtoC, undefined, { asking: '8', creates: true });
    assert.equal(verdict.answer, 'serve');
  });
});

describe('rule 6: a ring changes only by a move, or by a recorded forget', () => {
  const ended: ClusterMap = { epoch: 9, nodes: [A, B, C], replicas: 1 };
  const forgetC: ClusterMap = { epoch: 10, nodes: [A, B], replicas: 1, forgot: [{ ...C, epoch: 10 }] };
  const by = { host: 'h', machine: '', pid: 1, started: '' };
  const rows: Array<[string, ClusterMap, ClusterMap, RegExp | undefined]> = [
    ['the same ring at a higher epoch', settled, { ...settled, epoch: 8 }, undefined],
    ['a reshard starts: the old ring stays beside the new', settled, moving, undefined],
    ['a reshard ends: the ring it moved to', moving, ended, undefined],
    ['a reshard is reversed: the two rings swap', moving, { epoch: 9, nodes: [A, B, C], replicas: 1, moving: { nodes: [A, B], replicas: 1, by, leaseMs: 1 } }, undefined],
    ['a reshard is abandoned: back to the old ring', moving, { ...settled, epoch: 9 }, undefined],
    ['a node dropped by hand', ended, { ...ended, epoch: 10, nodes: [A, B] }, /drops 127\.0\.0\.1:5000 from the ring with no move under way and no recorded forget/],
    ['a node added by hand', settled, { ...settled, epoch: 8, nodes: [A, B, C] }, /changes the ring with no move/],
    ['replicas changed by hand', settled, { ...settled, epoch: 8, replicas: 2 }, /changes the ring with no move/],
    ['a node forgotten, and recorded so', ended, forgetC, undefined],
    ['a forget unrecorded later', forgetC, { epoch: 11, nodes: [A, B], replicas: 1 }, /forgotten at epoch 10: a forget is never unrecorded/],
    ['an old forget excuses no new drop', forgetC, { ...forgetC, epoch: 11, nodes: [A] }, /drops 127\.0\.0\.1:3000|drops 127\.0\.0\.1:4000/],
  ];
  for (const [what, now, next, refused] of rows) {
    it(`${refused === undefined ? 'takes' : 'refuses'}: ${what}`, () => {
      const why = ringChange(checkMap(now), checkMap(next));
      if (refused === undefined) assert.equal(why, undefined);
      else assert.match(why ?? '', refused);
    });
  }

  it('checkMap keeps epochs headroom: 2^52 is taken, anything above refused, so no map can block every later one', () => {
    assert.equal(checkMap({ ...settled, epoch: 2 ** 52 }).epoch, 2 ** 52);
    for (const epoch of [2 ** 52 + 1, 2 ** 53 - 1, 2 ** 53]) assert.throws(() => checkMap({ ...settled, epoch }), /epoch must be a whole number from 1 to 4503599627370496 \(2\^52/);
  });

  it('checkMap refuses a forgotten shard in a ring, and a forget dated after the map', () => {
    assert.throws(() => checkMap({ ...ended, forgot: [{ ...C, epoch: 9 }] }), /cannot be in a ring/);
    assert.throws(() => checkMap({ ...forgetC, forgot: [{ ...C, epoch: 11 }] }), /must name the epoch that forgot it, from 1 to 10/);
  });
});

describe('rule 7: a node\'s place on the ring is its name; its address can change', () => {
  const failedOver: ClusterMap = { ...settled, epoch: 8, nodes: [{ ...A, address: '127.0.0.1:3100' }, B] };

  it('places every id as before when a node answers at another address', () => {
    const [before, after] = [placer(settled), placer(failedOver)];
    for (let i = 0; i < 1000; i++) assert.equal(after(String(i)).owner.name, before(String(i)).owner.name);
  });

  it('resolves a name to its address, and a name with none to itself', () => {
    assert.equal(addressOf(failedOver, A.name), '127.0.0.1:3100');
    assert.equal(addressOf(failedOver, B.name), B.name);
    assert.equal(addressOf(settled, A.name), A.name);
  });

  it('checks an address as a name is checked, and writes one equal to the name not at all', () => {
    assert.deepEqual(checkMap({ ...settled, nodes: [{ ...A, address: A.name }, B] }), settled);
    assert.deepEqual(checkMap(failedOver), failedOver);
    assert.throws(() => checkMap({ ...settled, nodes: [{ ...A, address: 'nowhere' }, B] }), Invalid);
    assert.throws(() => checkMap({ ...settled, nodes: [{ ...A, address: '127.0.0.1:6000' }, B] }), /bad port/);
    assert.throws(() => checkMap({ ...settled, nodes: [{ ...A, address: B.name }, B] }), /at one address/);
    const twoAddresses = { ...moving, moving: { ...moving.moving!, nodes: [{ ...A, address: '127.0.0.1:3100' }, B, C] } };
    assert.throws(() => checkMap(twoAddresses), /two addresses/);
  });
});

describe('rule 8: only a writable machine serves ids', () => {
  const failedOver: ClusterMap = { ...settled, epoch: 8, nodes: [{ ...A, address: '127.0.0.1:3100' }, B] };
  const asStandby = (map: ClusterMap | undefined, address: string, id: string, row: State | undefined) => decide({ held: held(map, A.shard, false), secret: SECRET, address }, id, row, { creates: true });

  it('a read-only machine sends its own live id to the owner\'s address when that is another (the fenced old primary after a failover)', () => {
    assert.deepEqual(asStandby(failedOver, A.name, onA, 'live'), { answer: 'redirect', to: failedOver.nodes[0], rule: '8' });
  });
  it('a standby whose map names its primary\'s address sends the client there', () => {
    assert.deepEqual(asStandby(settled, '127.0.0.1:3100', onA, undefined), { answer: 'redirect', to: A, rule: '8' });
  });
  it('a read-only machine that its map names as the owner answers 503: it knows no better', () => {
    assert.deepEqual(asStandby(failedOver, '127.0.0.1:3100', onA, 'live'), { answer: 'standby', rule: '8' });
    assert.deepEqual(asStandby(undefined, A.name, 'x', undefined), { answer: 'standby', rule: '8' });
  });
});

describe('which nodes a reshard can move records onto (api/arcs.ts, operator/walk.ts walks the others at once)', () => {
  const names = ['a', 'b', 'c', 'd'];
  const ids = Array.from({ length: 3000 }, (_, i) => String(i + 1));
  /** The nodes some id moves onto from `from` to `to`: what receives must name, found by placing ids. */
  const seen = (from: HashRing, to: HashRing) => new Set(ids.filter((id) => from.get(id) !== to.get(id)).map((id) => to.get(id)));
  const cases: Array<[string, HashRing, HashRing]> = [
    ['3 -> 4', new HashRing(names.slice(0, 3), 100), new HashRing(names, 100)],
    ['4 -> 3', new HashRing(names, 100), new HashRing(names.slice(0, 3), 100)],
    ['a replaced by d', new HashRing(names.slice(0, 3), 100), new HashRing(names.slice(1), 100)],
    ['replicas 100 -> 50', new HashRing(names.slice(0, 3), 100), new HashRing(names.slice(0, 3), 50)],
  ];
  for (const [what, from, to] of cases) {
    it(`${what}: exactly the nodes that ids move onto`, () => {
      const receiving = names.filter((n) => receives(from, to, n));
      assert.deepEqual(receiving, [...seen(from, to)].sort(), what);
    });
    it(`${what}: each node's arcs that go elsewhere hold exactly the ids the rings send elsewhere, with both owners`, () => {
      for (const node of names) {
        const arcs = movesAway(from, to, node);
        const within = (id: string) => arcs.find(({ arc: [a, b] }) => a <= position(id) && (b === undefined || position(id) < b));
        for (const id of ids.slice(0, 1000)) {
          const arc = within(id);
          if (to.get(id) === node) assert.equal(arc, undefined, `${what}: ${id} stays on ${node}, but an arc takes it away`);
          else assert.deepEqual([arc?.owner, arc?.target], [from.get(id), to.get(id)], `${what}: ${id} from ${node}`);
        }
      }
    });
  }
});

describe('rule 5: a shard takes a new map only at a higher epoch, and not while a copy is incoming', () => {
  let shards: Shards;
  let auth: Record<string, string>;
  before(async () => {
    shards = await startShards(1);
    auth = { authorization: `Bearer ${(await readFile(shards.secretFile, 'utf8')).trim()}` };
  });
  after(() => shards?.stop());

  const mapAt = async () => (await fetch(`http://${shards.nodes[0]}/cluster/map`)).json() as Promise<{ shard: string; map: ClusterMap }>;
  const put = (map: ClusterMap, epoch: number) =>
    fetch(`http://${shards.nodes[0]}/cluster/map`, { method: 'PUT', headers: { ...auth, 'if-match': `"${epoch}"` }, body: JSON.stringify(map) });

  it('refuses a different map at the same epoch (409), and one over an epoch it does not hold (412)', async () => {
    const { map } = await mapAt();
    const other = { ...map, replicas: map.replicas + 1 };
    assert.equal((await put(other, map.epoch)).status, 409);
    assert.equal((await put({ ...other, epoch: map.epoch + 1 }, map.epoch - 1)).status, 412);
    assert.deepEqual((await mapAt()).map, map);
  });

  it('refuses a map at epoch 2^53 - 1 (400), so that a later reshard still has epochs to use', async () => {
    const { map } = await mapAt();
    const refused = await put({ ...map, epoch: 2 ** 53 - 1 }, map.epoch);
    assert.equal(refused.status, 400);
    assert.match(((await refused.json()) as { error: string }).error, /epoch must be a whole number from 1 to 4503599627370496/);
    assert.deepEqual((await mapAt()).map, map);
    assert.equal((await put({ ...map, epoch: map.epoch + 1 }, map.epoch)).status, 200);
  });

  it('refuses to end a reshard while a copy is incoming, and takes the same map once it is gone', async () => {
    const { map } = await mapAt();
    await shards.sql(1, "INSERT INTO expenses.expenses (id, name, email, category, description, link, estimated_costs, submit_date, version, state) VALUES ('rule5', 'n', 'e@x', 'c', 'd', 'l', 1, '2016-12-10', '0123456789abcdef', 'incoming')");
    const next = { ...map, epoch: map.epoch + 1 };
    const refused = await put(next, map.epoch);
    assert.equal(refused.status, 409);
    assert.match(((await refused.json()) as { error: string }).error, /still incoming/);
    await shards.sql(1, "DELETE FROM expenses.expenses WHERE id = 'rule5'");
    assert.equal((await put(next, map.epoch)).status, 200);
    assert.equal((await mapAt()).map.epoch, map.epoch + 1);
  });

  it('holds the stored map after a map write that failed, even one that MySQL committed after the failure', async () => {
    const { map } = await mapAt();
    const stored = async () => Number((await shards.sql(1, 'SELECT epoch FROM expenses.cluster_map'))[0]![0]);
    // A transaction holds the map's row until the test ends it, past the
    // server's 5 s query timeout: the server's write waits, its query times
    // out, and MariaDB commits the write once the row is free, after the
    // server has answered.
    const locker = shards.script('sql', '1', '-e', 'BEGIN; SELECT epoch FROM expenses.cluster_map FOR UPDATE; DO SLEEP(600); COMMIT;');
    let holder = '';
    await until(async () => (holder = (await shards.sql(1, 'SELECT trx_mysql_thread_id FROM information_schema.innodb_trx WHERE trx_rows_locked > 0'))[0]?.[0] ?? '') !== '');
    const failed = await put({ ...map, epoch: map.epoch + 1 }, map.epoch);
    assert.notEqual(failed.status, 200);
    await shards.sql(1, `KILL ${holder}`); // its transaction rolls back, and the row is free
    await locker;
    await until(async () => (await stored()) === map.epoch + 1);
    assert.equal((await mapAt()).map.epoch, map.epoch + 1, 'the shard holds the map MySQL stores, not the one it held before the write');
  });
});

/** Resolves once `done` holds, asking every 50 ms for up to 20 s. */
async function until(done: () => Promise<boolean>): Promise<void> {
  for (const deadline = Date.now() + 20_000; !(await done()); ) {
    if (Date.now() > deadline) throw new Error('gave up waiting');
    await new Promise((r) => setTimeout(r, 50));
  }
}
