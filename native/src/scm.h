/* scm.h: receiving a message with the fds attached to it (SCM_RIGHTS), for ckpt's helper
 * binaries (ckpt-memtrack, ckpt-lazy), which get their fds from ckpt over a socket. */
#ifndef CKPT_SCM_H
#define CKPT_SCM_H
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

/* One message into buf, and up to `max` (at most 8) fds attached into fds (-1 where none came;
 * any beyond `max` closed). recvmsg's result: bytes, 0 at the end, -1 (errno). */
static ssize_t recv_with_fds(int sock, void *buf, size_t len, int *fds, int max) {
  union {
    struct cmsghdr h;
    char space[CMSG_SPACE(8 * sizeof(int))];
  } ctl;
  struct iovec iov = {buf, len};
  struct msghdr m = {0};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl.space;
  m.msg_controllen = sizeof(ctl.space);
  for (int i = 0; i < max; i++) fds[i] = -1;
  ssize_t n;
  do n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return n;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    int *got = (int *)CMSG_DATA(c);
    for (int i = 0; i < k; i++) {
      if (i < max) fds[i] = got[i];
      else close(got[i]);
    }
  }
  return n;
}
#endif
