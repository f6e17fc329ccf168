/** The schema of this plugin's per-process record (zod; core validates it when the image is read). */
import { lazySchema } from '@ckpt/core';
import { z } from 'zod';

const int = lazySchema(() => z.number().int());
// Each derived schema once (a zod schema is immutable, and shared where it recurs): building
// them is most of what reading a record costs a command, once per schema.
const uint = lazySchema(() => int.nonnegative());
const positive = lazySchema(() => int.positive());
const signal = lazySchema(() => int.min(0).max(64));
const decimal = lazySchema(() => z.string().regex(/^\d+$/));
const hexCaps = lazySchema(() => z.string().regex(/^[0-9a-f]{1,16}$/));
const cgroupEntry = lazySchema(() => z.string().regex(/^[^:]*:\/.*$/));

export const taskRecord = lazySchema(() =>
  z.strictObject({
    /** /proc/PID/oom_score_adj. */
    oomScoreAdj: int.min(-1000).max(1000),
    /** Audit login uid; null when unset. */
    loginuid: uint.nullable(),
    /** prctl: process-wide flags. */
    childSubreaper: z.boolean(),
    thpDisable: z.boolean(),
    dumpable: int.min(0).max(2),
    /** The process was stopped (SIGSTOP, job control) when it was dumped. */
    stopped: z.boolean(),
    /** Locked memory: areas (VM_LOCKED; onFault: MLOCK_ONFAULT), and mlockall(MCL_FUTURE) in force. */
    locked: z
      .strictObject({
        areas: z.array(z.tuple([uint, positive, z.boolean()])),
        future: z.union([z.literal(false), z.literal('now'), z.literal('onfault')]),
      })
      .default({ areas: [], future: false }),
    /** madvise state that changes behaviour: [start, length, advice] (MADV_* number). */
    advice: z.array(z.tuple([uint, positive, z.union([z.literal(10), z.literal(14), z.literal(15), z.literal(16), z.literal(18)])])).default([]),
    /** POSIX timers (timer_create), by id. */
    timers: z
      .array(
        z.strictObject({
          id: uint,
          clock: int,
          /** SIGEV_SIGNAL (0), SIGEV_NONE (1), SIGEV_THREAD_ID (4). */
          notify: z.union([z.literal(0), z.literal(1), z.literal(2), z.literal(4)]),
          signal: signal,
          /** sigev_value, hex. */
          value: z.string().regex(/^[0-9a-f]+$/),
          /** SIGEV_THREAD_ID: the index of the target thread in `threads`. */
          thread: uint.optional(),
          /** Time left and interval, nanoseconds (decimal strings). */
          left: decimal,
          interval: decimal,
          overrun: uint,
        }),
      )
      .default([]),
    /** membarrier registrations (MEMBARRIER_CMD_GET_REGISTRATIONS: the REGISTER_* commands done). */
    membarrier: uint.default(0),
    /**
     * Seccomp filters of the process's threads (mode 2), each once: the BPF program (base64
     * struct sock_filter[]) and its flags (SECCOMP_FILTER_FLAG_LOG). A filter is one object for
     * every thread whose chain has it at the same place after the same filters (TSYNC, clone).
     */
    seccompFilters: z.array(z.strictObject({ prog: z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/), flags: uint })).default([]),
    /** cgroups, "controllers:path" per hierarchy ("" controllers: v2), as /proc/PID/cgroup lists them. */
    cgroups: z.array(cgroupEntry).default([]),
    threads: z.array(
      z.strictObject({
        /** Seccomp: strict (mode 1), or filters (mode 2: indexes into seccompFilters, oldest first). */
        seccomp: z.union([z.strictObject({ mode: z.literal(1) }), z.strictObject({ mode: z.literal(2), chain: z.array(uint) })]).optional(),
        tid: positive,
        nice: int.min(-20).max(19),
        /** sched_getscheduler: policy, with SCHED_RESET_ON_FORK (0x40000000) when set. */
        policy: uint,
        priority: int.min(0).max(99),
        /** CPU affinity: the mask as /proc shows it (hex words, most significant first). */
        affinity: z.string().regex(/^[0-9a-f,]+$/),
        timerSlackNs: uint,
        pdeathsig: signal,
        noNewPrivs: z.boolean(),
        /** Credentials of this thread (real, effective, saved, fs), supplementary groups. */
        uid: z.array(uint).length(4),
        gid: z.array(uint).length(4),
        groups: z.array(uint),
        /** Capability sets (hex, 64 bits): inheritable, permitted, effective, bounding, ambient. */
        caps: z.strictObject({ inh: hexCaps, prm: hexCaps, eff: hexCaps, bnd: hexCaps, amb: hexCaps }),
        securebits: uint,
        /** This thread's cgroups, when they are not the process's. */
        cgroups: z.array(cgroupEntry).optional(),
      }),
    ),
  }),
);

export type TaskRecord = z.infer<typeof taskRecord>;
