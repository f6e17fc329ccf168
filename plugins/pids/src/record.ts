/** The schema of this plugin's per-process record (core's schema builder `s`; core validates it when the image is read). */
import { lazySchema } from '@ckpt/core';
import { s, type Infer } from '@ckpt/core';

const uint = lazySchema(() => s.number().int().nonnegative());
/** An rlimit value: a decimal string, or "inf" (RLIM_INFINITY). */
const limit = lazySchema(() => s.string().regex(/^(inf|\d+)$/));

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
  s.strictObject({
    pid: uint,
    ppid: uint,
    pgid: uint,
    sid: uint,
    comm: s.string(),
    cmdline: s.array(s.string()),
    creds: s.strictObject({ uid: s.array(uint), gid: s.array(uint), groups: s.array(uint) }),
    rlimits: s.array(s.tuple([uint, limit, limit])).optional(),
    personality: s.number().int().optional(),
    subreaper: s.boolean().optional(),
  }),
);

// Compile-time check: the interface and the schema describe the same record.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Assert<T extends true> = T;
export type RecordChecks = [Assert<Same<PidsRecord, Infer<typeof pidsRecord>>>];
