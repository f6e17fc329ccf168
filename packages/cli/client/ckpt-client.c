/*
 * The `ckpt` command's way to a running `ckpt server`, in C: a served dump or restore then costs
 * what the server spends on it and a few milliseconds here, not Node's start-up (some 40-50 ms on
 * a small VM, more than a small process's whole dump).
 *
 * bin/ckpt.js (a shell script as much as JavaScript) runs this file's program, dist/ckpt-client,
 * when a server's socket is there; this program asks the server exactly as bin.ts does (served.ts
 * and server.ts define the wire; the request carries the same fields), and where the command is not
 * one the server runs, or the server refuses it or does not answer, it runs the command in Node
 * instead (bin/ckpt.js again, as JavaScript), which runs it in its own process.
 *
 * Which commands are served is served.ts's notServed, written again below (servedWhy);
 * test/client.test.ts holds the two to the same answers.
 *
 * Built by scripts/build-client.mjs (cc, at `npm run build`); without a C compiler there is no
 * dist/ckpt-client and bin/ckpt.js runs Node as ever.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef CKPT_VERSION
#error "CKPT_VERSION is defined by scripts/build-client.mjs"
#endif

extern char **environ;

/* served.ts: SERVER_SOCKET, ANSWER_MS. */
#define SERVER_SOCKET "/run/ckpt/ckpt.sock"
#define ANSWER_MS 10000

/* A growing buffer (the request line; a line read from the server). */
struct buf {
  char *p;
  size_t len, cap;
};

static void grow(struct buf *b, size_t more) {
  if (b->len + more + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + more + 1) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) {
    fputs("ckpt: error: out of memory\n", stderr);
    exit(1);
  }
  b->p = p;
  b->cap = cap;
}

static void put(struct buf *b, const char *s, size_t n) {
  grow(b, n);
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
}

static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

/* A JSON string: what JSON.stringify escapes; other bytes as they are (UTF-8 passes through). */
static void putJson(struct buf *b, const char *s) {
  puts_(b, "\"");
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    char esc[8];
    if (*c == '"' || *c == '\\') {
      esc[0] = '\\', esc[1] = (char)*c, esc[2] = 0;
      puts_(b, esc);
    } else if (*c < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", *c);
      puts_(b, esc);
    } else {
      put(b, (const char *)c, 1);
    }
  }
  puts_(b, "\"");
}

/* ---------------------------------------------------------------------------------------------
 * Which commands the server runs: served.ts's notServed (test/client.test.ts compares the two). */

static const char *const SERVED_VERBS[] = {"dump", "pre-dump", "restore", NULL};
/* UNSERVED_OPTIONS: these, alone or with `=...`. */
static const char *const UNSERVED_OPTIONS[] = {"-c", "--config", "-p", "--plugin", "-v", "--verbose", "--log-file", "-h", "--help", NULL};
/* UNSERVED_RESTORE_OPTIONS. */
static const char *const UNSERVED_RESTORE_OPTIONS[] = {"-s", "--substitute", "--inherit-fd", "--checkpoint-every", NULL};

static int isOption(const char *arg, const char *const *list) {
  for (; *list; list++) {
    size_t n = strlen(*list);
    if (strncmp(arg, *list, n) == 0 && (arg[n] == 0 || arg[n] == '=')) return 1;
  }
  return 0;
}

/* NULL where the server runs this command; else why not (served.ts's words). */
static char notVerb[256];
static const char *servedWhy(int argc, char **argv) {
  const char *verb = NULL;
  for (int i = 1; i < argc && !verb; i++)
    if (argv[i][0] != '-') verb = argv[i];
  int known = 0;
  for (const char *const *v = SERVED_VERBS; verb && *v; v++) known |= strcmp(verb, *v) == 0;
  if (!known) {
    snprintf(notVerb, sizeof notVerb, "not served: %s", verb ? verb : "no command");
    return notVerb;
  }
  for (int i = 1; i < argc; i++)
    if (isOption(argv[i], UNSERVED_OPTIONS)) return "options that change what is loaded or logged";
  if (strcmp(verb, "restore") != 0) return NULL;
  int detach = 0;
  for (int i = 1; i < argc; i++) detach |= strcmp(argv[i], "-d") == 0 || strcmp(argv[i], "--detach") == 0;
  if (!detach) return "a restore that waits for its processes (no -d)";
  for (int i = 1; i < argc; i++)
    if (isOption(argv[i], UNSERVED_RESTORE_OPTIONS)) return "--substitute, --inherit-fd or --checkpoint-every";
  return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Running the command in Node (bin/ckpt.js as JavaScript), as bin/ckpt.js's shell line does. */

static char jsEntry[PATH_MAX + 32];

static void runInNode(int argc, char **argv) __attribute__((noreturn));
static void runInNode(int argc, char **argv) {
  /* bin/ckpt.js's shell line: Node starts without NODE_EXTRA_CA_CERTS, put back by ckpt.js. */
  const char *ca = getenv("NODE_EXTRA_CA_CERTS");
  if (ca) {
    setenv("CKPT_NODE_EXTRA_CA_CERTS", ca, 1);
    unsetenv("NODE_EXTRA_CA_CERTS");
  }
  char **args = calloc((size_t)argc + 2, sizeof *args);
  if (!args) exit(1);
  args[0] = "node";
  args[1] = jsEntry;
  for (int i = 1; i < argc; i++) args[i + 1] = argv[i];
  execvp("node", args);
  fprintf(stderr, "ckpt: error: cannot run node: %s\nckpt: hint: ckpt needs Node.js (node) on the PATH\n", strerror(errno));
  exit(127);
}

/* ---------------------------------------------------------------------------------------------
 * The request (server.ts: ServerRequest). */

static const char *const NAMESPACES[] = {"mnt", "pid", "net", "ipc", "uts", "user", "cgroup", NULL};

/* served.ts's SENT_ENV: CKPT_*, HOME, TMPDIR, DEBUG, NODE_PATH. */
static int sentEnv(const char *kv) {
  if (strncmp(kv, "CKPT_", 5) == 0) return 1;
  static const char *const names[] = {"HOME=", "TMPDIR=", "DEBUG=", "NODE_PATH=", NULL};
  for (const char *const *n = names; *n; n++)
    if (strncmp(kv, *n, strlen(*n)) == 0) return 1;
  return 0;
}

static int request(struct buf *b, int argc, char **argv, const char *bundle) {
  struct stat st;
  if (stat(bundle, &st) != 0) return -1;
  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd)) return -1;
  char num[64];
  puts_(b, "{\"v\":1,\"client\":\"c\",\"version\":");
  putJson(b, CKPT_VERSION);
  snprintf(num, sizeof num, ",\"bundle\":\"%lld%09ld\"", (long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec);
  puts_(b, num);
  puts_(b, ",\"argv\":[");
  for (int i = 1; i < argc; i++) {
    if (i > 1) puts_(b, ",");
    putJson(b, argv[i]);
  }
  puts_(b, "],\"cwd\":");
  putJson(b, cwd);
  mode_t mask = umask(0);
  umask(mask);
  snprintf(num, sizeof num, ",\"pid\":%d,\"uid\":%d,\"umask\":%u,\"env\":{", (int)getpid(), (int)geteuid(), (unsigned)mask);
  puts_(b, num);
  int first = 1;
  for (char **e = environ; *e; e++) {
    const char *eq = strchr(*e, '=');
    if (!eq || !sentEnv(*e)) continue;
    char *key = strndup(*e, (size_t)(eq - *e));
    if (!key) return -1;
    if (!first) puts_(b, ",");
    first = 0;
    putJson(b, key);
    free(key);
    puts_(b, ":");
    putJson(b, eq + 1);
  }
  puts_(b, "},\"ns\":{");
  for (const char *const *ns = NAMESPACES; *ns; ns++) {
    char path[64], link[256];
    snprintf(path, sizeof path, "/proc/self/ns/%s", *ns);
    ssize_t n = readlink(path, link, sizeof link - 1);
    link[n > 0 ? n : 0] = 0;
    if (ns != NAMESPACES) puts_(b, ",");
    putJson(b, *ns);
    puts_(b, ":");
    putJson(b, link);
  }
  puts_(b, "},\"tty\":[");
  puts_(b, isatty(1) ? "true," : "false,");
  puts_(b, isatty(2) ? "true]}\n" : "false]}\n");
  return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The server's lines: {"ok":PID}, {"refuse":"..."}, {"o":1|2,"d":"..."}, {"exit":N}. Flat
 * objects of JSON.stringify's making; a line not of that shape is skipped, as bin.ts does. */

struct message {
  int hasOk, hasRefuse, hasExit, o, hasD;
  long ok, exitStatus;
  struct buf d;
};

static void putUtf8(struct buf *b, unsigned cp) {
  char u[4];
  size_t n;
  if (cp < 0x80) u[0] = (char)cp, n = 1;
  else if (cp < 0x800) u[0] = (char)(0xc0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
  else if (cp < 0x10000) u[0] = (char)(0xe0 | cp >> 12), u[1] = (char)(0x80 | ((cp >> 6) & 0x3f)), u[2] = (char)(0x80 | (cp & 0x3f)), n = 3;
  else u[0] = (char)(0xf0 | cp >> 18), u[1] = (char)(0x80 | ((cp >> 12) & 0x3f)), u[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), u[3] = (char)(0x80 | (cp & 0x3f)), n = 4;
  put(b, u, n);
}

static int hex4(const char *s, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = s[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  *out = v;
  return 0;
}

/* A JSON string at *s (after its quote) into out; *s left after its closing quote. */
static int parseString(const char **s, struct buf *out) {
  const char *p = *s;
  for (;;) {
    char c = *p++;
    if (!c) return -1;
    if (c == '"') break;
    if (c != '\\') {
      if (out) put(out, &c, 1);
      continue;
    }
    char e = *p++;
    const char *plain = strchr("\"\\/bfnrt", e);
    if (e && plain) {
      static const char map[] = "\"\\/\b\f\n\r\t";
      if (out) put(out, &map[plain - "\"\\/bfnrt"], 1);
      continue;
    }
    if (e != 'u') return -1;
    unsigned cp;
    if (hex4(p, &cp)) return -1;
    p += 4;
    if (cp >= 0xd800 && cp < 0xdc00) {
      unsigned lo;
      if (p[0] == '\\' && p[1] == 'u' && !hex4(p + 2, &lo) && lo >= 0xdc00 && lo < 0xe000) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        p += 6;
      } else {
        cp = 0xfffd;
      }
    } else if (cp >= 0xdc00 && cp < 0xe000) {
      cp = 0xfffd;
    }
    if (out) putUtf8(out, cp);
  }
  *s = p;
  return 0;
}

static int parseMessage(const char *line, struct message *m) {
  const char *p = line;
  m->hasOk = m->hasRefuse = m->hasExit = m->hasD = 0;
  m->o = 0;
  m->d.len = 0;
  if (*p++ != '{') return -1;
  while (*p && *p != '}') {
    if (*p == ',') p++;
    if (*p++ != '"') return -1;
    struct buf key = {0};
    if (parseString(&p, &key) || *p++ != ':') {
      free(key.p);
      return -1;
    }
    const char *k = key.p ? key.p : "";
    if (*p == '"') {
      p++;
      int isD = strcmp(k, "d") == 0;
      if (isD) {
        if (!m->d.p) grow(&m->d, 0);
        m->d.p[0] = 0;
      }
      if (parseString(&p, isD ? &m->d : NULL)) {
        free(key.p);
        return -1;
      }
      m->hasD |= isD;
      m->hasRefuse |= strcmp(k, "refuse") == 0;
    } else {
      char *end;
      long v = strtol(p, &end, 10);
      if (end == p) {
        free(key.p);
        return -1;
      }
      p = end;
      if (*p == '.' || *p == 'e' || *p == 'E') {
        /* Not an integer: not a value of these messages. */
        free(key.p);
        return -1;
      }
      if (strcmp(k, "ok") == 0) m->hasOk = 1, m->ok = v;
      else if (strcmp(k, "exit") == 0) m->hasExit = 1, m->exitStatus = v;
      else if (strcmp(k, "o") == 0) m->o = (int)v;
    }
    free(key.p);
  }
  return *p == '}' ? 0 : -1;
}

/* ---------------------------------------------------------------------------------------------
 * The command served. */

/* Writes all of text to fd 1 or 2 (a full non-blocking pipe waited for; a closed one dropped). */
static int closedOut[3];
static void writeOut(int fd, const char *p, size_t n) {
  while (n && !closedOut[fd]) {
    ssize_t w = write(fd, p, n);
    if (w > 0) {
      p += w, n -= (size_t)w;
    } else if (w < 0 && errno == EAGAIN) {
      struct pollfd pf = {.fd = fd, .events = POLLOUT};
      poll(&pf, 1, -1);
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else {
      closedOut[fd] = 1;
    }
  }
}

static volatile sig_atomic_t pendingSignal;
static void onSignal(int sig) { pendingSignal = sig; }

static long long nowMs(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int hasJson(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--json") == 0) return 1;
  return 0;
}

/*
 * Asks the server at `path` to run the command: returns only where it does not (refused, not
 * answering within ANSWER_MS, unreachable); once it has taken the command, exits with its status.
 */
static void viaServer(const char *path, int argc, char **argv, const char *bundle) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof addr.sun_path) return;
  strcpy(addr.sun_path, path);
  struct buf req = {0};
  if (request(&req, argc, argv, bundle)) return;
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return;
  if (connect(s, (struct sockaddr *)&addr, sizeof addr) != 0) {
    close(s);
    return;
  }
  for (size_t off = 0; off < req.len;) {
    ssize_t w = write(s, req.p + off, req.len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      close(s);
      return;
    }
    off += (size_t)w;
  }
  free(req.p);

  int served = 0;
  long serverPid = 0;
  long long deadline = nowMs() + ANSWER_MS;
  struct buf in = {0};
  struct message m = {0};
  for (;;) {
    if (served && pendingSignal) {
      const char *name = pendingSignal == SIGINT ? "SIGINT" : pendingSignal == SIGTERM ? "SIGTERM" : "SIGHUP";
      pendingSignal = 0;
      char line[64];
      int n = snprintf(line, sizeof line, "{\"abort\":\"%s\"}\n", name);
      /* The server reads it between steps; a full socket buffer cannot be, at one short line. */
      if (write(s, line, (size_t)n) < 0) {
      }
    }
    struct pollfd pf = {.fd = s, .events = POLLIN};
    int timeout = -1;
    if (!served) {
      long long left = deadline - nowMs();
      if (left <= 0) break;
      timeout = (int)left;
    }
    int r = poll(&pf, 1, timeout);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) break;
    if (r < 0) break;
    grow(&in, 65536);
    ssize_t got = read(s, in.p + in.len, in.cap - in.len - 1);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (got <= 0) {
      if (!served) break;
      /* The server ended without the command's result: what a killed ckpt leaves (bin.ts). */
      char msg[256];
      snprintf(msg, sizeof msg, "the ckpt server (pid %ld) ended during the command, before its result", serverPid);
      const char *hint = "ckpt check says what a dump that was killed left (ckpt check --repair removes it)";
      if (hasJson(argc, argv)) {
        struct buf j = {0};
        puts_(&j, "{\"error\":{\"code\":\"ERR_CKPT_SERVER_LOST\",\"message\":");
        putJson(&j, msg);
        puts_(&j, ",\"hint\":");
        putJson(&j, hint);
        puts_(&j, "}}\n");
        writeOut(1, j.p, j.len);
      }
      char text[512];
      int n = snprintf(text, sizeof text, "ckpt: error: %s\nckpt: hint: %s\n", msg, hint);
      writeOut(2, text, (size_t)n);
      exit(1);
    }
    in.len += (size_t)got;
    in.p[in.len] = 0;
    char *line = in.p, *nl;
    while ((nl = memchr(line, '\n', in.len - (size_t)(line - in.p)))) {
      *nl = 0;
      if (parseMessage(line, &m) == 0) {
        if (m.hasRefuse && !served) {
          close(s);
          return;
        }
        if (m.hasOk && !served) {
          served = 1;
          serverPid = m.ok;
          /* From here on, the command's SIGINT/SIGTERM/SIGHUP stop it there (bin.ts). */
          struct sigaction sa = {.sa_handler = onSignal};
          sigemptyset(&sa.sa_mask);
          sigaction(SIGINT, &sa, NULL);
          sigaction(SIGTERM, &sa, NULL);
          sigaction(SIGHUP, &sa, NULL);
        } else if ((m.o == 1 || m.o == 2) && m.hasD) {
          writeOut(m.o, m.d.p, m.d.len);
        } else if (m.hasExit && served) {
          exit((int)(m.exitStatus & 0xff));
        }
      }
      line = nl + 1;
    }
    size_t rest = in.len - (size_t)(line - in.p);
    memmove(in.p, line, rest);
    in.len = rest;
  }
  close(s);
}

int main(int argc, char **argv) {
  /* fds 0-2 open, as Node makes them: a command started with one closed would otherwise take it
   * for its connection, and write the command's output into it. */
  for (int fd = 0; fd < 3; fd++)
    if (fcntl(fd, F_GETFD) < 0 && errno == EBADF && open("/dev/null", fd ? O_WRONLY : O_RDONLY) < 0) return 1;
  /* This program is dist/ckpt-client: the bundle is dist/cli.cjs, the entry bin/ckpt.js. */
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    fputs("ckpt: error: cannot find its own program (/proc/self/exe)\n", stderr);
    return 1;
  }
  self[n] = 0;
  char *slash = strrchr(self, '/');
  *slash = 0;
  char bundle[PATH_MAX + 32];
  snprintf(bundle, sizeof bundle, "%s/cli.cjs", self);
  snprintf(jsEntry, sizeof jsEntry, "%s/../bin/ckpt.js", self);

  /* For test/client.test.ts: what servedWhy says, and nothing else. */
  if (getenv("CKPT_CLIENT_SERVED_WHY")) {
    const char *why = servedWhy(argc, argv);
    printf("%s\n", why ? why : "served");
    return 0;
  }
  /* bin.ts answers this from the version alone; so does this program. */
  if (argc == 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)) {
    puts(CKPT_VERSION);
    return fflush(stdout) == 0 ? 0 : 1;
  }
  /* bin.ts's serverSocket. */
  const char *off = getenv("CKPT_SERVER");
  const char *path = getenv("CKPT_SERVER_SOCKET");
  if (!path || !*path) path = SERVER_SOCKET;
  struct stat st;
  if (!(off && strcmp(off, "off") == 0) && !servedWhy(argc, argv) && stat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
    /* A closed stdout or stderr is dropped, as bin.ts's writeOut does (Node ignores SIGPIPE). */
    signal(SIGPIPE, SIG_IGN);
    viaServer(path, argc, argv, bundle);
    signal(SIGPIPE, SIG_DFL);
    /* Not served: in Node, the command asks no server again (bin.ts takes this variable away). */
    setenv("CKPT_CLIENT_ASKED", "1", 1);
  }
  runInNode(argc, argv);
}
