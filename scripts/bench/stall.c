// Downtime workload for scripts/bench.mjs: how long the process stops, seen from inside.
//   stall MIB [PERMILLE]
// Allocates and touches MIB MiB, prints "ready", then wakes every millisecond (clock_nanosleep)
// and keeps the longest gap between two wake-ups beyond the millisecond asked for. On SIGUSR1 it
// prints "maxstall USEC" (the longest gap since the last report) and starts over. On SIGUSR2 it
// writes PERMILLE / 1000 of its pages (spread over all of it, others each time) and prints
// "dirtied PAGES" (for incremental dumps).
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t report, dirty;

static void on_usr1(int sig) {
  (void)sig;
  report = 1;
}

static void on_usr2(int sig) {
  (void)sig;
  dirty = 1;
}

static int64_t now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

int main(int argc, char **argv) {
  if (argc != 2 && argc != 3) {
    fprintf(stderr, "usage: %s MIB [PERMILLE]\n", argv[0]);
    return 2;
  }
  size_t bytes = (size_t)strtol(argv[1], NULL, 10) << 20;
  setvbuf(stdout, NULL, _IOLBF, 0);
  char *buf = malloc(bytes);
  if (!buf) return 3;
  for (size_t i = 0; i < bytes; i += 4096) buf[i] = (char)(i >> 12);
  size_t permille = argc == 3 ? (size_t)strtol(argv[2], NULL, 10) : 0, round = 0;
  signal(SIGUSR1, on_usr1);
  signal(SIGUSR2, on_usr2);
  printf("ready\n");
  int64_t last = now_us(), max = 0;
  struct timespec ms = {0, 1000000};
  for (;;) {
    clock_nanosleep(CLOCK_MONOTONIC, 0, &ms, NULL);
    int64_t t = now_us(), gap = t - last - 1000;
    if (gap > max) max = gap;
    last = t;
    if (dirty) {
      dirty = 0;
      size_t pages = bytes / 4096, n = 0;
      // Page p is written in round r when (p + r) % (1000 / permille) == 0: a different set each time.
      size_t every = permille ? 1000 / permille : 0;
      round++;
      for (size_t p = 0; every && p < pages; p++)
        if ((p + round) % every == 0) buf[p * 4096 + 8] = (char)round, n++;
      printf("dirtied %zu\n", n);
    }
    if (report) {
      report = 0;
      printf("maxstall %lld\n", (long long)max);
      max = 0;
    }
  }
}
