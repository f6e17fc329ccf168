/**
 * Builders of the kernel structs the packages pass to remote syscalls (x86_64 layouts). Each
 * returns a Buffer to copy into the target (Tracee.put) and pass by address.
 */

type U64 = bigint | number;
const u64 = (buf: Buffer, off: number, v: U64 | undefined) => buf.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v ?? 0)), off);

/** sizeof(struct clone_args) with set_tid and cgroup (CLONE_ARGS_SIZE_VER2). */
export const CLONE_ARGS_SIZE = 88;

/** The fields of struct clone_args (clone3(2)); pointers are addresses in the calling process. */
export interface CloneArgs {
  /** CLONE_* flags (not the exit signal). */
  flags?: U64;
  /** CLONE_PIDFD: where the kernel stores the new pidfd (int*). */
  pidfd?: U64;
  /** CLONE_CHILD_SETTID / CLONE_CHILD_CLEARTID: the child's tid word (pid_t*). */
  childTid?: U64;
  /** CLONE_PARENT_SETTID: the parent's copy of the new tid (pid_t*). */
  parentTid?: U64;
  /** The signal the parent gets when the child exits (SIGCHLD for a fork-like child, 0 for a thread). */
  exitSignal?: U64;
  /** Lowest address of the new stack, and its size (0: share/copy the caller's). */
  stack?: U64;
  stackSize?: U64;
  /** CLONE_SETTLS: the new fs_base. */
  tls?: U64;
  /** Address of an array of pid_t (setTidArray), one per pid namespace level, innermost first. */
  setTid?: U64;
  /** Number of entries at setTid. */
  setTidSize?: U64;
  /** CLONE_INTO_CGROUP: fd of the cgroup directory. */
  cgroup?: U64;
}

/** struct clone_args: flags 0, pidfd 8, child_tid 16, parent_tid 24, exit_signal 32, stack 40, stack_size 48, tls 56, set_tid 64, set_tid_size 72, cgroup 80. */
export function cloneArgs(a: CloneArgs): Buffer {
  const buf = Buffer.alloc(CLONE_ARGS_SIZE);
  u64(buf, 0, a.flags);
  u64(buf, 8, a.pidfd);
  u64(buf, 16, a.childTid);
  u64(buf, 24, a.parentTid);
  u64(buf, 32, a.exitSignal);
  u64(buf, 40, a.stack);
  u64(buf, 48, a.stackSize);
  u64(buf, 56, a.tls);
  u64(buf, 64, a.setTid);
  u64(buf, 72, a.setTidSize);
  u64(buf, 80, a.cgroup);
  return buf;
}

/** The pid_t array clone_args.set_tid points to (4 bytes per pid). */
export function setTidArray(pids: readonly number[]): Buffer {
  const buf = Buffer.alloc(4 * pids.length);
  pids.forEach((p, i) => buf.writeInt32LE(p, i * 4));
  return buf;
}

/** sizeof(struct prctl_mm_map). */
export const PRCTL_MM_MAP_SIZE = 104;

/** The fields of struct prctl_mm_map (prctl(PR_SET_MM, PR_SET_MM_MAP, &map, sizeof map)). */
export interface PrctlMmMap {
  startCode: U64;
  endCode: U64;
  startData: U64;
  endData: U64;
  startBrk: U64;
  brk: U64;
  startStack: U64;
  argStart: U64;
  argEnd: U64;
  envStart: U64;
  envEnd: U64;
  /** Address of the auxiliary vector in the target, and its size in bytes. */
  auxv: U64;
  auxvSize: number;
  /** An fd, in the target, of the file /proc/PID/exe should name; -1 leaves the link alone. */
  exeFd: number;
}

/** struct prctl_mm_map: eleven u64 bounds and the auxv pointer (0..95), auxv_size u32 (96), exe_fd u32 (100). */
export function prctlMmMap(m: PrctlMmMap): Buffer {
  const buf = Buffer.alloc(PRCTL_MM_MAP_SIZE);
  [m.startCode, m.endCode, m.startData, m.endData, m.startBrk, m.brk, m.startStack, m.argStart, m.argEnd, m.envStart, m.envEnd, m.auxv].forEach((v, i) =>
    u64(buf, i * 8, v),
  );
  buf.writeUInt32LE(m.auxvSize >>> 0, 96);
  buf.writeUInt32LE(m.exeFd >>> 0, 100);
  return buf;
}
