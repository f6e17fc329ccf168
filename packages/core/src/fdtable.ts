/**
 * Core's fd table: the walk over a process's fds at dump, the detection of open file
 * descriptions shared by several fds or processes, and the installation of every fd at restore.
 * Plugins only answer for the descriptions they own:
 *   dump:    per description, `fds.dump` (bail) asks the plugins; the first claim `{ kind, data }`
 *            owns it. An fd sharing a description met earlier (same or another process of the
 *            tree) is recorded as `sameAs` without asking anyone.
 *   restore: per description, `fds.restore.for(owner)` makes it in the restorer (an fd of ours),
 *            unless `--substitute` replaces it; core installs it at its number in every holder.
 */
import { closeSync, fstatSync, openSync, Stats } from 'node:fs';
import { constants as C } from 'node:fs';
import {
  native,
  O_ACCMODE,
  O_RDONLY,
  O_RDWR,
  O_NOCTTY,
  O_PATH,
  O_CLOEXEC,
  F_DUPFD_CLOEXEC,
  F_GETFL,
  F_GETSIG,
  F_SETFL,
  F_SETOWN_EX,
  F_SETSIG,
  FASYNC,
  KCMP_FILE,
  SYS,
} from '@ckpt/native';
import { CkptError } from './errors.js';
import { fdLink, parseFdInfo, readFdInfo, readFdTable, pidfdOf, type FdInfo } from './proc.js';
import { createSessionState } from './state.js';
import type { Hooks } from './hooks.js';
import type { CkptPlugin } from './plugin.js';
import type { DumpSession, FdDumpRequest, FdRecord, ProcessDump, ProcessRestore, RestoreSession } from './context.js';

/** Flags that belong to the description and that open() accepts back (for --substitute PATH). */
const REOPEN_FLAGS = O_ACCMODE | C.O_APPEND | C.O_NONBLOCK | C.O_DIRECT | C.O_NOATIME | C.O_SYNC | C.O_DSYNC | 0o100000;

/** The kind of an fd from its link and fstat: file, directory, pipe, fifo, chr, blk, socket, symlink, anon, unknown. */
export function fdKind(link: string, st: Stats): string {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'directory';
  if (st.isFIFO()) return link.startsWith('pipe:') ? 'pipe' : 'fifo';
  if (st.isCharacterDevice()) return 'chr';
  if (st.isBlockDevice()) return 'blk';
  if (st.isSocket()) return 'socket';
  if (st.isSymbolicLink()) return 'symlink'; // O_PATH|O_NOFOLLOW on a symbolic link
  if (link.startsWith('anon_inode:')) return 'anon';
  return 'unknown';
}

/**
 * fs.Stats from the numbers native.proc.takeFds gives for fd i, without the four Date objects
 * fs.fstatSync makes at once (2000 fds: 4 ms of the dump): its dates are made when read.
 */
function takenStats(fields: Float64Array, i: number): Stats {
  const at = i * 14;
  const st = Object.create(LazyDates) as Stats;
  const w = st as unknown as Record<string, number>;
  for (let k = 0; k < 14; k++) w[STAT_FIELDS[k]] = fields[at + k];
  return st;
}
const STAT_FIELDS = ['dev', 'mode', 'nlink', 'uid', 'gid', 'rdev', 'blksize', 'ino', 'size', 'blocks', 'atimeMs', 'mtimeMs', 'ctimeMs', 'birthtimeMs'];
const LazyDates: object = Object.create(
  Stats.prototype,
  Object.fromEntries(
    (['atime', 'mtime', 'ctime', 'birthtime'] as const).map((k) => [
      k,
      {
        get(this: Record<string, number>) {
          return new Date(Math.round(this[`${k}Ms`])); // as Node makes them
        },
        enumerable: true,
      },
    ]),
  ),
);

/** What the dump's batched first look (native.proc.takeFds) found for one fd. */
export interface Taken {
  /** Our duplicate (closed by the batch's close()). */
  dupFd: number;
  stat: Stats;
  /** F_GETOWN_EX and F_GETSIG; undefined where fcntl refused (an O_PATH fd). */
  own?: { type: number; pid: number; sig: number };
}

/**
 * Our duplicate of each fd of a process (by its pidfd), with its status and SIGIO owner, in one
 * native call: undefined for an fd the batch could not take or stat. close() closes every
 * duplicate it made.
 */
export function takeFds(pidfd: number, fds: readonly number[]): { fds: Array<Taken | undefined>; close(): void } {
  const { dup, stat, own } = native.proc.takeFds(pidfd, fds);
  return {
    fds: fds.map((_fd, i) =>
      dup[i] < 0 || Number.isNaN(stat[14 * i])
        ? undefined
        : { dupFd: dup[i], stat: takenStats(stat, i), own: own[3 * i] < 0 ? undefined : { type: own[3 * i], pid: own[3 * i + 1], sig: own[3 * i + 2] } },
    ),
    close: () => native.fd.closeAll(Array.from(dup).filter((fd) => fd >= 0)),
  };
}

/** Socket families by number, as a refusal names them. */
const FAMILIES: Record<number, string> = {
  1: 'unix',
  2: 'IPv4',
  3: 'AX.25',
  4: 'IPX',
  5: 'AppleTalk',
  9: 'X.25',
  10: 'IPv6',
  15: 'PF_KEY',
  16: 'netlink',
  17: 'packet (AF_PACKET)',
  21: 'RDS',
  29: 'CAN',
  30: 'TIPC',
  31: 'Bluetooth',
  38: 'crypto (AF_ALG)',
  40: 'vsock',
  44: 'XDP (AF_XDP)',
  45: 'MCTP',
};
const SOCK_TYPES: Record<number, string> = { 1: 'stream', 2: 'datagram', 3: 'raw', 4: 'RDM', 5: 'seqpacket', 10: 'packet' };

function describeFd(req: { fd: number; kind: string; link: string; dupFd?: number; info?: { extra: Record<string, string> } }): string {
  const anon = /^anon_inode:\[?([^\]]+)\]?$/.exec(req.link)?.[1];
  let what = anon ? `an ${anon}` : `a ${req.kind}`;
  if (req.kind === 'socket' && req.dupFd !== undefined) {
    try {
      const s = native.sock.sockInfo(req.dupFd);
      const family = FAMILIES[s.domain] ?? `family ${s.domain}`;
      what = `${/^([AEIOU]|X\.|RDS|MCTP)/i.test(family) ? 'an' : 'a'} ${family} ${SOCK_TYPES[s.type] ?? `type ${s.type}`} socket (protocol ${s.protocol})`;
    } catch {
      /* keep the kind */
    }
  } else if (req.info?.extra.iff) {
    what = `a tun/tap device fd attached to network interface ${req.info.extra.iff}`;
  }
  return `fd ${req.fd} is ${what} (${req.link})`;
}

/** The stable id of an open file description in an image (ckpt show --files): its first holder. */
export function fileId(pid: number, fd: number): string {
  return `f${pid}.${fd}`;
}

interface Seen {
  pid: number;
  /** The task kcmp looks at (its procPid), and the fd there (ours, for a file in flight). */
  task: number;
  fd: number;
  /** The number its record has (the fd, or a file in flight's id). */
  id: number;
  kind: string;
  owner: string;
}

/**
 * Descriptions met so far in a dump, by dev:ino (kcmp only runs among fds of one inode), each
 * inode's in kcmp's order of their files (see lookUp).
 */
const seenByInode = createSessionState('core:fd-descriptions', (_s: DumpSession) => new Map<string, Seen[]>());

/**
 * The description met before that fd `fd` of `task` is (kcmp KCMP_FILE: the same open file), or
 * where in `list` a new one goes. kcmp orders two files by their kernel address (obfuscated, but
 * an order), so the list is kept sorted by it and searched by halves: a search of the list one by
 * one made n descriptions of one inode (a tree whose every process opened the same file) cost
 * n²/2 calls, 2000 for 64 processes.
 */
function lookUp(list: readonly Seen[], task: number, fd: number): { same?: Seen; at: number } {
  let lo = 0,
    hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    // 0: the same file; 1: list[mid]'s comes first; 2: ours does.
    const r = native.proc.kcmp(list[mid].task, task, KCMP_FILE, list[mid].fd, fd);
    if (r === 0) return { same: list[mid], at: mid };
    if (r === 1) lo = mid + 1;
    else hi = mid;
  }
  return { at: lo };
}

/**
 * Files in flight saved so far: their ids (negative, never fd numbers), and our duplicates of
 * them, kept open until the dump ends so that a later holder of one is found by kcmp.
 */
const inFlight = createSessionState('core:in-flight', (_s: DumpSession) => ({ next: -1, dups: [] as number[] }), {
  dispose: (st) => {
    for (const fd of st.dups) closeQuietly(fd);
  },
});

/**
 * One fd of a frozen process through the fds.dump pipeline: the record of its description, or
 * a record naming the description an earlier fd (of any process) holds. `fd` is where it is in
 * the process; `id` the number the record gets (the fd, or a file in flight's id); `keep`: our
 * duplicate stays open (returned) for later kcmp, else it is closed.
 */
async function fdRecord(
  hooks: Hooks,
  proc: ProcessDump,
  pidfd: number,
  fd: number,
  id: number,
  keep: boolean,
  read?: { link: string; info: string },
  taken?: Taken,
): Promise<{ rec: FdRecord; dup?: number } | undefined> {
  const { pid, procPid: task } = proc;
  const seen = seenByInode.of(proc.session);
  let link: string;
  let info: FdInfo;
  try {
    link = read ? read.link : fdLink(task, fd);
    info = read ? parseFdInfo(read.info) : readFdInfo(task, fd);
  } catch {
    return undefined; // closed meanwhile (cannot happen while frozen, but harmless)
  }
  if (id === fd) proc.fdInfo.set(fd, info);
  const cloexec = (info.flags & O_CLOEXEC) !== 0;
  const flags = info.flags & ~O_CLOEXEC;
  // A duplicate taken by the caller is the caller's to close.
  const dupFd = taken ? taken.dupFd : native.proc.pidfdGetfd(pidfd, fd);
  let kept = !!taken;
  try {
    const stat = taken ? taken.stat : fstatSync(dupFd);
    const ino = `${stat.dev}:${stat.ino}`;
    let list = seen.get(ino);
    const { same, at: place } = list ? lookUp(list, task, fd) : { same: undefined, at: 0 };
    const known = list?.length ?? 0;
    if (same) return { rec: { fd: id, cloexec, owner: same.owner, kind: same.kind, flags, sameAs: { pid: same.pid, fd: same.id } } };
    const req: FdDumpRequest = { fd, link, info, dupFd, stat, kind: fdKind(link, stat) };
    const claim = (await hooks.fds.dump.promise(req, proc)) as (FdRecord & { owner: string }) | undefined;
    if (!claim) {
      throw new CkptError('ERR_CKPT_UNSUPPORTED_FD', `cannot checkpoint pid ${pid}: ${describeFd(req)}, and no loaded plugin handles that kind of file`, {
        hint: 'close it before the checkpoint, or add a plugin that handles it (see docs/plugins.md)',
      });
    }
    const fown = readFown(proc, fd, dupFd, flags, taken && (taken.own ?? null));
    // A plugin's tap may have saved a file in flight of this inode meanwhile (dumpInFlight).
    list = seen.get(ino);
    const at = list && list.length !== known ? lookUp(list, task, fd).at : place;
    if (!list) seen.set(ino, (list = []));
    // A file in flight is found again through our duplicate (its fd in the process goes): the
    // same file, so in the same place of kcmp's order.
    list.splice(
      at,
      0,
      keep ? { pid, task: process.pid, fd: dupFd, id, kind: claim.kind, owner: claim.owner } : { pid, task, fd, id, kind: claim.kind, owner: claim.owner },
    );
    kept ||= keep;
    return {
      rec: { fd: id, cloexec, owner: claim.owner, kind: claim.kind, flags, data: claim.data, ...(fown ? { fown } : {}) },
      ...(keep ? { dup: dupFd } : {}),
    };
  } finally {
    if (!kept) closeSync(dupFd);
  }
}

/** Walks the fds of a frozen process into its fd table (start of the files stage). */
export async function dumpFdTable(hooks: Hooks, proc: ProcessDump): Promise<void> {
  const pidfd = pidfdOf(proc);
  try {
    // Every fd's link and fdinfo read first, in one call each; then our duplicates of a few at a
    // time, each with its status and SIGIO owner, in one call (held until those are through the
    // pipeline).
    const { fds, read } = readFdTable(proc.procPid);
    for (let from = 0; from < fds.length; from += TAKE_AT_ONCE) {
      const part = fds.slice(from, from + TAKE_AT_ONCE);
      const taken = takeFds(pidfd, part);
      try {
        for (let i = 0; i < part.length; i++) {
          const got = read[from + i];
          // Gone (closed meanwhile: cannot happen while frozen, but harmless).
          if (!got) continue;
          // Where the batch failed, fdRecord takes it alone (and says why it cannot).
          const r = await fdRecord(hooks, proc, pidfd, part[i], part[i], false, got, taken.fds[i]);
          if (r) proc.fds.push(r.rec);
        }
      } finally {
        taken.close();
      }
    }
  } finally {
    closeSync(pidfd);
  }
}

/**
 * How many fds dumpFdTable duplicates at a time. Few: more would grow our fd table, and the
 * kernel waits for an RCU grace period at each growth of a multithreaded process's table (2000
 * at once took 38 ms here, 32 at a time 8; one at a time 20).
 */
const TAKE_AT_ONCE = 32;

/**
 * A file in flight (e.g. passed with SCM_RIGHTS and not yet received), made to appear for the
 * moment at fd `fd` of the frozen process: saved like any fd, under a new id (negative), in the
 * process's inFlight list. Returns the id.
 */
export async function dumpInFlight(hooks: Hooks, proc: ProcessDump, fd: number): Promise<number> {
  const st = inFlight.of(proc.session);
  const id = st.next--;
  const pidfd = pidfdOf(proc);
  try {
    const r = await fdRecord(hooks, proc, pidfd, fd, id, true);
    if (!r) throw new CkptError('ERR_CKPT_DUMP_FAILED', `pid ${proc.pid}: the file in flight at fd ${fd} went away`);
    if (r.dup !== undefined) st.dups.push(r.dup);
    proc.inFlight.push(r.rec);
    return id;
  } finally {
    closeSync(pidfd);
  }
}

/**
 * Every fd record of the image by "pid:n" (n: the fd, or a file in flight's negative id), with its
 * process: descriptionOf looks one up per fd, which a search of the process's list made quadratic.
 */
const records = createSessionState('core:fd-records', (session: RestoreSession) => {
  const m = new Map<string, { proc: ProcessRestore; r: FdRecord }>();
  for (const proc of session.processes) {
    for (const r of proc.record.fds) m.set(`${proc.pid}:${r.fd}`, { proc, r });
    for (const r of proc.record.inFlight ?? []) m.set(`${proc.pid}:${r.fd}`, { proc, r });
  }
  return m;
});

/**
 * Our fd (in the restorer) of every description restored, by "pid:fd" of its first holder: closed
 * together in one native call (2000 closes one by one through Node: 5 ms of a restore).
 */
const descriptions = createSessionState('core:fd-descriptions', (_s: RestoreSession) => new Map<string, number>(), {
  dispose: (m) => native.fd.closeAll([...m.values()]),
});

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    /* closed */
  }
}

/** Every --substitute must name a description of the image (checked before anything is made). */
export function checkSubstitutes(session: RestoreSession): void {
  const ids = new Set<string>();
  for (const p of session.processes) for (const r of p.fds) if (!r.sameAs) ids.add(fileId(p.pid, r.fd));
  for (const id of Object.keys(session.options.substitute ?? {})) {
    if (!ids.has(id))
      throw new CkptError('ERR_CKPT_USAGE', `--substitute ${id}: the image has no open file with that id`, { hint: 'ckpt show DIR --files lists them' });
  }
}

/**
 * The name of an open file description, as `ckpt show --files` prints it and --inherit-fd matches
 * it: its owner's show.fdName (`pipe:[ID]`, a socket's address...), else the path in its data.
 */
export function descriptionName(owner: CkptPlugin | undefined, r: FdRecord, pid: number): string | undefined {
  const own = owner?.show?.fdName?.(r, pid);
  if (own) return own;
  const path = (r.data as { path?: unknown } | undefined)?.path;
  return typeof path === 'string' ? path : undefined;
}

/**
 * --inherit-fd: every open file description of the image named `resource` (by its owner's
 * show.fdName, as `ckpt show --files` names it) is substituted by restorer fd `fd`. Returns the
 * substitutions to merge with --substitute's; a resource the image does not hold is an error.
 */
export function inheritedSubstitutes(
  inherit: ReadonlyArray<{ fd: number; resource: string }>,
  procs: ReadonlyArray<{ pid: number; fds: readonly FdRecord[] }>,
  nameOf: (r: FdRecord, pid: number) => string | undefined,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const { fd, resource } of inherit) {
    const want = resource.replace(/^(pipe|socket):(\d+)$/, '$1:[$2]');
    const hits = openDescriptions(procs).filter((d) => nameOf(d.record, d.pid) === want);
    if (!hits.length) {
      throw new CkptError('ERR_CKPT_USAGE', `--inherit-fd ${fd}:${resource}: the image has no open file named ${want}`, {
        hint: 'ckpt show DIR --files lists the names (third field)',
      });
    }
    for (const d of hits) out[fileId(d.pid, d.fd)] = fd;
  }
  return out;
}

/** --substitute: the restorer's fd N (duplicated), or a path opened like the original. */
function substitute(what: number | string, r: FdRecord, pid: number): number {
  if (typeof what === 'number') {
    try {
      return native.fd.fcntl(what, F_DUPFD_CLOEXEC, 0);
    } catch {
      throw new CkptError('ERR_CKPT_USAGE', `--substitute ${fileId(pid, r.fd)}=${what}: fd ${what} is not open in ckpt restore`);
    }
  }
  const flags = r.flags ?? O_RDWR;
  const writable = (flags & O_ACCMODE) !== O_RDONLY;
  try {
    return openSync(what, (flags & REOPEN_FLAGS & ~O_PATH) | O_NOCTTY | (writable ? C.O_CREAT : 0), 0o644);
  } catch (e) {
    throw new CkptError('ERR_CKPT_USAGE', `--substitute ${fileId(pid, r.fd)}=${what}: cannot open it (${(e as NodeJS.ErrnoException).code})`);
  }
}

const OWNER_KIND = ['thread', 'process', 'process group'];

/**
 * The description's SIGIO owner and signal (F_GETOWN_EX, F_GETSIG), when set. The owner must be
 * a task of the tree: the restored description signals the restored task, never whoever holds
 * that pid by then. `read`: both as takeFds read them (null: fcntl refused), else read here.
 */
function readFown(proc: ProcessDump, fd: number, dupFd: number, flags: number, read?: { type: number; pid: number; sig: number } | null): FdRecord['fown'] {
  if (flags & O_PATH || read === null) return undefined;
  let owner: { type: number; pid: number };
  let sig: number;
  if (read) {
    owner = read;
    sig = read.sig;
  } else {
    try {
      owner = native.fd.getOwnerEx(dupFd);
      sig = native.fd.fcntl(dupFd, F_GETSIG, 0);
    } catch {
      return undefined;
    }
  }
  if (!owner.pid && !sig) return undefined;
  if (owner.pid) {
    const all = proc.session.processes;
    const known =
      owner.type === 0
        ? all.some((p) => p.threads.some((t) => t.pid === owner.pid))
        : owner.type === 1
          ? all.some((p) => p.pid === owner.pid)
          : all.some((p) => p.pgid === owner.pid);
    if (!known) {
      throw new CkptError(
        'ERR_CKPT_UNSUPPORTED_FD',
        `cannot checkpoint pid ${proc.pid}: fd ${fd} sends SIGIO to ${OWNER_KIND[owner.type] ?? 'task'} ${owner.pid}, which is not in the checkpoint`,
        { hint: 'checkpoint the tree that holds that process too, or clear the owner (fcntl F_SETOWN 0)' },
      );
    }
  }
  return { type: owner.type, pid: owner.pid, sig };
}

/**
 * O_ASYNC, the SIGIO owner and signal of a description again, in the process: its pids are its
 * namespace's, and the kernel reports the fd number O_ASYNC was set through as si_fd.
 */
function restoreFown(proc: ProcessRestore, r: FdRecord): void {
  if (!(r.flags & FASYNC) && !r.fown) return;
  const stub = proc.stub!;
  if (r.flags & FASYNC) stub.syscall(SYS.fcntl, r.fd, F_SETFL, Number(stub.syscall(SYS.fcntl, r.fd, F_GETFL, 0)) | FASYNC);
  if (!r.fown) return;
  if (r.fown.pid) {
    const own = Buffer.alloc(8);
    own.writeInt32LE(r.fown.type, 0);
    own.writeInt32LE(proc.session.vpid(r.fown.pid), 4);
    stub.syscall(SYS.fcntl, r.fd, F_SETOWN_EX, stub.put(own, 4096));
  }
  if (r.fown.sig) stub.syscall(SYS.fcntl, r.fd, F_SETSIG, r.fown.sig);
}

/**
 * Our fd (in the restorer) of the description of record `n` of process `pid` — an fd of its table
 * (n >= 0) or a file in flight (n < 0, dumpInFlight) — made on first use by its owner's
 * fds.restore (or a --substitute / --inherit-fd), or the description it shares (sameAs, followed).
 * On demand, so that a description named before its turn (a file in flight that an fd of a later
 * process shares) is made once, whoever asks first.
 */
export async function descriptionOf(hooks: Hooks, session: RestoreSession, pid: number, n: number): Promise<number> {
  const ours = descriptions.of(session);
  const known = ours.get(`${pid}:${n}`);
  if (known !== undefined) return known;
  const { proc, r } = records.of(session).get(`${pid}:${n}`) ?? {};
  const what = n >= 0 ? `fd ${n} of pid ${pid}` : `a file in flight to pid ${pid}`;
  if (!proc || !r) throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `the image names ${what}, which it does not hold`);
  if (r.sameAs) return descriptionOf(hooks, session, r.sameAs.pid, r.sameAs.fd);
  let fd: number | undefined;
  const sub = n >= 0 ? session.options.substitute?.[fileId(pid, n)] : undefined;
  if (sub !== undefined) fd = substitute(sub, r, pid);
  else {
    const hook = hooks.fds.restore.get(r.owner);
    if (!hook) {
      throw new CkptError('ERR_CKPT_CONFIG', `${what} (${r.kind}) was saved by plugin ${r.owner}, which restores no fds here`, {
        hint: `load ${r.owner} (list it in ckpt.config.json or pass --plugin ${r.owner})`,
      });
    }
    fd = await hook.promise(r, proc);
  }
  if (fd === undefined) throw new CkptError('ERR_CKPT_RESTORE_FAILED', `plugin ${r.owner} did not restore ${what} (${r.kind})`);
  ours.set(`${pid}:${n}`, fd);
  return fd;
}

/**
 * Grows this process's fd table at once to take `count` more fds. The kernel grows a table by
 * doubling it as fds are opened, and in a multithreaded process (Node's) it waits for an RCU grace
 * period at each growth: 2000 files opened one after the other took 38 ms here, 9.5 in a table
 * that had room. One growth to the size needed costs one grace period (6-7 ms). Best effort: past
 * RLIMIT_NOFILE it does nothing (the opens then fail as they would have).
 */
export function reserveFds(count: number): void {
  if (count < 64) return;
  let probe: number | undefined;
  try {
    // The lowest free fd: where the opens begin.
    probe = openSync('/', O_PATH | O_CLOEXEC);
    closeSync(native.fd.fcntl(probe, F_DUPFD_CLOEXEC, probe + count));
  } catch {
    /* past the limit */
  } finally {
    if (probe !== undefined) closeSync(probe);
  }
}

/** Makes every description of the process (or reuses a shared one) and installs each fd at its number. */
export async function restoreFdTable(hooks: Hooks, proc: ProcessRestore): Promise<void> {
  // A table shared with the parent (CLONE_FILES) is the parent's, installed already.
  const tableOfParent = proc.record.sharesWithParent?.includes('files');
  const install: Array<{ fd: number; restorerFd: number; cloexec: boolean }> = [];
  for (const r of proc.fds) {
    const fd = await descriptionOf(hooks, proc.session, proc.pid, r.fd);
    if (!tableOfParent) install.push({ fd: r.fd, restorerFd: fd, cloexec: r.cloexec });
  }
  // All at once: one stop of the process, not three remote syscalls per fd.
  proc.installFds(install);
  for (const r of proc.fds) if (!r.sameAs) restoreFown(proc, r);
}

/** Our fd for a description installed in a process (the first holder's or a sharer's). */
export function restorerFdOf(proc: ProcessRestore, fd: number): number | undefined {
  const ours = descriptions.peek(proc.session);
  if (!ours) return undefined;
  const r = records.of(proc.session).get(`${proc.pid}:${fd}`)?.r;
  if (!r) return undefined;
  return r.sameAs ? ours.get(`${r.sameAs.pid}:${r.sameAs.fd}`) : ours.get(`${proc.pid}:${fd}`);
}

/** One open file description of an image, with every fd holding it ("pid:fd", its first holder first). */
export interface OpenDescription<D = unknown> {
  pid: number;
  fd: number;
  record: FdRecord<D>;
  holders: string[];
}

/** The open file descriptions of the given processes (of one owner, if given), sharers gathered. */
export function openDescriptions<D = unknown>(procs: ReadonlyArray<{ pid: number; fds: readonly FdRecord[] }>, owner?: string): OpenDescription<D>[] {
  const out: OpenDescription<D>[] = [];
  const byHolder = new Map<string, OpenDescription<D>>();
  for (const p of procs) {
    for (const f of p.fds) {
      if (owner !== undefined && f.owner !== owner) continue;
      if (f.sameAs) {
        byHolder.get(`${f.sameAs.pid}:${f.sameAs.fd}`)?.holders.push(`${p.pid}:${f.fd}`);
        continue;
      }
      const d: OpenDescription<D> = { pid: p.pid, fd: f.fd, record: f as FdRecord<D>, holders: [`${p.pid}:${f.fd}`] };
      out.push(d);
      byHolder.set(`${p.pid}:${f.fd}`, d);
    }
  }
  return out;
}
