/**
 * The schemas of this plugin's records (core's builder `s`): the per-process record (core validates it when the
 * image is read) and the image-wide sysvipc.json (validated by the plugin where it reads it).
 */
import { lazySchema } from '@ckpt/core';
import { s, type Infer } from '@ckpt/core';
import type { IpcObject } from '@ckpt/native';

const int = lazySchema(() => s.number().int());
const uint = lazySchema(() => int.nonnegative());

export interface Attachment {
  start: number;
  end: number;
  shmid: number;
  perms: string;
}

export interface SysvProcessRecord {
  attachments: Attachment[];
}

/** An object as saved: contents live in the blob at [offset, offset + length). */
export type SavedObject = Omit<IpcObject, 'bytes' | 'messages' | 'nattch'> & {
  bytes?: { offset: number; length: number };
  messages?: Array<{ type: number; offset: number; length: number }>;
};

export interface SysvRecord {
  /** The objects are the whole of an application's own IPC namespace. */
  namespace: boolean;
  objects: SavedObject[];
}

export const attachment = lazySchema(() => s.strictObject({ start: uint, end: uint, shmid: uint, perms: s.string() }));

/** Per process: its attachments of shared memory segments. */
export const sysvProcessRecord = lazySchema(() => s.strictObject({ attachments: s.array(attachment) }));

const blobRange = lazySchema(() => s.strictObject({ offset: uint, length: uint }));

export const savedObject = lazySchema(() =>
  s.strictObject({
    kind: s.enum(['shm', 'msg', 'sem']),
    id: int,
    key: int,
    uid: int,
    gid: int,
    cuid: int,
    cgid: int,
    mode: int,
    ctime: int.optional(),
    size: uint.optional(),
    destroyed: s.boolean().optional(),
    qbytes: uint.optional(),
    values: s.array(int).optional(),
    bytes: blobRange.optional(),
    messages: s.array(s.strictObject({ type: int, offset: uint, length: uint })).optional(),
  }),
);

/** The image-wide sysvipc.json. */
export const sysvRecord = lazySchema(() => s.strictObject({ namespace: s.boolean(), objects: s.array(savedObject) }));

// Compile-time checks: the interfaces and the schemas describe the same records.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Assert<T extends true> = T;
export type RecordChecks = [
  Assert<Same<SysvProcessRecord, Infer<typeof sysvProcessRecord>>>,
  Assert<Same<SavedObject, Infer<typeof savedObject>>>,
  Assert<Same<SysvRecord, Infer<typeof sysvRecord>>>,
];
