// The TCP timestamp clock a restored connection goes on from.
import { describe, expect, it } from 'vitest';
import { timestampNow } from './restore.js';

const conn = (timestamp: number, dumpedAt: number) => ({
  inqSeq: 0,
  outqSeq: 0,
  inq: '',
  outq: '',
  unsent: 0,
  mss: 1460,
  options: 0,
  sndWscale: 0,
  rcvWscale: 0,
  timestamp,
  dumpedAt,
});

describe('timestampNow', () => {
  it('goes on by the time away, in ms or (low bit set) in µs, keeping the low bit', () => {
    expect(timestampNow(conn(1000, 5000), 7000)).toBe(3000);
    expect(timestampNow(conn(1001, 5000), 7000)).toBe(1001 + 2_000_000);
  });
  it('never goes back (clock skew), and wraps at 2^32', () => {
    expect(timestampNow(conn(1000, 9000), 7000)).toBe(1000);
    expect(timestampNow(conn(0xffff_fff0, 0), 0x20)).toBe(0x10);
  });
});
