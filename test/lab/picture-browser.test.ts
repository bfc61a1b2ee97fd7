// The ring's picture in a real browser: headless Chromium lays out every
// text, and a script in the page measures each with getBBox(). No text may
// leave the canvas, and no two may overlap. Then the colours: every pair of
// node colours must stay apart for colour-blind eyes.

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PALETTE } from '../../lab/ring-svg.ts';
import { run, runNode } from '../shards.ts';

let dir: string;
let chromium: string | undefined;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'chs-browser-'));
  for (const name of ['chromium', 'chromium-browser']) if ((await run('sh', ['-c', `command -v ${name}`])).code === 0) chromium ??= name;
});
after(async () => {
  // Chromium's helper processes may still write its profile after the browser exits: retried on ENOTEMPTY.
  await rm(dir, { recursive: true, force: true, maxRetries: 10 });
});

const TEN = ['127.0.0.1:3000', '127.0.0.1:4000', '127.0.0.1:5000', '127.0.0.1:6001', '127.0.0.1:7000', '127.0.0.1:8000', '127.0.0.1:9000', '127.0.0.1:10000', '127.0.0.1:11000', '127.0.0.1:12000'];
const LONG = ['db-primary-eu-west-1a.shards.internal:3306', 'db-replica-eu-west-1b.shards.internal:3306'];
const TWENTY_SIX = Array.from({ length: 26 }, (_, i) => `10.0.${i >> 3}.${i}:8080`);
const pictures: Array<[string, string[]]> = [
  ['3 x 1, ids 0-9', ['--ids', '0-9']],
  ['3 x 100, ids 0-99', ['--replicas', '100', '--ids', '0-99']],
  ['10 x 1, ids 0-99', ['--nodes', TEN.join(','), '--ids', '0-99']],
  ['10 x 100, ids 0-999', ['--nodes', TEN.join(','), '--replicas', '100', '--ids', '0-999']],
  ['2 nodes with 40-character names x 10', ['--nodes', LONG.join(','), '--replicas', '10']],
  ['1 node', ['--nodes', '127.0.0.1:3000']],
  ['26 nodes x 1', ['--nodes', TWENTY_SIX.join(',')]],
];

// Runs in the page: every text's box in the SVG's own units, and what is wrong with them.
const MEASURE = `
const svg = document.querySelector('svg');
const [w, h] = [svg.viewBox.baseVal.width, svg.viewBox.baseVal.height];
const boxes = [...svg.querySelectorAll('text')].map((t) => ({ text: t.textContent, box: t.getBBox() }));
const problems = [];
for (const { text, box } of boxes) {
  if (box.x < 0 || box.y < 0 || box.x + box.width > w || box.y + box.height > h) problems.push('outside the canvas: ' + text);
}
for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
  const [a, b] = [boxes[i].box, boxes[j].box];
  const slack = 0.5;
  if (a.x + slack < b.x + b.width && b.x + slack < a.x + a.width && a.y + slack < b.y + b.height && b.y + slack < a.y + a.height) problems.push('overlap: ' + boxes[i].text + ' / ' + boxes[j].text);
}
document.getElementById('result').textContent = JSON.stringify({ texts: boxes.length, problems });
`;

describe('the ring picture in Chromium', () => {
  for (const [name, args] of pictures) {
    it(`keeps every text inside the canvas and apart from every other: ${name}`, async (t) => {
      if (chromium === undefined) return t.skip('Chromium is not installed (Debian: apt-get install chromium)');
      const svgFile = join(dir, 'ring.svg');
      const drawn = await runNode(['ch_client.ts', 'map', '--svg', svgFile, ...args]);
      assert.equal(drawn.code, 0, drawn.stderr);
      const page = join(dir, 'page.html');
      await writeFile(page, `<!doctype html><meta charset="utf-8"><body style="margin:0">${await readFile(svgFile, 'utf8')}<pre id="result">not measured</pre><script>${MEASURE}</script>`);
      const res = await run(chromium, [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', `--user-data-dir=${join(dir, 'profile')}`, '--dump-dom', `file://${page}`,
      ]);
      const result = /<pre id="result">(.*?)<\/pre>/s.exec(res.stdout)?.[1];
      assert.ok(result !== undefined && result !== 'not measured', `the page did not measure: ${res.stderr.slice(0, 500)}`);
      const { texts, problems } = JSON.parse(result.replace(/&quot;/g, '"').replace(/&amp;/g, '&').replace(/&lt;/g, '<').replace(/&gt;/g, '>'));
      assert.ok(texts > 3, `${texts} texts measured`);
      assert.deepEqual(problems, []);
    });
  }
});

// Machado, Oliveira and Fernandes (2009): how protanopia and deuteranopia
// (severity 1) see a colour, as a matrix on linear RGB.
const SIMULATIONS: Record<string, number[][]> = {
  protanopia: [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
  deuteranopia: [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.01182, 0.04294, 0.968881]],
  'normal vision': [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
};

/** CIELAB of a colour (#rrggbb) as seen through a simulation matrix. */
function lab(hex: string, m: number[][]): number[] {
  const linear = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255).map((c) => (c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4));
  const [r, g, b] = m.map((row) => Math.min(1, Math.max(0, row[0]! * linear[0]! + row[1]! * linear[1]! + row[2]! * linear[2]!)));
  const xyz = [0.4124 * r! + 0.3576 * g! + 0.1805 * b!, 0.2126 * r! + 0.7152 * g! + 0.0722 * b!, 0.0193 * r! + 0.1192 * g! + 0.9505 * b!];
  const [fx, fy, fz] = [xyz[0]! / 0.95047, xyz[1]!, xyz[2]! / 1.08883].map((v) => (v > 216 / 24389 ? Math.cbrt(v) : (24389 / 27 * v + 16) / 116));
  return [116 * fy! - 16, 500 * (fx! - fy!), 200 * (fy! - fz!)];
}

describe('the ring picture for every eye', () => {
  // ΔE (CIE 1976) of 2.3 is the smallest difference people notice side by
  // side; about 10 tells two colours apart at a glance. Dots of 5 pixels
  // need more: 15, which the Okabe-Ito palette keeps under both simulations
  // (its closest pair, orange and yellow under deuteranopia, is 17.0). The
  // old palette's red and green were 0.9 apart.
  const THRESHOLD = 15;
  for (const [vision, matrix] of Object.entries(SIMULATIONS)) {
    it(`keeps every pair of node colours at least ΔE ${THRESHOLD} apart under ${vision}`, () => {
      const close: string[] = [];
      for (let i = 0; i < PALETTE.length; i++) {
        for (let j = i + 1; j < PALETTE.length; j++) {
          const [a, b] = [lab(PALETTE[i]!, matrix), lab(PALETTE[j]!, matrix)];
          const distance = Math.hypot(a[0]! - b[0]!, a[1]! - b[1]!, a[2]! - b[2]!);
          if (distance < THRESHOLD) close.push(`${PALETTE[i]} and ${PALETTE[j]}: ${distance.toFixed(1)}`);
        }
      }
      assert.deepEqual(close, []);
    });
  }

  it('gives every node its own key letter, so repeated colours are told apart', async () => {
    const file = join(dir, 'keys.svg');
    assert.equal((await runNode(['ch_client.ts', 'map', '--svg', file, '--nodes', TWENTY_SIX.join(',')])).code, 0);
    const svg = await readFile(file, 'utf8');
    const keys = [...svg.matchAll(/<tspan font-weight="bold">([A-Z]+)<\/tspan>/g)].map((m) => m[1]);
    assert.equal(new Set(keys).size, 26);
    assert.match(svg, /Colours repeat past 8 nodes: the letters tell the nodes apart\./);
  });
});
