// The registers record schema: a realistic record passes, malformed ones are refused.
import { describe, expect, it } from 'vitest';
import { registersRecord, type RegistersRecord, type ThreadRecord } from './record.js';

const b64 = (n: number) => Buffer.alloc(n, 7).toString('base64');

const thread = (tid: number, more: Partial<ThreadRecord> = {}): ThreadRecord => ({
  tid,
  comm: tid === 100 ? 'server' : 'worker',
  gpr: b64(216),
  xstate: b64(2696),
  sigmask: '0x0',
  pending: [],
  rseq: { pointer: '0x7ffff7d8afe0', size: 32, signature: 0x53053053 },
  robustList: { head: '0x7ffff7d8a9e0', len: 24 },
  clearChildTid: '0x7ffff7d8a9d0',
  ...more,
});

const sample = (): RegistersRecord => ({
  xstateSize: 2696,
  xcr0: '0x2e7',
  sigactions: [
    { sig: 2, handler: '0x555555556189', flags: '0x4000000', restorer: '0x7ffff7c42520', mask: '0x0' },
    { sig: 13, handler: '0x1', flags: '0x0', restorer: '0x0', mask: '0x0' },
  ],
  sharedPending: [b64(128)],
  threads: [
    thread(100, { altStack: { sp: '0x7ffff7ff0000', flags: 0, size: 65536 } }),
    thread(101, { rseq: null, sigmask: '0xfffffffe7ffbfeff', pending: [b64(128)] }),
  ],
  itimers: [[0, 1000000, 250000]],
});

describe('registersRecord', () => {
  it('accepts a record as the dump writes it, after a JSON round trip', () => {
    const rec = JSON.parse(JSON.stringify(sample()));
    expect(registersRecord.parse(rec)).toEqual(rec);
  });

  it('accepts a record without itimers and threads without an alternate stack', () => {
    const { itimers: _i, ...rec } = sample();
    rec.threads = [thread(100)];
    expect(registersRecord.safeParse(rec).success).toBe(true);
  });

  it('refuses a wrong type', () => {
    expect(registersRecord.safeParse({ ...sample(), xstateSize: '2696' }).success).toBe(false);
    expect(registersRecord.safeParse({ ...sample(), threads: [thread(100, { rseq: undefined as never })] }).success).toBe(false);
  });

  it('refuses addresses and masks that are not 0x hex', () => {
    expect(registersRecord.safeParse({ ...sample(), xcr0: '743' }).success).toBe(false);
    expect(registersRecord.safeParse({ ...sample(), threads: [thread(100, { clearChildTid: '0xzz' })] }).success).toBe(false);
  });

  it('refuses a signal number out of range', () => {
    const rec = sample();
    rec.sigactions[0].sig = 65;
    expect(registersRecord.safeParse(rec).success).toBe(false);
  });

  it('refuses an unknown key, at the top and in a thread', () => {
    expect(registersRecord.safeParse({ ...sample(), fsBase: '0x0' }).success).toBe(false);
    expect(registersRecord.safeParse({ ...sample(), threads: [{ ...thread(100), fpu: 'x' }] }).success).toBe(false);
  });

  it('refuses a process with no thread (it could only crash)', () => {
    expect(registersRecord.safeParse({ ...sample(), threads: [] }).success).toBe(false);
  });
});
