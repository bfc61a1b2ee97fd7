// shard/disk.ts: a shard that is out of disk space says so: 507 to the write
// that found out, and "out of disk space" on /healthz while it lasts
// (docs/reliability.md, the full-disk test).

import { HttpError } from './http.ts';

// MySQL's ways of saying that the disk is full: a table that cannot grow, or
// a write the operating system refused (errno 28, ENOSPC).
const OUT_OF_DISK = new Set(['ER_RECORD_FILE_FULL', 'ER_DISK_FULL', 'ER_DISK_FULL_NOWAIT']);

/** True when a write failed because MySQL's disk is full: nothing was written, and retrying will not help until space is freed. */
export function isOutOfDisk(err: unknown): boolean {
  const e = err as { code?: string; sqlMessage?: string } | null;
  return OUT_OF_DISK.has(e?.code ?? '') || /errno: 28|No space left/i.test(e?.sqlMessage ?? '');
}

// When a write last failed for lack of disk space, while no write has succeeded since.
let outOfDiskAt: number | undefined;

/**
 * True while writes fail for lack of disk space: the last write failed so,
 * less than 10 s ago. After that, the next write finds out again, so that
 * freed space is noticed with no restart.
 */
export function outOfDisk(): boolean {
  return outOfDiskAt !== undefined && Date.now() - outOfDiskAt < 10_000;
}

/** Notes how a request that may write ended: a success clears the mark, a full disk sets it and becomes a 507. */
export function noteWrite(err?: unknown): void {
  if (err === undefined) return void (outOfDiskAt = undefined);
  if (!isOutOfDisk(err)) throw err;
  outOfDiskAt = Date.now();
  throw new HttpError(507, 'this shard is out of disk space, and nothing was written; reads and deletes still work');
}
