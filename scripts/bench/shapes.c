/* shapes: the bench's non-memory workloads.
 *   shapes tree N     a process tree of N processes (a chain of fan-outs), each with 1 MiB touched
 *   shapes threads N  one process with N threads
 * Prints "ready" once everything exists, then everyone sleeps. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *idle(void *a) {
  (void)a;
  for (;;) pause();
  return NULL;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  int n = argc > 2 ? atoi(argv[2]) : 16;
  if (argc > 1 && !strcmp(argv[1], "threads")) {
    pthread_t t;
    for (int i = 1; i < n; i++) pthread_create(&t, NULL, idle, NULL);
    usleep(100000);
    printf("ready\n");
    for (;;) pause();
  }
  int made = 1;
  for (int i = 1; i < n; i++) {
    pid_t p = fork();
    if (p == 0) {
      made = 0;
      break;
    }
  }
  char *m = malloc(1 << 20);
  memset(m, made ? 'p' : 'c', 1 << 20);
  if (made) {
    usleep(200000);
    printf("ready\n");
  }
  for (;;) pause();
}
