/**
 * Services, held in a typedi container per Ckpt instance: process control (freeze, thaw, stubs),
 * the image store, the network lock and loggers. Each is registered under a token; a plugin may
 * replace one for every session (`ctx.provide(IMAGE_STORE, myStore)` in its apply). Plugins reach
 * them through `session.services`, never by importing the container, so a plugin can be
 * exercised with a hand-made context.
 */
import 'reflect-metadata';
import { Container, Token, type ContainerInstance } from 'typedi';
import { closeSync, readdirSync, readFileSync } from 'node:fs';
import {
  native,
  stubPath,
  CLONE_NEWIPC,
  CLONE_NEWPID,
  PTRACE_O_EXITKILL,
  PTRACE_O_SUSPEND_SECCOMP,
  PTRACE_O_TRACECLONE,
  PTRACE_O_TRACEFORK,
  PTRACE_O_TRACESYSGOOD,
  PTRACE_O_TRACEEXEC,
  F_SETFD,
  SYS,
  NativeError,
  checkSyscall,
} from '@ckpt/native';
import { CkptError } from './errors.js';
import { describePid, listThreads, PF_KTHREAD, type ProcStat, readStat, readStatus, statusFields, type Vma } from './proc.js';
import { killTraced, remoteClone, staleGuards, Tracee } from './tracee.js';
import { pruneGuardNotes } from './guard.js';
import { STUB_PIDFD } from './restorer.js';
import { logger, type Logger } from './log.js';
import { type ImageOpenOptions, ImageReader, ImageWriter, type ImageWriterOptions } from './image.js';
import { NftNetworkLocks, type NetworkLocks } from './netlock.js';
import { sleepSync } from './helpers.js';
import { randomHex } from './random.js';

const log = logger('process');

/**
 * Whether a dump's remote syscalls can run parked on return frames (guard.ts): not with user
 * shadow stacks (CET), where rt_sigreturn on a frame the kernel did not push would fault.
 * `features`: the thread's x86_Thread_features (status).
 */
function guardable(pid: number, features: string): boolean {
  if (/\bshstk\b/.test(features)) {
    log('%d uses a shadow stack: its remote syscalls run unguarded (a ckpt killed during one can harm it)', pid);
    return false;
  }
  return true;
}

/** x86_Thread_features of one thread: the first one seized when the leader thread has exited. */
function threadFeatures(pid: number, tid: number): string {
  return statusFields(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'), ['x86_Thread_features']).x86_Thread_features ?? '';
}

/** What checkTraceable read of a process: its stat and the status lines the freeze needs. */
interface Traceable {
  stat: ProcStat;
  /** x86_Thread_features of its leader's status ('' when the kernel shows none). */
  features: string;
}

/** Freezes, thaws, kills and creates processes. The only owner of ptrace attach/detach. */
/** Whether the restore stubs made so far have their seccomp filters suspended while traced (PTRACE_O_SUSPEND_SECCOMP). */
let stubsSuspendSeccomp = false;
export const seccompSuspendedInStubs = (): boolean => stubsSuspendSeccomp;

/** The seccomp mode of each thread (0 none, 1 strict, 2 filter; 0 for one gone), from their status files in one read. */
function threadSeccomp(pid: number, tids: readonly number[]): number[] {
  return native.proc.readTexts(tids.map((tid) => `/proc/${pid}/task/${tid}/status`)).map((text) => Number(/^Seccomp:\s*(\d)/m.exec(text ?? '')?.[1] ?? 0));
}

export class ProcessControl {
  private readonly frozen = new Map<number, Tracee>();
  /** Threads seized with PTRACE_O_SUSPEND_SECCOMP (their options keep it). */
  private readonly suspended = new Set<number>();
  /** Stubs forked from another process (forkStub): their parent, which must reap them. */
  private readonly foreignParents = new Map<number, number>();

  /** Checks that pid can be checkpointed at all, with a message naming why not. */
  checkTraceable(pid: number): Traceable {
    let st: ProcStat;
    let status: Record<string, string>;
    try {
      st = readStat(pid);
      status = statusFields(readFileSync(`/proc/${pid}/status`, 'utf8'), ['TracerPid', 'x86_Thread_features']);
    } catch {
      throw new CkptError('ERR_CKPT_NO_SUCH_PROCESS', `no such process: ${pid}`);
    }
    if (st.flags & PF_KTHREAD) {
      throw new CkptError('ERR_CKPT_NOT_TRACEABLE', `cannot checkpoint pid ${pid} (${st.comm}): it is a kernel thread`);
    }
    // A zombie leader with live threads: the main thread exited, the process runs on.
    if ((st.state === 'Z' && st.numThreads <= 1) || st.state === 'X') {
      throw new CkptError('ERR_CKPT_NOT_TRACEABLE', `cannot checkpoint pid ${pid} (${st.comm}): it has exited (zombie)`);
    }
    const tracer = Number(status.TracerPid ?? 0);
    if (tracer) {
      throw new CkptError('ERR_CKPT_NOT_TRACEABLE', `cannot checkpoint pid ${pid} (${st.comm}): it is already traced by pid ${tracer} ${describePid(tracer)}`, {
        hint: 'detach the debugger or tracer first',
      });
    }
    if (pid === process.pid) throw new CkptError('ERR_CKPT_NOT_TRACEABLE', 'ckpt cannot checkpoint itself');
    return { stat: st, features: status.x86_Thread_features ?? '' };
  }

  /**
   * Seizes and stops every thread of pid (re-reading the thread list until no new thread
   * appears). Returns the leader first, unless the leader thread has exited (a zombie that
   * cannot be traced): then the live threads only. Signals that arrive meanwhile are held back
   * and re-sent on thaw. On failure, whatever was frozen is let go.
   */
  freeze(pid: number): Tracee[] {
    const { stat, features } = this.checkTraceable(pid);
    const threads: Tracee[] = [];
    const leaderExited = stat.state === 'Z';
    try {
      this.seizeThreads(pid, leaderExited, (tid) => {
        const t = threads.length
          ? threads[0].sibling(tid)
          : new Tracee(tid, { space: { guarded: guardable(tid, tid === pid ? features : threadFeatures(pid, tid)) } });
        threads.push(t);
        this.frozen.set(tid, t);
        native.mem.pinProc(tid);
      });
      if (!threads.length || (threads[0].pid !== pid && !leaderExited))
        throw new CkptError('ERR_CKPT_NO_SUCH_PROCESS', `process ${pid} exited while being frozen`);
      log('froze %d (%d threads%s)', pid, threads.length, leaderExited ? ', its leader thread exited' : '');
      const stale = threads[0].removeStaleGuards();
      if (stale) log('%d: removed %d guard mapping(s) a killed ckpt left', pid, stale);
      return threads;
    } catch (e) {
      for (const t of threads) this.thaw(t);
      throw e;
    }
  }

  /**
   * Runs fn with every thread of pid stopped under ptrace (seized and interrupted: unseen by its
   * parent, unlike SIGSTOP), then lets them go with their registers untouched. For work that must
   * not race the process but needs nothing else of a freeze: the pre-copy's write-protect walk
   * (PAGEMAP_SCAN, which misses writes made while it walks: see plugin-memory's precopy.ts).
   * Throws, having let go whatever it stopped, when the process cannot be stopped.
   */
  whileStopped<T>(pid: number, fn: () => T): T {
    const leaderExited = this.checkTraceable(pid).stat.state === 'Z';
    const stopped: number[] = [];
    try {
      this.seizeThreads(pid, leaderExited, (tid) => stopped.push(tid));
      return fn();
    } finally {
      for (const tid of stopped) {
        this.detachQuietly(tid);
        this.suspended.delete(tid);
      }
    }
  }

  /**
   * Seizes and stops every thread of pid, the leader first (a zombie leader skipped), reading the
   * thread list again until no new thread appears; `took` gets each thread once it is stopped.
   */
  private seizeThreads(pid: number, leaderExited: boolean, took: (tid: number) => void): void {
    const seized = new Set<number>();
    for (;;) {
      const fresh = listThreads(pid).filter((tid) => !(leaderExited && tid === pid) && !seized.has(tid));
      if (!fresh.length) return;
      fresh.sort((a, b) => (a === pid ? -1 : b === pid ? 1 : a - b));
      // Every new thread seized, then all interrupted at once and each stop awaited: their stops
      // overlap instead of following one another.
      const modes = threadSeccomp(pid, fresh);
      const held: number[] = [];
      try {
        fresh.forEach((tid, i) => {
          if (this.seize(pid, tid, modes[i])) held.push(tid);
        });
      } catch (e) {
        for (const tid of held) this.detachQuietly(tid);
        throw e;
      }
      let failure: unknown;
      let states: ReturnType<typeof native.ptrace.interruptEach>;
      try {
        states = native.ptrace.interruptEach(held, 10000);
      } catch (e) {
        for (const tid of held) this.detachQuietly(tid);
        throw e;
      }
      states.forEach((st, i) => {
        const tid = held[i];
        if (failure === undefined && st instanceof Error) failure = new NativeError(st);
        else if (failure === undefined && !(st instanceof Error) && (st.kind === 'exited' || st.kind === 'killed')) {
          // A thread that exited meanwhile is no more; the leader must not.
          if (tid !== pid) return;
          failure = new CkptError('ERR_CKPT_NO_SUCH_PROCESS', `process ${pid} exited while being frozen`);
        }
        if (failure !== undefined) {
          this.detachQuietly(tid);
          return;
        }
        seized.add(tid);
        took(tid);
      });
      if (failure !== undefined) throw failure;
    }
  }

  /**
   * PTRACE_SEIZE of one task (seccomp: its mode), its filters suspended if it has any; false when
   * it is gone already (a thread that just exited).
   */
  private seize(pid: number, tid: number, seccomp: number): boolean {
    // A thread under seccomp: its filters must not see (and may kill for) the syscalls ckpt
    // runs in it. PTRACE_O_SUSPEND_SECCOMP lifts them while it is traced.
    try {
      native.ptrace.seize(tid, PTRACE_O_TRACESYSGOOD | (seccomp ? PTRACE_O_SUSPEND_SECCOMP : 0));
      if (seccomp) this.suspended.add(tid);
      return true;
    } catch (e) {
      const err = e as NativeError;
      if (err.code === 'ESRCH' && tid !== pid) return false;
      if (seccomp && err.code === 'EPERM') {
        throw new CkptError(
          'ERR_CKPT_NOT_TRACEABLE',
          `cannot checkpoint pid ${pid}: thread ${tid} runs under seccomp, and ckpt cannot suspend its filters (PTRACE_O_SUSPEND_SECCOMP: ${err.message})`,
          { cause: e, hint: 'ckpt must run with CAP_SYS_ADMIN and not under seccomp itself (e.g. not in a container with a seccomp profile)' },
        );
      }
      if (err.code === 'EPERM' || err.code === 'EACCES') {
        throw new CkptError('ERR_CKPT_NOT_TRACEABLE', `cannot checkpoint pid ${pid}: ptrace refused (${err.message})`, {
          cause: e,
          hint: 'it may be traced already, or protected by a security policy',
        });
      }
      if (err.code === 'ESRCH') throw new CkptError('ERR_CKPT_NO_SUCH_PROCESS', `no such process: ${pid}`, { cause: e });
      throw e;
    }
  }

  /** Lets a frozen process go: registers as they were (re-entering an interrupted syscall). */
  thaw(t: Tracee): void {
    this.frozen.delete(t.pid);
    try {
      if (t.scratchRange) t.releaseScratch();
    } catch (e) {
      log('thaw %d: could not unmap scratch: %s', t.pid, (e as Error).message);
    }
    try {
      t.unpark();
      native.ptrace.setRegs(t.pid, t.resumeRegs);
    } catch (e) {
      log('thaw %d: setRegs failed: %s', t.pid, (e as Error).message);
    }
    this.detachQuietly(t.pid);
    native.mem.unpinProc(t.pid);
  }

  /**
   * From here on a dump whose image is committed ends with the processes killed even if ckpt
   * dies first (PTRACE_O_EXITKILL): the image owns their connections from imageCommitted on.
   */
  killWithTracer(processes: Tracee[][]): void {
    for (const threads of processes) {
      for (const t of threads)
        native.ptrace.setOptions(t.pid, PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL | (this.suspended.has(t.pid) ? PTRACE_O_SUSPEND_SECCOMP : 0));
    }
  }

  /** A copy-on-write snapshot of a frozen process's memory (Tracee.snapshotMm): the pid holding it. */
  snapshot(t: Tracee): number {
    return t.snapshotMm(this.optionsOf(t));
  }

  /** A userfaultfd of a frozen process's address space, in ckpt (Tracee.userfaultfd): for write tracking. */
  userfaultfd(t: Tracee): number {
    return t.userfaultfd(this.optionsOf(t));
  }

  /** The ptrace options a frozen thread has. */
  private optionsOf(t: Tracee): number {
    return PTRACE_O_TRACESYSGOOD | (this.suspended.has(t.pid) ? PTRACE_O_SUSPEND_SECCOMP : 0);
  }

  isFrozen(t: Tracee): boolean {
    return this.frozen.has(t.pid);
  }

  /** Thaws everything still frozen (error path). */
  thawAll(): void {
    for (const t of [...this.frozen.values()]) this.thaw(t);
  }

  /**
   * Kills frozen processes (after a successful dump), consumes their threads' exits as tracer,
   * and frees their pids for a restore at once. Killed with their parents, the tree's processes
   * would go to init (or a subreaper) as zombies, whose pids stay taken until it reaps them: a
   * restore of the image then waits for them (here, the VM's init reaps 1.1-1.7 s later: a dump
   * and restore of nginx's master and two workers took 1.8 s, 1.5 of it that wait). So the root,
   * still frozen, is made a child subreaper first (a prctl run in it): the rest of the tree is
   * killed, each orphan goes to the root as its parent dies, and the root reaps them all (wait4
   * run in it) before it dies in turn. Where the root cannot be made one, the tree dies at once,
   * its orphans left to init as before. The root's own pid is its parent's to reap, as ever.
   */
  killFrozen(processes: Tracee[][]): void {
    const pids = new Set(processes.map((threads) => threads[0].pid));
    const inTree = (threads: Tracee[]) => {
      try {
        return pids.has(readStat(threads[0].pid).ppid);
      } catch {
        return false; // gone
      }
    };
    const rest = processes.filter(inTree);
    const roots = processes.filter((threads) => !rest.includes(threads));
    if (rest.length && roots.every((threads) => this.makeSubreaper(threads))) {
      this.killAndCollect(rest);
      for (const threads of roots) this.reapDeadChildren(threads);
      this.killAndCollect(roots);
    } else this.killAndCollect(processes);
  }

  /** PR_SET_CHILD_SUBREAPER run in a frozen process (whose death comes next); whether it took. */
  private makeSubreaper(threads: Tracee[]): boolean {
    for (const t of threads) {
      try {
        return t.syscallRaw(SYS.prctl, PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) === 0n;
      } catch (e) {
        log('make %d a subreaper in thread %d: %s', threads[0].pid, t.pid, (e as Error).message);
      }
    }
    return false;
  }

  /** SIGKILLs each process, then collects every task's exit as tracer. */
  private killAndCollect(processes: Tracee[][]): void {
    for (const threads of processes) {
      for (const t of threads) {
        this.frozen.delete(t.pid);
        native.mem.unpinProc(t.pid);
        native.ptrace.takeSuppressedSignals(t.pid);
      }
      try {
        process.kill(threads[0].pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    // In whatever order they come: a pid namespace's init only finishes dying once the rest of
    // its namespace has.
    const pending = new Set(processes.flat().map((t) => t.pid));
    const deadline = Date.now() + 10000;
    // A small process is gone within a millisecond or two: look again soon at first.
    let polls = 0;
    while (pending.size && Date.now() < deadline) {
      let progressed = false;
      for (const tid of [...pending]) {
        try {
          const st = native.proc.tryWait(tid);
          if (!st) continue;
          if (st.kind === 'exited' || st.kind === 'killed') pending.delete(tid);
          progressed = true;
        } catch {
          pending.delete(tid); // not ours to wait for any more: gone
          progressed = true;
        }
      }
      if (!progressed) sleepSync(polls++ < 20 ? 0.1 : 2);
    }
  }

  /**
   * Has a frozen process reap its dead children (wait4(-1, WNOHANG | __WALL) run in it until it
   * finds none): the dump is complete and the process dies next, so whatever it would have done
   * with their status is moot. Run in the first of its threads that can; where none can, the
   * children go to init with it.
   */
  private reapDeadChildren(threads: Tracee[]): void {
    for (const t of threads) {
      try {
        for (let i = 0; i < 100_000 && t.syscallRaw(SYS.wait4, -1, 0, WNOHANG | WALL, 0) > 0n; i++);
        return;
      } catch (e) {
        log('reap the children of %d in thread %d: %s', threads[0].pid, t.pid, (e as Error).message);
      }
    }
  }

  private detachQuietly(pid: number): void {
    const pending = native.ptrace.takeSuppressedSignals(pid);
    try {
      native.ptrace.detach(pid, 0);
    } catch (e) {
      log('detach %d failed: %s', pid, (e as Error).message);
    }
    for (const sig of pending) {
      try {
        process.kill(pid, sig);
      } catch {
        /* gone */
      }
    }
  }

  /**
   * Creates a restore stub with the given pid (set_tid), traced by us and stopped at its exec:
   * the raw material the restore stages rebuild into the checkpointed process. It is our child,
   * or `parent`'s (forkStub).
   */
  spawnStub(setTid: number | number[], opts: { setsid?: boolean; newPidNs?: boolean; newIpcNs?: boolean; parent?: number } = {}): Tracee {
    const tids = Array.isArray(setTid) ? setTid : setTid ? [setTid] : [];
    const pid = tids.at(-1) ?? 0;
    const cloneFlags = (opts.newPidNs ? CLONE_NEWPID : 0) | (opts.newIpcNs ? CLONE_NEWIPC : 0);
    let child: number;
    try {
      child =
        opts.parent === undefined || opts.parent === process.pid
          ? spawnOwnStub(tids, !!opts.setsid, cloneFlags)
          : this.forkStub(opts.parent, tids, !!opts.setsid, cloneFlags);
    } catch (e) {
      const err = e as NativeError;
      if (err.code === 'EEXIST') {
        throw new CkptError('ERR_CKPT_PID_TAKEN', `cannot restore pid ${pid}: the pid is in use by ${describePid(pid)}`, {
          cause: e,
          hint: `stop that process (kill ${pid}) and retry, or restore inside a fresh pid namespace`,
        });
      }
      throw e;
    }
    // Its threads and children inherit the options: with PTRACE_O_SUSPEND_SECCOMP, seccomp
    // filters restored early do not see the syscalls that rebuild the rest of the process.
    const options = PTRACE_O_EXITKILL | PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK;
    try {
      native.ptrace.setOptions(child, options | PTRACE_O_SUSPEND_SECCOMP);
      stubsSuspendSeccomp = true;
    } catch {
      native.ptrace.setOptions(child, options); // ckpt runs under seccomp itself, or lacks CAP_SYS_ADMIN
      stubsSuspendSeccomp = false;
    }
    log('stub %d ready', child);
    return new Tracee(child);
  }

  /**
   * A stub that is `parent`'s child instead of ours: `ckpt server` restores for a command, whose
   * restored root must be the command's child as it would be had the command restored it itself
   * (its session and group, its subreaper, its cgroup, limits and fds 0-2). The parent's main
   * thread is seized just long enough to run a clone3 with the stub's set_tid in it; the fork,
   * traced from birth, is then made what spawnOwnStub's child is before it execs the stub: our
   * pidfd at fd 3 and no fd above, default signal dispositions, nothing blocked, its own session
   * if asked. It never runs an instruction of the parent's: every step is a remote syscall, from
   * syscall stop to syscall stop. The parent is seized with PTRACE_O_EXITKILL (the fork inherits
   * it at birth): should ckpt die meanwhile, neither is left running half-made.
   */
  private forkStub(parent: number, tids: number[], setsid: boolean, cloneFlags: number): number {
    let fork: Tracee | undefined;
    let scratch = 0;
    let pidfd = -1;
    try {
      this.withSeized(parent, PTRACE_O_TRACEFORK | PTRACE_O_TRACEEXEC, (host) => {
        try {
          pidfd = Number(host.syscall(SYS.pidfd_open, process.pid, 0));
          scratch = host.scratch();
          fork = remoteClone(host, tids, { flags: cloneFlags });
          this.foreignParents.set(fork.pid, parent);
        } finally {
          if (pidfd >= 0) host.syscallRaw(SYS.close, pidfd);
          if (host.scratchRange) host.releaseScratch();
        }
      });
    } catch (e) {
      if (fork) this.killStub(fork.pid);
      if (e instanceof CkptError || (e as NativeError).code === 'EEXIST') throw e;
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot make the restored root a child of pid ${parent}: ${(e as Error).message}`, { cause: e });
    }
    if (!fork) throw new CkptError('ERR_CKPT_RESTORE_FAILED', `no fork of pid ${parent}`);
    try {
      fork.adoptScratch(scratch);
      if (pidfd === STUB_PIDFD) fork.syscall(SYS.fcntl, STUB_PIDFD, F_SETFD, 0);
      else fork.syscall(SYS.dup3, pidfd, STUB_PIDFD, 0);
      fork.syscall(SYS.close_range, STUB_PIDFD + 1, 0xffffffff, 0);
      // Handlers go at exec; what is ignored stays ignored (SIGPIPE, in Node).
      const zeros = fork.put(Buffer.alloc(32), 0);
      const ignored = BigInt(`0x${readStatus(fork.pid).SigIgn ?? '0'}`);
      for (let sig = 1; sig <= 64; sig++) if ((ignored >> BigInt(sig - 1)) & 1n) fork.syscall(SYS.rt_sigaction, sig, zeros, 0, 8);
      fork.syscall(SYS.rt_sigprocmask, SIG_SETMASK, zeros, 0, 8);
      if (setsid) fork.syscall(SYS.setsid);
      const path = fork.putString(stubPath, 64);
      const argv = Buffer.alloc(16);
      argv.writeBigUInt64LE(BigInt(path), 0);
      const r = native.ptrace.remoteExec(fork.pid, fork.syscallInsn, path, fork.put(argv, 32), zeros);
      checkSyscall('execve', fork.pid, BigInt(r));
    } catch (e) {
      this.killStub(fork.pid);
      throw e;
    }
    return fork.pid;
  }

  /** Kills a stub we created and reaps it (rollback). */
  killStub(pid: number): void {
    killTraced(pid);
    const parent = this.foreignParents.get(pid);
    if (parent === undefined) return;
    this.foreignParents.delete(pid);
    this.reapIn(parent, pid);
  }

  /**
   * Has `parent` reap its dead child `pid` (a wait4 run in it), as killTraced reaps our own: a
   * failed restore leaves no zombie behind, not even until the command exits. A parent gone
   * meanwhile hands it to its reaper.
   */
  private reapIn(parent: number, pid: number): void {
    try {
      this.withSeized(parent, 0, (host) => {
        for (let i = 0; i < 200 && host.syscallRaw(SYS.wait4, pid, 0, WNOHANG | WALL, 0) === 0n; i++) sleepSync(1);
      });
    } catch (e) {
      log('reap %d in %d: %s', pid, parent, (e as Error).message);
    }
  }

  /**
   * fn with the main thread of `pid` seized and stopped (a process of ours that waits meanwhile,
   * not one being dumped), then let go as it was: its registers back (an interrupted syscall
   * restarts), the signals that came meanwhile delivered. With PTRACE_O_EXITKILL: should ckpt die
   * during fn, the process dies rather than run on with registers half-set.
   */
  private withSeized<T>(pid: number, options: number, fn: (t: Tracee) => T): T {
    native.ptrace.seize(pid, PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL | options);
    let t: Tracee | undefined;
    try {
      const st = native.ptrace.interruptAndWait(pid, 5000);
      if (st.kind !== 'event-stop') throw new CkptError('ERR_CKPT_RESTORE_FAILED', `pid ${pid} did not stop under ptrace (${st.kind})`);
      t = new Tracee(pid);
      return fn(t);
    } finally {
      try {
        if (t) native.ptrace.setRegs(pid, t.resumeRegs);
      } finally {
        this.detachQuietly(pid);
      }
    }
  }
}

const SIG_SETMASK = 2;
const PR_SET_CHILD_SUBREAPER = 36;
const WNOHANG = 1;
const WALL = 0x40000000;

/** A stub that is our child (native spawnStub): its pid, stopped at its exec trap. */
function spawnOwnStub(tids: number[], setsid: boolean, cloneFlags: number): number {
  // The stub keeps a pidfd of the restorer as fd 3: through it (pidfd_getfd) it takes every fd
  // the restorer prepares, whatever pid namespace it lives in.
  const pidfd = native.proc.pidfdOpen(process.pid);
  let child: number;
  try {
    child = native.proc.spawnStub(stubPath, tids, setsid ? 1 : 0, cloneFlags, pidfd);
  } finally {
    closeSync(pidfd);
  }
  const st = native.ptrace.waitStop(child, 10000);
  if (st.kind !== 'signal' || st.signal !== 5) {
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `restore stub ${child} did not stop at exec (${JSON.stringify(st)})`);
  }
  return child;
}

/** A service's key in the container (a typedi Token). */
export type ServiceToken<T> = Token<T>;

/** Creates and opens image directories. Replace it to store images elsewhere (an object store, a page server). */
export interface ImageStore {
  create(dir: string, opts: ImageWriterOptions): ImageWriter;
  open(dir: string, opts?: ImageOpenOptions): ImageReader;
}

/** The services of one session. Plugins reach them here, never by importing the container. */
export interface Services {
  readonly container: ContainerInstance;
  readonly processes: ProcessControl;
  readonly images: ImageStore;
  readonly netlock: NetworkLocks;
  /** A logger under ckpt:<area>. */
  logger(area: string): Logger;
}

/** Freezing, thawing and creating processes: one ProcessControl per session (it tracks what it froze). */
export const PROCESS_CONTROL = new Token<() => ProcessControl>('ckpt.processes');
export const IMAGE_STORE = new Token<ImageStore>('ckpt.images');
export const NETWORK_LOCK = new Token<NetworkLocks>('ckpt.netlock');
export const LOGGER = new Token<(area: string) => Logger>('ckpt.logger');

const defaultImageStore: ImageStore = {
  create: (dir, opts) => new ImageWriter(dir, opts),
  open: (dir, opts) => ImageReader.open(dir, opts),
};

let containers = 0;

/** The container of one Ckpt instance, with core's default services; plugins may replace them (ctx.provide). */
export function createContainer(): ContainerInstance {
  const container = Container.of(`ckpt-${process.pid}-${++containers}-${randomHex(3)}`);
  container.set(PROCESS_CONTROL, () => new ProcessControl());
  container.set(IMAGE_STORE, defaultImageStore);
  container.set(NETWORK_LOCK, new NftNetworkLocks());
  container.set(LOGGER, logger);
  return container;
}

/** The services of one session, from the instance's container. */
export function sessionServices(container: ContainerInstance): Services {
  // Frozen: a plugin changes behaviour through hooks, or replaces a whole service with
  // ctx.provide before any session; nobody patches a session's services (it throws).
  const processes = container.get(PROCESS_CONTROL)();
  Object.freeze(processes);
  const services: Services = {
    container,
    processes,
    get images() {
      return container.get(IMAGE_STORE);
    },
    get netlock() {
      return container.get(NETWORK_LOCK);
    },
    logger: (area: string) => container.get(LOGGER)(area),
  };
  return Object.freeze(services);
}

/** A guard mapping a killed ckpt left in a process (see guard.ts). */
export interface StaleGuard {
  pid: number;
  comm: string;
  addr: number;
  size: number;
}

/**
 * Guard mappings killed dumps left in running processes (`ckpt check`). With repair, each such
 * process is frozen for a moment, which removes them, and let go. A process another tracer holds
 * is reported, not touched.
 */
export function staleGuardMappings(opts: { repair?: boolean } = {}): StaleGuard[] {
  const out: StaleGuard[] = [];
  for (const name of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    const pid = Number(name);
    if (pid === process.pid) continue;
    let found: Vma[];
    try {
      if (!readFileSync(`/proc/${pid}/maps`, 'utf8').includes(' rwxp 00000000 00:00 0 ')) continue;
      found = staleGuards(pid);
    } catch {
      continue;
    }
    if (!found.length) continue;
    const comm = readStat(pid).comm;
    out.push(...found.map((v) => ({ pid, comm, addr: v.start, size: v.end - v.start })));
    if (!opts.repair) continue;
    const pc = new ProcessControl();
    try {
      for (const t of pc.freeze(pid)) pc.thaw(t);
    } catch (e) {
      log('cannot remove the guard mappings of %d: %s', pid, (e as Error).message);
    }
  }
  pruneGuardNotes();
  return out;
}
