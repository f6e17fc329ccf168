/**
 * The restorer's own machinery in each stub, owned by core so that no plugin depends on another
 * for it:
 * - the installer pidfd: every stub starts with a pidfd of the restorer at fd 3 (spawned, or
 *   forked from a parent stub), through which it takes the fds the restorer prepared
 *   (pidfd_getfd). It works inside a new pid namespace, where pidfd_open(restorer) cannot.
 * - the trampoline: after processesCreated, a page at an address free in both the stub's layout
 *   and the image's, holding scratch data and `syscall; int3` at its end, through which every
 *   later remote syscall runs (one ptrace stop each), and the code that runs many in one stop
 *   (INSTALL_CODE for fds; Tracee's BATCH_CODE for any). The memory plugin unmaps everything else.
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
 * Installs fds in one stop (Installer.installMany). rdi = the stub's pidfd of the restorer,
 * rsi = entries of 16 bytes (int32 restorer fd, int32 fd, int32 dup3 flags, int32 result: 1 until
 * done, then 0 or -errno), rdx = how many. For each: tmp = pidfd_getfd(pidfd, src, 0); if tmp is
 * the fd: fcntl(fd, F_SETFD, flags ? FD_CLOEXEC : 0); else dup3(tmp, fd, flags), close(tmp).
 * Stops at its int3 (the last byte) with rax = 0, or at the first failure with its -errno (also in
 * the entry's result). Assembled from:
 *     mov r12, rdi; mov r13, rsi; mov r14, rdx
 *   1: test r14, r14; jz 9f
 *     mov eax, 438; mov rdi, r12; movsxd rsi, [r13]; xor edx, edx; syscall      ; pidfd_getfd
 *     test rax, rax; js 8f; mov r15, rax
 *     movsxd rsi, [r13+4]; cmp r15, rsi; je 3f
 *     mov eax, 292; mov rdi, r15; movsxd rdx, [r13+8]; syscall                    ; dup3
 *     mov rbx, rax; mov eax, 3; mov rdi, r15; syscall; mov rax, rbx               ; close
 *     test rax, rax; js 8f; jmp 4f
 *   3: mov eax, 72; mov rdi, r15; mov esi, 2; xor edx, edx                       ; fcntl F_SETFD
 *     cmp dword [r13+8], 0; setne dl; syscall; test rax, rax; js 8f
 *   4: mov dword [r13+12], 0; add r13, 16; dec r14; jmp 1b
 *   8: mov dword [r13+12], eax; jmp 10f
 *   9: xor eax, eax
 *  10: int3
 */
const INSTALL_CODE = Buffer.from([
  0x49, 0x89, 0xfc, 0x49, 0x89, 0xf5, 0x49, 0x89, 0xd6, 0x4d, 0x85, 0xf6, 0x74, 0x7b, 0xb8, 0xb6, 0x01, 0x00, 0x00, 0x4c, 0x89, 0xe7, 0x49, 0x63, 0x75, 0x00,
  0x31, 0xd2, 0x0f, 0x05, 0x48, 0x85, 0xc0, 0x78, 0x60, 0x49, 0x89, 0xc7, 0x49, 0x63, 0x75, 0x04, 0x49, 0x39, 0xf7, 0x74, 0x25, 0xb8, 0x24, 0x01, 0x00, 0x00,
  0x4c, 0x89, 0xff, 0x49, 0x63, 0x55, 0x08, 0x0f, 0x05, 0x48, 0x89, 0xc3, 0xb8, 0x03, 0x00, 0x00, 0x00, 0x4c, 0x89, 0xff, 0x0f, 0x05, 0x48, 0x89, 0xd8, 0x48,
  0x85, 0xc0, 0x78, 0x31, 0xeb, 0x1e, 0xb8, 0x48, 0x00, 0x00, 0x00, 0x4c, 0x89, 0xff, 0xbe, 0x02, 0x00, 0x00, 0x00, 0x31, 0xd2, 0x41, 0x83, 0x7d, 0x08, 0x00,
  0x0f, 0x95, 0xc2, 0x0f, 0x05, 0x48, 0x85, 0xc0, 0x78, 0x11, 0x41, 0xc7, 0x45, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x49, 0x83, 0xc5, 0x10, 0x49, 0xff, 0xce, 0xeb,
  0x86, 0x41, 0x89, 0x45, 0x0c, 0xeb, 0x02, 0x31, 0xc0, 0xcc,
]);
/** Where INSTALL_CODE sits: below the end of the trampoline (the syscall instruction is in its last 16 bytes). */
const INSTALL_CODE_AT = 512;
/** Where Tracee's BATCH_CODE sits: below INSTALL_CODE, above the batch's area. */
const BATCH_CODE_AT = 1024;
/** Entries per stop (16 bytes each, from the start of the trampoline's scratch). */
const INSTALL_BATCH = 1024;

/**
 * Per process: where the installer pidfd is now (it moves if the process's own fd 3 comes in).
 * Processes that share one fd table (CLONE_FILES) share it: `shareTableWith` the parent's.
 */
export class Installer {
  private slot: { pidfd: number | undefined } = { pidfd: STUB_PIDFD };
  trampoline?: { start: number; end: number };
  /** INSTALL_CODE is in the trampoline. */
  private codeWritten = false;

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

  /**
   * install() for many fds in one stop: INSTALL_CODE, written at the top of the trampoline, makes
   * for each entry pidfd_getfd + dup3 + close (or F_SETFD when the fd lands at its number), and
   * stops at its int3; an entry that fails stops it there, with its errno.
   */
  installMany(list: ReadonlyArray<{ fd: number; restorerFd: number; cloexec: boolean }>): void {
    if (!list.length) return;
    const stub = this.stub('installFd');
    if (!this.trampoline) {
      for (const e of list) this.install(e.fd, e.restorerFd, e.cloexec);
      return;
    }
    if (list.some((e) => e.fd === this.pidfd)) {
      // Out of the way of every number an fd goes to.
      const above = Math.max(...list.map((e) => e.fd)) + 1;
      const moved = Number(stub.syscall(SYS.fcntl, this.pidfd!, F_DUPFD_CLOEXEC, above));
      stub.syscall(SYS.close, this.pidfd!);
      this.pidfd = moved;
    }
    const code = this.trampoline.end - INSTALL_CODE_AT;
    if (!this.codeWritten) {
      native.mem.writeMem(stub.pid, code, INSTALL_CODE);
      this.codeWritten = true;
    }
    const base = this.trampoline.start;
    for (let i = 0; i < list.length; i += INSTALL_BATCH) {
      const chunk = list.slice(i, i + INSTALL_BATCH);
      const entries = Buffer.alloc(16 * chunk.length);
      chunk.forEach((e, k) => {
        entries.writeInt32LE(e.restorerFd, 16 * k);
        entries.writeInt32LE(e.fd, 16 * k + 4);
        entries.writeInt32LE(e.cloexec ? O_CLOEXEC : 0, 16 * k + 8);
        entries.writeInt32LE(1, 16 * k + 12);
      });
      native.mem.writeMem(stub.pid, base, entries);
      const r = native.ptrace.remoteRun(stub.pid, code, code + INSTALL_CODE.length, [this.pidfd!, base, chunk.length]);
      if (r < 0n) {
        const done = native.mem.readMem(stub.pid, base, entries.length);
        const k = chunk.findIndex((_e, j) => done.readInt32LE(16 * j + 12) < 0);
        const e = chunk[k >= 0 ? k : 0]!;
        throw new CkptError('ERR_CKPT_RESTORE_FAILED', `pid ${this.proc.pid}: cannot install fd ${e.fd}: errno ${-r}`);
      }
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
    stub.adoptBatch(at + SCRATCH_SIZE - BATCH_CODE_AT);
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
