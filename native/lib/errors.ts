/** Native errors: NativeError, errno names, and the check of a remote syscall's result. */
import { raw } from './load.js';

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
    this.code = raw.code ?? (raw.errno ? errnoName(raw.errno) : 'EUNKNOWN');
    this.syscall = raw.syscall ?? '';
    this.pid = raw.pid;
  }
}

/** The name of an errno: 'EADDRINUSE' for 98 (glibc's strerrorname_np), 'E<n>' for one it does not know. */
export function errnoName(errno: number): string {
  return raw.errnoName(errno);
}

/** The result of a remote syscall: negative values are -errno. */
export function checkSyscall(name: string, pid: number, ret: bigint): bigint {
  if (ret < 0n && ret > -4096n) {
    const errno = Number(-ret);
    throw new NativeError({ message: `remote ${name} in ${pid}: errno ${errno}`, errno, code: errnoName(errno), syscall: name, pid });
  }
  return ret;
}
