// The pre-copy's assembly of a blob (native.mem.assembleWrite): each page from the pages read
// ahead when the freeze found it still clean (`used`), else from the pages read while frozen, in
// order, hashed and written to a file. Checked page by page against a plain model on random
// layouts.
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '@ckpt/native';
import { describe, expect, it } from 'vitest';
import type { Precopy } from './precopy.js';

/** What the blob file gets: the bytes written, checked against the hash computed with them. */
function assemble(runs: number[], pre: Precopy, fresh: Buffer): Buffer {
  const dir = mkdtempSync(join(tmpdir(), 'ckpt-unit-precopy-'));
  try {
    const fd = openSync(join(dir, 'blob'), 'w+');
    const hash = native.hash.hashNew('blake3');
    try {
      const n = native.mem.assembleWrite(Float64Array.from(runs), Float64Array.from(pre.used), pre.reset, pre.pages ?? Buffer.alloc(0), fresh, fd, hash);
      const bytes = readFileSync(join(dir, 'blob'));
      expect(n).toBe(bytes.length);
      const want = native.hash.hashNew('blake3');
      native.hash.hashUpdate(want, bytes);
      expect(native.hash.hashDigest(hash)).toBe(native.hash.hashDigest(want));
      return bytes;
    } finally {
      closeSync(fd);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const P = 0x1000;

/** Sorted flat runs of a set of page numbers. */
function runsOf(pages: number[]): number[] {
  const out: number[] = [];
  for (const p of [...pages].sort((a, b) => a - b)) {
    if (out.length && out[out.length - 2] + out[out.length - 1] === p * P) out[out.length - 1] += P;
    else out.push(p * P, P);
  }
  return out;
}

/** A page whose every byte says where it came from: its number and its source. */
const page = (n: number, source: number) => Buffer.alloc(P, (n * 7 + source) & 0xff);

/** A random generator with a seed, so that a failure can be run again. */
function rng(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    return s / 0x7fffffff;
  };
}

describe('assemble', () => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    it(`puts every page of the blob where the model does (seed ${seed})`, () => {
      const r = rng(seed);
      const inBlob: number[] = [];
      const reset: number[] = [];
      const used: number[] = [];
      for (let n = 0; n < 600; n++) {
        const blob = r() < 0.5;
        const wasReset = r() < 0.6;
        if (blob) inBlob.push(n);
        if (wasReset) reset.push(n);
        // Used: read ahead and found clean at the freeze, which only a blob page can be here.
        if (blob && wasReset && r() < 0.7) used.push(n);
      }
      const pre: Precopy = { reset: Float64Array.from(runsOf(reset)), used: runsOf(used), pages: Buffer.concat(reset.map((n) => page(n, 1))) };
      const fresh = Buffer.concat(inBlob.filter((n) => !used.includes(n)).map((n) => page(n, 2)));
      const want = Buffer.concat(inBlob.map((n) => page(n, used.includes(n) ? 1 : 2)));
      expect(assemble(runsOf(inBlob), pre, fresh).equals(want)).toBe(true);
    });
  }

  it('refuses fresh pages that do not match the blob', () => {
    const pre: Precopy = { reset: new Float64Array(0), used: [], pages: Buffer.alloc(0) };
    expect(() => assemble([0, 2 * P], pre, Buffer.alloc(P))).toThrow(/fewer pages/);
    expect(() => assemble([0, P], pre, Buffer.alloc(2 * P))).toThrow(/more pages/);
  });
});
