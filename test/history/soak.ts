// test/history/soak.ts: the long form of the history test (npm run soak).
// One cluster, rounds of faults for SOAK_MINUTES (default 10); each round a
// history of its own on fresh ids, checked when it ends. A round: two faults
// drawn from freeze, partition (delivered), standby freeze and server kill;
// a reshard; clients cut off one shard's primary (requests lost), then a
// failover to its lagging standby, or, every other round, the primary
// machine killed with its data; two more drawn faults; and a planned failover
// back. Prints how long it ran, how many operations, and what it found.
//
//   SOAK_MINUTES=30 SOAK_SEED=7 npm run soak

import { startNemesis } from './nemesis.ts';
import { runHistory, type Fault } from './run.ts';
import { random } from '../random.ts';

const minutes = Number(process.env.SOAK_MINUTES ?? 10);
const seed = Number(process.env.SOAK_SEED ?? Date.now() % 100_000);
const next = random(seed);
const shard = () => 1 + Math.floor(next() * 2);
const draw = (): Fault => {
  const s = shard();
  const faults: Fault[] = [(n) => n.pause(s, 1_000 + Math.floor(next() * 3_000)), (n) => n.partition(s, 1_000 + Math.floor(next() * 3_000), 'release'), (n) => n.pauseStandby(s, 1_000 + Math.floor(next() * 4_000)), (n) => n.kill(s)];
  return faults[Math.floor(next() * faults.length)]!;
};

/** Shard `s` to its other machine: a primary machine killed with its data, or clients cut off it and a failover. */
const away = (s: number, crash: boolean): Fault[] => (crash ? [(n) => n.crash(s)] : [(n) => n.partition(s, 1_500, 'drop'), (n) => n.failover(s, 2)]);

const started = performance.now();
console.log(`soak: ${minutes} min, seed ${seed} (SOAK_SEED=${seed} replays the faults)`);
const n = await startNemesis();
const found: string[] = [];
let [rounds, operations, unknown] = [0, 0, 0];
try {
  while (performance.now() - started < minutes * 60_000) {
    const s = shard();
    const crash = rounds % 2 === 1;
    const outcome = await runHistory(n, {
      ids: n.ids(12, `r${rounds}`),
      clients: 8,
      seed: seed + rounds * 100,
      quietMs: 2_000,
      faults: [draw(), draw(), (n) => n.reshard(), ...away(s, crash), draw(), draw(), (n) => n.failover(s)],
    });
    rounds++;
    operations += outcome.operations;
    unknown += outcome.unknown;
    console.log(`round ${rounds}: ${outcome.said}`);
    if (outcome.verdicts.some((v) => v.ok !== true)) found.push(`round ${rounds}: ${outcome.said}`);
  }
} finally {
  await n.stop();
}
const ran = (performance.now() - started) / 1000;
console.log(`soak: ran ${(ran / 60).toFixed(1)} min (seed ${seed}): ${rounds} rounds, ${operations} operations (${unknown} with no known outcome); ${found.length === 0 ? 'every history linearizable' : `${found.length} rounds not linearizable or undecided:\n${found.join('\n')}`}`);
process.exitCode = found.length === 0 ? 0 : 1;
