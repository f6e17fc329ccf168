// The digests of image files: BLAKE3 (blake3.h, what new images use) and SHA-256 (images of
// format 3 and older; OpenSSL's EVP API from node's own OpenSSL: its headers come with node's, its
// symbols resolve from the node binary). A running hash is a JS value (an External, type-tagged)
// so that one digest can continue across many native calls (the page copy works in pieces).
#pragma once
#include "blake3.h"
#include "common.h"

#include <openssl/evp.h>

namespace ckpt {

class Hash {
 public:
  virtual ~Hash() = default;
  virtual void Update(const uint8_t* p, size_t n) = 0;
  // The digest of everything so far; the hash can go on. false: the library failed.
  virtual bool Digest(uint8_t out[32]) const = 0;
  // The BLAKE3 state under this hash (whose pieces threads may hash at once), or null.
  virtual Blake3* blake3() { return nullptr; }
};

class Sha256 : public Hash {
 public:
  Sha256();
  ~Sha256() override;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  bool ok() const { return ctx_ != nullptr; }
  void Update(const uint8_t* p, size_t n) override { EVP_DigestUpdate(ctx_, p, n); }
  bool Digest(uint8_t out[32]) const override;

 private:
  EVP_MD_CTX* ctx_;
};

class Blake3Hash : public Hash {
 public:
  void Update(const uint8_t* p, size_t n) override { b_.Update(p, n); }
  bool Digest(uint8_t out[32]) const override {
    b_.Digest(out);
    return true;
  }
  Blake3* blake3() override { return &b_; }

 private:
  Blake3 b_;
};

// The Hash a JS value holds (a handle from hashNew), or nullptr after throwing a TypeError.
Hash* HashArg(const Napi::Value& v);

void InitHash(Napi::Env env, Napi::Object exports);

}  // namespace ckpt
