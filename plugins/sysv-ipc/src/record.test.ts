// The SysV IPC schemas: the per-process record and the image-wide sysvipc.json.
import { describe, expect, it } from 'vitest';
import { sysvProcessRecord, sysvRecord, type SysvProcessRecord, type SysvRecord } from './record.js';

const proc = (): SysvProcessRecord => ({
  attachments: [
    { start: 0x7ffff7fb0000, end: 0x7ffff7fb4000, shmid: 32769, perms: 'rw-s' },
    { start: 0x7ffff7fa0000, end: 0x7ffff7fa1000, shmid: 32770, perms: 'r--s' },
  ],
});

const image = (): SysvRecord => ({
  namespace: true,
  objects: [
    {
      kind: 'shm',
      id: 32769,
      key: 0x1234,
      uid: 1000,
      gid: 1000,
      cuid: 1000,
      cgid: 1000,
      mode: 0o600,
      size: 16384,
      destroyed: false,
      bytes: { offset: 0, length: 16384 },
    },
    {
      kind: 'msg',
      id: 0,
      key: -1,
      uid: 1000,
      gid: 1000,
      cuid: 1000,
      cgid: 1000,
      mode: 0o644,
      qbytes: 16384,
      messages: [
        { type: 1, offset: 16384, length: 5 },
        { type: 7, offset: 16389, length: 0 },
      ],
    },
    { kind: 'sem', id: 1, key: 0, uid: 0, gid: 0, cuid: 0, cgid: 0, mode: 0o600, values: [1, 0, 5] },
  ],
});

describe('sysvProcessRecord', () => {
  it('accepts a record as the dump writes it (also with no attachment)', () => {
    expect(sysvProcessRecord.parse(JSON.parse(JSON.stringify(proc())))).toEqual(proc());
    expect(sysvProcessRecord.safeParse({ attachments: [] }).success).toBe(true);
  });

  it('refuses a wrong type and an unknown key', () => {
    expect(sysvProcessRecord.safeParse({ attachments: [{ ...proc().attachments[0], shmid: '32769' }] }).success).toBe(false);
    expect(sysvProcessRecord.safeParse({ attachments: [{ ...proc().attachments[0], key: 1 }] }).success).toBe(false);
    expect(sysvProcessRecord.safeParse({ ...proc(), objects: [] }).success).toBe(false);
  });
});

describe('sysvRecord (sysvipc.json)', () => {
  it('accepts objects of every kind as the dump writes them', () => {
    const rec = JSON.parse(JSON.stringify(image()));
    expect(sysvRecord.parse(rec)).toEqual(rec);
  });

  it('refuses an unknown kind, a wrong type and an unknown key', () => {
    const bad = image();
    (bad.objects[0] as { kind: string }).kind = 'sock';
    expect(sysvRecord.safeParse(bad).success).toBe(false);
    expect(sysvRecord.safeParse({ ...image(), namespace: 'yes' }).success).toBe(false);
    const extra = image();
    (extra.objects[2] as Record<string, unknown>).otime = 0;
    expect(sysvRecord.safeParse(extra).success).toBe(false);
  });

  it('refuses contents saved inline instead of as a blob range', () => {
    const inline = image() as unknown as { objects: Array<Record<string, unknown>> };
    inline.objects[0].bytes = 'AAAA';
    expect(sysvRecord.safeParse(inline).success).toBe(false);
  });
});
