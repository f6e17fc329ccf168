/**
 * A task under our ptrace control, and the remote-syscall machinery on top of it:
 * a `syscall` instruction to borrow, a scratch mapping for pointer arguments, and restart-safe
 * resumption. Used both for dump targets (frozen user processes) and restore stubs.
 */
import { closeSync } from 'node:fs';
import {
  native,
  checkSyscall,
  Regs,
  SYS,
  NativeError,
  PAGE_SIZE,
  ERESTARTSYS,
  ERESTARTNOINTR,
  ERESTARTNOHAND,
  ERESTART_RESTARTBLOCK,
  CLONE_THREAD_FLAGS,
  SIGCHLD,
  cloneArgs,
  setTidArray,
  ALL_SIGNALS,
  CLONE_VM,
  PTRACE_O_EXITKILL,
  PTRACE_O_TRACECLONE,
} from '@ckpt/native';
import { childrenOf, hostTidOf, listThreads, nsPid, readMaps, type Vma } from './proc.js';
import { logger } from './log.js';
import {
  dropOrphanedNotes,
  findGadgets,
  frameMaskOffset,
  noteGuard,
  orphanedGuardNotes,
  frameSize,
  GUARD_BATCH,
  GUARD_CODE,
  GUARD_GADGET_AT,
  GUARD_REMOVE_BATCH,
  GUARD_REMOVE_CODE,
  GUARD_SIZE_AT,
  removerTail,
  GUARD_CODE_BYTES,
  GUARD_HEADER,
  GUARD_MAGIC,
  GUARD_TAIL,
  returnFrame,
  SNAPSHOT_CODE,
  SNAPSHOT_CODE_BYTES,
  type Gadgets,
} from './guard.js';

const log = logger('tracee');

export { PROT_READ, PROT_WRITE, PROT_EXEC, MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS, MAP_GROWSDOWN, MAP_FIXED_NOREPLACE } from '@ckpt/native';
import { PROT_READ, PROT_WRITE, PROT_EXEC, MAP_PRIVATE, MAP_ANONYMOUS, MAP_FIXED_NOREPLACE } from '@ckpt/native';
export const TASK_SIZE = 0x7ffffffff000;

export const SCRATCH_SIZE = 64 * 1024;

/**
 * Runs syscalls in a row in one stop (Tracee.syscalls): rdi = entries of 64 bytes (nr, six
 * arguments, the result written back), rsi = how many; every entry runs, whatever the ones before
 * returned, and it stops at its int3 (the last byte). Written into the restore trampoline
 * (adoptBatch); it never runs in a process being dumped, whose threads must be able to go on
 * without ckpt at any instant (guard.ts), which an int3 would not let them. Assembled from:
 *     mov r12, rdi; mov r13, rsi
 *   1: test r13, r13; jz 9f
 *     mov rax, [r12]; mov rdi, [r12+8]; mov rsi, [r12+16]; mov rdx, [r12+24]
 *     mov r10, [r12+32]; mov r8, [r12+40]; mov r9, [r12+48]
 *     syscall; mov [r12+56], rax
 *     add r12, 64; dec r13; jmp 1b
 *   9: xor eax, eax; int3
 */
export const BATCH_CODE = Buffer.from([
  0x49, 0x89, 0xfc, 0x49, 0x89, 0xf5, 0x4d, 0x85, 0xed, 0x74, 0x32, 0x49, 0x8b, 0x04, 0x24, 0x49, 0x8b, 0x7c, 0x24, 0x08, 0x49, 0x8b, 0x74, 0x24, 0x10, 0x49,
  0x8b, 0x54, 0x24, 0x18, 0x4d, 0x8b, 0x54, 0x24, 0x20, 0x4d, 0x8b, 0x44, 0x24, 0x28, 0x4d, 0x8b, 0x4c, 0x24, 0x30, 0x0f, 0x05, 0x49, 0x89, 0x44, 0x24, 0x38,
  0x49, 0x83, 0xc4, 0x40, 0x49, 0xff, 0xcd, 0xeb, 0xc9, 0x31, 0xc0, 0xcc,
]);
/**
 * BATCH_CODE's loop without its end (`xor eax, eax; int3`): for a process being dumped it sits in
 * the guard mapping (GUARD_BATCH) followed by the guard's tail (rt_sigreturn on the thread's
 * frame, rbx), and at GUARD_REMOVE_BATCH followed by the remover's. ckpt runs it from syscall
 * stop to syscall stop (native remoteLoopEach): two stops a syscall with nothing to do between
 * them, where a syscall of its own costs two stops and four register transfers.
 */
const BATCH_LOOP = BATCH_CODE.subarray(0, BATCH_CODE.length - 3);

/** A syscall of a batch: number, then arguments; a Buffer is copied into the task and its address passed. */
export type BatchedSyscall = readonly [nr: number, ...args: Array<number | bigint | Buffer>];
/**
 * Syscalls that leave a process's layout (its /proc/PID/maps) as it is, whatever their arguments
 * but those changesLayout looks at: what the stages ask and set. Any other (mmap, munmap, mprotect,
 * mremap, madvise, mlock, shmat, execve, ...) or code of ckpt's own makes Tracee.maps read it again.
 */
const LAYOUT_NEUTRAL: ReadonlySet<number> = new Set(
  (
    [
      'read',
      'write',
      'pread64',
      'open',
      'openat',
      'close',
      'close_range',
      'lseek',
      'ioctl',
      'fcntl',
      'dup2',
      'dup3',
      'getpid',
      'gettid',
      'getpgid',
      'getsid',
      'setsid',
      'setpgid',
      'umask',
      'chdir',
      'fchdir',
      'fchmod',
      'rt_sigaction',
      'rt_sigprocmask',
      'sigaltstack',
      'getitimer',
      'setitimer',
      'timer_create',
      'timer_gettime',
      'timer_settime',
      'timer_getoverrun',
      'clock_gettime',
      'kill',
      'rt_sigqueueinfo',
      'rt_tgsigqueueinfo',
      'sched_getparam',
      'sched_getscheduler',
      'sched_setscheduler',
      'sched_setaffinity',
      'setpriority',
      'personality',
      'prlimit64',
      'capget',
      'capset',
      'setresuid',
      'setresgid',
      'setgroups',
      'setfsuid',
      'setfsgid',
      'membarrier',
      'set_tid_address',
      'set_robust_list',
      'rseq',
      'pidfd_open',
      'pidfd_getfd',
      'userfaultfd',
      'epoll_ctl',
      'socket',
      'socketpair',
      'bind',
      'connect',
      'listen',
      'getsockname',
      'getpeername',
      'getsockopt',
      'setsockopt',
      'recvmsg',
      'brk',
      'prctl',
      'arch_prctl',
    ] as const
  ).map((n) => SYS[n]),
);
/** prctl options that change the layout: PR_SET_MM (the mm's fields), PR_SET_VMA (an area's name). */
const PR_SET_MM = 35;
const PR_SET_VMA = 0x53564d41;

/**
 * The areas less [start, end): an area across it keeps its parts outside (an anonymous area's
 * offset, 0 in /proc/PID/maps, stays 0; a file's moves with its start).
 */
function cutRange(vmas: readonly Vma[], start: number, end: number): Vma[] {
  const out: Vma[] = [];
  for (const v of vmas) {
    if (v.end <= start || v.start >= end) out.push(v);
    else {
      if (v.start < start) out.push({ ...v, end: start });
      if (v.end > end) out.push({ ...v, start: end, offset: v.inode ? v.offset + (end - v.start) : v.offset });
    }
  }
  return out;
}

/** Whether a syscall may change the layout of the process it runs in (see LAYOUT_NEUTRAL). */
function changesLayout([nr, a0]: readonly [number, ...unknown[]]): boolean {
  if (!LAYOUT_NEUTRAL.has(nr)) return true;
  const arg = typeof a0 === 'bigint' ? Number(a0) : typeof a0 === 'number' ? a0 : undefined;
  // brk(0) asks. arch_prctl's 0x1000-0x1fff are fs/gs bases, CPUID and xstate; the others map (the
  // vdso: ARCH_MAP_VDSO_*; a shadow stack: ARCH_SHSTK_*).
  if (nr === SYS.brk) return arg !== 0;
  if (nr === SYS.prctl) return arg === PR_SET_MM || arg === PR_SET_VMA;
  if (nr === SYS.arch_prctl) return arg === undefined || arg < 0x1000 || arg > 0x1fff;
  return false;
}

/** The batch's area in the scratch page: entries, then the Buffers they point to. */
const BATCH_AREA = { offset: SCRATCH_SIZE - 9 * 1024, size: 8 * 1024 };

/** wait4's __WALL (children of any exit signal, or none) and WNOHANG. */
const WALL = 0x40000000;
const WNOHANG = 1;
const O_CLOEXEC_ = 0o2000000;
const O_NONBLOCK_ = 0o4000;
/** userfaultfd(2) flag: only faults from user mode (allowed without the sysctl or CAP_SYS_PTRACE). */
const UFFD_USER_MODE_ONLY = 1;

/**
 * The host tid of the task `id` that parent just cloned (its id in parent's pid namespace, as
 * clone returns it): a child, or with `thread` one of parent's threads.
 */
function hostTaskOf(parent: number, id: number, syscall: string, thread = false): number {
  if (nsPid(parent) === parent) return id;
  const candidates = thread ? listThreads(parent) : childrenOf(parent);
  const host = hostTidOf(candidates, id, thread ? () => parent : undefined);
  if (host === undefined) throw new NativeError({ message: `cannot find the new task ${id} of ${parent}`, code: 'ESRCH', syscall, pid: parent });
  return host;
}

/** SIGKILL to a task we trace, and its exit consumed as its tracer (its parent reaps it then). */
export function killTraced(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  try {
    for (let i = 0; i < 100; i++) {
      const st = native.ptrace.waitStop(pid, 5000);
      if (st.kind === 'exited' || st.kind === 'killed') return;
    }
  } catch (e) {
    log('pid %d: exit not seen after SIGKILL: %s', pid, (e as Error).message);
  }
}

/** Finds a `syscall` (0f 05) instruction in an executable mapping: the vdso first. */
export function findSyscallInsn(pid: number, vmas: Vma[] = readMaps(pid)): number {
  const exec = vmas.filter((v) => v.perms[2] === 'x');
  exec.sort((a, b) => (a.name === '[vdso]' ? -1 : 0) - (b.name === '[vdso]' ? -1 : 0));
  for (const v of exec) {
    const len = Math.min(v.end - v.start, 1 << 20);
    let buf: Buffer;
    try {
      buf = native.mem.readMem(pid, v.start, len);
    } catch {
      continue;
    }
    for (let i = buf.indexOf(0x0f); i >= 0 && i < buf.length - 1; i = buf.indexOf(0x0f, i + 1)) {
      if (buf[i + 1] === 0x05) return v.start + i;
    }
  }
  throw new NativeError({ message: `no syscall instruction found in the executable mappings of ${pid}`, code: 'ENOEXEC', syscall: 'findSyscallInsn', pid });
}

/** Picks a page-aligned range of `size` bytes free in every given layout, with a free page on both sides. */
export function findFreeRange(layouts: Array<Array<{ start: number; end: number }>>, size: number, from = 0x10000): number {
  const all = layouts.flat().sort((a, b) => a.start - b.start);
  let candidate = from;
  for (;;) {
    const lo = candidate - PAGE_SIZE,
      hi = candidate + size + PAGE_SIZE;
    const clash = all.find((v) => v.start < hi && v.end > lo);
    if (!clash) return candidate;
    candidate = clash.end + PAGE_SIZE;
    if (candidate + size > TASK_SIZE) throw new Error('no free address range');
  }
}

/**
 * Registers of a task frozen inside a syscall, rewritten so that on resume it re-enters the
 * syscall instead of returning -ERESTART* (the kernel would only do this itself when resuming
 * from the signal path, which injected syscalls leave).
 */
export function restartAdjusted(raw: Buffer): Buffer {
  const r = new Regs(Buffer.from(raw));
  const orig = r.signed('orig_rax');
  const ret = -r.signed('rax');
  if (orig >= 0n) {
    if (ret === BigInt(ERESTARTSYS) || ret === BigInt(ERESTARTNOINTR) || ret === BigInt(ERESTARTNOHAND)) {
      r.set('rax', orig)
        .set('rip', r.get('rip') - 2n)
        .set('orig_rax', -1n);
    } else if (ret === BigInt(ERESTART_RESTARTBLOCK)) {
      r.set('rax', SYS.restart_syscall)
        .set('rip', r.get('rip') - 2n)
        .set('orig_rax', -1n);
    }
  }
  return r.buf;
}

/** What the threads of one process share for injection: the instruction and the scratch page. */
export interface AddressSpace {
  insn?: number;
  scratch?: number;
  /** An int3 follows the syscall instruction: one ptrace stop per injected syscall, not two. */
  int3?: boolean;
  /**
   * Dump side: every remote syscall runs parked on a return frame (guard.ts), so a ckpt killed
   * at any instant leaves the thread to return to its own context. The scratch mapping is then
   * the guard mapping: header page (magic, code), SCRATCH_SIZE of data, one frame slot per thread.
   */
  guarded?: boolean;
  members?: Tracee[];
  guard?: { start: number; size: number; slots: Map<number, number>; next: number };
  /** Restore side: where BATCH_CODE is (in the trampoline), for Tracee.syscalls. */
  batchCode?: number;
  /** The stack path's code (undefined: not looked for yet; null: the process has none). */
  gadgets?: Gadgets | null;
  /** The process's [stack] mapping, and where its guard goes (the same place at every stage). */
  mainStack?: Vma | null;
  guardAt?: { addr: number; size: number };
  /**
   * The thread whose way back also unmaps the guard (parked 'remover': its frame on its stack),
   * when it is parked so and alone in the guard: a ckpt that dies then leaves no guard behind.
   */
  armed?: Tracee;
  /** The thread that can be the remover (its frame on the main stack): undefined until looked for, null if none. */
  remover?: Tracee | null;
  /** Dump side: the layout as last read (Tracee.maps), until ckpt runs code in the process. */
  maps?: Vma[];
}

/** One traced task (a thread; the leader's tid is the pid). */
export class Tracee {
  /** Registers at the moment of the freeze (raw, as the kernel reported them). */
  readonly frozenRegs: Buffer;
  readonly space: AddressSpace;
  private injected = 0;
  /** Dump side: the registers the thread resumes with (an interrupted syscall restarts). */
  readonly resumeRegs: Buffer;
  /** Dump side: the thread's own signal mask (what it gets back; see parking). */
  sigmask = 0n;
  /** Where the thread's return frame is while it is parked (its ucontext address). */
  private parkedAt?: { where: 'stack' | 'guard' | 'remover'; uc: number };
  private maskBlocked = false;
  /**
   * The return frames written for this thread, by ucontext address, with the mask each holds:
   * its registers and state do not change while it is frozen, so a frame is written again only
   * when its mask is stale or its place was unmapped (the guard's slots: forgotten with the guard).
   */
  private frames = new Map<number, bigint>();
  /** The frame on the stack whose return word is written below it (stackFrame). */
  private stackReturn?: number;
  /** The thread has run under ckpt once: its mask is its own (no ppoll swap pending any more). */
  private hasRun = false;

  constructor(
    readonly pid: number,
    opts: { space?: AddressSpace } = {},
  ) {
    this.frozenRegs = native.ptrace.getRegs(pid);
    this.space = opts.space ?? {};
    this.resumeRegs = restartAdjusted(this.frozenRegs);
    if (this.space.guarded) {
      this.sigmask = native.ptrace.getSigmask(pid);
      (this.space.members ??= []).push(this);
    }
  }

  /** Another thread of the same process, sharing the injection instruction and scratch page. */
  sibling(tid: number): Tracee {
    return new Tracee(tid, { space: this.space });
  }

  /** The task's pid is the same here as in its own pid namespace (read once: it never moves). */
  get sharesOurPidNs(): boolean {
    this.inOurPidNs ??= nsPid(this.pid) === this.pid;
    return this.inOurPidNs;
  }
  private inOurPidNs?: boolean;

  /** Address of the `syscall` instruction used for injection. */
  get syscallInsn(): number {
    if (this.space.insn === undefined) this.space.insn = findSyscallInsn(this.pid);
    return this.space.insn;
  }
  set syscallInsn(addr: number) {
    this.space.insn = addr;
  }

  private get scratchAddr(): number | undefined {
    return this.space.scratch;
  }
  private set scratchAddr(v: number | undefined) {
    this.space.scratch = v;
  }

  /** Runs one syscall in the task; throws NativeError on -errno. */
  syscall(nr: number, ...args: Array<number | bigint>): bigint {
    return checkSyscall(nameOf(nr), this.pid, this.syscallRaw(nr, ...args));
  }

  /** Runs one syscall and returns the raw result (negative errno included). */
  syscallRaw(nr: number, ...args: Array<number | bigint>): bigint {
    this.running([[nr, ...args]]);
    if (!this.space.guarded) return native.ptrace.remoteSyscall(this.pid, this.syscallInsn, nr, args, this.space.int3);
    this.scratch();
    const g = this.space.guard;
    const slot = g && this.parkInGuard(g);
    if (!g || slot === undefined) {
      log('pid %d: %s unguarded (no return frame)', this.pid, nameOf(nr));
      return native.ptrace.remoteSyscall(this.pid, this.syscallInsn, nr, args, false);
    }
    // Left where the syscall leaves it: at the guard's tail, its way back on its own.
    const ret = native.ptrace.remoteSyscall(this.pid, this.guardCode(g, GUARD_CODE), nr, args, false, undefined, true);
    this.hasRun = true;
    this.blockSignals();
    return ret;
  }

  /**
   * Runs the syscalls in order in this task (syscallsRaw); throws the NativeError of the first that
   * failed, as syscall() would have.
   */
  syscalls(calls: readonly BatchedSyscall[]): bigint[] {
    const results = this.syscallsRaw(calls);
    results.forEach((r, k) => checkSyscall(nameOf(calls[k][0]), this.pid, r));
    return results;
  }

  /**
   * Runs the syscalls in order in this task and returns their raw results (a negative errno
   * included): in one ptrace stop per batch where the trampoline holds BATCH_CODE (restore); on
   * the dump side in the guard's batch loop (BATCH_LOOP: two stops a syscall and nothing
   * between them; a ckpt that dies meanwhile leaves the thread to finish the batch and return to
   * its own context, so give the dump side only calls that may run to the end unwatched: queries);
   * else one by one. Each runs whatever the ones before it returned: give only calls that may. A Buffer
   * argument is copied into the task (scratch, above what put() offsets reach), its address
   * passed, and what the task has there after the batch is copied back into it (for syscalls that
   * write their result through a pointer).
   */
  syscallsRaw(calls: readonly BatchedSyscall[]): bigint[] {
    const out: bigint[] = [];
    const { offset, size } = BATCH_AREA;
    for (let i = 0; i < calls.length; ) {
      // As many as fit: 64 bytes of entry each and their Buffers, 16-byte aligned.
      const chunk: BatchedSyscall[] = [];
      let bytes = 0;
      for (; i < calls.length; i++) {
        const need = 64 + bufferBytes(calls[i]);
        if (need > size) throw new RangeError(`remote ${nameOf(calls[i][0])}: ${need} bytes of arguments, more than a batch holds`);
        if (bytes + need > size) break;
        chunk.push(calls[i]);
        bytes += need;
      }
      const base = this.scratch() + offset;
      const area = Buffer.alloc(bytes);
      const args = layBatch(chunk, area, 0, base);
      const code = this.space.batchCode;
      const g = code === undefined && this.space.guarded ? this.space.guard : undefined;
      if (g && this.parkInGuard(g) !== undefined) {
        // Dump side: the guard's batch loop, from syscall stop to syscall stop.
        native.mem.writeMem(this.pid, base, area);
        this.running(chunk);
        const [last] = native.ptrace.remoteLoopEach([this.pid], this.guardCode(g, GUARD_BATCH), [[base, chunk.length]], [chunk.length]);
        this.hasRun = true;
        this.blockSignals();
        const done = native.mem.readMem(this.pid, base, bytes);
        // The loop stores each result after its syscall: the last one's is still in rax.
        done.writeBigInt64LE(last, 64 * (chunk.length - 1) + 56);
        chunk.forEach((_c, k) => out.push(done.readBigInt64LE(64 * k + 56)));
        copyBack(chunk, done, 0);
      } else if (code !== undefined) {
        native.mem.writeMem(this.pid, base, area);
        this.running(chunk);
        native.ptrace.remoteRun(this.pid, code, code + BATCH_CODE.length, [base, chunk.length]);
        const done = native.mem.readMem(this.pid, base, bytes);
        chunk.forEach((_c, k) => out.push(done.readBigInt64LE(64 * k + 56)));
        copyBack(chunk, done, 0);
      } else {
        const head = 64 * chunk.length;
        if (bytes > head) native.mem.writeMem(this.pid, base + head, area.subarray(head));
        chunk.forEach((c, k) => out.push(this.syscallRaw(c[0], ...args[k])));
        if (bytes > head) copyBack(chunk, Buffer.concat([Buffer.alloc(head), native.mem.readMem(this.pid, base + head, bytes - head)]), 0);
      }
    }
    return out;
  }

  /**
   * Runs `run` on the indices of `tasks`, as many at once as may be. On the dump side, a process
   * asked only in its remover (parkBetweenStages: every single-threaded one) stays so throughout,
   * and a ckpt that dies leaves it no guard: those go together. Any other (several of its threads
   * in the guard at once, or none that can be the remover) goes alone, parked again as it was
   * before the next is taken: so a ckpt killed at any instant leaves at most one guard mapping, as
   * a stage does (the next dump removes it).
   */
  private static byProcess<T>(tasks: readonly Tracee[], run: (which: number[]) => T[]): T[] {
    const out = new Array<T>(tasks.length);
    const asked = new Map<AddressSpace, Tracee[]>();
    for (const t of tasks) if (t.space.guarded) asked.set(t.space, [...(asked.get(t.space) ?? []), t]);
    const together = (t: Tracee) => {
      const mine = asked.get(t.space)!;
      return mine.length === 1 && t.removerOf() === t;
    };
    const groups = new Map<AddressSpace | undefined, number[]>();
    tasks.forEach((t, i) => {
      const key = !t.space.guarded || together(t) ? undefined : t.space;
      const g = groups.get(key);
      if (g) g.push(i);
      else groups.set(key, [i]);
    });
    for (const [space, which] of groups) {
      const armed = !!space?.armed;
      run(which).forEach((r, j) => {
        out[which[j]] = r;
      });
      if (armed) tasks[which[0]].parkBetweenStages();
    }
    return out;
  }

  /**
   * One syscall in each of `tasks` (calls[i] in tasks[i]: threads of one process, or of many: a
   * tree's processes are asked the same things, Hooks' `<class>.dumpAll`), the round trips of a
   * process's threads overlapping: one thread's stops after another's cost a wake-up of a virtual
   * CPU each here, which is most of a remote syscall. Dump side, the processes asked in their
   * remover alone go together, any other one at a time (byProcess). A Buffer argument is copied into the task's own place in its process's scratch
   * area, its address passed, and what the task has there after the call is copied back into the
   * Buffer (for syscalls that write their result through a pointer). Returns the raw results (a
   * negative errno included). Dump side (guarded) every task is parked on its return frame first,
   * as syscallRaw does; elsewhere, one task after another.
   */
  static syscallEach(tasks: readonly Tracee[], calls: readonly BatchedSyscall[]): bigint[] {
    return Tracee.byProcess(tasks, (which) =>
      Tracee.syscallEachAtOnce(
        which.map((i) => tasks[i]),
        which.map((i) => calls[i]),
      ),
    );
  }

  private static syscallEachAtOnce(tasks: readonly Tracee[], calls: readonly BatchedSyscall[]): bigint[] {
    const out = new Array<bigint>(tasks.length);
    for (let i = 0; i < tasks.length; ) {
      // A round: as many tasks as their Buffers fit in their process's batch area, each at its own place.
      const areas = new Map<AddressSpace, { pid: number; base: number; bytes: number }>();
      const round: Array<{ k: number; places: number[]; area: { pid: number; base: number; bytes: number } }> = [];
      for (; i < tasks.length; i++) {
        const t = tasks[i];
        const bufs = calls[i].slice(1).filter((a): a is Buffer => Buffer.isBuffer(a));
        const need = bufs.reduce((n, b) => n + align16(b.length), 0);
        if (need > BATCH_AREA.size) throw new RangeError(`remote ${nameOf(calls[i][0])}: ${need} bytes of arguments, more than a batch holds`);
        let area = areas.get(t.space);
        if (area && area.bytes + need > BATCH_AREA.size) break;
        if (!area) {
          area = { pid: t.pid, base: t.scratch() + BATCH_AREA.offset, bytes: 0 };
          areas.set(t.space, area);
        }
        const places: number[] = [];
        for (const b of bufs) {
          places.push(area.bytes);
          area.bytes += align16(b.length);
        }
        round.push({ k: i, places, area });
      }
      const data = new Map([...areas.values()].filter((a) => a.bytes).map((a) => [a, Buffer.alloc(a.bytes)]));
      const args = round.map(({ k, places, area }) => {
        let b = 0;
        return calls[k].slice(1).map((a) => {
          if (!Buffer.isBuffer(a)) return BigInt.asUintN(64, BigInt(a));
          a.copy(data.get(area)!, places[b]);
          return BigInt(area.base + places[b++]);
        });
      });
      for (const [area, bytes] of data) native.mem.writeMem(area.pid, area.base, bytes);
      const parked: number[] = [];
      round.forEach(({ k }, r) => {
        const t = tasks[k];
        const g = t.space.guarded ? t.space.guard : undefined;
        if (g && t.parkInGuard(g) !== undefined) parked.push(r);
        else out[k] = t.syscallRaw(calls[k][0], ...args[r]);
      });
      if (parked.length) {
        const each = parked.map((r) => tasks[round[r].k]);
        parked.forEach((r, i) => each[i].running([[calls[round[r].k][0], ...args[r]]]));
        const results = native.ptrace.remoteSyscallEach(
          each.map((t) => t.pid),
          each.map((t) => t.guardCode(t.space.guard!, GUARD_CODE)),
          parked.map((r) => [calls[round[r].k][0], ...args[r]]),
          true,
        );
        each.forEach((t, j) => {
          out[round[parked[j]].k] = results[j];
          t.hasRun = true;
          t.blockSignals();
        });
      }
      for (const [area, bytes] of data) {
        const back = native.mem.readMem(area.pid, area.base, bytes.length);
        for (const { k, places, area: a } of round) {
          if (a !== area) continue;
          const bufs = calls[k].slice(1).filter((x): x is Buffer => Buffer.isBuffer(x));
          bufs.forEach((x, b) => back.copy(x, 0, places[b], places[b] + x.length));
        }
      }
    }
    return out;
  }

  /** Tracee.syscallsRawEach, throwing the NativeError of the first call that failed, as syscalls() would. */
  static syscallsEach(tasks: readonly Tracee[], batches: readonly (readonly BatchedSyscall[])[]): bigint[][] {
    const results = Tracee.syscallsRawEach(tasks, batches);
    results.forEach((rs, i) => rs.forEach((r, k) => checkSyscall(nameOf(batches[i][k][0]), tasks[i].pid, r)));
    return results;
  }

  /**
   * Tracee.syscallsRaw in each of `tasks` (batches[i] in tasks[i]: threads of one process, or of
   * many), at once: each task runs its whole batch (the trampoline's batch code on the restore
   * side, the guard's batch loop on the dump side) from its own place in its process's batch
   * area, their stops overlapping (dump side: as syscallEach groups them, byProcess).
   * Returns each task's raw results; Buffers get back what the task left in them, as in
   * syscallsRaw.
   */
  static syscallsRawEach(tasks: readonly Tracee[], batches: readonly (readonly BatchedSyscall[])[]): bigint[][] {
    return Tracee.byProcess(tasks, (which) =>
      Tracee.syscallsRawEachAtOnce(
        which.map((i) => tasks[i]),
        which.map((i) => batches[i]),
      ),
    );
  }

  private static syscallsRawEachAtOnce(tasks: readonly Tracee[], batches: readonly (readonly BatchedSyscall[])[]): bigint[][] {
    const out: bigint[][] = tasks.map(() => []);
    // How each task runs its batch: the trampoline's batch code (restore side), the guard's batch
    // loop (dump side), or one syscall after another (a process without either).
    const code: number[] = [];
    const loop: number[] = [];
    tasks.forEach((t, i) => {
      if (!batches[i].length) return;
      if (t.space.batchCode !== undefined) return void code.push(i);
      if (t.space.guarded) {
        t.scratch();
        const g = t.space.guard;
        if (g && t.parkInGuard(g) !== undefined) return void loop.push(i);
      }
      out[i] = t.syscallsRaw(batches[i]);
    });
    const sizeOf = (c: BatchedSyscall) => 64 + bufferBytes(c);
    for (const [kind, which] of [
      ['code', code],
      ['loop', loop],
    ] as const) {
      for (let c = 0; c < which.length; ) {
        // A round: as many batches as fit in their process's batch area, each at its own place.
        const areas = new Map<AddressSpace, { pid: number; base: number; bytes: number }>();
        const round: Array<{ k: number; from: number; area: { pid: number; base: number; bytes: number } }> = [];
        for (; c < which.length; c++) {
          const k = which[c];
          const t = tasks[k];
          const need = batches[k].reduce((n, call) => n + sizeOf(call), 0);
          if (need > BATCH_AREA.size) {
            // Alone bigger than the area: in its own stops (syscallsRaw splits it), after this round.
            if (round.length) break;
            out[k] = t.syscallsRaw(batches[k]);
            continue;
          }
          let area = areas.get(t.space);
          if (area && area.bytes + need > BATCH_AREA.size) break;
          if (!area) {
            area = { pid: t.pid, base: t.scratch() + BATCH_AREA.offset, bytes: 0 };
            areas.set(t.space, area);
          }
          round.push({ k, from: area.bytes, area });
          area.bytes += need;
        }
        if (!round.length) continue;
        const data = new Map([...areas.values()].map((a) => [a, Buffer.alloc(a.bytes)]));
        for (const { k, from, area } of round) layBatch(batches[k], data.get(area)!, from, area.base);
        for (const [area, bytes] of data) native.mem.writeMem(area.pid, area.base, bytes);
        const each = round.map(({ k }) => tasks[k]);
        each.forEach((t, r) => t.running(batches[round[r].k]));
        const entries = round.map(({ k, from, area }) => [area.base + from, batches[k].length]);
        let last: bigint[] | undefined;
        if (kind === 'code') {
          const at = each.map((t) => t.space.batchCode!);
          native.ptrace.remoteRunEach(
            each.map((t) => t.pid),
            at,
            at.map((a) => a + BATCH_CODE.length),
            entries,
          );
        } else {
          // The guard's loop stores each result after its syscall: the last one's comes back in rax.
          last = native.ptrace.remoteLoopEach(
            each.map((t) => t.pid),
            each.map((t) => t.guardCode(t.space.guard!, GUARD_BATCH)),
            entries,
            round.map(({ k }) => batches[k].length),
          );
          for (const t of each) {
            t.hasRun = true;
            t.blockSignals();
          }
        }
        const done = new Map([...data].map(([area, bytes]) => [area, native.mem.readMem(area.pid, area.base, bytes.length)]));
        round.forEach(({ k, from, area }, r) => {
          const back = done.get(area)!;
          const n = batches[k].length;
          if (last) back.writeBigInt64LE(last[r], from + 64 * (n - 1) + 56);
          out[k] = batches[k].map((_c, j) => back.readBigInt64LE(from + 64 * j + 56));
          copyBack(batches[k], back, from);
        });
      }
    }
    return out;
  }

  /** Restore side: writes BATCH_CODE at `at` (in the trampoline) for syscalls() of this address space. */
  adoptBatch(at: number): void {
    native.mem.writeMem(this.pid, at, BATCH_CODE);
    this.space.batchCode = at;
  }

  /**
   * A copy-on-write snapshot of the process's memory as it is now, for a dump to read after the
   * process was let go: the pid of a process that holds it, stopped and traced by ckpt with
   * PTRACE_O_EXITKILL (it dies with ckpt), and a child of neither. Kill it and reap it (as its
   * tracer) when done. `options`: this thread's ptrace options.
   *
   * A (inMmClone) forks B (the copy of the address space), and B, an orphan once A is gone,
   * belongs to the reaper above. A child left to itself exits (SNAPSHOT_CODE). Throws (errno)
   * when a clone fails (memory, pids).
   */
  snapshotMm(options: number): number {
    return this.inMmClone(options, (a, code) => {
      let b: number | undefined;
      try {
        b = hostTaskOf(a, Number(checkSyscall('clone', a, native.ptrace.remoteSyscall(a, code, SYS.clone, [0], false))), 'clone');
        native.ptrace.waitStop(b, 5000);
        log('pid %d: copy-on-write snapshot %d (through %d)', this.pid, b, a);
        return b;
      } catch (e) {
        if (b !== undefined && b > 0) killTraced(b);
        throw e;
      }
    });
  }

  /**
   * A userfaultfd of this process's address space, in ckpt (for write tracking): made by a task
   * sharing the address space but not the fd table (inMmClone), so the process's own fds never
   * change, and a ckpt killed meanwhile leaves nothing (the task dies with it). O_CLOEXEC and
   * O_NONBLOCK; UFFD_USER_MODE_ONLY where the process may not handle kernel faults
   * (vm.unprivileged_userfaultfd = 0), which write tracking does not need. Throws the errno.
   */
  userfaultfd(options: number): number {
    return this.inMmClone(options, (a, code) => {
      const flags = O_CLOEXEC_ | O_NONBLOCK_;
      let r = native.ptrace.remoteSyscall(a, code, SYS.userfaultfd, [flags], false);
      if (r === -1n) r = native.ptrace.remoteSyscall(a, code, SYS.userfaultfd, [flags | UFFD_USER_MODE_ONLY], false);
      const there = Number(checkSyscall('userfaultfd', a, r));
      const pidfd = native.proc.pidfdOpen(a);
      try {
        return native.proc.pidfdGetfd(pidfd, there);
      } finally {
        closeSync(pidfd);
      }
    });
  }

  /**
   * Runs fn(A, code) with A a task this process clones (CLONE_VM: its address space; its own
   * copy of the fd table; no exit signal), stopped and traced by ckpt from its first instruction
   * (PTRACE_O_TRACECLONE) with PTRACE_O_EXITKILL, `code` the guard's clone code to run syscalls in
   * it at; then A is killed and this process reaps it (wait4 __WALL: A never signals it). A left
   * to itself exits (SNAPSHOT_CODE); a ckpt killed here leaves at most A as an unreaped zombie
   * (between its clone and its options), never a second runner of this process's code.
   */
  private inMmClone<T>(options: number, fn: (a: number, code: number) => T): T {
    this.scratch();
    const g = this.space.guard;
    // The clone code ends in the plain tail (rbx: a frame in the guard).
    if (!this.space.guarded || !g || this.parkInGuard(g, true) === undefined) {
      throw new NativeError({ message: 'no guard mapping to run the clone from', code: 'ENOEXEC', syscall: 'clone', pid: this.pid });
    }
    const code = g.start + SNAPSHOT_CODE;
    native.ptrace.setOptions(this.pid, options | PTRACE_O_TRACECLONE);
    let a: number;
    let aHere: number;
    try {
      this.running(); // and A runs in this address space
      aHere = Number(checkSyscall('clone', this.pid, native.ptrace.remoteSyscall(this.pid, code, SYS.clone, [CLONE_VM], false)));
      a = hostTaskOf(this.pid, aHere, 'clone');
      this.hasRun = true;
      this.blockSignals();
    } finally {
      native.ptrace.setOptions(this.pid, options);
    }
    try {
      native.ptrace.waitStop(a, 5000);
      native.ptrace.setOptions(a, options | PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL);
      return fn(a, code);
    } finally {
      killTraced(a);
      // A is a zombie by now (its tracer saw it die): never wait for more.
      if (this.syscall(SYS.wait4, aHere, 0, WALL | WNOHANG, 0) === 0n) log('pid %d: its clone %d was not reaped', this.pid, a);
    }
  }

  /**
   * Parks the thread on its frame in the guard mapping: its registers are the guard's tail
   * (rt_sigreturn on rbx = the frame), so whatever ckpt does next, the thread gets back to its
   * own context if ckpt dies. Undefined when no slot is left (a thread that appeared late).
   */
  private parkInGuard(g: NonNullable<AddressSpace['guard']>, plain = false): number | undefined {
    const r = this.removerOf();
    if (r === this && !plain && !(this.space.members ?? []).some((m) => m !== this && m.inGuard())) {
      // Alone in the guard: parked so that its way back also unmaps the guard.
      if (this.parkedAt?.where === 'remover') return this.parkedAt.uc;
      const f = this.stackFrame();
      if (f) {
        this.park(f.uc, 'remover', g.start + GUARD_REMOVE_CODE + GUARD_TAIL);
        return f.uc;
      }
    }
    // Another thread runs in the guard now (or this one runs code with the plain tail): the
    // remover must not unmap the guard from under it, so it goes back to the plain tail first.
    if (r && r !== this && r.parkedAt?.where === 'remover') r.parkInGuard(g, true);
    if (this.parkedAt?.where === 'guard') return this.parkedAt.uc;
    let slot = g.slots.get(this.pid);
    if (slot === undefined) {
      const size = slotSize(this.xstate().length);
      if (g.next + size > g.size) return undefined;
      slot = g.start + g.next;
      g.next += size;
      g.slots.set(this.pid, slot);
    }
    const uc = slot + 64;
    this.park(uc, 'guard', g.start + GUARD_CODE + GUARD_TAIL);
    return uc;
  }

  /** Parked on the guard's code (plain or remover): the guard may not go from under it. */
  private inGuard(): boolean {
    return this.parkedAt?.where === 'guard' || this.parkedAt?.where === 'remover';
  }

  /** The thread of the process that can be the remover (its frame on the main stack), or null. */
  private removerOf(): Tracee | null {
    if (this.space.remover === undefined) this.space.remover = (this.space.members ?? [this]).find((m) => m.stackFrame() !== undefined) ?? null;
    return this.space.remover;
  }

  /** The guard's code at `plain` (GUARD_CODE, GUARD_BATCH), or its remover's version when this thread is parked as the remover. */
  private guardCode(g: NonNullable<AddressSpace['guard']>, plain: number): number {
    if (this.parkedAt?.where !== 'remover') return g.start + plain;
    return g.start + (plain === GUARD_BATCH ? GUARD_REMOVE_BATCH : GUARD_REMOVE_CODE);
  }

  /**
   * Writes the return frame at uc, then points the registers at the code that returns through it
   * (with `call`: the syscall that code makes first, by the stack path). 'remover': the frame is
   * on the stack and the code the remover's tail (rbx = the frame less 8, its return word).
   */
  private park(uc: number, where: 'stack' | 'guard' | 'remover', rip: number, rsp?: number, call?: { nr: number; args: number[] }): void {
    if (this.frames.get(uc) !== this.sigmask) {
      native.mem.writeMem(this.pid, uc, returnFrame(uc, this.resumeRegs, this.sigmask, this.xstate()));
      native.ptrace.faultStep();
      this.frames.set(uc, this.sigmask);
    }
    const r = new Regs(Buffer.from(this.resumeRegs)).set('rip', rip).set('orig_rax', -1n);
    if (where === 'guard') r.set('rbx', uc);
    if (where === 'remover') r.set('rbx', uc - 8);
    if (rsp !== undefined) r.set('rsp', rsp);
    if (call) {
      r.set('rax', call.nr);
      (['rdi', 'rsi', 'rdx'] as const).forEach((name, i) => {
        if (i < call.args.length) r.set(name, call.args[i]);
      });
    }
    native.ptrace.setRegs(this.pid, r.buf);
    native.ptrace.faultStep();
    this.parkedAt = { where, uc };
    if (where === 'remover') this.space.armed = this;
    else if (this.space.armed === this) this.space.armed = undefined;
    if (this.hasRun) this.blockSignals();
  }

  /**
   * Blocks every signal while the thread is parked, so that signals that arrive stay pending for
   * the thread instead of being taken by ckpt. Only once the thread has run under ckpt: before,
   * its mask may be a ppoll's or sigsuspend's temporary one, which the kernel swaps back on that
   * first run (setting the mask earlier would lose the real one). The frame gets the real mask.
   */
  private blockSignals(): void {
    if (this.maskBlocked || !this.parkedAt) return;
    const mask = native.ptrace.getSigmask(this.pid);
    if (mask !== this.sigmask) {
      this.sigmask = mask;
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(mask);
      native.mem.writeMem(this.pid, this.parkedAt.uc + frameMaskOffset, b);
      native.ptrace.faultStep();
      this.frames.set(this.parkedAt.uc, mask);
    }
    native.ptrace.setSigmask(this.pid, ALL_SIGNALS);
    native.ptrace.faultStep();
    this.maskBlocked = true;
  }

  /** Back from parked: the thread's own mask, then its own registers (safe in that order). */
  unpark(): void {
    if (this.maskBlocked) {
      native.ptrace.setSigmask(this.pid, this.sigmask);
      native.ptrace.faultStep();
      this.maskBlocked = false;
    }
    if (this.parkedAt) {
      native.ptrace.setRegs(this.pid, this.resumeRegs);
      native.ptrace.faultStep();
      this.parkedAt = undefined;
    }
  }

  /**
   * Dump side: the process's layout (/proc/PID/maps), read once and again only after ckpt ran
   * code in it: a frozen process's layout changes by its own syscalls alone (the freeze, the
   * guard and the stages ask for it several times).
   */
  maps(): Vma[] {
    this.space.maps ??= readMaps(this.pid);
    return [...this.space.maps];
  }

  /**
   * Before ckpt runs code in the task: counted (injectedCount); the layout read so far is stale
   * unless every call is known to leave it as it is (`calls`: the syscalls, undefined for other
   * code). A frozen process's layout changes by its own syscalls alone, so a dump's queries (a
   * tree's dozen prctls, sigaltstacks and itimers a process) keep the layout read at the freeze.
   */
  private running(calls?: ReadonlyArray<readonly [number, ...unknown[]]>): void {
    this.injected += calls?.length ?? 1;
    if (!calls || calls.some(changesLayout)) this.space.maps = undefined;
  }

  private xstateCache?: Buffer;
  private xstate(): Buffer {
    this.xstateCache ??= native.ptrace.getXstate(this.pid);
    return this.xstateCache;
  }

  /**
   * Where this thread's frame goes on the stack path: below the red zone of its stack, which must
   * be the main [stack] (nothing else lives below its stack pointer), with the address of the
   * process's own rt_sigreturn restorer under it for the vdso's `syscall ... ret` to return into.
   * Undefined when this thread or process cannot.
   */
  private stackFrame(): { uc: number; gad: Gadgets } | undefined {
    if (this.space.gadgets === undefined) {
      const vmas = this.maps();
      this.space.gadgets = findGadgets(this.pid, vmas) ?? null;
      this.space.mainStack = vmas.find((v) => v.name === '[stack]') ?? null;
    }
    const gad = this.space.gadgets;
    if (!gad) return undefined;
    const rsp = Number(new Regs(this.resumeRegs).get('rsp'));
    const stack = this.space.mainStack && this.space.mainStack.start <= rsp && rsp <= this.space.mainStack.end ? this.space.mainStack : undefined;
    const uc = Math.floor((rsp - 256 - frameSize(this.xstate().length)) / 64) * 64;
    if (!stack || uc - 8 < stack.start + PAGE_SIZE) return undefined;
    if (this.stackReturn !== uc) {
      const ret = Buffer.alloc(8);
      ret.writeBigUInt64LE(BigInt(gad.sigreturn));
      native.mem.writeMem(this.pid, uc - 8, ret);
      this.stackReturn = uc;
    }
    return { uc, gad };
  }

  /**
   * One syscall by the stack path (the guard mapping does not exist: its mmap and its munmap),
   * the frame as stackFrame() places it. Undefined when this thread or process cannot.
   */
  private stackSyscall(nr: number, args: Array<number | bigint>): bigint | undefined {
    const f = this.stackFrame();
    if (!f) return undefined;
    const { uc, gad } = f;
    this.park(uc, 'stack', gad.sigreturn, uc);
    this.running([[nr, ...args]]);
    const r = native.ptrace.remoteSyscall(this.pid, gad.syscallRet, nr, args, false, uc - 8);
    this.hasRun = true;
    this.blockSignals();
    return r;
  }

  /** A thread of this process that can run the stack path, this one first. */
  private stackSyscallAnywhere(nr: number, args: Array<number | bigint>): bigint {
    const members = [this, ...(this.space.members ?? []).filter((m) => m !== this)];
    for (const m of members) {
      const r = m.stackSyscall(nr, args);
      if (r !== undefined) return r;
    }
    log('pid %d: %s unguarded (no thread on the main stack, or no rt_sigreturn restorer)', this.pid, nameOf(nr));
    this.running([[nr, ...args]]);
    return native.ptrace.remoteSyscall(this.pid, this.syscallInsn, nr, args, false);
  }

  get injectedCount(): number {
    return this.injected;
  }

  /** The scratch mapping (rw, SCRATCH_SIZE) for pointer arguments; created on first use. */
  scratch(): number {
    if (this.scratchAddr === undefined) {
      if (this.space.guarded) return this.createGuard();
      const addr = findFreeRange([readMaps(this.pid)], SCRATCH_SIZE, 0x100000000);
      this.scratchAddr = Number(this.syscall(SYS.mmap, addr, SCRATCH_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0));
      log('pid %d: scratch at %s', this.pid, this.scratchAddr.toString(16));
    }
    return this.scratchAddr;
  }

  /** Dump side: maps the guard mapping (header and code, scratch data, frame slots). */
  private createGuard(): number {
    const members = this.space.members?.length ?? 1;
    const size = alignPage(GUARD_HEADER + SCRATCH_SIZE + members * slotSize(this.xstate().length));
    // One place per process for the whole dump, noted once (the journal is for a dead ckpt's
    // successor, and a range noted and empty again harms nothing).
    let at = this.space.guardAt;
    if (!at || at.size !== size) {
      at = { addr: findFreeRange([this.maps()], size, 0x100000000), size };
      noteGuard(this.processPid, at.addr, size);
      this.space.guardAt = at;
    }
    const flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE;
    const raw = this.stackSyscallAnywhere(SYS.mmap, [at.addr, size, PROT_READ | PROT_WRITE | PROT_EXEC, flags, -1, 0]);
    if (raw === -17n) this.space.guardAt = undefined; // EEXIST: the place was taken meanwhile
    if (raw === -13n || raw === -1n) {
      // A policy that refuses executable anonymous memory (SELinux execmem, ...): no return
      // frames for this process; its remote syscalls run as before, unguarded.
      log('pid %d: no guard mapping (mmap PROT_EXEC: %s): remote syscalls unguarded', this.pid, raw === -13n ? 'EACCES' : 'EPERM');
      for (const m of this.space.members ?? []) m.unpark();
      this.space.guarded = false;
      return this.scratch();
    }
    const start = Number(checkSyscall('mmap', this.pid, raw));
    const removerEnd = removerTail(GUARD_REMOVE_BATCH + BATCH_LOOP.length);
    const header = Buffer.alloc(GUARD_REMOVE_BATCH + BATCH_LOOP.length + removerEnd.length);
    GUARD_MAGIC.copy(header);
    header.writeUInt32LE(process.pid, GUARD_MAGIC.length);
    header.writeBigUInt64LE(BigInt(size), GUARD_SIZE_AT);
    header.writeBigUInt64LE(BigInt(this.space.gadgets?.syscallRet ?? 0), GUARD_GADGET_AT);
    GUARD_CODE_BYTES.copy(header, GUARD_CODE);
    SNAPSHOT_CODE_BYTES.copy(header, SNAPSHOT_CODE);
    BATCH_LOOP.copy(header, GUARD_BATCH);
    GUARD_CODE_BYTES.copy(header, GUARD_BATCH + BATCH_LOOP.length, GUARD_TAIL);
    // The remover's: the same syscall and loop, each ending in the remover's tail.
    GUARD_CODE_BYTES.copy(header, GUARD_REMOVE_CODE, 0, GUARD_TAIL);
    removerTail(GUARD_REMOVE_CODE + GUARD_TAIL).copy(header, GUARD_REMOVE_CODE + GUARD_TAIL);
    BATCH_LOOP.copy(header, GUARD_REMOVE_BATCH);
    removerEnd.copy(header, GUARD_REMOVE_BATCH + BATCH_LOOP.length);
    native.mem.writeMem(this.pid, start, header);
    this.forgetFrames(start, size);
    this.space.guard = { start, size, slots: new Map(), next: GUARD_HEADER + SCRATCH_SIZE };
    this.scratchAddr = start + GUARD_HEADER;
    log('pid %d: guard mapping at %s (%d bytes)', this.pid, start.toString(16), size);
    return this.scratchAddr;
  }

  /** Adopts an existing mapping (e.g. the restore trampoline) as scratch. */
  adoptScratch(addr: number): void {
    this.scratchAddr = addr;
  }

  get scratchRange(): { start: number; end: number } | undefined {
    const g = this.space.guard;
    if (g) return { start: g.start, end: g.start + g.size };
    return this.scratchAddr === undefined ? undefined : { start: this.scratchAddr, end: this.scratchAddr + SCRATCH_SIZE };
  }

  /** Writes data into scratch at offset and returns its address in the task. */
  put(data: Buffer, offset = 0): number {
    const addr = this.scratch() + offset;
    native.mem.writeMem(this.pid, addr, data);
    return addr;
  }

  putString(s: string, offset = 0): number {
    return this.put(Buffer.from(s + '\0'), offset);
  }

  read(addr: number, len: number): Buffer {
    return native.mem.readMem(this.pid, addr, len);
  }

  /**
   * Between the stages of a dump, and before a long page copy: the process must be able to do
   * without ckpt at any instant, yet mapping the guard again for the next stage would cost two
   * remote syscalls. So the guard stays, every thread gets its own registers back but one, the
   * remover (its frame on the main stack), parked on the remover's tail in the guard: should ckpt
   * die now, it unmaps the guard through the stack path's `syscall ... ret` and returns to its own
   * context through its frame. It stays so for its own remote syscalls (the remover's code: the
   * syscall or the batch loop, then that tail), and goes back to the plain tail only while another
   * thread of its process runs in the guard (parkInGuard). So a process whose other threads ckpt
   * does not need at once, any single-threaded one, never has a moment at which a dead ckpt would
   * leave its guard. When no thread can be the remover, or there is no guard but a plain scratch
   * mapping, it goes now, as releaseScratch.
   */
  parkBetweenStages(): void {
    const g = this.space.guard;
    if (!g) {
      if (this.scratchAddr !== undefined) this.releaseScratch();
      return;
    }
    if (this.space.armed) return;
    const members = this.space.members ?? [this];
    const r = this.removerOf();
    // The others leave the guard's code (the remover would take it from under them).
    for (const m of members) if (m !== r && m.inGuard()) m.unpark();
    if (r && r.parkInGuard(g) !== undefined && this.space.armed) return;
    for (const m of members) if (m.inGuard()) m.unpark();
    this.releaseScratch();
  }

  /** The frames written in [start, start + size) by the process's threads, forgotten (that memory is new, or gone). */
  private forgetFrames(start: number, size: number): void {
    for (const m of this.space.members ?? [this]) for (const uc of m.frames.keys()) if (uc >= start && uc < start + size) m.frames.delete(uc);
  }

  /** Unmaps the scratch mapping (dump side: leave no trace). */
  releaseScratch(): void {
    const g = this.space.guard;
    this.space.armed = undefined;
    if (g) {
      // Nobody may stay parked on code that is about to go; the stack path unmaps it.
      for (const m of this.space.members ?? [this]) if (m.inGuard()) m.unpark();
      this.space.guard = undefined;
      this.forgetFrames(g.start, g.size);
      this.scratchAddr = undefined;
      // The layout read with the guard in it, less the guard, is the layout without it: areas
      // the kernel merged with the guard (anonymous rwx ones beside it) are cut where it was,
      // where its munmap splits them. No /proc/PID/maps read after the munmap.
      const before = this.space.maps;
      try {
        checkSyscall('munmap', this.pid, this.stackSyscallAnywhere(SYS.munmap, [g.start, g.size]));
      } finally {
        for (const m of this.space.members ?? []) m.unpark();
      }
      if (before) this.space.maps = cutRange(before, g.start, g.start + g.size);
      return;
    }
    if (this.scratchAddr !== undefined) {
      // The instruction may live in the scratch page: no breakpoint to come back to.
      this.space.int3 = false;
      this.space.batchCode = undefined;
      this.syscall(SYS.munmap, this.scratchAddr, SCRATCH_SIZE);
      this.scratchAddr = undefined;
    }
  }

  /** Removes guard mappings a killed ckpt left in this process (found by their magic). */
  removeStaleGuards(): number {
    const noted = orphanedGuardNotes(this.processPid);
    const stale = staleGuards(this.pid, noted, this.maps());
    for (const v of stale) checkSyscall('munmap', this.pid, this.stackSyscallAnywhere(SYS.munmap, [v.start, v.end - v.start]));
    for (const m of this.space.members ?? []) m.unpark();
    if (noted.length) dropOrphanedNotes(this.processPid);
    return stale.length;
  }

  /** The process this task belongs to (its leader: the first member). */
  private get processPid(): number {
    return this.space.members?.[0]?.pid ?? this.pid;
  }
}

/**
 * Guard mappings in pid that no live ckpt owns (a ckpt owning one has pid traced, so not us):
 * those that start with the magic, and those a dead ckpt noted (mapped, magic not yet written).
 */
export function staleGuards(pid: number, noted = orphanedGuardNotes(pid), maps = readMaps(pid)): Vma[] {
  return maps.filter((v) => {
    if (v.perms !== 'rwxp' || v.name || v.end - v.start < GUARD_HEADER) return false;
    try {
      const head = native.mem.readMem(pid, v.start, GUARD_MAGIC.length);
      if (head.equals(GUARD_MAGIC)) return true;
      // Mapped, and its ckpt died before writing the magic: still untouched.
      return noted.some((n) => n.addr === v.start && n.addr + n.size === v.end) && head.every((b) => b === 0);
    } catch {
      return false;
    }
  });
}

/** The bytes a call's Buffer arguments take in a batch area (each 16-byte aligned). */
function bufferBytes(c: BatchedSyscall): number {
  return c.slice(1).reduce<number>((n, a) => n + (Buffer.isBuffer(a) ? align16(a.length) : 0), 0);
}

/**
 * Lays calls out in area from `from` on as BATCH_CODE reads them (the task sees area at `base`):
 * an entry of 64 bytes each (nr, six arguments, the result), then the Buffers they point to.
 * Returns each call's arguments as passed (a Buffer: its address in the task).
 */
function layBatch(calls: readonly BatchedSyscall[], area: Buffer, from: number, base: number): bigint[][] {
  let data = from + 64 * calls.length;
  return calls.map((c, n) => {
    const e = from + 64 * n;
    area.writeBigUInt64LE(BigInt(c[0]), e);
    return c.slice(1).map((a, j) => {
      let v: bigint;
      if (Buffer.isBuffer(a)) {
        a.copy(area, data);
        v = BigInt(base + data);
        data += align16(a.length);
      } else v = BigInt.asUintN(64, BigInt(a));
      area.writeBigUInt64LE(v, e + 8 + 8 * j);
      return v;
    });
  });
}

/** What the task left in the Buffers of calls laid out by layBatch at `from` of area, copied back into them. */
function copyBack(calls: readonly BatchedSyscall[], area: Buffer, from: number): void {
  let data = from + 64 * calls.length;
  for (const c of calls) {
    for (const a of c.slice(1)) {
      if (!Buffer.isBuffer(a)) continue;
      area.copy(a, 0, data, data + a.length);
      data += align16(a.length);
    }
  }
}

const alignPage = (n: number) => Math.ceil(n / PAGE_SIZE) * PAGE_SIZE;
const align16 = (n: number) => Math.ceil(n / 16) * 16;
/** One thread's frame slot: the stack path's return word, the frame, alignment. */
const slotSize = (xstateSize: number) => Math.ceil((64 + frameSize(xstateSize)) / 256) * 256;

const NAMES = new Map<number, string>(Object.entries(SYS).map(([k, v]) => [v, k]));
function nameOf(nr: number): string {
  return NAMES.get(nr) ?? `syscall ${nr}`;
}

/**
 * Makes `parent` clone a new task with a chosen pid (set_tid: one entry per pid namespace
 * level, innermost first): a child process (fork-like) or, with thread, a thread of parent's.
 * The new task starts stopped and traced (PTRACE_O_TRACEFORK/TRACECLONE on the parent). Returns
 * it, with its pid as the host sees it (clone3 answers in the parent's namespace). Throws the
 * NativeError of clone3 (EEXIST: pid taken).
 */
/**
 * remoteClone of many threads of `parent` at once (restore side): their clone3 calls in one stop
 * (Tracee.syscallsRaw; the parent's clone events are let through), then each new thread's first
 * stop awaited, so that their start-ups overlap instead of following one another. Without the
 * trampoline's batch code, one remoteClone after another. Throws for the first clone3 that failed
 * (EEXIST: its tid is taken), naming the thread; the threads made meanwhile go with the process.
 */
export function remoteCloneThreads(parent: Tracee, setTids: readonly number[][]): Tracee[] {
  if (parent.space.batchCode === undefined) return setTids.map((s) => remoteClone(parent, s, { thread: true }));
  const out: Tracee[] = [];
  // The set_tid arrays side by side in scratch from 2048 on (where remoteClone puts its one), as
  // many threads a round as fit below the batch's area.
  const PER_ROUND = 1024;
  for (let from = 0; from < setTids.length; from += PER_ROUND) {
    const round = setTids.slice(from, from + PER_ROUND);
    const arrays = round.map((s) => setTidArray(s));
    const base = parent.put(Buffer.concat(arrays), 2048);
    let at = base;
    const calls = round.map((s, k): BatchedSyscall => {
      const args = cloneArgs({ flags: CLONE_THREAD_FLAGS, setTid: at, setTidSize: s.length });
      at += arrays[k].length;
      return [SYS.clone3, args, args.length];
    });
    const results = parent.syscallsRaw(calls);
    const ids = results.map((r, k) => {
      const s = round[k];
      if (r < 0n) checkSyscall(`clone3 of thread ${s[0]}`, parent.pid, r);
      if (s.length > 1) return s[s.length - 1];
      return parent.sharesOurPidNs ? Number(r) : hostTaskOf(parent.pid, Number(r), 'clone3', true);
    });
    for (const id of ids) {
      awaitBirth(parent, id);
      out.push(parent.sibling(id));
    }
  }
  return out;
}

export function remoteClone(parent: Tracee, setTid: number[], opts: { thread?: boolean; flags?: number } = {}): Tracee {
  const at = parent.put(setTidArray(setTid), 2048);
  const args = cloneArgs(
    opts.thread
      ? { flags: CLONE_THREAD_FLAGS, setTid: at, setTidSize: setTid.length }
      : { flags: opts.flags ?? 0, exitSignal: SIGCHLD, setTid: at, setTidSize: setTid.length },
  );
  let id = Number(parent.syscall(SYS.clone3, parent.put(args, 1024), args.length));
  if (setTid.length > 1) id = setTid[setTid.length - 1];
  else if (!parent.sharesOurPidNs) id = hostTaskOf(parent.pid, id, 'clone3', opts.thread);
  awaitBirth(parent, id);
  return opts.thread ? parent.sibling(id) : new Tracee(id, { space: { insn: parent.syscallInsn } });
}

/** The first stop of a task `parent` just cloned (traced from birth); throws if it died instead. */
function awaitBirth(parent: Tracee, id: number): void {
  const st = native.ptrace.waitStop(id, 10000);
  if (st.kind === 'exited' || st.kind === 'killed') {
    throw new NativeError({ message: `new task ${id} of ${parent.pid} died at birth`, code: 'ESRCH', syscall: 'clone3', pid: id });
  }
}
