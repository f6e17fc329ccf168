// Compute-bound workload for scripts/bench.mjs (what periodic checkpoints cost an application):
//   compute MIB
// Allocates and touches MIB MiB, prints "ready", then works: each round hashes a 64 KiB block of
// the memory into another block (so it reads and writes its memory, 1% of it per second or so),
// counting rounds. On SIGUSR1 it prints "rounds N" (rounds so far).
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t report;

static void on_usr1(int sig) {
  (void)sig;
  report = 1;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MIB\n", argv[0]);
    return 2;
  }
  size_t bytes = (size_t)strtol(argv[1], NULL, 10) << 20, block = 64 << 10, blocks = bytes / block;
  setvbuf(stdout, NULL, _IOLBF, 0);
  uint64_t *mem = malloc(bytes);
  if (!mem) return 3;
  for (size_t i = 0; i < bytes / 8; i++) mem[i] = i * 0x9E3779B97F4A7C15ULL;
  signal(SIGUSR1, on_usr1);
  printf("ready\n");
  uint64_t rounds = 0, x = 88172645463325252ULL;
  for (;;) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    uint64_t *from = mem + (x % blocks) * (block / 8), *to = mem + ((x >> 20) % blocks) * (block / 8);
    uint64_t h = x;
    for (size_t i = 0; i < block / 8; i++) h = (h ^ from[i]) * 0x100000001B3ULL;
    // One word per page of the target block: about 1% of the memory written per second here.
    if ((rounds & 63) == 0)
      for (size_t i = 0; i < block / 8; i += 512) to[i] = h + i;
    rounds++;
    if (report) {
      report = 0;
      printf("rounds %llu\n", (unsigned long long)rounds);
    }
  }
}
