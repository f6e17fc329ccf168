// ptrace control of one task: seize/freeze, wait, resume/detach, register sets, signal mask,
// rseq and robust-list queries, and remote syscall injection.
//
// Every ptrace request must come from the thread that attached (the tracer). The facade calls
// these synchronously from the JS thread, which is therefore the one and only tracer.
#include "common.h"

#include <cpuid.h>
#include <elf.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <vector>

#ifndef PTRACE_GET_RSEQ_CONFIGURATION
#define PTRACE_GET_RSEQ_CONFIGURATION 0x420f
#endif
#ifndef NT_X86_XSTATE
#define NT_X86_XSTATE 0x202
#endif

namespace ckpt {
namespace {

// Signals that arrived while a task was under our control and that we suppressed; the
// facade takes them to re-deliver on resume or to save in the image.
std::map<long, std::vector<int>> g_suppressed;

long Ptrace(int req, pid_t pid, void* addr, void* data) {
  errno = 0;
  return ptrace(static_cast<__ptrace_request>(req), pid, addr, data);
}

double NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

Napi::Object StatusObject(Napi::Env env, int st) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("status", st);
  if (WIFEXITED(st)) {
    o.Set("kind", "exited");
    o.Set("code", WEXITSTATUS(st));
  } else if (WIFSIGNALED(st)) {
    o.Set("kind", "killed");
    o.Set("signal", WTERMSIG(st));
  } else if (WIFSTOPPED(st)) {
    int sig = WSTOPSIG(st), event = st >> 16;
    o.Set("signal", sig);
    o.Set("event", event);
    if (sig == (SIGTRAP | 0x80)) o.Set("kind", "syscall");
    else if (event == PTRACE_EVENT_STOP) o.Set("kind", "event-stop");
    else if (event != 0) o.Set("kind", "event");
    else o.Set("kind", "signal");
  } else {
    o.Set("kind", "unknown");
  }
  return o;
}

// How long a wait for a stop spins (waitpid WNOHANG) before it sleeps. A task we resumed for
// a remote syscall or an interrupt stops again within some 10 us; a tracer asleep meanwhile
// leaves its CPU idle, and on a VM the wake-up of an idle virtual CPU (an IPI through the host)
// costs more than the stop itself: remote syscalls took 23-26 us each here with a blocking
// waitpid, 17.6 spinning (a 2000-syscall loop, tracer and tracee free to run anywhere).
constexpr double kSpinMs = 0.1;

// Spins on waitpid(WNOHANG) for up to kSpinMs: 1 when pid changed state (*st), 0 when it has
// not yet, -1 on error (errno).
int SpinWait(pid_t pid, int* st) {
  double until = NowMs() + kSpinMs;
  do {
    pid_t r = waitpid(pid, st, __WALL | WNOHANG);
    if (r == pid) return 1;
    if (r < 0 && errno != EINTR) return -1;
  } while (NowMs() < until);
  return 0;
}

// Waits for pid to change state, polling so that a task stuck in the kernel cannot hang us.
// Returns false on timeout (errno = ETIMEDOUT) or error.
bool WaitPoll(pid_t pid, int* st, double timeoutMs) {
  double deadline = NowMs() + timeoutMs;
  long sleepNs = 10000;
  int spun = SpinWait(pid, st);
  if (spun != 0) return spun > 0;
  for (;;) {
    pid_t r = waitpid(pid, st, __WALL | WNOHANG);
    if (r == pid) return true;
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (NowMs() > deadline) {
      errno = ETIMEDOUT;
      return false;
    }
    timespec ts{0, sleepNs};
    nanosleep(&ts, nullptr);
    if (sleepNs < 2000000) sleepNs *= 2;
  }
}

// seize(pid, options): PTRACE_SEIZE only.
Napi::Value Seize(const Napi::CallbackInfo& info) {
  pid_t pid = ArgInt(info[0]);
  long opts = info.Length() > 1 ? ArgInt(info[1]) : PTRACE_O_TRACESYSGOOD;
  if (Ptrace(PTRACE_SEIZE, pid, nullptr, reinterpret_cast<void*>(opts)) < 0)
    ThrowErrno(info.Env(), errno, "ptrace(PTRACE_SEIZE)", pid);
  return info.Env().Undefined();
}

// interruptAndWait(pid, timeoutMs): PTRACE_INTERRUPT, then wait for the interrupt (or group) stop.
// Signal-delivery stops met on the way are suppressed and remembered.
Napi::Value InterruptAndWait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t pid = ArgInt(info[0]);
  double timeout = info.Length() > 1 ? info[1].As<Napi::Number>().DoubleValue() : 5000;
  if (Ptrace(PTRACE_INTERRUPT, pid, nullptr, nullptr) < 0) {
    ThrowErrno(env, errno, "ptrace(PTRACE_INTERRUPT)", pid);
    return env.Undefined();
  }
  for (;;) {
    int st = 0;
    if (!WaitPoll(pid, &st, timeout)) {
      ThrowErrno(env, errno, "waitpid", pid);
      return env.Undefined();
    }
    if (!WIFSTOPPED(st)) return StatusObject(env, st);
    int event = st >> 16;
    if (event == PTRACE_EVENT_STOP) return StatusObject(env, st);
    if (event == 0 && WSTOPSIG(st) != (SIGTRAP | 0x80)) g_suppressed[pid].push_back(WSTOPSIG(st));
    if (Ptrace(PTRACE_CONT, pid, nullptr, nullptr) < 0) {
      ThrowErrno(env, errno, "ptrace(PTRACE_CONT)", pid);
      return env.Undefined();
    }
  }
}

// interruptEach(pids, timeoutMs) -> for each task, what interruptAndWait would return (its
// status object), or the Error it would throw: every task interrupted first, then each stop
// awaited, so that the stops overlap instead of following one another.
Napi::Value InterruptEach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array pids = info[0].As<Napi::Array>();
  double timeout = info.Length() > 1 ? info[1].As<Napi::Number>().DoubleValue() : 5000;
  uint32_t n = pids.Length();
  Napi::Array out = Napi::Array::New(env, n);
  std::vector<bool> sent(n, false);
  for (uint32_t i = 0; i < n; i++) {
    pid_t pid = ArgInt(pids.Get(i));
    if (Ptrace(PTRACE_INTERRUPT, pid, nullptr, nullptr) < 0) out.Set(i, ErrnoError(env, errno, "ptrace(PTRACE_INTERRUPT)", pid).Value());
    else sent[i] = true;
  }
  for (uint32_t i = 0; i < n; i++) {
    if (!sent[i]) continue;
    pid_t pid = ArgInt(pids.Get(i));
    for (;;) {
      int st = 0;
      if (!WaitPoll(pid, &st, timeout)) {
        out.Set(i, ErrnoError(env, errno, "waitpid", pid).Value());
        break;
      }
      int event = st >> 16;
      if (!WIFSTOPPED(st) || event == PTRACE_EVENT_STOP) {
        out.Set(i, StatusObject(env, st));
        break;
      }
      if (event == 0 && WSTOPSIG(st) != (SIGTRAP | 0x80)) g_suppressed[pid].push_back(WSTOPSIG(st));
      if (Ptrace(PTRACE_CONT, pid, nullptr, nullptr) < 0) {
        out.Set(i, ErrnoError(env, errno, "ptrace(PTRACE_CONT)", pid).Value());
        break;
      }
    }
  }
  return out;
}

// waitStop(pid, timeoutMs): the next state change of pid, as an object.
Napi::Value WaitStop(const Napi::CallbackInfo& info) {
  pid_t pid = ArgInt(info[0]);
  double timeout = info.Length() > 1 ? info[1].As<Napi::Number>().DoubleValue() : 5000;
  int st = 0;
  if (!WaitPoll(pid, &st, timeout)) {
    ThrowErrno(info.Env(), errno, "waitpid", pid);
    return info.Env().Undefined();
  }
  return StatusObject(info.Env(), st);
}

// tryWait(pid): non-blocking waitpid; null when nothing happened.
Napi::Value TryWait(const Napi::CallbackInfo& info) {
  pid_t pid = ArgInt(info[0]);
  int st = 0;
  pid_t r = waitpid(pid, &st, __WALL | WNOHANG);
  if (r < 0) {
    ThrowErrno(info.Env(), errno, "waitpid", pid);
    return info.Env().Undefined();
  }
  if (r == 0) return info.Env().Null();
  return StatusObject(info.Env(), st);
}

Napi::Value Request(const Napi::CallbackInfo& info, int req, const char* name) {
  pid_t pid = ArgInt(info[0]);
  long data = info.Length() > 1 && info[1].IsNumber() ? ArgInt(info[1]) : 0;
  if (Ptrace(req, pid, nullptr, reinterpret_cast<void*>(data)) < 0)
    ThrowErrno(info.Env(), errno, name, pid);
  return info.Env().Undefined();
}
Napi::Value Cont(const Napi::CallbackInfo& i) { return Request(i, PTRACE_CONT, "ptrace(PTRACE_CONT)"); }
Napi::Value Detach(const Napi::CallbackInfo& i) { return Request(i, PTRACE_DETACH, "ptrace(PTRACE_DETACH)"); }
Napi::Value SetOptions(const Napi::CallbackInfo& i) {
  return Request(i, PTRACE_SETOPTIONS, "ptrace(PTRACE_SETOPTIONS)");
}

Napi::Value TakeSuppressedSignals(const Napi::CallbackInfo& info) {
  pid_t pid = ArgInt(info[0]);
  Napi::Array out = Napi::Array::New(info.Env());
  auto it = g_suppressed.find(pid);
  if (it != g_suppressed.end()) {
    for (size_t k = 0; k < it->second.size(); k++) out.Set(k, it->second[k]);
    g_suppressed.erase(it);
  }
  return out;
}

Napi::Value GetRegset(const Napi::CallbackInfo& info, int type, size_t max, const char* name) {
  pid_t pid = ArgInt(info[0]);
  std::vector<uint8_t> buf(max);
  iovec iov{buf.data(), buf.size()};
  if (Ptrace(PTRACE_GETREGSET, pid, reinterpret_cast<void*>(type), &iov) < 0) {
    ThrowErrno(info.Env(), errno, name, pid);
    return info.Env().Undefined();
  }
  return Napi::Buffer<uint8_t>::Copy(info.Env(), buf.data(), iov.iov_len);
}
Napi::Value SetRegset(const Napi::CallbackInfo& info, int type, const char* name) {
  pid_t pid = ArgInt(info[0]);
  auto b = info[1].As<Napi::Buffer<uint8_t>>();
  iovec iov{b.Data(), b.Length()};
  if (Ptrace(PTRACE_SETREGSET, pid, reinterpret_cast<void*>(type), &iov) < 0)
    ThrowErrno(info.Env(), errno, name, pid);
  return info.Env().Undefined();
}
Napi::Value GetRegs(const Napi::CallbackInfo& i) {
  return GetRegset(i, NT_PRSTATUS, sizeof(user_regs_struct), "ptrace(PTRACE_GETREGSET, NT_PRSTATUS)");
}
Napi::Value SetRegs(const Napi::CallbackInfo& i) {
  return SetRegset(i, NT_PRSTATUS, "ptrace(PTRACE_SETREGSET, NT_PRSTATUS)");
}
Napi::Value GetXstate(const Napi::CallbackInfo& i) {
  return GetRegset(i, NT_X86_XSTATE, 16384, "ptrace(PTRACE_GETREGSET, NT_X86_XSTATE)");
}
Napi::Value SetXstate(const Napi::CallbackInfo& i) {
  return SetRegset(i, NT_X86_XSTATE, "ptrace(PTRACE_SETREGSET, NT_X86_XSTATE)");
}

// xstateSize(features) -> bytes of the standard (uncompacted) XSAVE layout that holds every
// state component in the bitmap `features` (a BigInt): the end of the last one, by CPUID leaf 0xD
// (sub-leaf i: EAX its size, EBX its offset), at least the legacy area and the header (576).
Napi::Value XstateSize(const Napi::CallbackInfo& info) {
  bool lossless = false;
  uint64_t features = info[0].As<Napi::BigInt>().Uint64Value(&lossless);
  uint32_t end = 576;
  for (unsigned i = 2; i < 64; i++) {
    if (!(features & (1ULL << i))) continue;
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(0xd, i, &a, &b, &c, &d) || !a) continue;
    if (b + a > end) end = b + a;
  }
  return Napi::Number::New(info.Env(), end);
}

Napi::Value GetSigmask(const Napi::CallbackInfo& info) {
  pid_t pid = ArgInt(info[0]);
  uint64_t mask = 0;
  if (Ptrace(PTRACE_GETSIGMASK, pid, reinterpret_cast<void*>(sizeof(mask)), &mask) < 0) {
    ThrowErrno(info.Env(), errno, "ptrace(PTRACE_GETSIGMASK)", pid);
    return info.Env().Undefined();
  }
  return Napi::BigInt::New(info.Env(), mask);
}
Napi::Value SetSigmask(const Napi::CallbackInfo& info) {
  pid_t pid = ArgInt(info[0]);
  uint64_t mask = ArgU64(info[1]);
  if (Ptrace(PTRACE_SETSIGMASK, pid, reinterpret_cast<void*>(sizeof(mask)), &mask) < 0)
    ThrowErrno(info.Env(), errno, "ptrace(PTRACE_SETSIGMASK)", pid);
  return info.Env().Undefined();
}

// getRseq(pid): { pointer, size, signature, flags } or null when not registered.
Napi::Value GetRseq(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t pid = ArgInt(info[0]);
  struct {
    uint64_t ptr;
    uint32_t size, sig, flags, pad;
  } conf{};
  long n = Ptrace(PTRACE_GET_RSEQ_CONFIGURATION, pid, reinterpret_cast<void*>(sizeof(conf)), &conf);
  if (n < 0) {
    ThrowErrno(env, errno, "ptrace(PTRACE_GET_RSEQ_CONFIGURATION)", pid);
    return env.Undefined();
  }
  if (conf.ptr == 0) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("pointer", Napi::BigInt::New(env, conf.ptr));
  o.Set("size", conf.size);
  o.Set("signature", Napi::Number::New(env, conf.sig));
  o.Set("flags", conf.flags);
  return o;
}

Napi::Value GetRobustList(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t tid = ArgInt(info[0]);
  uint64_t head = 0;
  size_t len = 0;
  if (syscall(SYS_get_robust_list, tid, &head, &len) < 0) {
    ThrowErrno(env, errno, "get_robust_list", tid);
    return env.Undefined();
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("head", Napi::BigInt::New(env, head));
  o.Set("len", Napi::Number::New(env, static_cast<double>(len)));
  return o;
}

// peekSiginfo(pid, shared): every pending siginfo (128 bytes each) without dequeuing.
Napi::Value PeekSiginfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t pid = ArgInt(info[0]);
  bool shared = info[1].ToBoolean();
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  for (uint64_t off = 0;; off++) {
    __ptrace_peeksiginfo_args args{off, shared ? static_cast<uint32_t>(PTRACE_PEEKSIGINFO_SHARED) : 0u, 1};
    siginfo_t si;
    long r = Ptrace(PTRACE_PEEKSIGINFO, pid, &args, &si);
    if (r < 0) {
      ThrowErrno(env, errno, "ptrace(PTRACE_PEEKSIGINFO)", pid);
      return env.Undefined();
    }
    if (r == 0) break;
    out.Set(n++, Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<uint8_t*>(&si), sizeof(si)));
  }
  return out;
}

// Fault injection for tests (CKPT_FAULT_PTRACE_STEP=N): ckpt SIGKILLs itself at the N-th step
// of remote syscalls (a step: the injected registers set, the syscall entered, the syscall
// done, the registers restored), so tests can prove a ckpt killed anywhere in one harms nothing.
long g_faultStep = -2;
long g_steps = 0;
void FaultStep() {
  if (g_faultStep == -2) {
    const char* e = getenv("CKPT_FAULT_PTRACE_STEP");
    g_faultStep = e ? atol(e) : -1;
  }
  ++g_steps;
  if (g_faultStep > 0 && g_steps == g_faultStep) kill(getpid(), SIGKILL);
}

// faultStep(): counts a step taken in JS (parking a thread); faultSteps(): steps so far.
Napi::Value FaultStepJs(const Napi::CallbackInfo& info) {
  FaultStep();
  return info.Env().Undefined();
}
Napi::Value FaultSteps(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(g_steps)); }

// Waits (blocking) for the next stop of a task we just resumed; false if it died or on error.
bool WaitStopped(pid_t pid, int* st, const char** failed) {
  int spun = SpinWait(pid, st);
  while (spun == 0) {
    if (waitpid(pid, st, __WALL) == pid) spun = 1;
    else if (errno != EINTR) spun = -1;
  }
  if (spun < 0) {
    *failed = "waitpid";
    return false;
  }
  if (!WIFSTOPPED(*st)) {
    errno = ESRCH;
    *failed = "remote syscall (task died)";
    return false;
  }
  return true;
}

// Waits for the syscall stop of a task just resumed with PTRACE_SYSCALL, suppressing (and
// remembering) signals met on the way.
bool AwaitSyscallStop(pid_t pid, const char** failed) {
  for (;;) {
    int st;
    if (!WaitStopped(pid, &st, failed)) return false;
    if (WSTOPSIG(st) == (SIGTRAP | 0x80)) return true;
    if ((st >> 16) == 0) g_suppressed[pid].push_back(WSTOPSIG(st));
    if (Ptrace(PTRACE_SYSCALL, pid, nullptr, nullptr) < 0) {
      *failed = "ptrace(PTRACE_SYSCALL)";
      return false;
    }
  }
}

// Resumes the task with PTRACE_SYSCALL.
bool ResumeToSyscall(pid_t pid, const char** failed) {
  if (Ptrace(PTRACE_SYSCALL, pid, nullptr, nullptr) == 0) return true;
  *failed = "ptrace(PTRACE_SYSCALL)";
  return false;
}

// Runs the task until its next syscall stop, suppressing (and remembering) signals met on the way.
bool RunToSyscallStop(pid_t pid, const char** failed) { return ResumeToSyscall(pid, failed) && AwaitSyscallStop(pid, failed); }

// Waits for a task just resumed with PTRACE_CONT to stop at the int3 after which rip == at,
// suppressing (and remembering) signals met on the way.
bool AwaitBreakpoint(pid_t pid, uint64_t at, const char** failed) {
  for (;;) {
    int st;
    if (!WaitStopped(pid, &st, failed)) return false;
    if (WSTOPSIG(st) == SIGTRAP && (st >> 16) == 0) {
      user_regs_struct r;
      iovec iov{&r, sizeof(r)};
      if (Ptrace(PTRACE_GETREGSET, pid, reinterpret_cast<void*>(NT_PRSTATUS), &iov) == 0 && r.rip == at) return true;
    }
    if ((st >> 16) == 0 && WSTOPSIG(st) != SIGTRAP) g_suppressed[pid].push_back(WSTOPSIG(st));
    if (Ptrace(PTRACE_CONT, pid, nullptr, nullptr) < 0) {
      *failed = "ptrace(PTRACE_CONT)";
      return false;
    }
  }
}

// Runs the task (PTRACE_CONT) until it stops at the int3 after the injected syscall (rip == at).
bool RunToBreakpoint(pid_t pid, uint64_t at, const char** failed) {
  if (Ptrace(PTRACE_CONT, pid, nullptr, nullptr) < 0) {
    *failed = "ptrace(PTRACE_CONT)";
    return false;
  }
  return AwaitBreakpoint(pid, at, failed);
}

// The six syscall argument registers (rdi, rsi, rdx, r10, r8, r9) from a JS array (missing: 0).
void ArgsOf(const Napi::Value& v, uint64_t a[6], size_t from = 0) {
  for (int k = 0; k < 6; k++) a[k] = 0;
  if (!v.IsArray()) return;
  Napi::Array arr = v.As<Napi::Array>();
  for (uint32_t k = 0; k + from < arr.Length() && k < 6; k++) a[k] = ArgU64(arr.Get(k + from));
}

// Points a stopped task at `rip` with the six syscall argument registers a[] (and rax = nr when
// nr >= 0, rsp when given): saves its registers in *saved first. False (errno, *failed) when
// ptrace fails.
bool PrepareRegs(pid_t pid, uint64_t rip, long nr, const uint64_t a[6], const uint64_t* rsp, user_regs_struct* saved,
                 user_regs_struct* regs, const char** failed) {
  iovec iov{saved, sizeof(*saved)};
  if (Ptrace(PTRACE_GETREGSET, pid, reinterpret_cast<void*>(NT_PRSTATUS), &iov) < 0) {
    *failed = "ptrace(PTRACE_GETREGSET)";
    return false;
  }
  *regs = *saved;
  regs->rip = rip;
  if (nr >= 0) regs->rax = nr;
  regs->orig_rax = static_cast<unsigned long long>(-1);
  regs->rdi = a[0];
  regs->rsi = a[1];
  regs->rdx = a[2];
  regs->r10 = a[3];
  regs->r8 = a[4];
  regs->r9 = a[5];
  if (rsp) regs->rsp = *rsp;
  iov = {regs, sizeof(*regs)};
  if (Ptrace(PTRACE_SETREGSET, pid, reinterpret_cast<void*>(NT_PRSTATUS), &iov) < 0) {
    *failed = "ptrace(PTRACE_SETREGSET)";
    return false;
  }
  return true;
}

// PrepareRegs with the arguments from the array info[argsAt]; a JS exception when ptrace fails.
bool PrepareRemote(const Napi::CallbackInfo& info, pid_t pid, uint64_t rip, long nr, size_t argsAt, const uint64_t* rsp,
                   user_regs_struct* saved, user_regs_struct* regs) {
  uint64_t a[6];
  ArgsOf(info.Length() > argsAt ? info[argsAt] : info.Env().Undefined(), a);
  const char* failed = nullptr;
  if (PrepareRegs(pid, rip, nr, a, rsp, saved, regs, &failed)) return true;
  ThrowErrno(info.Env(), errno, failed, pid);
  return false;
}

// remoteRun(pid, entry, breakAt, [args...]) -> rax: makes the stopped task run the code at entry
// with rdi, rsi, rdx, r10, r8, r9 = args until the int3 that leaves rip at breakAt (its address +
// 1); its registers are put back after. For code core writes into a rebuilt process (its
// trampoline) that makes many syscalls in one stop.
Napi::Value RemoteRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t pid = ArgInt(info[0]);
  uint64_t entry = ArgU64(info[1]), at = ArgU64(info[2]);
  user_regs_struct saved, regs;
  if (!PrepareRemote(info, pid, entry, -1, 3, nullptr, &saved, &regs)) return env.Undefined();
  const char* failed = nullptr;
  bool ok = RunToBreakpoint(pid, at, &failed);
  int err = errno;
  iovec iov;
  if (ok) {
    iov = {&regs, sizeof(regs)};
    ok = Ptrace(PTRACE_GETREGSET, pid, reinterpret_cast<void*>(NT_PRSTATUS), &iov) == 0;
    if (!ok) failed = "ptrace(PTRACE_GETREGSET)", err = errno;
  }
  iov = {&saved, sizeof(saved)};
  Ptrace(PTRACE_SETREGSET, pid, reinterpret_cast<void*>(NT_PRSTATUS), &iov);
  if (!ok) {
    ThrowErrno(env, err, failed, pid);
    return env.Undefined();
  }
  return Napi::BigInt::New(env, static_cast<int64_t>(regs.rax));
}

// remoteSyscall(pid, insnAddr, nr, [args...], int3, rsp): makes the stopped task execute
// `syscall` at insnAddr with the given number and arguments (and the stack pointer rsp, when
// given); returns the raw result (negative errno on failure) as a BigInt. The task's registers
// are restored afterwards; it is left stopped at the syscall-exit stop. Every other register
// keeps its current value: a caller that parked the task (rbx = its return frame) relies on it.
Napi::Value RemoteSyscall(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t pid = ArgInt(info[0]);
  uint64_t insn = ArgU64(info[1]);
  long nr = ArgInt(info[2]);
  uint64_t rsp = 0;
  bool haveRsp = info.Length() > 5 && !info[5].IsUndefined() && !info[5].IsNull();
  if (haveRsp) rsp = ArgU64(info[5]);
  user_regs_struct saved, regs;
  if (!PrepareRemote(info, pid, insn, nr, 3, haveRsp ? &rsp : nullptr, &saved, &regs)) return env.Undefined();
  iovec iov;
  FaultStep();
  const char* failed = nullptr;
  bool int3 = info.Length() > 4 && info[4].ToBoolean();
  // With int3 (the instruction after `syscall` is an int3): run to the breakpoint, one stop.
  // Otherwise: syscall-enter stop, then syscall-exit stop.
  bool ok = int3 ? RunToBreakpoint(pid, insn + 3, &failed)
                 : (RunToSyscallStop(pid, &failed) && (FaultStep(), RunToSyscallStop(pid, &failed)));
  if (ok) FaultStep();
  if (!ok) {
    int err = errno;
    iov = {&saved, sizeof(saved)};
    Ptrace(PTRACE_SETREGSET, pid, reinterpret_cast<void*>(NT_PRSTATUS), &iov);
    ThrowErrno(env, err, failed, pid);
    return env.Undefined();
  }
  iov = {&regs, sizeof(regs)};
  if (Ptrace(PTRACE_GETREGSET, pid, reinterpret_cast<void*>(NT_PRSTATUS), &iov) < 0) {
    ThrowErrno(env, errno, "ptrace(PTRACE_GETREGSET)", pid);
    return env.Undefined();
  }
  int64_t result = static_cast<int64_t>(regs.rax);
  // `leave`: the task stays where the syscall left it (the code after it is its way back).
  if (info.Length() > 6 && info[6].ToBoolean()) return Napi::BigInt::New(env, result);
  iov = {&saved, sizeof(saved)};
  if (Ptrace(PTRACE_SETREGSET, pid, reinterpret_cast<void*>(NT_PRSTATUS), &iov) < 0) {
    ThrowErrno(env, errno, "ptrace(PTRACE_SETREGSET)", pid);
    return env.Undefined();
  }
  FaultStep();
  return Napi::BigInt::New(env, result);
}

// remoteExec(pid, insn, path, argv, envp) -> 0 or -errno: the stopped task (seized with
// PTRACE_O_TRACEEXEC and PTRACE_O_TRACESYSGOOD) runs execve(path, argv, envp) through the
// `syscall` at insn (the pointers are the task's). It runs from syscall stop to syscall stop, so
// it never runs an instruction of its own: a failed execve leaves it stopped at the syscall's exit,
// its registers put back; one that succeeded leaves it stopped at that exit in the new program,
// with the program's entry registers (as PTRACE_TRACEME's exec trap would).
Napi::Value RemoteExec(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t pid = ArgInt(info[0]);
  uint64_t insn = ArgU64(info[1]);
  uint64_t a[6] = {ArgU64(info[2]), ArgU64(info[3]), ArgU64(info[4]), 0, 0, 0};
  user_regs_struct saved, regs;
  const char* failed = nullptr;
  if (!PrepareRegs(pid, insn, SYS_execve, a, nullptr, &saved, &regs, &failed) || !RunToSyscallStop(pid, &failed) ||
      !ResumeToSyscall(pid, &failed)) {
    ThrowErrno(env, errno, failed, pid);
    return env.Undefined();
  }
  bool execd = false;
  for (;;) {
    int st;
    if (!WaitStopped(pid, &st, &failed)) {
      ThrowErrno(env, errno, failed, pid);
      return env.Undefined();
    }
    if (WSTOPSIG(st) == (SIGTRAP | 0x80)) break;
    if ((st >> 16) == PTRACE_EVENT_EXEC) execd = true;
    else if ((st >> 16) == 0) g_suppressed[pid].push_back(WSTOPSIG(st));
    if (!ResumeToSyscall(pid, &failed)) {
      ThrowErrno(env, errno, failed, pid);
      return env.Undefined();
    }
  }
  if (execd) return Napi::Number::New(env, 0);
  iovec iov{&regs, sizeof(regs)};
  long result = Ptrace(PTRACE_GETREGSET, pid, reinterpret_cast<void*>(NT_PRSTATUS), &iov) == 0 ? static_cast<long>(regs.rax) : -EIO;
  iov = {&saved, sizeof(saved)};
  Ptrace(PTRACE_SETREGSET, pid, reinterpret_cast<void*>(NT_PRSTATUS), &iov);
  return Napi::Number::New(env, static_cast<double>(result));
}

// One task of remoteSyscallEach / remoteRunEach: its registers before, where it failed.
struct EachTask {
  pid_t pid;
  user_regs_struct saved, regs;
  bool prepared = false, failed = false;
  int err = 0;
  const char* what = nullptr;
};

// Marks t failed with errno and *what (the first failure kept).
void Fail(EachTask& t, const char* what) {
  if (t.failed) return;
  t.failed = true;
  t.err = errno;
  t.what = what;
}

// Puts back every prepared task's registers (with `leave`, only those of tasks that failed);
// returns the result array, or throws the first failure (after every task was put back).
Napi::Value FinishEach(Napi::Env env, std::vector<EachTask>& tasks, bool stepEach, bool leave = false) {
  Napi::Array out = Napi::Array::New(env, tasks.size());
  for (size_t i = 0; i < tasks.size(); i++) {
    EachTask& t = tasks[i];
    if (!t.prepared) continue;
    iovec iov;
    if (!t.failed) {
      iov = {&t.regs, sizeof(t.regs)};
      if (Ptrace(PTRACE_GETREGSET, t.pid, reinterpret_cast<void*>(NT_PRSTATUS), &iov) < 0) Fail(t, "ptrace(PTRACE_GETREGSET)");
    }
    if (!leave || t.failed) {
      iov = {&t.saved, sizeof(t.saved)};
      if (Ptrace(PTRACE_SETREGSET, t.pid, reinterpret_cast<void*>(NT_PRSTATUS), &iov) < 0) Fail(t, "ptrace(PTRACE_SETREGSET)");
    }
    if (stepEach && !t.failed) FaultStep();
    if (!t.failed) out.Set(i, Napi::BigInt::New(env, static_cast<int64_t>(t.regs.rax)));
  }
  for (EachTask& t : tasks) {
    if (t.failed) {
      ThrowErrno(env, t.err, t.what, t.pid);
      return env.Undefined();
    }
  }
  return out;
}

// The i-th of an argument that is one address for every task or an array of one per task.
uint64_t EachU64(const Napi::Value& v, uint32_t i) { return v.IsArray() ? ArgU64(v.As<Napi::Array>().Get(i)) : ArgU64(v); }

// Prepares t, task pid, to run from rip with syscall nr (-1: none) and arguments a, one fault step
// counted; false (t failed) when ptrace refuses.
bool PrepareEach(EachTask& t, pid_t pid, uint64_t rip, long nr, const uint64_t a[6]) {
  t.pid = pid;
  if (!PrepareRegs(pid, rip, nr, a, nullptr, &t.saved, &t.regs, &t.what)) {
    Fail(t, t.what);
    return false;
  }
  t.prepared = true;
  FaultStep();
  return true;
}

// Resumes every prepared task (PTRACE_SYSCALL) and takes each at its syscall stops, round after
// round, sending it on, until it made stops[i] of them: it is left stopped at the last. The
// tasks' stops overlap. A task that fails is marked so.
void SyscallStopsEach(std::vector<EachTask>& tasks, std::vector<uint32_t> stops) {
  for (EachTask& t : tasks)
    if (t.prepared && !t.failed && !ResumeToSyscall(t.pid, &t.what)) Fail(t, t.what);
  for (bool busy = true; busy;) {
    busy = false;
    for (uint32_t i = 0; i < tasks.size(); i++) {
      EachTask& t = tasks[i];
      if (!t.prepared || t.failed || !stops[i]) continue;
      if (!AwaitSyscallStop(t.pid, &t.what)) {
        Fail(t, t.what);
        continue;
      }
      FaultStep();
      if (--stops[i] == 0) continue;
      if (!ResumeToSyscall(t.pid, &t.what)) Fail(t, t.what);
      else busy = true;
    }
  }
}

// remoteSyscallEach(pids, insn, calls[, leave]) -> BigInt[]: remoteSyscall without int3 in each
// of the stopped tasks at once (insn: one address, or one per task: tasks of different
// processes), calls[i] = [nr, args...] for pids[i]: every task's registers are set and every task
// resumed to its syscall-enter stop, each resumed again to its syscall-exit stop as it gets
// there, then each result read and its registers put back (with `leave`, left where it is). The tasks' round trips
// overlap instead of following one another (a stop costs a wake-up of a virtual CPU here). Each
// task goes through remoteSyscall's steps, so a ckpt killed at any of them leaves each task
// where remoteSyscall would. Throws the first failure, every task's registers put back first.
Napi::Value RemoteSyscallEach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array pids = info[0].As<Napi::Array>();
  Napi::Value insn = info[1];
  Napi::Array calls = info[2].As<Napi::Array>();
  std::vector<EachTask> tasks(pids.Length());
  for (uint32_t i = 0; i < tasks.size(); i++) {
    Napi::Array call = calls.Get(i).As<Napi::Array>();
    uint64_t a[6];
    ArgsOf(call, a, 1);
    if (!PrepareEach(tasks[i], ArgInt(pids.Get(i)), EachU64(insn, i), ArgInt(call.Get(0u)), a)) break;
  }
  // Its syscall's enter stop and its exit stop.
  SyscallStopsEach(tasks, std::vector<uint32_t>(tasks.size(), 2));
  return FinishEach(env, tasks, true, info.Length() > 3 && info[3].ToBoolean());
}

// remoteRunEach(pids, entry, breakAt, argsList) -> BigInt[]: remoteRun in each of the stopped
// tasks at once (argsList[i] for pids[i]; entry and breakAt: one address, or one per task), their
// runs overlapping. Throws the first failure, every task's registers put back first.
Napi::Value RemoteRunEach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array pids = info[0].As<Napi::Array>();
  Napi::Value entry = info[1], at = info[2];
  Napi::Array argsList = info[3].As<Napi::Array>();
  std::vector<uint64_t> breaks(pids.Length());
  std::vector<EachTask> tasks(pids.Length());
  for (uint32_t i = 0; i < tasks.size(); i++) {
    EachTask& t = tasks[i];
    t.pid = ArgInt(pids.Get(i));
    uint64_t a[6];
    ArgsOf(argsList.Get(i), a);
    breaks[i] = EachU64(at, i);
    if (!PrepareRegs(t.pid, EachU64(entry, i), -1, a, nullptr, &t.saved, &t.regs, &t.what)) {
      Fail(t, t.what);
      break;
    }
    t.prepared = true;
  }
  for (EachTask& t : tasks) {
    if (!t.prepared || t.failed) continue;
    if (Ptrace(PTRACE_CONT, t.pid, nullptr, nullptr) < 0) Fail(t, "ptrace(PTRACE_CONT)");
  }
  for (uint32_t i = 0; i < tasks.size(); i++) {
    EachTask& t = tasks[i];
    if (t.prepared && !t.failed && !AwaitBreakpoint(t.pid, breaks[i], &t.what)) Fail(t, t.what);
  }
  return FinishEach(env, tasks, false);
}

// remoteLoopEach(pids, entry, argsList, counts) -> BigInt[]: in each of the stopped tasks at once,
// runs the code at entry (entry: one address, or one per task; rdi, rsi, ... = argsList[i]): a
// loop that makes counts[i] syscalls and then returns through the thread's frame (core's guard
// batch code). It runs from syscall stop to syscall stop (PTRACE_SYSCALL, two stops a syscall, no
// register work between them), never to a breakpoint: a task its tracer leaves at any instant
// finishes the loop on its own and returns to its own context. Each task is left stopped at the
// exit of its last syscall, inside the loop, and that syscall's result (rax) is returned (the
// loop stores the others where it read them). Registers are not put back, but where a task
// failed. Throws the first failure.
Napi::Value RemoteLoopEach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array pids = info[0].As<Napi::Array>();
  Napi::Value entry = info[1];
  Napi::Array argsList = info[2].As<Napi::Array>();
  Napi::Array counts = info[3].As<Napi::Array>();
  std::vector<EachTask> tasks(pids.Length());
  std::vector<uint32_t> stops(pids.Length(), 0);
  for (uint32_t i = 0; i < tasks.size(); i++) {
    stops[i] = 2 * counts.Get(i).As<Napi::Number>().Uint32Value();
    if (!stops[i]) continue;
    uint64_t a[6];
    ArgsOf(argsList.Get(i), a);
    if (!PrepareEach(tasks[i], ArgInt(pids.Get(i)), EachU64(entry, i), -1, a)) break;
  }
  SyscallStopsEach(tasks, stops);
  // Each left where its last syscall left it (inside the loop), but where one failed.
  return FinishEach(env, tasks, false, true);
}

// returnFrame(uc, regs, mask, xstate) -> the bytes of a signal return frame for ucontext address
// uc (core's guard.ts says what and why; this is its layout, built here because a JS build of it
// cost some 80 us per thread in a command's cold code): a ucontext with flags FP_XSTATE |
// SIGCONTEXT_SS | STRICT_RESTORE_SS, an invalid stack_t (ss_flags 3: rt_sigreturn leaves the
// alternate stack alone), a sigcontext of regs (user_regs_struct), the mask, then, 64-byte
// aligned after the ucontext and a siginfo, xstate (NT_X86_XSTATE layout, already cut to the
// task's size) with the software bytes of a signal frame and the end magic.
Napi::Value ReturnFrame(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t uc = ArgU64(info[0]);
  Napi::Buffer<uint8_t> regsBuf = info[1].As<Napi::Buffer<uint8_t>>();
  bool lossless = true;
  uint64_t mask = info[2].As<Napi::BigInt>().Uint64Value(&lossless);
  Napi::Buffer<uint8_t> xBuf = info[3].As<Napi::Buffer<uint8_t>>();
  if (regsBuf.Length() < sizeof(user_regs_struct) || xBuf.Length() < 512) {
    Napi::RangeError::New(env, "returnFrame: registers or xstate too short").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  constexpr size_t kUcSize = 304, kMcontext = 40, kSigmask = 296, kSiginfo = 128;
  constexpr uint32_t kMagic1 = 0x46505853, kMagic2 = 0x46505845;
  user_regs_struct r;
  memcpy(&r, regsBuf.Data(), sizeof r);
  uint64_t fp = (uc + kUcSize + kSiginfo + 63) & ~uint64_t{63};
  size_t xlen = xBuf.Length(), at = fp - uc;
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, at + xlen + 4);
  uint8_t* o = out.Data();
  memset(o, 0, at);
  auto put64 = [&](size_t off, uint64_t v) { memcpy(o + off, &v, 8); };
  auto put32 = [&](size_t off, uint32_t v) { memcpy(o + off, &v, 4); };
  put64(0, 1 | 2 | 4);  // UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS
  put32(24, 3);         // uc_stack.ss_flags: no valid mode
  const uint64_t sc[] = {r.r8,  r.r9,  r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rdi,
                         r.rsi, r.rbp, r.rbx, r.rdx, r.rax, r.rcx, r.rsp, r.rip, r.eflags};
  memcpy(o + kMcontext, sc, sizeof sc);
  uint16_t cs = static_cast<uint16_t>(r.cs), ss = static_cast<uint16_t>(r.ss);
  memcpy(o + kMcontext + 144, &cs, 2);
  memcpy(o + kMcontext + 150, &ss, 2);
  put64(kMcontext + 184, fp);
  put64(kSigmask, mask);
  uint8_t* x = o + at;
  memcpy(x, xBuf.Data(), xlen);
  // ptrace reports XCR0 in the software-reserved bytes; a signal frame carries _fpx_sw_bytes.
  uint64_t xfeatures;
  memcpy(&xfeatures, x + 464, 8);
  memset(x + 464, 0, 48);
  uint32_t magic1 = kMagic1, extended = static_cast<uint32_t>(xlen + 4), size = static_cast<uint32_t>(xlen);
  memcpy(x + 464, &magic1, 4);
  memcpy(x + 468, &extended, 4);
  memcpy(x + 472, &xfeatures, 8);
  memcpy(x + 480, &size, 4);
  uint32_t magic2 = kMagic2;
  memcpy(x + xlen, &magic2, 4);
  return out;
}

// seccompFilters(tid) -> [{ prog: Buffer (struct sock_filter[]), flags }], the oldest filter
// first (PTRACE_SECCOMP_GET_FILTER counts from the newest; flags from
// PTRACE_GET_SECCOMP_METADATA: SECCOMP_FILTER_FLAG_LOG). The task must be in seccomp mode 2.
Napi::Value SeccompFilters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t tid = ArgInt(info[0]);
  constexpr int kGetFilter = 0x420c, kGetMetadata = 0x420d;
  struct Filter {
    std::vector<uint8_t> prog;
    uint64_t flags;
  };
  std::vector<Filter> found;
  for (unsigned long i = 0;; i++) {
    long n = Ptrace(kGetFilter, tid, reinterpret_cast<void*>(i), nullptr);
    if (n < 0) {
      if (errno == ENOENT) break;
      ThrowErrno(env, errno, "ptrace(PTRACE_SECCOMP_GET_FILTER)", tid);
      return env.Undefined();
    }
    Filter f{std::vector<uint8_t>(static_cast<size_t>(n) * 8), 0};
    if (Ptrace(kGetFilter, tid, reinterpret_cast<void*>(i), f.prog.data()) != n) {
      ThrowErrno(env, errno, "ptrace(PTRACE_SECCOMP_GET_FILTER)", tid);
      return env.Undefined();
    }
    struct {
      uint64_t filter_off;
      uint64_t flags;
    } md = {i, 0};
    if (Ptrace(kGetMetadata, tid, reinterpret_cast<void*>(sizeof md), &md) >= 0) f.flags = md.flags;
    found.push_back(std::move(f));
  }
  Napi::Array out = Napi::Array::New(env, found.size());
  for (size_t k = 0; k < found.size(); k++) {
    const Filter& f = found[found.size() - 1 - k];
    Napi::Object o = Napi::Object::New(env);
    o.Set("prog", Napi::Buffer<uint8_t>::Copy(env, f.prog.data(), f.prog.size()));
    o.Set("flags", Napi::Number::New(env, static_cast<double>(f.flags)));
    out.Set(k, o);
  }
  return out;
}

}  // namespace

void InitPtrace(Napi::Env env, Napi::Object exports) {
  exports.Set("seccompFilters", Napi::Function::New(env, SeccompFilters));
  exports.Set("seize", Napi::Function::New(env, Seize));
  exports.Set("interruptAndWait", Napi::Function::New(env, InterruptAndWait));
  exports.Set("interruptEach", Napi::Function::New(env, InterruptEach));
  exports.Set("waitStop", Napi::Function::New(env, WaitStop));
  exports.Set("tryWait", Napi::Function::New(env, TryWait));
  exports.Set("cont", Napi::Function::New(env, Cont));
  exports.Set("detach", Napi::Function::New(env, Detach));
  exports.Set("setOptions", Napi::Function::New(env, SetOptions));
  exports.Set("takeSuppressedSignals", Napi::Function::New(env, TakeSuppressedSignals));
  exports.Set("getRegs", Napi::Function::New(env, GetRegs));
  exports.Set("setRegs", Napi::Function::New(env, SetRegs));
  exports.Set("getXstate", Napi::Function::New(env, GetXstate));
  exports.Set("setXstate", Napi::Function::New(env, SetXstate));
  exports.Set("xstateSize", Napi::Function::New(env, XstateSize));
  exports.Set("getSigmask", Napi::Function::New(env, GetSigmask));
  exports.Set("setSigmask", Napi::Function::New(env, SetSigmask));
  exports.Set("getRseq", Napi::Function::New(env, GetRseq));
  exports.Set("getRobustList", Napi::Function::New(env, GetRobustList));
  exports.Set("peekSiginfo", Napi::Function::New(env, PeekSiginfo));
  exports.Set("remoteSyscall", Napi::Function::New(env, RemoteSyscall));
  exports.Set("remoteExec", Napi::Function::New(env, RemoteExec));
  exports.Set("remoteSyscallEach", Napi::Function::New(env, RemoteSyscallEach));
  exports.Set("remoteRunEach", Napi::Function::New(env, RemoteRunEach));
  exports.Set("remoteLoopEach", Napi::Function::New(env, RemoteLoopEach));
  exports.Set("returnFrame", Napi::Function::New(env, ReturnFrame));
  exports.Set("remoteRun", Napi::Function::New(env, RemoteRun));
  exports.Set("faultSteps", Napi::Function::New(env, FaultSteps));
  exports.Set("faultStep", Napi::Function::New(env, FaultStepJs));
}

}  // namespace ckpt
