/* ckpt-repairguard: takes TCP connections out of repair mode if the ckpt that put them there dies,
 * and puts back socket options a dump changed for a moment.
 *
 * A dump reads a live connection's queues and sequence numbers in repair mode (TCP_REPAIR), which
 * the socket keeps until someone turns it off: a ckpt killed in that window would leave the
 * process with a connection that no longer sends. Before turning repair mode on, ckpt hands this
 * helper a copy of the socket; after turning it off, it says so and the helper drops the copy.
 * When ckpt's end of the channel closes (it exited or was killed), every socket still held leaves
 * repair mode (with a window probe, and SO_REUSEADDR as the process had it), then the helper exits.
 *
 * It keeps, the same way, any int socket option a dump changes for a moment on a socket the
 * process holds (SO_PEEK_OFF while a receive queue is read without consuming it): if ckpt dies
 * before putting the option back, the helper does.
 *
 * fd 0: a SOCK_SEQPACKET socket to ckpt. Messages (native byte order):
 *   'R', int32 id, int32 reuseaddr (-1: leave it)   with the socket attached (SCM_RIGHTS)
 *   'S', int32 id, int32 level, int32 name, int32 value   with the socket attached: put the
 *                                                   option back to value if ckpt dies
 *   'D', int32 id                                   done with that socket (out of repair mode,
 *                                                   option put back)
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef TCP_REPAIR
#define TCP_REPAIR 19
#endif

struct held {
  int32_t id;
  char kind; /* 'R' repair mode, 'S' a socket option */
  int32_t reuse, level, name, value;
  int fd;
};

static struct held *held;
static size_t nheld, cap;

static void drop(int32_t id) {
  for (size_t k = 0; k < nheld; k++) {
    if (held[k].id != id) continue;
    close(held[k].fd);
    held[k] = held[--nheld];
    return;
  }
}

static void hold(struct held h) {
  if (nheld == cap) {
    cap = cap ? cap * 2 : 16;
    struct held *n = realloc(held, cap * sizeof *held);
    if (!n) {
      close(h.fd);
      return;
    }
    held = n;
  }
  held[nheld++] = h;
}

int main(void) {
  for (;;) {
    char buf[32];
    char ctl[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {buf, sizeof buf};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
    ssize_t n = recvmsg(0, &msg, MSG_CMSG_CLOEXEC);
    if (n <= 0) break; /* ckpt is gone (or the channel broke): let go of everything */
    int fd = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) memcpy(&fd, CMSG_DATA(c), sizeof fd);
    struct held h = {.kind = buf[0], .reuse = -1, .fd = fd};
    if (n >= 5) memcpy(&h.id, buf + 1, 4);
    if (buf[0] == 'R' && n >= 9 && fd >= 0) {
      memcpy(&h.reuse, buf + 5, 4);
      hold(h);
    } else if (buf[0] == 'S' && n >= 17 && fd >= 0) {
      memcpy(&h.level, buf + 5, 4);
      memcpy(&h.name, buf + 9, 4);
      memcpy(&h.value, buf + 13, 4);
      hold(h);
    } else {
      if (fd >= 0) close(fd);
      if (buf[0] == 'D') drop(h.id);
    }
  }
  for (size_t k = 0; k < nheld; k++) {
    if (held[k].kind == 'S') {
      setsockopt(held[k].fd, held[k].level, held[k].name, &held[k].value, sizeof held[k].value);
    } else {
      int off = 0;
      setsockopt(held[k].fd, IPPROTO_TCP, TCP_REPAIR, &off, sizeof off);
      if (held[k].reuse >= 0) setsockopt(held[k].fd, SOL_SOCKET, SO_REUSEADDR, &held[k].reuse, sizeof held[k].reuse);
    }
    close(held[k].fd);
  }
  return 0;
}
