/**
 * @ckpt/plugin-registers — CPU and signal state of each task.
 *
 *   registers: general-purpose registers (NT_PRSTATUS, incl. fs_base/gs_base) and the full
 *              XSTATE area (x87, SSE, AVX, AVX-512...), size and XCR0 checked at restore;
 *   signals:   the dispositions caught or ignored, and SIGCHLD's (read by remote rt_sigaction;
 *              a default one's flags and mask act on nothing), the blocked mask, pending
 *              signals (per-thread and shared, PTRACE_PEEKSIGINFO);
 *   threads:   every thread recreated with its tid (clone3 set_tid from the leader), each with its
 *              registers, mask, pending signals, rseq registration, robust futex list,
 *              clear_child_tid and name.
 *
 * Syscall restart: a task frozen inside a syscall is restored so that it re-enters it.
 * -ERESTARTSYS/-ERESTARTNOINTR/-ERESTARTNOHAND: the syscall is re-issued as it was.
 * -ERESTART_RESTARTBLOCK (the kernel's restart_block does not survive a restore):
 *   nanosleep / clock_nanosleep are re-issued with the remaining time the kernel wrote to the
 *   caller's `rem` (absolute sleeps unchanged); poll is re-issued with its original timeout;
 *   anything else returns EINTR, as after any signal.
 */
import {
  CkptError,
  definePlugin,
  procfs,
  remoteCloneThreads,
  Tracee,
  type BatchedSyscall,
  type DumpSession,
  type ProcessDump,
  type ProcessRestore,
} from '@ckpt/core';
import {
  checkSyscall,
  native,
  Regs,
  SYS,
  ERESTARTSYS,
  ERESTARTNOINTR,
  ERESTARTNOHAND,
  ERESTART_RESTARTBLOCK,
  PR_GET_TID_ADDRESS,
  PR_SET_NAME,
  SIGCHLD,
  SIGKILL,
  SIGSTOP,
  ALL_SIGNALS,
} from '@ckpt/native';
import { registersRecord, type RegistersRecord, type ThreadRecord } from './record.js';

export {
  registersRecord,
  sigactionRecord,
  threadRecord,
  type RegistersRecord,
  type SigactionRecord,
  type ThreadRecord,
} from './record.js';

export const NAME = '@ckpt/plugin-registers';

const SS_ONSTACK = 1,
  SS_DISABLE = 2;
const hex = (v: bigint) => '0x' + v.toString(16);

/** The record being assembled across the dump stages, and each thread's entry in it. */
function recordOf(proc: ProcessDump): RegistersRecord {
  let rec = proc.get<RegistersRecord>(NAME);
  if (!rec) {
    rec = {
      xstateSize: 0,
      xcr0: '0x0',
      sigactions: [],
      sharedPending: [],
      threads: proc.threads.map((t) => ({ tid: t.pid }) as ThreadRecord),
    };
    proc.put(NAME, rec);
  }
  return rec;
}

/** What only each thread can tell, as threadsAll asked it: clear_child_tid and the alternate stack. */
const threadAnswers = new WeakMap<ProcessDump, { tidAddress: Buffer[]; altStack: Buffer[] }>();

/**
 * Every thread of every process asked at once (Tracee.syscallEach across the tree): its
 * clear_child_tid (prctl) and its alternate stack (sigaltstack). One process after another, each
 * of those was a stop per process.
 */
async function dumpThreadsAll(session: DumpSession): Promise<void> {
  const all = session.processes.flatMap((p) => p.threads);
  const ask = (name: string, size: number, call: (out: Buffer) => BatchedSyscall) => {
    const outs = all.map(() => Buffer.alloc(size));
    Tracee.syscallEach(
      all,
      outs.map((b) => call(b)),
    ).forEach((r, i) => checkSyscall(name, all[i].pid, r));
    return outs;
  };
  const tidAddress = ask('prctl', 8, (b) => [SYS.prctl, PR_GET_TID_ADDRESS, b, 0, 0, 0]);
  const altStack = ask('sigaltstack', 24, (b) => [SYS.sigaltstack, 0, b]);
  let at = 0;
  for (const proc of session.processes) {
    const n = proc.threads.length;
    threadAnswers.set(proc, { tidAddress: tidAddress.slice(at, at + n), altStack: altStack.slice(at, at + n) });
    at += n;
  }
}

async function dumpThreads(proc: ProcessDump): Promise<void> {
  const rec = recordOf(proc);
  const { tidAddress, altStack } = threadAnswers.get(proc)!;
  const comms = procfs.readFrozenTaskFiles(
    proc.pid,
    proc.threads.map((t) => t.pid),
    'comm',
  );
  proc.threads.forEach((t, i) => {
    const th = rec.threads[i];
    th.clearChildTid = hex(tidAddress[i].readBigUInt64LE(0));
    const rseq = native.ptrace.getRseq(t.pid);
    th.rseq = rseq ? { pointer: hex(rseq.pointer), size: rseq.size, signature: rseq.signature } : null;
    const robust = native.ptrace.getRobustList(t.pid);
    th.robustList = { head: hex(robust.head), len: robust.len };
    th.comm = comms[i].replace(/\n$/, '');
    const ss = altStack[i];
    const ssFlags = ss.readInt32LE(8);
    if (!(ssFlags & SS_DISABLE)) th.altStack = { sp: hex(ss.readBigUInt64LE(0)), flags: ssFlags & ~SS_ONSTACK, size: Number(ss.readBigUInt64LE(16)) };
  });
}

/** The dispositions and interval timers of each process, as signalsAll asked them. */
const signalAnswers = new WeakMap<ProcessDump, { actions: Array<[number, Buffer]>; itimers: Buffer[] }>();

/**
 * Every process asked at once, one batch each (Tracee.syscallsEach across the tree): one rt_sigaction
 * per signal that is caught or ignored (SigCgt, SigIgn), and SIGCHLD (a default disposition's
 * flags and mask act on nothing else, and a query costs a stop), then its three interval timers.
 */
async function dumpSignalsAll(session: DumpSession): Promise<void> {
  const asked = session.processes.map((proc) => {
    const status = procfs.readStatus(proc.procPid);
    const set = BigInt(`0x${status.SigCgt ?? '0'}`) | BigInt(`0x${status.SigIgn ?? '0'}`) | (1n << BigInt(SIGCHLD - 1));
    const actions: Array<[number, Buffer]> = [];
    for (let sig = 1; sig <= 64; sig++) {
      if (sig === SIGKILL || sig === SIGSTOP || !((set >> BigInt(sig - 1)) & 1n)) continue;
      actions.push([sig, Buffer.alloc(32)]);
    }
    return { actions, itimers: [0, 1, 2].map(() => Buffer.alloc(32)) };
  });
  Tracee.syscallsEach(
    session.processes.map((p) => p.tracee),
    asked.map(({ actions, itimers }): BatchedSyscall[] => [
      ...actions.map(([sig, b]): BatchedSyscall => [SYS.rt_sigaction, sig, 0, b, 8]),
      ...itimers.map((b, which): BatchedSyscall => [SYS.getitimer, which, b]),
    ]),
  );
  session.processes.forEach((proc, i) => signalAnswers.set(proc, asked[i]));
}

async function dumpSignals(proc: ProcessDump): Promise<void> {
  const { tracee } = proc;
  const rec = recordOf(proc);
  const { actions, itimers } = signalAnswers.get(proc)!;
  for (const [sig, b] of actions) {
    const [handler, flags, restorer, mask] = [0, 8, 16, 24].map((o) => b.readBigUInt64LE(o));
    if (handler === 0n && flags === 0n && mask === 0n) continue; // SIG_DFL, nothing to restore
    rec.sigactions.push({ sig, handler: hex(handler), flags: hex(flags), restorer: hex(restorer), mask: hex(mask) });
  }
  rec.sharedPending = native.ptrace.peekSiginfo(tracee.pid, true).map((b) => b.toString('base64'));
  const timers: NonNullable<RegistersRecord['itimers']> = [];
  rec.itimers = timers;
  itimers.forEach((v, which) => {
    const us = (o: number) => Number(v.readBigInt64LE(o)) * 1e6 + Number(v.readBigInt64LE(o + 8));
    // A periodic real timer whose SIGALRM is still pending reads as expired (value 0): the kernel
    // re-arms it only when that signal is taken. It is a running timer all the same.
    if (us(16) > 0 || us(0) > 0) timers.push([which, us(0), us(16)]);
  });
  proc.threads.forEach((t, i) => {
    rec.threads[i].sigmask = hex(t.sigmask);
    rec.threads[i].pending = native.ptrace.peekSiginfo(t.pid, false).map((b) => b.toString('base64'));
  });
}

async function dumpRegisters(proc: ProcessDump): Promise<void> {
  const rec = recordOf(proc);
  proc.threads.forEach((t, i) => {
    const xstate = native.ptrace.getXstate(t.pid);
    rec.threads[i].gpr = t.frozenRegs.toString('base64');
    rec.threads[i].xstate = xstate.toString('base64');
    rec.xstateSize = xstate.length;
    rec.xcr0 = hex(xstate.length >= 472 ? xstate.readBigUInt64LE(464) : 0n);
  });
  proc.session.meta['registers.xstateSize'] = rec.xstateSize;
  proc.session.meta['registers.xcr0'] = rec.xcr0;
}

/** rt_(tg)sigqueueinfo calls that queue saved siginfos in a task; tgid and tid as seen inside the process's pid namespace. */
function queueSignals(tgid: number, tid: number, list: string[], shared: boolean): BatchedSyscall[] {
  return list.map((s) => {
    const info = Buffer.from(s, 'base64');
    const signo = info.readInt32LE(0);
    return shared ? [SYS.rt_sigqueueinfo, tgid, signo, info] : [SYS.rt_tgsigqueueinfo, tgid, tid, signo, info];
  });
}

async function restoreSignals(proc: ProcessRestore): Promise<void> {
  const rec = proc.get<RegistersRecord>(NAME);
  const stub = proc.stub;
  if (!rec || !stub) return;
  // Everything blocked until the very end, so queued signals wait for the real masks (threads
  // created later inherit this mask).
  native.ptrace.setSigmask(stub.pid, ALL_SIGNALS);
  // The dispositions, then the shared pending signals, in one stop.
  const actions = rec.sigactions.map((a): BatchedSyscall => {
    const b = Buffer.alloc(32);
    [a.handler, a.flags, a.restorer, a.mask].forEach((v, i) => b.writeBigUInt64LE(BigInt(v), i * 8));
    return [SYS.rt_sigaction, a.sig, b, 0, 8];
  });
  const tgid = proc.session.vpid(proc.pid);
  stub.syscalls([...actions, ...queueSignals(tgid, tgid, rec.sharedPending, true)]);
}

/**
 * Creates the other threads (clone3 with set_tid from the leader) and restores per-thread state.
 * When the leader thread had exited, every thread of the record is a thread to make, and the
 * leader (the stub) is not among proc.threads: core has it exit at the resume.
 */
async function restoreThreads(proc: ProcessRestore): Promise<void> {
  const rec = proc.get<RegistersRecord>(NAME);
  const stub = proc.stub;
  if (!rec || !stub) return;
  const leaderExited = !!proc.record.leaderExited;
  // All in one stop of the leader (their start-ups overlap).
  const made = leaderExited ? rec.threads : rec.threads.slice(1);
  try {
    proc.threads = [
      ...(leaderExited ? [] : [stub]),
      ...remoteCloneThreads(
        stub,
        made.map((th) => proc.session.setTid(th.tid)),
      ),
    ];
  } catch (e) {
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot recreate the threads of pid ${proc.pid}: ${(e as Error).message}`, { cause: e });
  }
  // Each thread's own state in one stop, every thread's at once (Tracee.syscallsEach).
  const batches = rec.threads.map((th, i) => {
    const t = proc.threads[i];
    const calls: BatchedSyscall[] = [];
    if (th.rseq) calls.push([SYS.rseq, BigInt(th.rseq.pointer), th.rseq.size, 0, th.rseq.signature]);
    if (BigInt(th.robustList.head) !== 0n) calls.push([SYS.set_robust_list, BigInt(th.robustList.head), th.robustList.len]);
    calls.push([SYS.set_tid_address, BigInt(th.clearChildTid)]);
    if (th.altStack) {
      const ss = Buffer.alloc(24);
      ss.writeBigUInt64LE(BigInt(th.altStack.sp), 0);
      ss.writeInt32LE(th.altStack.flags, 8);
      ss.writeBigUInt64LE(BigInt(th.altStack.size), 16);
      calls.push([SYS.sigaltstack, ss, 0]);
    }
    if (t !== stub) calls.push([SYS.prctl, PR_SET_NAME, Buffer.from(`${th.comm.slice(0, 15)}\0`), 0, 0, 0]);
    calls.push(...queueSignals(proc.session.vpid(proc.pid), proc.session.vpid(th.tid), th.pending, false));
    return calls;
  });
  Tracee.syscallsEach(proc.threads, batches);
}

/** The registers a restored task resumes with (see the header comment on syscall restart). */
export function resumeRegisters(raw: Buffer): Buffer {
  const r = new Regs(Buffer.from(raw));
  const orig = r.signed('orig_rax');
  const ret = -r.signed('rax');
  if (orig >= 0n) {
    const back = () => r.set('rax', orig).set('rip', r.get('rip') - 2n);
    if (ret === BigInt(ERESTARTSYS) || ret === BigInt(ERESTARTNOINTR) || ret === BigInt(ERESTARTNOHAND)) {
      back();
    } else if (ret === BigInt(ERESTART_RESTARTBLOCK)) {
      if (orig === BigInt(SYS.nanosleep)) {
        back();
        if (r.get('rsi') !== 0n) r.set('rdi', r.get('rsi'));
      } else if (orig === BigInt(SYS.clock_nanosleep)) {
        back();
        const TIMER_ABSTIME = 1n;
        if ((r.get('rsi') & TIMER_ABSTIME) === 0n && r.get('r10') !== 0n) r.set('rdx', r.get('r10'));
      } else if (orig === BigInt(SYS.poll)) {
        back();
      } else {
        r.set('rax', -4n); // EINTR
      }
    }
  }
  r.set('orig_rax', -1n);
  return r.buf;
}

async function restoreRegisters(proc: ProcessRestore): Promise<void> {
  const rec = proc.get<RegistersRecord>(NAME);
  const stub = proc.stub;
  if (!rec || !stub) return;
  const here = native.ptrace.getXstate(stub.pid);
  if (here.length !== rec.xstateSize) {
    throw new CkptError(
      'ERR_CKPT_IMAGE_INCOMPATIBLE',
      `the image's FPU/vector state (XSTATE ${rec.xstateSize} bytes, xcr0 ${rec.xcr0}) does not fit this CPU (${here.length} bytes)`,
      { hint: 'restore on a machine with the same CPU features' },
    );
  }
  // Interval timers last: they start counting now (time spent checkpointed does not count).
  for (const [which, interval, left] of rec.itimers ?? []) {
    // Expired with its signal pending (restored pending too): the next period starts now.
    const value = left > 0 ? left : interval;
    const v = Buffer.alloc(32);
    [interval, value].forEach((us, k) => {
      v.writeBigInt64LE(BigInt(Math.floor(us / 1e6)), k * 16);
      v.writeBigInt64LE(BigInt(us % 1e6), k * 16 + 8);
    });
    stub.syscall(SYS.setitimer, which, stub.put(v, 0), 0);
  }
  // Registers last: core removes its trampoline after beforeResume, with one more injected
  // syscall that puts back the registers it found (these).
  rec.threads.forEach((th, i) => {
    const tid = proc.threads[i].pid;
    native.ptrace.setXstate(tid, Buffer.from(th.xstate, 'base64'));
    native.ptrace.setRegs(tid, resumeRegisters(Buffer.from(th.gpr, 'base64')));
    native.ptrace.setSigmask(tid, BigInt(th.sigmask));
  });
}

const SIGNAMES = [
  '',
  'HUP',
  'INT',
  'QUIT',
  'ILL',
  'TRAP',
  'ABRT',
  'BUS',
  'FPE',
  'KILL',
  'USR1',
  'SEGV',
  'USR2',
  'PIPE',
  'ALRM',
  'TERM',
  'STKFLT',
  'CHLD',
  'CONT',
  'STOP',
  'TSTP',
  'TTIN',
  'TTOU',
  'URG',
  'XCPU',
  'XFSZ',
  'VTALRM',
  'PROF',
  'WINCH',
  'IO',
  'PWR',
  'SYS',
];
const sigName = (n: number) => SIGNAMES[n] ?? `RT${n - 32}`;

/** `ckpt show`: handlers, threads, where each thread stopped and what it blocks. */
function describeRegisters(regs: RegistersRecord): string[] {
  const out: string[] = [];
  out.push(
    `signals: handlers for ${
      regs.sigactions
        .filter((a) => BigInt(a.handler) > 1n)
        .map((a) => sigName(a.sig))
        .join(' ') || 'none'
    }; ` +
      `ignored ${
        regs.sigactions
          .filter((a) => BigInt(a.handler) === 1n)
          .map((a) => sigName(a.sig))
          .join(' ') || 'none'
      }`,
  );
  out.push(`threads: ${regs.threads.length} (xstate ${regs.xstateSize} bytes each)`);
  for (const t of regs.threads) {
    const regsBuf = Buffer.from(t.gpr, 'base64');
    const orig = regsBuf.readBigInt64LE(120);
    const blocked = BigInt(t.sigmask);
    const names = [];
    for (let s = 1; s <= 64; s++) if (blocked & (1n << BigInt(s - 1))) names.push(sigName(s));
    out.push(
      `  tid ${t.tid} (${t.comm}) rip 0x${regsBuf.readBigUInt64LE(128).toString(16)}${orig >= 0n ? `, in syscall ${orig}` : ''}; blocked ${names.join(' ') || 'none'}`,
    );
  }
  return out;
}

export const registersPlugin = definePlugin(() => ({
  name: NAME,
  version: '0.2.0',
  description: 'threads (tids, rseq, robust lists), signals (dispositions, masks, pending, timers, altstack), registers and FPU/vector state',
  record: { version: 1, schema: registersRecord },
  claims: { stateClasses: ['threads', 'signals', 'registers'] },
  show: { process: (rec: unknown) => describeRegisters(rec as RegistersRecord) },
  apply(hooks) {
    hooks.threads.dumpAll.tapPromise(NAME, dumpThreadsAll);
    hooks.threads.dump.tapPromise(NAME, dumpThreads);
    hooks.signals.dumpAll.tapPromise(NAME, dumpSignalsAll);
    hooks.signals.dump.tapPromise(NAME, dumpSignals);
    hooks.registers.dump.tapPromise(NAME, dumpRegisters);
    hooks.signals.restore.tapPromise(NAME, restoreSignals);
    hooks.threads.restore.tapPromise(NAME, restoreThreads);
    hooks.registers.restore.tapPromise(NAME, restoreRegisters);
  },
}));

export default registersPlugin;
