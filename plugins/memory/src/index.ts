/**
 * @ckpt/plugin-memory — the memory state class.
 *
 * Dump: every VMA from /proc/PID/smaps; pages worth saving from /proc/PID/pagemap (anonymous
 * and private-dirty pages; file pages come back from the file); all page runs copied by the
 * native engine straight into one blob per process (pages-<pid>.img), BLAKE3 computed as they stream;
 * mm fields (code/data/brk/stack/args/env bounds), auxv and the exe path.
 *
 * Copy-on-write sharing: a child's private area that its parent maps alike is compared page frame
 * by page frame with the parent's (pagemap); shared pages are not saved again (`inherited`), and
 * pages the parent has where the child had none are listed (`zap`). Memory is read through
 * /proc/PID/mem: process_vm_readv would unshare every such page in the live processes.
 *
 * Restore (into the stub the pids stage created, forked from its parent once the parent's memory
 * is back): unmap everything but core's trampoline (proc.trampoline) and the areas kept from the
 * parent, put the vdso back at its old address, recreate every other VMA with remote mmap, drop
 * the `zap` pages, fill pages from the blob (digest checked while streaming, before the process
 * ever runs), then PR_SET_MM_MAP. AIO rings are made again by io_setup and moved into place
 * before their pages are written (aio.ts).
 */
import { closeSync, fstatSync, openSync, statSync, writeSync, type Stats } from 'node:fs';
import {
  createSessionState,
  CkptError,
  definePlugin,
  fault,
  procfs,
  TASK_SIZE,
  PROT_READ,
  PROT_WRITE,
  PROT_EXEC,
  MAP_SHARED,
  MAP_PRIVATE,
  MAP_FIXED,
  MAP_ANONYMOUS,
  MAP_GROWSDOWN,
  saveMappedShmem,
  shmemFd,
  isChildSubreaper,
  killTraced,
  logger,
  type DumpSession,
  type BlobWriter,
  type ImageReader,
  type PluginContext,
  type ProcessDump,
  type ProcessRestore,
  type RestoreSession,
  type BatchedSyscall,
  Tracee,
  type Vma,
} from '@ckpt/core';
import {
  native,
  SYS,
  PAGE_SIZE,
  checkSyscall,
  type NativeError,
  type ZstdWriterHandle,
  type PagemapEntriesHandle,
  prctlMmMap,
  O_RDONLY,
  O_RDWR,
  O_CLOEXEC,
  AT_FDCWD,
  PR_SET_MM,
  PR_SET_MM_MAP,
  ARCH_MAP_VDSO_64,
} from '@ckpt/native';
import { memoryOptions, memoryRecord, NAME, type MemoryOptions, type MemoryRecord, type VmaKind, type VmaRecord } from './record.js';
import { blobRuns, chainSources, compact, memoryRecordOf, sortedRuns } from './chain.js';

export { NAME } from './record.js';
import {
  cutRuns,
  type ExcludeSpec,
  f64,
  intersectRuns,
  takeFromBlob,
  mergeRanges,
  parseExclude,
  pieces,
  runPairs,
  type Runs,
  runsBytes,
  subtractRuns,
  unionRuns,
  without,
} from './ranges.js';
import { handOver, prepareTracking, registerAreas, startTracking, takenTracking, trackingCommitted, type TrackRef, type Tracking } from './track.js';
import { notePrecopied, precopy, type Precopy } from './precopy.js';
import { aioRingOf, makeAioRing, putAioId } from './aio.js';
import { fillEager, LazyDaemon, lazyArea, lazyUffd, notLazy, planBlob, waitLazyRestored, type BlobPlan, type PagesSource } from './lazy.js';

export { memoryRecord, shmemRef, vmaRecord, vmaKind, type MemoryRecord, type VmaKind, type VmaRecord } from './record.js';
export { pieces, without, PROGRESS_CHUNK } from './ranges.js';

const log = logger('memory');

const SPECIAL = new Set(['[vdso]', '[vvar]', '[vvar_vclock]']);

/** Mappings of kernel objects that /proc shows as deleted files: recreating a file would not be them. */
const SPECIAL_FILES: Array<[string, string]> = [
  ['/anon_hugepage', 'shared anonymous huge-page memory (MAP_SHARED | MAP_HUGETLB)'],
  ['/dev/hugepages/', 'a hugetlbfs file'],
];

/** Private anonymous huge-page memory (MAP_PRIVATE | MAP_HUGETLB): anonymous memory of bigger pages. */
const isHugeAnon = (v: Vma) => v.name.startsWith('/anon_hugepage') && v.perms[3] === 'p' && !!v.flags?.includes('ht');

function classify(pid: number, v: Vma): VmaKind {
  if (SPECIAL.has(v.name)) return 'vdso';
  const shared = v.perms[3] === 's';
  if (isHugeAnon(v)) return 'anon';
  if (v.name.startsWith('/')) {
    if (v.name.startsWith('/[aio]')) return 'aio';
    if (shared && (v.name.startsWith('/dev/zero') || (v.name.startsWith('/memfd:') && v.name.endsWith(' (deleted)')))) return 'shmem';
    // SysV shared memory attachments belong to the sysvipc state class (its plugin re-attaches them).
    if (v.name.startsWith('/SYSV')) return 'sysv';
    // Kernel objects that look like deleted files, and are not.
    const special = SPECIAL_FILES.find(([prefix]) => v.name.startsWith(prefix));
    if (special) {
      throw new CkptError(
        'ERR_CKPT_UNSUPPORTED',
        `cannot checkpoint pid ${pid}: it maps ${special[1]} at 0x${v.start.toString(16)} (${v.name}), which ckpt cannot restore yet`,
      );
    }
    // A deleted file (or a memfd mapped privately) is a file mapping of an object saved with its
    // content (see vmaRecordOf).
    return shared ? 'file-shared' : 'file-private';
  }
  // A kernel object's pages (a packet socket's ring: socket:[INO]; an io_uring's: anon_inode:[io_uring]).
  if (/^(socket:|anon_inode:)/.test(v.name)) {
    throw new CkptError(
      'ERR_CKPT_UNSUPPORTED',
      `cannot checkpoint pid ${pid}: it maps the memory of ${v.name} at 0x${v.start.toString(16)} (${v.name.startsWith('socket:') ? "a packet socket's ring (PACKET_MMAP)" : 'a kernel object'}), which ckpt cannot restore yet`,
    );
  }
  if (shared) return 'shmem';
  return 'anon';
}

function protOf(perms: string): number {
  return (perms[0] === 'r' ? PROT_READ : 0) | (perms[1] === 'w' ? PROT_WRITE : 0) | (perms[2] === 'x' ? PROT_EXEC : 0);
}

// ---- dump ----

/** The mapped files stat'ed in a dump, by device, inode and path: a tree's processes map the same libraries. */
const mappedFiles = createSessionState('memory:mapped-files', (_s: DumpSession) => new Map<string, VmaRecord['file'] | null>());

/** What restore checks a mapped file against (its size, mtime and inode now), or undefined if it cannot be stat'ed (checked at restore). */
function mappedFileOf(session: DumpSession, v: Vma): VmaRecord['file'] | undefined {
  const seen = mappedFiles.of(session);
  const key = `${v.dev}:${v.inode}:${v.name}`;
  let file = seen.get(key);
  if (file === undefined) {
    try {
      const st = statSync(v.name);
      file = { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino };
    } catch {
      file = null;
    }
    seen.set(key, file);
  }
  return file ?? undefined;
}

/**
 * The record of one VMA (its blobOffset set by the caller), and the page runs worth saving in it (appended to allRuns). `parent`: the
 * parent's (dumped first) when the process is a child in the image, for copy-on-write sharing.
 */
function vmaRecordOf(
  session: DumpSession,
  { pid, procPid: task }: ProcessDump,
  v: Vma,
  allRuns: number[],
  parent?: { task: number; vmas: readonly VmaRecord[] },
  counts?: { zeroPages: number; excluded: number; byOption: number; reused: number },
  options?: MemoryOptions,
  excludes: readonly ExcludeSpec[] = [],
  chain?: ChainContext,
): VmaRecord {
  const kind = classify(pid, v);
  const rec: VmaRecord = { start: v.start, end: v.end, perms: v.perms, kind, name: v.name, runs: [], blobOffset: 0 };
  const isPrivate = (kind === 'anon' || kind === 'file-private') && !v.flags?.includes('io') && !v.flags?.includes('pf');
  // MADV_DONTDUMP on private memory: left out, as a core dump leaves it (the kernel's own
  // DONTDUMP areas, device and PFN mappings, are not of these kinds).
  if (isPrivate && v.flags?.includes('dd') && !options?.includeDontdump) {
    rec.excluded = 'dontdump';
    if (counts) counts.excluded += v.end - v.start;
  }
  // What the user left out (dump --exclude): the whole area by its name, or address ranges.
  const cuts: Array<{ start: number; end: number }> = [];
  for (const e of excludes) {
    const hit = 'name' in e ? e.name.test(v.name) : e.start < v.end && e.end > v.start;
    if (!hit) continue;
    if (!isPrivate) {
      throw new CkptError(
        'ERR_CKPT_USAGE',
        `${'declaredBy' in e && e.declaredBy ? `the exclusion ${e.spec} declared by ${e.declaredBy}` : `--exclude ${e.spec}`} covers ${v.name || 'an area'} of pid ${pid} (0x${v.start.toString(16)}-0x${v.end.toString(16)}, ${kind}), which is not private memory: only private memory can be left out`,
      );
    }
    cuts.push('name' in e ? { start: v.start, end: v.end } : { start: Math.max(e.start, v.start), end: Math.min(e.end, v.end) });
  }
  if (cuts.length && !rec.excluded) {
    const merged = mergeRanges(cuts);
    const cut = merged.reduce((sum, [, len]) => sum + len, 0);
    if (counts) counts.byOption += cut;
    if (cut === v.end - v.start) rec.excluded = 'option';
    else rec.excludedRanges = merged;
  }
  if (v.flags?.includes('gd')) rec.growsDown = true;
  if (kind === 'anon' && v.flags?.includes('ht')) rec.hugePageSize = v.pageSize;
  // A shared mapping that may be made writable (mprotect) was mapped from a file open for writing.
  if (v.perms[3] === 's' && v.perms[1] !== 'w' && v.flags?.includes('mw')) rec.mayWrite = true;
  if ((kind === 'file-private' || kind === 'file-shared') && v.name.endsWith(' (deleted)')) {
    // No path reopens it: the object is saved once with its content (core's shared objects),
    // recreated at restore as a deleted file (or a memfd) that every mapping and fd shares.
    const path = v.name.slice(0, -' (deleted)'.length);
    const memfd = path.startsWith('/memfd:');
    rec.path = path;
    rec.offset = v.offset;
    rec.shmem = saveMappedShmem(
      session,
      task,
      v.start,
      v.end,
      `${v.dev}:${v.inode}`,
      memfd ? path.slice(7) : path,
      memfd ? { memfd: true } : { deletedFile: path },
    );
  } else if (kind === 'file-private' || kind === 'file-shared') {
    rec.path = v.name;
    rec.offset = v.offset;
    const file = mappedFileOf(session, v);
    if (file) rec.file = { ...file };
  }
  if (kind === 'sysv') {
    rec.offset = v.offset;
  } else if (kind === 'aio') {
    // The whole ring: header and every slot (see aio.ts).
    rec.aio = aioRingOf(task, v);
    rec.runs.push([v.start, v.end - v.start]);
    allRuns.push(v.start, v.end - v.start);
  } else if (kind === 'shmem') {
    const memfd = v.name.startsWith('/memfd:');
    const name = memfd ? v.name.slice(7, -' (deleted)'.length) : 'ckpt-shared-anon';
    rec.shmem = saveMappedShmem(session, task, v.start, v.end, `${v.dev}:${v.inode}`, name, memfd ? { memfd: true } : undefined);
    rec.offset = v.offset;
  } else if (kind !== 'vdso' && kind !== 'file-shared' && !rec.excluded) {
    const alike = parent && !rec.excludedRanges && inheritable(rec, parent.vmas) ? parent.task : undefined;
    // A tracked area (track.ts): its pages not written since the parent image's dump.
    const tracked = chain?.tracked.has(v.start) ?? false;
    const clean = tracked && !!chain?.parentHas;
    let runs: ReturnType<typeof native.mem.pagemapRuns>;
    const scanned = chain?.scans.get(v.start);
    if (tracked && alike === undefined) {
      // The pages, and the written ones protected again: from now on a write shows, and the next
      // incremental dump counts from this one.
      runs = scanned?.end === v.end ? scanned.runs : native.mem.pagemapScan(task, v.start, v.end, kind === 'file-private', true);
    } else {
      runs =
        alike === undefined
          ? areaRuns(task, v, kind === 'file-private', clean)
          : native.mem.pagemapRuns(task, v.start, v.end, kind === 'file-private', parentEntries(session, alike, v), clean, takeAhead(session, task, v));
      if (alike !== undefined && runs.guards) runs = areaRuns(task, v, kind === 'file-private', clean);
      if (tracked) native.mem.uffdWriteProtect(chain!.track.uffd, v.start, v.end - v.start);
    }
    if (counts && runs.zeroPages) counts.zeroPages += runs.zeroPages;
    else if (alike !== undefined) {
      rec.inherited = true;
      const z = runs.zap;
      if (z) rec.zap = Array.from({ length: z.length / 2 }, (_, i): [number, number] => [z[2 * i], z[2 * i + 1]]);
    }
    const cut = rec.excludedRanges?.map(([at, len]) => ({ start: at, end: at + len }));
    let saved: ArrayLike<number> = cut ? cutRuns(runs, cut) : runs;
    const pre = tracked ? chain?.pre : undefined;
    if (pre && runs.clean?.length) notePrecopied(pre, runs.clean);
    if (clean && runs.clean?.length) {
      // Pages the image chain holds as they are: left to it (not those the pre-copy protected again).
      let reuse: ArrayLike<number> = intersectRuns(pre?.reset.length ? subtractRuns(runs.clean, pre.reset) : runs.clean, chain!.parentHas!);
      if (cut) reuse = cutRuns(reuse, cut);
      if (reuse.length) {
        saved = subtractRuns(saved, reuse);
        rec.parentRuns = runPairs(reuse);
        if (counts) counts.reused += runsBytes(reuse);
      }
    }
    for (let i = 0; i < saved.length; i += 2) {
      rec.runs.push([saved[i], saved[i + 1]]);
      allRuns.push(saved[i], saved[i + 1]);
    }
    const g = runs.guards;
    if (g) rec.guards = Array.from({ length: g.length / 2 }, (_, i): [number, number] => [g[2 * i], g[2 * i + 1]]);
  }
  return rec;
}

/** A parent's pagemap entries by its pid and area, read once for all its children (it is frozen). */
const parentPagemaps = createSessionState('memory:parent-pagemaps', (_s: DumpSession) => new Map<string, Buffer>());

/** The pagemap entries of `parent` for the area v (which it maps alike), for pagemapRuns' comparison. */
function parentEntries(session: DumpSession, parent: number, v: Vma): Buffer {
  const seen = parentPagemaps.of(session);
  const key = `${parent}:${v.start}:${v.end}`;
  let entries = seen.get(key);
  if (!entries) {
    entries = takeAhead(session, parent, v) ?? native.mem.pagemapEntries(parent, v.start, v.end);
    seen.set(key, entries);
  }
  return entries;
}

/**
 * Pagemap reads started at the freeze (readAhead): the handle, and each range's index by
 * `task:start:end`. Let go of when the dump ends.
 */
const entriesAhead = createSessionState(
  'memory:entries-ahead',
  (_s: DumpSession) => ({ handle: undefined as PagemapEntriesHandle | undefined, index: new Map<string, number>() }),
  { dispose: (ahead) => ahead.handle !== undefined && native.mem.pagemapEntriesDrop(ahead.handle) },
);

/**
 * The areas a child maps where its parent (in the tree) maps one alike are compared page by page
 * with the parent's at the memory stage (vmaRecordOf): the pagemaps of both, 8 bytes a page and
 * a read of a 16 MiB area some 0.3 ms, are read ahead on a thread of their own while the stages
 * before memory go on (they mostly wait for ptrace stops). Only what may be compared: private
 * areas at the same place in both, not tracked for increments (whose protection bits the scan
 * of the memory stage must see as they are then). The layouts are those taken at the freeze.
 */
function readAhead(session: DumpSession, layouts: ReadonlyMap<number, readonly Vma[]>): void {
  const ahead = entriesAhead.of(session);
  const ranges: Array<[number, number, number]> = [];
  const byPid = new Map(session.processes.map((p) => [p.pid, p]));
  let bytes = 0;
  const want = (task: number, v: Vma) => {
    const key = `${task}:${v.start}:${v.end}`;
    const size = ((v.end - v.start) / PAGE_SIZE) * 8;
    if (ahead.index.has(key) || bytes + size > AHEAD_MAX_BYTES) return;
    bytes += size;
    ahead.index.set(key, ranges.length);
    ranges.push([task, v.start, v.end]);
  };
  for (const proc of session.processes) {
    const parent = byPid.get(proc.ppid);
    const parentLayout = parent && layouts.get(parent.pid);
    if (!parent || !parentLayout) continue;
    const tracked = chains.get(proc)?.tracked;
    for (const v of layouts.get(proc.pid) ?? []) {
      if (v.perms[3] !== 'p' || v.name.startsWith('[v') || tracked?.has(v.start)) continue;
      if (!parentLayout.some((p) => p.start === v.start && p.end === v.end && p.perms[3] === 'p')) continue;
      want(parent.procPid, v);
      want(proc.procPid, v);
    }
  }
  if (ranges.length) ahead.handle = native.mem.pagemapEntriesAhead(ranges);
}

/**
 * The entries of task for the area v, if they were read ahead and not taken yet (a parent's are
 * taken as a child's first, then read again as a parent's, once).
 */
function takeAhead(session: DumpSession, task: number, v: Vma): Buffer | undefined {
  const ahead = entriesAhead.peek(session);
  const i = ahead?.index.get(`${task}:${v.start}:${v.end}`);
  if (ahead?.handle === undefined || i === undefined) return undefined;
  return native.mem.pagemapEntriesTake(ahead.handle, i);
}

/** The most pagemap entries read ahead at once (8 bytes a page: 32 GiB of areas); the rest are read when compared. */
const AHEAD_MAX_BYTES = 64 << 20;

/** Whether PAGEMAP_SCAN works here (Linux 6.7): undefined until tried. */
let scanWorks: boolean | undefined;

/**
 * An area's pages as pagemapRuns finds them (without a parent to compare with): by one
 * PAGEMAP_SCAN walk where the kernel has it, which costs a quarter of reading pagemap (1 GiB:
 * 3.6 ms against 15 here, inside the freeze; pagemap looks up every page's struct page).
 */
function areaRuns(task: number, v: Vma, anonOnly: boolean, clean: boolean): ReturnType<typeof native.mem.pagemapRuns> {
  if (scanWorks !== false) {
    try {
      const runs = native.mem.pagemapScan(task, v.start, v.end, anonOnly, false);
      scanWorks = true;
      return runs;
    } catch (e) {
      const code = (e as NativeError).code;
      if (scanWorks || (code !== 'ENOTTY' && code !== 'EINVAL')) throw e;
      scanWorks = false;
    }
  }
  return native.mem.pagemapRuns(task, v.start, v.end, anonOnly, undefined, clean);
}

/** A tracked dump's view of a process (track.ts): its tracking, the areas tracked, and the pages its parent image holds. */
interface ChainContext {
  track: Tracking;
  tracked: Set<number>;
  /** The tracked areas, as the layout showed them when they were registered. */
  areas: ReadonlyArray<{ start: number; end: number }>;
  /** Tracked areas already scanned (pagemapScan, reprotecting), by start: their end and runs. */
  scans: Map<number, { end: number; runs: ReturnType<typeof native.mem.pagemapScan> }>;
  /** Tracked areas being scanned on threads of their own (scanAhead), by start: their end and the scan's handle. */
  ahead: Map<number, { end: number; handle: number }>;
  /** Sorted flat runs of the pages the parent image holds for this process (its own, or its chain's); undefined: nothing is left to it. */
  parentHas?: Runs;
  /** This dump's pre-copy of the process (precopy.ts), when its tracking counts from the parent's. */
  pre?: Precopy;
}

/** Areas userfaultfd can track: private anonymous memory (not hugetlb, not device or PFN mappings). */
function trackable(pid: number, v: Vma): boolean {
  let kind: VmaKind;
  try {
    kind = classify(pid, v);
  } catch {
    return false; // refused by the memory stage, with its reason
  }
  return kind === 'anon' && !isHugeAnon(v) && !v.flags?.includes('io') && !v.flags?.includes('pf');
}

/** The memory records of the dump's parent image, by pid (read once per dump). */
const parentRecords = new WeakMap<DumpSession, Map<number, MemoryRecord | undefined>>();

/** The memory record the dump's parent image has for a process, if any. */
function parentRecord(session: DumpSession, pid: number): MemoryRecord | undefined {
  const parent = session.parent;
  if (!parent) return undefined;
  let byPid = parentRecords.get(session);
  if (!byPid) parentRecords.set(session, (byPid = new Map()));
  if (!byPid.has(pid)) byPid.set(pid, memoryRecordOf(parent, pid));
  return byPid.get(pid);
}

/**
 * The pages a parent image holds for a process (its own and its chain's), as sorted flat runs:
 * merged from the record's sorted runs (kept with the record, chain.ts), once per record. An
 * increment's parent has tens of thousands of runs: sorting them all (this was a sort) took up to
 * 15 ms of the freeze.
 */
function parentPages(rec: MemoryRecord): Runs {
  let has = parentPagesOf.get(rec);
  if (!has) {
    const { blob, parent } = sortedRuns(rec);
    parentPagesOf.set(rec, (has = unionRuns(blob, parent)));
  }
  return has;
}
const parentPagesOf = new WeakMap<MemoryRecord, Runs>();

/**
 * Sets up write tracking for this dump of the process (--track-mem, or a dump with a parent):
 * undefined when it is not tracked.
 */
function chainContext(proc: ProcessDump, vmas: Vma[], options: MemoryOptions | undefined): ChainContext | undefined {
  const { session } = proc;
  if (!options?.trackMem && !session.parent) return undefined;
  // A dump that ends the processes has nothing to track after it; with a parent (the final dump
  // after a pre-dump) it still takes the parent's tracking, to save only what was written since.
  if (!session.options.leaveRunning && !session.parent) {
    session.stats['memory.trackingOff'] = 'the dump ends the processes (no --leave-running): nothing to track';
    return undefined;
  }
  const parentRec = parentRecord(proc.session, proc.pid);
  const track = startTracking(proc);
  if (!track) return undefined;
  const candidates = vmas.filter((v) => trackable(proc.pid, v));
  const tracked = registerAreas(proc, track, candidates);
  session.stats['memory.trackedProcesses'] = Number(session.stats['memory.trackedProcesses'] ?? 0) + 1;
  const parentHas = track.fromParent && parentRec ? parentPages(parentRec) : undefined;
  const pre = track.fromParent ? precopies.get(session)?.get(proc.pid) : undefined;
  return { track, tracked, areas: candidates.filter((v) => tracked.has(v.start)), parentHas, scans: new Map(), ahead: new Map(), ...(pre ? { pre } : {}) };
}

/** Each process's pre-copy (beforeDump), by pid. */
const precopies = new WeakMap<DumpSession, Map<number, Precopy>>();

/** Each frozen process's program break, read in session.frozen. */
const brks = new WeakMap<ProcessDump, number>();

/** Each frozen process's tracking, set up in session.frozen (chainContext), for its memory stage. */
const chains = new WeakMap<ProcessDump, ChainContext>();

/**
 * Every process frozen, before core reads their smaps: the tracking is set up here, as its
 * userfaultfd registrations take the mmap lock that the smaps read holds (ProcessDump.vmas); the
 * program break is read here for the same reason.
 * The areas are those of /proc/PID/maps: without VmFlags, an area is tracked only if it would be
 * with them (trackable), and the memory stage checks it again with them.
 */
async function frozen(session: DumpSession, options: MemoryOptions | undefined): Promise<void> {
  // Each process's pages file, made ahead on a thread while the stages before memory go on.
  const level = compressLevel(options);
  session.image.prepare(session.processes.map((p) => `pages-${p.pid}.img${level ? '.zst' : ''}`));
  const layouts = new Map<number, Vma[]>();
  // The layout as core last read it (Tracee.maps), taken before brk(0) runs code in the process.
  for (const proc of session.processes) layouts.set(proc.pid, without(proc.tracee.maps(), proc.tracee.scratchRange));
  // brk(0) takes the mmap lock for writing, so it would wait for core's smaps read (which holds
  // it for reading as it walks the page tables) had it waited for the memory stage. Every
  // process's at once (their stops overlap).
  const tracees = session.processes.map((p) => p.tracee);
  Tracee.syscallEach(
    tracees,
    tracees.map((): BatchedSyscall => [SYS.brk, 0]),
  ).forEach((r, i) => brks.set(session.processes[i], Number(checkSyscall('brk', tracees[i].pid, r))));
  for (const proc of session.processes) {
    const maps = layouts.get(proc.pid)!;
    const chain = chainContext(proc, maps, options);
    if (chain) chains.set(proc, chain);
    // A ckpt killed while it works on the next process must leave this one as it was (see core).
    proc.tracee.parkBetweenStages();
  }
  for (const proc of session.processes) {
    const chain = chains.get(proc);
    if (chain) scanAhead(proc, chain, layouts.get(proc.ppid) ?? []);
  }
  readAhead(session, layouts);
}

/**
 * The tracked areas' page-table walks (reprotecting), started on threads of their own as soon as
 * the tracking is set up: they run while core reads smaps and the stages before memory go on;
 * the memory stage takes them (scanTracked). Areas the parent process (in the tree) has an area
 * at the same place as may be shared with it: those are compared page by page with it instead
 * (vmaRecordOf), once the parent's pages are known. A program its parent exec'd (an application
 * under ckpt-init) shares none.
 */
function scanAhead(proc: ProcessDump, chain: ChainContext, parentLayout: readonly Vma[]): void {
  for (const v of chain.areas) {
    if (parentLayout.some((p) => p.start === v.start && p.end === v.end)) continue;
    chain.ahead.set(v.start, { end: v.end, handle: native.mem.pagemapScanAhead(proc.procPid, v.start, v.end, false, true) });
  }
}

/** The tracked areas' scans, for the memory stage: those started ahead, then any other not shared with the parent. */
function scanTracked(proc: ProcessDump, chain: ChainContext, parentVmas: readonly VmaRecord[] = []): void {
  joinScans(chain, true);
  for (const v of chain.areas) {
    if (chain.scans.has(v.start) || parentVmas.some((p) => p.start === v.start && p.end === v.end)) continue;
    chain.scans.set(v.start, { end: v.end, runs: native.mem.pagemapScan(proc.procPid, v.start, v.end, false, true) });
  }
}

/** Waits for the scans started ahead: kept (keep), or dropped (a failed dump, whose tracking ends). */
function joinScans(chain: ChainContext, keep: boolean): void {
  const ahead = [...chain.ahead];
  chain.ahead.clear();
  let failure: unknown;
  for (const [start, { end, handle }] of ahead) {
    try {
      const runs = native.mem.pagemapScanJoin(handle);
      if (keep) chain.scans.set(start, { end, runs });
    } catch (e) {
      failure ??= e;
    }
  }
  if (keep && failure) throw failure;
}

/** Before the freeze: a tracked dump starts its helper and takes the tracking of the parent image's processes (track.ts). */
async function beforeDump(session: DumpSession, options: MemoryOptions | undefined): Promise<void> {
  // A process still being restored lazily has pages not yet in, which look never touched.
  waitLazyRestored(session.options.pid);
  // A parent's tracking is taken by any dump that adds to it; new tracking only with --leave-running.
  if (!session.parent && !(options?.trackMem && session.options.leaveRunning)) return;
  const tracks = new Map<number, TrackRef>();
  let lastIncrement = 0;
  for (const p of session.parent?.manifest.processes ?? []) {
    const rec = parentRecord(session, p.pid);
    if (rec?.track) tracks.set(p.pid, rec.track);
    // Before the freeze, what the frozen dump will compare with.
    if (rec?.track) parentPages(rec);
    if (rec?.vmas.some((v) => v.parentRuns)) lastIncrement = Math.max(lastIncrement, rec.pagesBytes);
  }
  prepareTracking(session, tracks);
  // Compressed, the pages stream from the process (or its snapshot): nothing to take them from.
  if (session.parent && !options?.compress) {
    const taken = [...takenTracking(session)];
    precopies.set(session, new Map(taken.map(([pid, uffd]) => [pid, precopy(session, pid, uffd, (v) => trackable(pid, v))])));
  }
  if (session.parent && session.options.leaveRunning) prepareSpare(lastIncrement || SPARE_FIRST);
}

/**
 * Memory for the pages an increment reads while frozen (buffered), faulted in before the freeze
 * and kept for the next dump (a checkpointer's, a migration's rounds): fresh memory faulted in
 * while frozen cost as much as the reads (10 MiB: 3-15 ms more here). Big enough for the last
 * increment whole; made twice that when it grows, so that increments growing by a few pages each
 * time do not fault in a new one before every dump (22 MiB: 40 ms here). An increment that
 * outgrows it reads into fresh memory as before.
 */
let spare: { buf: Buffer; holder?: DumpSession } | undefined;
/** What the spare is sized for before any increment was seen. */
const SPARE_FIRST = 8 << 20;

function prepareSpare(need: number): void {
  if (spare && (spare.holder || spare.buf.length >= Math.min(need, BUFFER_MAX))) return;
  try {
    spare = { buf: native.mem.allocPages(Math.min(BUFFER_MAX, 2 * need)) };
  } catch {
    spare = undefined; // no memory for it: fresh memory while frozen, as without
  }
}

/**
 * The pages of runs, read now (frozen): into the spare when it is free and big enough, which the
 * session then holds until the pages are written (or the dump failed: releaseSpare).
 */
function readFrozenPages(session: DumpSession, pid: number, runs: ArrayLike<number>, bytes: number): Buffer {
  const s = spare;
  const flat = Float64Array.from(runs);
  if (s && !s.holder && s.buf.length >= bytes) {
    s.holder = session;
    return s.buf.subarray(0, native.mem.readPagesInto(pid, flat, s.buf));
  }
  return native.mem.readPages(pid, flat);
}

function releaseSpare(session: DumpSession): void {
  if (spare?.holder === session) spare.holder = undefined;
}

/** A process's pages blob being written: the blob, its compression stream (--compress), and the bytes of pages copied into it. */
interface PagesOut {
  blob: BlobWriter;
  zstd?: ZstdWriterHandle;
  copied: number;
}

/** Copies page runs of `from` (the process, or its snapshot) on into the process's blob. */
async function writePages(proc: ProcessDump, out: PagesOut, from: number, runs: number[], total: number): Promise<void> {
  const { session } = proc;
  for (const piece of pieces(runs)) {
    // Between pieces: Ctrl-C and SIGTERM reach ckpt, which stops and thaws the process.
    fault('dump:pages');
    await session.interruptionPoint();
    // Uncompressed, the bytes are known: they may stream straight to where the blob goes.
    const fd = out.zstd ? out.blob.fd : out.blob.target(runsBytes(piece));
    const r = native.mem.dumpPages(from, piece, fd, out.blob.hash, out.zstd);
    // Where the blob goes elsewhere (a page server), the piece goes now.
    out.blob.drain();
    out.copied += r.bytes;
    if (!out.zstd) out.blob.size += r.bytes;
    session.progress({ stage: 'memory', pid: proc.pid, done: out.copied, total });
  }
}

/** The blob is complete: a compressed one gets the end of its frame. */
function closePages(session: DumpSession, out: PagesOut): void {
  if (out.zstd) out.blob.size = native.mem.zstdFinish(out.zstd, out.blob.fd, out.blob.hash).bytes;
  session.image.closeBlob(out.blob);
}

/** The zstd level of --compress (true: 1, fast), or undefined. */
function compressLevel(options: MemoryOptions | undefined): number | undefined {
  const c = options?.compress;
  if (!c) return undefined;
  const ok = native.mem.zstdAvailable();
  if (ok !== true)
    throw new CkptError('ERR_CKPT_USAGE', `--compress needs libzstd (libzstd.so.1), which cannot be loaded here: ${ok}`, { hint: 'apt-get install libzstd1' });
  return c === true ? 1 : c;
}

/**
 * Whether a VMA can be the parent's at restore: private memory (anonymous, or of a file by path)
 * the parent maps at the same place, alike, without guard regions. Its pages are then compared
 * page frame by page frame (pagemapRuns with the parent).
 */
function inheritable(rec: VmaRecord, parentVmas: readonly VmaRecord[]): boolean {
  if (rec.hugePageSize || (rec.kind !== 'anon' && !(rec.kind === 'file-private' && !rec.shmem))) return false;
  const p = parentVmas.find((x) => x.start === rec.start);
  return (
    !!p &&
    p.end === rec.end &&
    p.perms === rec.perms &&
    p.kind === rec.kind &&
    p.name === rec.name &&
    p.path === rec.path &&
    p.offset === rec.offset &&
    !p.shmem &&
    !p.guards?.length &&
    !!p.growsDown === !!rec.growsDown
  );
}

/**
 * Areas read while the process is frozen even when a snapshot holds the rest: what fork does not
 * copy as it is (MADV_DONTFORK, MADV_WIPEONFORK), hugetlb pages and AIO rings.
 */
function readFrozen(v: Vma, rec: VmaRecord): boolean {
  return rec.kind === 'aio' || !!rec.hugePageSize || !!v.flags?.some((f) => f === 'dc' || f === 'wf');
}

/** Below this many bytes to copy, a snapshot (two clones, a page-table copy) costs more than it saves. */
const SNAPSHOT_MIN_BYTES = 4 << 20;
/** Nor when less than 1/SNAPSHOT_MIN_SHARE of the memory is copied (its page tables cost more). */
const SNAPSHOT_MIN_SHARE = 256;

/** Snapshots not yet read and killed, per session (a failed dump kills them). */
const pendingSnapshots = new WeakMap<DumpSession, Set<number>>();

/**
 * Snapshots read and sent SIGKILL, whose end is waited for as the dump ends, whether it succeeds
 * or fails: the kernel tears down their address space (their page tables, their share of every
 * page) meanwhile, while the image is committed, not before (64 MiB: 3-6 ms here).
 */
const dyingSnapshots = createSessionState('memory:dying-snapshots', (_s: DumpSession) => [] as number[], {
  dispose: (pids) => {
    for (const pid of pids) killTraced(pid);
  },
});

/**
 * Why the pages of this process are not read from a copy-on-write snapshot, or undefined: they
 * are (a --leave-running dump of enough memory, not turned off).
 */
function noSnapshot(proc: ProcessDump, bytes: number, resident: number, options: MemoryOptions | undefined): string | undefined {
  if (!proc.session.options.leaveRunning) return 'not --leave-running';
  if (options?.frozenCopy) return '--frozen-copy';
  if (bytes < SNAPSHOT_MIN_BYTES) return 'little memory';
  // The snapshot copies the page tables of all the memory (about 30 ms per GiB here); the frozen
  // copy only the pages saved, but each scattered page costs a read and a new page of the image
  // in the page cache (about 150 MB/s here): below about 0.4% of the memory, copying wins.
  if (bytes * SNAPSHOT_MIN_SHARE < resident) return 'little memory to copy (an increment)';
  // The snapshot, an orphan, goes to the nearest subreaper above it: this process, if it is one.
  if (isChildSubreaper(proc.tracee)) return 'a child subreaper';
  return undefined;
}

async function dump(proc: ProcessDump, options: MemoryOptions | undefined): Promise<void> {
  const { procPid: task, tracee, session } = proc;
  const parentProc = session.processes.find((p) => p.pid === proc.ppid);
  const parentRec = parentProc?.get<MemoryRecord>(NAME);
  const parent = parentProc && parentRec ? { task: parentProc.procPid, vmas: parentRec.vmas } : undefined;
  const chain = chains.get(proc);
  if (chain) scanTracked(proc, chain, parent?.vmas);
  const vmas = without(proc.vmas(), tracee.scratchRange);
  // Tracked from /proc/PID/maps (session.frozen): what VmFlags say cannot be is not.
  if (chain) {
    for (const v of vmas) {
      if (chain.tracked.has(v.start) && !trackable(proc.pid, v)) {
        chain.tracked.delete(v.start);
        chain.scans.delete(v.start);
      }
    }
  }
  // mm fields from a live task's stat (a zombie leader's shows zeros).
  const stat = procfs.readStat(task);
  const brk = brks.get(proc) ?? Number(tracee.syscall(SYS.brk, 0));
  const records: VmaRecord[] = [];
  const counts = { zeroPages: 0, excluded: 0, byOption: 0, reused: 0 };
  // Validated with the options (memoryOptions): every one parses.
  const excludes = [
    ...(options?.exclude ?? []).map(parseExclude).filter((e): e is ExcludeSpec => typeof e !== 'string'),
    // What others declared (the process, through its checkpoint callbacks), as address ranges.
    ...proc.memoryExclusions.map((x) => ({ spec: `${x.start.toString(16)}-${x.end.toString(16)}`, start: x.start, end: x.end, declaredBy: x.by })),
  ];
  // The blob holds the areas read while frozen first, then the others (each area's blobOffset
  // says where its pages are): those may come from a snapshot, after the process runs again.
  const now: number[] = [];
  const later: VmaRecord[] = [];
  const laterRuns: number[] = [];
  let nowBytes = 0;
  for (const v of vmas) {
    const runs: number[] = [];
    const rec = vmaRecordOf(session, proc, v, runs, parent, counts, options, excludes, chain);
    records.push(rec);
    if (readFrozen(v, rec)) {
      rec.blobOffset = nowBytes;
      for (const [, len] of rec.runs) nowBytes += len;
      now.push(...runs);
    } else {
      later.push(rec);
      laterRuns.push(...runs);
    }
  }
  let total = nowBytes;
  for (const rec of later) {
    rec.blobOffset = total;
    for (const [, len] of rec.runs) total += len;
  }
  const stats = session.stats;
  stats['memory.pages'] = Number(stats['memory.pages'] ?? 0) + total / 4096;
  stats['memory.zeroPagesSkipped'] = Number(stats['memory.zeroPagesSkipped'] ?? 0) + counts.zeroPages;
  if (counts.excluded) stats['memory.dontdumpBytes'] = Number(stats['memory.dontdumpBytes'] ?? 0) + counts.excluded;
  if (counts.byOption) stats['memory.excludedBytes'] = Number(stats['memory.excludedBytes'] ?? 0) + counts.byOption;
  if (counts.reused) {
    stats['memory.parentBytes'] = Number(stats['memory.parentBytes'] ?? 0) + counts.reused;
    session.dependsOnParent();
  }
  const level = compressLevel(options);
  const blob = session.image.openBlob(`pages-${proc.pid}.img${level ? '.zst' : ''}`);
  const out: PagesOut = { blob, copied: 0, ...(level ? { zstd: native.mem.zstdWriter(level) } : {}) };
  // The copy is long: a ckpt killed during it must leave the process as it was (see core).
  tracee.parkBetweenStages();
  await writePages(proc, out, task, now, total);
  // What the process has in memory, roughly: what is saved, and what is left to the chain.
  await copyRest(proc, out, laterRuns, total, total + counts.reused, options);
  proc.put(NAME, {
    vmas: records,
    pagesFile: blob.name,
    ...(level ? { compression: 'zstd' as const } : {}),
    pagesBytes: total,
    mm: {
      startCode: stat.startCode,
      endCode: stat.endCode,
      startData: stat.startData,
      endData: stat.endData,
      startBrk: stat.startBrk,
      brk,
      startStack: stat.startStack,
      argStart: stat.argStart,
      argEnd: stat.argEnd,
      envStart: stat.envStart,
      envEnd: stat.envEnd,
    },
    auxv: procfs.readAuxv(task).toString('base64'),
    exe: procfs.readExe(task),
    ...(chain ? { track: handOver(proc, chain.track) } : {}),
  } satisfies MemoryRecord);
}

/** A snapshot of the process to read its pages from after the thaw, or undefined (stats say why). */
function takeSnapshot(proc: ProcessDump, bytes: number, resident: number, options: MemoryOptions | undefined): number | undefined {
  const { session } = proc;
  const why = noSnapshot(proc, bytes, resident, options);
  if (why) {
    if (why !== 'not --leave-running') session.stats['memory.frozenCopy'] = `pid ${proc.pid}: ${why}`;
    return undefined;
  }
  try {
    const pid = session.services.processes.snapshot(proc.tracee);
    session.stats['memory.snapshots'] = Number(session.stats['memory.snapshots'] ?? 0) + 1;
    return pid;
  } catch (e) {
    session.stats['memory.snapshotFailed'] = `pid ${proc.pid}: ${(e as Error).message}`;
    return undefined;
  }
}

/**
 * The rest of the pages (runs, up to `total` bytes in the blob; `resident`: bytes the process
 * has): copied now, while frozen, or from a snapshot once the processes run again (session.whenThawed).
 */
async function copyRest(proc: ProcessDump, out: PagesOut, runs: number[], total: number, resident: number, options: MemoryOptions | undefined): Promise<void> {
  const { session } = proc;
  const bytes = total - out.copied;
  if (bytes > 0 && fromPrecopy(proc, out, runs, total)) return;
  if (bytes > 0 && buffered(proc, out, bytes, resident)) {
    // Read now, while frozen; hashed and written once the processes run again.
    const pages = readFrozenPages(session, proc.procPid, runs, bytes);
    writeWhenThawed(proc, out, total, pages.length, () => writeBuffered(out, pages));
    return;
  }
  const snapshot = takeSnapshot(proc, bytes, resident, options);
  if (snapshot === undefined) {
    await writePages(proc, out, proc.procPid, runs, total);
    closePages(session, out);
    return;
  }
  const pending = pendingSnapshots.get(session) ?? new Set<number>();
  pendingSnapshots.set(session, pending.add(snapshot));
  session.whenThawed(async () => {
    try {
      await writePages(proc, out, snapshot, runs, total);
    } finally {
      pending.delete(snapshot);
      try {
        process.kill(snapshot, 'SIGKILL');
      } catch {
        /* gone already */
      }
      dyingSnapshots.of(session).push(snapshot);
    }
    if (out.copied !== total)
      throw new CkptError('ERR_CKPT_DUMP_FAILED', `pid ${proc.pid}: ${out.copied} bytes of pages read from its snapshot, ${total} expected`);
    closePages(session, out);
  });
}

/**
 * The rest of the pages from the pre-copy (precopy.ts) and a frozen read of those it lacks: true
 * when the pre-copy holds some of them and they are not compressed. Written as buffered pages are,
 * once the processes run again (or, without --leave-running, before the commit).
 */
function fromPrecopy(proc: ProcessDump, out: PagesOut, runs: number[], total: number): boolean {
  const pre = chains.get(proc)?.pre;
  if (!pre?.used.length || out.zstd) return false;
  const { session } = proc;
  const fresh = subtractRuns(runs, pre.used);
  const freshBytes = runsBytes(fresh);
  if (freshBytes > BUFFER_MAX) return false;
  const pages = freshBytes ? readFrozenPages(session, proc.procPid, fresh, freshBytes) : Buffer.alloc(0);
  session.stats['memory.precopyUsedBytes'] = Number(session.stats['memory.precopyUsedBytes'] ?? 0) + runsBytes(pre.used);
  writeWhenThawed(proc, out, total, pages.length, () => writeAssembled(out, runs, pre, pages));
  return true;
}

/**
 * Pages read while frozen (`frozenBytes` of them, into the spare or fresh memory), written into
 * the blob once the processes run again (the bytes `blob` gives, in blob order), which is then
 * complete; the spare goes back.
 */
function writeWhenThawed(proc: ProcessDump, out: PagesOut, total: number, frozenBytes: number, write: () => void): void {
  const { session } = proc;
  session.stats['memory.bufferedBytes'] = Number(session.stats['memory.bufferedBytes'] ?? 0) + frozenBytes;
  session.whenThawed(async () => {
    try {
      write();
    } finally {
      releaseSpare(session);
    }
    session.progress({ stage: 'memory', pid: proc.pid, done: out.copied, total });
    closePages(session, out);
  });
}

/** At most this many bytes of pages are read into ckpt's memory while frozen (buffered). */
const BUFFER_MAX = 64 << 20;
/** ... and only when they are less than 1/BUFFER_SHARE of the process's memory (else a snapshot costs less). */
const BUFFER_SHARE = 8;

/**
 * Whether a --leave-running dump reads the pages left into memory while the processes are frozen,
 * to write them once they run again: when there are few, as an increment has (its written pages,
 * scattered). Those cost a read each, far less than a snapshot's copy of every page table (about
 * 30 ms a GiB here), and less than writing them to the image while frozen (a new page-cache page
 * each). Not through zstd (--compress), which streams.
 */
function buffered(proc: ProcessDump, out: PagesOut, bytes: number, resident: number): boolean {
  if (!proc.session.options.leaveRunning || out.zstd || bytes > BUFFER_MAX) return false;
  return bytes < SNAPSHOT_MIN_BYTES || bytes * BUFFER_SHARE < resident;
}

/**
 * The increment's pages from the pre-copy and the frozen read, into the blob in its order: hashed
 * and written piece by piece (native.mem.assembleWrite), not put together in memory first.
 */
function writeAssembled(out: PagesOut, runs: number[], pre: Precopy, fresh: Buffer): void {
  const bytes = runsBytes(runs);
  const fd = out.blob.target(bytes);
  native.mem.assembleWrite(f64(runs), f64(pre.used), pre.reset, pre.pages ?? Buffer.alloc(0), fresh, fd, out.blob.hash);
  out.blob.drain();
  out.copied += bytes;
  out.blob.size += bytes;
}

/** Pages read into memory (buffered) into the blob: hashed and written as dumpPages would. */
function writeBuffered(out: PagesOut, pages: Buffer): void {
  const fd = out.blob.target(pages.length);
  for (let at = 0; at < pages.length; ) at += writeSync(fd, pages, at, pages.length - at);
  native.hash.hashUpdate(out.blob.hash, pages);
  out.blob.drain();
  out.copied += pages.length;
  out.blob.size += pages.length;
}

/** A failed dump: the snapshots it made and did not read go. */
async function dumpFailed(session: DumpSession): Promise<void> {
  for (const proc of session.processes) {
    const chain = chains.get(proc);
    if (chain) joinScans(chain, false);
  }
  releaseSpare(session);
  for (const pid of pendingSnapshots.get(session) ?? []) killTraced(pid);
  pendingSnapshots.delete(session);
}

// ---- restore, in steps ----

/**
 * Step 1: everything of the stub goes but core's trampoline and what it keeps from its parent
 * (`keep`: areas it shares copy-on-write with it; the vdso when it is where it was). The vdso
 * otherwise comes back in step 2.
 */
function unmapAllBut(proc: ProcessRestore, stub: Tracee, keep: ReadonlyArray<{ start: number; end: number }>): void {
  const tramp = proc.trampoline;
  if (!tramp) throw new Error(`pid ${proc.pid}: core mapped no trampoline before the memory stage`);
  const kept = [...keep, tramp].sort((a, b) => a.start - b.start);
  const calls: BatchedSyscall[] = [];
  let at = 0;
  for (const k of kept) {
    if (k.start > at) calls.push([SYS.munmap, at, k.start - at]);
    at = Math.max(at, k.end);
  }
  if (at < TASK_SIZE) calls.push([SYS.munmap, at, TASK_SIZE - at]);
  // In one stop (the trampoline's batch code, which the munmaps leave mapped).
  stub.syscalls(calls);
}

/**
 * What a process forked from its restored parent keeps of it: its areas shared copy-on-write
 * (checked to be there, alike), and the vdso when it sits where the image has it.
 */
function keptFromParent(proc: ProcessRestore, rec: MemoryRecord, stub: Tracee): Array<{ start: number; end: number }> {
  const inherited = rec.vmas.filter((v) => v.inherited);
  if (!inherited.length) return [];
  const now = procfs.readMaps(stub.pid);
  for (const v of inherited) {
    const covered = now.filter((m) => m.start < v.end && m.end > v.start);
    const whole = covered.length > 0 && covered[0].start <= v.start && covered.at(-1)!.end >= v.end && covered.every((m) => m.perms === v.perms);
    if (!whole) {
      throw new CkptError(
        'ERR_CKPT_RESTORE_FAILED',
        `pid ${proc.pid}: the memory it shares with its parent at 0x${v.start.toString(16)} (${v.name || 'anonymous'}) is not there: it was not forked from its restored parent`,
      );
    }
  }
  const vdso = rec.vmas.filter((v) => v.kind === 'vdso');
  const sameVdso = vdso.length > 0 && vdso.every((v) => now.some((m) => m.start === v.start && m.end === v.end && m.name === v.name));
  return [...inherited, ...(sameVdso ? vdso : [])];
}

/** Step 2: vdso and vvar at their old addresses (same kernel: same layout, checked). */
function mapVdso(rec: MemoryRecord, stub: Tracee, kept: boolean): void {
  const vdsoGroup = rec.vmas.filter((v) => v.kind === 'vdso');
  if (!vdsoGroup.length || kept) return;
  const base = Math.min(...vdsoGroup.map((v) => v.start));
  stub.syscall(SYS.arch_prctl, ARCH_MAP_VDSO_64, base);
  const now = procfs.readMaps(stub.pid).filter((v) => v.name === '[vdso]' || v.name.startsWith('[vvar'));
  const want = vdsoGroup
    .map((v) => `${v.name}@${v.start}-${v.end}`)
    .sort()
    .join(',');
  const got = now
    .map((v) => `${v.name}@${v.start}-${v.end}`)
    .sort()
    .join(',');
  if (want !== got) {
    throw new CkptError(
      'ERR_CKPT_IMAGE_INCOMPATIBLE',
      `the vdso layout of this kernel differs from the image's (image: ${want}; here: ${got}); restore on the kernel the image was made on`,
    );
  }
}

/** Step 3: every other VMA, in address order (files opened once per path and mode, in the stub). */
function mapVmas(proc: ProcessRestore, rec: MemoryRecord, stub: Tracee): void {
  const fdCache = new Map<string, number>();
  const fileFd = (path: string, write: boolean): number => {
    const key = `${write ? 'w' : 'r'}:${path}`;
    let fd = fdCache.get(key);
    if (fd === undefined) {
      const addr = stub.putString(path, 0);
      try {
        fd = Number(stub.syscall(SYS.openat, AT_FDCWD, addr, (write ? O_RDWR : O_RDONLY) | O_CLOEXEC, 0));
      } catch (e) {
        throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot open ${path}, mapped by pid ${proc.pid}: ${(e as NativeError).code}`, {
          cause: e,
          hint: 'files mapped by the process must exist at restore, as at dump time',
        });
      }
      fdCache.set(key, fd);
    }
    return fd;
  };
  // The plain mmaps (anonymous, file) wait in `pending` and go many to a stop (Tracee.syscalls): a
  // process has hundreds (two per thread stack). They are MAP_FIXED at addresses of their own, so
  // the order against the opens and fd moves between them does not matter; the rest runs after.
  const pending: BatchedSyscall[] = [];
  const flush = () => {
    stub.syscalls(pending);
    pending.length = 0;
  };
  for (const v of rec.vmas) {
    if (v.kind === 'vdso' || v.kind === 'sysv' || v.inherited) continue;
    const len = v.end - v.start;
    const prot = protOf(v.perms);
    if (v.kind === 'anon' && v.hugePageSize) {
      // MAP_HUGETLB with the page size's log2 in the MAP_HUGE_SHIFT bits; the pages are reserved now.
      const flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_HUGETLB | (Math.log2(v.hugePageSize) << MAP_HUGE_SHIFT);
      flush();
      const r = stub.syscallRaw(SYS.mmap, v.start, len, prot, flags, -1, 0);
      if (r < 0n) {
        throw new CkptError(
          'ERR_CKPT_RESTORE_FAILED',
          `pid ${proc.pid}: cannot map its ${len >> 20} MiB of huge pages (${v.hugePageSize >> 10} KiB) at 0x${v.start.toString(16)}: errno ${-r}`,
          { hint: `this host needs ${Math.ceil(len / v.hugePageSize)} free huge pages of that size (see /sys/kernel/mm/hugepages)` },
        );
      }
    } else if (v.kind === 'aio') {
      // A placeholder the new ring is moved over (makeAioRing), so io_setup cannot land here.
      pending.push([SYS.mmap, v.start, len, 0, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0]);
    } else if (v.kind === 'anon') {
      const flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | (v.growsDown ? MAP_GROWSDOWN : 0);
      pending.push([SYS.mmap, v.start, len, prot, flags, -1, 0]);
    } else if (v.kind === 'shmem') {
      flush();
      const fd = proc.borrowFd(shmemFd(proc.session, v.shmem!));
      try {
        stub.syscall(SYS.mmap, v.start, len, prot, MAP_SHARED | MAP_FIXED, fd, v.offset ?? 0);
      } finally {
        stub.syscall(SYS.close, fd);
      }
    } else if (v.shmem) {
      flush();
      // A deleted file or a memfd, recreated once for every mapping and fd of it (a deleted
      // file is handed over read-only: reopened for writing where the mapping may write).
      let fd = proc.borrowFd(shmemFd(proc.session, v.shmem));
      if (v.kind === 'file-shared' && v.shmem.file && ((prot & PROT_WRITE) !== 0 || v.mayWrite)) {
        const rw = Number(stub.syscall(SYS.openat, AT_FDCWD, stub.putString(`/proc/self/fd/${fd}`, 0), O_RDWR | O_CLOEXEC, 0));
        stub.syscall(SYS.close, fd);
        fd = rw;
      }
      try {
        stub.syscall(SYS.mmap, v.start, len, prot, (v.kind === 'file-shared' ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED, fd, v.offset ?? 0);
      } finally {
        stub.syscall(SYS.close, fd);
      }
    } else {
      const shared = v.kind === 'file-shared';
      checkFile(proc.pid, v);
      // Opened for writing where the mapping may become writable (mprotect) too.
      const fd = fileFd(v.path!, shared && ((prot & PROT_WRITE) !== 0 || !!v.mayWrite));
      pending.push([SYS.mmap, v.start, len, prot, (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED, fd, v.offset ?? 0]);
    }
  }
  flush();
  for (const fd of fdCache.values()) stub.syscall(SYS.close, fd);
}

/** Step 4: page contents, their digest checked against the signed manifest's as they stream (for an incremental image, each blob of its chain that holds some). */
async function fillPages(proc: ProcessRestore, rec: MemoryRecord, stub: Tracee): Promise<void> {
  const image = proc.session.image;
  await fillFrom(proc, stub, image, rec, blobRuns(rec));
  for (const from of chainSources(image, proc.pid, rec)) await fillFrom(proc, stub, from.image, from.rec, takeFromBlob(blobRuns(from.rec), from.take));
}

/**
 * Fills pages from one image's blob read whole (runs in blob order; address 0: skipped), its
 * digest checked (a compressed blob's first, as a whole, then decompressed).
 */
async function fillFrom(proc: ProcessRestore, stub: Tracee, image: ImageReader, rec: MemoryRecord, runs: ArrayLike<number>): Promise<void> {
  const fd = openSync(image.path(rec.pagesFile), 'r');
  try {
    const hash = native.hash.hashNew(image.digestAlgorithm(rec.pagesFile));
    if (rec.compression === 'zstd') {
      image.verifyBlob(rec.pagesFile);
      const reader = native.mem.zstdReader(fd);
      let done = 0;
      for (const piece of pieces(runs)) {
        fault('restore:pages');
        await proc.session.interruptionPoint();
        done += native.mem.restorePagesZstd(stub.pid, piece, reader, hash).bytes;
        proc.session.progress({ stage: 'memory', pid: proc.pid, done, total: rec.pagesBytes });
      }
      if (done !== rec.pagesBytes)
        throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `${image.path(rec.pagesFile)}: restored ${done} bytes, the record says ${rec.pagesBytes}`);
      return;
    }
    let off = 0;
    for (const piece of pieces(runs)) {
      fault('restore:pages');
      await proc.session.interruptionPoint();
      const r = native.mem.restorePages(stub.pid, piece, fd, off, hash);
      off += r.bytes;
      proc.session.progress({ stage: 'memory', pid: proc.pid, done: off, total: rec.pagesBytes });
    }
    if (off !== rec.pagesBytes)
      throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `${image.path(rec.pagesFile)}: restored ${off} bytes, the record says ${rec.pagesBytes}`);
    image.checkDigest(rec.pagesFile, native.hash.hashDigest(hash));
  } finally {
    closeSync(fd);
  }
}

/** A lazy restore's state (lazy.ts): its helper, once started, and its figures. */
interface LazyState {
  daemon?: LazyDaemon;
  /** The helper started as the restore began (startLazy), until a process needs it. */
  spare?: LazyDaemon;
  processes: number;
  /** The blobs handed to the helper so far. */
  blobs: number;
  lazyBytes: number;
  eagerBytes: number;
  off: string[];
}

const lazyStates = new WeakMap<RestoreSession, LazyState>();

/** The restore's figures (`memory.lazy*`), where the session keeps figures. */
function lazyStats(session: RestoreSession, st: LazyState): void {
  const stats = session.stats;
  const figures = {
    'memory.lazy': st.processes
      ? `${st.processes} process${st.processes > 1 ? 'es' : ''} restored lazily: pages served by ckpt-lazy ${st.daemon?.pid} as they are touched, the rest streamed in behind (blobs verified as they stream)`
      : 'not lazily: no page of private anonymous memory from an uncompressed blob',
    'memory.lazyBytes': st.lazyBytes,
    'memory.eagerBytes': st.eagerBytes,
    ...(st.daemon ? { 'memory.lazyDaemon': st.daemon.pid } : {}),
    ...(st.off.length ? { 'memory.lazyOff': st.off.join('; ') } : {}),
  };
  if (stats) Object.assign(stats, figures);
  log('lazy restore: %o', figures);
}

/** A lazy restore starts its helper as it begins: it execs and sets up while the processes are made. */
function startLazy(session: RestoreSession, options: MemoryOptions | undefined): void {
  if (!options?.lazy || lazyStates.has(session)) return;
  lazyStates.set(session, { spare: new LazyDaemon(), processes: 0, blobs: 0, lazyBytes: 0, eagerBytes: 0, off: [] });
}

/**
 * Step 4, restore --lazy (lazy.ts): the pages of lazy areas are left to ckpt-lazy, the others
 * written now; blobs that cannot be served lazily are filled as without --lazy.
 */
async function fillLazily(proc: ProcessRestore, rec: MemoryRecord, stub: Tracee): Promise<void> {
  const session = proc.session;
  const image = session.image;
  let st = lazyStates.get(session);
  if (!st) lazyStates.set(session, (st = { processes: 0, blobs: 0, lazyBytes: 0, eagerBytes: 0, off: [] }));
  const t0 = performance.now();
  const sources: PagesSource[] = [
    { image, rec, runs: blobRuns(rec) },
    ...chainSources(image, proc.pid, rec).map((f) => ({ image: f.image, rec: f.rec, runs: takeFromBlob(blobRuns(f.rec), f.take) })),
  ];
  // Areas its children share with it copy-on-write (they are forked from it once its memory is
  // back) are filled now: pages put in after the fork would be each process's own copy.
  const shared = new Set(
    session.processes
      .filter((p) => p.record.ppid === proc.pid && p !== proc)
      .flatMap(
        (p) =>
          p
            .get<MemoryRecord>(NAME)
            ?.vmas.filter((v) => v.inherited)
            .map((v) => v.start) ?? [],
      ),
  );
  // The area of the arguments and environment (the main stack) too: the kernel reads them for
  // /proc/PID/cmdline and environ without waiting for a userfaultfd (ps would show nothing).
  const { argStart, envEnd } = rec.mm;
  const ranges = rec.vmas
    .filter((v) => lazyArea(v) && !shared.has(v.start) && !(v.start < Math.max(envEnd, argStart + 1) && v.end > argStart))
    .map((v) => ({ start: v.start, end: v.end }))
    .sort((a, b) => a.start - b.start);
  const t1 = performance.now();
  const plans: Array<{ plan: BlobPlan; digest: string }> = [];
  for (const src of sources) {
    const why = notLazy(src);
    // Numbered as the helper will number them: those of earlier processes, then these in order.
    const plan = why ? undefined : planBlob(src, ranges, st.blobs + plans.length);
    if (!plan?.lazy.length) {
      if (why) st.off.push(`pid ${proc.pid}: ${src.rec.pagesFile} ${why}`);
      await fillFrom(proc, stub, src.image, src.rec, src.runs);
      st.eagerBytes += src.runs.reduce((a, x, i) => (i % 2 && src.runs[i - 1] ? a + x : a), 0);
      continue;
    }
    plans.push({ plan, digest: await fillEager(proc, stub, plan) });
    st.eagerBytes += plan.eagerBytes;
  }
  if (!plans.length) {
    // Forked from a lazily restored parent, it may share pages the helper is to fill: watched too.
    st.daemon?.target(stub.pid, undefined, new Float64Array(0));
    lazyStats(session, st);
    return;
  }
  // Registered: the lazy areas that have pages to come (faults elsewhere need no helper).
  const used = ranges.filter((_, i) => plans.some(({ plan }) => plan.inRanges.has(i)));
  const why: { reason?: string } = {};
  const uffd = lazyUffd(stub, used, why);
  if (uffd === undefined) {
    st.off.push(`pid ${proc.pid}: ${why.reason}: filled before it runs`);
    for (const { plan } of plans) {
      await fillFrom(proc, stub, plan.src.image, plan.src.rec, plan.src.runs);
      st.eagerBytes += plan.lazyBytes;
    }
    st.daemon?.target(stub.pid, undefined, new Float64Array(0));
    lazyStats(session, st);
    return;
  }
  const t2 = performance.now();
  try {
    st.daemon ??= st.spare ?? new LazyDaemon();
    st.spare = undefined;
    const quads = new Float64Array(plans.reduce((a, { plan }) => a + plan.lazy.length, 0));
    let q = 0;
    for (const { plan, digest } of plans) {
      st.daemon.blob(plan, digest);
      quads.set(plan.lazy, q);
      q += plan.lazy.length;
      st.lazyBytes += plan.lazyBytes;
    }
    st.blobs += plans.length;
    st.daemon.target(stub.pid, uffd, quads);
    st.processes++;
    log(
      'pid %d: %d blobs of the chain planned in %s ms, eager pages in %s ms, the rest handed over in %s ms',
      proc.pid,
      sources.length,
      (t1 - t0).toFixed(1),
      (t2 - t1).toFixed(1),
      (performance.now() - t2).toFixed(1),
    );
  } finally {
    closeSync(uffd);
  }
  lazyStats(session, st);
}

const MADV_DONTNEED = 4;
const MAP_HUGETLB = 0x40000;
const MAP_HUGE_SHIFT = 26;
const MADV_GUARD_INSTALL = 102;

/** Step 4a: in areas kept from the parent, the pages the parent has and this process had not go. */
function zapPages(rec: MemoryRecord, stub: Tracee): void {
  for (const v of rec.vmas) for (const [start, len] of v.zap ?? []) stub.syscall(SYS.madvise, start, len, MADV_DONTNEED);
}

/** Step 4b: guard regions (MADV_GUARD_INSTALL) again, once the pages around them are back. */
function installGuards(proc: ProcessRestore, rec: MemoryRecord, stub: Tracee): void {
  for (const v of rec.vmas) {
    for (const [start, len] of v.guards ?? []) {
      const r = stub.syscallRaw(SYS.madvise, start, len, MADV_GUARD_INSTALL);
      if (r < 0n) {
        throw new CkptError(
          'ERR_CKPT_RESTORE_FAILED',
          `pid ${proc.pid}: cannot install the guard region at 0x${start.toString(16)} (${len >> 10} KiB) again (errno ${-r})`,
          {
            hint: 'guard regions need Linux 6.13',
          },
        );
      }
    }
  }
}

/** Step 5: mm fields, auxv and exe link, in one PR_SET_MM_MAP. */
function setMm(proc: ProcessRestore, rec: MemoryRecord, stub: Tracee): void {
  const auxv = Buffer.from(rec.auxv, 'base64');
  const auxvAddr = stub.put(auxv, 1024);
  // A deleted executable (replaced by an upgrade) is the deleted file its code is mapped from.
  const exePath = rec.exe.endsWith(' (deleted)') ? rec.exe.slice(0, -' (deleted)'.length) : undefined;
  const ghost = exePath !== undefined ? rec.vmas.find((v) => v.shmem?.file?.path === exePath)?.shmem : undefined;
  // A process forked from its restored parent may have the right exe already (and the kernel
  // refuses to replace an exe link while the old file is mapped): then it stays (exe_fd -1).
  const exeFd = sameExe(stub.pid, ghost ? shmemFd(proc.session, ghost) : rec.exe)
    ? -1
    : ghost
      ? proc.borrowFd(shmemFd(proc.session, ghost))
      : Number(stub.syscall(SYS.openat, AT_FDCWD, stub.putString(rec.exe, 0), O_RDONLY | O_CLOEXEC, 0));
  const map = prctlMmMap({ ...rec.mm, auxv: auxvAddr, auxvSize: auxv.length, exeFd });
  const mapAddr = stub.put(map, 4096);
  try {
    stub.syscall(SYS.prctl, PR_SET_MM, PR_SET_MM_MAP, mapAddr, map.length, 0);
  } finally {
    if (exeFd >= 0) stub.syscall(SYS.close, exeFd);
  }
}

/** Whether the stub's exe link is already the file at `file` (a path, or an fd of ours). */
function sameExe(pid: number, file: string | number): boolean {
  try {
    const a = statSync(`/proc/${pid}/exe`);
    const b = typeof file === 'number' ? fstatSync(file) : statSync(file);
    return a.dev === b.dev && a.ino === b.ino;
  } catch {
    return false;
  }
}

async function restore(proc: ProcessRestore, options: MemoryOptions | undefined): Promise<void> {
  const rec = proc.get<MemoryRecord>(NAME);
  const stub = proc.stub;
  if (!rec || !stub) return;
  const keep = keptFromParent(proc, rec, stub);
  unmapAllBut(proc, stub, keep);
  mapVdso(
    rec,
    stub,
    keep.some((v) => rec.vmas.some((x) => x.kind === 'vdso' && x.start === v.start)),
  );
  mapVmas(proc, rec, stub);
  const rings = rec.vmas.filter((v) => v.kind === 'aio').map((v) => [v, makeAioRing(proc, stub, v)] as const);
  zapPages(rec, stub);
  if (options?.lazy) await fillLazily(proc, rec, stub);
  else await fillPages(proc, rec, stub);
  for (const [v, id] of rings) putAioId(stub, v, id);
  installGuards(proc, rec, stub);
  setMm(proc, rec, stub);
}

function checkFile(pid: number, v: VmaRecord): void {
  let st: Stats;
  try {
    st = statSync(v.path!);
  } catch {
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `file ${v.path} (mapped by pid ${pid} at 0x${v.start.toString(16)}) no longer exists`);
  }
  if (v.kind === 'file-private' && v.file && (st.size !== v.file.size || st.ino !== v.file.ino)) {
    throw new CkptError(
      'ERR_CKPT_RESTORE_FAILED',
      `file ${v.path} (mapped privately by pid ${pid}) changed since the dump (size ${v.file.size} -> ${st.size}); its pages would not match`,
    );
  }
}

export const memoryPlugin = definePlugin(() => ({
  name: NAME,
  version: '0.2.0',
  description: 'every mapping and its pages, shared memory, brk, mm fields, auxv, exe link',
  record: { version: 4, schema: memoryRecord },
  options: memoryOptions,
  flags: [
    {
      command: 'dump' as const,
      flags: '--track-mem',
      description:
        'with --leave-running, track the memory the process writes after this dump, so that a later dump --parent (this image) saves only that (ckpt pre-dump implies it, a dump with --parent keeps it on)',
      option: 'trackMem',
    },
    {
      command: 'dump' as const,
      flags: '--compress',
      description:
        'compress the pages with zstd as they are written (level 1; "compress": LEVEL in the config for another); restore decompresses them as it reads',
      option: 'compress',
    },
    {
      command: 'dump' as const,
      flags: '--frozen-copy',
      description: 'with --leave-running, copy memory while the process is frozen instead of from a copy-on-write snapshot after it runs again',
      option: 'frozenCopy',
    },
    {
      command: 'dump' as const,
      flags: '--exclude <area...>',
      description:
        "leave private memory out of the image: an address range START-END (hex, page-aligned) or mappings by name (a path, [heap]...; * matches anything); it comes back zeroed, or as the file's pages",
      option: 'exclude',
      list: true,
    },
    {
      command: 'restore' as const,
      flags: '--lazy',
      description:
        'let the process run before its memory is back: ckpt-lazy serves the pages it touches from the image (userfaultfd) and streams the rest in behind it, verifying the image as it goes',
      option: 'lazy',
    },
    {
      command: 'dump' as const,
      flags: '--include-dontdump',
      description: 'save the pages of areas the process marked MADV_DONTDUMP too (by default they are left out, as from a core dump, and come back zeroed)',
      option: 'includeDontdump',
    },
  ],
  claims: { stateClasses: ['memory'] },
  show: {
    process: (rec: unknown) => {
      const m = rec as MemoryRecord;
      const hex = (n: number) => n.toString(16).padStart(12, '0');
      const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
      const fromChain = m.vmas.reduce((sum, v) => sum + (v.parentRuns ?? []).reduce((a, r) => a + r[1], 0), 0);
      return [
        `memory: ${m.vmas.length} areas, ${mb(m.pagesBytes)} of pages saved${fromChain ? `, ${mb(fromChain)} left to the images it adds to` : ''}; exe ${m.exe}${m.track ? ' (written pages tracked for the next incremental dump)' : ''}`,
        ...m.vmas.map((v) => {
          const saved = v.runs.reduce((a, r) => a + r[1], 0);
          const back = v.kind === 'anon' ? 'zeroed' : "as the file's pages";
          const cut = (v.excludedRanges ?? []).reduce((sum, r) => sum + r[1], 0);
          const from = v.inherited
            ? '  (shared with its parent, but the pages saved)'
            : v.excluded === 'dontdump'
              ? `  (MADV_DONTDUMP: not saved, comes back ${back})`
              : v.excluded === 'option'
                ? `  (--exclude: not saved, comes back ${back})`
                : cut
                  ? `  (--exclude: ${cut / 1024} KiB of it not saved, comes back ${back})`
                  : '';
          const up = (v.parentRuns ?? []).reduce((a, r) => a + r[1], 0);
          const chained = up ? `  (${mb(up)} in the images it adds to)` : '';
          return `  ${hex(v.start)}-${hex(v.end)} ${v.perms} ${v.kind.padEnd(12)} ${(saved ? mb(saved) : '').padStart(9)}  ${v.name}${from}${chained}`;
        }),
      ];
    },
  },
  apply(hooks, ctx: PluginContext<MemoryOptions>) {
    hooks.session.beforeDump.tapPromise(NAME, (session) => beforeDump(session, ctx.options(session)));
    hooks.session.frozen.tapPromise(NAME, (session) => frozen(session, ctx.options(session)));
    hooks.memory.dump.tapPromise(NAME, (proc) => dump(proc, ctx.options(proc.session)));
    hooks.session.dumpFailed.tapPromise(NAME, dumpFailed);
    hooks.session.imageCommitted.tapPromise(NAME, async (session) => trackingCommitted(session));
    hooks.memory.restore.tapPromise(NAME, (proc) => restore(proc, ctx.options(proc.session)));
    hooks.session.beforeRestore.tapPromise(NAME, async (session) => startLazy(session, ctx.options(session)));
    hooks.session.afterResume.tapPromise(NAME, async (session) => {
      const st = lazyStates.get(session);
      st?.daemon?.commit();
      st?.spare?.abort('not needed: no process was restored lazily');
    });
    hooks.session.restoreFailed.tapPromise(NAME, async (session) => {
      const st = lazyStates.get(session);
      st?.daemon?.abort();
      st?.spare?.abort();
    });
    hooks.image.compact.tapPromise(NAME, compact);
  },
}));

export default memoryPlugin;
