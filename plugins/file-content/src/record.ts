/** The schema of the fd data this plugin owns (core's schema builder `s`; core validates it when the image is read). */
import { lazySchema } from '@ckpt/core';
import { s } from '@ckpt/core';
import { shmemRef } from '@ckpt/plugin-files';

export const contentFd = lazySchema(() =>
  s.strictObject({
    path: s.string(),
    unlinked: s.boolean(),
    flags: s.number().int(),
    pos: s.number().int().nonnegative(),
    mode: s.number().int().min(0).max(0o7777),
    uid: s.number().int().nonnegative(),
    gid: s.number().int().nonnegative(),
    size: s.number().int().nonnegative(),
    mtimeMs: s.number(),
    sha256: s
      .string()
      .regex(/^[0-9a-f]{64}$/)
      .optional(),
    blob: s.string().regex(/^[A-Za-z0-9._-]+$/),
    policy: s.enum(['image', 'disk', 'verify']),
    inode: s.string(),
    ghost: shmemRef.optional(),
  }),
);
