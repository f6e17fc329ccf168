// The fd data schema of the files plugin (ReferenceData), for every kind it claims.
import { describe, expect, it } from 'vitest';
import { referenceData, type ReferenceData } from './reference.js';

const file = (): ReferenceData => ({
  path: '/srv/app/data.log',
  flags: 0o102001,
  pos: 4096,
  policy: 'verify',
  file: { size: 8192, mtimeMs: 1700000000123.456, ino: 2621442, sha256: 'a'.repeat(64) },
});
const samples = (): Record<string, ReferenceData> => ({
  file: file(),
  disk: { path: '/proc/self/status', flags: 0, pos: 0, policy: 'disk', file: { size: 0, mtimeMs: 1700000000000, ino: 4026531841 } },
  directory: { path: '/srv/app', flags: 0o200000, pos: 2 ** 63 - 1 },
  chr: { path: '/dev/null', flags: 2, pos: 0 },
  fifo: { path: '/tmp/ctl.fifo', flags: 0, pos: 0, pipe: { id: '2049:131075', capacity: 65536, data: Buffer.from('queued').toString('base64') } },
  pipeWriteEnd: { flags: 1, pos: 0, pipe: { id: '123456', capacity: 65536 } },
  memfd: { flags: 2, pos: 10, shmem: { key: '00:01:5678', name: 'cache', size: 8192, blob: 'shmem-00_01_5678.img', segments: [[0, 4096]] } },
});

describe('referenceData', () => {
  it('accepts the data of every kind as the dump writes it, after a JSON round trip', () => {
    for (const [what, d] of Object.entries(samples())) {
      const json = JSON.parse(JSON.stringify(d));
      expect(referenceData.safeParse(json).success, what).toBe(true);
      expect(referenceData.parse(json)).toEqual(json);
    }
  });

  it('accepts positions and inode numbers beyond 2^53 (a directory read to its end on ext4)', () => {
    expect(referenceData.safeParse({ ...file(), pos: 2 ** 63 - 1, file: { ...file().file!, ino: 2 ** 60 } }).success).toBe(true);
  });

  it('refuses a wrong type', () => {
    expect(referenceData.safeParse({ ...file(), flags: '0' }).success).toBe(false);
    expect(referenceData.safeParse({ ...file(), pos: 1.5 }).success).toBe(false);
    expect(referenceData.safeParse({ ...file(), file: { ...file().file!, sha256: 'xyz' } }).success).toBe(false);
  });

  it('refuses an unknown policy', () => {
    expect(referenceData.safeParse({ ...file(), policy: 'content' }).success).toBe(false);
  });

  it('refuses an unknown key, at the top and nested', () => {
    expect(referenceData.safeParse({ ...file(), kind: 'file' }).success).toBe(false);
    expect(referenceData.safeParse({ ...file(), file: { ...file().file!, dev: 2049 } }).success).toBe(false);
    expect(referenceData.safeParse({ flags: 0, pos: 0, pipe: { id: '1', capacity: 4096, size: 1 } }).success).toBe(false);
  });
});
