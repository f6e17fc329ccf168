// BLAKE3, see blake3.h. The tree: the input is cut into 1 KiB chunks, each compressed block by
// block (16 blocks of 64 bytes, counter = the chunk's index) into a chaining value; pairs of
// values are compressed into parent nodes up to the root, whose compression carries the ROOT flag.
// Here whole aligned runs of chunks (up to 1024 of them) are hashed as one subtree, 8 chunks and
// then 8 parents at a time with AVX2 when the CPU has it; the chunks and subtrees to the left wait
// on a stack, merged only once more input shows that they are not the root.
#include "blake3.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>

namespace ckpt {
namespace {

constexpr uint32_t kIv[8] = {0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19};
constexpr uint32_t kChunkStart = 1, kChunkEnd = 2, kParent = 4, kRoot = 8;
constexpr uint64_t kMaxSubtree = Blake3::kMaxSubtree;

// The message word each G of round r takes: round 0 in order, each next round the previous
// one's words permuted by the spec's permutation.
struct Schedule {
  uint8_t w[7][16];
  constexpr Schedule() : w() {
    constexpr uint8_t perm[16] = {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8};
    for (int i = 0; i < 16; i++) w[0][i] = static_cast<uint8_t>(i);
    for (int r = 1; r < 7; r++)
      for (int i = 0; i < 16; i++) w[r][i] = w[r - 1][perm[i]];
  }
};
constexpr Schedule kSchedule;

inline uint32_t Rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

inline uint32_t Load32(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);  // x86_64: little-endian, as the spec's words are
  return v;
}

inline void G(uint32_t* s, int a, int b, int c, int d, uint32_t x, uint32_t y) {
  s[a] = s[a] + s[b] + x;
  s[d] = Rotr(s[d] ^ s[a], 16);
  s[c] = s[c] + s[d];
  s[b] = Rotr(s[b] ^ s[c], 12);
  s[a] = s[a] + s[b] + y;
  s[d] = Rotr(s[d] ^ s[a], 8);
  s[c] = s[c] + s[d];
  s[b] = Rotr(s[b] ^ s[c], 7);
}

// One compression; `out` gets the new chaining value (the first 8 words of the output).
void Compress(const uint32_t cv[8], const uint8_t block[64], uint64_t counter, uint32_t len, uint32_t flags, uint32_t out[8]) {
  uint32_t m[16];
  for (int i = 0; i < 16; i++) m[i] = Load32(block + 4 * i);
  uint32_t s[16] = {cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7], kIv[0], kIv[1], kIv[2], kIv[3],
                    static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), len, flags};
#pragma GCC unroll 7
  for (int r = 0; r < 7; r++) {
    const uint8_t* w = kSchedule.w[r];
    G(s, 0, 4, 8, 12, m[w[0]], m[w[1]]);
    G(s, 1, 5, 9, 13, m[w[2]], m[w[3]]);
    G(s, 2, 6, 10, 14, m[w[4]], m[w[5]]);
    G(s, 3, 7, 11, 15, m[w[6]], m[w[7]]);
    G(s, 0, 5, 10, 15, m[w[8]], m[w[9]]);
    G(s, 1, 6, 11, 12, m[w[10]], m[w[11]]);
    G(s, 2, 7, 8, 13, m[w[12]], m[w[13]]);
    G(s, 3, 4, 9, 14, m[w[14]], m[w[15]]);
  }
  for (int i = 0; i < 8; i++) out[i] = s[i] ^ s[i + 8];
}

// A whole chunk (16 full blocks) to its chaining value.
void ChunkCv(const uint8_t* p, uint64_t counter, uint32_t out[8]) {
  uint32_t cv[8];
  memcpy(cv, kIv, sizeof cv);
  for (int b = 0; b < 16; b++) Compress(cv, p + 64 * b, counter, 64, (b == 0 ? kChunkStart : 0) | (b == 15 ? kChunkEnd : 0), cv);
  memcpy(out, cv, sizeof cv);
}

// The parent node of two chaining values (contiguous: they are its 64-byte block).
void ParentCv(const uint32_t pair[16], uint32_t out[8]) {
  Compress(kIv, reinterpret_cast<const uint8_t*>(pair), 0, 64, kParent, out);
}

// ---- AVX2: 8 independent inputs at once, one per 32-bit lane ----

#define CKPT_AVX2 __attribute__((target("avx2")))

CKPT_AVX2 inline __m256i Add(__m256i a, __m256i b) { return _mm256_add_epi32(a, b); }
CKPT_AVX2 inline __m256i Xor(__m256i a, __m256i b) { return _mm256_xor_si256(a, b); }
CKPT_AVX2 inline __m256i Rot16(__m256i x) {
  return _mm256_shuffle_epi8(x, _mm256_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
}
CKPT_AVX2 inline __m256i Rot8(__m256i x) {
  return _mm256_shuffle_epi8(x, _mm256_setr_epi8(1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12, 1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12));
}
CKPT_AVX2 inline __m256i Rot12(__m256i x) { return _mm256_or_si256(_mm256_srli_epi32(x, 12), _mm256_slli_epi32(x, 20)); }
CKPT_AVX2 inline __m256i Rot7(__m256i x) { return _mm256_or_si256(_mm256_srli_epi32(x, 7), _mm256_slli_epi32(x, 25)); }

CKPT_AVX2 inline void G8(__m256i* v, int a, int b, int c, int d, __m256i x, __m256i y) {
  v[a] = Add(Add(v[a], v[b]), x);
  v[d] = Rot16(Xor(v[d], v[a]));
  v[c] = Add(v[c], v[d]);
  v[b] = Rot12(Xor(v[b], v[c]));
  v[a] = Add(Add(v[a], v[b]), y);
  v[d] = Rot8(Xor(v[d], v[a]));
  v[c] = Add(v[c], v[d]);
  v[b] = Rot7(Xor(v[b], v[c]));
}

// Rows r[i] (word i of 8 lanes) to columns (lane j's 8 words) and back: an 8x8 transpose.
CKPT_AVX2 inline void Transpose(__m256i r[8]) {
  __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
  __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
  __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
  __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
  __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
  __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
  __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
  __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
  r[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
  r[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
  r[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
  r[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
  r[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
  r[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
  r[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
  r[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

// Hashes 8 inputs of `blocks` 64-byte blocks each, input j at in + j * stride, from the IV:
// counters counter + j (chunks) or all 0 (parents, counterStep 0), `flags` on every block,
// `first` on the first and `last` on the last. out: 8 chaining values, input j's at out + 8 * j.
CKPT_AVX2 void Hash8(const uint8_t* in, size_t stride, size_t blocks, uint64_t counter, uint64_t counterStep, uint32_t flags, uint32_t first,
                     uint32_t last, uint32_t* out) {
  __m256i h[8];
  for (int i = 0; i < 8; i++) h[i] = _mm256_set1_epi32(static_cast<int>(kIv[i]));
  alignas(32) uint32_t lo[8], hi[8];
  for (int j = 0; j < 8; j++) {
    uint64_t c = counter + counterStep * j;
    lo[j] = static_cast<uint32_t>(c);
    hi[j] = static_cast<uint32_t>(c >> 32);
  }
  const __m256i ctrLo = _mm256_load_si256(reinterpret_cast<const __m256i*>(lo));
  const __m256i ctrHi = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi));
  for (size_t b = 0; b < blocks; b++) {
    __m256i m[16];
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) {
      const uint8_t* p = in + j * stride + 64 * b;
      m[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
      m[8 + j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32));
    }
    Transpose(m);
    Transpose(m + 8);
    uint32_t f = flags | (b == 0 ? first : 0) | (b + 1 == blocks ? last : 0);
    __m256i v[16] = {h[0],
                     h[1],
                     h[2],
                     h[3],
                     h[4],
                     h[5],
                     h[6],
                     h[7],
                     _mm256_set1_epi32(static_cast<int>(kIv[0])),
                     _mm256_set1_epi32(static_cast<int>(kIv[1])),
                     _mm256_set1_epi32(static_cast<int>(kIv[2])),
                     _mm256_set1_epi32(static_cast<int>(kIv[3])),
                     ctrLo,
                     ctrHi,
                     _mm256_set1_epi32(64),
                     _mm256_set1_epi32(static_cast<int>(f))};
    // Unrolled, so each round's message words are fixed registers rather than indexed loads.
#pragma GCC unroll 7
    for (int r = 0; r < 7; r++) {
      const uint8_t* w = kSchedule.w[r];
      G8(v, 0, 4, 8, 12, m[w[0]], m[w[1]]);
      G8(v, 1, 5, 9, 13, m[w[2]], m[w[3]]);
      G8(v, 2, 6, 10, 14, m[w[4]], m[w[5]]);
      G8(v, 3, 7, 11, 15, m[w[6]], m[w[7]]);
      G8(v, 0, 5, 10, 15, m[w[8]], m[w[9]]);
      G8(v, 1, 6, 11, 12, m[w[10]], m[w[11]]);
      G8(v, 2, 7, 8, 13, m[w[12]], m[w[13]]);
      G8(v, 3, 4, 9, 14, m[w[14]], m[w[15]]);
    }
    for (int i = 0; i < 8; i++) h[i] = Xor(v[i], v[i + 8]);
  }
  Transpose(h);
  for (int j = 0; j < 8; j++) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8 * j), h[j]);
}

// ---- AVX-512: 16 independent inputs at once, one per 32-bit lane (rotations are one instruction) ----

#define CKPT_AVX512 __attribute__((target("avx512f")))
// GCC 12's _mm512_ror_epi32 passes an undefined vector as the (unused, all-lanes-masked) source.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"

CKPT_AVX512 inline void G16(__m512i* v, int a, int b, int c, int d, __m512i x, __m512i y) {
  v[a] = _mm512_add_epi32(_mm512_add_epi32(v[a], v[b]), x);
  v[d] = _mm512_ror_epi32(_mm512_xor_si512(v[d], v[a]), 16);
  v[c] = _mm512_add_epi32(v[c], v[d]);
  v[b] = _mm512_ror_epi32(_mm512_xor_si512(v[b], v[c]), 12);
  v[a] = _mm512_add_epi32(_mm512_add_epi32(v[a], v[b]), y);
  v[d] = _mm512_ror_epi32(_mm512_xor_si512(v[d], v[a]), 8);
  v[c] = _mm512_add_epi32(v[c], v[d]);
  v[b] = _mm512_ror_epi32(_mm512_xor_si512(v[b], v[c]), 7);
}

// Rows r[j] (input j's 16 words) to r[i] = word i of the 16 inputs: a 16x16 transpose. Pairs and
// then quads of rows are interleaved within each 128-bit lane (r4 then holds, in lane L of
// register 4k+s, word 4L+s of rows 4k..4k+3), then the 128-bit lanes of each s are transposed.
CKPT_AVX512 inline void Transpose16(__m512i r[16]) {
  __m512i t[16], q[16];
  for (int k = 0; k < 16; k += 2) {
    t[k] = _mm512_unpacklo_epi32(r[k], r[k + 1]);
    t[k + 1] = _mm512_unpackhi_epi32(r[k], r[k + 1]);
  }
  for (int k = 0; k < 16; k += 4) {
    q[k] = _mm512_unpacklo_epi64(t[k], t[k + 2]);
    q[k + 1] = _mm512_unpackhi_epi64(t[k], t[k + 2]);
    q[k + 2] = _mm512_unpacklo_epi64(t[k + 1], t[k + 3]);
    q[k + 3] = _mm512_unpackhi_epi64(t[k + 1], t[k + 3]);
  }
  for (int s = 0; s < 4; s++) {
    __m512i x0 = _mm512_shuffle_i32x4(q[s], q[4 + s], 0x44), x1 = _mm512_shuffle_i32x4(q[s], q[4 + s], 0xEE);
    __m512i y0 = _mm512_shuffle_i32x4(q[8 + s], q[12 + s], 0x44), y1 = _mm512_shuffle_i32x4(q[8 + s], q[12 + s], 0xEE);
    r[s] = _mm512_shuffle_i32x4(x0, y0, 0x88);
    r[4 + s] = _mm512_shuffle_i32x4(x0, y0, 0xDD);
    r[8 + s] = _mm512_shuffle_i32x4(x1, y1, 0x88);
    r[12 + s] = _mm512_shuffle_i32x4(x1, y1, 0xDD);
  }
}

// Hash8's twin for 16 inputs.
CKPT_AVX512 void Hash16(const uint8_t* in, size_t stride, size_t blocks, uint64_t counter, uint64_t counterStep, uint32_t flags, uint32_t first,
                        uint32_t last, uint32_t* out) {
  __m512i h[8];
  for (int i = 0; i < 8; i++) h[i] = _mm512_set1_epi32(static_cast<int>(kIv[i]));
  alignas(64) uint32_t lo[16], hi[16];
  for (int j = 0; j < 16; j++) {
    uint64_t c = counter + counterStep * j;
    lo[j] = static_cast<uint32_t>(c);
    hi[j] = static_cast<uint32_t>(c >> 32);
  }
  const __m512i ctrLo = _mm512_load_si512(lo), ctrHi = _mm512_load_si512(hi);
  for (size_t b = 0; b < blocks; b++) {
    __m512i m[16];
#pragma GCC unroll 16
    for (int j = 0; j < 16; j++) m[j] = _mm512_loadu_si512(in + j * stride + 64 * b);
    Transpose16(m);
    uint32_t f = flags | (b == 0 ? first : 0) | (b + 1 == blocks ? last : 0);
    __m512i v[16] = {h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], _mm512_set1_epi32(static_cast<int>(kIv[0])), _mm512_set1_epi32(static_cast<int>(kIv[1])),
                     _mm512_set1_epi32(static_cast<int>(kIv[2])), _mm512_set1_epi32(static_cast<int>(kIv[3])), ctrLo, ctrHi, _mm512_set1_epi32(64),
                     _mm512_set1_epi32(static_cast<int>(f))};
#pragma GCC unroll 7
    for (int r = 0; r < 7; r++) {
      const uint8_t* w = kSchedule.w[r];
      G16(v, 0, 4, 8, 12, m[w[0]], m[w[1]]);
      G16(v, 1, 5, 9, 13, m[w[2]], m[w[3]]);
      G16(v, 2, 6, 10, 14, m[w[4]], m[w[5]]);
      G16(v, 3, 7, 11, 15, m[w[6]], m[w[7]]);
      G16(v, 0, 5, 10, 15, m[w[8]], m[w[9]]);
      G16(v, 1, 6, 11, 12, m[w[10]], m[w[11]]);
      G16(v, 2, 7, 8, 13, m[w[12]], m[w[13]]);
      G16(v, 3, 4, 9, 14, m[w[14]], m[w[15]]);
    }
    for (int i = 0; i < 8; i++) h[i] = _mm512_xor_si512(v[i], v[i + 8]);
  }
  // Word i of the 16 values to value j's 8 words.
  alignas(64) uint32_t words[8][16];
  for (int i = 0; i < 8; i++) _mm512_store_si512(words[i], h[i]);
  for (int j = 0; j < 16; j++)
    for (int i = 0; i < 8; i++) out[8 * j + i] = words[i][j];
}
#pragma GCC diagnostic pop

// Merges the top of a stack of chaining values until it holds one per set bit of `chunks` (the
// complete subtrees left of chunk number `chunks`). Returns the new depth.
size_t MergeTo(uint32_t (*stack)[8], size_t depth, uint64_t chunks) {
  const size_t keep = static_cast<size_t>(__builtin_popcountll(chunks));
  for (; depth > keep; depth--) {
    uint32_t out[8];
    ParentCv(stack[depth - 2], out);
    memcpy(stack[depth - 2], out, sizeof out);
  }
  return depth;
}

// The widest path the CPU has (and blake3Use has not narrowed): 16, 8 or 1 input at once.
int Detected() {
  static const int lanes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? 16 : __builtin_cpu_supports("avx2") ? 8 : 1;
  }();
  return lanes;
}
std::atomic<int> maxLanes{16};
int Lanes() { return std::min(Detected(), maxLanes.load(std::memory_order_relaxed)); }

// n inputs (a multiple of 8 when lanes >= 8) through the widest path: returns how many it took.
uint64_t HashWide(int lanes, const uint8_t* in, size_t stride, uint64_t n, size_t blocks, uint64_t counter, uint64_t counterStep, uint32_t flags,
                  uint32_t first, uint32_t last, uint32_t (*out)[8]) {
  uint64_t i = 0;
  if (lanes >= 16)
    for (; i + 16 <= n; i += 16) Hash16(in + i * stride, stride, blocks, counter + counterStep * i, counterStep, flags, first, last, out[i]);
  if (lanes >= 8)
    for (; i + 8 <= n; i += 8) Hash8(in + i * stride, stride, blocks, counter + counterStep * i, counterStep, flags, first, last, out[i]);
  return i;
}

}  // namespace

const char* Blake3::Use(const char* path) {
  static const char* const names[] = {"portable", "avx2", "avx512"};
  auto name = [](int lanes) { return names[lanes >= 16 ? 2 : lanes >= 8 ? 1 : 0]; };
  const char* was = name(Lanes());
  if (path) maxLanes = !strcmp(path, "avx512") ? 16 : !strcmp(path, "avx2") ? 8 : 1;
  return was;
}

Blake3::Blake3() { memcpy(chunkCv_, kIv, sizeof chunkCv_); }

void Blake3::SubtreeAt(const uint8_t* p, uint64_t chunks, uint64_t counter, uint32_t cv[8]) {
  alignas(64) uint32_t cvs[kMaxSubtree][8];
  const int lanes = Lanes();
  uint64_t i = HashWide(lanes, p, kChunk, chunks, 16, counter, 1, 0, kChunkStart, kChunkEnd, cvs);
  for (; i < chunks; i++) ChunkCv(p + i * kChunk, counter + i, cvs[i]);
  // Up the tree, a level at a time; parent j of a level reads values 2j and 2j+1 (one 64-byte
  // block) and is written over value j, which nothing later reads. A wide pass reads its 16 (or 8)
  // pairs before it writes: parents j..j+15 overwrite values j..j+15, all at or left of 2j.
  for (uint64_t n = chunks; n > 1; n /= 2) {
    uint64_t j = HashWide(lanes, reinterpret_cast<const uint8_t*>(cvs), 64, n / 2, 1, 0, 0, kParent, 0, 0, cvs);
    for (; j < n / 2; j++) {
      uint32_t out[8];
      ParentCv(cvs[2 * j], out);
      memcpy(cvs[j], out, sizeof out);
    }
  }
  memcpy(cv, cvs[0], 32);
}

void Blake3::PushCv(const uint32_t cv[8], uint64_t counter) {
  // Everything left of `counter` is complete: merge it into one value per set bit first.
  stackLen_ = MergeTo(stack_, stackLen_, counter);
  memcpy(stack_[stackLen_++], cv, 32);
}

void Blake3::ChunkUpdate(const uint8_t* p, size_t n) {
  while (n) {
    if (blockLen_ == kBlock) {  // a full block with more of the chunk to come: not its last
      Compress(chunkCv_, block_, counter_, 64, chunkBlocks_ == 0 ? kChunkStart : 0, chunkCv_);
      chunkBlocks_++;
      blockLen_ = 0;
    }
    size_t take = std::min(n, kBlock - blockLen_);
    memcpy(block_ + blockLen_, p, take);
    blockLen_ += take;
    p += take;
    n -= take;
  }
}

void Blake3::EndChunk() {
  uint32_t cv[8];
  Compress(chunkCv_, block_, counter_, 64, kChunkEnd | (chunkBlocks_ == 0 ? kChunkStart : 0), cv);
  PushCv(cv, counter_);
  counter_++;
  memcpy(chunkCv_, kIv, sizeof chunkCv_);
  blockLen_ = chunkBlocks_ = 0;
}

bool Blake3::Append(const uint32_t cv[8], uint64_t chunks) {
  if (chunkBlocks_ * kBlock + blockLen_ == kChunk) EndChunk();  // input goes on: not the root
  if (chunkBlocks_ || blockLen_ || !chunks || (counter_ & (chunks - 1))) return false;
  PushCv(cv, counter_);
  counter_ += chunks;
  return true;
}

void Blake3::Update(const uint8_t* p, size_t n) {
  while (n) {
    size_t inChunk = chunkBlocks_ * kBlock + blockLen_;
    if (inChunk == kChunk) {  // the chunk is full and input goes on: it is not the root
      EndChunk();
      inChunk = 0;
    }
    if (inChunk == 0 && n > kChunk) {
      // Whole chunks with at least one byte after them (so none is the root), as one subtree:
      // a power of two of them, aligned on it.
      uint64_t whole = (n - 1) / kChunk, b = 1;
      while (b * 2 <= whole && b * 2 <= kMaxSubtree) b *= 2;
      while (counter_ & (b - 1)) b /= 2;
      uint32_t cv[8];
      SubtreeAt(p, b, counter_, cv);
      PushCv(cv, counter_);
      counter_ += b;
      p += b * kChunk;
      n -= b * kChunk;
      continue;
    }
    size_t take = std::min(n, kChunk - inChunk);
    ChunkUpdate(p, take);
    p += take;
    n -= take;
  }
}

void Blake3::Digest(uint8_t out[32]) const {
  // The current chunk (the last one; also the first, and the root, if the stack is empty).
  uint32_t cv[8];
  memcpy(cv, chunkCv_, sizeof cv);
  uint8_t block[64] = {};
  memcpy(block, block_, blockLen_);
  uint32_t len = static_cast<uint32_t>(blockLen_);
  uint32_t flags = kChunkEnd | (chunkBlocks_ == 0 ? kChunkStart : 0);
  uint64_t counter = counter_;
  // The subtrees to the left, merged as the chunks done so far say (on a copy: the hash goes on),
  // then rolled up with the last chunk from the right.
  uint32_t stack[55][8];
  memcpy(stack, stack_, stackLen_ * 32);
  size_t depth = MergeTo(stack, stackLen_, counter_);
  while (depth) {
    uint32_t right[8];
    Compress(cv, block, counter, len, flags, right);
    memcpy(block, stack[--depth], 32);
    memcpy(block + 32, right, 32);
    memcpy(cv, kIv, sizeof cv);
    len = 64;
    flags = kParent;
    counter = 0;
  }
  uint32_t root[8];
  Compress(cv, block, counter, len, flags | kRoot, root);
  memcpy(out, root, 32);
}

}  // namespace ckpt
