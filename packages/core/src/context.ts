/**
 * The objects hooks receive: a session (one dump or one restore), and one context per process.
 *
 * Core's guarantees, in pipeline order (see docs/plugins.md for the whole table):
 * - Dump: every process of the tree is frozen before any hook reads it (`beforeDump` runs before
 *   the freeze). `proc.tracee.syscall()` works in every per-process stage; the scratch page it
 *   may create is removed by core before the image is committed. `proc.fds` is filled by core right
 *   after the freeze, before any state class; `fdsDumped` then runs once, so refusals that need
 *   every fd happen before any memory is copied.
 * - Restore: `proc.stub` exists from the `pids` stage on (a plugin of that stage creates it).
 *   `proc.stub.syscall()` works from then until `beforeResume` has run; from the `memory` stage
 *   on it runs from core's trampoline (`proc.trampoline`), which no plugin may unmap, and
 *   `syscalls()` runs many in one stop there. The pids
 *   and memory stages run process by process (a child is forked from its parent once the
 *   parent's memory is back); `processesCreated` follows them, then the other stages. The
 *   installer pidfd behind `installFd`/`borrowFd` exists for the same span. Core installs every
 *   fd of `proc.fds` at the end of the `files` stage; `fdsInstalled` then runs per process, once
 *   every process of the image has all its fds.
 */
import type { KeyObject } from 'node:crypto';
import type { Stats } from 'node:fs';
import type { ImageReader, ImageWriter, ProcessRecord } from './image.js';
import type { Tracee } from './tracee.js';
import type { DumpResult } from './engine.js';
import type { FdInfo, Vma } from './proc.js';
import type { Services } from './services.js';
import type { SessionStateStore } from './state.js';

export interface ProgressEvent {
  /** What is being done, e.g. "memory" or "pages". */
  stage: string;
  /** The process it is done for (image pid), when it is per process. */
  pid?: number;
  done: number;
  total: number;
}

export interface CommonOptions {
  /** Per-plugin options for this run (keyed by plugin name), over the configured ones. */
  plugins?: Record<string, Record<string, unknown>>;
  /** Aborts between stages (a dump thaws the processes and drops the partial image; a restore removes what it built). */
  signal?: AbortSignal;
  /** Progress of long work: which process and stage, bytes done and total. */
  onProgress?: (event: ProgressEvent) => void;
}

export interface DumpOptions extends CommonOptions {
  pid: number;
  dir: string;
  leaveRunning?: boolean;
  /** fsync every image file before writing the manifest (power-loss safe; slower). */
  sync?: boolean;
  /**
   * The image only passes through (ckpt migrate's copy on the source, sent as it is committed):
   * nothing is fsynced, so that a commit while the processes are frozen does not wait for the
   * disk (a journal commit behind earlier writes). A crash of the machine may lose it.
   */
  transient?: boolean;
  /** Application id (from `ckpt run`) recorded in the image. */
  app?: string;
  /** Generations to keep in the image directory, the new one included (default 1). */
  keep?: number;
  /** Write through an image directory that is a symbolic link (refused otherwise). */
  followSymlinks?: boolean;
  /**
   * An earlier image of the same processes (a directory: its latest generation, or a generation
   * directory) that this dump may add to: plugins that can (memory, with write tracking) save
   * only what changed since, and the image then needs its parent at restore.
   */
  parent?: string;
  /**
   * Write the image to this page server (HOST:PORT, `ckpt page-server`) instead of `dir`: the
   * server checks it (signature, digests) and makes it its next generation.
   */
  pageServer?: string;
  /**
   * A dump that kills (not leaveRunning) hands the processes over instead: called once the image
   * is committed, with the processes still frozen (and their connections silent, in repair mode),
   * e.g. until another host has restored them. Resolves: they are killed, as after any dump.
   * Throws: the dump fails, and they are thawed and go on as if it never happened (the image
   * stays). A ckpt that dies before it resolves leaves them running.
   */
  handover?: (result: DumpResult) => Promise<void>;
}

export interface RestoreOptions extends CommonOptions {
  dir: string;
  /** The generation of the image directory to restore (default: the latest complete one). */
  generation?: number;
  /** Let the restored processes go (reparented to init) instead of staying our children. */
  detach?: boolean;
  /**
   * The process whose child the restored tree's root becomes, instead of this one (which must
   * stay alive until the restore returns, and may not be traced meanwhile): a process of the
   * same user and namespaces, e.g. the command `ckpt server` restores for. Its main thread is
   * stopped for the moment of a fork (ProcessControl.spawnStub).
   */
  parent?: number;
  /**
   * Open files to replace at restore (core's fd table): file id (`ckpt show --files`, `f<pid>.<fd>`)
   * -> a restorer fd number, or a path opened with the original's flags.
   */
  substitute?: Record<string, number | string>;
  /**
   * Resources to connect to fds of the restorer (CRIU's --inherit-fd): every open file of the
   * image whose name (`ckpt show --files`: `pipe:[ID]`, a path, a socket) is `resource` uses
   * restorer fd `fd` instead, e.g. the pipe of a job launcher that was outside the tree.
   */
  inheritFds?: ReadonlyArray<{ fd: number; resource: string }>;
  /** Path prefixes to rewrite for every path a plugin reopens: [old, new] pairs, first match wins. */
  relocate?: Array<[string, string]>;
  /**
   * Public keys to trust for this restore only, besides this host's key and its trusted keys
   * (the image must be signed by one of them): KeyObjects, or PEM text (a `ckpt key` output).
   */
  trustKeys?: ReadonlyArray<KeyObject | string>;
  /**
   * Called once the processes are rebuilt, before they run (their pids given): throws, and the
   * restore is rolled back as if it had failed there, leaving nothing behind.
   */
  confirm?: (pids: number[]) => Promise<void>;
}

/** Common to both kinds of session. */
export interface SessionBase {
  /** Typed per-plugin state, created on first use and dropped with the session (see createSessionState). */
  readonly state: SessionStateStore;
  readonly services: Services;
  /** Reports progress (forwarded to the caller's onProgress). */
  progress(event: ProgressEvent): void;
  /**
   * Call between pieces of long work (e.g. every few tens of MiB copied): lets signals reach
   * ckpt's handlers, and throws when the run was interrupted (the dump or restore then undoes
   * itself). Core calls it between every stage of every process.
   */
  interruptionPoint(): Promise<void>;
}

export interface DumpSession extends SessionBase {
  readonly kind: 'dump';
  readonly options: DumpOptions;
  readonly image: ImageWriter;
  /** Every frozen process of the tree, parents first. */
  readonly processes: ProcessDump[];
  /** Exited, unreaped children met in the tree (restored as zombies). */
  readonly zombies: ZombieRecord[];
  /** Facts for the manifest that restore checks first (e.g. registers.xstateSize). */
  readonly meta: Record<string, unknown>;
  /** The image this dump may add to (DumpOptions.parent), opened and verified. */
  readonly parent?: ImageReader;
  /**
   * Says that the image needs its parent (a plugin saved state as "as in the parent"): the
   * manifest then links to it. A dump that never says so is a full image.
   */
  dependsOnParent(): void;
  /**
   * Work that no longer needs the processes frozen (reading a copy-on-write snapshot of their
   * memory): with --leave-running it runs once they run again, before the image is committed;
   * otherwise before the commit. A failure fails the dump like any other.
   */
  whenThawed(work: () => Promise<void>): void;
  /**
   * Figures for the dump's result (`--json`): plugins add theirs, by name (e.g. the memory
   * plugin's `memory.pages`, `memory.zeroPagesSkipped`, `memory.snapshots`).
   */
  readonly stats: Record<string, number | string | boolean>;
}

/**
 * `ckpt image compact`: an image made whole, into a new generation of its directory. Core copies
 * every file of `image` that no plugin wrote into `writer`, and writes the records; a plugin whose
 * records leave data to the images above (`image.parent()`: an incremental image) writes that data
 * whole into `writer` and rewrites its records in `records`.
 */
export interface Compaction {
  /** The image made whole (its chain verified). */
  readonly image: ImageReader;
  readonly writer: ImageWriter;
  /** The image's process records, validated: plugins rewrite theirs in place. */
  readonly records: ProcessRecord[];
  /** Files of `image` a plugin replaced with files of its own (not copied over). */
  readonly replaced: Set<string>;
  /** Reports progress (bytes written). */
  progress(event: ProgressEvent): void;
}

/** A kernel structure a process shares with its parent, made with a clone flag: `files` CLONE_FILES, `fs` CLONE_FS. */
export type SharedWithParent = 'files' | 'fs';

export interface ProcessDump {
  /** The process's pid on the host. */
  readonly pid: number;
  /** Parent pid, process group, session and name, as read at the freeze. */
  readonly ppid: number;
  readonly pgid: number;
  readonly sid: number;
  readonly comm: string;
  /** Whether it was stopped (a group stop: SIGSTOP, SIGTSTP...) when the freeze found it. */
  readonly stoppedAtFreeze: boolean;
  /**
   * The thread group leader (tid = pid): remote syscalls for process-wide state go here. When
   * the leader thread has exited (`leaderExited`), the first live thread.
   */
  readonly tracee: Tracee;
  /** Every live thread, frozen; the leader first (absent when it exited). */
  readonly threads: Tracee[];
  /**
   * The leader thread has exited while other threads run (it shows as a zombie). Its /proc/PID
   * has no memory, fds, cwd or namespaces then: read them through `procPid`. The restore makes
   * the leader, then has it exit once the other threads are made.
   */
  readonly leaderExited: boolean;
  /**
   * The task through which /proc shows the process's memory, fds, fs and namespaces
   * (/proc/<procPid>/maps, fd/, cwd, ns/...): the pid, or a live thread when the leader exited.
   * Use it for every such read, and pidfdOpen(procPid, PIDFD_THREAD) where a pidfd is needed.
   */
  readonly procPid: number;
  readonly session: DumpSession;
  /**
   * Its memory areas as /proc/<procPid>/smaps shows them (VmFlags, page size) once it is frozen,
   * ckpt's guard mapping (tracee.scratchRange) among them. smaps walks every page table (about
   * 15 ms a GiB resident here): core reads it on a thread of its own after session.frozen,
   * while the other stages go on, and the first call waits for what is left of that read. Call
   * it as late as the work allows; a change to the address space meanwhile (remote mmap,
   * userfaultfd registration: do those in session.frozen) would wait for the read, and would not
   * be in the list.
   */
  vmas(): Vma[];
  /** Core's fd table of the process: filled right after the freeze, before any state class. */
  readonly fds: FdRecord[];
  /** /proc/PID/fdinfo of each fd of that table, as core read it then (the process is frozen: it holds). */
  readonly fdInfo: Map<number, FdInfo>;
  /**
   * Files in flight saved with dumpInFlight (not in its fd table): ids (negative) as `fd`.
   */
  readonly inFlight: FdRecord[];
  /**
   * Private memory the image need not hold, as others than the memory plugin's options declare
   * it before the memory stage (the process itself, through its checkpoint callbacks):
   * [start, end) and who said so. The memory plugin leaves it out like `--exclude`.
   */
  readonly memoryExclusions: Array<{ start: number; end: number; by: string }>;
  /**
   * Saves a file in flight — e.g. passed with SCM_RIGHTS, still in a socket's queue — that a
   * plugin made appear for the moment at fd `fd` of the frozen process (by peeking the queue in
   * it): its description goes through fds.dump like any fd's, or names the one it shares with an
   * fd of the image. Returns its id (negative, never an fd number) for restoreInFlight; the plugin
   * closes `fd` after.
   */
  dumpInFlight(fd: number): Promise<number>;
  /** What it shares with its parent (its fd table: CLONE_FILES; cwd, root, umask: CLONE_FS), found by core at the freeze. */
  sharesWithParent?: SharedWithParent[];
  readonly records: Record<string, unknown>;
  /** Stores a plugin's record for the process (a plugin stores its own, under its name). */
  put(plugin: string, data: unknown): void;
  get<T>(plugin: string): T | undefined;
}

export interface ZombieRecord {
  pid: number;
  comm: string;
  ppid: number;
  pgid: number;
  sid: number;
  /** The wait status its parent will collect (exit code << 8, or the killing signal). */
  exitCode: number;
}

/** One open fd, as `fds.dump` handlers see it. */
export interface FdDumpRequest {
  readonly fd: number;
  /** readlink of /proc/PID/fd/N, e.g. "/tmp/x", "pipe:[123]", "anon_inode:[eventfd]". */
  readonly link: string;
  readonly info: FdInfo;
  /** Our own duplicate of the fd (pidfd_getfd): fstat it, read it, peek it. Closed by core. */
  readonly dupFd: number;
  readonly stat: Stats;
  /** file, directory, pipe, fifo, chr, blk, socket, anon (anon_inode), or unknown. */
  readonly kind: string;
}

/** What an `fds.dump` handler returns to claim an fd: the owner (the tap's name) restores it. */
export interface FdClaim<D = unknown> {
  /** The kind the owner gives it (file, pipe, memfd, tty, unix, tcp, eventfd, ...). */
  kind: string;
  data: D;
}

/**
 * One entry of core's fd table (published: any plugin may read it). An open file description
 * held by several fds (in one or several processes) is saved once, by its first holder; the
 * others name it with `sameAs`, and restore gives them the same description.
 */
export interface FdRecord<D = unknown> {
  fd: number;
  cloexec: boolean;
  /** The plugin that claimed it (restore goes to `fds.restore.for(owner)`). */
  owner: string;
  kind: string;
  /** Status flags of the description (O_ACCMODE, O_APPEND, O_NONBLOCK, ...), from fdinfo. */
  flags: number;
  /** Another fd, of this process or another of the image, that holds the same description. */
  sameAs?: { pid: number; fd: number };
  /** The owner's data (absent when sameAs is set). */
  data?: D;
  /**
   * Who gets SIGIO/SIGURG for the description (F_SETOWN_EX: type 0 a thread, 1 a process, 2 a
   * process group; pid as ckpt saw it, a task of the image) and which signal (F_SETSIG; 0 SIGIO).
   * Core saves and restores it for every description, with O_ASYNC from `flags`.
   */
  fown?: { type: number; pid: number; sig: number };
}

export interface RestoreSession extends SessionBase {
  readonly kind: 'restore';
  readonly options: RestoreOptions;
  readonly image: ImageReader;
  /** Figures plugins report about this restore (`memory.lazyBytes`...): the result's `stats`. */
  readonly stats: Record<string, number | string | boolean>;
  readonly processes: ProcessRestore[];
  readonly zombies: ZombieRecord[];
  /** True when the image is a pid namespace, recreated fresh: no pid can collide. */
  readonly newPidNamespace: boolean;
  /** True when the processes get a fresh IPC namespace too (their SysV objects live there). */
  readonly newIpcNamespace: boolean;
  /**
   * The init core made for the new pid namespace when the image's init is not in it (a tree that
   * was not a whole namespace): the root is forked from it. Detached by core at the end; it
   * reaps the namespace's orphans and exits, with the root's status, once none is left.
   */
  readonly nsInit?: Tracee;
  /**
   * A pid or tid of the image as the restored processes see it (inside their pid namespace).
   * Use it for every pid passed to a syscall run inside a stub (set_tid, setpgid, kill...).
   */
  vpid(pid: number): number;
  /** The clone3 set_tid array that recreates an image pid/tid (one entry per namespace level). */
  setTid(pid: number): number[];
  /** A path of the image as it is to be opened here (`relocate`). Every plugin reopening a path uses it. */
  relocate(path: string): string;
  /** Things to undo if the restore fails (kill stubs, close fds, ...), run in reverse order. */
  onRollback(fn: () => void): void;
}

export interface ProcessRestore {
  /** The pid in the image. The live host pid is `stub.pid` (they differ when a recreated pid namespace cannot keep its host pids). */
  readonly pid: number;
  readonly record: ProcessRecord;
  readonly session: RestoreSession;
  /** Core's fd table of the process, as dumped. */
  readonly fds: readonly FdRecord[];
  /** The stub being rebuilt into the process; set by the pids stage. */
  stub?: Tracee;
  /**
   * Every thread of the process being rebuilt, leader first, once the threads stage made them;
   * index for index the threads of the dump. When the leader had exited (record.leaderExited)
   * it is not among them: the stub is that leader, and core has it exit at the resume.
   */
  threads: Tracee[];
  /** Core's injection page in the stub, from the memory stage to beforeResume: never unmap it. */
  readonly trampoline?: { start: number; end: number };
  get<T>(plugin: string): T | undefined;
  /** Gives the stub a duplicate of `restorerFd` at the lowest free number and returns that number. */
  borrowFd(restorerFd: number): number;
  /** Makes `restorerFd` (one of ours) fd number `fd` of the stub, sharing the open description. */
  installFd(fd: number, restorerFd: number, cloexec: boolean): void;
  /** installFd for many fds at once (one stop of the stub: code in its trampoline makes the syscalls). */
  installFds(list: ReadonlyArray<{ fd: number; restorerFd: number; cloexec: boolean }>): void;
  /** Our fd (in the restorer) for an fd of this process once core installed it (e.g. to wire epoll). */
  restorerFd(fd: number): number | undefined;
  /**
   * Our fd (in the restorer) of a file in flight this process's record holds (dumpInFlight's id),
   * made on first use. Call it once every fd is installed (session.fdsInstalled) when the file may
   * share a description with an fd of another process.
   */
  restoreInFlight(id: number): Promise<number>;
}
