/**
 * @ckpt/plugin-tty — terminals: pseudo-terminals (ptys) and the controlling terminal.
 *
 * Dump (files.dumpFd, asked before the built-in file handler):
 *   - pty slaves (/dev/pts/N, char major 136-143) and pty masters (/dev/ptmx, 5:2; their index
 *     from fdinfo `tty-index`) are claimed: the pty index, the open flags, the terminal settings
 *     (termios, by a remote TCGETS in the process), the window size, and for a master its packet
 *     mode and whether its slave is still locked. An fd opened on /dev/tty (5:0) is recorded as
 *     a slave fd of the pty it was opened on (TIOCGDEV), when that is a pty. Other character
 *     devices (/dev/null, consoles, a /dev/tty of a console, ...) are left to @ckpt/plugin-files.
 *   - per process whose controlling terminal is a pty (/proc/PID/stat tty_nr): which pty,
 *     whether the process leads that session, and the terminal's foreground process group
 *     (tpgid). Stored under this plugin's name only for such processes.
 *
 * Restore: every pty the image names becomes a new pty pair (open /dev/ptmx, unlock, the saved
 * termios and window size and packet mode). Each saved open description of the master gets that
 * new master; each description of the slave a new open of the new slave (TIOCGPTPEER, same
 * flags); descriptions shared by several fds or processes stay shared (@ckpt/plugin-files). The
 * new pty usually has another number: programs that kept the old name (ttyname) in memory keep
 * the old name. Once every fd is in place (session.fdsInstalled) the session leader takes the new
 * slave as controlling terminal again (TIOCSCTTY, run in the process), and the foreground process
 * group is restored (TIOCSPGRP). A controlling terminal that no process of the image holds an
 * fd on (its only holder, e.g. `script`, was outside) is not restored: the kernel drops a
 * controlling terminal at its last close, and its hangup would kill the session; the process
 * goes on without one. Bytes queued in a terminal at dump time (typed-ahead input, output its
 * master had not read) are not saved.
 *
 * A pty whose master was not part of the image (the program ran under `script`, ssh, tmux or a
 * terminal emulator, none of them dumped) is restored on a fresh pty whose master ckpt keeps:
 *   - `ckpt restore` (waiting for the process): what the program writes to its terminal is
 *     copied to ckpt's standard output, and when ckpt's standard input is a pipe or a file (not
 *     a terminal: use --tty for that), what comes from it is written to the terminal, i.e. is the
 *     program's keyboard input. When ckpt exits the master is closed: processes still holding the
 *     terminal see a hangup (SIGHUP), as after closing a terminal window.
 *   - `ckpt restore --detach`: the master goes to a small keeper process (`cat`, in its own
 *     session) that appends the terminal's output to $TMPDIR/ckpt-run/PID.tty.log (PID: the
 *     first restored process on that terminal; ckpt prints the path on stderr). The program keeps
 *     its terminal (no hangup) but gets no input; the keeper exits when the last process closes
 *     the terminal.
 * A terminal that had already been hung up at dump time (its master closed) is hung up again.
 *
 * `ckpt restore --tty`: the image's terminal — the controlling terminal of the first process
 * (parents first) that has a pty as controlling terminal, else the pty on fd 0-2 of the first
 * process holding one — is replaced by ckpt restore's own terminal (its stdin, else stdout, else
 * stderr; the restore fails naming this when none is a terminal): every fd that pointed to that
 * pty's slave (or to /dev/tty) gets a new open of ckpt's terminal with the saved flags, the saved
 * termios are applied to it (a program that had put its terminal in raw mode finds it in raw
 * mode; the window size stays the real one, and when it differs from the saved one the
 * foreground group gets a SIGWINCH as after a resize), and:
 *   - a restored session leader takes it as controlling terminal (TIOCSCTTY; when it is already
 *     the controlling terminal of ckpt's own session — the shell's — it is taken over from that
 *     session, which then has no controlling terminal, as with CAP_SYS_ADMIN's steal), and sets
 *     its foreground process group;
 *   - a restored process that was not a session leader (a shell job) is in ckpt's session,
 *     whose controlling terminal this is: its process group becomes the foreground group when it
 *     was the foreground group at dump time.
 * Other ptys of the image (and the master of the replaced pty, if it was in the image) are
 * restored as new pty pairs as above. Without a pty in the image, --tty changes nothing.
 */
import { closeSync, fstatSync, mkdirSync, openSync, readFileSync, readlinkSync, readSync, writeSync } from 'node:fs';
import { isatty } from 'node:tty';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import {
  CkptError, createSessionState, definePlugin, STAGE, type FdClaim, type FdDumpRequest, type FdRecord, type Logger, type PluginContext, type ProcessDump,
  type ProcessRestore, type RestoreSession, type Tracee,
} from '@ckpt/core';
import { native, SYS } from '@ckpt/native';

export const NAME = '@ckpt/plugin-tty';

/** Options: `terminal` (restore --tty): the restored processes get the restorer's own terminal. */
export const ttyOptions = z.strictObject({ terminal: z.boolean().optional() });
export type TtyOptions = z.infer<typeof ttyOptions>;

/** What this plugin stores per open description of a pty (FdRecord.data; kind "ptmx" or "pts"). */
export interface TtyFdData {
  side: 'master' | 'slave';
  /** The pty number at dump time (/dev/pts/N). */
  index: number;
  /** The fd as /proc showed it ("/dev/pts/3", "/dev/ptmx", "/dev/tty"). */
  path: string;
  /** Open flags (access mode, O_NONBLOCK, O_APPEND). */
  flags: number;
  /** Kernel struct termios of the slave (36 bytes, base64), as TCGETS returned it. */
  termios?: string;
  /** struct winsize (8 bytes, base64). */
  winsize?: string;
  /** Opened as /dev/tty (the controlling terminal). */
  devTty?: boolean;
  /** Master: packet mode (TIOCPKT) on. */
  packet?: boolean;
  /** Master: the slave was still locked (no unlockpt yet). */
  locked?: boolean;
  /** The terminal was hung up at dump time (its other end closed). */
  hungUp?: boolean;
}

/** Per process, only when its controlling terminal is a pty. */
export interface TtyProcessRecord {
  ctty: {
    /** The pty number of the controlling terminal. */
    index: number;
    /** This process is the session leader. */
    leader: boolean;
    /** The foreground process group of the terminal (image pid), 0 if none. */
    tpgid: number;
  };
}

// ---- constants (x86_64) ----
const TCGETS = 0x5401, TCSETS = 0x5402, TIOCSCTTY = 0x540e, TIOCSPGRP = 0x5410, TIOCGWINSZ = 0x5413, TIOCSWINSZ = 0x5414;
const TIOCPKT = 0x5420, TIOCGPTN = 0x80045430, TIOCSPTLCK = 0x40045431, TIOCGDEV = 0x80045432, TIOCGPKT = 0x80045438;
const TIOCGPTLCK = 0x80045439, TIOCGPTPEER = 0x5441;
const TERMIOS_SIZE = 36, WINSIZE_SIZE = 8;
const O_ACCMODE = 3, O_RDWR = 2, O_APPEND = 0o2000, O_NONBLOCK = 0o4000, O_NOCTTY = 0o400, O_CLOEXEC = 0o2000000;
const KEEP_FLAGS = O_ACCMODE | O_APPEND | O_NONBLOCK;
const F_GETFL = 3, F_SETFL = 4, F_DUPFD_CLOEXEC = 1030;
const EPERM = 1n;
const SIGTTOU = 22, SIGWINCH = 28;
/** Unix98 pty slaves: majors 136..143 (UNIX98_PTY_MAJOR_COUNT 8). */
const PTS_MAJOR_FIRST = 136, PTS_MAJOR_LAST = 143;

/** dev_t as the kernel encodes it for userspace (st_rdev, tty_nr, TIOCGDEV). */
function devParts(dev: number): { major: number; minor: number } {
  return { major: (dev >>> 8) & 0xfff, minor: (dev & 0xff) | ((dev >>> 12) & 0xfff00) };
}

/** The pty number of a slave device, or undefined when dev is not a Unix98 pty slave. */
function ptsIndex(dev: number): number | undefined {
  const { major, minor } = devParts(dev);
  if (major < PTS_MAJOR_FIRST || major > PTS_MAJOR_LAST) return undefined;
  return (major - PTS_MAJOR_FIRST) * 256 + minor;
}

/** tty_nr and tpgid of /proc/PID/stat (fields 7 and 8). */
function cttyOf(pid: number): { ttyNr: number; tpgid: number; sid: number } {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = text.slice(text.lastIndexOf(')') + 2).trim().split(' ');
  // f[0] is field 3 (state): field N is f[N - 3].
  return { sid: Number(f[3]), ttyNr: Number(f[4]), tpgid: Number(f[5]) };
}

// ------------------------------------------------------------------------------------------------
// Dump

/** A remote ioctl reading `size` bytes into scratch at `off`; undefined when the ioctl fails. */
function ioctlRead(t: Tracee, fd: number, req: number, size: number, off: number): Buffer | undefined {
  const addr = t.scratch() + off;
  const ret = t.syscallRaw(SYS.ioctl, fd, req, addr);
  if (ret < 0n && ret > -4096n) return undefined;
  return t.read(addr, size);
}

async function dumpFd(req: FdDumpRequest, proc: ProcessDump): Promise<FdClaim<TtyFdData> | undefined> {
  if (req.kind !== 'chr') return undefined;
  const t = proc.tracee;
  const { major, minor } = devParts(req.stat.rdev);
  let side: 'master' | 'slave';
  let index: number | undefined;
  let devTty = false;
  if (ptsIndex(req.stat.rdev) !== undefined) {
    side = 'slave';
    index = ptsIndex(req.stat.rdev);
  } else if (major === 5 && minor === 2) {
    side = 'master';
    const fromInfo = req.info.extra['tty-index'];
    index = fromInfo !== undefined ? Number(fromInfo) : ioctlRead(t, req.fd, TIOCGPTN, 4, 0)?.readUInt32LE(0);
    if (index === undefined || !Number.isInteger(index)) {
      throw new CkptError('ERR_CKPT_UNSUPPORTED_FD', `cannot checkpoint pid ${proc.pid}: fd ${req.fd} is a pty master (${req.link}) whose pty number cannot be read`);
    }
  } else if (major === 5 && minor === 0) {
    // /dev/tty: really the terminal it was opened on (TIOCGDEV names it); ours when it is a pty.
    const dev = ioctlRead(t, req.fd, TIOCGDEV, 4, 0)?.readUInt32LE(0);
    index = dev === undefined ? undefined : ptsIndex(dev);
    if (index === undefined) return undefined;
    side = 'slave';
    devTty = true;
  } else {
    return undefined;
  }
  // termios and window size: on a master, TCGETS/TIOCGWINSZ answer for its slave.
  const termios = ioctlRead(t, req.fd, TCGETS, TERMIOS_SIZE, 0);
  const winsize = ioctlRead(t, req.fd, TIOCGWINSZ, WINSIZE_SIZE, 64);
  const data: TtyFdData = { side, index: index!, path: req.link, flags: req.info.flags & KEEP_FLAGS };
  if (termios) data.termios = termios.toString('base64');
  else data.hungUp = true;
  if (winsize) data.winsize = winsize.toString('base64');
  if (devTty) data.devTty = true;
  if (side === 'master') {
    if (ioctlRead(t, req.fd, TIOCGPKT, 4, 128)?.readInt32LE(0)) data.packet = true;
    if (ioctlRead(t, req.fd, TIOCGPTLCK, 4, 136)?.readInt32LE(0)) data.locked = true;
  }
  return { kind: side === 'master' ? 'ptmx' : 'pts', data };
}

/** The controlling terminal of the process, when it is a pty. */
async function dumpProcess(proc: ProcessDump): Promise<void> {
  const st = cttyOf(proc.pid);
  const index = st.ttyNr ? ptsIndex(st.ttyNr) : undefined;
  if (index === undefined) return;
  proc.put(NAME, { ctty: { index, leader: st.sid === proc.pid, tpgid: st.tpgid > 0 ? st.tpgid : 0 } } satisfies TtyProcessRecord);
}

// ------------------------------------------------------------------------------------------------
// Restore

/** One pty of the image and the new pty that replaces it. */
interface PtyPlan {
  index: number;
  /** The image holds its master. */
  hasMaster: boolean;
  /** Image pids holding an fd on its slave, in tree order. */
  holders: number[];
  /** Image pids whose controlling terminal it is. */
  controlled: number[];
  termios?: string;
  winsize?: string;
  packet?: boolean;
  locked?: boolean;
  hungUp?: boolean;
  /** --tty: its slave is replaced by the restorer's terminal. */
  terminal: boolean;
  /** Our fd of the new master, once created. */
  master?: number;
  newIndex?: number;
}

interface TtyState {
  ptys: Map<number, PtyPlan>;
  /** --tty: the restorer's fd (0, 1 or 2) that is its terminal, and the image's terminal. */
  terminal?: { fd: number; index: number; termiosApplied: boolean; fgDone: boolean };
  /** Every fd of ours still open (closed at the end, or on rollback). */
  open: Set<number>;
  /** Resolved records of every fd of the image: "pid:fd" -> our data (sameAs followed). */
  fdData: Map<string, TtyFdData>;
  done: boolean;
}

const states = createSessionState('tty:restore', (_s: RestoreSession) => ({ state: undefined as TtyState | undefined }));

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    /* closed */
  }
}

/** The restorer's own terminal: the first of stdin, stdout, stderr that is a tty. */
function restorerTerminal(): number | undefined {
  return [0, 1, 2].find((fd) => {
    try {
      return isatty(fd);
    } catch {
      return false;
    }
  });
}

function plan(session: RestoreSession, opts: TtyOptions, log: Logger): TtyState {
  const state: TtyState = { ptys: new Map(), open: new Set(), fdData: new Map(), done: false };
  const planFor = (d: { index: number }): PtyPlan => {
    let p = state.ptys.get(d.index);
    if (!p) state.ptys.set(d.index, (p = { index: d.index, hasMaster: false, holders: [], controlled: [], terminal: false }));
    return p;
  };
  for (const proc of session.processes) {
    for (const r of proc.fds) {
      let d: TtyFdData | undefined;
      if (r.sameAs) d = state.fdData.get(`${r.sameAs.pid}:${r.sameAs.fd}`);
      else if (r.owner === NAME) d = r.data as TtyFdData;
      if (!d) continue;
      state.fdData.set(`${proc.pid}:${r.fd}`, d);
      const p = planFor(d);
      if (d.side === 'master') {
        p.hasMaster = true;
        if (d.packet) p.packet = true;
        if (d.locked) p.locked = true;
      } else if (!p.holders.includes(proc.pid)) {
        p.holders.push(proc.pid);
      }
      p.termios ??= d.termios;
      p.winsize ??= d.winsize;
      if (d.hungUp) p.hungUp = true;
    }
    const rec = proc.get<TtyProcessRecord>(NAME);
    if (rec?.ctty) {
      planFor(rec.ctty).controlled.push(proc.pid);
    }
  }
  if (opts.terminal) {
    const fd = restorerTerminal();
    if (fd === undefined) {
      throw new CkptError('ERR_CKPT_USAGE',
        'ckpt restore --tty: ckpt restore has no terminal to give (none of its stdin, stdout and stderr is a terminal)',
        { hint: 'run ckpt restore --tty from a terminal (or under script, tmux, ssh -t), or restore without --tty' });
    }
    const index = imageTerminal(session, state);
    if (index === undefined) log('--tty: the image has no terminal: nothing to replace');
    else {
      state.ptys.get(index)!.terminal = true;
      state.terminal = { fd, index, termiosApplied: false, fgDone: false };
      log('--tty: pty %d of the image becomes our fd %d (%s)', index, fd, safeLink(`/proc/self/fd/${fd}`));
    }
  }
  return state;
}

function safeLink(path: string): string {
  try {
    return readlinkSync(path);
  } catch {
    return path;
  }
}

/** --tty: the pty that was "the program's terminal": the first controlling terminal, else the first stdio pty. */
function imageTerminal(session: RestoreSession, state: TtyState): number | undefined {
  for (const proc of session.processes) {
    const rec = proc.get<TtyProcessRecord>(NAME);
    if (rec?.ctty) return rec.ctty.index;
  }
  for (const proc of session.processes) {
    for (const fd of [0, 1, 2]) {
      const d = state.fdData.get(`${proc.pid}:${fd}`);
      if (d?.side === 'slave') return d.index;
    }
  }
  return undefined;
}

function stateOf(session: RestoreSession): TtyState {
  const s = states.of(session).state;
  if (!s) throw new Error('tty plugin: no restore state (beforeRestore did not run)');
  return s;
}

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

function ioctlWrite(t: Tracee, fd: number, req: number, data: Buffer, off: number): void {
  t.syscall(SYS.ioctl, fd, req, t.put(data, off));
}

function int32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v, 0);
  return b;
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
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot create a pty for pid ${proc.pid} (open /dev/ptmx: ${(e as NodeJS.ErrnoException).code})`, { cause: e });
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
  log('pty %d of the image is now /dev/pts/%d', p.index, p.newIndex);
  return m;
}

/** A new open description of the new slave (in the restorer), through the master (TIOCGPTPEER). */
function openSlave(p: PtyPlan, proc: ProcessRestore, state: TtyState, flags: number, log: Logger): number {
  const m = ensurePty(p, proc, state, log);
  const t = stubOf(proc);
  return inProcess(proc, m, (fd) => {
    const peer = Number(t.syscall(SYS.ioctl, fd, TIOCGPTPEER, (flags & KEEP_FLAGS) | O_NOCTTY | O_CLOEXEC));
    const pidfd = native.proc.pidfdOpen(t.pid);
    try {
      return native.proc.pidfdGetfd(pidfd, peer);
    } finally {
      closeSync(pidfd);
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
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `ckpt restore --tty: cannot open its own terminal (fd ${term.fd}): ${(e as NodeJS.ErrnoException).code}`, { cause: e });
  }
  if (!term.termiosApplied && p.termios) {
    term.termiosApplied = true;
    inProcess(proc, fd, (n, t) => withSigttouBlocked(t, () => ioctlWrite(t, n, TCSETS, Buffer.from(p.termios!, 'base64'), 64)));
  }
  return fd;
}

function makeRestoreFd(log: Logger) {
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
  if (own !== undefined) return fn(own, t);
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

function makeAfterInstall(log: Logger) {
  return async function afterInstall(proc: ProcessRestore): Promise<void> {
    const rec = proc.get<TtyProcessRecord>(NAME);
    if (!rec?.ctty) return;
    const session = proc.session;
    const state = stateOf(session);
    const p = state.ptys.get(rec.ctty.index);
    if (!p || (p.hungUp && !p.terminal)) return;
    if (!p.terminal && !p.holders.length) {
      // Nothing of the image holds the terminal open (its holder, e.g. `script`, was outside):
      // a controlling terminal nobody holds is dropped by the kernel at its last close, and its
      // hangup would kill the session. The process goes on without a controlling terminal.
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

// ---- after the restore: the masters we keep ----

/** The host pid of the first restored process on pty p. */
function firstHolder(session: RestoreSession, p: PtyPlan): number {
  const proc = session.processes.find((q) => q.pid === p.holders[0]) ?? session.processes[0];
  return proc?.stub?.pid ?? p.holders[0];
}

/** --detach: a keeper process (cat) appends the terminal's output to a log file. */
function startKeeper(session: RestoreSession, p: PtyPlan, log: Logger): void {
  const dir = join(tmpdir(), 'ckpt-run');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const pid = firstHolder(session, p);
  const file = join(dir, `${pid}.tty.log`);
  const out = openSync(file, 'a', 0o600);
  try {
    const keeper = native.proc.spawnDetached('/bin/sh', ['sh', '-c', 'exec cat 2>/dev/null'], ['PATH=/usr/bin:/bin'], '/', [p.master!, out, out]);
    log('pty %d: keeper %d copies /dev/pts/%d to %s', p.index, keeper, p.newIndex, file);
  } finally {
    closeSync(out);
  }
  process.stderr.write(`ckpt: pid ${pid} is on a new terminal (/dev/pts/${p.newIndex}) whose other end was not in the image: its output goes to ${file}\n`);
}

/** Without --detach: copy the terminal's output to our stdout (and a piped stdin to it) while we live. */
function startForwarder(m: number, onClose: () => void): void {
  native.fd.fcntl(m, F_SETFL, native.fd.fcntl(m, F_GETFL, 0) | O_NONBLOCK);
  const buf = Buffer.alloc(65536);
  let closed = false;
  let input: NodeJS.ReadableStream | undefined;
  const stop = () => {
    if (closed) return;
    closed = true;
    clearInterval(timer);
    process.off('beforeExit', drainAndStop);
    process.stdout.off('error', stop);
    if (input) input.removeListener('data', onInput);
    onClose();
  };
  const pump = () => {
    for (;;) {
      let n: number;
      try {
        n = readSync(m, buf, 0, buf.length, null);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EAGAIN') return;
        stop(); // EIO: every process closed the terminal
        return;
      }
      if (n <= 0) return stop();
      process.stdout.write(Buffer.from(buf.subarray(0, n)));
    }
  };
  const drainAndStop = () => {
    if (!closed) pump();
    stop();
  };
  const onInput = (chunk: Buffer | string) => {
    if (closed) return;
    const data = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
    try {
      for (let off = 0; off < data.length;) off += writeSync(m, data, off);
    } catch {
      /* the terminal's input queue is full or gone: dropped */
    }
  };
  process.stdout.once('error', stop); // our reader went away: stop copying
  const timer = setInterval(pump, 20);
  timer.unref();
  process.on('beforeExit', drainAndStop);
  // Keyboard input from a pipe or a file (a terminal on stdin: use --tty instead).
  let st;
  try {
    st = isatty(0) ? undefined : fstatSync(0);
  } catch {
    st = undefined;
  }
  if (st && (st.isFIFO() || st.isSocket() || st.isFile())) {
    input = process.stdin;
    process.stdin.on('data', onInput);
    (process.stdin as unknown as { unref?: () => void }).unref?.();
  }
}

function makeAfterRestore(log: Logger) {
  return async function afterRestore(session: RestoreSession): Promise<void> {
    const state = states.of(session).state;
    if (!state || state.done) return;
    state.done = true;
    for (const p of state.ptys.values()) {
      const m = p.master;
      if (m === undefined) continue;
      const keep = !p.hasMaster && !p.hungUp && p.holders.length > 0 && !p.terminal;
      if (keep && !session.options.detach) {
        state.open.delete(m);
        startForwarder(m, () => closeQuietly(m));
        continue;
      }
      if (keep) startKeeper(session, p, log);
      // Masters the processes hold are in place; a hung-up terminal is hung up again here.
      state.open.delete(m);
      closeQuietly(m);
    }
    for (const fd of state.open) closeQuietly(fd);
    state.open.clear();
  };
}

export const ttyPlugin = definePlugin(() => ({
  name: NAME,
  version: '0.2.0',
  description: 'ptys recreated as new pairs: termios, window size, packet mode, controlling terminal, foreground group',
  options: ttyOptions,
  flags: [{ command: 'restore' as const, flags: '--tty', description: "give the restored processes this terminal (ckpt restore's own) as their terminal", option: 'terminal' }],
  claims: { fdKinds: ['ptmx', 'pts'] },
  show: { fdName: (rec: FdRecord) => (rec.data as TtyFdData | undefined)?.path },
  apply(hooks, ctx: PluginContext<TtyOptions>) {
    const log = ctx.log;
    hooks.files.dump.tapPromise(NAME, dumpProcess);
    hooks.fds.dump.tapPromise({ name: NAME, stage: STAGE.DEFAULT }, dumpFd);
    hooks.session.beforeRestore.tapPromise(NAME, async (session) => {
      const state = plan(session, ctx.options(session) ?? {}, log);
      states.of(session).state = state;
      session.onRollback(() => {
        // After beforeResume our masters belong to a forwarder or a keeper: they end with the
        // processes the rollback kills.
        if (state.done) return;
        state.done = true;
        for (const p of state.ptys.values()) if (p.master !== undefined) state.open.add(p.master);
        for (const fd of state.open) closeQuietly(fd);
        state.open.clear();
      });
    });
    hooks.fds.restore.for(NAME).tapPromise(NAME, makeRestoreFd(log));
    hooks.session.fdsInstalled.tapPromise(NAME, makeAfterInstall(log));
    hooks.session.beforeResume.tapPromise(NAME, makeAfterRestore(log));
  },
}));

export default ttyPlugin;
