import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseLimits } from './index.js';

describe('parseLimits', () => {
  it('reads the 16 limits of /proc/self/limits as prlimit gives them', () => {
    const rows = parseLimits(readFileSync('/proc/self/limits', 'utf8'));
    expect(rows).toHaveLength(16);
    expect(rows!.map((r) => r[0])).toEqual([...Array(16).keys()]);
    // RLIMIT_NOFILE (7): Node raises the soft limit to the hard one at start-up; both are numbers.
    expect(rows![7][1]).toMatch(/^\d+$/);
  });

  it('takes "unlimited" as infinity and refuses a file it does not know', () => {
    const head = 'Limit                     Soft Limit           Hard Limit           Units     \n';
    const row = (n: string) => `Max ${n.padEnd(22)}unlimited            4096                 bytes     \n`;
    const text = head + Array.from({ length: 16 }, (_, i) => row(`thing ${i}`)).join('');
    expect(parseLimits(text)?.[3]).toEqual([3, 'inf', '4096']);
    expect(parseLimits(head + row('only one'))).toBeUndefined();
    expect(parseLimits(`${head}garbage\n`)).toBeUndefined();
  });
});
