// shard/placement.ts: who answers for an id, decided in one place. Every
// routing case of api/cluster-map.ts's rules 1-4 and 8 is a line of decide(), with
// the rule it applies, as Redis Cluster decides every case in getNodeByQuery().
// The routes (shard/expenses.ts) ask it once they know the id's row, and obey.
//
// The answers, in the field's words:
//   serve     this shard answers (which may be a 404: it is the authority)
//   redirect  421 naming the owner, and the map that says so (Redis: -MOVED)
//   ask       421 from the old owner mid-move: try the new owner, with the
//             header Asking (Redis: -ASK, and ASKING on the next request)
//   wait      503: the record is between two steps of its move, for milliseconds
//   standby   503: this machine is read-only and its map names no other
//             address for the owner (rule 8); the client re-reads the map

import { createHmac } from 'node:crypto';
import { derivedKey } from '../api/signing.ts';
import type { IncomingMessage } from 'node:http';
import { addressOf, type MapNode } from '../api/cluster-map.ts';
import type { State } from './rows.ts';
import type { Held } from './cluster.ts';
import { HttpError } from './http.ts';
import { sameSecret } from './secret.ts';

export type Rule = '1' | '2' | '3a' | '3b' | '4' | '8';
export type Verdict =
  | { answer: 'serve'; rule: Rule }
  | { answer: 'redirect'; to: MapNode; rule: Rule }
  | { answer: 'ask'; to: MapNode; rule: Rule }
  | { answer: 'wait'; rule: Rule }
  | { answer: 'standby'; rule: Rule };

/** The shard deciding: the map it holds, its cluster secret, and the address it answers at. */
export type Here = { held: Held; secret: string | undefined; address?: string };
/** The request: the Asking header as sent, and whether it creates the id (a POST). */
export type Asked = { asking?: string; creates?: boolean };

/**
 * Who answers for `id` here, given the state of this shard's row of it
 * (undefined: no row). Pure: the same map, row and request, the same verdict.
 */
export function decide({ held, secret, address }: Here, id: string, row: State | undefined, { asking, creates = false }: Asked): Verdict {
  if (!held.writable) return asStandby(held, address, id);
  if (held.place === undefined) return asOwner('1', row);
  const { owner, target } = held.place(id);
  if (target === undefined) return owner.shard === held.shard ? asOwner('2', row) : { answer: 'redirect', to: owner, rule: '2' };

  // A reshard moves the id from its old owner (owner) to its new one (target).
  if (owner.shard === held.shard) return row === 'live' ? SERVE['3a'] : { answer: 'ask', to: target, rule: '3a' };
  if (target.shard !== held.shard) return { answer: 'redirect', to: owner, rule: '2' };
  if (row === 'live' && !creates) return SERVE['3b'];
  // Rule 3b: only the old owner's own word, for this id and this epoch, makes the request an asked one.
  const asked = asking !== undefined && sameSecret(asking, askingWord(held, secret, id));
  return asked ? asOwner('3b', row) : { answer: 'redirect', to: owner, rule: '3b' };
}

// The verdicts that name no node, made once: deciding for an id this shard serves allocates nothing.
const SERVE: Readonly<Record<'1' | '2' | '3a' | '3b', Verdict>> = {
  '1': Object.freeze({ answer: 'serve', rule: '1' }),
  '2': Object.freeze({ answer: 'serve', rule: '2' }),
  '3a': Object.freeze({ answer: 'serve', rule: '3a' }),
  '3b': Object.freeze({ answer: 'serve', rule: '3b' }),
};
const WAIT: Verdict = Object.freeze({ answer: 'wait', rule: '4' });

/**
 * An owner serves its live rows and the ids it has no row of. A row caught
 * mid-move (incoming or moved) waits, under rule 4, whatever placed it here.
 */
function asOwner(rule: '1' | '2' | '3b', row: State | undefined): Verdict {
  return row === undefined || row === 'live' ? SERVE[rule] : WAIT;
}

/** Rule 8: a read-only machine sends every id to its owner's address, unless that address is its own. */
function asStandby(held: Held, address: string | undefined, id: string): Verdict {
  if (held.place === undefined) return { answer: 'standby', rule: '8' };
  const { owner } = held.place(id);
  return addressOf(held.map!, owner.name) === address ? { answer: 'standby', rule: '8' } : { answer: 'redirect', to: owner, rule: '8' };
}

/** Does nothing for a verdict to serve; throws the answer for any other. */
export function obey(here: Here, id: string, verdict: Verdict): void {
  if (verdict.answer === 'serve') return;
  if (verdict.answer === 'wait') throw inTransit(id);
  if (verdict.answer === 'standby') throw readOnly();
  const map = here.held.map!;
  if (verdict.answer === 'redirect') {
    const address = addressOf(map, verdict.to.name);
    const at = address === verdict.to.name ? '' : ` (at ${address})`;
    const message = verdict.rule === '8'
      ? `this machine is a standby, or a fenced old primary, and serves no id: ${JSON.stringify(id)} belongs to ${verdict.to.name}${at} under the cluster map at epoch ${map.epoch}`
      : `${JSON.stringify(id)} belongs to ${verdict.to.name}${at} under the cluster map at epoch ${map.epoch}, not to this shard`;
    throw new HttpError(421, message, {}, { owner: verdict.to.name, address, epoch: map.epoch, map });
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

/** 503 (rule 8): a read-only machine that knows no other address for the owner. */
export function readOnly(): HttpError {
  const message = 'this machine is read-only (a standby, or an old primary that was fenced) and knows no other address for this id: read the cluster map from another node, or try again shortly';
  return new HttpError(503, message, { 'Retry-After': '1' }, { role: 'standby' });
}

/** 503 (rule 4): neither side serves a record between the hand-off and the adoption of its move. */
function inTransit(id: string): HttpError {
  const message = `the expense ${JSON.stringify(id)} is being moved between shards at this moment; try again shortly`;
  return new HttpError(503, message, { 'Retry-After': '1' }, { moving: true });
}
