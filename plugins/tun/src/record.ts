/** The schema of this plugin's fd record (zod; core validates it when the image is read). */
import { lazySchema } from '@ckpt/core';
import { z } from 'zod';

const uint = lazySchema(() => z.number().int().nonnegative());

/** One tun/tap fd attached to an interface (FdRecord.data, kind "tun"). */
export const tunData = lazySchema(() =>
  z.strictObject({
    /** The interface. */
    name: z.string().min(1).max(15),
    /** TUNGETIFF flags: IFF_TUN 1 / IFF_TAP 2, IFF_NO_PI, IFF_VNET_HDR, IFF_MULTI_QUEUE, IFF_PERSIST, ... */
    flags: uint,
    /** File status flags kept (O_NONBLOCK). */
    fileFlags: uint,
    /** TUNGETVNETHDRSZ and TUNGETSNDBUF, when not the defaults (10, INT_MAX). */
    vnetHdrSz: uint.optional(),
    sndbuf: uint.optional(),
    /** TUNSETOWNER / TUNSETGROUP (absent: anyone). */
    owner: uint.optional(),
    group: uint.optional(),
    /** The interface as it was, to make it again when it is gone at restore. */
    device: z.strictObject({
      mtu: uint,
      up: z.boolean(),
      txqlen: uint,
      /** tap: its MAC address. */
      hwaddr: z.string().optional(),
      addrs: z.array(z.strictObject({ family: z.literal([4, 6]), addr: z.string(), prefix: uint })),
    }),
    /** What was not kept, for ckpt show. */
    note: z.string().optional(),
  }),
);
export type TunData = z.infer<typeof tunData>;
