// devName: st_dev as /proc/PID/maps prints it, so fds and mappings of one object agree.
import { describe, expect, it } from 'vitest';
import { devName } from './dev.js';

/** The kernel's new_encode_dev (userspace dev_t, 32 bits). */
const mkdev = (major: number, minor: number) => (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12);

describe('devName', () => {
  it('prints major:minor in hex, two digits at least', () => {
    expect(devName(mkdev(8, 1))).toBe('08:01');
    expect(devName(mkdev(0, 1))).toBe('00:01');
    expect(devName(mkdev(0xfd, 0x10))).toBe('fd:10');
  });

  it('decodes minors above 255 and majors above 255', () => {
    expect(devName(mkdev(0, 0x123))).toBe('00:123');
    expect(devName(mkdev(259, 0x12345))).toBe('103:12345');
  });
});
