/**
 * @ckpt/plugin-files — open files by reference; the working directory, root and umask.
 *
 * Core walks the fds and asks `fds.dump` about each open file description; this plugin answers
 * last (STAGE.FALLBACK), for regular files, directories, character devices, FIFOs, anonymous
 * pipes (with the bytes queued in them, read without consuming them by tee()) and memfds. Which
 * regular files it references, and how they are checked at restart, follows the file rules
 * (its options; see rules.ts). Both ends of every anonymous pipe must be in the tree.
 *
 * Restore opens each description once in the restorer (same flags and offset; pipes recreated
 * with their bytes) and core installs it at its fd number in every holder.
 */
import {
  chmodSync,
  closeSync,
  existsSync,
  fstatSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  openSync,
  readlinkSync,
  rmdirSync,
  statSync,
  unlinkSync,
  writeSync,
  type Stats,
} from 'node:fs';
import {
  CkptError,
  createSessionState,
  definePlugin,
  logger,
  makeWhereItWas,
  procfs,
  saveShmem,
  shmemFd,
  STAGE,
  type DumpSession,
  type FdDumpRequest,
  type FdClaim,
  type FdRecord,
  type Hooks,
  type PluginContext,
  type ProcessDump,
  type ProcessRestore,
  type RestoreSession,
  type Tracee,
} from '@ckpt/core';
import {
  native,
  errnoName,
  SYS,
  O_ACCMODE,
  O_RDONLY,
  O_WRONLY,
  O_RDWR,
  O_CLOEXEC,
  O_NOCTTY,
  O_NONBLOCK,
  O_DIRECTORY,
  O_PATH,
  O_APPEND,
  O_DIRECT,
  O_NOATIME,
  O_SYNC,
  O_DSYNC,
  O_LARGEFILE,
  F_GETFL,
  F_SETFL,
  O_NOFOLLOW,
  F_DUPFD_CLOEXEC,
  SEEK_SET,
} from '@ckpt/native';
import { configuredFileRules, fileRuleFor, notAFile, sha256File, verifyFile, VERIFY_HASH_MAX, type FileRule } from './rules.js';
import { filesOptions, filesRecord, type FilesOptions } from './record.js';
import { referenceData, type DeletedNode, type ReferenceData } from './reference.js';
import { devName } from './dev.js';

const log = logger('plugin:files');

export * from './rules.js';
export { filesOptions, filesRecord, type FilesOptions } from './record.js';
export { referenceData, shmemRef, type ReferenceData } from './reference.js';
export { devName } from './dev.js';

export const NAME = '@ckpt/plugin-files';

/** The plugin's per-process record: the process's file system context (the fds are in core's fd table). */
export interface FilesRecord {
  cwd: string;
  /** The working directory was deleted (cwd is its old path): recreated and removed again. */
  cwdDeleted?: DeletedNode;
  /** The root directory (chroot), when not /. */
  root?: string;
  umask: number;
}

/** Filesystems whose files are kernel views: their contents change by themselves. */
const PSEUDO_FS = new Set([
  'proc',
  'sysfs',
  'cgroup',
  'cgroup2',
  'debugfs',
  'tracefs',
  'securityfs',
  'devpts',
  'mqueue',
  'bpf',
  'configfs',
  'pstore',
  'efivarfs',
  'fusectl',
  'hugetlbfs',
]);

/** Flags that belong to the description and that open() accepts back. */
const KEEP_FLAGS = O_ACCMODE | O_APPEND | O_NONBLOCK | O_DIRECT | O_NOATIME | O_SYNC | O_DSYNC | O_PATH | O_LARGEFILE | O_NOFOLLOW;

/**
 * The file rules of a session (the files plugin's options): the file-content plugin reads them
 * here too, so one set of rules decides the method of every file.
 */
const rulesState = createSessionState('files:rules', (_s: DumpSession) => [] as FileRule[]);
export function fileRulesOf(session: DumpSession): FileRule[] {
  return rulesState.of(session);
}

/** The file system context of the process: cwd, root, umask (its fds are core's). */
async function dump(proc: ProcessDump): Promise<void> {
  const pid = proc.procPid;
  const cwd = readlinkSync(`/proc/${pid}/cwd`);
  const gone = cwd.endsWith(DELETED) && !existsSync(cwd);
  proc.put(NAME, {
    cwd: gone ? cwd.slice(0, -DELETED.length) : cwd,
    ...(gone ? { cwdDeleted: deletedNodeOf(statSync(`/proc/${pid}/cwd`)) } : {}),
    root: readlinkSync(`/proc/${pid}/root`),
    umask: parseInt(procfs.readStatus(pid).Umask ?? '022', 8),
  } satisfies FilesRecord);
}

const DELETED = ' (deleted)';

/** A deleted node's identity, type, mode, owner and device number. */
function deletedNodeOf(st: Stats): DeletedNode {
  return { key: `${devName(st.dev)}:${st.ino}`, mode: st.mode, uid: st.uid, gid: st.gid, ...(st.rdev ? { rdev: st.rdev } : {}) };
}

/** The path of an fd whose file may have been deleted (its link then ends with " (deleted)"), and the node to recreate. */
function pathOf(req: FdDumpRequest): { path: string; deleted?: DeletedNode } {
  if (!req.link.endsWith(DELETED) || existsSync(req.link)) return { path: req.link };
  return { path: req.link.slice(0, -DELETED.length), deleted: deletedNodeOf(req.stat) };
}

/**
 * A /proc/PID path (or one under it) whose process is gone (the kernel shows it "(deleted)"): not
 * a process of the image, and the path no longer leads to the same proc inode (nothing there, or
 * another process's). Its path without the suffix, and the pid.
 */
function deadProc(req: FdDumpRequest, proc: ProcessDump): { path: string; deadPid: number } | undefined {
  const m = /^(\/proc\/(\d+)(?:\/.*?)?)(?: \(deleted\))?$/.exec(req.link);
  if (!m || procfs.fsTypeOf(proc.procPid, req.info.mntId) !== 'proc') return undefined;
  const [path, pid] = [m[1], Number(m[2])];
  const s = proc.session;
  if (s.processes.some((p) => p.pid === pid || p.threads.some((t) => t.pid === pid)) || s.zombies.some((z) => z.pid === pid)) return undefined;
  const now = statSyncSafe(path, true);
  return now && now.ino === req.stat.ino && now.dev === req.stat.dev ? undefined : { path, deadPid: pid };
}

/**
 * Pipes with an end no process of the tree holds (the other end is an outsider's, e.g. the shell
 * or job launcher reading the program's output, or was closed by everyone): saved all the same,
 * marked with the absent end, which the restored pipe does not have (a writer then gets EPIPE, a
 * reader end-of-file after the queued bytes, as with a peer that closed) unless `restore
 * --inherit-fd` connects the end the tree has to an fd of ckpt restore. Queued bytes of a pipe
 * whose read end is absent are read through a read end opened for the purpose (/proc/PID/fd/N).
 */
function notePipeEnds(session: DumpSession): void {
  const ends = new Map<string, { modes: Set<string>; records: Array<{ pid: number; fd: number; data: ReferenceData }> }>();
  for (const p of session.processes) {
    for (const r of p.fds) {
      const d = r.data as ReferenceData;
      if (r.owner !== NAME || r.sameAs || r.kind !== 'pipe' || !d.pipe) continue;
      const e = ends.get(d.pipe.id) ?? { modes: new Set(), records: [] };
      const mode = d.flags & O_ACCMODE;
      e.modes.add(mode === O_WRONLY ? 'w' : mode === O_RDONLY ? 'r' : 'rw');
      e.records.push({ pid: p.procPid, fd: r.fd, data: d });
      ends.set(d.pipe.id, e);
    }
  }
  for (const [id, { modes, records }] of ends) {
    if (modes.has('rw') || (modes.has('r') && modes.has('w'))) continue;
    const absent = modes.has('r') ? 'write' : 'read';
    const queued = absent === 'read' ? readThroughNewReadEnd(records[0].pid, records[0].fd, id) : undefined;
    for (const r of records) {
      r.data.pipe!.absent = absent;
      if (queued?.length) r.data.pipe!.data = queued.toString('base64');
      if (queued?.packets && queued.packets.length > 1) r.data.pipe!.packets = queued.packets;
    }
    log('pipe:[%s]: no process of the tree holds its %s end: restored without it', id, absent);
  }
}

/** The queued bytes of a pipe the tree only writes to: peeked through a read end of our own. */
function readThroughNewReadEnd(pid: number, fd: number, id: string): Buffer & { packets?: number[] } {
  let ours: number;
  try {
    ours = openSync(`/proc/${pid}/fd/${fd}`, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  } catch (e) {
    throw new CkptError(
      'ERR_CKPT_DUMP_FAILED',
      `cannot checkpoint pid ${pid}: fd ${fd} is the write end of pipe:[${id}], whose queued bytes cannot be read (${(e as NodeJS.ErrnoException).code})`,
    );
  }
  try {
    return native.fd.peekPipe(ours, true);
  } finally {
    closeSync(ours);
  }
}

/** The built-in "reference" method: files, directories, devices, FIFOs and pipes. */
async function dumpByReference(req: FdDumpRequest, proc: ProcessDump): Promise<FdClaim<ReferenceData> | undefined> {
  const flags = req.info.flags & KEEP_FLAGS;
  const base = { kind: req.kind };
  switch (req.kind) {
    case 'file': {
      const dead = deadProc(req, proc);
      if (dead) return { ...base, data: { ...dead, flags, pos: req.info.pos, policy: 'disk' } satisfies ReferenceData };
      if (req.link.startsWith('/memfd:') && req.link.endsWith(' (deleted)')) {
        const shmem = saveShmem(proc.session, `${devName(req.stat.dev)}:${req.stat.ino}`, req.link.slice(7, -' (deleted)'.length), req.dupFd, { memfd: true });
        return { ...base, kind: 'memfd', data: { flags, pos: req.info.pos, shmem } satisfies ReferenceData };
      }
      if (req.link.endsWith(' (deleted)')) {
        throw new CkptError(
          'ERR_CKPT_UNSUPPORTED_FD',
          `cannot checkpoint pid ${proc.pid}: fd ${req.fd} refers to a deleted file (${req.link}), which only @ckpt/plugin-file-content can save`,
        );
      }
      // Method "reference" (a rule asking for "content" was served by the file-content plugin).
      const fsType = procfs.fsTypeOf(proc.procPid, req.info.mntId) ?? '';
      const ruled = fileRuleFor(rulesState.of(proc.session), {
        path: req.link,
        size: req.stat.size,
        unlinked: false,
        tmpfs: fsType === 'tmpfs',
        writable: (flags & O_ACCMODE) !== O_RDONLY,
        append: (flags & O_APPEND) !== 0,
      });
      // Files of kernel pseudo filesystems (/proc, /sys, ...) are views, not contents: reopened as they are.
      const policy = PSEUDO_FS.has(fsType) ? 'disk' : ruled.policy;
      const data: ReferenceData = {
        path: req.link,
        flags,
        pos: req.info.pos,
        policy,
        file: {
          size: req.stat.size,
          mtimeMs: req.stat.mtimeMs,
          ino: req.stat.ino,
          ...(policy === 'verify' && req.stat.size <= VERIFY_HASH_MAX ? { sha256: sha256File(req.dupFd) } : {}),
        },
      };
      return { ...base, data };
    }
    case 'directory':
    case 'chr':
    case 'blk':
      if (!req.link.startsWith('/')) return undefined;
      // A tun/tap fd attached to an interface is more than its device node: not ours.
      if (req.info.extra.iff) return undefined;
      return { ...base, data: { ...(deadProc(req, proc) ?? pathOf(req)), flags, pos: req.info.pos } satisfies ReferenceData };
    case 'symlink': {
      // O_PATH|O_NOFOLLOW on a symbolic link: reopened the same way.
      const { path, deleted } = pathOf(req);
      if (deleted) {
        throw new CkptError(
          'ERR_CKPT_UNSUPPORTED_FD',
          `cannot checkpoint pid ${proc.pid}: fd ${req.fd} is a deleted symbolic link (${path}), whose target cannot be read`,
        );
      }
      return { ...base, data: { path, flags, pos: 0 } satisfies ReferenceData };
    }
    case 'fifo':
    case 'pipe': {
      const readable = (flags & O_ACCMODE) !== O_WRONLY && !(flags & O_PATH);
      // Bytes written in packet mode (O_DIRECT) are read one packet at a time: their lengths are kept.
      const queued = readable ? native.fd.peekPipe(req.dupFd, true) : undefined;
      const pipe = {
        id: req.kind === 'pipe' ? String(req.stat.ino) : `${req.stat.dev}:${req.stat.ino}`,
        capacity: native.fd.pipeSize(req.dupFd),
        data: queued?.toString('base64'),
        ...(queued?.packets && queued.packets.length > 1 ? { packets: queued.packets } : {}),
      };
      const where = req.kind === 'fifo' ? pathOf(req) : {};
      return { ...base, data: { ...where, flags, pos: 0, pipe } satisfies ReferenceData };
    }
    default:
      return undefined;
  }
}

/** Pipe objects and FIFO keepers shared by every process of one restore; ours are closed when it ends. */
interface PipeTable {
  pipes: Map<string, { r: number; w: number }>;
  keepers: Map<string, number>;
  /** Pipes whose queued bytes are back in them. */
  filled: Set<string>;
}
const pipeTables = createSessionState('files:pipes', (_s: RestoreSession): PipeTable => ({ pipes: new Map(), keepers: new Map(), filled: new Set() }), {
  dispose: (t) => {
    for (const p of t.pipes.values()) for (const fd of [p.r, p.w]) closeQuietly(fd);
    for (const fd of t.keepers.values()) closeQuietly(fd);
  },
});
const pipeTable = (session: RestoreSession) => pipeTables.of(session);
function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    /* closed */
  }
}

function writeAll(fd: number, data: Buffer): void {
  let off = 0;
  while (off < data.length) off += writeSync(fd, data, off);
}

function openPath(path: string, flags: number, pid: number, fd: number): number {
  try {
    return openSync(path, (flags & ~O_CLOEXEC) | O_NOCTTY);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot reopen ${path} (fd ${fd} of pid ${pid}): ${code}`, {
      cause: e,
      hint: code === 'ENOENT' ? 'files opened by the process must exist at restore, as at dump time' : undefined,
    });
  }
}

/** Deleted nodes recreated by this restore (our O_PATH fd on each, by dev:inode at dump time). */
const deletedNodes = createSessionState('files:deleted', (_s: RestoreSession) => new Map<string, number>(), {
  dispose: (m) => {
    for (const fd of m.values()) closeQuietly(fd);
  },
});

const S_IFMT = 0o170000,
  S_IFDIR = 0o040000,
  S_IFREG = 0o100000;

/**
 * A deleted FIFO, device node or directory again: made beside its old path (under the old name
 * when free, else a temporary one, else in the temp directory) with its mode and owner, held by
 * an O_PATH fd of ours, and removed at once. Users open it through /proc/self/fd.
 */
function deletedNode(session: RestoreSession, path: string, n: DeletedNode, what: string): number {
  const known = deletedNodes.of(session).get(n.key);
  if (known !== undefined) return known;
  const isDir = (n.mode & S_IFMT) === S_IFDIR;
  let made: string;
  try {
    made = makeWhereItWas(path, (p) => (isDir ? mkdirSync(p, n.mode & 0o7777) : native.fd.mknod(p, n.mode, n.rdev ?? 0)));
  } catch (e) {
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot recreate the deleted ${path} (${what}): ${(e as NodeJS.ErrnoException)?.code ?? e}`, { cause: e });
  }
  try {
    lchownSync(made, n.uid, n.gid);
    chmodSync(made, n.mode & 0o7777);
    const fd = openSync(made, O_PATH | O_CLOEXEC | O_NOFOLLOW);
    deletedNodes.of(session).set(n.key, fd);
    return fd;
  } finally {
    if (isDir) rmdirSync(made);
    else unlinkSync(made);
  }
}

/**
 * The regular files and directories a restore reopens by path, opened together at its first
 * reopen (native openAll: one call, on every CPU for many; 2000 files' opens through Node cost
 * about 13 us each here), each with its size, mtime and mode, or the errno of its open.
 * The open never waits: a path that became a FIFO is refused by its type, not waited on for a
 * peer (reopenPath). Those no fd took (a substituted fd's, a failed restore's) are closed with the
 * session.
 */
const reopened = createSessionState('files:reopened', (session: RestoreSession) => openAllOf(session), {
  dispose: (m) => {
    for (const o of m.values()) if (o.fd >= 0) closeQuietly(o.fd);
  },
});

/** One path of the batch: its fd (or -errno) and the opened file's status (NaN where unknown). */
interface Reopened {
  fd: number;
  size: number;
  mtimeMs: number;
  mode: number;
}

function openAllOf(session: RestoreSession): Map<FdRecord, Reopened> {
  const recs: FdRecord[] = [];
  const paths: string[] = [];
  const flags: number[] = [];
  for (const p of session.processes) {
    for (const r of p.fds) {
      const d = r.data as ReferenceData | undefined;
      if (r.owner !== NAME || r.sameAs || (r.kind !== 'file' && r.kind !== 'directory') || !d?.path || d.deleted || d.deadPid) continue;
      recs.push(r);
      paths.push(session.relocate(d.path));
      flags.push(reopenFlags(r, d));
    }
  }
  const out = new Map<FdRecord, Reopened>();
  if (!recs.length) return out;
  const { fd, stat } = native.fd.openAll(paths, flags);
  recs.forEach((r, i) => out.set(r, { fd: fd[i], size: stat[3 * i], mtimeMs: stat[3 * i + 1], mode: stat[3 * i + 2] }));
  return out;
}

/** The flags a file or directory is reopened with (openPath adds none but O_CLOEXEC). */
function reopenFlags(rec: FdRecord, d: ReferenceData): number {
  return (d.flags | (rec.kind === 'directory' ? O_DIRECTORY : 0) | O_NOCTTY) & ~O_CLOEXEC;
}

/** A file, directory or device: reopened by path (files checked first by their policy), at its offset. */
function reopenPath(rec: FdRecord, d: ReferenceData, proc: ProcessRestore): number {
  if (d.deleted) {
    const node = deletedNode(proc.session, d.path!, d.deleted, `fd ${rec.fd} of pid ${proc.pid}`);
    const fd = openPath(`/proc/self/fd/${node}`, d.flags | (rec.kind === 'directory' ? O_DIRECTORY : 0), proc.pid, rec.fd);
    if (d.pos && rec.kind === 'directory') native.fd.lseek(fd, d.pos, SEEK_SET);
    return fd;
  }
  if (d.deadPid) return openOfDead(rec, d, proc);
  const path = proc.session.relocate(d.path!);
  const batch = rec.kind === 'file' || rec.kind === 'directory' ? reopened.of(proc.session) : undefined;
  const pre = batch?.get(rec);
  if (pre) batch!.delete(rec);
  const who = `fd ${rec.fd} of pid ${proc.pid}`;
  if (pre && pre.fd < 0) {
    // A file under policy "verify" that is gone or changed is refused as such, one that is no
    // longer a file (a FIFO without a reader fails with ENXIO) as such.
    if (rec.kind === 'file' && d.file && d.policy === 'verify') verifyFile(path, d.file, who);
    const now = statSyncSafe(path);
    if (rec.kind === 'file' && now && !now.isFile()) throw notAFile(path, who);
    const code = errnoName(-pre.fd);
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot reopen ${path} (${who}): ${code}`, {
      hint: code === 'ENOENT' ? 'files opened by the process must exist at restore, as at dump time' : undefined,
    });
  }
  try {
    // A file that is no longer one (a FIFO, a device, a socket at its path now) is not opened as one.
    if (pre && rec.kind === 'file' && (pre.mode & S_IFMT) !== S_IFREG && !Number.isNaN(pre.mode)) throw notAFile(path, who);
    // The opened file's own status, where the batch has it.
    const now = pre && !Number.isNaN(pre.size) ? pre : undefined;
    if (rec.kind === 'file' && d.file && d.policy === 'verify') verifyFile(path, d.file, who, now);
  } catch (e) {
    if (pre) closeQuietly(pre.fd);
    throw e;
  }
  const fd = pre ? pre.fd : openPath(path, reopenFlags(rec, d), proc.pid, rec.fd);
  // The file opened must still reach the offset (fstat of it: no second lookup of the path).
  if (rec.kind === 'file' && d.file && d.pos > 0 && !(d.flags & O_APPEND)) {
    const size = pre && !Number.isNaN(pre.size) ? pre.size : fstatSync(fd).size;
    if (size < d.pos && size > 0) {
      closeQuietly(fd);
      throw new CkptError(
        'ERR_CKPT_RESTORE_FAILED',
        `file ${path} (fd ${rec.fd} of pid ${proc.pid}) is now ${size} bytes, shorter than the saved offset ${d.pos}`,
      );
    }
  }
  if (d.pos && rec.kind !== 'chr' && rec.kind !== 'blk' && !(d.flags & O_PATH)) native.fd.lseek(fd, d.pos, SEEK_SET);
  return fd;
}

/** A /proc path of a dead process: opened while a helper holds its pid, which is killed at once. */
function openOfDead(rec: FdRecord, d: ReferenceData, proc: ProcessRestore): number {
  const pc = proc.session.services.processes;
  let helper: Tracee;
  try {
    helper = pc.spawnStub([d.deadPid!]);
  } catch (e) {
    throw new CkptError(
      'ERR_CKPT_PID_TAKEN',
      `cannot restore fd ${rec.fd} of pid ${proc.pid} (${d.path}, of a process gone at dump time): ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
  try {
    return openPath(d.path!, d.flags | (rec.kind === 'directory' ? O_DIRECTORY : 0), proc.pid, rec.fd);
  } finally {
    pc.killStub(helper.pid);
  }
}

/** A FIFO: reopened by path, its queued bytes put back once through a read-write keeper. */
function reopenFifo(rec: FdRecord, d: ReferenceData, proc: ProcessRestore): number {
  const t = pipeTable(proc.session);
  const id = d.pipe!.id;
  // A deleted FIFO is made again and removed; every open goes through our fd of it.
  const path = d.deleted ? `/proc/self/fd/${deletedNode(proc.session, d.path!, d.deleted, `fd ${rec.fd} of pid ${proc.pid}`)}` : proc.session.relocate(d.path!);
  if (!t.keepers.has(id)) {
    // A read-write keeper never blocks and lets the other modes open without a peer.
    const keeper = openPath(path, O_RDWR | O_NONBLOCK, proc.pid, rec.fd);
    t.keepers.set(id, keeper);
  }
  if (d.pipe!.data && !t.filled.has(id)) {
    t.filled.add(id);
    fillPipe(t.keepers.get(id)!, Buffer.from(d.pipe!.data, 'base64'), d.pipe!.packets);
  }
  const fd = openPath(path, d.flags | O_NONBLOCK, proc.pid, rec.fd);
  if (!(d.flags & O_NONBLOCK) && !(d.flags & O_PATH)) native.fd.fcntl(fd, F_SETFL, d.flags & ~O_NONBLOCK);
  return fd;
}

/** Puts queued bytes back into a pipe through its write end fd: packet by packet when lengths are given. */
function fillPipe(w: number, data: Buffer, packets?: number[]): void {
  if (!packets) {
    writeAll(w, data);
    return;
  }
  const old = native.fd.fcntl(w, F_GETFL, 0);
  native.fd.fcntl(w, F_SETFL, old | O_DIRECT);
  try {
    let off = 0;
    for (const len of packets) {
      writeAll(w, data.subarray(off, off + len));
      off += len;
    }
  } finally {
    native.fd.fcntl(w, F_SETFL, old);
  }
}

/** A pipe's capacity as it was, or a refusal saying why it cannot be. */
function setPipeSize(fd: number, capacity: number, what: string): void {
  if (native.fd.pipeSize(fd) === capacity) return;
  try {
    native.fd.pipeSize(fd, capacity);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${what}: cannot give the pipe its capacity of ${capacity} bytes (${code ?? (e as Error).message})`, {
      cause: e,
      hint: code === 'EPERM' ? 'it is above /proc/sys/fs/pipe-max-size, which only CAP_SYS_RESOURCE may exceed: raise pipe-max-size' : undefined,
    });
  }
}

/** An anonymous pipe: made once per pipe object (with its capacity and queued bytes); this end of it. */
function recreatePipe(rec: FdRecord, d: ReferenceData, proc: ProcessRestore): number {
  const t = pipeTable(proc.session);
  const id = d.pipe!.id;
  let p = t.pipes.get(id);
  if (!p) {
    const [r, w] = native.fd.pipe(0);
    p = { r, w };
    t.pipes.set(id, p);
    setPipeSize(w, d.pipe!.capacity, `pipe:[${id}] (fd ${rec.fd} of pid ${proc.pid})`);
  }
  // The queued bytes were read through a read end (write ends carry none, unless the read end is
  // absent): once per pipe.
  if (d.pipe!.data && !t.filled.has(id)) {
    t.filled.add(id);
    fillPipe(p.w, Buffer.from(d.pipe!.data, 'base64'), d.pipe!.packets);
  }
  const end = (d.flags & O_ACCMODE) === O_WRONLY ? p.w : p.r;
  native.fd.fcntl(end, F_SETFL, d.flags & (O_NONBLOCK | O_DIRECT));
  return native.fd.fcntl(end, F_DUPFD_CLOEXEC, 0);
}

async function restoreByReference(rec: FdRecord, proc: ProcessRestore): Promise<number | undefined> {
  const d = rec.data as ReferenceData;
  switch (rec.kind) {
    case 'file':
    case 'directory':
    case 'chr':
    case 'blk':
    case 'symlink':
      return reopenPath(rec, d, proc);
    case 'memfd': {
      const fd = native.fd.fcntl(shmemFd(proc.session, d.shmem!), F_DUPFD_CLOEXEC, 0);
      native.fd.lseek(fd, d.pos, SEEK_SET);
      return fd;
    }
    case 'fifo':
      return reopenFifo(rec, d, proc);
    case 'pipe':
      return recreatePipe(rec, d, proc);
    default:
      return undefined;
  }
}

function statSyncSafe(path: string, noFollow = false): Stats | undefined {
  try {
    return noFollow ? lstatSync(path) : statSync(path);
  } catch {
    return undefined;
  }
}

async function restore(proc: ProcessRestore): Promise<void> {
  const rec = proc.get<FilesRecord>(NAME);
  const stub = proc.stub;
  if (!rec || !stub) return;
  const cwd = proc.session.relocate(rec.cwd);
  if (rec.root && rec.root !== '/') {
    try {
      stub.syscall(SYS.chroot, stub.putString(rec.root, 0));
    } catch (e) {
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot restore the root directory ${rec.root} of pid ${proc.pid}`, { cause: e });
    }
  }
  try {
    if (rec.cwdDeleted) {
      // A deleted working directory: made again, entered through our fd of it, removed.
      const fd = proc.borrowFd(deletedNode(proc.session, cwd, rec.cwdDeleted, `working directory of pid ${proc.pid}`));
      try {
        stub.syscall(SYS.fchdir, fd);
      } finally {
        stub.syscall(SYS.close, fd);
      }
      stub.syscall(SYS.umask, rec.umask);
    } else {
      // With the umask, in one stop where the stub has the restore's batch code.
      const dir = rec.root && rec.root !== '/' ? cwd.slice(rec.root.length) || '/' : cwd;
      stub.syscalls([
        [SYS.chdir, Buffer.from(`${dir}\0`)],
        [SYS.umask, rec.umask],
      ]);
    }
  } catch (e) {
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot restore the working directory ${cwd} of pid ${proc.pid}`, { cause: e });
  }
}

/** `ckpt show --files`: the name of a description this plugin owns. */
function fdName(rec: FdRecord): string | undefined {
  const d = rec.data as ReferenceData | undefined;
  if (!d) return undefined;
  return d.path ?? (d.pipe ? `pipe:[${d.pipe.id}]` : d.shmem ? `/memfd:${d.shmem.name}` : undefined);
}

export const filesPlugin = definePlugin<FilesOptions>(() => ({
  name: NAME,
  version: '0.2.0',
  description: 'open files by reference (regular files, directories, devices, FIFOs, pipes, memfds); cwd, root and umask',
  options: filesOptions,
  record: { version: 1, schema: filesRecord, fd: referenceData },
  claims: { stateClasses: ['files'], fdKinds: ['file', 'directory', 'chr', 'blk', 'symlink', 'fifo', 'pipe', 'memfd'] },
  show: {
    fdName,
    process: (rec: unknown) => [
      `cwd ${(rec as FilesRecord).cwd}${(rec as FilesRecord).root && (rec as FilesRecord).root !== '/' ? `, root ${(rec as FilesRecord).root}` : ''}, umask ${(rec as FilesRecord).umask.toString(8).padStart(4, '0')}`,
    ],
  },
  apply(hooks: Hooks, ctx: PluginContext<FilesOptions>) {
    hooks.session.beforeDump.tapPromise(NAME, async (session) => {
      rulesState.of(session).push(...configuredFileRules(ctx.options(session)));
    });
    hooks.files.dump.tapPromise(NAME, dump);
    hooks.session.fdsDumped.tapPromise(NAME, async (session) => notePipeEnds(session));
    hooks.fds.dump.tapPromise({ name: NAME, stage: STAGE.FALLBACK }, dumpByReference);
    hooks.files.restore.tapPromise(NAME, restore);
    hooks.fds.restore.for(NAME).tapPromise(NAME, restoreByReference);
  },
}));

export default filesPlugin;
