// bench/scale.ts: how cost grows with size, the point of a sharding design.
//
//   - the client's job (store, then read back) and a 3 -> 4 reshard, for
//     1,000, 10,000 and 100,000 records (100 points per node);
//   - the ring: building it, and one lookup, for 3, 30, 300 and 3,000 points per node.
//
// Each curve ends with one line: how its cost grows between the two largest
// sizes (see growth), where fixed costs such as a process's start matter least.
// It starts four throwaway shards and stops them at the end. Run: npm run bench:scale
// (about five minutes; BENCH_SIZES=1000,10000 for a shorter run).

import { hash } from 'node:crypto';
import { HashRing } from '../ring.ts';
import { runNode, startShards } from '../test/shards.ts';

const SIZES = (process.env.BENCH_SIZES ?? '1000,10000,100000').split(',').map(Number);
const REPLICAS = 100;

/**
 * How a cost grows: the exponent k in cost ∝ size^k between the two largest
 * sizes, where fixed costs such as a process's start matter least (1: linear;
 * near 0: flat, or logarithmic).
 */
function growth(points: Array<[number, number]>): string {
  const [[x1, y1], [x2, y2]] = [points.at(-2)!, points.at(-1)!];
  const k = Math.log(y2 / y1) / Math.log(x2 / x1);
  return `${k >= 0.8 ? 'linear' : k <= 0.2 ? 'flat' : 'sublinear'} (k = ${k.toFixed(2)} from ${x1} to ${x2})`;
}

/** Records per second between the two largest sizes: the rate at scale, without the fixed costs. */
const rate = (points: Array<[number, number]>) => {
  const [[x1, y1], [x2, y2]] = [points.at(-2)!, points.at(-1)!];
  return Math.round((x2 - x1) / (y2 - y1)).toLocaleString('en-US');
};

const seconds = async (fn: () => Promise<unknown>) => {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
};

const shards = await startShards(4);
try {
  const [three, four] = [shards.nodes.slice(0, 3), shards.nodes];
  const job: Array<[number, number]> = [];
  const reshard: Array<[number, number]> = [];
  console.log('records   the job: store + read back        reshard 3 -> 4 (moves, then an audit)');
  let done = 0;
  for (const size of SIZES) {
    // Fresh ids for each size, on three nodes; then the whole cluster moves to four, and back.
    const ids = `${done}-${done + size - 1}`;
    done += size;
    const stored = await seconds(async () => {
      const res = await runNode(['ch_client.ts', '--nodes', three.join(','), '--replicas', String(REPLICAS), '--ids', ids]);
      if (res.code !== 0) throw new Error(res.stderr);
    });
    let moved = 0;
    const state = `${shards.dir}/reshard.json`;
    const took = await seconds(async () => {
      const res = await runNode(['ch_client.ts', 'reshard', '--from', three.join(','), '--to', four.join(','), '--replicas', String(REPLICAS), '--state', state]);
      if (res.code !== 0) throw new Error(res.stderr);
      moved = Number(/moved (\d+)/.exec(res.stdout)![1]);
    });
    const back = await runNode(['ch_client.ts', 'reshard', '--from', four.join(','), '--to', three.join(','), '--replicas', String(REPLICAS), '--state', state]);
    if (back.code !== 0) throw new Error(back.stderr);
    job.push([size, stored]);
    reshard.push([done, took]);
    console.log(
      `${String(size).padStart(7)}   ${stored.toFixed(1).padStart(6)} s, ${Math.round(size / stored).toString().padStart(5)} records/s` +
        `       ${took.toFixed(1).padStart(6)} s for ${done} records, ${moved} moved: ${Math.round(moved / took)} moves/s`,
    );
  }
  console.log(`\njob: ${rate(job)} records/s at scale, ${growth(job)}`);
  console.log(`reshard: ${rate(reshard)} records held/s at scale, ${growth(reshard)}`);

  console.log('\npoints/node   build (3 nodes)   one lookup');
  const builds: Array<[number, number]> = [];
  const lookups: Array<[number, number]> = [];
  const keys = Array.from({ length: 200_000 }, (_, i) => `key-${i}`);
  // Results go into a sink, so that V8 cannot drop the work as unused.
  let sink = 0;
  for (const replicas of [3, 30, 300, 3000]) {
    const nodes = ['127.0.0.1:3000', '127.0.0.1:4000', '127.0.0.1:5000'];
    let build = Infinity;
    let lookup = Infinity;
    for (let round = 0; round < 3; round++) {
      let start = performance.now();
      const ring = new HashRing(nodes, replicas);
      build = Math.min(build, performance.now() - start);
      start = performance.now();
      for (const key of keys) sink += ring.get(key).length;
      lookup = Math.min(lookup, (performance.now() - start) / keys.length);
    }
    builds.push([replicas, build]);
    lookups.push([replicas, lookup]);
    console.log(`${String(replicas).padStart(11)}   ${build.toFixed(2).padStart(9)} ms   ${(lookup * 1000).toFixed(2).padStart(7)} µs`);
  }
  const md5 = await seconds(async () => {
    for (const key of keys) sink += hash('md5', key).length;
  });
  console.log(`(a bare MD5 of a key takes ${((md5 / keys.length) * 1e6).toFixed(2)} µs)`);
  console.log(`\nring build: ${growth(builds)} points per node; lookup: ${growth(lookups)}`);
  // Every lookup and hash adds a length above 0: a sink of 0 means the loops measured nothing.
  if (sink === 0) throw new Error('the timed loops did no work');
} finally {
  await shards.stop();
}
