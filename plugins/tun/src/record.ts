/** The schema of this plugin's fd record (core's schema builder `s`; core validates it when the image is read). */
import { lazySchema } from '@ckpt/core';
import { s, type Infer } from '@ckpt/core';

const uint = lazySchema(() => s.number().int().nonnegative());

/** One tun/tap fd attached to an interface (FdRecord.data, kind "tun"). */
export const tunData = lazySchema(() =>
  s.strictObject({
    /** The interface. */
    name: s.string().min(1).max(15),
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
    device: s.strictObject({
      mtu: uint,
      up: s.boolean(),
      txqlen: uint,
      /** tap: its MAC address. */
      hwaddr: s.string().optional(),
      addrs: s.array(s.strictObject({ family: s.literal([4, 6]), addr: s.string(), prefix: uint })),
    }),
    /** What was not kept, for ckpt show. */
    note: s.string().optional(),
  }),
);
export type TunData = Infer<typeof tunData>;
