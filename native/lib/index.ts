/**
 * @ckpt/native: the typed facade over the native engine. Everything privileged or hot (ptrace,
 * remote syscalls, page copies, pidfds, clone3) goes through here; nothing else loads the addon.
 *
 *   native.ptrace / mem / hash / proc / fd / events / ipc / sock   the addon's functions by group (./facade.ts)
 *   NativeError, errnoName, checkSyscall                          errors (./errors.ts)
 *   SYS, O_*, F_*, MAP_*, CLONE_*, PTRACE_O_*, AF_*...            constants (./constants.ts)
 *   REG, Regs                                                     registers (./regs.ts)
 *   cloneArgs, prctlMmMap, setTidArray                            kernel structs (./structs.ts)
 *   stubPath, initPath, repairGuardPath, memtrackPath, lazyPath   the helper binaries
 */
import { join } from 'node:path';
import { packageRoot } from './load.js';

export type * from './binding.js';
export { native } from './facade.js';
export { GROUPS } from './groups.js';
export { NativeError, errnoName, checkSyscall } from './errors.js';
export * from './constants.js';
export { REG, Regs, type RegName } from './regs.js';
export * from './structs.js';

/** Path of the static no-libc stub a restore rebuilds into the checkpointed process. */
export const stubPath = join(packageRoot, 'build/ckpt-stub');

/** Path of ckpt-init, pid 1 of the pid namespace `ckpt run` creates for an application. */
export const initPath = join(packageRoot, 'build/ckpt-init');
/** The helper that takes TCP connections out of repair mode if the dump that put them there dies. */
export const repairGuardPath = join(packageRoot, 'build/ckpt-repairguard');
/** The helper that holds write-tracking userfaultfds between dumps (src/memtrack.c). */
export const memtrackPath = join(packageRoot, 'build/ckpt-memtrack');
/** The helper that serves the memory of a lazily restored process (restore --lazy; src/lazy.c). */
export const lazyPath = join(packageRoot, 'build/ckpt-lazy');
/** The helper that reads the bytes queued in a pty and puts them back, whatever becomes of the dump. */
export const ptyQueuePath = join(packageRoot, 'build/ckpt-ptyqueue');
