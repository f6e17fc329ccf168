/* ckpt-lazy: serves the memory of processes restored with `ckpt restore --lazy` (post-copy).
 *
 * The restore maps every area, writes the pages it fills eagerly, then registers the lazy areas
 * (private anonymous memory whose pages come from uncompressed blobs) with a userfaultfd of the
 * process's address space in MISSING mode, and hands that userfaultfd, a pidfd of the process,
 * the blobs and the plan (which address is at which offset of which blob) to this helper, one per
 * restore. From then on:
 *  - a fault on a planned page is served first: the page and the planned pages after it, as
 *    many as the target's window (1 page, doubled up to WINDOW for each fault where the last
 *    one's pages end, back to 1 elsewhere: a process going through its memory in order gets it
 *    in big pieces, one writing here and there does not wait for pages it will not touch), read
 *    from the blob (pread) and put in with UFFDIO_COPY; a fault anywhere else in a registered
 *    area gets a zero page (UFFDIO_ZEROPAGE): memory that was never saved, or that the process
 *    dropped (MADV_DONTNEED) since;
 *  - in the background (once the restore is committed) each blob is read start to end (CHUNK at a time), hashed (BLAKE3), and the
 *    planned pages it holds that are still missing are copied in (blob order is address order
 *    within one image); faults that come meanwhile are served between the parts of each step;
 *  - EVENT_REMOVE / EVENT_UNMAP: the range's planned pages are dropped (never filled later: the
 *    process reads zeros there, or whatever it maps there next); EVENT_REMAP: they move with the
 *    range; EVENT_FORK: the child's address space is a new target, its own userfaultfd, with the
 *    parent's missing pages still planned;
 *  - EAGAIN from UFFDIO_COPY (the address space is changing: an event waits) is retried once the
 *    events are read; ENOENT likewise, then the range counts as gone; EEXIST: already there.
 *
 * Digests, checked in the background, before nothing: the whole blob against the signed
 * manifest's digest; the bytes ckpt wrote eagerly from the blob (their BLAKE3 in blob order,
 * sent with the blob) against the same bytes read here; and each page served to a fault before
 * the background pass reached it against the page the pass reads (a per-page digest). Any
 * mismatch: every target is killed (SIGKILL), before it can run on with a page the image does
 * not vouch for for longer than the pass takes.
 *
 * Never zeros where data was: a watchdog process (forked at start) holds a copy of every
 * userfaultfd and every target's pidfd. A userfaultfd held open keeps its areas registered, so
 * if this helper dies a fault waits instead of reading zeros; the watchdog sees its socket close
 * without 'F' (finished) and kills the targets and their descendants. Once every blob is verified
 * and every planned page is in (or gone), the helper tells the watchdog 'F' and closes the
 * userfaultfds: the kernel unregisters the areas, and what was never saved reads as zeros, as
 * anonymous memory does.
 *
 * fd 0: a SOCK_SEQPACKET socket to ckpt. At start the helper forks (its first process exits, so
 * nobody has to reap it), forks the watchdog, and sends both pids (int32 each, one message). Messages (native order):
 *   'B' u32 id, u64 size, u8[32] digest, u8[32] eager digest     fd: the blob (read-only)
 *   'E' u32 blob, u32 n, n x (f64 off, f64 len)     bytes of the blob ckpt wrote eagerly
 *   'T' i32 pid                                     fds: pidfd, and the userfaultfd if it has lazy areas
 *   'P' u32 n                                       fd: a memfd of n x (f64 addr, f64 len, f64 off,
 *                                                   f64 blob): the planned runs of the last target
 * The lists are doubles, as ckpt holds them (integers below 2^53): it writes its arrays' bytes as
 * they are, with no conversion per value. The plan goes in a memfd, not in messages: a chain of
 * images plans tens of thousands of runs (1.4 MB), which through the channel took 20-odd
 * messages and waits for room in it.
 *   'R'                                             the last target is whole: serve it; reply i32 0
 *   'C'                                             the restore succeeded: go on once the channel closes
 * The channel closing before 'C' (the restore failed, or ckpt died): the targets are killed and
 * the helper exits.
 */
#define _GNU_SOURCE
#include "scm.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "blake3c.h"

#define PAGE 4096ULL
#define WINDOW 64
#define CHUNK (1u << 20)
/* The pass hashes a chunk this much at a time, serving faults in between. */
#define HASH_STEP (256u << 10)
#define MAX_FDS 2

struct blob {
  int fd;
  uint64_t size;
  uint8_t digest[32], eager_digest[32];
  /* Bytes written eagerly by ckpt: sorted (off, len) pairs. */
  uint64_t *eager;
  size_t neager, eager_cap;
  int ready; /* a target that reads it is being served */
  uint64_t pos; /* the background pass: bytes read and hashed */
  ckpt_blake3 *hash, *ehash;
  size_t eidx;
  /* Pages served to a fault ahead of the pass: a bit, and 16 bytes of the page's BLAKE3. */
  uint64_t *served;
  uint8_t (*served_digest)[16];
};

struct seg {
  uint64_t addr, len, off;
  uint32_t blob;
  uint64_t *pending; /* a bit per page: still to be filled */
};

struct target {
  int uffd, pidfd;
  pid_t pid;
  struct seg *segs;
  size_t nsegs, cap;
  uint64_t pending; /* pages */
  int serving;
  int gone; /* its address space is gone (ESRCH) */
  uint64_t next_fault; /* where the pages its last fault got end */
  uint64_t window;     /* pages the next fault gets, at most */
};

static struct blob *blobs;
static size_t nblobs;
static struct target *targets;
static size_t ntargets;
static int wd_sock = -1;
static int committed;

struct fault {
  size_t t;
  uint64_t addr;
};
static struct fault *faults;
static size_t nfaults, faults_cap;

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) _exit(3);
  return q;
}

static void kill_targets(void) {
  for (size_t i = 0; i < ntargets; i++)
    if (targets[i].pidfd >= 0) syscall(SYS_pidfd_send_signal, targets[i].pidfd, SIGKILL, NULL, 0);
}

/* The restore notes this helper at /run/ckpt/lazy/PID (memory plugin, LAZY_DIR) for dumps to
 * find; it goes when the helper ends (a note left by a killed helper goes at the next look). */
static pid_t helper_pid;
static void unnote(void) {
  if (getpid() != helper_pid) return;
  char note[64];
  snprintf(note, sizeof note, "/run/ckpt/lazy/%d", (int)helper_pid);
  unlink(note);
}

/* Something is wrong (a digest, the watchdog gone): the targets go, and so does this helper
 * (the watchdog, seeing no 'F', kills their descendants too). */
static void fail(void) {
  kill_targets();
  unnote();
  _exit(1);
}

/* ---- messages ---- */

static int send_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
  union {
    struct cmsghdr h;
    char space[CMSG_SPACE(MAX_FDS * sizeof(int))];
  } ctl;
  struct iovec iov = {(void *)buf, len};
  struct msghdr m = {0};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  if (nfds) {
    memset(&ctl, 0, sizeof ctl);
    m.msg_control = ctl.space;
    m.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
  }
  return sendmsg(sock, &m, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
}

/* ---- the watchdog ---- */

/* Adds to `pids` every process whose parent is in it (the targets' descendants), then kills them all. */
static void kill_tree(pid_t *pids, size_t n, size_t cap) {
  for (int round = 0; round < 16; round++) {
    size_t before = n;
    DIR *d = opendir("/proc");
    if (!d) break;
    struct dirent *e;
    while ((e = readdir(d)) && n < cap) {
      char path[64], buf[512];
      pid_t pid = (pid_t)atoi(e->d_name);
      if (pid <= 0) continue;
      snprintf(path, sizeof path, "/proc/%d/stat", pid);
      int fd = open(path, O_RDONLY | O_CLOEXEC);
      if (fd < 0) continue;
      ssize_t k = read(fd, buf, sizeof buf - 1);
      close(fd);
      if (k <= 0) continue;
      buf[k] = 0;
      char *p = strrchr(buf, ')');
      if (!p) continue;
      pid_t ppid = 0;
      if (sscanf(p + 2, "%*c %d", &ppid) != 1) continue;
      int known = 0, parent = 0;
      for (size_t i = 0; i < n; i++) {
        if (pids[i] == pid) known = 1;
        if (pids[i] == ppid) parent = 1;
      }
      if (parent && !known) pids[n++] = pid;
    }
    closedir(d);
    if (n == before) break;
  }
  for (size_t i = 0; i < n; i++) kill(pids[i], SIGKILL);
}

static void watchdog(int sock) {
  prctl(PR_SET_NAME, "ckpt-lazy-wd");
  size_t cap = 4096, n = 0;
  pid_t *pids = calloc(cap, sizeof *pids);
  int *pidfds = calloc(cap, sizeof *pidfds);
  if (!pids || !pidfds) _exit(3);
  for (;;) {
    char buf[16];
    int fds[MAX_FDS];
    ssize_t k = recv_with_fds(sock, buf, sizeof buf, fds, MAX_FDS);
    if (k <= 0) break;
    if (buf[0] == 'F') _exit(0);
    /* 'T' i32 pid, fds [pidfd, uffd]; 'U' fds [uffd]: the userfaultfds are held, never read. */
    if (buf[0] == 'T' && k >= 5 && n < cap && fds[0] >= 0) {
      memcpy(&pids[n], buf + 1, 4);
      pidfds[n++] = fds[0];
    }
  }
  /* The helper is gone and did not finish: no target may read a page it did not get. The
   * targets still alive (their pidfds say: the pid of a dead one may be another process's by
   * now) are stopped, then killed with their descendants. */
  size_t live = 0;
  for (size_t i = 0; i < n; i++)
    if (syscall(SYS_pidfd_send_signal, pidfds[i], 0, NULL, 0) == 0) {
      pids[live] = pids[i];
      pidfds[live++] = pidfds[i];
    }
  for (size_t i = 0; i < live; i++) syscall(SYS_pidfd_send_signal, pidfds[i], SIGSTOP, NULL, 0);
  kill_tree(pids, live, cap);
  for (size_t i = 0; i < live; i++) syscall(SYS_pidfd_send_signal, pidfds[i], SIGKILL, NULL, 0);
  _exit(0);
}

/* ---- the plan ---- */

static inline int bit(const uint64_t *b, uint64_t i) { return (b[i >> 6] >> (i & 63)) & 1; }
static inline void clear_bit(uint64_t *b, uint64_t i) { b[i >> 6] &= ~(1ULL << (i & 63)); }

/* The first n bits of b set. */
static void bits_fill(uint64_t *b, uint64_t n) {
  for (uint64_t i = 0; i < n / 64; i++) b[i] = ~0ULL;
  if (n % 64) b[n / 64] = (1ULL << (n % 64)) - 1;
}

static uint64_t *bits_new(uint64_t n) {
  uint64_t words = (n + 63) / 64;
  uint64_t *b = calloc(words ? words : 1, 8);
  if (!b) _exit(3);
  return b;
}

/* A segment of t's plan; `pending`: its pages' bits (set: still to come). */
static void add_seg(struct target *t, uint64_t addr, uint64_t len, uint64_t off, uint32_t blob, uint64_t *pending) {
  if (t->nsegs == t->cap) {
    t->cap = t->cap ? 2 * t->cap : 64;
    t->segs = xrealloc(t->segs, t->cap * sizeof *t->segs);
  }
  struct seg *s = &t->segs[t->nsegs++];
  s->addr = addr;
  s->len = len;
  s->off = off;
  s->blob = blob;
  s->pending = pending;
}

static int seg_cmp(const void *a, const void *b) {
  const struct seg *x = a, *y = b;
  return x->addr < y->addr ? -1 : x->addr > y->addr;
}

/*
 * Sorts t's segments by address. A plan arrives as one sorted list per blob (a chain of images:
 * a few lists of thousands of runs each): those are merged, pairwise, as they come; a plan made
 * otherwise is sorted by qsort.
 */
static void sort_segs(struct target *t) {
  size_t n = t->nsegs, runs = 1;
  for (size_t i = 1; i < n; i++) runs += t->segs[i].addr < t->segs[i - 1].addr;
  if (runs == 1) return;
  if (runs > 64) {
    qsort(t->segs, n, sizeof *t->segs, seg_cmp);
    return;
  }
  struct seg *a = t->segs, *b = malloc(n * sizeof *b);
  if (!b) _exit(3);
  while (runs > 1) {
    runs = 0;
    for (size_t i = 0, out = 0; i < n; runs++) {
      /* Two runs in order, [i, m) and [m, e), merged into b. */
      size_t m = i + 1;
      while (m < n && a[m].addr >= a[m - 1].addr) m++;
      size_t e = m < n ? m + 1 : m;
      while (e < n && a[e].addr >= a[e - 1].addr) e++;
      size_t x = i, y = m;
      while (x < m && y < e) b[out++] = a[y].addr < a[x].addr ? a[y++] : a[x++];
      while (x < m) b[out++] = a[x++];
      while (y < e) b[out++] = a[y++];
      i = e;
    }
    struct seg *swap = a;
    a = b;
    b = swap;
  }
  if (a != t->segs) {
    memcpy(t->segs, a, n * sizeof *a);
    free(a);
  } else {
    free(b);
  }
}

/* The segment holding addr, or NULL (segments sorted by address, not overlapping). */
static struct seg *seg_at(struct target *t, uint64_t addr) {
  size_t lo = 0, hi = t->nsegs;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    struct seg *s = &t->segs[mid];
    if (addr < s->addr) hi = mid;
    else if (addr >= s->addr + s->len) lo = mid + 1;
    else return s;
  }
  return NULL;
}

/* Pages of [start, end) are no longer to be filled. */
static void drop_range(struct target *t, uint64_t start, uint64_t end) {
  for (size_t i = 0; i < t->nsegs; i++) {
    struct seg *s = &t->segs[i];
    uint64_t a = s->addr > start ? s->addr : start, b = s->addr + s->len < end ? s->addr + s->len : end;
    for (uint64_t p = a; p < b; p += PAGE) {
      uint64_t k = (p - s->addr) / PAGE;
      if (bit(s->pending, k)) {
        clear_bit(s->pending, k);
        t->pending--;
      }
    }
  }
}

/* Splits the segment that straddles addr so that a segment starts there. */
static void split_at(struct target *t, uint64_t addr) {
  struct seg *s = seg_at(t, addr);
  if (!s || s->addr == addr) return;
  uint64_t head = addr - s->addr, pages = s->len / PAGE, hp = head / PAGE;
  uint64_t *tail = bits_new(pages - hp);
  for (uint64_t k = hp; k < pages; k++)
    if (bit(s->pending, k)) tail[(k - hp) >> 6] |= 1ULL << ((k - hp) & 63);
  uint64_t slen = s->len, soff = s->off;
  uint32_t sblob = s->blob;
  s->len = head;
  add_seg(t, addr, slen - head, soff + head, sblob, tail);
  qsort(t->segs, t->nsegs, sizeof *t->segs, seg_cmp);
}

/* mremap moved [from, from+len) to `to`: the planned pages go with it. */
static void remap(struct target *t, uint64_t from, uint64_t to, uint64_t len) {
  drop_range(t, to, to + len);
  split_at(t, from);
  split_at(t, from + len);
  for (size_t i = 0; i < t->nsegs; i++) {
    struct seg *s = &t->segs[i];
    if (s->addr >= from && s->addr + s->len <= from + len) s->addr = s->addr - from + to;
  }
  qsort(t->segs, t->nsegs, sizeof *t->segs, seg_cmp);
}

/* A forked address space: the parent's plan, with the pages the parent still misses. */
static void fork_target(size_t parent, int uffd) {
  targets = xrealloc(targets, (ntargets + 1) * sizeof *targets);
  struct target *p = &targets[parent], *c = &targets[ntargets++];
  memset(c, 0, sizeof *c);
  c->uffd = uffd;
  c->pidfd = -1;
  c->serving = 1;
  for (size_t i = 0; i < p->nsegs; i++) {
    struct seg *s = &p->segs[i];
    uint64_t pages = s->len / PAGE, *b = bits_new(pages);
    memcpy(b, s->pending, (pages + 63) / 64 * 8);
    add_seg(c, s->addr, s->len, s->off, s->blob, b);
  }
  c->pending = p->pending;
  /* The watchdog holds it too: if this helper dies, the child's faults wait, never read zeros. */
  send_fds(wd_sock, "U", 1, &uffd, 1);
}

/* ---- userfaultfd ---- */

static void read_events(size_t ti);

/* The target's address space is gone (it exited): nothing more to fill. */
static void target_gone(struct target *t) {
  t->gone = 1;
  for (size_t i = 0; i < t->nsegs; i++) memset(t->segs[i].pending, 0, (t->segs[i].len / PAGE + 63) / 64 * 8);
  t->pending = 0;
}

/* Page addr of the target is still planned, from offset boff of blob b (events may have dropped or moved it). */
static int planned(struct target *t, uint64_t addr, uint32_t b, uint64_t boff) {
  struct seg *s = seg_at(t, addr);
  return s && s->blob == b && s->off + (addr - s->addr) == boff && bit(s->pending, (addr - s->addr) / PAGE);
}

/* Page addr of the target is no longer to be filled. */
static void mark_done(struct target *t, uint64_t addr) {
  struct seg *s = seg_at(t, addr);
  if (!s) return;
  uint64_t k = (addr - s->addr) / PAGE;
  if (bit(s->pending, k)) {
    clear_bit(s->pending, k);
    t->pending--;
  }
}

/*
 * Copies the pages of [addr, addr+len) that are still planned from blob b's offset boff on, from
 * buf (those bytes), retrying while the address space changes (EAGAIN: an event waits; it is
 * read, and what it dropped or moved is not copied). EEXIST: the page is there already. ENOENT
 * twice (the events read between): the page's area is not registered any more. A page is no
 * longer planned afterwards, whatever happened to it.
 */
static void copy_in(size_t ti, uint32_t b, uint64_t boff, uint64_t addr, const uint8_t *buf, uint64_t len) {
  int enoent = 0;
  while (len) {
    struct target *t = &targets[ti];
    uint64_t run = 0;
    while (run < len && planned(t, addr + run, b, boff + run)) run += PAGE;
    uint64_t skip = 0;
    int err = 0;
    if (run) {
      struct uffdio_copy c = {.dst = addr, .src = (uint64_t)(uintptr_t)buf, .len = run, .mode = 0};
      err = ioctl(t->uffd, UFFDIO_COPY, &c) < 0 ? errno : 0;
      skip = err ? (c.copy > 0 ? (uint64_t)c.copy : 0) : run;
    } else {
      skip = PAGE;
    }
    for (uint64_t p = 0; p < skip; p += PAGE) mark_done(t, addr + p);
    addr += skip;
    boff += skip;
    buf += skip;
    len -= skip;
    if (!err) continue;
    if (err == EAGAIN || (err == ENOENT && !enoent)) {
      enoent = err == ENOENT;
      read_events(ti);
      continue;
    }
    if (err == ESRCH) {
      target_gone(&targets[ti]);
      return;
    }
    /* EEXIST, a second ENOENT, anything else: this page is done with. */
    enoent = 0;
    mark_done(&targets[ti], addr);
    addr += PAGE;
    boff += PAGE;
    buf += PAGE;
    len -= PAGE;
  }
}

static uint8_t fault_buf[WINDOW * PAGE] __attribute__((aligned(4096)));

static void zero_page(size_t ti, uint64_t page) {
  for (int tries = 0; tries < 1000; tries++) {
    struct uffdio_zeropage z = {.range = {.start = page, .len = PAGE}, .mode = 0};
    if (ioctl(targets[ti].uffd, UFFDIO_ZEROPAGE, &z) == 0) return;
    if (errno == EAGAIN) {
      read_events(ti);
      continue;
    }
    if (errno == EEXIST) {
      struct uffdio_range w = {.start = page, .len = PAGE};
      ioctl(targets[ti].uffd, UFFDIO_WAKE, &w);
    }
    if (errno == ESRCH) target_gone(&targets[ti]);
    return;
  }
}

/* A fault: the planned page and the planned pages after it (up to the target's window), or a zero page. */
static void serve_fault(size_t ti, uint64_t addr) {
  struct target *t = &targets[ti];
  uint64_t page = addr & ~(PAGE - 1);
  struct seg *s = seg_at(t, page);
  if (!s || !bit(s->pending, (page - s->addr) / PAGE)) {
    zero_page(ti, page);
    return;
  }
  uint64_t k = (page - s->addr) / PAGE, n = 0, pages = s->len / PAGE;
  t->window = page == t->next_fault && t->window ? (2 * t->window < WINDOW ? 2 * t->window : WINDOW) : 1;
  while (n < t->window && k + n < pages && bit(s->pending, k + n)) n++;
  t->next_fault = page + n * PAGE;
  struct blob *b = &blobs[s->blob];
  uint64_t off = s->off + k * PAGE;
  ssize_t got = pread(b->fd, fault_buf, n * PAGE, off);
  if (got != (ssize_t)(n * PAGE)) fail();
  /* Ahead of the background pass: what the process got is checked when the pass gets there. */
  for (uint64_t i = 0; i < n; i++) {
    uint64_t bp = (off / PAGE) + i;
    if (off + i * PAGE < b->pos || bit(b->served, bp)) continue;
    uint8_t d[32];
    ckpt_blake3_once(fault_buf + i * PAGE, PAGE, d);
    memcpy(b->served_digest[bp], d, 16);
    b->served[bp >> 6] |= 1ULL << (bp & 63);
  }
  copy_in(ti, s->blob, off, page, fault_buf, n * PAGE);
}

/* Reads every message waiting on the target's userfaultfd: events at once, faults queued. */
static void read_events(size_t ti) {
  for (;;) {
    struct uffd_msg m[64];
    ssize_t n = read(targets[ti].uffd, m, sizeof m);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return;
    }
    for (size_t i = 0; i < (size_t)n / sizeof *m; i++) {
      struct target *t = &targets[ti];
      switch (m[i].event) {
        case UFFD_EVENT_PAGEFAULT:
          if (nfaults == faults_cap) {
            faults_cap = faults_cap ? 2 * faults_cap : 256;
            faults = xrealloc(faults, faults_cap * sizeof *faults);
          }
          faults[nfaults++] = (struct fault){ti, m[i].arg.pagefault.address};
          break;
        case UFFD_EVENT_FORK:
          fork_target(ti, (int)m[i].arg.fork.ufd);
          break;
        case UFFD_EVENT_REMAP:
          remap(t, m[i].arg.remap.from, m[i].arg.remap.to, m[i].arg.remap.len);
          break;
        case UFFD_EVENT_REMOVE:
        case UFFD_EVENT_UNMAP:
          drop_range(t, m[i].arg.remove.start, m[i].arg.remove.end);
          break;
      }
    }
  }
}

static void serve_faults(void) {
  /* Serving may read more events, which may queue more faults: to the end of the queue. */
  for (size_t i = 0; i < nfaults; i++) serve_fault(faults[i].t, faults[i].addr);
  nfaults = 0;
}

/* Faults waiting now, served at once: within a step of the background pass, between its read,
 * the parts of its hashing and its copies, so that a fault waits for a part of a step (about
 * 0.1 ms), not a whole one (1-2 ms: a process writing to pages not in yet, one after the other,
 * waited that long for each; 300 such writes just after a lazy restore of 1 GiB took 250-350 ms
 * here, now 100-165). */
static void serve_waiting(void) {
  for (size_t i = 0; i < ntargets; i++)
    if (targets[i].serving) read_events(i);
  serve_faults();
}

/* ---- the background pass ---- */

static uint8_t pass_buf[CHUNK] __attribute__((aligned(4096)));

/* The target's planned pages of blob b's bytes [o, e) (in pass_buf), copied in. */
static void fill_chunk(size_t ti, uint32_t b, uint64_t o, uint64_t e) {
  /* The runs (blob offset, address, length) first: copying reads events, which may move, split
   * or drop segments (copy_in checks every page again). */
  static uint64_t *runs;
  static size_t cap;
  size_t n = 0;
  struct target *t = &targets[ti];
  for (size_t i = 0; i < t->nsegs; i++) {
    struct seg *s = &t->segs[i];
    if (s->blob != b || s->off >= e || s->off + s->len <= o) continue;
    uint64_t from = s->off > o ? s->off : o, to = s->off + s->len < e ? s->off + s->len : e;
    for (uint64_t p = from; p < to;) {
      if (!bit(s->pending, (p - s->off) / PAGE)) {
        p += PAGE;
        continue;
      }
      uint64_t q = p;
      while (q < to && bit(s->pending, (q - s->off) / PAGE)) q += PAGE;
      if (n + 3 > cap) {
        cap = cap ? 2 * cap : 384;
        runs = xrealloc(runs, cap * sizeof *runs);
      }
      runs[n++] = p;
      runs[n++] = s->addr + (p - s->off);
      runs[n++] = q - p;
      p = q;
    }
  }
  for (size_t i = 0; i < n; i += 3) {
    copy_in(ti, b, runs[i], runs[i + 1], pass_buf + (runs[i] - o), runs[i + 2]);
    serve_waiting();
  }
}

/* One chunk of the pass: 1 when there was one to do. */
static int pass_step(void) {
  struct blob *b = NULL;
  uint32_t id = 0;
  for (size_t i = 0; i < nblobs; i++)
    if (blobs[i].ready && blobs[i].pos < blobs[i].size) {
      b = &blobs[i];
      id = (uint32_t)i;
      break;
    }
  if (!b) return 0;
  uint64_t o = b->pos, n = b->size - o < CHUNK ? b->size - o : CHUNK;
  if (pread(b->fd, pass_buf, n, o) != (ssize_t)n) fail();
  serve_waiting();
  for (uint64_t h = 0; h < n; h += HASH_STEP) {
    ckpt_blake3_update(b->hash, pass_buf + h, n - h < HASH_STEP ? n - h : HASH_STEP);
    serve_waiting();
  }
  /* The bytes ckpt wrote eagerly, as it hashed them. */
  while (b->eidx < b->neager) {
    uint64_t eo = b->eager[2 * b->eidx], el = b->eager[2 * b->eidx + 1];
    if (eo >= o + n) break;
    uint64_t s = eo > o ? eo : o, e = eo + el < o + n ? eo + el : o + n;
    if (e > s) ckpt_blake3_update(b->ehash, pass_buf + (s - o), e - s);
    if (eo + el > o + n) break;
    b->eidx++;
  }
  for (size_t t = 0; t < ntargets; t++)
    if (targets[t].serving && targets[t].pending) fill_chunk(t, id, o, o + n);
  /* Pages served to faults ahead of the pass (those of this chunk too, served while it was being
   * read, hashed and copied in): the same bytes as now. */
  for (uint64_t p = o / PAGE; p < (o + n) / PAGE; p++) {
    if (!bit(b->served, p)) continue;
    uint8_t d[32];
    ckpt_blake3_once(pass_buf + (p * PAGE - o), PAGE, d);
    if (memcmp(d, b->served_digest[p], 16)) fail();
  }
  b->pos = o + n;
  if (b->pos == b->size) {
    uint8_t d[32], ed[32];
    ckpt_blake3_digest(b->hash, d);
    ckpt_blake3_digest(b->ehash, ed);
    if (memcmp(d, b->digest, 32) || memcmp(ed, b->eager_digest, 32)) fail();
  }
  return 1;
}

/* ---- ckpt's channel ---- */

/* A double of ckpt's lists (8 bytes at p, unaligned) as the integer it holds: 0 if it is not one below 2^53. */
static int as_u64(const unsigned char *p, uint64_t *out) {
  double d;
  memcpy(&d, p, 8);
  if (!(d >= 0 && d < 9007199254740992.0) || d != (double)(uint64_t)d) return 0;
  *out = (uint64_t)d;
  return 1;
}

/*
 * The k planned runs in memfd `fd` (32 bytes each) added to t's plan, every page pending; their
 * pending bits in one allocation (most runs are a page or a few: one calloc each cost more than
 * the rest). 0 when the plan is not well formed.
 */
static int take_plan(struct target *t, int fd, uint32_t k) {
  size_t bytes = (size_t)k * 32;
  struct stat st;
  if (!k) return 1;
  if (fstat(fd, &st) < 0 || (uint64_t)st.st_size < bytes) return 0;
  const unsigned char *q = mmap(NULL, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  if (q == MAP_FAILED) return 0;
  uint64_t words = 0;
  int ok = 1;
  for (uint32_t i = 0; i < k && ok; i++) {
    uint64_t v[4];
    for (int j = 0; j < 4 && ok; j++) ok = as_u64(q + (size_t)i * 32 + j * 8, &v[j]);
    if (ok && (v[3] >= nblobs || v[0] % PAGE || v[1] % PAGE || !v[1])) ok = 0;
    if (ok) words += (v[1] / PAGE + 63) / 64;
  }
  if (ok) {
    uint64_t *bits = calloc(words ? words : 1, 8);
    if (!bits) _exit(3);
    if (t->nsegs + k > t->cap) {
      t->cap = t->nsegs + k;
      t->segs = xrealloc(t->segs, t->cap * sizeof *t->segs);
    }
    for (uint32_t i = 0; i < k; i++) {
      uint64_t v[4];
      for (int j = 0; j < 4; j++) as_u64(q + (size_t)i * 32 + j * 8, &v[j]);
      uint64_t pages = v[1] / PAGE;
      bits_fill(bits, pages);
      add_seg(t, v[0], v[1], v[2], (uint32_t)v[3], bits);
      bits += (pages + 63) / 64;
      t->pending += pages;
    }
  }
  munmap((void *)q, bytes);
  return ok;
}

static int handle_channel(void) {
  static uint8_t buf[1 << 17];
  int fds[MAX_FDS];
  ssize_t n = recv_with_fds(0, buf, sizeof buf, fds, MAX_FDS);
  if (n <= 0) return -1;
  switch (buf[0]) {
    case 'B': {
      if (n < 1 + 4 + 8 + 64 || fds[0] < 0) return -1;
      blobs = xrealloc(blobs, (nblobs + 1) * sizeof *blobs);
      struct blob *b = &blobs[nblobs++];
      memset(b, 0, sizeof *b);
      b->fd = fds[0];
      memcpy(&b->size, buf + 5, 8);
      memcpy(b->digest, buf + 13, 32);
      memcpy(b->eager_digest, buf + 45, 32);
      b->hash = ckpt_blake3_new();
      b->ehash = ckpt_blake3_new();
      uint64_t pages = (b->size + PAGE - 1) / PAGE;
      b->served = bits_new(pages);
      b->served_digest = calloc(pages ? pages : 1, 16);
      if (!b->hash || !b->ehash || !b->served_digest) _exit(3);
      return 0;
    }
    case 'E': {
      uint32_t id, k;
      memcpy(&id, buf + 1, 4);
      memcpy(&k, buf + 5, 4);
      if (id >= nblobs || (size_t)n < 9 + (size_t)k * 16) return -1;
      struct blob *b = &blobs[id];
      if (b->neager + k > b->eager_cap) {
        b->eager_cap = (b->neager + k) * 2;
        b->eager = xrealloc(b->eager, b->eager_cap * 16);
      }
      for (uint32_t i = 0; i < 2 * k; i++)
        if (!as_u64(buf + 9 + (size_t)i * 8, &b->eager[2 * b->neager + i])) return -1;
      b->neager += k;
      return 0;
    }
    case 'T': {
      if (n < 5 || fds[0] < 0) return -1;
      targets = xrealloc(targets, (ntargets + 1) * sizeof *targets);
      struct target *t = &targets[ntargets++];
      memset(t, 0, sizeof *t);
      memcpy(&t->pid, buf + 1, 4);
      t->pidfd = fds[0];
      t->uffd = fds[1];
      send_fds(wd_sock, buf, 5, fds, fds[1] >= 0 ? 2 : 1);
      return 0;
    }
    case 'P': {
      uint32_t k;
      memcpy(&k, buf + 1, 4);
      if (n < 5 || fds[0] < 0) return -1;
      int ok = ntargets && take_plan(&targets[ntargets - 1], fds[0], k);
      close(fds[0]);
      return ok ? 0 : -1;
    }
    case 'R': {
      if (!ntargets) return -1;
      struct target *t = &targets[ntargets - 1];
      sort_segs(t);
      t->serving = t->uffd >= 0;
      for (size_t i = 0; i < t->nsegs; i++) blobs[t->segs[i].blob].ready = 1;
      int32_t ok = 0;
      return write(0, &ok, 4) == 4 ? 0 : -1;
    }
    case 'C':
      committed = 1;
      for (size_t i = 0; i < nblobs; i++) blobs[i].ready = 1;
      return 0;
  }
  return -1;
}

static int finished(void) {
  /* Nobody left to serve or to protect: the blobs need not be read to their end. */
  int alive = 0;
  for (size_t i = 0; i < ntargets; i++) alive |= targets[i].serving && !targets[i].gone;
  if (!alive) return 1;
  for (size_t i = 0; i < nblobs; i++)
    if (blobs[i].pos < blobs[i].size) return 0;
  for (size_t i = 0; i < ntargets; i++)
    if (targets[i].pending) return 0;
  return 1;
}

int main(void) {
  pid_t first = fork();
  if (first < 0) return 1;
  if (first > 0) _exit(0);
  prctl(PR_SET_NAME, "ckpt-lazy");
  helper_pid = getpid();
  signal(SIGPIPE, SIG_IGN);
  signal(SIGCHLD, SIG_IGN);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return 1;
  pid_t wd = fork();
  if (wd < 0) return 1;
  if (wd == 0) {
    close(0);
    close(sv[0]);
    watchdog(sv[1]);
  }
  close(sv[1]);
  wd_sock = sv[0];
  int32_t ids[2] = {getpid(), wd};
  if (write(0, ids, sizeof ids) != sizeof ids) return 1;
  int channel = 1;
  struct pollfd *p = NULL;
  for (;;) {
    if (!channel && committed && finished()) break;
    size_t np = 0;
    p = xrealloc(p, (ntargets + 2) * sizeof *p);
    p[np++] = (struct pollfd){.fd = wd_sock, .events = POLLIN};
    p[np++] = (struct pollfd){.fd = channel ? 0 : -1, .events = POLLIN};
    for (size_t i = 0; i < ntargets; i++)
      p[np++] = (struct pollfd){.fd = targets[i].serving ? targets[i].uffd : -1, .events = POLLIN};
    /* The background pass waits for the commit: until then the restore itself needs the CPU
     * (faults are served all along). */
    int busy = 0;
    for (size_t i = 0; i < nblobs && !busy && committed; i++) busy = blobs[i].ready && blobs[i].pos < blobs[i].size;
    for (size_t i = 0; i < ntargets && !busy && committed; i++) busy = targets[i].serving && targets[i].pending;
    int r = poll(p, np, busy ? 0 : (channel ? -1 : 100));
    if (r < 0 && errno != EINTR) fail();
    /* The watchdog never speaks: readable means it is gone. */
    if (p[0].revents) fail();
    if (p[1].revents) {
      if (handle_channel() < 0) {
        channel = 0;
        if (!committed) fail();
      }
    }
    for (size_t i = 0; i < ntargets; i++)
      if (p[2 + i].revents & POLLIN) read_events(i);
    serve_faults();
    if (busy && !pass_step()) {
      /* Pages left that no pass will reach (a target served after its blob was read): read again. */
      for (size_t t = 0; t < ntargets; t++)
        if (targets[t].serving && targets[t].pending)
          for (size_t i = 0; i < targets[t].nsegs; i++)
            for (uint64_t k = 0; k < targets[t].segs[i].len / PAGE; k++)
              if (bit(targets[t].segs[i].pending, k)) serve_fault(t, targets[t].segs[i].addr + k * PAGE);
      /* Still not in: never let it read zeros there. */
      for (size_t t = 0; t < ntargets; t++)
        if (targets[t].serving && targets[t].pending) fail();
    }
  }
  /* Every page is in and every blob verified: the watchdog lets go, the areas are unregistered. */
  send_fds(wd_sock, "F", 1, NULL, 0);
  for (size_t i = 0; i < ntargets; i++) {
    if (targets[i].uffd >= 0) close(targets[i].uffd);
    if (targets[i].pidfd >= 0) close(targets[i].pidfd);
  }
  unnote();
  return 0;
}
