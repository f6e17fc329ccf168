/**
 * cgroup membership, v1 hierarchies and the v2 unified one: each process back in its cgroups,
 * each thread that was in others in its own, right after the process is created (before its
 * memory is rebuilt, so that memory is charged where it was).
 *
 * A cgroup is named by the controllers of its hierarchy ("cpu,cpuacct", "name=systemd"; "" for
 * v2) and its path, as /proc/PID/cgroup shows them: hierarchy numbers differ between hosts, the
 * controllers do not. At restore the hierarchy is found among this host's mounts. One that is
 * missing stops the restore naming it, unless the user asked to create it (`--cgroups create`)
 * or to leave the process in ckpt restore's cgroups (`--cgroups ignore`, logged).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CkptError, logger } from '@ckpt/core';

const log = logger('plugin:task');

export type CgroupMode = 'restore' | 'create' | 'ignore';

/** "controllers:path" per hierarchy, as /proc/PID[/task/TID]/cgroup lists them. */
export function readCgroups(pid: number, tid = pid): string[] {
  return parseCgroups(readFileSync(`/proc/${pid}/task/${tid}/cgroup`, 'utf8'));
}

/** A cgroup file's text as readCgroups gives it. */
export function parseCgroups(text: string): string[] {
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => l.slice(l.indexOf(':') + 1));
}

const split = (entry: string) => {
  const i = entry.indexOf(':');
  return { controllers: entry.slice(0, i), path: entry.slice(i + 1) };
};

/** Mount options that are not controllers. */
const NOT_CONTROLLERS = new Set(['rw', 'ro', 'xattr', 'noprefix', 'clone_children', 'cpuset_v2_mode', 'nsdelegate', 'memory_recursiveprot', 'favordynmods']);

interface Hierarchy {
  mountpoint: string;
  /** The cgroup of the hierarchy the mount shows as its root. */
  root: string;
}

/** The last mountinfo parsed, and what hierarchies() made of it (a tree's restore asks once per process). */
let lastMounts: { text: string; out: Map<string, Hierarchy> } | undefined;

/** This host's cgroup mounts, by controllers ("" for v2). */
function hierarchies(): Map<string, Hierarchy> {
  const text = readFileSync('/proc/self/mountinfo', 'utf8');
  if (lastMounts?.text === text) return lastMounts.out;
  const out = new Map<string, Hierarchy>();
  lastMounts = { text, out };
  for (const line of text.split('\n')) {
    const [pre, post] = line.split(' - ');
    if (!post) continue;
    const [fstype, , superOpts = ''] = post.split(' ');
    const f = pre.split(' ');
    const unoctal = (s: string) => s.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
    const h = { root: unoctal(f[3]), mountpoint: unoctal(f[4]) };
    if (fstype === 'cgroup2') {
      if (!out.has('')) out.set('', h);
    } else if (fstype === 'cgroup') {
      const ctrl = superOpts.split(',').filter((o) => !NOT_CONTROLLERS.has(o) && !o.startsWith('release_agent='));
      const key = ctrl.sort().join(',');
      if (!out.has(key)) out.set(key, h);
    }
  }
  return out;
}

const key = (controllers: string) => controllers.split(',').filter(Boolean).sort().join(',');

/**
 * Puts a restored process (or, with `thread`, one thread of it) in the cgroups it was in.
 * `task` is its host pid (tid); `who` names it in errors.
 */
export function joinCgroups(task: number, entries: readonly string[], mode: CgroupMode, who: string, thread = false): void {
  if (mode === 'ignore' || !entries.length) return;
  // The mounts only when a cgroup is to be joined (a process is mostly in its parent's already).
  let mounts: Map<string, Hierarchy> | undefined;
  const now = new Set(readCgroups(thread ? procOfTask(task) : task, task));
  for (const entry of entries) {
    if (now.has(entry)) continue;
    const { controllers, path } = split(entry);
    const name = `${controllers || 'v2'}:${path}`;
    const fail = (why: string, hint?: string) =>
      new CkptError('ERR_CKPT_RESTORE_FAILED', `${who}: cannot put it back in its cgroup ${name}: ${why}`, {
        hint: hint ?? 'restore with --cgroups create to create missing cgroups, or --cgroups ignore to leave it in the cgroups of ckpt restore',
      });
    mounts ??= hierarchies();
    const h = mounts.get(key(controllers));
    if (!h) throw fail(`no ${controllers ? `cgroup v1 hierarchy of ${controllers}` : 'cgroup v2 hierarchy'} is mounted here`);
    if (h.root !== '/' && path !== h.root && !path.startsWith(`${h.root}/`))
      throw fail(`this host's mount of that hierarchy (${h.mountpoint}) shows only ${h.root}`);
    const dir = join(h.mountpoint, h.root === '/' ? path : path.slice(h.root.length));
    if (!existsSync(dir)) {
      if (mode !== 'create') throw fail(`${dir} does not exist`);
      mkdirSync(dir, { recursive: true });
      log('%s: created cgroup %s', who, dir);
    }
    const file = join(dir, thread ? (controllers ? 'tasks' : 'cgroup.threads') : 'cgroup.procs');
    try {
      writeFileSync(file, String(task));
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw fail(
        `writing ${task} to ${file}: ${err.code ?? err.message}`,
        err.code === 'EBUSY' ? `${dir} has controllers enabled for its children` : undefined,
      );
    }
    log('%s: back in cgroup %s', who, name);
  }
}

function procOfTask(tid: number): number {
  const tgid = /^Tgid:\s*(\d+)$/m.exec(readFileSync(`/proc/${tid}/status`, 'utf8'));
  return tgid ? Number(tgid[1]) : tid;
}
