// How unix sockets are described in messages and in `ckpt show`.
import { describe, expect, it } from 'vitest';
import type { FdRecord } from '@ckpt/core';
import { NAME, type UnixSocketData } from './record.js';
import { describeSocket, unixSocketRows } from './show.js';

const opts = {
  sndbuf: 0,
  rcvbuf: 0,
  passcred: false,
  passsec: false,
  peekOff: -1,
  rcvlowat: 1,
  rcvtimeo: [0, 0] as [number, number],
  sndtimeo: [0, 0] as [number, number],
};
const rec = (more: Partial<UnixSocketData>): UnixSocketData => ({
  ino: 1,
  type: 'stream',
  state: 'connected',
  flags: 0,
  shutdown: 0,
  queue: [],
  queuedBytes: 0,
  opts,
  ...more,
});
const fd = (n: number, data: UnixSocketData): FdRecord => ({ fd: n, cloexec: false, owner: NAME, kind: 'unix', flags: 2, data });

describe('describeSocket', () => {
  it('names the type and the address', () => {
    expect(describeSocket({ type: 'stream', name: '/run/x.sock' })).toBe('a unix stream socket (/run/x.sock)');
    expect(describeSocket({ type: 'dgram' })).toBe('a unix dgram socket');
  });
});

describe('unixSocketRows', () => {
  it('one row per socket: holders, peer, queues each way, external and pending notes', () => {
    const a = rec({ ino: 10, peer: 11, queue: [{ data: 'eA==' }], queuedBytes: 1 });
    const b = rec({ ino: 11, peer: 10, queue: [{ data: 'eHk=' }], queuedBytes: 2 });
    const l = rec({ ino: 12, state: 'listening', name: '/run/l', pending: [13, 14] });
    const e = rec({ ino: 15, type: 'seqpacket', peer: 99, peerName: '@bus', external: '/run/bus' });
    const c = rec({ ino: 16, state: 'disconnected', peer: 0 });
    const rows = unixSocketRows([
      { pid: 1, fds: [fd(3, a), fd(4, l), fd(5, e), fd(6, c)] },
      { pid: 2, fds: [fd(3, b), { fd: 4, cloexec: false, owner: NAME, kind: 'unix', flags: 2, sameAs: { pid: 1, fd: 3 } }] },
    ]);
    expect(rows.map((r) => [r.state, r.holders.join(' '), r.local, r.remote, r.recvQ, r.recvMessages, r.sendQ])).toEqual([
      ['connected', '1:3 2:4', '', '[2:3]', 1, 1, 2],
      ['listening (2 pending)', '1:4', '/run/l', '', 0, 0, 0],
      ['connected (external)', '1:5', '', '/run/bus', 0, 0, 0],
      ['disconnected', '1:6', '', '(closed)', 0, 0, 0],
      ['connected', '2:3', '', '[1:3]', 2, 1, 1],
    ]);
  });
});
