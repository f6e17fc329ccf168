// Hand-written types of the raw addon (ckpt_native.node, see ./load.ts). The addon is one flat
// object (Binding); the facade (./facade.ts, exported as `native`) groups its functions by
// concern, one interface per group below (NativeFacade). Only files of native/lib import it.
export interface WaitStatus {
  status: number;
  kind: 'exited' | 'killed' | 'syscall' | 'event-stop' | 'event' | 'signal' | 'unknown';
  code?: number;
  signal?: number;
  event?: number;
}
export interface CopyResult {
  bytes: number;
}
/** The digests of image files: BLAKE3 (new images), SHA-256 (images of format 3 and older). */
export type HashAlgorithm = 'blake3' | 'sha256';
/** A running hash (native/src/hash.cc): an opaque handle, continued across native calls. */
export type HashHandle = { readonly __hash: unique symbol };
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
  /** Last change (creation, IPC_SET), seconds: with id, key and creator, the object's identity. */
  ctime?: number;
  /** shm: attachments now (snapshots only). */
  nattch?: number;
  size?: number;
  destroyed?: boolean;
  bytes?: Buffer;
  qbytes?: number;
  messages?: Array<{ type: number; data: Buffer }>;
  values?: number[];
}
/** One AF_UNIX socket as NETLINK_SOCK_DIAG reports it (native/src/unix.cc). */
export interface UnixDiagEntry {
  ino: number;
  /** SOCK_STREAM 1, SOCK_DGRAM 2, SOCK_SEQPACKET 5. */
  type: number;
  /** TCP_ESTABLISHED 1, TCP_CLOSE 7, TCP_LISTEN 10. */
  state: number;
  /** sk_shutdown: RCV_SHUTDOWN 1 | SEND_SHUTDOWN 2. */
  shutdown: number;
  /** Listener: pending connections; others: bytes queued to read (datagram: the first message). */
  rqueue: number;
  /** Listener: backlog; others: memory charged for data sent and not yet read by the peer. */
  wqueue: number;
  /** Raw sun_path: a path (no trailing NUL) or an abstract name (leading NUL). */
  name?: Buffer;
  vfsIno?: number;
  vfsDev?: number;
  /** The peer's inode; 0 when the peer is gone or not yet accepted. */
  peer?: number;
  /** Listener: the inodes of the connecting sockets queued on it, oldest first. */
  icons?: number[];
  uid?: number;
}
export interface UnixPeekResult {
  /**
   * Stream: chunks to join; datagram/seqpacket: one per message, with the sender's address. `at`:
   * its offset in the queue (SO_PEEK_OFF); `rights`: the fds in flight with it (a stream chunk
   * ends with the message that carried them).
   */
  messages: Array<{ data: Buffer; addr?: Buffer; at?: number; rights?: number }>;
  /** File descriptors in flight (SCM_RIGHTS) met in the queue (peeked copies already closed). */
  rights: number;
  /** Control data was truncated (more fds in flight than counted). */
  truncated: boolean;
  /** A pending socket error (errno), 0 if none. Taken (cleared) from datagram sockets. */
  error: number;
  /** Stream: out-of-band data (MSG_OOB) is queued (the peek reads it inline). */
  oob: boolean;
}
/** An inet socket address (native/src/inet.cc). */
export interface InetAddr {
  family: 4 | 6;
  addr: string;
  port: number;
  flowinfo?: number;
  scope?: number;
}
/** What getsockopt/getsockname/ioctl tell of an inet socket (sockInfo). */
export interface InetSockInfo {
  domain: number;
  type: number;
  protocol: number;
  local?: InetAddr;
  peer?: InetAddr;
  /** TCP only: TCP_INFO state (1 ESTABLISHED ... 10 LISTEN), options (TCPI_OPT_*), window scales, mss. */
  state?: number;
  options?: number;
  sndWscale?: number;
  rcvWscale?: number;
  mss?: number;
  /** Listening TCP sockets: the listen() backlog and connections waiting to be accepted. */
  backlog?: number;
  pending?: number;
  /** TCP only: an error is pending (POLLERR, e.g. a reset), the receive side is shut down (POLLRDHUP); seen without clearing them. */
  error?: boolean;
  rdhup?: boolean;
  /** SIOCINQ, SIOCOUTQ (and SIOCOUTQNSD for TCP: bytes never sent). */
  inq?: number;
  outq?: number;
  unsent?: number;
}
/** A packet socket's ring settings (PACKET_DIAG_RX_RING / TX_RING). */
export interface PacketRing {
  blockSize: number;
  blockNr: number;
  frameSize: number;
  frameNr: number;
  retireTmo: number;
  sizeofPriv: number;
  features: number;
}
/** What sock_diag tells of a packet socket (packetDiag). protocol: host byte order. */
export interface PacketDiag {
  type: number;
  protocol: number;
  ifindex?: number;
  version?: number;
  reserve?: number;
  copyThresh?: number;
  tstamp?: number;
  /** PDI_RUNNING 1, PDI_AUXDATA 2, PDI_ORIGDEV 4, PDI_VNETHDR 8, PDI_LOSS 16. */
  flags?: number;
  mclist: Array<{ ifindex: number; count: number; type: number; addr: Buffer }>;
  rxRing?: PacketRing;
  txRing?: PacketRing;
  /** id | type << 16 | flags << 24 (as PACKET_FANOUT reads). */
  fanout?: number;
  /** Bytes of received packets not yet read. */
  rmem: number;
}
/** TCP_REPAIR_WINDOW. */
export interface TcpRepairWindow {
  sndWl1: number;
  sndWnd: number;
  maxWindow: number;
  rcvWnd: number;
  rcvWup: number;
}
/** An established TCP connection as TCP_REPAIR reads it (tcpDumpConn) and refills it (tcpRepairFill). */
export interface TcpConnState {
  state: number;
  options: number;
  sndWscale: number;
  rcvWscale: number;
  /** mss_clamp (TCP_MAXSEG in repair mode). */
  mss: number;
  /** TCP_TIMESTAMP: the timestamp clock (ms) the peer sees. */
  timestamp: number;
  /** rcv_nxt and write_seq: the ends of the receive and send queues. */
  inqSeq: number;
  outqSeq: number;
  /** Bytes at the end of the send queue never sent to the peer. */
  unsent: number;
  inq: Buffer;
  outq: Buffer;
  window?: TcpRepairWindow;
}

// ---- the groups ----

/** ptrace of one task (native/src/ptrace.cc): seize, stops and waits, resume/detach, register sets, masks, remote syscalls. */
export interface PtraceBinding {
  seize(pid: number, options?: number): void;
  interruptAndWait(pid: number, timeoutMs?: number): WaitStatus;
  /** interruptAndWait of each task, all interrupted first: each one's status, or the error interruptAndWait would have thrown. */
  interruptEach(pids: number[], timeoutMs?: number): Array<WaitStatus | Error>;
  waitStop(pid: number, timeoutMs?: number): WaitStatus;
  cont(pid: number, signal?: number): void;
  detach(pid: number, signal?: number): void;
  setOptions(pid: number, options: number): void;
  /** The seccomp filters of a task in filter mode, oldest first: BPF program (struct sock_filter[]) and flags (SECCOMP_FILTER_FLAG_LOG). */
  seccompFilters(tid: number): Array<{ prog: Buffer; flags: number }>;
  takeSuppressedSignals(pid: number): number[];
  getRegs(pid: number): Buffer;
  setRegs(pid: number, regs: Buffer): void;
  getXstate(pid: number): Buffer;
  /** Bytes of the standard XSAVE layout that holds the state components in `features` (CPUID leaf 0xD). */
  xstateSize(features: bigint): number;
  setXstate(pid: number, xstate: Buffer): void;
  getSigmask(pid: number): bigint;
  setSigmask(pid: number, mask: bigint): void;
  getRseq(pid: number): RseqConfig | null;
  getRobustList(tid: number): { head: bigint; len: number };
  peekSiginfo(pid: number, shared: boolean): Buffer[];
  /** Remote-syscall steps taken so far (see CKPT_FAULT_PTRACE_STEP). */
  faultSteps(): number;
  /** Counts one step taken in JS (and dies there when CKPT_FAULT_PTRACE_STEP says so). */
  faultStep(): void;
  /**
   * One syscall in the stopped task through the `syscall` at insn (int3: an int3 follows it; rsp:
   * the stack pointer it runs with); its registers put back after, unless `leave`: then it stays
   * where the syscall left it (the code after the syscall is its way back).
   */
  remoteSyscall(pid: number, insn: bigint | number, nr: number, args: Array<bigint | number>, int3?: boolean, rsp?: bigint | number, leave?: boolean): bigint;
  /**
   * execve(path, argv, envp) in a stopped task seized with PTRACE_O_TRACEEXEC (pointers in the task),
   * from syscall stop to syscall stop: 0, the task stopped in the new program at its entry
   * registers; or -errno, its registers put back.
   */
  remoteExec(pid: number, insn: bigint | number, path: bigint | number, argv: bigint | number, envp: bigint | number): number;
  /** Runs code written in the stopped task (rip = entry, args in rdi, rsi, rdx, r10, r8, r9) until the int3 after which rip is `breakAt`: rax. */
  remoteRun(pid: number, entry: bigint | number, breakAt: bigint | number, args: Array<bigint | number>): bigint;
  /**
   * remoteSyscall (without int3) in each of the stopped tasks at once, calls[i] = [nr, ...args] for
   * pids[i] (insn: one address, or one per task), their round trips overlapping; throws the first
   * failure, every task put back first. `leave`: the tasks that did not fail stay where their
   * syscall left them (as remoteSyscall's).
   */
  remoteSyscallEach(pids: number[], insn: bigint | number | Array<bigint | number>, calls: Array<Array<bigint | number>>, leave?: boolean): bigint[];
  /** A signal return frame for ucontext address uc (core's guard.ts: returnFrame). */
  returnFrame(uc: number, regs: Buffer, mask: bigint, xstate: Buffer): Buffer;
  /**
   * remoteRun in each of the stopped tasks at once (args[i] for pids[i]; entry and breakAt one
   * address, or one per task); throws the first failure, every task put back first.
   */
  remoteRunEach(
    pids: number[],
    entry: bigint | number | Array<bigint | number>,
    breakAt: bigint | number | Array<bigint | number>,
    args: Array<Array<bigint | number>>,
  ): bigint[];
  /**
   * In each of the stopped tasks at once, the guard's batch loop at entry (args[i] in rdi, rsi...)
   * making counts[i] syscalls, from syscall stop to syscall stop: each task is left stopped at its
   * last syscall's exit, inside the loop (which, left to itself, returns through the thread's
   * frame), and that syscall's result returned. Throws the first failure.
   */
  remoteLoopEach(pids: number[], entry: bigint | number | Array<bigint | number>, args: Array<Array<bigint | number>>, counts: number[]): bigint[];
}
/** Pagemap reads started on a thread (native/src/memory.cc: pagemapEntriesAhead). */
export type PagemapEntriesHandle = { readonly __pagemapEntries: unique symbol };
/** A zstd compression stream (native/src/zstd.cc). */
export type ZstdWriterHandle = { readonly __zstdWriter: unique symbol };
/** A zstd decompression stream (native/src/zstd.cc). */
export type ZstdReaderHandle = { readonly __zstdReader: unique symbol };

/** Memory of another process (native/src/memory.cc): pagemap, page copies to/from image fds, single reads and writes. */
export interface MemBinding {
  /** Runs [addr, len, ...] of pages worth saving; `guards`: runs of guard regions (MADV_GUARD_INSTALL), when any. */
  /**
   * Runs of pages worth saving in [start, end); with a parent (its pid, or its entries for the
   * range from pagemapEntries), less those shared copy-on-write with it, and `zap`: pages the
   * parent saved where this process has none.
   */
  pagemapRuns(
    pid: number,
    start: number,
    end: number,
    anonOnly: boolean,
    parent?: number | Buffer,
    clean?: boolean,
    /** The process's own entries for the range, read ahead (pagemapEntriesAhead). */
    own?: Buffer,
  ): Float64Array & { guards?: Float64Array; zap?: Float64Array; zeroPages?: number; clean?: Float64Array };
  /** The raw pagemap entries of [start, end), 8 bytes a page: a parent's for pagemapRuns, read once for all its children. */
  pagemapEntries(pid: number, start: number, end: number): Buffer;
  /** pagemapEntries of each [pid, start, end], read one after another on a thread of its own: a handle. */
  pagemapEntriesAhead(ranges: Array<[pid: number, start: number, end: number]>): PagemapEntriesHandle;
  /** The i-th range's entries of a pagemapEntriesAhead, once read (or its error); undefined once taken. */
  pagemapEntriesTake(handle: PagemapEntriesHandle, i: number): Buffer | undefined;
  /** Lets go of a pagemapEntriesAhead's reads. */
  pagemapEntriesDrop(handle: PagemapEntriesHandle): void;
  /**
   * pagemapRuns' runs (no parent comparison) from one PAGEMAP_SCAN walk; `clean`: saved pages not
   * written since last write-protected; `reprotect`: write-protects the written ones again (a tracked area), in the same walk.
   */
  pagemapScan(
    pid: number,
    start: number,
    end: number,
    anonOnly: boolean,
    reprotect?: boolean,
  ): Float64Array & { guards?: Float64Array; zeroPages?: number; clean: Float64Array };
  /** pagemapScan on a thread of its own, the caller going on: a handle, which pagemapScanJoin must take. */
  pagemapScanAhead(pid: number, start: number, end: number, anonOnly: boolean, reprotect?: boolean): number;
  /** What pagemapScan would have returned (or thrown) for the scan of `handle`, once it is done. */
  pagemapScanJoin(handle: number): Float64Array & { guards?: Float64Array; zeroPages?: number; clean: Float64Array };
  /**
   * Run sets (sorted, non-overlapping flat [addr, len] runs; the result merged where runs touch):
   * op 0 the pages in both, 1 those of `a` not in `b`, 2 those of either; 3 `a` (a blob's runs,
   * in blob order) with what is not in `b` as runs at address 0 (skipped). The memory plugin's
   * ranges.ts does the same in JS for short lists.
   */
  runsOp(a: Float64Array, b: Float64Array, op: 0 | 1 | 2 | 3): Float64Array;
  /**
   * A blob's runs (in blob order; address 0: bytes skipped) split between lazy ranges (sorted,
   * apart [start, end) pairs) and the rest: lazy [addr, len, blob offset, id] quadruples; the
   * eager runs ([addr, len] pairs) in pieces contiguous in the blob ([blob offset, runs] pairs);
   * the indices of the ranges the lazy runs fall in; the bytes of each.
   */
  /**
   * An increment's blob (the memory plugin's precopy.ts), hashed into `hash` and written to `fd`
   * piece by piece, never put together in memory: the bytes of `runs` (sorted flat runs), those of
   * `used` from `pages` (the bytes of `reset`'s runs in order), the others from `fresh` (in
   * order). Throws when `fresh` holds fewer or more bytes than that. The bytes written.
   */
  assembleWrite(runs: Float64Array, used: Float64Array, reset: Float64Array, pages: Buffer, fresh: Buffer, fd: number, hash: HashHandle): number;
  planRuns(
    runs: Float64Array,
    ranges: Float64Array,
    id: number,
  ): { lazy: Float64Array; eagerRuns: Float64Array; eagerPieces: Float64Array; inRanges: Float64Array; lazyBytes: number; eagerBytes: number };
  /** The runs' bytes, in order, in one buffer (read through /proc/PID/mem, as dumpPages). */
  readPages(pid: number, runs: Float64Array): Buffer;
  /** readPages into `into` (allocPages), which must be big enough: the bytes read. */
  readPagesInto(pid: number, runs: Float64Array, into: Buffer): number;
  /** Fresh memory of `size` bytes, faulted in (huge pages from 1 MiB), for readPagesInto. */
  allocPages(size: number): Buffer;
  /** Appends the runs' bytes to fd, hashing them into `hash`; through `zstd` (zstdWriter), compressed (the compressed bytes hashed). */
  dumpPages(pid: number, runs: Float64Array, fd: number, hash: HashHandle, zstd?: ZstdWriterHandle): CopyResult;
  /** restorePages from a compressed blob: the bytes come from `reader` (zstdReader), which hashes what it reads. */
  restorePagesZstd(pid: number, runs: Float64Array, reader: ZstdReaderHandle, hash: HashHandle): CopyResult;
  /** true, or why libzstd cannot be loaded. */
  zstdAvailable(): true | string;
  /** A zstd compression stream at `level` for one blob (dumpPages writes through it). */
  zstdWriter(level: number): ZstdWriterHandle;
  /** Ends the stream's frame at fd's offset: the compressed bytes written in all. */
  zstdFinish(writer: ZstdWriterHandle, fd: number, hash: HashHandle): { bytes: number };
  /** A zstd decompression stream over a blob file, from its start. */
  zstdReader(fd: number): ZstdReaderHandle;
  /** Decompresses a whole blob file into `out`, hashing the compressed bytes. */
  zstdDecompressFile(fd: number, out: number, hash: HashHandle): { bytes: number };
  /** Fills the runs from fd at offset, hashing the bytes read into `hash`; a run at address 0 is hashed, not written. */
  restorePages(pid: number, runs: Float64Array, fd: number, offset: number, hash: HashHandle): CopyResult;
  readMem(pid: number, addr: bigint | number, len: number): Buffer;
  /**
   * /proc/PID/mem and pagemap stay open for pid from their next use until unpinProc (a dump
   * reads them dozens of times per process). Only while pid is stopped under ckpt (an fd keeps
   * the address space it was opened on: an exec would leave it behind).
   */
  pinProc(pid: number): void;
  unpinProc(pid: number): void;
  writeMem(pid: number, addr: bigint | number, data: Buffer): void;
  /** true, or why not: asynchronous userfaultfd write-protect and PAGEMAP_SCAN work here (--track-mem). */
  uffdProbe(): true | string;
  /** true, or why not: a userfaultfd with fork/remap/remove/unmap events and missing-page registration works here (restore --lazy). */
  uffdLazyProbe(): true | string;
  /** UFFDIO_API on a userfaultfd (made in the target), asking for asynchronous write-protect. */
  uffdApi(fd: number): void;
  /** UFFDIO_REGISTER in write-protect mode: 0, or the errno (EBUSY: another userfaultfd has it). */
  uffdRegisterWp(fd: number, start: number, len: number): number;
  /** UFFDIO_WRITEPROTECT: every page of the range protected, so that a write shows in pagemap. */
  uffdWriteProtect(fd: number, start: number, len: number): void;
  /** UFFDIO_API for a lazy restore: missing-page faults, and the fork, remap, remove and unmap events. Throws the errno. */
  uffdApiLazy(fd: number): void;
  /** UFFDIO_REGISTER in MISSING mode (restore --lazy): 0 or an errno. */
  uffdRegisterMissing(fd: number, start: number, len: number): number;
}
/**
 * The digests of image files (native/src/hash.cc): BLAKE3 (blake3.cc, written here; AVX-512 or AVX2
 * when the CPU has it) and SHA-256 (OpenSSL's EVP from node). Digests are lowercase hex.
 */
/** Ed25519 with raw keys and random bytes (native/src/sign.cc), without node:crypto. */
export interface SignBinding {
  /** The 32-byte public key of a 32-byte private seed. */
  ed25519Public(seed: Uint8Array): Buffer;
  /** The 64-byte signature of message by the private seed. */
  ed25519Sign(seed: Uint8Array, message: Uint8Array): Buffer;
  /** Whether signature is the 32-byte public key's, of message (false for malformed input). */
  ed25519Verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean;
  /** n bytes of getrandom(2). */
  randomBytes(n: number): Buffer;
}

export interface HashBinding {
  /** A new running hash, for hashUpdate, dumpPages and restorePages. */
  hashNew(alg: HashAlgorithm): HashHandle;
  hashUpdate(hash: HashHandle, data: Uint8Array): void;
  /** Hex digest of everything hashed so far (the hash can go on). */
  hashDigest(hash: HashHandle): string;
  /** Hex digest of a buffer. */
  hashOf(alg: HashAlgorithm, data: Uint8Array): string;
  /** Hex digest of [offset, offset + length) of the file. */
  hashFile(alg: HashAlgorithm, fd: number, offset: number, length: number): string;
  /** The BLAKE3 path in use (the widest the CPU has); given one, none wider is used from then on (tests, benchmarks). */
  blake3Use(path?: 'avx512' | 'avx2' | 'portable'): 'avx512' | 'avx2' | 'portable';
}
/** Processes (native/src/spawn.cc, fd.cc, ptrace.cc): creating them, pidfds, comparing their resources, reaping. */
export interface ProcBinding {
  spawnStub(path: string, setTid: number[], flags?: number, cloneFlags?: number, keepFd?: number): number;
  spawnDetached(path: string, argv: string[], envp: string[], cwd: string | null, stdio: [number, number, number], cloneFlags?: number): number;
  /** execve(2) of this process (the same pid; fds not close-on-exec kept): returns only by throwing. */
  execve(path: string, argv: string[], envp: string[]): never;
  /** pidfd_open(2); flags: PIDFD_NONBLOCK (O_NONBLOCK), PIDFD_THREAD (O_EXCL). */
  pidfdOpen(pid: number, flags?: number): number;
  pidfdGetfd(pidfd: number, fd: number): number;
  /**
   * The first look at each fd of a frozen process, in one call: our duplicate (pidfd_getfd; -errno
   * where it failed), its status (14 numbers a fd, in the order and form of Node's fs.Stats
   * fields: dev, mode, nlink, uid, gid, rdev, blksize, ino, size, blocks, atimeMs, mtimeMs,
   * ctimeMs, birthtimeMs; NaN where it failed), its SIGIO owner's type and pid and F_GETSIG (3 a fd;
   * type -1 where fcntl refused).
   */
  takeFds(pidfd: number, fds: readonly number[]): { dup: Int32Array; stat: Float64Array; own: Int32Array };
  /** sched_getscheduler(2) of a thread, from outside it (SCHED_RESET_ON_FORK included). */
  schedGetscheduler(tid: number): number;
  /** _exit(2) (exit_group): no 'exit' event, no V8 or Node teardown, nothing flushed. */
  exitNow(code: number): never;
  /** Each file's whole text (UTF-8), or null where it could not be opened or read: many /proc files in one call. */
  readTexts(paths: string[]): Array<string | null>;
  /** Each symlink's target, or null where it could not be read: every /proc/PID/fd/N in one call. */
  readLinks(paths: string[]): Array<string | null>;
  /**
   * A process's fds (ascending) with each one's /proc/PID/fd link and /proc/PID/fdinfo text (null
   * where the fd closed meanwhile), in one call; throws when /proc/PID/fd cannot be opened.
   */
  readFdTable(pid: number): { fds: Int32Array; links: Array<string | null>; infos: Array<string | null> };
  /**
   * The /proc/PID/stat text of root and of each of its descendants, parents before children (each
   * one's children by pid), from the children files of every thread; throws when root's cannot be read.
   */
  treeWalk(root: number): string[];
  kcmp(pid1: number, pid2: number, type: number, idx1: number, idx2: number): number;
  /** kcmp KCMP_EPOLL_TFD: 0 when fd1 of pid1 is the file epoll fd epfd of pid2 watches as tfd (toff: which of several such watches). */
  kcmpEpollTfd(pid1: number, fd1: number, pid2: number, epfd: number, tfd: number, toff: number): number;
  /** waitpid(WNOHANG | __WALL): null while the task has nothing to report. */
  tryWait(pid: number): WaitStatus | null;
}
/** File descriptors (native/src/fd.cc, inotify.cc): pipes, fcntl, lseek, memfds, open_by_handle_at. */
export interface FdBinding {
  pipe(flags?: number): [number, number];
  /** Copies [offset, offset + length) of src to dst at its offset (advanced), hashing the bytes into `hash` (read, hash and write pipelined). */
  copyHashed(src: number, offset: number, length: number, dst: number, hash: HashHandle): CopyResult;
  /** copy_file_range of length bytes (read and write where the kernel will not). */
  copyRange(src: number, srcOffset: number, dst: number, dstOffset: number, length: number): CopyResult;
  pipeSize(fd: number, size?: number): number;
  /**
   * A whole file's bytes as a string, one character a byte (latin1), kept in a private mapping of
   * the file: no copy into fresh memory where Node can make external strings (>= 20.4), else a
   * copy. For a file nobody rewrites in place while the string lives (it would fault, SIGBUS).
   */
  mapFileLatin1(path: string): string;
  /** A whole file's bytes as a Buffer over a private mapping of it (no copy); the same caveat. */
  mapFileBuffer(path: string): Buffer;
  /** The bytes queued in a pipe, left in place; with `packets`, the length of each packet too (one per pipe buffer). */
  peekPipe(fd: number, packets?: boolean): Buffer & { packets?: number[] };
  fcntl(fd: number, cmd: number, arg?: number): number;
  /** close(2) of each, errors ignored. */
  closeAll(fds: readonly number[]): void;
  /**
   * open(2) of each path with its flags (O_CLOEXEC added), in one call, never waiting (a FIFO
   * opens at once or fails with ENXIO; the fd then has the flags asked for): each fd (or -errno),
   * and each opened file's size, mtimeMs and mode as fs.fstat gives them (3 a path; NaN where it
   * failed).
   */
  openAll(paths: readonly string[], flags: readonly number[]): { fd: Int32Array; stat: Float64Array };
  lseek(fd: number, offset: number, whence: number): number;
  memfdCreate(name: string, flags?: number): number;
  /** mknod(2): a FIFO or device node; mode carries the file type (S_IFIFO, S_IFCHR, S_IFBLK). */
  mknod(path: string, mode: number, dev: number): void;
  /** F_GETOWN_EX: who gets SIGIO/SIGURG for the description (type: F_OWNER_TID 0, F_OWNER_PID 1, F_OWNER_PGRP 2; pid 0: nobody). */
  getOwnerEx(fd: number): { type: number; pid: number };
  /** open_by_handle_at(mountFd, {type, handle}, flags | O_CLOEXEC): needs CAP_DAC_READ_SEARCH. */
  openByHandleAt(mountFd: number, handleType: number, handle: Buffer, flags: number): number;
  /** ioctl(2) whose argument is a buffer the caller laid out (read and written in place): its result. */
  ioctlPtr(fd: number, request: number, buf: Buffer): number;
  /** ioctl(2) whose argument is a plain value: its result. */
  ioctlVal(fd: number, request: number, value: number): number;
  /** poll(2) of one fd, without waiting: the events it has now. */
  pollNow(fd: number, events: number): number;
  /**
   * Reads a whole file on a thread of its own (for a slow /proc file of a given instant, such as
   * smaps right after a freeze): a handle for readJoin, which waits and returns the content or
   * throws the errno, or readDrop, which waits and forgets it. Main thread only.
   */
  readAhead(path: string): number;
  /** readAhead of many files, read in order on one thread: a handle each (many small reads). */
  readAheadAll(paths: readonly string[]): number[];
  readJoin(handle: number): string;
  readDrop(handle: number): void;
  /**
   * Creates each file (O_CREAT | O_EXCL, empty, closed) in order on a thread of its own while the
   * caller goes on: a handle for createJoin. Main thread only.
   */
  createAhead(paths: readonly string[], mode: number): number;
  /** Waits for createAhead's thread: whether it created each file (false: there already, or failed). */
  createJoin(handle: number): boolean[];
}
/** Event file descriptors (native/src/fd.cc, inotify.cc): eventfd, epoll, signalfd, timerfd, inotify. */
export interface EventsBinding {
  eventfd(count: number | bigint, flags: number): number;
  epollCreate(): number;
  signalfd(mask: bigint, flags: number): number;
  timerfd(clockid: number, flags: number, settimeFlags: number, valueNs: bigint | number, intervalNs: bigint | number): number;
  /** inotify_init1(flags | IN_CLOEXEC). */
  inotifyInit(flags: number): number;
  inotifyAddWatch(fd: number, path: string, mask: number): number;
  inotifyRmWatch(fd: number, wd: number): void;
  /** fanotify_init(flags, eventFlags); the fd is close-on-exec (the group's flags stay as given). */
  fanotifyInit(flags: number, eventFlags: number): number;
  /** fanotify_mark(fd, flags, mask, AT_FDCWD, path). */
  fanotifyMark(fd: number, flags: number, mask: number, path: string): void;
}
/** SysV IPC of an IPC namespace (native/src/ipc.cc). */
export interface IpcBinding {
  ipcSnapshot(pid: number, contents: boolean): IpcObject[];
  ipcCreate(pid: number, objects: IpcObject[], remap: boolean): number[];
  ipcRemove(pid: number, which: Array<[string, number]>): void;
}
/** Calls that are the same for every socket family (native/src/sock.cc). */
export interface SockCommonBinding {
  /** An int option; null when the kernel does not know it for this socket. */
  sockGetInt(fd: number, level: number, name: number): number | null;
  sockSetInt(fd: number, level: number, name: number, value: number): void;
  /** Raw option bytes (at most maxLen); null when the kernel does not know it for this socket. */
  sockGetBytes(fd: number, level: number, name: number, maxLen: number): Buffer | null;
  sockSetBytes(fd: number, level: number, name: number, value: Buffer): void;
  sockListen(fd: number, backlog: number): void;
  /** bind(2) with a socket address the caller built (sockaddr_ll, ...). */
  sockBindRaw(fd: number, addr: Buffer): void;
}
/** Unix socket functions (native/src/unix.cc). Addresses are raw sun_path bytes (see UnixDiagEntry.name); empty = unnamed. */
export interface UnixBinding {
  unixDiag(): UnixDiagEntry[];
  /** Inode of the network namespace the socket lives in (SIOCGSKNS). */
  unixNetns(fd: number): number;
  unixSocket(type: number): number;
  unixSocketpair(type: number): [number, number];
  /** Binds; a relative path is bound relative to `dir`; an empty address autobinds. */
  unixBind(fd: number, addr: Buffer, dir?: string | null): void;
  unixConnect(fd: number, addr: Buffer): void;
  unixAccept(fd: number): number;
  unixShutdown(fd: number, how: number): void;
  /** Raw option bytes (at most len); throws on any error, unlike sockGetBytes. */
  unixGetsockopt(fd: number, level: number, name: number, len: number): Buffer;
  /** getsockname (peer false) or getpeername (peer true). */
  unixName(fd: number, peer: boolean): Buffer;
  /** The receive queue, left in place; stream reads stop after `limit` bytes; zeroIsEnd: an empty read ends it (seqpacket shut down for reading). */
  unixPeek(fd: number, stream: boolean, limit?: number, zeroIsEnd?: boolean): UnixPeekResult;
  /** Sends without blocking: one message (datagram, seqpacket) or all the bytes (stream). */
  unixSend(fd: number, data: Buffer, addr?: Buffer | null, fds?: number[]): number;
}
/** TCP/UDP socket functions (native/src/inet.cc). */
export interface InetBinding {
  /** socket(domain, type | SOCK_CLOEXEC, protocol). */
  inetSocket(domain: number, type: number, protocol: number): number;
  sockInfo(fd: number): InetSockInfo;
  sockBind(fd: number, addr: InetAddr): void;
  /** 0, or EINPROGRESS (115) for a non-blocking socket; throws on any other error. */
  sockConnect(fd: number, addr: InetAddr): number;
  /** TCP_REPAIR: 1 on, 0 off (sends a window probe), -1 off without a probe. */
  tcpRepair(fd: number, mode: 1 | 0 | -1): void;
  /** Reads a connection in repair mode (seqs, both queues peeked, options, window, timestamp). */
  tcpDumpConn(fd: number): TcpConnState;
  /** Where the receive and send queues start (socket in repair mode, not yet connected). */
  tcpSetQueueSeqs(fd: number, recvSeq: number, sendSeq: number): void;
  /** On a repaired, connected socket: options, timestamp, queues, window (stays in repair). */
  tcpRepairFill(fd: number, conn: Omit<TcpConnState, 'state' | 'inqSeq' | 'outqSeq'>): void;
  /** Every datagram queued on a UDP socket with its source, left in place. */
  udpPeek(fd: number): Array<{ from: InetAddr; data: Buffer }>;
  /** Sends one datagram to `to` that comes from `from` (raw socket). */
  udpInject(to: InetAddr, from: InetAddr, data: Buffer): void;
  /** sock_diag lookup of a TCP socket by 4-tuple: state, inode (0: orphaned, no file), uid. */
  tcpDiag(local: InetAddr, peer: InetAddr): { state: number; inode: number; uid: number } | null;
  /** The shutdown bits (1 receive, 2 send) of the inet socket with that inode (sock_diag), or null. */
  inetShutdown(family: 4 | 6, protocol: number, inode: number): number | null;
  /** SOCK_DESTROY of the TCP socket with that 4-tuple. */
  tcpDestroy(local: InetAddr, peer: InetAddr): void;
  /** Every IPv4 and IPv6 address of every interface (getifaddrs). */
  netifAddrs(): Array<{ name: string; family: 4 | 6; addr: string; prefix: number }>;
  /** Adds an address to an interface (rtnetlink RTM_NEWADDR). */
  netifAddAddr(ifindex: number, family: 4 | 6, addr: string, prefix: number): void;
  /** Removes an address from an interface (rtnetlink RTM_DELADDR). */
  netifDelAddr(ifindex: number, family: 4 | 6, addr: string, prefix: number): void;
  /** The index of the interface with that name in our network namespace; 0 when there is none. */
  netifIndex(name: string): number;
  /** Sends one gratuitous ARP request for an IPv4 address on an interface (an address that moved here). */
  arpAnnounce(ifname: string, addr: string): void;
  /**
   * Runs an nftables script through libnftables in this process (as `nft -f -`), in the network
   * namespace of nsPid when given: null when done, nft's error message when it failed, false when
   * libnftables cannot be loaded.
   */
  nftRun(script: string, nsPid?: number): string | null | false;
  /** sock_diag of the packet socket with that inode (what getsockopt cannot read back), or null. */
  packetDiag(ino: number): PacketDiag | null;
  /** shutdown(SHUT_WR) in repair mode: the FIN is queued; with `sent`, taken as sent (not transmitted). */
  tcpShutdownRepair(fd: number, sent: boolean): void;
  /** Sends a bare TCP segment from `from` to `to` (raw socket, packets marked `mark`). flags: FIN 1, RST 4, ACK 16. */
  tcpInject(to: InetAddr, from: InetAddr, seg: { seq: number; ack: number; flags: number; window: number }, mark: number): void;
}
/** Sockets: unix and inet, options, sock_diag, TCP repair. */
export interface SockBinding extends SockCommonBinding, UnixBinding, InetBinding {}
/** Errno names (native/src/errors.cc); exported as errnoName, not part of the facade. */
export interface ErrnoBinding {
  /** glibc's strerrorname_np: 'EADDRINUSE' for 98; 'E<n>' for a number it has no name for. */
  errnoName(errno: number): string;
}

/** The grouped facade: `native.ptrace.seize(...)`, `native.sock.unixDiag()`... */
export interface NativeFacade {
  ptrace: PtraceBinding;
  mem: MemBinding;
  hash: HashBinding;
  sign: SignBinding;
  proc: ProcBinding;
  fd: FdBinding;
  events: EventsBinding;
  ipc: IpcBinding;
  sock: SockBinding;
}
export type NativeGroup = keyof NativeFacade;

/** The raw addon: every function of every group, flat, and errnoName. */
export interface Binding
  extends PtraceBinding,
    MemBinding,
    HashBinding,
    SignBinding,
    ProcBinding,
    FdBinding,
    EventsBinding,
    IpcBinding,
    SockBinding,
    ErrnoBinding {}
