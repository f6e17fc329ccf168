/** The schema of this plugin's per-process record (core's schema builder `s`; core validates it when the image is read). */
import { lazySchema } from '@ckpt/core';
import { s, type Infer } from '@ckpt/core';

const int = lazySchema(() => s.number().int());
// Each derived schema once (a schema is immutable, and shared where it recurs): building
// them is most of what reading a record costs a command, once per schema.
const uint = lazySchema(() => int.nonnegative());
const positive = lazySchema(() => int.positive());
const signal = lazySchema(() => int.min(0).max(64));
const decimal = lazySchema(() => s.string().regex(/^\d+$/));
const hexCaps = lazySchema(() => s.string().regex(/^[0-9a-f]{1,16}$/));
const cgroupEntry = lazySchema(() => s.string().regex(/^[^:]*:\/.*$/));

export const taskRecord = lazySchema(() =>
  s.strictObject({
    /** /proc/PID/oom_score_adj. */
    oomScoreAdj: int.min(-1000).max(1000),
    /** Audit login uid; null when unset. */
    loginuid: uint.nullable(),
    /** prctl: process-wide flags. */
    childSubreaper: s.boolean(),
    thpDisable: s.boolean(),
    /** PR_SET_THP_DISABLE's flags besides 1 (PR_THP_DISABLE_EXCEPT_ADVISED, 2: THP still where madvise asks; Linux 6.18). */
    thpDisableFlags: uint.optional(),
    dumpable: int.min(0).max(2),
    /** The process was stopped (SIGSTOP, job control) when it was dumped. */
    stopped: s.boolean(),
    /** Locked memory: areas (VM_LOCKED; onFault: MLOCK_ONFAULT), and mlockall(MCL_FUTURE) in force. */
    locked: s
      .strictObject({
        areas: s.array(s.tuple([uint, positive, s.boolean()])),
        future: s.union([s.literal(false), s.literal('now'), s.literal('onfault')]),
      })
      .default({ areas: [], future: false }),
    /** madvise state that changes behaviour: [start, length, advice] (MADV_* number). */
    advice: s.array(s.tuple([uint, positive, s.union([s.literal(10), s.literal(14), s.literal(15), s.literal(16), s.literal(18)])])).default([]),
    /** POSIX timers (timer_create), by id. */
    timers: s
      .array(
        s.strictObject({
          id: uint,
          clock: int,
          /** SIGEV_SIGNAL (0), SIGEV_NONE (1), SIGEV_THREAD_ID (4). */
          notify: s.union([s.literal(0), s.literal(1), s.literal(2), s.literal(4)]),
          signal: signal,
          /** sigev_value, hex. */
          value: s.string().regex(/^[0-9a-f]+$/),
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
    seccompFilters: s.array(s.strictObject({ prog: s.string().regex(/^[A-Za-z0-9+/]*={0,2}$/), flags: uint })).default([]),
    /** cgroups, "controllers:path" per hierarchy ("" controllers: v2), as /proc/PID/cgroup lists them. */
    cgroups: s.array(cgroupEntry).default([]),
    threads: s.array(
      s.strictObject({
        /** Seccomp: strict (mode 1), or filters (mode 2: indexes into seccompFilters, oldest first). */
        seccomp: s.union([s.strictObject({ mode: s.literal(1) }), s.strictObject({ mode: s.literal(2), chain: s.array(uint) })]).optional(),
        tid: positive,
        nice: int.min(-20).max(19),
        /** sched_getscheduler: policy, with SCHED_RESET_ON_FORK (0x40000000) when set. */
        policy: uint,
        priority: int.min(0).max(99),
        /** CPU affinity: the mask as /proc shows it (hex words, most significant first). */
        affinity: s.string().regex(/^[0-9a-f,]+$/),
        timerSlackNs: uint,
        pdeathsig: signal,
        noNewPrivs: s.boolean(),
        /** Credentials of this thread (real, effective, saved, fs), supplementary groups. */
        uid: s.array(uint).length(4),
        gid: s.array(uint).length(4),
        groups: s.array(uint),
        /** Capability sets (hex, 64 bits): inheritable, permitted, effective, bounding, ambient. */
        caps: s.strictObject({ inh: hexCaps, prm: hexCaps, eff: hexCaps, bnd: hexCaps, amb: hexCaps }),
        securebits: uint,
        /** This thread's cgroups, when they are not the process's. */
        cgroups: s.array(cgroupEntry).optional(),
      }),
    ),
  }),
);

export type TaskRecord = Infer<typeof taskRecord>;
