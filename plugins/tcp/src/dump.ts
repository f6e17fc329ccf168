/**
 * Dump: claims TCP, UDP, UDP-Lite, ICMP ping and raw inet sockets and reads them (established connections through TCP_REPAIR,
 * behind the network lock); puts connections back in repair mode before the kill, and undoes
 * it all when the dump fails.
 */
import { closeSync, readlinkSync } from 'node:fs';
import {
  CkptError,
  createSessionState,
  fault,
  procfs,
  readSocketFilter,
  type DumpSession,
  type FdClaim,
  type FdDumpRequest,
  type NetworkLock,
  type PluginContext,
  type ProcessDump,
  socketGuard,
} from '@ckpt/core';
import { native, AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, O_NONBLOCK, SOCK_DGRAM, SOCK_STREAM, SOL_SOCKET, SO_REUSEADDR } from '@ckpt/native';
import { TCP_STATES, type InetSocketData, type TcpOptions } from './record.js';
import { leaveRepair, readOptions } from './options.js';
import { describeSocket } from './show.js';

type ConnState = ReturnType<typeof native.sock.tcpDumpConn>;
type SockInfo = ReturnType<typeof native.sock.sockInfo>;

/** TCP_INFO states (the ones the dump tells apart). */
const ESTABLISHED = 1,
  SYN_SENT = 2,
  CLOSE = 7,
  LISTEN = 10;
/** A connection ckpt reads through TCP_REPAIR: established, or closing in any of these states. */
const CONNECTED = new Set([ESTABLISHED, 4 /* FIN_WAIT1 */, 5 /* FIN_WAIT2 */, 8 /* CLOSE_WAIT */, 9 /* LAST_ACK */, 11 /* CLOSING */]);

/** A connection's fd in a process of the tree (task: the process's procPid, whose fd table it is). */
interface Held {
  pid: number;
  task: number;
  fd: number;
  data: InetSocketData;
}

interface DumpState {
  /** The network lock's group for this dump's connections (they stay blocked after a successful dump). */
  blocks: NetworkLock;
  /** Established connections of the dump: put back in repair mode before the kill. */
  conns: Array<Held>;
  /** Sockets this plugin left in repair mode (until the kill). */
  inRepair: Array<Held>;
}
const dumps = createSessionState('tcp:dump', (session: DumpSession): DumpState => ({ blocks: session.services.netlock.group(), conns: [], inRepair: [] }));
const dumpState = (session: DumpSession) => dumps.of(session);

/** The network namespace of pid, when it is not ours (nft must run there). */
function foreignNetns(pid: number): number | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`) === readlinkSync('/proc/self/ns/net') ? undefined : pid;
  } catch {
    return undefined;
  }
}

const IPPROTO_ICMP = 1,
  IPPROTO_ICMPV6 = 58,
  IPPROTO_UDPLITE = 136,
  SOCK_RAW = 3;

type Proto = InetSocketData['proto'];

/** sockInfo of the fd when it is an inet socket ckpt saves (IPv4 or IPv6), and which kind; undefined for any other fd. */
function inetSocketInfo(req: FdDumpRequest): { info: SockInfo; tcp: boolean; proto: Proto } | undefined {
  if (req.kind !== 'socket') return undefined;
  const info = native.sock.sockInfo(req.dupFd);
  if (info.domain !== AF_INET && info.domain !== AF_INET6) return undefined;
  const dgram = info.type === SOCK_DGRAM;
  let proto: Proto | undefined;
  if (info.type === SOCK_STREAM && info.protocol === IPPROTO_TCP) proto = 'tcp';
  else if (dgram && info.protocol === IPPROTO_UDP) proto = 'udp';
  else if (dgram && info.protocol === IPPROTO_UDPLITE) proto = 'udplite';
  else if (dgram && (info.protocol === IPPROTO_ICMP || info.protocol === IPPROTO_ICMPV6)) proto = 'ping';
  else if (info.type === SOCK_RAW) proto = 'raw';
  if (!proto) return undefined;
  return { info, tcp: proto === 'tcp', proto };
}

/** The record as sockInfo and the options tell it, before any queue is read. */
function baseRecord(req: FdDumpRequest, info: SockInfo, proto: Proto, state: number): InetSocketData {
  const tcp = proto === 'tcp';
  return {
    proto,
    ...(proto === 'raw' ? { protocol: info.protocol } : {}),
    family: info.domain === AF_INET6 ? 6 : 4,
    state: tcp ? (TCP_STATES[state] ?? String(state)) : info.peer ? 'CONNECTED' : 'UNCONN',
    flags: req.info.flags & O_NONBLOCK,
    ...(info.local?.port ? { local: info.local } : {}),
    ...(info.peer ? { peer: info.peer } : {}),
    ...readOptions(req.dupFd, info.domain, info.type, info.protocol, tcp && state !== LISTEN && state !== CLOSE),
    recvQueue: info.inq ?? 0,
    sendQueue: info.outq ?? 0,
  };
}

/** UDP: every queued datagram (peeked, not consumed) with its sender. */
function dumpDatagrams(fd: number, data: InetSocketData): void {
  const q = native.sock.udpPeek(fd);
  data.datagrams = q.map((d) => ({ from: d.from, data: d.data.toString('base64') }));
  data.recvQueue = q.reduce((a, d) => a + d.data.length, 0);
}

/** A listener: its backlog; connections not yet accepted are dropped, with a note. */
function dumpListener(ctx: PluginContext, info: SockInfo, data: InetSocketData, what: string): void {
  data.backlog = info.backlog;
  data.recvQueue = data.sendQueue = 0;
  if (info.pending) {
    data.note = `${info.pending} connection(s) not yet accepted were dropped (their peers see a reset)`;
    ctx.log('%s: %s', what, data.note);
  }
}

/**
 * A connection, established or closing (or closed, its unread bytes still queued): read in repair
 * mode. A live one is blocked first, and unblocked at once if the process goes on.
 */
function dumpConnection(ctx: PluginContext, proc: ProcessDump, req: FdDumpRequest, info: SockInfo, data: InetSocketData, what: string): void {
  const fd = req.dupFd;
  const leaveRunning = !!proc.session.options.leaveRunning;
  if (!info.local || !info.peer) throw new CkptError('ERR_CKPT_DUMP_FAILED', `${what}: a connection without addresses`);
  const st = dumpState(proc.session);
  const nsPid = foreignNetns(proc.procPid);
  // A closed connection sends and receives nothing more: it needs no block, nor repair mode at the kill.
  const live = data.state !== 'CLOSE';
  // Nothing of the peer reaches the connection while it is read (and, unless the process
  // goes on running, until the restored socket has left repair mode).
  if (live) st.blocks.block(info.local, info.peer, nsPid);
  let conn: ConnState;
  const guard = socketGuard(proc.session);
  const reuse = data.opts.find(([l, n]) => l === SOL_SOCKET && n === SO_REUSEADDR)?.[2] ?? -1;
  const held = guard.holdRepair(fd, reuse);
  native.sock.tcpRepair(fd, 1);
  try {
    fault('tcp:repair');
    conn = native.sock.tcpDumpConn(fd);
  } finally {
    leaveRepair(fd, data, -1);
    guard.release(held);
  }
  if (!live) {
    // Closed by a reset (or another error, which cannot be read without clearing it), or by FINs both ways.
    if (info.error) data.error = true;
  } else if (leaveRunning) st.blocks.unblock(info.local, info.peer, nsPid);
  else data.locked = true;
  data.tcp = {
    inqSeq: conn.inqSeq,
    outqSeq: conn.outqSeq,
    inq: conn.inq.toString('base64'),
    outq: conn.outq.toString('base64'),
    unsent: conn.unsent,
    mss: conn.mss,
    options: conn.options,
    sndWscale: conn.sndWscale,
    rcvWscale: conn.rcvWscale,
    timestamp: conn.timestamp,
    ...(conn.window ? { window: conn.window } : {}),
    dumpedAt: Date.now(),
  };
  data.recvQueue = conn.inq.length;
  data.sendQueue = conn.outq.length;
  if (live) st.conns.push({ pid: proc.pid, task: proc.procPid, fd: req.fd, data });
  ctx.log('%s: %s, %d bytes received unread, %d to send (%d never sent)', what, data.state, conn.inq.length, conn.outq.length, conn.unsent);
}

/** The fds.dump handler: claims TCP and UDP sockets and saves them. */
export function makeDumpFd(ctx: PluginContext) {
  return async function dumpFd(req: FdDumpRequest, proc: ProcessDump): Promise<FdClaim<InetSocketData> | undefined> {
    const sock = inetSocketInfo(req);
    if (!sock) return undefined;
    const { info, tcp, proto } = sock;
    const state = tcp ? (info.state ?? CLOSE) : info.peer ? ESTABLISHED : CLOSE;
    const data = baseRecord(req, info, proto, state);
    const what = `pid ${proc.pid} fd ${req.fd} (${describeSocket(data)})`;
    const filter = readSocketFilter(proc, req.fd, what);
    if (filter) data.filter = filter;
    // sock_diag answers for UDP and UDP-Lite (ping sockets have no diag handler).
    if (proto === 'udp' || proto === 'udplite') {
      const shut = native.sock.inetShutdown(data.family, info.protocol, req.stat.ino);
      if (shut) data.shutdown = shut;
    }
    if (!tcp && proto !== 'udp') {
      // Their queued packets cannot be sent again as from their senders: refused, not dropped.
      if (data.recvQueue) {
        throw new CkptError(
          'ERR_CKPT_UNSUPPORTED_FD',
          `cannot checkpoint pid ${proc.pid}: fd ${req.fd} is ${what} with ${data.recvQueue} bytes received and unread, which ckpt cannot queue again`,
          {
            hint: 'checkpoint once the process has read them (retry in a moment)',
          },
        );
      }
    } else if (!tcp) {
      dumpDatagrams(req.dupFd, data);
    } else if (state === LISTEN) {
      dumpListener(ctx, info, data, what);
    } else if (CONNECTED.has(state) || (state === CLOSE && info.peer)) {
      dumpConnection(ctx, proc, req, info, data, what);
    } else if (state === CLOSE) {
      // Never connected: shut down for reading shows (POLLRDHUP); for writing it does not, and a
      // write to such a socket fails with EPIPE either way.
      if (info.rdhup) data.shutdown = 1;
    } else if (state !== SYN_SENT) {
      throw new CkptError(
        'ERR_CKPT_UNSUPPORTED_FD',
        `cannot checkpoint pid ${proc.pid}: fd ${req.fd} is ${what}, in state ${data.state}, which ckpt cannot rebuild`,
        {
          hint: 'checkpoint once the connection is established (retry in a moment)',
        },
      );
    }
    return { kind: data.proto, data };
  };
}

/** Runs fn on our duplicate of fd `fd` of a process of the tree. */
function withFd<T>(h: Held, fd: number, fn: (ours: number) => T): T {
  const pidfd = procfs.pidfdOf({ pid: h.pid, procPid: h.task });
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

/**
 * The image is committed and the processes are about to be killed: their connections go into
 * repair mode so that they die silently (no FIN, no RST), as late as possible (a ckpt killed
 * before this leaves them working, only blocked, and the block is swept). They stay blocked until
 * the restore, so the blocks now belong to the image (a later ckpt removes them only if the image
 * is gone), not to this ckpt.
 */
export async function imageCommitted(session: DumpSession): Promise<void> {
  const st = dumps.peek(session);
  if (!st || session.options.leaveRunning || !session.image.path) return;
  st.blocks.handOver(session.image.path);
  for (const c of st.conns) {
    withFd(c, c.fd, (fd) => native.sock.tcpRepair(fd, 1));
    st.inRepair.push(c);
  }
}

/** Failure: before the engine thaws anything, connections leave repair mode and are unblocked. */
export async function undoDump(session: DumpSession, ctx: PluginContext<TcpOptions>): Promise<void> {
  const st = dumps.peek(session);
  if (!st) return;
  for (const s of st.inRepair.splice(0)) {
    try {
      withFd(s, s.fd, (fd) => leaveRepair(fd, s.data, 0));
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
