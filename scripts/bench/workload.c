// Benchmark workload for scripts/bench.mjs.
//   workload MIB
// Allocates MIB MiB, writes every 8-byte word i as i * 0x9E3779B97F4A7C15 (so every page is touched
// and its content is known), prints "ready", then sleeps in a loop of pause(). On SIGUSR1 it checks
// the whole buffer and prints "verify ok" or "verify bad N" (N = number of wrong words).
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define K 0x9E3779B97F4A7C15ULL

static uint64_t *buf;
static size_t words;

static void put(const char *s) {
  size_t n = strlen(s);
  while (n > 0) {
    ssize_t w = write(1, s, n);
    if (w <= 0) return;
    s += w;
    n -= (size_t)w;
  }
}

// The check runs in the handler itself (with write(), which is async-signal-safe), so the main
// loop is nothing but pause() and there is no window between a flag test and the next pause().
static void on_usr1(int sig) {
  (void)sig;
  size_t bad = 0;
  for (size_t i = 0; i < words; i++)
    if (buf[i] != (uint64_t)i * K) bad++;
  if (bad == 0) {
    put("verify ok\n");
  } else {
    char line[64], digits[32];
    int n = 0;
    do { digits[n++] = (char)('0' + bad % 10); bad /= 10; } while (bad);
    strcpy(line, "verify bad ");
    size_t l = strlen(line);
    while (n) line[l++] = digits[--n];
    line[l++] = '\n';
    line[l] = 0;
    put(line);
  }
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MIB\n", argv[0]);
    return 2;
  }
  long mib = strtol(argv[1], NULL, 10);
  if (mib <= 0) {
    fprintf(stderr, "bad size %s\n", argv[1]);
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  size_t bytes = (size_t)mib << 20;
  words = bytes / sizeof(uint64_t);
  buf = malloc(bytes);
  if (!buf) {
    perror("malloc");
    return 1;
  }
  for (size_t i = 0; i < words; i++) buf[i] = (uint64_t)i * K;

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  if (sigaction(SIGUSR1, &sa, NULL) != 0) {
    perror("sigaction");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  for (;;) pause();
}
