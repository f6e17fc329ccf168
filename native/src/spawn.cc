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

[[noreturn]] void ChildExec(const char* path, long sessionFlags) {
  // Only the first three fds survive (the stub does not use them; the restorer installs the
  // target's own fds later). Everything else the restorer had is closed.
  syscall(SYS_close_range, 3, ~0U, 0);
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
  if (pid == 0) ChildExec(path.c_str(), flags);
  if (pid < 0) {
    ThrowErrno(env, errno, "clone3", tids.empty() ? -1 : tids[0]);
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(pid));
}

}  // namespace

void InitSpawn(Napi::Env env, Napi::Object exports) {
  exports.Set("spawnStub", Napi::Function::New(env, SpawnStub));
}

}  // namespace ckpt
