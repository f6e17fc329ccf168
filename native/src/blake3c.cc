// A C interface to ckpt's BLAKE3 (blake3.h), for the helper binaries written in C (ckpt-lazy
// verifies the pages blobs it serves from).
#include "blake3c.h"

#include <new>

#include "blake3.h"

extern "C" {

ckpt_blake3* ckpt_blake3_new(void) { return reinterpret_cast<ckpt_blake3*>(new (std::nothrow) ckpt::Blake3()); }

void ckpt_blake3_update(ckpt_blake3* h, const void* p, size_t n) { reinterpret_cast<ckpt::Blake3*>(h)->Update(static_cast<const uint8_t*>(p), n); }

void ckpt_blake3_digest(const ckpt_blake3* h, uint8_t out[32]) { reinterpret_cast<const ckpt::Blake3*>(h)->Digest(out); }

void ckpt_blake3_free(ckpt_blake3* h) { delete reinterpret_cast<ckpt::Blake3*>(h); }

void ckpt_blake3_once(const void* p, size_t n, uint8_t out[32]) {
  ckpt::Blake3 h;
  h.Update(static_cast<const uint8_t*>(p), n);
  h.Digest(out);
}
}
