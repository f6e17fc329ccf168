/** Whether the names a restore binds are free: a stale socket file is removed, a live one stops the restore. */
import { lstatSync, unlinkSync, type Stats } from 'node:fs';
import { CkptError, type RestoreSession } from '@ckpt/core';
import { native, type UnixDiagEntry } from '@ckpt/native';
import type { UnixSocketData } from './record.js';
import { addrText, bindsName, pathOf, rawOf } from './names.js';
import { holdersOf } from './session.js';
import { allSockets } from './build.js';
import { describeSocket } from './show.js';

/**
 * Can the name be bound? A socket file at the image's own path is removed when no live socket
 * is bound to it (a leftover of the checkpointed process); a live one, or another kind of file,
 * stops the restore.
 */
export function checkName(raw: Buffer, d: UnixSocketData, where: string, diag: UnixDiagEntry[], remove: boolean): void {
  const path = pathOf(d, raw);
  if (path) {
    let st: Stats;
    try {
      st = lstatSync(path);
    } catch {
      return;
    }
    // The program had unlinked its socket file, and another file has the path since: bound with
    // that file moved aside for a moment (restore.ts, bindName).
    if (!st.isSocket() && d.file && !d.file.present) return;
    if (!st.isSocket()) {
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot restore ${where}: ${path} exists and is not a socket`, { hint: `move ${path} away and retry` });
    }
    if (diag.some((e) => e.vfsIno === st.ino)) {
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot restore ${where}: ${path} is bound by a live socket${holdersOfPathHint(diag, st.ino)}`, {
        hint: 'stop the process listening there (is the checkpointed program still running?) and retry',
      });
    }
    if (remove) unlinkSync(path);
    return;
  }
  const inUse = diag.find((e) => e.name?.equals(raw));
  if (inUse) {
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot restore ${where}: the abstract address ${addrText(raw)} is in use${holdersOfHint(inUse.ino)}`, {
      hint: 'stop the process bound to it (is the checkpointed program still running?) and retry',
    });
  }
}
/** " (by pid N (comm) fd M)" for the holders of socket inode ino, or "". */
function holdersOfHint(ino: number): string {
  const h = holdersOf(ino);
  return h ? ` (by ${h})` : '';
}
/** The holders hint of the live socket bound to the file of inode vfsIno. */
function holdersOfPathHint(diag: UnixDiagEntry[], vfsIno: number): string {
  const e = diag.find((x) => x.vfsIno === vfsIno);
  return e ? holdersOfHint(e.ino) : '';
}

/** Before anything is created: every name the restore binds must be free (or a stale file). */
export function checkNames(session: RestoreSession): void {
  const socks = allSockets(session);
  if (!socks.length) return;
  const diag = native.sock.unixDiag();
  for (const { pid, fd, d } of socks) {
    if (bindsName(d)) checkName(rawOf(d.nameRaw), d, `fd ${fd} of pid ${pid} (${describeSocket(d)})`, diag, false);
  }
}
