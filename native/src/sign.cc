// Ed25519 signatures of image manifests and random bytes, through the OpenSSL that Node carries
// (its symbols are the executable's), for a dump and a restore that never load node:crypto: its
// module, with the streams it loads, costs 5-6 ms of every command's start, for one signature.
// Keys are raw (a 32-byte seed, a 32-byte public key), as RFC 8032 defines them.
#include <openssl/evp.h>
#include <sys/random.h>

#include <cerrno>

#include "common.h"

namespace ckpt {
namespace {

constexpr size_t kKey = 32, kSig = 64;

// The key for a raw private seed (32 bytes), or nullptr after throwing.
EVP_PKEY* PrivateKey(Napi::Env env, const Napi::Value& v) {
  auto seed = v.As<Napi::Uint8Array>();
  if (seed.ByteLength() != kKey) {
    Napi::TypeError::New(env, "an Ed25519 private key is 32 bytes").ThrowAsJavaScriptException();
    return nullptr;
  }
  EVP_PKEY* k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed.Data(), kKey);
  if (!k) ThrowErrno(env, EINVAL, "EVP_PKEY_new_raw_private_key(ed25519)");
  return k;
}

// ed25519Public(seed) -> the 32-byte public key of a private seed.
Napi::Value Ed25519Public(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EVP_PKEY* k = PrivateKey(env, info[0]);
  if (!k) return env.Undefined();
  auto out = Napi::Buffer<uint8_t>::New(env, kKey);
  size_t n = kKey;
  bool ok = EVP_PKEY_get_raw_public_key(k, out.Data(), &n) == 1 && n == kKey;
  EVP_PKEY_free(k);
  if (!ok) {
    ThrowErrno(env, EINVAL, "EVP_PKEY_get_raw_public_key(ed25519)");
    return env.Undefined();
  }
  return out;
}

// ed25519Sign(seed, message) -> the 64-byte signature.
Napi::Value Ed25519Sign(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EVP_PKEY* k = PrivateKey(env, info[0]);
  if (!k) return env.Undefined();
  auto msg = info[1].As<Napi::Uint8Array>();
  auto out = Napi::Buffer<uint8_t>::New(env, kSig);
  size_t n = kSig;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = ctx && EVP_DigestSignInit(ctx, nullptr, nullptr, nullptr, k) == 1 &&
            EVP_DigestSign(ctx, out.Data(), &n, msg.Data(), msg.ByteLength()) == 1 && n == kSig;
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(k);
  if (!ok) {
    ThrowErrno(env, EINVAL, "EVP_DigestSign(ed25519)");
    return env.Undefined();
  }
  return out;
}

// ed25519Verify(publicKey, message, signature) -> whether the signature is the key's, of the message.
Napi::Value Ed25519Verify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto pub = info[0].As<Napi::Uint8Array>();
  auto msg = info[1].As<Napi::Uint8Array>();
  auto sig = info[2].As<Napi::Uint8Array>();
  if (pub.ByteLength() != kKey || sig.ByteLength() != kSig) return Napi::Boolean::New(env, false);
  EVP_PKEY* k = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, pub.Data(), kKey);
  if (!k) return Napi::Boolean::New(env, false);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = ctx && EVP_DigestVerifyInit(ctx, nullptr, nullptr, nullptr, k) == 1 &&
            EVP_DigestVerify(ctx, sig.Data(), kSig, msg.Data(), msg.ByteLength()) == 1;
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(k);
  return Napi::Boolean::New(env, ok);
}

// randomBytes(n) -> n bytes of getrandom(2).
Napi::Value RandomBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t n = ArgU64(info[0]);
  auto out = Napi::Buffer<uint8_t>::New(env, n);
  for (size_t off = 0; off < n;) {
    ssize_t r = getrandom(out.Data() + off, n - off, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      ThrowErrno(env, errno, "getrandom");
      return env.Undefined();
    }
    off += r;
  }
  return out;
}

}  // namespace

void InitSign(Napi::Env env, Napi::Object exports) {
  exports.Set("ed25519Public", Napi::Function::New(env, Ed25519Public));
  exports.Set("ed25519Sign", Napi::Function::New(env, Ed25519Sign));
  exports.Set("ed25519Verify", Napi::Function::New(env, Ed25519Verify));
  exports.Set("randomBytes", Napi::Function::New(env, RandomBytes));
}

}  // namespace ckpt
