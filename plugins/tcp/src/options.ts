/**
 * Socket options: which ones are saved (those a program changed from a fresh socket's), how they
 * are read at dump and set again at restore, and SO_REUSEADDR around repair mode.
 */
import { closeSync } from 'node:fs';
import { CkptError } from '@ckpt/core';
import {
  native,
  AF_INET,
  AF_INET6,
  IPPROTO_IP,
  IPPROTO_IPV6,
  IPPROTO_TCP,
  IPPROTO_UDP,
  SOL_SOCKET,
  SO_BINDTODEVICE,
  SO_KEEPALIVE,
  SO_LINGER,
  SO_RCVBUF,
  SO_REUSEADDR,
  SO_SNDBUF,
  TCP_CONGESTION,
  TCP_NODELAY,
} from '@ckpt/native';
import type { InetSocketData } from './record.js';

const SO_BUF_LOCK = 72;
const IPPROTO_UDPLITE = 136;

/** Int options saved when they differ from a fresh socket's: [level, name, which sockets]. */
const INT_OPTS: Array<[number, number, 'all' | 'tcp' | 'udp' | 'udplite' | 'v4' | 'v6' | 'udp4' | 'udp6' | 'nobuf']> = [
  [SOL_SOCKET, SO_REUSEADDR, 'all'],
  [SOL_SOCKET, 15 /* SO_REUSEPORT */, 'all'],
  [SOL_SOCKET, SO_KEEPALIVE, 'all'],
  [SOL_SOCKET, 6 /* SO_BROADCAST */, 'udp'],
  [SOL_SOCKET, 10 /* SO_OOBINLINE */, 'tcp'],
  [SOL_SOCKET, 18 /* SO_RCVLOWAT */, 'all'],
  [SOL_SOCKET, 36 /* SO_MARK */, 'all'],
  [SOL_SOCKET, 5 /* SO_DONTROUTE */, 'all'],
  [SOL_SOCKET, 29 /* SO_TIMESTAMP */, 'all'],
  [SOL_SOCKET, 35 /* SO_TIMESTAMPNS */, 'all'],
  [SOL_SOCKET, 40 /* SO_RXQ_OVFL */, 'all'],
  [SOL_SOCKET, SO_SNDBUF, 'nobuf'],
  [SOL_SOCKET, SO_RCVBUF, 'nobuf'],
  // After the sizes: setting a size locks it, SO_BUF_LOCK says which locks there are.
  [SOL_SOCKET, SO_BUF_LOCK, 'all'],
  [SOL_SOCKET, 11 /* SO_NO_CHECK */, 'all'],
  [IPPROTO_IP, 1 /* IP_TOS */, 'v4'],
  [IPPROTO_IP, 2 /* IP_TTL */, 'v4'],
  [IPPROTO_IP, 8 /* IP_PKTINFO */, 'v4'],
  [IPPROTO_IP, 11 /* IP_RECVERR */, 'v4'],
  [IPPROTO_IP, 12 /* IP_RECVTTL */, 'v4'],
  [IPPROTO_IP, 13 /* IP_RECVTOS */, 'v4'],
  [IPPROTO_IP, 10 /* IP_MTU_DISCOVER */, 'v4'],
  [IPPROTO_IP, 15 /* IP_FREEBIND */, 'all'],
  [IPPROTO_IP, 19 /* IP_TRANSPARENT */, 'all'],
  [IPPROTO_IP, 24 /* IP_BIND_ADDRESS_NO_PORT */, 'all'],
  [IPPROTO_IP, 20 /* IP_RECVORIGDSTADDR */, 'v4'],
  [IPPROTO_IP, 33 /* IP_MULTICAST_TTL */, 'udp4'],
  [IPPROTO_IP, 34 /* IP_MULTICAST_LOOP */, 'udp4'],
  [IPPROTO_IPV6, 26 /* IPV6_V6ONLY */, 'v6'],
  [IPPROTO_IPV6, 16 /* IPV6_UNICAST_HOPS */, 'v6'],
  [IPPROTO_IPV6, 18 /* IPV6_MULTICAST_HOPS */, 'udp6'],
  [IPPROTO_IPV6, 19 /* IPV6_MULTICAST_LOOP */, 'udp6'],
  [IPPROTO_IPV6, 49 /* IPV6_RECVPKTINFO */, 'v6'],
  [IPPROTO_IPV6, 67 /* IPV6_TCLASS */, 'v6'],
  [IPPROTO_IPV6, 66 /* IPV6_RECVTCLASS */, 'v6'],
  [IPPROTO_IPV6, 25 /* IPV6_RECVERR */, 'v6'],
  [IPPROTO_IPV6, 23 /* IPV6_MTU_DISCOVER */, 'v6'],
  [IPPROTO_IPV6, 78 /* IPV6_FREEBIND */, 'v6'],
  [IPPROTO_IPV6, 75 /* IPV6_TRANSPARENT */, 'v6'],
  [IPPROTO_TCP, TCP_NODELAY, 'tcp'],
  [IPPROTO_TCP, 3 /* TCP_CORK */, 'tcp'],
  [IPPROTO_TCP, 4 /* TCP_KEEPIDLE */, 'tcp'],
  [IPPROTO_TCP, 5 /* TCP_KEEPINTVL */, 'tcp'],
  [IPPROTO_TCP, 6 /* TCP_KEEPCNT */, 'tcp'],
  [IPPROTO_TCP, 7 /* TCP_SYNCNT */, 'tcp'],
  [IPPROTO_TCP, 8 /* TCP_LINGER2 */, 'tcp'],
  [IPPROTO_TCP, 9 /* TCP_DEFER_ACCEPT */, 'tcp'],
  [IPPROTO_TCP, 18 /* TCP_USER_TIMEOUT */, 'tcp'],
  [IPPROTO_TCP, 23 /* TCP_FASTOPEN */, 'tcp'],
  [IPPROTO_TCP, 25 /* TCP_NOTSENT_LOWAT */, 'tcp'],
  [IPPROTO_TCP, 16 /* TCP_THIN_LINEAR_TIMEOUTS */, 'tcp'],
  [IPPROTO_UDP, 1 /* UDP_CORK */, 'udp'],
  [IPPROTO_UDP, 103 /* UDP_SEGMENT */, 'udp'],
  [IPPROTO_UDP, 104 /* UDP_GRO */, 'udp'],
  [IPPROTO_UDPLITE, 10 /* UDPLITE_SEND_CSCOV */, 'udplite'],
  [IPPROTO_UDPLITE, 11 /* UDPLITE_RECV_CSCOV */, 'udplite'],
  [IPPROTO_IP, 3 /* IP_HDRINCL */, 'v4'],
  // Last: IP_TOS and IPV6_TCLASS set the priority too.
  [SOL_SOCKET, 12 /* SO_PRIORITY */, 'all'],
];

/** A fresh socket of each kind, to tell which options a program changed. */
const defaults = new Map<string, { ints: Map<string, number | null>; cc?: string }>();
function defaultOpts(domain: number, type: number, proto: number): { ints: Map<string, number | null>; cc?: string } {
  const key = `${domain}/${type}/${proto}`;
  let d = defaults.get(key);
  if (!d) {
    const fd = native.sock.inetSocket(domain, type, proto);
    try {
      const ints = new Map<string, number | null>();
      for (const [level, name] of INT_OPTS) ints.set(`${level}/${name}`, native.sock.sockGetInt(fd, level, name));
      d = { ints, cc: proto === IPPROTO_TCP ? congestion(fd) : undefined };
    } finally {
      closeSync(fd);
    }
    defaults.set(key, d);
  }
  return d;
}

/** The TCP congestion control algorithm of fd (TCP_CONGESTION), or undefined. */
function congestion(fd: number): string | undefined {
  return native.sock.sockGetBytes(fd, IPPROTO_TCP, TCP_CONGESTION, 16)?.toString('latin1').replace(/\0.*$/s, '') || undefined;
}

/** Reads the options of fd that differ from a fresh socket's of the same kind. */
export function readOptions(fd: number, domain: number, type: number, proto: number, connected: boolean): Pick<InetSocketData, 'opts' | 'rawOpts'> {
  const def = defaultOpts(domain, type, proto);
  const opts: Array<[number, number, number]> = [];
  const bufLock = native.sock.sockGetInt(fd, SOL_SOCKET, SO_BUF_LOCK);
  for (const [level, name, which] of INT_OPTS) {
    if (which === 'tcp' && proto !== IPPROTO_TCP) continue;
    if (which === 'udp' && proto !== IPPROTO_UDP) continue;
    if (which === 'udplite' && proto !== IPPROTO_UDPLITE) continue;
    if (which === 'v6' && domain !== AF_INET6) continue;
    if (which === 'v4' && domain !== AF_INET) continue;
    if (which === 'udp4' && (domain !== AF_INET || proto !== IPPROTO_UDP)) continue;
    if (which === 'udp6' && (domain !== AF_INET6 || proto !== IPPROTO_UDP)) continue;
    // A buffer size the program set is locked (SO_BUF_LOCK, Linux 5.14): that one is kept; the
    // kernel's own (autotuned on connections) is not, or restoring it would freeze it.
    if (which === 'nobuf' && (bufLock !== null ? !(bufLock & (name === SO_SNDBUF ? 1 : 2)) : proto === IPPROTO_TCP && connected)) continue;
    const v = native.sock.sockGetInt(fd, level, name);
    if (v === null || v === def.ints.get(`${level}/${name}`)) continue;
    // The kernel doubles buffer sizes it is given.
    opts.push([level, name, name === SO_SNDBUF || name === SO_RCVBUF ? v >> 1 : v]);
  }
  const rawOpts: Array<[number, number, string]> = [];
  const linger = native.sock.sockGetBytes(fd, SOL_SOCKET, SO_LINGER, 8);
  if (linger?.readInt32LE(0)) rawOpts.push([SOL_SOCKET, SO_LINGER, linger.toString('base64')]);
  const dev = native.sock.sockGetBytes(fd, SOL_SOCKET, SO_BINDTODEVICE, 16);
  if (dev?.length && dev[0]) rawOpts.push([SOL_SOCKET, SO_BINDTODEVICE, dev.toString('base64')]);
  if (proto === IPPROTO_TCP) {
    const cc = congestion(fd);
    if (cc && cc !== def.cc) rawOpts.push([IPPROTO_TCP, TCP_CONGESTION, Buffer.from(cc).toString('base64')]);
  }
  return { opts, ...(rawOpts.length ? { rawOpts } : {}) };
}

/** Sets the saved options on a new socket (`what` names it in errors). */
export function setOptions(fd: number, d: InetSocketData, what: string): void {
  for (const [level, name, value] of d.opts) {
    try {
      native.sock.sockSetInt(fd, level, name, value);
    } catch (e) {
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${what}: cannot set socket option ${level}/${name} to ${value}: ${(e as Error).message}`, { cause: e });
    }
  }
  for (const [level, name, value] of d.rawOpts ?? []) {
    try {
      native.sock.sockSetBytes(fd, level, name, Buffer.from(value, 'base64'));
    } catch (e) {
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${what}: cannot set socket option ${level}/${name}: ${(e as Error).message}`, { cause: e });
    }
  }
}

/** Leaving repair mode resets the address reuse flag: SO_REUSEADDR is set again as it was. */
export function leaveRepair(fd: number, d: InetSocketData, mode: 0 | -1): void {
  native.sock.tcpRepair(fd, mode);
  const reuse = d.opts.find(([l, n]) => l === SOL_SOCKET && n === SO_REUSEADDR);
  if (reuse) native.sock.sockSetInt(fd, SOL_SOCKET, SO_REUSEADDR, reuse[2]);
}
