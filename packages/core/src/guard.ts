/**
 * Return frames: how a dumped thread gets back to where it was by itself when ckpt dies.
 *
 * A dump runs syscalls inside the frozen threads (remote syscalls). If ckpt is killed at any
 * instant of that, the kernel detaches the threads and they run on from whatever registers ckpt
 * gave them. So a thread ckpt works in is always "parked": besides its registers of the moment,
 * its memory holds a signal return frame (the layout rt_sigreturn reads) with the registers,
 * signal mask and FPU/AVX state it must get back, and the code it would run next ends in
 * rt_sigreturn on that frame:
 *   - in the guard page (dump scratch mapping): `syscall; mov rsp, rbx; mov eax, 15; syscall`,
 *     rbx = the thread's frame, which is its own slot of the guard page (or a loop of syscalls
 *     that ends in the same tail, GUARD_BATCH);
 *   - before the guard page exists (the mmap that creates it) and for the munmap that removes
 *     it: the vdso's `syscall; xor...; ret`, with rsp on a frame written below the red zone of
 *     a thread whose stack is the main [stack], whose first word returns into an existing
 *     `mov $15, %eax; syscall` (libc's, musl's or Go's signal restorer).
 * Either way the thread comes back with the registers it was frozen with (a syscall it was in
 * restarts), its signal mask, its FPU state and its alternate stack untouched. Signals that
 * arrive meanwhile stay pending (the mask is all-blocked while parked) instead of being taken
 * by ckpt. Between stages one thread is parked on the stack path on the guard's munmap
 * (Tracee.parkBetweenStages), so a ckpt dead there leaves nothing. What a ckpt dead during a
 * stage can leave behind is the guard mapping itself; it starts with
 * GUARD_MAGIC so the next ckpt (dump, `ckpt check --repair`) finds and removes it.
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { native } from '@ckpt/native';
import { ownerAlive, safeReaddir, selfOwner, type Owner } from './imagedir.js';
import { readMaps, readStat, type Vma } from './proc.js';

/** First bytes of a guard mapping: how a stale one is recognised. */
export const GUARD_MAGIC = Buffer.from('ckpt-guard-page\0', 'latin1');
/** The guard header page: magic, owner, code. */
export const GUARD_HEADER = 4096;
/** Offset of the code in the header page: syscall at +0, the tail (return to the frame) at +2. */
export const GUARD_CODE = 64;
export const GUARD_CODE_BYTES = Buffer.from([
  0x0f,
  0x05, // syscall
  0x48,
  0x89,
  0xdc, // mov %rbx, %rsp
  0xb8,
  0x0f,
  0x00,
  0x00,
  0x00, // mov $15 (rt_sigreturn), %eax
  0x0f,
  0x05, // syscall
  0x0f,
  0x0b, // ud2: never reached
]);
/** Offset of the tail in GUARD_CODE_BYTES. */
export const GUARD_TAIL = 2;
/**
 * Offset of the snapshot code in the header page: a clone whose caller, should ckpt die before it
 * is back in control, goes on to the guard's tail (its own context) like any remote syscall, and
 * whose child exits at once (see Tracee.snapshotMm).
 */
export const SNAPSHOT_CODE = 128;
export const SNAPSHOT_CODE_BYTES = Buffer.concat([
  Buffer.from([
    0x0f,
    0x05, // syscall
    0x48,
    0x85,
    0xc0, // test %rax, %rax
    0x75,
    0x09, // jnz tail (the caller: the child's pid, or -errno)
    0xb8,
    0x3c,
    0x00,
    0x00,
    0x00, // mov $60 (exit), %eax
    0x31,
    0xff, // xor %edi, %edi
    0x0f,
    0x05, // syscall: the child, on its own, exits
  ]),
  GUARD_CODE_BYTES.subarray(GUARD_TAIL),
]);

/** Where the guard's header keeps its size and the vdso's `syscall ... ret` (for the remover's tail). */
export const GUARD_SIZE_AT = 24;
export const GUARD_GADGET_AT = 32;

/**
 * The remover's tail at `at` in the header page: the way back of the one thread whose return
 * also unmaps the guard (Tracee's remover). rbx is its frame on its stack less 8, whose return
 * word is the process's rt_sigreturn restorer; the tail unmaps the guard (its start from the
 * code's own address, its size from the header) through the vdso's `syscall ... ret`, which then
 * returns into the restorer on the frame: the stack path's munmap, reached from the guard.
 *     mov rsp, rbx; lea rdi, [rip - (at + 10)]; mov rsi, [rdi + 24]; mov rcx, [rdi + 32]
 *     mov eax, 11 (munmap); jmp rcx
 */
export function removerTail(at: number): Buffer {
  const b = Buffer.from([
    0x48,
    0x89,
    0xdc,
    0x48,
    0x8d,
    0x3d,
    0,
    0,
    0,
    0,
    0x48,
    0x8b,
    0x77,
    GUARD_SIZE_AT,
    0x48,
    0x8b,
    0x4f,
    GUARD_GADGET_AT,
    0xb8,
    0x0b,
    0,
    0,
    0,
    0xff,
    0xe1,
  ]);
  b.writeInt32LE(-(at + 10), 6);
  return b;
}

/** Offsets of the remover's code: a syscall, and a batch loop, each ending in the remover's tail. */
export const GUARD_REMOVE_CODE = 288;
export const GUARD_REMOVE_BATCH = 320;

/**
 * Offset of the batch code in the header page: a loop that makes the syscalls of a table (core's
 * Tracee.syscallsRaw) and then goes to the guard's tail. ckpt runs it from syscall stop to
 * syscall stop, never to a breakpoint, so a thread left to itself at any instant finishes the
 * table's syscalls (a dump gives it only queries) and returns to its own context.
 */
export const GUARD_BATCH = 192;

/**
 * struct ucontext (x86_64): flags, link, stack_t, sigcontext (256 bytes, at 40: r8-r15, rdi, rsi,
 * rbp, rbx, rdx, rax, rcx, rsp, rip, eflags as u64, then cs/gs/fs/ss as u16, err, trapno,
 * oldmask, cr2, fpstate), sigset (at 296). The engine builds the frame (returnFrame).
 */
const UC_SIZE = 304;
const UC_SIGMASK = 296;
/** rt_sigreturn checks that a whole struct rt_sigframe (ucontext + siginfo) is addressable. */
const SIGINFO_SIZE = 128;
const alignUp = (v: number, a: number) => Math.ceil(v / a) * a;

/** Bytes a frame takes from its ucontext address on (fpstate 64-byte aligned after it). */
export function frameSize(xstateSize: number): number {
  return alignUp(UC_SIZE + SIGINFO_SIZE, 64) + 64 + xstateSize + 4;
}

/**
 * The return frame for a thread, to be written at `uc` in its address space: a ucontext whose
 * sigcontext holds `regs` (user_regs_struct), whose mask is `mask`, whose fpstate is `xstate`
 * (NT_X86_XSTATE layout) with the software bytes and end magic rt_sigreturn requires, and whose
 * stack_t is invalid on purpose (rt_sigreturn ignores a failed sigaltstack: the alternate stack
 * stays as it is).
 */
export function returnFrame(uc: number, regs: Buffer, mask: bigint, xstate: Buffer): Buffer {
  // Built natively (the same layout: UC_* and FP_XSTATE_* above): in JS it was some 80 us per
  // thread in a command's cold code, 16 ms of a 200-thread dump.
  return native.ptrace.returnFrame(uc, regs, mask, sigframeXstate(xstate));
}

/** AMX tile data (XFEATURE_XTILE_DATA): the one state component a task has only once it asked for it. */
const XTILE_DATA = 1n << 18n;

/**
 * The thread's xstate (NT_X86_XSTATE) as its signal frame holds it. ptrace gives the layout of
 * every component this CPU has (with AMX, 8 KiB of tile data), but rt_sigreturn takes no more than
 * the task's own size, which has no tile data unless it asked for it (arch_prctl
 * ARCH_REQ_XCOMP_PERM): bigger, and the kernel restores only the legacy FX area, losing the upper
 * halves of the vector registers. A thread whose tile data is in its initial state (all of them
 * that never asked) gets a frame without it, which any task's size takes; the software bytes
 * then name the components that frame holds.
 */
function sigframeXstate(xstate: Buffer): Buffer {
  const features = xstate.readBigUInt64LE(464);
  if (!(features & XTILE_DATA) || xstate.readBigUInt64LE(512) & XTILE_DATA) return xstate;
  const x = Buffer.from(xstate);
  const kept = features & ~XTILE_DATA;
  let size = xstateSizes.get(kept);
  if (size === undefined) xstateSizes.set(kept, (size = native.ptrace.xstateSize(kept)));
  if (size >= x.length) return x;
  const out = x.subarray(0, size);
  out.writeBigUInt64LE(kept, 464);
  return out;
}

/** xstateSize by feature set: a CPUID per feature each, and every CPUID exits to the hypervisor in a VM. */
const xstateSizes = new Map<bigint, number>();

/** Where a frame's signal mask lives (to refresh it once the thread's real mask is known). */
export const frameMaskOffset = UC_SIGMASK;

/** The code addresses the stack path needs: vdso `syscall ... ret`, and a `rt_sigreturn` restorer. */
export interface Gadgets {
  syscallRet: number;
  sigreturn: number;
}

const SIGRETURN_PATTERNS = [
  Buffer.from([0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05]), // mov $15, %rax; syscall
  Buffer.from([0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05]), // mov $15, %eax; syscall
];

/** `syscall` followed only by register-clearing xors, then `ret`: returns the syscall's offset. */
function syscallRetIn(buf: Buffer): number {
  for (let i = buf.indexOf(0x0f); i >= 0 && i < buf.length - 2; i = buf.indexOf(0x0f, i + 1)) {
    if (buf[i + 1] !== 0x05) continue;
    let k = i + 2;
    for (;;) {
      if (buf[k] === 0xc3) return i;
      if (buf[k] === 0x31 && buf[k + 1] >= 0xc0) k += 2;
      else if ((buf[k] === 0x45 || buf[k] === 0x48 || buf[k] === 0x4d) && buf[k + 1] === 0x31 && buf[k + 2] >= 0xc0) k += 3;
      else break;
    }
  }
  return -1;
}

/** Where the gadgets were found before: the vdso's offset, each file's restorer offset (null: none). */
const vdsoCache = new Map<number, number>();
const restorerCache = new Map<string, number | null>();

/** A libc's (or musl's) file name. */
const LIBC = /\/(libc|ld-musl)[-.]/;

/**
 * Finds the stack path's code in a process: the vdso first, then its C library or runtime.
 * Undefined when it has none (then the mmap and munmap of the guard page are unguarded).
 * What was found in a file is remembered by inode, so a tree of processes sharing a libc pays once.
 */
export function findGadgets(pid: number, vmas: Vma[]): Gadgets | undefined {
  const exec = vmas.filter((v) => v.perms[2] === 'x');
  const vdso = exec.find((v) => v.name === '[vdso]');
  if (!vdso) return undefined;
  let at = vdsoCache.get(vdso.end - vdso.start);
  if (at === undefined) {
    at = syscallRetIn(native.mem.readMem(pid, vdso.start, vdso.end - vdso.start));
    vdsoCache.set(vdso.end - vdso.start, at);
  }
  if (at < 0) return undefined;
  // libc's (or musl's) first, then other files, then anonymous code; each area scored once.
  const score = (v: Vma) => (LIBC.test(v.name) ? 0 : v.name && !v.name.startsWith('[') ? 1 : 2);
  const ranked = exec
    .filter((x) => x !== vdso)
    .map((v) => ({ v, score: score(v) }))
    .sort((a, b) => a.score - b.score);
  let budget = 64 << 20;
  for (const { v } of ranked) {
    const key = v.inode ? `${v.name}:${v.inode}:${v.offset}:${v.end - v.start}` : undefined;
    const known = key === undefined ? undefined : restorerCache.get(key);
    if (known === null) continue;
    if (known !== undefined) return { syscallRet: vdso.start + at, sigreturn: v.start + known };
    const len = Math.min(v.end - v.start, budget);
    if (len <= 0) break;
    let found: ReturnType<typeof sigreturnIn>;
    try {
      found = sigreturnIn(pid, v.start, len);
    } catch {
      continue;
    }
    budget -= found.read;
    const i = found.at;
    if (key !== undefined && (i !== undefined || len === v.end - v.start)) restorerCache.set(key, i ?? null);
    if (i !== undefined) return { syscallRet: vdso.start + at, sigreturn: v.start + i };
  }
  return undefined;
}

/** How much of an area sigreturnIn reads at a time. */
const SCAN_CHUNK = 64 << 10;

/**
 * The offset of the first rt_sigreturn restorer (any of SIGRETURN_PATTERNS) in [start, start+len)
 * of pid's memory, read a chunk at a time up to the first found: glibc's sits 88 KiB into its 1.4
 * MiB of code here, and reading all of it took 3 ms of every command's dump. `read`: the bytes read.
 */
export function sigreturnIn(pid: number, start: number, len: number): { at: number | undefined; read: number } {
  const overlap = Math.max(...SIGRETURN_PATTERNS.map((p) => p.length)) - 1;
  let read = 0;
  for (let from = 0; from < len; from += SCAN_CHUNK) {
    // Each chunk starts a pattern's length back, so a pattern across two chunks is found.
    const at = Math.max(0, from - overlap);
    const buf = native.mem.readMem(pid, start + at, Math.min(len, from + SCAN_CHUNK) - at);
    read += buf.length;
    let first: number | undefined;
    for (const p of SIGRETURN_PATTERNS) {
      const i = buf.indexOf(p);
      if (i >= 0 && (first === undefined || i < first)) first = i;
    }
    if (first !== undefined) return { at: at + first, read };
  }
  return { at: undefined, read };
}

/**
 * The guard journal: before ckpt first maps a guard into a process it notes where (the guard
 * goes to the same place at every stage), so that a guard whose ckpt died before writing its
 * magic (between the mmap and the header write) is still known:
 * /run/ckpt/guards/<ckpt pid>-<start>.json, removed when that ckpt exits. JSON lines: the owner,
 * then a note a line, appended (one write each, before the mmap; a torn last line is skipped).
 */
export const GUARDS_DIR = '/run/ckpt/guards';

interface GuardNote {
  pid: number;
  /** Start time of the process (a reused pid is not taken for it). */
  start: number;
  addr: number;
  size: number;
}

interface Journal {
  file: string;
  owner: Owner;
  notes: GuardNote[];
}

/** This ckpt's journal, and its file open for appending (-1: it could not be made). */
let journal: (Journal & { fd: number }) | undefined;

/** Notes a guard about to be mapped. */
export function noteGuard(pid: number, addr: number, size: number): void {
  if (!journal) {
    const owner = selfOwner();
    journal = { file: join(GUARDS_DIR, `${owner.pid}-${owner.start}.json`), owner, notes: [], fd: -1 };
    process.on('exit', dropJournal);
    try {
      mkdirSync(GUARDS_DIR, { recursive: true, mode: 0o700 });
      journal.fd = openSync(journal.file, 'w', 0o600);
      writeSync(journal.fd, `${JSON.stringify({ owner })}\n`);
    } catch {
      /* not root (no /run/ckpt): the magic still marks every guard but a just-mapped one */
    }
  }
  const note = { pid, start: readStat(pid).startTime, addr, size };
  journal.notes.push(note);
  if (journal.fd >= 0) writeSync(journal.fd, `${JSON.stringify(note)}\n`);
}

/** A ckpt that ends (not killed) leaves nothing behind: its journal goes with it. */
function dropJournal(): void {
  if (!journal) return;
  rmSync(journal.file, { force: true });
  if (journal.fd >= 0) closeSync(journal.fd);
}

/** Rewrites a dead ckpt's journal whole (renamed over it: a reader never sees half of it). */
function writeJournal(j: Journal): void {
  const tmp = `${j.file}.${process.pid}.tmp`;
  writeFileSync(tmp, [{ owner: j.owner }, ...j.notes].map((x) => `${JSON.stringify(x)}\n`).join(''), { mode: 0o600 });
  renameSync(tmp, j.file);
}

/** Whether the process a note is about still exists (the same one: its start time). */
function noteAlive(n: GuardNote): boolean {
  try {
    return readStat(n.pid).startTime === n.start;
  } catch {
    return false;
  }
}

function parseJournal(file: string): Journal | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined; // gone
  }
  const lines: Array<{ owner?: Owner; notes?: GuardNote[] } & Partial<GuardNote>> = [];
  for (const line of text.split('\n')) {
    try {
      if (line) lines.push(JSON.parse(line));
    } catch {
      /* the last line, torn by a kill as it was written */
    }
  }
  const owner = lines[0]?.owner;
  if (!owner) return undefined;
  // Before JSON lines (ckpt 0.1): one object with every note.
  const notes = lines[0].notes ?? (lines.slice(1) as GuardNote[]);
  return { file, owner, notes };
}

/**
 * Journals read, by file name: those of dead ckpts whole (a dead ckpt writes no more), those of
 * live ones by owner only (read again once it died). A tree's freeze looks at them for every
 * process: the directory is listed each time, each journal read once.
 */
const journalsRead = new Map<string, { owner: Owner; dead?: Journal }>();

/** The journals of ckpts that died: each file with its notes. */
function deadJournals(): Journal[] {
  const all = safeReaddir(GUARDS_DIR);
  // A rewrite (writeJournal) whose ckpt was killed before its rename.
  for (const n of all) {
    const writer = /\.(\d+)\.tmp$/.exec(n)?.[1];
    if (writer && !existsSync(`/proc/${writer}`)) rmSync(join(GUARDS_DIR, n), { force: true });
  }
  const names = all.filter((n) => n.endsWith('.json'));
  for (const n of journalsRead.keys()) if (!names.includes(n)) journalsRead.delete(n);
  const out: Journal[] = [];
  for (const name of names) {
    const file = join(GUARDS_DIR, name);
    if (file === journal?.file) continue;
    let known = journalsRead.get(name);
    if (!known?.dead && (!known || !ownerAlive(known.owner))) {
      const j = parseJournal(file);
      if (!j) continue; // gone, or just being made
      const alive = ownerAlive(j.owner);
      if (!alive && !pruneDead(j)) continue;
      known = alive ? { owner: j.owner } : { owner: j.owner, dead: j };
      journalsRead.set(name, known);
    }
    if (known.dead) out.push(known.dead);
  }
  return out;
}

/**
 * Drops the notes of a dead ckpt's journal about processes that are gone (their guards went with
 * them), and the journal when none is left: else every later dump would read them again, and
 * journals of ckpts killed while their processes died too (or before they noted any) would pile up.
 * False when it was removed.
 */
function pruneDead(j: Journal): boolean {
  const keep = j.notes.filter(noteAlive);
  if (keep.length && keep.length === j.notes.length) return true;
  try {
    keepNotes(j, keep);
  } catch {
    /* another ckpt pruned it first */
  }
  return keep.length > 0;
}

/** A dead ckpt's journal with only the notes `keep`: rewritten, or removed when none is left. */
function keepNotes(j: Journal, keep: GuardNote[]): void {
  j.notes = keep;
  if (!keep.length) rmSync(j.file, { force: true });
  else writeJournal(j);
}

/** Guards noted by ckpts that died, in process pid (still the same process). */
export function orphanedGuardNotes(pid: number): Array<{ addr: number; size: number }> {
  const notes = deadJournals().flatMap((j) => j.notes.filter((n) => n.pid === pid));
  if (!notes.length) return [];
  let start: number;
  try {
    start = readStat(pid).startTime;
  } catch {
    return [];
  }
  return notes.filter((n) => n.start === start);
}

/** Drops the notes of dead ckpts about process pid (its guards were just removed). */
export function dropOrphanedNotes(pid: number): void {
  for (const j of deadJournals()) {
    const keep = j.notes.filter((n) => n.pid !== pid);
    if (keep.length !== j.notes.length) keepNotes(j, keep);
  }
}

/** Notes of dead ckpts whose process is gone or holds no such mapping any more are dropped. */
export function pruneGuardNotes(): void {
  const mapped = (n: GuardNote) => {
    if (!noteAlive(n)) return false;
    try {
      return readMaps(n.pid).some((v) => v.start === n.addr && v.end === n.addr + n.size);
    } catch {
      return false;
    }
  };
  for (const j of deadJournals()) if (!j.notes.some(mapped)) rmSync(j.file, { force: true });
}
