// Hand-written types of the raw addon (build/Release/ckpt_native.node). Only ./index.ts imports it.
export interface WaitStatus {
  status: number;
  kind: 'exited' | 'killed' | 'syscall' | 'event-stop' | 'event' | 'signal' | 'unknown';
  code?: number;
  signal?: number;
  event?: number;
}
export interface CopyResult {
  bytes: number;
  crc: number;
}
export interface RseqConfig {
  pointer: bigint;
  size: number;
  signature: number;
  flags: number;
}
export interface IpcObject {
  kind: 'shm' | 'msg' | 'sem';
  id: number;
  key: number;
  uid: number;
  gid: number;
  cuid: number;
  cgid: number;
  mode: number;
  size?: number;
  destroyed?: boolean;
  bytes?: Buffer;
  qbytes?: number;
  messages?: Array<{ type: number; data: Buffer }>;
  values?: number[];
}
/** Unix socket functions (native/src/unix.cc). */
export interface UnixBinding {}
/** TCP/UDP socket functions (native/src/inet.cc). */
export interface InetBinding {}
/** inotify and file handles (native/src/extra.cc). */
export interface ExtraBinding {
  /** open_by_handle_at(mountFd, {type, handle}, flags | O_CLOEXEC): needs CAP_DAC_READ_SEARCH. */
  openByHandleAt(mountFd: number, handleType: number, handle: Buffer, flags: number): number;
  /** inotify_init1(flags | IN_CLOEXEC). */
  inotifyInit(flags: number): number;
  inotifyAddWatch(fd: number, path: string, mask: number): number;
  inotifyRmWatch(fd: number, wd: number): void;
}
export interface Binding extends UnixBinding, InetBinding, ExtraBinding {
  ipcSnapshot(pid: number, contents: boolean): IpcObject[];
  ipcCreate(pid: number, objects: IpcObject[], remap: boolean): number[];
  ipcRemove(pid: number, which: Array<[string, number]>): void;
  seize(pid: number, options?: number): void;
  interruptAndWait(pid: number, timeoutMs?: number): WaitStatus;
  waitStop(pid: number, timeoutMs?: number): WaitStatus;
  tryWait(pid: number): WaitStatus | null;
  cont(pid: number, signal?: number): void;
  detach(pid: number, signal?: number): void;
  setOptions(pid: number, options: number): void;
  takeSuppressedSignals(pid: number): number[];
  getRegs(pid: number): Buffer;
  setRegs(pid: number, regs: Buffer): void;
  getXstate(pid: number): Buffer;
  setXstate(pid: number, xstate: Buffer): void;
  getSigmask(pid: number): bigint;
  setSigmask(pid: number, mask: bigint): void;
  getRseq(pid: number): RseqConfig | null;
  getRobustList(tid: number): { head: bigint; len: number };
  peekSiginfo(pid: number, shared: boolean): Buffer[];
  remoteSyscall(pid: number, insn: bigint | number, nr: number, args: Array<bigint | number>, int3?: boolean): bigint;
  pagemapRuns(pid: number, start: number, end: number, anonOnly: boolean): Float64Array;
  dumpPages(pid: number, runs: Float64Array, fd: number, crc: number): CopyResult;
  restorePages(pid: number, runs: Float64Array, fd: number, offset: number, crc: number): CopyResult;
  readMem(pid: number, addr: bigint | number, len: number): Buffer;
  writeMem(pid: number, addr: bigint | number, data: Buffer): void;
  crc32c(data: Buffer, seed?: number): number;
  crc32cFile(fd: number, offset: number, length: number, seed?: number): number;
  spawnStub(path: string, setTid: number[], flags?: number, cloneFlags?: number, keepFd?: number): number;
  spawnDetached(path: string, argv: string[], envp: string[], cwd: string | null, stdio: [number, number, number], cloneFlags?: number): number;
  pidfdOpen(pid: number): number;
  pidfdGetfd(pidfd: number, fd: number): number;
  pipe(flags?: number): [number, number];
  pipeSize(fd: number, size?: number): number;
  peekPipe(fd: number): Buffer;
  fcntl(fd: number, cmd: number, arg?: number): number;
  lseek(fd: number, offset: number, whence: number): number;
  eventfd(count: number | bigint, flags: number): number;
  epollCreate(): number;
  memfdCreate(name: string): number;
  signalfd(mask: bigint, flags: number): number;
  timerfd(clockid: number, flags: number, settimeFlags: number, valueNs: bigint | number, intervalNs: bigint | number): number;
  kcmp(pid1: number, pid2: number, type: number, idx1: number, idx2: number): number;
}
