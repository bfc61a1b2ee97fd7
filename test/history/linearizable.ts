// test/history/linearizable.ts: is a history of the expense API linearizable?
// A checker after Porcupine (Athalye's, in Go) and Knossos (Jepsen's): the
// Wing & Gong search, with Lowe's memoization of (operations linearized,
// state), on the history split by key (P-compositionality: a history is
// linearizable when the history of each id is).
//
// The model: each id is a register that holds a record or nothing. A record
// is known here by its name, which the test makes unique per write, and by the
// version (ETag) the shard gave that write. The operations and their answers:
//   create  POST                 201 (it was absent), 409 (it was present)
//   read    GET                  200 with a name and version, 404 (absent)
//   update  PUT, maybe If-Match  202 (present, and at that version), 404, 412
//   delete  DELETE, maybe If-Match  204, 404, 412
// A write whose outcome is unknown (no answer, a 503 that may come after its
// commit, a 500) may or may not have taken effect. As Porcupine and Knossos
// do, it has no end: it may be linearized anywhere after its start, and last
// of all is the same as never. A read with no answer constrains nothing, and
// is left out.

export type Op =
  | { kind: 'create'; name: string }
  | { kind: 'read' }
  | { kind: 'update'; name: string; ifMatch?: string }
  | { kind: 'delete'; ifMatch?: string };

/** What came back: a status (with the record's name and version where one came), or no outcome known, and why. */
export type Answer = { status: number; name?: string; version?: string };
/** Unknown: no outcome known, and why. `ended`: the operation did end when it says, whatever it did (shortest() makes these). */
export type Result = Answer | { unknown: string; ended?: true };

/** One operation as a client saw it: times in ms on one clock, from the call to the answer. */
export type Operation = { id: string; client: number; op: Op; start: number; end: number; result: Result };

/** The register: absent, or a record's name and version (undefined: written by a write with no known outcome, and not read since). */
type State = { name: string; version: string | undefined } | null;

const DETERMINATE: Record<Op['kind'], number[]> = { create: [201, 409], read: [200, 404], update: [202, 404, 412], delete: [204, 404, 412] };

/** Whether the outcome of `o` is known: an answer the model has a rule for. */
export function known(o: Operation): o is Operation & { result: Answer } {
  return 'status' in o.result && DETERMINATE[o.op.kind].includes(o.result.status);
}

/** The state after `o` from `s`, or undefined when `o` could not have answered so from `s`. */
function step(s: State, o: Operation): State | undefined {
  const { op } = o;
  const holds = s !== null && (!('ifMatch' in op) || op.ifMatch === undefined || op.ifMatch === s.version);
  if (!known(o)) {
    // Either outcome, whichever the state gives: the write went through, or was refused.
    if (op.kind === 'create') return s === null ? { name: op.name, version: undefined } : s;
    if (op.kind === 'update') return holds ? { name: op.name, version: undefined } : s;
    if (op.kind === 'delete') return holds ? null : s;
    return undefined; // a read with no answer is left out before the search
  }
  const { status, name, version } = o.result;
  switch (`${op.kind} ${status}`) {
    case 'create 201':
      return s === null ? { name: (op as { name: string }).name, version } : undefined;
    case 'create 409':
    case 'update 412':
    case 'delete 412':
      return s !== null && !(op.kind !== 'create' && holds) ? s : undefined;
    case 'read 200':
      return s !== null && s.name === name && (s.version === undefined || s.version === version) ? { name: s.name, version } : undefined;
    case 'read 404':
    case 'update 404':
    case 'delete 404':
      return s === null ? s : undefined;
    case 'update 202':
      return holds ? { name: (op as { name: string }).name, version } : undefined;
    case 'delete 204':
      return holds ? null : undefined;
  }
  return undefined;
}

const NOT_NEEDED = 'answer not needed to fail';

/** The states `o` may leave from `s`: one, or none; two for an operation that ended with its outcome unknown (it took effect, or did not). */
function choicesOf(s: State, o: Operation): State[] {
  const after = step(s, o);
  if (!('ended' in o.result && o.result.ended)) return after === undefined ? [] : [after];
  return after === undefined || stateKey(after) === stateKey(s) ? [s] : [after, s];
}

const stateKey = (s: State) => (s === null ? '' : `${s.name}\u0000${s.version ?? '?'}`);

/**
 * Operations as the search takes them: unknown outcomes without an end; left
 * out, the reads with no answer, and the updates with no known outcome whose
 * name no read saw. Such an update, had it taken effect, was overwritten or
 * deleted before any read, and changed nothing else that a 409, 202, 204 or
 * 404 could tell, so "never" explains all that it could (not so beside an
 * If-Match, which its new version could fail). Each pending operation left in
 * doubles what the search may have to try.
 */
function prepare(ops: readonly Operation[]): Operation[] {
  const read = new Set(ops.map((o) => (known(o) && o.op.kind === 'read' ? o.result.name : undefined)));
  const conditional = ops.some((o) => 'ifMatch' in o.op && o.op.ifMatch !== undefined);
  const needed = (o: Operation) => known(o) || (o.op.kind !== 'read' && (o.op.kind !== 'update' || conditional || read.has(o.op.name)));
  return ops.filter(needed).map((o) => (known(o) || ('ended' in o.result && o.result.ended) ? o : { ...o, end: Infinity }));
}

/**
 * The Wing & Gong search on one id's operations, as Porcupine runs it: the
 * calls and returns in time order in a linked list; take the first call that
 * the model allows from the state reached, unless (ops linearized, state) was
 * seen before; meet a return whose call is not taken yet, and undo the last
 * choice. True: linearizable; false: not; undefined: `budget` steps ran out.
 */
export function linearizable(history: readonly Operation[], budget = 2_000_000): boolean | undefined {
  const ops = prepare(history);
  type Entry = { call: boolean; op: number; time: number };
  const entries: Entry[] = ops.flatMap((o, i) => [{ call: true, op: i, time: o.start }, { call: false, op: i, time: o.end }]);
  // At one instant, calls come before returns: the operations overlap, the lenient reading.
  entries.sort((a, b) => a.time - b.time || Number(b.call) - Number(a.call));
  // A doubly linked list over entries 1..n, 0 its head; -1 ends it.
  const n = entries.length;
  const next = Int32Array.from({ length: n + 1 }, (_, i) => (i < n ? i + 1 : -1));
  const prev = Int32Array.from({ length: n + 1 }, (_, i) => i - 1);
  const returnOf = new Int32Array(ops.length);
  entries.forEach((e, i) => e.call || (returnOf[e.op] = i + 1));
  const unlink = (k: number) => {
    next[prev[k]!] = next[k]!;
    if (next[k] !== -1) prev[next[k]!] = prev[k]!;
  };
  const relink = (k: number) => {
    next[prev[k]!] = k;
    if (next[k] !== -1) prev[next[k]!] = k;
  };
  const lift = (k: number) => (unlink(k), unlink(returnOf[entries[k - 1]!.op]!));
  const unlift = (k: number) => (relink(returnOf[entries[k - 1]!.op]!), relink(k));

  const done = new Uint32Array(Math.ceil(ops.length / 32));
  const flip = (op: number) => (done[op >>> 5]! ^= 1 << (op & 31));
  const seen = new Set<string>();
  const stack: Array<{ k: number; state: State; choice: number }> = [];
  let state: State = null;
  let k = next[0]!;
  let from = 0; // the first of the call's choices to try: past 0 when the search comes back to it
  search: while (next[0] !== -1) {
    if (--budget < 0) return undefined;
    const entry = entries[k - 1]!;
    if (entry.call) {
      const choices = choicesOf(state, ops[entry.op]!);
      for (let choice = from; choice < choices.length; choice++) {
        flip(entry.op);
        const key = `${done.join(',')}|${stateKey(choices[choice]!)}`;
        if (!seen.has(key)) {
          seen.add(key);
          stack.push({ k, state, choice });
          state = choices[choice]!;
          lift(k);
          [k, from] = [next[0]!, 0];
          continue search;
        }
        flip(entry.op);
      }
      [k, from] = [next[k]!, 0];
    } else {
      // A return whose call could not be placed before it: undo the last choice, and try its next.
      const top = stack.pop();
      if (top === undefined) return false;
      state = top.state;
      flip(entries[top.k - 1]!.op);
      unlift(top.k);
      [k, from] = [top.k, top.choice + 1];
    }
  }
  return true;
}

/** One id's verdict: linearizable, or not with the shortest failing part of its history, or undecided within the search's budget. */
export type Verdict = { id: string; ops: number; ok: true } | { id: string; ops: number; ok: false; shortest: Operation[] } | { id: string; ops: number; ok: undefined };

/** Splits the history by id and checks each; the verdicts of the ids that are not linearizable, or undecided, first. */
export function check(history: readonly Operation[], budget?: number): Verdict[] {
  const byId = new Map<string, Operation[]>();
  for (const o of history) byId.set(o.id, [...(byId.get(o.id) ?? []), o]);
  const verdicts: Verdict[] = [...byId].map(([id, ops]) => {
    const ok = linearizable(ops, budget);
    return ok === false ? { id, ops: ops.length, ok, shortest: shortest(ops, budget) } : { id, ops: ops.length, ok };
  });
  return verdicts.sort((a, b) => Number(a.ok === true) - Number(b.ok === true));
}

/**
 * The history up to time `t`, as it stood then: operations begun by then,
 * and those not answered by then with their outcome unknown (reads left
 * out). Linearizability is prefix-closed: a prefix that fails shows that the
 * whole history fails.
 */
function prefix(ops: readonly Operation[], t: number): Operation[] {
  return ops.filter((o) => o.start <= t && (o.end <= t || o.op.kind !== 'read')).map((o) => (o.end <= t ? o : { ...o, end: Infinity, result: { unknown: 'not answered yet' } }));
}

/**
 * The shortest part of a failing history that still fails, and so shows why:
 * its shortest failing prefix (by the time of an answer), less every read
 * whose removal leaves it failing (a read only constrains: a history that
 * fails without it fails with it). Then each write whose answer the failure
 * does not need is given an unknown outcome, "answer not needed", which only
 * frees the search: what still fails so fails with the answers as they came.
 * Those that the search then leaves out (prepare) are left out here too.
 */
export function shortest(ops: readonly Operation[], budget?: number): Operation[] {
  const fails = (h: Operation[]) => linearizable(h, budget) === false;
  const times = [...new Set(ops.filter(known).map((o) => o.end))].sort((a, b) => a - b);
  let [lo, hi] = [0, times.length - 1];
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (fails(prefix(ops, times[mid]!))) hi = mid;
    else lo = mid + 1;
  }
  let part = prefix(ops, times[lo] ?? Infinity);
  if (!fails(part)) return [...ops]; // undecided within the budget: the whole of it
  for (const read of part.filter((o) => o.op.kind === 'read')) {
    const without = part.filter((o) => o !== read);
    if (fails(without)) part = without;
  }
  for (const write of part.filter((o) => o.op.kind !== 'read' && known(o))) {
    const freed = part.map((o): Operation => (o === write ? { ...o, result: { unknown: `${NOT_NEEDED} (it was ${(o.result as Answer).status})`, ended: true } } : o));
    if (fails(freed)) part = freed;
  }
  const kept = new Set(prepare(part).map((o) => `${o.client} ${o.start}`));
  return part.filter((o) => kept.has(`${o.client} ${o.start}`)).sort((a, b) => a.start - b.start);
}

/** A history for a person: one line per operation, times from the first call. */
export function describe(ops: readonly Operation[], zero = Math.min(...ops.map((o) => o.start))): string {
  const ms = (t: number) => (t === Infinity ? '     never' : `${(t - zero).toFixed(1).padStart(10)}`);
  const what = (op: Op) =>
    op.kind === 'create' ? `POST   name=${op.name}`
    : op.kind === 'read' ? 'GET'
    : op.kind === 'update' ? `PUT    name=${op.name}${op.ifMatch ? ` If-Match "${op.ifMatch}"` : ''}`
    : `DELETE${op.ifMatch ? ` If-Match "${op.ifMatch}"` : ''}`;
  const answer = (o: Operation) =>
    !known(o) ? `unknown (${'unknown' in o.result ? o.result.unknown : `HTTP ${o.result.status}`})`
    : `${o.result.status}${o.result.name === undefined ? '' : ` name=${o.result.name}`}${o.result.version === undefined ? '' : ` "${o.result.version}"`}`;
  return ops.map((o) => `  ${ms(o.start)} ms .. ${ms(o.end)} ms  client ${String(o.client).padEnd(3)} ${what(o.op).padEnd(44)} -> ${answer(o)}`).join('\n');
}

/** What the checker found, in a few lines: the verdicts' counts, and each failing id with its shortest failing history. */
export function report(verdicts: readonly Verdict[]): string {
  const bad = verdicts.filter((v) => v.ok === false);
  const undecided = verdicts.filter((v) => v.ok === undefined);
  const ops = verdicts.reduce((sum, v) => sum + v.ops, 0);
  const lines = [`${verdicts.length} ids, ${ops} operations: ${verdicts.length - bad.length - undecided.length} linearizable, ${bad.length} not, ${undecided.length} undecided within the search's budget`];
  for (const v of bad) {
    const needed = v.shortest.filter((o) => !('ended' in o.result));
    const rest = v.shortest.length - needed.length;
    lines.push(`id ${v.id} is not linearizable; its shortest failing history, ${v.shortest.length} of its ${v.ops} operations, ${needed.length} of them with the answers that fail:`, describe(needed, Math.min(...v.shortest.map((o) => o.start))));
    if (rest > 0) lines.push(`  and ${rest} more writes in that time, taken as having ended with any outcome or none (their answers are not needed to fail)`);
  }
  for (const v of undecided) lines.push(`id ${v.id}: undecided (${v.ops} operations)`);
  return lines.join('\n');
}
