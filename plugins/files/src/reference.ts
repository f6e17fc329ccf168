/** The schema of the fd data this plugin owns (core's schema builder `s`; core validates it when the image is read). */
import { s, type Infer } from '@ckpt/core';
import { isShmemRef, type ShmemRef, lazySchema } from '@ckpt/core';
import type { FilePolicy } from './rules.js';

const uint = lazySchema(() => s.number().int().nonnegative());
/** A 64-bit kernel value read into a number (inode numbers, sizes): may be beyond 2^53. */
const wide = lazySchema(() => s.number().nonnegative().refine(Number.isInteger, { message: 'expected an integer' }));
/**
 * A file position from fdinfo: may be beyond 2^53 (a directory read to its end on ext4 is at
 * 2^63 - 1) and, for some devices, negative.
 */
const position = lazySchema(() => s.number().refine(Number.isInteger, { message: 'expected an integer' }));

/** What this plugin stores per description. */
export interface ReferenceData {
  path?: string;
  flags: number;
  pos: number;
  file?: { size: number; mtimeMs: number; ino: number; sha256?: string };
  /** Restart policy (regular files): "verify" (default for files only read) or "disk". */
  policy?: FilePolicy;
  /**
   * Pipes and FIFOs: which pipe object, its capacity and queued bytes (base64). `absent`: the end
   * (read or write) no process of the image holds (an outsider's, e.g. a shell or job launcher,
   * or closed by everyone): the restored pipe has no such end, unless --inherit-fd gives one.
   */
  pipe?: { id: string; capacity: number; data?: string; absent?: 'read' | 'write'; packets?: number[] };
  /** memfds: the object, shared with mappings of it. */
  shmem?: ShmemRef;
  /**
   * A FIFO, device node or directory that was deleted (its path is the old one): recreated
   * beside it and removed again at once, with this type and mode, owner and device number.
   * `key` (dev:inode) makes every description of it one object again.
   */
  deleted?: DeletedNode;
  /**
   * A /proc/PID path (or one under it) of a process that was gone at dump time and not in the
   * image: restore opens it while a helper holds that pid, then kills the helper, so the fd is
   * again one of a dead process (reads fail with ESRCH) and never one of whoever has the pid now.
   */
  deadPid?: number;
}

/** A deleted node: its identity at dump time, type and permission bits (st_mode), owner, device number. */
export interface DeletedNode {
  key: string;
  mode: number;
  uid: number;
  gid: number;
  rdev?: number;
}

/** core's ShmemRef (a shared memory object saved once per image), checked by core's isShmemRef. */
export const shmemRef = lazySchema(() => s.custom<ShmemRef>(isShmemRef, { message: 'not a shared object reference (ShmemRef)' }));

export const deletedNode = lazySchema(() =>
  s.strictObject({
    key: s.string(),
    mode: uint,
    uid: uint,
    gid: uint,
    rdev: wide.optional(),
  }),
);

export const referenceData = lazySchema(() =>
  s.strictObject({
    path: s.string().optional(),
    flags: s.number().int(),
    pos: position,
    file: s
      .strictObject({
        size: wide,
        mtimeMs: s.number(),
        ino: wide,
        sha256: s
          .string()
          .regex(/^[0-9a-f]{64}$/)
          .optional(),
      })
      .optional(),
    policy: s.enum(['image', 'disk', 'verify']).optional(),
    pipe: s
      .strictObject({
        id: s.string(),
        capacity: uint,
        data: s
          .string()
          .regex(/^[A-Za-z0-9+/]*={0,2}$/)
          .optional(),
        absent: s.enum(['read', 'write']).optional(),
        /** Bytes written in packet mode (O_DIRECT): the length of each queued packet. */
        packets: s.array(uint).optional(),
      })
      .optional(),
    shmem: shmemRef.optional(),
    deleted: deletedNode.optional(),
    deadPid: s.number().int().positive().optional(),
  }),
);

// Compile-time checks: the interfaces and the schemas describe the same records.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Assert<T extends true> = T;
export type RecordChecks = [Assert<Same<ShmemRef, Infer<typeof shmemRef>>>, Assert<Same<ReferenceData, Infer<typeof referenceData>>>];
