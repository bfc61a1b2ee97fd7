// Map changes that meet, on real processes (api/cluster-map.ts, rules 10-13;
// operator/maps.ts): two shards, each with a standby (SHARDS_STANDBY=1), each
// machine behind a gate (test/gate.ts), so that the test decides where each
// command stands when the other runs.
//
//   (e) After a failover, a reshard to a new node set exits 0: the new ring's
//       nodes keep the addresses the failover gave them.
//   (f) A failover racing a reshard's end: the end has passed one node and is
//       held at the next; the failover reads, fences, promotes and is held at
//       its first map; then the end goes on, then the failover. Both exit 0,
//       every node holds one map, and check exits 0, with no rerun.
//   (g) The machine behind a node dies: check says which, and prints the
//       failover to its standby, with its address.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startGate, type Gate } from '../gate.ts';
import { run, runNode, startShardPairs, waitForExit } from '../shards.ts';

type Pairs = Awaited<ReturnType<typeof startShardPairs>>;

describe('map changes that meet', () => {
  let pairs: Pairs;
  let gates: Gate[]; // shard 1's primary, shard 2's primary, shard 1's standby, shard 2's standby
  let secret: string;
  const client = (...args: string[]) => runNode(['ch_client.ts', ...args, '--secret-file', secret]);
  const mapOf = async (address: string) => (await (await fetch(`http://${address}/cluster/map`)).json()).map;

  before(async () => {
    // The gates open first, so that the servers start knowing them as names of their own (CLUSTER_ANNOUNCE, api/signing.ts N4).
    const machines = [(p: Pairs) => p.nodeOf(1), (p: Pairs) => p.nodeOf(2), (p: Pairs) => p.standbyOf(1), (p: Pairs) => p.standbyOf(2)];
    gates = await Promise.all(machines.map((of) => startGate(() => of(pairs))));
    pairs = await startShardPairs(2, { map: false, env: { CLUSTER_ANNOUNCE: gates.map((g) => g.node).join(',') } });
    secret = join(pairs.dir, 'cluster-secret');
  });
  after(async () => {
    await Promise.all((gates ?? []).map((g) => g.close()));
    await pairs?.stop();
  });

  it('(e) after a failover, a reshard to a new node set exits 0, and check exits 0', async () => {
    const [g1, g2, , s2] = gates.map((g) => g.node) as [string, string, string, string];
    const first = await client('reshard', '--nodes', `${g1},${g2}`, '--to', `${g1},${g2}`, '--replicas', '1');
    assert.equal(first.code, 0, first.stdout + first.stderr);
    const stored = await runNode(['ch_client.ts', '--nodes', `${g1},${g2}`, '--ids', '1-300']);
    assert.equal(stored.code, 0, stored.stderr);
    const failed = await client('failover', g2, '--to', s2, '--nodes', `${g1},${g2}`);
    assert.equal(failed.code, 0, failed.stdout + failed.stderr);
    // The new node set: g2 alone, at its standby's address; g1's records move to it.
    const resharded = await client('reshard', '--nodes', `${g1},${g2}`, '--to', g2);
    assert.equal(resharded.code, 0, resharded.stdout + resharded.stderr);
    assert.match(resharded.stdout, /^the cluster is at epoch \d+: 1 node, replicas 1$/m);
    const map = await mapOf(s2);
    assert.deepEqual(map.nodes.map((n: { name: string; address?: string }) => [n.name, n.address]), [[g2, s2]]);
    const read = await runNode(['ch_client.ts', '--nodes', g2, '--ids', '1-300']);
    assert.equal(read.code, 0, read.stdout + read.stderr);
    const check = await client('check', '--nodes', g2);
    assert.equal(check.code, 0, check.stdout + check.stderr);
    // A reader that closes the pipe early: check goes on to its own exit code, with no EPIPE.
    const piped = await run('bash', ['-c', `"$0" ch_client.ts check --nodes ${g2} --secret-file "$1" | head -1; echo "check exited $\{PIPESTATUS[0]}"`, process.execPath, secret]);
    assert.match(piped.stdout, /^check: 300 records on 1 nodes, .*\ncheck exited 0\n$/, piped.stdout + piped.stderr);
    assert.doesNotMatch(piped.stderr, /EPIPE/);
  });

  it('(f) a failover racing a reshard\'s end: both exit 0, one map on every node, and check exits 0', async () => {
    const [g1, g2, s1, s2] = gates.map((g) => g.node) as [string, string, string, string];
    const back = await client('reshard', '--nodes', g2, '--to', `${g1},${g2}`);
    assert.equal(back.code, 0, back.stdout + back.stderr);

    // The reshard that removes g2: its end map (the one without "moving") is held at g2's address, its standby's gate since (e).
    const isEnd = (method: string, path: string, body: string) => method === 'PUT' && path === '/cluster/map' && !body.includes('"moving"');
    gates[3]!.hold(isEnd);
    const resharding = client('reshard', '--nodes', `${g1},${g2}`, '--to', g1);
    await gates[3]!.held(1);
    // The failover of g1 to its standby, held at its first map, after its fence and promote.
    gates[2]!.hold((method, path) => method === 'PUT' && path === '/cluster/map');
    const failing = client('failover', g1, '--to', s1, '--nodes', `${g1},${g2}`);
    await gates[2]!.held(1);
    // The end goes on, then the failover.
    gates[3]!.release();
    const ended = await Promise.race([resharding, new Promise<undefined>((r) => setTimeout(r, 15_000))]);
    gates[2]!.release();
    const [res, fo] = await Promise.all([resharding, failing]);
    assert.equal(res.code, 0, `the reshard${ended === undefined ? ' (still running 15 s after its end was let go)' : ''}:\n${res.stdout}${res.stderr}`);
    assert.equal(fo.code, 0, `the failover:\n${fo.stdout}${fo.stderr}`);

    // The ring's one node holds the failover's map, built on the reshard's end; g2, outside the ring, holds no newer one.
    const [ring, removed] = await Promise.all([s1, s2].map(mapOf));
    assert.deepEqual(ring.nodes.map((n: { name: string; address?: string }) => [n.name, n.address]), [[g1, s1]]);
    assert.equal(ring.moving, undefined);
    assert.ok(removed.epoch <= ring.epoch && removed.moving === undefined, JSON.stringify(removed));
    const read = await runNode(['ch_client.ts', '--nodes', g1, '--ids', '1-300']);
    assert.equal(read.code, 0, read.stdout + read.stderr);
    const check = await client('check', '--nodes', g1);
    assert.equal(check.code, 0, check.stdout + check.stderr);
    console.log(`(f) reshard:\n${res.stdout}${res.stderr}\nfailover:\n${fo.stdout}${fo.stderr}`);
  });

  it('(g) during an outage, check names the machine that is gone, counts nothing as 0, and prints the failover to its standby', async () => {
    const [g1, , s1] = gates.map((g) => g.node) as [string, string, string];
    // Since (f), g1 answers at its standby's machine; the old primary follows it. The machine that serves g1 dies.
    const server = await pairs.pid(1, 'standby', 'server.pid');
    process.kill(server, 'SIGKILL');
    await waitForExit(server);
    const check = await client('check', '--nodes', `${g1},${pairs.nodeOf(1)}`);
    assert.equal(check.code, 1, check.stdout + check.stderr);
    const at = (s: string) => s.replace(/\./g, '\\.');
    assert.match(check.stderr, new RegExp(`^DOWN shard \\S+ \\(${at(g1)} at ${at(s1)}\\): its machine does not answer \\(.+\\); its records are not counted`, 'm'));
    assert.match(check.stderr, new RegExp(`^  its standby ${at(pairs.nodeOf(1))} answers as shard \\S+: make it the primary with: node ch_client\\.ts failover ${at(g1)} --to ${at(pairs.nodeOf(1))} --nodes ${at(g1)}$`, 'm'));
    assert.match(check.stdout, new RegExp(`^check: 0 records on 0 nodes, .*\\(1 node of 1 could not be counted: ${at(g1)}; their records are not in these numbers\\)$`, 'm'));
    assert.doesNotMatch(check.stderr, /run the reshard again/);
  });
});
