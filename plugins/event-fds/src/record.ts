/** The schema of the fd data this plugin owns (core's schema builder `s`; core validates it when the image is read). */
import { s } from '@ckpt/core';
import { isShmemRef, type ShmemRef, lazySchema } from '@ckpt/core';

/** core's ShmemRef (a deleted file saved once per image), checked by core's isShmemRef. */
const shmemRef = lazySchema(() => s.custom<ShmemRef>(isShmemRef, { message: 'not a shared object reference (ShmemRef)' }));

const hex = lazySchema(() => s.string().regex(/^0x[0-9a-f]+$/i));
const decimal = lazySchema(() => s.string().regex(/^\d+$/));

export const eventFdData = lazySchema(() =>
  s.strictObject({
    type: s.enum(['eventfd', 'eventpoll', 'signalfd', 'timerfd', 'inotify', 'fanotify', 'pidfd']),
    /** pidfd: the process (or thread, PIDFD_THREAD) it refers to, as ckpt saw it; absent: a process gone and reaped. */
    pid: s.number().int().positive().optional(),
    thread: s.boolean().optional(),
    flags: s.number().int(),
    count: hex.optional(),
    semaphore: s.boolean().optional(),
    watches: s
      .array(
        s.strictObject({
          tfd: s.number().int().nonnegative(),
          events: s.number().int(),
          data: hex,
          via: s.strictObject({ pid: s.number().int().positive(), fd: s.number().int().nonnegative() }).optional(),
        }),
      )
      .optional(),
    sigmask: hex.optional(),
    clockid: s.number().int().nonnegative().optional(),
    valueNs: decimal.optional(),
    intervalNs: decimal.optional(),
    inotify: s.array(s.strictObject({ wd: s.number().int().positive(), mask: s.number().int(), path: s.string(), ghost: shmemRef.optional() })).optional(),
    fanotify: s
      .strictObject({
        flags: s.number().int().nonnegative(),
        eventFlags: s.number().int().nonnegative(),
        marks: s.array(
          s.strictObject({
            type: s.enum(['inode', 'mount', 'filesystem']),
            path: s.string(),
            mflags: s.number().int().nonnegative(),
            mask: s.number().int().nonnegative(),
            ignoredMask: s.number().int().nonnegative(),
            ghost: shmemRef.optional(),
          }),
        ),
      })
      .optional(),
  }),
);
