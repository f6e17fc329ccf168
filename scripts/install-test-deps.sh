#!/usr/bin/env bash
# Debian packages the test suite needs, installed only when missing (runs before `npm test`):
# nftables (TCP connections are blocked with it during a checkpoint) and redis-server (the TCP
# acceptance test).
set -euo pipefail
missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test dependencies: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
