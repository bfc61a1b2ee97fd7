// shard/context.ts: what a route's handler is given and gives back: the
// shard's parts, the map the request runs under, and the request itself.

import type { IncomingMessage } from 'node:http';
import type { Db } from '../db.ts';
import type { OperatorConfig } from '../mysql/connections.ts';
import type { Moves } from '../mysql/moves.ts';
import type { Cluster, Held } from './cluster.ts';
import type { Converge } from './converge.ts';
import type { Reply } from './http.ts';

/**
 * What every request may use: the database (and its statements for a
 * reshard's batched moves), the map this shard holds, the
 * cluster secret, the address this server answers at (set once it listens),
 * and its MySQL as the operator (shard/replication.ts; undefined without one).
 */
export type Shard = { db: Db; moves: Moves; cluster: Cluster; secret: string | undefined; address: string; operator: OperatorConfig | undefined; converge?: Converge };
/** A request as a handler sees it: the shard, the map it runs under, and what the client sent. */
export type Context = Shard & { held: Held; req: IncomingMessage; body: Buffer; params: string[]; query: URLSearchParams };
export type Handler = (c: Context) => Promise<Reply>;
/** A path pattern and the handler of each method it allows. */
export type Route = [RegExp, Record<string, Handler>];
