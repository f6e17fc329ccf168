/**
 * A task under our ptrace control, and the remote-syscall machinery on top of it:
 * a `syscall` instruction to borrow, a scratch mapping for pointer arguments, and restart-safe
 * resumption. Used both for dump targets (frozen user processes) and restore stubs.
 */
import {
  native,
  checkSyscall,
  Regs,
  SYS,
  NativeError,
  PAGE_SIZE,
  ERESTARTSYS,
  ERESTARTNOINTR,
  ERESTARTNOHAND,
  ERESTART_RESTARTBLOCK,
  CLONE_THREAD_FLAGS,
  SIGCHLD,
  cloneArgs,
  setTidArray,
} from '@ckpt/native';
import { childrenOf, hostTidOf, listThreads, nsPid, readMaps, type Vma } from './proc.js';
import { logger } from './log.js';

const log = logger('tracee');

export { PROT_READ, PROT_WRITE, PROT_EXEC, MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS, MAP_GROWSDOWN, MAP_FIXED_NOREPLACE } from '@ckpt/native';
import { PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS, MAP_FIXED_NOREPLACE } from '@ckpt/native';
export const TASK_SIZE = 0x7ffffffff000;

export const SCRATCH_SIZE = 64 * 1024;

/** Finds a `syscall` (0f 05) instruction in an executable mapping: the vdso first. */
export function findSyscallInsn(pid: number, vmas: Vma[] = readMaps(pid)): number {
  const exec = vmas.filter((v) => v.perms[2] === 'x');
  exec.sort((a, b) => (a.name === '[vdso]' ? -1 : 0) - (b.name === '[vdso]' ? -1 : 0));
  for (const v of exec) {
    const len = Math.min(v.end - v.start, 1 << 20);
    let buf: Buffer;
    try {
      buf = native.mem.readMem(pid, v.start, len);
    } catch {
      continue;
    }
    for (let i = buf.indexOf(0x0f); i >= 0 && i < buf.length - 1; i = buf.indexOf(0x0f, i + 1)) {
      if (buf[i + 1] === 0x05) return v.start + i;
    }
  }
  throw new NativeError({ message: `no syscall instruction found in the executable mappings of ${pid}`, code: 'ENOEXEC', syscall: 'findSyscallInsn', pid });
}

/** Picks a page-aligned range of `size` bytes free in every given layout, with a free page on both sides. */
export function findFreeRange(layouts: Array<Array<{ start: number; end: number }>>, size: number, from = 0x10000): number {
  const all = layouts.flat().sort((a, b) => a.start - b.start);
  let candidate = from;
  for (;;) {
    const lo = candidate - PAGE_SIZE,
      hi = candidate + size + PAGE_SIZE;
    const clash = all.find((v) => v.start < hi && v.end > lo);
    if (!clash) return candidate;
    candidate = clash.end + PAGE_SIZE;
    if (candidate + size > TASK_SIZE) throw new Error('no free address range');
  }
}

/**
 * Registers of a task frozen inside a syscall, rewritten so that on resume it re-enters the
 * syscall instead of returning -ERESTART* (the kernel would only do this itself when resuming
 * from the signal path, which injected syscalls leave).
 */
export function restartAdjusted(raw: Buffer): Buffer {
  const r = new Regs(Buffer.from(raw));
  const orig = r.signed('orig_rax');
  const ret = -r.signed('rax');
  if (orig >= 0n) {
    if (ret === BigInt(ERESTARTSYS) || ret === BigInt(ERESTARTNOINTR) || ret === BigInt(ERESTARTNOHAND)) {
      r.set('rax', orig)
        .set('rip', r.get('rip') - 2n)
        .set('orig_rax', -1n);
    } else if (ret === BigInt(ERESTART_RESTARTBLOCK)) {
      r.set('rax', SYS.restart_syscall)
        .set('rip', r.get('rip') - 2n)
        .set('orig_rax', -1n);
    }
  }
  return r.buf;
}

/** What the threads of one process share for injection: the instruction and the scratch page. */
export interface AddressSpace {
  insn?: number;
  scratch?: number;
  /** An int3 follows the syscall instruction: one ptrace stop per injected syscall, not two. */
  int3?: boolean;
}

/** One traced task (a thread; the leader's tid is the pid). */
export class Tracee {
  /** Registers at the moment of the freeze (raw, as the kernel reported them). */
  readonly frozenRegs: Buffer;
  readonly space: AddressSpace;
  private injected = 0;

  constructor(
    readonly pid: number,
    opts: { space?: AddressSpace } = {},
  ) {
    this.frozenRegs = native.ptrace.getRegs(pid);
    this.space = opts.space ?? {};
  }

  /** Another thread of the same process, sharing the injection instruction and scratch page. */
  sibling(tid: number): Tracee {
    return new Tracee(tid, { space: this.space });
  }

  /** Address of the `syscall` instruction used for injection. */
  get syscallInsn(): number {
    if (this.space.insn === undefined) this.space.insn = findSyscallInsn(this.pid);
    return this.space.insn;
  }
  set syscallInsn(addr: number) {
    this.space.insn = addr;
  }

  private get scratchAddr(): number | undefined {
    return this.space.scratch;
  }
  private set scratchAddr(v: number | undefined) {
    this.space.scratch = v;
  }

  /** Runs one syscall in the task; throws NativeError on -errno. */
  syscall(nr: number, ...args: Array<number | bigint>): bigint {
    const ret = native.ptrace.remoteSyscall(this.pid, this.syscallInsn, nr, args, this.space.int3);
    this.injected++;
    return checkSyscall(nameOf(nr), this.pid, ret);
  }

  /** Runs one syscall and returns the raw result (negative errno included). */
  syscallRaw(nr: number, ...args: Array<number | bigint>): bigint {
    this.injected++;
    return native.ptrace.remoteSyscall(this.pid, this.syscallInsn, nr, args, this.space.int3);
  }

  get injectedCount(): number {
    return this.injected;
  }

  /** The scratch mapping (rw, SCRATCH_SIZE) for pointer arguments; created on first use. */
  scratch(): number {
    if (this.scratchAddr === undefined) {
      const addr = findFreeRange([readMaps(this.pid)], SCRATCH_SIZE, 0x100000000);
      this.scratchAddr = Number(this.syscall(SYS.mmap, addr, SCRATCH_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0));
      log('pid %d: scratch at %s', this.pid, this.scratchAddr.toString(16));
    }
    return this.scratchAddr;
  }

  /** Adopts an existing mapping (e.g. the restore trampoline) as scratch. */
  adoptScratch(addr: number): void {
    this.scratchAddr = addr;
  }

  get scratchRange(): { start: number; end: number } | undefined {
    return this.scratchAddr === undefined ? undefined : { start: this.scratchAddr, end: this.scratchAddr + SCRATCH_SIZE };
  }

  /** Writes data into scratch at offset and returns its address in the task. */
  put(data: Buffer, offset = 0): number {
    const addr = this.scratch() + offset;
    native.mem.writeMem(this.pid, addr, data);
    return addr;
  }

  putString(s: string, offset = 0): number {
    return this.put(Buffer.from(s + '\0'), offset);
  }

  read(addr: number, len: number): Buffer {
    return native.mem.readMem(this.pid, addr, len);
  }

  /** Unmaps the scratch mapping (dump side: leave no trace). */
  releaseScratch(): void {
    if (this.scratchAddr !== undefined) {
      // The instruction may live in the scratch page: no breakpoint to come back to.
      this.space.int3 = false;
      this.syscall(SYS.munmap, this.scratchAddr, SCRATCH_SIZE);
      this.scratchAddr = undefined;
    }
  }
}

const NAMES = new Map<number, string>(Object.entries(SYS).map(([k, v]) => [v, k]));
function nameOf(nr: number): string {
  return NAMES.get(nr) ?? `syscall ${nr}`;
}

/**
 * Makes `parent` clone a new task with a chosen pid (set_tid: one entry per pid namespace
 * level, innermost first): a child process (fork-like) or, with thread, a thread of parent's.
 * The new task starts stopped and traced (PTRACE_O_TRACEFORK/TRACECLONE on the parent). Returns
 * it, with its pid as the host sees it (clone3 answers in the parent's namespace). Throws the
 * NativeError of clone3 (EEXIST: pid taken).
 */
export function remoteClone(parent: Tracee, setTid: number[], opts: { thread?: boolean } = {}): Tracee {
  const at = parent.put(setTidArray(setTid), 2048);
  const args = cloneArgs(
    opts.thread ? { flags: CLONE_THREAD_FLAGS, setTid: at, setTidSize: setTid.length } : { exitSignal: SIGCHLD, setTid: at, setTidSize: setTid.length },
  );
  let id = Number(parent.syscall(SYS.clone3, parent.put(args, 1024), args.length));
  if (setTid.length > 1) id = setTid[setTid.length - 1];
  else if (nsPid(parent.pid) !== parent.pid) {
    const candidates = opts.thread ? listThreads(parent.pid) : childrenOf(parent.pid);
    const host = hostTidOf(candidates, id, opts.thread ? () => parent.pid : undefined);
    if (host === undefined)
      throw new NativeError({ message: `cannot find the new task ${id} of ${parent.pid}`, code: 'ESRCH', syscall: 'clone3', pid: parent.pid });
    id = host;
  }
  const st = native.ptrace.waitStop(id, 10000);
  if (st.kind === 'exited' || st.kind === 'killed') {
    throw new NativeError({ message: `new task ${id} of ${parent.pid} died at birth`, code: 'ESRCH', syscall: 'clone3', pid: id });
  }
  return opts.thread ? parent.sibling(id) : new Tracee(id, { space: { insn: parent.syscallInsn } });
}
