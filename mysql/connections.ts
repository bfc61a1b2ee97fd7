// mysql/connections.ts: the connections from one server to its MySQL, and
// how the mysql driver is set up. db.ts sends every statement through here.

import { readFileSync } from 'node:fs';
import mysql from 'mysql';
import { secretFileProblem } from '../api/secret-file.ts';

export type DbConfig = {
  socketPath?: string;
  host?: string;
  port?: number;
  user: string;
  password: string;
  database: string;
};


export const POOL_SIZE = 10;

/** Where a server's MySQL is, and who it is there, from the environment. */
export function dbConfigFromEnv(env: NodeJS.ProcessEnv): DbConfig {
  const port = Number(env.MYSQL_PORT ?? 3306);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`MYSQL_PORT must be 1 to 65535, got ${JSON.stringify(env.MYSQL_PORT)}`);
  return {
    ...(env.MYSQL_SOCKET ? { socketPath: env.MYSQL_SOCKET } : { host: env.MYSQL_HOST ?? '127.0.0.1', port }),
    user: env.MYSQL_USER ?? 'root',
    password: mysqlPassword(env),
    database: env.MYSQL_DATABASE ?? 'expenses',
  };
}

/**
 * The MySQL password: from MYSQL_PASSWORD_FILE, under the cluster secret's
 * rule (yours alone), as start-shards.sh passes it, so that it is in no
 * process's environment (/proc/PID/environ); or from MYSQL_PASSWORD, by hand.
 */
export function mysqlPassword(env: NodeJS.ProcessEnv): string {
  const path = env.MYSQL_PASSWORD_FILE;
  if (path === undefined || path === '') return env.MYSQL_PASSWORD ?? '';
  const problem = secretFileProblem(path, 'the MySQL password');
  if (problem !== undefined) throw new Error(problem);
  return readFileSync(path, 'utf8').trim();
}

// Fail fast when MySQL is gone or stuck: the caller gets a 503 in seconds, not a hang.
const CONNECT_TIMEOUT_MS = 2_000;
const QUERY_TIMEOUT_MS = 5_000;
// Queries waiting beyond this get an error at once, rather than an
// ever-growing queue.
const QUEUE_LIMIT = 1_000;

/** The driver's settings: every trap of mysqljs configured away. */
export function driverOptions(config: DbConfig): mysql.ConnectionConfig {
  // @types/mysql does not know localInfile, which the driver reads.
  const options: mysql.ConnectionConfig & { localInfile: boolean } = {
    socketPath: config.socketPath,
    host: config.host,
    port: config.port,
    user: config.user,
    password: config.password,
    database: config.database,
    connectTimeout: CONNECT_TIMEOUT_MS,
    charset: 'UTF8MB4_UNICODE_CI',
    // The driver's defaults turn DECIMAL into a lossy Number and DATE into a
    // local-midnight Date. Strings are exact.
    supportBigNumbers: true,
    bigNumberStrings: true,
    dateStrings: true,
    // An object as a value must never expand into SQL (`id = ?` with {id: 1}
    // would become id = `id` = 1). Callers validate first; this is the backstop.
    stringifyObjects: true,
    // A server must not be able to ask us for our files.
    localInfile: false,
    multipleStatements: false,
    // Long stack traces cost a captured Error on every query.
    trace: false,
  };
  return options;
}

// The driver makes a query's options the prototype of a new object
// (Object.create). Handed a fresh object on every query, V8 rebuilds its
// lookups each time (docs/performance.md). So each statement keeps one:
// db.ts's statements are a fixed few, as their values travel apart.
const optionsBySql = new Map<string, mysql.QueryOptions>();
function optionsFor(sql: string): mysql.QueryOptions {
  let made = optionsBySql.get(sql);
  if (made === undefined) optionsBySql.set(sql, (made = { sql, timeout: QUERY_TIMEOUT_MS }));
  return made;
}

/**
 * A fixed set of connections, each running its queries one after another.
 *
 * Why not mysql.createPool: it pings a connection every time it hands one out,
 * so every query costs two round trips to MySQL. Here a query goes to the
 * connection with the least work queued. A connection that ends, because
 * MySQL closed it or because of a fatal error, is dropped, and the next query
 * in its place opens a fresh one: when MySQL comes back, so do we.
 */
export function connections(options: mysql.ConnectionConfig, size: number) {
  type Slot = { connection: mysql.Connection; queued: number };
  const slots: Array<Slot | undefined> = Array.from({ length: size }, () => undefined);
  let pending = 0; // queries sent or queued, on all connections
  let closed = false;

  function open(i: number): Slot {
    const connection = mysql.createConnection(options);
    const slot: Slot = { connection, queued: 0 };
    const drop = () => {
      if (slots[i] === slot) slots[i] = undefined;
    };
    connection.on('end', drop);
    // A fatal error that no query is waiting for arrives as an event; unheard,
    // it would crash the process. The queries that were waiting get it too.
    connection.on('error', drop);
    // Strict mode makes MySQL refuse a value that does not fit, instead of
    // storing a truncated one with a warning nobody reads. Should this fail,
    // the connection is broken and the query queued behind it reports that.
    connection.query("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO'", () => {});
    return (slots[i] = slot);
  }

  function query<T>(sql: string, values: unknown[] = []): Promise<T> {
    // After close(), a query would open a connection that nothing closes: a stopping server would never exit
    // (the election's tick asks every RENEW_MS). mysql.createPool's code for the same condition.
    if (closed) return Promise.reject(Object.assign(new Error('the connections to MySQL are closed: this server is shutting down'), { code: 'POOL_CLOSED' }));
    if (pending >= QUEUE_LIMIT) {
      // The code mysql.createPool uses for the same condition.
      return Promise.reject(Object.assign(new Error(`more than ${QUEUE_LIMIT} queries are waiting for MySQL`), { code: 'POOL_ENQUEUELIMIT' }));
    }
    let best = 0;
    for (let i = 1; i < size; i++) if ((slots[i]?.queued ?? 0) < (slots[best]?.queued ?? 0)) best = i;
    const slot = slots[best] ?? open(best);
    slot.queued++;
    pending++;
    return new Promise((resolve, reject) => {
      slot.connection.query(optionsFor(sql), values, (err: mysql.MysqlError | null, result: T) => {
        slot.queued--;
        pending--;
        if (err) reject(err);
        else resolve(result);
      });
    });
  }

  /** Lets the queued queries finish, then closes every connection. */
  query.close = async (): Promise<void> => {
    closed = true;
    const live = slots.filter((slot) => slot !== undefined);
    slots.fill(undefined);
    await Promise.all(live.map(({ connection }) => new Promise<void>((resolve) => connection.end(() => resolve()))));
  };

  return query;
}

export type Query = ReturnType<typeof connections>;

/** The connections a server's statements travel on, from its settings. */
export function connect(config: DbConfig): Query {
  return connections(driverOptions(config), POOL_SIZE);
}

/**
 * A SELECT's columns as one JSON object column. The driver decodes six
 * strings describing each column of a result before its rows: twelve columns
 * cost a GET about 10 µs, one costs one (docs/performance.md). The columns
 * named `asText` travel as text: a DECIMAL as a JSON number would be read as a double.
 */
export function asOneColumn(columns: readonly string[], asText: readonly string[]): string {
  return `JSON_OBJECT(${columns.map((c) => `'${c}', ${asText.includes(c) ? `CAST(${c} AS CHAR)` : c}`).join(', ')})`;
}

// Errors that mean "MySQL cannot be reached or cannot take more work right
// now", as opposed to a bug in a query: the request may succeed if retried.
const UNAVAILABLE = new Set([
  'POOL_ENQUEUELIMIT',
  'ER_CON_COUNT_ERROR',
  'ER_SERVER_SHUTDOWN',
  'ER_LOCK_WAIT_TIMEOUT',
  'ER_LOCK_DEADLOCK',
]);

/** True for MySQL refusing a write because it is read-only: a standby, or a fenced old primary (rule 8). */
export function isReadOnly(err: unknown): boolean {
  return (err as { code?: string } | null)?.code === 'ER_OPTION_PREVENTS_STATEMENT';
}

/** True when an error from this module means the database is unavailable, not that a query is wrong. */
export function isUnavailable(err: unknown): boolean {
  // The driver marks every error that kills a connection (refused, lost,
  // timed out, access denied) as fatal.
  const e = err as { fatal?: boolean; code?: string } | null;
  return e?.fatal === true || UNAVAILABLE.has(e?.code ?? '');
}
