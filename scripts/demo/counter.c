/* The demo's process: a counter, 32 MiB of patterned heap, an output file it appends to. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static volatile sig_atomic_t check;
static void on_usr1(int sig) { (void)sig; check = 1; }

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  size_t words = (32u << 20) / 8;
  unsigned long *heap = malloc(words * 8);
  for (size_t i = 0; i < words; i++) heap[i] = i * 0x9E3779B97F4A7C15UL;
  signal(SIGUSR1, on_usr1);
  for (unsigned long n = 0;; n++) {
    printf("count %lu (pid %d)\n", n, getpid());
    if (check) {
      size_t bad = 0;
      for (size_t i = 0; i < words; i++) bad += heap[i] != i * 0x9E3779B97F4A7C15UL;
      printf("heap check: %s\n", bad ? "CORRUPT" : "intact");
      check = 0;
    }
    usleep(200 * 1000);
  }
}
