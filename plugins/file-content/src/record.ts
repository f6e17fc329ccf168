/** The schema of the fd data this plugin owns (zod; core validates it when the image is read). */
import { lazySchema } from '@ckpt/core';
import { z } from 'zod';
import { shmemRef } from '@ckpt/plugin-files';

export const contentFd = lazySchema(() =>
  z.strictObject({
    path: z.string(),
    unlinked: z.boolean(),
    flags: z.number().int(),
    pos: z.number().int().nonnegative(),
    mode: z.number().int().min(0).max(0o7777),
    uid: z.number().int().nonnegative(),
    gid: z.number().int().nonnegative(),
    size: z.number().int().nonnegative(),
    mtimeMs: z.number(),
    sha256: z
      .string()
      .regex(/^[0-9a-f]{64}$/)
      .optional(),
    blob: z.string().regex(/^[A-Za-z0-9._-]+$/),
    policy: z.enum(['image', 'disk', 'verify']),
    inode: z.string(),
    ghost: shmemRef.optional(),
  }),
);
