// mysql/pair-status.ts: one shard's lines of `./start-shards.sh status`
// (through `node mysql/pair.ts status`): each machine's role and
// replication, read from its MySQL and its server's /healthz, and a WARNING
// with the command to run. It reads; it changes nothing.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dirOf, HOST, http, httpPorts, index, machines, mysqlPorts, on, others, pids, recordFile, shard, shardDir } from './pair-layout.ts';
import { recordedPrimary, type Machine } from './primary-record.ts';
import { state, type State } from './replication.ts';

/** The lines of `status` for the shard's machines: each one's role and replication, and a WARNING with the command to run. */
export async function status(): Promise<void> {
  const pm = recordedPrimary(recordFile);
  // The shard's line: the address its server was started on.
  const port = existsSync(join(shardDir, 'port')) ? readFileSync(join(shardDir, 'port'), 'utf8').trim() : String(httpPorts[0]);
  const state_ = (await health(`http://${HOST}:${port}`)).replace(/^http-.*/, 'down');
  console.log(`shard ${shard}  http://${HOST}:${port}  ${state_.padEnd(8)}  server pid ${pids[0]!.padEnd(7)}  mysql pid ${pids[1]!.padEnd(7)}  ${shardDir}`);
  if (machines.length === 1) return;
  const width = Math.max(...machines.map((m) => m.length));
  const primaryMysql = `${HOST}:${mysqlPorts[index(pm)]}`;
  const warn: string[] = [];
  const down: Machine[] = [];
  const serving: Machine[] = []; // standbys that replicate from the primary
  for (const m of machines) {
    const [server, mysqld] = [pids[index(m) * 2] ?? '-', pids[index(m) * 2 + 1] ?? '-'];
    const head = `  ${m.padEnd(width)}  http://${http(m)}  ${(await health(`http://${http(m)}`)).padEnd(8)}  server pid ${server.padEnd(7)}  mysql pid ${mysqld.padEnd(7)}`;
    const s: State | undefined = mysqld === '-' ? undefined : await on(m, state).catch(() => undefined);
    if (s === undefined) {
      console.log(`${head}  mysql down`);
      down.push(m);
      continue;
    }
    let role: string;
    if (s.follows !== null) {
      const f = s.follows;
      role = `follows ${f.master}  Slave_IO_Running ${f.io}  Slave_SQL_Running ${f.sql}  Gtid_IO_Pos ${f.gtid_io_pos || 'none'}  gtid_slave_pos ${s.gtid_slave_pos}`;
      if (f.io !== 'Yes' || f.sql !== 'Yes') warn.push(`the ${m} does not replicate (IO ${f.io}, SQL ${f.sql}${f.error ? `: ${f.error}` : ''})`);
      else if (m !== pm && f.master !== primaryMysql) warn.push(`the ${m} follows ${f.master}, not the primary's ${primaryMysql}`);
      else if (m !== pm) serving.push(m);
    } else {
      const { Rpl_semi_sync_master_status: on_, Rpl_semi_sync_master_clients: clients, Rpl_semi_sync_master_wait_sessions: waiting } = s.semisync;
      role = `Rpl_semi_sync_master_status ${on_ ?? '?'}  Rpl_semi_sync_master_clients ${clients ?? '?'}${s.read_only ? '  (read-only: fenced)' : ''}`;
      if (m === pm) {
        if (!(Number(clients) >= 1)) warn.push(`no standby is connected to the ${m}`);
        if (Number(waiting ?? 0) > 0) warn.push(`${waiting} write(s) on the ${m} wait for a standby's ack`);
        if (on_ !== 'ON') warn.push(`semi-sync is off on the ${m}: acknowledged writes exist once`);
      } else warn.push(`the ${m} machine follows no primary (an old primary)`);
    }
    console.log(`${head}  mysql ${HOST}:${mysqlPorts[index(m)]}  read_only ${s.read_only ? 'ON' : 'OFF'}  gtid_binlog_pos ${s.gtid_binlog_pos || 'none'}  ${role}  ${dirOf(m)}`);
  }
  if (pm !== 'primary') console.log(`  shard ${shard}: the primary is the ${pm} machine since a failover (${recordFile})`);
  if (down.length === machines.length) return console.log(`  shard ${shard}: stopped; start it: ./start-shards.sh`);
  if (down.includes(pm)) {
    const to = others(pm).find((m) => !down.includes(m)) ?? others(pm)[0]!;
    return console.log(`  WARNING: shard ${shard}'s primary (${http(pm)}) is down. Start it again (./start-shards.sh), or if its machine is lost, promote a standby:
    node ch_client.ts failover ${HOST}:${httpPorts[0]} --to ${http(to)}`);
  }
  for (const m of others(pm).filter((o) => down.includes(o)).reverse()) warn.unshift(`the ${m}'s MySQL is down`);
  if (warn.length === 0) return;
  const standbyCount = others(pm).length;
  const runs = serving.length === 0 || standbyCount === 1 ? 'runs without its standby' : `runs with ${serving.length} of its ${standbyCount} standbys`;
  console.log(`  WARNING: shard ${shard} ${runs}: ${warn.join('; ')}. Make it a standby again: ./start-shards.sh rejoin ${shard}`);
}

/** A server's /healthz, as a word of the status line: up, degraded (503), down. */
async function health(url: string): Promise<string> {
  try {
    const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(5_000) });
    await res.arrayBuffer();
    return res.status === 200 ? 'up' : res.status === 503 ? 'degraded' : `http-${res.status}`;
  } catch {
    return 'down';
  }
}
