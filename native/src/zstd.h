// zstd compression of image blobs, through the system's libzstd (Debian's libzstd1, which apt and
// dpkg depend on), loaded at run time: the few functions of its stable API used here are declared
// below, so building ckpt needs no zstd headers, and a host without the library only loses
// --compress (and the reading of compressed images), with a message that says so.
#pragma once
#include "common.h"
#include "hash.h"

#include <cstdint>
#include <cstring>
#include <vector>

namespace ckpt {

struct ZstdBuffer {
  void* dst;  // ZSTD_outBuffer: dst, size, pos; ZSTD_inBuffer: src, size, pos
  size_t size;
  size_t pos;
};

struct ZstdApi {
  void* (*createCCtx)();
  size_t (*freeCCtx)(void*);
  size_t (*setParameter)(void*, int, int);
  size_t (*compressStream2)(void*, ZstdBuffer* out, ZstdBuffer* in, int endOp);
  void* (*createDCtx)();
  size_t (*freeDCtx)(void*);
  size_t (*decompressStream)(void*, ZstdBuffer* out, ZstdBuffer* in);
  unsigned (*isError)(size_t);
  const char* (*getErrorName)(size_t);
};

// The library, or nullptr when it cannot be loaded.
const ZstdApi* Zstd();

// A compression stream over one blob: chunks in, compressed bytes appended to fd (pwrite at its
// own offset) and hashed. Used by dumpPages from its writer thread.
class ZstdWriter {
 public:
  ZstdWriter(const ZstdApi* z, int level);
  ~ZstdWriter();
  bool ok() const { return cctx_ != nullptr; }
  // Compresses n bytes (end: the frame ends after them) into fd at *off, hashing what is
  // written; advances *off. 0 or an errno (EIO for a zstd error).
  int Write(const uint8_t* p, size_t n, bool end, int fd, uint64_t* off, Hash* hash);
  uint64_t in = 0, out = 0;

 private:
  const ZstdApi* z_;
  void* cctx_;
  std::vector<uint8_t> buf_;
};

// A decompression stream over a blob file read from its start: Read() gives the next n
// decompressed bytes (dst nullptr: skipped), hashing the compressed bytes it reads.
class ZstdReader {
 public:
  ZstdReader(const ZstdApi* z, int fd);
  ~ZstdReader();
  bool ok() const { return dctx_ != nullptr; }
  // 0, ENODATA (the blob ends first), EIO (corrupt data) or an errno of pread.
  int Read(uint8_t* dst, size_t n, Hash* hash);
  // Up to n bytes (fewer only at the end of the data): *got says how many.
  int ReadUpTo(uint8_t* dst, size_t n, Hash* hash, size_t* got);
  uint64_t fileOff = 0;

 private:
  const ZstdApi* z_;
  void* dctx_;
  int fd_;
  std::vector<uint8_t> in_, out_;
  size_t inPos_ = 0, inLen_ = 0, outPos_ = 0, outLen_ = 0;
  bool eof_ = false;
};

ZstdWriter* ZstdWriterArg(const Napi::Value& v);
ZstdReader* ZstdReaderArg(const Napi::Value& v);
void InitZstd(Napi::Env env, Napi::Object exports);

}  // namespace ckpt
