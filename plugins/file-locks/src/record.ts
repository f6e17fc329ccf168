/** The schema of this plugin's per-process record (zod; core validates it when the image is read). */
import { lazySchema } from '@ckpt/core';
import { z } from 'zod';

const offset = lazySchema(() => z.string().regex(/^\d+$/));

export const fileLocksRecord = lazySchema(() =>
  z.strictObject({
    locks: z.array(
      z.strictObject({
        fd: z.number().int().nonnegative(),
        kind: z.enum(['flock', 'posix', 'ofd', 'lease']),
        type: z.enum(['read', 'write']),
        start: offset,
        end: offset.nullable(),
        path: z.string(),
        dev: z.string(),
        ino: z.number().int().nonnegative(),
      }),
    ),
  }),
);
