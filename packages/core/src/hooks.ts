/**
 * Every hook of the checkpoint/restore pipeline, declared in this one file.
 *
 * | hook                         | kind              | called                                   |
 * |------------------------------|-------------------|------------------------------------------|
 * | session.beforeDump/afterDump | AsyncSeries       | once per dump, around the per-process stages |
 * | session.beforeRestore/afterRestore | AsyncSeries | once per restore (afterRestore: stubs ready, not yet resumed) |
 * | session.processesCreated     | AsyncSeries       | once per restore, after the pids stage made every process (zombies, groups) |
 * | <class>.dump                 | AsyncSeries       | per frozen process, in DUMP_STAGES order |
 * | <class>.restore              | AsyncSeries       | per process, stage by stage across the tree (parents first), in RESTORE_STAGES order |
 * | files.dumpFd                 | AsyncSeriesBail   | per open fd: the first plugin returning a record claims it |
 * | files.restoreFd              | AsyncSeriesBail   | per fd record: the first plugin returning a restorer-side fd wins |
 * | files.afterInstall           | AsyncSeries       | per process, once every fd (files, sockets) is in place: wiring that names other fds (epoll watches) |
 *
 * State classes: pids, credentials, threads, memory, files, sockets, sysvipc, signals, registers.
 * Built-in handlers of the bail hooks tap at STAGE.FALLBACK, so a user plugin tapping at the
 * default stage sees every fd first and can take over one kind, or one path, from the built-in.
 */
import { AsyncSeriesBailHook, AsyncSeriesHook } from 'tapable';
import type { DumpSession, ProcessDump, RestoreSession, ProcessRestore, FdDumpRequest, FdRecord } from './context.js';

export const STATE_CLASSES = ['pids', 'credentials', 'threads', 'memory', 'files', 'sockets', 'sysvipc', 'signals', 'registers'] as const;
export type StateClass = (typeof STATE_CLASSES)[number];

/** Dump: identity first, memory before anything that maps scratch pages, registers last. */
export const DUMP_STAGES: readonly StateClass[] = ['pids', 'credentials', 'threads', 'memory', 'files', 'sockets', 'sysvipc', 'signals', 'registers'];
/** Restore: create the process, rebuild memory, then kernel objects; credentials and registers last. */
export const RESTORE_STAGES: readonly StateClass[] = ['pids', 'memory', 'files', 'sockets', 'sysvipc', 'signals', 'threads', 'credentials', 'registers'];

/** Named tap stages: order plugins without raw numbers. */
export const STAGE = Object.freeze({ EARLY: -100, DEFAULT: 0, FALLBACK: 100 });

export interface StateHooks {
  dump: AsyncSeriesHook<[ProcessDump]>;
  restore: AsyncSeriesHook<[ProcessRestore]>;
}

function stateHooks(): StateHooks {
  return {
    dump: new AsyncSeriesHook<[ProcessDump]>(['proc']),
    restore: new AsyncSeriesHook<[ProcessRestore]>(['proc']),
  };
}

export function createHooks() {
  return Object.freeze({
    session: Object.freeze({
      beforeDump: new AsyncSeriesHook<[DumpSession]>(['session']),
      afterDump: new AsyncSeriesHook<[DumpSession]>(['session']),
      beforeRestore: new AsyncSeriesHook<[RestoreSession]>(['session']),
      processesCreated: new AsyncSeriesHook<[RestoreSession]>(['session']),
      afterRestore: new AsyncSeriesHook<[RestoreSession]>(['session']),
    }),
    pids: stateHooks(),
    credentials: stateHooks(),
    threads: stateHooks(),
    memory: stateHooks(),
    files: Object.freeze({
      ...stateHooks(),
      dumpFd: new AsyncSeriesBailHook<[FdDumpRequest, ProcessDump], FdRecord | undefined>(['fd', 'proc']),
      restoreFd: new AsyncSeriesBailHook<[FdRecord, ProcessRestore], number | undefined>(['record', 'proc']),
      afterInstall: new AsyncSeriesHook<[ProcessRestore]>(['proc']),
    }),
    sockets: stateHooks(),
    sysvipc: stateHooks(),
    signals: stateHooks(),
    registers: stateHooks(),
  });
}

export type Hooks = ReturnType<typeof createHooks>;
