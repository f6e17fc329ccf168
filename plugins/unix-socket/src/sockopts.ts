/** Socket types and options (SOL_SOCKET): read at dump, set again at restore. */
import {
  native,
  SOCK_DGRAM,
  SOCK_SEQPACKET,
  SOCK_STREAM,
  SOL_SOCKET,
  SO_PASSCRED,
  SO_PASSSEC,
  SO_PEEK_OFF,
  SO_RCVBUF,
  SO_RCVBUFFORCE,
  SO_RCVLOWAT,
  SO_RCVTIMEO,
  SO_SNDBUF,
  SO_SNDBUFFORCE,
  SO_SNDTIMEO,
} from '@ckpt/native';
import type { UnixOptions, UnixType } from './record.js';

export const TYPES: Record<number, UnixType> = { [SOCK_STREAM]: 'stream', [SOCK_DGRAM]: 'dgram', [SOCK_SEQPACKET]: 'seqpacket' };
export const TYPE_NUM: Record<UnixType, number> = { stream: SOCK_STREAM, dgram: SOCK_DGRAM, seqpacket: SOCK_SEQPACKET };

/** getsockopt(SOL_SOCKET, opt) as an int. */
export function getInt(fd: number, opt: number): number {
  return native.sock.unixGetsockopt(fd, SOL_SOCKET, opt, 4).readInt32LE(0);
}
/** setsockopt(SOL_SOCKET, opt) of an int. */
export function setInt(fd: number, opt: number, v: number): void {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v, 0);
  native.sock.sockSetBytes(fd, SOL_SOCKET, opt, b);
}
/** getsockopt(SOL_SOCKET, opt) of a struct timeval: [seconds, microseconds]. */
function getTimeo(fd: number, opt: number): [number, number] {
  const b = native.sock.unixGetsockopt(fd, SOL_SOCKET, opt, 16);
  return [Number(b.readBigInt64LE(0)), Number(b.readBigInt64LE(8))];
}
/** setsockopt(SOL_SOCKET, opt) of a struct timeval. */
function setTimeo(fd: number, opt: number, v: [number, number]): void {
  const b = Buffer.alloc(16);
  b.writeBigInt64LE(BigInt(v[0]), 0);
  b.writeBigInt64LE(BigInt(v[1]), 8);
  native.sock.sockSetBytes(fd, SOL_SOCKET, opt, b);
}
/** fn(), or fallback when it throws. */
function tryGet<T>(fn: () => T, fallback: T): T {
  try {
    return fn();
  } catch {
    return fallback;
  }
}

/** The saved options of a socket. */
export function readOptions(fd: number): UnixOptions {
  return {
    sndbuf: getInt(fd, SO_SNDBUF),
    rcvbuf: getInt(fd, SO_RCVBUF),
    passcred: getInt(fd, SO_PASSCRED) !== 0,
    passsec: tryGet(() => getInt(fd, SO_PASSSEC) !== 0, false),
    peekOff: tryGet(() => getInt(fd, SO_PEEK_OFF), -1),
    rcvlowat: tryGet(() => getInt(fd, SO_RCVLOWAT), 1),
    rcvtimeo: tryGet(() => getTimeo(fd, SO_RCVTIMEO), [0, 0] as [number, number]),
    sndtimeo: tryGet(() => getTimeo(fd, SO_SNDTIMEO), [0, 0] as [number, number]),
  };
}

/** Buffer sizes are set with the *FORCE variants (root), so the exact saved value comes back. */
function setBuf(fd: number, opt: number, force: number, value: number): void {
  if (getInt(fd, opt) === value) return;
  try {
    setInt(fd, force, Math.ceil(value / 2));
  } catch {
    setInt(fd, opt, Math.ceil(value / 2));
  }
}

/** Sets the saved options on a rebuilt socket. */
export function applyOptions(fd: number, o: UnixOptions): void {
  setBuf(fd, SO_SNDBUF, SO_SNDBUFFORCE, o.sndbuf);
  setBuf(fd, SO_RCVBUF, SO_RCVBUFFORCE, o.rcvbuf);
  if (o.passcred) setInt(fd, SO_PASSCRED, 1);
  if (o.passsec) tryGet(() => setInt(fd, SO_PASSSEC, 1), undefined);
  if (o.peekOff >= 0) setInt(fd, SO_PEEK_OFF, o.peekOff);
  if (o.rcvlowat !== 1) tryGet(() => setInt(fd, SO_RCVLOWAT, o.rcvlowat), undefined);
  if (o.rcvtimeo[0] || o.rcvtimeo[1]) setTimeo(fd, SO_RCVTIMEO, o.rcvtimeo);
  if (o.sndtimeo[0] || o.sndtimeo[1]) setTimeo(fd, SO_SNDTIMEO, o.sndtimeo);
}

/** Temporarily lets `fd` send `bytes` more (the data stays charged to the sender until read). */
export function roomToSend(fd: number, bytes: number): void {
  const want = Math.min(2 ** 30, bytes * 2 + 65536);
  if (getInt(fd, SO_SNDBUF) < want) {
    try {
      setInt(fd, SO_SNDBUFFORCE, want);
    } catch {
      /* not root: as it is */
    }
  }
}
