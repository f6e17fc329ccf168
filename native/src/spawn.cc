// Creating restore stubs: clone3 with set_tid (the checkpointed PID, one entry per pid
// namespace level), then in the child only raw syscalls until it execs the static ckpt-stub
// under PTRACE_TRACEME. The child must not run libc code: it is a fork of multi-threaded Node.
#include "common.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sys/wait.h>

#include <cstring>
#include <string>
#include <vector>

namespace ckpt {
namespace {

struct KernelSigaction {
  void* handler;
  unsigned long flags;
  void* restorer;
  uint64_t mask;
};

[[noreturn]] void ChildExec(const char* path, long sessionFlags, int keepFd) {
  // The stub keeps nothing of the restorer but keepFd (the restorer's pidfd, through which it
  // takes the fds the restorer prepares), as fd 3, inherited across exec.
  if (keepFd >= 0) {
    int hi = syscall(SYS_fcntl, keepFd, F_DUPFD, 1000);
    syscall(SYS_dup3, hi, 3, 0);
    syscall(SYS_close_range, 4, ~0U, 0);
  } else {
    syscall(SYS_close_range, 3, ~0U, 0);
  }
  KernelSigaction dfl{};
  dfl.handler = nullptr;  // SIG_DFL
  for (int sig = 1; sig <= 64; sig++) syscall(SYS_rt_sigaction, sig, &dfl, nullptr, 8);
  uint64_t empty = 0;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty, nullptr, 8);
  if (sessionFlags & 1) syscall(SYS_setsid);
  if (syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0) < 0) syscall(SYS_exit_group, 126);
  const char* argv[] = {path, nullptr};
  const char* envp[] = {nullptr};
  syscall(SYS_execve, path, argv, envp);
  syscall(SYS_exit_group, 127);
  __builtin_unreachable();
}

// spawnStub(stubPath, setTid: number[], flags: number) -> pid. The stub is stopped at its exec
// trap when this returns, traced by the calling thread. flags: 1 = setsid in the child;
// cloneFlags in argument 3 (e.g. CLONE_NEWPID) are passed to clone3.
Napi::Value SpawnStub(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  std::vector<pid_t> tids;
  if (info[1].IsArray()) {
    Napi::Array a = info[1].As<Napi::Array>();
    for (uint32_t k = 0; k < a.Length(); k++) tids.push_back(a.Get(k).As<Napi::Number>().Int32Value());
  }
  long flags = info.Length() > 2 ? ArgInt(info[2]) : 0;
  uint64_t cloneFlags = info.Length() > 3 ? ArgU64(info[3]) : 0;
  int keepFd = info.Length() > 4 ? ArgInt(info[4]) : -1;
  if (access(path.c_str(), X_OK) != 0) {
    ThrowErrno(env, errno, ("access(" + path + ")").c_str());
    return env.Undefined();
  }
  clone_args args;
  memset(&args, 0, sizeof(args));
  args.flags = cloneFlags;
  args.exit_signal = SIGCHLD;
  if (!tids.empty()) {
    args.set_tid = reinterpret_cast<uint64_t>(tids.data());
    args.set_tid_size = tids.size();
  }
  long pid = syscall(SYS_clone3, &args, sizeof(args));
  if (pid == 0) ChildExec(path.c_str(), flags, keepFd);
  if (pid < 0) {
    ThrowErrno(env, errno, "clone3", tids.empty() ? -1 : tids[0]);
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(pid));
}

// spawnDetached(path, argv[], envp[], cwd, [stdin, stdout, stderr]) -> pid. The child starts a
// new session, gets exactly these three fds (every other fd is closed, inherited or not), default
// signal dispositions and an empty mask, then execs. exec failures come back as errors.
Napi::Value SpawnDetached(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  auto strings = [](Napi::Array a) {
    std::vector<std::string> v;
    for (uint32_t k = 0; k < a.Length(); k++) v.push_back(a.Get(k).As<Napi::String>().Utf8Value());
    return v;
  };
  std::vector<std::string> argv = strings(info[1].As<Napi::Array>());
  std::vector<std::string> envv = strings(info[2].As<Napi::Array>());
  std::string cwd = info[3].IsString() ? info[3].As<Napi::String>().Utf8Value() : "";
  Napi::Array stdio = info[4].As<Napi::Array>();
  int fds[3];
  for (int k = 0; k < 3; k++) fds[k] = stdio.Get(k).As<Napi::Number>().Int32Value();
  uint64_t cloneFlags = info.Length() > 5 ? ArgU64(info[5]) : 0;
  std::vector<char*> av, ev;
  for (auto& s : argv) av.push_back(const_cast<char*>(s.c_str()));
  av.push_back(nullptr);
  for (auto& s : envv) ev.push_back(const_cast<char*>(s.c_str()));
  ev.push_back(nullptr);
  int report[2];
  if (pipe2(report, O_CLOEXEC) < 0) {
    ThrowErrno(env, errno, "pipe2");
    return env.Undefined();
  }
  clone_args args;
  memset(&args, 0, sizeof(args));
  args.exit_signal = SIGCHLD;
  args.flags = cloneFlags;
  long pid = syscall(SYS_clone3, &args, sizeof(args));
  if (pid == 0) {
    int err = 0;
    syscall(SYS_setsid);
    // Copy the three fds and the report pipe above anything else, then put them in place:
    // 0-2 = stdio, 3 = report pipe (close-on-exec), everything else closed.
    int hi[3];
    for (int k = 0; k < 3; k++) hi[k] = syscall(SYS_fcntl, fds[k], F_DUPFD, 1000);
    int rep = syscall(SYS_fcntl, report[1], F_DUPFD_CLOEXEC, 1000);
    for (int k = 0; k < 3; k++) syscall(SYS_dup3, hi[k], k, 0);
    syscall(SYS_dup3, rep, 3, O_CLOEXEC);
    syscall(SYS_close_range, 4, ~0U, 0);
    KernelSigaction dfl{};
    for (int sig = 1; sig <= 64; sig++) syscall(SYS_rt_sigaction, sig, &dfl, nullptr, 8);
    uint64_t empty = 0;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty, nullptr, 8);
    if (!cwd.empty() && syscall(SYS_chdir, cwd.c_str()) < 0) err = errno;
    if (!err) {
      syscall(SYS_execve, path.c_str(), av.data(), ev.data());
      err = errno;
    }
    syscall(SYS_write, 3, &err, sizeof(err));
    syscall(SYS_exit_group, 127);
    __builtin_unreachable();
  }
  close(report[1]);
  if (pid < 0) {
    int e = errno;
    close(report[0]);
    ThrowErrno(env, e, "clone3");
    return env.Undefined();
  }
  int childErr = 0;
  ssize_t n;
  do n = read(report[0], &childErr, sizeof(childErr));
  while (n < 0 && errno == EINTR);
  close(report[0]);
  if (n == sizeof(childErr) && childErr) {
    int st;
    waitpid(pid, &st, 0);
    ThrowErrno(env, childErr, ("execve(" + path + ")").c_str());
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(pid));
}

}  // namespace

void InitSpawn(Napi::Env env, Napi::Object exports) {
  exports.Set("spawnStub", Napi::Function::New(env, SpawnStub));
  exports.Set("spawnDetached", Napi::Function::New(env, SpawnDetached));
}

}  // namespace ckpt
