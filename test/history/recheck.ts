// test/history/recheck.ts: checks a recorded history again, from the file a
// history run wrote: node test/history/recheck.ts FILE [BUDGET].

import { readFile } from 'node:fs/promises';
import { check, report, type Operation } from './linearizable.ts';

const [file, budget] = process.argv.slice(2);
if (file === undefined) {
  console.error('usage: node test/history/recheck.ts FILE [BUDGET], FILE a history a run wrote (it names it)');
  process.exit(2);
}
const history = JSON.parse(await readFile(file, 'utf8')) as Operation[];
const started = performance.now();
const verdicts = check(history, budget === undefined ? undefined : Number(budget));
console.log(`${report(verdicts)}\nchecked in ${((performance.now() - started) / 1000).toFixed(1)} s`);
process.exitCode = verdicts.every((v) => v.ok === true) ? 0 : 1;
