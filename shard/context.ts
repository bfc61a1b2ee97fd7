// shard/context.ts: what a route of the levels above the assignment is given:
// the shard's parts, the map the request runs under, and the request itself
// (shard/http.ts's Call). The expense API's handlers need only the database.

import type { Db } from '../db.ts';
import type { Query } from '../mysql/connections.ts';
import type { OperatorConfig } from '../mysql/replication.ts';
import type { Moves } from './move-rows.ts';
import type { Cluster, Held } from './cluster.ts';
import type { Converge } from './converge.ts';
import type { Call, Reply } from './http.ts';
import type { Rows } from './rows.ts';

/**
 * What every request may use: the expense API's database, the rows in any
 * state, the statements of a reshard's batched moves, the connections for a
 * room's own statements (page/counts.ts), the map this shard holds, the
 * cluster secret, the address this server answers at (set once it listens),
 * and its MySQL as the operator (shard/replication.ts; undefined without one).
 */
export type Shard = { db: Db; rows: Rows; moves: Moves; mysql: Query; cluster: Cluster; secret: string | undefined; address: string; operator: OperatorConfig | undefined; converge?: Converge };
/** A request as a handler sees it: the shard, the map it runs under, and what the client sent. */
export type Context = Call<Shard & { held: Held }>;
export type Handler = (c: Context) => Promise<Reply>;
/** A path pattern and the handler of each method it allows. */
export type Route = [RegExp, Record<string, Handler>];
