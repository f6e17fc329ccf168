// How tcp sockets are described in messages and in `ckpt show`.
import { describe, expect, it } from 'vitest';
import type { FdRecord } from '@ckpt/core';
import { NAME, type InetSocketData } from './record.js';
import { describeSocket, fmtAddr, inetSocketRows } from './show.js';

describe('describeSocket', () => {
  it('names the protocol, the family and both ends', () => {
    expect(describeSocket({ proto: 'tcp', family: 6, local: { family: 6, addr: '::1', port: 6379 }, peer: { family: 6, addr: '::1', port: 50000 } })).toBe(
      'tcp6 [::1]:6379 -> [::1]:50000',
    );
    expect(describeSocket({ proto: 'udp', family: 4, local: { family: 4, addr: '0.0.0.0', port: 53 } })).toBe('udp 0.0.0.0:53');
    expect(describeSocket({ proto: 'tcp', family: 4 })).toBe('tcp *');
    expect(fmtAddr(undefined)).toBe('*');
  });
});

describe('inetSocketRows', () => {
  const data = (more: Partial<InetSocketData>): InetSocketData => ({
    proto: 'tcp',
    family: 4,
    state: 'LISTEN',
    flags: 0,
    opts: [],
    recvQueue: 0,
    sendQueue: 0,
    ...more,
  });
  it('one row per socket, with every holder, its state, queues and note', () => {
    const fds: FdRecord[] = [
      { fd: 3, cloexec: false, owner: NAME, kind: 'tcp', flags: 2, data: data({ local: { family: 4, addr: '0.0.0.0', port: 80 }, backlog: 128, note: 'n' }) },
      {
        fd: 4,
        cloexec: false,
        owner: NAME,
        kind: 'tcp',
        flags: 2,
        data: data({
          state: 'ESTABLISHED',
          family: 6,
          local: { family: 6, addr: '::1', port: 80 },
          peer: { family: 6, addr: '::1', port: 9 },
          recvQueue: 5,
          sendQueue: 2,
          locked: true,
        }),
      },
      { fd: 5, cloexec: false, owner: '@ckpt/plugin-files', kind: 'file', flags: 0, data: {} },
    ];
    const rows = inetSocketRows([
      { pid: 10, fds },
      { pid: 11, fds: [{ fd: 7, cloexec: false, owner: NAME, kind: 'tcp', flags: 2, sameAs: { pid: 10, fd: 4 } }] },
    ]);
    expect(rows).toEqual([
      {
        family: 'inet',
        type: 'tcp',
        state: 'LISTEN (backlog 128)',
        holders: ['10:3'],
        local: '0.0.0.0:80',
        remote: '',
        recvQ: 0,
        recvMessages: 0,
        sendQ: 0,
        note: 'n',
      },
      {
        family: 'inet6',
        type: 'tcp',
        state: 'ESTABLISHED (blocked)',
        holders: ['10:4', '11:7'],
        local: '[::1]:80',
        remote: '[::1]:9',
        recvQ: 5,
        recvMessages: 0,
        sendQ: 2,
      },
    ]);
  });
});
