/** The files plugin's option and record schemas (options: zod; records: core's builder `s`; core validates both through Standard Schema). */
import { lazySchema, lazyOptions, s } from '@ckpt/core';
import { z } from 'zod';
import { deletedNode } from './reference.js';

const match = lazySchema(() =>
  z.strictObject({
    path: z.string().optional(),
    maxSize: z.number().int().nonnegative().optional(),
    minSize: z.number().int().nonnegative().optional(),
    unlinked: z.boolean().optional(),
    tmpfs: z.boolean().optional(),
    writable: z.boolean().optional(),
    append: z.boolean().optional(),
  }),
);

const rule = lazySchema(() =>
  z
    .strictObject({
      match: match.optional(),
      method: z.enum(['reference', 'content']).optional(),
      policy: z.enum(['image', 'disk', 'verify']).optional(),
    })
    .refine((r) => r.policy !== 'image' || r.method === 'content', { message: 'policy "image" needs method "content" (a reference has no copy to put back)' }),
);

/** Options (config key "files", or options["@ckpt/plugin-files"]): per-file rules, first match wins. */
export const filesOptions = lazyOptions(() => z.strictObject({ rules: z.array(rule).optional() }));
export type FilesOptions = z.infer<typeof filesOptions>;

/** Per process: the file system context. */
export const filesRecord = lazySchema(() =>
  s.strictObject({
    cwd: s.string(),
    /** The working directory was deleted: recreated (and removed again) at restore. */
    cwdDeleted: deletedNode.optional(),
    root: s.string().optional(),
    umask: s.number().int().min(0).max(0o777),
  }),
);
