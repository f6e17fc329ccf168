/**
 * The typed facade over the native engine. Everything privileged or hot (ptrace, remote
 * syscalls, page copies, pidfds, clone3) goes through here; nothing else loads the addon.
 *
 * Threading rule: ptrace requests are only valid from the thread that attached. All functions
 * here are synchronous and must be called from the JS main thread, which is the tracer.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Binding, CopyResult, IpcObject, RseqConfig, WaitStatus } from './binding.js';

export type { CopyResult, IpcObject, RseqConfig, WaitStatus };

const here = dirname(fileURLToPath(import.meta.url));
const packageRoot = join(here, '..');

/** An errno failure from the kernel, shaped like Node's ErrnoException. */
export class NativeError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly syscall: string;
  readonly pid?: number;
  constructor(raw: { message: string; errno?: number; code?: string; syscall?: string; pid?: number }) {
    super(raw.message);
    this.name = 'NativeError';
    this.errno = raw.errno ?? 0;
    this.code = raw.code ?? 'EUNKNOWN';
    this.syscall = raw.syscall ?? '';
    this.pid = raw.pid;
  }
}

function load(): Binding {
  const candidates = [join(packageRoot, 'build/Release/ckpt_native.node'), join(packageRoot, 'build/Debug/ckpt_native.node')];
  const req = createRequire(import.meta.url);
  for (const c of candidates) if (existsSync(c)) return req(c) as Binding;
  throw new Error(
    `ckpt native engine not built (looked for ${candidates[0]}). Run \`npm install\` at the repository root ` +
      '(needs gcc, g++, make and python3).',
  );
}

const raw = load();

/** Wraps every binding function so native errors become NativeError instances. */
function wrap<T extends object>(b: T): T {
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(b)) {
    if (typeof fn !== 'function') continue;
    out[name] = (...args: unknown[]) => {
      try {
        return (fn as (...a: unknown[]) => unknown)(...args);
      } catch (e) {
        const err = e as { message: string; errno?: number; code?: string; syscall?: string; pid?: number };
        if (err && typeof err === 'object' && 'errno' in err) throw new NativeError(err);
        throw e;
      }
    };
  }
  return out as T;
}

export const native: Binding = wrap(raw);

/** Path of the static no-libc stub a restore rebuilds into the checkpointed process. */
export const stubPath = join(packageRoot, 'build/ckpt-stub');

/** Path of ckpt-init, pid 1 of the pid namespace `ckpt run` creates for an application. */
export const initPath = join(packageRoot, 'build/ckpt-init');

// ---- constants (x86_64) ----
export const PTRACE_O_TRACESYSGOOD = 0x1;
export const PTRACE_O_TRACEFORK = 0x2;
export const PTRACE_O_TRACECLONE = 0x8;
export const PTRACE_O_TRACEEXEC = 0x10;
export const PTRACE_O_EXITKILL = 0x100000;

export const SYS = Object.freeze({
  read: 0, write: 1, open: 2, close: 3, lseek: 8, mmap: 9, mprotect: 10, munmap: 11, brk: 12,
  rt_sigaction: 13, rt_sigprocmask: 14, ioctl: 16, pread64: 17, mremap: 25, madvise: 28, dup2: 33,
  pause: 34, nanosleep: 35, getpid: 39, fcntl: 72, fchdir: 81, umask: 95, prctl: 157, arch_prctl: 158,
  setsid: 112, setpgid: 109, kill: 62, getpgid: 121, getsid: 124, gettid: 186, set_tid_address: 218,
  restart_syscall: 219, epoll_ctl: 233, clock_nanosleep: 230, exit_group: 231, openat: 257, set_robust_list: 273,
  rt_tgsigqueueinfo: 297, rt_sigqueueinfo: 129, poll: 7, ppoll: 271, select: 23, pselect6: 270, dup3: 292, pidfd_open: 434,
  pidfd_getfd: 438, close_range: 436, clone3: 435, rseq: 334, setresuid: 117, setresgid: 119, setgroups: 116,
  personality: 135, chroot: 161, sigaltstack: 131, getitimer: 36, setitimer: 38, prlimit64: 302, shmat: 30, shmdt: 67, chdir: 80, fchmod: 91,
});

export const ERESTARTSYS = 512;
export const ERESTARTNOINTR = 513;
export const ERESTARTNOHAND = 514;
export const ERESTART_RESTARTBLOCK = 516;

export const PAGE_SIZE = 4096;
export const CLONE_NEWPID = 0x20000000;
export const CLONE_NEWIPC = 0x08000000;

/** Offsets of the fields of struct user_regs_struct (NT_PRSTATUS, 216 bytes). */
export const REG = Object.freeze({
  r15: 0, r14: 8, r13: 16, r12: 24, rbp: 32, rbx: 40, r11: 48, r10: 56, r9: 64, r8: 72, rax: 80,
  rcx: 88, rdx: 96, rsi: 104, rdi: 112, orig_rax: 120, rip: 128, cs: 136, eflags: 144, rsp: 152,
  ss: 160, fs_base: 168, gs_base: 176, ds: 184, es: 192, fs: 200, gs: 208,
});
export type RegName = keyof typeof REG;

/** A decoded view of a GPR buffer: read and write registers by name as signed/unsigned bigints. */
export class Regs {
  constructor(readonly buf: Buffer) {}
  get(r: RegName): bigint {
    return this.buf.readBigUInt64LE(REG[r]);
  }
  signed(r: RegName): bigint {
    return this.buf.readBigInt64LE(REG[r]);
  }
  set(r: RegName, v: bigint | number): this {
    this.buf.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)), REG[r]);
    return this;
  }
  clone(): Regs {
    return new Regs(Buffer.from(this.buf));
  }
  toJSON(): Record<string, string> {
    const o: Record<string, string> = {};
    for (const k of Object.keys(REG) as RegName[]) o[k] = '0x' + this.get(k).toString(16);
    return o;
  }
}

/** The result of a remote syscall: negative values are -errno. */
export function checkSyscall(name: string, pid: number, ret: bigint): bigint {
  if (ret < 0n && ret > -4096n) {
    const errno = Number(-ret);
    throw new NativeError({ message: `remote ${name} in ${pid}: errno ${errno}`, errno, code: errnoName(errno), syscall: name, pid });
  }
  return ret;
}

const ERRNO_NAMES: Record<number, string> = {
  1: 'EPERM', 2: 'ENOENT', 3: 'ESRCH', 4: 'EINTR', 5: 'EIO', 9: 'EBADF', 11: 'EAGAIN', 12: 'ENOMEM',
  13: 'EACCES', 14: 'EFAULT', 16: 'EBUSY', 17: 'EEXIST', 20: 'ENOTDIR', 21: 'EISDIR', 22: 'EINVAL',
  24: 'EMFILE', 28: 'ENOSPC', 38: 'ENOSYS', 95: 'EOPNOTSUPP',
};
export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `E${errno}`;
}
