/**
 * @ckpt/plugin-files — open files by reference, the working directory and the umask.
 *
 * Dump walks every fd of the process: takes its own duplicate with pidfd_getfd, recognises fds
 * that share one open file description (kcmp), and asks the `files.dumpFd` bail hook for a
 * record — the first plugin that returns one owns the fd. This plugin claims regular files,
 * directories, character devices, FIFOs and anonymous pipes (with the bytes queued in them,
 * read without consuming them by tee()). An fd no plugin claims stops the dump with a message
 * naming the fd and its kind.
 *
 * Restore opens each description once in the restorer (same flags and offset; pipes recreated
 * with their bytes) and installs it at the same fd number in the process (shared descriptions
 * stay shared).
 */
import { closeSync, fstatSync, openSync, readlinkSync, statSync, writeSync, type Stats } from 'node:fs';
import { constants as C } from 'node:fs';
import {
  CkptError, configuredFileRules, definePlugin, fileRuleFor, procfs, relocatePath, saveShmem, sha256File, shmemFd, STAGE, verifyFile,
  VERIFY_HASH_MAX, type FilePolicy, type ShmemRef, type DumpSession, type FdDumpRequest, type FdRecord, type Hooks, type ProcessDump,
  type ProcessRestore, type RestoreSession,
} from '@ckpt/core';
import { native, SYS } from '@ckpt/native';

export const NAME = '@ckpt/plugin-files';

export interface FilesRecord {
  fds: FdRecord[];
  cwd: string;
  /** The root directory (chroot), when not /. */
  root?: string;
  umask: number;
}

/** What this plugin stores per description. */
export interface ReferenceData {
  path?: string;
  flags: number;
  pos: number;
  file?: { size: number; mtimeMs: number; ino: number; sha256?: string };
  /** Restart policy (regular files): "verify" (default for files only read) or "disk". */
  policy?: FilePolicy;
  /** Pipes and FIFOs: which pipe object, its capacity and queued bytes (base64). */
  pipe?: { id: string; capacity: number; data?: string };
  /** memfds: the object, shared with mappings of it. */
  shmem?: ShmemRef;
}

/** st_dev as /proc/PID/maps prints it (major:minor in hex), so fds and mappings of one object agree. */
function devName(dev: number): string {
  const major = (dev >>> 8) & 0xfff, minor = (dev & 0xff) | ((dev >>> 12) & 0xfff00);
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}`;
}

/** An fd sharing its open file description with an earlier one (same or another process). */
export interface SharedData {
  sameAs: number;
  /** The process holding `sameAs`, when not the same process. */
  pid?: number;
}

interface SeenFd {
  pid: number;
  fd: number;
  dev: number;
  ino: number;
  kind: string;
}

const O_ACCMODE = 3, O_RDONLY = 0, O_WRONLY = 1, O_RDWR = 2;
const O_CLOEXEC = 0o2000000, O_NOCTTY = 0o400, O_NONBLOCK = 0o4000, O_DIRECTORY = 0o200000;
const O_PATH = 0o10000000;
const F_SETFL = 4, F_DUPFD_CLOEXEC = 1030, KCMP_FILE = 0, SEEK_SET = 0;
/** Filesystems whose files are kernel views: their contents change by themselves. */
const PSEUDO_FS = new Set(['proc', 'sysfs', 'cgroup', 'cgroup2', 'debugfs', 'tracefs', 'securityfs', 'devpts', 'mqueue', 'bpf', 'configfs', 'pstore', 'efivarfs', 'fusectl', 'hugetlbfs']);

/** Flags that belong to the description and that open() accepts back. */
const KEEP_FLAGS = O_ACCMODE | C.O_APPEND | O_NONBLOCK | C.O_DIRECT | C.O_NOATIME | C.O_SYNC | C.O_DSYNC | O_PATH | 0o100000 /* O_LARGEFILE */;

export function fdKind(link: string, st: Stats): string {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'directory';
  if (st.isFIFO()) return link.startsWith('pipe:') ? 'pipe' : 'fifo';
  if (st.isCharacterDevice()) return 'chr';
  if (st.isBlockDevice()) return 'blk';
  if (st.isSocket()) return 'socket';
  if (link.startsWith('anon_inode:')) return 'anon';
  return 'unknown';
}

function describeFd(req: { fd: number; kind: string; link: string }): string {
  const anon = /^anon_inode:\[?([^\]]+)\]?$/.exec(req.link)?.[1];
  const what = anon ? `an ${anon}` : `a ${req.kind}`;
  return `fd ${req.fd} is ${what} (${req.link})`;
}

function makeDump(hooks: Hooks) {
  return async function dump(proc: ProcessDump): Promise<void> {
    const { pid } = proc;
    const pidfd = native.pidfdOpen(pid);
    const fds: FdRecord[] = [];
    // Descriptions already met in this dump, in any process of the tree.
    let seen = proc.session.objects.get(NAME) as SeenFd[] | undefined;
    if (!seen) proc.session.objects.set(NAME, (seen = []));
    try {
      for (const fd of procfs.listFds(pid)) {
        let link: string;
        try {
          link = procfs.fdLink(pid, fd);
        } catch {
          continue; // closed meanwhile (cannot happen while frozen, but harmless)
        }
        const info = procfs.readFdInfo(pid, fd);
        const cloexec = (info.flags & O_CLOEXEC) !== 0;
        const dupFd = native.pidfdGetfd(pidfd, fd);
        try {
          const stat = fstatSync(dupFd);
          const same = seen.find((s) => s.dev === stat.dev && s.ino === stat.ino && native.kcmp(s.pid, pid, KCMP_FILE, s.fd, fd) === 0);
          if (same) {
            const data: SharedData = same.pid === pid ? { sameAs: same.fd } : { sameAs: same.fd, pid: same.pid };
            fds.push({ fd, plugin: NAME, kind: same.kind, cloexec, data });
            continue;
          }
          const req: FdDumpRequest = { fd, link, info, dupFd, stat, kind: fdKind(link, stat) };
          const rec = await hooks.files.dumpFd.promise(req, proc);
          if (!rec) {
            throw new CkptError('ERR_CKPT_UNSUPPORTED_FD',
              `cannot checkpoint pid ${pid}: ${describeFd(req)}, and no loaded plugin handles that kind of file`,
              { hint: 'close it before the checkpoint, or add a plugin that handles it (see README: writing a plugin)' });
          }
          fds.push({ ...rec, fd, cloexec });
          seen.push({ pid, fd, dev: stat.dev, ino: stat.ino, kind: rec.kind });
        } finally {
          closeSync(dupFd);
        }
      }
    } finally {
      closeSync(pidfd);
    }
    proc.put(NAME, {
      fds,
      cwd: readlinkSync(`/proc/${pid}/cwd`),
      root: readlinkSync(`/proc/${pid}/root`),
      umask: parseInt(procfs.readStatus(pid).Umask ?? '022', 8),
    } satisfies FilesRecord);
  };
}

/** Both ends of every anonymous pipe must be inside the checkpoint (any process of the tree). */
function checkPipes(session: DumpSession): void {
  const ends = new Map<string, Set<string>>();
  const all = session.processes.flatMap((p) => (p.get<FilesRecord>(NAME)?.fds ?? []).map((r) => ({ ...r, pid: p.pid })));
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
    throw new CkptError('ERR_CKPT_UNSUPPORTED_FD',
      `cannot checkpoint pid ${pid}: fd ${fd} is one end of pipe:[${id}] whose ${missing} end is held by a process outside the checkpoint`,
      { hint: 'start the program with `ckpt run` (stdio to files), or redirect its stdio to files' });
  }
}

/** The built-in "reference" method: files, directories, devices, FIFOs and pipes. */
async function dumpByReference(req: FdDumpRequest, proc: ProcessDump): Promise<FdRecord | undefined> {
  const flags = req.info.flags & KEEP_FLAGS;
  const base = { fd: req.fd, plugin: NAME, kind: req.kind, cloexec: false };
  switch (req.kind) {
    case 'file': {
      if (req.link.startsWith('/memfd:') && req.link.endsWith(' (deleted)')) {
        const shmem = saveShmem(proc.session, `${devName(req.stat.dev)}:${req.stat.ino}`, req.link.slice(7, -' (deleted)'.length), req.dupFd);
        return { ...base, kind: 'memfd', data: { flags, pos: req.info.pos, shmem } satisfies ReferenceData };
      }
      if (req.link.endsWith(' (deleted)')) {
        throw new CkptError('ERR_CKPT_UNSUPPORTED_FD',
          `cannot checkpoint pid ${proc.pid}: fd ${req.fd} refers to a deleted file (${req.link}), which only @ckpt/plugin-file-content can save`);
      }
      // Method "reference" (a rule asking for "content" was served by the file-content plugin).
      const fsType = procfs.fsTypeOf(proc.pid, req.info.mntId) ?? '';
      const ruled = fileRuleFor(configuredFileRules(proc.session.services.config), {
        path: req.link, size: req.stat.size, unlinked: false, tmpfs: fsType === 'tmpfs',
        writable: (flags & O_ACCMODE) !== O_RDONLY, append: (flags & C.O_APPEND) !== 0,
      });
      // Files of kernel pseudo filesystems (/proc, /sys, ...) are views, not contents: reopened as they are.
      const policy = PSEUDO_FS.has(fsType) ? 'disk' : ruled.policy;
      const data: ReferenceData = {
        path: req.link, flags, pos: req.info.pos, policy,
        file: {
          size: req.stat.size, mtimeMs: req.stat.mtimeMs, ino: req.stat.ino,
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
        capacity: native.pipeSize(req.dupFd),
        data: readable ? native.peekPipe(req.dupFd).toString('base64') : undefined,
      };
      return { ...base, data: { path: req.kind === 'fifo' ? req.link : undefined, flags, pos: 0, pipe } satisfies ReferenceData };
    }
    default:
      return undefined;
  }
}

/** Pipe objects and FIFO keepers shared by every process of one restore. */
interface PipeTable {
  pipes: Map<string, { r: number; w: number }>;
  keepers: Map<string, number>;
  /** Our fd for every restored description, by "pid:fd" of its first holder. */
  descriptions: Map<string, number>;
  /** Pipes whose queued bytes are back in them. */
  filled: Set<string>;
}
const tables = new WeakMap<RestoreSession, PipeTable>();
function pipeTable(session: RestoreSession): PipeTable {
  let t = tables.get(session);
  if (!t) {
    const table: PipeTable = { pipes: new Map(), keepers: new Map(), descriptions: new Map(), filled: new Set() };
    tables.set(session, table);
    session.onRollback(() => closeTable(table));
    t = table;
  }
  return t;
}
function closeTable(t: PipeTable): void {
  for (const p of t.pipes.values()) for (const fd of [p.r, p.w]) closeQuietly(fd);
  for (const fd of t.keepers.values()) closeQuietly(fd);
  for (const fd of t.descriptions.values()) closeQuietly(fd);
  t.pipes.clear();
  t.keepers.clear();
  t.descriptions.clear();
}
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
      cause: e, hint: code === 'ENOENT' ? 'files opened by the process must exist at restore, as at dump time' : undefined,
    });
  }
}

async function restoreByReference(rec: FdRecord, proc: ProcessRestore): Promise<number | undefined> {
  if (rec.plugin !== NAME) return undefined;
  const d = rec.data as ReferenceData;
  switch (rec.kind) {
    case 'file':
    case 'directory':
    case 'chr': {
      const path = relocatePath(d.path!, proc.session.options.relocate);
      if (rec.kind === 'file' && d.file) {
        if (d.policy === 'verify') verifyFile(path, d.file, `fd ${rec.fd} of pid ${proc.pid}`);
        const st = statSyncSafe(path);
        if (st && st.size < d.pos && st.size > 0 && !(d.flags & C.O_APPEND)) {
          throw new CkptError('ERR_CKPT_RESTORE_FAILED',
            `file ${path} (fd ${rec.fd} of pid ${proc.pid}) is now ${st.size} bytes, shorter than the saved offset ${d.pos}`);
        }
      }
      const fd = openPath(path, d.flags | (rec.kind === 'directory' ? O_DIRECTORY : 0), proc.pid, rec.fd);
      if (d.pos && rec.kind !== 'chr') native.lseek(fd, d.pos, SEEK_SET);
      return fd;
    }
    case 'memfd': {
      const fd = native.fcntl(shmemFd(proc.session, d.shmem!), F_DUPFD_CLOEXEC, 0);
      native.lseek(fd, d.pos, SEEK_SET);
      return fd;
    }
    case 'fifo': {
      const t = pipeTable(proc.session);
      const id = d.pipe!.id;
      d.path = relocatePath(d.path!, proc.session.options.relocate);
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
      if (!(d.flags & O_NONBLOCK)) native.fcntl(fd, F_SETFL, d.flags & ~O_NONBLOCK);
      return fd;
    }
    case 'pipe': {
      const t = pipeTable(proc.session);
      const id = d.pipe!.id;
      let p = t.pipes.get(id);
      if (!p) {
        const [r, w] = native.pipe(0);
        p = { r, w };
        t.pipes.set(id, p);
        try {
          native.pipeSize(w, d.pipe!.capacity);
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
      native.fcntl(end, F_SETFL, d.flags & (O_NONBLOCK | C.O_DIRECT));
      return native.fcntl(end, F_DUPFD_CLOEXEC, 0);
    }
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

/** The stable id of an open file description in an image (ckpt show --files): its first holder. */
export function fileId(pid: number, fd: number): string {
  return `f${pid}.${fd}`;
}

/** --substitute: the restorer's fd N (duplicated), or a path opened like the original. */
function substitute(what: number | string, r: FdRecord, pid: number): number {
  if (typeof what === 'number') {
    try {
      return native.fcntl(what, F_DUPFD_CLOEXEC, 0);
    } catch {
      throw new CkptError('ERR_CKPT_USAGE', `--substitute ${fileId(pid, r.fd)}=${what}: fd ${what} is not open in ckpt restore`);
    }
  }
  const flags = (r.data as { flags?: number }).flags ?? O_RDWR;
  const writable = (flags & O_ACCMODE) !== O_RDONLY;
  try {
    return openSync(what, (flags & KEEP_FLAGS & ~O_PATH) | O_NOCTTY | (writable ? C.O_CREAT : 0), 0o644);
  } catch (e) {
    throw new CkptError('ERR_CKPT_USAGE', `--substitute ${fileId(pid, r.fd)}=${what}: cannot open it (${(e as NodeJS.ErrnoException).code})`);
  }
}

/** Every substitution must name a file of the image. */
async function checkSubstitutes(session: RestoreSession): Promise<void> {
  const ids = new Set<string>();
  for (const p of session.processes) {
    for (const r of p.get<FilesRecord>(NAME)?.fds ?? []) if ((r.data as SharedData).sameAs === undefined) ids.add(fileId(p.pid, r.fd));
  }
  for (const id of Object.keys(session.options.substitute ?? {})) {
    if (!ids.has(id)) throw new CkptError('ERR_CKPT_USAGE', `--substitute ${id}: the image has no open file with that id`, { hint: 'ckpt show DIR --files lists them' });
  }
}

function makeRestore(hooks: Hooks) {
  return async function restore(proc: ProcessRestore): Promise<void> {
    const rec = proc.get<FilesRecord>(NAME);
    const stub = proc.stub;
    if (!rec || !stub) return;
    const cwd = relocatePath(rec.cwd, proc.session.options.relocate);
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
    const ours = pipeTable(proc.session).descriptions;
    for (const r of rec.fds) {
      const shared = r.data as SharedData;
      const sub = shared.sameAs === undefined ? proc.session.options.substitute?.[fileId(proc.pid, r.fd)] : undefined;
      const fd = shared.sameAs !== undefined
        ? ours.get(`${shared.pid ?? proc.pid}:${shared.sameAs}`)
        : sub !== undefined
          ? substitute(sub, r, proc.pid)
          : await hooks.files.restoreFd.promise(r, proc);
      if (fd === undefined) {
        throw new CkptError('ERR_CKPT_RESTORE_FAILED', `no loaded plugin can restore fd ${r.fd} (${r.kind}, saved by ${r.plugin}) of pid ${proc.pid}`);
      }
      if (shared.sameAs === undefined) ours.set(`${proc.pid}:${r.fd}`, fd);
      proc.installFd(r.fd, fd, r.cloexec);
    }
  };
}

export const filesPlugin = definePlugin<void>(() => ({
  name: NAME,
  version: '0.1.0',
  apply(hooks) {
    hooks.files.dump.tapPromise(NAME, makeDump(hooks));
    hooks.session.afterDump.tapPromise(NAME, async (session) => checkPipes(session));
    hooks.session.beforeRestore.tapPromise(NAME, checkSubstitutes);
    hooks.files.dumpFd.tapPromise({ name: NAME, stage: STAGE.FALLBACK }, dumpByReference);
    hooks.files.restore.tapPromise(NAME, makeRestore(hooks));
    hooks.files.restoreFd.tapPromise({ name: NAME, stage: STAGE.FALLBACK }, restoreByReference);
    hooks.session.afterRestore.tapPromise(NAME, async (session) => {
      const t = tables.get(session);
      if (t) closeTable(t);
    });
  },
}));

export default filesPlugin;
