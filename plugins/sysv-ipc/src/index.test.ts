// sysvipc.json is validated where the plugin reads it: a malformed file is refused naming the file and the field.
import { describe, expect, it } from 'vitest';
import { readSysvRecord } from './index.js';

type Image = Parameters<typeof readSysvRecord>[0];
const imageWith = (json: unknown, present = true): Image =>
  ({ dir: '/img', manifest: { files: present ? { 'sysvipc.json': {} } : {} }, readJson: () => json }) as unknown as Image;

describe('readSysvRecord', () => {
  it('is undefined when the image has no sysvipc.json', () => {
    expect(readSysvRecord(imageWith(undefined, false))).toBeUndefined();
  });

  it('returns a well-formed record', () => {
    const rec = {
      namespace: false,
      objects: [{ kind: 'shm', id: 3, key: 0, uid: 0, gid: 0, cuid: 0, cgid: 0, mode: 0o600, size: 4096, destroyed: true, bytes: { offset: 0, length: 4096 } }],
    };
    expect(readSysvRecord(imageWith(rec))).toEqual(rec);
  });

  it('throws ERR_CKPT_IMAGE_CORRUPT naming the file and the field', () => {
    const rec = { namespace: false, objects: [{ kind: 'shm', id: 3, key: '0x10', uid: 0, gid: 0, cuid: 0, cgid: 0, mode: 0o600 }] };
    expect(() => readSysvRecord(imageWith(rec))).toThrow(
      expect.objectContaining({
        code: 'ERR_CKPT_IMAGE_CORRUPT',
        message: expect.stringMatching(/^image \/img: sysvipc\.json is malformed at objects\[0\]\.key: /),
      }),
    );
  });
});
