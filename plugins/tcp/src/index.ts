/**
 * @ckpt/plugin-tcp — TCP and UDP sockets, IPv4 and IPv6.
 *
 * TCP
 *   listening    address, port, backlog and options; recreated with bind + listen. Connections
 *                waiting in the accept queue at dump time are not saved: the kernel resets them
 *                when the dumped listener dies (noted in the image, `ckpt show` prints it).
 *   established  TCP_REPAIR (the peer never notices): sequence numbers, the receive queue (unread
 *                data) and the send queue (unacknowledged data, the never-sent tail kept apart),
 *                window (TCP_REPAIR_WINDOW), MSS, window scaling, SACK, timestamps (the
 *                timestamp clock goes on from where it was, plus the time the dump was away, so
 *                the peer's PAWS check passes) and socket options. Restore creates the socket in
 *                the restorer in repair mode, sets where each queue starts, binds, connects (no
 *                packet is sent in repair mode), sets the options, refills both queues, sets the
 *                window, and leaves repair mode once every process of the image is built
 *                (session.beforeResume), so that two ends restored together never meet half-built.
 *   other        unconnected sockets (bound or not) are recreated with their options;
 *                a connect in progress (SYN_SENT) is issued again; connections already closing
 *                (CLOSE_WAIT, FIN_WAIT*, LAST_ACK, CLOSING) come back reset, with a note.
 *   --tcp-close  (restore) established connections come back as sockets reset by their peer:
 *                the application reads ECONNRESET, as when the peer is gone.
 * UDP
 *   bound and connected sockets with their options, and every queued datagram with its source
 *   address (peeked with SO_PEEK_OFF, sent back into the new socket from the same address and
 *   port through a raw socket).
 *
 * Blocking the peer (the choice): nftables. Between the dump and the moment the restored
 * socket leaves repair mode nothing of the old connection may reach a peer (a FIN, a RST), and
 * nothing of the peer may reach the kernel while no socket owns the connection (the kernel
 * would answer with a RST). A table `inet ckpt` holds two sets of 4-tuples (`tcp4`, `tcp6`)
 * and drops every TCP packet matching one, in prerouting and output, before conntrack
 * (priority -300). Each established connection is added (both directions) right before its
 * socket enters repair mode at dump, in the network namespace of the dumped process.
 *   - dump (the process is killed): the connection stays blocked; the socket is put back in
 *     repair mode at session.afterDump, just before the kill, so the kill closes it silently (no
 *     FIN, no RST) and frees its 4-tuple. The restore removes the block once the new socket has
 *     left repair mode (and, with --tcp-close, at the end of the restore).
 *   - dump --leave-running: the repair window is as short as it can be (enter, read, leave within
 *     files.dumpFd) and the block is removed at once: the connection is blocked only while it
 *     is read.
 *   - a failed dump (session.dumpFailed, before core thaws anything): sockets are taken out of
 *     repair mode and blocks removed before anything runs again.
 *   - restore blocks the connection too (a no-op when the dump left it blocked) from before the
 *     socket exists until it has left repair mode. A failed restore closes the half-built
 *     sockets in repair mode (silently) and keeps the blocks the dump made, so that a second
 *     try can succeed; it removes the blocks it made itself.
 *   - the 4-tuple may still be held by the orphaned remains of the old socket (the process was
 *     killed after a --leave-running dump and its FIN never got an answer): restore destroys
 *     such an orphan (sock_diag SOCK_DESTROY; its RST is dropped by the block) and connects
 *     again. A 4-tuple held by a live socket of some process is an error.
 * A network namespace per application would spare nftables, but the requirement is that
 * `ckpt run` keeps the host's network, and clients outside the tree (and outside any namespace
 * we could make) must keep their connection. If `ckpt` is killed between a dump and the restore
 * the block stays: `nft delete table inet ckpt` removes every block.
 *
 * Not saved: out-of-order segments the kernel held (not acknowledged, so the peer sends them
 * again), urgent data, TCP_MD5SIG keys, TCP_FASTOPEN cookies, multicast memberships; buffer
 * sizes (SO_SNDBUF/SO_RCVBUF) of TCP connections (they autotune; listeners and UDP keep theirs).
 */
import { closeSync, readlinkSync } from 'node:fs';
import { z } from 'zod';
import {
  CkptError, createSessionState, definePlugin, logger, type DumpSession, type FdClaim, type FdDumpRequest, type FdRecord, type NetworkLock,
  type PluginContext, type SocketRow, type ProcessDump, type ProcessRestore, type RestoreSession,
} from '@ckpt/core';
import { native } from '@ckpt/native';

export const NAME = '@ckpt/plugin-tcp';
const log = logger('plugin:tcp');

export type InetAddr = Parameters<typeof native.sock.sockBind>[1];
type ConnState = ReturnType<typeof native.sock.tcpDumpConn>;

/** TCP_INFO states. */
export const TCP_STATES = ['', 'ESTABLISHED', 'SYN_SENT', 'SYN_RECV', 'FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT', 'CLOSE', 'CLOSE_WAIT', 'LAST_ACK', 'LISTEN', 'CLOSING'];
const ESTABLISHED = 1, SYN_SENT = 2, CLOSE = 7, LISTEN = 10;

/** An established connection as saved: TCP_REPAIR's view, queues in base64. */
export interface TcpConnData {
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
  window?: ConnState['window'];
  /** Wall clock (ms) of the dump: the timestamp clock goes on by the time away. */
  dumpedAt: number;
}

/** The record of one inet socket (FdRecord.data). */
export interface InetSocketData {
  proto: 'tcp' | 'udp';
  family: 4 | 6;
  /** TCP: a TCP_STATES name; UDP: UNCONN or CONNECTED. */
  state: string;
  /** File status flags kept (O_NONBLOCK). */
  flags: number;
  local?: InetAddr;
  peer?: InetAddr;
  /** Int options that differ from a fresh socket's: [level, name, value]. */
  opts: Array<[number, number, number]>;
  /** Other options (SO_LINGER, TCP_CONGESTION, SO_BINDTODEVICE): [level, name, base64]. */
  rawOpts?: Array<[number, number, string]>;
  backlog?: number;
  tcp?: TcpConnData;
  datagrams?: Array<{ from: InetAddr; data: string }>;
  /** Bytes queued at dump time: received and unread, sent or to send and not acknowledged. */
  recvQueue: number;
  sendQueue: number;
  /** The dump left the connection blocked (nftables) for the restore to reopen. */
  locked?: boolean;
  /** What was not kept, for ckpt show. */
  note?: string;
}

const AF_INET = 2, AF_INET6 = 10, SOCK_STREAM = 1, SOCK_DGRAM = 2, SOCK_NONBLOCK = 0o4000;
const IPPROTO_IP = 0, IPPROTO_TCP = 6, IPPROTO_UDP = 17, IPPROTO_IPV6 = 41, SOL_SOCKET = 1;
const O_NONBLOCK = 0o4000, F_SETFL = 4, F_DUPFD_CLOEXEC = 1030;
const SO_REUSEADDR = 2, SO_SNDBUF = 7, SO_RCVBUF = 8, SO_LINGER = 13, SO_BINDTODEVICE = 25, TCP_CONGESTION = 13;
const EINPROGRESS = 115;

/** Int options saved when they differ from a fresh socket's: [level, name, which sockets]. */
const INT_OPTS: Array<[number, number, 'all' | 'tcp' | 'udp' | 'v4' | 'v6' | 'udp4' | 'udp6' | 'nobuf']> = [
  [SOL_SOCKET, SO_REUSEADDR, 'all'], [SOL_SOCKET, 15 /* SO_REUSEPORT */, 'all'], [SOL_SOCKET, 9 /* SO_KEEPALIVE */, 'all'],
  [SOL_SOCKET, 6 /* SO_BROADCAST */, 'udp'], [SOL_SOCKET, 10 /* SO_OOBINLINE */, 'tcp'], [SOL_SOCKET, 12 /* SO_PRIORITY */, 'all'],
  [SOL_SOCKET, 18 /* SO_RCVLOWAT */, 'all'], [SOL_SOCKET, 36 /* SO_MARK */, 'all'], [SOL_SOCKET, 5 /* SO_DONTROUTE */, 'all'],
  [SOL_SOCKET, 29 /* SO_TIMESTAMP */, 'all'], [SOL_SOCKET, 35 /* SO_TIMESTAMPNS */, 'all'], [SOL_SOCKET, 40 /* SO_RXQ_OVFL */, 'all'],
  [SOL_SOCKET, SO_SNDBUF, 'nobuf'], [SOL_SOCKET, SO_RCVBUF, 'nobuf'],
  [IPPROTO_IP, 1 /* IP_TOS */, 'v4'], [IPPROTO_IP, 2 /* IP_TTL */, 'v4'], [IPPROTO_IP, 8 /* IP_PKTINFO */, 'v4'],
  [IPPROTO_IP, 11 /* IP_RECVERR */, 'v4'], [IPPROTO_IP, 12 /* IP_RECVTTL */, 'v4'], [IPPROTO_IP, 13 /* IP_RECVTOS */, 'v4'],
  [IPPROTO_IP, 10 /* IP_MTU_DISCOVER */, 'v4'], [IPPROTO_IP, 15 /* IP_FREEBIND */, 'all'], [IPPROTO_IP, 19 /* IP_TRANSPARENT */, 'all'],
  [IPPROTO_IP, 24 /* IP_BIND_ADDRESS_NO_PORT */, 'all'], [IPPROTO_IP, 20 /* IP_RECVORIGDSTADDR */, 'v4'],
  [IPPROTO_IP, 33 /* IP_MULTICAST_TTL */, 'udp4'], [IPPROTO_IP, 34 /* IP_MULTICAST_LOOP */, 'udp4'],
  [IPPROTO_IPV6, 26 /* IPV6_V6ONLY */, 'v6'], [IPPROTO_IPV6, 16 /* IPV6_UNICAST_HOPS */, 'v6'], [IPPROTO_IPV6, 18 /* IPV6_MULTICAST_HOPS */, 'udp6'],
  [IPPROTO_IPV6, 19 /* IPV6_MULTICAST_LOOP */, 'udp6'], [IPPROTO_IPV6, 49 /* IPV6_RECVPKTINFO */, 'v6'], [IPPROTO_IPV6, 67 /* IPV6_TCLASS */, 'v6'],
  [IPPROTO_IPV6, 66 /* IPV6_RECVTCLASS */, 'v6'], [IPPROTO_IPV6, 25 /* IPV6_RECVERR */, 'v6'], [IPPROTO_IPV6, 23 /* IPV6_MTU_DISCOVER */, 'v6'],
  [IPPROTO_IPV6, 78 /* IPV6_FREEBIND */, 'v6'], [IPPROTO_IPV6, 75 /* IPV6_TRANSPARENT */, 'v6'],
  [IPPROTO_TCP, 1 /* TCP_NODELAY */, 'tcp'], [IPPROTO_TCP, 3 /* TCP_CORK */, 'tcp'], [IPPROTO_TCP, 4 /* TCP_KEEPIDLE */, 'tcp'],
  [IPPROTO_TCP, 5 /* TCP_KEEPINTVL */, 'tcp'], [IPPROTO_TCP, 6 /* TCP_KEEPCNT */, 'tcp'], [IPPROTO_TCP, 7 /* TCP_SYNCNT */, 'tcp'],
  [IPPROTO_TCP, 8 /* TCP_LINGER2 */, 'tcp'], [IPPROTO_TCP, 9 /* TCP_DEFER_ACCEPT */, 'tcp'], [IPPROTO_TCP, 18 /* TCP_USER_TIMEOUT */, 'tcp'],
  [IPPROTO_TCP, 23 /* TCP_FASTOPEN */, 'tcp'], [IPPROTO_TCP, 25 /* TCP_NOTSENT_LOWAT */, 'tcp'], [IPPROTO_TCP, 16 /* TCP_THIN_LINEAR_TIMEOUTS */, 'tcp'],
  [IPPROTO_UDP, 1 /* UDP_CORK */, 'udp'], [IPPROTO_UDP, 103 /* UDP_SEGMENT */, 'udp'], [IPPROTO_UDP, 104 /* UDP_GRO */, 'udp'],
];

const fmtAddr = (a?: InetAddr) => (!a ? '*' : a.family === 6 ? `[${a.addr}]:${a.port}` : `${a.addr}:${a.port}`);
/** "tcp [::1]:6379 -> [::1]:50000" */
export function describeSocket(d: Pick<InetSocketData, 'proto' | 'family' | 'local' | 'peer'>): string {
  return `${d.proto}${d.family === 6 ? '6' : ''} ${fmtAddr(d.local)}${d.peer ? ` -> ${fmtAddr(d.peer)}` : ''}`;
}

// ------------------------------------------------------------------------------------------------
// Dump

interface DumpState {
  /** The network lock's group for this dump's connections (they stay blocked after a successful dump). */
  blocks: NetworkLock;
  /** Established connections of the dump: put back in repair mode before the kill. */
  conns: Array<{ pid: number; fd: number; data: InetSocketData }>;
  /** Sockets this plugin left in repair mode (until the kill). */
  inRepair: Array<{ pid: number; fd: number; data: InetSocketData }>;
}
const dumps = createSessionState('tcp:dump', (session: DumpSession): DumpState => ({ blocks: session.services.netlock.group(), conns: [], inRepair: [] }));
const dumpState = (session: DumpSession) => dumps.of(session);

/** Options: `close` (restore --tcp-close): established connections come back reset, for a peer that is gone. */
export const tcpOptions = z.strictObject({ close: z.boolean().optional() });
export type TcpOptions = z.infer<typeof tcpOptions>;

/** The network namespace of pid, when it is not ours (nft must run there). */
function foreignNetns(pid: number): number | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`) === readlinkSync('/proc/self/ns/net') ? undefined : pid;
  } catch {
    return undefined;
  }
}

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

function congestion(fd: number): string | undefined {
  return native.sock.sockGetBytes(fd, IPPROTO_TCP, TCP_CONGESTION, 16)?.toString('latin1').replace(/\0.*$/s, '') || undefined;
}

function readOptions(fd: number, domain: number, type: number, proto: number, connected: boolean): Pick<InetSocketData, 'opts' | 'rawOpts'> {
  const def = defaultOpts(domain, type, proto);
  const opts: Array<[number, number, number]> = [];
  for (const [level, name, which] of INT_OPTS) {
    if (which === 'tcp' && proto !== IPPROTO_TCP) continue;
    if (which === 'udp' && proto !== IPPROTO_UDP) continue;
    if (which === 'v6' && domain !== AF_INET6) continue;
    if (which === 'v4' && domain !== AF_INET) continue;
    if (which === 'udp4' && (domain !== AF_INET || proto !== IPPROTO_UDP)) continue;
    if (which === 'udp6' && (domain !== AF_INET6 || proto !== IPPROTO_UDP)) continue;
    // Connections autotune their buffers: keeping the size would freeze it.
    if (which === 'nobuf' && proto === IPPROTO_TCP && connected) continue;
    const v = native.sock.sockGetInt(fd, level, name);
    if (v === null || v === def.ints.get(`${level}/${name}`)) continue;
    // The kernel doubles buffer sizes it is given.
    opts.push([level, name, name === SO_SNDBUF || name === SO_RCVBUF ? v >> 1 : v]);
  }
  const rawOpts: Array<[number, number, string]> = [];
  const linger = native.sock.sockGetBytes(fd, SOL_SOCKET, SO_LINGER, 8);
  if (linger && linger.readInt32LE(0)) rawOpts.push([SOL_SOCKET, SO_LINGER, linger.toString('base64')]);
  const dev = native.sock.sockGetBytes(fd, SOL_SOCKET, SO_BINDTODEVICE, 16);
  if (dev && dev.length && dev[0]) rawOpts.push([SOL_SOCKET, SO_BINDTODEVICE, dev.toString('base64')]);
  if (proto === IPPROTO_TCP) {
    const cc = congestion(fd);
    if (cc && cc !== def.cc) rawOpts.push([IPPROTO_TCP, TCP_CONGESTION, Buffer.from(cc).toString('base64')]);
  }
  return { opts, ...(rawOpts.length ? { rawOpts } : {}) };
}

function makeDumpFd(ctx: PluginContext) {
  return async function dumpFd(req: FdDumpRequest, proc: ProcessDump): Promise<FdClaim<InetSocketData> | undefined> {
    if (req.kind !== 'socket') return undefined;
    const fd = req.dupFd;
    const info = native.sock.sockInfo(fd);
    if (info.domain !== AF_INET && info.domain !== AF_INET6) return undefined;
    const tcp = info.type === SOCK_STREAM && info.protocol === IPPROTO_TCP;
    const udp = info.type === SOCK_DGRAM && info.protocol === IPPROTO_UDP;
    if (!tcp && !udp) return undefined;
    const session = proc.session;
    const leaveRunning = !!session.options.leaveRunning;
    const state = tcp ? (info.state ?? CLOSE) : info.peer ? ESTABLISHED : CLOSE;
    const data: InetSocketData = {
      proto: tcp ? 'tcp' : 'udp',
      family: info.domain === AF_INET6 ? 6 : 4,
      state: tcp ? (TCP_STATES[state] ?? String(state)) : info.peer ? 'CONNECTED' : 'UNCONN',
      flags: req.info.flags & O_NONBLOCK,
      ...(info.local && info.local.port ? { local: info.local } : {}),
      ...(info.peer ? { peer: info.peer } : {}),
      ...readOptions(fd, info.domain, info.type, info.protocol, tcp && state !== LISTEN && state !== CLOSE),
      recvQueue: info.inq ?? 0,
      sendQueue: info.outq ?? 0,
    };
    const what = `pid ${proc.pid} fd ${req.fd} (${describeSocket(data)})`;
    if (udp) {
      const q = native.sock.udpPeek(fd);
      data.datagrams = q.map((d) => ({ from: d.from, data: d.data.toString('base64') }));
      data.recvQueue = q.reduce((a, d) => a + d.data.length, 0);
    } else if (state === LISTEN) {
      data.backlog = info.backlog;
      data.recvQueue = data.sendQueue = 0;
      if (info.pending) {
        data.note = `${info.pending} connection(s) not yet accepted were dropped (their peers see a reset)`;
        ctx.log('%s: %s', what, data.note);
      }
    } else if (state === ESTABLISHED) {
      if (!info.local || !info.peer) throw new CkptError('ERR_CKPT_DUMP_FAILED', `${what}: an established connection without addresses`);
      const st = dumpState(session);
      const nsPid = foreignNetns(proc.pid);
      // Nothing of the peer reaches the connection while it is read (and, unless the process
      // goes on running, until the restored socket has left repair mode).
      st.blocks.block(info.local, info.peer, nsPid);
      let conn: ConnState;
      native.sock.tcpRepair(fd, 1);
      try {
        conn = native.sock.tcpDumpConn(fd);
      } finally {
        leaveRepair(fd, data, -1);
      }
      if (leaveRunning) st.blocks.unblock(info.local, info.peer, nsPid);
      else data.locked = true;
      data.tcp = {
        inqSeq: conn.inqSeq, outqSeq: conn.outqSeq, inq: conn.inq.toString('base64'), outq: conn.outq.toString('base64'),
        unsent: conn.unsent, mss: conn.mss, options: conn.options, sndWscale: conn.sndWscale, rcvWscale: conn.rcvWscale,
        timestamp: conn.timestamp, ...(conn.window ? { window: conn.window } : {}), dumpedAt: Date.now(),
      };
      data.recvQueue = conn.inq.length;
      data.sendQueue = conn.outq.length;
      st.conns.push({ pid: proc.pid, fd: req.fd, data });
      ctx.log('%s: established, %d bytes received unread, %d to send (%d never sent)', what, conn.inq.length, conn.outq.length, conn.unsent);
    } else if (state !== CLOSE && state !== SYN_SENT) {
      data.note = `connection in state ${data.state} is restored reset`;
      ctx.log('%s: %s', what, data.note);
    }
    return { kind: data.proto, data };
  };
}

/** Leaving repair mode resets the address reuse flag: SO_REUSEADDR is set again as it was. */
function leaveRepair(fd: number, d: InetSocketData, mode: 0 | -1): void {
  native.sock.tcpRepair(fd, mode);
  const reuse = d.opts.find(([l, n]) => l === SOL_SOCKET && n === SO_REUSEADDR);
  if (reuse) native.sock.sockSetInt(fd, SOL_SOCKET, SO_REUSEADDR, reuse[2]);
}

function withFd<T>(pid: number, fd: number, fn: (ours: number) => T): T {
  const pidfd = native.proc.pidfdOpen(pid);
  try {
    const ours = native.proc.pidfdGetfd(pidfd, fd);
    try {
      return fn(ours);
    } finally {
      closeSync(ours);
    }
  } finally {
    closeSync(pidfd);
  }
}

/** Success: unless the processes go on running, their connections die in repair mode (silently). */
async function afterDump(session: DumpSession): Promise<void> {
  const st = dumps.peek(session);
  if (!st || session.options.leaveRunning) return;
  for (const c of st.conns) {
    withFd(c.pid, c.fd, (fd) => native.sock.tcpRepair(fd, 1));
    st.inRepair.push(c);
  }
}

/** Failure: before the engine thaws anything, connections leave repair mode and are unblocked. */
async function undoDump(session: DumpSession, ctx: PluginContext<TcpOptions>): Promise<void> {
  const st = dumps.peek(session);
  if (!st) return;
  for (const s of st.inRepair.splice(0)) {
    try {
      withFd(s.pid, s.fd, (fd) => leaveRepair(fd, s.data, 0));
    } catch (e) {
      ctx.log('pid %d fd %d: could not leave repair mode: %s', s.pid, s.fd, (e as Error).message);
    }
  }
  try {
    st.blocks.unblockAll();
  } catch (e) {
    ctx.log('could not remove the nftables blocks: %s', (e as Error).message);
  }
}

// ------------------------------------------------------------------------------------------------
// Restore

interface RestoreState {
  /** Blocks this restore made (removed at the end, or on failure). */
  blocks: NetworkLock;
  /** Blocks the dump made (added again, a no-op unless someone removed them; removed at the end only). */
  dumpBlocks: NetworkLock;
  /** Our own duplicates of the sockets still in repair mode, with their records. */
  repaired: Array<{ fd: number; data: InetSocketData }>;
}
const restores = createSessionState('tcp:restore', (session: RestoreSession): RestoreState => {
  const state: RestoreState = { blocks: session.services.netlock.group(), dumpBlocks: session.services.netlock.group(), repaired: [] };
  // A failed restore: the half-built sockets are closed in repair mode (silently), and only
  // the blocks this restore made are removed (the dump's stay for the next try).
  session.onRollback(() => {
    for (const r of state.repaired.splice(0)) closeQuietly(r.fd);
    state.blocks.unblockAll();
  });
  return state;
});

const restoreState = (session: RestoreSession) => restores.of(session);

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    /* closed */
  }
}

function setOptions(fd: number, d: InetSocketData, what: string): void {
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

function bindOrExplain(fd: number, addr: InetAddr, what: string): void {
  try {
    native.sock.sockBind(fd, addr);
  } catch (e) {
    const code = (e as { code?: string }).code;
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${what}: cannot bind ${fmtAddr(addr)}: ${code ?? (e as Error).message}`, {
      cause: e,
      hint: code === 'EADDRINUSE' ? 'another socket holds that address (is the dumped process still running?)'
        : code === 'EADDRNOTAVAIL' ? 'the address does not exist on this host' : undefined,
    });
  }
}

/** Connect in repair mode; an orphaned remains of the old connection holding the 4-tuple is destroyed first. */
function repairConnect(fd: number, d: InetSocketData, what: string): void {
  try {
    native.sock.sockConnect(fd, d.peer!);
    return;
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code !== 'EADDRNOTAVAIL' && code !== 'EADDRINUSE') throw e;
  }
  const held = native.sock.tcpDiag(d.local!, d.peer!);
  if (held && held.inode !== 0) {
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${what}: the connection is open in another socket (inode ${held.inode}, state ${TCP_STATES[held.state]})`,
      { hint: 'the dumped process (or a copy of it) still runs: stop it before restoring' });
  }
  if (held) {
    log('%s: destroying the orphaned remains of the old connection (state %s)', what, TCP_STATES[held.state]);
    native.sock.tcpDestroy(d.local!, d.peer!);
  }
  native.sock.sockConnect(fd, d.peer!);
}

/**
 * The timestamp clock to restore: the dumped value plus the time since the dump, so that it never
 * goes back for the peer (which may have seen later values when the process ran on after a
 * --leave-running dump). The low bit of TCP_TIMESTAMP says the clock counts microseconds.
 */
function timestampNow(t: TcpConnData): number {
  const usec = t.timestamp & 1;
  const away = Math.max(0, Date.now() - t.dumpedAt) * (usec ? 1000 : 1);
  return (((t.timestamp + away) >>> 0) & ~1 | usec) >>> 0;
}

function restoreEstablished(proc: ProcessRestore, d: InetSocketData, domain: number, what: string, close: boolean): number {
  const session = proc.session;
  const st = restoreState(session);
  const t = d.tcp!;
  const blocks = d.locked ? st.dumpBlocks : st.blocks;
  blocks.block(d.local!, d.peer!);
  if (close) return native.sock.tcpResetSocket(d.family);
  const fd = native.sock.inetSocket(domain, SOCK_STREAM | SOCK_NONBLOCK, IPPROTO_TCP);
  try {
    // Options first: repair mode forces address reuse, which SO_REUSEADDR would undo.
    setOptions(fd, d, what);
    native.sock.tcpRepair(fd, 1);
    const inq = Buffer.from(t.inq, 'base64'), outq = Buffer.from(t.outq, 'base64');
    native.sock.tcpSetQueueSeqs(fd, (t.inqSeq - inq.length) >>> 0, (t.outqSeq - outq.length) >>> 0);
    bindOrExplain(fd, d.local!, what);
    repairConnect(fd, d, what);
    native.sock.tcpRepairFill(fd, {
      options: t.options, sndWscale: t.sndWscale, rcvWscale: t.rcvWscale, mss: t.mss, unsent: t.unsent,
      timestamp: timestampNow(t), inq, outq, ...(t.window ? { window: t.window } : {}),
    });
    st.repaired.push({ fd: native.fd.fcntl(fd, F_DUPFD_CLOEXEC, 0), data: d });
    return fd;
  } catch (e) {
    closeQuietly(fd);
    if (e instanceof CkptError) throw e;
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${what}: cannot restore the connection: ${(e as Error).message}`, { cause: e });
  }
}

async function waitQueued(fd: number, n: number, what: string): Promise<void> {
  const end = Date.now() + 2000;
  for (;;) {
    const got = native.sock.udpPeek(fd).length;
    if (got >= n) return;
    if (Date.now() > end) throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${what}: only ${got} of ${n} queued datagrams came back`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const LOOPBACK: Record<4 | 6, string> = { 4: '127.0.0.1', 6: '::1' };

async function restoreFd(ctx: PluginContext<TcpOptions>, rec: FdRecord, proc: ProcessRestore): Promise<number | undefined> {
  const d = rec.data as InetSocketData;
  const domain = d.family === 6 ? AF_INET6 : AF_INET;
  const what = `pid ${proc.pid} fd ${rec.fd} (${describeSocket(d)})`;
  let fd: number;
  if (d.proto === 'tcp' && d.state === 'ESTABLISHED') {
    fd = restoreEstablished(proc, d, domain, what, !!ctx.options(proc.session)?.close);
  } else if (d.proto === 'tcp' && !['LISTEN', 'CLOSE', 'SYN_SENT'].includes(d.state)) {
    fd = native.sock.tcpResetSocket(d.family);
  } else {
    fd = native.sock.inetSocket(domain, (d.proto === 'tcp' ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK, d.proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP);
    try {
      const reuse = d.opts.find(([l, n]) => l === SOL_SOCKET && n === SO_REUSEADDR)?.[2] ?? 0;
      setOptions(fd, d, what);
      if (d.state === 'LISTEN') {
        // Connections of this listener restored before it hold its port: reuse for the bind.
        if (!reuse) native.sock.sockSetInt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
        bindOrExplain(fd, d.local ?? { family: d.family, addr: d.family === 6 ? '::' : '0.0.0.0', port: 0 }, what);
        native.sock.sockListen(fd, d.backlog ?? 128);
        if (!reuse) native.sock.sockSetInt(fd, SOL_SOCKET, SO_REUSEADDR, 0);
      } else if (d.proto === 'tcp' && d.state === 'CLOSE') {
        // Bound and never connected (or closed by a reset): its port is kept when it is free.
        if (d.local) {
          try {
            native.sock.sockBind(fd, d.local);
          } catch (e) {
            ctx.log('%s: left unbound: %s', what, (e as Error).message);
          }
        }
      } else {
        if (d.local) bindOrExplain(fd, d.local, what);
        if (d.peer) {
          const r = native.sock.sockConnect(fd, d.peer);
          if (r !== 0 && r !== EINPROGRESS) throw new Error(`connect: ${r}`);
        }
        if (d.datagrams?.length) {
          const to = d.local && !['0.0.0.0', '::'].includes(d.local.addr) ? d.local : { family: d.family, addr: LOOPBACK[d.family], port: d.local?.port ?? 0 };
          for (const g of d.datagrams) {
            let dst = to, src = g.from;
            // A dual-stack socket's IPv4 senders: sent over IPv4.
            if (src.family === 6 && /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(src.addr)) {
              src = { family: 4, addr: src.addr.slice(7), port: src.port };
              dst = { family: 4, addr: /^::ffff:/i.test(to.addr) ? to.addr.slice(7) : '127.0.0.1', port: to.port };
            }
            native.sock.udpInject(dst, src, Buffer.from(g.data, 'base64'));
          }
          await waitQueued(fd, d.datagrams.length, what);
        }
      }
    } catch (e) {
      closeQuietly(fd);
      if (e instanceof CkptError) throw e;
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${what}: ${(e as Error).message}`, { cause: e });
    }
  }
  native.fd.fcntl(fd, F_SETFL, d.flags & O_NONBLOCK);
  return fd;
}

/** Every process exists: connections leave repair mode, then their blocks go. */
async function afterRestore(session: RestoreSession): Promise<void> {
  const st = restores.peek(session);
  if (!st) return;
  for (const r of st.repaired) leaveRepair(r.fd, r.data, 0);
  st.blocks.unblockAll();
  st.dumpBlocks.unblockAll();
  // The window probe sent when leaving repair mode met the block: send another one now, so
  // that the peer answers with its current window and acknowledgement at once.
  for (const r of st.repaired.splice(0)) {
    try {
      native.sock.tcpRepair(r.fd, 1);
      leaveRepair(r.fd, r.data, 0);
    } catch {
      /* a probe is an optimisation */
    }
    closeQuietly(r.fd);
  }
}

/** `ckpt show`: one row per TCP/UDP socket of the image, with every pid:fd holding it. */
function inetSocketRows(procs: ReadonlyArray<{ pid: number; fds: readonly FdRecord[] }>): SocketRow[] {
  const rows: SocketRow[] = [];
  const byHolder = new Map<string, SocketRow>();
  const addr = (a?: InetAddr) => (!a ? '' : a.family === 6 ? `[${a.addr}]:${a.port}` : `${a.addr}:${a.port}`);
  for (const p of procs) {
    for (const f of p.fds) {
      if (f.owner !== NAME) continue;
      if (f.sameAs) {
        byHolder.get(`${f.sameAs.pid}:${f.sameAs.fd}`)?.holders.push(`${p.pid}:${f.fd}`);
        continue;
      }
      const i = f.data as InetSocketData;
      const row: SocketRow = {
        family: i.family === 6 ? 'inet6' : 'inet', type: i.proto,
        state: i.state + (i.backlog !== undefined ? ` (backlog ${i.backlog})` : '') + (i.locked ? ' (blocked)' : ''),
        holders: [`${p.pid}:${f.fd}`], local: addr(i.local) || '*', remote: addr(i.peer),
        recvQ: i.recvQueue, recvMessages: i.datagrams?.length ?? 0, sendQ: i.sendQueue, ...(i.note ? { note: i.note } : {}),
      };
      rows.push(row);
      byHolder.set(`${p.pid}:${f.fd}`, row);
    }
  }
  return rows;
}

export const tcpPlugin = definePlugin(() => ({
  name: NAME,
  version: '0.2.0',
  description: 'TCP listeners and connections (TCP_REPAIR, behind the network lock), UDP sockets with queued datagrams; IPv4 and IPv6',
  options: tcpOptions,
  flags: [{ command: 'restore' as const, flags: '--tcp-close', description: 'restore established TCP connections as closed (the application sees a reset), for when the peer is gone', option: 'close' }],
  claims: { fdKinds: ['tcp', 'udp'] },
  show: { sockets: inetSocketRows, fdName: (rec: FdRecord) => describeSocket(rec.data as InetSocketData) },
  apply(hooks, ctx: PluginContext<TcpOptions>) {
    hooks.fds.dump.tapPromise(NAME, makeDumpFd(ctx));
    hooks.session.afterDump.tapPromise(NAME, afterDump);
    hooks.session.dumpFailed.tapPromise(NAME, (session) => undoDump(session, ctx));
    hooks.fds.restore.for(NAME).tapPromise(NAME, (rec, proc) => restoreFd(ctx, rec, proc));
    hooks.session.beforeResume.tapPromise(NAME, afterRestore);
  },
}));

export default tcpPlugin;
