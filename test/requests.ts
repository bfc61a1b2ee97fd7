// test/requests.ts: one request to a server as a test sends it, and the
// assignment's expense with a fresh id, for the tests of the expense API and
// of the move steps.

import { expenseFor } from '../ch_client.ts';

export type Answer = { status: number; headers: Headers; body: any };

/** A request to any server, by its base URL; a string or bytes body is sent as it is. */
export async function at(base: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(base + path, {
    method,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : typeof body === 'string' || body instanceof Uint8Array ? Buffer.from(body) : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text === '' ? undefined : JSON.parse(text) };
}

let counter = 0;
/** The assignment's expense with a fresh id, as a POST body, with `fields` changed. */
export function expense(fields: Record<string, unknown> = {}): Record<string, any> {
  return { ...expenseFor(`t${process.pid}-${++counter}`), ...fields };
}
