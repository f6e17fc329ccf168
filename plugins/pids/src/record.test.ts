// The pids record schema: a realistic record passes, malformed ones are refused.
import { describe, expect, it } from 'vitest';
import { pidsRecord, type PidsRecord } from './record.js';

const sample = (): PidsRecord => ({
  pid: 4242,
  ppid: 4200,
  pgid: 4242,
  sid: 4200,
  comm: 'node',
  cmdline: ['node', 'server.js', '--port', '8080'],
  creds: { uid: [1000, 1000, 1000], gid: [1000, 1000, 1000], groups: [4, 24, 27, 1000] },
  rlimits: [
    [0, 'inf', 'inf'],
    [3, '8388608', 'inf'],
    [7, '1024', '1048576'],
  ],
  personality: 0,
});

describe('pidsRecord', () => {
  it('accepts a record as the dump writes it, after a JSON round trip', () => {
    const rec = JSON.parse(JSON.stringify(sample()));
    expect(pidsRecord.parse(rec)).toEqual(rec);
  });

  it('accepts a record of an older dump, without rlimits and personality', () => {
    const { rlimits: _r, personality: _p, ...old } = sample();
    expect(pidsRecord.safeParse(old).success).toBe(true);
  });

  it('refuses a wrong type', () => {
    expect(pidsRecord.safeParse({ ...sample(), pid: '4242' }).success).toBe(false);
    expect(pidsRecord.safeParse({ ...sample(), cmdline: 'node server.js' }).success).toBe(false);
  });

  it('refuses an unknown key, at the top and in creds', () => {
    expect(pidsRecord.safeParse({ ...sample(), tgid: 4242 }).success).toBe(false);
    expect(pidsRecord.safeParse({ ...sample(), creds: { ...sample().creds, fsuid: [0] } }).success).toBe(false);
  });

  it('refuses a malformed rlimit', () => {
    expect(pidsRecord.safeParse({ ...sample(), rlimits: [[0, 'unlimited', 'inf']] }).success).toBe(false);
    expect(pidsRecord.safeParse({ ...sample(), rlimits: [[0, 1024, 'inf']] }).success).toBe(false);
    expect(pidsRecord.safeParse({ ...sample(), rlimits: [[0, '1024']] }).success).toBe(false);
  });
});
