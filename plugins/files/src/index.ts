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
import { closeSync, openSync, readlinkSync, statSync, writeSync, type Stats } from 'node:fs';
import {
  CkptError,
  createSessionState,
  definePlugin,
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
} from '@ckpt/core';
import {
  native,
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
  F_SETFL,
  F_DUPFD_CLOEXEC,
  SEEK_SET,
} from '@ckpt/native';
import { configuredFileRules, fileRuleFor, sha256File, verifyFile, VERIFY_HASH_MAX, type FileRule } from './rules.js';
import { filesOptions, filesRecord, type FilesOptions } from './record.js';
import { referenceData, type ReferenceData } from './reference.js';
import { devName } from './dev.js';

export * from './rules.js';
export { filesOptions, filesRecord, type FilesOptions } from './record.js';
export { referenceData, shmemRef, type ReferenceData } from './reference.js';
export { devName } from './dev.js';

export const NAME = '@ckpt/plugin-files';

/** The plugin's per-process record: the process's file system context (the fds are in core's fd table). */
export interface FilesRecord {
  cwd: string;
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
const KEEP_FLAGS = O_ACCMODE | O_APPEND | O_NONBLOCK | O_DIRECT | O_NOATIME | O_SYNC | O_DSYNC | O_PATH | O_LARGEFILE;

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
  const { pid } = proc;
  proc.put(NAME, {
    cwd: readlinkSync(`/proc/${pid}/cwd`),
    root: readlinkSync(`/proc/${pid}/root`),
    umask: parseInt(procfs.readStatus(pid).Umask ?? '022', 8),
  } satisfies FilesRecord);
}

/** Both ends of every anonymous pipe must be inside the checkpoint (any process of the tree). */
function checkPipes(session: DumpSession): void {
  const ends = new Map<string, Set<string>>();
  const all = session.processes.flatMap((p) => p.fds.filter((r) => r.owner === NAME && !r.sameAs).map((r) => ({ ...r, pid: p.pid })));
  for (const r of all) {
    const d = r.data as ReferenceData;
    if (r.kind !== 'pipe' || !d.pipe) continue;
    const mode = d.flags & O_ACCMODE;
    const set = ends.get(d.pipe.id) ?? new Set();
    set.add(mode === O_WRONLY ? 'w' : mode === O_RDONLY ? 'r' : 'rw');
    ends.set(d.pipe.id, set);
  }
  for (const [id, set] of ends) {
    if (set.has('rw') || (set.has('r') && set.has('w'))) continue;
    const { fd, pid } = all.find((r) => r.kind === 'pipe' && (r.data as ReferenceData).pipe?.id === id)!;
    const missing = set.has('r') ? 'write' : 'read';
    throw new CkptError(
      'ERR_CKPT_UNSUPPORTED_FD',
      `cannot checkpoint pid ${pid}: fd ${fd} is one end of pipe:[${id}] whose ${missing} end is held by a process outside the checkpoint`,
      { hint: 'start the program with `ckpt run` (stdio to files), or redirect its stdio to files' },
    );
  }
}

/** The built-in "reference" method: files, directories, devices, FIFOs and pipes. */
async function dumpByReference(req: FdDumpRequest, proc: ProcessDump): Promise<FdClaim<ReferenceData> | undefined> {
  const flags = req.info.flags & KEEP_FLAGS;
  const base = { kind: req.kind };
  switch (req.kind) {
    case 'file': {
      if (req.link.startsWith('/memfd:') && req.link.endsWith(' (deleted)')) {
        const shmem = saveShmem(proc.session, `${devName(req.stat.dev)}:${req.stat.ino}`, req.link.slice(7, -' (deleted)'.length), req.dupFd);
        return { ...base, kind: 'memfd', data: { flags, pos: req.info.pos, shmem } satisfies ReferenceData };
      }
      if (req.link.endsWith(' (deleted)')) {
        throw new CkptError(
          'ERR_CKPT_UNSUPPORTED_FD',
          `cannot checkpoint pid ${proc.pid}: fd ${req.fd} refers to a deleted file (${req.link}), which only @ckpt/plugin-file-content can save`,
        );
      }
      // Method "reference" (a rule asking for "content" was served by the file-content plugin).
      const fsType = procfs.fsTypeOf(proc.pid, req.info.mntId) ?? '';
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
      if (!req.link.startsWith('/')) return undefined;
      return { ...base, data: { path: req.link, flags, pos: req.info.pos } satisfies ReferenceData };
    case 'fifo':
    case 'pipe': {
      const readable = (flags & O_ACCMODE) !== O_WRONLY;
      const pipe = {
        id: req.kind === 'pipe' ? String(req.stat.ino) : `${req.stat.dev}:${req.stat.ino}`,
        capacity: native.fd.pipeSize(req.dupFd),
        data: readable ? native.fd.peekPipe(req.dupFd).toString('base64') : undefined,
      };
      return { ...base, data: { path: req.kind === 'fifo' ? req.link : undefined, flags, pos: 0, pipe } satisfies ReferenceData };
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

/** A file, directory or device: reopened by path (files checked first by their policy), at its offset. */
function reopenPath(rec: FdRecord, d: ReferenceData, proc: ProcessRestore): number {
  const path = proc.session.relocate(d.path!);
  if (rec.kind === 'file' && d.file) {
    if (d.policy === 'verify') verifyFile(path, d.file, `fd ${rec.fd} of pid ${proc.pid}`);
    const st = statSyncSafe(path);
    if (st && st.size < d.pos && st.size > 0 && !(d.flags & O_APPEND)) {
      throw new CkptError(
        'ERR_CKPT_RESTORE_FAILED',
        `file ${path} (fd ${rec.fd} of pid ${proc.pid}) is now ${st.size} bytes, shorter than the saved offset ${d.pos}`,
      );
    }
  }
  const fd = openPath(path, d.flags | (rec.kind === 'directory' ? O_DIRECTORY : 0), proc.pid, rec.fd);
  if (d.pos && rec.kind !== 'chr') native.fd.lseek(fd, d.pos, SEEK_SET);
  return fd;
}

/** A FIFO: reopened by path, its queued bytes put back once through a read-write keeper. */
function reopenFifo(rec: FdRecord, d: ReferenceData, proc: ProcessRestore): number {
  const t = pipeTable(proc.session);
  const id = d.pipe!.id;
  d.path = proc.session.relocate(d.path!);
  if (!t.keepers.has(id)) {
    // A read-write keeper never blocks and lets the other modes open without a peer.
    const keeper = openPath(d.path!, O_RDWR | O_NONBLOCK, proc.pid, rec.fd);
    t.keepers.set(id, keeper);
  }
  if (d.pipe!.data && !t.filled.has(id)) {
    t.filled.add(id);
    writeAll(t.keepers.get(id)!, Buffer.from(d.pipe!.data, 'base64'));
  }
  const fd = openPath(d.path!, d.flags | O_NONBLOCK, proc.pid, rec.fd);
  if (!(d.flags & O_NONBLOCK)) native.fd.fcntl(fd, F_SETFL, d.flags & ~O_NONBLOCK);
  return fd;
}

/** An anonymous pipe: made once per pipe object (with its capacity and queued bytes); this end of it. */
function recreatePipe(d: ReferenceData, proc: ProcessRestore): number {
  const t = pipeTable(proc.session);
  const id = d.pipe!.id;
  let p = t.pipes.get(id);
  if (!p) {
    const [r, w] = native.fd.pipe(0);
    p = { r, w };
    t.pipes.set(id, p);
    try {
      native.fd.pipeSize(w, d.pipe!.capacity);
    } catch {
      /* above pipe-max-size without CAP_SYS_RESOURCE: keep the default */
    }
  }
  // The queued bytes were read through a read end (write ends carry none): once per pipe.
  if (d.pipe!.data && !t.filled.has(id)) {
    t.filled.add(id);
    writeAll(p.w, Buffer.from(d.pipe!.data, 'base64'));
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
      return reopenPath(rec, d, proc);
    case 'memfd': {
      const fd = native.fd.fcntl(shmemFd(proc.session, d.shmem!), F_DUPFD_CLOEXEC, 0);
      native.fd.lseek(fd, d.pos, SEEK_SET);
      return fd;
    }
    case 'fifo':
      return reopenFifo(rec, d, proc);
    case 'pipe':
      return recreatePipe(d, proc);
    default:
      return undefined;
  }
}

function statSyncSafe(path: string): Stats | undefined {
  try {
    return statSync(path);
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
    stub.syscall(SYS.chdir, stub.putString(rec.root && rec.root !== '/' ? cwd.slice(rec.root.length) || '/' : cwd, 0));
  } catch (e) {
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot restore the working directory ${cwd} of pid ${proc.pid}`, { cause: e });
  }
  stub.syscall(SYS.umask, rec.umask);
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
  claims: { stateClasses: ['files'], fdKinds: ['file', 'directory', 'chr', 'fifo', 'pipe', 'memfd'] },
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
    hooks.session.fdsDumped.tapPromise(NAME, async (session) => checkPipes(session));
    hooks.fds.dump.tapPromise({ name: NAME, stage: STAGE.FALLBACK }, dumpByReference);
    hooks.files.restore.tapPromise(NAME, restore);
    hooks.fds.restore.for(NAME).tapPromise(NAME, restoreByReference);
  },
}));

export default filesPlugin;
