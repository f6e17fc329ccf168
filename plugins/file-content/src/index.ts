/**
 * @ckpt/plugin-file-content — open files saved with their whole content.
 *
 * Claims (files.dumpFd, before the built-in reference method) every regular file the rules
 * (ckpt.config.json "files.rules", see @ckpt/core fileRules) give method "content", and every
 * unlinked (deleted) file, which can be saved no other way. Content is stored once per image per
 * distinct content (blob file-<sha256>.img), whichever files and processes hold it.
 *
 * Restore, by the rule's policy:
 *   image   the image's copy is written over the path (created if missing), then opened;
 *   disk    the path is opened as it is on disk;
 *   verify  the path must be unchanged since the dump (size, mtime; sha256 up to 1 MiB).
 * Unlinked files are recreated from the image as a new file in their old directory (or the temp
 * directory when it is gone), opened with the saved flags and offset, and unlinked again: the
 * process sees the same bytes and a deleted file. Several descriptions of one unlinked file share
 * the one recreated inode.
 */
import { createHash } from 'node:crypto';
import { closeSync, existsSync, fchmodSync, fchownSync, openSync, readSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import {
  CkptError, configuredFileRules, definePlugin, fileRuleFor, procfs, relocatePath, verifyFile, VERIFY_HASH_MAX,
  type FdDumpRequest, type FdRecord, type FilePolicy, type ProcessDump, type ProcessRestore, type RestoreSession,
} from '@ckpt/core';
import { native } from '@ckpt/native';

export const NAME = '@ckpt/plugin-file-content';

export interface ContentData {
  path: string;
  unlinked: boolean;
  flags: number;
  pos: number;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeMs: number;
  sha256: string;
  blob: string;
  policy: FilePolicy;
  /** dev:inode at dump time: descriptions of one file share one recreated file. */
  inode: string;
}

const O_ACCMODE = 3, O_RDONLY = 0, O_CLOEXEC = 0o2000000, O_NOCTTY = 0o400, O_APPEND = 0o2000;
const SEEK_SET = 0;
const CHUNK = 4 << 20;

function readAll(fd: number, size: number, each: (b: Buffer) => void): void {
  const buf = Buffer.allocUnsafe(CHUNK);
  for (let pos = 0; pos < size; ) {
    const n = readSync(fd, buf, 0, Math.min(CHUNK, size - pos), pos);
    if (n <= 0) throw new Error(`file shrank while being saved (${pos} of ${size} bytes)`);
    each(buf.subarray(0, n));
    pos += n;
  }
}

async function dumpFd(req: FdDumpRequest, proc: ProcessDump): Promise<FdRecord | undefined> {
  if (req.kind !== 'file' || req.link.startsWith('/memfd:')) return undefined;
  const unlinked = req.link.endsWith(' (deleted)');
  const path = unlinked ? req.link.slice(0, -' (deleted)'.length) : req.link;
  const flags = req.info.flags & ~O_CLOEXEC;
  const rule = fileRuleFor(configuredFileRules(proc.session.services.config), {
    path, size: req.stat.size, unlinked,
    tmpfs: procfs.fsTypeOf(proc.pid, req.info.mntId) === 'tmpfs',
    writable: (flags & O_ACCMODE) !== O_RDONLY,
    append: (flags & O_APPEND) !== 0,
  });
  if (rule.method !== 'content') return undefined;
  const size = req.stat.size;
  const hash = createHash('sha256');
  readAll(req.dupFd, size, (b) => hash.update(b));
  const sha256 = hash.digest('hex');
  const blobName = `file-${sha256.slice(0, 32)}.img`;
  if (!proc.session.objects.has(`file-content:${blobName}`)) {
    const blob = proc.session.image.openBlob(blobName);
    readAll(req.dupFd, size, (b) => blob.write(b));
    proc.session.image.closeBlob(blob);
    proc.session.objects.set(`file-content:${blobName}`, true);
  }
  const data: ContentData = {
    path, unlinked, flags, pos: req.info.pos, mode: req.stat.mode & 0o7777, uid: req.stat.uid, gid: req.stat.gid,
    size, mtimeMs: req.stat.mtimeMs, sha256, blob: blobName, policy: rule.policy, inode: `${req.stat.dev}:${req.stat.ino}`,
  };
  return { fd: req.fd, plugin: NAME, kind: 'file', cloexec: false, data };
}

/** Recreated unlinked files (a hidden fd on each) and files already put back, per restore. */
interface State {
  unlinked: Map<string, number>;
  written: Set<string>;
}
const states = new WeakMap<RestoreSession, State>();
function stateOf(session: RestoreSession): State {
  let s = states.get(session);
  if (!s) {
    const st: State = { unlinked: new Map(), written: new Set() };
    states.set(session, st);
    session.onRollback(() => closeState(st));
    s = st;
  }
  return s;
}
function closeState(s: State): void {
  for (const fd of s.unlinked.values()) {
    try {
      closeSync(fd);
    } catch {
      /* closed */
    }
  }
  s.unlinked.clear();
}

function copyBlob(session: RestoreSession, d: ContentData, to: number): void {
  session.image.verifyBlob(d.blob);
  const src = openSync(session.image.path(d.blob), 'r');
  try {
    let pos = 0;
    readAll(src, d.size, (b) => {
      let off = 0;
      while (off < b.length) off += writeSync(to, b, off, b.length - off, pos + off);
      pos += b.length;
    });
  } finally {
    closeSync(src);
  }
}

function open(path: string, flags: number, who: string): number {
  try {
    return openSync(path, (flags & ~O_CLOEXEC) | O_NOCTTY);
  } catch (e) {
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot open ${path} (${who}): ${(e as NodeJS.ErrnoException).code}`, { cause: e });
  }
}

async function restoreFd(rec: FdRecord, proc: ProcessRestore): Promise<number | undefined> {
  if (rec.plugin !== NAME) return undefined;
  const d = rec.data as ContentData;
  const session = proc.session;
  const who = `fd ${rec.fd} of pid ${proc.pid}`;
  const st = stateOf(session);
  let fd: number;
  if (d.unlinked) {
    let hidden = st.unlinked.get(d.inode);
    if (hidden === undefined) {
      // Recreated under its old name when that is free (so /proc shows the same "(deleted)"
      // link), else under a temporary name beside it, or in the temp directory.
      const dir = existsSync(dirname(d.path)) ? dirname(d.path) : os.tmpdir();
      let tmp = existsSync(d.path) || dir !== dirname(d.path) ? join(dir, `.ckpt-unlinked-${randomBytes(6).toString('hex')}`) : d.path;
      try {
        hidden = openSync(tmp, 'wx+', d.mode);
      } catch {
        tmp = join(dir, `.ckpt-unlinked-${randomBytes(6).toString('hex')}`);
        hidden = openSync(tmp, 'wx+', d.mode);
      }
      try {
        fchmodSync(hidden, d.mode);
        fchownSync(hidden, d.uid, d.gid);
        copyBlob(session, d, hidden);
      } finally {
        unlinkSync(tmp);
      }
      st.unlinked.set(d.inode, hidden);
    }
    fd = open(`/proc/self/fd/${hidden}`, d.flags, who);
  } else {
    const path = relocatePath(d.path, session.options.relocate);
    if (d.policy === 'image' && !st.written.has(d.inode)) {
      const out = openSync(path, 'w', d.mode);
      try {
        copyBlob(session, d, out);
      } finally {
        closeSync(out);
      }
      st.written.add(d.inode);
    } else if (d.policy === 'verify') {
      verifyFile(path, { size: d.size, mtimeMs: d.mtimeMs, sha256: d.size <= VERIFY_HASH_MAX ? d.sha256 : undefined }, who);
    }
    fd = open(path, d.flags, who);
  }
  if (d.pos) native.lseek(fd, d.pos, SEEK_SET);
  return fd;
}

export const fileContentPlugin = definePlugin<void>(() => ({
  name: NAME,
  version: '0.1.0',
  apply(hooks) {
    hooks.files.dumpFd.tapPromise(NAME, dumpFd);
    hooks.files.restoreFd.tapPromise(NAME, restoreFd);
    hooks.session.afterRestore.tapPromise(NAME, async (session) => {
      const s = states.get(session);
      if (s) closeState(s);
    });
  },
}));

export default fileContentPlugin;
