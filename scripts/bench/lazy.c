// The workload of the bench's lazy group (restore --lazy): MIB MiB of private anonymous memory
// holding a pattern.
//   lazy MIB GO
// Prints "ready", then looks for the file GO every millisecond. The first time it sees it (the
// bench makes it before a restore), it prints "first NS" (CLOCK_MONOTONIC, the clock of Node's
// process.hrtime) and "resident KB" (the area's smaps Rss), then reads its smaps every 2 ms until
// the whole area is resident ("allin NS"), then checks every byte ("ok", or "FAIL page N"), and
// sleeps until killed.
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static uint64_t word(size_t page, size_t i) { return (page * 0x100000001B3ULL) ^ (i * 0x9E3779B97F4A7C15ULL) ^ 0x5a5a; }

static long long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static long rss_kb(void *addr) {
  FILE *f = fopen("/proc/self/smaps", "r");
  if (!f) return -1;
  char l[512];
  int in = 0;
  long kb = -1;
  while (fgets(l, sizeof l, f)) {
    unsigned long s, e;
    if (sscanf(l, "%lx-%lx ", &s, &e) == 2 && strchr(l, '-') < strchr(l, ' ')) {
      in = (uintptr_t)addr >= s && (uintptr_t)addr < e;
      continue;
    }
    if (in && sscanf(l, "Rss: %ld kB", &kb) == 1) break;
  }
  fclose(f);
  return kb;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  size_t len = (size_t)atoi(argv[1]) << 20;
  char *a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (a == MAP_FAILED) return 3;
  for (size_t p = 0; p < len / PAGE; p++) {
    uint64_t *w = (uint64_t *)(a + p * PAGE);
    for (size_t i = 0; i < PAGE / 8; i++) w[i] = word(p, i);
  }
  printf("ready\n");
  fflush(stdout);
  struct timespec ms = {0, 1000 * 1000}, two = {0, 2000 * 1000};
  while (access(argv[2], F_OK) != 0) nanosleep(&ms, NULL);
  long long first = now_ns();
  long rss = rss_kb(a);
  printf("first %lld\nresident %ld\n", first, rss);
  fflush(stdout);
  while (rss_kb(a) < (long)(len >> 10)) nanosleep(&two, NULL);
  printf("allin %lld\n", now_ns());
  fflush(stdout);
  for (size_t p = 0; p < len / PAGE; p++) {
    const uint64_t *w = (const uint64_t *)(a + p * PAGE);
    for (size_t i = 0; i < PAGE / 8; i++)
      if (w[i] != word(p, i)) {
        printf("FAIL page %zu\n", p);
        fflush(stdout);
        for (;;) pause();
      }
  }
  printf("ok\n");
  fflush(stdout);
  for (;;) pause();
}
