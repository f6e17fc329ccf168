/** The schema of the fd data this plugin owns (zod; core validates it when the image is read). */
import { z } from 'zod';
import { isShmemRef, type ShmemRef, lazySchema } from '@ckpt/core';

/** core's ShmemRef (a deleted file saved once per image), checked by core's isShmemRef. */
const shmemRef = lazySchema(() => z.custom<ShmemRef>(isShmemRef, { message: 'not a shared object reference (ShmemRef)' }));

const hex = lazySchema(() => z.string().regex(/^0x[0-9a-f]+$/i));
const decimal = lazySchema(() => z.string().regex(/^\d+$/));

export const eventFdData = lazySchema(() =>
  z.strictObject({
    type: z.enum(['eventfd', 'eventpoll', 'signalfd', 'timerfd', 'inotify', 'fanotify', 'pidfd']),
    /** pidfd: the process (or thread, PIDFD_THREAD) it refers to, as ckpt saw it; absent: a process gone and reaped. */
    pid: z.number().int().positive().optional(),
    thread: z.boolean().optional(),
    flags: z.number().int(),
    count: hex.optional(),
    semaphore: z.boolean().optional(),
    watches: z
      .array(
        z.strictObject({
          tfd: z.number().int().nonnegative(),
          events: z.number().int(),
          data: hex,
          via: z.strictObject({ pid: z.number().int().positive(), fd: z.number().int().nonnegative() }).optional(),
        }),
      )
      .optional(),
    sigmask: hex.optional(),
    clockid: z.number().int().nonnegative().optional(),
    valueNs: decimal.optional(),
    intervalNs: decimal.optional(),
    inotify: z.array(z.strictObject({ wd: z.number().int().positive(), mask: z.number().int(), path: z.string(), ghost: shmemRef.optional() })).optional(),
    fanotify: z
      .strictObject({
        flags: z.number().int().nonnegative(),
        eventFlags: z.number().int().nonnegative(),
        marks: z.array(
          z.strictObject({
            type: z.enum(['inode', 'mount', 'filesystem']),
            path: z.string(),
            mflags: z.number().int().nonnegative(),
            mask: z.number().int().nonnegative(),
            ignoredMask: z.number().int().nonnegative(),
            ghost: shmemRef.optional(),
          }),
        ),
      })
      .optional(),
  }),
);
