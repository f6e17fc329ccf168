// Process memory: which pages to save (pagemap), bulk copy target memory <-> image file with a
// running hash of the bytes (hash.h), and small reads/writes through /proc/PID/mem.
#include "common.h"
#include "hash.h"
#include "zstd.h"

#include <fcntl.h>
#include <sched.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <future>
#include <mutex>
#include <thread>
#include <utility>
#include <string>
#include <system_error>
#include <unordered_map>
#include <vector>

// PAGEMAP_SCAN (Linux 6.7; guard regions 6.14), declared here: Debian 12's headers predate it.
struct PmPageRegion {
  uint64_t start, end, categories;
};
struct PmScanArg {
  uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted, category_mask, category_anyof_mask, return_mask;
};
constexpr unsigned long kPagemapScan = _IOWR('f', 16, PmScanArg);
constexpr uint64_t kIsWritten = 1 << 1, kIsFile = 1 << 2, kIsPresent = 1 << 3, kIsSwapped = 1 << 4, kIsPfnZero = 1 << 5, kIsGuard = 1 << 8;
constexpr uint64_t kScanWpMatching = 1 << 0;

#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)  // Linux 6.7; Debian 12's headers predate it
#endif

namespace ckpt {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t kHuge = 2 << 20;
// 1 MiB: the pipeline's chunk (Pipeline: a copy to a stream, or compressed). With 4 MiB chunks a
// 1 GiB dump took 1.3-1.7x as long (interleaved runs: median 1450 vs 862 ms); 256 and 512 KiB did
// no better than 1 MiB there. A copy into a file goes in smaller pieces (kPiece, ParallelCopy).
constexpr size_t kChunk = 1 << 20;

// Files of processes a dump holds frozen (pinProc), by pid: /proc/PID/mem (read-write) and
// /proc/PID/pagemap, opened at first use and kept until unpinProc. A dump reads them dozens of
// times per process (an area's pagemap, a frame written, a remote syscall's result read), and
// each open checks ptrace access and takes a reference on the mm: 40% of the opens of a dump of
// a tree of small processes. Only while the process is stopped under ckpt: it cannot exec (an
// fd keeps the mm it was opened on), and a process killed meanwhile makes reads fail, as before.
struct Pinned {
  int mem = -1;
  int pagemap = -1;
};
std::mutex pinnedMu;
std::unordered_map<long, Pinned> pinned;

// The file `name` ("mem" or "pagemap") of pid: its pinned fd, or one opened with `flags` and
// closed with this object. get() opens it at first use; -1 with errno set when it cannot.
class ProcFile {
 public:
  ProcFile(long pid, const char* name, int flags) : pid_(pid), name_(name), flags_(flags) {}
  ~ProcFile() {
    if (owned_ && fd_ >= 0) close(fd_);
  }
  ProcFile(const ProcFile&) = delete;
  ProcFile& operator=(const ProcFile&) = delete;
  int get() {
    if (fd_ >= 0) return fd_;
    const bool mem = !strcmp(name_, "mem");
    {
      std::lock_guard<std::mutex> lk(pinnedMu);
      auto it = pinned.find(pid_);
      if (it != pinned.end()) {
        int& slot = mem ? it->second.mem : it->second.pagemap;
        if (slot < 0) slot = Open(mem ? O_RDWR : O_RDONLY);
        if (slot >= 0) {
          owned_ = false;
          return fd_ = slot;
        }
      }
    }
    fd_ = Open(flags_);
    return fd_;
  }

 private:
  int Open(int flags) const { return open(("/proc/" + std::to_string(pid_) + "/" + name_).c_str(), flags | O_CLOEXEC); }
  long pid_;
  const char* name_;
  int flags_;
  int fd_ = -1;
  bool owned_ = true;
};

class MemFd : public ProcFile {
 public:
  MemFd(long pid, int flags) : ProcFile(pid, "mem", flags) {}
};

Napi::Float64Array RunsArg(const Napi::Value& v) { return v.As<Napi::Float64Array>(); }

// Appends [addr, kPage] to runs, extending the last run when it ends at addr.
void AddPage(std::vector<double>& runs, uint64_t addr) {
  size_t n = runs.size();
  if (n && runs[n - 2] + runs[n - 1] == static_cast<double>(addr)) runs[n - 1] += kPage;
  else runs.push_back(static_cast<double>(addr)), runs.push_back(kPage);
}

// The page frame of the shared zero page (what a read fault on untouched anonymous memory maps),
// found once by reading a fresh page of our own; 0 when frames are hidden (no CAP_SYS_ADMIN).
uint64_t ZeroPfn() {
  static uint64_t pfn = []() -> uint64_t {
    void* p = mmap(nullptr, kPage, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return uint64_t{0};
    volatile uint8_t sink = *static_cast<volatile uint8_t*>(p);
    (void)sink;
    uint64_t e = 0;
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      if (pread(fd, &e, 8, reinterpret_cast<uintptr_t>(p) / kPage * 8) != 8) e = 0;
      close(fd);
    }
    munmap(p, kPage);
    return (e >> 63 & 1) ? (e & ((1ULL << 55) - 1)) : 0;
  }();
  return pfn;
}

Napi::Float64Array ToArray(Napi::Env env, const std::vector<double>& v) {
  Napi::Float64Array out = Napi::Float64Array::New(env, v.size());
  for (size_t k = 0; k < v.size(); k++) out[k] = v[k];
  return out;
}

// The entries a Buffer argument info[k] holds (pagemapEntries' layout), when it is one: false
// (a JS exception thrown) when it holds fewer than `pages`.
bool EntriesArg(const Napi::CallbackInfo& info, size_t k, uint64_t pages, const uint64_t** out) {
  if (info.Length() <= k || !info[k].IsBuffer()) return true;
  Napi::Buffer<uint8_t> b = info[k].As<Napi::Buffer<uint8_t>>();
  if (b.Length() < pages * 8) {
    Napi::RangeError::New(info.Env(), "pagemapRuns: the entries given do not cover the range").ThrowAsJavaScriptException();
    return false;
  }
  *out = reinterpret_cast<const uint64_t*>(b.Data());
  return true;
}

// pagemapRuns(pid, start, end, anonOnly[, parentPid]): runs [addr, len, ...] of pages worth saving
// in [start, end): present or swapped; with anonOnly, file-backed page-cache pages are skipped
// (they are restored from the file itself). Guard regions (MADV_GUARD_INSTALL) are not pages:
// their runs are the array's `guards` property, when there are any.
// With parentPid (the same range is mapped alike in the parent, which a restore forks this
// process from once the parent's memory is back): pages this process shares with the parent
// copy-on-write (the same page frame, or the same swap entry) are left out, and pages the parent
// has saved where this process has none are the `zap` property (they must go after the fork).
// Page frames read as 0 without CAP_SYS_ADMIN: then nothing is found shared. The parent may be
// given as its entries instead of its pid (a Buffer from pagemapEntries for the same range): a
// parent of many children is then read once, not once per child; and the process's own entries
// as a 7th argument (read ahead, pagemapEntriesAhead).
// With `clean` (an area registered for write tracking, userfaultfd-wp): the saved pages still
// write-protected (PM_UFFD_WP), i.e. not written since they were last protected, are the `clean`
// property's runs (a subset of the result's).
// Pages mapped to the shared zero page (read, never written) are not saved: they come back as
// the fresh zeroed memory they were; their count is the `zeroPages` property.
Napi::Value PagemapRuns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long pid = ArgInt(info[0]);
  uint64_t start = ArgU64(info[1]), end = ArgU64(info[2]);
  bool anonOnly = info[3].ToBoolean();
  long parent = info.Length() > 4 && info[4].IsNumber() ? ArgInt(info[4]) : 0;
  const uint64_t* given = nullptr;
  bool wantClean = info.Length() > 5 && info[5].ToBoolean();
  // The process's own entries, read ahead (pagemapEntriesAhead), or read here.
  const uint64_t* own = nullptr;
  if (!EntriesArg(info, 4, (end - start) / kPage, &given) || !EntriesArg(info, 6, (end - start) / kPage, &own)) return env.Undefined();
  ProcFile map(pid, "pagemap", O_RDONLY), parentMap(parent, "pagemap", O_RDONLY);
  int fd = own ? 0 : map.get();
  if (fd < 0) {
    ThrowErrno(env, errno, "open(/proc/PID/pagemap)", pid);
    return env.Undefined();
  }
  int pfd = parent ? parentMap.get() : -1;
  if (parent && pfd < 0) {
    ThrowErrno(env, errno, "open(/proc/PID/pagemap)", parent);
    return env.Undefined();
  }
  std::vector<double> runs, guards, zap, clean;
  // Entries for the range, up to 64 Ki pages per read (a small area's call allocates little).
  const size_t batch = static_cast<size_t>(std::min<uint64_t>(65536, std::max<uint64_t>(1, (end - start) / kPage)));
  const bool compare = parent || given;
  std::vector<uint64_t> ent(batch), pent(parent ? batch : 0);
  // A page a dump saves: present (not a clean file page, with anonOnly) or swapped.
  auto saved = [anonOnly](uint64_t e) {
    bool present = e >> 63 & 1, swapped = e >> 62 & 1, filePage = e >> 61 & 1;
    return (present || swapped) && !(anonOnly && present && filePage);
  };
  constexpr uint64_t kFrame = (1ULL << 55) - 1;
  const uint64_t zeroPfn = ZeroPfn();
  double zeroPages = 0;
  for (uint64_t addr = start; addr < end;) {
    size_t n = std::min<uint64_t>(ent.size(), (end - addr) / kPage);
    bool ok = own ? (memcpy(ent.data(), own + (addr - start) / kPage, n * 8), true) : FullPread(fd, reinterpret_cast<uint8_t*>(ent.data()), n * 8, addr / kPage * 8);
    if (ok && parent) ok = FullPread(pfd, reinterpret_cast<uint8_t*>(pent.data()), n * 8, addr / kPage * 8);
    if (!ok) {
      ThrowErrno(env, errno, "pread(/proc/PID/pagemap)", pid);
      return env.Undefined();
    }
    const uint64_t* parentEntries = given ? given + (addr - start) / kPage : pent.data();
    for (size_t k = 0; k < n; k++, addr += kPage) {
      uint64_t e = ent[k];
      // A guard region (MADV_GUARD_INSTALL: PM_GUARD_REGION, shown as swapped) has no page.
      if (e >> 58 & 1) {
        AddPage(guards, addr);
        continue;
      }
      bool want = saved(e);
      if (want && zeroPfn && (e >> 63 & 1) && !(e >> 61 & 1) && (e & kFrame) == zeroPfn) {
        want = false;
        zeroPages++;
      }
      if (compare) {
        uint64_t pe = parentEntries[k];
        bool parentSaved = !(pe >> 58 & 1) && saved(pe);
        if (want && parentSaved && (e >> 62 & 3) == (pe >> 62 & 3) && (e & kFrame) != 0 && (e & kFrame) == (pe & kFrame)) continue;
        if (!want && parentSaved) AddPage(zap, addr);
      }
      if (want) AddPage(runs, addr);
      if (want && wantClean && (e >> 57 & 1)) AddPage(clean, addr);
    }
  }
  Napi::Float64Array out = ToArray(env, runs);
  if (!guards.empty()) out.Set("guards", ToArray(env, guards));
  if (!zap.empty()) out.Set("zap", ToArray(env, zap));
  if (zeroPages) out.Set("zeroPages", Napi::Number::New(env, zeroPages));
  if (wantClean) out.Set("clean", ToArray(env, clean));
  return out;
}

// pagemapEntries(pid, start, end) -> Buffer: the raw pagemap entries of [start, end), 8 bytes a
// page: what pagemapRuns takes as a parent's, read once for all its children.
Napi::Value PagemapEntries(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long pid = ArgInt(info[0]);
  uint64_t start = ArgU64(info[1]), end = ArgU64(info[2]);
  ProcFile map(pid, "pagemap", O_RDONLY);
  int fd = map.get();
  if (fd < 0) {
    ThrowErrno(env, errno, "open(/proc/PID/pagemap)", pid);
    return env.Undefined();
  }
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, (end - start) / kPage * 8);
  if (!FullPread(fd, out.Data(), out.Length(), start / kPage * 8)) {
    ThrowErrno(env, errno, "pread(/proc/PID/pagemap)", pid);
    return env.Undefined();
  }
  return out;
}

// Pagemap entries read on a thread of its own (pagemapEntriesAhead): by handle, one future per
// range, in the order given.
struct Entries {
  std::vector<uint64_t> e;
  int err = 0;
};
std::mutex entriesMu;
std::unordered_map<int, std::vector<std::shared_future<Entries>>> entriesAhead;
int nextEntriesAhead = 1;

Entries ReadEntries(long pid, uint64_t start, uint64_t end) {
  Entries r;
  ProcFile map(pid, "pagemap", O_RDONLY);
  int fd = map.get();
  if (fd < 0) {
    r.err = errno;
    return r;
  }
  r.e.resize((end - start) / kPage);
  if (!FullPread(fd, reinterpret_cast<uint8_t*>(r.e.data()), r.e.size() * 8, start / kPage * 8)) {
    r.err = errno ? errno : EIO;
    r.e.clear();
  }
  return r;
}

// pagemapEntriesAhead([[pid, start, end], ...]) -> handle: pagemapEntries of each range, read one
// after another on a thread of its own while the caller goes on (a tree's children, compared
// page by page with their parent at the memory stage: their reads otherwise follow one another
// on the main thread). pagemapEntriesTake(handle, i) takes the i-th; pagemapEntriesDrop(handle)
// lets go of those not taken.
Napi::Value PagemapEntriesAhead(const Napi::CallbackInfo& info) {
  Napi::Array ranges = info[0].As<Napi::Array>();
  auto items = std::make_shared<std::vector<std::tuple<long, uint64_t, uint64_t>>>();
  auto promises = std::make_shared<std::vector<std::promise<Entries>>>(ranges.Length());
  std::vector<std::shared_future<Entries>> futures;
  for (uint32_t i = 0; i < ranges.Length(); i++) {
    Napi::Array r = ranges.Get(i).As<Napi::Array>();
    items->emplace_back(ArgInt(r.Get(0u)), ArgU64(r.Get(1u)), ArgU64(r.Get(2u)));
    futures.push_back((*promises)[i].get_future().share());
  }
  std::thread([items, promises]() {
    for (size_t i = 0; i < items->size(); i++) {
      auto [pid, start, end] = (*items)[i];
      (*promises)[i].set_value(ReadEntries(pid, start, end));
    }
  }).detach();
  std::lock_guard<std::mutex> lk(entriesMu);
  int id = nextEntriesAhead++;
  entriesAhead.emplace(id, std::move(futures));
  return Napi::Number::New(info.Env(), id);
}

// pagemapEntriesTake(handle, i) -> Buffer: the i-th range's entries, once read (what
// pagemapEntries would have returned, or thrown); undefined when already taken (each is held
// until taken, and no longer).
Napi::Value PagemapEntriesTake(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_future<Entries> f;
  {
    std::lock_guard<std::mutex> lk(entriesMu);
    auto it = entriesAhead.find(ArgInt(info[0]));
    uint32_t i = info[1].As<Napi::Number>().Uint32Value();
    if (it == entriesAhead.end() || i >= it->second.size()) {
      ThrowErrnoMsg(env, EBADF, "pagemapEntriesTake: no such read");
      return env.Undefined();
    }
    f = std::move(it->second[i]);
    it->second[i] = std::shared_future<Entries>();
  }
  if (!f.valid()) return env.Undefined();
  const Entries& r = f.get();
  if (r.err) {
    ThrowErrnoMsg(env, r.err, "pread(/proc/PID/pagemap) ahead");
    return env.Undefined();
  }
  return Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(r.e.data()), r.e.size() * 8);
}

// pagemapEntriesDrop(handle): the reads of a handle let go of (its thread finishes on its own).
Napi::Value PagemapEntriesDrop(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lk(entriesMu);
  entriesAhead.erase(ArgInt(info[0]));
  return info.Env().Undefined();
}

// Appends [addr, len] to runs, extending the last run when it ends at addr.
void AddRun(std::vector<double>& v, double addr, double len) {
  size_t m = v.size();
  if (m && v[m - 2] + v[m - 1] == addr) v[m - 1] += len;
  else v.push_back(addr), v.push_back(len);
}

// One PAGEMAP_SCAN over [start, end), in as many calls as the regions need: fn(region) for each.
// 0 or an errno.
//
// A call stops early only when our vector is full; then it goes on where that one's walk ended.
// The walk_end the kernel returns is not that alone: a walk that its kernel buffer (512 regions)
// cut into pieces, and that then went to the end, returns the end of the last piece but one
// (Linux 6.18: walk_end is set when a piece ends early, and never again once the last one is
// done). Continued from there, a scan walked that tail twice, and with PM_SCAN_WP_MATCHING the
// second walk found the pages the first protected clean: written pages reported as not written,
// writes lost to an increment. So a call that left room in the vector is the whole walk, and a
// full one goes on from the end of the last region it reported, if that is further.
template <typename F>
int Scan(int fd, uint64_t start, uint64_t end, uint64_t flags, uint64_t categoryMask, uint64_t anyof, uint64_t returnMask, F fn) {
  std::vector<PmPageRegion> vec(4096);
  for (uint64_t at = start; at < end;) {
    PmScanArg a{};
    a.size = sizeof(a);
    a.flags = flags;
    a.start = at;
    a.end = end;
    a.vec = reinterpret_cast<uintptr_t>(vec.data());
    a.vec_len = vec.size();
    a.category_mask = categoryMask;
    a.category_anyof_mask = anyof;
    a.return_mask = returnMask;
    long n = ioctl(fd, kPagemapScan, &a);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    for (long k = 0; k < n; k++) fn(vec[k]);
    if (static_cast<size_t>(n) < vec.size()) break;
    uint64_t next = std::max<uint64_t>(a.walk_end, vec[n - 1].end);
    if (next <= at) break;
    at = next;
  }
  return 0;
}

struct ScanResult {
  std::vector<double> runs, guards, clean;
  double zeroPages = 0;
  int err = 0;
  const char* what = nullptr;
};

ScanResult ScanArea(long pid, uint64_t start, uint64_t end, bool anonOnly, bool reprotect) {
  ScanResult r;
  ProcFile map(pid, "pagemap", O_RDONLY);
  int fd = map.get();
  if (fd < 0) {
    r.err = errno;
    r.what = "open(/proc/PID/pagemap)";
    return r;
  }
  // PAGE_IS_FILE only where it decides (a private file mapping's own pages are its anonymous
  // ones): the kernel looks up each present page's struct page for it, which tripled the walk
  // (1 GiB: 11 ms instead of 3.2 here). An anonymous area's pages are never file pages.
  const uint64_t file = anonOnly ? kIsFile : 0;
  r.err = Scan(fd, start, end, reprotect ? kScanWpMatching : 0, 0, kIsPresent | kIsSwapped | kIsGuard, kIsWritten | file | kIsPresent | kIsSwapped | kIsPfnZero | kIsGuard,
               [&](const PmPageRegion& g) {
                 double len = static_cast<double>(g.end - g.start), addr = static_cast<double>(g.start);
                 if (g.categories & kIsGuard) return AddRun(r.guards, addr, len);
                 bool present = g.categories & kIsPresent;
                 if (anonOnly && present && (g.categories & kIsFile)) return;
                 if (present && !(g.categories & kIsFile) && (g.categories & kIsPfnZero)) {
                   r.zeroPages += len / kPage;
                   return;
                 }
                 AddRun(r.runs, addr, len);
                 if (!(g.categories & kIsWritten)) AddRun(r.clean, addr, len);
               });
  if (r.err) r.what = "ioctl(PAGEMAP_SCAN)";
  return r;
}

Napi::Value ScanToJs(Napi::Env env, long pid, const ScanResult& r) {
  if (r.err) {
    ThrowErrno(env, r.err, r.what, pid);
    return env.Undefined();
  }
  Napi::Float64Array out = ToArray(env, r.runs);
  if (!r.guards.empty()) out.Set("guards", ToArray(env, r.guards));
  if (r.zeroPages) out.Set("zeroPages", Napi::Number::New(env, r.zeroPages));
  out.Set("clean", ToArray(env, r.clean));
  return out;
}

// pagemapScan(pid, start, end, anonOnly, reprotect): what pagemapRuns finds (without the parent
// comparison) from PAGEMAP_SCAN, which reports runs of pages alike instead of one entry per page:
// the saved runs, `guards`, `zeroPages`, and `clean`: the saved pages not written since they were
// last write-protected (uffd-wp bit set). With `reprotect` (an area registered for asynchronous
// write-protect), the same walk write-protects the written pages it reports (PM_SCAN_WP_MATCHING
// protects only the matching pages that are written, after their categories are taken, each under
// its page table lock): the next scan sees the pages written after this one. One walk of the page
// tables, not two: about 8 ms a GiB here, inside the freeze. Throws (EINVAL, ENOTTY: no
// PAGEMAP_SCAN; EPERM: reprotect of an area not registered).
Napi::Value PagemapScan(const Napi::CallbackInfo& info) {
  long pid = ArgInt(info[0]);
  bool reprotect = info.Length() > 4 && info[4].ToBoolean();
  return ScanToJs(info.Env(), pid, ScanArea(pid, ArgU64(info[1]), ArgU64(info[2]), info[3].ToBoolean(), reprotect));
}

// Scans started on threads of their own (pagemapScanAhead), by handle, with their pid: one
// future per piece of the area, in address order.
std::unordered_map<int, std::pair<long, std::vector<std::future<ScanResult>>>> scansAhead;
int nextScanAhead = 1;

// An area from this size on is walked in pieces, one thread each (up to one per CPU): the walk
// of a frozen 1 GiB is most of an increment's freeze (5-8 ms here), and ckpt's main thread
// mostly waits for the process meanwhile.
constexpr uint64_t kScanPiece = 256ULL << 20;

// pagemapScanAhead(pid, start, end, anonOnly, reprotect): pagemapScan on threads of their own,
// while the caller goes on; a handle for pagemapScanJoin, which must take it.
Napi::Value PagemapScanAhead(const Napi::CallbackInfo& info) {
  long pid = ArgInt(info[0]);
  uint64_t start = ArgU64(info[1]), end = ArgU64(info[2]);
  bool anonOnly = info[3].ToBoolean();
  bool reprotect = info.Length() > 4 && info[4].ToBoolean();
  uint64_t cpus = Cpus();
  uint64_t pieces = std::min<uint64_t>(cpus, std::max<uint64_t>(1, (end - start) / kScanPiece));
  // Piece boundaries on pages (a walk of part of a page table is fine: it is a range of pages).
  uint64_t step = ((end - start) / pieces + kPage - 1) / kPage * kPage;
  std::vector<std::future<ScanResult>> parts;
  for (uint64_t at = start; at < end; at += step)
    parts.push_back(std::async(std::launch::async, ScanArea, pid, at, std::min(end, at + step), anonOnly, reprotect));
  int id = nextScanAhead++;
  scansAhead.emplace(id, std::make_pair(pid, std::move(parts)));
  return Napi::Number::New(info.Env(), id);
}

// pagemapScanJoin(handle): what pagemapScan would have returned (or thrown), once done: the
// pieces' results joined (a run across a boundary made one again).
Napi::Value PagemapScanJoin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto it = scansAhead.find(ArgInt(info[0]));
  if (it == scansAhead.end()) {
    ThrowErrnoMsg(env, EBADF, "pagemapScanJoin: no such scan");
    return env.Undefined();
  }
  long pid = it->second.first;
  std::vector<std::future<ScanResult>> parts = std::move(it->second.second);
  scansAhead.erase(it);
  ScanResult r;
  for (auto& f : parts) {
    ScanResult p = f.get();
    if (p.err && !r.err) r.err = p.err, r.what = p.what;
    auto join = [](std::vector<double>& to, const std::vector<double>& from) {
      for (size_t k = 0; k + 1 < from.size(); k += 2) AddRun(to, from[k], from[k + 1]);
    };
    join(r.runs, p.runs);
    join(r.guards, p.guards);
    join(r.clean, p.clean);
    r.zeroPages += p.zeroPages;
  }
  return ScanToJs(env, pid, r);
}

Napi::Object CopyResult(Napi::Env env, uint64_t bytes) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("bytes", Napi::Number::New(env, static_cast<double>(bytes)));
  return o;
}

// The dump's copy, as a pipeline over page runs: the calling thread fills chunk buffers (in
// order) while two threads drain each filled chunk at the same time: one hashes it, the other
// writes it to the image. A buffer is reused once both are done with it.
struct Chunk {
  uint8_t* buf;
  uint64_t addr;  // target address of the chunk
  uint64_t off;   // its offset in the image blob
  size_t len;
};

class Pipeline {
 public:
  static constexpr int kSlots = 6;
  // Buffers for a copy of `total` bytes: no more, nor more of them, than it needs (a small
  // process's copy would otherwise spend more faulting in 24 MiB of buffers than copying).
  explicit Pipeline(uint64_t total) {
    const size_t size = static_cast<size_t>(std::min<uint64_t>(kChunk, (total + kPage - 1) & ~(kPage - 1)));
    const uint64_t chunks = (total + kChunk - 1) / kChunk;
    single_ = chunks <= 1;
    for (uint64_t i = 0; i < kSlots; i++) {
      Slot& sl = slots_[i];
      if (i > 0 && i >= chunks) {
        sl.buf = nullptr;
        continue;
      }
      void* p = nullptr;
      if (posix_memalign(&p, kPage, size ? size : kPage) != 0) p = nullptr;
      sl.buf = static_cast<uint8_t*>(p);
      used_++;
    }
  }
  ~Pipeline() {
    for (auto& sl : slots_) free(sl.buf);
  }
  bool ok() const {
    for (int i = 0; i < used_; i++)
      if (!slots_[i].buf) return false;
    return true;
  }

  // produce(dst, addr, n) fills part of a chunk's buffer with n bytes from addr; hash(chunk) and
  // put(chunk) each drain a full chunk (concurrently, each in chunk order). Each returns 0 or an errno; the first failure stops everything.
  // Returns that errno (and which step: 0 produce, 1 hash, 2 put), 0 if none.
  template <typename P, typename H, typename W>
  int Run(const Napi::Float64Array& runs, uint64_t off, P produce, H hash, W put, int* step) {
    if (single_) return RunHere(runs, off, produce, hash, put, step);
    std::mutex mu;
    std::condition_variable cv;
    uint64_t filled = 0;  // chunks produced so far (chunk i lives in slot i % used_)
    bool done = false;
    int err = 0;
    auto fail = [&](int e, int which) {
      std::lock_guard<std::mutex> lk(mu);
      if (!err) err = e, *step = which;
      cv.notify_all();
    };
    auto drain = [&](int which, auto&& fn) {
      for (uint64_t i = 0;; i++) {
        Slot* sl = &slots_[i % used_];
        {
          std::unique_lock<std::mutex> lk(mu);
          cv.wait(lk, [&] { return err || i < filled || done; });
          if (err || i >= filled) return;
        }
        int e = fn(sl->chunk);
        if (e) return fail(e, which);
        std::lock_guard<std::mutex> lk(mu);
        if (--sl->pending == 0) cv.notify_all();
      }
    };
    std::thread hasher([&] { drain(1, hash); });
    std::thread writer([&] { drain(2, put); });
    // Runs are packed into chunks: a chunk holds up to kChunk bytes of as many runs as fit (an
    // increment of scattered 4 KiB pages is a few chunks, not thousands of hand-overs).
    uint64_t i = 0;
    Slot* sl = nullptr;
    size_t fill = 0;
    bool stop = false;
    auto publish = [&]() {
      std::lock_guard<std::mutex> lk(mu);
      sl->chunk.len = fill;
      sl->pending = 2;
      filled = ++i;
      cv.notify_all();
      sl = nullptr;
      fill = 0;
    };
    for (size_t r = 0; r + 1 < runs.ElementLength() && !stop; r += 2) {
      uint64_t addr = static_cast<uint64_t>(runs[r]), len = static_cast<uint64_t>(runs[r + 1]);
      while (len && !stop) {
        if (!sl) {
          Slot* next = &slots_[i % used_];
          std::unique_lock<std::mutex> lk(mu);
          cv.wait(lk, [&] { return err || next->pending == 0; });
          if (err) {
            stop = true;
            break;
          }
          sl = next;
          sl->chunk = Chunk{sl->buf, addr, off, 0};
        }
        size_t n = std::min<uint64_t>(len, kChunk - fill);
        int e = produce(sl->buf + fill, addr, n);
        if (e) {
          fail(e, 0);
          stop = true;
          break;
        }
        fill += n;
        addr += n;
        off += n;
        len -= n;
        if (fill == kChunk) publish();
      }
    }
    if (!stop && sl && fill) publish();
    {
      std::lock_guard<std::mutex> lk(mu);
      done = true;
      cv.notify_all();
    }
    hasher.join();
    writer.join();
    return err;
  }

 private:
  // Run for a copy of one chunk at most: read, hash and write it on this thread. Two threads'
  // start and hand-overs cost more than such a chunk (a 4 KiB dump took 0.2 ms a call here).
  template <typename P, typename H, typename W>
  int RunHere(const Napi::Float64Array& runs, uint64_t off, P produce, H hash, W put, int* step) {
    Slot& sl = slots_[0];
    sl.chunk = Chunk{sl.buf, runs.ElementLength() >= 2 ? static_cast<uint64_t>(runs[0]) : 0, off, 0};
    for (size_t r = 0; r + 1 < runs.ElementLength(); r += 2) {
      uint64_t addr = static_cast<uint64_t>(runs[r]), len = static_cast<uint64_t>(runs[r + 1]);
      if (!len) continue;
      if (int e = produce(sl.buf + sl.chunk.len, addr, len)) return *step = 0, e;
      sl.chunk.len += len;
    }
    if (!sl.chunk.len) return 0;
    if (int e = hash(sl.chunk)) return *step = 1, e;
    if (int e = put(sl.chunk)) return *step = 2, e;
    return 0;
  }

  struct Slot {
    uint8_t* buf = nullptr;
    Chunk chunk{};
    int pending = 0;  // drains still to run on the chunk in it
  };
  Slot slots_[kSlots];
  int used_ = 0;
  bool single_ = false;
};

// A copy hashed with BLAKE3 into a file, in parallel: the bytes are cut into pieces of kPiece
// (256 KiB, aligned on the hash's position), and each of a few threads takes the next piece and
// reads, hashes and writes it, all three on the one thread while the piece is in its core's L2.
// The hash's tree lets each whole piece be hashed apart (Blake3::SubtreeAt) and the values be
// taken in order at the end; the first piece (up to the alignment) and the last (which may end
// the message) go through the running hash itself. 1 GiB of a process's memory into a file, on
// this 2-core VM: 270-310 ms with 2 threads, against 510-525 with one, 630-1060 with 1 MiB pieces
// (they no longer stay in the cache between the read, the hash and the write) and 765 through
// Pipeline (three threads handing 1 MiB chunks to each other: every hand-over misses the cache).
constexpr size_t kPiece = 256 << 10;

// Threads for a parallel copy: the CPUs this process may run on, at most 4 (the copy is bound by
// memory bandwidth long before).
int CopyThreads() {
  cpu_set_t set;
  int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  return std::max(1, std::min(n, 4));
}

// The runs (address, length pairs) as a stream: where each begins in it.
struct RunStream {
  std::vector<uint64_t> addr, len, at;
  explicit RunStream(const Napi::Float64Array& runs) {
    uint64_t off = 0;
    for (size_t r = 0; r + 1 < runs.ElementLength(); r += 2) {
      uint64_t n = static_cast<uint64_t>(runs[r + 1]);
      if (!n) continue;
      addr.push_back(static_cast<uint64_t>(runs[r]));
      len.push_back(n);
      at.push_back(off);
      off += n;
    }
  }
  // Bytes [from, from + n) of the stream into dst through produce(dst, addr, n): 0 or an errno.
  template <typename P>
  int Read(uint64_t from, size_t n, uint8_t* dst, P& produce) const {
    size_t r = static_cast<size_t>(std::upper_bound(at.begin(), at.end(), from) - at.begin()) - 1;
    while (n) {
      uint64_t skip = from - at[r];
      size_t take = static_cast<size_t>(std::min<uint64_t>(n, len[r] - skip));
      if (int e = produce(dst, addr[r] + skip, take)) return e;
      dst += take, from += take, n -= take, r++;
    }
    return 0;
  }
};

// The stream's `total` bytes written at `start` of `out`, and hashed into `hash`, as above.
// produce(dst, addr, n) reads n bytes from addr (may run on any of the threads). 0 or an errno
// (and which step failed: 0 read, 2 write).
template <typename P>
int ParallelCopy(const RunStream& in, uint64_t total, P produce, Blake3* hash, int out, uint64_t start, int* step) {
  const uint64_t h0 = hash->Length();
  const uint64_t head = std::min<uint64_t>(total, (kPiece - h0 % kPiece) % kPiece);  // the first piece, to the alignment
  // Pieces: [0, head) if head, then whole pieces, the last one whatever is left.
  const uint64_t body = total > head ? total - head : 0;
  const uint64_t whole = body / kPiece, rest = body % kPiece;
  // The last piece goes through the running hash: a whole one too if nothing follows it.
  const uint64_t middle = rest ? whole : (whole ? whole - 1 : 0);
  const uint64_t tail = total - head - middle * kPiece;
  const uint64_t pieces = (head ? 1 : 0) + middle + (tail ? 1 : 0);
  std::vector<std::array<uint32_t, 8>> cvs(middle);
  uint8_t* ends = nullptr;  // the head's and the tail's bytes, kept for the running hash
  if (posix_memalign(reinterpret_cast<void**>(&ends), kPage, 2 * kPiece) != 0) return ENOMEM;
  std::atomic<uint64_t> next{0};
  std::atomic<int> err{0};
  auto work = [&] {
    uint8_t* buf = nullptr;
    if (posix_memalign(reinterpret_cast<void**>(&buf), kPage, kPiece) != 0) {
      int none = 0;
      err.compare_exchange_strong(none, ENOMEM);
      return;
    }
    for (uint64_t i; !err.load(std::memory_order_relaxed) && (i = next.fetch_add(1)) < pieces;) {
      // Piece i: the head (if any), then the middle ones, then the tail.
      uint64_t k = head ? i : i + 1;  // 0 head, 1..middle, middle + 1 tail
      uint64_t from = k == 0 ? 0 : head + (k - 1) * kPiece;
      size_t n = static_cast<size_t>(k == 0 ? head : k <= middle ? kPiece : tail);
      uint8_t* dst = k == 0 ? ends : k <= middle ? buf : ends + kPiece;
      int e = in.Read(from, n, dst, produce), which = 0;
      if (!e && k >= 1 && k <= middle) Blake3::SubtreeAt(dst, kPiece / Blake3::kChunk, (h0 + from) / Blake3::kChunk, cvs[k - 1].data());
      if (!e && !FullPwrite(out, dst, n, start + from)) e = errno ? errno : EIO, which = 2;
      int none = 0;
      if (e && err.compare_exchange_strong(none, e)) *step = which;
    }
    free(buf);
  };
  const int threads = static_cast<int>(std::min<uint64_t>(CopyThreads(), pieces));
  std::vector<std::thread> helpers;
  for (int t = 1; t < threads; t++) {
    try {
      helpers.emplace_back(work);
    } catch (const std::system_error&) {
      break;  // no thread to be had (a pids limit): the ones there are take every piece
    }
  }
  work();
  for (auto& t : helpers) t.join();
  int e = err.load();
  if (!e) {
    hash->Update(ends, head);
    for (auto& cv : cvs)
      if (!hash->Append(cv.data(), kPiece / Blake3::kChunk)) e = EINVAL, *step = 1;  // cannot be: aligned above
    if (!e) hash->Update(ends + kPiece, tail);
  }
  free(ends);
  return e;
}

uint64_t RunsBytes(const Napi::Float64Array& runs) {
  uint64_t total = 0;
  for (size_t r = 0; r + 1 < runs.ElementLength(); r += 2) total += static_cast<uint64_t>(runs[r + 1]);
  return total;
}

// dumpPages(pid, runs, fd, hash): appends the runs' bytes to fd (at its offset, which it advances;
// a socket or a pipe: written to it in order)
// and to the running hash `hash` (hashNew); returns { bytes }. Into a file with BLAKE3, in
// parallel pieces (ParallelCopy); else this thread reads target memory, one thread hashes and
// one writes each chunk (a copy of one chunk: all three on this thread).
Napi::Value DumpPages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long pid = ArgInt(info[0]);
  Napi::Float64Array runs = RunsArg(info[1]);
  int out = ArgInt(info[2]);
  Hash* hash = HashArg(info[3]);
  if (!hash) return env.Undefined();
  // A compression stream (zstdWriter): chunks go through it, and the compressed bytes are what
  // is written and hashed (the blob's digest is the file's).
  ZstdWriter* zw = info.Length() > 4 && !info[4].IsUndefined() ? ZstdWriterArg(info[4]) : nullptr;
  const uint64_t total = RunsBytes(runs);
  if (!total) return CopyResult(env, 0);
  off_t start = lseek(out, 0, SEEK_CUR);
  // A socket or a pipe (a page server's connection): the chunks are written in order, streamed.
  const bool stream = start < 0 && errno == ESPIPE && !zw;
  if (stream) start = 0;
  if (start < 0) {
    ThrowErrno(env, errno, "lseek(image)");
    return env.Undefined();
  }
  // Into a file, with BLAKE3, more than a chunk: in parallel pieces (ParallelCopy); else through
  // the pipeline (whose buffers are then all it allocates).
  const bool parallel = !stream && !zw && hash->blake3() && total > kChunk;
  Pipeline pipe(parallel ? 0 : total);
  if (!pipe.ok()) {
    ThrowErrno(env, ENOMEM, "posix_memalign");
    return env.Undefined();
  }
  MemFd mem(pid, O_RDONLY);
  int step = 0;
  uint64_t zoff = static_cast<uint64_t>(start);
  // Through /proc/PID/mem, not process_vm_readv: its read-only page pins make the kernel unshare
  // every page the process shares copy-on-write (with its parent, its children), so a dump would
  // copy them all in the live process. /proc/PID/mem also reads what PROT_NONE hides (FOLL_FORCE).
  auto readMem = [&mem](uint8_t* dst, uint64_t addr, size_t n) -> int {
    int mfd = mem.get();
    if (mfd < 0 || !FullPread(mfd, dst, n, addr)) return errno ? errno : EIO;
    return 0;
  };
  int err;
  if (parallel) {
    if (mem.get() < 0) err = errno, step = 0;  // opened here, before the threads share it
    else err = ParallelCopy(RunStream(runs), total, readMem, hash->blake3(), out, static_cast<uint64_t>(start), &step);
  } else err = pipe.Run(
      runs, static_cast<uint64_t>(start), readMem,
      [&](Chunk& c) -> int {
        if (!zw) hash->Update(c.buf, c.len);
        return 0;
      },
      [&](Chunk& c) -> int {
        if (zw) return zw->Write(c.buf, c.len, false, out, &zoff, hash);
        if (stream) {
          for (size_t at = 0; at < c.len;) {
            ssize_t w = write(out, c.buf + at, c.len - at);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) return errno ? errno : EIO;
            at += static_cast<size_t>(w);
          }
          return 0;
        }
        return FullPwrite(out, c.buf, c.len, c.off) ? 0 : (errno ? errno : EIO);
      },
      &step);
  if (!err && !stream && lseek(out, zw ? static_cast<off_t>(zoff) : start + static_cast<off_t>(total), SEEK_SET) < 0) err = errno, step = 2;
  if (err) {
    ThrowErrno(env, err, step == 0 ? "read of target memory" : "write(image)", pid);
    return env.Undefined();
  }
  return CopyResult(env, total);
}

// copyHashed(src, offset, length, dst, hash): copies [offset, offset + length) of file src to dst
// (at its offset, which it advances), the bytes going into the running hash `hash` on the way:
// in parallel pieces or through the pipeline, as dumpPages. Returns { bytes }. For
// file contents saved in an image (an open file's, a deleted file's, a memfd's).
Napi::Value CopyHashed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int src = ArgInt(info[0]);
  uint64_t offset = ArgU64(info[1]), length = ArgU64(info[2]);
  int out = ArgInt(info[3]);
  Hash* hash = HashArg(info[4]);
  if (!hash) return env.Undefined();
  if (!length) return CopyResult(env, 0);
  Napi::Float64Array runs = Napi::Float64Array::New(env, 2);
  runs[0] = static_cast<double>(offset);
  runs[1] = static_cast<double>(length);
  off_t start = lseek(out, 0, SEEK_CUR);
  // A socket or a pipe (a page server's connection): written to in order, streamed.
  const bool stream = start < 0 && errno == ESPIPE;
  if (stream) start = 0;
  if (start < 0) {
    ThrowErrno(env, errno, "lseek(image)");
    return env.Undefined();
  }
  const bool parallel = !stream && hash->blake3() && length > kChunk;  // as dumpPages
  Pipeline pipe(parallel ? 0 : length);
  if (!pipe.ok()) {
    ThrowErrno(env, ENOMEM, "posix_memalign");
    return env.Undefined();
  }
  int step = 0;
  auto readFile = [src](uint8_t* dst, uint64_t at, size_t n) -> int {
    for (size_t got = 0; got < n;) {
      ssize_t r = pread(src, dst + got, n - got, static_cast<off_t>(at + got));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return r == 0 ? ENODATA : errno;
      got += static_cast<size_t>(r);
    }
    return 0;
  };
  int err = parallel
                ? ParallelCopy(RunStream(runs), length, readFile, hash->blake3(), out, static_cast<uint64_t>(start), &step)
                : pipe.Run(
      runs, static_cast<uint64_t>(start), readFile,
      [&](Chunk& c) -> int {
        hash->Update(c.buf, c.len);
        return 0;
      },
      [&](Chunk& c) -> int {
        if (!stream) return FullPwrite(out, c.buf, c.len, c.off) ? 0 : (errno ? errno : EIO);
        for (size_t at = 0; at < c.len;) {
          ssize_t w = write(out, c.buf + at, c.len - at);
          if (w < 0 && errno == EINTR) continue;
          if (w <= 0) return errno ? errno : EIO;
          at += static_cast<size_t>(w);
        }
        return 0;
      },
      &step);
  if (!err && !stream && lseek(out, start + static_cast<off_t>(length), SEEK_SET) < 0) err = errno, step = 2;
  if (err) {
    ThrowErrno(env, err, step == 0 ? (err == ENODATA ? "read (the file shrank while being saved)" : "read") : "write(image)");
    return env.Undefined();
  }
  return CopyResult(env, length);
}

// copyRange(src, srcOffset, dst, dstOffset, length): copy_file_range, in the kernel (no copy
// through ckpt; a reflink where the filesystem shares extents), with read/write where the
// kernel will not (across filesystems of some kinds). Returns { bytes }.
Napi::Value CopyRange(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int src = ArgInt(info[0]);
  off_t in = static_cast<off_t>(ArgU64(info[1]));
  int dst = ArgInt(info[2]);
  off_t to = static_cast<off_t>(ArgU64(info[3]));
  uint64_t left = ArgU64(info[4]);
  const uint64_t total = left;
  bool kernel = true;
  std::vector<uint8_t> buf;
  while (left) {
    ssize_t n;
    if (kernel) {
      n = copy_file_range(src, &in, dst, &to, std::min<uint64_t>(left, 1ULL << 30), 0);
      if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
        kernel = false;
        continue;
      }
    } else {
      if (buf.empty()) buf.resize(4 << 20);
      n = pread(src, buf.data(), std::min<uint64_t>(left, buf.size()), in);
      if (n > 0 && !FullPwrite(dst, buf.data(), static_cast<size_t>(n), to)) n = -1;
      if (n > 0) in += n, to += n;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ThrowErrno(env, n == 0 ? ENODATA : errno, "copy_file_range");
      return env.Undefined();
    }
    left -= static_cast<uint64_t>(n);
  }
  return CopyResult(env, total);
}

// A buffer of `bytes` in fresh memory of its own, unmapped with it: in huge pages where the kernel
// has them from half a huge page on (faulting it in 4 KiB pages costs as much as the reads that
// fill it: 10 MiB, 10 ms not 5.5; below, a 2 MiB page zeroed and perhaps compacted for a few
// dozen pages costs more); with `populate`, faulted in now (MADV_POPULATE_WRITE, 5.14; else a
// write to each page). False after throwing when there is no memory for it.
bool FreshBuffer(Napi::Env env, size_t bytes, bool populate, Napi::Buffer<uint8_t>* out) {
  const bool huge = bytes >= kHuge / 2;
  const size_t size = huge ? (bytes + kHuge - 1) & ~(kHuge - 1) : std::max<size_t>((bytes + kPage - 1) & ~(kPage - 1), kPage);
  void* m = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) {
    ThrowErrno(env, errno, "mmap");
    return false;
  }
  if (huge) madvise(m, size, MADV_HUGEPAGE);
  if (populate && madvise(m, size, 23 /* MADV_POPULATE_WRITE */) != 0)
    for (size_t at = 0; at < size; at += kPage) static_cast<volatile uint8_t*>(m)[at] = 0;
  *out = Napi::Buffer<uint8_t>::New(env, static_cast<uint8_t*>(m), bytes, [size](Napi::Env, uint8_t* p) { munmap(p, size); });
  return true;
}

// The runs' bytes of pid's memory into dst, in order: 0 or an errno.
int ReadRuns(long pid, const Napi::Float64Array& runs, uint8_t* dst) {
  MemFd mem(pid, O_RDONLY);
  for (size_t i = 0; i + 1 < runs.ElementLength(); i += 2) {
    uint64_t addr = static_cast<uint64_t>(runs[i]);
    size_t n = static_cast<size_t>(runs[i + 1]);
    int mfd = mem.get();
    if (mfd < 0 || !FullPread(mfd, dst, n, addr)) return errno ? errno : EIO;
    dst += n;
  }
  return 0;
}

// readPages(pid, runs): the runs' bytes, read into one buffer in order. For a --leave-running
// dump's few pages (an increment): read while the process is frozen, written to the image once
// it runs again. Through /proc/PID/mem, as dumpPages, for the same reasons.
Napi::Value ReadPages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long pid = ArgInt(info[0]);
  Napi::Float64Array runs = RunsArg(info[1]);
  const size_t total = static_cast<size_t>(RunsBytes(runs));
  Napi::Buffer<uint8_t> out;
  if (!FreshBuffer(env, total, false, &out)) return env.Undefined();
  if (int err = ReadRuns(pid, runs, out.Data())) {
    ThrowErrno(env, err, "read of target memory", pid);
    return env.Undefined();
  }
  return out;
}

// readPagesInto(pid, runs, buffer) -> bytes: readPages into a buffer of the caller's (allocPages,
// faulted in before the freeze), which must be big enough.
Napi::Value ReadPagesInto(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long pid = ArgInt(info[0]);
  Napi::Float64Array runs = RunsArg(info[1]);
  auto into = info[2].As<Napi::Buffer<uint8_t>>();
  const size_t total = static_cast<size_t>(RunsBytes(runs));
  if (total > into.Length()) {
    ThrowErrno(env, ENOSPC, "readPagesInto: buffer too small");
    return env.Undefined();
  }
  if (int err = ReadRuns(pid, runs, into.Data())) {
    ThrowErrno(env, err, "read of target memory", pid);
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(total));
}

// allocPages(size) -> Buffer: fresh memory already faulted in (in huge pages from 1 MiB on, where
// the kernel has them), for readPagesInto while a process is frozen. Unmapped with the buffer.
Napi::Value AllocPages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Buffer<uint8_t> out;
  if (!FreshBuffer(env, static_cast<size_t>(ArgU64(info[0])), true, &out)) return env.Undefined();
  return out;
}

// Copies a chunk into the target: process_vm_writev, and read-only pages (code, RELRO) through
// /proc/PID/mem, which writes with FOLL_FORCE. 0 or an errno.
int PutTarget(long pid, MemFd& mem, const uint8_t* src, uint64_t addr, size_t n) {
  iovec local{const_cast<uint8_t*>(src), n}, remote{reinterpret_cast<void*>(addr), n};
  ssize_t put = process_vm_writev(pid, &local, 1, &remote, 1, 0);
  if (put < 0) put = 0;
  if (static_cast<size_t>(put) < n) {
    int mfd = mem.get();
    if (mfd < 0 || !FullPwrite(mfd, src + put, n - put, addr + put)) return errno ? errno : EIO;
  }
  return 0;
}

// restorePages(pid, runs, fd, offset, hash): fills the runs from fd starting at offset, the bytes
// read going into the running hash `hash`; returns { bytes }. A run at address 0 (never mapped)
// is blob bytes hashed but not written anywhere: pages a later image of a chain has instead. The
// image range is mapped (no copy into a buffer): one thread copies it into the target while this
// one hashes it (up to kChunk bytes, this one does both). The caller compares the digest with the
// image's before the process runs. (In pieces on every CPU, as dumpPages, 1 GiB took as long:
// 1031 against 935 ms, medians of 5 alternating, runs of 705-1235 ms: the target's fresh memory
// is what bounds it here.)
Napi::Value RestorePages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long pid = ArgInt(info[0]);
  Napi::Float64Array runs = RunsArg(info[1]);
  int in = ArgInt(info[2]);
  uint64_t off = ArgU64(info[3]);
  Hash* hash = HashArg(info[4]);
  if (!hash) return env.Undefined();
  const uint64_t total = RunsBytes(runs);
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
  auto write = [&] {
    // Runs go out in batches: one process_vm_writev for up to kIov runs (an image chain's blob
    // is thousands of scattered pages); a batch it does not write whole goes run by run.
    constexpr size_t kIov = 512;
    constexpr size_t kBatch = 4 << 20;  // bytes per call: the copy is from the mapping, no buffer to keep warm
    std::vector<iovec> local, remote;
    size_t batchBytes = 0;
    auto flush = [&]() {
      if (local.empty() || err) return;
      ssize_t put = process_vm_writev(pid, local.data(), local.size(), remote.data(), remote.size(), 0);
      if (put != static_cast<ssize_t>(batchBytes)) {
        for (size_t k = 0; k < local.size() && !err; k++)
          err = PutTarget(pid, mem, static_cast<const uint8_t*>(local[k].iov_base), reinterpret_cast<uint64_t>(remote[k].iov_base), local[k].iov_len);
      }
      local.clear();
      remote.clear();
      batchBytes = 0;
    };
    const uint8_t* src = base;
    for (size_t r = 0; r + 1 < runs.ElementLength() && !err; r += 2) {
      uint64_t addr = static_cast<uint64_t>(runs[r]), len = static_cast<uint64_t>(runs[r + 1]);
      if (!addr) {
        src += len;
        continue;
      }
      while (len && !err) {
        size_t n = std::min<uint64_t>(len, kBatch);
        local.push_back({const_cast<uint8_t*>(src), n});
        remote.push_back({reinterpret_cast<void*>(addr), n});
        batchBytes += n;
        if (local.size() == kIov || batchBytes >= kBatch) flush();
        src += n;
        addr += n;
        len -= n;
      }
    }
    flush();
  };
  // Up to a chunk, on this thread: a thread's start and join cost more than the copy.
  if (total <= kChunk) {
    write();
    hash->Update(base, total);
  } else {
    std::thread writer(write);
    hash->Update(base, total);
    writer.join();
  }
  munmap(m, total + delta);
  if (err) {
    ThrowErrno(env, err, "write of target memory", pid);
    return env.Undefined();
  }
  return CopyResult(env, total);
}

// restorePagesZstd(pid, runs, reader, hash): restorePages for a compressed blob: the runs' bytes
// come from the decompression stream `reader` (zstdReader), which hashes the compressed bytes it
// reads into `hash`; a run at address 0 is decompressed and dropped.
Napi::Value RestorePagesZstd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long pid = ArgInt(info[0]);
  Napi::Float64Array runs = RunsArg(info[1]);
  ZstdReader* r = ZstdReaderArg(info[2]);
  Hash* hash = HashArg(info[3]);
  if (!r || !hash) {
    if (!r) Napi::TypeError::New(env, "expected a zstd reader (from zstdReader)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::vector<uint8_t> buf(kChunk);
  MemFd mem(pid, O_RDWR);
  uint64_t total = 0;
  int err = 0;
  for (size_t k = 0; k + 1 < runs.ElementLength() && !err; k += 2) {
    uint64_t addr = static_cast<uint64_t>(runs[k]), len = static_cast<uint64_t>(runs[k + 1]);
    while (len && !err) {
      size_t n = std::min<uint64_t>(len, buf.size());
      err = r->Read(addr ? buf.data() : nullptr, n, hash);
      if (!err && addr) err = PutTarget(pid, mem, buf.data(), addr, n);
      if (addr) addr += n;
      len -= n;
      total += n;
    }
  }
  if (err) {
    ThrowErrno(env, err, err == ENODATA || err == EIO ? "zstd decompression of the image pages" : "write of target memory", pid);
    return env.Undefined();
  }
  return CopyResult(env, total);
}

// pinProc(pid): /proc/PID/mem and pagemap are kept open for pid from its next use on (see
// Pinned), until unpinProc(pid). For processes stopped under ckpt only.
Napi::Value PinProc(const Napi::CallbackInfo& info) {
  long pid = ArgInt(info[0]);
  std::lock_guard<std::mutex> lk(pinnedMu);
  pinned.emplace(pid, Pinned{});
  return info.Env().Undefined();
}

// unpinProc(pid): closes what pinProc kept open (nothing when pid was not pinned).
Napi::Value UnpinProc(const Napi::CallbackInfo& info) {
  long pid = ArgInt(info[0]);
  std::lock_guard<std::mutex> lk(pinnedMu);
  auto it = pinned.find(pid);
  if (it == pinned.end()) return info.Env().Undefined();
  if (it->second.mem >= 0) close(it->second.mem);
  if (it->second.pagemap >= 0) close(it->second.pagemap);
  pinned.erase(it);
  return info.Env().Undefined();
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

// ---- write tracking: userfaultfd write-protect, asynchronous (UFFD_FEATURE_WP_ASYNC) ----
// The userfaultfd is made inside the target's address space (by a task sharing it) and handed
// to ckpt; these calls work on it from here: the kernel applies them to the target's mm. Writes
// to a protected page never wait for anyone: the kernel clears the page's uffd-wp bit and goes on,
// and /proc/PID/pagemap shows the bit (PM_UFFD_WP) on pages not written since.

// The UFFDIO_API handshake on fd asking for `features`; throws the errno, naming `what`.
Napi::Value UffdHandshake(const Napi::CallbackInfo& info, uint64_t features, const char* what) {
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = features;
  if (ioctl(ArgInt(info[0]), UFFDIO_API, &api) < 0) ThrowErrno(info.Env(), errno, what);
  return info.Env().Undefined();
}

// UFFDIO_REGISTER of [start, start + len) (info[1], info[2]) on fd (info[0]) in `mode`: 0 or an errno.
Napi::Value UffdRegister(const Napi::CallbackInfo& info, uint64_t mode) {
  uffdio_register reg{};
  reg.range.start = ArgU64(info[1]);
  reg.range.len = ArgU64(info[2]);
  reg.mode = mode;
  int r = ioctl(ArgInt(info[0]), UFFDIO_REGISTER, &reg) < 0 ? errno : 0;
  return Napi::Number::New(info.Env(), r);
}

// uffdApi(fd): the UFFDIO_API handshake asking for asynchronous write-protect. Throws (EINVAL:
// the kernel has no WP_ASYNC).
Napi::Value UffdApi(const Napi::CallbackInfo& info) { return UffdHandshake(info, UFFD_FEATURE_WP_ASYNC, "ioctl(UFFDIO_API, WP_ASYNC)"); }

// uffdRegisterWp(fd, start, len) -> 0 or an errno: registers the range for write-protect
// tracking (EBUSY: registered with another userfaultfd; EINVAL: memory it cannot track; ESRCH:
// the address space is gone).
Napi::Value UffdRegisterWp(const Napi::CallbackInfo& info) { return UffdRegister(info, UFFDIO_REGISTER_MODE_WP); }

// uffdWriteProtect(fd, start, len): write-protects every page of the range (a registered area):
// from now on, a page written shows without PM_UFFD_WP.
Napi::Value UffdWriteProtect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uffdio_writeprotect wp{};
  wp.range.start = ArgU64(info[1]);
  wp.range.len = ArgU64(info[2]);
  wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
  for (;;) {
    if (ioctl(ArgInt(info[0]), UFFDIO_WRITEPROTECT, &wp) == 0) break;
    if (errno == EAGAIN || errno == EINTR) continue;
    ThrowErrno(env, errno, "ioctl(UFFDIO_WRITEPROTECT)");
    break;
  }
  return env.Undefined();
}

// ---- lazy restore: missing-page faults served by ckpt-lazy (src/lazy.c) ----

// The events a lazy restore follows: those that change the address space (fork, mremap,
// MADV_DONTNEED/REMOVE, munmap), so that ckpt-lazy never fills a page the process dropped or moved.
constexpr uint64_t kLazyEvents = UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP;

// uffdApiLazy(fd): the UFFDIO_API handshake of a lazy restore (missing-page faults and
// kLazyEvents). Throws the errno.
Napi::Value UffdApiLazy(const Napi::CallbackInfo& info) { return UffdHandshake(info, kLazyEvents, "ioctl(UFFDIO_API, EVENT_FORK|REMAP|REMOVE|UNMAP)"); }

// uffdRegisterMissing(fd, start, len) -> 0 or an errno: registers the range for missing-page faults.
Napi::Value UffdRegisterMissing(const Napi::CallbackInfo& info) { return UffdRegister(info, UFFDIO_REGISTER_MODE_MISSING); }

// uffdLazyProbe() -> true, or why not: a userfaultfd of our own with the events restore --lazy
// follows (fork, remap, remove, unmap) and missing-page registration of anonymous memory.
Napi::Value UffdLazyProbe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (fd < 0) return Napi::String::New(env, std::string("userfaultfd: ") + strerror(errno));
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = kLazyEvents;
  std::string why;
  if (ioctl(fd, UFFDIO_API, &api) < 0) why = std::string("no fork/remap/remove/unmap events: ") + strerror(errno);
  void* area = why.empty() ? mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) : MAP_FAILED;
  if (why.empty() && area == MAP_FAILED) why = std::string("mmap: ") + strerror(errno);
  if (why.empty()) {
    uffdio_register reg{};
    reg.range.start = reinterpret_cast<uint64_t>(area);
    reg.range.len = 4096;
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0) why = std::string("UFFDIO_REGISTER (missing): ") + strerror(errno);
  }
  // Closed first: with the unmap event asked for, munmap of a registered area would wait for
  // someone to read that event.
  close(fd);
  if (area != MAP_FAILED) munmap(area, 4096);
  if (!why.empty()) return Napi::String::New(env, why);
  return Napi::Boolean::New(env, true);
}

// uffdProbe() -> true, or why not: a userfaultfd of our own with asynchronous write-protect
// (what --track-mem needs), and PAGEMAP_SCAN on our own pagemap.
Napi::Value UffdProbe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | 1 /* UFFD_USER_MODE_ONLY */));
  if (fd < 0) return Napi::String::New(env, std::string("userfaultfd: ") + strerror(errno));
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = UFFD_FEATURE_WP_ASYNC;
  int r = ioctl(fd, UFFDIO_API, &api);
  int err = errno;
  close(fd);
  if (r < 0) return Napi::String::New(env, std::string("no asynchronous write-protect (UFFD_FEATURE_WP_ASYNC): ") + strerror(err));
  int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  static char page[4096] __attribute__((aligned(4096)));
  page[0] = 1;
  PmScanArg a{};
  a.size = sizeof(a);
  a.start = reinterpret_cast<uintptr_t>(page);
  a.end = a.start + sizeof page;
  a.category_anyof_mask = kIsPresent;
  a.return_mask = kIsPresent;
  r = pm < 0 ? -1 : static_cast<int>(ioctl(pm, kPagemapScan, &a));
  err = errno;
  if (pm >= 0) close(pm);
  if (r < 0) return Napi::String::New(env, std::string("no PAGEMAP_SCAN: ") + strerror(err));
  return Napi::Boolean::New(env, true);
}

}  // namespace

// Run sets: sorted, non-overlapping flat runs [addr, len, ...] as doubles (the memory plugin's
// ranges.ts does the same in JS, which it keeps for short lists). Each run pushed merges with the
// last one where they touch or overlap.
void PushRun(std::vector<double>& out, double addr, double len) {
  size_t n = out.size();
  if (n && out[n - 2] + out[n - 1] >= addr)
    out[n - 1] = std::max(out[n - 1], addr + len - out[n - 2]);
  else
    out.push_back(addr), out.push_back(len);
}

// runsOp(a, b, op) -> Float64Array: op 0 the pages in both, 1 those of a not in b, 2 those of
// either; 3 a blob's runs a with what is not in b skipped (address 0).
Napi::Value RunsOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Float64Array fa = RunsArg(info[0]), fb = RunsArg(info[1]);
  const double *a = fa.Data(), *b = fb.Data();
  const size_t na = fa.ElementLength() & ~size_t{1}, nb = fb.ElementLength() & ~size_t{1};
  int op = ArgInt(info[2]);
  std::vector<double> out;
  out.reserve(std::max(na, nb));
  if (op == 0) {
    for (size_t i = 0, j = 0; i < na && j < nb;) {
      double aEnd = a[i] + a[i + 1], bEnd = b[j] + b[j + 1];
      double start = std::max(a[i], b[j]), end = std::min(aEnd, bEnd);
      if (start < end) PushRun(out, start, end - start);
      if (aEnd <= bEnd)
        i += 2;
      else
        j += 2;
    }
  } else if (op == 1) {
    size_t j = 0;
    for (size_t i = 0; i < na; i += 2) {
      double at = a[i], end = at + a[i + 1];
      while (j < nb && b[j] + b[j + 1] <= at) j += 2;
      for (size_t k = j; k < nb && b[k] < end; k += 2) {
        if (b[k] > at) PushRun(out, at, b[k] - at);
        at = std::max(at, b[k] + b[k + 1]);
      }
      if (at < end) PushRun(out, at, end - at);
    }
  } else if (op == 2) {
    for (size_t i = 0, j = 0; i < na || j < nb;) {
      if (j >= nb || (i < na && a[i] <= b[j])) {
        PushRun(out, a[i], a[i + 1]);
        i += 2;
      } else {
        PushRun(out, b[j], b[j + 1]);
        j += 2;
      }
    }
  } else {
    // a: a blob's runs in blob order; each piece of it in b (sorted) stays at its address, the
    // rest becomes runs at address 0 (bytes skipped), neighbouring skips merged.
    auto skip = [&out](double len) {
      size_t n = out.size();
      if (n && out[n - 2] == 0) out[n - 1] += len;
      else out.push_back(0), out.push_back(len);
    };
    for (size_t i = 0; i < na; i += 2) {
      double at = a[i], end = at + a[i + 1];
      // The first run of b that ends after `at`.
      size_t lo = 0, hi = nb / 2;
      while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (b[2 * mid] + b[2 * mid + 1] <= at) lo = mid + 1;
        else hi = mid;
      }
      for (size_t k = 2 * lo; k < nb && b[k] < end; k += 2) {
        double s = std::max(at, b[k]), e = std::min(end, b[k] + b[k + 1]);
        if (s > at) skip(s - at);
        out.push_back(s), out.push_back(e - s);
        at = e;
      }
      if (at < end) skip(end - at);
    }
  }
  Napi::Float64Array r = Napi::Float64Array::New(env, out.size());
  if (!out.empty()) memcpy(r.Data(), out.data(), out.size() * sizeof(double));
  return r;
}

Napi::Float64Array FromVector(Napi::Env env, const std::vector<double>& v) {
  Napi::Float64Array r = Napi::Float64Array::New(env, v.size());
  if (!v.empty()) memcpy(r.Data(), v.data(), v.size() * sizeof(double));
  return r;
}

// planRuns(runs, ranges, id) -> { lazy, eagerRuns, eagerPieces, inRanges, lazyBytes, eagerBytes }:
// a blob's runs (blob order; address 0: bytes skipped) split between the lazy ranges (sorted
// [start, end) pairs, apart) and the rest. lazy: [addr, len, blob offset, id] quadruples;
// eagerRuns: [addr, len] pairs, in pieces contiguous in the blob, eagerPieces: [blob offset,
// number of runs] per piece; inRanges: the indices of the ranges the lazy runs fall in.
Napi::Value PlanRuns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Float64Array fr = RunsArg(info[0]), fg = RunsArg(info[1]);
  const double *runs = fr.Data(), *ranges = fg.Data();
  const size_t nr = fr.ElementLength() & ~size_t{1}, ng = fg.ElementLength() / 2;
  const double id = info[2].As<Napi::Number>().DoubleValue();
  std::vector<double> lazy, eagerRuns, eagerPieces, inRanges;
  std::vector<bool> seen(ng);
  double off = 0, eagerEnd = -1, lazyBytes = 0, eagerBytes = 0;
  lazy.reserve(2 * nr);
  auto eager = [&](double addr, double len, double at) {
    if (!eagerPieces.empty() && eagerEnd == at) eagerPieces.back() += 1;
    else eagerPieces.push_back(at), eagerPieces.push_back(1);
    eagerRuns.push_back(addr), eagerRuns.push_back(len);
    eagerEnd = at + len;
    eagerBytes += len;
  };
  for (size_t i = 0; i < nr; i += 2) {
    const double addr = runs[i], len = runs[i + 1];
    if (addr) {
      double at = addr;
      const double end = addr + len;
      size_t lo = 0, hi = ng;
      while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ranges[2 * mid + 1] <= at) lo = mid + 1;
        else hi = mid;
      }
      for (size_t k = lo; k < ng && ranges[2 * k] < end; k++) {
        const double s = std::max(at, ranges[2 * k]), e = std::min(end, ranges[2 * k + 1]);
        if (s > at) eager(at, s - at, off + (at - addr));
        lazy.push_back(s), lazy.push_back(e - s), lazy.push_back(off + (s - addr)), lazy.push_back(id);
        if (!seen[k]) seen[k] = true, inRanges.push_back(static_cast<double>(k));
        lazyBytes += e - s;
        at = e;
      }
      if (at < end) eager(at, end - at, off + (at - addr));
    }
    off += len;
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("lazy", FromVector(env, lazy));
  o.Set("eagerRuns", FromVector(env, eagerRuns));
  o.Set("eagerPieces", FromVector(env, eagerPieces));
  o.Set("inRanges", FromVector(env, inRanges));
  o.Set("lazyBytes", Napi::Number::New(env, lazyBytes));
  o.Set("eagerBytes", Napi::Number::New(env, eagerBytes));
  return o;
}

// An increment's blob as pieces of two buffers (the memory plugin's precopy.ts says what it is):
// the bytes of `runs` (sorted flat runs, blob order), those of `used` from `pages` (the bytes of
// `reset`'s runs, in order, read before the freeze), the others from `fresh` (read while frozen,
// in order); pieces that follow each other in their buffer joined. nullptr, or why not: `fresh`
// holds fewer or more bytes than that, or `used` lies outside `reset`.
const char* AssemblePieces(const Napi::CallbackInfo& info, std::vector<iovec>& out) {
  Napi::Float64Array fr = RunsArg(info[0]), fu = RunsArg(info[1]), fk = RunsArg(info[2]);
  Napi::Buffer<uint8_t> pages = info[3].As<Napi::Buffer<uint8_t>>(), fresh = info[4].As<Napi::Buffer<uint8_t>>();
  const double *runs = fr.Data(), *used = fu.Data(), *read = fk.Data();
  const size_t nr = fr.ElementLength() & ~size_t{1}, nu = fu.ElementLength() & ~size_t{1}, nk = fk.ElementLength() & ~size_t{1};
  size_t f = 0, j = 0, k = 0;
  double kOff = 0;
  auto piece = [&out](uint8_t* p, size_t len) {
    if (!out.empty() && static_cast<uint8_t*>(out.back().iov_base) + out.back().iov_len == p) out.back().iov_len += len;
    else out.push_back({p, len});
  };
  for (size_t i = 0; i < nr; i += 2) {
    double a = runs[i];
    const double end = a + runs[i + 1];
    while (a < end) {
      while (j < nu && used[j] + used[j + 1] <= a) j += 2;
      if (j < nu && used[j] <= a) {
        while (k < nk && read[k] + read[k + 1] <= a) kOff += read[k + 1], k += 2;
        if (k >= nk || read[k] > a) return "a page taken from the pre-copy that it did not read";
        const double e = std::min({end, used[j] + used[j + 1], read[k] + read[k + 1]});
        const size_t from = static_cast<size_t>(kOff + (a - read[k])), len = static_cast<size_t>(e - a);
        if (from + len > pages.Length()) return "fewer pages read before the freeze than it holds";
        piece(pages.Data() + from, len);
        a = e;
      } else {
        const double e = j < nu ? std::min(end, used[j]) : end;
        const size_t len = static_cast<size_t>(e - a);
        if (f + len > fresh.Length()) return "fewer pages read while frozen than the image holds";
        piece(fresh.Data() + f, len);
        f += len;
        a = e;
      }
    }
  }
  return f == fresh.Length() ? nullptr : "more pages read while frozen than the image holds";
}

// assembleWrite(runs, used, reset, pages, fresh, fd, hash) -> bytes: the blob of AssemblePieces
// hashed and written to fd (at its offset, or streamed to a socket) piece by piece, never put
// together in memory: a copy of megabytes into fresh memory costs its page faults first (10-13
// ms for 13 MB here, frozen in a migration's final round).
Napi::Value AssembleWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<iovec> pieces;
  if (const char* why = AssemblePieces(info, pieces)) {
    Napi::Error::New(env, std::string("pre-copy: ") + why).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = ArgInt(info[5]);
  Hash* hash = HashArg(info[6]);
  if (!hash) return env.Undefined();
  size_t total = 0;
  for (const iovec& v : pieces) {
    hash->Update(static_cast<const uint8_t*>(v.iov_base), v.iov_len);
    total += v.iov_len;
  }
  for (size_t i = 0; i < pieces.size();) {
    const int n = static_cast<int>(std::min<size_t>(pieces.size() - i, IOV_MAX));
    ssize_t w = writev(fd, &pieces[i], n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      ThrowErrno(env, w < 0 ? errno : EIO, "writev(image)");
      return env.Undefined();
    }
    // A short write (a socket): the pieces written go, the one cut short goes on from the cut.
    for (size_t left = static_cast<size_t>(w); left;) {
      if (left >= pieces[i].iov_len) {
        left -= pieces[i].iov_len;
        i++;
      } else {
        pieces[i].iov_base = static_cast<uint8_t*>(pieces[i].iov_base) + left;
        pieces[i].iov_len -= left;
        left = 0;
      }
    }
  }
  return Napi::Number::New(env, static_cast<double>(total));
}

void InitMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("pagemapRuns", Napi::Function::New(env, PagemapRuns));
  exports.Set("pagemapEntries", Napi::Function::New(env, PagemapEntries));
  exports.Set("pagemapEntriesAhead", Napi::Function::New(env, PagemapEntriesAhead));
  exports.Set("pagemapEntriesTake", Napi::Function::New(env, PagemapEntriesTake));
  exports.Set("pagemapEntriesDrop", Napi::Function::New(env, PagemapEntriesDrop));
  exports.Set("pagemapScan", Napi::Function::New(env, PagemapScan));
  exports.Set("pagemapScanAhead", Napi::Function::New(env, PagemapScanAhead));
  exports.Set("pagemapScanJoin", Napi::Function::New(env, PagemapScanJoin));
  exports.Set("runsOp", Napi::Function::New(env, RunsOp));
  exports.Set("planRuns", Napi::Function::New(env, PlanRuns));
  exports.Set("assembleWrite", Napi::Function::New(env, AssembleWrite));
  exports.Set("readPages", Napi::Function::New(env, ReadPages));
  exports.Set("dumpPages", Napi::Function::New(env, DumpPages));
  exports.Set("restorePages", Napi::Function::New(env, RestorePages));
  exports.Set("restorePagesZstd", Napi::Function::New(env, RestorePagesZstd));
  exports.Set("readMem", Napi::Function::New(env, ReadMem));
  exports.Set("readPagesInto", Napi::Function::New(env, ReadPagesInto));
  exports.Set("allocPages", Napi::Function::New(env, AllocPages));
  exports.Set("copyHashed", Napi::Function::New(env, CopyHashed));
  exports.Set("copyRange", Napi::Function::New(env, CopyRange));
  exports.Set("pinProc", Napi::Function::New(env, PinProc));
  exports.Set("unpinProc", Napi::Function::New(env, UnpinProc));
  exports.Set("uffdApi", Napi::Function::New(env, UffdApi));
  exports.Set("uffdProbe", Napi::Function::New(env, UffdProbe));
  exports.Set("uffdLazyProbe", Napi::Function::New(env, UffdLazyProbe));
  exports.Set("uffdRegisterWp", Napi::Function::New(env, UffdRegisterWp));
  exports.Set("uffdWriteProtect", Napi::Function::New(env, UffdWriteProtect));
  exports.Set("uffdApiLazy", Napi::Function::New(env, UffdApiLazy));
  exports.Set("uffdRegisterMissing", Napi::Function::New(env, UffdRegisterMissing));
  exports.Set("writeMem", Napi::Function::New(env, WriteMem));
}

}  // namespace ckpt
