/**
 * @ckpt/plugin-file-content — open files saved with their whole content.
 *
 * Claims (fds.dump, before the built-in reference method) every regular file the file rules
 * (@ckpt/plugin-files's options, "files.rules" in the config) give method "content", and every
 * unlinked (deleted) file, which can be saved no other way. Content is stored once per image per
 * distinct content (blob file-<dev>-<inode>.img of the first file that has it), whichever files
 * and processes hold it.
 *
 * Restore, by the rule's policy:
 *   image   the image's copy is written over the path (created if missing), then opened;
 *   disk    the path is opened as it is on disk;
 *   verify  the path must be unchanged since the dump (size, mtime; sha256 up to 1 MiB).
 * Unlinked files (O_TMPFILE files never linked too) are core's deleted-file objects (saveShmem):
 * saved once per image with their content (holes kept: a sparse file stays sparse), mode, owner
 * and times, and recreated as a new file in their old directory (under the old name when it is
 * free, else beside it or in the temp directory) that is unlinked again at once. Every description
 * of the file, and every mapping of it (@ckpt/plugin-memory), shares that one inode; each is
 * opened with its saved flags (write-only, O_PATH, O_NOFOLLOW too) and offset.
 */
import { closeSync, openSync, statSync } from 'node:fs';
import {
  createSessionState,
  definePlugin,
  procfs,
  remoteOpen,
  saveShmem,
  shmemFd,
  type ShmemRef,
  type DumpSession,
  type FdClaim,
  type FdDumpRequest,
  type FdRecord,
  type ProcessDump,
  type ProcessRestore,
  type RestoreSession,
} from '@ckpt/core';
import { devName, fileRuleFor, fileRulesOf, notAFile, sha256File, verifyFile, VERIFY_HASH_MAX, type FilePolicy } from '@ckpt/plugin-files';
import { contentFd } from './record.js';
import { native, O_ACCMODE, O_RDONLY, O_CLOEXEC, O_APPEND, O_NOFOLLOW, O_TMPFILE } from '@ckpt/native';

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
  /** The content's SHA-256 (linked files; an unlinked file's content is its ghost's blob). */
  sha256?: string;
  blob: string;
  policy: FilePolicy;
  /** dev:inode at dump time: descriptions of one file share one recreated file. */
  inode: string;
  /** An unlinked file: core's object (content, mode, owner, times), shared with its mappings. Record version 2. */
  ghost?: ShmemRef;
}

/**
 * Blobs this dump wrote, content stored once per image: by the name a file's blob gets (its
 * device and inode), the blob that holds its content; and by content digest, the blob.
 */
const written = createSessionState('file-content:blobs', (_s: DumpSession) => ({ byName: new Map<string, string>(), byDigest: new Map<string, string>() }));

async function dumpFd(req: FdDumpRequest, proc: ProcessDump): Promise<FdClaim<ContentData> | undefined> {
  if (req.kind !== 'file' || req.link.startsWith('/memfd:')) return undefined;
  const unlinked = req.link.endsWith(' (deleted)');
  const path = unlinked ? req.link.slice(0, -' (deleted)'.length) : req.link;
  const flags = req.info.flags & ~O_CLOEXEC;
  const rule = fileRuleFor(fileRulesOf(proc.session), {
    path,
    size: req.stat.size,
    unlinked,
    tmpfs: procfs.fsTypeOf(proc.procPid, req.info.mntId) === 'tmpfs',
    writable: (flags & O_ACCMODE) !== O_RDONLY,
    append: (flags & O_APPEND) !== 0,
  });
  if (rule.method !== 'content') return undefined;
  const size = req.stat.size;
  const common = {
    path,
    unlinked,
    flags,
    pos: req.info.pos,
    mode: req.stat.mode & 0o7777,
    uid: req.stat.uid,
    gid: req.stat.gid,
    size,
    mtimeMs: req.stat.mtimeMs,
    policy: rule.policy,
    inode: `${req.stat.dev}:${req.stat.ino}`,
  };
  if (unlinked) {
    const ghost = saveShmem(proc.session, `${devName(req.stat.dev)}:${req.stat.ino}`, path, req.dupFd, { deletedFile: path });
    return { kind: 'file', data: { ...common, blob: ghost.blob, ghost } };
  }
  // Read through an open of our own: the process's may be write-only, or O_PATH. One pass,
  // natively (read, BLAKE3 and write pipelined); the SHA-256 a verify policy checks only for the
  // files it checks it for (up to VERIFY_HASH_MAX).
  const rd = openSync(`/proc/self/fd/${req.dupFd}`, 'r');
  try {
    const sha256 = size <= VERIFY_HASH_MAX ? sha256File(rd) : undefined;
    const blobs = written.of(proc.session);
    let blobName = `file-${devName(req.stat.dev).replace(/[^0-9a-z]/gi, '_')}-${req.stat.ino}.img`;
    if (!blobs.byName.has(blobName)) {
      const { image } = proc.session;
      const blob = image.openBlob(blobName);
      blob.copyFile(rd, 0, size);
      image.closeBlob(blob);
      // The same content as a file saved before (by its digest): that one blob holds both.
      const digest = native.hash.hashDigest(blob.hash);
      const same = blobs.byDigest.get(digest);
      if (same && image.dropBlob(blobName)) blobs.byName.set(blobName, same);
      else {
        blobs.byName.set(blobName, blobName);
        blobs.byDigest.set(digest, blobName);
      }
    }
    blobName = blobs.byName.get(blobName)!;
    return { kind: 'file', data: { ...common, ...(sha256 ? { sha256 } : {}), blob: blobName } };
  } finally {
    closeSync(rd);
  }
}

/** An image of record version 1 saved an unlinked file as a plain blob of its whole content. */
function legacyGhost(d: ContentData): ShmemRef {
  return {
    key: `v1:${d.inode}`,
    name: d.path,
    size: d.size,
    blob: d.blob,
    segments: d.size ? [[0, d.size]] : [],
    file: { path: d.path, mode: d.mode, uid: d.uid, gid: d.gid, atimeMs: d.mtimeMs, mtimeMs: d.mtimeMs },
  };
}

/** Files this restore already put back (policy image). */
const states = createSessionState('file-content:restore', (_s: RestoreSession) => ({ written: new Set<string>() }));

function copyBlob(session: RestoreSession, d: ContentData, to: number): void {
  session.image.verifyBlob(d.blob);
  const src = openSync(session.image.path(d.blob), 'r');
  try {
    native.fd.copyRange(src, 0, to, 0, d.size);
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
    // O_NOFOLLOW would refuse the /proc/self/fd link itself; the file was reached already.
    const ours = shmemFd(session, d.ghost ?? legacyGhost(d));
    // O_TMPFILE (which includes O_DIRECTORY) made the file; it is not a flag of an open.
    fd = remoteOpen(`/proc/self/fd/${ours}`, { flags: d.flags & ~O_NOFOLLOW & ~O_TMPFILE, pos: d.pos, what: who });
  } else {
    const path = session.relocate(d.path);
    // Its open would wait for a peer were it a FIFO now, and write into a device: refused.
    const now = statSync(path, { throwIfNoEntry: false });
    if (now && !now.isFile()) throw notAFile(path, who);
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
  record: { version: 2, fd: contentFd },
  claims: { fdKinds: ['file'] },
  show: { fdName: (rec: FdRecord) => (rec.data as ContentData | undefined)?.path },
  apply(hooks) {
    hooks.fds.dump.tapPromise({ name: NAME, when: (req) => req.kind === 'file' }, dumpFd);
    hooks.fds.restore.for(NAME).tapPromise(NAME, restoreFd);
  },
}));

export default fileContentPlugin;
