// State the operator's tools meet after something went wrong: a reshard
// killed half-way, whose rerun must count what is there, exactly.
//
// The shards sit behind gates (test/gate.ts), so that a kill lands between
// a move's copy and its hand-off.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startGate, type Gate } from './gate.ts';
import { machine, type Machine } from './machine.ts';
import { startShards, type Shards } from './shards.ts';

let shards: Shards;
let gates: Gate[];
let op: Machine;
const ids = Array.from({ length: 400 }, (_, i) => String(i + 1));
const REPLICAS = '100';

before(async () => {
  shards = await startShards(4, { map: false });
  gates = await Promise.all(shards.nodes.map(startGate));
  op = await machine(shards.secretFile);
  const three = gates.slice(0, 3).map((g) => g.node).join(',');
  const first = await op.client(['reshard', '--nodes', three, '--to', three, '--replicas', REPLICAS]);
  assert.equal(first.code, 0, first.stdout + first.stderr);
  const stored = await op.client(['--nodes', three, '--ids', `1-${ids.length}`]);
  assert.equal(stored.code, 0, stored.stderr);
});

after(async () => {
  await Promise.all((gates ?? []).map((g) => g.close()));
  await shards?.stop();
  await op?.remove();
});

const nodes = (n: number) => gates.slice(0, n).map((g) => g.node).join(',');
const isHandoff = (method: string, path: string) => method === 'POST' && path.endsWith('/handoff');

describe('counts after a kill', () => {
  for (const [from, to, rerunTo] of [[3, 4, 4], [4, 3, 3], [3, 4, 3]] as const) {
    const how = rerunTo === to ? 'rerun' : 'reversed';
    it(`a ${from} -> ${to} reshard killed after its copies, then ${how}, reports exactly the records there are`, async () => {
      for (const gate of gates) gate.release();
      const settled = await op.client(['reshard', '--nodes', nodes(3), '--to', nodes(from), '--replicas', REPLICAS]);
      assert.equal(settled.code, 0, settled.stdout + settled.stderr);
      for (const gate of gates) gate.hold(isHandoff);
      const killed = op.start(['reshard', '--nodes', nodes(3), '--to', nodes(to)]);
      await Promise.race(gates.map((g) => g.held(1)));
      killed.kill('SIGKILL');
      await killed.exited;
      for (const gate of gates) gate.drop();
      const incoming = (await Promise.all(shards.nodes.map((_, i) => shards.sql(i + 1, "SELECT id FROM expenses WHERE state = 'incoming'")))).flat();
      assert.ok(incoming.length > 0, 'the kill left copies incoming');
      const rerun = await op.client(['reshard', '--nodes', nodes(3), '--to', nodes(rerunTo)]);
      // Reversed, the copies on the owner cannot be handed off yet (a hand-off is taken only on the old owner,
      // since f8017a5), so that run ends incomplete: a defect of its own. Its count must be right all the same.
      if (how === 'rerun') assert.equal(rerun.code, 0, rerun.stdout + rerun.stderr);
      assert.match(rerun.stdout, new RegExp(`^reshard: \\d+ nodes -> ${rerunTo} nodes, replicas ${REPLICAS}, ${ids.length} records$`, 'm'), rerun.stdout);
    });
  }
});
