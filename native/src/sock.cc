// Socket calls that are the same for every family: options (get/set an int or raw bytes),
// listen, and the NETLINK_SOCK_DIAG exchange behind unixDiag, tcpDiag and tcpDestroy.
#include "sock.h"

#include <linux/sock_diag.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <vector>

namespace ckpt {

int GetSockoptInt(int fd, int level, int name, int* out) {
  socklen_t l = sizeof(int);
  return getsockopt(fd, level, name, out, &l);
}

int SetSockoptInt(int fd, int level, int name, int value) {
  return setsockopt(fd, level, name, &value, sizeof value);
}

Napi::Value GetSockoptJs(const Napi::CallbackInfo& info, SockoptKind kind, bool nullIfMissing) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info[0]), level = ArgInt(info[1]), name = ArgInt(info[2]);
  int iv = 0;
  std::vector<uint8_t> buf;
  socklen_t len = sizeof iv;
  void* p = &iv;
  if (kind == SockoptKind::kBytes) {
    int want = ArgInt(info[3]);
    len = static_cast<socklen_t>(want > 0 ? want : 0);
    buf.resize(len ? len : 1);
    p = buf.data();
  }
  if (getsockopt(fd, level, name, p, &len) < 0) {
    int err = errno;
    bool missing = err == ENOPROTOOPT || err == EOPNOTSUPP || err == EINVAL || (kind == SockoptKind::kBytes && err == ENOENT);
    if (nullIfMissing && missing) return env.Null();
    ThrowErrno(env, err, "getsockopt");
    return env.Undefined();
  }
  if (kind == SockoptKind::kInt) return Napi::Number::New(env, iv);
  return Napi::Buffer<uint8_t>::Copy(env, buf.data(), len);
}

Napi::Value SetSockoptJs(const Napi::CallbackInfo& info, SockoptKind kind) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info[0]), level = ArgInt(info[1]), name = ArgInt(info[2]);
  int r;
  if (kind == SockoptKind::kInt) {
    r = SetSockoptInt(fd, level, name, ArgInt(info[3]));
  } else {
    Napi::Buffer<uint8_t> b = info[3].As<Napi::Buffer<uint8_t>>();
    r = setsockopt(fd, level, name, b.Data(), static_cast<socklen_t>(b.Length()));
  }
  if (r < 0) ThrowErrno(env, errno, "setsockopt");
  return env.Undefined();
}

int SockDiag(uint16_t type, uint16_t flags, const void* req, size_t reqLen,
             const std::function<bool(const nlmsghdr*)>& onMsg, int timeoutMs, const char** stage) {
  int nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (nl < 0) {
    *stage = "socket(NETLINK_SOCK_DIAG)";
    return -errno;
  }
  std::vector<uint8_t> msg(NLMSG_SPACE(reqLen), 0);
  auto* nh = reinterpret_cast<nlmsghdr*>(msg.data());
  nh->nlmsg_len = static_cast<uint32_t>(NLMSG_LENGTH(reqLen));
  nh->nlmsg_type = type;
  nh->nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | flags);
  nh->nlmsg_seq = 1;
  memcpy(NLMSG_DATA(nh), req, reqLen);
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  if (sendto(nl, msg.data(), nh->nlmsg_len, 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
    int e = errno;
    close(nl);
    *stage = "sendto(sock_diag)";
    return -e;
  }
  bool dump = (flags & NLM_F_DUMP) == NLM_F_DUMP;
  int result = 0;
  bool done = false;
  std::vector<uint8_t> buf(1 << 16);
  while (!done) {
    if (timeoutMs >= 0) {
      pollfd pfd{nl, POLLIN, 0};
      int p = poll(&pfd, 1, timeoutMs);
      if (p < 0 && errno == EINTR) continue;
      if (p <= 0) {
        result = p < 0 ? -errno : -ETIMEDOUT;
        *stage = "recv(sock_diag)";
        break;
      }
    }
    ssize_t got = recv(nl, buf.data(), buf.size(), 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      result = -errno;
      *stage = "recv(sock_diag)";
      break;
    }
    if (got == 0) break;
    int left = static_cast<int>(got);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_type == NLMSG_DONE) {
        done = true;
        break;
      }
      if (h->nlmsg_type == NLMSG_ERROR) {
        result = static_cast<const nlmsgerr*>(NLMSG_DATA(h))->error;  // 0 (an ack) or -errno
        done = true;
        break;
      }
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) continue;
      if (!onMsg(h)) {
        done = true;
        break;
      }
    }
    if (!dump) done = true;
  }
  close(nl);
  return result;
}

namespace {

// sockGetInt(fd, level, name) -> number, or null when the option does not exist here.
Napi::Value SockGetInt(const Napi::CallbackInfo& info) { return GetSockoptJs(info, SockoptKind::kInt, true); }

// sockSetInt(fd, level, name, value)
Napi::Value SockSetInt(const Napi::CallbackInfo& info) { return SetSockoptJs(info, SockoptKind::kInt); }

// sockGetBytes(fd, level, name, maxLen) -> Buffer, or null when the option does not exist.
Napi::Value SockGetBytes(const Napi::CallbackInfo& info) { return GetSockoptJs(info, SockoptKind::kBytes, true); }

// sockSetBytes(fd, level, name, value: Buffer)
Napi::Value SockSetBytes(const Napi::CallbackInfo& info) { return SetSockoptJs(info, SockoptKind::kBytes); }

// sockListen(fd, backlog)
Napi::Value SockListen(const Napi::CallbackInfo& info) {
  if (listen(ArgInt(info[0]), ArgInt(info[1])) < 0) ThrowErrno(info.Env(), errno, "listen");
  return info.Env().Undefined();
}

// sockBindRaw(fd, sockaddr: Buffer): bind(2) with an address built by the caller (sockaddr_ll...).
Napi::Value SockBindRaw(const Napi::CallbackInfo& info) {
  Napi::Buffer<uint8_t> a = info[1].As<Napi::Buffer<uint8_t>>();
  if (bind(ArgInt(info[0]), reinterpret_cast<const sockaddr*>(a.Data()), static_cast<socklen_t>(a.Length())) < 0) ThrowErrno(info.Env(), errno, "bind");
  return info.Env().Undefined();
}

}  // namespace

void InitSock(Napi::Env env, Napi::Object exports) {
  exports.Set("sockBindRaw", Napi::Function::New(env, SockBindRaw));
  exports.Set("sockGetInt", Napi::Function::New(env, SockGetInt));
  exports.Set("sockSetInt", Napi::Function::New(env, SockSetInt));
  exports.Set("sockGetBytes", Napi::Function::New(env, SockGetBytes));
  exports.Set("sockSetBytes", Napi::Function::New(env, SockSetBytes));
  exports.Set("sockListen", Napi::Function::New(env, SockListen));
}

}  // namespace ckpt
