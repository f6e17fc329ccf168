/**
 * The schemas of this plugin's records (zod): the per-process record (core validates it when the
 * image is read) and the image-wide sysvipc.json (validated by the plugin where it reads it).
 */
import { lazySchema } from '@ckpt/core';
import { z } from 'zod';
import type { IpcObject } from '@ckpt/native';

const int = lazySchema(() => z.number().int());
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

export const attachment = lazySchema(() => z.strictObject({ start: uint, end: uint, shmid: uint, perms: z.string() }));

/** Per process: its attachments of shared memory segments. */
export const sysvProcessRecord = lazySchema(() => z.strictObject({ attachments: z.array(attachment) }));

const blobRange = lazySchema(() => z.strictObject({ offset: uint, length: uint }));

export const savedObject = lazySchema(() =>
  z.strictObject({
    kind: z.enum(['shm', 'msg', 'sem']),
    id: int,
    key: int,
    uid: int,
    gid: int,
    cuid: int,
    cgid: int,
    mode: int,
    ctime: int.optional(),
    size: uint.optional(),
    destroyed: z.boolean().optional(),
    qbytes: uint.optional(),
    values: z.array(int).optional(),
    bytes: blobRange.optional(),
    messages: z.array(z.strictObject({ type: int, offset: uint, length: uint })).optional(),
  }),
);

/** The image-wide sysvipc.json. */
export const sysvRecord = lazySchema(() => z.strictObject({ namespace: z.boolean(), objects: z.array(savedObject) }));

// Compile-time checks: the interfaces and the schemas describe the same records.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Assert<T extends true> = T;
export type RecordChecks = [
  Assert<Same<SysvProcessRecord, z.infer<typeof sysvProcessRecord>>>,
  Assert<Same<SavedObject, z.infer<typeof savedObject>>>,
  Assert<Same<SysvRecord, z.infer<typeof sysvRecord>>>,
];
