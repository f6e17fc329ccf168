/** Address-range arithmetic of the memory plugin (pure functions, unit-tested). */
import type { Vma } from '@ckpt/core';
import { native } from '@ckpt/native';

/** Largest piece handed to the native page copy at once (progress is reported per piece). */
export const PROGRESS_CHUNK = 64 << 20;

/** Cuts [a, b) out of the VMA list (the dumper's own scratch mapping). */
export function without(vmas: Vma[], cut?: { start: number; end: number }): Vma[] {
  if (!cut) return vmas;
  const out: Vma[] = [];
  for (const v of vmas) {
    if (v.end <= cut.start || v.start >= cut.end) out.push(v);
    else {
      if (v.start < cut.start) out.push({ ...v, end: cut.start });
      if (v.end > cut.end) out.push({ ...v, start: cut.end, offset: v.offset + (cut.end - v.start) });
    }
  }
  return out;
}

/**
 * Splits a flat run list into pieces of at most `chunk` bytes (PROGRESS_CHUNK: between pieces
 * ckpt reports progress and can be interrupted). A run at address 0 (bytes a restore skips) stays at 0.
 */
export function* pieces(runs: ArrayLike<number>, chunk = PROGRESS_CHUNK): Generator<Float64Array> {
  let cur: number[] = [];
  let bytes = 0;
  for (let i = 0; i < runs.length; i += 2) {
    let [addr, len] = [runs[i], runs[i + 1]];
    while (len > 0) {
      const take = Math.min(len, chunk - bytes);
      cur.push(addr, take);
      bytes += take;
      if (addr) addr += take;
      len -= take;
      if (bytes >= chunk) {
        yield Float64Array.from(cur);
        cur = [];
        bytes = 0;
      }
    }
  }
  if (cur.length) yield Float64Array.from(cur);
}

/** What `--exclude` names: an address range, or mappings by name (a glob: `*` matches anything). */
export type ExcludeSpec = { spec: string; start: number; end: number; declaredBy?: string } | { spec: string; name: RegExp };

const RANGE_RE = /^(?:0x)?([0-9a-f]+)-(?:0x)?([0-9a-f]+)$/i;

/**
 * Parses one `--exclude` value: `START-END` (hex, 0x optional, page-aligned, END exclusive) or a
 * mapping name as /proc/PID/maps shows it (a path, `[heap]`, `[stack]`, ...), where `*` matches
 * anything. Returns the spec, or why it is not one.
 */
export function parseExclude(spec: string): ExcludeSpec | string {
  const m = RANGE_RE.exec(spec);
  if (m) {
    const start = Number.parseInt(m[1], 16);
    const end = Number.parseInt(m[2], 16);
    if (!(start < end)) return `${spec}: an empty address range`;
    if (start % 4096 || end % 4096) return `${spec}: the range must start and end on page boundaries (multiples of 0x1000)`;
    return { spec, start, end };
  }
  if (!/^[/[*]/.test(spec)) {
    return `${spec}: neither an address range START-END (hex) nor a mapping name (a path, [heap], [stack]...; * matches anything)`;
  }
  const re = spec.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*');
  return { spec, name: new RegExp(`^${re}$`) };
}

/** The flat run list [addr, len, ...] without the ranges `cuts` ([start, end)). */
export function cutRuns(runs: ArrayLike<number>, cuts: ReadonlyArray<{ start: number; end: number }>): ArrayLike<number> {
  let cur = runs;
  for (const c of cuts) {
    const next: number[] = [];
    for (let i = 0; i < cur.length; i += 2) {
      const a = cur[i];
      const b = a + cur[i + 1];
      if (b <= c.start || a >= c.end) {
        next.push(a, b - a);
        continue;
      }
      if (a < c.start) next.push(a, c.start - a);
      if (b > c.end) next.push(c.end, b - c.end);
    }
    cur = next;
  }
  return cur;
}

/** Ranges ([start, end)) sorted and merged where they overlap or touch, as [addr, len] pairs. */
export function mergeRanges(ranges: ReadonlyArray<{ start: number; end: number }>): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const r of [...ranges].sort((a, b) => a.start - b.start)) {
    const last = out[out.length - 1];
    if (last && r.start <= last[0] + last[1]) last[1] = Math.max(last[1], r.end - last[0]);
    else out.push([r.start, r.end - r.start]);
  }
  return out;
}

/**
 * From this many numbers in the two lists on, run sets are worked out natively (native.mem.runsOp,
 * the same loops): inside a freeze, an increment's lists of thousands of runs go through these
 * several times, and in a fresh process (the command line) the JS loops run in the interpreter
 * at first, some 2-3 ms each against a few microseconds.
 */
const NATIVE_RUNS = 512;

/** A run list as a Float64Array (what the native calls take), without a copy when it is one. */
export const f64 = (x: ArrayLike<number>) => (x instanceof Float64Array ? x : Float64Array.from(x));

/**
 * A run set's result: a plain array from the JS loops, a Float64Array from the native ones (kept
 * as it is: the next run set takes it without a conversion).
 */
export type Runs = number[] | Float64Array;

/** Sorted, non-overlapping flat runs [addr, len, ...] of both lists' pages (each list sorted, non-overlapping). */
export function intersectRuns(a: ArrayLike<number>, b: ArrayLike<number>): Runs {
  return a.length + b.length < NATIVE_RUNS ? runSetsJs.intersect(a, b) : native.mem.runsOp(f64(a), f64(b), 0);
}

/** The pages of `a` or `b` (flat runs, each sorted and non-overlapping), sorted and merged. */
export function unionRuns(a: ArrayLike<number>, b: ArrayLike<number>): Runs {
  return a.length + b.length < NATIVE_RUNS ? runSetsJs.union(a, b) : native.mem.runsOp(f64(a), f64(b), 2);
}

/** The pages of `a` that are not in `b` (flat runs, each sorted and non-overlapping). */
export function subtractRuns(a: ArrayLike<number>, b: ArrayLike<number>): Runs {
  return a.length + b.length < NATIVE_RUNS ? runSetsJs.subtract(a, b) : native.mem.runsOp(f64(a), f64(b), 1);
}

/** The run sets in JS: for short lists, and the model the native ones are tested against. */
export const runSetsJs = {
  intersect(a: ArrayLike<number>, b: ArrayLike<number>): number[] {
    const out: number[] = [];
    let i = 0;
    let j = 0;
    while (i < a.length && j < b.length) {
      const aEnd = a[i] + a[i + 1];
      const bEnd = b[j] + b[j + 1];
      const start = Math.max(a[i], b[j]);
      const end = Math.min(aEnd, bEnd);
      if (start < end) pushRun(out, start, end - start);
      if (aEnd <= bEnd) i += 2;
      else j += 2;
    }
    return out;
  },
  union(a: ArrayLike<number>, b: ArrayLike<number>): number[] {
    const out: number[] = [];
    let i = 0;
    let j = 0;
    while (i < a.length || j < b.length) {
      if (j >= b.length || (i < a.length && a[i] <= b[j])) {
        pushRun(out, a[i], a[i + 1]);
        i += 2;
      } else {
        pushRun(out, b[j], b[j + 1]);
        j += 2;
      }
    }
    return out;
  },
  subtract(a: ArrayLike<number>, b: ArrayLike<number>): number[] {
    const out: number[] = [];
    let j = 0;
    for (let i = 0; i < a.length; i += 2) {
      let at = a[i];
      const end = at + a[i + 1];
      while (j < b.length && b[j] + b[j + 1] <= at) j += 2;
      for (let k = j; k < b.length && b[k] < end; k += 2) {
        if (b[k] > at) pushRun(out, at, b[k] - at);
        at = Math.max(at, b[k] + b[k + 1]);
      }
      if (at < end) pushRun(out, at, end - at);
    }
    return out;
  },
};

/** Flat runs of [addr, len] pairs, sorted by address and merged where they touch. */
export function sortRuns(pairs: Iterable<readonly [number, number]>): number[] {
  const all = Array.isArray(pairs) ? (pairs as ReadonlyArray<readonly [number, number]>) : [...pairs];
  let inOrder = true;
  for (let i = 1; i < all.length && inOrder; i++) inOrder = all[i][0] >= all[i - 1][0];
  const out: number[] = [];
  for (const [a, l] of inOrder ? all : [...all].sort((x, y) => x[0] - y[0])) pushRun(out, a, l);
  return out;
}

/** The bytes of flat runs. */
export function runsBytes(runs: ArrayLike<number>): number {
  let n = 0;
  for (let i = 1; i < runs.length; i += 2) n += runs[i];
  return n;
}

/** [addr, len] pairs of a flat run list. */
export function runPairs(runs: ArrayLike<number>): Array<[number, number]> {
  return Array.from({ length: runs.length / 2 }, (_, i): [number, number] => [runs[2 * i], runs[2 * i + 1]]);
}

/** Appends a run, extending the last one when it ends where this one starts (or overlaps it). */
function pushRun(out: number[], addr: number, len: number): void {
  const n = out.length;
  if (n && out[n - 2] + out[n - 1] >= addr) out[n - 1] = Math.max(out[n - 1], addr + len - out[n - 2]);
  else out.push(addr, len);
}

/**
 * A blob's runs (flat, in blob order) as the restore reads them when only the pages of `take`
 * (sorted flat runs) are wanted from it: those at their addresses, the other bytes as runs at
 * address 0 (hashed, not written), neighbouring skips merged.
 */
export function takeFromBlob(blobRuns: ArrayLike<number>, take: ArrayLike<number>): Float64Array {
  // Native at any length: a chain's blobs have tens of thousands of runs, read once per restore.
  return native.mem.runsOp(f64(blobRuns), f64(take), 3);
}
