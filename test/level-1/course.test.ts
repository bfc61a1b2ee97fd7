// The README is a course: its reading order names files that exist; level 1
// is the assignment alone, within the line count it states, and the later
// levels join it at one seam in each entry point; no import runs back up the house.

import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ROOT } from '../shards.ts';

const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
const course = readme.slice(readme.indexOf('## Read the code in this order'), readme.indexOf('## Words'));
const lines = (file: string) => readFileSync(join(ROOT, file), 'utf8').split('\n').length - 1;

/** The files a part of the README links to, in order. */
function linked(text: string): string[] {
  return [...text.matchAll(/\]\(([\w./-]+\.(?:ts|sql))\)/g)].map((m) => m[1]!);
}

/** The house from the bottom floor up: a file may import only from its own floor or below. */
const FLOORS: Array<[string, number]> = [
  ['ring.ts', 0],
  ['api/', 0],
  ['mysql/', 0],
  ['db.ts', 1],
  ['lab/', 1],
  ['client/', 1],
  ['shard/', 2],
  ['operator/', 2],
  ['page/', 2],
  ['cluster/', 3],
  ['election/', 3],
  ['server.ts', 3],
  ['ch_client.ts', 3],
  ['cli/', 3],
  ['bench/', 4],
];
const floorOf = (file: string) => FLOORS.find(([place]) => file === place || file.startsWith(place))?.[1];

function sources(dir = ''): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((e) => {
    const path = dir === '' ? e.name : `${dir}/${e.name}`;
    if (e.isDirectory()) return ['node_modules', 'test', 'data', 'docs', '.git', 'peers'].includes(e.name) ? [] : sources(path);
    return path.endsWith('.ts') ? [path] : [];
  });
}

describe('the README as a course', () => {
  it('names in its reading order only files that exist', () => {
    const files = linked(course);
    assert.ok(files.length >= 15, `the reading order names ${files.length} files`);
    for (const file of files) assert.ok(existsSync(join(ROOT, file)), `${file} is in the reading order but not in the repository`);
  });

  const level1 = course.slice(course.indexOf('**Level 1'), course.indexOf('**Level 2'));
  const level1Files = linked(level1);
  const plumbing = linked(course.slice(course.indexOf('**The plumbing**'), course.indexOf('\n\n', course.indexOf('**The plumbing**'))));
  const entries = ['ch_client.ts', 'server.ts'];
  const importsOf = (file: string) =>
    [...readFileSync(join(ROOT, file), 'utf8').matchAll(/^import [^;]*? from '(\.[^']+)'/gm)].map(([, spec]) => join(file, '..', spec!).replace(/^\.\//, ''));

  it('keeps level 1 within the line count it states, and that count at most 600', () => {
    const stated = Number(/(\d+) lines in/.exec(level1)?.[1]);
    const total = level1Files.reduce((sum, f) => sum + lines(f), 0);
    assert.ok(total <= stated, `level 1 (${level1Files.join(', ')}) is ${total} lines; the README says ${stated}`);
    assert.ok(stated <= 600, `level 1 should read in one sitting: at most 600 lines, not ${stated}`);
    assert.deepEqual(entries.filter((f) => !level1Files.includes(f)), [], 'both entry points are level 1');
  });

  it("has level 1's inner files import only each other and the plumbing the README names", () => {
    for (const file of level1Files.filter((f) => f.endsWith('.ts') && !entries.includes(f))) {
      for (const target of importsOf(file)) assert.ok(level1Files.includes(target) || plumbing.includes(target), `${file} imports ${target}, which is neither level 1 nor its plumbing`);
    }
  });

  it('has each entry point join the later levels at one seam: at most two imports from them', () => {
    for (const file of entries) {
      const later = importsOf(file).filter((t) => !level1Files.includes(t) && !plumbing.includes(t));
      assert.ok(later.length <= 2, `${file} imports ${later.length} files of later levels: ${later.join(', ')}`);
    }
  });

  it("holds no later level's words in level 1's inner files", () => {
    const words = /\b(decide|during|epoch|standby|fence|incoming|tombstone|asking|placement)\b/i;
    for (const file of level1Files.filter((f) => !entries.includes(f))) {
      const hit = readFileSync(join(ROOT, file), 'utf8').split('\n').findIndex((line) => words.test(line));
      assert.equal(hit, -1, `${file}:${hit + 1} names a later level's idea: ${words.exec(readFileSync(join(ROOT, file), 'utf8').split('\n')[hit] ?? '')?.[0]}`);
    }
  });

  it('keeps server.ts a table of contents, and no file over a fifth of the code', () => {
    assert.ok(lines('server.ts') <= 200, `server.ts is ${lines('server.ts')} lines`);
    const all = sources().map((f) => [f, lines(f)] as const);
    const total = all.reduce((sum, [, n]) => sum + n, 0);
    for (const [file, n] of all) assert.ok(n <= total / 5, `${file} holds ${n} of ${total} lines`);
  });

  it('has no import that runs back up the house', () => {
    for (const file of sources()) {
      const from = floorOf(file);
      assert.notEqual(from, undefined, `${file} is in no room of the house (test/level-1/course.test.ts FLOORS)`);
      for (const [, spec] of readFileSync(join(ROOT, file), 'utf8').matchAll(/^import [^;]*? from '(\.[^']+)'/gm)) {
        const target = join(file, '..', spec!).replace(/^\.\//, '');
        if (target.startsWith('test/')) continue; // the benchmarks start shards as the tests do
        assert.ok(floorOf(target)! <= from!, `${file} (floor ${from}) imports ${target} (floor ${floorOf(target)})`);
      }
    }
  });
});
