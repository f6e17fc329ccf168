/** The schema of this plugin's per-process record (core's schema builder `s`; core validates it when the image is read). */
import { lazySchema } from '@ckpt/core';
import { s } from '@ckpt/core';

const offset = lazySchema(() => s.string().regex(/^\d+$/));

export const fileLocksRecord = lazySchema(() =>
  s.strictObject({
    locks: s.array(
      s.strictObject({
        fd: s.number().int().nonnegative(),
        kind: s.enum(['flock', 'posix', 'ofd', 'lease']),
        type: s.enum(['read', 'write']),
        start: offset,
        end: offset.nullable(),
        path: s.string(),
        dev: s.string(),
        ino: s.number().int().nonnegative(),
      }),
    ),
  }),
);
