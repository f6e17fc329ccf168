/** Restore: new ptys, the fds on them (fds.restore), then controlling terminals and foreground groups (fdsInstalled). */
import { chmodSync, chownSync, openSync } from 'node:fs';
import { CkptError, takeFd, type FdRecord, type Logger, type ProcessRestore, type Tracee } from '@ckpt/core';
import { native, SYS, O_APPEND, O_CLOEXEC, O_NOCTTY, O_NONBLOCK, O_RDWR, F_DUPFD_CLOEXEC, F_SETFL, SIGTTOU, SIGWINCH } from '@ckpt/native';
import {
  EPERM,
  int32,
  ioctlRead,
  ioctlWrite,
  KEEP_FLAGS,
  TCSETS,
  TIOCGPTN,
  TIOCGPTPEER,
  TIOCGWINSZ,
  TIOCPKT,
  TIOCSCTTY,
  TIOCSPGRP,
  TIOCSPTLCK,
  TIOCSWINSZ,
  WINSIZE_SIZE,
} from './ioctl.js';
import { closeQuietly, stateOf, type PtyPlan, type TtyState } from './plan.js';
import { putBack } from './queue.js';
import { NAME, type TtyFdData, type TtyProcessRecord } from './record.js';

function stubOf(proc: ProcessRestore): Tracee {
  if (!proc.stub) throw new Error(`pid ${proc.pid}: the process does not exist yet`);
  return proc.stub;
}

/** Runs fn on a copy of one of our fds inside the process, then closes the copy there. */
function inProcess<T>(proc: ProcessRestore, restorerFd: number, fn: (fd: number, t: Tracee) => T): T {
  const t = stubOf(proc);
  const fd = proc.borrowFd(restorerFd);
  try {
    return fn(fd, t);
  } finally {
    t.syscallRaw(SYS.close, fd);
  }
}

/** Runs fn with SIGTTOU blocked in the task (terminal changes from a background group). */
function withSigttouBlocked<T>(t: Tracee, fn: () => T): T {
  const old = native.ptrace.getSigmask(t.pid);
  native.ptrace.setSigmask(t.pid, old | (1n << BigInt(SIGTTOU - 1)));
  try {
    return fn();
  } finally {
    native.ptrace.setSigmask(t.pid, old);
  }
}

/** Creates the new pty of a plan (once): /dev/ptmx, unlocked, with the saved settings. */
function ensurePty(p: PtyPlan, proc: ProcessRestore, state: TtyState, log: Logger): number {
  if (p.master !== undefined) return p.master;
  let m: number;
  try {
    m = openSync('/dev/ptmx', O_RDWR | O_NOCTTY | O_CLOEXEC);
  } catch (e) {
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot create a pty for pid ${proc.pid} (open /dev/ptmx: ${(e as NodeJS.ErrnoException).code})`, {
      cause: e,
    });
  }
  state.open.add(m);
  p.master = m;
  inProcess(proc, m, (fd, t) => {
    if (!p.locked) ioctlWrite(t, fd, TIOCSPTLCK, int32(0), 0);
    p.newIndex = ioctlRead(t, fd, TIOCGPTN, 4, 0)?.readUInt32LE(0);
    if (p.termios) ioctlWrite(t, fd, TCSETS, Buffer.from(p.termios, 'base64'), 64);
    if (p.winsize) ioctlWrite(t, fd, TIOCSWINSZ, Buffer.from(p.winsize, 'base64'), 128);
    if (p.packet) ioctlWrite(t, fd, TIOCPKT, int32(1), 192);
  });
  if (p.queued && p.termios && !p.locked) putBack(m, Buffer.from(p.termios, 'base64'), p.queued);
  if (p.node && p.newIndex !== undefined) {
    // The slave's node as it was (owner and mode, e.g. after grantpt or a chown), on this host's devpts.
    const path = `/dev/pts/${p.newIndex}`;
    chownSync(path, p.node.uid, p.node.gid);
    chmodSync(path, p.node.mode);
  }
  log('pty %d of the image is now /dev/pts/%d', p.index, p.newIndex);
  return m;
}

/** A new open description of the new slave (in the restorer), through the master (TIOCGPTPEER). */
function openSlave(p: PtyPlan, proc: ProcessRestore, state: TtyState, flags: number, log: Logger): number {
  const m = ensurePty(p, proc, state, log);
  const t = stubOf(proc);
  return inProcess(proc, m, (fd) => {
    const peer = Number(t.syscall(SYS.ioctl, fd, TIOCGPTPEER, (flags & KEEP_FLAGS) | O_NOCTTY | O_CLOEXEC));
    try {
      return takeFd(t, peer);
    } finally {
      t.syscallRaw(SYS.close, peer);
    }
  });
}

/** --tty: a new open description of the restorer's terminal, with the saved termios applied once. */
function openTerminal(p: PtyPlan, proc: ProcessRestore, state: TtyState, flags: number): number {
  const term = state.terminal!;
  let fd: number;
  try {
    fd = openSync(`/proc/self/fd/${term.fd}`, (flags & KEEP_FLAGS) | O_NOCTTY | O_CLOEXEC);
  } catch (e) {
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `ckpt restore --tty: cannot open its own terminal (fd ${term.fd}): ${(e as NodeJS.ErrnoException).code}`, {
      cause: e,
    });
  }
  if (!term.termiosApplied && p.termios) {
    term.termiosApplied = true;
    inProcess(proc, fd, (n, t) => withSigttouBlocked(t, () => ioctlWrite(t, n, TCSETS, Buffer.from(p.termios!, 'base64'), 64)));
  }
  return fd;
}

/** fds.restore: the new master, or a new open of the new slave (or, --tty, of our terminal). */
export function makeRestoreFd(log: Logger) {
  return async function restoreFd(rec: FdRecord, proc: ProcessRestore): Promise<number | undefined> {
    const d = rec.data as TtyFdData;
    const state = stateOf(proc.session);
    const p = state.ptys.get(d.index);
    if (!p) throw new Error(`pty ${d.index} missing from the restore plan`);
    if (d.side === 'master') {
      const m = ensurePty(p, proc, state, log);
      native.fd.fcntl(m, F_SETFL, d.flags & (O_NONBLOCK | O_APPEND));
      return native.fd.fcntl(m, F_DUPFD_CLOEXEC, 0);
    }
    if (p.terminal) return openTerminal(p, proc, state, d.flags);
    return openSlave(p, proc, state, d.flags, log);
  };
}

/** An fd number of the process on the (new) slave of pty `index`, if it holds one. */
function slaveFdOf(proc: ProcessRestore, state: TtyState, index: number): number | undefined {
  for (const r of proc.fds) {
    const d = state.fdData.get(`${proc.pid}:${r.fd}`);
    if (d && d.side === 'slave' && d.index === index) return r.fd;
  }
  return undefined;
}

/** Runs fn on an fd of the process on the terminal that replaces pty p (its own, or a temporary one). */
function onTerminalFd(proc: ProcessRestore, p: PtyPlan, state: TtyState, log: Logger, fn: (fd: number, t: Tracee) => void): void {
  const own = slaveFdOf(proc, state, p.index);
  const t = stubOf(proc);
  if (own !== undefined) {
    fn(own, t);
    return;
  }
  const ours = p.terminal ? openTerminal(p, proc, state, O_RDWR) : openSlave(p, proc, state, O_RDWR, log);
  try {
    inProcess(proc, ours, fn);
  } finally {
    closeQuietly(ours);
  }
}

/**
 * --tty: when the restorer's terminal is not the size the program last knew, its foreground
 * group gets a SIGWINCH (as after a resize), left pending and blocked until the process resumes
 * with its own mask and handlers (a program without a handler ignores it, as always).
 */
function notifyResize(proc: ProcessRestore, p: PtyPlan, tpgid: number, fd: number, t: Tracee, log: Logger): void {
  if (!p.winsize || !tpgid) return;
  const now = ioctlRead(t, fd, TIOCGWINSZ, WINSIZE_SIZE, 256);
  const saved = Buffer.from(p.winsize, 'base64');
  if (!now || now.subarray(0, 4).equals(saved.subarray(0, 4))) return;
  for (const q of proc.session.processes) {
    if (!q.stub || q.record.pgid !== tpgid) continue;
    native.ptrace.setSigmask(q.stub.pid, native.ptrace.getSigmask(q.stub.pid) | (1n << BigInt(SIGWINCH - 1)));
    process.kill(q.stub.pid, 'SIGWINCH');
    log('pid %d: window %dx%d now %dx%d: SIGWINCH', q.pid, saved.readUInt16LE(0), saved.readUInt16LE(2), now.readUInt16LE(0), now.readUInt16LE(2));
  }
}

/** fdsInstalled: a session leader takes its terminal back; the foreground group is set again. */
export function makeAfterInstall(log: Logger) {
  return async function afterInstall(proc: ProcessRestore): Promise<void> {
    const rec = proc.get<TtyProcessRecord>(NAME);
    if (!rec?.ctty) return;
    const session = proc.session;
    const state = stateOf(session);
    const p = state.ptys.get(rec.ctty.index);
    if (!p || (p.hungUp && !p.terminal)) return;
    if (!p.terminal && !p.holders.length && !p.hasMaster) {
      // Nothing of the image holds the terminal open (its holder, e.g. `script`, was outside):
      // the master ckpt would keep closes when ckpt (or its keeper, with no slave holder) goes,
      // and that hangup would kill the session. The process goes on without a controlling
      // terminal. (With its master in the image, a controlling terminal whose slave nobody holds
      // is taken again through a slave opened for a moment: it lives as long as the master.)
      log('pid %d: no process of the image holds its controlling terminal (pty %d) open: restored without one', proc.pid, p.index);
      return;
    }
    const groups = new Set(session.processes.map((q) => q.record.pgid));
    let fg = 0;
    try {
      if (rec.ctty.tpgid && groups.has(rec.ctty.tpgid)) fg = session.vpid(rec.ctty.tpgid);
    } catch {
      /* a group whose leader is not in the image: left as the kernel makes it */
    }
    if (rec.ctty.leader) {
      onTerminalFd(proc, p, state, log, (fd, t) => {
        let r = t.syscallRaw(SYS.ioctl, fd, TIOCSCTTY, 0);
        // --tty: the restorer's terminal is its own session's: take it over (we are root).
        if (r === -EPERM && p.terminal) r = t.syscallRaw(SYS.ioctl, fd, TIOCSCTTY, 1);
        if (r < 0n) {
          log('pid %d: cannot take its terminal as controlling terminal again (errno %d)', proc.pid, -Number(r));
          return;
        }
        if (fg) {
          const s = withSigttouBlocked(t, () => t.syscallRaw(SYS.ioctl, fd, TIOCSPGRP, t.put(int32(fg), 0)));
          if (s < 0n) log('pid %d: cannot make process group %d the foreground group (errno %d)', proc.pid, fg, -Number(s));
        }
        if (p.terminal) notifyResize(proc, p, rec.ctty.tpgid, fd, t, log);
      });
      if (p.terminal && state.terminal) state.terminal.fgDone = true;
      return;
    }
    // A shell job (not a session leader) restored with --tty is in ckpt's session, whose terminal
    // this is: its group is brought to the foreground when it was there.
    if (p.terminal && state.terminal && !state.terminal.fgDone && rec.ctty.tpgid === proc.record.pgid && fg) {
      state.terminal.fgDone = true;
      onTerminalFd(proc, p, state, log, (fd, t) => {
        const s = withSigttouBlocked(t, () => t.syscallRaw(SYS.ioctl, fd, TIOCSPGRP, t.put(int32(fg), 0)));
        if (s < 0n) log('pid %d: cannot make its process group the foreground group of the terminal (errno %d)', proc.pid, -Number(s));
        notifyResize(proc, p, rec.ctty.tpgid, fd, t, log);
      });
    }
  };
}
