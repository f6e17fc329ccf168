/**
 * @ckpt/plugin-file-locks — file locks held by the checkpointed processes, re-acquired at restore.
 *
 *   FLOCK   flock(2): owned by the open file description;
 *   POSIX   fcntl(F_SETLK) record locks: owned by the process, per byte range;
 *   OFDLCK  fcntl(F_OFD_SETLK) record locks: owned by the open file description, per byte range;
 *   LEASE   fcntl(F_SETLEASE) read and write leases: owned by the open file description. A lease
 *           being broken (a conflicting open is waiting for it) is refused.
 *
 * Dump (files stage: core's fd table of the process is complete): /proc/PID/fdinfo/N lists, on "lock:"
 * lines, the locks taken through that fd's open file description (for POSIX locks: those of this
 * process), with their kind, type (READ/WRITE), dev:inode and byte range — the fd to re-take each
 * lock through, directly. A description shared by several fds or processes is restored once, as
 * one description (its first holder), so its FLOCK/OFD locks are taken once, through that holder.
 * fdinfo shows a POSIX lock on the fds of the fd table that owns it, which is what a restore must
 * rebuild; /proc/locks is not read at dump (its first read in a process waits out an RCU grace
 * period, 15-25 ms here). The one lock it would add, a lock this pid took in a table it shared and
 * then left (unshare(CLONE_FILES)), belongs to the table it left, not to this process.
 *
 * Restore (session.fdsInstalled: every fd of the process exists): each lock is taken again inside the
 * restored process by a remote syscall, without waiting: flock(fd, LOCK_SH|LOCK_EX | LOCK_NB),
 * fcntl(fd, F_SETLK, struct flock), fcntl(fd, F_OFD_SETLK, struct flock) or fcntl(fd,
 * F_SETLEASE, F_RDLCK|F_WRLCK). A lock someone else
 * holds now fails the restore (everything built is removed) with an error naming the file, the lock
 * and, from /proc/locks, its current holder. Processes blocked waiting for a lock (F_SETLKW, flock
 * without LOCK_NB) simply wait again: their syscall is restarted like any other.
 */
import { readFileSync, readlinkSync, statSync } from 'node:fs';
import { CkptError, definePlugin, procfs, type ProcessDump, type ProcessRestore } from '@ckpt/core';
import { fileLocksRecord } from './record.js';
import { SYS, F_SETLK, F_OFD_SETLK, F_RDLCK, F_WRLCK, SEEK_SET } from '@ckpt/native';

export const NAME = '@ckpt/plugin-file-locks';

export type LockKind = 'flock' | 'posix' | 'ofd' | 'lease';

export interface LockEntry {
  /** The fd of this process the lock is taken through. */
  fd: number;
  kind: LockKind;
  type: 'read' | 'write';
  /** Byte range (decimal strings: offsets are 64-bit); end null = to EOF. FLOCK: whole file. */
  start: string;
  end: string | null;
  /** The locked file as the process saw it (for messages), and its identity at dump time. */
  path: string;
  dev: string;
  ino: number;
}

export interface FileLocksRecord {
  locks: LockEntry[];
}

const KINDS: Record<string, LockKind> = { FLOCK: 'flock', POSIX: 'posix', OFDLCK: 'ofd', LEASE: 'lease' };
const LABEL: Record<LockKind, string> = { flock: 'flock', posix: 'POSIX', ofd: 'OFD', lease: 'lease' };

/** One line of /proc/locks or an fdinfo "lock:" line, parsed. */
interface LockLine {
  kind: string;
  /** ADVISORY/MANDATORY for locks; ACTIVE, BREAKING or BREAKER for leases. */
  mode: string;
  type: string;
  pid: number;
  dev: string;
  ino: number;
  start: string;
  end: string | null;
}

const LOCK_RE = /^(?:lock:\s*)?\d+:\s+(?:->\s+)?(\S+)\s+(\S+)\s+(\S+)\s+(-?\d+)\s+([0-9a-f]+:[0-9a-f]+):(\d+)\s+(\d+)\s+(\d+|EOF)\s*$/;

function parseLockLine(line: string): LockLine | undefined {
  const m = LOCK_RE.exec(line.trim());
  if (!m) return undefined;
  return { kind: m[1], mode: m[2], type: m[3], pid: Number(m[4]), dev: m[5], ino: Number(m[6]), start: m[7], end: m[8] === 'EOF' ? null : m[8] };
}

/** /proc/locks without the waiters ("->" lines: blocked requests, not held locks). */
function procLocks(): LockLine[] {
  let text = '';
  try {
    text = readFileSync('/proc/locks', 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((l) => l && !l.includes('->'))
    .map(parseLockLine)
    .filter((l): l is LockLine => !!l);
}

function describeLock(l: { kind: LockKind; type: string; start: string; end: string | null }): string {
  const type = l.type === 'write' ? 'write' : 'read';
  if (l.kind === 'flock') return `flock ${type === 'write' ? 'exclusive (LOCK_EX)' : 'shared (LOCK_SH)'} lock`;
  if (l.kind === 'lease') return `${type} lease`;
  const range = l.end === null ? `bytes ${l.start} to EOF` : `bytes ${l.start}-${l.end}`;
  return `${LABEL[l.kind]} ${type} lock on ${range}`;
}

const sameLock = (a: LockEntry, b: LockEntry) =>
  a.kind === b.kind && a.type === b.type && a.dev === b.dev && a.ino === b.ino && a.start === b.start && a.end === b.end;

async function dump(proc: ProcessDump): Promise<void> {
  const locks: LockEntry[] = [];
  for (const r of proc.fds) {
    // Read by core when it made the fd table (the process has been frozen since).
    const raw = proc.fdInfo.get(r.fd)?.raw;
    if (raw === undefined) continue;
    const lines = raw.split('\n').filter((l) => l.startsWith('lock:'));
    if (!lines.length) continue;
    // A description shared with an fd recorded earlier is restored as that same description:
    // its flock/OFD locks are taken through the first holder (same or other process).
    const shared = r.sameAs !== undefined;
    let path = '';
    try {
      path = procfs.fdLink(proc.procPid, r.fd);
    } catch {
      /* closed meanwhile: cannot happen while frozen */
    }
    for (const line of lines) {
      const l = parseLockLine(line);
      if (!l) {
        throw new CkptError('ERR_CKPT_UNSUPPORTED', `cannot checkpoint pid ${proc.pid}: fd ${r.fd} (${path}) holds a lock ckpt cannot read: ${line.trim()}`);
      }
      const kind = KINDS[l.kind];
      if (!kind) {
        throw new CkptError(
          'ERR_CKPT_UNSUPPORTED',
          `cannot checkpoint pid ${proc.pid}: fd ${r.fd} (${path}) holds a ${l.kind} (${l.kind === 'DELEG' ? 'an NFS delegation' : 'unknown kind of lock'}), which ckpt cannot restore`,
        );
      }
      if (kind === 'lease' && l.mode !== 'ACTIVE') {
        throw new CkptError(
          'ERR_CKPT_UNSUPPORTED',
          `cannot checkpoint pid ${proc.pid}: fd ${r.fd} (${path}) holds a ${l.type.toLowerCase()} lease that is being broken (${l.mode}: a conflicting open waits for it)`,
          { hint: 'checkpoint again once the lease is released or broken' },
        );
      }
      if (l.type !== 'READ' && l.type !== 'WRITE') {
        throw new CkptError('ERR_CKPT_UNSUPPORTED', `cannot checkpoint pid ${proc.pid}: fd ${r.fd} (${path}) holds a ${l.kind} lock of type ${l.type}`);
      }
      if (shared && kind !== 'posix') continue;
      const entry: LockEntry = { fd: r.fd, kind, type: l.type === 'WRITE' ? 'write' : 'read', start: l.start, end: l.end, path, dev: l.dev, ino: l.ino };
      // POSIX locks show on every fd of the description they were taken through: once is enough.
      if (!locks.some((x) => sameLock(x, entry))) locks.push(entry);
    }
  }
  if (locks.length) proc.put(NAME, { locks } satisfies FileLocksRecord);
}

const SYS_flock = 73;
const F_SETLEASE = 1024;
const LOCK_SH = 1,
  LOCK_EX = 2,
  LOCK_NB = 4;
const EAGAIN = 11,
  EACCES = 13;

/** struct flock (x86_64): l_type, l_whence (shorts), l_start, l_len (off_t), l_pid (int); 32 bytes. */
function structFlock(l: LockEntry): Buffer {
  const b = Buffer.alloc(32);
  b.writeInt16LE(l.type === 'write' ? F_WRLCK : F_RDLCK, 0);
  b.writeInt16LE(SEEK_SET, 2);
  const start = BigInt(l.start);
  b.writeBigInt64LE(start, 8);
  b.writeBigInt64LE(l.end === null ? 0n : BigInt(l.end) - start + 1n, 16); // 0: to EOF
  return b;
}

/** Who holds a lock conflicting with `l` on the file of fd `fd` of `pid` now (from /proc/locks). */
function holderOf(pid: number, fd: number, l: LockEntry): string | undefined {
  let dev: string, ino: number;
  try {
    const st = statSync(`/proc/${pid}/fd/${fd}`);
    const major = Math.floor(st.dev / 256) & 0xfff,
      minor = (st.dev & 0xff) | (Math.floor(st.dev / 4096) & 0xfff00);
    dev = `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}`;
    ino = st.ino;
  } catch {
    return undefined;
  }
  const lo = BigInt(l.start),
    hi = l.end === null ? null : BigInt(l.end);
  for (const x of procLocks()) {
    if (x.dev !== dev || x.ino !== ino || x.pid === pid) continue;
    if (l.kind === 'flock' ? x.kind !== 'FLOCK' : x.kind === 'FLOCK') continue;
    if (l.kind !== 'flock') {
      const xlo = BigInt(x.start),
        xhi = x.end === null ? null : BigInt(x.end);
      if ((hi !== null && xlo > hi) || (xhi !== null && xhi < lo)) continue;
    }
    if (l.type === 'read' && x.type === 'READ') continue;
    const what = x.kind === 'FLOCK' ? 'an flock lock' : x.kind === 'OFDLCK' ? 'an OFD lock' : 'a POSIX lock';
    if (x.pid <= 0) return `${what} (${x.type.toLowerCase()}) of an open file description held elsewhere`;
    let comm = '';
    try {
      comm = ` (${procfs.readStat(x.pid).comm})`;
    } catch {
      /* gone meanwhile */
    }
    return `${what} (${x.type.toLowerCase()}) of pid ${x.pid}${comm}`;
  }
  return undefined;
}

async function afterInstall(proc: ProcessRestore): Promise<void> {
  const rec = proc.get<FileLocksRecord>(NAME);
  const stub = proc.stub;
  if (!rec || !stub) return;
  for (const l of rec.locks) {
    const ret =
      l.kind === 'flock'
        ? stub.syscallRaw(SYS_flock, l.fd, (l.type === 'write' ? LOCK_EX : LOCK_SH) | LOCK_NB)
        : l.kind === 'lease'
          ? stub.syscallRaw(SYS.fcntl, l.fd, F_SETLEASE, l.type === 'write' ? F_WRLCK : F_RDLCK)
          : stub.syscallRaw(SYS.fcntl, l.fd, l.kind === 'ofd' ? F_OFD_SETLK : F_SETLK, stub.put(structFlock(l), 0));
    if (ret >= 0n) continue;
    const errno = Number(-ret);
    let path = l.path;
    try {
      path = readlinkSync(`/proc/${stub.pid}/fd/${l.fd}`);
    } catch {
      /* keep the saved path */
    }
    const where = `${path} (fd ${l.fd} of pid ${proc.pid})`;
    if (l.kind === 'lease' && errno === EAGAIN) {
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot take the ${describeLock(l)} of ${where} again: the file is open elsewhere now`, {
        hint: 'a lease needs the file not open by others (for writing; at all for a write lease): close those, then restore again',
      });
    }
    if (errno === EAGAIN || errno === EACCES) {
      const holder = holderOf(stub.pid, l.fd, l);
      throw new CkptError(
        'ERR_CKPT_RESTORE_FAILED',
        `cannot re-acquire the ${describeLock(l)} of ${where}: the file is locked by someone else now${holder ? `: ${holder}` : ''}`,
        { hint: 'stop the process holding the lock (e.g. `fuser` or `lslocks` names it), then restore again' },
      );
    }
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot re-acquire the ${describeLock(l)} of ${where}: errno ${errno}`);
  }
}

export const fileLocksPlugin = definePlugin(() => ({
  name: NAME,
  version: '0.2.0',
  description: 'flock, POSIX and OFD locks and leases, re-acquired once every fd exists',
  record: { version: 1, schema: fileLocksRecord },
  claims: { stateClasses: ['files'] },
  show: { process: (rec: unknown) => ((rec as FileLocksRecord).locks ?? []).map((l) => `lock: ${describeLock(l)} on ${l.path} (fd ${l.fd})`) },
  apply(hooks) {
    hooks.files.dump.tapPromise(NAME, dump);
    hooks.session.fdsInstalled.tapPromise(NAME, afterInstall);
  },
}));

export default fileLocksPlugin;
