// Inet (TCP and UDP, IPv4 and IPv6) sockets for @ckpt/plugin-tcp: socket facts and options,
// the TCP_REPAIR dump and refill of an established connection, peeking and re-injecting
// queued UDP datagrams, and sock_diag lookups (find / destroy the orphaned remains of a
// connection). Addresses cross to JS as { family: 4 | 6, addr, port, flowinfo?, scope? }.
#include "sock.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#ifndef SIOCINQ
#define SIOCINQ 0x541B
#endif
#ifndef SIOCOUTQ
#define SIOCOUTQ 0x5411
#endif
#ifndef SIOCOUTQNSD
#define SIOCOUTQNSD 0x894B
#endif
#ifndef IPV6_FREEBIND
#define IPV6_FREEBIND 78
#endif
#ifndef SO_PEEK_OFF
#define SO_PEEK_OFF 42
#endif

namespace ckpt {
namespace {

Napi::Value Fail(Napi::Env env, int err, const char* what) {
  ThrowErrno(env, err, what);
  return env.Undefined();
}

Napi::Object AddrToJs(Napi::Env env, const sockaddr_storage& ss) {
  Napi::Object o = Napi::Object::New(env);
  char buf[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    o.Set("family", 4);
    o.Set("addr", buf);
    o.Set("port", ntohs(a->sin_port));
  } else if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    o.Set("family", 6);
    o.Set("addr", buf);
    o.Set("port", ntohs(a->sin6_port));
    if (a->sin6_flowinfo) o.Set("flowinfo", ntohl(a->sin6_flowinfo));
    if (a->sin6_scope_id) o.Set("scope", a->sin6_scope_id);
  } else {
    o.Set("family", 0);
  }
  return o;
}

// { family, addr, port, flowinfo?, scope? } -> sockaddr; false (with a JS exception) if invalid.
bool JsToAddr(Napi::Env env, const Napi::Value& v, sockaddr_storage* ss, socklen_t* len) {
  memset(ss, 0, sizeof *ss);
  if (!v.IsObject() || !v.As<Napi::Object>().Get("family").IsNumber() || !v.As<Napi::Object>().Get("addr").IsString() ||
      !v.As<Napi::Object>().Get("port").IsNumber()) {
    ThrowErrnoMsg(env, EINVAL, "address: expected { family, addr, port }");
    return false;
  }
  Napi::Object o = v.As<Napi::Object>();
  int family = o.Get("family").As<Napi::Number>().Int32Value();
  std::string addr = o.Get("addr").As<Napi::String>().Utf8Value();
  int port = o.Get("port").As<Napi::Number>().Int32Value();
  if (family == 4) {
    auto* a = reinterpret_cast<sockaddr_in*>(ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    if (inet_pton(AF_INET, addr.c_str(), &a->sin_addr) != 1) {
      ThrowErrnoMsg(env, EINVAL, "bad IPv4 address " + addr);
      return false;
    }
    *len = sizeof(sockaddr_in);
    return true;
  }
  if (family == 6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    if (inet_pton(AF_INET6, addr.c_str(), &a->sin6_addr) != 1) {
      ThrowErrnoMsg(env, EINVAL, "bad IPv6 address " + addr);
      return false;
    }
    if (o.Has("flowinfo") && o.Get("flowinfo").IsNumber()) a->sin6_flowinfo = htonl(o.Get("flowinfo").As<Napi::Number>().Uint32Value());
    if (o.Has("scope") && o.Get("scope").IsNumber()) a->sin6_scope_id = o.Get("scope").As<Napi::Number>().Uint32Value();
    *len = sizeof(sockaddr_in6);
    return true;
  }
  ThrowErrnoMsg(env, EINVAL, "address family must be 4 or 6");
  return false;
}

uint32_t U32(const Napi::Object& o, const char* k) {
  Napi::Value v = o.Get(k);
  return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : 0;
}

// inetSocket(domain, type, protocol) -> fd (type may carry SOCK_NONBLOCK; always SOCK_CLOEXEC)
Napi::Value InetSocket(const Napi::CallbackInfo& info) {
  int fd = socket(ArgInt(info[0]), ArgInt(info[1]) | SOCK_CLOEXEC, ArgInt(info[2]));
  if (fd < 0) return Fail(info.Env(), errno, "socket");
  return Napi::Number::New(info.Env(), fd);
}

// sockInfo(fd) -> domain, type, protocol, local, peer, and for TCP the state, options,
// window scales, listen backlog/pending; queued byte counts.
Napi::Value SockInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info[0]);
  int domain = 0, type = 0, protocol = 0;
  if (GetSockoptInt(fd, SOL_SOCKET, SO_DOMAIN, &domain) < 0 || GetSockoptInt(fd, SOL_SOCKET, SO_TYPE, &type) < 0 ||
      GetSockoptInt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol) < 0)
    return Fail(env, errno, "getsockopt(SO_DOMAIN/SO_TYPE/SO_PROTOCOL)");
  Napi::Object o = Napi::Object::New(env);
  o.Set("domain", domain);
  o.Set("type", type);
  o.Set("protocol", protocol);
  if (domain != AF_INET && domain != AF_INET6) return o;
  sockaddr_storage ss{};
  socklen_t l = sizeof ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &l) == 0) o.Set("local", AddrToJs(env, ss));
  l = sizeof ss;
  memset(&ss, 0, sizeof ss);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &l) == 0) {
    o.Set("peer", AddrToJs(env, ss));
  } else if (protocol == IPPROTO_TCP) {
    // A connection that is closed, or still connecting, keeps its peer: SO_PEERNAME tells it
    // where getpeername answers ENOTCONN. (It wants the exact size of the family's address.)
    l = domain == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    memset(&ss, 0, sizeof ss);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERNAME, &ss, &l) == 0 && l > 0 && ss.ss_family != AF_UNSPEC) {
      Napi::Object peer = AddrToJs(env, ss);
      if (peer.Get("port").As<Napi::Number>().Int32Value() != 0) o.Set("peer", peer);
    }
  }
  if (protocol == IPPROTO_TCP) {
    struct tcp_info ti {};
    socklen_t tl = sizeof ti;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) < 0) return Fail(env, errno, "getsockopt(TCP_INFO)");
    o.Set("state", ti.tcpi_state);
    o.Set("options", ti.tcpi_options);
    o.Set("sndWscale", ti.tcpi_snd_wscale);
    o.Set("rcvWscale", ti.tcpi_rcv_wscale);
    o.Set("mss", ti.tcpi_snd_mss);
    // An error pending (POLLERR: e.g. a reset) and the receive side shut down, seen without
    // taking them (SO_ERROR and a read would clear the error).
    pollfd p{fd, POLLRDHUP, 0};
    if (poll(&p, 1, 0) >= 0) {
      o.Set("error", (p.revents & POLLERR) != 0);
      o.Set("rdhup", (p.revents & POLLRDHUP) != 0);
    }
    if (ti.tcpi_state == 10 /* TCP_LISTEN */) {
      o.Set("backlog", ti.tcpi_sacked);  // sk_max_ack_backlog
      o.Set("pending", ti.tcpi_unacked);  // sk_ack_backlog
      return o;
    }
  }
  int n = 0;
  if (ioctl(fd, SIOCINQ, &n) == 0) o.Set("inq", n);
  if (ioctl(fd, SIOCOUTQ, &n) == 0) o.Set("outq", n);
  if (protocol == IPPROTO_TCP && ioctl(fd, SIOCOUTQNSD, &n) == 0) o.Set("unsent", n);
  return o;
}

Napi::Value SockBind(const Napi::CallbackInfo& info) {
  sockaddr_storage ss;
  socklen_t l;
  if (!JsToAddr(info.Env(), info[1], &ss, &l)) return info.Env().Undefined();
  if (bind(ArgInt(info[0]), reinterpret_cast<sockaddr*>(&ss), l) < 0) return Fail(info.Env(), errno, "bind");
  return info.Env().Undefined();
}

// sockConnect(fd, addr) -> 0, or the errno EINPROGRESS (non-blocking sockets); throws otherwise.
Napi::Value SockConnect(const Napi::CallbackInfo& info) {
  sockaddr_storage ss;
  socklen_t l;
  if (!JsToAddr(info.Env(), info[1], &ss, &l)) return info.Env().Undefined();
  if (connect(ArgInt(info[0]), reinterpret_cast<sockaddr*>(&ss), l) < 0) {
    if (errno == EINPROGRESS) return Napi::Number::New(info.Env(), EINPROGRESS);
    return Fail(info.Env(), errno, "connect");
  }
  return Napi::Number::New(info.Env(), 0);
}

// tcpRepair(fd, mode): 1 on, 0 off (with a window probe), -1 off without a probe.
Napi::Value TcpRepair(const Napi::CallbackInfo& info) {
  int v = ArgInt(info[1]);
  if (setsockopt(ArgInt(info[0]), IPPROTO_TCP, TCP_REPAIR, &v, sizeof v) < 0) return Fail(info.Env(), errno, "setsockopt(TCP_REPAIR)");
  return info.Env().Undefined();
}

int SetQueue(int fd, int q) { return setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, &q, sizeof q); }

// Reads one queue of a socket in repair mode: its sequence number and (peeked) bytes.
bool PeekQueue(Napi::Env env, int fd, int q, uint32_t len, uint32_t* seq, std::vector<uint8_t>* data) {
  if (SetQueue(fd, q) < 0) {
    ThrowErrno(env, errno, "setsockopt(TCP_REPAIR_QUEUE)");
    return false;
  }
  socklen_t l = sizeof *seq;
  if (getsockopt(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, seq, &l) < 0) {
    ThrowErrno(env, errno, "getsockopt(TCP_QUEUE_SEQ)");
    return false;
  }
  data->assign(len + 1, 0);
  if (len) {
    ssize_t n = recv(fd, data->data(), len + 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0) {
      ThrowErrno(env, errno, q == TCP_SEND_QUEUE ? "recv(MSG_PEEK, send queue)" : "recv(MSG_PEEK, receive queue)");
      return false;
    }
    if (static_cast<uint32_t>(n) != len) {
      ThrowErrnoMsg(env, EIO, std::string("TCP ") + (q == TCP_SEND_QUEUE ? "send" : "receive") + " queue: peeked " + std::to_string(n) +
                               " bytes, expected " + std::to_string(len));
      return false;
    }
  }
  data->resize(len);
  return true;
}

// tcpDumpConn(fd) -> everything TCP_REPAIR can read back of a connection. The socket must be
// in repair mode (tcpRepair(fd, 1)); it is left so, with no queue selected.
Napi::Value TcpDumpConn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info[0]);
  struct tcp_info ti {};
  socklen_t l = sizeof ti;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0) return Fail(env, errno, "getsockopt(TCP_INFO)");
  int inq = 0, outq = 0, unsent = 0;
  if (ioctl(fd, SIOCINQ, &inq) < 0) return Fail(env, errno, "ioctl(SIOCINQ)");
  if (ioctl(fd, SIOCOUTQ, &outq) < 0) return Fail(env, errno, "ioctl(SIOCOUTQ)");
  if (ioctl(fd, SIOCOUTQNSD, &unsent) < 0) return Fail(env, errno, "ioctl(SIOCOUTQNSD)");
  int mss = 0;
  if (GetSockoptInt(fd, IPPROTO_TCP, TCP_MAXSEG, &mss) < 0) return Fail(env, errno, "getsockopt(TCP_MAXSEG)");
  uint32_t ts = 0;
  l = sizeof ts;
  if (getsockopt(fd, IPPROTO_TCP, TCP_TIMESTAMP, &ts, &l) < 0) return Fail(env, errno, "getsockopt(TCP_TIMESTAMP)");
  struct tcp_repair_window w {};
  l = sizeof w;
  bool haveWindow = getsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, &w, &l) == 0;
  // A FIN we sent and that is not yet acknowledged counts in SIOCOUTQ (and in SIOCOUTQNSD while
  // unsent) but carries no byte; a connection closed (reset, or both FINs acknowledged) has
  // nothing left to send anyone.
  switch (ti.tcpi_state) {
    case TCP_FIN_WAIT1:
    case TCP_CLOSING:
    case TCP_LAST_ACK:
      if (outq) outq--;
      if (unsent) unsent--;
      break;
    case TCP_CLOSE:
      outq = unsent = 0;
      break;
  }
  uint32_t inqSeq = 0, outqSeq = 0;
  std::vector<uint8_t> in, out;
  bool ok = PeekQueue(env, fd, TCP_SEND_QUEUE, outq, &outqSeq, &out) && PeekQueue(env, fd, TCP_RECV_QUEUE, inq, &inqSeq, &in);
  SetQueue(fd, TCP_NO_QUEUE);
  if (!ok) return env.Undefined();
  Napi::Object o = Napi::Object::New(env);
  o.Set("state", ti.tcpi_state);
  o.Set("options", ti.tcpi_options);
  o.Set("sndWscale", ti.tcpi_snd_wscale);
  o.Set("rcvWscale", ti.tcpi_rcv_wscale);
  o.Set("mss", mss);
  o.Set("timestamp", ts);
  o.Set("inqSeq", inqSeq);
  o.Set("outqSeq", outqSeq);
  o.Set("unsent", unsent);
  o.Set("inq", Napi::Buffer<uint8_t>::Copy(env, in.data(), in.size()));
  o.Set("outq", Napi::Buffer<uint8_t>::Copy(env, out.data(), out.size()));
  if (haveWindow) {
    Napi::Object wo = Napi::Object::New(env);
    wo.Set("sndWl1", w.snd_wl1);
    wo.Set("sndWnd", w.snd_wnd);
    wo.Set("maxWindow", w.max_window);
    wo.Set("rcvWnd", w.rcv_wnd);
    wo.Set("rcvWup", w.rcv_wup);
    o.Set("window", wo);
  }
  return o;
}

// tcpSetQueueSeqs(fd, recvSeq, sendSeq): where each queue starts (socket in repair, still closed).
Napi::Value TcpSetQueueSeqs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info[0]);
  uint32_t seqs[2] = {info[1].As<Napi::Number>().Uint32Value(), info[2].As<Napi::Number>().Uint32Value()};
  int queues[2] = {TCP_RECV_QUEUE, TCP_SEND_QUEUE};
  for (int i = 0; i < 2; i++) {
    if (SetQueue(fd, queues[i]) < 0) return Fail(env, errno, "setsockopt(TCP_REPAIR_QUEUE)");
    if (setsockopt(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, &seqs[i], sizeof seqs[i]) < 0) return Fail(env, errno, "setsockopt(TCP_QUEUE_SEQ)");
  }
  SetQueue(fd, TCP_NO_QUEUE);
  return env.Undefined();
}

// Writes bytes into the selected repair queue (or, with repair off, the ordinary send queue) of a
// non-blocking socket; grows the buffer (SO_*BUFFORCE) when the kernel refuses for lack of room.
bool FillQueue(Napi::Env env, int fd, bool recvQueue, const uint8_t* p, size_t len) {
  size_t chunk = len;
  int grown = 0;
  while (len) {
    size_t n = chunk < len ? chunk : len;
    ssize_t r = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r > 0) {
      p += r;
      len -= r;
      continue;
    }
    int err = r < 0 ? errno : EIO;
    if ((err == ENOMEM || err == EAGAIN || err == ENOBUFS) && grown < 8) {
      // Room for everything left, counting skb overhead generously.
      int opt = recvQueue ? SO_RCVBUF : SO_SNDBUF, cur = 0;
      GetSockoptInt(fd, SOL_SOCKET, opt, &cur);
      int want = cur + static_cast<int>(len * 2) + (1 << 16);
      setsockopt(fd, SOL_SOCKET, recvQueue ? SO_RCVBUFFORCE : SO_SNDBUFFORCE, &want, sizeof want);
      grown++;
      continue;
    }
    if (err == ENOMEM && chunk > 4096) {
      chunk /= 2;
      continue;
    }
    ThrowErrno(env, err, recvQueue ? "send(TCP receive queue)" : "send(TCP send queue)");
    return false;
  }
  return true;
}

// tcpRepairFill(fd, conn): on a socket in repair mode, connected (established) by connect():
// options (mss, window scales, SACK, timestamps), the timestamp clock, the receive queue, the
// send queue (the part the peer was sent as sent, the unsent rest as ordinary data), then the
// window. The socket stays in repair mode.
Napi::Value TcpRepairFill(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info[0]);
  Napi::Object c = info[1].As<Napi::Object>();
  uint32_t options = U32(c, "options");
  struct tcp_repair_opt opts[4];
  int n = 0;
  opts[n].opt_code = TCPOPT_MAXSEG;
  opts[n++].opt_val = U32(c, "mss");
  if (options & TCPI_OPT_WSCALE) {
    opts[n].opt_code = TCPOPT_WINDOW;
    opts[n++].opt_val = U32(c, "sndWscale") | (U32(c, "rcvWscale") << 16);
  }
  if (options & TCPI_OPT_TIMESTAMPS) {
    opts[n].opt_code = TCPOPT_TIMESTAMP;
    opts[n++].opt_val = 0;
  }
  if (options & TCPI_OPT_SACK) {
    opts[n].opt_code = TCPOPT_SACK_PERMITTED;
    opts[n++].opt_val = 0;
  }
  if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_OPTIONS, opts, n * sizeof opts[0]) < 0) return Fail(env, errno, "setsockopt(TCP_REPAIR_OPTIONS)");
  if (options & TCPI_OPT_TIMESTAMPS) {
    uint32_t ts = U32(c, "timestamp");
    if (setsockopt(fd, IPPROTO_TCP, TCP_TIMESTAMP, &ts, sizeof ts) < 0) return Fail(env, errno, "setsockopt(TCP_TIMESTAMP)");
  }
  Napi::Buffer<uint8_t> in = c.Get("inq").As<Napi::Buffer<uint8_t>>();
  Napi::Buffer<uint8_t> out = c.Get("outq").As<Napi::Buffer<uint8_t>>();
  uint32_t unsent = U32(c, "unsent");
  if (unsent > out.Length()) unsent = out.Length();
  size_t sent = out.Length() - unsent;
  if (in.Length()) {
    if (SetQueue(fd, TCP_RECV_QUEUE) < 0) return Fail(env, errno, "setsockopt(TCP_REPAIR_QUEUE)");
    if (!FillQueue(env, fd, true, in.Data(), in.Length())) return env.Undefined();
  }
  if (sent) {
    if (SetQueue(fd, TCP_SEND_QUEUE) < 0) return Fail(env, errno, "setsockopt(TCP_REPAIR_QUEUE)");
    if (!FillQueue(env, fd, false, out.Data(), sent)) return env.Undefined();
  }
  SetQueue(fd, TCP_NO_QUEUE);
  if (unsent) {
    // Never sent to the peer: queued as ordinary data, with repair off for the moment (no probe).
    int off = TCP_REPAIR_OFF_NO_WP, on = TCP_REPAIR_ON;
    if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &off, sizeof off) < 0) return Fail(env, errno, "setsockopt(TCP_REPAIR)");
    bool ok = FillQueue(env, fd, false, out.Data() + sent, unsent);
    if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &on, sizeof on) < 0 && ok) return Fail(env, errno, "setsockopt(TCP_REPAIR)");
    if (!ok) return env.Undefined();
  }
  Napi::Value wv = c.Get("window");
  if (wv.IsObject()) {
    Napi::Object wo = wv.As<Napi::Object>();
    struct tcp_repair_window w {};
    w.snd_wl1 = U32(wo, "sndWl1");
    w.snd_wnd = U32(wo, "sndWnd");
    w.max_window = U32(wo, "maxWindow");
    w.rcv_wnd = U32(wo, "rcvWnd");
    w.rcv_wup = U32(wo, "rcvWup");
    if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, &w, sizeof w) < 0) return Fail(env, errno, "setsockopt(TCP_REPAIR_WINDOW)");
  }
  return env.Undefined();
}

// The Internet checksum of p (RFC 1071), starting from sum (a pseudo header's).
uint16_t Checksum(const uint8_t* p, size_t n, uint32_t sum) {
  for (; n > 1; p += 2, n -= 2) sum += (p[0] << 8) | p[1];
  if (n) sum += p[0] << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// tcpShutdownRepair(fd, sent): shutdown(SHUT_WR) of a socket in repair mode, which queues its FIN;
// with `sent`, the FIN is taken as already sent (TCP_REPAIR_QUEUE = send queue) and not transmitted.
Napi::Value TcpShutdownRepair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info[0]);
  bool sent = info[1].ToBoolean();
  if (sent && SetQueue(fd, TCP_SEND_QUEUE) < 0) return Fail(env, errno, "setsockopt(TCP_REPAIR_QUEUE)");
  int r = shutdown(fd, SHUT_WR), e = errno;
  if (sent) SetQueue(fd, TCP_NO_QUEUE);
  if (r < 0) return Fail(env, e, "shutdown(SHUT_WR)");
  return env.Undefined();
}

// tcpInject(to, from, seg, mark): sends one bare TCP segment (no payload, no options) from `from`
// to `to` through a raw socket whose packets carry SO_MARK `mark`: how a restore replays what the
// peer had sent (a FIN, the ACK of our FIN, a reset) into a socket rebuilt in repair mode.
// seg = { seq, ack, flags (TH_FIN 1, TH_RST 4, TH_ACK 16), window }.
Napi::Value TcpInject(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  sockaddr_storage to, from;
  socklen_t tl, fl;
  if (!JsToAddr(env, info[0], &to, &tl) || !JsToAddr(env, info[1], &from, &fl)) return env.Undefined();
  Napi::Object seg = info[2].As<Napi::Object>();
  uint32_t mark = info[3].As<Napi::Number>().Uint32Value();
  if (to.ss_family != from.ss_family) {
    ThrowErrnoMsg(env, EINVAL, "tcpInject: source and destination of different families");
    return env.Undefined();
  }
  int fam = to.ss_family;
  bool v4 = fam == AF_INET;
  int fd = socket(fam, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) return Fail(env, errno, "socket(SOCK_RAW, IPPROTO_TCP)");
  int one = 1;
  if (v4) {
    setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
  } else {
    int csum = 16;  // the kernel computes the TCP checksum (offset 16 of our header)
    setsockopt(fd, IPPROTO_IPV6, IPV6_CHECKSUM, &csum, sizeof csum);
    setsockopt(fd, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof one);
  }
  if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) < 0) {
    int e = errno;
    close(fd);
    return Fail(env, e, "setsockopt(SO_MARK)");
  }
  sockaddr_storage src = from, dst = to;
  uint16_t sport = v4 ? reinterpret_cast<sockaddr_in*>(&from)->sin_port : reinterpret_cast<sockaddr_in6*>(&from)->sin6_port;
  uint16_t dport = v4 ? reinterpret_cast<sockaddr_in*>(&to)->sin_port : reinterpret_cast<sockaddr_in6*>(&to)->sin6_port;
  if (v4) {
    reinterpret_cast<sockaddr_in*>(&src)->sin_port = 0;
    reinterpret_cast<sockaddr_in*>(&dst)->sin_port = 0;
  } else {
    reinterpret_cast<sockaddr_in6*>(&src)->sin6_port = 0;
    reinterpret_cast<sockaddr_in6*>(&dst)->sin6_port = 0;
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&src), fl) < 0) {
    int e = errno;
    close(fd);
    return Fail(env, e, "bind(raw socket to the peer's address)");
  }
  uint8_t h[20] = {0};
  uint32_t seq = htonl(U32(seg, "seq")), ack = htonl(U32(seg, "ack"));
  uint16_t win = htons(static_cast<uint16_t>(U32(seg, "window") > 0xffff ? 0xffff : U32(seg, "window")));
  memcpy(&h[0], &sport, 2);
  memcpy(&h[2], &dport, 2);
  memcpy(&h[4], &seq, 4);
  memcpy(&h[8], &ack, 4);
  h[12] = 5 << 4;  // data offset: 5 words, no options
  h[13] = static_cast<uint8_t>(U32(seg, "flags"));
  memcpy(&h[14], &win, 2);
  if (v4) {
    const uint8_t* s = reinterpret_cast<const uint8_t*>(&reinterpret_cast<sockaddr_in*>(&from)->sin_addr);
    const uint8_t* d = reinterpret_cast<const uint8_t*>(&reinterpret_cast<sockaddr_in*>(&to)->sin_addr);
    uint32_t sum = ((s[0] << 8) | s[1]) + ((s[2] << 8) | s[3]) + ((d[0] << 8) | d[1]) + ((d[2] << 8) | d[3]) + IPPROTO_TCP + sizeof h;
    uint16_t c = htons(Checksum(h, sizeof h, sum));
    memcpy(&h[16], &c, 2);
  }
  ssize_t r = sendto(fd, h, sizeof h, 0, reinterpret_cast<sockaddr*>(&dst), tl);
  int e = errno;
  close(fd);
  if (r < 0) return Fail(env, e, "sendto(raw TCP)");
  return env.Undefined();
}

// udpPeek(fd) -> [{ from, data }]: every datagram queued, left in place (SO_PEEK_OFF walk).
Napi::Value UdpPeek(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info[0]);
  int saved = -1;
  GetSockoptInt(fd, SOL_SOCKET, SO_PEEK_OFF, &saved);
  Napi::Array arr = Napi::Array::New(env);
  std::vector<uint8_t> buf(65536);
  int off = 0;
  int err = 0;
  for (uint32_t i = 0; i < 1000000; i++) {
    if (setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof off) < 0) {
      err = errno;
      break;
    }
    sockaddr_storage from{};
    iovec iov{buf.data(), buf.size()};
    msghdr mh{};
    mh.msg_name = &from;
    mh.msg_namelen = sizeof from;
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    ssize_t r = recvmsg(fd, &mh, MSG_PEEK | MSG_DONTWAIT);
    if (r < 0) {
      if (errno != EAGAIN) err = errno;
      break;
    }
    Napi::Object d = Napi::Object::New(env);
    d.Set("from", AddrToJs(env, from));
    d.Set("data", Napi::Buffer<uint8_t>::Copy(env, buf.data(), r));
    arr.Set(i, d);
    off += r;
  }
  setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &saved, sizeof saved);
  if (err) return Fail(env, err, "recvmsg(MSG_PEEK, UDP)");
  return arr;
}

// udpInject(to, from, data): sends one datagram to `to` that appears to come from `from`
// (address and port), through a raw socket: how queued datagrams go back into a socket.
Napi::Value UdpInject(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  sockaddr_storage to, from;
  socklen_t tl, fl;
  if (!JsToAddr(env, info[0], &to, &tl) || !JsToAddr(env, info[1], &from, &fl)) return env.Undefined();
  Napi::Buffer<uint8_t> data = info[2].As<Napi::Buffer<uint8_t>>();
  if (to.ss_family != from.ss_family) {
    ThrowErrnoMsg(env, EINVAL, "udpInject: source and destination of different families");
    return env.Undefined();
  }
  int fam = to.ss_family;
  int fd = socket(fam, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_UDP);
  if (fd < 0) return Fail(env, errno, "socket(SOCK_RAW)");
  int one = 1;
  if (fam == AF_INET6) {
    int csum = 6;  // the kernel computes the UDP checksum (offset 6 of our header)
    setsockopt(fd, IPPROTO_IPV6, IPV6_CHECKSUM, &csum, sizeof csum);
    setsockopt(fd, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof one);
  } else {
    setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
  }
  // Bind the source address (port 0: raw sockets carry no port; ours is in the header).
  sockaddr_storage src = from;
  if (fam == AF_INET) reinterpret_cast<sockaddr_in*>(&src)->sin_port = 0;
  else reinterpret_cast<sockaddr_in6*>(&src)->sin6_port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&src), fl) < 0) {
    int e = errno;
    close(fd);
    return Fail(env, e, "bind(raw socket to the datagram's source)");
  }
  std::vector<uint8_t> pkt(8 + data.Length());
  uint16_t sport = fam == AF_INET ? reinterpret_cast<sockaddr_in*>(&from)->sin_port : reinterpret_cast<sockaddr_in6*>(&from)->sin6_port;
  uint16_t dport = fam == AF_INET ? reinterpret_cast<sockaddr_in*>(&to)->sin_port : reinterpret_cast<sockaddr_in6*>(&to)->sin6_port;
  memcpy(&pkt[0], &sport, 2);
  memcpy(&pkt[2], &dport, 2);
  uint16_t ulen = htons(static_cast<uint16_t>(pkt.size()));
  memcpy(&pkt[4], &ulen, 2);
  pkt[6] = pkt[7] = 0;
  if (data.Length()) memcpy(&pkt[8], data.Data(), data.Length());
  if (fam == AF_INET) {
    // IPv4 UDP checksum over the pseudo header (0 would mean "none", also accepted).
    const uint8_t* s = reinterpret_cast<const uint8_t*>(&reinterpret_cast<sockaddr_in*>(&from)->sin_addr);
    const uint8_t* d = reinterpret_cast<const uint8_t*>(&reinterpret_cast<sockaddr_in*>(&to)->sin_addr);
    uint32_t sum = ((s[0] << 8) | s[1]) + ((s[2] << 8) | s[3]) + ((d[0] << 8) | d[1]) + ((d[2] << 8) | d[3]) + IPPROTO_UDP + pkt.size();
    uint16_t c = Checksum(pkt.data(), pkt.size(), sum);
    if (c == 0) c = 0xffff;
    c = htons(c);
    memcpy(&pkt[6], &c, 2);
  }
  sockaddr_storage dst = to;
  if (fam == AF_INET) reinterpret_cast<sockaddr_in*>(&dst)->sin_port = 0;
  else reinterpret_cast<sockaddr_in6*>(&dst)->sin6_port = 0;
  ssize_t r = sendto(fd, pkt.data(), pkt.size(), 0, reinterpret_cast<sockaddr*>(&dst), tl);
  int e = errno;
  close(fd);
  if (r < 0) return Fail(env, e, "sendto(raw UDP)");
  return env.Undefined();
}

// One sock_diag request for a TCP connection by its 4-tuple: SOCK_DIAG_BY_FAMILY (lookup) or
// SOCK_DESTROY. Returns 0 and fills msg (lookup), or -errno (-ENOENT: no such socket).
int DiagTcp(int type, const sockaddr_storage& local, const sockaddr_storage& peer, inet_diag_msg* msg) {
  inet_diag_req_v2 r{};
  bool v4 = local.ss_family == AF_INET;
  r.sdiag_family = v4 ? AF_INET : AF_INET6;
  r.sdiag_protocol = IPPROTO_TCP;
  r.idiag_states = ~0U;
  if (v4) {
    auto* l = reinterpret_cast<const sockaddr_in*>(&local);
    auto* p = reinterpret_cast<const sockaddr_in*>(&peer);
    r.id.idiag_sport = l->sin_port;
    r.id.idiag_dport = p->sin_port;
    memcpy(r.id.idiag_src, &l->sin_addr, 4);
    memcpy(r.id.idiag_dst, &p->sin_addr, 4);
  } else {
    auto* l = reinterpret_cast<const sockaddr_in6*>(&local);
    auto* p = reinterpret_cast<const sockaddr_in6*>(&peer);
    r.id.idiag_sport = l->sin6_port;
    r.id.idiag_dport = p->sin6_port;
    memcpy(r.id.idiag_src, &l->sin6_addr, 16);
    memcpy(r.id.idiag_dst, &p->sin6_addr, 16);
  }
  r.id.idiag_cookie[0] = r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  bool destroy = type == SOCK_DESTROY;
  bool found = false;
  const char* stage = nullptr;
  int res = SockDiag(static_cast<uint16_t>(type), destroy ? NLM_F_ACK : 0, &r, sizeof r,
                     [&](const nlmsghdr* h) {
                       if (msg) memcpy(msg, NLMSG_DATA(h), sizeof *msg);
                       found = true;
                       return false;
                     },
                     2000, &stage);
  if (res < 0) return res;
  if (!destroy && !found) return -ENOENT;
  return 0;
}

// tcpDiag(local, peer) -> { state, inode, uid } of the TCP socket with that 4-tuple, or null.
Napi::Value TcpDiag(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  sockaddr_storage l, p;
  socklen_t ll, pl;
  if (!JsToAddr(env, info[0], &l, &ll) || !JsToAddr(env, info[1], &p, &pl)) return env.Undefined();
  inet_diag_msg m{};
  int r = DiagTcp(SOCK_DIAG_BY_FAMILY, l, p, &m);
  if (r == -ENOENT) return env.Null();
  if (r < 0) return Fail(env, -r, "sock_diag(SOCK_DIAG_BY_FAMILY)");
  // The lookup falls back to a listener on the local port: only the connection itself counts.
  uint16_t dport = l.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&p)->sin_port : reinterpret_cast<sockaddr_in6*>(&p)->sin6_port;
  if (m.idiag_state == 10 /* TCP_LISTEN */ || m.id.idiag_dport != dport) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("state", m.idiag_state);
  o.Set("inode", m.idiag_inode);
  o.Set("uid", m.idiag_uid);
  return o;
}

// inetShutdown(family, protocol, inode) -> the shutdown bits (1 receive, 2 send) of the inet
// socket with that inode (sock_diag dump of the protocol, INET_DIAG_SHUTDOWN), or null if not found.
Napi::Value InetShutdown(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  inet_diag_req_v2 req{};
  req.sdiag_family = ArgInt(info[0]) == 6 ? AF_INET6 : AF_INET;
  req.sdiag_protocol = static_cast<uint8_t>(ArgInt(info[1]));
  req.idiag_states = ~0u;
  uint32_t want = static_cast<uint32_t>(info[2].As<Napi::Number>().Int64Value());
  int found = -1;
  const char* stage = nullptr;
  int r = SockDiag(SOCK_DIAG_BY_FAMILY, NLM_F_DUMP, &req, sizeof req, [&](const nlmsghdr* h) {
    auto* m = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
    if (m->idiag_inode != want) return true;
    found = 0;
    int alen = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));
    for (auto* a = reinterpret_cast<const rtattr*>(m + 1); RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
      if (a->rta_type == INET_DIAG_SHUTDOWN && RTA_PAYLOAD(a) >= 1) found = *static_cast<const uint8_t*>(RTA_DATA(a));
    }
    return true;
  }, -1, &stage);
  if (r < 0) return Fail(env, -r, stage ? stage : "sock_diag(inet)");
  if (found < 0) return env.Null();
  return Napi::Number::New(env, found);
}

// tcpDestroy(local, peer): aborts the TCP socket with that 4-tuple (SOCK_DESTROY).
Napi::Value TcpDestroy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  sockaddr_storage l, p;
  socklen_t ll, pl;
  if (!JsToAddr(env, info[0], &l, &ll) || !JsToAddr(env, info[1], &p, &pl)) return env.Undefined();
  int r = DiagTcp(SOCK_DESTROY, l, p, nullptr);
  if (r < 0) return Fail(env, -r, "sock_diag(SOCK_DESTROY)");
  return env.Undefined();
}

}  // namespace

void InitInet(Napi::Env env, Napi::Object exports) {
  exports.Set("inetSocket", Napi::Function::New(env, InetSocket));
  exports.Set("sockInfo", Napi::Function::New(env, SockInfo));
  exports.Set("sockBind", Napi::Function::New(env, SockBind));
  exports.Set("sockConnect", Napi::Function::New(env, SockConnect));
  exports.Set("tcpRepair", Napi::Function::New(env, TcpRepair));
  exports.Set("tcpDumpConn", Napi::Function::New(env, TcpDumpConn));
  exports.Set("tcpSetQueueSeqs", Napi::Function::New(env, TcpSetQueueSeqs));
  exports.Set("tcpRepairFill", Napi::Function::New(env, TcpRepairFill));
  exports.Set("udpPeek", Napi::Function::New(env, UdpPeek));
  exports.Set("udpInject", Napi::Function::New(env, UdpInject));
  exports.Set("tcpDiag", Napi::Function::New(env, TcpDiag));
  exports.Set("inetShutdown", Napi::Function::New(env, InetShutdown));
  exports.Set("tcpDestroy", Napi::Function::New(env, TcpDestroy));
  exports.Set("tcpShutdownRepair", Napi::Function::New(env, TcpShutdownRepair));
  exports.Set("tcpInject", Napi::Function::New(env, TcpInject));
}

}  // namespace ckpt
