/**
 * @ckpt/plugin-file-content — open files saved with their whole content.
 *
 * Claims (fds.dump, before the built-in reference method) every regular file the file rules
 * (@ckpt/plugin-files's options, "files.rules" in the config) give method "content", and every
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
  createSessionState,
  definePlugin,
  procfs,
  remoteOpen,
  type DumpSession,
  type FdClaim,
  type FdDumpRequest,
  type FdRecord,
  type ProcessDump,
  type ProcessRestore,
  type RestoreSession,
} from '@ckpt/core';
import { fileRuleFor, fileRulesOf, verifyFile, VERIFY_HASH_MAX, type FilePolicy } from '@ckpt/plugin-files';
import { contentFd } from './record.js';
import { O_ACCMODE, O_RDONLY, O_CLOEXEC, O_APPEND } from '@ckpt/native';

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

/** Blobs this dump wrote (content stored once per image). */
const written = createSessionState('file-content:blobs', (_s: DumpSession) => new Set<string>());

async function dumpFd(req: FdDumpRequest, proc: ProcessDump): Promise<FdClaim<ContentData> | undefined> {
  if (req.kind !== 'file' || req.link.startsWith('/memfd:')) return undefined;
  const unlinked = req.link.endsWith(' (deleted)');
  const path = unlinked ? req.link.slice(0, -' (deleted)'.length) : req.link;
  const flags = req.info.flags & ~O_CLOEXEC;
  const rule = fileRuleFor(fileRulesOf(proc.session), {
    path,
    size: req.stat.size,
    unlinked,
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
  if (!written.of(proc.session).has(blobName)) {
    const blob = proc.session.image.openBlob(blobName);
    readAll(req.dupFd, size, (b) => blob.write(b));
    proc.session.image.closeBlob(blob);
    written.of(proc.session).add(blobName);
  }
  const data: ContentData = {
    path,
    unlinked,
    flags,
    pos: req.info.pos,
    mode: req.stat.mode & 0o7777,
    uid: req.stat.uid,
    gid: req.stat.gid,
    size,
    mtimeMs: req.stat.mtimeMs,
    sha256,
    blob: blobName,
    policy: rule.policy,
    inode: `${req.stat.dev}:${req.stat.ino}`,
  };
  return { kind: 'file', data };
}

/** Recreated unlinked files (a hidden fd on each, closed when the restore ends) and files already put back. */
interface State {
  unlinked: Map<string, number>;
  written: Set<string>;
}
const states = createSessionState('file-content:restore', (_s: RestoreSession): State => ({ unlinked: new Map(), written: new Set() }), {
  dispose: (s) => {
    for (const fd of s.unlinked.values()) {
      try {
        closeSync(fd);
      } catch {
        /* closed */
      }
    }
  },
});

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

async function restoreFd(rec: FdRecord, proc: ProcessRestore): Promise<number | undefined> {
  const d = rec.data as ContentData;
  const session = proc.session;
  const who = `fd ${rec.fd} of pid ${proc.pid}`;
  const st = states.of(session);
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
    fd = remoteOpen(`/proc/self/fd/${hidden}`, { flags: d.flags, pos: d.pos, what: who });
  } else {
    const path = session.relocate(d.path);
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
    fd = remoteOpen(path, { flags: d.flags, pos: d.pos, what: who });
  }
  return fd;
}

export const fileContentPlugin = definePlugin(() => ({
  name: NAME,
  version: '0.2.0',
  description: 'regular files saved with their content (unlinked files; files the rules give method "content")',
  record: { version: 1, fd: contentFd },
  claims: { fdKinds: ['file'] },
  show: { fdName: (rec: FdRecord) => (rec.data as ContentData | undefined)?.path },
  apply(hooks) {
    hooks.fds.dump.tapPromise(NAME, dumpFd);
    hooks.fds.restore.for(NAME).tapPromise(NAME, restoreFd);
  },
}));

export default fileContentPlugin;
