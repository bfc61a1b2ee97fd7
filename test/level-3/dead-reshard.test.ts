// Two operators finishing one dead reshard, on real processes (api/cluster-map.ts,
// rules 10 and 11): one finishes it, the other reverses it, from two machines,
// and the gates (test/gate.ts) make their takes meet. Each builds its map from
// the dead reshard's, whose two rings list the nodes in opposite orders; both
// must still meet at that map's lock node, so that exactly one passes: it
// finishes (exit 0), the other changes nothing and says so.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startCluster, type Cluster } from '../cluster.ts';

describe('two operators finishing one dead reshard', () => {
  let cluster: Cluster;

  before(async () => {
    cluster = await startCluster({ count: 2, ring: 2, replicas: 1, ids: 300 });
  });
  after(async () => {
    for (const g of cluster?.gates ?? []) g.release();
    await Promise.all([cluster?.a.idle(), cluster?.b.idle()]);
    await cluster?.stop();
  });

  it('meet at one lock node: one finishes and exits 0, the other changes nothing, and check exits 0', async () => {
    const { gates, a, b } = cluster;
    const [g1, g2] = gates.map((g) => g.node) as [string, string];
    const nodes = `${g1},${g2}`;
    // The dead reshard: its ring to come lists g2 first; killed at its first copy.
    await a.killedAt(['reshard', '--nodes', nodes, '--to', `${g2},${g1}`, '--replicas', '100'], gates, (method, path) => method === 'PUT' && path.endsWith('/copy'));

    // Whose map a PUT carries: the forward one moves to replicas 100, the reverse one to replicas 1.
    const movingTo = (replicas: number) => (body: string) => new RegExp(`"moving":\\{"nodes":\\[[^\\]]*\\],"replicas":${replicas},`).test(body);
    const [forward, reverse] = [movingTo(100), movingTo(1)];
    // The reverse (on b) reads the dead reshard's map, and is held at its first PUT at g1.
    gates[0]!.hold((method, path, body) => method === 'PUT' && path === '/cluster/map' && reverse(body));
    const reversing = b.start(['reshard', '--nodes', nodes, '--to', `${g1},${g2}`, '--replicas', '1']);
    await gates[0]!.held(1);
    // The forward (on a) takes the cluster, and is held at its second PUT at g2 (the first is its probe).
    let seen = 0;
    gates[1]!.hold((method, path, body) => method === 'PUT' && path === '/cluster/map' && forward(body) && ++seen === 2);
    const finishing = a.start(['reshard', '--nodes', nodes, '--to', `${g2},${g1}`, '--replicas', '100']);
    await gates[1]!.held(1);
    // The reverse goes on and ends; then the forward.
    gates[0]!.release();
    const rev = await reversing.exited;
    gates[1]!.release();
    const fwd = await finishing.exited;

    assert.equal(fwd.code, 0, `the forward run:\n${fwd.stdout}${fwd.stderr}\nthe reverse run:\n${rev.stdout}${rev.stderr}`);
    assert.match(fwd.stdout, /^taking over the unfinished reshard of pid \d+ .*\(no longer running\)$/m);
    assert.match(fwd.stdout, /^the cluster is at epoch \d+: 2 nodes, replicas 100$/m);
    assert.equal(rev.code, 1, rev.stdout + rev.stderr);
    assert.match(rev.stderr, /^refusing: pid \d+ on \S+, started \S+, is moving the cluster to \S+ \(\S+ is at epoch \d+\)\. Nothing was changed\.$/m);
    const read = await a.client(['--nodes', nodes, '--ids', '1-300']);
    assert.equal(read.code, 0, read.stdout + read.stderr);
    const check = await a.client(['check', '--nodes', nodes]);
    assert.equal(check.code, 0, check.stdout + check.stderr);
  });
});
