/**
 * Every hook of the checkpoint/restore pipeline, declared in this one file. The pipeline that
 * calls them is engine.ts; what each may do is here and in docs/plugins.md.
 *
 * | hook                        | kind                  | called                                                                 |
 * |-----------------------------|-----------------------|------------------------------------------------------------------------|
 * | session.beforeDump          | AsyncSeries(session)  | once, before anything is frozen: refuse early, set up session state     |
 * | <class>.dumpAll             | AsyncSeries(session)  | once per class, before its per-process dump calls: work asked of every process at once (Tracee.syscallEach over threads of many processes: a tree's round trips overlap) |
 * | <class>.dump                | AsyncSeries(proc)     | per frozen process, class by class in DUMP_STAGES order (all processes of a class, parents first, before the next class) |
 * | session.frozen              | AsyncSeries(session)  | once, every process of the tree frozen (each with ckpt's guard mapping), before anything is read from them: changes to their address spaces (userfaultfd registrations, mappings) go here, before core reads their smaps on threads of its own (ProcessDump.vmas), which such a change would wait for |
 * | fds.dump                    | AsyncSeriesBail(req, proc) | per open description (core walks every fd table right after the freeze); the first tap returning a claim `{ kind, data }` owns it; a tap may give `when(req, proc)` (TapWhen): not called where it is false |
 * | session.fdsDumped          | AsyncSeries(session)  | once, every process frozen and its fd table read (proc.fds), before any state class: refusals that need every fd (a pipe or socket whose peer is outside the tree) |
 * | session.afterDump           | AsyncSeries(session)  | once, every process dumped, still frozen, records not yet written        |
 * | session.imageCommitted      | AsyncSeries(session)  | once, the image is complete on disk; processes still frozen and killed right after (--leave-running: they already run again) |
 * | session.dumpFailed          | AsyncSeries(session, error) | once, when a dump fails or is interrupted, before the processes are thawed; undo what you did (errors are logged, not thrown) |
 * | session.beforeRestore       | AsyncSeries(session)  | once, image validated, nothing created yet: refuse early                 |
 * | <class>.restoreAll          | AsyncSeries(session)  | once per class, before its per-process restore calls (pids and memory: before the first process is made), every process of the class at once (Tracee.syscallsEach) |
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
  /** Once, before the class's per-process dumps: what is asked of every process at once. */
  dumpAll: AsyncSeriesHook<[DumpSession]>;
  dump: AsyncSeriesHook<[ProcessDump]>;
  /** Once, before the class's per-process restores: what is done in every process at once. */
  restoreAll: AsyncSeriesHook<[RestoreSession]>;
  restore: AsyncSeriesHook<[ProcessRestore]>;
}

function stateHooks(): StateHooks {
  return Object.freeze({
    dumpAll: series(new AsyncSeriesHook<[DumpSession]>(['session'])),
    dump: series(new AsyncSeriesHook<[ProcessDump]>(['proc'])),
    restoreAll: series(new AsyncSeriesHook<[RestoreSession]>(['session'])),
    restore: series(new AsyncSeriesHook<[ProcessRestore]>(['proc'])),
  });
}

/**
 * What instrumentHooks (plugin.ts) leaves on each promise tap it wraps, for series() to call the
 * plugin's function itself: the wrapper is one more async call and await per tap, and a hook such
 * as fds.dump runs a few taps for each fd. `result` and `failure` are the wrapper's own handling of
 * what the function gives; `timed`: the call is logged with its time, which the wrapper does.
 */
export const TAP_CALL = Symbol('ckpt.tapCall');
export interface TapCall {
  fn: (...args: unknown[]) => unknown;
  result(out: unknown): unknown;
  failure(e: unknown): unknown;
  readonly timed: boolean;
}

type Tap = { type: string; fn: (...args: unknown[]) => unknown; context?: boolean; [TAP_CALL]?: TapCall };
type CompileOptions = { taps: Tap[]; interceptors: Array<Record<string, unknown>>; args: string[]; type: string };

/**
 * The hook, whose promise() runs its taps in order without code generation. tapable compiles a
 * hook's call into a function (new Function, which no code cache keeps) at its first call and at
 * the first call after every tap: right for a hook called thousands of times in a long-lived
 * process, while a command calls each of its two dozen hooks once or a few times (the compiles
 * took 1.5-3 ms of every dump and restore). Here promise() calls each tap as tapable's would (a
 * sync tap returns, a promise tap's promise is awaited, an async tap's callback is waited for)
 * and, for a bail hook, resolves with the first result that is not undefined. Anything else,
 * call() or callAsync(), an interceptor other than `register` (ckpt's own), or a tap that asks
 * for the context, is tapable's own compile.
 */
function series<H>(hook: H, bail = false): H {
  const h = hook as unknown as { compile(o: CompileOptions): unknown };
  const compile = h.compile;
  h.compile = function (this: unknown, o: CompileOptions) {
    const plain = o.type === 'promise' && o.interceptors.every((i) => Object.keys(i).every((k) => k === 'register')) && !o.taps.some((t) => t.context);
    if (!plain) return compile.call(this, o);
    const taps = o.taps.map((t) => ({ type: t.type, fn: t.fn, when: (t as { when?: (...a: unknown[]) => boolean }).when, call: t[TAP_CALL] }));
    const arity = o.args.length;
    return async (...given: unknown[]) => {
      const args = given.length === arity ? given : Array.from({ length: arity }, (_, i) => given[i]);
      for (const { type, fn, when, call } of taps) {
        // A tap that says it does not apply (TapWhen) is not called at all.
        if (when && !when(...args)) continue;
        let out: unknown;
        if (call && type === 'promise' && !call.timed) {
          try {
            out = call.result(await call.fn(...args));
          } catch (e) {
            throw call.failure(e);
          }
        } else if (type === 'promise') {
          const p = fn(...args) as Promise<unknown> | undefined;
          if (!p || typeof p.then !== 'function') throw new Error(`Tap function (tapPromise) did not return promise (returned ${String(p)})`);
          out = await p;
        } else if (type === 'async') {
          out = await new Promise((resolve, reject) => fn(...args, (err: unknown, v: unknown) => (err ? reject(err) : resolve(v))));
        } else {
          out = fn(...args);
        }
        if (bail && out !== undefined) return out;
      }
      return undefined;
    };
  };
  return hook;
}

export type FdRestoreHook = AsyncSeriesBailHook<[FdRecord, ProcessRestore], number | undefined>;

/**
 * The option of an `fds.dump` tap: `when`, asked first (synchronously, with the tap's own
 * arguments), says whether the tap applies to this fd at all; a tap whose `when` is false is not
 * called for it. Every fd of a dump goes through the taps in turn until one claims it, and a call
 * that only finds the fd is not its kind costs an async call and an await or two in a command's
 * cold code: the built-in taps saying so took 10-30 ms off a 2000-fd dump. Optional: a tap
 * without it sees every fd.
 */
export interface TapWhen<Args extends unknown[]> {
  when?: (...args: Args) => boolean;
}

export function createHooks() {
  return Object.freeze({
    session: Object.freeze({
      beforeDump: series(new AsyncSeriesHook<[DumpSession]>(['session'])),
      frozen: series(new AsyncSeriesHook<[DumpSession]>(['session'])),
      fdsDumped: series(new AsyncSeriesHook<[DumpSession]>(['session'])),
      afterDump: series(new AsyncSeriesHook<[DumpSession]>(['session'])),
      imageCommitted: series(new AsyncSeriesHook<[DumpSession]>(['session'])),
      dumpFailed: series(new AsyncSeriesHook<[DumpSession, Error]>(['session', 'error'])),
      beforeRestore: series(new AsyncSeriesHook<[RestoreSession]>(['session'])),
      processesCreated: series(new AsyncSeriesHook<[RestoreSession]>(['session'])),
      fdsInstalled: series(new AsyncSeriesHook<[ProcessRestore]>(['proc'])),
      beforeResume: series(new AsyncSeriesHook<[RestoreSession]>(['session'])),
      afterResume: series(new AsyncSeriesHook<[RestoreSession]>(['session'])),
      restoreFailed: series(new AsyncSeriesHook<[RestoreSession, Error]>(['session', 'error'])),
    }),
    image: Object.freeze({
      compact: series(new AsyncSeriesHook<[Compaction]>(['compaction'])),
    }),
    fds: Object.freeze({
      dump: series(new AsyncSeriesBailHook<[FdDumpRequest, ProcessDump], FdClaim | undefined, TapWhen<[FdDumpRequest, ProcessDump]>>(['fd', 'proc']), true),
      restore: new HookMap<FdRestoreHook>(() => series(new AsyncSeriesBailHook<[FdRecord, ProcessRestore], number | undefined>(['record', 'proc']), true)),
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
