/** Terminal ioctls run inside a process (remote syscalls), and their constants (x86_64). */
import type { Tracee } from '@ckpt/core';
import { SYS, O_ACCMODE, O_APPEND, O_NONBLOCK } from '@ckpt/native';

export const TCGETS = 0x5401,
  TCSETS = 0x5402,
  TIOCSCTTY = 0x540e,
  TIOCSPGRP = 0x5410,
  TIOCGWINSZ = 0x5413,
  TIOCSWINSZ = 0x5414;
export const TIOCPKT = 0x5420,
  TIOCGPTN = 0x80045430,
  TIOCSPTLCK = 0x40045431,
  TIOCGDEV = 0x80045432,
  TIOCGPKT = 0x80045438;
export const TIOCGPTLCK = 0x80045439,
  TIOCGPTPEER = 0x5441;
export const TERMIOS_SIZE = 36,
  WINSIZE_SIZE = 8;
/** The open flags saved and given back (access mode, O_APPEND, O_NONBLOCK). */
export const KEEP_FLAGS = O_ACCMODE | O_APPEND | O_NONBLOCK;
export const EPERM = 1n;

/** A remote ioctl reading `size` bytes into scratch at `off`; undefined when the ioctl fails. */
export function ioctlRead(t: Tracee, fd: number, req: number, size: number, off: number): Buffer | undefined {
  const addr = t.scratch() + off;
  const ret = t.syscallRaw(SYS.ioctl, fd, req, addr);
  if (ret < 0n && ret > -4096n) return undefined;
  return t.read(addr, size);
}

/** A remote ioctl passing `data` (copied to scratch at `off`); throws when the ioctl fails. */
export function ioctlWrite(t: Tracee, fd: number, req: number, data: Buffer, off: number): void {
  t.syscall(SYS.ioctl, fd, req, t.put(data, off));
}

/** A C int, for ioctls that take a pointer to one. */
export function int32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v, 0);
  return b;
}
