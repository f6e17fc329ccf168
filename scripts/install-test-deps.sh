#!/usr/bin/env bash
# Debian packages the test suite needs, installed only when missing (runs before `npm test`):
# nftables (TCP connections are blocked with it during a checkpoint), redis-server (the TCP
# acceptance test), b3sum (the reference BLAKE3 the image digests are checked against), zstd (the
# reference decoder compressed images are checked with), libzstd1 (what --compress loads) and
# openssh-server (the sshd of each test host that ckpt migrate moves processes between).
set -euo pipefail
missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v b3sum >/dev/null 2>&1 || missing+=(b3sum)
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
ldconfig -p 2>/dev/null | grep -q 'libzstd\.so\.1 ' || missing+=(libzstd1)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test dependencies: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
