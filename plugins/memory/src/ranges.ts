/** Address-range arithmetic of the memory plugin (pure functions, unit-tested). */
import type { Vma } from '@ckpt/core';

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

/** Splits a flat run list into pieces of at most `chunk` bytes (PROGRESS_CHUNK: between pieces ckpt reports progress and can be interrupted). */
export function* pieces(runs: number[], chunk = PROGRESS_CHUNK): Generator<Float64Array> {
  let cur: number[] = [];
  let bytes = 0;
  for (let i = 0; i < runs.length; i += 2) {
    let [addr, len] = [runs[i], runs[i + 1]];
    while (len > 0) {
      const take = Math.min(len, chunk - bytes);
      cur.push(addr, take);
      bytes += take;
      addr += take;
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
export type ExcludeSpec = { spec: string; start: number; end: number } | { spec: string; name: RegExp };

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
export function cutRuns(runs: number[], cuts: ReadonlyArray<{ start: number; end: number }>): number[] {
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
