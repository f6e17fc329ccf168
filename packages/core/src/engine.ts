/**
 * The pipeline, in one place.
 *   dump:    check -> freeze -> per process, DUMP_STAGES in order -> write records -> commit
 *            image -> kill (or thaw with --leave-running). Any failure thaws every frozen
 *            process and drops the partial image.
 *   restore: open + validate image -> check pids free and plugins present -> per process,
 *            RESTORE_STAGES in order (pids creates the stub, registers is last) -> detach.
 *            Any failure kills every stub created and closes every fd opened.
 */
import { readFileSync, readlinkSync } from 'node:fs';
import { native, SYS, NativeError } from '@ckpt/native';
import { createHooks, DUMP_STAGES, RESTORE_STAGES, type Hooks } from './hooks.js';
import { instrumentHooks, pluginContext, type CkptPlugin } from './plugin.js';
import { ImageReader, ImageWriter, type ProcessRecord } from './image.js';
import { CkptError, PluginError, errorMessage } from './errors.js';
import { createServices, type Services } from './services.js';
import { closeShmem } from './shmem.js';
import type { CkptConfig } from './config.js';
import type { DumpOptions, DumpSession, ProcessDump, ProcessRestore, RestoreOptions, RestoreSession } from './context.js';
import { processExists, processTree, readStat, describePid } from './proc.js';
import { logger } from './log.js';
import type { Tracee } from './tracee.js';

const log = logger('engine');
export const VERSION = '0.1.0';

export interface DumpResult {
  dir: string;
  pids: number[];
  ms: number;
  imageBytes: number;
  leftRunning: boolean;
}

export interface RestoreResult {
  /** The restored processes' pids (on the host: equal to the image's unless in a new pid namespace). */
  pids: number[];
  /** Their pids inside their own pid namespace, when the image has one. */
  nsPids?: number[];
  /** The application id the image was made under (ckpt run). */
  app?: string;
  ms: number;
}

const O_CLOEXEC = 0o2000000;
const F_SETFD = 2, F_DUPFD_CLOEXEC = 1030;

export class Ckpt {
  readonly hooks: Hooks;
  readonly plugins: readonly CkptPlugin[];
  readonly config: CkptConfig;

  constructor(plugins: CkptPlugin[], config?: Partial<CkptConfig>) {
    this.config = { plugins: [], builtins: true, options: {}, baseDir: process.cwd(), ...config };
    this.hooks = createHooks();
    instrumentHooks(this.hooks);
    const seen = new Set<string>();
    for (const p of plugins) {
      if (seen.has(p.name)) throw new CkptError('ERR_CKPT_CONFIG', `plugin ${p.name} is listed twice`);
      seen.add(p.name);
      try {
        p.apply(this.hooks, pluginContext(p));
      } catch (e) {
        throw new PluginError(p.name, 'apply', e);
      }
    }
    this.plugins = plugins;
  }

  private services(): Services {
    return createServices(this.config);
  }

  async dump(options: DumpOptions): Promise<DumpResult> {
    const t0 = performance.now();
    const { pid } = options;
    const services = this.services();
    const pc = services.processes;
    pc.checkTraceable(pid);
    const image = new ImageWriter(options.dir, options.sync);
    const session: DumpSession = { options, image, processes: [], zombies: [], meta: {}, objects: new Map(), services };
    const frozen: Tracee[][] = [];
    try {
      await this.hooks.session.beforeDump.promise(session);
      // Freeze the whole tree, parents first, re-reading it until no new process appears:
      // nothing of it runs while any of it is read.
      const seen = new Set<number>();
      for (;;) {
        const fresh = processTree(pid).filter((n) => !seen.has(n.pid));
        if (!fresh.length) break;
        for (const n of fresh) {
          seen.add(n.pid);
          if (n.state === 'Z') {
            const st = readStat(n.pid);
            session.zombies.push({ pid: n.pid, comm: st.comm, ppid: n.ppid, pgid: st.pgid, sid: st.sid, exitCode: st.exitCode });
            continue;
          }
          const threads = pc.freeze(n.pid);
          frozen.push(threads);
          session.processes.push(processDump(n.pid, threads, session));
        }
      }
      const pidns = pidNamespaceOf(pid, session);
      for (const stage of DUMP_STAGES) {
        for (const proc of session.processes) {
          checkAborted(options.signal, 'dump');
          await this.hooks[stage].dump.promise(proc);
        }
      }
      await this.hooks.session.afterDump.promise(session);
      for (const p of session.processes) {
        if (p.tracee.scratchRange) p.tracee.releaseScratch();
        image.writeJson(`proc-${p.pid}.json`, { pid: p.pid, records: p.records } satisfies ProcessRecord);
      }
      const manifest = image.commit({
        tool: `ckpt ${VERSION}`,
        root: pid,
        processes: session.processes.map((p) => {
          const ids = p.records['@ckpt/plugin-pids'] as { ppid?: number; comm?: string } | undefined;
          return { pid: p.pid, ppid: ids?.ppid ?? 0, comm: ids?.comm ?? '', file: `proc-${p.pid}.json` };
        }),
        zombies: session.zombies,
        ...(pidns ? { pidns } : {}),
        ...(options.app ? { app: options.app } : {}),
        plugins: Object.fromEntries(this.plugins.map((p) => [p.name, { version: p.version }])),
        meta: session.meta,
      });
      if (options.leaveRunning) for (const threads of frozen) for (const t of threads) pc.thaw(t);
      else pc.killFrozen(frozen);
      const imageBytes = Object.values(manifest.files).reduce((a, f) => a + f.size, 0);
      return { dir: image.dir, pids: session.processes.map((p) => p.pid), ms: performance.now() - t0, imageBytes, leftRunning: !!options.leaveRunning };
    } catch (e) {
      log('dump failed, thawing: %s', errorMessage(e));
      pc.thawAll();
      image.abort();
      throw asCkptError(e, 'ERR_CKPT_DUMP_FAILED', `dump of pid ${pid} failed`);
    }
  }

  async restore(options: RestoreOptions): Promise<RestoreResult> {
    const t0 = performance.now();
    const image = ImageReader.open(options.dir);
    const records = image.processes();
    const loaded = new Set(this.plugins.map((p) => p.name));
    for (const r of records) {
      for (const name of Object.keys(r.records)) {
        if (!loaded.has(name)) {
          throw new CkptError('ERR_CKPT_CONFIG', `image ${image.dir} was written with plugin ${name}, which is not loaded`,
            { hint: `install ${name} and list it in ckpt.config.json or pass --plugin ${name}` });
        }
      }
    }
    const zombies = image.manifest.zombies ?? [];
    const pidns = image.manifest.pidns;
    // In a fresh pid namespace nothing can collide; on the host every pid must be free.
    if (!pidns) for (const pid of [...records.map((r) => r.pid), ...zombies.map((z) => z.pid)]) await waitPidFree(pid);
    // A namespace keeps its host pids too when they are all free (else the host picks new ones,
    // so that one image can run twice side by side).
    const keepHostPids = !!pidns && (await pidsFreeSoon(Object.keys(pidns.map).map(Number)));
    const services = this.services();
    const rollbacks: Array<() => void> = [];
    const session: RestoreSession = {
      options, image, processes: [], zombies, objects: new Map(), services,
      newPidNamespace: !!pidns,
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
      onRollback: (fn) => rollbacks.push(fn),
    };
    try {
      for (const r of records) session.processes.push(processRestore(r, session));
      await this.hooks.session.beforeRestore.promise(session);
      // Stage by stage across the tree (parents first): every process exists before any
      // address space is rebuilt, every fd exists before epoll watches are wired.
      for (const stage of RESTORE_STAGES) {
        for (const proc of session.processes) {
          checkAborted(options.signal, 'restore');
          await this.hooks[stage].restore.promise(proc);
          if (stage === 'pids' && !proc.stub) {
            throw new CkptError('ERR_CKPT_RESTORE_FAILED', `no plugin created a process for pid ${proc.pid} (is @ckpt/plugin-pids loaded?)`);
          }
        }
        if (stage === 'pids') await this.hooks.session.processesCreated.promise(session);
        if (stage === 'sockets') for (const proc of session.processes) await this.hooks.files.afterInstall.promise(proc);
        if (stage === 'sysvipc') for (const proc of session.processes) closeInstaller(proc);
      }
      await this.hooks.session.afterRestore.promise(session);
      closeShmem(session);
      // Children first, so a parent never runs before its children exist as they were.
      for (const proc of [...session.processes].reverse()) {
        for (const t of proc.threads) if (t.pid !== proc.stub!.pid) native.detach(t.pid, 0);
        native.detach(proc.stub!.pid, 0);
      }
    } catch (e) {
      log('restore failed, rolling back: %s', errorMessage(e));
      for (const fn of rollbacks.reverse()) {
        try {
          fn();
        } catch (err) {
          log('rollback step failed: %s', errorMessage(err));
        }
      }
      throw asCkptError(e, 'ERR_CKPT_RESTORE_FAILED', `restore from ${image.dir} failed`);
    }
    return {
      pids: session.processes.map((p) => p.stub!.pid),
      ms: performance.now() - t0,
      ...(pidns ? { nsPids: session.processes.map((p) => session.vpid(p.pid)) } : {}),
      ...(image.manifest.app ? { app: image.manifest.app } : {}),
    };
  }
}

function processDump(pid: number, threads: Tracee[], session: DumpSession): ProcessDump {
  const records: Record<string, unknown> = {};
  return {
    pid, tracee: threads[0], threads, session, records,
    put(plugin, data) {
      records[plugin] = data;
    },
    get<T>(plugin: string) {
      return records[plugin] as T | undefined;
    },
  };
}

interface Installer {
  pidfd?: number;
}
const installers = new WeakMap<ProcessRestore, Installer>();

/** Every stub starts with the restorer's pidfd at fd 3 (spawned, or forked from a parent stub). */
const STUB_PIDFD = 3;

function processRestore(record: ProcessRecord, session: RestoreSession): ProcessRestore {
  const proc: ProcessRestore = {
    pid: record.pid,
    record,
    session,
    stub: undefined,
    threads: [],
    get<T>(plugin: string) {
      return record.records[plugin] as T | undefined;
    },
    borrowFd(restorerFd) {
      const stub = proc.stub;
      if (!stub) throw new Error('borrowFd before the process exists');
      return Number(stub.syscall(SYS.pidfd_getfd, installerPidfd(proc, stub), restorerFd, 0));
    },
    installFd(fd, restorerFd, cloexec) {
      const stub = proc.stub;
      if (!stub) throw new Error('installFd before the process exists');
      installerPidfd(proc, stub);
      const inst = installers.get(proc) as Required<Installer>;
      if (inst.pidfd === fd) {
        const moved = Number(stub.syscall(SYS.fcntl, inst.pidfd, F_DUPFD_CLOEXEC, fd + 1));
        stub.syscall(SYS.close, inst.pidfd);
        inst.pidfd = moved;
      }
      const tmp = Number(stub.syscall(SYS.pidfd_getfd, inst.pidfd, restorerFd, 0));
      if (tmp !== fd) {
        stub.syscall(SYS.dup3, tmp, fd, cloexec ? O_CLOEXEC : 0);
        stub.syscall(SYS.close, tmp);
      } else {
        stub.syscall(SYS.fcntl, fd, F_SETFD, cloexec ? 1 : 0);
      }
    },
  };
  installers.set(proc, { pidfd: STUB_PIDFD });
  return proc;
}

/** The stub's pidfd on the restorer, through which it takes fds (pidfd_getfd). */
function installerPidfd(proc: ProcessRestore, stub: Tracee): number {
  const inst = installers.get(proc);
  if (inst?.pidfd === undefined) throw new Error(`pid ${proc.pid}: no restorer pidfd in the process any more (fds are installed before the sysvipc stage ends)`);
  void stub;
  return inst.pidfd;
}

function closeInstaller(proc: ProcessRestore): void {
  const inst = installers.get(proc);
  if (inst?.pidfd !== undefined && proc.stub) {
    proc.stub.syscall(SYS.close, inst.pidfd);
    inst.pidfd = undefined;
  }
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

/**
 * When the dumped tree is a whole pid namespace (its root is the namespace's init, as with
 * `ckpt run`), the image records each task's pid inside it, and restore recreates the namespace.
 */
function pidNamespaceOf(root: number, session: DumpSession): { map: Record<string, number> } | undefined {
  const inner = (pid: number, tid = pid) => readStatusOf(pid, tid).NSpid?.split(/\s+/).filter(Boolean).map(Number) ?? [];
  const rootIds = inner(root);
  if (rootIds.length < 2 || rootIds[rootIds.length - 1] !== 1) return undefined;
  const ns = readlinkSync(`/proc/${root}/ns/pid`);
  const map: Record<string, number> = {};
  for (const p of session.processes) {
    if (readlinkSync(`/proc/${p.pid}/ns/pid`) !== ns) {
      throw new CkptError('ERR_CKPT_UNSUPPORTED', `pid ${p.pid} lives in a nested pid namespace inside ${root}'s; nested namespaces are not supported`);
    }
    for (const t of p.threads) map[String(t.pid)] = inner(p.pid, t.pid).at(-1)!;
  }
  for (const z of session.zombies) map[String(z.pid)] = inner(z.pid).at(-1) ?? z.pid;
  return { map };
}

function readStatusOf(pid: number, tid: number): Record<string, string> {
  const out: Record<string, string> = {};
  try {
    for (const line of readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8').split('\n')) {
      const i = line.indexOf(':');
      if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
    }
  } catch {
    /* gone */
  }
  return out;
}

function checkAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw new CkptError(what === 'dump' ? 'ERR_CKPT_DUMP_FAILED' : 'ERR_CKPT_RESTORE_FAILED', `${what} interrupted`);
}

function asCkptError(e: unknown, code: 'ERR_CKPT_DUMP_FAILED' | 'ERR_CKPT_RESTORE_FAILED', what: string): CkptError {
  if (e instanceof CkptError) return e;
  if (e instanceof NativeError) return new CkptError(code, `${what}: ${e.message}`, { cause: e });
  return new CkptError(code, `${what}: ${errorMessage(e)}`, { cause: e });
}

