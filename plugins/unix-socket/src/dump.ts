/**
 * Dump: claims AF_UNIX sockets, reads each one (sock_diag entry, name, peer, receive queue,
 * options), then, once every process is read, checks peers outside the tree and pending
 * connections.
 */
import { lstatSync, readlinkSync, statSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import {
  CkptError,
  createSessionState,
  fault,
  readSocketFilter,
  remoteGetsockopt,
  socketGuard,
  type DumpSession,
  type FdClaim,
  type FdDumpRequest,
  type Logger,
  type ProcessDump,
} from '@ckpt/core';
import { native, AF_UNIX, O_NONBLOCK, SO_DOMAIN, SO_TYPE, SYS, type UnixDiagEntry } from '@ckpt/native';
import type { QueuedMessage, UnixSocketData, UnixType } from './record.js';
import { addrText, externals, isPath, parseAddrText, rawOf } from './names.js';
import { getInt, readOptions, TYPES } from './sockopts.js';
import { holdersOf, sessionOptions } from './session.js';
import { describeSocket } from './show.js';

/** sock_diag's socket states (the TCP names the kernel reuses). */
const TCP_LISTEN = 10;
/** sk_shutdown bits. */
const RCV_SHUTDOWN = 1;

interface DumpState {
  netns: number;
  diag: Map<number, UnixDiagEntry>;
  saved: Array<{ pid: number; fd: number; d: UnixSocketData; wqueue: number }>;
}
/** One snapshot per dump, taken at the first socket: every process of the tree is frozen by then. */
const dumpStates = createSessionState(
  'unix:dump',
  (_s: DumpSession): DumpState => ({ netns: statSync('/proc/self/ns/net').ino, diag: new Map(native.sock.unixDiag().map((e) => [e.ino, e])), saved: [] }),
);
const dumpState = (session: DumpSession) => dumpStates.of(session);

/** Is the fd a socket whose SO_DOMAIN is AF_UNIX? */
function isUnixSocket(req: FdDumpRequest): boolean {
  if (req.kind !== 'socket') return false;
  let domain: number;
  try {
    domain = getInt(req.dupFd, SO_DOMAIN);
  } catch {
    return false;
  }
  return domain === AF_UNIX;
}

/** Its type and sock_diag entry; refuses unknown types, other network namespaces, sockets sock_diag does not list. */
function diagOf(req: FdDumpRequest, pid: number, st: DumpState): { type: UnixType; e: UnixDiagEntry } {
  const type = TYPES[getInt(req.dupFd, SO_TYPE)];
  if (!type) {
    throw new CkptError('ERR_CKPT_UNSUPPORTED_FD', `cannot checkpoint pid ${pid}: fd ${req.fd} is a unix socket of an unknown type`);
  }
  if (native.sock.unixNetns(req.dupFd) !== st.netns) {
    throw new CkptError(
      'ERR_CKPT_UNSUPPORTED_FD',
      `cannot checkpoint pid ${pid}: fd ${req.fd} is a unix ${type} socket of another network namespace, which ckpt does not save`,
    );
  }
  const e = st.diag.get(req.stat.ino);
  if (!e) {
    throw new CkptError('ERR_CKPT_DUMP_FAILED', `pid ${pid} fd ${req.fd}: unix socket ${req.stat.ino} is not in the kernel's socket table (sock_diag)`);
  }
  return { type, e };
}

/** Its name (text and bytes) and, for a path name, its socket file (mode and owner, if it is still this socket's). */
function dumpName(d: UnixSocketData, e: UnixDiagEntry, pid: number): void {
  if (!e.name?.length) return;
  d.name = addrText(e.name);
  d.nameRaw = e.name.toString('base64');
  d.bound = true;
  if (isPath(e.name)) {
    // Which file it is: the socket inode of the name is in UNIX_DIAG_VFS.
    let abs = d.name;
    if (!isAbsolute(d.name)) {
      d.dir = readlinkSync(`/proc/${pid}/cwd`);
      abs = resolve(d.dir, d.name);
    }
    try {
      const fst = lstatSync(abs);
      d.file = fst.isSocket() && fst.ino === e.vfsIno ? { present: true, mode: fst.mode & 0o7777, uid: fst.uid, gid: fst.gid } : { present: false };
    } catch {
      d.file = { present: false };
    }
  }
}

/** Its connection: a listener's backlog and pending clients, or its peer (and whether its name is its own). */
function dumpConnection(d: UnixSocketData, e: UnixDiagEntry, st: DumpState, type: UnixType): void {
  if (e.state === TCP_LISTEN) {
    d.state = 'listening';
    d.backlog = e.wqueue;
    d.pending = e.icons ?? [];
  } else if (e.peer !== undefined) {
    const peer = e.peer ? st.diag.get(e.peer) : undefined;
    d.peer = e.peer;
    if (peer?.name?.length) {
      d.peerName = addrText(peer.name);
      d.peerNameRaw = peer.name.toString('base64');
    }
    if (e.peer === 0 && type !== 'dgram' && e.shutdown === 0) d.state = 'pending';
    else d.state = e.peer === 0 ? 'disconnected' : 'connected';
    // A connected socket with a name either bound it itself or was accepted (and carries its
    // listener's name): the latter when a listener has that name, when the peer has none (a
    // client that bound a name connected to a named listener), or by creation order (the
    // accepted socket is made after its client).
    if (d.name && type !== 'dgram') {
      const listener = [...st.diag.values()].some((x) => x.state === TCP_LISTEN && x.type === e.type && x.name?.equals(e.name!));
      d.bound = !(listener || (d.state === 'connected' && (!peer?.name?.length || e.ino > e.peer)));
    }
  }
}

/** The peeked messages into d.queue: a stream's bytes as one run, other messages one by one with their sender. */
function queueMessages(d: UnixSocketData, messages: Array<{ data: Buffer; addr?: Buffer; fds?: number[] }>, stream: boolean): void {
  if (stream) {
    // One run of bytes, cut after each chunk that carried files (they go with that chunk again).
    let run: Buffer[] = [];
    const flush = (fds?: number[]) => {
      const all = Buffer.concat(run);
      run = [];
      if (all.length || fds) d.queue.push({ data: all.toString('base64'), ...(fds ? { fds } : {}) });
      d.queuedBytes += all.length;
    };
    for (const m of messages) {
      run.push(m.data);
      if (m.fds) flush(m.fds);
    }
    flush();
    return;
  }
  for (const m of messages) {
    const q: QueuedMessage = { data: m.data.toString('base64'), ...(m.fds ? { fds: m.fds } : {}) };
    if (m.addr?.length) {
      q.from = addrText(m.addr);
      q.fromRaw = m.addr.toString('base64');
    }
    d.queue.push(q);
    d.queuedBytes += m.data.length;
  }
}

const SOL_SOCKET = 1,
  SO_PEERCRED = 17,
  SO_PEEK_OFF = 42,
  SCM_RIGHTS = 1,
  MSG_PEEK = 2,
  MSG_TRUNC = 0x20,
  MSG_DONTWAIT = 0x40,
  MSG_CMSG_CLOEXEC = 0x40000000;

/**
 * The files in flight with message `m` of the queue of fd `fd`, saved through core: peeked inside
 * the process (recvmsg MSG_PEEK at the message's offset, SO_PEEK_OFF put back after), which gives
 * it new fds on them for the moment; each is saved (dumpInFlight) and closed. A stream chunk ends
 * with the message that carried them: its last byte is peeked.
 */
async function filesInFlight(proc: ProcessDump, fd: number, m: { data: Buffer; at?: number; rights?: number }, stream: boolean): Promise<number[]> {
  const t = proc.tracee;
  const base = t.scratch();
  const [OFF, MSG, IOV, CTL, BUF] = [0, 64, 128, 256, 8192];
  const CTL_SIZE = 4096;
  const saved = remoteGetsockopt(t, fd, SOL_SOCKET, SO_PEEK_OFF, 4);
  if (!saved) throw new CkptError('ERR_CKPT_DUMP_FAILED', `pid ${proc.pid} fd ${fd}: cannot read its peek offset (SO_PEEK_OFF)`);
  const at = Buffer.alloc(4);
  at.writeInt32LE((m.at ?? 0) + (stream ? Math.max(0, m.data.length - 1) : 0));
  const got: number[] = [];
  t.syscall(SYS.setsockopt, fd, SOL_SOCKET, SO_PEEK_OFF, t.put(at, OFF), 4);
  try {
    fault('unix:inflight');
    const iov = Buffer.alloc(16);
    iov.writeBigUInt64LE(BigInt(base + BUF), 0);
    iov.writeBigUInt64LE(1n, 8);
    t.put(iov, IOV);
    const mh = Buffer.alloc(56);
    mh.writeBigUInt64LE(BigInt(base + IOV), 16);
    mh.writeBigUInt64LE(1n, 24);
    mh.writeBigUInt64LE(BigInt(base + CTL), 32);
    mh.writeBigUInt64LE(BigInt(CTL_SIZE), 40);
    t.put(mh, MSG);
    t.syscall(SYS.recvmsg, fd, base + MSG, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC | (stream ? 0 : MSG_TRUNC));
    const ctlLen = Number(t.read(base + MSG + 40, 8).readBigUInt64LE(0));
    const ctl = t.read(base + CTL, Math.min(ctlLen, CTL_SIZE));
    for (let o = 0; o + 16 <= ctl.length; ) {
      const len = Number(ctl.readBigUInt64LE(o));
      if (len < 16) break;
      if (ctl.readInt32LE(o + 8) === SOL_SOCKET && ctl.readInt32LE(o + 12) === SCM_RIGHTS) {
        for (let i = o + 16; i + 4 <= o + len; i += 4) got.push(ctl.readInt32LE(i));
      }
      o += (len + 7) & ~7;
    }
  } finally {
    t.syscallRaw(SYS.setsockopt, fd, SOL_SOCKET, SO_PEEK_OFF, t.put(saved, OFF), 4);
  }
  const ids: number[] = [];
  try {
    if (got.length !== m.rights) {
      throw new CkptError('ERR_CKPT_DUMP_FAILED', `pid ${proc.pid} fd ${fd}: ${m.rights} files in flight in a message, ${got.length} read back`);
    }
    for (const f of got) ids.push(await proc.dumpInFlight(f));
  } finally {
    for (const f of got) t.syscallRaw(SYS.close, f);
  }
  return ids;
}

/**
 * Its receive queue, peeked (not consumed), with the files in flight in it (saved through core);
 * refuses out-of-band data; checks the length against sock_diag's.
 */
async function dumpQueue(req: FdDumpRequest, proc: ProcessDump, d: UnixSocketData, e: UnixDiagEntry, type: UnixType): Promise<void> {
  const { pid } = proc;
  const stream = type === 'stream';
  const peeked = native.sock.unixPeek(req.dupFd, stream, stream ? e.rqueue : undefined, type === 'seqpacket' && (e.shutdown & RCV_SHUTDOWN) !== 0);
  const counted = peeked.messages.reduce((a, m) => a + (m.rights ?? 0), 0);
  if (peeked.truncated || counted !== peeked.rights) {
    throw new CkptError(
      'ERR_CKPT_UNSUPPORTED_FD',
      `cannot checkpoint pid ${pid}: fd ${req.fd} is ${describeSocket(d)} with ${peeked.truncated ? 'more than 253' : 'some'} file descriptors in flight (SCM_RIGHTS) in one message, or with an empty message that carries some, which ckpt cannot read back`,
      { hint: 'checkpoint once the receiving process has read its messages (retry in a moment)' },
    );
  }
  if (peeked.oob) {
    throw new CkptError(
      'ERR_CKPT_UNSUPPORTED_FD',
      `cannot checkpoint pid ${pid}: fd ${req.fd} is ${describeSocket(d)} with out-of-band data (MSG_OOB) queued, which ckpt does not save`,
      { hint: 'checkpoint once the process has read it (retry in a moment)' },
    );
  }
  if (peeked.error) d.error = peeked.error;
  const messages: Array<{ data: Buffer; addr?: Buffer; fds?: number[] }> = [];
  for (const m of peeked.messages) {
    const fds = m.rights ? await filesInFlight(proc, req.fd, m, stream) : undefined;
    messages.push({ data: m.data, addr: m.addr, ...(fds ? { fds } : {}) });
  }
  queueMessages(d, messages, stream);
  const expected = type === 'dgram' ? (d.queue.length ? Buffer.from(d.queue[0].data, 'base64').length : 0) : d.queuedBytes;
  if (expected !== e.rqueue) {
    throw new CkptError(
      'ERR_CKPT_DUMP_FAILED',
      `pid ${pid} fd ${req.fd} (${describeSocket(d)}): read ${expected} queued bytes where the kernel reports ${e.rqueue} (out-of-band data?)`,
    );
  }
}

/** The fds.dump handler: claims unix sockets and saves them. */
export function makeDumpFd(log: Logger) {
  return async function dumpFd(req: FdDumpRequest, proc: ProcessDump): Promise<FdClaim<UnixSocketData> | undefined> {
    if (!isUnixSocket(req)) return undefined;
    const { pid } = proc;
    const st = dumpState(proc.session);
    const { type, e } = diagOf(req, pid, st);
    const d: UnixSocketData = {
      ino: e.ino,
      type,
      state: 'unconnected',
      flags: req.info.flags & O_NONBLOCK,
      shutdown: e.shutdown,
      queue: [],
      queuedBytes: 0,
      opts: readOptions(req.dupFd),
    };
    const filter = readSocketFilter(proc, req.fd, `fd ${req.fd} (a unix ${type} socket)`);
    if (filter) d.filter = filter;
    const cred = native.sock.sockGetBytes(req.dupFd, SOL_SOCKET, SO_PEERCRED, 12);
    if (cred && cred.length === 12 && cred.readInt32LE(0) > 0) d.peercred = { pid: cred.readInt32LE(0), uid: cred.readUInt32LE(4), gid: cred.readUInt32LE(8) };
    dumpName(d, e, proc.procPid);
    dumpConnection(d, e, st, type);
    if (d.state !== 'listening') {
      // The queue is read at a moving SO_PEEK_OFF: the socket guard puts the process's offset back should ckpt die meanwhile.
      const peekOff = e.rqueue ? native.sock.sockGetInt(req.dupFd, SOL_SOCKET, SO_PEEK_OFF) : null;
      const guard = peekOff === null ? undefined : socketGuard(proc.session);
      const held = guard?.holdOption(req.dupFd, SOL_SOCKET, SO_PEEK_OFF, peekOff!);
      try {
        await dumpQueue(req, proc, d, e, type);
      } finally {
        if (held !== undefined) guard!.release(held);
      }
    }
    log('pid %d fd %d: unix %s %s %s, %d bytes queued', pid, req.fd, type, d.state, d.name ?? '', d.queuedBytes);
    st.saved.push({ pid, fd: req.fd, d, wqueue: e.wqueue });
    return { kind: 'unix', data: d };
  };
}

// ------------------------------------------------------------------------------------------------
// After the dump: peers outside the tree, pending connections

type Saved = DumpState['saved'][number];

/** The refusal of a socket tied to the outside: `what`: how; `ino`: the outside socket; `declare`: the address --external takes. */
function outside(pid: number, fd: number, d: UnixSocketData, what: string, ino: number, declare: string | undefined, then: string): CkptError {
  const holders = ino ? holdersOf(ino) : '';
  return new CkptError(
    'ERR_CKPT_UNSUPPORTED_FD',
    `cannot checkpoint pid ${pid}: fd ${fd} is ${describeSocket(d)} ${what}${holders ? ` (held by ${holders})` : ''}, outside the checkpointed tree`,
    {
      hint: declare
        ? `declare it with --external unix:${declare} (${then}: the peer sees a new connection, its session with the old one is not kept; or at restore, --substitute f${pid}.${fd}=FD hands the process a connection of yours), or checkpoint a tree that holds both ends`
        : 'checkpoint a tree that holds both ends',
    },
  );
}

/** Makes d external: it connects to the declared address of its peer afresh at restore. */
function declareExternal(d: UnixSocketData, ext: Map<string, string>): void {
  d.external = ext.get(d.peerName!)!;
  d.externalRaw = (d.external === d.peerName ? rawOf(d.peerNameRaw) : parseAddrText(d.external)).toString('base64');
}

/** A connected socket whose peer is outside the tree: declared external, or refused. */
function connectedOutside(log: Logger, ext: Map<string, string>, { pid, fd, d }: Saved): void {
  const accepted = d.type !== 'dgram' && d.name !== undefined && !d.bound;
  if (accepted) {
    // An outside client of a listener of the tree.
    if (!ext.has(d.name!)) {
      throw outside(
        pid,
        fd,
        d,
        `accepted from a client ${d.peerName ? `at ${d.peerName}` : '(an unnamed socket)'}`,
        d.peer!,
        d.name,
        'it is then restored as a connection whose client has gone: its queued data, then end of file',
      );
    }
    log('pid %d fd %d: outside client of %s declared external: restored disconnected', pid, fd, d.name);
    d.state = 'disconnected';
  } else {
    if (!d.peerName || !ext.has(d.peerName)) {
      throw outside(
        pid,
        fd,
        d,
        `connected to ${d.peerName ?? 'an unnamed socket'}`,
        d.peer!,
        d.peerName,
        `it is then connected to ${d.peerName} afresh at restore`,
      );
    }
    declareExternal(d, ext);
    d.droppedBytes = d.queuedBytes;
  }
}

/** A client not yet accepted: tied to its listener of the tree, or (declared) external, or refused. */
function pendingClient(st: DumpState, ext: Map<string, string>, inTree: Set<number>, { pid, fd, d, wqueue }: Saved): void {
  const listener = [...st.diag.values()].find((x) => x.state === TCP_LISTEN && x.icons?.includes(d.ino));
  if (!listener) {
    d.state = 'disconnected';
    return;
  }
  if (wqueue > 0) {
    throw new CkptError(
      'ERR_CKPT_UNSUPPORTED_FD',
      `cannot checkpoint pid ${pid}: fd ${fd} is ${describeSocket(d)} connected to ${listener.name ? addrText(listener.name) : 'a listener'} that has not accepted it yet, with data already sent on it, which cannot be read before the listener accepts it`,
      { hint: 'checkpoint once the server has accepted the connection (retry in a moment)' },
    );
  }
  d.peerName = listener.name ? addrText(listener.name) : undefined;
  d.peerNameRaw = listener.name?.toString('base64');
  if (inTree.has(listener.ino)) {
    d.listener = listener.ino;
  } else {
    if (!d.peerName || !ext.has(d.peerName)) {
      throw outside(
        pid,
        fd,
        d,
        `connected (not yet accepted) to the listener ${d.peerName ?? '(unnamed)'}`,
        listener.ino,
        d.peerName,
        `it is then connected to ${d.peerName} afresh at restore`,
      );
    }
    declareExternal(d, ext);
  }
}

/** A listener's pending clients from outside the tree are dropped (counted, logged). */
function dropOutsidePending(log: Logger, inTree: Set<number>, { pid, fd, d }: Saved): void {
  const pending = d.pending!;
  const mine = pending.filter((c) => inTree.has(c));
  if (mine.length !== pending.length) {
    d.droppedPending = pending.length - mine.length;
    log('pid %d fd %d: %d connections from outside the tree queued on %s are not saved', pid, fd, d.droppedPending, d.name);
  }
  d.pending = mine;
}

/** Once every fd table is read (session.fdsDumped, before any memory is copied): peers outside the tree, pending connections. */
export function makeAfterDump(log: Logger) {
  return async function afterDump(session: DumpSession): Promise<void> {
    const st = dumpStates.peek(session);
    if (!st) return;
    const ext = externals(sessionOptions.of(session).external);
    const inTree = new Set(st.saved.map((s) => s.d.ino));
    for (const s of st.saved) {
      const { d } = s;
      if (d.state === 'connected' && d.peer && !inTree.has(d.peer)) connectedOutside(log, ext, s);
      else if (d.state === 'pending') pendingClient(st, ext, inTree, s);
      else if (d.state === 'listening' && d.pending?.length) dropOutsidePending(log, inTree, s);
    }
  };
}
