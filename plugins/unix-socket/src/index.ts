/**
 * @ckpt/plugin-unix-socket — AF_UNIX (AF_LOCAL) sockets: stream, datagram and seqpacket.
 *
 * Dump (files.dumpFd, for fds of kind "socket" whose SO_DOMAIN is AF_UNIX): the kernel's table of
 * unix sockets is read once per dump through NETLINK_SOCK_DIAG (name, peer, pending connections
 * of listeners, queue lengths, shutdown state), matched by inode with the fstat of our duplicate
 * of the fd. Each socket's receive queue is read without consuming it (MSG_PEEK walked with
 * SO_PEEK_OFF, put back afterwards): stream bytes as one run, datagrams and seqpacket messages
 * one by one with their sender's address. Options (SO_SNDBUF, SO_RCVBUF, SO_PASSCRED,
 * SO_PASSSEC, SO_PEEK_OFF, SO_RCVLOWAT, SO_RCVTIMEO, SO_SNDTIMEO) and O_NONBLOCK are saved.
 * The data in a socket's receive queue belongs to that socket: it is saved once, with it.
 *
 * Refused, with the pid, the fd and the address: a peer outside the checkpointed tree (unless
 * its address is declared with `--external unix:PATH` or `unix:@abstract`: the socket is then
 * connected to PATH afresh at restore; a connection accepted by the tree from an outside client
 * comes back as a connection whose client has gone: its queued bytes, then end of file); file
 * descriptors in flight (SCM_RIGHTS) in a receive queue; data sent on a connection a listener
 * of the tree has not accept()ed yet (it sits in a socket no fd reaches); sockets of another
 * network namespace.
 *
 * Restore builds every unix socket of the image at once, in the restorer, on the first socket
 * fd asked for (each process then gets a duplicate of its own, installed like any fd, shared
 * descriptions staying shared through the files plugin):
 *   1. sockets: socketpair() for pairs of unnamed sockets, socket() for the others;
 *   2. names: bind (a stale socket file at the image's own path is removed first, never a live
 *      one); relative names are bound in their directory, so getsockname() is unchanged;
 *      the file's mode and owner are put back; listen() with the saved backlog;
 *   3. connections: the client connects to its listener (the one of the image, or a temporary
 *      one at the same address when it is gone) and the accepted socket is taken from it;
 *   4. queued data: each socket's receive queue is written from its peer (or, for datagrams,
 *      from the socket bound to the sender's address, so recvfrom() sees the same sender),
 *      message by message, before any datagram socket connects;
 *   5. datagram sockets connect to their peers; clients queued on a listener (connected, not
 *      yet accepted) connect again, in their order, so they are pending again; external peers
 *      are connected afresh;
 *   6. shutdown state, closed peers (the other end is closed after the data, with a byte left
 *      in it when the socket had a pending ECONNRESET), options, flags; socket files the program
 *      had unlinked are unlinked again.
 *
 * Not kept: the credentials attached to queued messages and SO_PEERCRED (the restorer made the
 * connections: they name ckpt restore); out-of-band data (MSG_OOB: refused);
 * outside clients queued on a listener, not accept()ed yet (dropped, logged); data received from
 * an external peer before the dump (dropped: the new connection cannot carry it); a pending
 * error on a datagram socket (read, and so cleared, by the dump). Empty datagrams and seqpacket
 * messages that were peeked before (MSG_PEEK by the program, or an earlier --leave-running
 * dump) are invisible to offset peeks unless first in the queue; empty seqpacket messages after
 * the peer shut down its side cannot be told from end of file.
 */
import { chmodSync, chownSync, closeSync, lstatSync, readlinkSync, readdirSync, statSync, unlinkSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import {
  CkptError, createSessionState, definePlugin, type DumpSession, type FdClaim, type FdDumpRequest, type FdRecord, type Logger, type PluginContext,
  type SocketRow, type ProcessDump, type ProcessRestore, type RestoreSession,
} from '@ckpt/core';
import { native, NativeError } from '@ckpt/native';

export const NAME = '@ckpt/plugin-unix-socket';

type DiagEntry = ReturnType<typeof native.sock.unixDiag>[number];
export type UnixType = 'stream' | 'dgram' | 'seqpacket';
/**
 * connected: has a live peer; pending: connected to a listener that has not accepted it yet;
 * disconnected: its peer is closed (or an outside client declared external); listening;
 * unconnected (possibly bound).
 */
export type UnixState = 'unconnected' | 'listening' | 'connected' | 'pending' | 'disconnected';

export interface UnixOptions {
  sndbuf: number;
  rcvbuf: number;
  passcred: boolean;
  passsec: boolean;
  peekOff: number;
  rcvlowat: number;
  /** [seconds, microseconds]; [0, 0] = none. */
  rcvtimeo: [number, number];
  sndtimeo: [number, number];
}

/** One message (or, for a stream, the whole run of bytes) waiting in a receive queue. */
export interface QueuedMessage {
  /** base64 */
  data: string;
  /** The sender's address (datagrams), for people, and exact (base64 of sun_path). */
  from?: string;
  fromRaw?: string;
}

export interface UnixSocketData {
  /** The socket's inode at dump: its id in the image (peers name each other by it). */
  ino: number;
  type: UnixType;
  state: UnixState;
  /** O_NONBLOCK of the open description. */
  flags: number;
  /** Its address for people: a path, or @name (abstract); and exact (base64 of sun_path). */
  name?: string;
  nameRaw?: string;
  /** The name is its own (bind, autobind), not the one an accepted socket inherits from its listener. */
  bound?: boolean;
  /** A relative path name: the directory it was bound in. */
  dir?: string;
  /** A path name: its socket file at dump time (present: it existed, with this inode). */
  file?: { present: boolean; mode?: number; uid?: number; gid?: number };
  /** The peer's inode (in the image); 0: closed. */
  peer?: number;
  peerName?: string;
  peerNameRaw?: string;
  /** pending: the inode of the listener (in the image) it waits on. */
  listener?: number;
  /** Declared external: the address to connect to at restore (people's form, exact form). */
  external?: string;
  externalRaw?: string;
  /** listening: backlog, and the clients of the image queued on it, oldest first. */
  backlog?: number;
  pending?: number[];
  /** Outside clients queued on a listener at dump time (not restored). */
  droppedPending?: number;
  /** RCV_SHUTDOWN 1 | SEND_SHUTDOWN 2. */
  shutdown: number;
  /** A pending socket error (ECONNRESET when the peer closed with data unread). */
  error?: number;
  /** The receive queue. */
  queue: QueuedMessage[];
  queuedBytes: number;
  /** Bytes received from an external peer that a fresh connection cannot carry (dropped). */
  droppedBytes?: number;
  opts: UnixOptions;
}

const AF_UNIX = 1, SOL_SOCKET = 1;
const SO_TYPE = 3, SO_SNDBUF = 7, SO_RCVBUF = 8, SO_PASSCRED = 16, SO_RCVLOWAT = 18, SO_RCVTIMEO = 20, SO_SNDTIMEO = 21;
const SO_SNDBUFFORCE = 32, SO_RCVBUFFORCE = 33, SO_PASSSEC = 34, SO_DOMAIN = 39, SO_PEEK_OFF = 42;
const SOCK_STREAM = 1, SOCK_DGRAM = 2, SOCK_SEQPACKET = 5, SOCK_NONBLOCK = 0o4000;
const TCP_ESTABLISHED = 1, TCP_LISTEN = 10;
const RCV_SHUTDOWN = 1, SEND_SHUTDOWN = 2, SHUT_RD = 0, SHUT_WR = 1;
const O_NONBLOCK = 0o4000, F_SETFL = 4, F_DUPFD_CLOEXEC = 1030;
const ECONNRESET = 104;

const TYPES: Record<number, UnixType> = { [SOCK_STREAM]: 'stream', [SOCK_DGRAM]: 'dgram', [SOCK_SEQPACKET]: 'seqpacket' };
const TYPE_NUM: Record<UnixType, number> = { stream: SOCK_STREAM, dgram: SOCK_DGRAM, seqpacket: SOCK_SEQPACKET };

// ------------------------------------------------------------------------------------------------
// Addresses

/** sun_path bytes for people: a path as is, an abstract name as @name (\xNN for odd bytes). */
export function addrText(raw: Buffer): string {
  if (!raw.length) return '';
  if (raw[0] !== 0) return raw.toString('utf8');
  let s = '@';
  for (const b of raw.subarray(1)) s += b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`;
  return s;
}
const rawOf = (b64: string | undefined): Buffer => (b64 ? Buffer.from(b64, 'base64') : Buffer.alloc(0));
const isPath = (raw: Buffer) => raw.length > 0 && raw[0] !== 0;

function describeSocket(d: Pick<UnixSocketData, 'type' | 'name'>): string {
  return `a unix ${d.type} socket${d.name ? ` (${d.name})` : ''}`;
}

/** --external unix:PATH / unix:@name entries (others belong to other plugins). */
function externals(list: string[] | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const spec of list ?? []) {
    if (!spec.startsWith('unix:')) continue;
    const body = spec.slice(5);
    const eq = body.indexOf('=');
    if (eq > 0) out.set(body.slice(0, eq), body.slice(eq + 1));
    else if (body) out.set(body, body);
  }
  return out;
}
/** People's form of an address back to sun_path bytes (@name: abstract, with \xNN escapes). */
function parseAddrText(s: string): Buffer {
  if (!s.startsWith('@')) return Buffer.from(s, 'utf8');
  const bytes = [0];
  const body = s.slice(1);
  for (let i = 0; i < body.length; i++) {
    const m = /^\\x([0-9a-fA-F]{2})/.exec(body.slice(i));
    if (m) {
      bytes.push(parseInt(m[1], 16));
      i += 3;
    } else bytes.push(...Buffer.from(body[i], 'utf8'));
  }
  return Buffer.from(bytes);
}

// ------------------------------------------------------------------------------------------------
// Options

function getInt(fd: number, opt: number): number {
  return native.sock.unixGetsockopt(fd, SOL_SOCKET, opt, 4).readInt32LE(0);
}
function setInt(fd: number, opt: number, v: number): void {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v, 0);
  native.sock.sockSetBytes(fd, SOL_SOCKET, opt, b);
}
function getTimeo(fd: number, opt: number): [number, number] {
  const b = native.sock.unixGetsockopt(fd, SOL_SOCKET, opt, 16);
  return [Number(b.readBigInt64LE(0)), Number(b.readBigInt64LE(8))];
}
function setTimeo(fd: number, opt: number, v: [number, number]): void {
  const b = Buffer.alloc(16);
  b.writeBigInt64LE(BigInt(v[0]), 0);
  b.writeBigInt64LE(BigInt(v[1]), 8);
  native.sock.sockSetBytes(fd, SOL_SOCKET, opt, b);
}
function tryGet<T>(fn: () => T, fallback: T): T {
  try {
    return fn();
  } catch {
    return fallback;
  }
}

function readOptions(fd: number): UnixOptions {
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

function applyOptions(fd: number, o: UnixOptions): void {
  setBuf(fd, SO_SNDBUF, SO_SNDBUFFORCE, o.sndbuf);
  setBuf(fd, SO_RCVBUF, SO_RCVBUFFORCE, o.rcvbuf);
  if (o.passcred) setInt(fd, SO_PASSCRED, 1);
  if (o.passsec) tryGet(() => setInt(fd, SO_PASSSEC, 1), undefined);
  if (o.peekOff >= 0) setInt(fd, SO_PEEK_OFF, o.peekOff);
  if (o.rcvlowat !== 1) tryGet(() => setInt(fd, SO_RCVLOWAT, o.rcvlowat), undefined);
  if (o.rcvtimeo[0] || o.rcvtimeo[1]) setTimeo(fd, SO_RCVTIMEO, o.rcvtimeo);
  if (o.sndtimeo[0] || o.sndtimeo[1]) setTimeo(fd, SO_SNDTIMEO, o.sndtimeo);
}

// ------------------------------------------------------------------------------------------------
// Dump

interface DumpState {
  netns: number;
  diag: Map<number, DiagEntry>;
  saved: Array<{ pid: number; fd: number; d: UnixSocketData; wqueue: number }>;
}
/** One snapshot per dump, taken at the first socket: every process of the tree is frozen by then. */
const dumpStates = createSessionState('unix:dump', (_s: DumpSession): DumpState => (
  { netns: statSync('/proc/self/ns/net').ino, diag: new Map(native.sock.unixDiag().map((e) => [e.ino, e])), saved: [] }));
const dumpState = (session: DumpSession) => dumpStates.of(session);

/**
 * Options: `external`, peers outside the tree: at dump `unix:PATH` (or `unix:@ABSTRACT`) accepts
 * a peer there; at restore `unix:PATH=NEWPATH` reconnects it elsewhere.
 */
export const unixSocketOptions = z.strictObject({ external: z.array(z.string().regex(/^unix:./, 'expected unix:PATH or unix:PATH=NEWPATH')).optional() });
export type UnixSocketOptions = z.infer<typeof unixSocketOptions>;
/** The options of the session, bound at beforeDump / beforeRestore. */
const sessionOptions = createSessionState('unix:options', (_s: DumpSession | RestoreSession): UnixSocketOptions => ({}));

/** Every process holding socket inode `ino` (for messages about peers outside the tree). */
function holdersOf(ino: number): string {
  const want = `socket:[${ino}]`;
  const out: string[] = [];
  for (const p of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${p}/fd`);
    } catch {
      continue;
    }
    for (const f of fds) {
      try {
        if (readlinkSync(`/proc/${p}/fd/${f}`) === want) {
          let comm = '';
          try {
            comm = readlinkSync(`/proc/${p}/exe`).split('/').pop() ?? '';
          } catch {
            /* gone */
          }
          out.push(`pid ${p}${comm ? ` (${comm})` : ''} fd ${f}`);
          break;
        }
      } catch {
        /* closed meanwhile */
      }
    }
    if (out.length >= 3) break;
  }
  return out.join(', ');
}

function makeDumpFd(log: Logger) {
  return async function dumpFd(req: FdDumpRequest, proc: ProcessDump): Promise<FdClaim<UnixSocketData> | undefined> {
    if (req.kind !== 'socket') return undefined;
    let domain: number;
    try {
      domain = getInt(req.dupFd, SO_DOMAIN);
    } catch {
      return undefined;
    }
    if (domain !== AF_UNIX) return undefined;
    const { pid } = proc;
    const st = dumpState(proc.session);
    const type = TYPES[getInt(req.dupFd, SO_TYPE)];
    if (!type) {
      throw new CkptError('ERR_CKPT_UNSUPPORTED_FD', `cannot checkpoint pid ${pid}: fd ${req.fd} is a unix socket of an unknown type`);
    }
    if (native.sock.unixNetns(req.dupFd) !== st.netns) {
      throw new CkptError('ERR_CKPT_UNSUPPORTED_FD',
        `cannot checkpoint pid ${pid}: fd ${req.fd} is a unix ${type} socket of another network namespace, which ckpt does not save`);
    }
    const e = st.diag.get(req.stat.ino);
    if (!e) {
      throw new CkptError('ERR_CKPT_DUMP_FAILED', `pid ${pid} fd ${req.fd}: unix socket ${req.stat.ino} is not in the kernel's socket table (sock_diag)`);
    }
    const d: UnixSocketData = {
      ino: e.ino, type, state: 'unconnected', flags: req.info.flags & O_NONBLOCK, shutdown: e.shutdown, queue: [], queuedBytes: 0,
      opts: readOptions(req.dupFd),
    };
    if (e.name?.length) {
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
    if (d.state !== 'listening') {
      const stream = type === 'stream';
      const peeked = native.sock.unixPeek(req.dupFd, stream, stream ? e.rqueue : undefined, type === 'seqpacket' && (e.shutdown & RCV_SHUTDOWN) !== 0);
      if (peeked.rights || peeked.truncated) {
        throw new CkptError('ERR_CKPT_UNSUPPORTED_FD',
          `cannot checkpoint pid ${pid}: fd ${req.fd} is ${describeSocket(d)} with ${peeked.rights || 'some'} file descriptors in flight (SCM_RIGHTS) in its receive queue, which ckpt does not save`,
          { hint: 'checkpoint once the receiving process has read its messages (retry in a moment)' });
      }
      if (peeked.oob) {
        throw new CkptError('ERR_CKPT_UNSUPPORTED_FD',
          `cannot checkpoint pid ${pid}: fd ${req.fd} is ${describeSocket(d)} with out-of-band data (MSG_OOB) queued, which ckpt does not save`,
          { hint: 'checkpoint once the process has read it (retry in a moment)' });
      }
      if (peeked.error) d.error = peeked.error;
      if (stream) {
        const all = Buffer.concat(peeked.messages.map((m) => m.data));
        if (all.length) d.queue.push({ data: all.toString('base64') });
        d.queuedBytes = all.length;
      } else {
        for (const m of peeked.messages) {
          const q: QueuedMessage = { data: m.data.toString('base64') };
          if (m.addr?.length) {
            q.from = addrText(m.addr);
            q.fromRaw = m.addr.toString('base64');
          }
          d.queue.push(q);
          d.queuedBytes += m.data.length;
        }
      }
      const expected = type === 'dgram' ? (d.queue.length ? Buffer.from(d.queue[0].data, 'base64').length : 0) : d.queuedBytes;
      if (expected !== e.rqueue) {
        throw new CkptError('ERR_CKPT_DUMP_FAILED',
          `pid ${pid} fd ${req.fd} (${describeSocket(d)}): read ${expected} queued bytes where the kernel reports ${e.rqueue} (out-of-band data?)`);
      }
    }
    log('pid %d fd %d: unix %s %s %s, %d bytes queued', pid, req.fd, type, d.state, d.name ?? '', d.queuedBytes);
    st.saved.push({ pid, fd: req.fd, d, wqueue: e.wqueue });
    return { kind: 'unix', data: d };
  };
}

/** Once every process is read: peers outside the tree, pending connections. */
function makeAfterDump(log: Logger) {
  return async function afterDump(session: DumpSession): Promise<void> {
    const st = dumpStates.peek(session);
    if (!st) return;
    const ext = externals(sessionOptions.of(session).external);
    const inTree = new Set(st.saved.map((s) => s.d.ino));
    /** `what`: how it is tied to the outside; `ino`: the outside socket; `declare`: the address --external takes. */
    const outside = (pid: number, fd: number, d: UnixSocketData, what: string, ino: number, declare: string | undefined, then: string) => {
      const holders = ino ? holdersOf(ino) : '';
      return new CkptError('ERR_CKPT_UNSUPPORTED_FD',
        `cannot checkpoint pid ${pid}: fd ${fd} is ${describeSocket(d)} ${what}${holders ? ` (held by ${holders})` : ''}, outside the checkpointed tree`,
        { hint: declare ? `declare it with --external unix:${declare} (${then}), or checkpoint a tree that holds both ends` : 'checkpoint a tree that holds both ends' });
    };
    for (const { pid, fd, d, wqueue } of st.saved) {
      if (d.state === 'connected' && d.peer && !inTree.has(d.peer)) {
        const accepted = d.type !== 'dgram' && d.name !== undefined && !d.bound;
        if (accepted) {
          // An outside client of a listener of the tree.
          if (!ext.has(d.name!)) {
            throw outside(pid, fd, d, `accepted from a client ${d.peerName ? `at ${d.peerName}` : '(an unnamed socket)'}`, d.peer, d.name,
              'it is then restored as a connection whose client has gone: its queued data, then end of file');
          }
          log('pid %d fd %d: outside client of %s declared external: restored disconnected', pid, fd, d.name);
          d.state = 'disconnected';
        } else {
          if (!d.peerName || !ext.has(d.peerName)) {
            throw outside(pid, fd, d, `connected to ${d.peerName ?? 'an unnamed socket'}`, d.peer, d.peerName, `it is then connected to ${d.peerName} afresh at restore`);
          }
          d.external = ext.get(d.peerName)!;
          d.externalRaw = (d.external === d.peerName ? rawOf(d.peerNameRaw) : parseAddrText(d.external)).toString('base64');
          d.droppedBytes = d.queuedBytes;
        }
      } else if (d.state === 'pending') {
        const listener = [...st.diag.values()].find((x) => x.state === TCP_LISTEN && x.icons?.includes(d.ino));
        if (!listener) {
          d.state = 'disconnected';
          continue;
        }
        if (wqueue > 0) {
          throw new CkptError('ERR_CKPT_UNSUPPORTED_FD',
            `cannot checkpoint pid ${pid}: fd ${fd} is ${describeSocket(d)} connected to ${listener.name ? addrText(listener.name) : 'a listener'} that has not accepted it yet, with data already sent on it, which cannot be read before the listener accepts it`,
            { hint: 'checkpoint once the server has accepted the connection (retry in a moment)' });
        }
        d.peerName = listener.name ? addrText(listener.name) : undefined;
        d.peerNameRaw = listener.name?.toString('base64');
        if (inTree.has(listener.ino)) {
          d.listener = listener.ino;
        } else {
          if (!d.peerName || !ext.has(d.peerName)) {
            throw outside(pid, fd, d, `connected (not yet accepted) to the listener ${d.peerName ?? '(unnamed)'}`, listener.ino, d.peerName,
              `it is then connected to ${d.peerName} afresh at restore`);
          }
          d.external = ext.get(d.peerName)!;
          d.externalRaw = (d.external === d.peerName ? rawOf(d.peerNameRaw) : parseAddrText(d.external)).toString('base64');
        }
      } else if (d.state === 'listening' && d.pending?.length) {
        const mine = d.pending.filter((c) => inTree.has(c));
        if (mine.length !== d.pending.length) {
          d.droppedPending = d.pending.length - mine.length;
          log('pid %d fd %d: %d connections from outside the tree queued on %s are not saved', pid, fd, d.droppedPending, d.name);
        }
        d.pending = mine;
      }
    }
  };
}

// ------------------------------------------------------------------------------------------------
// Restore

interface Sock {
  pid: number;
  fd: number;
  d: UnixSocketData;
  /** Our fd of the rebuilt socket. */
  rfd: number;
  /** Made by socketpair with this other socket. */
  pairedWith?: number;
  /** The other end of a connection whose peer is closed: closed once the data is in. */
  closer?: number;
}

interface Build {
  socks: Map<number, Sock>;
  /** Every fd we hold (closed after the restore, or on failure). */
  fds: Set<number>;
  /** Socket files we created (removed on failure). */
  created: Array<{ path: string; ino: number }>;
  /** Socket files the program had unlinked: unlinked again at the end. */
  unlinkLater: string[];
}
/** The sockets of one restore, built at the first one asked for; ours are closed when it ends. */
const builds = createSessionState('unix:restore', (_s: RestoreSession) => ({ build: undefined as Build | undefined }), {
  dispose: (h) => {
    for (const fd of h.build?.fds ?? []) closeQuietly(fd);
  },
});

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    /* closed */
  }
}

function allSockets(session: RestoreSession): Array<{ pid: number; fd: number; d: UnixSocketData }> {
  const out: Array<{ pid: number; fd: number; d: UnixSocketData }> = [];
  for (const p of session.processes) {
    for (const r of p.fds) if (r.owner === NAME && !r.sameAs) out.push({ pid: p.pid, fd: r.fd, d: r.data as UnixSocketData });
  }
  return out;
}

function pathOf(d: UnixSocketData, raw = rawOf(d.nameRaw)): string | undefined {
  if (!isPath(raw)) return undefined;
  const name = raw.toString('utf8');
  return isAbsolute(name) ? name : resolve(d.dir ?? '/', name);
}

/** An address the restorer can reach: relative paths resolved in the directory they were bound in. */
function reachable(raw: Buffer, d?: UnixSocketData): Buffer {
  if (!isPath(raw)) return raw;
  const p = raw.toString('utf8');
  return isAbsolute(p) ? raw : Buffer.from(resolve(d?.dir ?? '/', p));
}

/** Sockets of the image that bind their own name at restore. */
function bindsName(d: UnixSocketData): boolean {
  return !!d.nameRaw && (d.bound ?? true);
}

/**
 * Can the name be bound? A socket file at the image's own path is removed when no live socket
 * is bound to it (a leftover of the checkpointed process); a live one, or another kind of file,
 * stops the restore.
 */
function checkName(raw: Buffer, d: UnixSocketData, where: string, diag: DiagEntry[], remove: boolean): void {
  const path = pathOf(d, raw);
  if (path) {
    let st;
    try {
      st = lstatSync(path);
    } catch {
      return;
    }
    if (!st.isSocket()) {
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot restore ${where}: ${path} exists and is not a socket`,
        { hint: `move ${path} away and retry` });
    }
    if (diag.some((e) => e.vfsIno === st.ino)) {
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot restore ${where}: ${path} is bound by a live socket${holdersOfPathHint(diag, st.ino)}`,
        { hint: 'stop the process listening there (is the checkpointed program still running?) and retry' });
    }
    if (remove) unlinkSync(path);
    return;
  }
  const inUse = diag.find((e) => e.name?.equals(raw));
  if (inUse) {
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot restore ${where}: the abstract address ${addrText(raw)} is in use${holdersOfHint(inUse.ino)}`,
      { hint: 'stop the process bound to it (is the checkpointed program still running?) and retry' });
  }
}
function holdersOfHint(ino: number): string {
  const h = holdersOf(ino);
  return h ? ` (by ${h})` : '';
}
function holdersOfPathHint(diag: DiagEntry[], vfsIno: number): string {
  const e = diag.find((x) => x.vfsIno === vfsIno);
  return e ? holdersOfHint(e.ino) : '';
}

/** Before anything is created: every name the restore binds must be free (or a stale file). */
function checkNames(session: RestoreSession): void {
  const socks = allSockets(session);
  if (!socks.length) return;
  const diag = native.sock.unixDiag();
  for (const { pid, fd, d } of socks) {
    if (bindsName(d)) checkName(rawOf(d.nameRaw), d, `fd ${fd} of pid ${pid} (${describeSocket(d)})`, diag, false);
  }
}

function restoreError(s: Pick<Sock, 'pid' | 'fd' | 'd'>, what: string, e: unknown, hint?: string): CkptError {
  const why = e instanceof NativeError ? e.code : e instanceof Error ? e.message : String(e);
  return new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot restore fd ${s.fd} of pid ${s.pid} (${describeSocket(s.d)}): ${what}: ${why}`, { cause: e, hint });
}

function buildAll(session: RestoreSession, log: Logger): Build {
  const b: Build = { socks: new Map(), fds: new Set(), created: [], unlinkLater: [] };
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
  const own = (fd: number) => {
    b.fds.add(fd);
    return fd;
  };
  const list = allSockets(session);
  const byIno = new Map(list.map((s) => [s.d.ino, s]));
  const diag = native.sock.unixDiag();

  // 1. Sockets. Pairs of unnamed sockets come from socketpair(); so does a datagram socket whose
  // peer is unnamed (only socketpair can have connected them).
  for (const s of list) {
    if (b.socks.has(s.d.ino)) continue;
    const p = s.d.peer ? byIno.get(s.d.peer) : undefined;
    const pairable = p && !b.socks.has(p.d.ino) && s.d.state === 'connected' && p.d.type === s.d.type && (
      s.d.type === 'dgram' ? !p.d.nameRaw : !s.d.nameRaw && !p.d.nameRaw && p.d.peer === s.d.ino);
    if (p && pairable) {
      const [x, y] = native.sock.unixSocketpair(TYPE_NUM[s.d.type] | SOCK_NONBLOCK);
      b.socks.set(s.d.ino, { ...s, rfd: own(x), pairedWith: p.d.ino });
      b.socks.set(p.d.ino, { ...p, rfd: own(y), pairedWith: s.d.ino });
      continue;
    }
    const accepted = s.d.type !== 'dgram' && (s.d.state === 'connected' || s.d.state === 'disconnected') && s.d.nameRaw && !s.d.bound && !s.d.external;
    // Accepted sockets come from accept() below.
    if (accepted) continue;
    b.socks.set(s.d.ino, { ...s, rfd: own(native.sock.unixSocket(TYPE_NUM[s.d.type] | SOCK_NONBLOCK)) });
  }

  // 2. Names, listeners.
  for (const s of b.socks.values()) {
    if (!bindsName(s.d)) continue;
    bindName(b, s, rawOf(s.d.nameRaw), diag);
    if (s.d.state === 'listening') {
      try {
        native.sock.sockListen(s.rfd, s.d.backlog ?? 128);
      } catch (e) {
        throw restoreError(s, 'listen', e);
      }
    }
  }

  // 3. Accepted connections: the client connects to the listener of the image with that name,
  // or to a temporary one at the same address; the accepted socket is taken from it.
  const temps = new Map<string, number>();
  const listenerFor = (s: { pid: number; fd: number; d: UnixSocketData }): number => {
    const raw = rawOf(s.d.nameRaw);
    const real = [...b.socks.values()].find((x) => x.d.state === 'listening' && x.d.type === s.d.type && x.d.nameRaw === s.d.nameRaw);
    if (real) return real.rfd;
    const key = `${s.d.type}:${s.d.nameRaw}`;
    let t = temps.get(key);
    if (t === undefined) {
      // The listener is gone (or outside): a temporary one at its address.
      t = own(native.sock.unixSocket(TYPE_NUM[s.d.type] | SOCK_NONBLOCK));
      try {
        checkName(raw, s.d, `fd ${s.fd} of pid ${s.pid}`, diag, true);
        native.sock.unixBind(t, raw, s.d.dir ?? null);
        const path = pathOf(s.d, raw);
        if (path) {
          b.created.push({ path, ino: lstatSync(path).ino });
          if (!s.d.file?.present) b.unlinkLater.push(path);
        }
      } catch {
        // The address is taken: the connection comes back without its listener's name.
        log('pid %d fd %d: %s is taken; the accepted socket gets another address', s.pid, s.fd, s.d.name);
        closeQuietly(t);
        b.fds.delete(t);
        t = own(native.sock.unixSocket(TYPE_NUM[s.d.type] | SOCK_NONBLOCK));
        native.sock.unixBind(t, Buffer.alloc(0));
      }
      native.sock.sockListen(t, 128);
      temps.set(key, t);
    }
    return t;
  };
  for (const s of list) {
    if (b.socks.has(s.d.ino)) continue; // only accepted sockets are left
    const client = s.d.peer && s.d.state === 'connected' ? b.socks.get(s.d.peer) : undefined;
    const l = listenerFor(s);
    const addr = reachable(native.sock.unixName(l, false), s.d);
    let cfd: number;
    let closer: number | undefined;
    if (client) {
      cfd = client.rfd;
    } else {
      // The client is gone (or outside and declared external): a throwaway one, closed after the data.
      cfd = closer = own(native.sock.unixSocket(TYPE_NUM[s.d.type] | SOCK_NONBLOCK));
    }
    try {
      native.sock.unixConnect(cfd, addr);
    } catch (e) {
      throw restoreError(s, `connect to ${addrText(addr)}`, e);
    }
    const afd = own(native.sock.unixAccept(l));
    b.socks.set(s.d.ino, { ...s, rfd: afd, closer });
  }
  for (const t of temps.values()) {
    closeQuietly(t);
    b.fds.delete(t);
  }

  // Closed peers of the other sockets: a socketpair (or, for datagrams, a bound socket) whose
  // other end is closed once the data is in.
  for (const s of b.socks.values()) {
    if (s.d.state !== 'disconnected' || s.closer !== undefined) continue;
    if (s.d.type === 'dgram') continue; // below, after the data
    // A stream socket created alone: connect it through a temporary listener.
    const t = own(native.sock.unixSocket(TYPE_NUM[s.d.type] | SOCK_NONBLOCK));
    native.sock.unixBind(t, Buffer.alloc(0));
    native.sock.sockListen(t, 1);
    native.sock.unixConnect(s.rfd, native.sock.unixName(t, false));
    s.closer = own(native.sock.unixAccept(t));
    closeQuietly(t);
    b.fds.delete(t);
  }

  // External peers: connected afresh (before the data: they carry none of it).
  for (const s of b.socks.values()) {
    if (!s.d.external) continue;
    const raw = rawOf(s.d.externalRaw);
    const remap = externals(sessionOptions.of(session).external).get(s.d.external);
    const target = remap && remap !== s.d.external ? parseAddrText(remap) : raw;
    try {
      native.sock.unixConnect(s.rfd, target);
    } catch (e) {
      throw restoreError(s, `reconnecting to ${addrText(target)} (declared external)`, e,
        `the program that listens on ${addrText(target)} must be running at restore`);
    }
    if (s.d.droppedBytes) log('pid %d fd %d: %d bytes received from %s before the checkpoint are dropped', s.pid, s.fd, s.d.droppedBytes, s.d.external);
  }

  // 4. Queued data, from the peer (stream, seqpacket) or the sender (datagrams).
  for (const s of b.socks.values()) {
    if (!s.d.queue.length || s.d.external) continue;
    if (s.d.type === 'dgram') fillDatagrams(b, s, log);
    else fillStream(b, s);
  }

  // 5. Datagram peers, clients queued on listeners.
  for (const s of b.socks.values()) {
    if (s.d.type !== 'dgram' || s.d.external || s.pairedWith === s.d.peer && s.pairedWith !== undefined) continue;
    if (s.d.state === 'connected' && s.d.peer) {
      const p = b.socks.get(s.d.peer);
      const addr = p ? reachable(native.sock.unixName(p.rfd, false), p.d) : rawOf(s.d.peerNameRaw);
      try {
        native.sock.unixConnect(s.rfd, addr);
      } catch (e) {
        throw restoreError(s, `connect to ${addrText(addr)}`, e);
      }
    } else if (s.d.state === 'disconnected') {
      // Connected to a socket that is closed since: connect to one, then close it.
      const t = own(native.sock.unixSocket(SOCK_DGRAM | SOCK_NONBLOCK));
      native.sock.unixBind(t, Buffer.alloc(0));
      native.sock.unixConnect(s.rfd, native.sock.unixName(t, false));
      s.closer = t;
    }
  }
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

  // 6. Errors, closed peers, shutdown, options, flags, files.
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
    closeQuietly(s.closer);
    b.fds.delete(s.closer);
    s.closer = undefined;
  }
  for (const s of b.socks.values()) {
    if (s.d.state === 'disconnected' && s.d.type !== 'dgram') continue; // the closed peer set both directions
    const peer = s.d.peer ? b.socks.get(s.d.peer) : undefined;
    try {
      if (s.d.shutdown & SEND_SHUTDOWN) native.sock.unixShutdown(s.rfd, SHUT_WR);
      const rcvSetByPeer = s.d.type !== 'dgram' && peer && (peer.d.shutdown & SEND_SHUTDOWN);
      if (s.d.shutdown & RCV_SHUTDOWN && !rcvSetByPeer) native.sock.unixShutdown(s.rfd, SHUT_RD);
    } catch (e) {
      throw restoreError(s, 'shutdown', e);
    }
  }
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
  for (const path of b.unlinkLater) {
    try {
      unlinkSync(path);
    } catch {
      /* gone */
    }
  }
  log('rebuilt %d unix sockets', b.socks.size);
  return b;
}

function bindName(b: Build, s: Sock, raw: Buffer, diag: DiagEntry[]): void {
  const where = `fd ${s.fd} of pid ${s.pid} (${describeSocket(s.d)})`;
  checkName(raw, s.d, where, diag, true);
  try {
    native.sock.unixBind(s.rfd, raw, s.d.dir ?? null);
  } catch (e) {
    throw restoreError(s, `bind to ${addrText(raw)}`, e);
  }
  const path = pathOf(s.d, raw);
  if (path) {
    b.created.push({ path, ino: lstatSync(path).ino });
    if (!s.d.file?.present) b.unlinkLater.push(path);
  }
}

/** Temporarily lets `fd` send `bytes` more (the data stays charged to the sender until read). */
function roomToSend(fd: number, bytes: number): void {
  const want = Math.min(2 ** 30, bytes * 2 + 65536);
  if (getInt(fd, SO_SNDBUF) < want) {
    try {
      setInt(fd, SO_SNDBUFFORCE, want);
    } catch {
      /* not root: as it is */
    }
  }
}

function fillStream(b: Build, s: Sock): void {
  const from = s.closer ?? (s.d.peer ? b.socks.get(s.d.peer)?.rfd : undefined);
  if (from === undefined) throw restoreError(s, 'queued data', new Error('no peer to send it from'));
  roomToSend(from, s.d.queuedBytes + 4096 * s.d.queue.length);
  for (const m of s.d.queue) {
    try {
      native.sock.unixSend(from, Buffer.from(m.data, 'base64'));
    } catch (e) {
      throw restoreError(s, `writing back ${s.d.queuedBytes} queued bytes`, e);
    }
  }
}

function fillDatagrams(b: Build, s: Sock, log: Logger): void {
  const own = reachable(rawOf(s.d.nameRaw), s.d);
  const partner = s.pairedWith !== undefined ? b.socks.get(s.pairedWith) : undefined;
  const temps = new Map<string, number>();
  try {
    for (const m of s.d.queue) {
      const data = Buffer.from(m.data, 'base64');
      const fromRaw = rawOf(m.fromRaw);
      let sender: number | undefined;
      // The socket of the image bound to the sender's address, so that recvfrom() names it.
      if (fromRaw.length) sender = [...b.socks.values()].find((x) => x.d.type === 'dgram' && bindsName(x.d) && x.d.nameRaw === m.fromRaw)?.rfd;
      if (sender === undefined && !fromRaw.length && partner) sender = partner.rfd;
      if (sender === undefined) {
        const key = m.fromRaw ?? '';
        sender = temps.get(key);
        if (sender === undefined) {
          sender = native.sock.unixSocket(SOCK_DGRAM | SOCK_NONBLOCK);
          temps.set(key, sender);
          if (fromRaw.length) {
            try {
              // A sender outside the image: a stand-in bound to its address, if it is free.
              if (isPath(fromRaw) && !isAbsolute(fromRaw.toString('utf8'))) throw new Error('relative');
              native.sock.unixBind(sender, fromRaw);
              if (isPath(fromRaw)) unlinkSync(fromRaw.toString('utf8'));
            } catch {
              log('pid %d fd %d: a datagram from %s comes back from an unnamed sender', s.pid, s.fd, m.from);
            }
          }
        }
      }
      roomToSend(sender, data.length + 4096);
      const toPartner = partner && sender === partner.rfd;
      if (!toPartner && !own.length) {
        throw restoreError(s, 'queued datagrams', new Error(`the socket has no address, and the sender ${m.from ?? '(unnamed)'} is not its peer`));
      }
      try {
        native.sock.unixSend(sender, data, toPartner ? null : own);
      } catch (e) {
        throw restoreError(s, `writing back ${s.d.queue.length} queued datagrams`, e,
          (e as NativeError).code === 'EAGAIN' ? 'more datagrams were queued than net.unix.max_dgram_qlen lets a socket other than its peer queue' : undefined);
      }
    }
  } finally {
    for (const t of temps.values()) closeQuietly(t);
  }
}

function makeRestoreFd(log: Logger) {
  return async function restoreFd(rec: FdRecord, proc: ProcessRestore): Promise<number | undefined> {
    const d = rec.data as UnixSocketData;
    const b = builds.of(proc.session).build ?? buildAll(proc.session, log);
    const s = b.socks.get(d.ino);
    if (!s) throw new CkptError('ERR_CKPT_RESTORE_FAILED', `fd ${rec.fd} of pid ${proc.pid}: unix socket ${d.ino} was not rebuilt`);
    return native.fd.fcntl(s.rfd, F_DUPFD_CLOEXEC, 0);
  };
}

/** `ckpt show`: one row per unix socket of the image (every pid:fd holding it), with the bytes queued each way. */
function unixSocketRows(procs: ReadonlyArray<{ pid: number; fds: readonly FdRecord[] }>): SocketRow[] {
  const socks: Array<{ d: UnixSocketData; holders: string[] }> = [];
  const byHolder = new Map<string, { d: UnixSocketData; holders: string[] }>();
  for (const p of procs) {
    for (const f of p.fds) {
      if (f.owner !== NAME) continue;
      if (f.sameAs) {
        byHolder.get(`${f.sameAs.pid}:${f.sameAs.fd}`)?.holders.push(`${p.pid}:${f.fd}`);
        continue;
      }
      const s = { d: f.data as UnixSocketData, holders: [`${p.pid}:${f.fd}`] };
      socks.push(s);
      byHolder.set(`${p.pid}:${f.fd}`, s);
    }
  }
  const byIno = new Map(socks.map((s) => [s.d.ino, s]));
  return socks.map(({ d, holders }) => {
    const peer = d.peer ? byIno.get(d.peer) : undefined;
    return {
      family: 'unix', type: d.type, state: d.state + (d.external ? ' (external)' : d.pending?.length ? ` (${d.pending.length} pending)` : ''), holders, local: d.name ?? '',
      remote: d.external ?? d.peerName ?? (peer ? `[${peer.holders[0]}]` : d.state === 'disconnected' ? '(closed)' : ''),
      recvQ: d.queuedBytes, recvMessages: d.queue.length, sendQ: peer?.d.queuedBytes ?? 0,
    };
  });
}

export const unixSocketPlugin = definePlugin(() => ({
  name: NAME,
  version: '0.2.0',
  description: 'AF_UNIX stream, datagram and seqpacket sockets: pairs, listeners, pending connections, queued data, options',
  options: unixSocketOptions,
  flags: [
    { command: 'dump' as const, flags: '--external <spec...>', description: 'accept a peer outside the tree, reconnected at restore: unix:PATH or unix:@ABSTRACT; repeatable', option: 'external', list: true },
    { command: 'restore' as const, flags: '--external <spec...>', description: 'reconnect an external peer of the image elsewhere: unix:PATH=NEWPATH; repeatable', option: 'external', list: true },
  ],
  claims: { fdKinds: ['unix'] },
  show: { sockets: unixSocketRows, fdName: (rec: FdRecord) => describeSocket(rec.data as UnixSocketData) },
  apply(hooks, ctx: PluginContext<UnixSocketOptions>) {
    const bind = async (session: DumpSession | RestoreSession) => {
      Object.assign(sessionOptions.of(session), ctx.options(session) ?? {});
    };
    hooks.session.beforeDump.tapPromise(NAME, bind);
    hooks.fds.dump.tapPromise(NAME, makeDumpFd(ctx.log));
    hooks.session.afterDump.tapPromise(NAME, makeAfterDump(ctx.log));
    hooks.session.beforeRestore.tapPromise(NAME, async (session) => {
      await bind(session);
      checkNames(session);
    });
    hooks.fds.restore.for(NAME).tapPromise(NAME, makeRestoreFd(ctx.log));
  },
}));

export default unixSocketPlugin;
