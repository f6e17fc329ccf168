// Network interfaces and raw ioctls for @ckpt/plugin-tun: ioctls whose argument is a buffer the
// caller lays out (struct ifreq...) or a plain value, every address of every interface
// (getifaddrs), and adding an address (rtnetlink RTM_NEWADDR, which also takes secondary ones).
#include "common.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace ckpt {
namespace {

// ioctlPtr(fd, request, buf) -> the ioctl's result; buf is read and written in place.
Napi::Value IoctlPtr(const Napi::CallbackInfo& info) {
  Napi::Buffer<uint8_t> b = info[2].As<Napi::Buffer<uint8_t>>();
  int r = ioctl(ArgInt(info[0]), info[1].As<Napi::Number>().Uint32Value(), b.Data());
  if (r < 0) {
    ThrowErrno(info.Env(), errno, "ioctl");
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), r);
}

// ioctlVal(fd, request, value) -> the ioctl's result (an argument passed by value).
Napi::Value IoctlVal(const Napi::CallbackInfo& info) {
  int r = ioctl(ArgInt(info[0]), info[1].As<Napi::Number>().Uint32Value(), static_cast<unsigned long>(info[2].As<Napi::Number>().Int64Value()));
  if (r < 0) {
    ThrowErrno(info.Env(), errno, "ioctl");
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), r);
}

// pollNow(fd, events) -> revents (poll(2) with no wait).
Napi::Value PollNow(const Napi::CallbackInfo& info) {
  pollfd p{ArgInt(info[0]), static_cast<short>(ArgInt(info[1])), 0};
  if (poll(&p, 1, 0) < 0) {
    ThrowErrno(info.Env(), errno, "poll");
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), p.revents);
}

int PrefixOf(const sockaddr* mask) {
  int n = 0;
  const uint8_t* p;
  size_t len;
  if (mask->sa_family == AF_INET) {
    p = reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in*>(mask)->sin_addr);
    len = 4;
  } else {
    p = reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in6*>(mask)->sin6_addr);
    len = 16;
  }
  for (size_t i = 0; i < len; i++) n += __builtin_popcount(p[i]);
  return n;
}

// netifAddrs() -> [{ name, family: 4 | 6, addr, prefix }]: every IPv4 and IPv6 address.
Napi::Value NetifAddrs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) < 0) {
    ThrowErrno(env, errno, "getifaddrs");
    return env.Undefined();
  }
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  for (ifaddrs* a = list; a; a = a->ifa_next) {
    if (!a->ifa_addr || (a->ifa_addr->sa_family != AF_INET && a->ifa_addr->sa_family != AF_INET6)) continue;
    char buf[INET6_ADDRSTRLEN] = {0};
    bool v4 = a->ifa_addr->sa_family == AF_INET;
    const void* src = v4 ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr)
                         : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(a->ifa_addr)->sin6_addr);
    inet_ntop(a->ifa_addr->sa_family, src, buf, sizeof buf);
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", a->ifa_name);
    o.Set("family", v4 ? 4 : 6);
    o.Set("addr", buf);
    o.Set("prefix", a->ifa_netmask ? PrefixOf(a->ifa_netmask) : (v4 ? 32 : 128));
    out.Set(n++, o);
  }
  freeifaddrs(list);
  return out;
}

// netifAddAddr(ifindex, family, addr, prefix): RTM_NEWADDR (NLM_F_CREATE | NLM_F_EXCL), acked.
Napi::Value NetifAddAddr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int ifindex = ArgInt(info[0]);
  int fam = ArgInt(info[1]) == 6 ? AF_INET6 : AF_INET;
  std::string addr = info[2].As<Napi::String>().Utf8Value();
  int prefix = ArgInt(info[3]);
  uint8_t bin[16];
  if (inet_pton(fam, addr.c_str(), bin) != 1) {
    ThrowErrnoMsg(env, EINVAL, "bad address " + addr);
    return env.Undefined();
  }
  size_t alen = fam == AF_INET ? 4 : 16;
  struct {
    nlmsghdr h;
    ifaddrmsg m;
    char attrs[64];
  } req{};
  req.h.nlmsg_type = RTM_NEWADDR;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
  req.h.nlmsg_seq = 1;
  req.m.ifa_family = static_cast<uint8_t>(fam);
  req.m.ifa_prefixlen = static_cast<uint8_t>(prefix);
  req.m.ifa_index = static_cast<uint32_t>(ifindex);
  size_t off = 0;
  for (int type : {IFA_LOCAL, IFA_ADDRESS}) {
    auto* a = reinterpret_cast<rtattr*>(req.attrs + off);
    a->rta_type = static_cast<unsigned short>(type);
    a->rta_len = static_cast<unsigned short>(RTA_LENGTH(alen));
    memcpy(RTA_DATA(a), bin, alen);
    off += RTA_ALIGN(a->rta_len);
  }
  req.h.nlmsg_len = static_cast<uint32_t>(NLMSG_LENGTH(sizeof(ifaddrmsg)) + off);
  int nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (nl < 0) {
    ThrowErrno(env, errno, "socket(NETLINK_ROUTE)");
    return env.Undefined();
  }
  int err = 0;
  if (send(nl, &req, req.h.nlmsg_len, 0) < 0) {
    err = errno;
  } else {
    char buf[4096];
    ssize_t r = recv(nl, buf, sizeof buf, 0);
    if (r < 0) err = errno;
    else if (r >= static_cast<ssize_t>(NLMSG_LENGTH(sizeof(nlmsgerr)))) {
      auto* h = reinterpret_cast<nlmsghdr*>(buf);
      if (h->nlmsg_type == NLMSG_ERROR) err = -reinterpret_cast<nlmsgerr*>(NLMSG_DATA(h))->error;
    }
  }
  close(nl);
  if (err) ThrowErrno(env, err, "rtnetlink RTM_NEWADDR");
  return env.Undefined();
}

}  // namespace

void InitNetif(Napi::Env env, Napi::Object exports) {
  exports.Set("ioctlPtr", Napi::Function::New(env, IoctlPtr));
  exports.Set("ioctlVal", Napi::Function::New(env, IoctlVal));
  exports.Set("pollNow", Napi::Function::New(env, PollNow));
  exports.Set("netifAddrs", Napi::Function::New(env, NetifAddrs));
  exports.Set("netifAddAddr", Napi::Function::New(env, NetifAddAddr));
}

}  // namespace ckpt
