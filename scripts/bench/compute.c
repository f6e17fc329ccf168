// Compute-bound workload for scripts/bench.mjs (what periodic checkpoints cost an application):
//   compute MIB [SLICE_MS]
// Allocates and touches MIB MiB, prints "ready", then works: each round hashes a 64 KiB block of
// the memory into another block (so it reads and writes its memory, 1% of it per second or so),
// counting rounds. On SIGUSR1 it prints "rounds N" (rounds so far). With SLICE_MS, it also prints
// "slice T N" at the end of every slice of that many milliseconds: T its end (CLOCK_REALTIME, ms),
// N the rounds done in it; the bench lays the checkpoints' times over them.
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t report;

static void on_usr1(int sig) {
  (void)sig;
  report = 1;
}

int main(int argc, char **argv) {
  if (argc != 2 && argc != 3) {
    fprintf(stderr, "usage: %s MIB [SLICE_MS]\n", argv[0]);
    return 2;
  }
  long slice_ms = argc == 3 ? strtol(argv[2], NULL, 10) : 0;
  size_t bytes = (size_t)strtol(argv[1], NULL, 10) << 20, block = 64 << 10, blocks = bytes / block;
  setvbuf(stdout, NULL, _IOLBF, 0);
  uint64_t *mem = malloc(bytes);
  if (!mem) return 3;
  for (size_t i = 0; i < bytes / 8; i++) mem[i] = i * 0x9E3779B97F4A7C15ULL;
  signal(SIGUSR1, on_usr1);
  printf("ready\n");
  uint64_t rounds = 0, x = 88172645463325252ULL, slice_rounds = 0;
  double slice_end = 0;
  if (slice_ms > 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    slice_end = ts.tv_sec * 1e3 + ts.tv_nsec / 1e6 + (double)slice_ms;
  }
  for (;;) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    uint64_t *from = mem + (x % blocks) * (block / 8), *to = mem + ((x >> 20) % blocks) * (block / 8);
    uint64_t h = x;
    for (size_t i = 0; i < block / 8; i++) h = (h ^ from[i]) * 0x100000001B3ULL;
    // One word per page of the target block: about 1% of the memory written per second here.
    if ((rounds & 63) == 0)
      for (size_t i = 0; i < block / 8; i += 512) to[i] = h + i;
    rounds++;
    // The clock every 64 rounds (about a millisecond of work).
    if (slice_ms > 0 && (rounds & 63) == 0) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      double now = ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
      if (now >= slice_end) {
        printf("slice %.0f %llu\n", now, (unsigned long long)(rounds - slice_rounds));
        slice_rounds = rounds;
        slice_end = now + (double)slice_ms;
      }
    }
    if (report) {
      report = 0;
      printf("rounds %llu\n", (unsigned long long)rounds);
    }
  }
}
