// Proof by history, the short form CI runs (the long one: npm run soak,
// test/history/soak.ts). Two shards, each a primary and two standbys that
// replace it by themselves (election/rules.ts); clients record every
// operation through the real client path while the nemesis freezes a
// primary briefly (it must be kept) and for long (it must be replaced), cuts
// clients off a primary, cuts a primary off its standbys briefly and for
// long, reshards, and kills a primary machine with its data, running no
// failover; each replaced machine rejoins as a standby. The checker then
// decides, per id, whether the history is linearizable
// (test/history/linearizable.ts).

import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { KEPT_MS, startNemesis, type Nemesis } from './nemesis.ts';
import { runHistory } from './run.ts';

let n: Nemesis;
before(async () => {
  n = await startNemesis();
});
after(() => n?.stop());

it('a history under every fault, once each, with automatic failovers, is linearizable', async () => {
  const outcome = await runHistory(n, {
    ids: n.ids(12),
    clients: 8,
    seed: 35,
    quietMs: 1_000,
    faults: [
      (n) => n.freeze(1, KEPT_MS),
      (n) => n.partition(2, 1_500, 'release'),
      (n) => n.isolate(2, KEPT_MS),
      (n) => n.reshard(),
      (n) => n.freeze(2, 4_000),
      (n) => n.partition(1, 1_000, 'drop'),
      (n) => n.isolate(1, 4_000),
      (n) => n.kill(2, 6),
      (n) => n.reshard(),
    ],
  });
  console.log(`history: ${outcome.said}`);
  assert.deepEqual(outcome.verdicts.filter((v) => v.ok !== true).map((v) => v.id), [], outcome.said);
  // Enough happened to show something: answers on both shards' ids, and some writes with no known outcome.
  assert.ok(outcome.operations - outcome.unknown > 300, outcome.said);
});
