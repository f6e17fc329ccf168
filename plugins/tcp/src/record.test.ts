// The tcp plugin's fd record schema: what the dump writes is accepted as is, anything else refused.
import { describe, expect, expectTypeOf, it } from 'vitest';
import type { InetAddr as NativeInetAddr, TcpRepairWindow } from '@ckpt/native';
import { inetSocketData, tcpOptions, type InetSocketData, type TcpConnData } from './record.js';

/** The record types as they were written by hand before the schemas (they must not drift). */
interface LegacyTcpConnData {
  inqSeq: number;
  outqSeq: number;
  inq: string;
  outq: string;
  unsent: number;
  mss: number;
  options: number;
  sndWscale: number;
  rcvWscale: number;
  timestamp: number;
  window?: TcpRepairWindow;
  dumpedAt: number;
}
interface LegacyInetSocketData {
  proto: 'tcp' | 'udp' | 'udplite' | 'ping' | 'raw';
  protocol?: number;
  family: 4 | 6;
  state: string;
  flags: number;
  local?: NativeInetAddr;
  peer?: NativeInetAddr;
  opts: Array<[number, number, number]>;
  rawOpts?: Array<[number, number, string]>;
  backlog?: number;
  tcp?: LegacyTcpConnData;
  datagrams?: Array<{ from: NativeInetAddr; data: string }>;
  recvQueue: number;
  sendQueue: number;
  shutdown?: number;
  filter?: { code: string; locked?: boolean };
  locked?: boolean;
  note?: string;
}

const b64 = (s: string) => Buffer.from(s).toString('base64');

const established: InetSocketData = {
  proto: 'tcp',
  family: 4,
  state: 'ESTABLISHED',
  flags: 0o4000,
  local: { family: 4, addr: '127.0.0.1', port: 6379 },
  peer: { family: 4, addr: '127.0.0.1', port: 50000 },
  opts: [
    [6, 1, 1],
    [1, 9, 1],
  ],
  rawOpts: [[6, 13, b64('cubic')]],
  tcp: {
    inqSeq: 4_000_000_000,
    outqSeq: 12345,
    inq: b64('GET x\r\n'),
    outq: '',
    unsent: 0,
    mss: 65483,
    options: 7,
    sndWscale: 7,
    rcvWscale: 7,
    timestamp: 3_000_000_001,
    window: { sndWl1: 1, sndWnd: 65536, maxWindow: 65536, rcvWnd: 65536, rcvWup: 2 },
    dumpedAt: 1_700_000_000_000,
  },
  recvQueue: 7,
  sendQueue: 0,
  locked: true,
};

const listener: InetSocketData = {
  proto: 'tcp',
  family: 6,
  state: 'LISTEN',
  flags: 0,
  local: { family: 6, addr: '::', port: 8080, scope: 2 },
  opts: [[1, 2, 1]],
  backlog: 511,
  recvQueue: 0,
  sendQueue: 0,
  note: '2 connection(s) not yet accepted were dropped (their peers see a reset)',
};

const udp: InetSocketData = {
  proto: 'udp',
  family: 6,
  state: 'UNCONN',
  flags: 0,
  local: { family: 6, addr: '::1', port: 5353 },
  opts: [],
  datagrams: [
    { from: { family: 6, addr: '::ffff:127.0.0.1', port: 40000 }, data: b64('ping') },
    { from: { family: 6, addr: '::1', port: 40001, flowinfo: 5 }, data: '' },
  ],
  recvQueue: 4,
  sendQueue: 0,
};

describe('inetSocketData', () => {
  it('accepts every kind of record the dump writes, unchanged', () => {
    for (const rec of [
      established,
      listener,
      udp,
      {
        proto: 'tcp',
        family: 4,
        state: 'CLOSE_WAIT',
        flags: 0,
        opts: [],
        recvQueue: 0,
        sendQueue: 0,
        note: 'connection in state CLOSE_WAIT is restored reset',
      },
    ]) {
      expect(inetSocketData.parse(JSON.parse(JSON.stringify(rec)))).toEqual(rec);
    }
  });

  it('rejects wrong types', () => {
    expect(inetSocketData.safeParse({ ...established, family: '4' }).success).toBe(false);
    expect(inetSocketData.safeParse({ ...established, proto: 'sctp' }).success).toBe(false);
    expect(inetSocketData.safeParse({ ...established, recvQueue: 1.5 }).success).toBe(false);
    expect(inetSocketData.safeParse({ ...established, opts: [[6, 1]] }).success).toBe(false);
    expect(inetSocketData.safeParse({ ...established, tcp: { ...established.tcp, inq: 42 } }).success).toBe(false);
    expect(inetSocketData.safeParse({ ...udp, datagrams: [{ from: { family: 4, addr: '1.2.3.4', port: 70000 }, data: '' }] }).success).toBe(false);
  });

  it('rejects unknown keys, at any depth', () => {
    expect(inetSocketData.safeParse({ ...established, extra: 1 }).success).toBe(false);
    expect(inetSocketData.safeParse({ ...established, local: { ...established.local, zone: 'eth0' } }).success).toBe(false);
    expect(inetSocketData.safeParse({ ...established, tcp: { ...established.tcp, sack: true } }).success).toBe(false);
  });

  it('rejects a record missing a required field', () => {
    const { opts: _opts, ...noOpts } = established;
    expect(inetSocketData.safeParse(noOpts).success).toBe(false);
  });

  it('has the types the plugin had before the schemas', () => {
    expectTypeOf<InetSocketData>().toMatchTypeOf<LegacyInetSocketData>();
    expectTypeOf<LegacyInetSocketData>().toMatchTypeOf<InetSocketData>();
    expectTypeOf<TcpConnData>().toMatchTypeOf<LegacyTcpConnData>();
    expectTypeOf<LegacyTcpConnData>().toMatchTypeOf<TcpConnData>();
  });
});

describe('tcpOptions', () => {
  it('takes close, and nothing else', () => {
    expect(tcpOptions.parse({ close: true })).toEqual({ close: true });
    expect(tcpOptions.safeParse({ close: 'yes' }).success).toBe(false);
    expect(tcpOptions.safeParse({ other: 1 }).success).toBe(false);
  });
});
