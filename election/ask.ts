// election/ask.ts: one message to another machine of the group (a lease's
// renewal, a vote, a follow), signed for that machine with the cluster
// secret. Not client/http.ts's call(): that gives a node up after three
// failures for the rest of a run, and a group must hear a machine again as
// soon as it comes back; and its timeouts forgive a stalled process, where a
// lease must count real time.

import { hostOf, sign } from '../api/signing.ts';

export type Heard = { status: number; body: any } | undefined;

/** POST `body` to `path` at `peer`; undefined when no answer came within `timeoutMs`. */
export async function ask(peer: string, path: string, body: unknown, secret: string | undefined, timeoutMs: number): Promise<Heard> {
  const sent = JSON.stringify(body);
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (secret !== undefined) headers.authorization = sign(secret, { method: 'POST', host: hostOf(peer) ?? peer, path, body: sent });
  try {
    const res = await fetch(`http://${peer}${path}`, { method: 'POST', headers, body: sent, signal: AbortSignal.timeout(timeoutMs) });
    const text = await res.text();
    return { status: res.status, body: text === '' ? undefined : JSON.parse(text) };
  } catch {
    return undefined;
  }
}
