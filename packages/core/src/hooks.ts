/**
 * Every hook of the checkpoint/restore pipeline, declared in this one file. The pipeline that
 * calls them is engine.ts; what each may do is here and in docs/plugins.md.
 *
 * | hook                        | kind                  | called                                                                 |
 * |-----------------------------|-----------------------|------------------------------------------------------------------------|
 * | session.beforeDump          | AsyncSeries(session)  | once, before anything is frozen: refuse early, set up session state     |
 * | <class>.dump                | AsyncSeries(proc)     | per frozen process, class by class in DUMP_STAGES order (all processes of a class, parents first, before the next class) |
 * | session.frozen              | AsyncSeries(session)  | once, every process of the tree frozen (each with ckpt's guard mapping), before anything is read from them: changes to their address spaces (userfaultfd registrations, mappings) go here, before core reads their smaps on threads of its own (ProcessDump.vmas), which such a change would wait for |
 * | fds.dump                    | AsyncSeriesBail(req, proc) | per open description (core walks every fd table right after the freeze); the first tap returning a claim `{ kind, data }` owns it |
 * | session.fdsDumped          | AsyncSeries(session)  | once, every process frozen and its fd table read (proc.fds), before any state class: refusals that need every fd (a pipe or socket whose peer is outside the tree) |
 * | session.afterDump           | AsyncSeries(session)  | once, every process dumped, still frozen, records not yet written        |
 * | session.imageCommitted      | AsyncSeries(session)  | once, the image is complete on disk; processes still frozen and killed right after (--leave-running: they already run again) |
 * | session.dumpFailed          | AsyncSeries(session, error) | once, when a dump fails or is interrupted, before the processes are thawed; undo what you did (errors are logged, not thrown) |
 * | session.beforeRestore       | AsyncSeries(session)  | once, image validated, nothing created yet: refuse early                 |
 * | <class>.restore             | AsyncSeries(proc)     | per process, class by class in RESTORE_STAGES order, parents first; pids and memory process by process (a child is forked from its parent once the parent's memory is back) |
 * | session.processesCreated    | AsyncSeries(session)  | once, after the pids and memory stages made every process (stub)          |
 * | fds.restore.for(owner)      | HookMap of AsyncSeriesBail(record, proc) -> restorer fd | per open description, to its owner only; the first tap returning an fd wins |
 * | session.fdsInstalled        | AsyncSeries(proc)     | per process, once every fd of every process is installed: wiring that names other fds (epoll watches, locks) |
 * | session.beforeResume        | AsyncSeries(session)  | once, every stage done, processes still stopped; last chance for remote syscalls |
 * | session.afterResume         | AsyncSeries(session)  | once, the processes run (errors are logged: the restore has happened)    |
 * | session.restoreFailed       | AsyncSeries(session, error) | once, when a restore fails or is interrupted, before core's rollback (kills the stubs); errors are logged |
 * | image.compact               | AsyncSeries(compaction) | `ckpt image compact`: the image's records (mutable) and a new image; a plugin whose records leave data to the images above (incremental) writes it whole into the new one |
 *
 * State classes: pids, credentials, threads, memory, files, sockets, sysvipc, signals, registers.
 * Built-in fd handlers tap `fds.dump` at STAGE.FALLBACK, so a user plugin tapping at the default
 * stage sees every fd first and can take over one kind, or one path, from the built-in.
 */
import { AsyncSeriesBailHook, AsyncSeriesHook, HookMap } from 'tapable';
import type { DumpSession, ProcessDump, RestoreSession, ProcessRestore, FdDumpRequest, FdRecord, FdClaim, Compaction } from './context.js';

export const STATE_CLASSES = ['pids', 'credentials', 'threads', 'memory', 'files', 'sockets', 'sysvipc', 'signals', 'registers'] as const;
export type StateClass = (typeof STATE_CLASSES)[number];

/** Dump: identity first, memory before anything that maps scratch pages, registers last. */
export const DUMP_STAGES: readonly StateClass[] = ['pids', 'credentials', 'threads', 'memory', 'files', 'sockets', 'sysvipc', 'signals', 'registers'];
/** Restore: create the process, rebuild memory, then kernel objects; credentials and registers last. */
export const RESTORE_STAGES: readonly StateClass[] = ['pids', 'memory', 'files', 'sockets', 'sysvipc', 'signals', 'threads', 'credentials', 'registers'];

/** Named tap stages: order plugins without raw numbers. Lower runs first. */
export const STAGE = Object.freeze({ EARLY: -100, DEFAULT: 0, LATE: 10, FALLBACK: 100 });

export interface StateHooks {
  dump: AsyncSeriesHook<[ProcessDump]>;
  restore: AsyncSeriesHook<[ProcessRestore]>;
}

function stateHooks(): StateHooks {
  return Object.freeze({
    dump: new AsyncSeriesHook<[ProcessDump]>(['proc']),
    restore: new AsyncSeriesHook<[ProcessRestore]>(['proc']),
  });
}

export type FdRestoreHook = AsyncSeriesBailHook<[FdRecord, ProcessRestore], number | undefined>;

export function createHooks() {
  return Object.freeze({
    session: Object.freeze({
      beforeDump: new AsyncSeriesHook<[DumpSession]>(['session']),
      frozen: new AsyncSeriesHook<[DumpSession]>(['session']),
      fdsDumped: new AsyncSeriesHook<[DumpSession]>(['session']),
      afterDump: new AsyncSeriesHook<[DumpSession]>(['session']),
      imageCommitted: new AsyncSeriesHook<[DumpSession]>(['session']),
      dumpFailed: new AsyncSeriesHook<[DumpSession, Error]>(['session', 'error']),
      beforeRestore: new AsyncSeriesHook<[RestoreSession]>(['session']),
      processesCreated: new AsyncSeriesHook<[RestoreSession]>(['session']),
      fdsInstalled: new AsyncSeriesHook<[ProcessRestore]>(['proc']),
      beforeResume: new AsyncSeriesHook<[RestoreSession]>(['session']),
      afterResume: new AsyncSeriesHook<[RestoreSession]>(['session']),
      restoreFailed: new AsyncSeriesHook<[RestoreSession, Error]>(['session', 'error']),
    }),
    image: Object.freeze({
      compact: new AsyncSeriesHook<[Compaction]>(['compaction']),
    }),
    fds: Object.freeze({
      dump: new AsyncSeriesBailHook<[FdDumpRequest, ProcessDump], FdClaim | undefined>(['fd', 'proc']),
      restore: new HookMap<FdRestoreHook>(() => new AsyncSeriesBailHook<[FdRecord, ProcessRestore], number | undefined>(['record', 'proc'])),
    }),
    pids: stateHooks(),
    credentials: stateHooks(),
    threads: stateHooks(),
    memory: stateHooks(),
    files: stateHooks(),
    sockets: stateHooks(),
    sysvipc: stateHooks(),
    signals: stateHooks(),
    registers: stateHooks(),
  });
}

export type Hooks = ReturnType<typeof createHooks>;
