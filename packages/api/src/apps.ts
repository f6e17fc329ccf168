/**
 * Applications started by `ckpt run`: each lives in its own pid (and IPC) namespace under
 * ckpt-init, and has an id recorded in /run/ckpt/apps/<id>.json so that `ckpt dump --app ID`
 * finds it. `ckpt restore` of an application's image registers it again under its id (or a new
 * one when that id is running already, e.g. a second copy restored side by side).
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CkptError, procfs } from '@ckpt/core';
import { initPath } from '@ckpt/native';

export const APPS_DIR = process.env.CKPT_APPS_DIR ?? '/run/ckpt/apps';

export interface AppEntry {
  id: string;
  /** Host pid of the namespace's init (ckpt-init). */
  init: number;
  /** Host pid of the application's main process. */
  pid: number;
  startTime: number;
  command: string[];
  started: string;
  /** Its periodic checkpointer (ckpt run --checkpoint-every), if it has one. */
  checkpointer?: CheckpointerEntry;
}

/** A process that checkpoints an application on a schedule (`ckpt run --checkpoint-every`). */
export interface CheckpointerEntry {
  pid: number;
  startTime: number;
  everyMs: number;
  /** The image directory its generations go to, and how many it keeps. */
  dir: string;
  keep: number;
  /** Its log: one line per checkpoint. */
  log: string;
}

/** Whether the process an entry names (pid and start time) still runs (a zombie does not). */
function running(pid: number, startTime: number): boolean {
  try {
    const st = procfs.readStat(pid);
    return st.startTime === startTime && st.state !== 'Z';
  } catch {
    return false;
  }
}

/** Whether the checkpointer an entry names still runs. */
export function checkpointerAlive(c: CheckpointerEntry | undefined): boolean {
  return !!c && running(c.pid, c.startTime);
}

function alive(e: AppEntry): boolean {
  return running(e.init, e.startTime);
}

export function newAppId(command: string[]): string {
  const base =
    basename(command[0] ?? 'app')
      .replace(/[^A-Za-z0-9_.-]/g, '_')
      .slice(0, 24) || 'app';
  return `${base}-${randomBytes(3).toString('hex')}`;
}

export function registerApp(e: Omit<AppEntry, 'startTime' | 'started'>): AppEntry {
  mkdirSync(APPS_DIR, { recursive: true, mode: 0o700 });
  let id = e.id;
  for (let n = 2; existsSync(join(APPS_DIR, `${id}.json`)) && findApp(id, false); n++) id = `${e.id}.${n}`;
  const entry: AppEntry = { ...e, id, startTime: procfs.readStat(e.init).startTime, started: new Date().toISOString() };
  writeApp(entry);
  return entry;
}

/** Writes an application's entry (atomically: a reader sees the old one or the new one). */
export function writeApp(entry: AppEntry): void {
  const tmp = join(APPS_DIR, `.${entry.id}.${process.pid}.tmp`);
  writeFileSync(tmp, JSON.stringify(entry, null, 1), { mode: 0o600 });
  renameSync(tmp, join(APPS_DIR, `${entry.id}.json`));
}

/** The running application with this id (or null / a clear error). */
export function findApp(id: string, required = true): AppEntry | null {
  const p = join(APPS_DIR, `${id}.json`);
  let e: AppEntry | null = null;
  try {
    e = JSON.parse(readFileSync(p, 'utf8')) as AppEntry;
  } catch {
    e = null;
  }
  if (e && !alive(e)) {
    rmSync(p, { force: true });
    e = null;
  }
  if (!e && required) {
    throw new CkptError('ERR_CKPT_NO_SUCH_PROCESS', `no running application ${JSON.stringify(id)}`, { hint: 'ckpt apps lists the running ones' });
  }
  return e;
}

export function listApps(): AppEntry[] {
  if (!existsSync(APPS_DIR)) return [];
  return readdirSync(APPS_DIR)
    .filter((f) => f.endsWith('.json') && !f.startsWith('.'))
    .map((f) => findApp(f.slice(0, -5), false))
    .filter((e): e is AppEntry => !!e);
}

/** Is pid the init (ckpt-init) of a pid namespace ckpt run made? */
export function isAppInit(pid: number): boolean {
  try {
    const ns = procfs.readStatus(pid).NSpid?.split(/\s+/).filter(Boolean) ?? [];
    return ns.length > 1 && ns[ns.length - 1] === '1' && readlinkSync(`/proc/${pid}/exe`) === initPath;
  } catch {
    return false;
  }
}

/** For a process inside an application's namespace, the namespace's init; else undefined. */
export function appInitOf(pid: number): number | undefined {
  try {
    for (let p = pid, guard = 0; p > 1 && guard < 64; guard++) {
      if (isAppInit(p)) return p;
      const ns = procfs.readStatus(p).NSpid?.split(/\s+/).filter(Boolean) ?? [];
      if (ns.length < 2) return undefined;
      p = procfs.readStat(p).ppid;
    }
  } catch {
    // The process (or an ancestor) is gone: not an application's; the dump names a missing pid.
  }
  return undefined;
}

/** The application's main process: ckpt-init's child. */
export function mainOf(init: number): number | undefined {
  try {
    const kids = readFileSync(`/proc/${init}/task/${init}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    return kids[0];
  } catch {
    return undefined;
  }
}

/**
 * `--app ID`: the running application with this id (a CkptError naming it and the way to list
 * them when there is none).
 */
export function resolveApp(id: string): AppEntry {
  return findApp(id, true)!;
}

/**
 * What a dump of `-t PID` or `--app ID` checkpoints: a process of an application stands for the
 * whole application (its namespace's init, and the application's id, so that the image can be
 * registered again at restore); any other process for itself and its descendants.
 */
export function dumpTarget(target: { pid: number; app?: undefined } | { pid?: undefined; app: string }): { pid: number; app?: string } {
  if (target.app !== undefined) return { pid: resolveApp(target.app).init, app: target.app };
  const init = appInitOf(target.pid);
  if (init === undefined) return { pid: target.pid };
  return { pid: init, app: listApps().find((a) => a.init === init)?.id };
}
