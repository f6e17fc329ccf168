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
