/** The schema of this plugin's fd record (zod; core validates it when the image is read). */
import { lazySchema } from '@ckpt/core';
import { z } from 'zod';

const uint = lazySchema(() => z.number().int().nonnegative());

/** One netlink socket (FdRecord.data, kind "netlink"). */
export const netlinkData = lazySchema(() =>
  z.strictObject({
    /** SOCK_RAW or SOCK_DGRAM. */
    type: uint,
    /** The netlink protocol (NETLINK_ROUTE 0, NETLINK_AUDIT 9, NETLINK_GENERIC 16, ...). */
    protocol: uint,
    /** Its port id (0: never bound). */
    portid: uint,
    /** Multicast groups it is a member of (group numbers, from 1). */
    groups: z.array(z.number().int().positive()),
    /** The port and group it is connected to. */
    peer: z.strictObject({ portid: uint, group: uint }).optional(),
    /** NETLINK_* options that were on: [option, value]. */
    flags: z.array(z.tuple([uint, z.number().int()])),
    /** Buffer sizes the program set (locked). */
    sndbuf: uint.optional(),
    rcvbuf: uint.optional(),
  }),
);
export type NetlinkData = z.infer<typeof netlinkData>;
