// The live page (page/) in a real headless Chromium, on real shards: it draws
// 3- and 20-node rings with no text over another, shows a reshard as it runs
// with its progress, changes epoch within a second of the reshard's end,
// answers the id box as ring.ts does, shows a failover's new address, and
// says nothing on the console.

import assert from 'node:assert/strict';
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HashRing } from '../../ring.ts';
import { chromium, startBrowser, type Browser, type Page } from '../browser.ts';
import { api, startCluster, type Cluster } from '../cluster.ts';
import { freePorts, runNode, startShardPairs, startShards, type Shards } from '../shards.ts';

let dir: string;
let browser: Browser | undefined;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'chs-page-'));
  const command = await chromium();
  if (command !== undefined) browser = await startBrowser(command, dir);
});
after(async () => {
  await browser?.close();
  // Chromium's helper processes may still write its profile after the browser exits: retried on ENOTEMPTY.
  await rm(dir, { recursive: true, force: true, maxRetries: 10 });
});

// In the page: every text of the ring's picture in the SVG's own units, and what is wrong with them (as test/lab/picture-browser.test.ts).
const MEASURE = `(() => {
  const svg = document.querySelector('#ring svg');
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
  return { texts: boxes.length, problems };
})()`;

const row = (node: string, cell: string) => `document.querySelector('tr[data-node="${node}"] .${cell}')?.textContent`;
const epochShown = `Number(document.body.dataset.epoch)`;

/** Types an id into the box: the owner the page names, once the answer and the walk drawn are both for it. */
async function ask(page: Page, id: string): Promise<{ owner: string; walk: string }> {
  await page.eval(`(() => { const box = document.getElementById('id'); box.value = ${JSON.stringify(id)}; box.dispatchEvent(new Event('input')); })()`);
  await page.until(`the answer for ${id}`, `document.getElementById('answer').dataset.id === ${JSON.stringify(id)} && document.getElementById('ring').dataset.id === ${JSON.stringify(id)}`);
  return page.eval(`({ owner: document.getElementById('answer').dataset.owner, walk: document.querySelector('#ring .walk')?.dataset.node })`);
}

describe('the live page: 20 nodes', () => {
  let shards: Shards;
  before(async () => {
    if (browser !== undefined) shards = await startShards(1, { map: false });
  });
  after(() => shards?.stop());

  it('draws a 20-node ring with every text apart, and says which nodes answer', async (t) => {
    if (browser === undefined) return t.skip('Chromium is not installed (Debian: apt-get install chromium)');
    // One real shard; nineteen names where nothing listens, as a map may name nodes that are down.
    const node = shards.nodes[0]!;
    const base = await freePorts(19);
    const shard = (await api(node, 'GET', '/healthz')).body.shard;
    const nodes = [{ name: node, shard }, ...Array.from({ length: 19 }, (_, i) => ({ name: `127.0.0.1:${base + i}`, shard: `gone-${i}` }))];
    const secret = (await readFile(shards.secretFile, 'utf8')).trim();
    const put = await api(node, 'PUT', '/cluster/map', { epoch: 1, nodes, replicas: 1 }, { authorization: `Bearer ${secret}`, 'if-none-match': '*' });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    const page = await browser.open(`http://${node}/`);
    await page.until('the ring and 20 nodes', `document.querySelector('#ring svg') && document.querySelectorAll('#nodes tbody tr').length === 20`);
    const { texts, problems } = await page.eval<{ texts: number; problems: string[] }>(MEASURE);
    assert.ok(texts > 40, `${texts} texts measured`);
    assert.deepEqual(problems, []);
    await page.until('which nodes answer', `${row(node, 'answers')} === 'yes' && ${row(nodes[1]!.name, 'answers')}?.startsWith('no')`, 10_000);
    assert.deepEqual(page.errors, []);
  });
});

describe('the live page: a reshard from 3 nodes to 4, and the id box', () => {
  let cluster: Cluster;
  let page: Page;
  const REPLICAS = 4;
  const IDS = 300;
  let three: string[];
  let four: string[];
  before(async () => {
    if (browser === undefined) return;
    cluster = await startCluster({ count: 4, ring: 3, replicas: REPLICAS, ids: IDS });
    four = cluster.gates.map((g) => g.node);
    three = four.slice(0, 3);
  });
  after(async () => {
    for (const gate of cluster?.gates ?? []) gate.release();
    await cluster?.a.idle();
    await cluster?.stop();
  });

  it('draws the 3-node ring of the map with every text apart', async (t) => {
    if (browser === undefined) return t.skip('Chromium is not installed');
    const { map } = (await api(three[0]!, 'GET', '/cluster/map')).body;
    page = await browser.open(`http://${three[0]}/`);
    await page.until(`epoch ${map.epoch} and its ring`, `${epochShown} === ${map.epoch} && document.getElementById('ring').dataset.epoch === '${map.epoch}'`);
    const { texts, problems } = await page.eval<{ texts: number; problems: string[] }>(MEASURE);
    assert.ok(texts > 5, `${texts} texts measured`);
    assert.deepEqual(problems, []);
    await page.until('every node answering', three.map((n) => `${row(n, 'answers')} === 'yes'`).join(' && '), 10_000);
    // What the page reads carries no secret: not the cluster secret, not even the map's MAC under it.
    const secret = (await readFile(cluster.shards.secretFile, 'utf8')).trim();
    assert.ok(map.mac !== undefined, 'the map the reshard put is signed');
    const read = JSON.stringify((await api(three[0]!, 'GET', '/cluster/live')).body);
    assert.ok(!read.includes(map.mac) && !read.includes(secret), 'GET /cluster/live shows a secret');
  });

  it('shows the reshard as it runs: the arcs that change owner, and the records moved of the total', async (t) => {
    if (browser === undefined) return t.skip('Chromium is not installed');
    // The moves are held where the new node adopts its copies: originals handed off, none adopted.
    cluster.gates[3]!.hold((method, path) => method === 'POST' && path.endsWith('/adopt'));
    const run = cluster.a.start(['reshard', '--nodes', three.join(','), '--to', four.join(','), '--replicas', String(REPLICAS)]);
    const held = (await cluster.gates[3]!.held(1)).length;
    const [before, after] = [new HashRing(three, REPLICAS), new HashRing(four, REPLICAS)];
    const moving = Array.from({ length: IDS }, (_, i) => String(i + 1)).filter((id) => before.get(id) !== after.get(id)).length;
    await page.until('the reshard', `!document.getElementById('reshard').hidden && document.querySelector('#ring .moving')`, 5_000);
    await page.until(`the total of ${moving} records to move`, `document.getElementById('progress-text').dataset.total === '${moving}' && Number(document.getElementById('progress-text').dataset.moved) >= ${held}`, 5_000);
    const arcs = await page.eval<string[]>(`[...document.querySelectorAll('#ring .moving')].map((a) => a.dataset.to)`);
    assert.ok(arcs.length > 0 && arcs.every((to) => to === four[3]), `arcs change owner to ${arcs.join(', ')}`);
    assert.equal(await page.eval(row(four[3]!, 'answers')), 'yes');
    const shot = join(dir, 'reshard.png');
    await page.screenshot(shot);
    if (process.env.PAGE_SCREENSHOT !== undefined) await copyFile(shot, process.env.PAGE_SCREENSHOT);

    // The end: the time from the shard holding the map with no reshard to the page showing its epoch.
    const movingEpoch = await page.eval<number>(epochShown);
    cluster.gates[3]!.release();
    let ended: { epoch: number; at: number } | undefined;
    const watching = (async () => {
      while (ended === undefined) {
        const { map } = (await api(three[0]!, 'GET', '/cluster/map')).body;
        if (map.epoch > movingEpoch && map.moving === undefined) ended = { epoch: map.epoch, at: performance.now() };
        else await new Promise((r) => setTimeout(r, 10));
      }
    })();
    await page.until('a later epoch', `${epochShown} > ${movingEpoch} && document.getElementById('reshard').hidden`, 60_000);
    const shown = performance.now();
    await watching;
    const done = await run.exited;
    assert.equal(done.code, 0, done.stdout + done.stderr);
    assert.equal(await page.eval(epochShown), ended!.epoch);
    const lag = shown - ended!.at;
    console.log(`the page showed epoch ${ended!.epoch} ${lag.toFixed(0)} ms after its shard held it`);
    assert.ok(lag < 1000, `the page took ${lag.toFixed(0)} ms`);
  });

  it('answers the id box as ring.ts does, for 100 ids, and draws each one walking to that owner', async (t) => {
    if (browser === undefined) return t.skip('Chromium is not installed');
    const { map } = (await api(three[0]!, 'GET', '/cluster/map')).body;
    const ring = new HashRing(map.nodes.map((n: { name: string }) => n.name), map.replicas);
    const ids = Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? String(i * 7919) : `user-${i}.x`));
    const wrong: string[] = [];
    for (const id of ids) {
      const { owner, walk } = await ask(page, id);
      if (owner !== ring.get(id) || walk !== ring.get(id)) wrong.push(`${id}: page ${owner}, walk to ${walk}, ring.ts ${ring.get(id)}`);
    }
    assert.deepEqual(wrong, []);
    assert.deepEqual(page.errors, []);
  });
});

describe('the live page: a failover', () => {
  let pairs: Awaited<ReturnType<typeof startShardPairs>>;
  before(async () => {
    if (browser !== undefined) pairs = await startShardPairs(2);
  });
  after(() => pairs?.stop());

  it("shows the node's new address, answering as the primary, once the failover has put the map", async (t) => {
    if (browser === undefined) return t.skip('Chromium is not installed');
    const [node, other, standby] = [pairs.nodeOf(1), pairs.nodeOf(2), pairs.standbyOf(1)];
    const page = await browser.open(`http://${other}/`);
    await page.until('both nodes answering', `${row(node, 'answers')} === 'yes' && ${row(other, 'answers')} === 'yes'`, 10_000);
    const seeds = [node, other, standby, pairs.standbyOf(2)].join(',');
    const res = await runNode(['ch_client.ts', 'failover', node, '--to', standby, '--nodes', seeds, '--secret-file', join(pairs.dir, 'cluster-secret')]);
    assert.equal(res.code, 0, res.stdout + res.stderr);
    const moved = await page.until(`${node} at ${standby}`, `${row(node, 'address')} === '${standby}'`, 5_000);
    const answers = await page.until(`${standby} answering as the primary`, `${row(node, 'answers')} === 'yes' && ${row(node, 'role')} === 'primary'`, 5_000);
    console.log(`the page showed the new address ${moved.toFixed(0)} ms after the failover command ended, and it answering ${(moved + answers).toFixed(0)} ms after`);
    assert.ok(moved < 1000, `the page took ${moved.toFixed(0)} ms`);
    assert.deepEqual(page.errors, []);
  });
});
