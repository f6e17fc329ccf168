// SHA-256 with OpenSSL's EVP API (node's own OpenSSL: its headers come with node's, its symbols
// resolve from the node binary). A running hash is a JS value (an External, type-tagged) so that
// one digest can continue across many native calls (the page copy works in pieces).
#pragma once
#include "common.h"

#include <openssl/evp.h>

namespace ckpt {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  bool ok() const { return ctx_ != nullptr; }
  void Update(const uint8_t* p, size_t n) { EVP_DigestUpdate(ctx_, p, n); }
  // The digest of everything so far; the hash can go on.
  bool Digest(uint8_t out[32]) const;

 private:
  EVP_MD_CTX* ctx_;
};

// The Sha256 a JS value holds (a handle from sha256New), or nullptr after throwing a TypeError.
Sha256* Sha256Arg(const Napi::Value& v);

void InitHash(Napi::Env env, Napi::Object exports);

}  // namespace ckpt
