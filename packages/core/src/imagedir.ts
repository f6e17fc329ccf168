/**
 * The image directory as a whole: generations, the lock, stale staging directories.
 *
 *   DIR/1/ DIR/2/ ...    generations: each a complete image (manifest.json written last)
 *   DIR/latest -> 2      the newest complete generation, switched atomically after a commit
 *   DIR/.lock            held by the dump writing into DIR: {"pid", "start", "boot"} of its owner
 *   DIR/.staging-<pid>-<start>-<rand>/   the generation being written
 *   DIR/.removing-<gen>-<pid>-<rand>/    a generation beyond `keep`, being removed
 *
 * A dump never deletes a file it did not write: it writes into its own staging directory, renames
 * it to the next generation number, then points `latest` at it, then removes generations beyond
 * `keep` (older ones first), which are directories ckpt wrote. The previous image stays whole
 * until the next is committed. An image directory made by ckpt 0.1 (manifest.json in DIR itself)
 * is read as it is and never written over: new generations go beside it.
 */
import {
  type Dirent,
  accessSync,
  closeSync,
  fsyncSync,
  constants as fsConstants,
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join, resolve } from 'node:path';
import { CkptError } from './errors.js';
import { readStat } from './proc.js';
import { logger } from './log.js';
import { sleepSync } from './helpers.js';
import { native } from '@ckpt/native';
import { randomHex } from './random.js';

const log = logger('imagedir');

export const LATEST = 'latest';
const LOCK = '.lock';
const STAGING = /^\.staging-(\d+)-(\d+)-[0-9a-f]+$/;

/** fsync of a file or directory by path (a directory's entries: renames, links, creations). */
export function fsyncPath(p: string): void {
  const fd = openSync(p, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Who runs a ckpt: pid, its start time and the boot, so that a reused pid is not taken for it. */
export interface Owner {
  pid: number;
  start: number;
  boot: string;
}

let bootId: string | undefined;
function boot(): string {
  bootId ??= readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  return bootId;
}

export function selfOwner(): Owner {
  return { pid: process.pid, start: readStat(process.pid).startTime, boot: boot() };
}

/** True when the owner is still running (same pid, same start, same boot). */
export function ownerAlive(o: Partial<Owner>): boolean {
  if (!o.pid || o.boot !== boot()) return false;
  try {
    return readStat(o.pid).startTime === o.start;
  } catch {
    return false;
  }
}

const reasons: Record<string, string> = {
  EROFS: 'the file system is read-only',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  ENOSPC: 'no space left on the device',
  EDQUOT: 'the disk quota is exhausted',
  ENOTDIR: 'a part of the path is not a directory',
  EEXIST: 'a file of that name exists',
};

/** "cannot use DIR as image directory: <why>" for a failed file system call. */
export function dirError(dir: string, e: unknown, what = 'use'): CkptError {
  const code = (e as NodeJS.ErrnoException).code ?? '';
  return new CkptError('ERR_CKPT_USAGE', `cannot ${what} ${dir} as image directory: ${reasons[code] ?? (e as Error).message}`, { cause: e });
}

/**
 * Opens DIR for a dump: refuses a symlink unless asked, creates it if missing (0700), takes its
 * lock (a second dump into it is refused before it freezes anything), removes the staging
 * directories of dead dumps. Returns the lock's release function and whether DIR was created.
 */
export function lockImageDir(dir: string, opts: { followSymlinks?: boolean } = {}): { release: () => void; created: string | undefined } {
  let created: string | undefined;
  try {
    const st = lstatSync(dir, { throwIfNoEntry: false });
    if (st?.isSymbolicLink() && !opts.followSymlinks) {
      throw new CkptError(
        'ERR_CKPT_USAGE',
        `${dir} is a symbolic link (to ${readlinkSync(dir)}); ckpt does not write an image through a symlink unless asked`,
        {
          hint: 'pass --follow-symlinks, or give the real directory',
        },
      );
    }
    if (!st) created = mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (!statSync(dir).isDirectory()) throw new CkptError('ERR_CKPT_USAGE', `cannot use ${dir} as image directory: not a directory`);
  } catch (e) {
    if (e instanceof CkptError) throw e;
    throw dirError(dir, whyNotWritable(dir) ?? e);
  }
  const lock = join(dir, LOCK);
  const me = selfOwner();
  for (let attempt = 0; ; attempt++) {
    try {
      const fd = openSync(lock, 'wx', 0o600);
      writeSync(fd, JSON.stringify(me));
      closeSync(fd);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw dirError(dir, e);
      let owner: Partial<Owner> = {};
      try {
        owner = JSON.parse(readFileSync(lock, 'utf8')) as Partial<Owner>;
      } catch {
        /* being written, or garbage: judged by its age below */
      }
      if (ownerAlive(owner) || (owner.pid === undefined && attempt < 20)) {
        if (owner.pid !== undefined) {
          throw new CkptError('ERR_CKPT_USAGE', `${dir} is in use by another ckpt dump (pid ${owner.pid})`, {
            hint: 'wait for it to finish, or dump into another directory',
          });
        }
        sleepSync(10);
        continue;
      }
      log('removing the stale lock of %o in %s', owner, dir);
      try {
        unlinkSync(lock);
      } catch {
        /* someone else took it over */
      }
    }
  }
  removeStaleStaging(dir);
  // Registered too, so that `ckpt check` can find what a killed dump left, whatever the directory.
  const record = join(DUMPS_DIR, `${me.pid}-${me.start}-${Date.now()}.json`);
  try {
    mkdirSync(DUMPS_DIR, { recursive: true, mode: 0o700 });
    writeFileSync(record, JSON.stringify({ dir: resolve(dir), owner: me } satisfies DumpRecord), { mode: 0o600 });
  } catch {
    /* no /run/ckpt for this user: the next dump into dir still cleans it */
  }
  return {
    created,
    release: () => {
      rmSync(record, { force: true });
      try {
        const owner = JSON.parse(readFileSync(lock, 'utf8')) as Partial<Owner>;
        if (owner.pid === me.pid && owner.start === me.start) unlinkSync(lock);
      } catch {
        /* gone */
      }
    },
  };
}

/** Where running dumps register their image directory (removed when they end). */
export const DUMPS_DIR = '/run/ckpt/dumps';

interface DumpRecord {
  dir: string;
  owner: Owner;
}

/** An image directory a killed dump left its staging directory or lock in. */
export interface DeadDump {
  dir: string;
  pid: number;
  /** What it left: staging directories, and whether its lock is still there. */
  staging: string[];
  lock: boolean;
}

/** Dumps that died (ckpt killed) and what they left; removed (with their staging and lock) unless dryRun. */
export function deadDumps(opts: { dryRun?: boolean } = {}): DeadDump[] {
  const out: DeadDump[] = [];
  for (const name of safeReaddir(DUMPS_DIR).filter((n) => n.endsWith('.json'))) {
    const file = join(DUMPS_DIR, name);
    let rec: DumpRecord;
    try {
      rec = JSON.parse(readFileSync(file, 'utf8')) as DumpRecord;
    } catch {
      continue;
    }
    if (ownerAlive(rec.owner)) continue;
    const mine = new RegExp(`^\\.staging-${rec.owner.pid}-${rec.owner.start}-`);
    const staging = safeReaddir(rec.dir).filter((n) => mine.test(n));
    let lock = false;
    try {
      const o = JSON.parse(readFileSync(join(rec.dir, LOCK), 'utf8')) as Partial<Owner>;
      lock = o.pid === rec.owner.pid && o.start === rec.owner.start;
    } catch {
      /* no lock */
    }
    if (!staging.length && !lock) {
      rmSync(file, { force: true }); // it left nothing (or its directory is gone): just forget it
      continue;
    }
    out.push({ dir: rec.dir, pid: rec.owner.pid, staging, lock });
    if (opts.dryRun) continue;
    for (const n of staging) rmSync(join(rec.dir, n), { recursive: true, force: true });
    if (lock) rmSync(join(rec.dir, LOCK), { force: true });
    rmSync(file, { force: true });
  }
  return out;
}

/**
 * Why a directory cannot be made: recursive mkdir reports ENOENT on a read-only file system;
 * access(W_OK) on the deepest existing ancestor tells the real cause (EROFS, EACCES).
 */
function whyNotWritable(dir: string): unknown {
  let d = resolve(dir, '..');
  while (!existsSync(d) && d !== '/') d = resolve(d, '..');
  try {
    accessSync(d, fsConstants.W_OK);
    return undefined;
  } catch (e) {
    return e;
  }
}

/** Staging directories whose dump is dead (killed ckpt): removed. */
export function removeStaleStaging(dir: string): string[] {
  const removed: string[] = [];
  for (const name of safeReaddir(dir)) {
    const m = STAGING.exec(name);
    if (!m) continue;
    if (ownerAlive({ pid: Number(m[1]), start: Number(m[2]), boot: boot() })) continue;
    rmSync(join(dir, name), { recursive: true, force: true });
    removed.push(name);
  }
  if (removed.length) log('removed stale staging directories in %s: %s', dir, removed.join(', '));
  return removed;
}

/** A fresh staging directory name for this process. */
export function stagingName(rand: string): string {
  const me = selfOwner();
  return `.staging-${me.pid}-${me.start}-${rand}`;
}

/** readdir that answers [] for a directory that is not there (or not readable). */
export function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** The generation numbers in DIR, ascending. */
export function generations(dir: string): number[] {
  return safeReaddir(dir)
    .filter((n) => /^[1-9]\d*$/.test(n) && existsSync(join(dir, n, 'manifest.json')))
    .map(Number)
    .sort((a, b) => a - b);
}

/** The generation `latest` points at, if any. */
export function latestGeneration(dir: string): number | undefined {
  try {
    const target = readlinkSync(join(dir, LATEST));
    return /^[1-9]\d*$/.test(target) ? Number(target) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Moves a complete staging directory in as the next generation, points `latest` at it
 * (atomically: a new symlink renamed over the old), then removes generations beyond `keep`.
 */
export function commitGeneration(dir: string, staging: string, keep = 1): number {
  const all = [
    ...generations(dir),
    latestGeneration(dir) ?? 0,
    ...safeReaddir(dir)
      .filter((n) => /^[1-9]\d*$/.test(n))
      .map(Number),
  ];
  const n = Math.max(0, ...all) + 1;
  renameSync(staging, join(dir, String(n)));
  const tmp = join(dir, `.latest-${process.pid}`);
  rmSync(tmp, { force: true });
  symlinkSync(String(n), tmp);
  renameSync(tmp, join(dir, LATEST));
  const old = generations(dir).filter((g) => g !== n);
  const kept = [n, ...old.slice(Math.max(0, old.length - (keep - 1)))];
  // An incremental generation needs the ones it adds to: they stay while it does.
  const needed = new Set(kept.flatMap((g) => [g, ...ancestors(dir, g)]));
  const doomed: string[] = [];
  for (const g of old) {
    if (needed.has(g)) continue;
    const to = join(dir, `${REMOVING}${g}-${process.pid}-${randomHex(4)}`);
    try {
      renameSync(join(dir, String(g)), to);
      doomed.push(to);
    } catch {
      rmSync(join(dir, String(g)), { recursive: true, force: true });
    }
  }
  // Those a ckpt killed between the rename and the removal left.
  for (const name of safeReaddir(dir)) if (REMOVING_NAME.test(name) && !doomed.includes(join(dir, name))) doomed.push(join(dir, name));
  const big = doomed.filter((p) => holdsAtLeast(p, BACKGROUND_MIN));
  for (const p of doomed) if (!big.includes(p)) rmSync(p, { recursive: true, force: true });
  removeInBackground(big);
  return n;
}

/**
 * From this many bytes on, a generation is removed in the background (removeInBackground): less
 * takes less to remove here (16 MiB: 1-2 ms) than to start the remover (4-5 ms).
 */
const BACKGROUND_MIN = 64 << 20;

/** Whether the files under dir add up to at least `bytes` (counted until they do). */
function holdsAtLeast(dir: string, bytes: number): boolean {
  let total = 0;
  for (const stack = [dir]; stack.length; ) {
    const d = stack.pop()!;
    let entries: Dirent[];
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) stack.push(p);
      else if (e.isFile()) {
        try {
          total += lstatSync(p).size;
        } catch {}
        if (total >= bytes) return true;
      }
    }
  }
  return false;
}

/** The prefix of a generation beyond `keep` while it is removed, and the whole name ckpt gives it. */
const REMOVING = '.removing-';
const REMOVING_NAME = /^\.removing-\d+-\d+-[0-9a-f]{8}$/;

/**
 * Removes paths (generations renamed out of the way: no reader looks for them any more) in a
 * process of their own, `rm -rf`, which this command does not wait for: freeing a 1 GiB
 * generation took 37-256 ms here (its page cache dropped), all of it in the wall of a dump into a
 * directory that already had one. A shell started in a session of its
 * own starts rm in the background and exits at once (a millisecond or two, waited for here), so
 * that rm is init's (or a subreaper's) to reap, never a zombie of a ckpt that lives on (the
 * server, the periodic checkpointer, a program using the API). Where that cannot be started,
 * they are removed here, as before.
 */
function removeInBackground(paths: string[]): void {
  if (!paths.length) return;
  try {
    const devnull = openSync('/dev/null', 'r+');
    let sh: number;
    try {
      sh = native.proc.spawnDetached('/bin/sh', ['sh', '-c', '/bin/rm -rf -- "$@" &', 'sh', ...paths], [], null, [devnull, devnull, devnull]);
    } finally {
      closeSync(devnull);
    }
    for (let i = 0; i < 5000 && !native.proc.tryWait(sh); i++) sleepSync(0.2);
  } catch (e) {
    log('remove %s here: %s', paths.join(', '), (e as Error).message);
    for (const p of paths) rmSync(p, { recursive: true, force: true });
  }
}

/**
 * The generations of DIR an incremental generation adds to, its parent first (the manifest's
 * parent link, followed while it names a generation of DIR). Read unverified: only to know what
 * not to delete.
 */
export function ancestors(dir: string, g: number): number[] {
  const out: number[] = [];
  for (let at = g; out.length < 1024; ) {
    let path: unknown;
    try {
      path = JSON.parse(readFileSync(join(dir, String(at), 'manifest.json'), 'utf8')).parent?.path;
    } catch {
      break;
    }
    if (typeof path !== 'string') break;
    const up = resolve(dir, String(at), path);
    const name = up.slice(resolve(dir).length + 1);
    if (resolve(dir, name) !== up || !/^[1-9]\d*$/.test(name)) break;
    at = Number(name);
    if (out.includes(at)) break;
    out.push(at);
  }
  return out;
}

/**
 * Where the image of DIR is: DIR itself when it holds a manifest (one generation, or an image of
 * ckpt 0.1), else the generation asked for, else `latest`, else the newest complete one.
 */
export function resolveImage(dir: string, generation?: number): string {
  const abs = resolve(dir);
  if (generation !== undefined) {
    const g = join(abs, String(generation));
    if (!existsSync(join(g, 'manifest.json'))) {
      const have = generations(abs);
      throw new CkptError('ERR_CKPT_IMAGE_MISSING', `no generation ${generation} in ${abs}`, {
        hint: have.length ? `it holds generations ${have.join(', ')}` : 'it holds no complete generation',
      });
    }
    return g;
  }
  if (existsSync(join(abs, 'manifest.json'))) return abs;
  const latest = latestGeneration(abs);
  if (latest !== undefined && existsSync(join(abs, String(latest), 'manifest.json'))) return join(abs, String(latest));
  const all = generations(abs);
  return all.length ? join(abs, String(all[all.length - 1])) : abs;
}

/** Restore reads only images that nobody else could have written: owned by us, not writable by others. */
export function checkImageOwnership(paths: string[]): void {
  const uid = process.getuid?.() ?? 0;
  for (const p of paths) {
    const st = statSync(p);
    if (st.uid !== uid) {
      throw new CkptError(
        'ERR_CKPT_IMAGE_INCOMPATIBLE',
        `image ${p} belongs to uid ${st.uid}, not to the restoring user (uid ${uid}); ckpt restores only images it can trust`,
        {
          hint: `chown -R ${uid} the image, if you trust it`,
        },
      );
    }
    if (st.mode & 0o022) {
      throw new CkptError(
        'ERR_CKPT_IMAGE_INCOMPATIBLE',
        `image ${p} is writable by others (mode ${(st.mode & 0o777).toString(8)}); anyone could have changed it`,
        {
          hint: `chmod go-w ${p}, if you trust it`,
        },
      );
    }
  }
}
