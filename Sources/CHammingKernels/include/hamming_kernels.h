#ifndef GDH_HAMMING_KERNELS_H
#define GDH_HAMMING_KERNELS_H
#include <stddef.h>
#include <stdint.h>

/// Scans `n` packed codes of `words` 64-bit words each (code i at codes[i*words])
/// and writes the index and distance of every code whose Hamming distance to `q`
/// is at most `threshold`, in index order. Returns how many were written; at most
/// `n` entries are written, so `out_index` and `out_dist` must hold `n` each.
size_t gdh_scan_leq(const uint64_t *codes, size_t words, size_t n,
                    const uint64_t *q, uint32_t threshold,
                    uint32_t *out_index, uint16_t *out_dist);

/// The scalar POPCNT path of `gdh_scan_leq`, always; the reference for tests.
size_t gdh_scan_leq_reference(const uint64_t *codes, size_t words, size_t n,
                              const uint64_t *q, uint32_t threshold,
                              uint32_t *out_index, uint16_t *out_dist);

/// 1 when the vectorised AVX-512 VPOPCNTDQ path is in use, 0 for the scalar POPCNT path.
/// Setting GDH_SCALAR_KERNELS=1 in the environment forces the scalar path.
int gdh_kernels_vectorised(void);

/* Parses n hex digits (0-9, a-f, A-F) into codes packed most significant digit first:
 * digit i is bits 60 - 4 * (i % 16) .. of word i / 16; a last word with fewer than 16
 * digits has them at its top. Writes (n + 15) / 16 words to out. Returns -1 when every
 * digit is hex, otherwise the offset of the first one that is not (out is then unusable). */
long gdh_hex_decode(const uint8_t *digits, size_t n, uint64_t *out);

/* Asks the CPU to bring the cache line at p in for writing (a hint: never faults). */
static inline void gdh_prefetch_write(const void *p) { __builtin_prefetch(p, 1, 3); }

/* Asks the CPU to bring the cache line at p in for reading (a hint: never faults). */
static inline void gdh_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }

#endif
