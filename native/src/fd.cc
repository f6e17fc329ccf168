// File descriptors: pidfds and pidfd_getfd (our own duplicate of a target's fd), pipes,
// non-consuming pipe reads (tee), and the few fd calls Node does not expose.
#include "common.h"

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/timerfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <thread>
#include <string>
#include <unordered_map>
#include <vector>

namespace ckpt {
namespace {

Napi::Value PidfdOpen(const Napi::CallbackInfo& info) {
  long pid = ArgInt(info[0]);
  unsigned flags = info.Length() > 1 ? static_cast<unsigned>(ArgInt(info[1])) : 0;
  long fd = syscall(SYS_pidfd_open, pid, flags);
  if (fd < 0) {
    ThrowErrno(info.Env(), errno, "pidfd_open", pid);
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), fd);
}

// schedGetscheduler(tid): the thread's policy as sched_getscheduler(2) gives it to anyone (the
// SCHED_RESET_ON_FORK bit included, which /proc/TID/stat leaves out), with no stop of the thread.
Napi::Value SchedGetscheduler(const Napi::CallbackInfo& info) {
  long tid = ArgInt(info[0]);
  long policy = syscall(SYS_sched_getscheduler, tid);
  if (policy < 0) {
    ThrowErrno(info.Env(), errno, "sched_getscheduler", tid);
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), policy);
}

// A whole file's content (ReadWhole, a link's target), or the errno of its open or read.
struct ReadResult {
  std::string data;
  int err = 0;
};

// The file `name` read whole, relative to the directory fd `dir` (AT_FDCWD: a path). With
// oneRecord (a /proc file that is one seq_file record, as fdinfo), a read shorter than asked for
// had all of it: no second read for the end.
ReadResult ReadWholeAt(int dir, const char* name, bool oneRecord = false) {
  ReadResult r;
  int fd = openat(dir, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    r.err = errno;
    return r;
  }
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) r.err = errno;
    if (n <= 0) break;
    r.data.append(buf, static_cast<size_t>(n));
    if (oneRecord && static_cast<size_t>(n) < sizeof buf) break;
  }
  close(fd);
  return r;
}

ReadResult ReadWhole(const std::string& path) { return ReadWholeAt(AT_FDCWD, path.c_str()); }

// From this many files on, readLinks and readTexts share the reads among threads (up to one per
// CPU): /proc's fd links and fdinfo files cost the kernel 5-10 us each (2000 fds: 28 ms on one
// core here), a thread's status 25 (200 threads: 5.5 ms on one core, 2.8 on two), and nothing
// else in the call waits for them. A thread costs some 50 us to start.
constexpr size_t kParallelReads = 64;

// Runs each(i) for i in [0, n): on this thread alone below kParallelReads, else on slices of the
// range, one per CPU (this thread takes the first). each must touch nothing shared.
template <typename F>
void ForEachShared(size_t n, F each) {
  size_t cpus = Cpus();
  size_t parts = n < kParallelReads ? 1 : std::min<size_t>(cpus, 4);
  size_t step = (n + parts - 1) / parts;
  std::vector<std::thread> others;
  for (size_t p = 1; p < parts; p++) {
    size_t from = p * step, to = std::min(n, from + step);
    if (from < to) others.emplace_back([=, &each] {
        for (size_t i = from; i < to; i++) each(i);
      });
  }
  for (size_t i = 0; i < std::min(n, step); i++) each(i);
  for (auto& t : others) t.join();
}

// Each result as JS: its text, or null where it failed.
Napi::Array ResultsToJs(Napi::Env env, const std::vector<ReadResult>& got) {
  Napi::Array out = Napi::Array::New(env, got.size());
  for (uint32_t i = 0; i < got.size(); i++) out.Set(i, got[i].err ? env.Null() : Napi::String::New(env, got[i].data));
  return out;
}

std::vector<std::string> StringsArg(const Napi::Array& a) {
  std::vector<std::string> out(a.Length());
  for (uint32_t i = 0; i < a.Length(); i++) out[i] = a.Get(i).As<Napi::String>().Utf8Value();
  return out;
}

// readLinks(paths) -> each symlink's target, or null where it cannot be read (an fd closed
// meanwhile): /proc/PID/fd/N of every fd in one call.
Napi::Value ReadLinks(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<std::string> paths = StringsArg(info[0].As<Napi::Array>());
  std::vector<ReadResult> got(paths.size());
  ForEachShared(paths.size(), [&](size_t i) {
    std::vector<char> buf(4096);
    for (;;) {
      ssize_t n = readlink(paths[i].c_str(), buf.data(), buf.size());
      if (n < 0) {
        got[i].err = errno;
        return;
      }
      if (static_cast<size_t>(n) < buf.size()) {
        got[i].data.assign(buf.data(), static_cast<size_t>(n));
        return;
      }
      buf.resize(buf.size() * 2);
    }
  });
  return ResultsToJs(env, got);
}

// treeWalk(root) -> the stat text of root and of each of its descendants, parents before children
// (each one's children by pid): the children files of every thread of a process, then each
// child's stat, whose parent must be that process (a pid reaped and reused meanwhile is not a
// child). One call for the walk a dump makes three times: per process, a JS readdir and reads
// cost more than the kernel's. Throws when root's stat cannot be read.
Napi::Value TreeWalk(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long root = ArgInt(info[0]);
  std::vector<int> pids;
  std::vector<std::string> stats;
  char path[96];
  snprintf(path, sizeof path, "/proc/%ld/stat", root);
  ReadResult top = ReadWhole(path);
  if (top.err) {
    ThrowErrnoMsg(env, top.err, std::string("open ") + path);
    return env.Undefined();
  }
  pids.push_back(static_cast<int>(root));
  stats.push_back(std::move(top.data));
  for (size_t i = 0; i < pids.size(); i++) {
    std::vector<int> kids;
    snprintf(path, sizeof path, "/proc/%d/task", pids[i]);
    DIR* d = opendir(path);
    if (!d) continue;  // gone meanwhile
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      snprintf(path, sizeof path, "/proc/%d/task/%.16s/children", pids[i], e->d_name);
      ReadResult children = ReadWhole(path);
      if (children.err) continue;  // a thread that exited
      const char* p = children.data.c_str();
      for (;;) {
        char* end;
        long k = strtol(p, &end, 10);
        if (end == p) break;
        kids.push_back(static_cast<int>(k));
        p = end;
      }
    }
    closedir(d);
    std::sort(kids.begin(), kids.end());
    kids.erase(std::unique(kids.begin(), kids.end()), kids.end());
    for (int k : kids) {
      snprintf(path, sizeof path, "/proc/%d/stat", k);
      ReadResult stat = ReadWhole(path);
      if (stat.err) continue;  // gone
      size_t close = stat.data.rfind(')');
      char state;
      int ppid;
      if (close == std::string::npos || sscanf(stat.data.c_str() + close + 1, " %c %d", &state, &ppid) != 2 || ppid != pids[i]) continue;
      pids.push_back(k);
      stats.push_back(std::move(stat.data));
    }
  }
  Napi::Array out = Napi::Array::New(env, stats.size());
  for (uint32_t i = 0; i < stats.size(); i++) out.Set(i, Napi::String::New(env, stats[i]));
  return out;
}

// readFdTable(pid) -> { fds, links, infos }: the fds of a process (ascending), the target of each
// /proc/PID/fd/N and the text of each /proc/PID/fdinfo/N (null where the fd closed meanwhile),
// in one call. Each is read relative to its directory (readlinkat, openat: no walk of the path
// for each), shared among threads as readLinks and readTexts are.
Napi::Value ReadFdTable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long pid = ArgInt(info[0]);
  std::string base = "/proc/" + std::to_string(pid);
  int dfd = open((base + "/fd").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    ThrowErrnoMsg(env, errno, "open " + base + "/fd");
    return env.Undefined();
  }
  int dinfo = open((base + "/fdinfo").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dinfo < 0) {
    int err = errno;
    close(dfd);
    ThrowErrnoMsg(env, err, "open " + base + "/fdinfo");
    return env.Undefined();
  }
  std::vector<int> fds;
  DIR* d = fdopendir(dup(dfd));
  if (d) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] >= '0' && e->d_name[0] <= '9') fds.push_back(atoi(e->d_name));
    closedir(d);
  }
  std::sort(fds.begin(), fds.end());
  std::vector<ReadResult> links(fds.size()), infos(fds.size());
  ForEachShared(fds.size(), [&](size_t i) {
    char name[16];
    snprintf(name, sizeof name, "%d", fds[i]);
    char buf[4096];
    ssize_t n = readlinkat(dfd, name, buf, sizeof buf);
    if (n < 0) {
      links[i].err = errno;
    } else if (static_cast<size_t>(n) < sizeof buf) {
      links[i].data.assign(buf, static_cast<size_t>(n));
    } else {
      links[i].err = ENAMETOOLONG;  // a /proc link is at most PATH_MAX
    }
    infos[i] = ReadWholeAt(dinfo, name, true);
  });
  close(dfd);
  close(dinfo);
  Napi::Int32Array outFds = Napi::Int32Array::New(env, fds.size());
  for (size_t i = 0; i < fds.size(); i++) outFds[i] = fds[i];
  Napi::Object out = Napi::Object::New(env);
  out.Set("fds", outFds);
  out.Set("links", ResultsToJs(env, links));
  out.Set("infos", ResultsToJs(env, infos));
  return out;
}

// exitNow(code): exit_group(2) at once, for a command whose output is written and whose 'exit'
// listeners have run: Node's own way out disposes of V8's heap and joins its threads first.
Napi::Value ExitNow(const Napi::CallbackInfo& info) {
  _exit(ArgInt(info[0]) & 0xff);
}

Napi::Value PidfdGetfd(const Napi::CallbackInfo& info) {
  int pidfd = ArgInt(info[0]);
  int target = ArgInt(info[1]);
  long fd = syscall(SYS_pidfd_getfd, pidfd, target, 0);
  if (fd < 0) {
    ThrowErrno(info.Env(), errno, "pidfd_getfd");
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), fd);
}

// The fields of a file's status as Node's fs.fstat gives them, in its order: dev, mode, nlink, uid,
// gid, rdev, blksize, ino, size, blocks, atimeMs, mtimeMs, ctimeMs, birthtimeMs. Node (libuv)
// takes them from statx(fd, "", AT_EMPTY_PATH, basic stats and birth time), devices as makedev,
// times as sec * 1e3 + nsec / 1e6 in doubles; the same here, so that both give equal numbers.
constexpr size_t kStatFields = 14;
bool StatLikeNode(int fd, double* out) {
  struct statx x = {};
  if (statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS | STATX_BTIME, &x) < 0) return false;
  auto ms = [](const struct statx_timestamp& t) { return static_cast<double>(t.tv_sec) * 1e3 + static_cast<double>(t.tv_nsec) / 1e6; };
  out[0] = static_cast<double>(makedev(x.stx_dev_major, x.stx_dev_minor));
  out[1] = x.stx_mode;
  out[2] = static_cast<double>(x.stx_nlink);
  out[3] = x.stx_uid;
  out[4] = x.stx_gid;
  out[5] = static_cast<double>(makedev(x.stx_rdev_major, x.stx_rdev_minor));
  out[6] = x.stx_blksize;
  out[7] = static_cast<double>(x.stx_ino);
  out[8] = static_cast<double>(x.stx_size);
  out[9] = static_cast<double>(x.stx_blocks);
  out[10] = ms(x.stx_atime);
  out[11] = ms(x.stx_mtime);
  out[12] = ms(x.stx_ctime);
  out[13] = ms(x.stx_btime);
  return true;
}

// takeFds(pidfd, fds) -> { dup, stat, own }: the dump's first look at each fd of a frozen process,
// in one call (on every CPU from kParallelReads fds on): our duplicate of it (pidfd_getfd), its
// status and its SIGIO owner and signal. dup: Int32Array, the duplicate or -errno where
// pidfd_getfd failed; stat: Float64Array of kStatFields a fd (StatLikeNode; NaN where the
// duplicate could not be stat'ed); own: Int32Array of 3 a fd, F_GETOWN_EX's type and pid and
// F_GETSIG's signal (type -1 where fcntl refused: an O_PATH fd).
Napi::Value TakeFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int pidfd = ArgInt(info[0]);
  std::vector<int> targets = IntsArg(info[1].As<Napi::Array>());
  size_t n = targets.size();
  Napi::Int32Array dup = Napi::Int32Array::New(env, n);
  Napi::Float64Array stat = Napi::Float64Array::New(env, n * kStatFields);
  Napi::Int32Array own = Napi::Int32Array::New(env, n * 3);
  int32_t* dups = dup.Data();
  double* stats = stat.Data();
  int32_t* owns = own.Data();
  ForEachShared(n, [&](size_t i) {
    int32_t* o = owns + i * 3;
    o[0] = -1;
    double* st = stats + i * kStatFields;
    std::fill(st, st + kStatFields, NAN);  // StatLikeNode writes them only when it can
    long fd = syscall(SYS_pidfd_getfd, pidfd, targets[i], 0);
    if (fd < 0) {
      dups[i] = -errno;
      return;
    }
    dups[i] = static_cast<int32_t>(fd);
    StatLikeNode(static_cast<int>(fd), st);
    struct f_owner_ex ex = {};
    if (fcntl(static_cast<int>(fd), F_GETOWN_EX, &ex) < 0) return;
    int sig = fcntl(static_cast<int>(fd), F_GETSIG);
    if (sig < 0) return;
    o[0] = ex.type;
    o[1] = ex.pid;
    o[2] = sig;
  });
  Napi::Object out = Napi::Object::New(env);
  out.Set("dup", dup);
  out.Set("stat", stat);
  out.Set("own", own);
  return out;
}

// openAll(paths, flags) -> { fd, stat }: open(2) of each path with its flags (and O_CLOEXEC), in
// one call, on every CPU from kParallelReads paths on: a restore's reopening of a process's files.
// Opened non-blocking, then given the flags asked for: a path that is a FIFO now opens at once (or
// fails with ENXIO) instead of waiting for a peer, and the caller sees its type. fd: Int32Array, the
// fd or -errno; stat: Float64Array, 3 a path: the opened file's size, mtimeMs and mode as fs.fstat
// gives them (StatLikeNode; NaN where that failed).
Napi::Value OpenAll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<std::string> paths = StringsArg(info[0].As<Napi::Array>());
  std::vector<int> flags = IntsArg(info[1].As<Napi::Array>());
  size_t n = paths.size();
  Napi::Int32Array fds = Napi::Int32Array::New(env, n);
  Napi::Float64Array stats = Napi::Float64Array::New(env, n * 3);
  int32_t* fd = fds.Data();
  double* stat = stats.Data();
  ForEachShared(n, [&](size_t i) {
    double* st = stat + 3 * i;
    st[0] = st[1] = st[2] = NAN;
    int f = open(paths[i].c_str(), flags[i] | O_CLOEXEC | O_NONBLOCK);
    if (f < 0) {
      fd[i] = -errno;
      return;
    }
    if (!(flags[i] & O_NONBLOCK) && !(flags[i] & O_PATH)) {
      int now = fcntl(f, F_GETFL);
      if (now < 0 || fcntl(f, F_SETFL, now & ~O_NONBLOCK) < 0) {
        fd[i] = -errno;
        close(f);
        return;
      }
    }
    fd[i] = f;
    double all[kStatFields];
    if (StatLikeNode(f, all)) st[0] = all[8], st[1] = all[11], st[2] = all[1];
  });
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", fds);
  out.Set("stat", stats);
  return out;
}

// closeAll(fds): closes each (errors ignored: our own duplicates, at the end of their use).
Napi::Value CloseAll(const Napi::CallbackInfo& info) {
  for (int fd : IntsArg(info[0].As<Napi::Array>())) close(fd);
  return info.Env().Undefined();
}

Napi::Value Pipe(const Napi::CallbackInfo& info) {
  int flags = info.Length() > 0 ? ArgInt(info[0]) : 0;
  int p[2];
  if (pipe2(p, flags | O_CLOEXEC) < 0) {
    ThrowErrno(info.Env(), errno, "pipe2");
    return info.Env().Undefined();
  }
  Napi::Array a = Napi::Array::New(info.Env(), 2);
  a.Set(0u, p[0]);
  a.Set(1u, p[1]);
  return a;
}

// pipeSize(fd[, size]) -> capacity (F_GETPIPE_SZ / F_SETPIPE_SZ)
Napi::Value PipeSize(const Napi::CallbackInfo& info) {
  int fd = ArgInt(info[0]);
  int r = info.Length() > 1 ? fcntl(fd, F_SETPIPE_SZ, ArgInt(info[1])) : fcntl(fd, F_GETPIPE_SZ);
  if (r < 0) {
    ThrowErrno(info.Env(), errno, "fcntl(F_GETPIPE_SZ/F_SETPIPE_SZ)");
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), r);
}

// peekPipe(fd[, packets]) -> Buffer: the bytes queued in the pipe read by fd, left in place (tee());
// with packets, the Buffer's `packets` property lists the length of each packet (O_DIRECT pipes).
Napi::Value PeekPipe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info[0]);
  bool packets = info.Length() > 1 && info[1].ToBoolean().Value();
  int cap = fcntl(fd, F_GETPIPE_SZ);
  int p[2];
  if (cap < 0 || pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) {
    ThrowErrno(env, errno, "pipe2");
    return env.Undefined();
  }
  fcntl(p[1], F_SETPIPE_SZ, cap);
  // tee keeps each buffer's packet flag (a writer in O_DIRECT mode): a read of ours stops at
  // the end of a packet, so the read lengths are the packets' (other bytes come in one read).
  ssize_t n = tee(fd, p[1], static_cast<size_t>(cap), SPLICE_F_NONBLOCK);
  std::vector<uint8_t> data;
  std::vector<uint32_t> lengths;
  if (n < 0 && errno != EAGAIN) {
    int err = errno;
    close(p[0]);
    close(p[1]);
    ThrowErrno(env, err, "tee");
    return env.Undefined();
  }
  if (n > 0) {
    data.resize(n);
    size_t got = 0;
    while (got < static_cast<size_t>(n)) {
      ssize_t r = read(p[0], data.data() + got, n - got);
      if (r <= 0) break;
      got += r;
      lengths.push_back(static_cast<uint32_t>(r));
    }
    data.resize(got);
  }
  close(p[0]);
  close(p[1]);
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::Copy(env, data.data(), data.size());
  if (packets) {
    Napi::Array a = Napi::Array::New(env, lengths.size());
    for (size_t i = 0; i < lengths.size(); i++) a.Set(i, Napi::Number::New(env, lengths[i]));
    out.Set("packets", a);
  }
  return out;
}

Napi::Value Fcntl(const Napi::CallbackInfo& info) {
  int fd = ArgInt(info[0]);
  int cmd = ArgInt(info[1]);
  long arg = info.Length() > 2 ? ArgInt(info[2]) : 0;
  int r = fcntl(fd, cmd, arg);
  if (r < 0) {
    ThrowErrno(info.Env(), errno, "fcntl");
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), r);
}

Napi::Value Lseek(const Napi::CallbackInfo& info) {
  off_t r = lseek(ArgInt(info[0]), static_cast<off_t>(ArgI64(info[1])), ArgInt(info[2]));
  if (r < 0) {
    ThrowErrno(info.Env(), errno, "lseek");
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), static_cast<double>(r));
}

Napi::Value FdResult(const Napi::CallbackInfo& info, long r, const char* name) {
  if (r < 0) {
    ThrowErrno(info.Env(), errno, name);
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), static_cast<double>(r));
}

// eventfd(count, flags) -> fd (flags: EFD_NONBLOCK, EFD_SEMAPHORE; always close-on-exec here)
Napi::Value Eventfd(const Napi::CallbackInfo& info) {
  return FdResult(info, eventfd(static_cast<unsigned>(ArgU64(info[0])), ArgInt(info[1]) | EFD_CLOEXEC), "eventfd");
}

// memfdCreate(name[, flags]) -> fd (close-on-exec; flags: MFD_ALLOW_SEALING, MFD_EXEC, ...)
Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  std::string name = info[0].As<Napi::String>().Utf8Value();
  unsigned flags = info.Length() > 1 ? (unsigned)ArgInt(info[1]) : 0;
  return FdResult(info, syscall(SYS_memfd_create, name.c_str(), MFD_CLOEXEC | flags), "memfd_create");
}

// getOwnerEx(fd) -> { type, pid } (F_GETOWN_EX: F_OWNER_TID 0, F_OWNER_PID 1, F_OWNER_PGRP 2)
Napi::Value GetOwnerEx(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct f_owner_ex o = {};
  if (fcntl(ArgInt(info[0]), F_GETOWN_EX, &o) < 0) {
    ThrowErrno(env, errno, "fcntl(F_GETOWN_EX)");
    return env.Undefined();
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("type", Napi::Number::New(env, o.type));
  out.Set("pid", Napi::Number::New(env, o.pid));
  return out;
}

// mknod(path, mode, dev): a FIFO or device node (mode includes the file type bits).
Napi::Value Mknod(const Napi::CallbackInfo& info) {
  std::string path = info[0].As<Napi::String>().Utf8Value();
  mode_t mode = (mode_t)ArgInt(info[1]);
  dev_t dev = (dev_t)info[2].As<Napi::Number>().Int64Value();
  if (mknod(path.c_str(), mode, dev) < 0) ThrowErrno(info.Env(), errno, "mknod");
  return info.Env().Undefined();
}

// epollCreate() -> fd
Napi::Value EpollCreate(const Napi::CallbackInfo& info) {
  return FdResult(info, epoll_create1(EPOLL_CLOEXEC), "epoll_create1");
}

// signalfd(mask: bigint, flags) -> fd
Napi::Value Signalfd(const Napi::CallbackInfo& info) {
  uint64_t mask = ArgU64(info[0]);
  sigset_t set;
  sigemptyset(&set);
  for (int s = 1; s <= 64; s++)
    if (mask & (1ULL << (s - 1))) sigaddset(&set, s);
  return FdResult(info, signalfd(-1, &set, ArgInt(info[1]) | SFD_CLOEXEC), "signalfd");
}

// timerfd(clockid, flags, settimeFlags, valueNs, intervalNs) -> fd, armed with a relative
// value unless settimeFlags has TFD_TIMER_ABSTIME.
Napi::Value Timerfd(const Napi::CallbackInfo& info) {
  int fd = timerfd_create(ArgInt(info[0]), ArgInt(info[1]) | TFD_CLOEXEC);
  if (fd < 0) return FdResult(info, fd, "timerfd_create");
  uint64_t v = ArgU64(info[3]), iv = ArgU64(info[4]);
  itimerspec its{};
  its.it_value.tv_sec = v / 1000000000ULL;
  its.it_value.tv_nsec = v % 1000000000ULL;
  its.it_interval.tv_sec = iv / 1000000000ULL;
  its.it_interval.tv_nsec = iv % 1000000000ULL;
  if ((v || iv) && timerfd_settime(fd, ArgInt(info[2]), &its, nullptr) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return FdResult(info, -1, "timerfd_settime");
  }
  return Napi::Number::New(info.Env(), fd);
}

// kcmp(pid1, pid2, type, idx1, idx2) -> 0 equal, 1/2 ordered, 3 different (KCMP_FILE = 0).
Napi::Value Kcmp(const Napi::CallbackInfo& info) {
  long r = syscall(SYS_kcmp, ArgInt(info[0]), ArgInt(info[1]), ArgInt(info[2]), ArgU64(info[3]), ArgU64(info[4]));
  if (r < 0) {
    ThrowErrno(info.Env(), errno, "kcmp");
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), r);
}

// kcmpEpollTfd(pid1, fd1, pid2, epfd, tfd, toff) -> kcmp result: 0 when fd1 of pid1 is the file
// that epoll fd epfd of pid2 watches under number tfd (KCMP_EPOLL_TFD).
Napi::Value KcmpEpollTfd(const Napi::CallbackInfo& info) {
  struct {
    uint32_t efd, tfd, toff;
  } slot = {static_cast<uint32_t>(ArgInt(info[3])), static_cast<uint32_t>(ArgInt(info[4])), static_cast<uint32_t>(ArgInt(info[5]))};
  long r = syscall(SYS_kcmp, ArgInt(info[0]), ArgInt(info[2]), 7 /* KCMP_EPOLL_TFD */, ArgU64(info[1]), reinterpret_cast<unsigned long>(&slot));
  if (r < 0) {
    ThrowErrno(info.Env(), errno, "kcmp(KCMP_EPOLL_TFD)");
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), r);
}

// Read-ahead: a whole file read on a thread of its own while the caller goes on, joined later.
// For /proc files whose read is slow and whose content must be of a given instant: smaps walks
// every page table of the process (about 15 ms a GiB resident here), and is read right after the
// freeze, while the dump does other work. Handles are used from the JS main thread only.
std::unordered_map<int, std::future<ReadResult>> readsAhead;
int nextReadAhead = 1;

// readTexts(paths) -> each file's whole text (UTF-8), or null where it cannot be opened or read
// (a task that exited): /proc files of every thread in one call, where a JS readFileSync each
// costs more than the kernel's read of it.
Napi::Value ReadTexts(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<std::string> paths = StringsArg(info[0].As<Napi::Array>());
  std::vector<ReadResult> got(paths.size());
  ForEachShared(paths.size(), [&](size_t i) { got[i] = ReadWhole(paths[i]); });
  return ResultsToJs(env, got);
}

// readAhead(path): a handle for readJoin or readDrop.
Napi::Value ReadAhead(const Napi::CallbackInfo& info) {
  std::string path = info[0].As<Napi::String>().Utf8Value();
  int id = nextReadAhead++;
  readsAhead.emplace(id, std::async(std::launch::async, ReadWhole, path));
  return Napi::Number::New(info.Env(), id);
}

// readAheadAll(paths) -> a handle each (for readJoin, readDrop): the files read in order on one
// thread of their own. For many small reads (a tree's processes' smaps), where a thread each would
// cost more than its read.
Napi::Value ReadAheadAll(const Napi::CallbackInfo& info) {
  std::vector<std::string> paths = StringsArg(info[0].As<Napi::Array>());
  std::vector<std::promise<ReadResult>> done(paths.size());
  Napi::Array out = Napi::Array::New(info.Env(), paths.size());
  for (uint32_t i = 0; i < paths.size(); i++) {
    int id = nextReadAhead++;
    readsAhead.emplace(id, done[i].get_future());
    out.Set(i, Napi::Number::New(info.Env(), id));
  }
  // Detached: it owns the promises, and a handle dropped unread costs nothing more.
  std::thread([paths = std::move(paths), done = std::move(done)]() mutable {
    for (size_t i = 0; i < paths.size(); i++) done[i].set_value(ReadWhole(paths[i]));
  }).detach();
  return out;
}

// Files created ahead: an image's files created on a thread of their own while the dump goes on
// (a create costs 0.2-0.3 ms on this VM's ext4, and a tree's dump makes two per process). Each
// joined (createJoin) before anything else looks at their directory. Main thread only.
std::unordered_map<int, std::future<std::vector<int>>> createsAhead;
int nextCreateAhead = 1;

// createAhead(paths, mode) -> a handle for createJoin: each file created (O_CREAT | O_EXCL, empty,
// closed at once) in order on a thread of its own.
Napi::Value CreateAhead(const Napi::CallbackInfo& info) {
  std::vector<std::string> paths = StringsArg(info[0].As<Napi::Array>());
  mode_t mode = static_cast<mode_t>(ArgInt(info[1]));
  int id = nextCreateAhead++;
  createsAhead.emplace(id, std::async(std::launch::async, [paths = std::move(paths), mode]() {
                         std::vector<int> made(paths.size());
                         for (size_t i = 0; i < paths.size(); i++) {
                           int fd = open(paths[i].c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
                           made[i] = fd >= 0;
                           if (fd >= 0) close(fd);
                         }
                         return made;
                       }));
  return Napi::Number::New(info.Env(), id);
}

// createJoin(handle) -> for each path, whether this created it (false: it was there, or the create
// failed); waits for the thread. A handle joined already, or unknown, gives an empty array.
Napi::Value CreateJoin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto it = createsAhead.find(ArgInt(info[0]));
  Napi::Array out = Napi::Array::New(env);
  if (it == createsAhead.end()) return out;
  std::vector<int> made = it->second.get();
  createsAhead.erase(it);
  for (uint32_t i = 0; i < made.size(); i++) out.Set(i, Napi::Boolean::New(env, made[i] != 0));
  return out;
}

// readJoin(handle): the file's content (utf-8), once read; throws the read's errno.
Napi::Value ReadJoin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto it = readsAhead.find(ArgInt(info[0]));
  if (it == readsAhead.end()) {
    ThrowErrnoMsg(env, EBADF, "readJoin: no such read-ahead");
    return env.Undefined();
  }
  ReadResult r = it->second.get();
  readsAhead.erase(it);
  if (r.err) {
    ThrowErrno(env, r.err, "read");
    return env.Undefined();
  }
  return Napi::String::New(env, r.data);
}

// readDrop(handle): waits for the read and forgets it.
Napi::Value ReadDrop(const Napi::CallbackInfo& info) {
  auto it = readsAhead.find(ArgInt(info[0]));
  if (it != readsAhead.end()) {
    it->second.wait();
    readsAhead.erase(it);
  }
  return info.Env().Undefined();
}

}  // namespace

// A whole file mapped (MAP_PRIVATE, never unmapped), for mapFile*: nullptr and *len 0 for an empty
// file; throws (returns nullptr) on failure.
static void* MapWhole(Napi::Env env, const std::string& path, size_t* len) {
  *len = 0;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    ThrowErrnoMsg(env, errno, "open " + path);
    return nullptr;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    ThrowErrnoMsg(env, e, "fstat " + path);
    return nullptr;
  }
  if (st.st_size == 0) {
    close(fd);
    return nullptr;
  }
  void* p = mmap(nullptr, st.st_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  int e = errno;
  close(fd);
  if (p == MAP_FAILED) {
    ThrowErrnoMsg(env, e, "mmap " + path);
    return nullptr;
  }
  *len = st.st_size;
  return p;
}

// mapFileLatin1(path): the file's bytes as a string, one character a byte, whose characters stay
// in the file's pages (an external string over a private mapping of it: no copy into fresh
// memory) where Node can make one (node_api_create_external_string_latin1, looked up at run time:
// Node >= 20.4), else a copy. For a file that is not rewritten in place while the string lives.
Napi::Value MapFileLatin1(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t len;
  void* p = MapWhole(env, info[0].As<Napi::String>().Utf8Value(), &len);
  if (env.IsExceptionPending()) return env.Undefined();
  if (!p) return Napi::String::New(env, "");
  using Make = napi_status (*)(napi_env, char*, size_t, napi_finalize, void*, napi_value*, bool*);
  static Make make = reinterpret_cast<Make>(dlsym(RTLD_DEFAULT, "node_api_create_external_string_latin1"));
  napi_value out;
  bool copied = true;
  napi_status st = make ? make(env, static_cast<char*>(p), len, nullptr, nullptr, &out, &copied) : napi_create_string_latin1(env, static_cast<char*>(p), len, &out);
  if (copied) munmap(p, len);
  if (st != napi_ok) {
    Napi::Error::New(env, "mapFileLatin1: no string made").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Value(env, out);
}

// mapFileBuffer(path): the file's bytes as a Buffer over a private mapping of it (no copy).
Napi::Value MapFileBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t len;
  void* p = MapWhole(env, info[0].As<Napi::String>().Utf8Value(), &len);
  if (env.IsExceptionPending()) return env.Undefined();
  if (!p) return Napi::Buffer<uint8_t>::New(env, 0);
  return Napi::Buffer<uint8_t>::New(env, static_cast<uint8_t*>(p), len);
}

void InitFd(Napi::Env env, Napi::Object exports) {
  exports.Set("kcmpEpollTfd", Napi::Function::New(env, KcmpEpollTfd));
  exports.Set("pidfdOpen", Napi::Function::New(env, PidfdOpen));
  exports.Set("schedGetscheduler", Napi::Function::New(env, SchedGetscheduler));
  exports.Set("exitNow", Napi::Function::New(env, ExitNow));
  exports.Set("readTexts", Napi::Function::New(env, ReadTexts));
  exports.Set("mapFileLatin1", Napi::Function::New(env, MapFileLatin1));
  exports.Set("mapFileBuffer", Napi::Function::New(env, MapFileBuffer));
  exports.Set("readLinks", Napi::Function::New(env, ReadLinks));
  exports.Set("readFdTable", Napi::Function::New(env, ReadFdTable));
  exports.Set("treeWalk", Napi::Function::New(env, TreeWalk));
  exports.Set("pidfdGetfd", Napi::Function::New(env, PidfdGetfd));
  exports.Set("takeFds", Napi::Function::New(env, TakeFds));
  exports.Set("closeAll", Napi::Function::New(env, CloseAll));
  exports.Set("openAll", Napi::Function::New(env, OpenAll));
  exports.Set("pipe", Napi::Function::New(env, Pipe));
  exports.Set("pipeSize", Napi::Function::New(env, PipeSize));
  exports.Set("peekPipe", Napi::Function::New(env, PeekPipe));
  exports.Set("fcntl", Napi::Function::New(env, Fcntl));
  exports.Set("kcmp", Napi::Function::New(env, Kcmp));
  exports.Set("lseek", Napi::Function::New(env, Lseek));
  exports.Set("eventfd", Napi::Function::New(env, Eventfd));
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate));
  exports.Set("mknod", Napi::Function::New(env, Mknod));
  exports.Set("getOwnerEx", Napi::Function::New(env, GetOwnerEx));
  exports.Set("epollCreate", Napi::Function::New(env, EpollCreate));
  exports.Set("signalfd", Napi::Function::New(env, Signalfd));
  exports.Set("timerfd", Napi::Function::New(env, Timerfd));
  exports.Set("readAhead", Napi::Function::New(env, ReadAhead));
  exports.Set("readAheadAll", Napi::Function::New(env, ReadAheadAll));
  exports.Set("readJoin", Napi::Function::New(env, ReadJoin));
  exports.Set("readDrop", Napi::Function::New(env, ReadDrop));
  exports.Set("createAhead", Napi::Function::New(env, CreateAhead));
  exports.Set("createJoin", Napi::Function::New(env, CreateJoin));
}

}  // namespace ckpt
