/**
 * Helpers core offers plugin authors, so that a plugin never needs @ckpt/native for the common
 * steps (running a syscall in the process is `proc.tracee.syscall(SYS.x, ...)` at dump and
 * `proc.stub.syscall(...)` at restore; see docs/plugins.md).
 */
import { closeSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import { checkSyscall, native, ALL_SIGNALS, O_NOCTTY, O_CLOEXEC, O_ACCMODE, O_PATH, O_WRONLY, PIDFD_THREAD, SEEK_SET, SOCK_SEQPACKET, SYS } from '@ckpt/native';
import { CkptError } from './errors.js';
import type { FdDumpRequest } from './context.js';
import { Tracee, type BatchedSyscall } from './tracee.js';

export interface RemoteOpenOptions {
  /** open(2) flags of the original description (O_ACCMODE, O_APPEND, O_NONBLOCK, ...). */
  flags: number;
  /** File offset to set. */
  pos?: number;
  /** Mode for O_CREAT. */
  mode?: number;
  /** Who it is for, for the error message (e.g. "fd 4 of pid 123"). */
  what?: string;
}

/**
 * Opens a file in the restorer the way the process had it (flags and offset), for an
 * `fds.restore` handler to return: core then installs it at its number in the process.
 */
export function remoteOpen(path: string, opts: RemoteOpenOptions): number {
  let fd: number;
  try {
    fd = openSync(path, (opts.flags & ~O_CLOEXEC) | O_NOCTTY, opts.mode ?? 0o600);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot open ${path}${opts.what ? ` (${opts.what})` : ''}: ${code}`, { cause: e });
  }
  if (opts.pos) {
    try {
      native.fd.lseek(fd, opts.pos, SEEK_SET);
    } catch (e) {
      closeSync(fd);
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot seek ${path} to ${opts.pos}${opts.what ? ` (${opts.what})` : ''}`, { cause: e });
    }
  }
  return fd;
}

/**
 * The whole content of the file behind a dumped fd, whatever its access mode: a write-only or
 * O_PATH fd is reopened for reading through /proc/self/fd (our duplicate), so its own offset is
 * never moved.
 */
export function readThroughFd(req: Pick<FdDumpRequest, 'dupFd' | 'info' | 'fd'>): Buffer {
  const mode = req.info.flags & O_ACCMODE;
  const readable = mode !== O_WRONLY && !(req.info.flags & O_PATH);
  const fd = readable ? req.dupFd : openSync(`/proc/self/fd/${req.dupFd}`, 'r');
  try {
    const size = fstatSync(fd).size;
    const out = Buffer.allocUnsafe(size);
    let off = 0;
    while (off < size) {
      const n = readSync(fd, out, off, size - off, off);
      if (n <= 0) break;
      off += n;
    }
    return out.subarray(0, off);
  } finally {
    if (!readable) closeSync(fd);
  }
}

/**
 * Runs remote syscalls in a stopped task with every signal held, then puts its mask back: a signal
 * made pending for the process (SIGWINCH after a terminal resize) must wait for the process to
 * run, not stop these syscalls (ptrace would report it and the syscall would take it).
 */
export function withSignalsHeld<T>(tid: number, fn: () => T): T {
  const mask = native.ptrace.getSigmask(tid);
  native.ptrace.setSigmask(tid, ALL_SIGNALS);
  try {
    return fn();
  } finally {
    native.ptrace.setSigmask(tid, mask);
  }
}

/** Blocks the thread for ms milliseconds (the pipeline is synchronous around ptrace waits). */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

let ownNetns: number | undefined;
/** The socket (one of ours, e.g. a dumped fd's duplicate) lives in ckpt's own network namespace. */
export function inOurNetns(sockFd: number): boolean {
  ownNetns ??= statSync('/proc/self/ns/net').ino;
  return native.sock.unixNetns(sockFd) === ownNetns;
}

/** What isChildSubreaper found, by the task asked (a frozen process's bit changes by its own prctl alone). */
const subreapers = new WeakMap<Tracee, boolean>();

/**
 * Whether the process (its task `tracee`, frozen) is a child subreaper: prctl(PR_GET_CHILD_SUBREAPER)
 * run in it, once per task (several plugins ask, and each asking is a remote syscall).
 */
export function isChildSubreaper(tracee: Tracee): boolean {
  return isChildSubreaperEach([tracee])[0];
}

/** isChildSubreaper of each process (a task of each), those not known yet asked all at once (Tracee.syscallEach). */
export function isChildSubreaperEach(tracees: readonly Tracee[]): boolean[] {
  const ask = [...new Set(tracees)].filter((t) => !subreapers.has(t));
  const outs = ask.map(() => Buffer.alloc(4));
  Tracee.syscallEach(
    ask,
    outs.map((b): BatchedSyscall => [SYS.prctl, PR_GET_CHILD_SUBREAPER, b, 0, 0, 0]),
  ).forEach((r, i) => {
    checkSyscall('prctl', ask[i].pid, r);
    subreapers.set(ask[i], outs[i].readInt32LE(0) !== 0);
  });
  return tracees.map((t) => subreapers.get(t)!);
}

const PR_GET_CHILD_SUBREAPER = 37;

/** Reaps a helper child of ours, waiting up to about ms milliseconds: its status, or null if it has not exited. */
export function reapWithin(pid: number, ms: number): ReturnType<typeof native.proc.tryWait> {
  let st = native.proc.tryWait(pid);
  for (let waited = 0; !st && waited < ms; waited++) {
    sleepSync(1);
    st = native.proc.tryWait(pid);
  }
  return st;
}

/**
 * getsockopt(fd, level, name) run in the task (a socket of the process): up to `len` bytes of
 * the option, as long as the kernel says it is; undefined when the kernel refuses (the errno in
 * `err`, negative, when asked). Uses the task's scratch page (its first 64 + len bytes).
 */
export function remoteGetsockopt(t: Tracee, fd: number, level: number, name: number, len: number, err?: { errno?: bigint }): Buffer | undefined {
  const base = t.scratch();
  const l = Buffer.alloc(4);
  l.writeUInt32LE(len);
  t.put(l, 0);
  const r = t.syscallRaw(SYS.getsockopt, fd, level, name, base + 64, base);
  if (r < 0n) {
    if (err) err.errno = r;
    return undefined;
  }
  return t.read(base + 64, Math.min(len, t.read(base, 4).readUInt32LE(0)));
}

/** Our duplicate (pidfd_getfd) of fd `fd` of the task's process: e.g. a socket a plugin made in it. */
export function takeFd(t: Tracee, fd: number): number {
  const pidfd = native.proc.pidfdOpen(t.pid, PIDFD_THREAD);
  try {
    return native.proc.pidfdGetfd(pidfd, fd);
  } finally {
    closeSync(pidfd);
  }
}

/**
 * Starts one of native's helper binaries (ckpt-repairguard, ckpt-memtrack) detached, its fd 0 a
 * SOCK_SEQPACKET socket to us and 1, 2 /dev/null: its pid and our end of the channel.
 */
export function spawnHelper(path: string, name: string): { pid: number; channel: number } {
  const [mine, theirs] = native.sock.unixSocketpair(SOCK_SEQPACKET);
  const devnull = openSync('/dev/null', 'r+');
  try {
    return { pid: native.proc.spawnDetached(path, [name], [], null, [theirs, devnull, devnull]), channel: mine };
  } catch (e) {
    closeSync(mine);
    throw e;
  } finally {
    closeSync(theirs);
    closeSync(devnull);
  }
}
