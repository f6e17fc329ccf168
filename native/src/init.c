/* ckpt-init: pid 1 of the pid namespace `ckpt run` makes for an application.
 * It starts the application (argv after "--") as its only direct child, forwards the usual
 * termination and user signals to it, reaps every orphan of the namespace, and exits with the
 * application's status (which ends the namespace). Being an ordinary process, it is checkpointed
 * and restored with the application. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile pid_t child;

static void forward(int sig) {
  if (child > 0) kill(child, sig);
}

int main(int argc, char **argv) {
  int first = 1;
  if (argc > 1 && strcmp(argv[1], "--") == 0) first = 2;
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
  child = fork();
  if (child < 0) return 127;
  if (child == 0) {
    signal(SIGPIPE, SIG_DFL);
    for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++) signal(sigs[i], SIG_DFL);
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
