/** The schema of this plugin's per-process record (zod; core validates it when the image is read). */
import { lazySchema } from '@ckpt/core';
import { z } from 'zod';

const uint = lazySchema(() => z.number().int().nonnegative());
/** An rlimit value: a decimal string, or "inf" (RLIM_INFINITY). */
const limit = lazySchema(() => z.string().regex(/^(inf|\d+)$/));

export interface PidsRecord {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  comm: string;
  cmdline: string[];
  creds: { uid: number[]; gid: number[]; groups: number[] };
  /** Resource limits [resource, soft, hard] (decimal strings; "inf" for unlimited). */
  rlimits?: Array<[number, string, string]>;
  /** personality(2) flags (ADDR_NO_RANDOMIZE, ...). */
  personality?: number;
  /** A child subreaper (PR_SET_CHILD_SUBREAPER): orphans of the tree were handed to it. */
  subreaper?: boolean;
}

export const pidsRecord = lazySchema(() =>
  z.strictObject({
    pid: uint,
    ppid: uint,
    pgid: uint,
    sid: uint,
    comm: z.string(),
    cmdline: z.array(z.string()),
    creds: z.strictObject({ uid: z.array(uint), gid: z.array(uint), groups: z.array(uint) }),
    rlimits: z.array(z.tuple([uint, limit, limit])).optional(),
    personality: z.number().int().optional(),
    subreaper: z.boolean().optional(),
  }),
);

// Compile-time check: the interface and the schema describe the same record.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Assert<T extends true> = T;
export type RecordChecks = [Assert<Same<PidsRecord, z.infer<typeof pidsRecord>>>];
