// BLAKE3 (hash mode, 32-byte digest), written here from the BLAKE3 specification
// (https://github.com/BLAKE3-team/BLAKE3-specs): the digest of image files. It is about twice as
// fast per core as SHA-256 with the CPU's SHA extensions, and its tree lets many 1 KiB chunks be
// compressed at once: with AVX-512, 16 chunks (or 16 parent nodes) go through one compression,
// one per 32-bit lane; 8 with AVX2. The digests are the standard ones (b3sum's); the tests compare them.
#pragma once
#include <cstddef>
#include <cstdint>

namespace ckpt {

class Blake3 {
 public:
  Blake3();
  void Update(const uint8_t* p, size_t n);
  // The digest of everything so far; the hash can go on.
  void Digest(uint8_t out[32]) const;
  // The compression path in use ("avx512", "avx2" or "portable": the widest the CPU has); with a
  // name, no wider one is used from then on (the tests check each against the reference).
  static const char* Use(const char* path);

  // Bytes hashed so far.
  uint64_t Length() const { return counter_ * kChunk + chunkBlocks_ * kBlock + blockLen_; }
  // For threads that hash pieces of one message at once: the chaining value of `chunks` whole
  // chunks (a power of two, at most kMaxSubtree) at p, the first of them chunk number `counter`
  // of the message (a multiple of `chunks`). Independent of any hash's state.
  static void SubtreeAt(const uint8_t* p, uint64_t chunks, uint64_t counter, uint32_t cv[8]);
  // Takes such a subtree as the message's next `chunks` chunks. It must start where the hash is
  // (Length() a multiple of its size: false, and nothing done, if not), and more bytes must follow
  // it before Digest (a subtree's value is not a root's).
  bool Append(const uint32_t cv[8], uint64_t chunks);
  static constexpr uint64_t kMaxSubtree = 1024;  // chunks hashed as one subtree (their values: 32 KiB)

  static constexpr size_t kChunk = 1024;
  static constexpr size_t kBlock = 64;

 private:
  // The current chunk, full, as the message goes on past it: pushed (not the root), a new one begun.
  void EndChunk();
  void PushCv(const uint32_t cv[8], uint64_t counter);
  void ChunkUpdate(const uint8_t* p, size_t n);

  // The chunk being filled: its chaining value so far, the partial block, and how much of both.
  uint32_t chunkCv_[8];
  uint8_t block_[kBlock];
  size_t blockLen_ = 0;
  size_t chunkBlocks_ = 0;  // blocks of the current chunk already compressed
  uint64_t counter_ = 0;    // index of the current chunk
  // The chaining values of the complete subtrees to the left, largest first (one per set bit of
  // the number of chunks done, once merged).
  uint32_t stack_[55][8];
  size_t stackLen_ = 0;
};

}  // namespace ckpt
