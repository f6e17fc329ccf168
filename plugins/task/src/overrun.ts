/**
 * The overrun count of a POSIX timer (timer_getoverrun): how many periods its last signal
 * missed. No syscall sets it (timer_settime clears it); the kernel counts it when the timer's
 * signal is taken. So a timer that had one is armed by this code, in a way the kernel counts:
 * in the task its signal goes to, every signal blocked, it is armed with its own period and a
 * first expiry N + 1 periods before its next one (in the past), and its signal is taken at once
 * with sigtimedwait: the kernel forwards it past now counting N missed periods, and its next
 * expiry is where it was (see armCounted). Signals of that number already pending (restored from
 * the image) are taken out first and queued again after, each in the queue it was in.
 */
import { CkptError, procfs, withSignalsHeld, type ProcessRestore, type Tracee } from '@ckpt/core';
import { SYS } from '@ckpt/native';

const TIMER_ABSTIME = 1;
const NS = 1_000_000_000n;
/**
 * Clocks whose time is large (seconds since boot or the epoch), so that N periods fit before now:
 * REALTIME, MONOTONIC, BOOTTIME, REALTIME_ALARM, BOOTTIME_ALARM, TAI. A CPU-time clock of a
 * restored process starts near zero: its overruns are refused at the dump.
 */
export const WALL_CLOCKS = new Set([0, 1, 7, 8, 9, 11]);

interface Timer {
  id: number;
  clock: number;
  signal: number;
  overrun: number;
  /** Nanoseconds to the next expiry, and the period (decimal strings, as the record has them). */
  left: string;
  interval: string;
}

/** Whether signal `sig` is pending for thread tid (privately) or for its process (shared). */
function pendingIn(pid: number, tid: number, sig: number): { own: boolean; shared: boolean } {
  const st = procfs.readStatus(pid, tid);
  const bit = (key: string) => ((BigInt(`0x${st[key] ?? '0'}`) >> BigInt(sig - 1)) & 1n) === 1n;
  return { own: bit('SigPnd'), shared: bit('ShdPnd') };
}

/** Arms timer t (its overrun count N > 0) in `task`, the task its signal goes to. */
export function armWithOverrun(proc: ProcessRestore, task: Tracee, t: Timer): void {
  const where = `pid ${proc.pid}: POSIX timer ${t.id}`;
  const host = task.pid;
  const base = task.scratch();
  const [SET, INFO, ZERO, TS] = [0, 64, 256, 320];
  const set = Buffer.alloc(8);
  set.writeBigUInt64LE(1n << BigInt(t.signal - 1));
  task.put(set, SET);
  task.put(Buffer.alloc(16), ZERO);
  const take = () => task.syscallRaw(SYS.rt_sigtimedwait, base + SET, base + INFO, base + ZERO, 8);
  withSignalsHeld(host, () => {
    // Restored signals of that number: out of the way, with the queue each was in.
    const held: Array<{ info: Buffer; shared: boolean }> = [];
    for (;;) {
      const p = pendingIn(proc.stub!.pid, host, t.signal);
      if (!p.own && !p.shared) break;
      if (take() !== BigInt(t.signal)) break;
      held.push({ info: task.read(base + INFO, 128), shared: !p.own });
    }
    const counted = armCounted(task, t, base + TS, take, where);
    if (counted !== t.overrun) throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${where}: its overrun count came back as ${counted}, not ${t.overrun}`);
    const tgid = proc.session.vpid(proc.pid);
    for (const h of held) {
      const at = task.put(h.info, INFO);
      if (h.shared) task.syscall(SYS.rt_sigqueueinfo, tgid, t.signal, at);
      else task.syscall(SYS.rt_tgsigqueueinfo, tgid, procfs.nsPid(host), t.signal, at);
    }
  });
}

/**
 * Arms the timer (its own period I) with a first expiry E = now + left - (N + 1)·I, in the past,
 * and takes its signal at once: the kernel forwards it past now, counting N missed periods, and
 * its next expiry is now + left, as saved. Setting a timer clears its count, so this is the
 * timer's final arming. Should the signal be taken after `left` has passed (a very short left, or
 * a short period), the count is N + k: then again, k periods later (and the other way round).
 * Returns the count.
 */
function armCounted(task: Tracee, t: Timer, at: number, take: () => bigint, where: string): number {
  const period = BigInt(t.interval);
  const n = BigInt(t.overrun);
  let counted = -1;
  // A signal taken late (remote syscalls take ~0.2 ms each here, a period may be 1 ms) counts
  // one period more per period late: armed again that many periods later, a few times at most.
  let late = 0n;
  for (let attempt = 0; attempt < 6; attempt++) {
    task.syscall(SYS.clock_gettime, t.clock, at);
    const ts = task.read(at, 16);
    const now = ts.readBigInt64LE(0) * NS + ts.readBigInt64LE(8);
    const first = now + BigInt(t.left) + late * period - (n + 1n) * period;
    if (first <= 0n)
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${where} had ${t.overrun} overruns of ${period} ns, more than its clock (${t.clock}) has run here`);
    const its = Buffer.alloc(32);
    its.writeBigInt64LE(period / NS, 0);
    its.writeBigInt64LE(period % NS, 8);
    its.writeBigInt64LE(first / NS, 16);
    its.writeBigInt64LE(first % NS, 24);
    task.syscall(SYS.timer_settime, t.id, TIMER_ABSTIME, task.put(its, at - task.scratch()), 0);
    const got = take();
    if (got !== BigInt(t.signal)) throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${where}: its signal ${t.signal} did not come (${got})`);
    counted = Number(task.syscall(SYS.timer_getoverrun, t.id));
    if (counted === t.overrun) break;
    late += BigInt(counted - t.overrun);
  }
  return counted;
}
