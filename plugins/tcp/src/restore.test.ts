// The TCP timestamp clock a restored connection goes on from, and the steps that take a rebuilt
// connection to its closing state.
import { describe, expect, it } from 'vitest';
import { closingPlan, timestampNow } from './restore.js';

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

describe('closingPlan', () => {
  const steps = (state: string, error = false, close = false) => {
    const p = closingPlan({ state, error }, close);
    return [
      p.savedFinIn && 'in',
      p.savedFinOut && 'out',
      p.finOut && 'shut',
      p.finIn && 'FIN',
      p.finOutAcked && 'ACK',
      p.reset && 'RST',
      p.dropSendQueue && 'drop',
    ]
      .filter(Boolean)
      .join(' ');
  };
  it('replays what each state had exchanged', () => {
    expect(steps('ESTABLISHED')).toBe('');
    expect(steps('FIN_WAIT1')).toBe('out shut');
    expect(steps('FIN_WAIT2')).toBe('out shut ACK');
    expect(steps('CLOSE_WAIT')).toBe('in FIN');
    expect(steps('CLOSING')).toBe('in out shut FIN');
    expect(steps('LAST_ACK')).toBe('in out shut FIN');
    expect(steps('CLOSE')).toBe('in out shut FIN ACK');
    expect(steps('CLOSE', true)).toBe('RST');
  });
  it('--tcp-close ends any connection cleanly, keeping what it had received', () => {
    expect(steps('ESTABLISHED', false, true)).toBe('shut FIN ACK drop');
    expect(steps('CLOSE_WAIT', false, true)).toBe('in shut FIN ACK drop');
    expect(closingPlan({ state: 'FIN_WAIT1' }, true).expect).toBe(7);
  });
});
