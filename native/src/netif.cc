// Network interfaces and raw ioctls for @ckpt/plugin-tun: ioctls whose argument is a buffer the
// caller lays out (struct ifreq...) or a plain value, every address of every interface
// (getifaddrs), adding and removing an address (rtnetlink RTM_NEWADDR, which also takes secondary
// ones, RTM_DELADDR), and announcing one that moved here (a gratuitous ARP, for ckpt migrate);
// nftables scripts run through libnftables, in ckpt's process (the network lock).
#include "common.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <sched.h>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <linux/if_addr.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>

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

// An RTM_NEWADDR or RTM_DELADDR request for ifindex, acked: 0 or the errno.
int AddrRequest(uint16_t type, uint16_t flags, int ifindex, int fam, const uint8_t* bin, int prefix) {
  size_t alen = fam == AF_INET ? 4 : 16;
  struct {
    nlmsghdr h;
    ifaddrmsg m;
    char attrs[64];
  } req{};
  req.h.nlmsg_type = type;
  req.h.nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | NLM_F_ACK | flags);
  req.h.nlmsg_seq = 1;
  req.m.ifa_family = static_cast<uint8_t>(fam);
  req.m.ifa_prefixlen = static_cast<uint8_t>(prefix);
  req.m.ifa_index = static_cast<uint32_t>(ifindex);
  size_t off = 0;
  for (int t : {IFA_LOCAL, IFA_ADDRESS}) {
    auto* a = reinterpret_cast<rtattr*>(req.attrs + off);
    a->rta_type = static_cast<unsigned short>(t);
    a->rta_len = static_cast<unsigned short>(RTA_LENGTH(alen));
    memcpy(RTA_DATA(a), bin, alen);
    off += RTA_ALIGN(a->rta_len);
  }
  req.h.nlmsg_len = static_cast<uint32_t>(NLMSG_LENGTH(sizeof(ifaddrmsg)) + off);
  int nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (nl < 0) return errno;
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
  return err;
}

// netifAddAddr(ifindex, family, addr, prefix) / netifDelAddr(...): RTM_NEWADDR (NLM_F_CREATE |
// NLM_F_EXCL) or RTM_DELADDR, acked.
Napi::Value AddrChange(const Napi::CallbackInfo& info, bool add) {
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
  int err = add ? AddrRequest(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, ifindex, fam, bin, prefix) : AddrRequest(RTM_DELADDR, 0, ifindex, fam, bin, prefix);
  if (err) ThrowErrno(env, err, add ? "rtnetlink RTM_NEWADDR" : "rtnetlink RTM_DELADDR");
  return env.Undefined();
}

Napi::Value NetifAddAddr(const Napi::CallbackInfo& info) { return AddrChange(info, true); }
Napi::Value NetifDelAddr(const Napi::CallbackInfo& info) { return AddrChange(info, false); }

// netifIndex(name) -> the interface's index in our network namespace (0: none).
Napi::Value NetifIndex(const Napi::CallbackInfo& info) {
  std::string name = info[0].As<Napi::String>().Utf8Value();
  return Napi::Number::New(info.Env(), if_nametoindex(name.c_str()));
}

// arpAnnounce(ifname, addr): one gratuitous ARP request (sender and target address both addr,
// broadcast), so that the link's neighbours send to this interface from now on (an address that
// moved here from another host).
Napi::Value ArpAnnounce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  std::string addr = info[1].As<Napi::String>().Utf8Value();
  in_addr ip{};
  if (inet_pton(AF_INET, addr.c_str(), &ip) != 1) {
    ThrowErrnoMsg(env, EINVAL, "bad IPv4 address " + addr);
    return env.Undefined();
  }
  unsigned idx = if_nametoindex(name.c_str());
  if (!idx) {
    ThrowErrno(env, errno, "if_nametoindex");
    return env.Undefined();
  }
  int fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_ARP));
  if (fd < 0) {
    ThrowErrno(env, errno, "socket(AF_PACKET)");
    return env.Undefined();
  }
  ifreq ifr{};
  strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) {
    int e = errno;
    close(fd);
    ThrowErrno(env, e, "SIOCGIFHWADDR");
    return env.Undefined();
  }
  uint8_t pkt[28];
  const uint8_t* mac = reinterpret_cast<const uint8_t*>(ifr.ifr_hwaddr.sa_data);
  pkt[0] = 0, pkt[1] = 1;                 // hardware: Ethernet
  pkt[2] = 0x08, pkt[3] = 0x00;           // protocol: IPv4
  pkt[4] = 6, pkt[5] = 4;                 // their lengths
  pkt[6] = 0, pkt[7] = 1;                 // a request
  memcpy(pkt + 8, mac, 6);                // sender: us, at addr
  memcpy(pkt + 14, &ip, 4);
  memset(pkt + 18, 0, 6);                 // target: anyone, at addr
  memcpy(pkt + 24, &ip, 4);
  sockaddr_ll to{};
  to.sll_family = AF_PACKET;
  to.sll_protocol = htons(ETH_P_ARP);
  to.sll_ifindex = static_cast<int>(idx);
  to.sll_halen = 6;
  memset(to.sll_addr, 0xff, 6);
  ssize_t n = sendto(fd, pkt, sizeof pkt, 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
  int e = errno;
  close(fd);
  if (n < 0) ThrowErrno(env, e, "sendto(ARP)");
  return env.Undefined();
}

// libnftables (the nftables package's library, what the nft command runs), loaded with dlopen:
// null where it is not installed.
struct NftApi {
  void* (*ctxNew)(uint32_t);
  void (*ctxFree)(void*);
  int (*bufferOutput)(void*);
  int (*bufferError)(void*);
  const char* (*errorBuffer)(void*);
  int (*runBuffer)(void*, const char*);
};

const NftApi* Nft() {
  static NftApi api;
  static const NftApi* loaded = []() -> const NftApi* {
    void* h = dlopen("libnftables.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) return nullptr;
    auto sym = [h](const char* n) { return dlsym(h, n); };
    api.ctxNew = reinterpret_cast<void* (*)(uint32_t)>(sym("nft_ctx_new"));
    api.ctxFree = reinterpret_cast<void (*)(void*)>(sym("nft_ctx_free"));
    api.bufferOutput = reinterpret_cast<int (*)(void*)>(sym("nft_ctx_buffer_output"));
    api.bufferError = reinterpret_cast<int (*)(void*)>(sym("nft_ctx_buffer_error"));
    api.errorBuffer = reinterpret_cast<const char* (*)(void*)>(sym("nft_ctx_get_error_buffer"));
    api.runBuffer = reinterpret_cast<int (*)(void*, const char*)>(sym("nft_run_cmd_from_buffer"));
    if (!api.ctxNew || !api.ctxFree || !api.bufferOutput || !api.bufferError || !api.errorBuffer || !api.runBuffer) return nullptr;
    return &api;
  }();
  return loaded;
}

// One nft script through libnftables, as `nft -f -` would run it: "" when done, else nft's error.
std::string NftRun(const NftApi* nft, const std::string& script) {
  void* ctx = nft->ctxNew(0);
  if (!ctx) return "nft_ctx_new failed";
  nft->bufferOutput(ctx);
  nft->bufferError(ctx);
  int r = nft->runBuffer(ctx, script.c_str());
  std::string err;
  if (r != 0) {
    const char* e = nft->errorBuffer(ctx);
    err = e && *e ? e : "nft failed";
  }
  nft->ctxFree(ctx);
  return err;
}

// nftRun(script, nsPid?) -> null when done; nft's error message (a string) when it failed; false
// when libnftables cannot be loaded (the caller runs the nft command). In the network namespace
// of nsPid when given: on a thread of its own that enters it (setns moves only the calling thread),
// so that nothing else of ckpt's process changes namespace. In-process, a script costs 0.2-3 ms,
// where `nft -f -` took 15-24 ms a run here (a process, and nft's start).
Napi::Value NftRunJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const NftApi* nft = Nft();
  if (!nft) return Napi::Boolean::New(env, false);
  std::string script = info[0].As<Napi::String>().Utf8Value();
  long nsPid = info.Length() > 1 && info[1].IsNumber() ? ArgInt(info[1]) : 0;
  std::string err;
  if (!nsPid) {
    err = NftRun(nft, script);
  } else {
    int fd = open(("/proc/" + std::to_string(nsPid) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      ThrowErrno(env, errno, "open(/proc/PID/ns/net)", nsPid);
      return env.Undefined();
    }
    int setErr = 0;
    std::thread t([&] {
      if (setns(fd, CLONE_NEWNET) != 0) {
        setErr = errno;
        return;
      }
      err = NftRun(nft, script);
    });
    t.join();
    close(fd);
    if (setErr) {
      ThrowErrno(env, setErr, "setns(CLONE_NEWNET)", nsPid);
      return env.Undefined();
    }
  }
  if (err.empty()) return env.Null();
  return Napi::String::New(env, err);
}

}  // namespace

void InitNetif(Napi::Env env, Napi::Object exports) {
  exports.Set("ioctlPtr", Napi::Function::New(env, IoctlPtr));
  exports.Set("ioctlVal", Napi::Function::New(env, IoctlVal));
  exports.Set("pollNow", Napi::Function::New(env, PollNow));
  exports.Set("netifAddrs", Napi::Function::New(env, NetifAddrs));
  exports.Set("netifAddAddr", Napi::Function::New(env, NetifAddAddr));
  exports.Set("netifDelAddr", Napi::Function::New(env, NetifDelAddr));
  exports.Set("netifIndex", Napi::Function::New(env, NetifIndex));
  exports.Set("arpAnnounce", Napi::Function::New(env, ArpAnnounce));
  exports.Set("nftRun", Napi::Function::New(env, NftRunJs));
}

}  // namespace ckpt
