/**
 * @ckpt/plugin-registers — CPU and signal state of each task.
 *
 *   registers: general-purpose registers (NT_PRSTATUS, incl. fs_base/gs_base) and the full
 *              XSTATE area (x87, SSE, AVX, AVX-512...), size and XCR0 checked at restore;
 *   signals:   all 64 dispositions (read by remote rt_sigaction), the blocked mask, pending
 *              signals (per-thread and shared, PTRACE_PEEKSIGINFO);
 *   threads:   rseq registration, robust futex list, clear_child_tid.
 *
 * Syscall restart: a task frozen inside a syscall is restored so that it re-enters it.
 * -ERESTARTSYS/-ERESTARTNOINTR/-ERESTARTNOHAND: the syscall is re-issued as it was.
 * -ERESTART_RESTARTBLOCK (the kernel's restart_block does not survive a restore):
 *   nanosleep / clock_nanosleep are re-issued with the remaining time the kernel wrote to the
 *   caller's `rem` (absolute sleeps unchanged); poll is re-issued with its original timeout;
 *   anything else returns EINTR, as after any signal.
 */
import { CkptError, definePlugin, type ProcessDump, type ProcessRestore } from '@ckpt/core';
import { native, Regs, SYS, ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK } from '@ckpt/native';

export const NAME = '@ckpt/plugin-registers';

export interface SigactionRecord {
  sig: number;
  handler: string;
  flags: string;
  restorer: string;
  mask: string;
}

export interface RegistersRecord {
  gpr: string;
  xstate: string;
  xstateSize: number;
  xcr0: string;
  sigmask: string;
  sigactions: SigactionRecord[];
  pending: { thread: string[]; shared: string[] };
  rseq: { pointer: string; size: number; signature: number } | null;
  robustList: { head: string; len: number };
  clearChildTid: string;
}

const PR_GET_TID_ADDRESS = 40;
const SIGKILL = 9, SIGSTOP = 19;
const ALL_SIGNALS = (1n << 64n) - 1n;
const hex = (v: bigint) => '0x' + v.toString(16);

async function dumpRegisters(proc: ProcessDump): Promise<void> {
  const { pid, tracee } = proc;
  const xstate = native.getXstate(pid);
  const xcr0 = xstate.length >= 472 ? xstate.readBigUInt64LE(464) : 0n;
  proc.session.meta['registers.xstateSize'] = xstate.length;
  proc.session.meta['registers.xcr0'] = hex(xcr0);
  const rec = proc.get<Partial<RegistersRecord>>(NAME) ?? {};
  Object.assign(rec, {
    gpr: tracee.frozenRegs.toString('base64'),
    xstate: xstate.toString('base64'),
    xstateSize: xstate.length,
    xcr0: hex(xcr0),
  });
  proc.put(NAME, rec);
}

async function dumpSignals(proc: ProcessDump): Promise<void> {
  const { pid, tracee } = proc;
  const base = tracee.scratch();
  const sigactions: SigactionRecord[] = [];
  for (let sig = 1; sig <= 64; sig++) {
    if (sig === SIGKILL || sig === SIGSTOP) continue;
    tracee.syscall(SYS.rt_sigaction, sig, 0, base, 8);
    const b = tracee.read(base, 32);
    const [handler, flags, restorer, mask] = [0, 8, 16, 24].map((o) => b.readBigUInt64LE(o));
    if (handler === 0n && flags === 0n && mask === 0n) continue; // SIG_DFL, nothing to restore
    sigactions.push({ sig, handler: hex(handler), flags: hex(flags), restorer: hex(restorer), mask: hex(mask) });
  }
  tracee.syscall(SYS.prctl, PR_GET_TID_ADDRESS, base, 0, 0, 0);
  const clearChildTid = tracee.read(base, 8).readBigUInt64LE(0);
  const rseq = native.getRseq(pid);
  const robust = native.getRobustList(pid);
  const rec = proc.get<Partial<RegistersRecord>>(NAME) ?? {};
  Object.assign(rec, {
    sigmask: hex(native.getSigmask(pid)),
    sigactions,
    pending: {
      thread: native.peekSiginfo(pid, false).map((b) => b.toString('base64')),
      shared: native.peekSiginfo(pid, true).map((b) => b.toString('base64')),
    },
    rseq: rseq ? { pointer: hex(rseq.pointer), size: rseq.size, signature: rseq.signature } : null,
    robustList: { head: hex(robust.head), len: robust.len },
    clearChildTid: hex(clearChildTid),
  });
  proc.put(NAME, rec);
}

async function restoreSignals(proc: ProcessRestore): Promise<void> {
  const rec = proc.get<RegistersRecord>(NAME);
  const stub = proc.stub;
  if (!rec || !stub) return;
  // Everything blocked until the very end, so queued signals wait for the real mask.
  native.setSigmask(stub.pid, ALL_SIGNALS);
  for (const a of rec.sigactions) {
    const b = Buffer.alloc(32);
    [a.handler, a.flags, a.restorer, a.mask].forEach((v, i) => b.writeBigUInt64LE(BigInt(v), i * 8));
    stub.syscall(SYS.rt_sigaction, a.sig, stub.put(b, 0), 0, 8);
  }
  for (const [list, shared] of [[rec.pending.thread, false], [rec.pending.shared, true]] as const) {
    for (const s of list) {
      const info = Buffer.from(s, 'base64');
      const signo = info.readInt32LE(0);
      const addr = stub.put(info, 0);
      if (shared) stub.syscall(SYS.rt_sigqueueinfo, stub.pid, signo, addr);
      else stub.syscall(SYS.rt_tgsigqueueinfo, stub.pid, stub.pid, signo, addr);
    }
  }
}

async function restoreThreadState(proc: ProcessRestore): Promise<void> {
  const rec = proc.get<RegistersRecord>(NAME);
  const stub = proc.stub;
  if (!rec || !stub) return;
  if (rec.rseq) stub.syscall(SYS.rseq, BigInt(rec.rseq.pointer), rec.rseq.size, 0, rec.rseq.signature);
  if (BigInt(rec.robustList.head) !== 0n) stub.syscall(SYS.set_robust_list, BigInt(rec.robustList.head), rec.robustList.len);
  stub.syscall(SYS.set_tid_address, BigInt(rec.clearChildTid));
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
  const here = native.getXstate(stub.pid);
  if (here.length !== rec.xstateSize) {
    throw new CkptError('ERR_CKPT_IMAGE_INCOMPATIBLE',
      `the image's FPU/vector state (XSTATE ${rec.xstateSize} bytes, xcr0 ${rec.xcr0}) does not fit this CPU (${here.length} bytes)`,
      { hint: 'restore on a machine with the same CPU features' });
  }
  // The last remote syscall: the trampoline goes. From here on the stub runs no injected code.
  stub.releaseScratch();
  native.setXstate(stub.pid, Buffer.from(rec.xstate, 'base64'));
  native.setRegs(stub.pid, resumeRegisters(Buffer.from(rec.gpr, 'base64')));
  native.setSigmask(stub.pid, BigInt(rec.sigmask));
}

export const registersPlugin = definePlugin<void>(() => ({
  name: NAME,
  version: '0.1.0',
  apply(hooks) {
    hooks.registers.dump.tapPromise(NAME, dumpRegisters);
    hooks.signals.dump.tapPromise(NAME, dumpSignals);
    hooks.signals.restore.tapPromise(NAME, restoreSignals);
    hooks.threads.restore.tapPromise(NAME, restoreThreadState);
    hooks.registers.restore.tapPromise(NAME, restoreRegisters);
  },
}));

export default registersPlugin;
