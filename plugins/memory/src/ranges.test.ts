// The memory plugin's range math: cutting the scratch mapping out of the VMA list, and the
// grouping of page runs into pieces for the native copy.
import { describe, expect, it } from 'vitest';
import type { Vma } from '@ckpt/core';
import {
  cutRuns,
  intersectRuns,
  mergeRanges,
  parseExclude,
  pieces,
  runSetsJs,
  PROGRESS_CHUNK,
  sortRuns,
  subtractRuns,
  takeFromBlob,
  unionRuns,
  without,
} from './ranges.js';
import { planBlob, type PagesSource } from './lazy.js';

const vma = (start: number, end: number, offset = 0): Vma => ({ start, end, perms: 'rw-p', offset, dev: '00:00', inode: 0, name: '' });
const P = 0x1000;

describe('without', () => {
  const list = [vma(0x10 * P, 0x20 * P, 0x100 * P), vma(0x30 * P, 0x40 * P)];

  it('returns the list itself when there is nothing to cut', () => {
    expect(without(list)).toBe(list);
  });

  it('leaves VMAs that do not touch the cut (ends are exclusive)', () => {
    expect(without(list, { start: 0x20 * P, end: 0x30 * P })).toEqual(list);
  });

  it('removes a VMA the cut covers exactly', () => {
    expect(without(list, { start: 0x30 * P, end: 0x40 * P })).toEqual([list[0]]);
  });

  it('trims the end or the start of a VMA, moving the file offset with the start', () => {
    expect(without(list, { start: 0x18 * P, end: 0x30 * P })).toEqual([vma(0x10 * P, 0x18 * P, 0x100 * P), list[1]]);
    expect(without(list, { start: 0x08 * P, end: 0x14 * P })).toEqual([vma(0x14 * P, 0x20 * P, 0x104 * P), list[1]]);
  });

  it('splits a VMA around a cut inside it', () => {
    expect(without(list, { start: 0x12 * P, end: 0x13 * P })).toEqual([vma(0x10 * P, 0x12 * P, 0x100 * P), vma(0x13 * P, 0x20 * P, 0x103 * P), list[1]]);
  });

  it('cuts across several VMAs', () => {
    expect(without(list, { start: 0x1c * P, end: 0x34 * P })).toEqual([vma(0x10 * P, 0x1c * P, 0x100 * P), vma(0x34 * P, 0x40 * P, 0x4 * P)]);
  });
});

describe('pieces', () => {
  const all = (runs: number[], chunk?: number) => [...pieces(runs, chunk)].map((f) => [...f]);

  it('yields nothing for no runs', () => {
    expect(all([])).toEqual([]);
  });

  it('keeps runs that fit in one piece together', () => {
    expect(all([0x1000, 0x2000, 0x10000, 0x1000])).toEqual([[0x1000, 0x2000, 0x10000, 0x1000]]);
  });

  it('splits a run across pieces at the chunk size', () => {
    expect(all([0x1000, 0x5000, 0x10000, 0x1000], 0x2000)).toEqual([
      [0x1000, 0x2000],
      [0x3000, 0x2000],
      [0x5000, 0x1000, 0x10000, 0x1000],
    ]);
  });

  it('yields an exactly full piece at once, without an empty one after', () => {
    expect(all([0x1000, 0x2000], 0x2000)).toEqual([[0x1000, 0x2000]]);
  });

  it('uses PROGRESS_CHUNK (64 MiB) by default and keeps every byte', () => {
    const len = 3 * PROGRESS_CHUNK + 0x1000;
    const out = all([0x7f0000000000, len]);
    expect(out).toHaveLength(4);
    expect(out.every((p) => p.filter((_, i) => i % 2).reduce((a, b) => a + b, 0) <= PROGRESS_CHUNK)).toBe(true);
    expect(out.flatMap((p) => p.filter((_, i) => i % 2)).reduce((a, b) => a + b, 0)).toBe(len);
    expect(out[1][0]).toBe(0x7f0000000000 + PROGRESS_CHUNK);
  });
});

describe('parseExclude', () => {
  it('takes a page-aligned hex range, with or without 0x', () => {
    expect(parseExclude('0x7f0000001000-0x7f0000003000')).toEqual({ spec: '0x7f0000001000-0x7f0000003000', start: 0x7f0000001000, end: 0x7f0000003000 });
    expect(parseExclude('1000-2000')).toMatchObject({ start: 0x1000, end: 0x2000 });
  });

  it('says why a range is not one: empty, or off page boundaries', () => {
    expect(parseExclude('0x2000-0x1000')).toMatch(/empty address range/);
    expect(parseExclude('0x1000-0x1800')).toMatch(/page boundaries/);
  });

  it('takes a mapping name, * matching anything and nothing else special', () => {
    const e = parseExclude('/dev/shm/cache-*.bin');
    if (typeof e === 'string' || !('name' in e)) throw new Error('not a name');
    expect(e.name.test('/dev/shm/cache-12.bin')).toBe(true);
    expect(e.name.test('/dev/shm/cache-12xbin')).toBe(false);
    const heap = parseExclude('[heap]');
    if (typeof heap === 'string' || !('name' in heap)) throw new Error('not a name');
    expect(heap.name.test('[heap]')).toBe(true);
    expect(heap.name.test('h')).toBe(false);
  });

  it('refuses what is neither', () => {
    expect(parseExclude('libc.so')).toMatch(/neither an address range/);
    expect(parseExclude('0x1000-')).toMatch(/neither an address range/);
  });
});

describe('cutRuns', () => {
  const runs = [0x10 * P, 0x10 * P, 0x30 * P, 0x10 * P];

  it('keeps runs the cuts miss, drops those they cover, trims and splits the others', () => {
    expect(cutRuns(runs, [{ start: 0x20 * P, end: 0x30 * P }])).toEqual(runs);
    expect(cutRuns(runs, [{ start: 0x30 * P, end: 0x40 * P }])).toEqual([0x10 * P, 0x10 * P]);
    expect(cutRuns(runs, [{ start: 0x18 * P, end: 0x34 * P }])).toEqual([0x10 * P, 0x8 * P, 0x34 * P, 0xc * P]);
    expect(cutRuns(runs, [{ start: 0x14 * P, end: 0x16 * P }])).toEqual([0x10 * P, 0x4 * P, 0x16 * P, 0xa * P, 0x30 * P, 0x10 * P]);
  });

  it('applies several cuts', () => {
    expect(
      cutRuns(runs, [
        { start: 0x10 * P, end: 0x12 * P },
        { start: 0x3e * P, end: 0x40 * P },
      ]),
    ).toEqual([0x12 * P, 0xe * P, 0x30 * P, 0xe * P]);
  });
});

describe('mergeRanges', () => {
  it('sorts, and merges ranges that overlap or touch', () => {
    expect(mergeRanges([])).toEqual([]);
    expect(
      mergeRanges([
        { start: 0x30 * P, end: 0x40 * P },
        { start: 0x10 * P, end: 0x18 * P },
        { start: 0x14 * P, end: 0x20 * P },
        { start: 0x20 * P, end: 0x22 * P },
        { start: 0x34 * P, end: 0x38 * P },
      ]),
    ).toEqual([
      [0x10 * P, 0x12 * P],
      [0x30 * P, 0x10 * P],
    ]);
  });
});

// Incremental images: which pages are left to the chain, and how a blob of the chain is read.
describe('run sets', () => {
  const A = [0x10 * P, 0x10 * P, 0x30 * P, 0x4 * P]; // [10,20) [30,34)
  const B = [0x8 * P, 0xc * P, 0x18 * P, 0x1a * P]; // [8,14) [18,32)

  it('intersectRuns keeps the pages in both', () => {
    expect(intersectRuns(A, B)).toEqual([0x10 * P, 0x4 * P, 0x18 * P, 0x8 * P, 0x30 * P, 0x2 * P]);
    expect(intersectRuns(A, [])).toEqual([]);
  });

  it('subtractRuns keeps the pages of the first not in the second', () => {
    expect(subtractRuns(A, B)).toEqual([0x14 * P, 0x4 * P, 0x32 * P, 0x2 * P]);
    expect(subtractRuns(A, [])).toEqual(A);
    expect(subtractRuns(A, A)).toEqual([]);
    // Every page is in exactly one of intersect and subtract.
    const both = sortRuns([...pairs(intersectRuns(A, B)), ...pairs(subtractRuns(A, B))]);
    expect(both).toEqual(A);
  });

  it('unionRuns keeps the pages of either, merged where they touch or overlap, as sortRuns of both would', () => {
    // [8,20) + [18,34): one run [8,34).
    expect(unionRuns(A, B)).toEqual([0x8 * P, 0x2c * P]);
    expect(unionRuns(A, [])).toEqual(A);
    expect(unionRuns([], B)).toEqual(B);
    const C = [0x40 * P, P, 0x42 * P, P]; // apart from A: kept apart, in order
    expect(unionRuns(C, A)).toEqual([...A, ...C]);
    expect(unionRuns(A, B)).toEqual(sortRuns([...pairs(A), ...pairs(B)]));
  });

  it('long lists (worked out natively) give what the JS loops give, and what page sets give', () => {
    let seed = 7;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    // Random sorted runs over 20,000 pages: scattered single pages and longer stretches.
    const list = (density: number) => {
      const pages: number[] = [];
      for (let p = 0; p < 20_000; p++) if (rnd() < density) pages.push(p);
      return sortRuns(pages.map((p): [number, number] => [p * P, P]));
    };
    const pagesOf = (runs: number[]) => new Set(pairs(runs).flatMap(([a, l]) => Array.from({ length: l / P }, (_, i) => a / P + i)));
    for (const [da, db] of [
      [0.05, 0.05],
      [0.9, 0.02],
      [0.02, 0.9],
      [0.5, 0.5],
    ]) {
      const a = list(da);
      const b = list(db);
      expect(a.length + b.length).toBeGreaterThan(512); // the native path
      const sa = pagesOf(a);
      const sb = pagesOf(b);
      const cases: Array<[number[], number[], number[]]> = [
        [Array.from(intersectRuns(a, b)), runSetsJs.intersect(a, b), [...sa].filter((p) => sb.has(p))],
        [Array.from(subtractRuns(a, b)), runSetsJs.subtract(a, b), [...sa].filter((p) => !sb.has(p))],
        [Array.from(unionRuns(Float64Array.from(a), b)), runSetsJs.union(a, b), [...new Set([...sa, ...sb])]],
      ];
      for (const [got, js, want] of cases) {
        expect(got).toEqual(js);
        expect(got).toEqual(sortRuns(want.sort((x, y) => x - y).map((p): [number, number] => [p * P, P])));
      }
    }
  });

  it('sortRuns sorts and merges pairs that touch', () => {
    expect(
      sortRuns([
        [0x30 * P, P],
        [0x10 * P, P],
        [0x11 * P, P],
      ]),
    ).toEqual([0x10 * P, 0x2 * P, 0x30 * P, P]);
  });

  it('takeFromBlob reads a blob whole: wanted pages at their addresses, the rest skipped at address 0', () => {
    // A blob of two runs, the second area first (blob order is not address order).
    const blob = [0x30 * P, 0x4 * P, 0x10 * P, 0x10 * P];
    const take = [0x12 * P, 0x2 * P, 0x31 * P, P, 0x1f * P, P];
    const sorted = sortRuns(pairs(take));
    const runs = Array.from(takeFromBlob(blob, sorted));
    expect(runs).toEqual([0, P, 0x31 * P, P, 0, 0x4 * P, 0x12 * P, 0x2 * P, 0, 0xb * P, 0x1f * P, P]);
    // As many bytes as the blob, every wanted page once.
    const bytes = (r: number[]) => r.filter((_, i) => i % 2).reduce((a, b) => a + b, 0);
    expect(bytes(runs)).toBe(bytes(blob));
    expect(sortRuns(pairs(runs).filter(([a]) => a !== 0))).toEqual(sorted);
  });

  it('planBlob splits a blob between lazy ranges and eager pieces, page for page as a model does', () => {
    let seed = 7;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    // A blob in blob order: areas out of address order, runs of 1-8 pages, skips (address 0) between.
    const runs: number[] = [];
    for (const base of [0x5000, 0x1000, 0x9000]) {
      for (let p = base; p < base + 0x800; p += 1 + Math.floor(rnd() * 8)) {
        const len = 1 + Math.floor(rnd() * 8);
        if (rnd() < 0.2) runs.push(0, len * P);
        else runs.push(p * P, len * P);
        p += len;
      }
    }
    const ranges: Array<{ start: number; end: number }> = [];
    for (let p = 0x800; p < 0xa000; p += 0x100 + Math.floor(rnd() * 0x300)) {
      const end = p + 1 + Math.floor(rnd() * 0x200);
      ranges.push({ start: p * P, end: end * P });
      p = end;
    }
    const inRange = (a: number) => ranges.findIndex((r) => r.start <= a && a < r.end);
    // The model: each page's blob offset, lazy or eager.
    const lazyWant = new Map<number, number>();
    const eagerWant = new Map<number, number>();
    const rangesWant = new Set<number>();
    for (let i = 0, off = 0; i < runs.length; off += runs[i + 1], i += 2) {
      if (!runs[i]) continue;
      for (let k = 0; k < runs[i + 1]; k += P) {
        const r = inRange(runs[i] + k);
        (r >= 0 ? lazyWant : eagerWant).set(runs[i] + k, off + k);
        if (r >= 0) rangesWant.add(r);
      }
    }
    const plan = planBlob({ runs: Float64Array.from(runs) } as PagesSource, ranges, 5);
    const lazyGot = new Map<number, number>();
    for (let i = 0; i < plan.lazy.length; i += 4) {
      expect(plan.lazy[i + 3]).toBe(5);
      for (let k = 0; k < plan.lazy[i + 1]; k += P) lazyGot.set(plan.lazy[i] + k, plan.lazy[i + 2] + k);
    }
    const eagerGot = new Map<number, number>();
    for (const seg of plan.eager) {
      // A piece's runs follow each other in the blob from its offset.
      let off = seg.off;
      for (const [a, l] of pairs(seg.runs)) {
        for (let k = 0; k < l; k += P) eagerGot.set(a + k, off + k);
        off += l;
      }
    }
    expect(lazyGot).toEqual(lazyWant);
    expect(eagerGot).toEqual(eagerWant);
    expect(plan.inRanges).toEqual(rangesWant);
    expect(plan.lazyBytes).toBe(lazyWant.size * P);
    expect(plan.eagerBytes).toBe(eagerWant.size * P);
    expect(lazyWant.size).toBeGreaterThan(100);
    expect(eagerWant.size).toBeGreaterThan(100);
  });

  it('pieces keeps skipped bytes at address 0', () => {
    const out = [...pieces([0, 3 * P, 0x10 * P, 2 * P], 2 * P)].map((a) => Array.from(a));
    expect(out).toEqual([
      [0, 2 * P],
      [0, P, 0x10 * P, P],
      [0x11 * P, P],
    ]);
  });
});

function pairs(runs: ArrayLike<number>): Array<[number, number]> {
  return Array.from({ length: runs.length / 2 }, (_, i): [number, number] => [runs[2 * i], runs[2 * i + 1]]);
}
