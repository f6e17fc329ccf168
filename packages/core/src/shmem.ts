/**
 * Objects of the file system that several mappings and fds, in several processes, may refer to
 * and that no path can reopen: shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS), memfds, and
 * deleted ("ghost") regular files. Saved once per dump with their whole contents (holes
 * skipped: a sparse file stays sparse), recreated once per restore — shared memory as a memfd
 * (with its seals and mode), a deleted file as a new file in its old directory that is unlinked
 * again at once (with its mode, owner and times) — which every user maps or holds: what was
 * shared stays shared, and a file opened and mapped is one inode again.
 */
import { closeSync, fchmodSync, fchownSync, fstatSync, ftruncateSync, futimesSync, openSync, unlinkSync } from 'node:fs';
import { native, F_ADD_SEALS, F_GET_SEALS, MFD_ALLOW_SEALING, MFD_EXEC, SEEK_DATA, SEEK_HOLE } from '@ckpt/native';
import type { DumpSession, RestoreSession } from './context.js';
import { createSessionState } from './state.js';
import { makeWhereItWas } from './paths.js';

/** Objects saved by this dump, by dev:inode. */
const saved = createSessionState('core:shmem-saved', (_s: DumpSession) => new Map<string, ShmemRef>());
/** Our fd of each object recreated by this restore; closed when the restore ends (the processes hold their own). */
const made = createSessionState('core:shmem-made', (_s: RestoreSession) => new Map<string, { fd: number; ref: ShmemRef }>(), {
  dispose: (m) => {
    for (const { fd } of m.values()) {
      try {
        closeSync(fd);
      } catch {
        /* closed */
      }
    }
  },
});

export interface ShmemRef {
  /** dev:inode of the object at dump time. */
  key: string;
  name: string;
  size: number;
  blob: string;
  /** [offset, length] of the parts holding data, in blob order. */
  segments: Array<[number, number]>;
  /** A memfd: its seals (F_GET_SEALS) and mode (0666 for a memfd that may not be executed). */
  memfd?: { seals: number; mode: number };
  /** A deleted regular file: its old path, mode, owner and times. */
  file?: { path: string; mode: number; uid: number; gid: number; atimeMs: number; mtimeMs: number };
}

const isUint = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x) && x >= 0;
const isMode = (x: unknown) => isUint(x) && x <= 0o7777;
const onlyKeys = (o: object, keys: string[]) => Object.keys(o).every((k) => keys.includes(k));

/**
 * Whether x is a well-formed ShmemRef (as read from an image): plugins that store one in their
 * records validate it with this, so its shape is checked in one place.
 */
export function isShmemRef(x: unknown): x is ShmemRef {
  if (!x || typeof x !== 'object') return false;
  const r = x as Record<string, unknown>;
  if (!onlyKeys(r, ['key', 'name', 'size', 'blob', 'segments', 'memfd', 'file'])) return false;
  if (typeof r.key !== 'string' || typeof r.name !== 'string' || typeof r.blob !== 'string' || !isUint(r.size)) return false;
  if (!Array.isArray(r.segments) || !r.segments.every((s) => Array.isArray(s) && s.length === 2 && isUint(s[0]) && isUint(s[1]))) return false;
  if (r.memfd !== undefined) {
    const m = r.memfd as Record<string, unknown>;
    if (!m || typeof m !== 'object' || !onlyKeys(m, ['seals', 'mode']) || !isUint(m.seals) || !isMode(m.mode)) return false;
  }
  if (r.file !== undefined) {
    const f = r.file as Record<string, unknown>;
    if (!f || typeof f !== 'object' || !onlyKeys(f, ['path', 'mode', 'uid', 'gid', 'atimeMs', 'mtimeMs'])) return false;
    if (typeof f.path !== 'string' || !isMode(f.mode) || !isUint(f.uid) || !isUint(f.gid) || typeof f.atimeMs !== 'number' || typeof f.mtimeMs !== 'number')
      return false;
  }
  return true;
}

/** What kind of object saveShmem saves: shared anonymous memory (the default), a memfd, a deleted file at `path`. */
export type ShmemKind = { memfd: true } | { deletedFile: string } | undefined;

function dataSegments(fd: number, size: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let off = 0;
  while (off < size) {
    let start: number, end: number;
    try {
      start = native.fd.lseek(fd, off, SEEK_DATA);
      end = native.fd.lseek(fd, start, SEEK_HOLE);
    } catch {
      break; // ENXIO: no more data
    }
    out.push([start, Math.min(end, size) - start]);
    off = end;
  }
  return out;
}

/** Saves the object behind fd (ours; not closed) unless this dump saved it already. */
export function saveShmem(session: DumpSession, key: string, name: string, fd: number, kind?: ShmemKind): ShmemRef {
  const known = saved.of(session).get(key);
  if (known) return known;
  const st = fstatSync(fd);
  const size = st.size;
  const blob = session.image.openBlob(`shmem-${key.replace(/[^0-9a-z]/gi, '_')}.img`);
  // Read through an open of our own: the process's may be write-only, or O_PATH.
  const rd = openSync(`/proc/self/fd/${fd}`, 'r');
  let segments: Array<[number, number]>;
  let seals = 0;
  try {
    if (kind && 'memfd' in kind) seals = native.fd.fcntl(rd, F_GET_SEALS, 0);
    segments = dataSegments(rd, size);
    for (const [off, len] of segments) blob.copyFile(rd, off, len);
  } finally {
    closeSync(rd);
  }
  session.image.closeBlob(blob);
  const ref: ShmemRef = { key, name, size, blob: blob.name, segments };
  if (kind && 'memfd' in kind) ref.memfd = { seals, mode: st.mode & 0o7777 };
  if (kind && 'deletedFile' in kind) {
    ref.file = { path: kind.deletedFile, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, atimeMs: st.atimeMs, mtimeMs: st.mtimeMs };
  }
  saved.of(session).set(key, ref);
  return ref;
}

/** Saves the object mapped at [start, end) in pid, through /proc/PID/map_files. */
export function saveMappedShmem(session: DumpSession, pid: number, start: number, end: number, key: string, name: string, kind?: ShmemKind): ShmemRef {
  const known = saved.of(session).get(key);
  if (known) return known;
  const fd = openSync(`/proc/${pid}/map_files/${start.toString(16)}-${end.toString(16)}`, 'r');
  try {
    return saveShmem(session, key, name, fd, kind);
  } finally {
    closeSync(fd);
  }
}

/** A deleted file again: a new file where it was (see makeWhereItWas), unlinked at once. */
function recreateDeleted(f: NonNullable<ShmemRef['file']>): number {
  let fd = -1;
  const path = makeWhereItWas(f.path, (p) => {
    fd = openSync(p, 'wx+', 0o600);
  });
  unlinkSync(path);
  return fd;
}

/** Our fd on the recreated object (a memfd, read-write; a deleted file, read-only); made and filled on first use. */
export function shmemFd(session: RestoreSession, ref: ShmemRef): number {
  const known = made.of(session).get(ref.key);
  if (known !== undefined) return known.fd;
  session.image.verifyBlob(ref.blob);
  let fd: number;
  if (ref.file) fd = recreateDeleted(ref.file);
  else if (ref.memfd) {
    const exec = ref.memfd.mode & 0o111 ? MFD_EXEC : 0;
    try {
      fd = native.fd.memfdCreate(ref.name, MFD_ALLOW_SEALING | exec);
    } catch {
      fd = native.fd.memfdCreate(ref.name, MFD_ALLOW_SEALING); // a kernel before MFD_EXEC (6.3)
    }
  } else fd = native.fd.memfdCreate(ref.name);
  made.of(session).set(ref.key, { fd, ref });
  ftruncateSync(fd, ref.size);
  const src = openSync(session.image.path(ref.blob), 'r');
  let pos = 0;
  try {
    for (const [off, len] of ref.segments) {
      native.fd.copyRange(src, pos, fd, off, len);
      pos += len;
    }
  } finally {
    closeSync(src);
  }
  const meta = ref.file ?? ref.memfd;
  if (meta && (fstatSync(fd).mode & 0o7777) !== meta.mode) fchmodSync(fd, meta.mode);
  if (ref.file) {
    fchownSync(fd, ref.file.uid, ref.file.gid);
    if ((fstatSync(fd).mode & 0o7777) !== ref.file.mode) fchmodSync(fd, ref.file.mode); // chown clears set-id bits
    futimesSync(fd, ref.file.atimeMs / 1000, ref.file.mtimeMs / 1000);
    // Ours stays read-only, so that it can become an executable's file (PR_SET_MM_MAP denies
    // write access to it); a writer reopens it through /proc/self/fd.
    const ro = openSync(`/proc/self/fd/${fd}`, 'r');
    closeSync(fd);
    fd = ro;
    made.of(session).set(ref.key, { fd, ref });
  }
  return fd;
}

/**
 * Every memfd this restore made gets its seals back, once every process maps and holds it (a
 * seal such as F_SEAL_FUTURE_WRITE forbids making the writable mappings the process had).
 */
export function sealShmem(session: RestoreSession): void {
  const m = made.peek(session);
  if (!m) return;
  for (const { fd, ref } of m.values()) {
    const seals = ref.memfd?.seals ?? 0;
    if (seals) native.fd.fcntl(fd, F_ADD_SEALS, seals);
  }
}
