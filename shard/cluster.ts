// shard/cluster.ts: the cluster map as one shard holds it, and the one way it
// changes: at a higher epoch, and between requests, never during one
// (api/cluster-map.ts, rule 5). So every request is answered under exactly
// one map, start to finish, and a reshard that has installed a map knows that
// no request still runs under the one before. And never to a ring that drops
// a node unasked (rule 6).
//
// A read-only machine (a standby, or a fenced old primary) writes nothing,
// not even the forgetting of moved rows (rule 8), and keeps no map in memory:
// it reads the map its primary replicates to it at every request, so that it
// names the owner's current address, and notices at once when it is promoted.
//
// A stored map that cannot be read (corrupt JSON, or one checkMap refuses)
// blocks nothing for good: the shard holds it as broken, answers 503 naming
// it, and takes the cluster's map over it by compare-and-set on the stored
// epoch column, which stays readable (PUT /cluster/map with If-Match on it).

import { checkMap, placer, ringChange, type ClusterMap, type Placement } from '../api/cluster-map.ts';
import { isReadOnly } from '../mysql/connections.ts';

/** The few statements of db.ts that the map needs: who this shard is, its stored map, and its rows mid-move. */
export type MapStore = {
  shard(): Promise<string>;
  writable(): Promise<boolean>;
  readMap(): Promise<{ epoch: number; map: string } | undefined>;
  writeMap(map: string, epoch: number, expected: number | undefined): Promise<boolean>;
  forgetMoved(): Promise<void>;
  list(after: string, limit: number, state: 'incoming'): Promise<unknown[]>;
};

/** What a request needs to know of the cluster: who this shard is, and the map it holds, if any. */
export type Held = {
  shard: string;
  /** False on a read-only machine: it serves no id (rule 8). */
  writable: boolean;
  map?: ClusterMap;
  place?: (id: string) => Placement;
  /** While a reshard runs: when its lease ends by this shard's clock, unless renewed. */
  leaseUntil?: number;
  /** A stored map that cannot be read: its epoch column, and why. Then there is no map. */
  broken?: { epoch: number; problem: string };
};

/** The one line a broken shard answers: the map, the shard, and the command that repairs it. */
export function brokenMessage(held: Held): string {
  const { epoch, problem } = held.broken!;
  return (
    `shard ${held.shard}: its stored cluster map (epoch ${epoch}) cannot be read: ${problem}. Nothing stored is lost; ` +
    'put the cluster\'s map back with: node ch_client.ts reshard --to <the cluster\'s nodes>'
  );
}

/** Why a new map was not taken: rule 6's carries its reason. */
export type Refusal = 'stale' | 'older' | 'incoming' | { ring: string };

function holding(shard: string, map: ClusterMap | undefined, writable = true): Held {
  return {
    shard,
    writable,
    map,
    place: map && placer(map),
    // After a restart, a lease counts from now: a takeover waits one lease longer, never less.
    leaseUntil: map?.moving && Date.now() + map.moving.leaseMs,
  };
}

export function createCluster(db: MapStore) {
  let held: Held | undefined; // read from MySQL at the first request, then kept
  let inFlight = 0;
  let drained: (() => void) | undefined;
  let paused: Promise<void> | undefined; // while a new map is being taken
  let changes: Promise<unknown> = Promise.resolve(); // one change at a time

  let loading: Promise<Held> | undefined; // the first read, shared by the requests that wait for it

  function load(): Promise<Held> {
    if (held !== undefined) return Promise.resolve(held);
    loading ??= read().finally(() => (loading = undefined));
    return loading;
  }

  async function read(): Promise<Held> {
    const [shard, stored, writable] = await Promise.all([db.shard(), db.readMap(), db.writable()]);
    let map: ClusterMap | undefined;
    try {
      map = stored === undefined ? undefined : checkMap(JSON.parse(stored.map));
    } catch (err) {
      // Not kept: each request reads it again, so a map put back by hand is seen at once.
      return { shard, writable, broken: { epoch: stored!.epoch, problem: (err as Error).message } };
    }
    // Rule 8: a read-only machine writes nothing, and reads its map again at the next request.
    if (!writable) return holding(shard, map, false);
    // Killed between storing a finished reshard's map and forgetting its moved rows: forget them now.
    if (map !== undefined && map.moving === undefined) await db.forgetMoved();
    held ??= holding(shard, map);
    return held;
  }

  async function swap(next: ClusterMap, expected: number | undefined): Promise<Refusal | undefined> {
    const now = await load();
    // Over a broken map: only the epoch column it stores counts, and nothing of its unreadable rings.
    if (now.broken !== undefined) {
      if (expected !== now.broken.epoch) return 'stale';
    } else if (now.map?.epoch !== expected) return 'stale';
    if (now.map !== undefined && JSON.stringify(now.map) === JSON.stringify(next)) {
      now.leaseUntil = next.moving && Date.now() + next.moving.leaseMs;
      return undefined;
    }
    if (now.map !== undefined && next.epoch <= now.map.epoch) return 'older';
    // Rule 6: no ring loses a node without a move under way or a recorded forget, whoever asks.
    const ring = now.map && ringChange(now.map, next);
    if (ring !== undefined) return { ring };
    // Rule 5: wait for the requests under the old map to finish, and let no new one start.
    let resume = () => {};
    paused = new Promise((resolve) => (resume = resolve));
    try {
      if (inFlight > 0) await new Promise<void>((resolve) => (drained = resolve));
      drained = undefined;
      if (next.moving === undefined && (await db.list('', 1, 'incoming')).length > 0) return 'incoming';
      try {
        if (!(await db.writeMap(JSON.stringify(next), next.epoch, expected))) {
          held = undefined; // MySQL holds another map than we thought: read it again
          return 'stale';
        }
      } catch (err) {
        // MySQL may have committed the new map before the throw (a connection
        // lost on the way back from COMMIT), or not: the old map held in
        // memory may no longer be the stored one. Forget it, so that the next
        // request reads the stored map (and read() forgets moved rows).
        held = undefined;
        throw err;
      }
      held = holding(now.shard, next);
    } finally {
      paused = undefined;
      resume();
    }
    // A finished reshard's moved rows are forgotten after the pause, which
    // they would lengthen by seconds at 200,000 records; still before the
    // answer, and so before the next change of map (one at a time). Under
    // this map they are ids owned elsewhere, sent on (421) as without them;
    // one owned here (moved away, deleted by a client, then a reversal)
    // answers 503 for that moment, the guard's look at its row, never a
    // record. Should the forget fail, read() forgets them at the next request.
    if (next.moving === undefined) {
      try {
        await db.forgetMoved();
      } catch (err) {
        held = undefined;
        throw err;
      }
    }
    return undefined;
  }

  /** A request has ended: the last one out lets a waiting change of map go ahead. */
  function left(): void {
    if (--inFlight === 0) drained?.();
  }
  const leave = <T>(value: T): T => (left(), value);
  const fail = (err: unknown): never => {
    left();
    return noticed(err);
  };

  /** Rule 8: MySQL turned read-only under a request (fenced): read the role again at the next. */
  function noticed(err: unknown): never {
    if (isReadOnly(err)) held = undefined;
    throw err;
  }

  /** A request that came while a map is being taken, or before the first is read: it waits for it. */
  async function waitThenRun<T>(request: (held: Held) => Promise<T>): Promise<T> {
    while (paused !== undefined) await paused;
    inFlight++;
    try {
      return await request(held ?? (await load()));
    } catch (err) {
      return noticed(err);
    } finally {
      left();
    }
  }

  return {
    load,

    /** The map held now, if it has been read; never waits (rule 9 compares a client's epoch with it). */
    current(): Held | undefined {
      return held;
    },

    /** Reads role and map again at the next request: MySQL turned read-only (fenced), or writable (promoted). */
    forget(): void {
      held = undefined;
    },

    /**
     * Runs one request under the map it started with: a change of map waits
     * until it has finished. Under a map already read and not changing, the
     * request awaits nothing of this function's own: no promise besides the
     * one its end is counted on.
     */
    during<T>(request: (held: Held) => Promise<T>): Promise<T> {
      if (paused !== undefined || held === undefined) return waitThenRun(request);
      inFlight++;
      let running: Promise<T>;
      try {
        running = request(held);
      } catch (err) {
        return fail(err);
      }
      return running.then(leave, fail);
    },

    /**
     * Takes `next` if the map held now is at epoch `expected` (undefined: no
     * map yet). The same map again renews the reshard's lease. Resolves to
     * undefined when taken, or to why not. One change at a time.
     */
    install(next: ClusterMap, expected: number | undefined): Promise<Refusal | undefined> {
      const change = changes.then(() => swap(next, expected));
      changes = change.catch(() => {});
      return change;
    },
  };
}

export type Cluster = ReturnType<typeof createCluster>;
