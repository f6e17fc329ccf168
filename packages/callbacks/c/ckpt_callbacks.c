/* ckpt_callbacks.c: the client side of ckpt's checkpoint callback protocol (PROTOCOL.md). One
 * thread: listen, accept ckpt (root or this user only), answer PREPARE by calling `prepare`,
 * then wait on the same connection for RESUME and call `resume`. */
#define _GNU_SOURCE
#include "ckpt_callbacks.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define PREFIX "ckpt-callbacks/"

struct ckpt_request {
  int fd;
  int exit;
  int vetoed;
};

static ckpt_prepare_fn on_prepare;
static ckpt_resume_fn on_resume;
static void *user_arg;
static int listener = -1;
static char name[64];

static int send_line(int fd, const char *line) {
  size_t n = strlen(line);
  while (n) {
    ssize_t w = send(fd, line, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -errno;
    line += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Reads one line (without '\n') into buf; 0 at end of file, -1 on error, else its length + 1. */
static int read_line(int fd, char *buf, size_t size) {
  size_t n = 0;
  for (;;) {
    char c;
    ssize_t r = read(fd, &c, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) return 0;
    if (c == '\n') break;
    if (n + 1 < size) buf[n++] = c;
  }
  buf[n] = 0;
  return (int)n + 1;
}

int ckpt_exclude(struct ckpt_request *r, const void *addr, size_t len) {
  char line[96];
  uintptr_t a = (uintptr_t)addr;
  if (!r || a % 4096 || len % 4096 || !len) return -EINVAL;
  snprintf(line, sizeof line, "EXCLUDE %lx %lx\n", (unsigned long)a, (unsigned long)(a + len));
  return send_line(r->fd, line);
}

int ckpt_take_over(struct ckpt_request *r, int fd) {
  char line[32];
  if (!r || fd < 0) return -EINVAL;
  snprintf(line, sizeof line, "TAKEOVER %d\n", fd);
  return send_line(r->fd, line);
}

int ckpt_delay(struct ckpt_request *r, unsigned ms) {
  char line[32];
  if (!r) return -EINVAL;
  snprintf(line, sizeof line, "DELAY %u\n", ms);
  return send_line(r->fd, line);
}

int ckpt_veto(struct ckpt_request *r, const char *reason) {
  char line[512];
  if (!r) return -EINVAL;
  snprintf(line, sizeof line, "VETO %s\n", reason ? reason : "");
  for (char *p = line + 5; *p && p[1]; p++)
    if (*p == '\n') *p = ' ';
  r->vetoed = 1;
  return send_line(r->fd, line);
}

int ckpt_will_exit(const struct ckpt_request *r) { return r && r->exit; }

const char *ckpt_callbacks_name(void) { return listener >= 0 ? name : NULL; }

/* Only ckpt running as root or as this user. */
static int trusted(int fd) {
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return 0;
  return cred.uid == 0 || cred.uid == getuid();
}

/* One connection of ckpt: PREPARE, then RESUME (or, after a restart, RESUME alone). */
static void serve(int fd) {
  char line[512];
  while (read_line(fd, line, sizeof line) > 0) {
    if (strncmp(line, "PREPARE ", 8) == 0) {
      struct ckpt_request r = {fd, strstr(line, " exit ") != NULL, 0};
      if (on_prepare) on_prepare(&r, user_arg);
      if (r.vetoed) break;
      if (send_line(fd, "READY\n") < 0) break;
    } else if (strncmp(line, "RESUME ", 7) == 0) {
      /* RESUME <version> <continue|restart|failed> [why] */
      const char *kind = strchr(line + 7, ' ');
      kind = kind ? kind + 1 : "";
      int event = strncmp(kind, "restart", 7) == 0 ? CKPT_RESTART : strncmp(kind, "failed", 6) == 0 ? CKPT_FAILED : CKPT_CONTINUE;
      const char *detail = event == CKPT_FAILED && kind[6] == ' ' ? kind + 7 : "";
      if (on_resume) on_resume(event, detail, user_arg);
      send_line(fd, "DONE\n");
      break;
    }
  }
  close(fd);
}

static void *loop(void *unused) {
  (void)unused;
  /* The thread takes no signals: the program's handlers run on its own threads. */
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  for (;;) {
    int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      usleep(100000);
      continue;
    }
    if (!trusted(fd)) {
      close(fd);
      continue;
    }
    serve(fd);
  }
  return NULL;
}

int ckpt_callbacks_register(ckpt_prepare_fn prepare, ckpt_resume_fn resume, void *arg) {
  if (listener >= 0) return -EALREADY;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  /* A name of its own: the pid, and randomness (pids repeat across pid namespaces). */
  unsigned rnd = 0;
  int ur = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (ur >= 0) {
    if (read(ur, &rnd, sizeof rnd) != sizeof rnd) rnd = (unsigned)getpid() * 2654435761u;
    close(ur);
  }
  snprintf(name, sizeof name, PREFIX "%d-%08x", (int)getpid(), rnd);
  struct sockaddr_un a;
  memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  size_t n = strlen(name);
  memcpy(a.sun_path + 1, name, n);
  if (bind(fd, (struct sockaddr *)&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)) < 0 || listen(fd, 4) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  on_prepare = prepare;
  on_resume = resume;
  user_arg = arg;
  listener = fd;
  pthread_t t;
  int e = pthread_create(&t, NULL, loop, NULL);
  if (e) {
    close(fd);
    listener = -1;
    return -e;
  }
  pthread_detach(t);
  return 0;
}
