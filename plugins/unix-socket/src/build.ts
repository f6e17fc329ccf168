/** The restore's build: the sockets rebuilt in the restorer, the fds and files it holds, and its errors. */
import { closeSync } from 'node:fs';
import { CkptError, createSessionState, type RestoreSession } from '@ckpt/core';
import { NativeError } from '@ckpt/native';
import { NAME, type UnixSocketData } from './record.js';
import { describeSocket } from './show.js';

export interface Sock {
  pid: number;
  fd: number;
  d: UnixSocketData;
  /** Our fd of the rebuilt socket. */
  rfd: number;
  /** Made by socketpair with this other socket. */
  pairedWith?: number;
  /** The other end of a connection whose peer is closed: closed once the data is in. */
  closer?: number;
}

export interface Build {
  socks: Map<number, Sock>;
  /** Every fd we hold (closed after the restore, or on failure). */
  fds: Set<number>;
  /** Socket files we created (removed on failure). */
  created: Array<{ path: string; ino: number }>;
  /** Socket files the program had unlinked: unlinked again at the end. */
  unlinkLater: string[];
  /** Our fds of the files in flight in the queues, by "pid:id" (core's ids). */
  inFlight: Map<string, number>;
}

/** A socket of the image: the process and fd that hold it first, and its record. */
export type ImageSock = Pick<Sock, 'pid' | 'fd' | 'd'>;

/** The sockets of one restore, built at the first one asked for; ours are closed when it ends. */
export const builds = createSessionState('unix:restore', (_s: RestoreSession) => ({ build: undefined as Build | undefined }), {
  dispose: (h) => {
    for (const fd of h.build?.fds ?? []) closeQuietly(fd);
  },
});

/** close(2), ignoring an fd already closed. */
export function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    /* closed */
  }
}

/** Records fd as one of the build's (closed when the restore ends) and returns it. */
export function own(b: Build, fd: number): number {
  b.fds.add(fd);
  return fd;
}

/** Closes one of the build's fds and forgets it. */
export function disown(b: Build, fd: number): void {
  closeQuietly(fd);
  b.fds.delete(fd);
}

/** Every unix socket of the image (one entry per open description). */
export function allSockets(session: RestoreSession): ImageSock[] {
  const out: ImageSock[] = [];
  for (const p of session.processes) {
    // Sockets in flight (SCM_RIGHTS, not yet received) too: `fd` is core's id (negative) then.
    for (const r of [...p.fds, ...(p.record.inFlight ?? [])])
      if (r.owner === NAME && !r.sameAs) out.push({ pid: p.pid, fd: r.fd, d: r.data as UnixSocketData });
  }
  return out;
}

/** The error of a step of the restore of socket s. */
export function restoreError(s: ImageSock, what: string, e: unknown, hint?: string): CkptError {
  const why = e instanceof NativeError ? e.code : e instanceof Error ? e.message : String(e);
  return new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot restore fd ${s.fd} of pid ${s.pid} (${describeSocket(s.d)}): ${what}: ${why}`, { cause: e, hint });
}
