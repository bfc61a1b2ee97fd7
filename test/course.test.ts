// The README is a course: its reading order names files that exist, level 1
// stays within the line count it states, and no import runs back up the house.

import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ROOT } from './shards.ts';

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
  ['server.ts', 3],
  ['ch_client.ts', 3],
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

  it('keeps level 1 within the line count it states, and that count near 800', () => {
    const level1 = course.slice(course.indexOf('**Level 1'), course.indexOf('**Level 2'));
    const stated = Number(/(\d+) lines in/.exec(level1)?.[1]);
    const files = linked(level1).filter((f) => f.endsWith('.ts'));
    const total = files.reduce((sum, f) => sum + lines(f), 0);
    assert.ok(total <= stated, `level 1 (${files.join(', ')}) is ${total} lines; the README says ${stated}`);
    assert.ok(stated <= 850, `level 1 should read in one sitting: about 800 lines, not ${stated}`);
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
      assert.notEqual(from, undefined, `${file} is in no room of the house (test/course.test.ts FLOORS)`);
      for (const [, spec] of readFileSync(join(ROOT, file), 'utf8').matchAll(/^import [^;]*? from '(\.[^']+)'/gm)) {
        const target = join(file, '..', spec!).replace(/^\.\//, '');
        if (target.startsWith('test/')) continue; // the benchmarks start shards as the tests do
        assert.ok(floorOf(target)! <= from!, `${file} (floor ${from}) imports ${target} (floor ${floorOf(target)})`);
      }
    }
  });
});
