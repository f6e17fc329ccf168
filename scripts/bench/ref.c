// Same-run reference figures for scripts/bench.mjs.
//   ref MIB FILE
// (a) memcpy GB/s: two MIB MiB buffers, both fully touched first, then memcpy of the whole buffer,
//     best of 3.
// (b) write() GB/s into the page cache: the touched buffer written to FILE in 4 MiB write() calls,
//     no fsync, best of 3; FILE is unlinked and recreated between runs. Also the first of the 3
//     alone (writeFirstGBs): a new file into page cache nothing was written to just before, as a
//     dump's image is (on the development VM, memory freed a while ago costs several times more
//     to take again: the hypervisor took it back).
// (c) read() GB/s of that page-cached file into fresh anonymous memory (mapped for the read, so
//     every page is faulted in by it), 4 MiB calls, best of 3: what a restore must do at least.
// FILE is removed at the end.
// Prints one JSON line: {"memcpyGBs":..., "writeGBs":..., "writeFirstGBs":..., "readFreshGBs":...}
// (GB = 1e9 bytes).
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define CHUNK ((size_t)4 << 20)
#define RUNS 3

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s MIB FILE\n", argv[0]);
    return 2;
  }
  long mib = strtol(argv[1], NULL, 10);
  if (mib <= 0) {
    fprintf(stderr, "bad size %s\n", argv[1]);
    return 2;
  }
  const char *file = argv[2];
  size_t bytes = (size_t)mib << 20;
  size_t words = bytes / sizeof(uint64_t);
  uint64_t *src = malloc(bytes), *dst = malloc(bytes);
  if (!src || !dst) {
    perror("malloc");
    return 1;
  }
  // Touch both buffers fully (same pattern as the workload) so no timed run pays for page faults.
  for (size_t i = 0; i < words; i++) src[i] = (uint64_t)i * 0x9E3779B97F4A7C15ULL;
  memset(dst, 0x5a, bytes);

  double best = 1e30;
  for (int r = 0; r < RUNS; r++) {
    double t0 = now();
    memcpy(dst, src, bytes);
    double t = now() - t0;
    if (t < best) best = t;
  }
  // Keep the copies observable.
  if (memcmp(dst, src, 4096) != 0) {
    fprintf(stderr, "memcpy mismatch\n");
    return 1;
  }
  double memcpyGBs = (double)bytes / best / 1e9;

  best = 1e30;
  double first = 0;
  for (int r = 0; r < RUNS; r++) {
    unlink(file);
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
      perror(file);
      return 1;
    }
    double t0 = now();
    const char *p = (const char *)src;
    size_t left = bytes;
    while (left > 0) {
      size_t n = left < CHUNK ? left : CHUNK;
      ssize_t w = write(fd, p, n);
      if (w < 0) {
        perror("write");
        close(fd);
        unlink(file);
        return 1;
      }
      p += w;
      left -= (size_t)w;
    }
    double t = now() - t0;
    close(fd);
    if (r == 0) first = t;
    if (t < best) best = t;
  }
  double writeGBs = (double)bytes / best / 1e9, writeFirstGBs = (double)bytes / first / 1e9;

  // The last file written is in the page cache: read it into memory mapped for each run.
  best = 1e30;
  for (int r = 0; r < RUNS; r++) {
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    char *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (fd < 0 || m == MAP_FAILED) {
      perror("read reference");
      unlink(file);
      return 1;
    }
    double t0 = now();
    for (size_t off = 0; off < bytes;) {
      ssize_t n = read(fd, m + off, bytes - off < CHUNK ? bytes - off : CHUNK);
      if (n <= 0) {
        perror("read");
        unlink(file);
        return 1;
      }
      off += (size_t)n;
    }
    double t = now() - t0;
    if (memcmp(m, src, 4096) != 0) {
      fprintf(stderr, "read mismatch\n");
      return 1;
    }
    munmap(m, bytes);
    close(fd);
    if (t < best) best = t;
  }
  unlink(file);
  double readFreshGBs = (double)bytes / best / 1e9;

  printf("{\"memcpyGBs\":%.3f,\"writeGBs\":%.3f,\"writeFirstGBs\":%.3f,\"readFreshGBs\":%.3f}\n", memcpyGBs, writeGBs, writeFirstGBs, readFreshGBs);
  free(src);
  free(dst);
  return 0;
}
