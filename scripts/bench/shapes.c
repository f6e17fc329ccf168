/* shapes: the bench's non-memory workloads.
 *   shapes tree N     a process tree of N processes (a chain of fan-outs), each with 1 MiB touched
 *   shapes threads N  one process with N threads
 *   shapes files N DIR       one process with N open files (raises its soft RLIMIT_NOFILE to
 *                            the hard limit when N needs it)
 *   shapes bigfile MIB PATH  one process with a MIB MiB open file (the bench saves it by content)
 *   shapes prefork N  a preforking server: 16 MiB touched, then N-1 children that share it
 *                     copy-on-write, each rewriting 64 KiB of it
 * Prints "ready" once everything exists, then everyone sleeps. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/resource.h>
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
  if (argc > 3 && !strcmp(argv[1], "files")) {
    /* shapes files N DIR: N open files */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)n + 16) {
      rl.rlim_cur = rl.rlim_max;
      if (setrlimit(RLIMIT_NOFILE, &rl) != 0) perror("setrlimit");
    }
    for (int i = 0; i < n; i++) {
      char path[512];
      snprintf(path, sizeof path, "%s/f%d", argv[3], i);
      if (open(path, O_RDWR | O_CREAT, 0600) < 0) {
        perror(path);
        return 1;
      }
    }
    printf("ready\n");
    for (;;) pause();
  }
  if (argc > 3 && !strcmp(argv[1], "bigfile")) {
    /* shapes bigfile MIB PATH: one open file of MIB MiB */
    int fd = open(argv[3], O_RDWR | O_CREAT | O_TRUNC, 0600);
    char *buf = malloc(1 << 20);
    for (int i = 0; i < n; i++) {
      memset(buf, 'a' + i % 26, 1 << 20);
      if (write(fd, buf, 1 << 20) != 1 << 20) return 1;
    }
    printf("ready\n");
    for (;;) pause();
  }
  if (argc > 1 && !strcmp(argv[1], "prefork")) {
    char *m = malloc(16 << 20);
    memset(m, 'p', 16 << 20);
    for (int i = 1; i < n; i++) {
      if (fork() == 0) {
        memset(m + (size_t)(i % 256) * 65536, 'c', 65536);
        for (;;) pause();
      }
    }
    usleep(200000);
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
