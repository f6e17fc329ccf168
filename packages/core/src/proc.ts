/** Readers of /proc/PID: the kernel's own view of a process, parsed once, typed. */
import { readFileSync, readdirSync, readlinkSync, existsSync } from 'node:fs';
import { native, NativeError, PIDFD_THREAD } from '@ckpt/native';

export interface Vma {
  start: number;
  end: number;
  /** 'r' | '-' etc., as in /proc/PID/maps: e.g. "rw-p". */
  perms: string;
  offset: number;
  dev: string;
  inode: number;
  /** Path or pseudo name ([heap], [stack], [vdso], ...); '' for anonymous. */
  name: string;
  /** VmFlags from smaps (e.g. "rd wr mr mw me gd ac"), when read from smaps. */
  flags?: string[];
  /** KernelPageSize from smaps, in bytes (2 MiB, 1 GiB for huge pages), when read from smaps. */
  pageSize?: number;
}

/** A hex field of /proc as a number: by parseInt where it is exact (up to 2^52), else by BigInt. */
function hex(s: string): number {
  return s.length <= 13 ? Number.parseInt(s, 16) : Number(BigInt(`0x${s}`));
}

export function parseMaps(text: string): Vma[] {
  const out: Vma[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) (\S+) (\d+)\s*(.*)$/.exec(line);
    if (!m) continue;
    const start = hex(m[1]);
    if (start >= 2 ** 47) continue; // [vsyscall] and other kernel-half entries
    out.push({
      start,
      end: hex(m[2]),
      perms: m[3],
      offset: hex(m[4]),
      dev: m[5],
      inode: Number(m[6]),
      name: m[7] ?? '',
    });
  }
  return out;
}

/** /proc/PID/smaps: the maps entries with their VmFlags. */
export function readVmas(pid: number): Vma[] {
  return parseSmaps(readFileSync(`/proc/${pid}/smaps`, 'utf8'));
}

/**
 * The text of /proc/PID/smaps: the maps entries with their VmFlags and page size. Of an area's
 * two dozen lines only three are read: a line is told by its first character (an area's line
 * starts with a lowercase hex digit, a field's with a capital letter), not split off and matched
 * (a 64-process tree's smaps, parsed here: 13 ms → 3 a dump).
 */
export function parseSmaps(text: string): Vma[] {
  const vmas: Vma[] = [];
  let cur: Vma | undefined;
  for (let at = 0; at < text.length; ) {
    let nl = text.indexOf('\n', at);
    if (nl < 0) nl = text.length;
    const c = text.charCodeAt(at);
    if ((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66)) {
      cur = parseMaps(text.slice(at, nl))[0];
      if (cur) vmas.push(cur);
    } else if (cur && c === 0x56 && text.startsWith('VmFlags:', at)) {
      cur.flags = text
        .slice(at + 8, nl)
        .trim()
        .split(/\s+/);
    } else if (cur && c === 0x4b && text.startsWith('KernelPageSize:', at)) {
      cur.pageSize = Number.parseInt(text.slice(at + 15, nl), 10) * 1024;
    }
    at = nl + 1;
  }
  return vmas;
}

export function readMaps(pid: number): Vma[] {
  return parseMaps(readFileSync(`/proc/${pid}/maps`, 'utf8'));
}

export interface ProcStat {
  pid: number;
  comm: string;
  state: string;
  ppid: number;
  pgid: number;
  sid: number;
  ttyNr: number;
  flags: number;
  numThreads: number;
  startTime: number;
  startCode: number;
  endCode: number;
  startStack: number;
  startData: number;
  endData: number;
  startBrk: number;
  argStart: number;
  argEnd: number;
  envStart: number;
  envEnd: number;
  exitCode: number;
}

/**
 * st_dev as /proc/PID/maps prints it (major:minor in hex): with the inode, the key of core's
 * saved-once objects, so that fds, mappings and watches of one deleted file agree.
 */
export function devName(dev: number): string {
  const major = (dev >>> 8) & 0xfff,
    minor = (dev & 0xff) | ((dev >>> 12) & 0xfff00);
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}`;
}

export function readStat(pid: number, tid?: number): ProcStat {
  return parseStat(readFileSync(tid ? `/proc/${pid}/task/${tid}/stat` : `/proc/${pid}/stat`, 'utf8'));
}

/** The text of a /proc/PID/stat, parsed. */
export function parseStat(text: string): ProcStat {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  const comm = text.slice(open + 1, close);
  const f = text
    .slice(close + 2)
    .trim()
    .split(' ');
  // f[0] is field 3 (state); field N is f[N - 3].
  const n = (k: number) => Number(f[k - 3]);
  return {
    pid: Number(text.slice(0, open).trim()),
    comm,
    state: f[0],
    ppid: n(4),
    pgid: n(5),
    sid: n(6),
    ttyNr: n(7),
    flags: n(9),
    numThreads: n(20),
    startTime: n(22),
    startCode: n(26),
    endCode: n(27),
    startStack: n(28),
    startData: n(45),
    endData: n(46),
    startBrk: n(47),
    argStart: n(48),
    argEnd: n(49),
    envStart: n(50),
    envEnd: n(51),
    exitCode: n(52),
  };
}

/** /proc/PID/status (or, with tid, /proc/PID/task/TID/status) as "Key" -> value. */
export function readStatus(pid: number, tid?: number): Record<string, string> {
  return parseStatus(readFileSync(tid === undefined ? `/proc/${pid}/status` : `/proc/${pid}/task/${tid}/status`, 'utf8'));
}

/** A status file's text as "Key" -> value. */
export function parseStatus(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

/**
 * Only the given keys of a status file's text, "Key" -> value (a key it lacks is left out): a
 * handful of indexOf where parseStatus splits and keeps its fifty-odd lines, for code that reads
 * the status of every thread.
 */
export function statusFields(text: string, keys: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of keys) {
    let at = text.startsWith(`${k}:`) ? 0 : text.indexOf(`\n${k}:`);
    if (at < 0) continue;
    if (at > 0) at += 1;
    const from = at + k.length + 1;
    const end = text.indexOf('\n', from);
    out[k] = text.slice(from, end < 0 ? text.length : end).trim();
  }
  return out;
}

/**
 * /proc/PID/task/TID/NAME of each of the threads, read in one native call (a readFileSync each
 * costs more than the kernel's read of the file): its text, or undefined for a thread gone.
 */
export function readTaskFiles(pid: number, tids: readonly number[], name: string): Array<string | undefined> {
  return native.proc.readTexts(tids.map((tid) => `/proc/${pid}/task/${tid}/${name}`)).map((t) => t ?? undefined);
}

/**
 * /proc files of many processes at once (native.proc.readTexts: one call, on every CPU): each
 * one's paths(p), as a map of path to text (null where unreadable), by process. What a dumpAll tap
 * reads so for each process's own tap (a frozen process's files do not change).
 */
export function readTextsOf<P>(procs: readonly P[], paths: (p: P) => string[]): Map<P, Map<string, string | null>> {
  const each = procs.map(paths);
  const texts = native.proc.readTexts(each.flat());
  let k = 0;
  return new Map(procs.map((p, i) => [p, new Map(each[i].map((path) => [path, texts[k++]]))]));
}

/**
 * A /proc file's text as readTextsOf read it ahead (`ahead`, a process's map), else read now: a
 * file the read ahead could not read is read again, so that the error thrown is the file's own.
 */
export function textAhead(ahead: ReadonlyMap<string, string | null> | undefined, path: string): string {
  return ahead?.get(path) ?? readFileSync(path, 'utf8');
}

/** readTaskFiles of threads that must all be there (frozen): throws for one that is gone. */
export function readFrozenTaskFiles(pid: number, tids: readonly number[], name: string): string[] {
  return readTaskFiles(pid, tids, name).map((text, i) => {
    if (text === undefined)
      throw new NativeError({ message: `/proc/${pid}/task/${tids[i]}/${name}: the thread is gone`, code: 'ESRCH', syscall: 'open', pid: tids[i] });
    return text;
  });
}

export function listThreads(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`)
    .map(Number)
    .sort((a, b) => a - b);
}

export function listFds(pid: number): number[] {
  return readdirSync(`/proc/${pid}/fd`)
    .map(Number)
    .sort((a, b) => a - b);
}

export function fdLink(pid: number, fd: number): string {
  return readlinkSync(`/proc/${pid}/fd/${fd}`);
}

export interface FdInfo {
  pos: number;
  flags: number;
  mntId: number;
  ino: number;
  /** Every other line of /proc/PID/fdinfo/FD as key: value (eventfd-count, sigmask, ...). */
  extra: Record<string, string>;
  /** The whole text (for repeated lines: epoll's tfd, inotify's wd, locks). */
  raw: string;
}

export function readFdInfo(pid: number, fd: number): FdInfo {
  return parseFdInfo(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
}

/**
 * Every fd of a process (ascending), with its link and fdinfo text (undefined where the fd is
 * gone), in one native call: a JS read of each cost more than the kernel's, and the native one
 * reads each relative to its directory.
 */
export function readFdTable(pid: number): { fds: number[]; read: Array<{ link: string; info: string } | undefined> } {
  const { fds, links, infos } = native.proc.readFdTable(pid);
  return {
    fds: Array.from(fds),
    read: links.map((link, i) => {
      const info = infos[i];
      return link === null || info === null ? undefined : { link, info };
    }),
  };
}

/**
 * The link and fdinfo text of each of the given fds, read in one native call each: undefined
 * where the fd is gone. (The dump reads a whole table with readFdTable.)
 */
export function readFds(pid: number, fds: readonly number[]): Array<{ link: string; info: string } | undefined> {
  const links = native.proc.readLinks(fds.map((fd) => `/proc/${pid}/fd/${fd}`));
  const infos = native.proc.readTexts(fds.map((fd) => `/proc/${pid}/fdinfo/${fd}`));
  return fds.map((_fd, i) => {
    const link = links[i],
      info = infos[i];
    return link === null || info === null ? undefined : { link, info };
  });
}

/** An fdinfo file's text, parsed. */
export function parseFdInfo(raw: string): FdInfo {
  const extra: Record<string, string> = {};
  let pos = 0,
    flags = 0,
    mntId = 0,
    ino = 0;
  for (const line of raw.split('\n')) {
    const i = line.indexOf(':');
    if (i < 0) continue;
    const k = line.slice(0, i);
    const v = line.slice(i + 1).trim();
    if (k === 'pos') pos = Number(v);
    else if (k === 'flags') flags = parseInt(v, 8);
    else if (k === 'mnt_id') mntId = Number(v);
    else if (k === 'ino') ino = Number(v);
    else extra[k] = v;
  }
  return { pos, flags, mntId, ino, extra, raw };
}

export function processExists(pid: number): boolean {
  return Number.isInteger(pid) && pid > 0 && existsSync(`/proc/${pid}`);
}

/** Short description of whoever holds a pid now, for error messages. */
export function describePid(pid: number): string {
  try {
    const st = readStat(pid);
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
    return `${st.comm} (state ${st.state}${cmd ? `, command: ${cmd.slice(0, 120)}` : ''})`;
  } catch {
    return 'an unknown process';
  }
}

export const PF_KTHREAD = 0x00200000;

export function readAuxv(pid: number): Buffer {
  return readFileSync(`/proc/${pid}/auxv`);
}

export function readExe(pid: number): string {
  return readlinkSync(`/proc/${pid}/exe`);
}

/** Every process on the system (thread group leaders), from /proc. */
export function listPids(): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number);
}

export interface TreeNode {
  pid: number;
  ppid: number;
  state: string;
  /** Its stat as the walk read it. */
  stat: ProcStat;
}

/** root and all its descendants, parents before children (siblings by pid). */
export function processTree(root: number): TreeNode[] {
  if (!hasChildrenFiles()) return processTreeByScan(root);
  // In one native call (children files, then each child's stat, its parent checked there: a pid
  // reaped and reused meanwhile is not a child any more).
  return native.proc.treeWalk(root).map((text) => {
    const stat = parseStat(text);
    return { pid: stat.pid, ppid: stat.ppid, state: stat.state, stat };
  });
}

/**
 * The children of a process (host pids): /proc/PID/task/TID/children of each of its threads (a
 * child's parent is the thread that forked it). Exact for a frozen process; of a running one it
 * may miss a child forked meanwhile, which a second look after the freeze finds (freezeTree).
 */
export function childrenOf(pid: number): number[] {
  let tids: number[];
  try {
    tids = listThreads(pid);
  } catch {
    return []; // gone
  }
  const out: number[] = [];
  // A thread that exited meanwhile has no file: nothing to add.
  for (const text of readTaskFiles(pid, tids, 'children')) for (const w of (text ?? '').split(' ')) if (w) out.push(Number(w));
  return [...new Set(out)];
}

let childrenFiles: boolean | undefined;
/** Whether this kernel has /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN). */
function hasChildrenFiles(): boolean {
  childrenFiles ??= existsSync(`/proc/self/task/${process.pid}/children`);
  return childrenFiles;
}

/** processTree from a scan of every process on the system (a kernel without children files). */
function processTreeByScan(root: number): TreeNode[] {
  const byParent = new Map<number, TreeNode[]>();
  for (const pid of listPids()) {
    let st: ProcStat;
    try {
      st = readStat(pid);
    } catch {
      continue;
    }
    const node = { pid, ppid: st.ppid, state: st.state, stat: st };
    const list = byParent.get(st.ppid) ?? [];
    list.push(node);
    byParent.set(st.ppid, list);
  }
  const rootStat = readStat(root);
  const out: TreeNode[] = [{ pid: root, ppid: rootStat.ppid, state: rootStat.state, stat: rootStat }];
  for (let i = 0; i < out.length; i++) {
    const kids = (byParent.get(out[i].pid) ?? []).sort((a, b) => a.pid - b.pid);
    out.push(...kids);
  }
  return out;
}

/** The pid as seen inside the process's own (innermost) pid namespace. */
export function nsPid(pid: number): number {
  const v = readStatus(pid).NSpid?.split(/\s+/).filter(Boolean).map(Number);
  return v?.length ? v[v.length - 1] : pid;
}

/** The host pid of the task that is `nsTid` inside its pid namespace, among candidates. */
export function hostTidOf(candidates: number[], nsTid: number, pidOf: (tid: number) => number = (t) => t): number | undefined {
  for (const tid of candidates) {
    try {
      const v = readFileSync(`/proc/${pidOf(tid)}/task/${tid}/status`, 'utf8')
        .match(/^NSpid:\s*(.*)$/m)?.[1]
        .trim()
        .split(/\s+/);
      if (v && Number(v[v.length - 1]) === nsTid) return tid;
    } catch {
      /* gone */
    }
  }
  return undefined;
}

/**
 * A pidfd through which the fds of a frozen process can be taken (pidfd_getfd): of the process,
 * or of its live thread `procPid` when its leader thread exited (the leader has no fd table then).
 */
export function pidfdOf(p: { pid: number; procPid: number }): number {
  return p.procPid === p.pid ? native.proc.pidfdOpen(p.pid) : native.proc.pidfdOpen(p.procPid, PIDFD_THREAD);
}

/** The filesystem type of a mount of pid (by the mnt_id fdinfo shows), from /proc/PID/mountinfo. */
export function fsTypeOf(pid: number, mntId: number): string | undefined {
  let m = mountTypes.get(pid);
  const now = Date.now();
  // A mount id names one mount while it exists (an open fd keeps it), so a table read a moment ago
  // answers for every fd of a dump; a miss, or an older table, is read again.
  if (!m || now - m.at > MOUNT_TABLE_TTL_MS || !m.types.has(mntId)) {
    const types = new Map<number, string>();
    for (const line of readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n')) {
      const f = line.split(' ');
      const dash = f.indexOf('-');
      if (dash > 0) types.set(Number(f[0]), f[dash + 1]!);
    }
    m = { at: now, types };
    mountTypes.set(pid, m);
    if (mountTypes.size > 64) mountTypes.delete(mountTypes.keys().next().value!);
  }
  return m.types.get(mntId);
}

/** Mount id -> filesystem type, per pid, as read from its mountinfo at `at` (fsTypeOf). */
const mountTypes = new Map<number, { at: number; types: Map<number, string> }>();
const MOUNT_TABLE_TTL_MS = 1000;
