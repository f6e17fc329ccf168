/* ckpt-memtrack: keeps the write tracking of checkpointed processes alive between two dumps.
 *
 * `ckpt dump --track-mem` write-protects a process's private memory through a userfaultfd of its
 * address space (asynchronous mode: a write never waits, the kernel only clears the page's
 * uffd-wp bit), so that the next dump can save only the pages written since. The tracking lasts
 * as long as someone holds the userfaultfd: not the process (its fds stay its own), but this
 * helper, which holds each one with a pidfd of its process and drops both when the process
 * exits. The next dump takes the userfaultfds from it (pidfd_getfd) and ends it; its own helper
 * holds them after it.
 *
 * fd 0: a SOCK_SEQPACKET socket to ckpt. At start the helper forks (the parent exits at once,
 * so nobody has to reap the helper) and sends its pid (int32). Then messages (native byte order):
 *   'H', int32 pid    with [userfaultfd, pidfd] attached: hold them; reply int32: the fd number
 *                     the userfaultfd has here (what pidfd_getfd takes), -1 if none came
 *   'C'               the dump that reset the tracking is committed: go on holding after ckpt's
 *                     channel closes
 * If the channel closes before 'C' (the dump failed, or ckpt died), the helper exits and the
 * tracking ends with it: an image that was never committed must not be a parent. After 'C' it
 * waits for its processes to exit (or SIGTERM, SIGKILL), then exits.
 */
#define _GNU_SOURCE
#include "scm.h"
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HELD 4096

struct held {
  int uffd, pidfd;
};

static struct held held[MAX_HELD];
static int nheld;

int main(void) {
  pid_t child = fork();
  if (child < 0) return 1;
  if (child > 0) _exit(0);
  prctl(PR_SET_NAME, "ckpt-memtrack");
  signal(SIGPIPE, SIG_IGN);
  int32_t me = getpid();
  if (write(0, &me, sizeof(me)) != sizeof(me)) return 1;
  int committed = 0;
  for (;;) {
    char buf[16];
    int fds[2];
    ssize_t n = recv_with_fds(0, buf, sizeof(buf), fds, 2);
    if (n <= 0) break;
    if (buf[0] == 'H' && n >= 5) {
      int32_t reply = -1;
      if (fds[0] >= 0 && fds[1] >= 0 && nheld < MAX_HELD) {
        held[nheld].uffd = fds[0];
        held[nheld].pidfd = fds[1];
        nheld++;
        reply = fds[0];
      } else {
        if (fds[0] >= 0) close(fds[0]);
        if (fds[1] >= 0) close(fds[1]);
      }
      if (write(0, &reply, sizeof(reply)) != sizeof(reply)) break;
    } else if (buf[0] == 'C') {
      committed = 1;
    }
  }
  if (!committed) return 0;
  close(0);
  /* Hold until every process has exited: a pidfd polls readable when its process exits. */
  struct pollfd *p = calloc(nheld ? nheld : 1, sizeof(*p));
  if (!p) return 1;
  int left = nheld;
  for (int i = 0; i < nheld; i++) p[i].fd = held[i].pidfd, p[i].events = POLLIN;
  while (left > 0) {
    if (poll(p, nheld, -1) < 0) continue;
    for (int i = 0; i < nheld; i++) {
      if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL))) continue;
      close(held[i].uffd);
      close(held[i].pidfd);
      p[i].fd = -1;
      left--;
    }
  }
  return 0;
}
