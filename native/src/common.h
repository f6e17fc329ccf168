// Shared helpers of the native engine: errno errors shaped like Node's ErrnoException,
// and argument conversion. Every function that fails throws; none returns -1.
#pragma once
#include <napi.h>

#include <algorithm>
#include <thread>
#include <vector>
#include <cerrno>
#include <cstdint>
#include <string>
#include <unistd.h>

namespace ckpt {

// The name of an errno ('ESRCH', 'EADDRINUSE'...): glibc's strerrorname_np, 'E<n>' when it has none.
std::string ErrnoName(int err);
// An Error with errno, code ('ESRCH'...), syscall and (when known) pid, not yet thrown.
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, long pid = -1);
// Throws an Error with errno, code ('ESRCH'...), syscall and (when known) pid.
void ThrowErrno(Napi::Env env, int err, const char* syscall, long pid = -1);
// Throws an Error with errno and its code, and a message of its own (no syscall).
void ThrowErrnoMsg(Napi::Env env, int err, const std::string& msg);

inline int64_t ArgI64(const Napi::Value& v) {
  if (v.IsBigInt()) {
    bool lossless;
    return v.As<Napi::BigInt>().Int64Value(&lossless);
  }
  return static_cast<int64_t>(v.As<Napi::Number>().Int64Value());
}
inline uint64_t ArgU64(const Napi::Value& v) {
  if (v.IsBigInt()) {
    bool lossless;
    return v.As<Napi::BigInt>().Uint64Value(&lossless);
  }
  return static_cast<uint64_t>(v.As<Napi::Number>().DoubleValue());
}
inline int ArgInt(const Napi::Value& v) { return v.As<Napi::Number>().Int32Value(); }
// The CPUs there are to share work among, read once: std::thread::hardware_concurrency reads
// /sys/devices/system/cpu/online at each call, and a dump asked a dozen times per process.
inline unsigned Cpus() {
  static const unsigned n = std::max(1u, std::thread::hardware_concurrency());
  return n;
}
// A JS array of integers (fds, tids, flags).
inline std::vector<int> IntsArg(const Napi::Array& a) {
  std::vector<int> out(a.Length());
  for (uint32_t i = 0; i < a.Length(); i++) out[i] = ArgInt(a.Get(i));
  return out;
}

void InitErrors(Napi::Env env, Napi::Object exports);
void InitPtrace(Napi::Env env, Napi::Object exports);
void InitMemory(Napi::Env env, Napi::Object exports);
void InitSpawn(Napi::Env env, Napi::Object exports);
void InitFd(Napi::Env env, Napi::Object exports);
void InitIpc(Napi::Env env, Napi::Object exports);
void InitSock(Napi::Env env, Napi::Object exports);
void InitUnix(Napi::Env env, Napi::Object exports);
void InitInet(Napi::Env env, Napi::Object exports);
void InitPacket(Napi::Env env, Napi::Object exports);
void InitNetif(Napi::Env env, Napi::Object exports);
void InitInotify(Napi::Env env, Napi::Object exports);
void InitHash(Napi::Env env, Napi::Object exports);
void InitSign(Napi::Env env, Napi::Object exports);
void InitZstd(Napi::Env env, Napi::Object exports);

// pread/pwrite of all n bytes at off (EINTR retried; a short end is EIO): false with errno set.
inline bool FullPread(int fd, uint8_t* p, size_t n, uint64_t off) {
  while (n) {
    ssize_t r = pread(fd, p, n, off);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (r == 0) errno = EIO;
      return false;
    }
    p += r;
    n -= r;
    off += r;
  }
  return true;
}

inline bool FullPwrite(int fd, const uint8_t* p, size_t n, uint64_t off) {
  while (n) {
    ssize_t w = pwrite(fd, p, n, off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      if (w == 0) errno = EIO;
      return false;
    }
    p += w;
    n -= w;
    off += w;
  }
  return true;
}

}  // namespace ckpt
