// Helpers shared by the socket files (unix.cc, inet.cc): socket options and NETLINK_SOCK_DIAG.
#pragma once
#include "common.h"

#include <linux/netlink.h>

#include <cstddef>
#include <functional>

namespace ckpt {

// getsockopt of an int option: 0, or -1 with errno.
int GetSockoptInt(int fd, int level, int name, int* out);
// setsockopt of an int option: 0, or -1 with errno.
int SetSockoptInt(int fd, int level, int name, int value);

// The getsockopt / setsockopt behind every JS-visible socket option function: arguments
// (fd, level, name, value-or-length) as in sockGetInt / sockSetInt / sockGetBytes /
// sockSetBytes. A get answers null, when nullIfMissing, for an option this socket does not
// have (ENOPROTOOPT, EOPNOTSUPP, EINVAL, and ENOENT for bytes); otherwise it throws.
enum class SockoptKind { kInt, kBytes };
Napi::Value GetSockoptJs(const Napi::CallbackInfo& info, SockoptKind kind, bool nullIfMissing);
Napi::Value SetSockoptJs(const Napi::CallbackInfo& info, SockoptKind kind);

// One NETLINK_SOCK_DIAG request: a nlmsghdr of `type` and `flags` (NLM_F_REQUEST is added)
// followed by `req` (a unix_diag_req, inet_diag_req_v2...). Every answer message of type
// SOCK_DIAG_BY_FAMILY goes to onMsg (false stops the walk). A dump (NLM_F_DUMP) is read up to
// NLMSG_DONE, any other request up to its first answer. Waits at most timeoutMs per read
// (-1: no limit). Returns 0, or -errno: the kernel's (an NLMSG_ERROR; 0 there is an ack) or
// that of the netlink call named in *stage (left alone for the kernel's answer).
int SockDiag(uint16_t type, uint16_t flags, const void* req, size_t reqLen,
             const std::function<bool(const nlmsghdr*)>& onMsg, int timeoutMs, const char** stage);

}  // namespace ckpt
