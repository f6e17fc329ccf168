// Creating restore stubs: clone3 with set_tid (the checkpointed PID, one entry per pid
// namespace level), then in the child only raw syscalls until it execs the static ckpt-stub
// under PTRACE_TRACEME. The child must not run libc code: it is a fork of multi-threaded Node.
//
// Without namespace flags the child shares Node's memory until it execs (CLONE_VM | CLONE_VFORK,
// on a stack of its own, as posix_spawn does): a fork copies the page tables of Node's whole heap
// first, 7-8 ms with 250 MB resident here (a restore after reading a long chain), 0.5 with 46.
// The calling thread waits until the child has exec'd (or exited), with every signal blocked, so
// that no handler of Node's runs in the child; the child sets every disposition to the default
// before it unblocks them.
#include "common.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sys/wait.h>

#include <cstring>
#include <string>
#include <vector>

// CkptCloneRun(args, size, fn, arg): clone3(args), the child calling fn(arg) on the stack args
// gives (then exit_group(127) should fn return). The child's pid, or -errno.
extern "C" long CkptCloneRun(struct clone_args* args, size_t size, void (*fn)(void*), void* arg);
asm(R"(
  .text
  .globl CkptCloneRun
  .type CkptCloneRun, @function
CkptCloneRun:
  push %r12
  push %r13
  mov %rdx, %r12
  mov %rcx, %r13
  mov $435, %eax
  syscall
  test %rax, %rax
  jnz 1f
  xor %ebp, %ebp
  mov %r13, %rdi
  call *%r12
  mov $231, %eax
  mov $127, %edi
  syscall
  hlt
1:
  pop %r13
  pop %r12
  ret
  .size CkptCloneRun, .-CkptCloneRun
  .section .note.GNU-stack, "", @progbits
  .text
)");

namespace ckpt {
namespace {

// Namespace flags make a fork (clone3 without CLONE_VM); without them, CLONE_VM | CLONE_VFORK.
constexpr uint64_t kNamespaceFlags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP | CLONE_NEWTIME;

// clone3(args) running child(arg) in the child, which must only make raw syscalls and end in
// execve or exit_group. Without namespace flags: CLONE_VM | CLONE_VFORK on a stack of its own
// (see the top of this file), every signal blocked in the calling thread meanwhile. The child's
// pid, or -1 with errno set.
long CloneAndRun(clone_args& args, void (*child)(void*), void* arg) {
  if (args.flags & kNamespaceFlags) {
    long pid = syscall(SYS_clone3, &args, sizeof(args));
    if (pid == 0) {
      child(arg);
      syscall(SYS_exit_group, 127);
    }
    return pid;
  }
  constexpr size_t kStack = 64 << 10;
  void* stack = mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) return -1;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  clone_args a = args;
  a.flags |= CLONE_VM | CLONE_VFORK;
  a.stack = reinterpret_cast<uint64_t>(stack);
  a.stack_size = kStack;
  long r = CkptCloneRun(&a, sizeof(a), child, arg);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  munmap(stack, kStack);
  if (r < 0) {
    errno = static_cast<int>(-r);
    return -1;
  }
  return r;
}

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
  if (info[1].IsArray()) tids = IntsArg(info[1].As<Napi::Array>());
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
  struct StubChild {
    const char* path;
    long flags;
    int keepFd;
  } c{path.c_str(), flags, keepFd};
  long pid = CloneAndRun(
      args, [](void* p) {
        auto* c = static_cast<StubChild*>(p);
        ChildExec(c->path, c->flags, c->keepFd);
      },
      &c);
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
  struct DetachedChild {
    const int* fds;
    int report;
    const char* cwd;
    const char* path;
    char* const* av;
    char* const* ev;
  } c{fds, report[1], cwd.empty() ? nullptr : cwd.c_str(), path.c_str(), av.data(), ev.data()};
  long pid = CloneAndRun(
      args, [](void* p) {
        auto* c = static_cast<DetachedChild*>(p);
        int err = 0;
        syscall(SYS_setsid);
        // Copy the three fds and the report pipe above anything else, then put them in place:
        // 0-2 = stdio, 3 = report pipe (close-on-exec), everything else closed.
        int hi[3];
        for (int k = 0; k < 3; k++) hi[k] = syscall(SYS_fcntl, c->fds[k], F_DUPFD, 1000);
        int rep = syscall(SYS_fcntl, c->report, F_DUPFD_CLOEXEC, 1000);
        for (int k = 0; k < 3; k++) syscall(SYS_dup3, hi[k], k, 0);
        syscall(SYS_dup3, rep, 3, O_CLOEXEC);
        syscall(SYS_close_range, 4, ~0U, 0);
        KernelSigaction dfl{};
        for (int sig = 1; sig <= 64; sig++) syscall(SYS_rt_sigaction, sig, &dfl, nullptr, 8);
        uint64_t empty = 0;
        syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty, nullptr, 8);
        if (c->cwd && syscall(SYS_chdir, c->cwd) < 0) err = errno;
        if (!err) {
          syscall(SYS_execve, c->path, c->av, c->ev);
          err = errno;
        }
        syscall(SYS_write, 3, &err, sizeof(err));
        syscall(SYS_exit_group, 127);
      },
      &c);
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

// execve(path, argv, envp): this process becomes path (the same pid, its fds but those
// close-on-exec, its ignored signals); returns only by throwing why it could not. For a
// long-lived command that needs Node flags its own start did not give (ckpt server's heap).
// Node marks fds 0-2 close-on-exec at its start: they are passed on all the same.
Napi::Value Execve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  auto strings = [](const Napi::Array& a) {
    std::vector<std::string> v;
    for (uint32_t i = 0; i < a.Length(); i++) v.push_back(a.Get(i).As<Napi::String>().Utf8Value());
    return v;
  };
  std::vector<std::string> av = strings(info[1].As<Napi::Array>()), ev = strings(info[2].As<Napi::Array>());
  std::vector<char*> avp, evp;
  for (auto& s : av) avp.push_back(s.data());
  for (auto& s : ev) evp.push_back(s.data());
  avp.push_back(nullptr);
  evp.push_back(nullptr);
  int was[3];
  for (int fd = 0; fd < 3; fd++)
    if ((was[fd] = fcntl(fd, F_GETFD)) >= 0) fcntl(fd, F_SETFD, was[fd] & ~FD_CLOEXEC);
  execve(path.c_str(), avp.data(), evp.data());
  int e = errno;
  for (int fd = 0; fd < 3; fd++)
    if (was[fd] >= 0) fcntl(fd, F_SETFD, was[fd]);
  errno = e;
  ThrowErrno(env, errno, ("execve(" + path + ")").c_str());
  return env.Undefined();
}

}  // namespace

void InitSpawn(Napi::Env env, Napi::Object exports) {
  exports.Set("execve", Napi::Function::New(env, Execve));
  exports.Set("spawnStub", Napi::Function::New(env, SpawnStub));
  exports.Set("spawnDetached", Napi::Function::New(env, SpawnDetached));
}

}  // namespace ckpt
