// The memory record schema: a realistic record passes, malformed ones are refused.
import { describe, expect, it } from 'vitest';
import { memoryRecord, type MemoryRecord } from './record.js';

const sample = (): MemoryRecord => ({
  vmas: [
    {
      start: 0x555555554000,
      end: 0x555555556000,
      perms: 'r-xp',
      kind: 'file-private',
      name: '/usr/bin/cat',
      path: '/usr/bin/cat',
      offset: 0,
      file: { size: 35280, mtimeMs: 1700000000123.456, ino: 1048602 },
      runs: [],
      blobOffset: 0,
    },
    { start: 0x555555758000, end: 0x555555779000, perms: 'rw-p', kind: 'anon', name: '[heap]', runs: [[0x555555758000, 8192]], blobOffset: 0 },
    {
      start: 0x7ffff7fc0000,
      end: 0x7ffff7fc1000,
      perms: 'rw-s',
      kind: 'shmem',
      name: '/memfd:buf (deleted)',
      offset: 0,
      shmem: { key: '00:01:1234', name: 'buf', size: 4096, blob: 'shmem-00_01_1234.img', segments: [[0, 4096]] },
      runs: [],
      blobOffset: 8192,
    },
    { start: 0x7ffff7fc4000, end: 0x7ffff7fc5000, perms: 'rw-s', kind: 'sysv', name: '/SYSV00000000', offset: 0, runs: [], blobOffset: 8192 },
    { start: 0x7ffff7fc8000, end: 0x7ffff7fca000, perms: 'r-xp', kind: 'vdso', name: '[vdso]', runs: [], blobOffset: 8192 },
    {
      start: 0x7ffffffde000,
      end: 0x7ffffffff000,
      perms: 'rw-p',
      kind: 'anon',
      name: '[stack]',
      growsDown: true,
      runs: [[0x7fffffffd000, 8192]],
      blobOffset: 8192,
    },
  ],
  pagesFile: 'pages-1234.img',
  pagesBytes: 16384,
  mm: {
    startCode: 0x555555554000,
    endCode: 0x555555556000,
    startData: 0x555555757000,
    endData: 0x555555758000,
    startBrk: 0x555555758000,
    brk: 0x555555779000,
    startStack: 0x7fffffffe000,
    argStart: 0x7fffffffe100,
    argEnd: 0x7fffffffe120,
    envStart: 0x7fffffffe120,
    envEnd: 0x7fffffffefe0,
  },
  auxv: Buffer.from('auxv bytes').toString('base64'),
  exe: '/usr/bin/cat',
});

describe('memoryRecord', () => {
  it('accepts a record as the dump writes it, after a JSON round trip', () => {
    const rec = JSON.parse(JSON.stringify(sample()));
    expect(memoryRecord.safeParse(rec).success).toBe(true);
    expect(memoryRecord.parse(rec)).toEqual(rec);
  });

  it('accepts a file offset or inode number beyond 2^53 (64-bit kernel values)', () => {
    const rec = sample();
    rec.vmas[0].offset = 2 ** 60;
    rec.vmas[0].file!.ino = 2 ** 60;
    expect(memoryRecord.safeParse(rec).success).toBe(true);
  });

  it('refuses a wrong type', () => {
    const rec = sample() as unknown as { pagesBytes: unknown };
    rec.pagesBytes = '16384';
    expect(memoryRecord.safeParse(rec).success).toBe(false);
  });

  it('refuses an unknown VMA kind', () => {
    const rec = sample();
    (rec.vmas[1] as { kind: string }).kind = 'heap';
    expect(memoryRecord.safeParse(rec).success).toBe(false);
  });

  it('refuses an unknown key, at the top and inside a VMA', () => {
    expect(memoryRecord.safeParse({ ...sample(), extra: 1 }).success).toBe(false);
    const rec = sample();
    (rec.vmas[0] as unknown as Record<string, unknown>).dev = '08:01';
    expect(memoryRecord.safeParse(rec).success).toBe(false);
  });

  it('refuses a missing field, a fractional address and a malformed run', () => {
    const { exe: _exe, ...noExe } = sample();
    expect(memoryRecord.safeParse(noExe).success).toBe(false);
    const frac = sample();
    frac.vmas[1].start = 0.5;
    expect(memoryRecord.safeParse(frac).success).toBe(false);
    const run = sample();
    (run.vmas[1].runs as unknown[]) = [[0x555555758000]];
    expect(memoryRecord.safeParse(run).success).toBe(false);
  });
});
