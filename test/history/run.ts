// test/history/run.ts: one history run. Clients record while the nemesis
// puts the cluster through a list of faults, one after another with quiet
// time between; then every id is read once more, and the checker decides.

import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { discover } from '../../client/cluster.ts';
import { perform, startClients } from './clients.ts';
import { check, known, report, type Verdict } from './linearizable.ts';
import type { Nemesis } from './nemesis.ts';

/** A fault: what it did, in words, once it is over. */
export type Fault = (n: Nemesis) => Promise<string>;

export type Outcome = { verdicts: Verdict[]; operations: number; unknown: number; ms: number; done: string[]; said: string };

/** Runs `faults` under `clients` clients on `ids`, with `quietMs` of plain traffic before, between and after them. */
export async function runHistory(n: Nemesis, { ids, clients, faults, quietMs, seed }: { ids: string[]; clients: number; faults: Fault[]; quietMs: number; seed: number }): Promise<Outcome> {
  const started = performance.now();
  const running = await startClients(n.seeds, ids, clients, seed);
  const done: string[] = [];
  try {
    await new Promise((resolve) => setTimeout(resolve, quietMs));
    for (const fault of faults) {
      const at = performance.now();
      const what = await fault(n);
      done.push(`${what} (${((performance.now() - at) / 1000).toFixed(1)} s, at ${((at - started) / 1000).toFixed(1)} s)`);
      console.log(`nemesis: ${done.at(-1)}`);
      await new Promise((resolve) => setTimeout(resolve, quietMs));
    }
  } finally {
    await running.stop();
  }
  // Every id read once more, after the last write: a lost write shows here if nowhere else.
  const view = (await discover(n.seeds, n.replicas())).view;
  for (const id of ids) running.history.push(await perform(view, 0, id, { kind: 'read' }));
  // The history itself, for a second look (node test/history/recheck.ts FILE checks it again).
  const file = join(tmpdir(), `history-${process.pid}-${Date.now()}.json`);
  await writeFile(file, JSON.stringify(running.history));
  const verdicts = check(running.history);
  const unknown = running.history.filter((o) => !known(o)).length;
  const ms = performance.now() - started;
  const said = `${(ms / 1000).toFixed(1)} s, ${running.history.length} operations, ${unknown} with no known outcome (and ${running.notSent.n} not sent, their node given up by the client), by ${clients} clients (the history: ${file}); faults: ${done.join('; ')}\n${report(verdicts)}`;
  return { verdicts, operations: running.history.length, unknown, ms, done, said };
}
