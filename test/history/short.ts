// test/history/short.ts: one short history under the faults given, for a
// copy of the code with a bug planted in it (test/history/planted.ts):
//   node test/history/short.ts isolate:1:8000 freeze:2:600 reshard
// Each fault is a nemesis method and its arguments (test/history/nemesis.ts).
// Prints the checker's report; exits 1 when a history is not linearizable.

import { startNemesis, type Nemesis } from './nemesis.ts';
import { runHistory, type Fault } from './run.ts';

const faults: Fault[] = process.argv.slice(2).map((spec) => {
  const [method, ...args] = spec.split(':');
  return (n: Nemesis) => (n[method as 'freeze'] as (...a: unknown[]) => Promise<string>)(...args.map((a) => (/^\d+$/.test(a) ? Number(a) : a)));
});
const n = await startNemesis();
try {
  const outcome = await runHistory(n, { ids: n.ids(12), clients: 8, seed: 35, quietMs: 1_000, faults });
  console.log(`history: ${outcome.said}`);
  process.exitCode = outcome.verdicts.some((v) => v.ok === false) ? 1 : 0;
} finally {
  await n.stop();
}
