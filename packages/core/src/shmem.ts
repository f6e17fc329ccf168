/**
 * Shared memory objects (shmem: MAP_SHARED|MAP_ANONYMOUS regions, memfds) that several
 * mappings and fds, in several processes, refer to. Saved once per dump with their whole
 * contents (holes skipped), recreated once per restore as a memfd that every user maps or
 * holds: what was shared stays shared.
 */
import { closeSync, fstatSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { native } from '@ckpt/native';
import type { DumpSession, RestoreSession } from './context.js';

export interface ShmemRef {
  /** dev:inode of the object at dump time. */
  key: string;
  name: string;
  size: number;
  blob: string;
  /** [offset, length] of the parts holding data, in blob order. */
  segments: Array<[number, number]>;
}

const SEEK_DATA = 3, SEEK_HOLE = 4;
const CHUNK = 4 << 20;

function dataSegments(fd: number, size: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let off = 0;
  while (off < size) {
    let start: number, end: number;
    try {
      start = native.lseek(fd, off, SEEK_DATA);
      end = native.lseek(fd, start, SEEK_HOLE);
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
  const known = session.objects.get(`shmem:${key}`) as ShmemRef | undefined;
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
  session.objects.set(`shmem:${key}`, ref);
  return ref;
}

/** Saves the object mapped at [start, end) in pid, through /proc/PID/map_files. */
export function saveMappedShmem(session: DumpSession, pid: number, start: number, end: number, key: string, name: string): ShmemRef {
  const known = session.objects.get(`shmem:${key}`) as ShmemRef | undefined;
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
  const k = `shmem:${ref.key}`;
  const known = session.objects.get(k) as number | undefined;
  if (known !== undefined) return known;
  session.image.verifyBlob(ref.blob);
  const fd = native.memfdCreate(ref.name);
  session.onRollback(() => closeSync(fd));
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
  session.objects.set(k, fd);
  return fd;
}

/** Closes every object fd of a finished restore (the processes hold their own references). */
export function closeShmem(session: RestoreSession): void {
  for (const [k, v] of session.objects) {
    if (k.startsWith('shmem:') && typeof v === 'number') {
      try {
        closeSync(v);
      } catch {
        /* closed */
      }
      session.objects.delete(k);
    }
  }
}
