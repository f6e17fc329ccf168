// The migration's framing (wire.ts): a file's body taken from chunks of any size lands whole, in
// order, and hashed as it came.
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { native } from '@ckpt/native';
import { describe, expect, it } from 'vitest';
import { StreamReader, takeBody } from './wire.js';

describe('takeBody', () => {
  it('writes and hashes a body from small and big chunks mixed, exactly, and leaves what follows', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ckpt-unit-wire-'));
    try {
      for (const sizes of [[10], [65536, 65536, 1 << 20, 3, 300_000, 1 << 20, 70_000], [1 << 20, 1 << 20, 5], [(1 << 20) + 7, 100]]) {
        const parts = sizes.map((n) => randomBytes(n));
        const body = Buffer.concat(parts);
        const pt = new PassThrough();
        const r = new StreamReader(pt);
        for (const p of parts) pt.write(p);
        pt.write(Buffer.from('NEXT'));
        const path = join(dir, 'body');
        const fd = openSync(path, 'w');
        const hash = native.hash.hashNew('blake3');
        await takeBody(r, body.length, fd, hash);
        closeSync(fd);
        expect(readFileSync(path).equals(body)).toBe(true);
        const want = native.hash.hashNew('blake3');
        native.hash.hashUpdate(want, body);
        expect(native.hash.hashDigest(hash)).toBe(native.hash.hashDigest(want));
        expect((await r.exact(4))!.toString()).toBe('NEXT');
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
