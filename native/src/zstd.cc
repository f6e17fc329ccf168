// zstd streams for image blobs (see zstd.h): libzstd loaded with dlopen, a compression stream the
// page copy writes through, a decompression stream the restore reads through, and a whole-file
// decompression (for ckpt image compact).
#include "zstd.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <unistd.h>

#include <string>

namespace ckpt {
namespace {

// ZSTD_cParameter and ZSTD_EndDirective values (zstd.h, stable API).
constexpr int kCompressionLevel = 100;
constexpr int kNbWorkers = 400;
constexpr int kContinue = 0;
constexpr int kEnd = 2;
constexpr size_t kOutChunk = 1 << 20;

constexpr napi_type_tag kWriterTag = {0x636b70747a737464ULL, 0x7772697465720001ULL};
constexpr napi_type_tag kReaderTag = {0x636b70747a737464ULL, 0x7265616465720001ULL};

}  // namespace

const ZstdApi* Zstd() {
  static ZstdApi api;
  static const ZstdApi* loaded = []() -> const ZstdApi* {
    void* h = dlopen("libzstd.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) return nullptr;
    auto sym = [h](const char* n) { return dlsym(h, n); };
    api.createCCtx = reinterpret_cast<void* (*)()>(sym("ZSTD_createCCtx"));
    api.freeCCtx = reinterpret_cast<size_t (*)(void*)>(sym("ZSTD_freeCCtx"));
    api.setParameter = reinterpret_cast<size_t (*)(void*, int, int)>(sym("ZSTD_CCtx_setParameter"));
    api.compressStream2 = reinterpret_cast<size_t (*)(void*, ZstdBuffer*, ZstdBuffer*, int)>(sym("ZSTD_compressStream2"));
    api.createDCtx = reinterpret_cast<void* (*)()>(sym("ZSTD_createDCtx"));
    api.freeDCtx = reinterpret_cast<size_t (*)(void*)>(sym("ZSTD_freeDCtx"));
    api.decompressStream = reinterpret_cast<size_t (*)(void*, ZstdBuffer*, ZstdBuffer*)>(sym("ZSTD_decompressStream"));
    api.isError = reinterpret_cast<unsigned (*)(size_t)>(sym("ZSTD_isError"));
    api.getErrorName = reinterpret_cast<const char* (*)(size_t)>(sym("ZSTD_getErrorName"));
    if (!api.createCCtx || !api.freeCCtx || !api.setParameter || !api.compressStream2 || !api.createDCtx || !api.freeDCtx || !api.decompressStream ||
        !api.isError || !api.getErrorName)
      return nullptr;
    return &api;
  }();
  return loaded;
}

ZstdWriter::ZstdWriter(const ZstdApi* z, int level) : z_(z), cctx_(z->createCCtx()), buf_(kOutChunk) {
  if (!cctx_) return;
  z_->setParameter(cctx_, kCompressionLevel, level);
  // The copy's other threads keep one core busy: zstd gets the other (ignored without threads).
  z_->setParameter(cctx_, kNbWorkers, 1);
}

ZstdWriter::~ZstdWriter() {
  if (cctx_) z_->freeCCtx(cctx_);
}

int ZstdWriter::Write(const uint8_t* p, size_t n, bool end, int fd, uint64_t* off, Hash* hash) {
  ZstdBuffer in{const_cast<uint8_t*>(p), n, 0};
  for (;;) {
    ZstdBuffer out{buf_.data(), buf_.size(), 0};
    size_t left = z_->compressStream2(cctx_, &out, &in, end ? kEnd : kContinue);
    if (z_->isError(left)) return EIO;
    if (out.pos) {
      if (!FullPwrite(fd, buf_.data(), out.pos, *off)) return errno ? errno : EIO;
      if (hash) hash->Update(buf_.data(), out.pos);
      *off += out.pos;
      this->out += out.pos;
    }
    if (end ? left == 0 : in.pos == in.size) break;
  }
  this->in += n;
  return 0;
}

ZstdReader::ZstdReader(const ZstdApi* z, int fd) : z_(z), dctx_(z->createDCtx()), fd_(fd), in_(kOutChunk), out_(4 * kOutChunk) {}

ZstdReader::~ZstdReader() {
  if (dctx_) z_->freeDCtx(dctx_);
}

int ZstdReader::ReadUpTo(uint8_t* dst, size_t n, Hash* hash, size_t* got) {
  *got = 0;
  while (n) {
    if (outPos_ < outLen_) {
      size_t take = std::min(n, outLen_ - outPos_);
      if (dst) memcpy(dst, out_.data() + outPos_, take), dst += take;
      outPos_ += take;
      n -= take;
      *got += take;
      continue;
    }
    if (inPos_ == inLen_) {
      if (eof_) return 0;
      ssize_t r = pread(fd_, in_.data(), in_.size(), fileOff);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return errno;
      if (r == 0) eof_ = true;
      if (hash && r > 0) hash->Update(in_.data(), r);
      fileOff += r > 0 ? r : 0;
      inPos_ = 0;
      inLen_ = r > 0 ? r : 0;
      if (eof_) continue;
    }
    ZstdBuffer in{in_.data(), inLen_, inPos_};
    ZstdBuffer out{out_.data(), out_.size(), 0};
    size_t ret = z_->decompressStream(dctx_, &out, &in);
    if (z_->isError(ret)) return EIO;
    inPos_ = in.pos;
    outPos_ = 0;
    outLen_ = out.pos;
  }
  return 0;
}

int ZstdReader::Read(uint8_t* dst, size_t n, Hash* hash) {
  size_t got = 0;
  int err = ReadUpTo(dst, n, hash, &got);
  return err ? err : got < n ? ENODATA : 0;
}

ZstdWriter* ZstdWriterArg(const Napi::Value& v) {
  if (!v.IsExternal() || !v.As<Napi::External<ZstdWriter>>().CheckTypeTag(&kWriterTag)) return nullptr;
  return v.As<Napi::External<ZstdWriter>>().Data();
}

ZstdReader* ZstdReaderArg(const Napi::Value& v) {
  if (!v.IsExternal() || !v.As<Napi::External<ZstdReader>>().CheckTypeTag(&kReaderTag)) return nullptr;
  return v.As<Napi::External<ZstdReader>>().Data();
}

namespace {

const ZstdApi* NeedZstd(Napi::Env env) {
  const ZstdApi* z = Zstd();
  if (!z) ThrowErrno(env, ENOSYS, "dlopen(libzstd.so.1)");
  return z;
}

// zstdWriter(level) -> handle: a compression stream (dumpPages writes through it).
Napi::Value ZstdWriterNew(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const ZstdApi* z = NeedZstd(env);
  if (!z) return env.Undefined();
  auto* w = new ZstdWriter(z, ArgInt(info[0]));
  if (!w->ok()) {
    delete w;
    ThrowErrno(env, ENOMEM, "ZSTD_createCCtx");
    return env.Undefined();
  }
  auto ext = Napi::External<ZstdWriter>::New(env, w, [](Napi::Env, ZstdWriter* p) { delete p; });
  ext.TypeTag(&kWriterTag);
  return ext;
}

// zstdFinish(writer, fd, hash) -> { bytes: compressed bytes written in all }: ends the frame at
// fd's offset (which it advances).
Napi::Value ZstdFinish(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ZstdWriter* w = ZstdWriterArg(info[0]);
  int fd = ArgInt(info[1]);
  Hash* hash = HashArg(info[2]);
  if (!w || !hash) return env.Undefined();
  off_t at = lseek(fd, 0, SEEK_CUR);
  uint64_t off = at < 0 ? 0 : static_cast<uint64_t>(at);
  int err = at < 0 ? errno : w->Write(nullptr, 0, true, fd, &off, hash);
  if (!err && lseek(fd, static_cast<off_t>(off), SEEK_SET) < 0) err = errno;
  if (err) {
    ThrowErrno(env, err, "write(compressed image)");
    return env.Undefined();
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("bytes", Napi::Number::New(env, static_cast<double>(w->out)));
  return o;
}

// zstdReader(fd) -> handle: a decompression stream over the file from its start.
Napi::Value ZstdReaderNew(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const ZstdApi* z = NeedZstd(env);
  if (!z) return env.Undefined();
  auto* r = new ZstdReader(z, ArgInt(info[0]));
  if (!r->ok()) {
    delete r;
    ThrowErrno(env, ENOMEM, "ZSTD_createDCtx");
    return env.Undefined();
  }
  auto ext = Napi::External<ZstdReader>::New(env, r, [](Napi::Env, ZstdReader* p) { delete p; });
  ext.TypeTag(&kReaderTag);
  return ext;
}

// zstdDecompressFile(in, out, hash) -> { bytes }: the whole compressed file `in` decompressed
// into `out` (at its offset), the compressed bytes hashed.
Napi::Value ZstdDecompressFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const ZstdApi* z = NeedZstd(env);
  Hash* hash = HashArg(info[2]);
  if (!z || !hash) return env.Undefined();
  ZstdReader r(z, ArgInt(info[0]));
  int out = ArgInt(info[1]);
  std::vector<uint8_t> buf(kOutChunk);
  uint64_t total = 0;
  for (;;) {
    size_t got = 0;
    int err = r.ReadUpTo(buf.data(), buf.size(), hash, &got);
    if (err) {
      ThrowErrno(env, err, "zstd decompression of an image file");
      return env.Undefined();
    }
    if (!got) break;
    if (!FullPwrite(out, buf.data(), got, total)) {
      ThrowErrno(env, errno ? errno : EIO, "write(decompressed)");
      return env.Undefined();
    }
    total += got;
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("bytes", Napi::Number::New(env, static_cast<double>(total)));
  return o;
}

// zstdAvailable() -> true, or why not (a string).
Napi::Value ZstdAvailable(const Napi::CallbackInfo& info) {
  if (Zstd()) return Napi::Boolean::New(info.Env(), true);
  const char* e = dlerror();
  return Napi::String::New(info.Env(), e ? e : "libzstd.so.1 cannot be loaded");
}

}  // namespace

void InitZstd(Napi::Env env, Napi::Object exports) {
  exports.Set("zstdAvailable", Napi::Function::New(env, ZstdAvailable));
  exports.Set("zstdWriter", Napi::Function::New(env, ZstdWriterNew));
  exports.Set("zstdFinish", Napi::Function::New(env, ZstdFinish));
  exports.Set("zstdReader", Napi::Function::New(env, ZstdReaderNew));
  exports.Set("zstdDecompressFile", Napi::Function::New(env, ZstdDecompressFile));
}

}  // namespace ckpt
