// Process memory: which pages to save (pagemap), bulk copy target memory <-> image file through
// one reusable buffer with a running CRC32C, and small reads/writes through /proc/PID/mem.
#include "common.h"

#include <fcntl.h>
#include <nmmintrin.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <string>
#include <vector>

namespace ckpt {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t kChunk = 4 << 20;  // 4 MiB: stays in L2/L3 between copy, crc and write

// CRC32C (Castagnoli) with SSE4.2. Long buffers run three independent streams of kStream
// bytes to hide the crc32 instruction's latency, then join them with a table that applies
// "append kStream zero bytes" to a CRC register (the raw CRC is linear in state and data).
constexpr size_t kStream = 8192;
uint32_t g_shift[4][256];
bool g_shiftReady = false;

uint32_t ShiftRaw(uint32_t c) {
  uint64_t x = c;
  for (size_t k = 0; k < kStream / 8; k++) x = _mm_crc32_u64(x, 0);
  return static_cast<uint32_t>(x);
}
void InitShift() {
  for (int b = 0; b < 4; b++)
    for (int v = 0; v < 256; v++) g_shift[b][v] = ShiftRaw(static_cast<uint32_t>(v) << (8 * b));
  g_shiftReady = true;
}
inline uint32_t Shift(uint32_t c) {
  return g_shift[0][c & 255] ^ g_shift[1][(c >> 8) & 255] ^ g_shift[2][(c >> 16) & 255] ^
         g_shift[3][c >> 24];
}

uint32_t Crc32c(uint32_t crc, const uint8_t* p, size_t n) {
  uint64_t c = ~crc & 0xffffffffu;
  while (n && (reinterpret_cast<uintptr_t>(p) & 7)) {
    c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
    n--;
  }
  if (n >= 3 * kStream) {
    if (!g_shiftReady) InitShift();
    while (n >= 3 * kStream) {
      uint64_t c0 = c, c1 = 0, c2 = 0;
      const uint64_t* q = reinterpret_cast<const uint64_t*>(p);
      constexpr size_t w = kStream / 8;
      for (size_t k = 0; k < w; k++) {
        c0 = _mm_crc32_u64(c0, q[k]);
        c1 = _mm_crc32_u64(c1, q[k + w]);
        c2 = _mm_crc32_u64(c2, q[k + 2 * w]);
      }
      c = Shift(Shift(static_cast<uint32_t>(c0)) ^ static_cast<uint32_t>(c1)) ^ static_cast<uint32_t>(c2);
      p += 3 * kStream;
      n -= 3 * kStream;
    }
  }
  while (n >= 8) {
    c = _mm_crc32_u64(c, *reinterpret_cast<const uint64_t*>(p));
    p += 8;
    n -= 8;
  }
  while (n--) c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
  return ~static_cast<uint32_t>(c);
}

uint8_t* ChunkBuffer() {
  static uint8_t* buf = nullptr;
  if (!buf && posix_memalign(reinterpret_cast<void**>(&buf), kPage, kChunk) != 0) buf = nullptr;
  return buf;
}

class MemFd {
 public:
  MemFd(long pid, int flags) : pid_(pid), flags_(flags) {}
  ~MemFd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() {
    if (fd_ < 0) fd_ = open(("/proc/" + std::to_string(pid_) + "/mem").c_str(), flags_ | O_CLOEXEC);
    return fd_;
  }

 private:
  long pid_;
  int flags_;
  int fd_ = -1;
};

bool FullWrite(int fd, const uint8_t* p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= w;
  }
  return true;
}

bool FullPread(int fd, uint8_t* p, size_t n, uint64_t off) {
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

bool FullPwrite(int fd, const uint8_t* p, size_t n, uint64_t off) {
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

Napi::Float64Array RunsArg(const Napi::Value& v) { return v.As<Napi::Float64Array>(); }

// pagemapRuns(pid, start, end, anonOnly): runs [addr, len, ...] of pages worth saving in
// [start, end): present or swapped; with anonOnly, file-backed page-cache pages are skipped
// (they are restored from the file itself).
Napi::Value PagemapRuns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long pid = ArgInt(info[0]);
  uint64_t start = ArgU64(info[1]), end = ArgU64(info[2]);
  bool anonOnly = info[3].ToBoolean();
  int fd = open(("/proc/" + std::to_string(pid) + "/pagemap").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    ThrowErrno(env, errno, "open(/proc/PID/pagemap)", pid);
    return env.Undefined();
  }
  std::vector<double> runs;
  std::vector<uint64_t> ent(65536);
  uint64_t runStart = 0, runLen = 0;
  for (uint64_t addr = start; addr < end;) {
    size_t n = std::min<uint64_t>(ent.size(), (end - addr) / kPage);
    if (!FullPread(fd, reinterpret_cast<uint8_t*>(ent.data()), n * 8, addr / kPage * 8)) {
      int err = errno;
      close(fd);
      ThrowErrno(env, err, "pread(/proc/PID/pagemap)", pid);
      return env.Undefined();
    }
    for (size_t k = 0; k < n; k++, addr += kPage) {
      uint64_t e = ent[k];
      bool present = e >> 63 & 1, swapped = e >> 62 & 1, filePage = e >> 61 & 1;
      bool want = (present || swapped) && !(anonOnly && present && filePage);
      if (want) {
        if (runLen && runStart + runLen == addr) {
          runLen += kPage;
        } else {
          if (runLen) runs.push_back(runStart), runs.push_back(runLen);
          runStart = addr;
          runLen = kPage;
        }
      }
    }
  }
  if (runLen) runs.push_back(runStart), runs.push_back(runLen);
  close(fd);
  Napi::Float64Array out = Napi::Float64Array::New(env, runs.size());
  for (size_t k = 0; k < runs.size(); k++) out[k] = runs[k];
  return out;
}

Napi::Object CopyResult(Napi::Env env, uint64_t bytes, uint32_t crc) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("bytes", Napi::Number::New(env, static_cast<double>(bytes)));
  o.Set("crc", Napi::Number::New(env, crc));
  return o;
}

// Two-stage copy pipeline over page runs: the calling thread produces chunks (read + CRC, in
// order) into a ring of buffers while a second thread consumes them (write), so the read side
// and the write side of a copy use both cores instead of taking turns.
struct Chunk {
  uint8_t* buf;
  uint64_t addr;
  size_t len;
};

class Pipeline {
 public:
  static constexpr int kSlots = 4;
  Pipeline() {
    for (int i = 0; i < kSlots; i++) {
      void* p = nullptr;
      if (posix_memalign(&p, kPage, kChunk) != 0) p = nullptr;
      bufs_[i] = static_cast<uint8_t*>(p);
    }
  }
  ~Pipeline() {
    for (auto* b : bufs_) free(b);
  }
  bool ok() const {
    for (auto* b : bufs_)
      if (!b) return false;
    return true;
  }

  // produce(chunk) fills chunk.buf (chunk.len bytes for chunk.addr); consume(chunk) drains it.
  // Each returns 0 or an errno; the first failure stops both sides. Returns {errno, where}.
  template <typename P, typename C>
  std::pair<int, const char*> Run(const Napi::Float64Array& runs, P produce, C consume) {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Chunk> full;
    std::deque<uint8_t*> empty(bufs_, bufs_ + kSlots);
    bool done = false;
    int err = 0;
    const char* where = nullptr;
    std::thread writer([&] {
      for (;;) {
        Chunk c;
        {
          std::unique_lock<std::mutex> lk(mu);
          cv.wait(lk, [&] { return !full.empty() || done || err; });
          if (err || (full.empty() && done)) return;
          c = full.front();
          full.pop_front();
        }
        int e = consume(c);
        std::lock_guard<std::mutex> lk(mu);
        if (e && !err) err = e, where = "consume";
        empty.push_back(c.buf);
        cv.notify_all();
      }
    });
    for (size_t r = 0; r + 1 < runs.ElementLength() && !err; r += 2) {
      uint64_t addr = static_cast<uint64_t>(runs[r]), len = static_cast<uint64_t>(runs[r + 1]);
      while (len) {
        uint8_t* buf;
        {
          std::unique_lock<std::mutex> lk(mu);
          cv.wait(lk, [&] { return !empty.empty() || err; });
          if (err) break;
          buf = empty.front();
          empty.pop_front();
        }
        size_t n = std::min<uint64_t>(len, kChunk);
        Chunk c{buf, addr, n};
        int e = produce(c);
        std::lock_guard<std::mutex> lk(mu);
        if (e) {
          if (!err) err = e, where = "produce";
          empty.push_back(buf);
          cv.notify_all();
          break;
        }
        full.push_back(c);
        cv.notify_all();
        addr += n;
        len -= n;
      }
    }
    {
      std::lock_guard<std::mutex> lk(mu);
      done = true;
      cv.notify_all();
    }
    writer.join();
    return {err, where};
  }

 private:
  uint8_t* bufs_[kSlots] = {};
};

// dumpPages(pid, runs, fd, crc): appends the runs' bytes to fd (at its offset); returns
// { bytes, crc } with the CRC32C continued from crc.
Napi::Value DumpPages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long pid = ArgInt(info[0]);
  Napi::Float64Array runs = RunsArg(info[1]);
  int out = ArgInt(info[2]);
  uint32_t crc = info[3].As<Napi::Number>().Uint32Value();
  Pipeline pipe;
  if (!pipe.ok()) {
    ThrowErrno(env, ENOMEM, "posix_memalign");
    return env.Undefined();
  }
  MemFd mem(pid, O_RDONLY);
  uint64_t total = 0;
  auto res = pipe.Run(
      runs,
      [&](Chunk& c) -> int {
        iovec local{c.buf, c.len}, remote{reinterpret_cast<void*>(c.addr), c.len};
        ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
        if (got < 0) got = 0;
        if (static_cast<size_t>(got) < c.len) {
          // Unreadable protections (PROT_NONE, ...): /proc/PID/mem reads with FOLL_FORCE.
          int mfd = mem.get();
          if (mfd < 0 || !FullPread(mfd, c.buf + got, c.len - got, c.addr + got)) return errno ? errno : EIO;
        }
        crc = Crc32c(crc, c.buf, c.len);
        total += c.len;
        return 0;
      },
      [&](Chunk& c) -> int { return FullWrite(out, c.buf, c.len) ? 0 : (errno ? errno : EIO); });
  if (res.first) {
    ThrowErrno(env, res.first, std::string(res.second) == "produce" ? "read of target memory" : "write(image)", pid);
    return env.Undefined();
  }
  return CopyResult(env, total, crc);
}

// restorePages(pid, runs, fd, offset, crc): fills the runs from fd starting at offset;
// returns { bytes, crc } of the bytes read. The image range is mapped (no copy into a buffer):
// one thread copies it into the target with process_vm_writev while this one computes its CRC.
Napi::Value RestorePages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long pid = ArgInt(info[0]);
  Napi::Float64Array runs = RunsArg(info[1]);
  int in = ArgInt(info[2]);
  uint64_t off = ArgU64(info[3]);
  uint32_t crc = info[4].As<Napi::Number>().Uint32Value();
  uint64_t total = 0;
  for (size_t r = 0; r + 1 < runs.ElementLength(); r += 2) total += static_cast<uint64_t>(runs[r + 1]);
  if (!total) return CopyResult(env, 0, crc);
  struct stat st;
  if (fstat(in, &st) < 0 || static_cast<uint64_t>(st.st_size) < off + total) {
    ThrowErrno(env, ENODATA, "read(image pages)");
    return env.Undefined();
  }
  uint64_t mapOff = off & ~(kPage - 1), delta = off - mapOff;
  void* m = mmap(nullptr, total + delta, PROT_READ, MAP_SHARED | MAP_POPULATE, in, mapOff);
  if (m == MAP_FAILED) {
    ThrowErrno(env, errno, "mmap(image pages)");
    return env.Undefined();
  }
  const uint8_t* base = static_cast<const uint8_t*>(m) + delta;
  MemFd mem(pid, O_RDWR);
  int err = 0;
  std::thread writer([&] {
    const uint8_t* src = base;
    for (size_t r = 0; r + 1 < runs.ElementLength() && !err; r += 2) {
      uint64_t addr = static_cast<uint64_t>(runs[r]), len = static_cast<uint64_t>(runs[r + 1]);
      while (len) {
        size_t n = std::min<uint64_t>(len, kChunk);
        iovec local{const_cast<uint8_t*>(src), n}, remote{reinterpret_cast<void*>(addr), n};
        ssize_t put = process_vm_writev(pid, &local, 1, &remote, 1, 0);
        if (put < 0) put = 0;
        if (static_cast<size_t>(put) < n) {
          // Read-only pages (code, RELRO): /proc/PID/mem writes with FOLL_FORCE.
          int mfd = mem.get();
          if (mfd < 0 || !FullPwrite(mfd, src + put, n - put, addr + put)) {
            err = errno ? errno : EIO;
            return;
          }
        }
        src += n;
        addr += n;
        len -= n;
      }
    }
  });
  crc = Crc32c(crc, base, total);
  writer.join();
  munmap(m, total + delta);
  if (err) {
    ThrowErrno(env, err, "write of target memory", pid);
    return env.Undefined();
  }
  return CopyResult(env, total, crc);
}

// readMem(pid, addr, len) -> Buffer, through /proc/PID/mem (ignores protections).
Napi::Value ReadMem(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long pid = ArgInt(info[0]);
  uint64_t addr = ArgU64(info[1]);
  size_t len = static_cast<size_t>(ArgU64(info[2]));
  MemFd mem(pid, O_RDONLY);
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, len);
  if (mem.get() < 0 || !FullPread(mem.get(), out.Data(), len, addr)) {
    ThrowErrno(env, errno, "read(/proc/PID/mem)", pid);
    return env.Undefined();
  }
  return out;
}

// writeMem(pid, addr, buffer), through /proc/PID/mem (writes read-only pages too).
Napi::Value WriteMem(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long pid = ArgInt(info[0]);
  uint64_t addr = ArgU64(info[1]);
  auto b = info[2].As<Napi::Buffer<uint8_t>>();
  MemFd mem(pid, O_RDWR);
  if (mem.get() < 0 || !FullPwrite(mem.get(), b.Data(), b.Length(), addr))
    ThrowErrno(env, errno, "write(/proc/PID/mem)", pid);
  return env.Undefined();
}

// crc32c(buffer, seed = 0) -> uint32
Napi::Value Crc32cJs(const Napi::CallbackInfo& info) {
  auto b = info[0].As<Napi::Buffer<uint8_t>>();
  uint32_t seed = info.Length() > 1 ? info[1].As<Napi::Number>().Uint32Value() : 0;
  return Napi::Number::New(info.Env(), Crc32c(seed, b.Data(), b.Length()));
}

// crc32cFile(fd, offset, length, seed = 0) -> uint32, through the chunk buffer.
Napi::Value Crc32cFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info[0]);
  uint64_t off = ArgU64(info[1]), len = ArgU64(info[2]);
  uint32_t crc = info.Length() > 3 ? info[3].As<Napi::Number>().Uint32Value() : 0;
  uint8_t* buf = ChunkBuffer();
  while (len) {
    size_t n = std::min<uint64_t>(len, kChunk);
    if (!FullPread(fd, buf, n, off)) {
      ThrowErrno(env, errno, "read(image)");
      return env.Undefined();
    }
    crc = Crc32c(crc, buf, n);
    off += n;
    len -= n;
  }
  return Napi::Number::New(env, crc);
}

}  // namespace

void InitMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("pagemapRuns", Napi::Function::New(env, PagemapRuns));
  exports.Set("dumpPages", Napi::Function::New(env, DumpPages));
  exports.Set("restorePages", Napi::Function::New(env, RestorePages));
  exports.Set("readMem", Napi::Function::New(env, ReadMem));
  exports.Set("writeMem", Napi::Function::New(env, WriteMem));
  exports.Set("crc32c", Napi::Function::New(env, Crc32cJs));
  exports.Set("crc32cFile", Napi::Function::New(env, Crc32cFile));
}

}  // namespace ckpt
