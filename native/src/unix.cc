// Unix sockets (@ckpt/plugin-unix-socket): the kernel's table of AF_UNIX sockets through
// NETLINK_SOCK_DIAG (names, peers, pending connections, queue lengths, shutdown state),
// non-consuming reads of a socket's receive queue (MSG_PEEK walked with SO_PEEK_OFF), and the
// socket calls Node does not expose (socket/socketpair/bind/connect/listen/accept/sendto/
// shutdown/getsockopt on AF_UNIX; setsockopt and listen are sock.cc's sockSetBytes and
// sockListen).
//
// Addresses cross the boundary as the raw bytes of sun_path: a path without its trailing NUL,
// or an abstract name with its leading NUL; an empty buffer is "unnamed".
#include "sock.h"

#include <fcntl.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#ifndef SIOCGSKNS
#define SIOCGSKNS 0x894C
#endif
#ifndef SO_PEEK_OFF
#define SO_PEEK_OFF 42
#endif

namespace ckpt {
namespace {

constexpr size_t kPathOff = offsetof(struct sockaddr_un, sun_path);

// sockaddr_un from raw sun_path bytes (see the header); returns its length, 0 when too long.
socklen_t MakeAddr(const Napi::Value& v, sockaddr_un* sa) {
  memset(sa, 0, sizeof(*sa));
  sa->sun_family = AF_UNIX;
  if (v.IsUndefined() || v.IsNull()) return kPathOff;
  Napi::Buffer<uint8_t> b = v.As<Napi::Buffer<uint8_t>>();
  size_t len = b.Length();
  if (len == 0) return kPathOff;
  bool abstract = b.Data()[0] == 0;
  if (!abstract) {
    while (len > 0 && b.Data()[len - 1] == 0) len--;
    if (len + 1 > sizeof(sa->sun_path)) return 0;
    memcpy(sa->sun_path, b.Data(), len);
    return static_cast<socklen_t>(kPathOff + len + 1);
  }
  if (len > sizeof(sa->sun_path)) return 0;
  memcpy(sa->sun_path, b.Data(), len);
  return static_cast<socklen_t>(kPathOff + len);
}

// Raw sun_path bytes of an address the kernel returned (trailing NULs of a path dropped).
Napi::Value AddrBytes(Napi::Env env, const uint8_t* p, size_t len) {
  if (len > 0 && p[0] != 0) {
    size_t n = strnlen(reinterpret_cast<const char*>(p), len);
    len = n;
  }
  return Napi::Buffer<uint8_t>::Copy(env, p, len);
}

Napi::Value Fail(const Napi::CallbackInfo& info, const char* what) {
  ThrowErrno(info.Env(), errno, what);
  return info.Env().Undefined();
}

Napi::Value TooLong(const Napi::CallbackInfo& info) {
  ThrowErrnoMsg(info.Env(), ENAMETOOLONG, "unix socket address longer than sun_path");
  return info.Env().Undefined();
}

// unixDiag() -> every AF_UNIX socket of the caller's network namespace:
// { ino, type, state, shutdown, rqueue, wqueue, name?, vfsIno?, vfsDev?, peer?, icons?, uid? }
Napi::Value UnixDiag(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  unix_diag_req req{};
  req.sdiag_family = AF_UNIX;
  req.udiag_states = ~0u;
  req.udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN | UDIAG_SHOW_UID;
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  const char* stage = nullptr;
  int r = SockDiag(SOCK_DIAG_BY_FAMILY, NLM_F_DUMP, &req, sizeof req, [&](const nlmsghdr* h) {
    auto* m = static_cast<const unix_diag_msg*>(NLMSG_DATA(h));
    Napi::Object o = Napi::Object::New(env);
    o.Set("ino", Napi::Number::New(env, m->udiag_ino));
    o.Set("type", Napi::Number::New(env, m->udiag_type));
    o.Set("state", Napi::Number::New(env, m->udiag_state));
    o.Set("shutdown", Napi::Number::New(env, 0));
    o.Set("rqueue", Napi::Number::New(env, 0));
    o.Set("wqueue", Napi::Number::New(env, 0));
    int alen = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));
    for (auto* a = reinterpret_cast<const rtattr*>(m + 1); RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
      const uint8_t* d = static_cast<const uint8_t*>(RTA_DATA(a));
      size_t dl = RTA_PAYLOAD(a);
      switch (a->rta_type) {
        case UNIX_DIAG_NAME:
          o.Set("name", AddrBytes(env, d, dl));
          break;
        case UNIX_DIAG_VFS:
          if (dl >= sizeof(unix_diag_vfs)) {
            auto* v = reinterpret_cast<const unix_diag_vfs*>(d);
            o.Set("vfsIno", Napi::Number::New(env, v->udiag_vfs_ino));
            o.Set("vfsDev", Napi::Number::New(env, v->udiag_vfs_dev));
          }
          break;
        case UNIX_DIAG_PEER:
          if (dl >= 4) o.Set("peer", Napi::Number::New(env, *reinterpret_cast<const uint32_t*>(d)));
          break;
        case UNIX_DIAG_ICONS: {
          Napi::Array icons = Napi::Array::New(env);
          for (size_t i = 0; i + 4 <= dl; i += 4) icons.Set(static_cast<uint32_t>(i / 4), Napi::Number::New(env, *reinterpret_cast<const uint32_t*>(d + i)));
          o.Set("icons", icons);
          break;
        }
        case UNIX_DIAG_RQLEN:
          if (dl >= sizeof(unix_diag_rqlen)) {
            auto* q = reinterpret_cast<const unix_diag_rqlen*>(d);
            o.Set("rqueue", Napi::Number::New(env, q->udiag_rqueue));
            o.Set("wqueue", Napi::Number::New(env, q->udiag_wqueue));
          }
          break;
        case UNIX_DIAG_SHUTDOWN:
          if (dl >= 1) o.Set("shutdown", Napi::Number::New(env, d[0]));
          break;
        case UNIX_DIAG_UID:
          if (dl >= 4) o.Set("uid", Napi::Number::New(env, *reinterpret_cast<const uint32_t*>(d)));
          break;
        default:
          break;
      }
    }
    out.Set(n++, o);
    return true;
  }, -1, &stage);
  if (r < 0) {
    errno = -r;
    return Fail(info, stage ? stage : "sock_diag(AF_UNIX)");
  }
  return out;
}

// unixNetns(fd) -> inode number of the network namespace the socket lives in.
Napi::Value UnixNetns(const Napi::CallbackInfo& info) {
  int ns = ioctl(ArgInt(info[0]), SIOCGSKNS);
  if (ns < 0) return Fail(info, "ioctl(SIOCGSKNS)");
  struct stat st;
  int r = fstat(ns, &st);
  int e = errno;
  close(ns);
  errno = e;
  if (r < 0) return Fail(info, "fstat(netns)");
  return Napi::Number::New(info.Env(), static_cast<double>(st.st_ino));
}

// unixSocket(type) -> fd (close-on-exec)
Napi::Value UnixSocket(const Napi::CallbackInfo& info) {
  int fd = socket(AF_UNIX, ArgInt(info[0]) | SOCK_CLOEXEC, 0);
  if (fd < 0) return Fail(info, "socket(AF_UNIX)");
  return Napi::Number::New(info.Env(), fd);
}

// unixSocketpair(type) -> [fd, fd] (close-on-exec)
Napi::Value UnixSocketpair(const Napi::CallbackInfo& info) {
  int sv[2];
  if (socketpair(AF_UNIX, ArgInt(info[0]) | SOCK_CLOEXEC, 0, sv) < 0) return Fail(info, "socketpair(AF_UNIX)");
  Napi::Array a = Napi::Array::New(info.Env(), 2);
  a.Set(0u, sv[0]);
  a.Set(1u, sv[1]);
  return a;
}

// unixBind(fd, addr, dir?): a relative path is bound relative to dir (the restorer's working
// directory is moved there for the call only), so getsockname() keeps its relative name.
// An empty addr autobinds (abstract name chosen by the kernel).
Napi::Value UnixBind(const Napi::CallbackInfo& info) {
  int fd = ArgInt(info[0]);
  sockaddr_un sa;
  socklen_t len = MakeAddr(info[1], &sa);
  if (!len) return TooLong(info);
  bool inDir = info.Length() > 2 && info[2].IsString() && sa.sun_path[0] != 0 && sa.sun_path[0] != '/';
  if (!inDir) {
    if (bind(fd, reinterpret_cast<sockaddr*>(&sa), len) < 0) return Fail(info, "bind(AF_UNIX)");
    return info.Env().Undefined();
  }
  std::string dir = info[2].As<Napi::String>().Utf8Value();
  int dfd = open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return Fail(info, "open(bind directory)");
  int cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (cwd < 0) {
    int e = errno;
    close(dfd);
    errno = e;
    return Fail(info, "open(.)");
  }
  int r = fchdir(dfd);
  if (r == 0) r = bind(fd, reinterpret_cast<sockaddr*>(&sa), len);
  int e = errno;
  if (fchdir(cwd) < 0) { /* the directory we came from vanished: nothing better to do */ }
  close(cwd);
  close(dfd);
  errno = e;
  if (r < 0) return Fail(info, "bind(AF_UNIX)");
  return info.Env().Undefined();
}

// unixConnect(fd, addr)
Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  sockaddr_un sa;
  socklen_t len = MakeAddr(info[1], &sa);
  if (!len) return TooLong(info);
  int r;
  do r = connect(ArgInt(info[0]), reinterpret_cast<sockaddr*>(&sa), len);
  while (r < 0 && errno == EINTR);
  if (r < 0) return Fail(info, "connect(AF_UNIX)");
  return info.Env().Undefined();
}

// unixAccept(fd) -> fd (close-on-exec)
Napi::Value UnixAccept(const Napi::CallbackInfo& info) {
  int fd;
  do fd = accept4(ArgInt(info[0]), nullptr, nullptr, SOCK_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return Fail(info, "accept4");
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value UnixShutdown(const Napi::CallbackInfo& info) {
  if (shutdown(ArgInt(info[0]), ArgInt(info[1])) < 0) return Fail(info, "shutdown");
  return info.Env().Undefined();
}

// unixGetsockopt(fd, level, name, len) -> Buffer (as long as the kernel answered); throws
// whatever the error (sockGetBytes answers null for an option the socket does not have).
Napi::Value UnixGetsockopt(const Napi::CallbackInfo& info) { return GetSockoptJs(info, SockoptKind::kBytes, false); }

// unixName(fd, peer) -> raw address bytes of getsockname / getpeername
Napi::Value UnixName(const Napi::CallbackInfo& info) {
  sockaddr_un sa{};
  socklen_t len = sizeof(sa);
  int r = info[1].ToBoolean() ? getpeername(ArgInt(info[0]), reinterpret_cast<sockaddr*>(&sa), &len)
                              : getsockname(ArgInt(info[0]), reinterpret_cast<sockaddr*>(&sa), &len);
  if (r < 0) return Fail(info, info[1].ToBoolean() ? "getpeername" : "getsockname");
  size_t n = len > kPathOff ? len - kPathOff : 0;
  return AddrBytes(info.Env(), reinterpret_cast<const uint8_t*>(sa.sun_path), n);
}

// unixPeek(fd, stream, limit, zeroIsEnd) -> { messages: [{ data, addr }], rights, truncated, error, oob }
// Reads the whole receive queue without consuming it: MSG_PEEK at a moving SO_PEEK_OFF (the
// socket's own peek offset is put back afterwards). Stream sockets give chunks (join them), and
// stop once `limit` bytes (the queue length sock_diag reported) are read: a stream read that
// finds the queue empty would consume a pending socket error. Datagram and seqpacket sockets
// give one entry per message, with the sender's address and its offset `at`. File descriptors
// in flight (SCM_RIGHTS) peeked along are closed at once and counted: in `rights`, and per
// message (a stream chunk ends with the message that carried them).
Napi::Value UnixPeek(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info[0]);
  bool stream = info[1].ToBoolean();
  double limit = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : -1;
  // A seqpacket socket shut down for reading answers an empty queue with 0 (end of file), not
  // EAGAIN: there an empty read ends the walk.
  bool zeroIsEnd = info.Length() > 3 && info[3].ToBoolean();
  uint32_t zeros = 0;
  int saved = -1;
  if (GetSockoptInt(fd, SOL_SOCKET, SO_PEEK_OFF, &saved) < 0) return Fail(info, "getsockopt(SO_PEEK_OFF)");
  // A pending socket error (ECONNRESET: the peer closed with data unread): stream reads are
  // bounded so they never see it; datagram reads would clear it anyway, so it is taken here.
  int pending = 0;
  pollfd pfd{fd, POLLPRI, 0};
  int polled = poll(&pfd, 1, 0);
  bool oob = stream && polled > 0 && (pfd.revents & POLLPRI);  // MSG_OOB data queued
  if (polled > 0 && (pfd.revents & POLLERR)) {
    if (stream) {
      pending = ECONNRESET;
    } else {
      if (GetSockoptInt(fd, SOL_SOCKET, SO_ERROR, &pending) < 0) return Fail(info, "getsockopt(SO_ERROR)");
    }
  }
  Napi::Array msgs = Napi::Array::New(env);
  uint32_t count = 0;
  uint32_t rights = 0;
  bool truncated = false;
  std::vector<uint8_t> buf(1 << 20);
  alignas(cmsghdr) uint8_t ctl[CMSG_SPACE(sizeof(int) * 253) + CMSG_SPACE(64)];
  long off = 0;
  int err = 0;
  const char* failed = nullptr;
  // Messages: the head is peeked first without an offset. An empty message that was peeked
  // before (by the program, or an earlier dump) is skipped by every offset peek; the head one at
  // least is seen this way (empty ones further in, peeked before, cannot be seen: a kernel limit).
  bool head = !stream;
  for (;;) {
    if (stream && limit >= 0 && off >= limit) break;
    int o = head ? -1 : static_cast<int>(off);
    if (setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &o, sizeof(o)) < 0) {
      err = errno;
      failed = "setsockopt(SO_PEEK_OFF)";
      break;
    }
    sockaddr_un from{};
    size_t want = buf.size();
    if (stream && limit >= 0 && static_cast<double>(want) > limit - off) want = static_cast<size_t>(limit - off);
    iovec iov{buf.data(), want};
    msghdr mh{};
    mh.msg_name = &from;
    mh.msg_namelen = sizeof(from);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl;
    mh.msg_controllen = sizeof(ctl);
    ssize_t n = recvmsg(fd, &mh, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC | (stream ? 0 : MSG_TRUNC));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        err = errno;
        failed = "recvmsg(MSG_PEEK)";
      }
      break;
    }
    if (head) {
      head = false;
      bool emptyHead = n == 0 && !zeroIsEnd;
      for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
          size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
          int* fds = reinterpret_cast<int*>(CMSG_DATA(c));
          for (size_t i = 0; i < k; i++) close(fds[i]);
          if (emptyHead) rights += static_cast<uint32_t>(k);
        }
      }
      if (!emptyHead) continue;  // the walk below returns it
      if (mh.msg_flags & MSG_CTRUNC) truncated = true;
      Napi::Object m = Napi::Object::New(env);
      m.Set("data", Napi::Buffer<uint8_t>::New(env, 0));
      size_t an = mh.msg_namelen > kPathOff ? mh.msg_namelen - kPathOff : 0;
      if (an) m.Set("addr", AddrBytes(env, reinterpret_cast<const uint8_t*>(from.sun_path), an));
      msgs.Set(count++, m);
      continue;
    }
    if (mh.msg_flags & MSG_CTRUNC) truncated = true;
    uint32_t own = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int* fds = reinterpret_cast<int*>(CMSG_DATA(c));
        for (size_t i = 0; i < k; i++) close(fds[i]);
        own += static_cast<uint32_t>(k);
      }
    }
    rights += own;
    if (!stream && static_cast<size_t>(n) > buf.size()) {
      // A datagram larger than the buffer: peek it again, whole, from its start.
      buf.resize(static_cast<size_t>(n));
      continue;
    }
    if (stream && n == 0) break;  // end of stream (peer gone or shut down): nothing queued
    if (n == 0 && zeroIsEnd) break;
    // Each empty datagram is marked peeked and skipped by the next peek: progress is certain;
    // this only guards against an endless walk.
    if (n == 0 && ++zeros > 1000000) {
      err = EOVERFLOW;
      failed = "recvmsg(MSG_PEEK): endless run of empty messages";
      break;
    }
    if (n > 0) zeros = 0;
    Napi::Object m = Napi::Object::New(env);
    m.Set("data", Napi::Buffer<uint8_t>::Copy(env, buf.data(), static_cast<size_t>(n)));
    size_t an = mh.msg_namelen > kPathOff ? mh.msg_namelen - kPathOff : 0;
    if (!stream && an) m.Set("addr", AddrBytes(env, reinterpret_cast<const uint8_t*>(from.sun_path), an));
    // Where it starts in the queue (the peek offset), and the fds in flight with it.
    m.Set("at", Napi::Number::New(env, static_cast<double>(off)));
    if (own) m.Set("rights", Napi::Number::New(env, own));
    msgs.Set(count++, m);
    off += n;
    if (off > 0x7fffffffL) {
      err = EOVERFLOW;
      failed = "recvmsg(MSG_PEEK): queue larger than 2 GiB";
      break;
    }
  }
  setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &saved, sizeof(saved));
  if (failed) {
    errno = err;
    return Fail(info, failed);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("messages", msgs);
  out.Set("rights", Napi::Number::New(env, rights));
  out.Set("truncated", Napi::Boolean::New(env, truncated));
  out.Set("error", Napi::Number::New(env, pending));
  out.Set("oob", Napi::Boolean::New(env, oob));
  return out;
}

// unixSend(fd, data, addr?, fds?) -> bytes sent. Never blocks (EAGAIN is an error here). A datagram
// or seqpacket message goes out as one message; stream data is written whole. fds (an array) go
// along with the first piece (SCM_RIGHTS).
Napi::Value UnixSend(const Napi::CallbackInfo& info) {
  int fd = ArgInt(info[0]);
  Napi::Buffer<uint8_t> b = info[1].As<Napi::Buffer<uint8_t>>();
  sockaddr_un sa;
  socklen_t len = 0;
  bool withAddr = info.Length() > 2 && info[2].IsBuffer() && info[2].As<Napi::Buffer<uint8_t>>().Length() > 0;
  if (withAddr) {
    len = MakeAddr(info[2], &sa);
    if (!len) return TooLong(info);
  }
  int type = 0;
  if (GetSockoptInt(fd, SOL_SOCKET, SO_TYPE, &type) < 0) return Fail(info, "getsockopt(SO_TYPE)");
  std::vector<int> rights;
  if (info.Length() > 3 && info[3].IsArray()) rights = IntsArg(info[3].As<Napi::Array>());
  std::vector<char> ctl(rights.empty() ? 0 : CMSG_SPACE(rights.size() * sizeof(int)));
  size_t done = 0;
  do {
    iovec iov{b.Data() + done, b.Length() - done};
    msghdr msg{};
    msg.msg_name = withAddr ? &sa : nullptr;
    msg.msg_namelen = withAddr ? len : 0;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (!done && !rights.empty()) {
      msg.msg_control = ctl.data();
      msg.msg_controllen = ctl.size();
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(rights.size() * sizeof(int));
      memcpy(CMSG_DATA(c), rights.data(), rights.size() * sizeof(int));
    }
    ssize_t n = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Fail(info, "sendto(AF_UNIX)");
    }
    done += static_cast<size_t>(n);
    if (type != SOCK_STREAM) break;
  } while (done < b.Length());
  return Napi::Number::New(info.Env(), static_cast<double>(done));
}

}  // namespace

void InitUnix(Napi::Env env, Napi::Object exports) {
  exports.Set("unixDiag", Napi::Function::New(env, UnixDiag));
  exports.Set("unixNetns", Napi::Function::New(env, UnixNetns));
  exports.Set("unixSocket", Napi::Function::New(env, UnixSocket));
  exports.Set("unixSocketpair", Napi::Function::New(env, UnixSocketpair));
  exports.Set("unixBind", Napi::Function::New(env, UnixBind));
  exports.Set("unixConnect", Napi::Function::New(env, UnixConnect));
  exports.Set("unixAccept", Napi::Function::New(env, UnixAccept));
  exports.Set("unixShutdown", Napi::Function::New(env, UnixShutdown));
  exports.Set("unixGetsockopt", Napi::Function::New(env, UnixGetsockopt));
  exports.Set("unixName", Napi::Function::New(env, UnixName));
  exports.Set("unixPeek", Napi::Function::New(env, UnixPeek));
  exports.Set("unixSend", Napi::Function::New(env, UnixSend));
}

}  // namespace ckpt
