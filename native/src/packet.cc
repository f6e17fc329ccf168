// Packet sockets (AF_PACKET) for @ckpt/plugin-packet: what sock_diag tells of one (interface,
// TPACKET version, reserve, copy threshold, flags, multicast memberships, ring settings, fanout,
// bytes queued), which getsockopt cannot read back.
#include "sock.h"

#include <arpa/inet.h>
#include <linux/packet_diag.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <sys/socket.h>

#include <cstring>

namespace ckpt {
namespace {

Napi::Object Ring(Napi::Env env, const packet_diag_ring& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("blockSize", r.pdr_block_size);
  o.Set("blockNr", r.pdr_block_nr);
  o.Set("frameSize", r.pdr_frame_size);
  o.Set("frameNr", r.pdr_frame_nr);
  o.Set("retireTmo", r.pdr_retire_tmo);
  o.Set("sizeofPriv", r.pdr_sizeof_priv);
  o.Set("features", r.pdr_features);
  return o;
}

// packetDiag(ino) -> { type, protocol, ifindex, version, reserve, copyThresh, tstamp, flags,
// mclist: [{ ifindex, count, type, addr }], rxRing?, txRing?, fanout?, rmem } | null (no such socket).
Napi::Value PacketDiag(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t ino = info[0].As<Napi::Number>().Uint32Value();
  packet_diag_req req{};
  req.sdiag_family = AF_PACKET;
  req.pdiag_ino = ino;
  req.pdiag_show = PACKET_SHOW_INFO | PACKET_SHOW_MCLIST | PACKET_SHOW_RING_CFG | PACKET_SHOW_FANOUT | PACKET_SHOW_MEMINFO;
  Napi::Value found = env.Null();
  const char* stage = nullptr;
  int r = SockDiag(SOCK_DIAG_BY_FAMILY, NLM_F_DUMP, &req, sizeof req, [&](const nlmsghdr* h) {
    auto* m = static_cast<const packet_diag_msg*>(NLMSG_DATA(h));
    if (m->pdiag_ino != ino) return true;
    Napi::Object o = Napi::Object::New(env);
    o.Set("type", m->pdiag_type);
    o.Set("protocol", m->pdiag_num);  // host byte order already
    o.Set("rmem", 0);
    Napi::Array mc = Napi::Array::New(env);
    o.Set("mclist", mc);
    int alen = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));
    for (auto* a = reinterpret_cast<const rtattr*>(m + 1); RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
      const uint8_t* d = static_cast<const uint8_t*>(RTA_DATA(a));
      size_t dl = RTA_PAYLOAD(a);
      switch (a->rta_type) {
        case PACKET_DIAG_INFO:
          if (dl >= sizeof(packet_diag_info)) {
            auto* i = reinterpret_cast<const packet_diag_info*>(d);
            o.Set("ifindex", i->pdi_index);
            o.Set("version", i->pdi_version);
            o.Set("reserve", i->pdi_reserve);
            o.Set("copyThresh", i->pdi_copy_thresh);
            o.Set("tstamp", i->pdi_tstamp);
            o.Set("flags", i->pdi_flags);
          }
          break;
        case PACKET_DIAG_MCLIST:
          for (size_t k = 0; (k + 1) * sizeof(packet_diag_mclist) <= dl; k++) {
            auto* e = reinterpret_cast<const packet_diag_mclist*>(d) + k;
            Napi::Object x = Napi::Object::New(env);
            x.Set("ifindex", e->pdmc_index);
            x.Set("count", e->pdmc_count);
            x.Set("type", e->pdmc_type);
            x.Set("addr", Napi::Buffer<uint8_t>::Copy(env, e->pdmc_addr, e->pdmc_alen < sizeof e->pdmc_addr ? e->pdmc_alen : sizeof e->pdmc_addr));
            mc.Set(static_cast<uint32_t>(k), x);
          }
          break;
        case PACKET_DIAG_RX_RING:
        case PACKET_DIAG_TX_RING:
          if (dl >= sizeof(packet_diag_ring))
            o.Set(a->rta_type == PACKET_DIAG_RX_RING ? "rxRing" : "txRing", Ring(env, *reinterpret_cast<const packet_diag_ring*>(d)));
          break;
        case PACKET_DIAG_FANOUT:
          if (dl >= 4) o.Set("fanout", *reinterpret_cast<const uint32_t*>(d));
          break;
        case PACKET_DIAG_MEMINFO:
          if (dl >= 4) o.Set("rmem", *reinterpret_cast<const uint32_t*>(d));  // SK_MEMINFO_RMEM_ALLOC
          break;
        default:
          break;
      }
    }
    found = o;
    return false;
  }, 2000, &stage);
  if (r < 0) {
    ThrowErrno(env, -r, stage ? stage : "sock_diag(AF_PACKET)");
    return env.Undefined();
  }
  return found;
}

}  // namespace

void InitPacket(Napi::Env env, Napi::Object exports) { exports.Set("packetDiag", Napi::Function::New(env, PacketDiag)); }

}  // namespace ckpt
