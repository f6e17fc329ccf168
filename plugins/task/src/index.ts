/**
 * @ckpt/plugin-task — how each task is scheduled and the process-wide prctl flags, saved and put
 * back; and the task state ckpt cannot restore yet, refused by name rather than dropped.
 *
 * Saved, per thread: credentials (ids, groups, the five capability sets, securebits), nice value, scheduling policy (with SCHED_RESET_ON_FORK) and real-time
 * priority, CPU affinity, timer slack, parent-death signal, no_new_privs. Per process: OOM score
 * adjustment, audit login uid, child-subreaper flag, THP disable, dumpable, and whether it was
 * stopped (SIGSTOP or job control: it is stopped again once restored).
 *
 * membarrier registrations are made again.
 *
 * POSIX timers (timer_create) keep their ids, clocks, notification (signal, thread or none),
 * signal value, time left and interval.
 *
 * madvise state that changes behaviour (MADV_DONTFORK, MADV_WIPEONFORK, MADV_HUGEPAGE,
 * MADV_NOHUGEPAGE) is given again to the same areas.
 *
 * Locked memory: every VM_LOCKED area (on fault or not) is locked again, and mlockall(MCL_FUTURE)
 * is put back when it was in force.
 *
 * Seccomp: strict mode and filters (mode 2) per thread, a filter shared by threads (TSYNC) shared
 * again; installed while the stubs are root, with the filters suspended for ckpt's own syscalls.
 *
 * Refused (credentials stage, before any memory is copied): SCHED_DEADLINE.
 *
 * Restore: scheduling and slack in the credentials stage, before the pids plugin drops root (a
 * negative nice or a real-time policy needs it); the parent-death signal, no_new_privs and
 * dumpable in beforeResume, after it (a credential change clears the first and resets the last);
 * the stop after the processes run.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import {
  CkptError,
  definePlugin,
  isChildSubreaper,
  isChildSubreaperEach,
  procfs,
  seccompSuspendedInStubs,
  Tracee,
  withSignalsHeld,
  type BatchedSyscall,
  type DumpSession,
  type ProcessDump,
  type ProcessRestore,
  type PluginContext,
  type RestoreSession,
  type Vma,
  STAGE,
  lazyOptions,
  sha256Hex,
} from '@ckpt/core';
import { checkSyscall, errnoName, native, SYS } from '@ckpt/native';
import { z } from 'zod';
import { taskRecord, type TaskRecord } from './record.js';
import { joinCgroups, parseCgroups, readCgroups, type CgroupMode } from './cgroups.js';
import { armWithOverrun, WALL_CLOCKS } from './overrun.js';

export const taskOptions = lazyOptions(() => z.strictObject({ cgroups: z.enum(['restore', 'create', 'ignore']).optional() }));
export type TaskOptions = z.infer<typeof taskOptions>;

export const NAME = '@ckpt/plugin-task';

const PR_SET_PDEATHSIG = 1,
  PR_GET_PDEATHSIG = 2,
  PR_GET_DUMPABLE = 3,
  PR_SET_DUMPABLE = 4,
  PR_SET_TIMERSLACK = 29,
  PR_SET_CHILD_SUBREAPER = 36,
  PR_SET_NO_NEW_PRIVS = 38,
  PR_SET_THP_DISABLE = 41,
  PR_GET_THP_DISABLE = 42,
  PR_TIMER_CREATE_RESTORE_IDS = 77,
  PR_SET_KEEPCAPS = 8,
  PR_CAPBSET_DROP = 24,
  PR_GET_SECUREBITS = 27,
  PR_SET_SECUREBITS = 28,
  PR_CAP_AMBIENT = 47,
  PR_CAP_AMBIENT_RAISE = 2,
  PR_CAP_AMBIENT_CLEAR_ALL = 4;
const CAP_LAST = Number(readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8').trim());
const LINUX_CAPABILITY_VERSION_3 = 0x20080522;
const SCHED_DEADLINE = 6;
const SCHED_RESET_ON_FORK = 0x40000000;
const PRIO_PROCESS = 0;
const UNSET_LOGINUID = 4294967295;
const SIGSTOP = 19;

const POLICY: Record<number, string> = { 0: 'SCHED_OTHER', 1: 'SCHED_FIFO', 2: 'SCHED_RR', 3: 'SCHED_BATCH', 5: 'SCHED_IDLE', 6: 'SCHED_DEADLINE' };

/** Field N of a stat file's text (1-based, as proc(5) numbers them). */
function fieldsOf(text: string): (n: number) => number {
  const fields = text
    .slice(text.lastIndexOf(')') + 2)
    .trim()
    .split(' ');
  return (n) => Number(fields[n - 3]);
}

function refuse(pid: number, comm: string, what: string, hint?: string): never {
  throw new CkptError('ERR_CKPT_UNSUPPORTED', `cannot checkpoint pid ${pid} (${comm}): ${what}`, hint ? { hint } : undefined);
}

type ThreadSeccomp = TaskRecord['threads'][number]['seccomp'];

/**
 * Seccomp: strict mode, or each thread's chain of filters read with PTRACE_SECCOMP_GET_FILTER.
 * A filter is saved once for all threads that have it at the same place after the same filters
 * (one kernel object, from TSYNC or inherited by clone): the restore shares it again.
 */
function dumpSeccomp(
  proc: ProcessDump,
  comm: string,
  statuses: Array<Record<string, string>>,
): { filters: TaskRecord['seccompFilters']; threads: ThreadSeccomp[] } {
  const filters: TaskRecord['seccompFilters'] = [];
  const byPlace = new Map<string, number>();
  const threads = proc.threads.map((t, i): ThreadSeccomp => {
    const mode = statuses[i].Seccomp ?? '0';
    if (mode === '0') return undefined;
    if (mode === '1') return { mode: 1 };
    let found: Array<{ prog: Buffer; flags: number }>;
    try {
      found = native.ptrace.seccompFilters(t.pid);
    } catch (e) {
      refuse(
        proc.pid,
        comm,
        `cannot read the seccomp filters of thread ${t.pid} (${(e as Error).message})`,
        'ckpt needs CAP_SYS_ADMIN and must not run under seccomp itself',
      );
    }
    const chain: number[] = [];
    let place = '';
    for (const f of found) {
      place = sha256Hex(place, String(f.flags), f.prog);
      let i = byPlace.get(place);
      if (i === undefined) {
        i = filters.length;
        filters.push({ prog: f.prog.toString('base64'), flags: f.flags });
        byPlace.set(place, i);
      }
      chain.push(i);
    }
    return { mode: 2, chain };
  });
  return { filters, threads };
}

const SECCOMP_SET_MODE_FILTER = 1,
  SECCOMP_FILTER_FLAG_TSYNC = 1,
  PR_SET_SECCOMP = 22,
  SECCOMP_MODE_STRICT = 1;

/**
 * Seccomp back in every thread, while the stubs are still root (a filter needs CAP_SYS_ADMIN or
 * no_new_privs): the filters every thread shares from the leader with TSYNC (one object again),
 * the rest in each thread, then strict mode. The stubs are traced with PTRACE_O_SUSPEND_SECCOMP,
 * so the filters see none of the syscalls that rebuild the process; they apply from the moment it
 * runs on its own.
 */
async function restoreSeccomp(proc: ProcessRestore): Promise<void> {
  const rec = proc.get<TaskRecord>(NAME);
  if (!rec || !rec.threads.some((th) => th.seccomp)) return;
  if (!seccompSuspendedInStubs()) {
    throw new CkptError(
      'ERR_CKPT_RESTORE_FAILED',
      `pid ${proc.pid}: cannot restore its seccomp filters: ckpt cannot suspend seccomp in the processes it rebuilds`,
      {
        hint: 'ckpt must run with CAP_SYS_ADMIN and not under seccomp itself',
      },
    );
  }
  const chains = rec.threads.map((th) => (th.seccomp?.mode === 2 ? th.seccomp.chain : []));
  let shared = 0;
  while (chains.every((c) => c.length > shared && c[shared] === chains[0][shared])) shared++;
  const install = (i: number, filter: number, tsync: boolean) => {
    const t = proc.threads[i];
    const f = rec.seccompFilters[filter];
    const prog = Buffer.from(f.prog, 'base64');
    const fprog = Buffer.alloc(16);
    fprog.writeUInt16LE(prog.length / 8, 0);
    fprog.writeBigUInt64LE(BigInt(t.put(prog, 0)), 8);
    const r = t.syscallRaw(SYS.seccomp, SECCOMP_SET_MODE_FILTER, f.flags | (tsync ? SECCOMP_FILTER_FLAG_TSYNC : 0), t.put(fprog, 40 * 1024));
    if (r !== 0n) {
      const why = r < 0n ? `errno ${-r}` : `thread ${r} could not be synchronized`;
      throw new CkptError(
        'ERR_CKPT_RESTORE_FAILED',
        `pid ${proc.pid} thread ${rec.threads[i].tid}: cannot install seccomp filter ${filter + 1} again (${why})`,
      );
    }
  };
  for (let k = 0; k < shared; k++) install(0, chains[0][k], true);
  rec.threads.forEach((th, i) => {
    for (const filter of chains[i].slice(shared)) install(i, filter, false);
    if (th.seccomp?.mode === 1) proc.threads[i].syscall(SYS.prctl, PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0);
  });
}

/** What only a process's own threads can tell (prctl, membarrier), as dumpAll asked it. */
interface Asked {
  pdeathsigs: number[];
  securebits: bigint[];
  thp: number;
  dumpable: number;
  membarrier: number;
}
const asked = new WeakMap<ProcessDump, Asked>();

/**
 * The /proc files dump() reads of a process and of each of its threads, by path (null where
 * unreadable): every process's read in dumpAll, in one native call (on every CPU), not some ten
 * reads a process one after the other. They do not change while it is frozen.
 */
const procTexts = new WeakMap<ProcessDump, Map<string, string | null>>();

function procPaths({ pid, procPid, threads }: ProcessDump): string[] {
  return [
    `/proc/${pid}/stat`,
    `/proc/${procPid}/loginuid`,
    `/proc/${pid}/oom_score_adj`,
    ...threads.flatMap((t) => THREAD_FILES.map((name) => `/proc/${pid}/task/${t.pid}/${name}`)),
    ...threads.map((t) => `/proc/${t.pid}/timerslack_ns`),
  ];
}
const THREAD_FILES = ['status', 'stat', 'cgroup'] as const;

/**
 * Every thread of every process asked at once (Tracee.syscallsRawEach: each thread's calls in one
 * batch, the tree's batches overlapping): its parent-death signal and securebits, and each
 * leader the process-wide flags. One process after another, six remote syscalls each, a
 * 64-process tree's took 40-60 ms.
 */
async function dumpAll(session: DumpSession): Promise<void> {
  const tasks: Tracee[] = [];
  const batches: BatchedSyscall[][] = [];
  const deathsigs = new Map<Tracee, Buffer>();
  for (const proc of session.processes) {
    for (const t of proc.threads) {
      const b = Buffer.alloc(4);
      deathsigs.set(t, b);
      tasks.push(t);
      batches.push([
        [SYS.prctl, PR_GET_PDEATHSIG, b, 0, 0, 0],
        [SYS.prctl, PR_GET_SECUREBITS, 0, 0, 0, 0],
        ...(t === proc.tracee
          ? ([
              [SYS.prctl, PR_GET_THP_DISABLE, 0, 0, 0, 0],
              [SYS.prctl, PR_GET_DUMPABLE, 0, 0, 0, 0],
              // Refused by kernels before 6.3 (then no registration is known).
              [SYS.membarrier, MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0],
            ] as BatchedSyscall[])
          : []),
      ]);
    }
  }
  const results = new Map(Tracee.syscallsRawEach(tasks, batches).map((r, i) => [tasks[i], r]));
  isChildSubreaperEach(session.processes.map((p) => p.tracee));
  for (const [proc, texts] of procfs.readTextsOf(session.processes, procPaths)) procTexts.set(proc, texts);
  for (const proc of session.processes) {
    const lead = results.get(proc.tracee)!;
    proc.threads.forEach((t) => {
      const r = results.get(t)!;
      checkSyscall('prctl', t.pid, r[0]);
      checkSyscall('prctl', t.pid, r[1]);
    });
    asked.set(proc, {
      pdeathsigs: proc.threads.map((t) => deathsigs.get(t)!.readInt32LE(0)),
      securebits: proc.threads.map((t) => results.get(t)![1]),
      thp: Number(checkSyscall('prctl', proc.pid, lead[2])),
      dumpable: Number(checkSyscall('prctl', proc.pid, lead[3])),
      membarrier: Math.max(0, Number(lead[4])),
    });
  }
}

async function dump(proc: ProcessDump): Promise<void> {
  const { pid, tracee } = proc;
  // Read ahead by dumpAll (procTexts), else here.
  const ahead = procTexts.get(proc);
  const text = (path: string) => procfs.textAhead(ahead, path);
  const comm = procfs.parseStat(text(`/proc/${pid}/stat`)).comm;
  // Each thread's /proc files, every thread's in one read (a status once for all its fields).
  const tids = proc.threads.map((t) => t.pid);
  const taskFiles = (name: (typeof THREAD_FILES)[number]) => {
    const got = tids.map((tid) => ahead?.get(`/proc/${pid}/task/${tid}/${name}`));
    return got.every((t) => typeof t === 'string') ? (got as string[]) : procfs.readFrozenTaskFiles(pid, tids, name);
  };
  const statuses = taskFiles('status').map((t) => procfs.statusFields(t, THREAD_STATUS));
  const stats = taskFiles('stat');
  const ownCgroups = taskFiles('cgroup').map(parseCgroups);
  const slacks = ahead
    ? tids.map((tid) => ahead.get(`/proc/${tid}/timerslack_ns`) ?? null)
    : native.proc.readTexts(tids.map((tid) => `/proc/${tid}/timerslack_ns`));
  const seccomp = dumpSeccomp(proc, comm, statuses);
  const loginuid = Number(text(`/proc/${proc.procPid}/loginuid`).trim());
  // The process's cgroups: its leader's (procPid: a live thread where the leader exited).
  const leader = tids.indexOf(proc.procPid);
  const cgroups = leader >= 0 ? ownCgroups[leader] : readCgroups(pid, proc.procPid);
  const { pdeathsigs, securebits, thp, dumpable, membarrier } = asked.get(proc)!;
  const rec: TaskRecord = {
    oomScoreAdj: Number(text(`/proc/${pid}/oom_score_adj`).trim()),
    loginuid: loginuid === UNSET_LOGINUID ? null : loginuid,
    childSubreaper: isChildSubreaper(tracee),
    // 0, or 1 | flags (PR_THP_DISABLE_EXCEPT_ADVISED).
    thpDisable: thp !== 0,
    thpDisableFlags: thp & ~1 || undefined,
    dumpable,
    stopped: proc.stoppedAtFreeze,
    // Filled in after the other stages (areas): smaps is still being read meanwhile.
    locked: { areas: [], future: false },
    advice: [],
    timers: dumpTimers(proc, comm),
    membarrier,
    seccompFilters: seccomp.filters,
    cgroups,
    // Per thread, what /proc and sched_getscheduler(tid) tell from outside; pdeathsig and
    // securebits only the thread itself can (prctl), asked of every thread at once.
    threads: proc.threads.map((t, i) => {
      const policy = native.proc.schedGetscheduler(t.pid);
      if ((policy & ~SCHED_RESET_ON_FORK) === SCHED_DEADLINE) refuse(pid, comm, `thread ${t.pid} runs under SCHED_DEADLINE, which ckpt cannot restore yet`);
      const pdeathsig = pdeathsigs[i];
      const status = statuses[i];
      const stat = fieldsOf(stats[i]);
      const own = ownCgroups[i];
      return {
        ...(seccomp.threads[i] ? { seccomp: seccomp.threads[i] } : {}),
        ...(own.join('\n') !== cgroups.join('\n') ? { cgroups: own } : {}),
        tid: t.pid,
        nice: stat(19),
        policy,
        priority: stat(40),
        affinity: (status.Cpus_allowed ?? 'ffffffff').toLowerCase(),
        timerSlackNs: Number(slacks[i] ?? readFileSync(`/proc/${t.pid}/timerslack_ns`, 'utf8')),
        pdeathsig,
        noNewPrivs: status.NoNewPrivs === '1',
        ...credentialsOf(status),
        securebits: Number(securebits[i]),
      };
    }),
  };
  proc.put(NAME, rec);
}

/**
 * Locked areas and madvise state, once every stage is done: ProcessDump.vmas waits for smaps,
 * which core reads meanwhile.
 */
async function areas(session: DumpSession): Promise<void> {
  for (const proc of session.processes) {
    const rec = proc.get<TaskRecord>(NAME);
    if (rec) Object.assign(rec, vmaState(proc.vmas(), proc.tracee.scratchRange));
  }
}

/**
 * Locked areas from smaps' VmFlags ("lo": VM_LOCKED, "lf": on fault). Whether mlockall(MCL_FUTURE)
 * is in force shows on a mapping made now: ckpt's own guard mapping, locked by the kernel if so.
 */
function vmaState(vmas: readonly Vma[], guard: { start: number; end: number } | undefined): Pick<TaskRecord, 'locked' | 'advice'> {
  const areas: Array<[number, number, boolean]> = [];
  const advice: TaskRecord['advice'] = [];
  let future: TaskRecord['locked']['future'] = false;
  for (const v of vmas) {
    if (!v.flags) continue;
    const { flags, start, end } = v;
    const isGuard = !!guard && start === guard.start;
    // The kernel's own mappings (device, PFN: [vvar]) carry DONTDUMP and take no advice.
    const special = flags.includes('io') || flags.includes('pf');
    if (!isGuard && !special) for (const [flag, adv] of ADVICE) if (flags.includes(flag)) advice.push([start, end - start, adv]);
    if (!flags.includes('lo')) continue;
    const onFault = flags.includes('lf');
    if (isGuard) future = onFault ? 'onfault' : 'now';
    else areas.push([start, end - start, onFault]);
  }
  return { locked: { areas, future }, advice };
}

/** smaps VmFlags that madvise sets, and the advice that sets them. */
const ADVICE: Array<[string, 10 | 14 | 15 | 16 | 18]> = [
  ['dc', 10], // MADV_DONTFORK
  ['hg', 14], // MADV_HUGEPAGE
  ['nh', 15], // MADV_NOHUGEPAGE
  ['dd', 16], // MADV_DONTDUMP
  ['wf', 18], // MADV_WIPEONFORK
];

function restoreAdvice(proc: ProcessRestore, rec: TaskRecord): void {
  const stub = proc.stub;
  if (!stub) return;
  // One stop for them all (Tracee.syscallsRaw); the first refused is the error.
  const results = stub.syscallsRaw(rec.advice.map(([start, len, adv]) => [SYS.madvise, start, len, adv] as const));
  const k = results.findIndex((r) => r < 0n);
  if (k >= 0) {
    const [start, len, adv] = rec.advice[k];
    throw new CkptError(
      'ERR_CKPT_RESTORE_FAILED',
      `pid ${proc.pid}: cannot give ${len >> 10} KiB at 0x${start.toString(16)} its madvise ${adv} again (errno ${-results[k]})`,
    );
  }
}

const MLOCK_ONFAULT = 1,
  MCL_FUTURE = 2,
  MCL_ONFAULT = 4;

function restoreLocked(proc: ProcessRestore, rec: TaskRecord): void {
  const stub = proc.stub;
  if (!stub) return;
  const results = stub.syscallsRaw(rec.locked.areas.map(([start, len, onFault]) => [SYS.mlock2, start, len, onFault ? MLOCK_ONFAULT : 0] as const));
  const k = results.findIndex((r) => r < 0n);
  if (k >= 0) {
    const [start, len] = rec.locked.areas[k];
    throw new CkptError(
      'ERR_CKPT_RESTORE_FAILED',
      `pid ${proc.pid}: cannot lock ${len >> 10} KiB at 0x${start.toString(16)} again (mlock2: errno ${-results[k]})`,
    );
  }
  if (rec.locked.future) stub.syscall(SYS.mlockall, MCL_FUTURE | (rec.locked.future === 'onfault' ? MCL_ONFAULT : 0));
}

/**
 * /proc/PID/timers writes the notification as "signal/pid", "none/pid", "thread/pid" (SIGEV_SIGNAL,
 * SIGEV_NONE, SIGEV_THREAD: 0, 1, 2) or "signal/tid" (SIGEV_SIGNAL | SIGEV_THREAD_ID: 4).
 */
const NOTIFY: Record<string, 0 | 1 | 2 | 4> = { 'signal/pid': 0, 'none/pid': 1, 'thread/pid': 2, 'signal/tid': 4 };

/**
 * POSIX timers, from /proc/PID/timers (id, signal and value, notification and its target,
 * clock) and timer_gettime / timer_getoverrun in the process (time left, interval, overruns).
 */
function dumpTimers(proc: ProcessDump, comm: string): TaskRecord['timers'] {
  const { pid, tracee } = proc;
  let text = '';
  try {
    text = readFileSync(`/proc/${proc.procPid}/timers`, 'utf8');
  } catch {
    return [];
  }
  const out: TaskRecord['timers'] = [];
  for (const block of text.split(/^(?=ID:)/m).filter((b) => b.startsWith('ID:'))) {
    const f = Object.fromEntries(block.split('\n').map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]));
    const id = Number(f.ID);
    const [signo, value] = (f.signal ?? '0/0').split('/');
    const m = /^(\w+)\/(\w+)\.(\d+)$/.exec(f.notify ?? '');
    const notify = m ? NOTIFY[`${m[1]}/${m[2]}`] : undefined;
    if (notify === undefined) refuse(pid, comm, `POSIX timer ${id} notifies by ${f.notify}, which ckpt cannot restore`);
    let thread: number | undefined;
    if (notify === 4) {
      thread = proc.threads.findIndex((t) => t.pid === Number(m![3]));
      if (thread < 0) refuse(pid, comm, `POSIX timer ${id} signals thread ${m![3]}, which is not one of its threads`);
    }
    const base = tracee.scratch();
    tracee.syscall(SYS.timer_gettime, id, base);
    const its = tracee.read(base, 32);
    const ns = (o: number) => its.readBigInt64LE(o) * 1_000_000_000n + its.readBigInt64LE(o + 8);
    out.push({
      id,
      clock: Number(f.ClockID),
      notify: notify!,
      signal: Number(signo),
      value: BigInt(`0x${value || '0'}`).toString(16),
      ...(thread !== undefined ? { thread } : {}),
      left: ns(16).toString(),
      interval: ns(0).toString(),
      overrun: Number(tracee.syscall(SYS.timer_getoverrun, id)),
    });
    const overrun = out.at(-1)!.overrun;
    if (overrun > 0 && !WALL_CLOCKS.has(Number(f.ClockID))) {
      refuse(
        pid,
        comm,
        `POSIX timer ${id} counts CPU time (clock ${f.ClockID}) and its last signal had ${overrun} overruns, which no restore can count again on that clock`,
      );
    }
  }
  return out;
}

/** Recreates the timers with their ids (PR_TIMER_CREATE_RESTORE_IDS, Linux 6.16), then arms them. */
function restoreTimers(proc: ProcessRestore, rec: TaskRecord): void {
  if (!rec.timers.length || !proc.stub) return;
  const stub = proc.stub;
  const on = stub.syscallRaw(SYS.prctl, PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0);
  if (on < 0n) {
    throw new CkptError(
      'ERR_CKPT_RESTORE_FAILED',
      `pid ${proc.pid}: cannot recreate its POSIX timers with their ids: this kernel lacks PR_TIMER_CREATE_RESTORE_IDS (Linux 6.16)`,
    );
  }
  try {
    for (const t of rec.timers) {
      const ev = Buffer.alloc(64);
      ev.writeBigUInt64LE(BigInt(`0x${t.value}`), 0);
      ev.writeInt32LE(t.signal, 8);
      ev.writeInt32LE(t.notify, 12);
      if (t.notify === 4) ev.writeInt32LE(procfs.nsPid(proc.threads[t.thread ?? 0].pid), 16);
      const id = Buffer.alloc(4);
      id.writeInt32LE(t.id);
      stub.syscall(SYS.timer_create, t.clock, stub.put(ev, 0), stub.put(id, 128));
      // A count of missed periods is set by arming the timer in a way the kernel counts them.
      if (t.overrun > 0) {
        armWithOverrun(proc, t.notify === 4 ? proc.threads[t.thread ?? 0] : stub, t);
        continue;
      }
      const its = Buffer.alloc(32);
      const put = (v: string, o: number) => {
        its.writeBigInt64LE(BigInt(v) / 1_000_000_000n, o);
        its.writeBigInt64LE(BigInt(v) % 1_000_000_000n, o + 8);
      };
      put(t.interval, 0);
      put(t.left, 16);
      stub.syscall(SYS.timer_settime, t.id, 0, stub.put(its, 192), 0);
    }
  } finally {
    stub.syscallRaw(SYS.prctl, PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0);
  }
}

const MEMBARRIER_CMD_GET_REGISTRATIONS = 1 << 9;

/** membarrier: each REGISTER_* command the process had done, done again in it. */
function restoreMembarrier(proc: ProcessRestore, rec: TaskRecord): void {
  for (let bit = 0; bit < 9; bit++) {
    const cmd = 1 << bit;
    if (!(rec.membarrier & cmd)) continue;
    const r = proc.stub!.syscallRaw(SYS.membarrier, cmd, 0, 0);
    if (r < 0n) throw new CkptError('ERR_CKPT_RESTORE_FAILED', `pid ${proc.pid}: cannot register membarrier command ${cmd} again (errno ${-r})`);
  }
}

/** The affinity mask as sched_setaffinity takes it (little-endian words), limited to CPUs online here. */
function affinityMask(hex: string): Buffer {
  const words = hex.split(',').reverse();
  const out = Buffer.alloc(Math.max(8, Math.ceil((words.length * 4) / 8) * 8));
  words.forEach((w, i) => out.writeUInt32LE(Number.parseInt(w, 16) >>> 0, i * 4));
  return out;
}

async function restoreScheduling(proc: ProcessRestore): Promise<void> {
  const rec = proc.get<TaskRecord>(NAME);
  if (!rec || !proc.stub) return;
  const host = proc.stub.pid;
  writeFileSync(`/proc/${host}/oom_score_adj`, String(rec.oomScoreAdj));
  const want = rec.loginuid ?? UNSET_LOGINUID;
  if (Number(readFileSync(`/proc/${host}/loginuid`, 'utf8').trim()) !== want) {
    try {
      writeFileSync(`/proc/${host}/loginuid`, String(want));
    } catch (e) {
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `pid ${proc.pid}: cannot set its audit login uid to ${want}: ${(e as Error).message}`);
    }
  }
  const stub = proc.stub;
  if (rec.childSubreaper) stub.syscall(SYS.prctl, PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  if (rec.thpDisable) {
    const flags = rec.thpDisableFlags ?? 0;
    const r = stub.syscallRaw(SYS.prctl, PR_SET_THP_DISABLE, 1, flags, 0, 0);
    if (r < 0n && flags) {
      throw new CkptError(
        'ERR_CKPT_UNSUPPORTED',
        `pid ${proc.pid}: cannot disable transparent huge pages except where advised (PR_THP_DISABLE_EXCEPT_ADVISED, flags ${flags}): this kernel refuses it (${errnoName(Number(-r))})`,
        { hint: 'restore on Linux 6.18 or later' },
      );
    }
    checkSyscall('prctl', stub.pid, r);
  }
  restoreTimers(proc, rec);
  restoreMembarrier(proc, rec);
  restoreLocked(proc, rec);
  restoreAdvice(proc, rec);
}

/**
 * Every thread's timer slack, affinity, policy and nice value, and PR_SET_KEEPCAPS (its
 * permitted set kept through the pids plugin's drop of root), in one stop per thread, every
 * thread of every process at once (Tracee.syscallsRawEach across the tree): one process after
 * another, that was two stops per process. What a thread has already (from the leader it was
 * cloned from) is not set again.
 */
async function restoreSchedulingAll(session: RestoreSession): Promise<void> {
  const threads: Tracee[] = [];
  const batches: BatchedSyscall[][] = [];
  const messages: Array<Array<(errno: bigint) => string>> = [];
  const who: string[] = [];
  for (const proc of session.processes) {
    const rec = proc.get<TaskRecord>(NAME);
    if (!rec || !proc.stub) continue;
    schedulingOf(proc, rec, (t, calls, failed, tid) => {
      threads.push(t);
      batches.push([...calls, [SYS.prctl, PR_SET_KEEPCAPS, 1, 0, 0, 0]]);
      messages.push([...failed, (e) => `cannot keep its capabilities (PR_SET_KEEPCAPS, errno ${e})`]);
      who.push(`pid ${proc.pid} thread ${tid}`);
    });
  }
  Tracee.syscallsRawEach(threads, batches).forEach((results, i) => {
    const k = results.findIndex((r) => r < 0n);
    if (k >= 0) throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${who[i]}: ${messages[i][k](-results[k])}`);
  });
}

/** The scheduling calls of each thread of proc that exists: give(thread, calls, what each failure says, its tid). */
function schedulingOf(
  proc: ProcessRestore,
  rec: TaskRecord,
  give: (t: Tracee, calls: BatchedSyscall[], failed: Array<(errno: bigint) => string>, tid: number) => void,
): void {
  const host = proc.stub!.pid;
  // What each thread has now, every thread's files in one read.
  const made = proc.threads.slice(0, rec.threads.length);
  const statusOf = taskFiles(host, made, 'status');
  const statOf = taskFiles(host, made, 'stat');
  rec.threads.forEach((th, i) => {
    const t = proc.threads[i];
    if (!t) return;
    const calls: BatchedSyscall[] = [[SYS.prctl, PR_SET_TIMERSLACK, th.timerSlackNs, 0, 0, 0]];
    const failed: Array<(errno: bigint) => string> = [(e) => `cannot set its timer slack ${th.timerSlackNs} ns (errno ${e})`];
    if (/^Cpus_allowed:\s*(\S+)/m.exec(statusOf.get(t) ?? '')?.[1]?.toLowerCase() !== th.affinity) {
      const mask = affinityMask(th.affinity);
      calls.push([SYS.sched_setaffinity, 0, mask.length, mask]);
      failed.push((e) => `cannot set its CPU affinity ${th.affinity} on this machine (errno ${e})`);
    }
    const stat = fieldsOf(statOf.get(t) ?? '');
    if (th.policy !== stat(41) || th.priority !== stat(40)) {
      const param = Buffer.alloc(4);
      param.writeInt32LE(th.priority);
      calls.push([SYS.sched_setscheduler, 0, th.policy, param]);
      const name = POLICY[th.policy & ~SCHED_RESET_ON_FORK] ?? `policy ${th.policy}`;
      failed.push((e) => `cannot set ${name} priority ${th.priority} (errno ${e})`);
    }
    // setpriority(PRIO_PROCESS, 0) is per thread on Linux; negative values need the stub still root.
    if (th.nice !== stat(19)) {
      calls.push([SYS.setpriority, PRIO_PROCESS, 0, th.nice]);
      failed.push((e) => `cannot set its nice value ${th.nice} (errno ${e})`);
    }
    give(t, calls, failed, th.tid);
  });
}

/**
 * After the pids plugin dropped root in the leader (each thread kept its permitted set through
 * it: PR_SET_KEEPCAPS, restoreSchedulingAll): each thread gets its own ids (threads may differ from the leader: setresuid is per
 * thread in the kernel), then its capability sets, bounding set, securebits and ambient set.
 * The stub threads were root with every capability; what they had at the dump is all they keep.
 */
/** /proc/HOST/task/TID/NAME of each of the threads that exist (of a restore), read in one call: by thread. */
function taskFiles(host: number, threads: ReadonlyArray<Tracee | undefined>, name: string): Map<Tracee, string> {
  const made = threads.filter((t): t is Tracee => t !== undefined);
  const texts = procfs.readFrozenTaskFiles(
    host,
    made.map((t) => t.pid),
    name,
  );
  return new Map(made.map((t, k) => [t, texts[k]]));
}

/** The status lines credentialsOf reads. */
const CREDENTIALS = ['Uid', 'Gid', 'Groups', 'CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb'] as const;
/** The status lines a dump reads of each thread: these, its seccomp mode, affinity and no_new_privs. */
const THREAD_STATUS = [...CREDENTIALS, 'Seccomp', 'Cpus_allowed', 'NoNewPrivs'] as const;

/** A thread's ids (real, effective, saved, fs), groups and capability sets, from its /proc status. */
function credentialsOf(status: Record<string, string>): Pick<TaskRecord['threads'][number], 'uid' | 'gid' | 'groups' | 'caps'> {
  const ids = (v: string | undefined) => (v ?? '').split(/\s+/).filter(Boolean).map(Number);
  const cap = (v: string | undefined) => BigInt(`0x${v ?? '0'}`).toString(16);
  return {
    uid: ids(status.Uid),
    gid: ids(status.Gid),
    groups: ids(status.Groups),
    caps: { inh: cap(status.CapInh), prm: cap(status.CapPrm), eff: cap(status.CapEff), bnd: cap(status.CapBnd), amb: cap(status.CapAmb) },
  };
}

async function restoreCredentials(proc: ProcessRestore): Promise<void> {
  const rec = proc.get<TaskRecord>(NAME);
  if (!rec) return;
  // A thread that has its ids and capabilities already (made by a restorer with the same
  // credentials) only gets its securebits (the restore holds SECBIT_KEEP_CAPS meanwhile), every
  // such thread's at once; their statuses read in one call.
  const stub = proc.stub;
  const statuses = stub ? taskFiles(stub.pid, proc.threads.slice(0, rec.threads.length), 'status') : new Map<Tracee, string>();
  const holding = rec.threads.map((th, i) => {
    const text = proc.threads[i] && statuses.get(proc.threads[i]);
    return (
      !!text &&
      JSON.stringify(credentialsOf(procfs.statusFields(text, CREDENTIALS))) === JSON.stringify({ uid: th.uid, gid: th.gid, groups: th.groups, caps: th.caps })
    );
  });
  const quick = rec.threads.flatMap((th, i) => (holding[i] ? [{ t: proc.threads[i], securebits: th.securebits }] : []));
  Tracee.syscallsEach(
    quick.map((q) => q.t),
    quick.map((q): BatchedSyscall[] => [[SYS.prctl, PR_SET_SECUREBITS, q.securebits, 0, 0, 0]]),
  );
  rec.threads.forEach((th, i) => {
    const t = proc.threads[i];
    if (!t || holding[i]) return;
    const caps = (v: string) => BigInt(`0x${v}`);
    const capData = (eff: bigint, prm: bigint, inh: bigint) => {
      const b = Buffer.alloc(24);
      [eff, prm, inh].forEach((v, k) => {
        b.writeUInt32LE(Number(v & 0xffffffffn), k * 4);
        b.writeUInt32LE(Number(v >> 32n), 12 + k * 4);
      });
      return b;
    };
    const header = Buffer.alloc(8);
    header.writeUInt32LE(LINUX_CAPABILITY_VERSION_3, 0);
    const hdr = t.put(header, 256);
    if (t !== proc.stub) {
      // The leader got its ids from the pids plugin; the other threads take theirs here.
      const list = Buffer.alloc(Math.max(4, th.groups.length * 4));
      th.groups.forEach((g, k) => list.writeUInt32LE(g, k * 4));
      t.syscall(SYS.setgroups, th.groups.length, t.put(list, 320));
      t.syscall(SYS.setresgid, th.gid[0], th.gid[1], th.gid[2]);
      t.syscall(SYS.setresuid, th.uid[0], th.uid[1], th.uid[2]);
    }
    t.syscallRaw(SYS.setfsgid, th.gid[3]);
    t.syscallRaw(SYS.setfsuid, th.uid[3]);
    // Effective = permitted again (dropping root cleared it), to drop bounding and set securebits.
    t.syscall(SYS.capget, hdr, t.put(Buffer.alloc(24), 288));
    const now = t.read(t.scratch() + 288, 24);
    const prm = BigInt(now.readUInt32LE(4)) | (BigInt(now.readUInt32LE(16)) << 32n);
    header.writeUInt32LE(LINUX_CAPABILITY_VERSION_3, 0);
    t.put(header, 256);
    t.syscall(SYS.capset, hdr, t.put(capData(prm, prm, 0n), 288));
    const bnd = caps(th.caps.bnd);
    for (let c = 0; c <= CAP_LAST; c++) if (!(bnd & (1n << BigInt(c)))) t.syscall(SYS.prctl, PR_CAPBSET_DROP, c, 0, 0, 0);
    t.syscall(SYS.prctl, PR_SET_SECUREBITS, th.securebits, 0, 0, 0);
    t.syscall(SYS.capset, hdr, t.put(capData(caps(th.caps.eff), caps(th.caps.prm), caps(th.caps.inh)), 288));
    t.syscall(SYS.prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    const amb = caps(th.caps.amb);
    for (let c = 0; c <= CAP_LAST; c++) if (amb & (1n << BigInt(c))) t.syscall(SYS.prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0);
  });
}

/** After the credentials are dropped: what a credential change clears or resets. */
async function restoreLate(session: RestoreSession): Promise<void> {
  for (const proc of session.processes) {
    const rec = proc.get<TaskRecord>(NAME);
    const stub = proc.stub;
    if (!rec || !stub) continue;
    rec.threads.forEach((th, i) => {
      const t = proc.threads[i];
      if (!t || (!th.pdeathsig && !th.noNewPrivs)) return;
      withSignalsHeld(t.pid, () => {
        if (th.pdeathsig) t.syscall(SYS.prctl, PR_SET_PDEATHSIG, th.pdeathsig, 0, 0, 0);
        if (th.noNewPrivs) t.syscall(SYS.prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
      });
    });
    // 2 (suid_dumpable) is set by the kernel only, on a credential change: the drop did that.
    if (rec.dumpable !== 2) withSignalsHeld(stub.pid, () => stub.syscall(SYS.prctl, PR_SET_DUMPABLE, rec.dumpable, 0, 0, 0));
  }
}

/** Stopped processes stop again once they run. */
async function stopAgain(session: RestoreSession): Promise<void> {
  for (const proc of session.processes) {
    const rec = proc.get<TaskRecord>(NAME);
    if (rec?.stopped && proc.stub) process.kill(proc.stub.pid, SIGSTOP);
  }
}

export const taskPlugin = definePlugin(() => ({
  name: NAME,
  version: '0.1.0',
  description:
    'credentials and capabilities per thread, scheduling (nice, policy, priority, affinity, timer slack), POSIX timers, seccomp (strict and filters), locked memory and madvise state, OOM score, login uid, prctl flags, stopped state; refuses SCHED_DEADLINE',
  record: { version: 4, schema: taskRecord },
  options: taskOptions,
  flags: [
    {
      command: 'restore' as const,
      flags: '--cgroups <mode>',
      description:
        'cgroups the processes were in: restore (join them; a missing one stops the restore), create (make missing ones), ignore (stay in those of ckpt restore)',
      option: 'cgroups',
    },
  ],
  show: {
    process: (r: unknown) => {
      const rec = r as TaskRecord;
      const t = rec.threads[0];
      const flags = [
        rec.stopped && 'stopped',
        rec.childSubreaper && 'child subreaper',
        rec.thpDisable && (rec.thpDisableFlags ? 'THP disabled except where advised' : 'THP disabled'),
        t?.noNewPrivs && 'no_new_privs',
      ].filter(Boolean);
      return [
        `task: nice ${t?.nice ?? 0}, ${POLICY[(t?.policy ?? 0) & ~SCHED_RESET_ON_FORK] ?? 'policy ?'}${t?.priority ? ` ${t.priority}` : ''}, affinity ${t?.affinity}, oom_score_adj ${rec.oomScoreAdj}${flags.length ? `, ${flags.join(', ')}` : ''}`,
        ...(rec.cgroups?.length ? [`cgroups: ${rec.cgroups.map((c) => (c.startsWith(':') ? `v2${c}` : c)).join(', ')}`] : []),
      ];
    },
  },
  apply(hooks, ctx: PluginContext<TaskOptions>) {
    const mode = (s: RestoreSession): CgroupMode => ctx.options(s)?.cgroups ?? 'restore';
    // Into its cgroups as soon as it exists (pids creates it), before its memory is rebuilt.
    hooks.pids.restore.tapPromise({ name: `${NAME}:cgroups`, stage: STAGE.LATE }, async (proc) => {
      const rec = proc.get<TaskRecord>(NAME);
      if (rec && proc.stub) joinCgroups(proc.stub.pid, rec.cgroups, mode(proc.session), `pid ${proc.pid}`);
    });
    hooks.threads.restore.tapPromise({ name: `${NAME}:thread-cgroups`, stage: STAGE.LATE }, async (proc) => {
      const rec = proc.get<TaskRecord>(NAME);
      rec?.threads.forEach((t, i) => {
        const task = proc.threads[i];
        if (t.cgroups && task) joinCgroups(task.pid, t.cgroups, mode(proc.session), `thread ${t.tid} of pid ${proc.pid}`, true);
      });
    });
    hooks.credentials.dumpAll.tapPromise(NAME, dumpAll);
    hooks.credentials.dump.tapPromise(NAME, dump);
    hooks.session.afterDump.tapPromise(`${NAME}:areas`, areas);
    hooks.credentials.restoreAll.tapPromise(NAME, restoreSchedulingAll);
    hooks.credentials.restore.tapPromise({ name: NAME, before: '@ckpt/plugin-pids' }, restoreScheduling);
    hooks.credentials.restore.tapPromise({ name: `${NAME}:seccomp`, before: '@ckpt/plugin-pids' }, restoreSeccomp);
    hooks.credentials.restore.tapPromise(`${NAME}:credentials`, restoreCredentials);
    hooks.session.beforeResume.tapPromise(NAME, restoreLate);
    hooks.session.afterResume.tapPromise(NAME, stopAgain);
  },
}));

export default taskPlugin;
