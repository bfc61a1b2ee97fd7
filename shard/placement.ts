// shard/placement.ts: who answers for an id, decided in one place. Every
// routing case of api/cluster-map.ts's rules 1-4 is a line of decide(), with
// the rule it applies, as Redis Cluster decides every case in getNodeByQuery().
// The routes (shard/expenses.ts) ask it once they know the id's row, and obey.
//
// The answers, in the field's words:
//   serve     this shard answers (which may be a 404: it is the authority)
//   redirect  421 naming the owner, and the map that says so (Redis: -MOVED)
//   ask       421 from the old owner mid-move: try the new owner, with the
//             header Asking (Redis: -ASK, and ASKING on the next request)
//   wait      503: the record is between two steps of its move, for milliseconds

import { createHmac } from 'node:crypto';
import { derivedKey } from '../api/signing.ts';
import type { IncomingMessage } from 'node:http';
import type { MapNode } from '../api/cluster-map.ts';
import type { State } from '../db.ts';
import type { Held } from './cluster.ts';
import { HttpError } from './http.ts';
import { sameSecret } from './secret.ts';

export type Rule = '1' | '2' | '3a' | '3b' | '4';
export type Verdict =
  | { answer: 'serve'; rule: Rule }
  | { answer: 'redirect'; to: MapNode; rule: Rule }
  | { answer: 'ask'; to: MapNode; rule: Rule }
  | { answer: 'wait'; rule: Rule };

/** The shard deciding: the map it holds, and its cluster secret. */
export type Here = { held: Held; secret: string | undefined };
/** The request: the Asking header as sent, and whether it creates the id (a POST). */
export type Asked = { asking?: string; creates?: boolean };

/**
 * Who answers for `id` here, given the state of this shard's row of it
 * (undefined: no row). Pure: the same map, row and request, the same verdict.
 */
export function decide({ held, secret }: Here, id: string, row: State | undefined, { asking, creates = false }: Asked): Verdict {
  const mine = (node: MapNode | undefined) => node?.shard === held.shard;
  // An owner serves its live rows and the ids it has no row of. A row caught
  // mid-move (incoming or moved) waits, under rule 4, whatever placed it here.
  const asOwner = (rule: Rule): Verdict => (row === undefined || row === 'live' ? { answer: 'serve', rule } : { answer: 'wait', rule: '4' });

  if (held.place === undefined) return asOwner('1');
  const { owner, target } = held.place(id);
  if (target === undefined) return mine(owner) ? asOwner('2') : { answer: 'redirect', to: owner, rule: '2' };

  // A reshard moves the id from its old owner (owner) to its new one (target).
  if (mine(owner)) return row === 'live' ? { answer: 'serve', rule: '3a' } : { answer: 'ask', to: target, rule: '3a' };
  if (!mine(target)) return { answer: 'redirect', to: owner, rule: '2' };
  if (row === 'live' && !creates) return { answer: 'serve', rule: '3b' };
  // Rule 3b: only the old owner's own word, for this id and this epoch, makes the request an asked one.
  const asked = asking !== undefined && sameSecret(asking, askingWord(held, secret, id));
  return asked ? asOwner('3b') : { answer: 'redirect', to: owner, rule: '3b' };
}

/** Does nothing for a verdict to serve; throws the answer for any other. */
export function obey(here: Here, id: string, verdict: Verdict): void {
  if (verdict.answer === 'serve') return;
  if (verdict.answer === 'wait') throw inTransit(id);
  const map = here.held.map!;
  if (verdict.answer === 'redirect') {
    const message = `${JSON.stringify(id)} belongs to ${verdict.to.name} under the cluster map at epoch ${map.epoch}, not to this shard`;
    throw new HttpError(421, message, {}, { owner: verdict.to.name, epoch: map.epoch, map });
  }
  const asking = askingWord(here.held, here.secret, id);
  const message = `${JSON.stringify(id)} is moving to ${verdict.to.name} and is not here: send the request there with the header Asking: ${asking}`;
  throw new HttpError(421, message, {}, { owner: verdict.to.name, asking, epoch: map.epoch, map });
}

/** The Asking header of a request, when it sent exactly one. */
export function askingOf(req: IncomingMessage): string | undefined {
  const sent = req.headers.asking;
  return typeof sent === 'string' ? sent : undefined;
}

/**
 * What an old owner gives a client for an id it does not hold (rule 3a), and
 * what the new owner takes as proof that the old one sent the request (rule
 * 3b). It names the epoch, so that an answer from another epoch is not taken
 * for one from this one; where the cluster has a secret, it carries a MAC of
 * the id and the epoch under a key derived from it for ASK words alone
 * (api/signing.ts), so that no client can make it up.
 */
function askingWord(held: Held, secret: string | undefined, id: string): string {
  const epoch = String(held.map!.epoch);
  if (secret === undefined) return epoch;
  return `${epoch}.${createHmac('sha256', derivedKey(secret, 'ask')).update(`${epoch}:${id}`).digest('hex').slice(0, 32)}`;
}

/** 503 (rule 4): neither side serves a record between the hand-off and the adoption of its move. */
function inTransit(id: string): HttpError {
  const message = `the expense ${JSON.stringify(id)} is being moved between shards at this moment; try again shortly`;
  return new HttpError(503, message, { 'Retry-After': '1' }, { moving: true });
}
