/**
 * Linux x86_64 constants the packages and plugins pass to the native engine or to remote
 * syscalls, in one place (values from the kernel's uapi headers for x86_64).
 */

// ---- syscall numbers ----
export const SYS = Object.freeze({
  membarrier: 324,
  seccomp: 317,
  read: 0,
  write: 1,
  open: 2,
  close: 3,
  lseek: 8,
  mmap: 9,
  mprotect: 10,
  munmap: 11,
  brk: 12,
  rt_sigaction: 13,
  rt_sigprocmask: 14,
  ioctl: 16,
  pread64: 17,
  mremap: 25,
  io_setup: 206,
  io_destroy: 207,
  io_submit: 209,
  madvise: 28,
  dup2: 33,
  pause: 34,
  nanosleep: 35,
  getpid: 39,
  fcntl: 72,
  fchdir: 81,
  umask: 95,
  prctl: 157,
  setpriority: 141,
  sched_getparam: 143,
  sched_setscheduler: 144,
  sched_getscheduler: 145,
  sched_setaffinity: 203,
  mlockall: 151,
  mlock2: 325,
  timer_create: 222,
  timer_settime: 223,
  timer_gettime: 224,
  timer_getoverrun: 225,
  arch_prctl: 158,
  setsid: 112,
  setpgid: 109,
  kill: 62,
  getpgid: 121,
  getsid: 124,
  gettid: 186,
  set_tid_address: 218,
  restart_syscall: 219,
  epoll_ctl: 233,
  clock_nanosleep: 230,
  exit: 60,
  exit_group: 231,
  openat: 257,
  set_robust_list: 273,
  rt_tgsigqueueinfo: 297,
  rt_sigqueueinfo: 129,
  poll: 7,
  ppoll: 271,
  select: 23,
  pselect6: 270,
  dup3: 292,
  pidfd_open: 434,
  pidfd_getfd: 438,
  userfaultfd: 323,
  close_range: 436,
  clone: 56,
  clone3: 435,
  rseq: 334,
  setresuid: 117,
  setresgid: 119,
  setgroups: 116,
  capget: 125,
  capset: 126,
  setfsuid: 122,
  setfsgid: 123,
  personality: 135,
  chroot: 161,
  sigaltstack: 131,
  getitimer: 36,
  setitimer: 38,
  prlimit64: 302,
  shmat: 30,
  shmdt: 67,
  chdir: 80,
  fchmod: 91,
  wait4: 61,
  rt_sigtimedwait: 128,
  setsockopt: 54,
  recvmsg: 47,
  socket: 41,
  connect: 42,
  bind: 49,
  listen: 50,
  getsockname: 51,
  getpeername: 52,
  socketpair: 53,
  getsockopt: 55,
  clock_gettime: 228,
});

// ---- kernel-internal restart errnos (seen in rax of a task stopped in a syscall) ----
export const ERESTARTSYS = 512;
export const ERESTARTNOINTR = 513;
export const ERESTARTNOHAND = 514;
export const ERESTART_RESTARTBLOCK = 516;

export const PAGE_SIZE = 4096;
export const AT_FDCWD = -100;

// ---- open(2) flags ----
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_ACCMODE = 3;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
/** pidfd_open(2): a pidfd of that thread, not of its thread group (Linux 6.9). */
export const PIDFD_THREAD = O_EXCL;
export const O_NOCTTY = 0o400;
export const O_TRUNC = 0o1000;
export const O_APPEND = 0o2000;
export const O_NONBLOCK = 0o4000;
export const O_DSYNC = 0o10000;
export const O_DIRECT = 0o40000;
export const O_LARGEFILE = 0o100000;
export const O_DIRECTORY = 0o200000;
export const O_NOFOLLOW = 0o400000;
export const O_NOATIME = 0o1000000;
export const O_CLOEXEC = 0o2000000;
export const O_SYNC = 0o4010000;
export const O_PATH = 0o10000000;
export const O_TMPFILE = 0o20200000;

// ---- fcntl(2) commands and arguments ----
export const F_DUPFD = 0;
export const F_GETFD = 1;
export const F_SETFD = 2;
export const F_GETFL = 3;
export const F_SETFL = 4;
export const F_GETLK = 5;
export const F_SETLK = 6;
export const F_SETLKW = 7;
export const F_OFD_GETLK = 36;
export const F_OFD_SETLK = 37;
export const F_OFD_SETLKW = 38;
export const F_DUPFD_CLOEXEC = 1030;
export const F_SETPIPE_SZ = 1031;
export const F_GETPIPE_SZ = 1032;
export const F_RDLCK = 0;
export const F_WRLCK = 1;
export const F_UNLCK = 2;
export const FD_CLOEXEC = 1;
export const F_SETSIG = 10;
export const F_GETSIG = 11;
export const F_SETOWN_EX = 15;
export const FASYNC = 0o20000;
export const F_ADD_SEALS = 1033;
export const F_GET_SEALS = 1034;
export const F_SEAL_SEAL = 0x1;
export const F_SEAL_EXEC = 0x20;

// ---- memfd_create(2) ----
export const MFD_ALLOW_SEALING = 0x2;
export const MFD_EXEC = 0x10;

// ---- lseek(2) ----
export const SEEK_SET = 0;
export const SEEK_CUR = 1;
export const SEEK_END = 2;
export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;

// ---- mmap(2) / mprotect(2) ----
export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const PROT_EXEC = 4;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_GROWSDOWN = 0x100;
export const MAP_NORESERVE = 0x4000;
export const MAP_POPULATE = 0x8000;
export const MAP_FIXED_NOREPLACE = 0x100000;

// ---- clone(2) / clone3(2) flags ----
export const CLONE_VM = 0x100;
export const CLONE_FS = 0x200;
export const CLONE_FILES = 0x400;
export const CLONE_SIGHAND = 0x800;
export const CLONE_PIDFD = 0x1000;
export const CLONE_PTRACE = 0x2000;
export const CLONE_VFORK = 0x4000;
export const CLONE_PARENT = 0x8000;
export const CLONE_THREAD = 0x10000;
export const CLONE_NEWNS = 0x20000;
export const CLONE_SYSVSEM = 0x40000;
export const CLONE_SETTLS = 0x80000;
export const CLONE_PARENT_SETTID = 0x100000;
export const CLONE_CHILD_CLEARTID = 0x200000;
export const CLONE_UNTRACED = 0x800000;
export const CLONE_CHILD_SETTID = 0x1000000;
export const CLONE_NEWCGROUP = 0x2000000;
export const CLONE_NEWUTS = 0x4000000;
export const CLONE_NEWIPC = 0x08000000;
export const CLONE_NEWUSER = 0x10000000;
export const CLONE_NEWPID = 0x20000000;
export const CLONE_NEWNET = 0x40000000;
/** What pthread_create passes: a thread sharing everything with its process. */
export const CLONE_THREAD_FLAGS = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;

// ---- kcmp(2) types ----
export const KCMP_FILE = 0;
export const KCMP_VM = 1;
export const KCMP_FILES = 2;
export const KCMP_FS = 3;
export const KCMP_SIGHAND = 4;
export const KCMP_IO = 5;
export const KCMP_SYSVSEM = 6;
export const KCMP_EPOLL_TFD = 7;

// ---- ptrace options ----
export const PTRACE_O_TRACESYSGOOD = 0x1;
export const PTRACE_O_TRACEFORK = 0x2;
export const PTRACE_O_TRACEVFORK = 0x4;
export const PTRACE_O_TRACECLONE = 0x8;
export const PTRACE_O_TRACEEXEC = 0x10;
export const PTRACE_O_TRACEVFORKDONE = 0x20;
export const PTRACE_O_TRACEEXIT = 0x40;
export const PTRACE_O_TRACESECCOMP = 0x80;
export const PTRACE_O_EXITKILL = 0x100000;
export const PTRACE_O_SUSPEND_SECCOMP = 0x200000;

// ---- sockets ----
export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const AF_NETLINK = 16;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_RAW = 3;
export const SOCK_SEQPACKET = 5;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const IPPROTO_IP = 0;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_IPV6 = 41;
export const SHUT_RD = 0;
export const SHUT_WR = 1;
export const SHUT_RDWR = 2;
export const SO_REUSEADDR = 2;
export const SO_TYPE = 3;
export const SO_ERROR = 4;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_KEEPALIVE = 9;
export const SO_LINGER = 13;
export const SO_PASSCRED = 16;
export const SO_RCVLOWAT = 18;
export const SO_RCVTIMEO = 20;
export const SO_SNDTIMEO = 21;
export const SO_BINDTODEVICE = 25;
export const SO_SNDBUFFORCE = 32;
export const SO_RCVBUFFORCE = 33;
export const SO_PASSSEC = 34;
export const SO_DOMAIN = 39;
export const SO_PEEK_OFF = 42;
export const TCP_NODELAY = 1;
export const TCP_CONGESTION = 13;

// ---- prctl(2) ----
export const PR_SET_NAME = 15;
export const PR_SET_MM = 35;
export const PR_SET_MM_MAP = 14;
export const PR_GET_TID_ADDRESS = 40;

// ---- signals ----
/** A signal set with every signal (the kernel leaves SIGKILL and SIGSTOP out when it is applied). */
export const ALL_SIGNALS = (1n << 64n) - 1n;
export const SIGKILL = 9;
export const SIGCHLD = 17;
export const SIGSTOP = 19;
export const SIGTTOU = 22;
export const SIGWINCH = 28;

// ---- event fds, inotify ----
export const EFD_SEMAPHORE = 1;
export const EFD_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;
export const EPOLL_CTL_ADD = 1;
export const EPOLL_CTL_DEL = 2;
export const EPOLL_CTL_MOD = 3;
export const IN_NONBLOCK = 0o4000;
export const IN_CLOEXEC = 0o2000000;
export const IN_DONT_FOLLOW = 0x02000000;

// ---- SysV shared memory (shmat flags) ----
export const SHM_RDONLY = 0o10000;
export const SHM_EXEC = 0o100000;

// ---- arch_prctl(2) ----
export const ARCH_MAP_VDSO_64 = 0x2003;
