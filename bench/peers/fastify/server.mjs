// bench/peers/fastify/server.mjs: the peer that bench/peers.ts measures ours
// against. The two routes the bench sends, written as a developer would with
// Fastify 5 and mysql2, on the same `expenses` table (schema.sql): POST
// /v1/expenses stores the body as sent, with no validation; GET
// /v1/expenses/:id reads one record's columns. Both let MySQL turn the wire's
// dates and amounts (STR_TO_DATE, DATE_FORMAT, TRIM), as a developer would
// write them; db.ts does that itself, and reads a record as one JSON_OBJECT
// column, for its driver's sake (docs/performance.md). Plain JavaScript, with
// its own package.json, so that the project's dependencies and its
// typecheck stay as they are.
//
// Run (bench/peers.ts does): MYSQL_SOCKET=… MYSQL_USER=… MYSQL_PASSWORD=… PORT=… node server.mjs

import { randomBytes } from 'node:crypto';
import Fastify from 'fastify';
import mysql from 'mysql2/promise';

// The record's columns, in their wire form, and its insert.
const COLUMNS = `id, name, email, category, description, link,
  TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM CAST(estimated_costs AS CHAR))) AS estimated_costs,
  DATE_FORMAT(submit_date, '%m-%d-%Y') AS submit_date,
  status,
  IFNULL(DATE_FORMAT(decision_date, '%m-%d-%Y'), '') AS decision_date,
  version, state`;
const INSERT = `INSERT INTO expenses (id, name, email, category, description, link, estimated_costs, submit_date, status, decision_date, version, state)
  VALUES (?, ?, ?, ?, ?, ?, ?, STR_TO_DATE(?, '%m-%d-%Y'), ?, STR_TO_DATE(NULLIF(?, ''), '%m-%d-%Y'), ?, 'live')`;
const SELECT = `SELECT ${COLUMNS} FROM expenses WHERE id = ?`;

const env = process.env;
// As many connections as a shard's server keeps (mysql/connections.ts, POOL_SIZE).
const pool = mysql.createPool({
  ...(env.MYSQL_SOCKET ? { socketPath: env.MYSQL_SOCKET } : { host: env.MYSQL_HOST ?? '127.0.0.1', port: Number(env.MYSQL_PORT ?? 3306) }),
  user: env.MYSQL_USER ?? 'root',
  password: env.MYSQL_PASSWORD ?? '',
  database: env.MYSQL_DATABASE ?? 'expenses',
  connectionLimit: 10,
  charset: 'UTF8MB4_UNICODE_CI',
  dateStrings: true,
  supportBigNumbers: true,
  bigNumberStrings: true,
});

const app = Fastify({ logger: false });

app.post('/v1/expenses', async (request, reply) => {
  const e = request.body;
  const expense = { ...e, status: 'pending', decision_date: '' };
  const version = randomBytes(8).toString('hex');
  try {
    await pool.query(INSERT, [e.id, e.name, e.email, e.category, e.description, e.link, e.estimated_costs, e.submit_date, 'pending', '', version]);
  } catch (err) {
    if (err.code === 'ER_DUP_ENTRY') return reply.code(409).send({ error: `an expense with id ${JSON.stringify(e.id)} already exists` });
    throw err;
  }
  return reply.code(201).header('location', `/v1/expenses/${e.id}`).header('etag', `"${version}"`).send(expense);
});

app.get('/v1/expenses/:id', async (request, reply) => {
  const [rows] = await pool.query(SELECT, [request.params.id]);
  const row = rows[0];
  if (row === undefined || row.state !== 'live') return reply.code(404).send({ error: `no expense with id ${JSON.stringify(request.params.id)}` });
  const { version, state, ...expense } = row;
  return reply.header('etag', `"${version}"`).send(expense);
});

const host = env.HOST ?? '127.0.0.1';
const address = await app.listen({ host, port: Number(env.PORT ?? 3000) });
console.log(`listening on ${address}`);

process.once('SIGTERM', async () => {
  await app.close();
  await pool.end();
});
