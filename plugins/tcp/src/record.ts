/**
 * The tcp plugin's name, options and record format: schemas (options in zod, records in core's builder `s`), and the TypeScript types
 * derived from them (core validates every fd record this plugin owns with `inetSocketData`
 * when an image is read).
 */
import { lazySchema, lazyOptions, s, type Infer } from '@ckpt/core';
import { z } from 'zod';
import type { InetAddr as NativeInetAddr, TcpRepairWindow } from '@ckpt/native';

export const NAME = '@ckpt/plugin-tcp';

/** TCP_INFO states. */
export const TCP_STATES = [
  '',
  'ESTABLISHED',
  'SYN_SENT',
  'SYN_RECV',
  'FIN_WAIT1',
  'FIN_WAIT2',
  'TIME_WAIT',
  'CLOSE',
  'CLOSE_WAIT',
  'LAST_ACK',
  'LISTEN',
  'CLOSING',
];

/** Options: `close` (restore --tcp-close): connections come back closed (received bytes, then EOF), for a peer that is gone. */
export const tcpOptions = lazyOptions(() => z.strictObject({ close: z.boolean().optional() }));
export type TcpOptions = z.infer<typeof tcpOptions>;

const int = lazySchema(() => s.number().int());
const uint = lazySchema(() => int.nonnegative());
const base64 = lazySchema(() => s.string());

/** An inet socket address, as the native engine gives and takes it. */
export const inetAddr = lazySchema(() =>
  s.strictObject({
    family: s.literal([4, 6]),
    addr: s.string(),
    port: uint.max(65535),
    flowinfo: uint.optional(),
    scope: uint.optional(),
  }),
);
export type InetAddr = Infer<typeof inetAddr>;

/** TCP_REPAIR_WINDOW. */
export const tcpRepairWindow = lazySchema(() => s.strictObject({ sndWl1: uint, sndWnd: uint, maxWindow: uint, rcvWnd: uint, rcvWup: uint }));

/** An established connection as saved: TCP_REPAIR's view, queues in base64. */
export const tcpConnData = lazySchema(() =>
  s.strictObject({
    inqSeq: uint,
    outqSeq: uint,
    inq: base64,
    outq: base64,
    unsent: uint,
    mss: uint,
    options: uint,
    sndWscale: uint,
    rcvWscale: uint,
    timestamp: uint,
    window: tcpRepairWindow.optional(),
    /** Wall clock (ms) of the dump: the timestamp clock goes on by the time away. */
    dumpedAt: uint,
  }),
);
export type TcpConnData = Infer<typeof tcpConnData>;

/** The record of one inet socket (FdRecord.data). */
export const inetSocketData = lazySchema(() =>
  s.strictObject({
    /** udplite: UDP-Lite; ping: ICMP echo sockets (SOCK_DGRAM, IPPROTO_ICMP / ICMPV6); raw: SOCK_RAW. */
    proto: s.enum(['tcp', 'udp', 'udplite', 'ping', 'raw']),
    /** raw: the IP protocol it was opened for. */
    protocol: uint.optional(),
    family: s.literal([4, 6]),
    /** TCP: a TCP_STATES name; UDP: UNCONN or CONNECTED. */
    state: s.string(),
    /** File status flags kept (O_NONBLOCK). */
    flags: uint,
    local: inetAddr.optional(),
    peer: inetAddr.optional(),
    /** Int options that differ from a fresh socket's: [level, name, value]. */
    opts: s.array(s.tuple([int, int, int])),
    /** Other options (SO_LINGER, TCP_CONGESTION, SO_BINDTODEVICE): [level, name, base64]. */
    rawOpts: s.array(s.tuple([int, int, base64])).optional(),
    backlog: uint.optional(),
    tcp: tcpConnData.optional(),
    datagrams: s.array(s.strictObject({ from: inetAddr, data: base64 })).optional(),
    /** Bytes queued at dump time: received and unread, sent or to send and not acknowledged. */
    recvQueue: uint,
    sendQueue: uint,
    /** UDP: shut down (1 for reading, 2 for writing, 3 both), from sock_diag; TCP never connected: 1 (for reading). */
    shutdown: s.number().int().min(1).max(3).optional(),
    /** A classic BPF socket filter (SO_ATTACH_FILTER). */
    filter: s.strictObject({ code: base64, locked: s.boolean().optional() }).optional(),
    /** A closed connection (CLOSE, with its peer) had an error pending (a reset): restored reset. */
    error: s.boolean().optional(),
    /** The dump left the connection blocked (nftables) for the restore to reopen. */
    locked: s.boolean().optional(),
    /** What was not kept, for ckpt show. */
    note: s.string().optional(),
  }),
);
export type InetSocketData = Infer<typeof inetSocketData>;

// Compile-time checks: the schemas describe exactly what the native engine reads and takes.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Assert<T extends true> = T;
type _InetAddrAgrees = Assert<Same<InetAddr, NativeInetAddr>>;
type _WindowAgrees = Assert<Same<Infer<typeof tcpRepairWindow>, TcpRepairWindow>>;
