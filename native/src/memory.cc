// Process memory: which pages to save (pagemap), bulk copy target memory <-> image file with a
// running SHA-256 of the bytes (hash.h), and small reads/writes through /proc/PID/mem.
#include "common.h"
#include "hash.h"

#include <fcntl.h>
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
constexpr size_t kChunk = 4 << 20;  // 4 MiB: stays in L2/L3 between copy, hash and write

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
// (they are restored from the file itself). Guard regions (MADV_GUARD_INSTALL) are not pages:
// their runs are the array's `guards` property, when there are any.
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
  std::vector<double> runs, guards;
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
      bool present = e >> 63 & 1, swapped = e >> 62 & 1, filePage = e >> 61 & 1, guard = e >> 58 & 1;
      // A guard region (MADV_GUARD_INSTALL: PM_GUARD_REGION, shown as swapped) has no page.
      if (guard) {
        size_t g = guards.size();
        if (g && guards[g - 2] + guards[g - 1] == static_cast<double>(addr)) guards[g - 1] += kPage;
        else guards.push_back(static_cast<double>(addr)), guards.push_back(kPage);
        continue;
      }
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
  if (!guards.empty()) {
    Napi::Float64Array g = Napi::Float64Array::New(env, guards.size());
    for (size_t k = 0; k < guards.size(); k++) g[k] = guards[k];
    out.Set("guards", g);
  }
  return out;
}

Napi::Object CopyResult(Napi::Env env, uint64_t bytes) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("bytes", Napi::Number::New(env, static_cast<double>(bytes)));
  return o;
}

// Two-stage copy pipeline over page runs: the calling thread produces chunks (in order) into a
// ring of buffers while a second thread consumes them (in the same order), so the two halves of
// a copy use both cores instead of taking turns.
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
  // Each returns 0 or an errno; the first failure stops both sides. Returns the errno, 0 if none.
  template <typename P, typename C>
  int Run(const Napi::Float64Array& runs, P produce, C consume) {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Chunk> full;
    std::deque<uint8_t*> empty(bufs_, bufs_ + kSlots);
    bool done = false;
    int err = 0;
    std::thread worker([&] {
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
        if (e && !err) err = e;
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
          if (!err) err = e;
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
    worker.join();
    return err;
  }

 private:
  uint8_t* bufs_[kSlots] = {};
};

// dumpPages(pid, runs, fd, hash): appends the runs' bytes to fd (at its offset) and to the running
// SHA-256 `hash` (sha256New); returns { bytes }. The calling thread reads target memory and writes
// each chunk; the pipeline's other thread hashes it (SHA-256 is the slowest step: it gets a core).
Napi::Value DumpPages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long pid = ArgInt(info[0]);
  Napi::Float64Array runs = RunsArg(info[1]);
  int out = ArgInt(info[2]);
  Sha256* hash = Sha256Arg(info[3]);
  if (!hash) return env.Undefined();
  Pipeline pipe;
  if (!pipe.ok()) {
    ThrowErrno(env, ENOMEM, "posix_memalign");
    return env.Undefined();
  }
  MemFd mem(pid, O_RDONLY);
  uint64_t total = 0;
  const char* where = nullptr;
  int err = pipe.Run(
      runs,
      [&](Chunk& c) -> int {
        iovec local{c.buf, c.len}, remote{reinterpret_cast<void*>(c.addr), c.len};
        ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
        if (got < 0) got = 0;
        if (static_cast<size_t>(got) < c.len) {
          // Unreadable protections (PROT_NONE, ...): /proc/PID/mem reads with FOLL_FORCE.
          int mfd = mem.get();
          if (mfd < 0 || !FullPread(mfd, c.buf + got, c.len - got, c.addr + got)) {
            where = "read of target memory";
            return errno ? errno : EIO;
          }
        }
        if (!FullWrite(out, c.buf, c.len)) {
          where = "write(image)";
          return errno ? errno : EIO;
        }
        total += c.len;
        return 0;
      },
      [&](Chunk& c) -> int {
        hash->Update(c.buf, c.len);
        return 0;
      });
  if (err) {
    ThrowErrno(env, err, where ? where : "dumpPages", pid);
    return env.Undefined();
  }
  return CopyResult(env, total);
}

// restorePages(pid, runs, fd, offset, hash): fills the runs from fd starting at offset, the bytes
// read going into the running SHA-256 `hash`; returns { bytes }. The image range is mapped (no
// copy into a buffer): one thread copies it into the target with process_vm_writev while this
// one hashes it. The caller compares the digest with the image's before the process runs.
Napi::Value RestorePages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long pid = ArgInt(info[0]);
  Napi::Float64Array runs = RunsArg(info[1]);
  int in = ArgInt(info[2]);
  uint64_t off = ArgU64(info[3]);
  Sha256* hash = Sha256Arg(info[4]);
  if (!hash) return env.Undefined();
  uint64_t total = 0;
  for (size_t r = 0; r + 1 < runs.ElementLength(); r += 2) total += static_cast<uint64_t>(runs[r + 1]);
  if (!total) return CopyResult(env, 0);
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
  hash->Update(base, total);
  writer.join();
  munmap(m, total + delta);
  if (err) {
    ThrowErrno(env, err, "write of target memory", pid);
    return env.Undefined();
  }
  return CopyResult(env, total);
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

}  // namespace

void InitMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("pagemapRuns", Napi::Function::New(env, PagemapRuns));
  exports.Set("dumpPages", Napi::Function::New(env, DumpPages));
  exports.Set("restorePages", Napi::Function::New(env, RestorePages));
  exports.Set("readMem", Napi::Function::New(env, ReadMem));
  exports.Set("writeMem", Napi::Function::New(env, WriteMem));
}

}  // namespace ckpt
