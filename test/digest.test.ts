// The image digest (native/src/blake3.cc, ckpt's own BLAKE3) against the reference tool, Debian's
// b3sum: every length where the tree changes shape (empty, partial and whole blocks and chunks, the
// 16-chunk AVX-512 and 8-chunk AVX2 groups, subtrees of up to 1024 chunks and what follows them),
// fed at once, through a running hash in pieces that cut blocks, chunks and groups anywhere, and
// from a file range; through each compression path the CPU has (AVX-512, AVX2, portable).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { native } from '@ckpt/native';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir, useCleanup } from './helpers.js';

useCleanup();

const b3sum = (b: Buffer) =>
  execFileSync('b3sum', ['--no-names'], { input: b, maxBuffer: 1 << 20 })
    .toString()
    .trim();

const K = 1024;
const LENGTHS = [
  0,
  1,
  63,
  64,
  65,
  1023,
  1024,
  1025,
  2048,
  2049,
  3 * K,
  3 * K + 1,
  7 * K,
  8 * K,
  8 * K + 1,
  9 * K + 5,
  15 * K,
  16 * K,
  16 * K + 1,
  24 * K,
  24 * K + 1,
  31 * K + 1,
  32 * K,
  33 * K + 1,
  48 * K + 1,
  64 * K,
  1000 * K + 17,
  1024 * K,
  1024 * K + 1,
  1025 * K,
  2049 * K + 3,
  5 * 1024 * K + 123,
];

describe('BLAKE3 (the digest of image files)', () => {
  const widest = native.hash.blake3Use();
  afterAll(() => {
    native.hash.blake3Use(widest);
  });

  it("matches b3sum's digest at every tree shape, whole and in pieces, through every path this CPU has", () => {
    const data = randomBytes(LENGTHS[LENGTHS.length - 1]);
    const wants = LENGTHS.map((n) => b3sum(data.subarray(0, n)));
    const paths = (['avx512', 'avx2', 'portable'] as const).filter((p) => {
      native.hash.blake3Use(p);
      return native.hash.blake3Use() === p;
    });
    // The widest path there is is always among them; which ones this machine has is said.
    console.log(`BLAKE3 paths tested here: ${paths.join(', ')} (the CPU's widest: ${widest})`);
    expect(paths[0]).toBe(widest);
    for (const path of paths) {
      native.hash.blake3Use(path);
      LENGTHS.forEach((n, k) => {
        const b = data.subarray(0, n);
        expect(native.hash.hashOf('blake3', b), `${path}: ${n} bytes at once`).toBe(wants[k]);
        for (const piece of [1, 7, 64, 100, 1024, 4097, 65536, 1 << 20]) {
          if (piece === 1 && n > 64 * K) continue;
          const h = native.hash.hashNew('blake3');
          for (let off = 0; off < n; off += piece) native.hash.hashUpdate(h, b.subarray(off, Math.min(n, off + piece)));
          expect(native.hash.hashDigest(h), `${path}: ${n} bytes in pieces of ${piece}`).toBe(wants[k]);
        }
      });
    }
  });

  it('a running hash can be read and go on; a file range is hashed like the same bytes', () => {
    const data = randomBytes(300 * K + 11);
    const h = native.hash.hashNew('blake3');
    native.hash.hashUpdate(h, data.subarray(0, 100 * K));
    expect(native.hash.hashDigest(h)).toBe(b3sum(data.subarray(0, 100 * K)));
    native.hash.hashUpdate(h, data.subarray(100 * K));
    expect(native.hash.hashDigest(h)).toBe(b3sum(data));

    const file = path.join(makeTempDir('digest'), 'blob');
    fs.writeFileSync(file, data);
    const fd = fs.openSync(file, 'r');
    try {
      expect(native.hash.hashFile('blake3', fd, 4096, 200 * K)).toBe(b3sum(data.subarray(4096, 4096 + 200 * K)));
      expect(native.hash.hashFile('sha256', fd, 0, data.length)).toBe(execFileSync('sha256sum', [file]).toString().split(' ')[0]);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('a copy in parallel pieces (copyHashed, dumpPages) writes the bytes and hashes them as one running hash would', () => {
    // Past a chunk (1 MiB), a copy into a file is cut into 256 KiB pieces aligned on the running
    // hash's position, hashed by threads apart and joined: every alignment of where the hash
    // stands and where the copy ends (whole pieces, a byte past, a byte short).
    const P = 256 * K;
    const data = randomBytes(4 * 1024 * K + 4 * P);
    const dir = makeTempDir('digest');
    const src = path.join(dir, 'src');
    fs.writeFileSync(src, data);
    const from = fs.openSync(src, 'r');
    try {
      for (const before of [0, 17, 1024, P - 5, P, P + 4096]) {
        for (const length of [1024 * K + 1, 4 * P, 4 * P + 1, 5 * P - 1, 2 * 1024 * K + 4097, 4 * 1024 * K + 2 * P]) {
          const offset = 4096 + before;
          const prefix = data.subarray(0, before);
          const h = native.hash.hashNew('blake3');
          native.hash.hashUpdate(h, prefix);
          const dst = path.join(dir, `dst-${before}-${length}`);
          const to = fs.openSync(dst, 'w+');
          try {
            fs.writeSync(to, prefix);
            expect(native.fd.copyHashed(from, offset, length, to, h)).toEqual({ bytes: length });
            fs.writeSync(to, Buffer.from('end'));
          } finally {
            fs.closeSync(to);
          }
          const want = Buffer.concat([prefix, data.subarray(offset, offset + length)]);
          expect(native.hash.hashDigest(h), `${before} hashed before, ${length} copied`).toBe(b3sum(want));
          expect(fs.readFileSync(dst).equals(Buffer.concat([want, Buffer.from('end')])), `${before} before, ${length} copied`).toBe(true);
          fs.rmSync(dst);
        }
      }
      // A file shorter than the range asked fails in one line, the bytes it had notwithstanding.
      const to = fs.openSync(path.join(dir, 'short'), 'w');
      try {
        expect(() => native.fd.copyHashed(from, data.length - 1024 * K, 2 * 1024 * K, to, native.hash.hashNew('blake3'))).toThrow(/shrank/);
      } finally {
        fs.closeSync(to);
      }
    } finally {
      fs.closeSync(from);
    }
  });
});
