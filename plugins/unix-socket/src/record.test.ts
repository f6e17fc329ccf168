// The unix-socket plugin's fd record schema: what the dump writes is accepted as is, anything else refused.
import { describe, expect, expectTypeOf, it } from 'vitest';
import { unixSocketData, unixSocketOptions, type QueuedMessage, type UnixOptions, type UnixSocketData } from './record.js';

/** The record types as they were written by hand before the schemas (they must not drift). */
interface LegacyUnixOptions {
  sndbuf: number;
  rcvbuf: number;
  passcred: boolean;
  passsec: boolean;
  peekOff: number;
  rcvlowat: number;
  rcvtimeo: [number, number];
  sndtimeo: [number, number];
}
interface LegacyQueuedMessage {
  data: string;
  from?: string;
  fromRaw?: string;
}
interface LegacyUnixSocketData {
  ino: number;
  type: 'stream' | 'dgram' | 'seqpacket';
  state: 'unconnected' | 'listening' | 'connected' | 'pending' | 'disconnected';
  flags: number;
  name?: string;
  nameRaw?: string;
  bound?: boolean;
  dir?: string;
  file?: { present: boolean; mode?: number; uid?: number; gid?: number };
  peer?: number;
  peerName?: string;
  peerNameRaw?: string;
  listener?: number;
  external?: string;
  externalRaw?: string;
  backlog?: number;
  pending?: number[];
  droppedPending?: number;
  shutdown: number;
  error?: number;
  queue: LegacyQueuedMessage[];
  queuedBytes: number;
  droppedBytes?: number;
  opts: LegacyUnixOptions;
}

const b64 = (s: string) => Buffer.from(s).toString('base64');
const opts: UnixOptions = {
  sndbuf: 212992,
  rcvbuf: 212992,
  passcred: false,
  passsec: false,
  peekOff: -1,
  rcvlowat: 1,
  rcvtimeo: [0, 0],
  sndtimeo: [5, 250000],
};

const listener: UnixSocketData = {
  ino: 81234,
  type: 'stream',
  state: 'listening',
  flags: 0o4000,
  name: 'srv.sock',
  nameRaw: b64('srv.sock'),
  bound: true,
  dir: '/tmp/app',
  file: { present: true, mode: 0o755, uid: 1000, gid: 1000 },
  backlog: 128,
  pending: [81240],
  droppedPending: 1,
  shutdown: 0,
  queue: [],
  queuedBytes: 0,
  opts,
};
const accepted: UnixSocketData = {
  ino: 81235,
  type: 'stream',
  state: 'connected',
  flags: 0,
  name: 'srv.sock',
  nameRaw: b64('srv.sock'),
  bound: false,
  dir: '/tmp/app',
  file: { present: true, mode: 0o755, uid: 1000, gid: 1000 },
  peer: 81236,
  shutdown: 1,
  error: 104,
  queue: [{ data: b64('hello world') }],
  queuedBytes: 11,
  opts,
};
const externalClient: UnixSocketData = {
  ino: 81237,
  type: 'seqpacket',
  state: 'connected',
  flags: 0,
  peer: 99,
  peerName: '@bus',
  peerNameRaw: Buffer.from('\0bus').toString('base64'),
  external: '/run/bus',
  externalRaw: b64('/run/bus'),
  shutdown: 0,
  queue: [{ data: b64('x') }],
  queuedBytes: 1,
  droppedBytes: 1,
  opts,
};
const dgram: UnixSocketData = {
  ino: 81238,
  type: 'dgram',
  state: 'unconnected',
  flags: 0,
  name: '@log',
  nameRaw: Buffer.from('\0log').toString('base64'),
  bound: true,
  shutdown: 0,
  queue: [{ data: b64('a'), from: '/tmp/c', fromRaw: b64('/tmp/c') }, { data: '' }],
  queuedBytes: 1,
  opts,
};
const pending: UnixSocketData = {
  ino: 81240,
  type: 'stream',
  state: 'pending',
  flags: 0,
  peer: 0,
  peerName: 'srv.sock',
  peerNameRaw: b64('srv.sock'),
  listener: 81234,
  shutdown: 0,
  queue: [],
  queuedBytes: 0,
  opts,
  file: { present: false },
};

describe('unixSocketData', () => {
  it('accepts every kind of record the dump writes, unchanged', () => {
    for (const rec of [listener, accepted, externalClient, dgram, pending]) {
      expect(unixSocketData.parse(JSON.parse(JSON.stringify(rec)))).toEqual(rec);
    }
  });

  it('fields the dump sets to undefined are absent once written, and accepted', () => {
    const rec = JSON.parse(JSON.stringify({ ...pending, peerName: undefined, peerNameRaw: undefined }));
    expect(unixSocketData.parse(rec)).toEqual(rec);
  });

  it('rejects wrong types', () => {
    expect(unixSocketData.safeParse({ ...accepted, ino: '81235' }).success).toBe(false);
    expect(unixSocketData.safeParse({ ...accepted, type: 'raw' }).success).toBe(false);
    expect(unixSocketData.safeParse({ ...accepted, state: 'closed' }).success).toBe(false);
    expect(unixSocketData.safeParse({ ...accepted, queue: [{ data: 5 }] }).success).toBe(false);
    expect(unixSocketData.safeParse({ ...accepted, opts: { ...opts, rcvtimeo: [1] } }).success).toBe(false);
    expect(unixSocketData.safeParse({ ...listener, pending: [1.5] }).success).toBe(false);
  });

  it('rejects unknown keys, at any depth', () => {
    expect(unixSocketData.safeParse({ ...accepted, peercred: 1 }).success).toBe(false);
    expect(unixSocketData.safeParse({ ...accepted, opts: { ...opts, linger: 0 } }).success).toBe(false);
    expect(unixSocketData.safeParse({ ...accepted, file: { present: true, inode: 1 } }).success).toBe(false);
    expect(unixSocketData.safeParse({ ...dgram, queue: [{ data: '', cred: {} }] }).success).toBe(false);
  });

  it('has the types the plugin had before the schemas', () => {
    expectTypeOf<UnixSocketData>().toMatchTypeOf<LegacyUnixSocketData>();
    expectTypeOf<LegacyUnixSocketData>().toMatchTypeOf<UnixSocketData>();
    expectTypeOf<QueuedMessage>().toMatchTypeOf<LegacyQueuedMessage>();
    expectTypeOf<LegacyQueuedMessage>().toMatchTypeOf<QueuedMessage>();
  });
});

describe('unixSocketOptions', () => {
  it('takes unix: externals only', () => {
    expect(unixSocketOptions.parse({ external: ['unix:/run/x', 'unix:@y=/run/z'] })).toEqual({ external: ['unix:/run/x', 'unix:@y=/run/z'] });
    expect(unixSocketOptions.safeParse({ external: ['tcp:1.2.3.4:80'] }).success).toBe(false);
    expect(unixSocketOptions.safeParse({ other: true }).success).toBe(false);
  });
});
