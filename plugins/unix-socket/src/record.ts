/**
 * The unix-socket plugin's name, options and record format: schemas (options in zod, records in core's builder `s`), and the TypeScript
 * types derived from them (core validates every fd record this plugin owns with
 * `unixSocketData` when an image is read).
 */
import { lazySchema, lazyOptions, s, type Infer } from '@ckpt/core';
import { z } from 'zod';

export const NAME = '@ckpt/plugin-unix-socket';

/**
 * Options: `external`, peers outside the tree: at dump `unix:PATH` (or `unix:@ABSTRACT`) accepts
 * a peer there; at restore `unix:PATH=NEWPATH` reconnects it elsewhere.
 */
export const unixSocketOptions = lazyOptions(() =>
  z.strictObject({ external: z.array(z.string().regex(/^unix:./, 'expected unix:PATH or unix:PATH=NEWPATH')).optional() }),
);
export type UnixSocketOptions = z.infer<typeof unixSocketOptions>;

const int = lazySchema(() => s.number().int());
const uint = lazySchema(() => int.nonnegative());
const base64 = lazySchema(() => s.string());
/** struct timeval: [seconds, microseconds]. */
const timeval = lazySchema(() => s.tuple([int, int]));

export const unixType = lazySchema(() => s.enum(['stream', 'dgram', 'seqpacket']));
export type UnixType = Infer<typeof unixType>;

/**
 * connected: has a live peer; pending: connected to a listener that has not accepted it yet;
 * disconnected: its peer is closed (or an outside client declared external); listening;
 * unconnected (possibly bound).
 */
export const unixState = lazySchema(() => s.enum(['unconnected', 'listening', 'connected', 'pending', 'disconnected']));
export type UnixState = Infer<typeof unixState>;

/** The socket options saved (SOL_SOCKET). */
export const unixOptions = lazySchema(() =>
  s.strictObject({
    sndbuf: int,
    rcvbuf: int,
    passcred: s.boolean(),
    passsec: s.boolean(),
    /** -1: off. */
    peekOff: int,
    rcvlowat: int,
    /** [seconds, microseconds]; [0, 0] = none. */
    rcvtimeo: timeval,
    sndtimeo: timeval,
  }),
);
export type UnixOptions = Infer<typeof unixOptions>;

/** One message (or, for a stream, the whole run of bytes) waiting in a receive queue. */
export const queuedMessage = lazySchema(() =>
  s.strictObject({
    /** base64 */
    data: base64,
    /** The sender's address (datagrams), for people, and exact (base64 of sun_path). */
    from: s.string().optional(),
    fromRaw: base64.optional(),
    /** Files in flight with it (SCM_RIGHTS): core's ids (ProcessDump.dumpInFlight), in order. */
    fds: s.array(s.number().int().negative()).optional(),
  }),
);
export type QueuedMessage = Infer<typeof queuedMessage>;

/** The record of one unix socket (FdRecord.data). */
export const unixSocketData = lazySchema(() =>
  s.strictObject({
    /** The socket's inode at dump: its id in the image (peers name each other by it). */
    ino: uint,
    type: unixType,
    state: unixState,
    /** O_NONBLOCK of the open description. */
    flags: uint,
    /** Its address for people: a path, or @name (abstract); and exact (base64 of sun_path). */
    name: s.string().optional(),
    nameRaw: base64.optional(),
    /** The name is its own (bind, autobind), not the one an accepted socket inherits from its listener. */
    bound: s.boolean().optional(),
    /** A relative path name: the directory it was bound in. */
    dir: s.string().optional(),
    /** A path name: its socket file at dump time (present: it existed, with this inode). */
    file: s.strictObject({ present: s.boolean(), mode: uint.optional(), uid: uint.optional(), gid: uint.optional() }).optional(),
    /** The peer's inode (in the image); 0: closed. */
    peer: uint.optional(),
    peerName: s.string().optional(),
    peerNameRaw: base64.optional(),
    /** pending: the inode of the listener (in the image) it waits on. */
    listener: uint.optional(),
    /** Declared external: the address to connect to at restore (people's form, exact form). */
    external: s.string().optional(),
    externalRaw: base64.optional(),
    /** listening: backlog, and the clients of the image queued on it, oldest first. */
    backlog: uint.optional(),
    pending: s.array(uint).optional(),
    /** Outside clients queued on a listener at dump time (not restored). */
    droppedPending: uint.optional(),
    /** RCV_SHUTDOWN 1 | SEND_SHUTDOWN 2. */
    shutdown: uint,
    /** A pending socket error (ECONNRESET when the peer closed with data unread). */
    error: uint.optional(),
    /** The receive queue. */
    queue: s.array(queuedMessage),
    queuedBytes: uint,
    /** Bytes received from an external peer that a fresh connection cannot carry (dropped). */
    droppedBytes: uint.optional(),
    opts: unixOptions,
    /** SO_PEERCRED: the pid and effective ids of whoever made its peer (host pid). */
    peercred: s.strictObject({ pid: uint, uid: uint, gid: uint }).optional(),
    /** A classic BPF socket filter (SO_ATTACH_FILTER). */
    filter: s.strictObject({ code: s.string().regex(/^[A-Za-z0-9+/]*={0,2}$/), locked: s.boolean().optional() }).optional(),
  }),
);
export type UnixSocketData = Infer<typeof unixSocketData>;
