/* A C interface to ckpt's BLAKE3 (blake3.h; blake3c.cc): the digest of image files. */
#ifndef CKPT_BLAKE3C_H
#define CKPT_BLAKE3C_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif
typedef struct ckpt_blake3 ckpt_blake3;
ckpt_blake3 *ckpt_blake3_new(void);
void ckpt_blake3_update(ckpt_blake3 *h, const void *p, size_t n);
/* The digest of everything so far; the hash can go on. */
void ckpt_blake3_digest(const ckpt_blake3 *h, uint8_t out[32]);
void ckpt_blake3_free(ckpt_blake3 *h);
void ckpt_blake3_once(const void *p, size_t n, uint8_t out[32]);
#ifdef __cplusplus
}
#endif
#endif
