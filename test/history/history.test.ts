// Proof by history, the short form CI runs (the long one: npm run soak,
// test/history/soak.ts). Clients record every operation through the real
// client path while the nemesis freezes a primary, cuts clients off it,
// cuts a primary off its standby, kills a server, reshards, and kills a
// primary machine with its data, failing over to a lagging standby; the
// checker then decides, per id, whether the history is linearizable
// (test/history/linearizable.ts). The reshard comes before the failover: one
// after it is refused (the map would give the failed-over name two addresses).

import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { startNemesis, type Nemesis } from './nemesis.ts';
import { runHistory } from './run.ts';

let n: Nemesis;
before(async () => {
  n = await startNemesis();
});
after(() => n?.stop());

it('a history under every fault, once each, is linearizable', async () => {
  const outcome = await runHistory(n, {
    ids: n.ids(12),
    clients: 8,
    seed: 35,
    quietMs: 1_500,
    faults: [
      (n) => n.pause(2, 2_000),
      (n) => n.partition(2, 2_000, 'release'),
      (n) => n.pauseStandby(2, 3_000),
      (n) => n.partition(1, 1_000, 'drop'),
      (n) => n.kill(2),
      (n) => n.reshard(),
      (n) => n.crash(1),
    ],
  });
  console.log(`history: ${outcome.said}`);
  assert.deepEqual(outcome.verdicts.filter((v) => v.ok !== true).map((v) => v.id), [], outcome.said);
  // Enough happened to show something: answers on both shards' ids, and some writes with no known outcome.
  assert.ok(outcome.operations - outcome.unknown > 500, outcome.said);
});
