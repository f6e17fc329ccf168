/** The objects hooks receive: a session, and one context per process. */
import type { Stats } from 'node:fs';
import type { ImageReader, ImageWriter, ProcessRecord } from './image.js';
import type { Tracee } from './tracee.js';
import type { FdInfo } from './proc.js';
import type { Services } from './services.js';

export interface DumpOptions {
  pid: number;
  dir: string;
  leaveRunning?: boolean;
  /** fsync every image file before writing the manifest (power-loss safe; slower). */
  sync?: boolean;
  /** Application id (from `ckpt run`) recorded in the image. */
  app?: string;
  /** Peers outside the tree to accept as external (`unix:PATH`, ...): reconnected at restore. */
  external?: string[];
  /** Aborts the dump between stages (the process is thawed, the partial image dropped). */
  signal?: AbortSignal;
  /** Progress callback for long work (bytes copied so far, total). */
  onProgress?: (what: string, done: number, total: number) => void;
}

export interface RestoreOptions {
  dir: string;
  /** Let the restored processes go (reparented to init) instead of staying our children. */
  detach?: boolean;
  /** SysV IPC objects whose ids are taken on the host get new ids instead of failing. */
  ipcRemap?: boolean;
  /** Established TCP connections come back reset (their peer is gone), not repaired. */
  tcpClose?: boolean;
  /** Give the restored processes the restorer's own terminal as their terminal (ckpt restore --tty). */
  tty?: boolean;
  /** Open files to replace at restore: file id (ckpt show --files) -> restorer fd number or path. */
  substitute?: Record<string, number | string>;
  /** Path prefixes to rewrite for files restored by reference: [old, new] pairs, first match wins. */
  relocate?: Array<[string, string]>;
  /** External peers (`unix:PATH`, or `unix:PATH=NEWPATH` to reconnect elsewhere). */
  external?: string[];
  /** Aborts the restore between stages (everything created is removed). */
  signal?: AbortSignal;
  onProgress?: (what: string, done: number, total: number) => void;
}

export interface DumpSession {
  readonly options: DumpOptions;
  readonly image: ImageWriter;
  /** Every frozen process of the tree, parents first. */
  readonly processes: ProcessDump[];
  /** Exited, unreaped children met in the tree (restored as zombies). */
  readonly zombies: ZombieRecord[];
  /** Shared objects found while dumping (pipes, shared memory ...), keyed by the plugin that owns them. */
  readonly objects: Map<string, unknown>;
  /** Facts for the manifest that restore checks first (e.g. registers.xstateSize). */
  readonly meta: Record<string, unknown>;
  readonly services: Services;
}

export interface ProcessDump {
  readonly pid: number;
  /** The thread group leader (tid = pid): remote syscalls for process-wide state go here. */
  readonly tracee: Tracee;
  /** Every thread, frozen; the leader first. */
  readonly threads: Tracee[];
  readonly session: DumpSession;
  readonly records: Record<string, unknown>;
  /** Stores this plugin's record for the process. */
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

export interface FdRecord {
  fd: number;
  /** Which plugin saved it (the same plugin must restore it). */
  plugin: string;
  kind: string;
  cloexec: boolean;
  data: unknown;
}

export interface RestoreSession {
  readonly options: RestoreOptions;
  readonly image: ImageReader;
  readonly processes: ProcessRestore[];
  readonly zombies: ZombieRecord[];
  /** Objects shared by several processes while restoring (pipes, shared memory ...). */
  readonly objects: Map<string, unknown>;
  readonly services: Services;
  /** True when the image is a whole pid namespace, recreated fresh: no pid can collide. */
  readonly newPidNamespace: boolean;
  /**
   * A pid or tid of the image as the restored processes see it (inside their pid namespace).
   * Use it for every pid passed to a syscall run inside a stub (set_tid, setpgid, kill...).
   */
  vpid(pid: number): number;
  /** The clone3 set_tid array that recreates an image pid/tid (one entry per namespace level). */
  setTid(pid: number): number[];
  /** Things to undo if the restore fails (kill stubs, close fds, ...), run in reverse order. */
  onRollback(fn: () => void): void;
}

export interface ProcessRestore {
  readonly pid: number;
  readonly record: ProcessRecord;
  readonly session: RestoreSession;
  /** The stub being rebuilt into the process; set by the pids stage. */
  stub?: Tracee;
  /** Every thread of the process being rebuilt, leader first, once the threads stage made them. */
  threads: Tracee[];
  get<T>(plugin: string): T | undefined;
  /** Gives the stub a duplicate of `restorerFd` at the lowest free number and returns that number. */
  borrowFd(restorerFd: number): number;
  /** Makes `restorerFd` (one of ours) fd number `fd` of the stub, sharing the open description. */
  installFd(fd: number, restorerFd: number, cloexec: boolean): void;
}
