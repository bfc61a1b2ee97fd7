// shard/guard.ts: placement as a guard around the expense API. Each handler
// of shard/expenses.ts runs only where this shard answers for its id, by the
// rules of api/cluster-map.ts, which shard/placement.ts applies; elsewhere the
// client hears where to go (421), or to wait (503).
//
// The guard decides before the handler, as if the id's row were live (a
// read or a write) or absent (a POST): the common case, at the cost of no
// query. Where that guess says anything but "serve", it reads the row in any
// state and decides by it. The handler's statements touch live rows only
// (db.ts), so a record it serves was live when it read it. When the handler
// found no record, or a taken id, or a record that changed under it, the
// guard reads the row and decides again: a row mid-move waits (rule 4), a row
// handed off sends the client on (rule 3a). And where the row as it is now
// contradicts the handler's answer, the handler runs once more: a move's last
// step came in between (rule 4). A 404 with the row live by now: its read
// fell between the hand-off and the adoption, when no row of the record is
// live anywhere, and would deny a record that exists. A taken id (409, 412)
// with no row by now: it met an incoming copy that was discarded since, its
// original deleted, and would claim an id that nobody holds.

import { checkFields, EDITABLE } from '../api/expense.ts';
import type { Api } from './expenses.ts';
import { HttpError, pathId, readJson, type Handler, type Reply } from './http.ts';
import type { Context } from './context.ts';
import { askingOf, decide, obey } from './placement.ts';

/** A handler of the expense API, guarded: it runs only where this shard answers for the id. */
export function guarded(handler: Handler<Api>): Handler<Context> {
  return async (c) => {
    const creates = c.req.method === 'POST';
    if (!creates && c.params.length === 0) return handler(c); // a list: each shard lists its own
    const id = creates ? idInBody(c) : pathId(c.params);
    if (id === undefined) return handler(c); // a body with no valid id: the handler says what is wrong with it
    const request = { asking: askingOf(c.req), creates };
    // Any other answer than to serve depends on the row as it is: a POST of an
    // id whose row the old owner holds live mid-move is a 409 here, not an ASK.
    if (decide(c, id, creates ? undefined : 'live', request).answer !== 'serve') obey(c, id, decide(c, id, (await c.rows.get(id))?.state, request));
    const run = (again = true): Promise<Reply> => handler(c).catch(async (err) => {
      if (!(err instanceof HttpError) || !AFTER_A_LOOK.has(err.status)) throw err;
      const row = (await c.rows.get(id))?.state;
      if (again && contradicts(err.status, row)) return run(false);
      obey(c, id, decide(c, id, row, request));
      throw err;
    });
    return c.req.method === 'PUT' || c.req.method === 'DELETE' ? oneAtATime(id, () => retried(() => run())) : run();
  };
}

// A 404, a 409 (the id is taken), a 412 (If-None-Match: * on a taken id) and
// a 503 (the record changed under a write) may each mean a row that is not live.
const AFTER_A_LOOK: ReadonlySet<number> = new Set([404, 409, 412, 503]);

/** Rule 4: an answer that the row, as it is after it, says a move's last step overtook (adopted, or discarded). */
const contradicts = (status: number, row: string | undefined) => (status === 404 && row === 'live') || ((status === 409 || status === 412) && row === undefined);

/** The id a POST's body names, in its canonical form, or undefined when the body is not a valid expense. */
function idInBody(c: Context): string | undefined {
  try {
    return checkFields(readJson(c), ['id', ...EDITABLE], true).id;
  } catch {
    return undefined;
  }
}

// Another writer (a reshard's hand-off, another server on this database) can
// slip in between a write's read and its write: then it reads again.
const WRITE_ATTEMPTS = 5;

async function retried<T>(write: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await write();
    } catch (err) {
      if (attempt === WRITE_ATTEMPTS || !(err instanceof HttpError) || err.more.code !== 'changed') throw err;
    }
  }
}

const writing = new Map<string, Promise<unknown>>(); // id: the last write queued for it

/** Writes to one id queue in this server, so that they do not race each other's reads. */
function oneAtATime<T>(id: string, write: () => Promise<T>): Promise<T> {
  const mine = (writing.get(id) ?? Promise.resolve()).then(write, write);
  const settled = mine.then(
    () => {},
    () => {},
  );
  writing.set(id, settled);
  void settled.then(() => writing.get(id) === settled && writing.delete(id));
  return mine;
}
