/**
 * Restore: every unix socket of the image is built at once, in the restorer, at the first one
 * asked for (buildAll, in the steps the header of index.ts lists); each fd then gets a duplicate
 * of our socket.
 */
import { chmodSync, chownSync, lstatSync, renameSync, unlinkSync } from 'node:fs';
import { attachSocketFilter, CkptError, fileId, takeFd, type FdRecord, type Logger, type ProcessRestore, type RestoreSession, type Tracee } from '@ckpt/core';
import {
  native,
  AF_UNIX,
  F_DUPFD_CLOEXEC,
  F_SETFL,
  O_NONBLOCK,
  SHUT_RD,
  SHUT_WR,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  SYS,
  type UnixDiagEntry,
} from '@ckpt/native';
import type { UnixSocketData } from './record.js';
import { addrText, bindsName, externals, parseAddrText, pathOf, rawOf, reachable } from './names.js';
import { applyOptions, TYPE_NUM } from './sockopts.js';
import { sessionOptions } from './session.js';
import { allSockets, builds, closeQuietly, disown, own, restoreError, type Build, type ImageSock, type Sock } from './build.js';
import { checkName } from './check.js';
import { fillDatagrams, fillStream } from './fill.js';
import { describeSocket } from './show.js';

/** sk_shutdown bits. */
const RCV_SHUTDOWN = 1,
  SEND_SHUTDOWN = 2;
const ECONNRESET = 104;

/** A new build, registered in the session, undone (fds closed, socket files removed) if the restore fails. */
function startBuild(session: RestoreSession): Build {
  const b: Build = { socks: new Map(), fds: new Set(), created: [], unlinkLater: [], inFlight: new Map() };
  builds.of(session).build = b;
  session.onRollback(() => {
    for (const fd of b.fds) closeQuietly(fd);
    b.fds.clear();
    for (const c of b.created) {
      try {
        if (lstatSync(c.path).ino === c.ino) unlinkSync(c.path);
      } catch {
        /* gone */
      }
    }
  });
  return b;
}

/** A socket file we just bound: removed if the restore fails, and again at the end if the program had unlinked it. */
function noteCreated(b: Build, d: UnixSocketData, raw: Buffer): void {
  const path = pathOf(d, raw);
  if (path) {
    b.created.push({ path, ino: lstatSync(path).ino });
    if (!d.file?.present) b.unlinkLater.push(path);
  }
}

/** Binds s to its name (after checking the name is free). */
function bindName(b: Build, s: Sock, raw: Buffer, diag: UnixDiagEntry[]): void {
  const where = `fd ${s.fd} of pid ${s.pid} (${describeSocket(s.d)})`;
  const path = pathOf(s.d, raw);
  if (path && s.d.file && !s.d.file.present && occupied(path)) {
    // The program unlinked its socket file and another file has the path since: the name is
    // bound with that file moved aside for a moment, then put back over the socket's new file.
    const aside = `${path}.ckpt-aside-${process.pid}`;
    renameSync(path, aside);
    try {
      native.sock.unixBind(s.rfd, raw, s.d.dir ?? null);
    } catch (e) {
      throw restoreError(s, `bind to ${addrText(raw)}`, e);
    } finally {
      renameSync(aside, path);
    }
    return;
  }
  checkName(raw, s.d, where, diag, true);
  try {
    native.sock.unixBind(s.rfd, raw, s.d.dir ?? null);
  } catch (e) {
    throw restoreError(s, `bind to ${addrText(raw)}`, e);
  }
  noteCreated(b, s.d, raw);
}

/**
 * A socketpair made again by the process that made it (both ends name it: SO_PEERCRED), when it is
 * in the image, with the effective ids it had then (for the moment, in its leader): so that each
 * end's SO_PEERCRED names that pid and ids again. Undefined when its maker is not in the image.
 */
function pairAsItsMaker(session: RestoreSession, s: ImageSock, p: ImageSock): [number, number] | undefined {
  const c = s.d.peercred;
  const q = p.d.peercred;
  if (!c || !q || c.pid !== q.pid || c.uid !== q.uid || c.gid !== q.gid) return undefined;
  const proc = session.processes.find((x) => x.pid === c.pid);
  const t = proc?.stub;
  if (!proc || !t) return undefined;
  const fds = asMaker(proc, c, () => {
    const at = t.put(Buffer.alloc(8), 0);
    t.syscall(SYS.socketpair, AF_UNIX, TYPE_NUM[s.d.type] | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, at);
    const two = t.read(at, 8);
    return [two.readInt32LE(0), two.readInt32LE(4)];
  });
  try {
    return [takeFd(t, fds[0]), takeFd(t, fds[1])];
  } finally {
    for (const fd of fds) t.syscallRaw(SYS.close, fd);
  }
}

/**
 * Runs fn in the leader of proc (a stub, still root) with the effective ids of cred for the
 * moment: what the kernel records as a socket's peer credentials (socketpair, listen, connect).
 */
function asMaker<T>(proc: ProcessRestore, cred: { uid: number; gid: number }, fn: () => T): T {
  const t = proc.stub!;
  t.syscall(SYS.setresgid, -1, cred.gid, -1);
  t.syscall(SYS.setresuid, -1, cred.uid, -1);
  try {
    return fn();
  } finally {
    t.syscall(SYS.setresuid, -1, 0, -1);
    t.syscall(SYS.setresgid, -1, 0, -1);
  }
}

/**
 * Runs a socket call (listen, connect) on our socket `rfd` inside the process whose pid `cred`
 * names, with its ids, so that the peer credentials it sets name them (SO_PEERCRED); false when
 * that process is not in the image (the caller does it itself).
 */
function callAs(
  session: RestoreSession,
  cred: UnixSocketData['peercred'],
  rfd: number,
  call: (t: Tracee, fd: number) => bigint,
  what: string,
  s: ImageSock,
): boolean {
  const proc = cred ? session.processes.find((x) => x.pid === cred.pid) : undefined;
  if (!cred || !proc?.stub) return false;
  const t = proc.stub;
  const fd = proc.borrowFd(rfd);
  try {
    const r = asMaker(proc, cred, () => call(t, fd));
    if (r < 0n) throw restoreError(s, what, new Error(`errno ${-r}`));
  } finally {
    t.syscallRaw(SYS.close, fd);
  }
  return true;
}

/** struct sockaddr_un of a raw address (a path, or an abstract name starting with NUL). */
function sockaddrUn(raw: Buffer): Buffer {
  const b = Buffer.alloc(2 + raw.length);
  b.writeUInt16LE(AF_UNIX, 0);
  raw.copy(b, 2);
  return b;
}

/** Whether a file other than a socket is at path. */
function occupied(path: string): boolean {
  try {
    return !lstatSync(path).isSocket();
  } catch {
    return false;
  }
}

/**
 * 1. Sockets. Pairs of unnamed sockets come from socketpair(); so does a datagram socket whose
 * peer is unnamed (only socketpair can have connected them). Accepted sockets are left for step 3.
 */
function createSockets(b: Build, session: RestoreSession, list: ImageSock[]): void {
  const byIno = new Map(list.map((s) => [s.d.ino, s]));
  for (const s of list) {
    if (b.socks.has(s.d.ino)) continue;
    const p = s.d.peer ? byIno.get(s.d.peer) : undefined;
    const pairable =
      p &&
      !b.socks.has(p.d.ino) &&
      s.d.state === 'connected' &&
      p.d.type === s.d.type &&
      (s.d.type === 'dgram' ? !p.d.nameRaw : !s.d.nameRaw && !p.d.nameRaw && p.d.peer === s.d.ino);
    if (p && pairable) {
      const [x, y] = pairAsItsMaker(session, s, p) ?? native.sock.unixSocketpair(TYPE_NUM[s.d.type] | SOCK_NONBLOCK);
      b.socks.set(s.d.ino, { ...s, rfd: own(b, x), pairedWith: p.d.ino });
      b.socks.set(p.d.ino, { ...p, rfd: own(b, y), pairedWith: s.d.ino });
      continue;
    }
    const accepted = s.d.type !== 'dgram' && (s.d.state === 'connected' || s.d.state === 'disconnected') && s.d.nameRaw && !s.d.bound && !s.d.external;
    // Accepted sockets come from accept() below.
    if (accepted) continue;
    // An unnamed datagram socket holding datagrams of a partner that is gone: one end of a
    // socketpair whose other end (a stand-in) sends them again, and is closed after.
    if (s.d.type === 'dgram' && !s.d.nameRaw && s.d.queue.length && !p) {
      const [x, y] = native.sock.unixSocketpair(SOCK_DGRAM | SOCK_NONBLOCK);
      b.socks.set(s.d.ino, { ...s, rfd: own(b, x), closer: own(b, y) });
      continue;
    }
    b.socks.set(s.d.ino, { ...s, rfd: own(b, native.sock.unixSocket(TYPE_NUM[s.d.type] | SOCK_NONBLOCK)) });
  }
}

/** 2. Names, listeners. */
function bindNames(b: Build, session: RestoreSession, diag: UnixDiagEntry[]): void {
  for (const s of b.socks.values()) {
    if (!bindsName(s.d)) continue;
    bindName(b, s, rawOf(s.d.nameRaw), diag);
    if (s.d.state === 'listening') {
      // listen() by whoever did it (its SO_PEERCRED, which its clients' sockets copy).
      const backlog = s.d.backlog ?? 128;
      if (callAs(session, s.d.peercred, s.rfd, (t, fd) => t.syscallRaw(SYS.listen, fd, backlog), 'listen', s)) continue;
      try {
        native.sock.sockListen(s.rfd, backlog);
      } catch (e) {
        throw restoreError(s, 'listen', e);
      }
    }
  }
}

/** A temporary listener at the address of an accepted socket whose listener is gone (or outside); unnamed if the address is taken. */
function tempListener(b: Build, s: ImageSock, diag: UnixDiagEntry[], log: Logger): number {
  const raw = rawOf(s.d.nameRaw);
  let t = own(b, native.sock.unixSocket(TYPE_NUM[s.d.type] | SOCK_NONBLOCK));
  try {
    checkName(raw, s.d, `fd ${s.fd} of pid ${s.pid}`, diag, true);
    native.sock.unixBind(t, raw, s.d.dir ?? null);
    noteCreated(b, s.d, raw);
  } catch {
    // The address is taken: the connection comes back without its listener's name.
    log('pid %d fd %d: %s is taken; the accepted socket gets another address', s.pid, s.fd, s.d.name);
    disown(b, t);
    t = own(b, native.sock.unixSocket(TYPE_NUM[s.d.type] | SOCK_NONBLOCK));
    native.sock.unixBind(t, Buffer.alloc(0));
  }
  native.sock.sockListen(t, 128);
  return t;
}

/** The listener an accepted socket is taken from: the image's one with its name, or a temporary one (kept in temps). */
function listenerFor(b: Build, temps: Map<string, number>, s: ImageSock, diag: UnixDiagEntry[], log: Logger): number {
  const real = [...b.socks.values()].find((x) => x.d.state === 'listening' && x.d.type === s.d.type && x.d.nameRaw === s.d.nameRaw);
  if (real) return real.rfd;
  const key = `${s.d.type}:${s.d.nameRaw}`;
  let t = temps.get(key);
  if (t === undefined) {
    t = tempListener(b, s, diag, log);
    temps.set(key, t);
  }
  return t;
}

/**
 * 3. Accepted connections: the client connects to the listener of the image with that name,
 * or to a temporary one at the same address; the accepted socket is taken from it.
 */
function acceptConnections(b: Build, session: RestoreSession, list: ImageSock[], diag: UnixDiagEntry[], log: Logger): void {
  const temps = new Map<string, number>();
  for (const s of list) {
    if (b.socks.has(s.d.ino)) continue; // only accepted sockets are left
    const client = s.d.peer && s.d.state === 'connected' ? b.socks.get(s.d.peer) : undefined;
    const l = listenerFor(b, temps, s, diag, log);
    const addr = reachable(native.sock.unixName(l, false), s.d);
    let cfd: number;
    let closer: number | undefined;
    if (client) {
      cfd = client.rfd;
    } else {
      // The client is gone (or outside and declared external): a throwaway one, closed after the data.
      cfd = closer = own(b, native.sock.unixSocket(TYPE_NUM[s.d.type] | SOCK_NONBLOCK));
    }
    // connect() by the client's process (the accepted socket's SO_PEERCRED names it), else by us.
    const connected = callAs(
      session,
      s.d.peercred,
      cfd,
      (t, fd) => t.syscallRaw(SYS.connect, fd, t.put(sockaddrUn(addr), 512), 2 + addr.length),
      `connect to ${addrText(addr)}`,
      s,
    );
    if (!connected) {
      try {
        native.sock.unixConnect(cfd, addr);
      } catch (e) {
        throw restoreError(s, `connect to ${addrText(addr)}`, e);
      }
    }
    const afd = own(b, native.sock.unixAccept(l));
    b.socks.set(s.d.ino, { ...s, rfd: afd, closer });
  }
  for (const t of temps.values()) disown(b, t);
}

/**
 * Closed peers of the other sockets: a socketpair (or, for datagrams, a bound socket) whose
 * other end is closed once the data is in. Here: stream and seqpacket sockets created alone.
 */
function connectClosedPeers(b: Build): void {
  for (const s of b.socks.values()) {
    if (s.d.state !== 'disconnected' || s.closer !== undefined) continue;
    if (s.d.type === 'dgram') continue; // below, after the data
    // A stream socket created alone: connect it through a temporary listener.
    const t = own(b, native.sock.unixSocket(TYPE_NUM[s.d.type] | SOCK_NONBLOCK));
    native.sock.unixBind(t, Buffer.alloc(0));
    native.sock.sockListen(t, 1);
    native.sock.unixConnect(s.rfd, native.sock.unixName(t, false));
    s.closer = own(b, native.sock.unixAccept(t));
    disown(b, t);
  }
}

/** External peers: connected afresh (before the data: they carry none of it), to the address --external gives if any. */
function connectExternals(b: Build, session: RestoreSession, log: Logger): void {
  for (const s of b.socks.values()) {
    if (!s.d.external) continue;
    // Handed an fd of ckpt restore instead (--inherit-fd, --substitute): no connection of ours.
    if (session.options.substitute?.[fileId(s.pid, s.fd)] !== undefined) {
      log('pid %d fd %d: %s is given an fd of ckpt restore instead', s.pid, s.fd, describeSocket(s.d));
      continue;
    }
    const raw = rawOf(s.d.externalRaw);
    const remap = externals(sessionOptions.of(session).external).get(s.d.external);
    const target = remap && remap !== s.d.external ? parseAddrText(remap) : raw;
    try {
      native.sock.unixConnect(s.rfd, target);
    } catch (e) {
      throw restoreError(
        s,
        `reconnecting to ${addrText(target)} (declared external)`,
        e,
        `the program that listens on ${addrText(target)} must be running at restore`,
      );
    }
    if (s.d.droppedBytes) log('pid %d fd %d: %d bytes received from %s before the checkpoint are dropped', s.pid, s.fd, s.d.droppedBytes, s.d.external);
  }
}

/** 4. Queued data, from the peer (stream, seqpacket) or the sender (datagrams). */
function fillQueues(b: Build, log: Logger): void {
  for (const s of b.socks.values()) {
    if (!s.d.queue.length || s.d.external) continue;
    if (s.d.type === 'dgram') fillDatagrams(b, s, log);
    else fillStream(b, s);
  }
}

/** 5a. Datagram sockets connect to their peers (a closed peer: a socket connected to, then closed in step 6). */
function connectDatagrams(b: Build): void {
  for (const s of b.socks.values()) {
    if (s.d.type !== 'dgram' || s.d.external || (s.pairedWith === s.d.peer && s.pairedWith !== undefined)) continue;
    if (s.d.state === 'connected' && s.d.peer) {
      const p = b.socks.get(s.d.peer);
      const addr = p ? reachable(native.sock.unixName(p.rfd, false), p.d) : rawOf(s.d.peerNameRaw);
      try {
        native.sock.unixConnect(s.rfd, addr);
      } catch (e) {
        throw restoreError(s, `connect to ${addrText(addr)}`, e);
      }
    } else if (s.d.state === 'disconnected' && s.closer === undefined) {
      // Connected to a socket that is closed since: connect to one, then close it.
      const t = own(b, native.sock.unixSocket(SOCK_DGRAM | SOCK_NONBLOCK));
      native.sock.unixBind(t, Buffer.alloc(0));
      native.sock.unixConnect(s.rfd, native.sock.unixName(t, false));
      s.closer = t;
    }
  }
}

/** 5b. Clients queued on listeners connect again, in their order, so that they are pending again. */
function reconnectPending(b: Build): void {
  for (const l of b.socks.values()) {
    if (l.d.state !== 'listening') continue;
    for (const c of l.d.pending ?? []) {
      const s = b.socks.get(c);
      if (!s) continue;
      try {
        native.sock.unixConnect(s.rfd, reachable(native.sock.unixName(l.rfd, false), l.d));
      } catch (e) {
        throw restoreError(s, `connect to ${l.d.name} (pending, not yet accepted)`, e);
      }
    }
  }
}

/** 6a. Closed peers are closed now (leaving a byte unread when the socket had a pending ECONNRESET). */
function closeClosers(b: Build): void {
  for (const s of b.socks.values()) {
    if (s.closer === undefined) continue;
    if (s.d.error === ECONNRESET && s.d.type !== 'dgram') {
      // The peer closed with data unread: leave a byte in the closer so that closing it resets.
      try {
        native.sock.unixSend(s.rfd, Buffer.from([0]));
      } catch {
        /* best effort */
      }
    }
    disown(b, s.closer);
    s.closer = undefined;
  }
}

/** 6b. Shutdown state (a direction a peer's shutdown already closed is left alone). */
function applyShutdowns(b: Build): void {
  for (const s of b.socks.values()) {
    if (s.d.state === 'disconnected' && s.d.type !== 'dgram') continue; // the closed peer set both directions
    const peer = s.d.peer ? b.socks.get(s.d.peer) : undefined;
    try {
      if (s.d.shutdown & SEND_SHUTDOWN) native.sock.unixShutdown(s.rfd, SHUT_WR);
      const rcvSetByPeer = s.d.type !== 'dgram' && peer && peer.d.shutdown & SEND_SHUTDOWN;
      if (s.d.shutdown & RCV_SHUTDOWN && !rcvSetByPeer) native.sock.unixShutdown(s.rfd, SHUT_RD);
    } catch (e) {
      throw restoreError(s, 'shutdown', e);
    }
  }
}

/** 6c. Options, flags, and the mode and owner of socket files. */
function applyOptionsAndFiles(b: Build): void {
  for (const s of b.socks.values()) {
    try {
      applyOptions(s.rfd, s.d.opts);
      native.fd.fcntl(s.rfd, F_SETFL, s.d.flags & O_NONBLOCK);
    } catch (e) {
      throw restoreError(s, 'socket options', e);
    }
    const path = bindsName(s.d) ? pathOf(s.d) : undefined;
    if (path && s.d.file?.present && s.d.file.mode !== undefined) {
      try {
        chmodSync(path, s.d.file.mode);
        chownSync(path, s.d.file.uid ?? 0, s.d.file.gid ?? 0);
      } catch (e) {
        throw restoreError(s, `mode and owner of ${path}`, e);
      }
    }
  }
}

/** 6d. Socket files the program had unlinked are unlinked again. */
function unlinkAgain(b: Build): void {
  for (const path of b.unlinkLater) {
    try {
      unlinkSync(path);
    } catch {
      /* gone */
    }
  }
}

/**
 * 4a. The files in flight in the queues, made (or found) through core: a socket among them is
 * one of ours (built above); another file is restored by its owner, or is the description an fd
 * of the image shares.
 */
async function filesInFlight(b: Build, session: RestoreSession): Promise<void> {
  for (const s of b.socks.values()) {
    const proc = session.processes.find((p) => p.pid === s.pid);
    for (const m of s.d.queue) {
      for (const id of m.fds ?? []) {
        if (!proc) throw restoreError(s, 'files in flight', new Error(`no process ${s.pid} in the image`));
        b.inFlight.set(`${s.pid}:${id}`, await proc.restoreInFlight(id));
      }
    }
  }
}

/** Rebuilds every unix socket of the image in the restorer, step by step. */
async function buildAll(session: RestoreSession, log: Logger): Promise<Build> {
  const b = startBuild(session);
  const list = allSockets(session);
  const diag = native.sock.unixDiag();
  createSockets(b, session, list);
  bindNames(b, session, diag);
  acceptConnections(b, session, list, diag, log);
  connectClosedPeers(b);
  connectExternals(b, session, log);
  await filesInFlight(b, session);
  fillQueues(b, log);
  connectDatagrams(b);
  reconnectPending(b);
  closeClosers(b);
  applyShutdowns(b);
  applyOptionsAndFiles(b);
  unlinkAgain(b);
  log('rebuilt %d unix sockets', b.socks.size);
  return b;
}

/** The fds.restore handler: builds every socket at the first one, then hands out a duplicate of ours. */
export function makeRestoreFd(log: Logger) {
  return async function restoreFd(rec: FdRecord, proc: ProcessRestore): Promise<number | undefined> {
    const d = rec.data as UnixSocketData;
    const b = builds.of(proc.session).build ?? (await buildAll(proc.session, log));
    const s = b.socks.get(d.ino);
    if (!s) throw new CkptError('ERR_CKPT_RESTORE_FAILED', `fd ${rec.fd} of pid ${proc.pid}: unix socket ${d.ino} was not rebuilt`);
    // The filter runs in the process (the program is copied in through a pointer); once per socket.
    if (d.filter) attachSocketFilter(proc, s.rfd, d.filter, `fd ${rec.fd} of pid ${proc.pid} (${describeSocket(d)})`);
    return native.fd.fcntl(s.rfd, F_DUPFD_CLOEXEC, 0);
  };
}
