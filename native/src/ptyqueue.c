/* ckpt-ptyqueue: reads the bytes queued in a pty, both ways, puts them back, and tells ckpt.
 *
 * A terminal has no peek: the dump reads what is queued (output the master has not read, input
 * the slave has not read) and writes it back at once. Were ckpt killed between the two, the bytes
 * would be lost and the slave left with the settings used for the read. So a dump hands the
 * whole operation to this helper, which finishes it whatever becomes of ckpt (it runs in a
 * session of its own, and writes its answer only once the bytes are back).
 *
 * fd 0: the master (a copy of the process's); fd 1: where the answer goes. argv[1]: the slave's
 * struct termios (36 bytes, hex) as the process has it; argv[2]: "1" when the master is in
 * packet mode. Answer: u32 output length, output, u32 input length, input (native byte order).
 * With argv[3] "put" (a restore: the bytes go into a new pty), nothing is read: the bytes to put
 * back come on fd 2 in the answer's layout, and the answer is empty.
 *
 * Reading: output through the master (FIONREAD bytes, packet mode off meanwhile); input through a
 * slave of our own (TIOCGPTPEER), non-canonical for the read so that a partial line is readable.
 * Putting back: with the slave's settings inert for a moment (no echo, signals, input or output
 * processing, editing characters) and canonical mode kept, input is written to the master and
 * output to the slave; a poll on the other side makes the kernel take them before the settings
 * come back. Exit status: 0, or 1 (nothing was read: nothing to put back), 2 (bytes read, some not
 * put back: the answer still carries them, and says so by a non-zero status).
 */
#define _GNU_SOURCE
#include <asm/termbits.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#ifndef TIOCGPTPEER
#define TIOCGPTPEER 0x5441
#endif

static int hexval(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; }

/* Settings under which bytes written back are taken as they are. */
static struct termios inert(struct termios t) {
  t.c_iflag &= ~(BRKINT | PARMRK | INPCK | ISTRIP | INLCR | IGNCR | ICRNL | IUCLC | IXON | IXOFF | IMAXBEL);
  t.c_oflag &= ~OPOST;
  t.c_lflag &= ~(ISIG | ECHO | ECHOE | ECHOK | ECHONL | ECHOCTL | ECHOPRT | ECHOKE | IEXTEN | TOSTOP);
  int cc[] = {VERASE, VKILL, VEOF, VREPRINT, VWERASE, VLNEXT};
  for (size_t i = 0; i < sizeof cc / sizeof cc[0]; i++) t.c_cc[cc[i]] = 0;
  return t;
}

/* Reads exactly n bytes (0 when the writer closed early). */
static int read_all(int fd, char *p, size_t n) {
  while (n) {
    ssize_t r = read(fd, p, n);
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

/* u32 length, then that many bytes, from fd (a put's input). */
static char *read_chunk(int fd, size_t *len) {
  uint32_t l = 0;
  *len = 0;
  if (read_all(fd, (char *)&l, 4) || l > (64u << 20)) return NULL;
  char *b = malloc(l ? l : 1);
  if (!b || read_all(fd, b, l)) {
    free(b);
    return NULL;
  }
  *len = l;
  return b;
}

static char *read_queued(int fd, size_t *len) {
  int n = 0;
  *len = 0;
  if (ioctl(fd, FIONREAD, &n) < 0 || n <= 0) return NULL;
  char *b = malloc((size_t)n);
  if (!b) return NULL;
  ssize_t r = read(fd, b, (size_t)n);
  if (r <= 0) {
    free(b);
    return NULL;
  }
  *len = (size_t)r;
  return b;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EAGAIN) {
        struct pollfd pf = {fd, POLLOUT, 0};
        poll(&pf, 1, 1000);
        continue;
      }
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static void settle(int fd) {
  struct pollfd p = {fd, POLLIN, 0};
  poll(&p, 1, 0);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  if (argc < 3 || strlen(argv[1]) != 2 * sizeof(struct termios)) return 3;
  struct termios saved;
  unsigned char *t = (unsigned char *)&saved;
  for (size_t i = 0; i < sizeof saved; i++) {
    int h = hexval(argv[1][2 * i]), l = hexval(argv[1][2 * i + 1]);
    if (h < 0 || l < 0) return 3;
    t[i] = (unsigned char)(h << 4 | l);
  }
  int packet = argv[2][0] == '1', put = argc > 3 && !strcmp(argv[3], "put"), m = 0, zero = 0, one = 1;

  size_t outLen = 0, inLen = 0;
  char *out = NULL, *in = NULL;
  if (put) {
    out = read_chunk(2, &outLen);
    if (out) in = read_chunk(2, &inLen);
    if (!out || !in) return 3;
  } else {
    if (packet) ioctl(m, TIOCPKT, &zero);
    out = read_queued(m, &outLen);
    if (packet) ioctl(m, TIOCPKT, &one);
  }
  int s = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  if (s >= 0 && !put) {
    struct termios nc = inert(saved);
    nc.c_lflag &= ~ICANON;
    nc.c_cc[VMIN] = 0;
    nc.c_cc[VTIME] = 0;
    if (ioctl(s, TCSETS, &nc) == 0) in = read_queued(s, &inLen);
    ioctl(s, TCSETS, &saved);
  }
  int status = outLen || inLen ? 0 : 1;
  if (status == 0) {
    struct termios q = inert(saved);
    int bad = s < 0 || ioctl(s, TCSETS, &q) != 0;
    if (!bad && inLen) {
      bad |= write_all(m, in, inLen);
      settle(s);
    }
    if (!bad && outLen) {
      bad |= write_all(s, out, outLen);
      settle(m);
    }
    if (s >= 0) ioctl(s, TCSETS, &saved);
    if (bad) status = 2;
  }
  if (s >= 0) close(s);
  if (put) return status == 1 ? 0 : status;
  uint32_t l = (uint32_t)outLen;
  if (write_all(1, (char *)&l, 4) == 0 && write_all(1, out ? out : "", outLen) == 0) {
    l = (uint32_t)inLen;
    if (write_all(1, (char *)&l, 4) == 0) write_all(1, in ? in : "", inLen);
  }
  return status;
}
