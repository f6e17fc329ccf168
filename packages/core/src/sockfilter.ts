/**
 * Classic BPF socket filters (SO_ATTACH_FILTER), for every socket plugin: read back at dump with
 * SO_GET_FILTER and attached again at restore, with SO_LOCK_FILTER after. Both run inside the
 * process (remote getsockopt / setsockopt): the filter program is an array the kernel copies
 * through a pointer. An eBPF program attached with SO_ATTACH_BPF cannot be read back (the kernel
 * answers EACCES): refused, naming the socket.
 */
import { SYS } from '@ckpt/native';
import { CkptError } from './errors.js';
import { remoteGetsockopt } from './helpers.js';
import type { ProcessDump, ProcessRestore } from './context.js';

const SOL_SOCKET = 1;
const SO_ATTACH_FILTER = 26;
const SO_GET_FILTER = SO_ATTACH_FILTER;
const SO_LOCK_FILTER = 44;
const EACCES = 13n;
/** One instruction: u16 code, u8 jt, u8 jf, u32 k. */
const INSN = 8;

export interface SocketFilter {
  /** The instructions (struct sock_filter[], base64). */
  code: string;
  /** SO_LOCK_FILTER was set: the filter cannot be changed. */
  locked?: boolean;
}

/** The classic BPF filter on fd `fd` of the frozen process, if it has one (`what` names the socket). */
export function readSocketFilter(proc: ProcessDump, fd: number, what: string): SocketFilter | undefined {
  const t = proc.tracee;
  const base = t.scratch();
  const lenAt = base;
  const buf = base + 64;
  const len = Buffer.alloc(4);
  t.put(len, 0);
  const r = t.syscallRaw(SYS.getsockopt, fd, SOL_SOCKET, SO_GET_FILTER, buf, lenAt);
  if (r === -EACCES) {
    throw new CkptError(
      'ERR_CKPT_UNSUPPORTED_FD',
      `cannot checkpoint pid ${proc.pid}: ${what} has an eBPF socket filter (SO_ATTACH_BPF), which cannot be read back`,
    );
  }
  if (r < 0n) return undefined;
  const n = t.read(lenAt, 4).readUInt32LE(0);
  if (!n) return undefined;
  t.syscall(SYS.getsockopt, fd, SOL_SOCKET, SO_GET_FILTER, buf, lenAt);
  const code = t.read(buf, n * INSN).toString('base64');
  const locked = (remoteGetsockopt(t, fd, SOL_SOCKET, SO_LOCK_FILTER, 4)?.readInt32LE(0) ?? 0) !== 0;
  return { code, ...(locked ? { locked } : {}) };
}

/** Attaches the saved filter to `restorerFd` (our fd of the new socket), inside the process. */
export function attachSocketFilter(proc: ProcessRestore, restorerFd: number, f: SocketFilter, what: string): void {
  const t = proc.stub;
  if (!t) throw new Error(`pid ${proc.pid}: no process to attach a socket filter in`);
  const code = Buffer.from(f.code, 'base64');
  const fd = proc.borrowFd(restorerFd);
  try {
    const insns = t.put(code, 64);
    const prog = Buffer.alloc(16);
    prog.writeUInt16LE(code.length / INSN, 0);
    prog.writeBigUInt64LE(BigInt(insns), 8);
    const r = t.syscallRaw(SYS.setsockopt, fd, SOL_SOCKET, SO_ATTACH_FILTER, t.put(prog, 0), 16);
    if (r < 0n) throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${what}: cannot attach its socket filter again (errno ${-r})`);
    if (f.locked) {
      const one = Buffer.from([1, 0, 0, 0]);
      t.syscall(SYS.setsockopt, fd, SOL_SOCKET, SO_LOCK_FILTER, t.put(one, 32), 4);
    }
  } finally {
    t.syscallRaw(SYS.close, fd);
  }
}
