/**
 * Shared memory objects (shmem: MAP_SHARED|MAP_ANONYMOUS regions, memfds) that several
 * mappings and fds, in several processes, refer to. Saved once per dump with their whole
 * contents (holes skipped), recreated once per restore as a memfd that every user maps or
 * holds: what was shared stays shared.
 */
import { closeSync, fstatSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { native, SEEK_DATA, SEEK_HOLE } from '@ckpt/native';
import type { DumpSession, RestoreSession } from './context.js';
import { createSessionState } from './state.js';

/** Objects saved by this dump, by dev:inode. */
const saved = createSessionState('core:shmem-saved', (_s: DumpSession) => new Map<string, ShmemRef>());
/** Our memfd of each object recreated by this restore; closed when the restore ends (the processes hold their own). */
const made = createSessionState('core:shmem-made', (_s: RestoreSession) => new Map<string, number>(), {
  dispose: (m) => {
    for (const fd of m.values()) {
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
}

const CHUNK = 4 << 20;

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
export function saveShmem(session: DumpSession, key: string, name: string, fd: number): ShmemRef {
  const known = saved.of(session).get(key);
  if (known) return known;
  const size = fstatSync(fd).size;
  const blob = session.image.openBlob(`shmem-${key.replace(/[^0-9a-z]/gi, '_')}.img`);
  const segments = dataSegments(fd, size);
  const buf = Buffer.allocUnsafe(CHUNK);
  for (const [off, len] of segments) {
    for (let done = 0; done < len; ) {
      const n = readSync(fd, buf, 0, Math.min(CHUNK, len - done), off + done);
      if (n <= 0) throw new Error(`short read of shared memory ${name} at ${off + done}`);
      blob.write(buf.subarray(0, n));
      done += n;
    }
  }
  session.image.closeBlob(blob);
  const ref: ShmemRef = { key, name, size, blob: blob.name, segments };
  saved.of(session).set(key, ref);
  return ref;
}

/** Saves the object mapped at [start, end) in pid, through /proc/PID/map_files. */
export function saveMappedShmem(session: DumpSession, pid: number, start: number, end: number, key: string, name: string): ShmemRef {
  const known = saved.of(session).get(key);
  if (known) return known;
  const fd = openSync(`/proc/${pid}/map_files/${start.toString(16)}-${end.toString(16)}`, 'r');
  try {
    return saveShmem(session, key, name, fd);
  } finally {
    closeSync(fd);
  }
}

/** Our fd (read-write memfd) on the recreated object; made and filled on first use. */
export function shmemFd(session: RestoreSession, ref: ShmemRef): number {
  const known = made.of(session).get(ref.key);
  if (known !== undefined) return known;
  session.image.verifyBlob(ref.blob);
  const fd = native.fd.memfdCreate(ref.name);
  made.of(session).set(ref.key, fd);
  ftruncateSync(fd, ref.size);
  const src = openSync(session.image.path(ref.blob), 'r');
  const buf = Buffer.allocUnsafe(CHUNK);
  let pos = 0;
  try {
    for (const [off, len] of ref.segments) {
      for (let done = 0; done < len; ) {
        const n = readSync(src, buf, 0, Math.min(CHUNK, len - done), pos);
        writeSync(fd, buf, 0, n, off + done);
        done += n;
        pos += n;
      }
    }
  } finally {
    closeSync(src);
  }
  return fd;
}
