// test/history/soak.ts: the long form of the history test (npm run soak).
// One cluster (two shards, each a primary and two standbys that replace it by
// themselves), rounds of faults for SOAK_MINUTES (default 10); each round a
// history of its own on fresh ids, checked when it ends. A round: two faults
// drawn from a short freeze, a short cut off the standbys (both must leave
// the primary in place), clients cut off a primary (requests delivered late
// or lost) and a server kill; a reshard; a primary replaced with no command,
// in turn killed with its data (its standbys lagging 6 s, so that the
// winner has writes to apply), frozen, and cut off its standbys (the old
// machine then rejoins as a standby); two more drawn faults. Prints how long
// it ran, how many operations, and what it found.
//
//   SOAK_MINUTES=30 SOAK_SEED=7 npm run soak

import { KEPT_MS, REPLACED_MS, startNemesis } from './nemesis.ts';
import { runHistory, type Fault } from './run.ts';
import { random } from '../random.ts';

const minutes = Number(process.env.SOAK_MINUTES ?? 10);
const seed = Number(process.env.SOAK_SEED ?? Date.now() % 100_000);
const next = random(seed);
const shard = () => 1 + Math.floor(next() * 2);
const draw = (): Fault => {
  const s = shard();
  const ms = 1_000 + Math.floor(next() * 2_000);
  const faults: Fault[] = [(n) => n.freeze(s, KEPT_MS), (n) => n.isolate(s, KEPT_MS), (n) => n.partition(s, ms, 'release'), (n) => n.partition(s, ms, 'drop'), (n) => n.killServer(s)];
  return faults[Math.floor(next() * faults.length)]!;
};

/** Shard `s`'s primary replaced with no command: the round's turn of a kill with its data, a long freeze, or a long cut off its standbys. */
const replace = (s: number, round: number): Fault => {
  const ms = REPLACED_MS + Math.floor(next() * 3_000);
  return [(n: Parameters<Fault>[0]) => n.kill(s, 6), (n: Parameters<Fault>[0]) => n.freeze(s, ms), (n: Parameters<Fault>[0]) => n.isolate(s, ms)][(round + seed) % 3]!;
};

const started = performance.now();
console.log(`soak: ${minutes} min, seed ${seed} (SOAK_SEED=${seed} replays the faults)`);
const n = await startNemesis();
// SOAK_MINUTES counts from here: the cluster's start takes 30 s on a quiet machine and minutes on a loaded one.
const began = performance.now();
console.log(`soak: the cluster started in ${((began - started) / 1000).toFixed(1)} s`);
const found: string[] = [];
let [rounds, operations, unknown] = [0, 0, 0];
try {
  while (performance.now() - began < minutes * 60_000) {
    const outcome = await runHistory(n, {
      ids: n.ids(12, `r${rounds}`),
      clients: 8,
      seed: seed + rounds * 100,
      quietMs: 1_500,
      faults: [draw(), draw(), (n) => n.reshard(), replace(shard(), rounds), draw(), draw()],
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
console.log(`soak: ran ${(ran / 60).toFixed(1)} min with the start (seed ${seed}): ${rounds} rounds, ${operations} operations (${unknown} with no known outcome); ${found.length === 0 ? 'every history linearizable' : `${found.length} rounds not linearizable or undecided:\n${found.join('\n')}`}`);
process.exitCode = found.length === 0 ? 0 : 1;
