/**
 * Restore: established connections rebuilt in repair mode behind the network lock (or reset,
 * with --tcp-close), listeners, unconnected and UDP sockets with their queued datagrams; the
 * connections leave repair mode once every process of the image exists.
 */
import { closeSync } from 'node:fs';
import {
  attachSocketFilter,
  CkptError,
  REPLAY_MARK,
  createSessionState,
  logger,
  type FdRecord,
  type NetworkLock,
  type PluginContext,
  type ProcessRestore,
  type RestoreSession,
} from '@ckpt/core';
import {
  native,
  AF_INET,
  AF_INET6,
  F_DUPFD_CLOEXEC,
  F_SETFL,
  IPPROTO_TCP,
  IPPROTO_UDP,
  O_NONBLOCK,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  SOL_SOCKET,
  SO_REUSEADDR,
  type NativeError,
} from '@ckpt/native';
import { TCP_STATES, type InetAddr, type InetSocketData, type TcpConnData, type TcpOptions } from './record.js';
import { leaveRepair, setOptions } from './options.js';
import { describeSocket, fmtAddr } from './show.js';

const log = logger('plugin:tcp');

/** What sockConnect returns for a connect in progress on a non-blocking socket. */
const EINPROGRESS = 115;

interface RestoreState {
  /** Blocks this restore made (removed at the end, or on failure). */
  blocks: NetworkLock;
  /** Blocks the dump made (added again, a no-op unless someone removed them; removed at the end only). */
  dumpBlocks: NetworkLock;
  /** Our own duplicates of the sockets still in repair mode, with their records. */
  repaired: Array<{ fd: number; data: InetSocketData }>;
}
const restores = createSessionState('tcp:restore', (session: RestoreSession): RestoreState => {
  // The dump's blocks belong to the image from the first moment: a restore that fails or is
  // killed must not leave them recorded under its own pid, or the next ckpt would sweep them as
  // stale and the peer's next packet would meet a closed port (a reset) before the retry.
  const dumpBlocks = session.services.netlock.group();
  dumpBlocks.handOver(session.image.dir);
  const state: RestoreState = { blocks: session.services.netlock.group(), dumpBlocks, repaired: [] };
  // A failed restore: the half-built sockets are closed in repair mode (silently), and only
  // the blocks this restore made are removed (the dump's stay for the next try).
  session.onRollback(() => {
    for (const r of state.repaired.splice(0)) closeQuietly(r.fd);
    state.blocks.unblockAll();
  });
  return state;
});

const restoreState = (session: RestoreSession) => restores.of(session);

/** close(2), ignoring an fd already closed. */
function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    /* closed */
  }
}

/** Binds fd to addr, or fails with an error saying why (in use, not on this host). */
function bindOrExplain(fd: number, addr: InetAddr, what: string): void {
  try {
    native.sock.sockBind(fd, addr);
  } catch (e) {
    const code = (e as { code?: string }).code;
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${what}: cannot bind ${fmtAddr(addr)}: ${code ?? (e as Error).message}`, {
      cause: e,
      hint:
        code === 'EADDRINUSE'
          ? 'another socket holds that address (is the dumped process still running?)'
          : code === 'EADDRNOTAVAIL'
            ? 'the address does not exist on this host'
            : undefined,
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
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${what}: the connection is open in another socket (inode ${held.inode}, state ${TCP_STATES[held.state]})`, {
      hint: 'the dumped process (or a copy of it) still runs: stop it before restoring',
    });
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
export function timestampNow(t: TcpConnData, now = Date.now()): number {
  const usec = t.timestamp & 1;
  const away = Math.max(0, now - t.dumpedAt) * (usec ? 1000 : 1);
  return ((((t.timestamp + away) >>> 0) & ~1) | usec) >>> 0;
}

/**
 * How a connection is rebuilt: the socket is made ESTABLISHED in repair mode with its queues, then
 * taken to its state the way TCP got there. Our FIN is queued by shutdown(SHUT_WR) (taken as sent
 * when the peer had acknowledged it); the peer's FIN, its acknowledgement of ours and a reset are
 * replayed as packets from the peer's address (they pass the network lock by their mark).
 *   FIN_WAIT1  our FIN                          CLOSE_WAIT  peer's FIN
 *   FIN_WAIT2  our FIN, acknowledged            LAST_ACK    peer's FIN, then our FIN
 *   CLOSING    our FIN, then the peer's FIN     CLOSE       peer's FIN, our FIN, acknowledged
 *   CLOSE with an error pending: a reset (the reader gets ECONNRESET after the unread bytes).
 * The saved sequence numbers count each FIN already exchanged; the queues start before them.
 */
export interface ClosingPlan {
  /** The saved numbers count the peer's FIN / our FIN. */
  savedFinIn: boolean;
  savedFinOut: boolean;
  /** Steps after the queues are filled. */
  finOut: boolean;
  finIn: boolean;
  finOutAcked: boolean;
  reset: boolean;
  /** TCP_INFO state the socket must reach. */
  expect: number;
  /** The send queue is dropped (restore --tcp-close: the peer is gone). */
  dropSendQueue: boolean;
}

const STATE_NO = (name: string) => TCP_STATES.indexOf(name);

/** The steps that take a rebuilt connection from ESTABLISHED to its saved state (or, with `close`, to a clean CLOSE). */
export function closingPlan(d: Pick<InetSocketData, 'state' | 'error'>, close: boolean): ClosingPlan {
  const s = d.state;
  const cleanClose = s === 'CLOSE' && !d.error;
  const savedFinIn = ['CLOSE_WAIT', 'LAST_ACK', 'CLOSING'].includes(s) || cleanClose;
  const savedFinOut = ['FIN_WAIT1', 'FIN_WAIT2', 'CLOSING', 'LAST_ACK'].includes(s) || cleanClose;
  if (close) {
    // The peer is gone: the connection ends as if both FINs had crossed (its unread bytes stay readable).
    return { savedFinIn, savedFinOut, finOut: true, finIn: true, finOutAcked: true, reset: false, expect: STATE_NO('CLOSE'), dropSendQueue: true };
  }
  return {
    savedFinIn,
    savedFinOut,
    finOut: savedFinOut,
    finIn: savedFinIn,
    finOutAcked: s === 'FIN_WAIT2' || cleanClose,
    reset: s === 'CLOSE' && !!d.error,
    expect: STATE_NO(s),
    dropSendQueue: false,
  };
}

/** An IPv4-mapped IPv6 address as the IPv4 one (its packets travel over IPv4). */
function unmapped(a: InetAddr): InetAddr {
  const m = a.family === 6 ? /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a.addr) : null;
  return m ? { family: 4, addr: m[1]!, port: a.port } : a;
}

/** Waits (1 s at most) until the socket is in TCP state `want`. */
async function waitState(fd: number, want: number, what: string, step: string): Promise<void> {
  const end = Date.now() + 1000;
  for (;;) {
    const got = native.sock.sockInfo(fd).state ?? 0;
    if (got === want) return;
    if (Date.now() > end) {
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${what}: after ${step} the connection is ${TCP_STATES[got] ?? got}, not ${TCP_STATES[want]}`);
    }
    await new Promise((r) => setTimeout(r, 2));
  }
}

const TH_FIN = 1,
  TH_RST = 4,
  TH_ACK = 16;

/** Takes a connection rebuilt ESTABLISHED (in repair mode) to its saved state: FINs and a reset, as the plan says. */
async function replayClosing(fd: number, d: InetSocketData, plan: ClosingPlan, seqs: { rcvNxt: number; sndUna: number; writeSeq: number }, what: string) {
  const t = d.tcp!;
  const local = unmapped(d.local!),
    peer = unmapped(d.peer!);
  // The peer's window as its packets tell it (scaled down by the window scale it uses).
  const window = t.window ? Math.min(0xffff, t.window.sndWnd >>> (t.options & 4 /* TCPI_OPT_WSCALE */ ? t.sndWscale : 0)) : 0xffff;
  const inject = (seq: number, ack: number, flags: number) =>
    native.sock.tcpInject(local, peer, { seq: seq >>> 0, ack: ack >>> 0, flags, window }, REPLAY_MARK);
  let rcvNxt = seqs.rcvNxt;
  if (plan.reset) {
    inject(rcvNxt, 0, TH_RST);
    return waitState(fd, plan.expect, what, 'the reset');
  }
  // CLOSING: ours went first; LAST_ACK and CLOSE: the peer's did.
  const outFirst = plan.finOut && !(plan.finIn && plan.finOutAcked) && d.state !== 'LAST_ACK';
  if (outFirst) native.sock.tcpShutdownRepair(fd, plan.finOutAcked);
  if (plan.finIn) {
    inject(rcvNxt, seqs.sndUna, TH_FIN | TH_ACK);
    rcvNxt = (rcvNxt + 1) >>> 0;
    await waitState(fd, STATE_NO(outFirst ? 'CLOSING' : 'CLOSE_WAIT'), what, "the peer's FIN");
  }
  if (plan.finOut && !outFirst) native.sock.tcpShutdownRepair(fd, plan.finOutAcked);
  if (plan.finOutAcked) inject(rcvNxt, seqs.writeSeq + 1, TH_ACK);
  await waitState(fd, plan.expect, what, 'the FINs');
}

/**
 * A connection (established, closing, or closed with its unread bytes): blocked, then rebuilt in
 * repair mode and taken to its state; with `close` (restore --tcp-close), to a clean close.
 */
async function restoreConnection(proc: ProcessRestore, d: InetSocketData, domain: number, what: string, close: boolean): Promise<number> {
  const session = proc.session;
  const st = restoreState(session);
  const t = d.tcp!;
  const blocks = d.locked ? st.dumpBlocks : st.blocks;
  blocks.block(d.local!, d.peer!);
  const plan = closingPlan(d, close);
  const fd = native.sock.inetSocket(domain, SOCK_STREAM | SOCK_NONBLOCK, IPPROTO_TCP);
  try {
    // Options first: repair mode forces address reuse, which SO_REUSEADDR would undo.
    setOptions(fd, d, what);
    native.sock.tcpRepair(fd, 1);
    const inq = Buffer.from(t.inq, 'base64'),
      outq = plan.dropSendQueue ? Buffer.alloc(0) : Buffer.from(t.outq, 'base64');
    // Where the bytes end, before any FIN.
    const rcvNxt = (t.inqSeq - (plan.savedFinIn ? 1 : 0)) >>> 0,
      writeSeq = (t.outqSeq - (plan.savedFinOut ? 1 : 0)) >>> 0;
    const sndUna = (writeSeq - outq.length) >>> 0;
    native.sock.tcpSetQueueSeqs(fd, (rcvNxt - inq.length) >>> 0, sndUna);
    bindOrExplain(fd, d.local!, what);
    repairConnect(fd, d, what);
    let window = t.window;
    if (window && ((window.rcvWup - rcvNxt) | 0) > 0) {
      // The last window the peer was told of counted its FIN, which is not received yet.
      const over = (window.rcvWup - rcvNxt) | 0;
      window = { ...window, rcvWup: rcvNxt, rcvWnd: window.rcvWnd + over };
    }
    native.sock.tcpRepairFill(fd, {
      options: t.options,
      sndWscale: t.sndWscale,
      rcvWscale: t.rcvWscale,
      mss: t.mss,
      unsent: plan.dropSendQueue ? 0 : t.unsent,
      timestamp: timestampNow(t),
      inq,
      outq,
      ...(window && !plan.dropSendQueue ? { window } : {}),
    });
    if (plan.expect !== STATE_NO('ESTABLISHED')) await replayClosing(fd, d, plan, { rcvNxt, sndUna, writeSeq }, what);
    st.repaired.push({ fd: native.fd.fcntl(fd, F_DUPFD_CLOEXEC, 0), data: d });
    return fd;
  } catch (e) {
    closeQuietly(fd);
    if (e instanceof CkptError) throw e;
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${what}: cannot restore the connection: ${(e as Error).message}`, { cause: e });
  }
}

/** Waits (2 s at most) until n datagrams are queued on fd. */
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

/** A listener: bound (with address reuse for the bind, as connections of it may hold its port) and listening. */
function restoreListener(fd: number, d: InetSocketData, what: string, reuse: number): void {
  // Connections of this listener restored before it hold its port: reuse for the bind.
  if (!reuse) native.sock.sockSetInt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
  bindOrExplain(fd, d.local ?? { family: d.family, addr: d.family === 6 ? '::' : '0.0.0.0', port: 0 }, what);
  native.sock.sockListen(fd, d.backlog ?? 128);
  if (!reuse) native.sock.sockSetInt(fd, SOL_SOCKET, SO_REUSEADDR, 0);
}

/** A TCP socket bound and never connected (or closed by a reset): its port is kept when it is free. */
function bindIfFree(ctx: PluginContext<TcpOptions>, fd: number, d: InetSocketData, what: string): void {
  if (d.local) {
    try {
      native.sock.sockBind(fd, d.local);
    } catch (e) {
      ctx.log('%s: left unbound: %s', what, (e as Error).message);
    }
  }
}

/** UDP: each queued datagram sent again into fd from its sender's address (raw socket), then waited for. */
async function refillDatagrams(fd: number, d: InetSocketData, what: string): Promise<void> {
  const datagrams = d.datagrams!;
  const to = d.local && !['0.0.0.0', '::'].includes(d.local.addr) ? d.local : { family: d.family, addr: LOOPBACK[d.family], port: d.local?.port ?? 0 };
  for (const g of datagrams) {
    // A dual-stack socket's IPv4 senders: sent over IPv4.
    const src = unmapped(g.from);
    const to4 = unmapped(to);
    const dst = src === g.from ? to : to4.family === 4 ? to4 : { family: 4 as const, addr: '127.0.0.1', port: to.port };
    native.sock.udpInject(dst, src, Buffer.from(g.data, 'base64'));
  }
  await waitQueued(fd, datagrams.length, what);
}

/**
 * UDP, or TCP connecting (SYN_SENT): bound, connected again, queued datagrams put back.
 *
 * A connecting TCP socket holds its port (connect gave it one, or the program bound it), but
 * between the dump and the restore another socket may have taken that port: an ephemeral port
 * freed by the kill is soon handed out again. Its connection's 4-tuple is still its own, as for
 * an established connection, so it is bound the same way, in repair mode (which lets the bind
 * share the port), and leaves repair mode before it connects. A UDP port is the socket's alone:
 * one taken is an error.
 */
async function restoreBoundOrConnecting(fd: number, d: InetSocketData, what: string): Promise<void> {
  if (d.local && d.proto === 'tcp') {
    native.sock.tcpRepair(fd, 1);
    bindOrExplain(fd, d.local, what);
    leaveRepair(fd, d, -1);
  } else if (d.local) bindOrExplain(fd, d.local, what);
  if (d.peer) {
    let r: number;
    try {
      r = native.sock.sockConnect(fd, d.peer);
    } catch (e) {
      const code = (e as NativeError).code;
      if (d.proto !== 'tcp' || (code !== 'EADDRNOTAVAIL' && code !== 'EADDRINUSE')) throw e;
      throw new CkptError(
        'ERR_CKPT_RESTORE_FAILED',
        `${what}: another socket already connects from ${d.local ? fmtAddr(d.local) : 'that port'} to ${fmtAddr(d.peer)}`,
        {
          cause: e,
          hint: 'the dumped process (or a copy of it) still runs: stop it before restoring',
        },
      );
    }
    if (r !== 0 && r !== EINPROGRESS) throw new Error(`connect: ${r}`);
  }
  if (d.datagrams?.length) await refillDatagrams(fd, d, what);
  // shutdown(2) of an unconnected datagram socket takes effect and answers ENOTCONN.
  if (d.shutdown) shutdownUnconnected(fd, d.shutdown);
}

/** shutdown(2) with the saved bits (1 reading, 2 writing); on a socket not connected it takes effect and answers ENOTCONN. */
function shutdownUnconnected(fd: number, bits: number): void {
  try {
    native.sock.unixShutdown(fd, bits - 1);
  } catch (e) {
    if ((e as NativeError).code !== 'ENOTCONN') throw e;
  }
}

/** socket(2)'s type and protocol for a saved socket. */
function socketKind(d: InetSocketData): [number, number] {
  switch (d.proto) {
    case 'tcp':
      return [SOCK_STREAM, IPPROTO_TCP];
    case 'udplite':
      return [SOCK_DGRAM, 136];
    case 'ping':
      return [SOCK_DGRAM, d.family === 6 ? 58 : 1];
    case 'raw':
      return [3 /* SOCK_RAW */, d.protocol ?? 0];
    default:
      return [SOCK_DGRAM, IPPROTO_UDP];
  }
}

/** Every socket but an established or closing connection: a new socket with its options, name, peer and queue. */
async function restoreFresh(ctx: PluginContext<TcpOptions>, d: InetSocketData, domain: number, what: string): Promise<number> {
  const [type, protocol] = socketKind(d);
  let fd: number;
  try {
    fd = native.sock.inetSocket(domain, type | SOCK_NONBLOCK, protocol);
  } catch (e) {
    const hint =
      d.proto === 'ping' && (e as NativeError).code === 'EACCES'
        ? 'ping sockets need the restoring group in net.ipv4.ping_group_range (sysctl); ckpt restore runs as group 0'
        : undefined;
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${what}: cannot make the socket: ${(e as Error).message}`, { cause: e, hint });
  }
  try {
    const reuse = d.opts.find(([l, n]) => l === SOL_SOCKET && n === SO_REUSEADDR)?.[2] ?? 0;
    setOptions(fd, d, what);
    if (d.state === 'LISTEN') restoreListener(fd, d, what, reuse);
    else if (d.proto === 'tcp' && d.state === 'CLOSE') {
      bindIfFree(ctx, fd, d, what);
      // shutdown(2) of a socket never connected takes effect and answers ENOTCONN.
      if (d.shutdown) shutdownUnconnected(fd, d.shutdown);
    } else await restoreBoundOrConnecting(fd, d, what);
  } catch (e) {
    closeQuietly(fd);
    if (e instanceof CkptError) throw e;
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${what}: ${(e as Error).message}`, { cause: e });
  }
  return fd;
}

/** The fds.restore handler: rebuilds one socket in the restorer and returns our fd of it. */
export async function restoreFd(ctx: PluginContext<TcpOptions>, rec: FdRecord, proc: ProcessRestore): Promise<number | undefined> {
  const d = rec.data as InetSocketData;
  const domain = d.family === 6 ? AF_INET6 : AF_INET;
  const what = `pid ${proc.pid} fd ${rec.fd} (${describeSocket(d)})`;
  let fd: number;
  if (d.proto === 'tcp' && d.tcp) {
    fd = await restoreConnection(proc, d, domain, what, !!ctx.options(proc.session)?.close);
  } else {
    fd = await restoreFresh(ctx, d, domain, what);
  }
  native.fd.fcntl(fd, F_SETFL, d.flags & O_NONBLOCK);
  if (d.filter) attachSocketFilter(proc, fd, d.filter, what);
  return fd;
}

/** Every process exists: connections leave repair mode, then their blocks go. */
export async function afterRestore(session: RestoreSession): Promise<void> {
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
