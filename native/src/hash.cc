// SHA-256, the digest of image files: running hashes as JS handles, and a file range hashed
// through one buffer. See hash.h.
#include "hash.h"

#include <unistd.h>

#include <cstdlib>
#include <vector>

namespace ckpt {
namespace {

// Marks the Externals that hold a Sha256 (napi_type_tag), so that no other External is taken for one.
constexpr napi_type_tag kSha256Tag = {0x636b70742d736861ULL, 0x3235362d68616e64ULL};
constexpr size_t kFileChunk = 1 << 20;

void HexDigest(const uint8_t d[32], char out[65]) {
  static const char* x = "0123456789abcdef";
  for (int i = 0; i < 32; i++) out[2 * i] = x[d[i] >> 4], out[2 * i + 1] = x[d[i] & 15];
  out[64] = 0;
}

// sha256New() -> handle: an empty running SHA-256.
Napi::Value Sha256New(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* h = new Sha256();
  if (!h->ok()) {
    delete h;
    ThrowErrno(env, ENOMEM, "EVP_DigestInit_ex(sha256)");
    return env.Undefined();
  }
  auto ext = Napi::External<Sha256>::New(env, h, [](Napi::Env, Sha256* p) { delete p; });
  ext.TypeTag(&kSha256Tag);
  return ext;
}

// sha256Update(handle, buffer): hashes the buffer's bytes.
Napi::Value Sha256UpdateJs(const Napi::CallbackInfo& info) {
  Sha256* h = Sha256Arg(info[0]);
  if (!h) return info.Env().Undefined();
  auto b = info[1].As<Napi::Uint8Array>();
  h->Update(b.Data(), b.ByteLength());
  return info.Env().Undefined();
}

// sha256Digest(handle) -> hex string of everything hashed so far (the handle can go on).
Napi::Value Sha256DigestJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Sha256* h = Sha256Arg(info[0]);
  if (!h) return env.Undefined();
  uint8_t d[32];
  char hex[65];
  if (!h->Digest(d)) {
    ThrowErrno(env, EINVAL, "EVP_DigestFinal_ex(sha256)");
    return env.Undefined();
  }
  HexDigest(d, hex);
  return Napi::String::New(env, hex, 64);
}

// sha256File(fd, offset, length) -> hex SHA-256 of that range of the file (pread, 1 MiB at a time).
Napi::Value Sha256File(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info[0]);
  uint64_t off = ArgU64(info[1]), len = ArgU64(info[2]);
  Sha256 h;
  if (!h.ok()) {
    ThrowErrno(env, ENOMEM, "EVP_DigestInit_ex(sha256)");
    return env.Undefined();
  }
  std::vector<uint8_t> buf(kFileChunk);
  while (len) {
    size_t want = std::min<uint64_t>(len, buf.size());
    ssize_t r = pread(fd, buf.data(), want, off);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      ThrowErrno(env, r == 0 ? ENODATA : errno, "read(image)");
      return env.Undefined();
    }
    h.Update(buf.data(), r);
    off += r;
    len -= r;
  }
  uint8_t d[32];
  char hex[65];
  h.Digest(d);
  HexDigest(d, hex);
  return Napi::String::New(env, hex, 64);
}

}  // namespace

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (ctx_ && EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(ctx_);
    ctx_ = nullptr;
  }
}

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }

bool Sha256::Digest(uint8_t out[32]) const {
  EVP_MD_CTX* copy = EVP_MD_CTX_new();
  unsigned int n = 0;
  bool ok = copy && EVP_MD_CTX_copy_ex(copy, ctx_) == 1 && EVP_DigestFinal_ex(copy, out, &n) == 1 && n == 32;
  EVP_MD_CTX_free(copy);
  return ok;
}

Sha256* Sha256Arg(const Napi::Value& v) {
  if (!v.IsExternal() || !v.As<Napi::External<Sha256>>().CheckTypeTag(&kSha256Tag)) {
    Napi::TypeError::New(v.Env(), "expected a SHA-256 handle (from sha256New)").ThrowAsJavaScriptException();
    return nullptr;
  }
  return v.As<Napi::External<Sha256>>().Data();
}

void InitHash(Napi::Env env, Napi::Object exports) {
  exports.Set("sha256New", Napi::Function::New(env, Sha256New));
  exports.Set("sha256Update", Napi::Function::New(env, Sha256UpdateJs));
  exports.Set("sha256Digest", Napi::Function::New(env, Sha256DigestJs));
  exports.Set("sha256File", Napi::Function::New(env, Sha256File));
}

}  // namespace ckpt
