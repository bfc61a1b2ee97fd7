// api/expense.ts: what an expense is. The server checks every write with
// these rules, and the client and the tests compare records with them, so
// there is one definition of a valid id, a valid field, and "the same".

import { randomBytes } from 'node:crypto';

export type Expense = {
  id: string;
  name: string;
  email: string;
  category: string;
  description: string;
  link: string;
  estimated_costs: string;
  submit_date: string;
  status: string;
  decision_date: string;
};

/** A record as a shard stores it: the expense, and the version its last write gave it (its ETag). */
export type Versioned = { expense: Expense; version: string };

// Versions come from a pool of random bytes, refilled 8 KiB at a time: one
// call into the system's generator per thousand writes, not one per write
// (it was 5% of a server's CPU under load). Random rather than a counter, so
// that a record deleted and created again never repeats a version that a
// stale If-Match could still name.
let pool = Buffer.alloc(0);
let used = 0;

/** A fresh version for a write: 64 random bits, as 16 hex digits. */
export function newVersion(): string {
  if (used === pool.length) [pool, used] = [randomBytes(8192), 0];
  used += 8;
  return pool.toString('hex', used - 8, used);
}

/** A version as a strong entity tag, the form HTTP carries it in: quoted. */
export function etag(version: string): string {
  return `"${version}"`;
}

/** The fields a client may write: all but the id and what the server decides. */
export const EDITABLE = ['name', 'email', 'category', 'description', 'link', 'estimated_costs', 'submit_date'] as const;
export type Editable = (typeof EDITABLE)[number];

/** Every field of a record, in the order the API writes them. */
export const FIELDS = ['id', ...EDITABLE, 'status', 'decision_date'] as const;

/** What a copy from another shard carries besides the record: its version. */
export type Field = (typeof FIELDS)[number] | 'version';

const ID = /^[A-Za-z0-9._-]{1,64}$/;
export const ID_RULE = 'must be 1 to 64 characters of A-Z a-z 0-9 . _ - (and not "." or "..")';

/** The id rule: it is the shard key, and it must survive a URL path intact. */
export function isId(s: string): boolean {
  // "." and ".." are path steps to every URL parser: such a record could be
  // stored but never fetched again.
  return ID.test(s) && s !== '.' && s !== '..';
}

/** What is wrong with a body: the message, and for each field its problem. */
export class Invalid extends Error {
  fields?: Record<string, string>;
  constructor(message: string, fields?: Record<string, string>) {
    super(message);
    this.fields = fields;
  }
}

// Each rule takes the value as parsed from JSON and returns its canonical
// string, or throws Invalid. The canonical form is what db.ts reads back, so a
// 201 and a later GET of the same record are the same JSON.
const rules: Record<Field, (v: unknown) => string> = {
  id(v) {
    // Ids are strings; a JSON integer is accepted as its decimal digits.
    if (Number.isSafeInteger(v) && (v as number) >= 0) return String(v);
    if (typeof v !== 'string' || !isId(v)) {
      throw new Invalid(`${ID_RULE}, or a non-negative integer; got ${preview(v)}`);
    }
    return v;
  },
  name: chars(1, 200),
  email(v) {
    const s = chars(3, 254)(v);
    if (!/^[^\s@]+@[^\s@]+\.[^\s@.]+$/.test(s)) throw new Invalid(`must look like an email address (name@example.com), got ${preview(s)}`);
    return s;
  },
  category: chars(1, 100),
  description: chars(0, 2000),
  link(v) {
    const s = chars(0, 2048)(v);
    if (s !== '' && !(/^https?:\/\/[^\s]+$/i.test(s) && URL.canParse(s))) {
      throw new Invalid(`must be empty or an absolute http(s) URL, got ${preview(s)}`);
    }
    return s;
  },
  estimated_costs(v) {
    const s = typeof v === 'number' ? String(v) : v;
    const m = typeof s === 'string' ? /^(\d+)(?:\.(\d{1,2}))?$/.exec(s) : null;
    const whole = m?.[1]?.replace(/^0+(?=\d)/, '');
    if (!m || whole!.length > 10) {
      throw new Invalid(`must be an amount from 0 to 9999999999.99 with at most 2 decimals, like "700" or "12.5"; got ${preview(v)}`);
    }
    // The shortest exact form, as the assignment writes amounts: "700", "12.5".
    const cents = (m[2] ?? '').replace(/0+$/, '');
    return cents === '' ? whole! : `${whole}.${cents}`;
  },
  submit_date: date,
  // The server's own fields, which only a copy from another shard may carry.
  status: chars(1, 16),
  decision_date: (v) => (v === '' ? '' : date(v)),
  version(v) {
    if (typeof v !== 'string' || !/^[0-9a-f]{16}$/.test(v)) throw new Invalid(`must be 16 hex digits, got ${preview(v)}`);
    return v;
  },
};

function date(v: unknown): string {
  const m = typeof v === 'string' ? /^(\d\d)-(\d\d)-(\d{4})$/.exec(v) : null;
  if (!m || !isRealDate(+m[3]!, +m[1]!, +m[2]!)) {
    throw new Invalid(`must be a real date written MM-DD-YYYY, like "12-10-2016"; got ${preview(v)}`);
  }
  return v as string;
}

function chars(min: number, max: number): (v: unknown) => string {
  return (v) => {
    if (typeof v !== 'string') throw new Invalid(`must be a string, got ${preview(v)}`);
    // A lone surrogate (possible in JSON's \ud800) has no UTF-8 form to store.
    if (!v.isWellFormed()) throw new Invalid('must be valid Unicode (it has a lone surrogate)');
    // MySQL counts characters (code points), not UTF-16 units as .length does.
    const length = countCodePoints(v);
    if (length < min) throw new Invalid(min === 1 ? 'must not be empty' : `must be at least ${min} characters`);
    if (length > max) throw new Invalid(`must be at most ${max} characters, got ${length}`);
    return v;
  };
}

function countCodePoints(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0xd800 || c > 0xdbff) n++;
  }
  return n;
}

function isRealDate(year: number, month: number, day: number): boolean {
  // MySQL's DATE starts at year 1000.
  const d = new Date(Date.UTC(year, month - 1, day));
  return year >= 1000 && d.getUTCMonth() === month - 1 && d.getUTCDate() === day;
}

/**
 * Checks a body against the fields it may carry, and returns them in
 * canonical form. Collects every problem before failing, so that one error
 * names them all.
 */
export function checkFields(body: unknown, allowed: readonly Field[], requireAll: boolean): Partial<Record<Field, string>> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new Invalid(`the body must be a JSON object, got ${Array.isArray(body) ? 'an array' : preview(body)}`);
  }
  const input = body as Record<string, unknown>;
  // A Map, because `problems['__proto__'] = …` on a plain object would set
  // its prototype instead of recording the problem.
  const problems = new Map<string, string>();
  for (const key of Object.keys(input)) {
    if (allowed.includes(key as Field)) continue;
    problems.set(
      key,
      key === 'id' ? 'cannot be changed; the id is in the URL'
      : key === 'status' || key === 'decision_date' || key === 'version' ? 'is set by the server'
      : `is not a field of an expense; the fields are ${allowed.join(', ')}`,
    );
  }
  const out: Partial<Record<Field, string>> = {};
  for (const field of allowed) {
    if (!Object.hasOwn(input, field)) {
      if (requireAll) problems.set(field, field === 'id' ? 'is required: the client chooses the id, because the id decides which shard stores the expense' : 'is required');
      continue;
    }
    try {
      out[field] = rules[field](input[field]);
    } catch (err) {
      if (!(err instanceof Invalid)) throw err;
      problems.set(field, err.message);
    }
  }
  if (problems.size > 0) {
    const list = [...problems].map(([field, problem]) => `${field} ${problem}`).join('; ');
    throw new Invalid(`invalid expense: ${list}`, Object.fromEntries(problems));
  }
  return out;
}

/**
 * True when two expenses hold the same value in each of `fields`, compared
 * in canonical form: "700" and "700.00" are the same amount.
 */
export function sameExpense(a: Partial<Expense>, b: Partial<Expense>, fields: readonly (keyof Expense)[] = FIELDS): boolean {
  return fields.every((f) => {
    if (a[f] === b[f]) return true;
    const canonicalA = canonical(f, a[f]);
    return canonicalA !== undefined && canonicalA === canonical(f, b[f]);
  });
}

/** A value in canonical form, or undefined when it breaks its rule. */
function canonical(field: Field, v: unknown): string | undefined {
  try {
    return rules[field](v);
  } catch {
    return undefined;
  }
}

/** A bad value as the client sent it, cut short so an error stays readable. */
export function preview(v: unknown): string {
  const s = v === undefined ? 'undefined' : JSON.stringify(v);
  return s.length > 40 ? `${s.slice(0, 37)}...` : s;
}
