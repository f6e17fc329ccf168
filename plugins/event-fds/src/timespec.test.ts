// timerfd's fdinfo timespecs, "(sec, nsec)", in nanoseconds.
import { describe, expect, it } from 'vitest';
import { timespecNs } from './timespec.js';

describe('timespecNs', () => {
  it('reads "(sec, nsec)"', () => {
    expect(timespecNs('(0, 0)')).toBe(0n);
    expect(timespecNs('(1, 500000000)')).toBe(1_500_000_000n);
    expect(timespecNs('(0, 999999999)')).toBe(999_999_999n);
  });

  it('tolerates the spacing fdinfo uses and surrounding text', () => {
    expect(timespecNs('(2,5)')).toBe(2_000_000_005n);
    expect(timespecNs('  (3,   7)\n')).toBe(3_000_000_007n);
  });

  it('keeps precision beyond 2^53 nanoseconds', () => {
    expect(timespecNs('(9223372036, 854775807)')).toBe(9_223_372_036_854_775_807n);
  });

  it('is 0 when absent or unreadable', () => {
    expect(timespecNs(undefined)).toBe(0n);
    expect(timespecNs('')).toBe(0n);
    expect(timespecNs('(-1, 0)')).toBe(0n);
    expect(timespecNs('1, 0')).toBe(0n);
  });
});
