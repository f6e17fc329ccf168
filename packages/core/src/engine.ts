/**
 * The pipeline, in one place.
 *   dump:    check -> beforeDump -> freeze the tree -> core walks every fd table -> fdsDumped
 *            (refusals that need every fd) -> per state class (DUMP_STAGES), every process -> afterDump ->
 *            write records -> commit image -> imageCommitted -> kill (or thaw with
 *            --leave-running). Any failure: dumpFailed, thaw every frozen process, drop the
 *            partial image.
 *   restore: open + validate image (plugins present, record versions and schemas) ->
 *            beforeRestore -> process by process, parents first: pids creates the stub, core
 *            maps its trampoline, memory rebuilds it (children are forked from a restored
 *            parent) -> processesCreated -> the other state classes (RESTORE_STAGES), every
 *            process, parents first -> ...
 *            files stage: plugins' taps, then core installs every fd -> after sockets:
 *            fdsInstalled per process -> ... registers -> beforeResume -> core removes its
 *            machinery -> detach -> afterResume. Any failure: restoreFailed, then every rollback
 *            (stubs killed, fds closed).
 */
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { basename, dirname, join, resolve as resolvePath } from 'node:path';
import { LATEST } from './imagedir.js';
import { native, NativeError, Regs, KCMP_FILES, KCMP_FS, KCMP_SIGHAND, KCMP_VM } from '@ckpt/native';
import { createHooks, DUMP_STAGES, RESTORE_STAGES, type Hooks, type StateClass } from './hooks.js';
import { checkOptions, instrumentHooks, pluginLogger, type CkptPlugin, type PluginContext } from './plugin.js';
import type { ImageReader, Manifest, PidNamespaceRecord, ProcessRecord } from './image.js';
import { CkptError, PluginError, errorMessage } from './errors.js';
import { createContainer, sessionServices, type Services } from './services.js';
import type { ContainerInstance } from 'typedi';
import type {
  DumpOptions,
  DumpSession,
  FdRecord,
  ProgressEvent,
  ProcessDump,
  ProcessRestore,
  RestoreOptions,
  RestoreSession,
  SharedWithParent,
  ZombieRecord,
} from './context.js';
import { childrenOf, listFds, processExists, processTree, readStat, readStatus, describePid, readVmas, parseSmaps, type Vma } from './proc.js';
import { logger } from './log.js';
import { fault, logSteps } from './fault.js';
import { collectGarbage, heapIsYoung } from './gc.js';
import { canRestore } from './caps.js';
import { SessionStateStore } from './state.js';
import { parsePublicKey, type TrustReason } from './keys.js';
import {
  dumpFdTable,
  dumpInFlight,
  reserveFds,
  restoreFdTable,
  descriptionOf,
  checkSubstitutes,
  descriptionName,
  inheritedSubstitutes,
  restorerFdOf,
} from './fdtable.js';
import { Installer, checkLayout, exitLeader } from './restorer.js';
import { validate, type StandardSchemaV1 } from './schema.js';
import { relocatePath } from './paths.js';
import { sealShmem } from './shmem.js';
import type { Tracee } from './tracee.js';

import { VERSION } from './version.js';

export { VERSION };

const log = logger('engine');

export interface DumpResult {
  dir: string;
  /** The generation this dump made in dir, and its directory. */
  generation: number;
  path: string;
  pids: number[];
  ms: number;
  imageBytes: number;
  leftRunning: boolean;
  /** The fingerprint of the host key that signed the image. */
  signedBy: string;
  /**
   * What the dump cost: `wallMs`, `frozenMs` (from the freeze to the thaw, or to the kill),
   * `imageBytes`, the milliseconds of each stage (`ms.<stage>`, StageClock), and the plugins'
   * figures (DumpSession.stats).
   */
  stats: Record<string, number | string | boolean>;
}

export interface CompactOptions {
  /** The image directory (its latest generation is made whole, or `generation`). */
  dir: string;
  generation?: number;
  /** Generations to keep after, the new one included, and those kept ones add to (default: all). */
  keep?: number;
  onProgress?: (event: ProgressEvent) => void;
}

export interface CompactResult {
  dir: string;
  /** The new generation, a full image. */
  generation: number;
  path: string;
  /** The image it was made from, and how many images its chain had above it. */
  from: string;
  chain: number;
  imageBytes: number;
  ms: number;
}

export interface RestoreResult {
  /** The restored processes' pids (on the host: equal to the image's unless in a new pid namespace). */
  pids: number[];
  /** Their pids inside their own pid namespace, when the image has one. */
  nsPids?: number[];
  /** The init ckpt made for their pid namespace (its old init was not in the image): the restorer's child, it exits with the root's status once the namespace is empty. */
  nsInit?: number;
  /** The application id the image was made under (ckpt run). */
  app?: string;
  ms: number;
  /** The key that signed the image, and why this host trusted it. */
  signedBy: { fingerprint: string; trust: TrustReason | null };
  /** What the restore cost (`wallMs`, and `ms.<stage>` for each stage) and the plugins' figures (RestoreSession.stats), e.g. `memory.lazyBytes`. */
  stats: Record<string, number | string | boolean>;
}

export interface CkptInit {
  /** Configured options per plugin name (validated against each plugin's schema). */
  options?: Record<string, unknown>;
}

type AnySession = DumpSession | RestoreSession;

export class Ckpt {
  readonly hooks: Hooks;
  readonly plugins: readonly CkptPlugin[];
  /** The services container: core's defaults, and what plugins provided. */
  readonly container: ContainerInstance;
  private readonly configured = new Map<string, unknown>();
  private readonly runOptions = new WeakMap<AnySession, Map<string, unknown>>();

  constructor(plugins: CkptPlugin[], init: CkptInit = {}) {
    this.hooks = createHooks();
    this.container = createContainer();
    instrumentHooks(this.hooks);
    const seen = new Set<string>();
    for (const name of Object.keys(init.options ?? {})) {
      if (!plugins.some((p) => p.name === name)) throw new CkptError('ERR_CKPT_CONFIG', `options are given for plugin ${name}, which is not loaded`);
    }
    for (const p of plugins) {
      if (seen.has(p.name)) throw new CkptError('ERR_CKPT_CONFIG', `plugin ${p.name} is listed twice`);
      seen.add(p.name);
      // Configured options are checked now (a bad config fails at once), and again, with the
      // run's (flags), when a session starts: an option a flag supplies may be required.
      const raw = init.options?.[p.name];
      if (raw !== undefined) checkOptions(p, raw, 'config');
      this.configured.set(p.name, raw);
      try {
        p.apply(this.hooks, this.pluginContext(p));
      } catch (e) {
        throw new PluginError(p.name, 'apply', e);
      }
    }
    this.plugins = plugins;
  }

  private pluginContext(p: CkptPlugin): PluginContext<unknown> {
    return {
      name: p.name,
      log: pluginLogger(p),
      options: (session) => {
        const m = this.runOptions.get(session);
        return m?.has(p.name) ? m.get(p.name) : checkOptions(p, this.configured.get(p.name), 'config');
      },
      provide: (token, value) => {
        this.container.set(token, value);
      },
    };
  }

  /** Validates the run's per-plugin options (before anything is touched). */
  private resolveOptions(options: DumpOptions | RestoreOptions): Map<string, unknown> {
    const run = options.plugins ?? {};
    for (const name of Object.keys(run)) {
      if (!this.plugins.some((x) => x.name === name)) throw new CkptError('ERR_CKPT_USAGE', `options are given for plugin ${name}, which is not loaded`);
    }
    const m = new Map<string, unknown>();
    for (const p of this.plugins) {
      const base = this.configured.get(p.name) as Record<string, unknown> | undefined;
      const given = run[p.name];
      const merged = base === undefined && given === undefined ? undefined : { ...(base ?? {}), ...(given ?? {}) };
      m.set(p.name, checkOptions(p, merged, given ? 'options' : 'config'));
    }
    return m;
  }

  async dump(options: DumpOptions): Promise<DumpResult> {
    try {
      return await this.dumpOnce(options, true);
    } catch (e) {
      if (!(e instanceof AreasChanged)) throw e;
      // The process changed an area's flags just as the dump began: once more, with the flags
      // read while frozen only (the failed attempt left everything as it was, and says why here).
      log('%s: dumping again, with the frozen read only', e.message);
      const r = await this.dumpOnce(options, false);
      r.stats['dump.again'] = e.message;
      return r;
    }
  }

  /** One dump; `early`: a dump whose freeze is downtime may read smaps before the freeze (readSmapsBefore). */
  private async dumpOnce(options: DumpOptions, early: boolean): Promise<DumpResult> {
    const t0 = performance.now();
    const clock = new StageClock(t0);
    const { pid } = options;
    // Bad options are bad input: refused before anything is looked at.
    const pluginOptions = this.resolveOptions(options);
    const services = sessionServices(this.container);
    const pc = services.processes;
    sweepLocks(services);
    checkDumpable(pc, pid, options);
    if (options.pageServer !== undefined && options.parent !== undefined) {
      throw new CkptError('ERR_CKPT_USAGE', 'an image written to a page server cannot add to another: --page-server goes without --parent');
    }
    const parent = options.parent !== undefined ? openParent(services, options.parent, pid) : undefined;
    const image = services.images.create(options.dir, {
      sync: options.sync,
      transient: options.transient,
      keep: options.keep,
      followSymlinks: options.followSymlinks,
      pageServer: options.pageServer,
    });
    const state = new SessionStateStore();
    const deferred: Array<() => Promise<void>> = [];
    let usesParent = false;
    const session: DumpSession = {
      kind: 'dump',
      options,
      image,
      processes: [],
      zombies: [],
      meta: {},
      stats: {},
      parent,
      dependsOnParent: () => {
        if (!parent) throw new Error('dependsOnParent: the dump has no parent image');
        usesParent = true;
      },
      whenThawed: (work) => deferred.push(work),
      services,
      state,
      progress: (ev) => options.onProgress?.(ev),
      interruptionPoint: () => interruptionPoint(options.signal, 'dump'),
    };
    const frozen: Tracee[][] = [];
    let tFrozen = 0;
    let frozenMs = 0;
    try {
      this.runOptions.set(session, pluginOptions);
      await this.hooks.session.beforeDump.promise(session);
      compileFrozenHooks(this.hooks);
      // Its freeze is downtime: the processes run again after it, here or there (handover).
      // After beforeDump: what the application does when told of the checkpoint (its
      // callbacks: an madvise, say) is in the early read.
      const downtime = !!options.leaveRunning || !!options.handover;
      if (downtime && early) readSmapsBefore(session, pid);
      if (downtime) {
        // Said in the stats: whether ckpt's own heap was collected before the freeze.
        const little = littleToCollect(pid);
        if (!little) collectGarbage({ beforeFreeze: true });
        session.stats['gc.beforeFreeze'] = little ? 'skipped: a young heap, a small process' : 'collected';
      }
      if (downtime && early) awaitSmapsBefore(session);
      tFrozen = clock.lap('setup');
      freezeTree(this.hooks, session, frozen);
      // Each process's record file, made ahead on a thread while the stages go on.
      image.prepare(session.processes.map((p) => `proc-${p.pid}.json`));
      fault('dump:frozen');
      await session.interruptionPoint();
      await this.hooks.session.frozen.promise(session);
      readSmapsAhead(session);
      const pidns = pidNamespaceOf(pid, session);
      checkNamespaces(session);
      checkSharing(session);
      clock.lap('freeze');
      // The fd table first: what will be refused (an fd no plugin handles, a peer outside the
      // tree) is found before any memory is copied, so a refusal costs a short freeze.
      for (const proc of session.processes) {
        await dumpFdTable(this.hooks, proc);
        // Between stages the process must do without ckpt should it die (ptrace detaches it when
        // its tracer dies): see Tracee.parkBetweenStages.
        proc.tracee.parkBetweenStages();
      }
      await this.hooks.session.fdsDumped.promise(session);
      clock.lap('fds');
      for (const stage of DUMP_STAGES) {
        fault(`dump:stage:${stage}:all`);
        await session.interruptionPoint();
        await this.hooks[stage].dumpAll.promise(session);
        for (const proc of session.processes) {
          fault(`dump:stage:${stage}`);
          await session.interruptionPoint();
          await this.hooks[stage].dump.promise(proc);
          proc.tracee.parkBetweenStages();
        }
        clock.lap(stage);
      }
      await this.hooks.session.afterDump.promise(session);
      checkAreasRead(session);
      fault('dump:records');
      await session.interruptionPoint();
      const records = this.processRecords(session);
      clock.lap('records');
      // --leave-running: the processes run again as soon as everything is read from them; what
      // is left (a snapshot's pages, the commit) is done with them running.
      if (options.leaveRunning) {
        for (const threads of frozen) for (const t of threads) pc.thaw(t);
        frozenMs = performance.now() - tFrozen;
      }
      for (const work of deferred) {
        await session.interruptionPoint();
        await work();
      }
      clock.lap('thawed');
      const manifest = this.commitImage(session, pidns, records, usesParent ? parent : undefined);
      clock.lap('commit');
      fault('dump:committed');
      logSteps();
      const handover = !options.leaveRunning ? options.handover : undefined;
      // Committed: from here a ckpt that dies kills the processes (their image is whole), unless
      // someone else is yet to take them over (handover), who needs them alive until then.
      if (!options.leaveRunning && !handover) pc.killWithTracer(frozen);
      fault('dump:handover');
      await this.hooks.session.imageCommitted.promise(session);
      const result = (): DumpResult => {
        if (!frozenMs) frozenMs = performance.now() - tFrozen;
        const imageBytes = Object.values(manifest.files).reduce((a, f) => a + f.size, 0);
        const ms = performance.now() - t0;
        if (parent) session.stats.parent = usesParent ? parent.dir : `${parent.dir} (not used: a full image)`;
        return {
          dir: image.dir,
          generation: image.generation!,
          path: image.path!,
          pids: session.processes.map((p) => p.pid),
          ms,
          imageBytes,
          leftRunning: !!options.leaveRunning,
          signedBy: image.signer,
          stats: { wallMs: ms, frozenMs, imageBytes, ...clock.ms, ...session.stats },
        };
      };
      if (handover) {
        // Throws: the dump fails like any other (dumpFailed, thawed); the image stays committed.
        await handover(result());
        fault('dump:handedOver');
        pc.killWithTracer(frozen);
      }
      if (options.leaveRunning) {
        for (const threads of frozen) for (const t of threads) if (pc.isFrozen(t)) pc.thaw(t);
      } else pc.killFrozen(frozen);
      clock.lap(options.leaveRunning ? 'thaw' : 'kill');
      return result();
    } catch (e) {
      log('dump failed, thawing: %s', errorMessage(e));
      await runQuietly(() => this.hooks.session.dumpFailed.promise(session, e instanceof Error ? e : new Error(String(e))), 'dumpFailed');
      pc.thawAll();
      image.abort();
      throw imageWriteError(e, image.dir, pid) ?? asCkptError(e, 'ERR_CKPT_DUMP_FAILED', `dump of pid ${pid} failed`);
    } finally {
      for (const handle of readsAhead.get(session)?.values() ?? []) native.fd.readDrop(handle);
      for (const handle of readsBefore.get(session)?.values() ?? []) if (typeof handle === 'number') native.fd.readDrop(handle);
      state.dispose();
    }
  }

  /** Every process record, read while the processes are frozen (scratch pages gone first). */
  private processRecords(session: DumpSession): ProcessRecord[] {
    return session.processes.map((p) => {
      if (p.tracee.scratchRange) p.tracee.releaseScratch();
      const layout = p.tracee.maps().map((v): [number, number] => [v.start, v.end]);
      return {
        pid: p.pid,
        ppid: p.ppid,
        pgid: p.pgid,
        sid: p.sid,
        comm: p.comm,
        fds: p.fds,
        ...(p.inFlight.length ? { inFlight: p.inFlight } : {}),
        ...(p.sharesWithParent?.length ? { sharesWithParent: p.sharesWithParent } : {}),
        ...(p.leaderExited ? { leaderExited: true } : {}),
        layout,
        records: p.records,
      };
    });
  }

  /** Writes the process records and commits the image, manifest last. */
  private commitImage(session: DumpSession, pidns: PidNamespaceRecord | undefined, records: ProcessRecord[], parent?: ImageReader): Manifest {
    const { image, options } = session;
    for (const record of records) image.writeJson(`proc-${record.pid}.json`, record);
    return image.commit({
      tool: `ckpt ${VERSION}`,
      root: options.pid,
      processes: session.processes.map((p) => ({ pid: p.pid, ppid: p.ppid, comm: p.comm, file: `proc-${p.pid}.json` })),
      zombies: session.zombies,
      ...(pidns ? { pidns } : {}),
      ...(options.app ? { app: options.app } : {}),
      ...(parent ? { parent: image.parentLink(parent) } : {}),
      plugins: Object.fromEntries(this.plugins.map((p) => [p.name, { version: p.version, ...(p.record ? { record: p.record.version } : {}) }])),
      meta: session.meta,
    });
  }

  async restore(options: RestoreOptions): Promise<RestoreResult> {
    const t0 = performance.now();
    const clock = new StageClock(t0);
    const pluginOptions = this.resolveOptions(options);
    const services = sessionServices(this.container);
    sweepLocks(services);
    const trust = (options.trustKeys ?? []).map((k, i) => (typeof k === 'string' ? parsePublicKey(k, `trusted key ${i + 1} of the restore`) : k));
    const image = services.images.open(options.dir, { generation: options.generation, trust });
    const records = this.readRecords(image);
    if (options.inheritFds?.length) {
      const byName = new Map(this.plugins.map((p) => [p.name, p]));
      const nameOf = (r: FdRecord, pid: number) => descriptionName(byName.get(r.owner), r, pid);
      options = { ...options, substitute: { ...options.substitute, ...inheritedSubstitutes(options.inheritFds, records, nameOf) } };
    }
    const zombies = image.manifest.zombies ?? [];
    const pidns = image.manifest.pidns;
    // In a fresh pid namespace nothing can collide; on the host every pid must be free.
    if (!pidns) for (const pid of neededPids(records, zombies)) await waitPidFree(pid);
    // A namespace keeps its host pids too when they are all free (else the host picks new ones,
    // so that one image can run twice side by side).
    const keepHostPids = !!pidns && (await pidsFreeSoon(Object.keys(pidns.map).map(Number)));
    const rollbacks: Array<() => void> = [];
    const state = new SessionStateStore();
    const session = restoreSession(options, image, services, state, keepHostPids, rollbacks);
    const installers = new Map<ProcessRestore, Installer>();
    clock.lap('open');
    try {
      this.runOptions.set(session, pluginOptions);
      for (const r of records) {
        const [proc, installer] = processRestore(this.hooks, r, session);
        installers.set(proc, installer);
        session.processes.push(proc);
        // One fd table with its parent (CLONE_FILES): one installer pidfd in it.
        const parent = r.sharesWithParent?.includes('files') ? session.processes.find((p) => p.pid === r.ppid) : undefined;
        if (parent) installer.shareTableWith(installers.get(parent)!);
      }
      checkSubstitutes(session);
      fault('restore:validated');
      await session.interruptionPoint();
      await this.hooks.session.beforeRestore.promise(session);
      if (pidns?.initOutside) {
        const init = services.processes.spawnStub([1], { newPidNs: true, newIpcNs: session.newIpcNamespace, parent: options.parent });
        rollbacks.push(() => services.processes.killStub(init.pid));
        (session as { nsInit?: Tracee }).nsInit = init;
      }
      clock.lap('setup');
      await this.restoreStages(session, installers, clock);
      sealShmem(session);
      await this.hooks.session.beforeResume.promise(session);
      // Whoever asked may still say no (a migration whose source could not let go): rolled back.
      await options.confirm?.(session.processes.map((p) => p.stub!.pid));
      fault('restore:resume');
      await session.interruptionPoint();
      for (const proc of session.processes) {
        if (!proc.record.leaderExited) {
          installers.get(proc)!.teardown();
          continue;
        }
        exitLeader(proc);
        installers.get(proc)!.teardown(proc.threads[0]);
      }
      state.dispose();
      // Children first, so a parent never runs before its children exist as they were.
      for (const proc of [...session.processes].reverse()) {
        for (const t of proc.threads) if (t.pid !== proc.stub!.pid) native.ptrace.detach(t.pid, 0);
        if (!proc.record.leaderExited) native.ptrace.detach(proc.stub!.pid, 0);
      }
      if (session.nsInit) {
        // The stub's reaper loop (ckpt-stub) exits with the status of the task whose pid is in rbx.
        const regs = new Regs(native.ptrace.getRegs(session.nsInit.pid)).set('rbx', BigInt(session.vpid(session.processes[0].pid)));
        native.ptrace.setRegs(session.nsInit.pid, regs.buf);
        native.ptrace.detach(session.nsInit.pid, 0);
      }
    } catch (e) {
      log('restore failed, rolling back: %s', errorMessage(e));
      await runQuietly(() => this.hooks.session.restoreFailed.promise(session, e instanceof Error ? e : new Error(String(e))), 'restoreFailed');
      for (const fn of rollbacks.reverse()) {
        try {
          fn();
        } catch (err) {
          log('rollback step failed: %s', errorMessage(err));
        }
      }
      state.dispose();
      throw asCkptError(e, 'ERR_CKPT_RESTORE_FAILED', `restore from ${image.dir} failed`);
    }
    await runQuietly(() => this.hooks.session.afterResume.promise(session), 'afterResume');
    clock.lap('resume');
    return {
      pids: session.processes.map((p) => p.stub!.pid),
      ms: performance.now() - t0,
      ...(pidns ? { nsPids: session.processes.map((p) => session.vpid(p.pid)) } : {}),
      ...(session.nsInit ? { nsInit: session.nsInit.pid } : {}),
      ...(image.manifest.app ? { app: image.manifest.app } : {}),
      signedBy: { fingerprint: image.signer.fingerprint, trust: image.signer.trust },
      stats: { wallMs: performance.now() - t0, ...clock.ms, ...session.stats },
    };
  }

  /**
   * `ckpt image compact`: makes an image whole (an incremental image holds only what changed
   * since its parent) into a new generation of its directory, which needs no other image. The
   * image and its chain are verified first; plugins write what their records left to the chain
   * (image.compact), core copies every other file, checked against its digest, and writes the
   * records; the new generation is signed by this host. Generations beyond `keep` go (except
   * those a kept one adds to).
   */
  async compact(options: CompactOptions): Promise<CompactResult> {
    const t0 = performance.now();
    const services = sessionServices(this.container);
    const image = services.images.open(options.dir, { generation: options.generation });
    image.chain();
    const records = this.readRecords(image);
    const writer = services.images.create(resolveTop(options.dir), { keep: options.keep ?? Number.MAX_SAFE_INTEGER });
    try {
      const replaced = new Set<string>();
      await this.hooks.image.compact.promise({ image, writer, records, replaced, progress: (ev) => options.onProgress?.(ev) });
      const m = image.manifest;
      for (const name of Object.keys(m.files)) {
        if (writer.has(name) || replaced.has(name) || m.processes.some((p) => p.file === name)) continue;
        writer.copyFrom(image, name);
      }
      for (const r of records) writer.writeJson(m.processes.find((p) => p.pid === r.pid)!.file, r);
      const { format: _f, version: _v, createdAt: _c, host, files: _files, parent: _p, ...body } = m;
      const manifest = writer.commit(body, host);
      return {
        dir: writer.dir,
        generation: writer.generation!,
        path: writer.path!,
        from: image.dir,
        chain: image.chain().length - 1,
        imageBytes: Object.values(manifest.files).reduce((a, f) => a + f.size, 0),
        ms: performance.now() - t0,
      };
    } catch (e) {
      writer.abort();
      throw asCkptError(e, 'ERR_CKPT_DUMP_FAILED', `compaction of ${image.dir} failed`);
    }
  }

  /**
   * Process by process (parents first), the pids and memory stages: a process is created, gets
   * its trampoline and its memory back before its children are forked from it, so that what they
   * shared copy-on-write at the dump they share again. Then processesCreated, and the other
   * stages class by class across the tree: every fd exists before epoll watches are wired. Core's
   * own steps: the fd table at the end of the files stage, fdsInstalled after the sockets stage.
   */
  private async restoreStages(session: RestoreSession, installers: Map<ProcessRestore, Installer>, clock: StageClock): Promise<void> {
    const run = async (stage: StateClass, proc: ProcessRestore) => {
      fault(`restore:stage:${stage}`);
      await session.interruptionPoint();
      await this.hooks[stage].restore.promise(proc);
    };
    const all = async (stage: StateClass) => {
      fault(`restore:stage:${stage}:all`);
      await session.interruptionPoint();
      await this.hooks[stage].restoreAll.promise(session);
    };
    await all('pids');
    await all('memory');
    for (const proc of session.processes) {
      await run('pids', proc);
      if (!proc.stub) throw new CkptError('ERR_CKPT_RESTORE_FAILED', `no plugin created a process for pid ${proc.pid} (no loaded plugin taps pids.restore)`);
      installers.get(proc)!.setupTrampoline(checkLayout(proc, proc.record.layout));
      await run('memory', proc);
    }
    clock.lap('pids+memory');
    fault('restore:created');
    await session.interruptionPoint();
    await this.hooks.session.processesCreated.promise(session);
    // Room in our fd table for every description the restore makes (it holds them to the end).
    reserveFds(session.processes.reduce((n, p) => n + p.fds.length + (p.record.inFlight?.length ?? 0), 0));
    for (const stage of RESTORE_STAGES.filter((s) => s !== 'pids' && s !== 'memory')) {
      await all(stage);
      for (const proc of session.processes) {
        await run(stage, proc);
        if (stage === 'files') await restoreFdTable(this.hooks, proc);
      }
      if (stage === 'sockets') for (const proc of session.processes) await this.hooks.session.fdsInstalled.promise(proc);
      clock.lap(stage);
    }
  }

  /**
   * Reads every process record and validates it before anything is created: each plugin that
   * wrote a record is loaded, knows the record's version, and its schema accepts the record.
   */
  private readRecords(image: ImageReader): ProcessRecord[] {
    const records = image.processes();
    if (!records.length) throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `image ${image.dir}: it holds no process`);
    const byName = new Map(this.plugins.map((p) => [p.name, p]));
    const checkRecordVersion = (plugin: CkptPlugin) => {
      const written = image.manifest.plugins[plugin.name]?.record ?? 1;
      if (written > (plugin.record?.version ?? 1)) {
        throw new CkptError(
          'ERR_CKPT_IMAGE_INCOMPATIBLE',
          `image ${image.dir}: the records of plugin ${plugin.name} are version ${written}, and the loaded ${plugin.name} ${plugin.version ?? ''} reads up to version ${plugin.record?.version ?? 1}`,
          { hint: `update ${plugin.name}` },
        );
      }
    };
    for (const r of records) {
      validateFdTable(image.dir, r);
      for (const [name, data] of Object.entries(r.records)) {
        const plugin = byName.get(name);
        if (!plugin) {
          throw new CkptError('ERR_CKPT_CONFIG', `image ${image.dir} was written with plugin ${name}, which is not loaded`, {
            hint: `install ${name} and list it in ckpt.config.json or pass --plugin ${name}`,
          });
        }
        checkRecordVersion(plugin);
        if (!plugin.record) continue;
        if (plugin.record.schema) r.records[name] = checked(plugin.record.schema, data, `the record of plugin ${name} for pid ${r.pid}`);
      }
      for (const f of [...r.fds, ...(r.inFlight ?? [])]) {
        if (f.sameAs) continue;
        const plugin = byName.get(f.owner);
        if (!plugin) {
          throw new CkptError('ERR_CKPT_CONFIG', `image ${image.dir} was written with plugin ${f.owner} (fd ${f.fd} of pid ${r.pid}), which is not loaded`, {
            hint: `install ${f.owner} and list it in ckpt.config.json or pass --plugin ${f.owner}`,
          });
        }
        checkRecordVersion(plugin);
        if (plugin.record?.fd) f.data = checked(plugin.record.fd, f.data, `fd ${f.fd} of pid ${r.pid} (saved by ${f.owner})`);
      }
    }
    return records;
    function checked(schema: StandardSchemaV1, data: unknown, what: string): unknown {
      const v = validate(schema, data);
      if (!v.ok) throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `image ${image.dir}: ${what} is malformed${v.path ? ` at ${v.path}` : ''}: ${v.message}`);
      return v.value;
    }
  }
}

/**
 * Where a dump's or a restore's time went, for its stats: `ms.<stage>`, the milliseconds from the
 * lap before (a stage run for every process, in a dump `freeze` for the freeze and the checks
 * while frozen, `fds` for the fd tables, `commit` for the image's write and fsync).
 */
class StageClock {
  readonly ms: Record<string, number> = {};
  constructor(private last: number) {}

  /** Ends a stage; returns the time, which starts the next. */
  lap(stage: string): number {
    const now = performance.now();
    const key = `ms.${stage}`;
    this.ms[key] = (this.ms[key] ?? 0) + (now - this.last);
    this.last = now;
    return now;
  }
}

/** The session object of a restore: pid mapping for a recreated pid namespace, relocation, rollbacks. */
function restoreSession(
  options: RestoreOptions,
  image: ImageReader,
  services: Services,
  state: SessionStateStore,
  keepHostPids: boolean,
  rollbacks: Array<() => void>,
): RestoreSession {
  const pidns = image.manifest.pidns;
  const session: RestoreSession = {
    kind: 'restore',
    options,
    image,
    stats: {},
    processes: [],
    zombies: image.manifest.zombies ?? [],
    services,
    state,
    newPidNamespace: !!pidns,
    newIpcNamespace: !!pidns && !pidns.hostIpc,
    progress: (ev) => options.onProgress?.(ev),
    interruptionPoint: () => interruptionPoint(options.signal, 'restore'),
    setTid: (pid: number) => {
      if (!pidns) return [pid];
      return keepHostPids ? [session.vpid(pid), pid] : [session.vpid(pid)];
    },
    vpid: (pid: number) => {
      if (!pidns) return pid;
      const v = pidns.map[String(pid)];
      if (v === undefined) throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `image ${image.dir}: no namespace pid for ${pid}`);
      return v;
    },
    relocate: (path: string) => relocatePath(path, options.relocate),
    onRollback: (fn) => rollbacks.push(fn),
  };
  return session;
}

/**
 * What can be refused before anything is touched: a pid that is not traceable, a dump that would
 * kill processes this user could not restore, a tree ckpt itself runs in.
 */
function checkDumpable(pc: Services['processes'], pid: number, options: DumpOptions): void {
  pc.checkTraceable(pid);
  if (!options.leaveRunning && !canRestore()) {
    throw new CkptError(
      'ERR_CKPT_NOT_TRACEABLE',
      `refusing to dump pid ${pid}: it would be killed, and as uid ${process.getuid?.()} ckpt could not restore it (restoring processes with their pids needs root, or CAP_CHECKPOINT_RESTORE)`,
      { hint: 'dump with --leave-running to keep it running, or run ckpt as root' },
    );
  }
  if (pid !== process.pid && processTree(pid).some((n) => n.pid === process.pid)) {
    throw new CkptError(
      'ERR_CKPT_NOT_TRACEABLE',
      `cannot checkpoint pid ${pid} (${readStat(pid).comm}): ckpt itself (pid ${process.pid}) runs inside its process tree, and cannot freeze itself`,
      { hint: 'run ckpt from outside that tree (another terminal or session), or start the program with `ckpt run`' },
    );
  }
}

/** The image directory a generation directory belongs to (DIR for DIR/3), else the directory itself. */
function resolveTop(dir: string): string {
  const abs = resolvePath(dir);
  return /^[1-9]\d*$/.test(basename(abs)) && existsSync(join(abs, '..', LATEST)) ? dirname(abs) : abs;
}

/**
 * The image a dump may add to (--parent): opened and verified (signature, trust, files) like a
 * restore would, and of the same process tree (its root is the pid dumped).
 */
function openParent(services: Services, dir: string, pid: number): ImageReader {
  const parent = services.images.open(dir);
  if (parent.manifest.root !== pid) {
    throw new CkptError(
      'ERR_CKPT_USAGE',
      `--parent ${parent.dir} is an image of pid ${parent.manifest.root}, not of pid ${pid}: an incremental image adds to an image of the same process`,
    );
  }
  return parent;
}

/** Network locks whose owner is gone (a killed dump) are removed by the next ckpt, whatever it does. */
function sweepLocks(services: Services): void {
  try {
    for (const s of services.netlock.sweep()) log('removed a stale network lock of %s (%d connections)', s.owner, s.connections);
  } catch (e) {
    log('could not sweep stale network locks: %s', errorMessage(e));
  }
}

async function runQuietly(fn: () => Promise<unknown>, what: string): Promise<void> {
  try {
    await fn();
  } catch (e) {
    log('%s: %s', what, errorMessage(e));
  }
}

/** Freezes the whole tree, parents first, re-reading it until no new process appears. */
function freezeTree(hooks: Hooks, session: DumpSession, frozen: Tracee[][]): void {
  const pc = session.services.processes;
  const seen = new Set<number>();
  for (;;) {
    const tree = processTree(session.options.pid);
    const fresh = tree.filter((n) => !seen.has(n.pid));
    if (!fresh.length) break;
    for (const n of fresh) {
      seen.add(n.pid);
      const st = n.stat;
      // A zombie leader with live threads is a running process whose main thread has exited.
      if (n.state === 'Z' && st.numThreads <= 1) {
        session.zombies.push({ pid: n.pid, comm: st.comm, ppid: n.ppid, pgid: st.pgid, sid: st.sid, exitCode: st.exitCode } satisfies ZombieRecord);
        continue;
      }
      refuseVforkParent(
        n.pid,
        st.comm,
        tree.filter((c) => c.ppid === n.pid).map((c) => c.pid),
      );
      const threads = pc.freeze(n.pid);
      frozen.push(threads);
      session.processes.push(
        processDump(hooks, n.pid, { ppid: n.ppid, pgid: st.pgid, sid: st.sid, comm: st.comm, stoppedAtFreeze: n.state === 'T' }, threads, session),
      );
    }
  }
}

/**
 * Whether the collection before a freeze that is downtime (collectGarbage) would buy nothing: a
 * young heap (heapIsYoung) and a dump that allocates little while frozen, of one process without
 * children, with few threads and fds and little memory. Larger ones allocate enough in the frozen
 * stages for V8 to start its first major collection there: --trace-gc in the command's own
 * process, without the collection before, showed a 16-process tree's dump collect (11 ms) while
 * frozen, and 2000 fds' or 200 threads' scavenge 5-7 times.
 */
function littleToCollect(pid: number): boolean {
  if (!heapIsYoung()) return false;
  try {
    const st = readStatus(pid);
    if (!(Number(st.Threads) <= 16) || !(Number.parseInt(st.VmRSS ?? '', 10) <= 64 << 10)) return false;
    return childrenOf(pid).length === 0 && listFds(pid).length <= 256;
  } catch {
    return false;
  }
}

/**
 * The hooks a dump calls while the processes are frozen, compiled before the freeze: tapable
 * builds each hook's caller (a new Function, which no code cache keeps) at its first call, and a
 * command runs each once. A tap added later makes tapable build it again.
 */
function compileFrozenHooks(hooks: Hooks): void {
  const frozen = [
    hooks.session.frozen,
    hooks.session.fdsDumped,
    hooks.session.afterDump,
    hooks.fds.dump,
    ...DUMP_STAGES.flatMap((s) => [hooks[s].dumpAll, hooks[s].dump]),
  ];
  for (const h of frozen as unknown as Array<{ promise: unknown; _createCall?: (type: string) => unknown }>) {
    if (typeof h._createCall === 'function') h.promise = h._createCall('promise');
  }
}

/** The smaps reads of a dump not yet taken (ProcessDump.vmas), by process: dropped when the dump ends. */
const readsAhead = new WeakMap<DumpSession, Map<ProcessDump, number>>();

/**
 * Smaps reads started before the freeze (readSmapsBefore), by /proc pid, not yet taken; and the
 * areas ProcessDump.vmas gave from them, which checkAreasRead holds to the frozen read.
 */
const readsBefore = new WeakMap<DumpSession, Map<number, number | string>>();
const areasFromBefore = new WeakMap<DumpSession, Map<ProcessDump, Vma[]>>();

/** From this much resident memory on, a process's smaps is read on a thread of its own. */
const SMAPS_AHEAD_MIN = 32 << 20;

/**
 * Starts reading the processes' smaps, taken by ProcessDump.vmas at the memory stage: a big
 * process's on a thread of its own (its page walk takes a while), the others' one after the other
 * on one more thread (a tree of small processes: 0.3-0.5 ms each here, off the main thread while
 * it runs the stages before memory). A process whose areas come from the read before the freeze
 * gets its frozen read all the same: checkAreasRead holds the two to each other.
 */
function readSmapsAhead(session: DumpSession): void {
  const reads = new Map<ProcessDump, number>();
  readsAhead.set(session, reads);
  const small: ProcessDump[] = [];
  for (const proc of session.processes) {
    if (residentBytes(proc.procPid) >= SMAPS_AHEAD_MIN) reads.set(proc, native.fd.readAhead(`/proc/${proc.procPid}/smaps`));
    else small.push(proc);
  }
  if (!small.length) return;
  const handles = native.fd.readAheadAll(small.map((p) => `/proc/${p.procPid}/smaps`));
  small.forEach((p, i) => reads.set(p, handles[i]));
}

/**
 * A dump whose freeze is downtime (--leave-running, or a handover: a migration's final round)
 * reads the smaps of the tree's big processes before the freeze too, on threads of their own
 * while ckpt collects its garbage (collectGarbage): smaps walks every page table for its counts
 * (10-20 ms a GiB here), and the frozen stages need its VmFlags early (the memory stage's first
 * step).
 * Frozen, a process whose layout (/proc/PID/maps, no page walk) is still the one read before
 * gets its areas with the flags read before (ProcessDump.vmas); the frozen read still runs, on its
 * thread, and checkAreasRead holds those flags to it before the thaw. So the walk is done while
 * the frozen stages run, not before them. A process whose layout changed meanwhile waits for the
 * frozen read, as without.
 */
function readSmapsBefore(session: DumpSession, root: number): void {
  const reads = new Map<number, number | string>();
  readsBefore.set(session, reads);
  let tree: Array<{ pid: number }>;
  try {
    tree = processTree(root);
  } catch {
    return;
  }
  for (const { pid } of tree) {
    if (residentBytes(pid) >= SMAPS_AHEAD_MIN) reads.set(pid, native.fd.readAhead(`/proc/${pid}/smaps`));
  }
}

/**
 * The smaps reads started before the freeze, waited for before it (the process still runs): a
 * read walks the page tables with the mmap lock held, and the memory plugin's first remote syscall
 * of the freeze (brk, which takes that lock for writing) waited for it (14-21 ms of a 1 GiB
 * process's downtime).
 */
function awaitSmapsBefore(session: DumpSession): void {
  const reads = readsBefore.get(session);
  for (const [pid, handle] of reads ?? []) {
    if (typeof handle !== 'number') continue;
    try {
      reads!.set(pid, native.fd.readJoin(handle));
    } catch {
      reads!.delete(pid);
    }
  }
}

function residentBytes(pid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/statm`, 'utf8').split(' ')[1]) * 4096 || 0;
  } catch {
    return 0;
  }
}

/** checkAreasRead's refusal: Ckpt.dump dumps once more without the early read. */
class AreasChanged extends CkptError {
  constructor(message: string) {
    super('ERR_CKPT_DUMP_FAILED', message, { hint: 'the process changed it just as the dump began (madvise, mlock); dump again' });
  }
}

/** Flags that differ between the two reads by ckpt's own doing: the memory plugin's userfaultfd registrations, made while frozen. */
const OWN_FLAGS = new Set(['uw', 'um', 'ui']);

const sameArea = (a: Vma, b: Vma) =>
  a.start === b.start && a.end === b.end && a.perms === b.perms && a.offset === b.offset && a.dev === b.dev && a.inode === b.inode && a.name === b.name;

/**
 * The frozen layout (maps) with the flags and page sizes of the smaps read before the freeze, when
 * every area is one that read saw (ckpt's guard mapping aside); undefined otherwise.
 */
function areasFromEarlierRead(proc: ProcessDump): Vma[] | undefined {
  const reads = readsBefore.get(proc.session);
  const handle = reads?.get(proc.procPid);
  if (handle === undefined) return undefined;
  reads!.delete(proc.procPid);
  let before: Vma[];
  try {
    before = parseSmaps(typeof handle === 'string' ? handle : native.fd.readJoin(handle));
  } catch {
    return undefined;
  }
  const guard = proc.tracee.scratchRange;
  const byStart = new Map(before.map((v) => [v.start, v]));
  const areas: Vma[] = [];
  for (const v of proc.tracee.maps()) {
    if (guard && v.start === guard.start && v.end === guard.end) {
      areas.push(v);
      continue;
    }
    const b = byStart.get(v.start);
    if (!b || !sameArea(b, v)) return undefined;
    areas.push(b);
  }
  return areas;
}

/**
 * Before the thaw: the areas each process got from the smaps read before the freeze must be what
 * the frozen read shows, flags and page sizes included (ckpt's userfaultfd registrations aside).
 * An area whose flags a process changed in between (madvise, mlock just before the freeze) fails
 * this attempt, naming it, and Ckpt.dump dumps again without the early read.
 */
function checkAreasRead(session: DumpSession): void {
  for (const [proc, used] of areasFromBefore.get(session) ?? []) {
    const reads = readsAhead.get(session);
    const handle = reads?.get(proc);
    if (handle !== undefined) reads!.delete(proc);
    const now = handle === undefined ? readVmas(proc.procPid) : parseSmaps(native.fd.readJoin(handle));
    const guard = proc.tracee.scratchRange;
    const mine = (v: Vma) => !!guard && v.start >= guard.start && v.end <= guard.end;
    const a = used.filter((v) => !mine(v));
    const b = now.filter((v) => !mine(v));
    const flags = (v: Vma) => (v.flags ?? []).filter((f) => !OWN_FLAGS.has(f)).join(' ');
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      const x = a[i];
      const y = b[i];
      if (x && y && sameArea(x, y) && flags(x) === flags(y) && x.pageSize === y.pageSize) continue;
      const v = x ?? y;
      const what = !x || !y || !sameArea(x, y) ? 'its layout' : `its flags, from "${flags(x)}" to "${flags(y)}"`;
      throw new AreasChanged(
        `pid ${proc.pid} (${proc.comm}): memory area ${v.start.toString(16)}-${v.end.toString(16)} changed (${what}) between the reads of its smaps before and during the freeze`,
      );
    }
  }
}

function processDump(
  hooks: Hooks,
  pid: number,
  ids: { ppid: number; pgid: number; sid: number; comm: string; stoppedAtFreeze: boolean },
  threads: Tracee[],
  session: DumpSession,
): ProcessDump {
  const records: Record<string, unknown> = {};
  // The guard mapping at once: core reads smaps (vmas) on a thread of its own after the freeze,
  // and a remote mmap would wait for that read (smaps holds the mmap lock as it walks the page
  // tables). Parked at once, as between stages: the other processes are frozen before its turn.
  threads[0].scratch();
  threads[0].parkBetweenStages();
  let areas: Vma[] | undefined;
  const proc: ProcessDump = {
    pid,
    ...ids,
    vmas() {
      if (areas) return areas;
      const early = areasFromEarlierRead(proc);
      if (early) {
        let used = areasFromBefore.get(session);
        if (!used) areasFromBefore.set(session, (used = new Map()));
        used.set(proc, early);
        return (areas = early);
      }
      const reads = readsAhead.get(session);
      const handle = reads?.get(proc);
      if (handle === undefined) return (areas = readVmas(proc.procPid));
      reads!.delete(proc);
      return (areas = parseSmaps(native.fd.readJoin(handle)));
    },
    tracee: threads[0],
    threads,
    leaderExited: threads[0].pid !== pid,
    procPid: threads[0].pid,
    session,
    records,
    fds: [],
    fdInfo: new Map(),
    inFlight: [],
    memoryExclusions: [],
    dumpInFlight: (fd) => dumpInFlight(hooks, proc, fd),
    put(plugin, data) {
      records[plugin] = data;
    },
    get<T>(plugin: string) {
      return records[plugin] as T | undefined;
    },
  };
  return proc;
}

function processRestore(hooks: Hooks, record: ProcessRecord, session: RestoreSession): [ProcessRestore, Installer] {
  let installer: Installer;
  const proc: ProcessRestore = {
    pid: record.pid,
    record,
    session,
    fds: record.fds,
    stub: undefined,
    threads: [],
    get trampoline() {
      return installer.trampoline;
    },
    get<T>(plugin: string) {
      return record.records[plugin] as T | undefined;
    },
    borrowFd: (restorerFd) => installer.borrow(restorerFd),
    installFd: (fd, restorerFd, cloexec) => installer.install(fd, restorerFd, cloexec),
    installFds: (list) => installer.installMany(list),
    restorerFd: (fd) => restorerFdOf(proc, fd),
    restoreInFlight: (id) => descriptionOf(hooks, session, record.pid, id),
  };
  installer = new Installer(proc);
  return [proc, installer];
}

/** Core's part of each process record: the fd table. */
function validateFdTable(dir: string, r: ProcessRecord): void {
  const bad = (what: string) => new CkptError('ERR_CKPT_IMAGE_CORRUPT', `image ${dir}: the record of pid ${r.pid} is malformed: ${what}`);
  if (!Number.isInteger(r.pid) || r.pid <= 0) throw bad('pid is not a positive integer');
  for (const k of ['ppid', 'pgid', 'sid'] as const) if (!Number.isInteger(r[k]) || r[k] < 0) throw bad(`${k} is not a pid`);
  if (!r.records || typeof r.records !== 'object') throw bad('records is not an object');
  if (!Array.isArray(r.fds)) throw bad('fds is not a list');
  if (r.inFlight !== undefined && !Array.isArray(r.inFlight)) throw bad('inFlight is not a list');
  for (const [list, name] of [
    [r.fds, 'fds'],
    [r.inFlight ?? [], 'inFlight'],
  ] as const) {
    list.forEach((f: FdRecord, i) => {
      if (!f || typeof f !== 'object') throw bad(`${name}[${i}] is not an object`);
      // Files in flight have ids below 0, fds numbers from 0.
      if (!Number.isInteger(f.fd) || (name === 'fds') !== f.fd >= 0) throw bad(`${name}[${i}].fd is not ${name === 'fds' ? 'an fd number' : 'an id below 0'}`);
      if (typeof f.owner !== 'string' || typeof f.kind !== 'string') throw bad(`${name}[${i}] has no owner or kind`);
      if (typeof f.cloexec !== 'boolean' || !Number.isInteger(f.flags)) throw bad(`${name}[${i}].cloexec or .flags has the wrong type`);
      if (f.sameAs !== undefined && (!Number.isInteger(f.sameAs.pid) || !Number.isInteger(f.sameAs.fd))) throw bad(`${name}[${i}].sameAs is not { pid, fd }`);
      if (f.fown !== undefined && ![f.fown.type, f.fown.pid, f.fown.sig].every(Number.isInteger)) throw bad(`${name}[${i}].fown is not { type, pid, sig }`);
    });
  }
  if (r.leaderExited !== undefined && typeof r.leaderExited !== 'boolean') throw bad('leaderExited is not a boolean');
  if (r.sharesWithParent !== undefined && !(Array.isArray(r.sharesWithParent) && r.sharesWithParent.every((x) => x === 'files' || x === 'fs'))) {
    throw bad('sharesWithParent is not a list of "files" and "fs"');
  }
}

/**
 * Every pid a restore takes on the host: its processes', its zombies', and those of the sessions
 * and groups whose leader is gone (a helper holds each for a moment), but the root's own session
 * and group, which come from outside.
 */
function neededPids(records: ProcessRecord[], zombies: ZombieRecord[]): number[] {
  const all = [...records, ...zombies];
  const root = records[0];
  const out = new Set(all.map((r) => r.pid));
  for (const r of all) for (const id of [r.sid, r.pgid]) if (id > 0 && id !== root?.sid && id !== root?.pgid) out.add(id);
  return [...out];
}

/** True when every pid is free, or held only by zombies that get reaped within a few seconds. */
async function pidsFreeSoon(pids: number[]): Promise<boolean> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const held = pids.filter((p) => processExists(p));
    if (!held.length) return true;
    for (const p of held) {
      try {
        if (!'ZX'.includes(readStat(p).state)) return false;
      } catch {
        /* just went */
      }
    }
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A pid held by a zombie is freed when its parent reaps it; wait a little for that. */
async function waitPidFree(pid: number): Promise<void> {
  const deadline = Date.now() + 10000;
  while (processExists(pid)) {
    let state = '?';
    try {
      state = readStat(pid).state;
    } catch {
      continue;
    }
    if (state !== 'Z' && state !== 'X') {
      throw new CkptError('ERR_CKPT_PID_TAKEN', `cannot restore pid ${pid}: the pid is in use by ${describePid(pid)}`, {
        hint: `stop that process (kill ${pid}) and retry; or restore elsewhere`,
      });
    }
    if (Date.now() > deadline) {
      throw new CkptError('ERR_CKPT_PID_TAKEN', `cannot restore pid ${pid}: it is still held by a zombie its parent has not reaped`, {
        hint: `the parent of ${pid} (ppid ${readStat(pid).ppid}) must wait() for it`,
      });
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Whether two processes share one kernel object of a kcmp type (false when either is gone). */
function shared(a: number, b: number, type: number): boolean {
  try {
    return native.proc.kcmp(a, b, type, 0, 0) === 0;
  } catch {
    return false;
  }
}

/**
 * A parent waiting in vfork for a child that shares its memory cannot be stopped (it waits
 * uninterruptibly) and could not be restored: refused before ckpt tries to freeze it.
 */
function refuseVforkParent(pid: number, comm: string, children: number[]): void {
  for (const child of children) {
    if (shared(pid, child, KCMP_VM)) {
      throw new CkptError(
        'ERR_CKPT_UNSUPPORTED',
        `cannot checkpoint pid ${child}: it shares its address space (a vfork child, or CLONE_VM) with pid ${pid} (${comm}), which waits for it; a restore would not share it again`,
        { hint: 'checkpoint once the child has called exec or exited' },
      );
    }
  }
}

/**
 * Kernel structures two processes (not threads of one) share through clone flags. An fd table
 * (CLONE_FILES) or fs (CLONE_FS) shared along parent-child links is restored shared (each child
 * cloned from its parent with the flag); shared otherwise, or an address space or signal handlers
 * (CLONE_VM, CLONE_SIGHAND: a vfork child), is refused, naming both processes.
 */
const SHARED: Array<[number, string, SharedWithParent | undefined]> = [
  [KCMP_VM, 'its address space (a vfork child, or CLONE_VM)', undefined],
  [KCMP_FILES, 'its fd table (CLONE_FILES)', 'files'],
  [KCMP_FS, 'its working directory, root and umask (CLONE_FS)', 'fs'],
  [KCMP_SIGHAND, 'its signal handlers (CLONE_SIGHAND)', undefined],
];

function checkSharing(session: DumpSession): void {
  const procs = session.processes;
  const refuse = (p: ProcessDump, what: string, other: string) =>
    new CkptError('ERR_CKPT_UNSUPPORTED', `cannot checkpoint pid ${p.pid} (${p.comm}): it shares ${what} with ${other}, which a restore would not share again`);
  for (const [type, what, restorable] of SHARED) {
    // kcmp orders the kernel objects: sorted by it, the sharers of one object are neighbours.
    const order = (a: ProcessDump, b: ProcessDump) => {
      const r = native.proc.kcmp(a.procPid, b.procPid, type, 0, 0);
      return r === 0 ? 0 : r === 1 ? -1 : 1;
    };
    const sorted = [...procs].sort(order);
    for (let i = 0; i < sorted.length; ) {
      let j = i + 1;
      while (j < sorted.length && order(sorted[i], sorted[j]) === 0) j++;
      const group = sorted.slice(i, j);
      i = j;
      if (group.length < 2) continue;
      const inGroup = new Set(group.map((p) => p.pid));
      const tops = group.filter((p) => !inGroup.has(p.ppid));
      if (!restorable) throw refuse(group[1], what, `pid ${group[0].pid} (${group[0].comm})`);
      if (tops.length > 1) throw refuse(tops[1], what, `pid ${tops[0].pid} (${tops[0].comm}), which is not its parent nor shares it with its parent`);
      for (const p of group) if (p !== tops[0]) (p.sharesWithParent ??= []).push(restorable);
    }
  }
  // The root sharing with its parent, outside the image: nothing to share it with again.
  const root = procs[0];
  for (const [type, what] of SHARED)
    if (root && shared(root.procPid, root.ppid, type)) throw refuse(root, what, `its parent ${root.ppid}, outside the checkpoint`);
}

/** Namespaces ckpt does not save: a process must share ckpt's own (restore puts it in ckpt restore's). */
const UNSAVED_NAMESPACES = ['mnt', 'net', 'uts', 'user', 'cgroup', 'time'] as const;
const NS_NAME: Record<(typeof UNSAVED_NAMESPACES)[number], string> = {
  mnt: 'mount',
  net: 'network',
  uts: 'UTS (host name)',
  user: 'user',
  cgroup: 'cgroup',
  time: 'time',
};

function checkNamespaces(session: DumpSession): void {
  // Every link at once (a tree's processes times the kinds: one native call).
  const kinds = UNSAVED_NAMESPACES.length;
  const ours = native.proc.readLinks(UNSAVED_NAMESPACES.map((ns) => `/proc/self/ns/${ns}`));
  const links = native.proc.readLinks(session.processes.flatMap((p) => UNSAVED_NAMESPACES.map((ns) => `/proc/${p.procPid}/ns/${ns}`)));
  for (const [i, ns] of UNSAVED_NAMESPACES.entries()) {
    const own = ours[i];
    if (own === null) continue; // a kernel without this namespace kind
    for (const [j, p] of session.processes.entries()) {
      const theirs = links[j * kinds + i];
      if (theirs === null || theirs === own) continue;
      throw new CkptError(
        'ERR_CKPT_UNSUPPORTED',
        `cannot checkpoint pid ${p.pid} (${p.comm}): it is in another ${NS_NAME[ns]} namespace than ckpt (${theirs}), which ckpt does not save; a restore would put it in ckpt restore's`,
        { hint: `run ckpt inside that namespace (nsenter --target ${p.pid} --${ns === 'mnt' ? 'mount' : ns} ckpt dump ...), and restore there too` },
      );
    }
  }
}

/**
 * When the dumped tree lives in a pid namespace of its own, the image records each task's pid
 * inside it, and restore recreates the namespace: with the root as its init when it was (as with
 * `ckpt run`), else with an init of ckpt's (`initOutside`) and the root as its child, so that every
 * process sees its old pids. A tree in ckpt's own namespace keeps host pids (undefined).
 */
function pidNamespaceOf(root: number, session: DumpSession): PidNamespaceRecord | undefined {
  const inner = (pid: number, tid = pid) => readStatusOf(pid, tid).NSpid?.split(/\s+/).filter(Boolean).map(Number) ?? [];
  const rootTask = session.processes[0]?.procPid ?? root;
  const ns = readlinkSync(`/proc/${rootTask}/ns/pid`);
  if (ns === readlinkSync('/proc/self/ns/pid')) return undefined;
  const rootIds = inner(root);
  if (rootIds.length !== inner(process.pid).length + 1) {
    throw new CkptError(
      'ERR_CKPT_UNSUPPORTED',
      `cannot checkpoint pid ${root} (${readStat(root).comm}): it lives in a pid namespace nested ${rootIds.length - inner(process.pid).length} levels below ckpt's; one level is supported`,
      { hint: 'run ckpt in the parent of that namespace' },
    );
  }
  const map: Record<string, number> = {};
  for (const p of session.processes) {
    if (readlinkSync(`/proc/${p.procPid}/ns/pid`) !== ns) {
      throw new CkptError('ERR_CKPT_UNSUPPORTED', `pid ${p.pid} lives in a nested pid namespace inside ${root}'s; nested namespaces are not supported`);
    }
    for (const t of p.threads) map[String(t.pid)] = inner(p.pid, t.pid).at(-1)!;
    if (p.leaderExited) map[String(p.pid)] = inner(p.pid).at(-1) ?? p.pid;
  }
  for (const z of session.zombies) map[String(z.pid)] = inner(z.pid).at(-1) ?? z.pid;
  // Sessions and groups whose leader is gone are made again by helpers with their pids.
  for (const p of [...session.processes, ...session.zombies]) {
    const st = readStatusOf(p.pid, p.pid);
    for (const [host, key] of [
      [p.pgid, 'NSpgid'],
      [p.sid, 'NSsid'],
    ] as const) {
      const id = st[key]?.split(/\s+/).filter(Boolean).map(Number).at(-1);
      if (id && !(String(host) in map)) map[String(host)] = id;
    }
  }
  const hostIpc = readlinkSync(`/proc/${rootTask}/ns/ipc`) === readlinkSync('/proc/self/ns/ipc');
  return { map, ...(rootIds.at(-1) !== 1 ? { initOutside: true } : {}), ...(hostIpc ? { hostIpc } : {}) };
}

/** The status of a task, or nothing when it is gone. */
function readStatusOf(pid: number, tid: number): Record<string, string> {
  try {
    return readStatus(pid, tid);
  } catch {
    return {};
  }
}

/**
 * One turn of the event loop, so that signals (Ctrl-C, SIGTERM) reach their handlers even while
 * the pipeline is busy; then a stop if the run was aborted.
 */
async function interruptionPoint(signal: AbortSignal | undefined, what: 'dump' | 'restore'): Promise<void> {
  await new Promise<void>((resolve) => setImmediate(resolve));
  if (signal?.aborted) throw new CkptError(what === 'dump' ? 'ERR_CKPT_DUMP_FAILED' : 'ERR_CKPT_RESTORE_FAILED', `${what} interrupted`);
}

/** A failure to write the image (full disk, quota, I/O error) says so, naming the directory. */
function imageWriteError(e: unknown, dir: string, pid: number): CkptError | undefined {
  const causes: Record<string, string> = {
    ENOSPC: 'no space left on the device',
    EDQUOT: 'the disk quota is exhausted',
    EIO: 'an I/O error',
    EROFS: 'the file system is read-only',
    EFBIG: 'a file grew too big for the file system',
  };
  for (let c: unknown = e; c; c = (c as { cause?: unknown }).cause) {
    const code = (c as { code?: string }).code;
    if (code && causes[code]) {
      return new CkptError('ERR_CKPT_DUMP_FAILED', `dump of pid ${pid} failed: cannot write the image in ${dir}: ${causes[code]}`, {
        cause: e,
        hint: 'the previous image there is unchanged; free some space (or dump elsewhere) and retry',
      });
    }
  }
  return undefined;
}

function asCkptError(e: unknown, code: 'ERR_CKPT_DUMP_FAILED' | 'ERR_CKPT_RESTORE_FAILED', what: string): CkptError {
  if (e instanceof CkptError) return e;
  if (e instanceof NativeError) return new CkptError(code, `${what}: ${e.message}`, { cause: e });
  return new CkptError(code, `${what}: ${errorMessage(e)}`, { cause: e });
}
