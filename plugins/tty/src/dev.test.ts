// dev_t decoding: which devices are pty slaves, and their number.
import { describe, expect, it } from 'vitest';
import { devParts, ptsIndex } from './dev.js';

/** The kernel's new_encode_dev (userspace dev_t, 32 bits). */
const mkdev = (major: number, minor: number) => (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12);

describe('devParts', () => {
  it('decodes small and large minors', () => {
    expect(devParts(mkdev(136, 3))).toEqual({ major: 136, minor: 3 });
    expect(devParts(mkdev(5, 2))).toEqual({ major: 5, minor: 2 });
    expect(devParts(mkdev(259, 0x12345))).toEqual({ major: 259, minor: 0x12345 });
    expect(devParts(0x8803)).toEqual({ major: 0x88, minor: 3 });
  });
});

describe('ptsIndex', () => {
  it('numbers Unix98 pty slaves across majors 136..143', () => {
    expect(ptsIndex(mkdev(136, 0))).toBe(0);
    expect(ptsIndex(mkdev(136, 3))).toBe(3);
    expect(ptsIndex(mkdev(136, 255))).toBe(255);
    expect(ptsIndex(mkdev(137, 0))).toBe(256);
    expect(ptsIndex(mkdev(143, 255))).toBe(2047);
  });

  it('is undefined for other devices (ptmx, /dev/tty, consoles, /dev/null)', () => {
    expect(ptsIndex(mkdev(5, 2))).toBeUndefined();
    expect(ptsIndex(mkdev(5, 0))).toBeUndefined();
    expect(ptsIndex(mkdev(4, 1))).toBeUndefined();
    expect(ptsIndex(mkdev(1, 3))).toBeUndefined();
    expect(ptsIndex(mkdev(135, 0))).toBeUndefined();
    expect(ptsIndex(mkdev(144, 0))).toBeUndefined();
    expect(ptsIndex(0)).toBeUndefined();
  });
});
