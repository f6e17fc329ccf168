// Downtime workload for scripts/bench.mjs: how long the process stops, seen from inside.
//   stall MIB
// Allocates and touches MIB MiB, prints "ready", then wakes every millisecond (clock_nanosleep)
// and keeps the longest gap between two wake-ups beyond the millisecond asked for. On SIGUSR1 it
// prints "maxstall USEC" (the longest gap since the last report) and starts over.
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t report;

static void on_usr1(int sig) {
  (void)sig;
  report = 1;
}

static int64_t now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MIB\n", argv[0]);
    return 2;
  }
  size_t bytes = (size_t)strtol(argv[1], NULL, 10) << 20;
  setvbuf(stdout, NULL, _IOLBF, 0);
  char *buf = malloc(bytes);
  if (!buf) return 3;
  for (size_t i = 0; i < bytes; i += 4096) buf[i] = (char)(i >> 12);
  signal(SIGUSR1, on_usr1);
  printf("ready\n");
  int64_t last = now_us(), max = 0;
  struct timespec ms = {0, 1000000};
  for (;;) {
    clock_nanosleep(CLOCK_MONOTONIC, 0, &ms, NULL);
    int64_t t = now_us(), gap = t - last - 1000;
    if (gap > max) max = gap;
    last = t;
    if (report) {
      report = 0;
      printf("maxstall %lld\n", (long long)max);
      max = 0;
    }
  }
}
