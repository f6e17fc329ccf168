/** The schema of this plugin's fd record (core's schema builder `s`; core validates it when the image is read). */
import { lazySchema } from '@ckpt/core';
import { s, type Infer } from '@ckpt/core';

const uint = lazySchema(() => s.number().int().nonnegative());

/** PACKET_RX_RING / PACKET_TX_RING settings (struct tpacket_req3; V1 and V2 use the first four). */
export const packetRing = lazySchema(() =>
  s.strictObject({
    blockSize: uint,
    blockNr: uint,
    frameSize: uint,
    frameNr: uint,
    retireTmo: uint,
    sizeofPriv: uint,
    features: uint,
  }),
);

/** One packet socket (FdRecord.data, kind "packet"). */
export const packetData = lazySchema(() =>
  s.strictObject({
    /** SOCK_RAW or SOCK_DGRAM. */
    type: uint,
    /** The protocol it receives (an ethertype, host byte order; 0: none until bound with one). */
    protocol: uint,
    /** The interface it is bound to (0: every interface), by index and by name. */
    ifindex: uint,
    ifname: s.string().optional(),
    /** It receives packets (registered with the stack). */
    running: s.boolean(),
    /** PACKET_* int options that differ from a fresh socket's, in the order they are set again: [option, value]. */
    opts: s.array(s.tuple([uint, s.number().int()])),
    /** PACKET_ADD_MEMBERSHIP entries: interface, type (PACKET_MR_*), address, how many times added. */
    mclist: s.array(s.strictObject({ ifindex: uint, ifname: s.string().optional(), type: uint, addr: s.string(), count: uint })),
    rxRing: packetRing.optional(),
    txRing: packetRing.optional(),
    /** PACKET_FANOUT as getsockopt reads it: group id | type << 16 | flags << 24. */
    fanout: uint.optional(),
    /** A classic BPF filter (SO_ATTACH_FILTER). */
    filter: s.strictObject({ code: s.string(), locked: s.boolean().optional() }).optional(),
    /** Buffer sizes the program set (locked). */
    sndbuf: uint.optional(),
    rcvbuf: uint.optional(),
    /** What was not kept, for ckpt show. */
    note: s.string().optional(),
  }),
);
export type PacketData = Infer<typeof packetData>;
