/** The schema of this plugin's per-process record (core's builder `s`, options in zod; core validates it when the image is read). */
import { z } from 'zod';
import { parseExclude } from './ranges.js';
import type { TrackRef } from './track.js';
import { isShmemRef, type ShmemRef, lazySchema, lazyOptions, s, type Infer } from '@ckpt/core';

export const NAME = '@ckpt/plugin-memory';

const int = lazySchema(() => s.number().int());
const uint = lazySchema(() => int.nonnegative());
/** A 64-bit kernel value read into a number (file offsets, inode numbers): may be beyond 2^53. */
const wide = lazySchema(() => s.number().nonnegative().refine(Number.isInteger, { message: 'expected an integer' }));
/** A non-negative integer a number can hold exactly. */
const isUint = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
/**
 * A list of [address, length] pairs (page runs): checked by a loop, not by s.array(s.tuple()),
 * which costs tens of ms for the thousands of runs an increment's scattered pages make.
 */
const runList = lazySchema(() =>
  s.custom<Array<[number, number]>>((v) => Array.isArray(v) && v.every((r) => Array.isArray(r) && r.length === 2 && isUint(r[0]) && isUint(r[1])), {
    message: 'expected a list of [address, length] pairs of non-negative integers',
  }),
);

/** core's ShmemRef (a shared memory object saved once per image), checked by core's isShmemRef. */
export const shmemRef = lazySchema(() => s.custom<ShmemRef>(isShmemRef, { message: 'not a shared object reference (ShmemRef)' }));

/**
 * The plugin's options: `frozenCopy` (dump --frozen-copy) copies memory while frozen, never from a
 * snapshot; `compress` (dump --compress: true, or a zstd level) compresses the pages blob;
 * `trackMem` (dump --track-mem) tracks the pages written after this dump, for an
 * incremental dump to come (track.ts); `includeDontdump` (dump --include-dontdump) saves the pages of MADV_DONTDUMP areas too;
 * `exclude` (dump --exclude) leaves private memory out by address range or mapping name (ranges.ts);
 * `lazy` (restore --lazy) lets the process run before its memory is back (lazy.ts).
 */
export const memoryOptions = lazyOptions(() =>
  z.strictObject({
    frozenCopy: z.boolean().optional(),
    compress: z.union([z.boolean(), z.number().int().min(1).max(19)]).optional(),
    trackMem: z.boolean().optional(),
    includeDontdump: z.boolean().optional(),
    lazy: z.boolean().optional(),
    exclude: z
      .array(
        z.string().superRefine((s, ctx) => {
          const e = parseExclude(s);
          if (typeof e === 'string') ctx.addIssue({ code: 'custom', message: e });
        }),
      )
      .optional(),
  }),
);
export type MemoryOptions = z.infer<typeof memoryOptions>;

/** `aio`: an AIO ring (io_setup), saved whole (header and events) and made again by io_setup. */
export type VmaKind = 'anon' | 'shmem' | 'sysv' | 'file-private' | 'file-shared' | 'vdso' | 'aio';
export const vmaKind = lazySchema(() => s.enum(['anon', 'shmem', 'sysv', 'file-private', 'file-shared', 'vdso', 'aio']));

export interface VmaRecord {
  start: number;
  end: number;
  perms: string;
  kind: VmaKind;
  name: string;
  /** For file mappings: the path, offset in the file and the file's identity at dump time. */
  path?: string;
  offset?: number;
  file?: { size: number; mtimeMs: number; ino: number };
  growsDown?: boolean;
  /** Private anonymous huge-page memory (MAP_HUGETLB): the page size, bytes. */
  hugePageSize?: number;
  /** A shared mapping, read-only now, that mprotect may make writable (VM_MAYWRITE). */
  mayWrite?: boolean;
  /** Guard regions in it (MADV_GUARD_INSTALL): [addr, len]. */
  guards?: Array<[number, number]>;

  /** Shared anonymous memory and memfds: the object (saved once per image, shared at restore). */
  shmem?: ShmemRef;
  /**
   * The parent maps it alike and shares pages of it copy-on-write: the restore keeps the parent's
   * (the process is forked from its parent once the parent's memory is back), `runs` holds only
   * the pages that differ, and `zap` those the parent has and this process had not.
   */
  inherited?: boolean;
  zap?: Array<[number, number]>;
  /**
   * An AIO ring: its number of event slots, and the kernel's head and tail at the dump (the
   * events between them are completed, not yet reaped). Its address is the context id.
   */
  aio?: { nr: number; head: number; tail: number };
  /**
   * Its pages were not saved: the process marked it MADV_DONTDUMP (as a core dump leaves it out),
   * or the user left it out (`option`: dump --exclude). It comes back as the fresh memory of its
   * kind: zeros, or the file's pages.
   */
  excluded?: 'dontdump' | 'option';
  /** Parts of it the user left out (dump --exclude): [addr, len], as `excluded` for the whole. */
  excludedRanges?: Array<[number, number]>;
  /** Saved page runs [addr, len] and where the first one starts in the pages blob. */
  runs: Array<[number, number]>;
  blobOffset: number;
  /**
   * An incremental image: pages not written since the parent image's dump, which the image chain
   * holds (the parent's pages, or its own parent's) at the same addresses: [addr, len].
   */
  parentRuns?: Array<[number, number]>;
}

export const vmaRecord = lazySchema(() =>
  s.strictObject({
    start: uint,
    end: uint,
    perms: s.string(),
    kind: vmaKind,
    name: s.string(),
    path: s.string().optional(),
    offset: wide.optional(),
    file: s.strictObject({ size: wide, mtimeMs: s.number(), ino: wide }).optional(),
    growsDown: s.boolean().optional(),
    hugePageSize: s.number().int().positive().optional(),
    mayWrite: s.boolean().optional(),
    guards: runList.optional(),
    shmem: shmemRef.optional(),
    inherited: s.boolean().optional(),
    zap: runList.optional(),
    aio: s.strictObject({ nr: s.number().int().positive(), head: uint, tail: uint }).optional(),
    excluded: s.enum(['dontdump', 'option']).optional(),
    excludedRanges: runList.optional(),
    runs: runList,
    blobOffset: uint,
    parentRuns: runList.optional(),
  }),
);

export interface MemoryRecord {
  vmas: VmaRecord[];
  pagesFile: string;
  pagesBytes: number;
  mm: {
    startCode: number;
    endCode: number;
    startData: number;
    endData: number;
    startBrk: number;
    brk: number;
    startStack: number;
    argStart: number;
    argEnd: number;
    envStart: number;
    envEnd: number;
  };
  auxv: string;
  exe: string;
  /** The pages blob is one zstd frame (dump --compress); pagesBytes counts the pages, uncompressed. */
  compression?: 'zstd';
  /** Its memory is tracked for the next incremental dump: where the tracking waits (track.ts). */
  track?: TrackRef;
}

export const memoryRecord = lazySchema(() =>
  s.strictObject({
    vmas: s.array(vmaRecord),
    pagesFile: s.string(),
    pagesBytes: uint,
    mm: s.strictObject({
      startCode: uint,
      endCode: uint,
      startData: uint,
      endData: uint,
      startBrk: uint,
      brk: uint,
      startStack: uint,
      argStart: uint,
      argEnd: uint,
      envStart: uint,
      envEnd: uint,
    }),
    /** The auxiliary vector (base64). */
    auxv: s.string().regex(/^[A-Za-z0-9+/]*={0,2}$/),
    exe: s.string(),
    compression: s.literal('zstd').optional(),
    track: s.strictObject({ holder: uint, holderStart: uint, boot: s.string(), fd: uint, start: uint }).optional(),
  }),
);

// Compile-time checks: the interfaces and the schemas describe the same records.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Assert<T extends true> = T;
export type RecordChecks = [
  Assert<Same<ShmemRef, Infer<typeof shmemRef>>>,
  Assert<Same<VmaRecord, Infer<typeof vmaRecord>>>,
  Assert<Same<MemoryRecord, Infer<typeof memoryRecord>>>,
];
