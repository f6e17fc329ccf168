/**
 * The restorer's own machinery in each stub, owned by core so that no plugin depends on another
 * for it:
 * - the installer pidfd: every stub starts with a pidfd of the restorer at fd 3 (spawned, or
 *   forked from a parent stub), through which it takes the fds the restorer prepared
 *   (pidfd_getfd). It works inside a new pid namespace, where pidfd_open(restorer) cannot.
 * - the trampoline: after processesCreated, a page at an address free in both the stub's layout
 *   and the image's, holding scratch data and `syscall; int3` at its end, through which every
 *   later remote syscall runs (one ptrace stop each). The memory plugin unmaps everything else.
 * Both live until beforeResume has run; then core closes the pidfd and unmaps the trampoline
 * (the last injected syscall), and the processes are detached with the registers plugins set.
 */
import { SYS, native, Regs, O_CLOEXEC, F_SETFD, F_DUPFD_CLOEXEC } from '@ckpt/native';
import {
  findFreeRange,
  findSyscallInsn,
  SCRATCH_SIZE,
  PROT_READ,
  PROT_WRITE,
  PROT_EXEC,
  MAP_PRIVATE,
  MAP_ANONYMOUS,
  MAP_FIXED_NOREPLACE,
  type Tracee,
} from './tracee.js';
import { readMaps, readStat } from './proc.js';
import { sleepSync, withSignalsHeld } from './helpers.js';
import { CkptError } from './errors.js';
import type { ProcessRestore } from './context.js';

/** Every stub starts with the restorer's pidfd at fd 3. */
export const STUB_PIDFD = 3;

/**
 * Per process: where the installer pidfd is now (it moves if the process's own fd 3 comes in).
 * Processes that share one fd table (CLONE_FILES) share it: `shareTableWith` the parent's.
 */
export class Installer {
  private slot: { pidfd: number | undefined } = { pidfd: STUB_PIDFD };
  trampoline?: { start: number; end: number };

  constructor(private readonly proc: { pid: number; stub?: Tracee }) {}

  get pidfd(): number | undefined {
    return this.slot.pidfd;
  }
  set pidfd(v: number | undefined) {
    this.slot.pidfd = v;
  }

  /** This process's fd table is `other`'s (cloned with CLONE_FILES): one pidfd for both. */
  shareTableWith(other: Installer): void {
    this.slot = other.slot;
  }

  private stub(what: string): Tracee {
    if (!this.proc.stub) throw new Error(`${what} of pid ${this.proc.pid} before its process exists`);
    if (this.pidfd === undefined) throw new Error(`${what} of pid ${this.proc.pid} after beforeResume: the restorer's pidfd is gone`);
    return this.proc.stub;
  }

  borrow(restorerFd: number): number {
    const stub = this.stub('borrowFd');
    return Number(stub.syscall(SYS.pidfd_getfd, this.pidfd!, restorerFd, 0));
  }

  install(fd: number, restorerFd: number, cloexec: boolean): void {
    const stub = this.stub('installFd');
    if (this.pidfd === fd) {
      const moved = Number(stub.syscall(SYS.fcntl, this.pidfd, F_DUPFD_CLOEXEC, fd + 1));
      stub.syscall(SYS.close, this.pidfd);
      this.pidfd = moved;
    }
    const tmp = Number(stub.syscall(SYS.pidfd_getfd, this.pidfd!, restorerFd, 0));
    if (tmp !== fd) {
      stub.syscall(SYS.dup3, tmp, fd, cloexec ? O_CLOEXEC : 0);
      stub.syscall(SYS.close, tmp);
    } else {
      stub.syscall(SYS.fcntl, fd, F_SETFD, cloexec ? 1 : 0);
    }
  }

  /** Maps the trampoline, free in the stub's layout and in the image's (`layout`). */
  setupTrampoline(layout: Array<{ start: number; end: number }>): void {
    const stub = this.proc.stub;
    if (!stub) return;
    const stubVmas = readMaps(stub.pid);
    stub.syscallInsn = findSyscallInsn(stub.pid, stubVmas);
    stub.space.int3 = false;
    const at = findFreeRange([stubVmas, layout], SCRATCH_SIZE, 0x10000000);
    stub.syscall(SYS.mmap, at, SCRATCH_SIZE, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    const insn = at + SCRATCH_SIZE - 16;
    native.mem.writeMem(stub.pid, insn, Buffer.from([0x0f, 0x05, 0xcc, 0xcc]));
    stub.syscallInsn = insn;
    stub.space.int3 = true;
    stub.adoptScratch(at);
    this.trampoline = { start: at, end: at + SCRATCH_SIZE };
  }

  /**
   * Closes the pidfd and unmaps the trampoline: after this no remote syscall runs in the process.
   * Every signal is blocked meanwhile: the registers stage has set the final mask, and a signal
   * made pending for the process (e.g. SIGWINCH after a terminal resize) must wait for it to run,
   * not stop these last injected syscalls. `stub`: the thread they run in (the leader, unless it
   * has exited: see exitLeader).
   */
  teardown(stub: Tracee | undefined = this.proc.stub): void {
    if (!stub) return;
    withSignalsHeld(stub.pid, () => {
      if (this.pidfd !== undefined) {
        stub.syscall(SYS.close, this.pidfd);
        this.pidfd = undefined;
      }
      stub.releaseScratch();
      this.trampoline = undefined;
    });
  }
}

/**
 * A process whose leader thread had exited: once its other threads are made and set, the leader
 * (the stub) calls exit(0) through the trampoline, untraced, and stays a zombie while they run,
 * as before the dump. Waits until it is one; the trampoline goes after (teardown via a thread).
 */
export function exitLeader(proc: ProcessRestore): void {
  const stub = proc.stub!;
  const regs = new Regs(native.ptrace.getRegs(stub.pid)).set('rip', BigInt(stub.syscallInsn)).set('rax', BigInt(SYS.exit)).set('rdi', 0n);
  native.ptrace.setRegs(stub.pid, regs.buf);
  native.ptrace.detach(stub.pid, 0);
  const deadline = Date.now() + 5000;
  while (readStat(stub.pid).state !== 'Z') {
    if (Date.now() > deadline)
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `pid ${proc.pid}: its leader thread did not exit (its main thread had exited at the dump)`);
    sleepSync(2);
  }
}

/** The image's layout must leave room for the trampoline somewhere (it always does below 128 TiB). */
export function checkLayout(proc: ProcessRestore, layout: unknown): Array<{ start: number; end: number }> {
  if (!Array.isArray(layout)) return [];
  return layout.map((r, i) => {
    if (!Array.isArray(r) || typeof r[0] !== 'number' || typeof r[1] !== 'number' || r[1] < r[0]) {
      throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `image record of pid ${proc.pid}: layout[${i}] is not a [start, end] pair`);
    }
    return { start: r[0], end: r[1] };
  });
}
