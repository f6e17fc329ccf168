/* ckpt-init: pid 1 of the pid namespace `ckpt run` makes for an application.
 * It starts the application (argv after "--") as its only direct child, forwards the usual
 * termination and user signals to it, reaps every orphan of the namespace, and exits with the
 * application's status (which ends the namespace). Being an ordinary process, it is checkpointed
 * and restored with the application.
 *
 *   ckpt-init [--request-signal N --request-file PATH] -- command [args...]
 * With --request-signal, signal N is not forwarded: it asks for a checkpoint now (a batch
 * system's warning before preemption), by creating PATH, which the application's checkpointer
 * (outside this pid namespace) watches. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile pid_t child;

static const char *request_file;

static void forward(int sig) {
  if (child > 0) kill(child, sig);
}

static void request(int sig) {
  (void)sig;
  int fd = open(request_file, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd >= 0) close(fd);
}

int main(int argc, char **argv) {
  int first = 1, request_sig = 0;
  while (first + 1 < argc && strncmp(argv[first], "--request-", 10) == 0) {
    if (strcmp(argv[first], "--request-signal") == 0) request_sig = atoi(argv[first + 1]);
    else if (strcmp(argv[first], "--request-file") == 0) request_file = argv[first + 1];
    first += 2;
  }
  if (first < argc && strcmp(argv[first], "--") == 0) first++;
  if (first >= argc) {
    fprintf(stderr, "usage: ckpt-init -- command [args...]\n");
    return 127;
  }
  static const int sigs[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT};
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = forward;
  sa.sa_flags = SA_RESTART;
  for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
  if (request_sig > 0 && request_sig < 65 && request_file) {
    struct sigaction rq;
    memset(&rq, 0, sizeof rq);
    rq.sa_handler = request;
    rq.sa_flags = SA_RESTART;
    sigaction(request_sig, &rq, NULL);
  }
  child = fork();
  if (child < 0) return 127;
  if (child == 0) {
    signal(SIGPIPE, SIG_DFL);
    for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++) signal(sigs[i], SIG_DFL);
    if (request_sig > 0 && request_sig < 65) signal(request_sig, SIG_DFL);
    execvp(argv[first], argv + first);
    fprintf(stderr, "ckpt-init: cannot run %s: %s\n", argv[first], strerror(errno));
    _exit(127);
  }
  for (;;) {
    int st;
    pid_t r = wait(&st);
    if (r < 0) {
      if (errno == EINTR) continue;
      return 0;
    }
    if (r == child) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
}
