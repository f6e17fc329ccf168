/** The schema of this plugin's fd record (core's schema builder `s`; core validates it when the image is read). */
import { lazySchema } from '@ckpt/core';
import { s, type Infer } from '@ckpt/core';

const uint = lazySchema(() => s.number().int().nonnegative());

/** One netlink socket (FdRecord.data, kind "netlink"). */
export const netlinkData = lazySchema(() =>
  s.strictObject({
    /** SOCK_RAW or SOCK_DGRAM. */
    type: uint,
    /** The netlink protocol (NETLINK_ROUTE 0, NETLINK_AUDIT 9, NETLINK_GENERIC 16, ...). */
    protocol: uint,
    /** Its port id (0: never bound). */
    portid: uint,
    /** Multicast groups it is a member of (group numbers, from 1). */
    groups: s.array(s.number().int().positive()),
    /** The port and group it is connected to. */
    peer: s.strictObject({ portid: uint, group: uint }).optional(),
    /** NETLINK_* options that were on: [option, value]. */
    flags: s.array(s.tuple([uint, s.number().int()])),
    /** Buffer sizes the program set (locked). */
    sndbuf: uint.optional(),
    rcvbuf: uint.optional(),
  }),
);
export type NetlinkData = Infer<typeof netlinkData>;
