/**
 * What the running user may do. Restoring processes with their pids (clone3 set_tid) and their
 * mm fields (PR_SET_MM_MAP) needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN; tracing processes of
 * other users needs CAP_SYS_PTRACE. A dump that kills its processes is refused up front when this
 * user could not restore them: it would lose them for nothing.
 */
import { readFileSync } from 'node:fs';

export const CAP_SYS_PTRACE = 19;
export const CAP_SYS_ADMIN = 21;
export const CAP_CHECKPOINT_RESTORE = 40;

/** The effective capability set of this process. */
export function effectiveCaps(): bigint {
  const line = readFileSync('/proc/self/status', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('CapEff:'));
  return line ? BigInt(`0x${line.split(/\s+/)[1]}`) : 0n;
}

export const hasCap = (bit: number, caps = effectiveCaps()): boolean => (caps & (1n << BigInt(bit))) !== 0n;

/** True when this user can restore processes (with their pids). */
export function canRestore(): boolean {
  const caps = effectiveCaps();
  return hasCap(CAP_CHECKPOINT_RESTORE, caps) || hasCap(CAP_SYS_ADMIN, caps);
}
