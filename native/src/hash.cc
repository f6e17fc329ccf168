// The digests of image files (BLAKE3, SHA-256): running hashes as JS handles, a buffer hashed at
// once, and a file range hashed through one buffer. See hash.h.
#include "hash.h"

#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace ckpt {
namespace {

// Marks the Externals that hold a Hash (napi_type_tag), so that no other External is taken for one.
constexpr napi_type_tag kHashTag = {0x636b70742d736861ULL, 0x3235362d68616e64ULL};
constexpr size_t kFileChunk = 1 << 20;

void HexDigest(const uint8_t d[32], char out[65]) {
  static const char* x = "0123456789abcdef";
  for (int i = 0; i < 32; i++) out[2 * i] = x[d[i] >> 4], out[2 * i + 1] = x[d[i] & 15];
  out[64] = 0;
}

// A new running hash of the algorithm named by `v` ("blake3" or "sha256"), or nullptr after throwing.
Hash* NewHash(const Napi::Value& v) {
  Napi::Env env = v.Env();
  std::string alg = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (alg == "blake3") return new Blake3Hash();
  if (alg == "sha256") {
    auto* h = new Sha256();
    if (h->ok()) return h;
    delete h;
    ThrowErrno(env, ENOMEM, "EVP_DigestInit_ex(sha256)");
    return nullptr;
  }
  Napi::TypeError::New(env, "hash algorithm must be \"blake3\" or \"sha256\"").ThrowAsJavaScriptException();
  return nullptr;
}

Napi::Value HexValue(Napi::Env env, const Hash& h) {
  uint8_t d[32];
  char hex[65];
  if (!h.Digest(d)) {
    ThrowErrno(env, EINVAL, "EVP_DigestFinal_ex(sha256)");
    return env.Undefined();
  }
  HexDigest(d, hex);
  return Napi::String::New(env, hex, 64);
}

// hashNew(alg) -> handle: an empty running hash ("blake3" or "sha256").
Napi::Value HashNew(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Hash* h = NewHash(info[0]);
  if (!h) return env.Undefined();
  auto ext = Napi::External<Hash>::New(env, h, [](Napi::Env, Hash* p) { delete p; });
  ext.TypeTag(&kHashTag);
  return ext;
}

// hashUpdate(handle, buffer): hashes the buffer's bytes.
Napi::Value HashUpdateJs(const Napi::CallbackInfo& info) {
  Hash* h = HashArg(info[0]);
  if (!h) return info.Env().Undefined();
  auto b = info[1].As<Napi::Uint8Array>();
  h->Update(b.Data(), b.ByteLength());
  return info.Env().Undefined();
}

// hashDigest(handle) -> hex string of everything hashed so far (the handle can go on).
Napi::Value HashDigestJs(const Napi::CallbackInfo& info) {
  Hash* h = HashArg(info[0]);
  if (!h) return info.Env().Undefined();
  return HexValue(info.Env(), *h);
}

// hashOf(alg, buffer) -> hex digest of the buffer.
Napi::Value HashOf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::unique_ptr<Hash> h(NewHash(info[0]));
  if (!h) return env.Undefined();
  auto b = info[1].As<Napi::Uint8Array>();
  h->Update(b.Data(), b.ByteLength());
  return HexValue(env, *h);
}

// hashFile(alg, fd, offset, length) -> hex digest of that range of the file (pread, 1 MiB at a time).
Napi::Value HashFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::unique_ptr<Hash> h(NewHash(info[0]));
  if (!h) return env.Undefined();
  int fd = ArgInt(info[1]);
  uint64_t off = ArgU64(info[2]), len = ArgU64(info[3]);
  std::vector<uint8_t> buf(kFileChunk);
  while (len) {
    size_t want = std::min<uint64_t>(len, buf.size());
    ssize_t r = pread(fd, buf.data(), want, off);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      ThrowErrno(env, r == 0 ? ENODATA : errno, "read(image)");
      return env.Undefined();
    }
    h->Update(buf.data(), r);
    off += r;
    len -= r;
  }
  return HexValue(env, *h);
}

// blake3Use([path]) -> the BLAKE3 path in use ("avx512", "avx2", "portable"); with a path, no
// wider one is used from then on (a path the CPU lacks is not taken).
Napi::Value Blake3UseJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  if (!path.empty() && path != "avx512" && path != "avx2" && path != "portable") {
    Napi::TypeError::New(env, "blake3 path must be \"avx512\", \"avx2\" or \"portable\"").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::String::New(env, Blake3::Use(path.empty() ? nullptr : path.c_str()));
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

Hash* HashArg(const Napi::Value& v) {
  if (!v.IsExternal() || !v.As<Napi::External<Hash>>().CheckTypeTag(&kHashTag)) {
    Napi::TypeError::New(v.Env(), "expected a hash handle (from hashNew)").ThrowAsJavaScriptException();
    return nullptr;
  }
  return v.As<Napi::External<Hash>>().Data();
}

void InitHash(Napi::Env env, Napi::Object exports) {
  exports.Set("hashNew", Napi::Function::New(env, HashNew));
  exports.Set("hashUpdate", Napi::Function::New(env, HashUpdateJs));
  exports.Set("hashDigest", Napi::Function::New(env, HashDigestJs));
  exports.Set("hashOf", Napi::Function::New(env, HashOf));
  exports.Set("hashFile", Napi::Function::New(env, HashFile));
  exports.Set("blake3Use", Napi::Function::New(env, Blake3UseJs));
}

}  // namespace ckpt
