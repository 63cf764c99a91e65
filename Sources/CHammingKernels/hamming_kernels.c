// Linear-scan kernels for packed binary codes. The scalar path uses the POPCNT
// instruction (the target is built with -mpopcnt); where the CPU offers AVX-512
// VPOPCNTDQ a vectorised path is chosen once at run time. Both paths return the
// same results; the scalar one is the reference.
#include "hamming_kernels.h"
#include <stdlib.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define GDH_HAVE_X86 1
#endif

static size_t scan_leq_scalar(const uint64_t *codes, size_t words, size_t n,
                              const uint64_t *q, uint32_t thr,
                              uint32_t *oi, uint16_t *od) {
    size_t out = 0;
    if (words == 1) {
        const uint64_t q0 = q[0];
        for (size_t i = 0; i < n; i++) {
            uint32_t d = (uint32_t)__builtin_popcountll(codes[i] ^ q0);
            if (d <= thr) { oi[out] = (uint32_t)i; od[out] = (uint16_t)d; out++; }
        }
        return out;
    }
    if (words == 2) {
        const uint64_t q0 = q[0], q1 = q[1];
        for (size_t i = 0; i < n; i++) {
            const uint64_t *c = codes + 2 * i;
            uint32_t d = (uint32_t)(__builtin_popcountll(c[0] ^ q0) + __builtin_popcountll(c[1] ^ q1));
            if (d <= thr) { oi[out] = (uint32_t)i; od[out] = (uint16_t)d; out++; }
        }
        return out;
    }
    for (size_t i = 0; i < n; i++) {
        const uint64_t *c = codes + words * i;
        uint32_t d = 0;
        for (size_t w = 0; w < words; w++) d += (uint32_t)__builtin_popcountll(c[w] ^ q[w]);
        if (d <= thr) { oi[out] = (uint32_t)i; od[out] = (uint16_t)d; out++; }
    }
    return out;
}

#if GDH_HAVE_X86
__attribute__((target("avx512f,avx512vpopcntdq,avx512bw,avx512vl")))
static size_t scan_leq_avx512_w1(const uint64_t *codes, size_t n, uint64_t q0,
                                 uint32_t thr, uint32_t *oi, uint16_t *od) {
    size_t out = 0, i = 0;
    const __m512i qv = _mm512_set1_epi64((long long)q0);
    const __m512i tv = _mm512_set1_epi64((long long)thr);
    for (; i + 16 <= n; i += 16) {
        __m512i a = _mm512_loadu_si512((const void *)(codes + i));
        __m512i b = _mm512_loadu_si512((const void *)(codes + i + 8));
        __m512i pa = _mm512_popcnt_epi64(_mm512_xor_si512(a, qv));
        __m512i pb = _mm512_popcnt_epi64(_mm512_xor_si512(b, qv));
        __mmask8 ma = _mm512_cmple_epu64_mask(pa, tv);
        __mmask8 mb = _mm512_cmple_epu64_mask(pb, tv);
        if (__builtin_expect((ma | mb) != 0, 0)) {
            uint64_t da[8], db[8];
            _mm512_storeu_si512((void *)da, pa);
            _mm512_storeu_si512((void *)db, pb);
            while (ma) { int k = __builtin_ctz(ma); oi[out] = (uint32_t)(i + k); od[out] = (uint16_t)da[k]; out++; ma &= (__mmask8)(ma - 1); }
            while (mb) { int k = __builtin_ctz(mb); oi[out] = (uint32_t)(i + 8 + k); od[out] = (uint16_t)db[k]; out++; mb &= (__mmask8)(mb - 1); }
        }
    }
    for (; i < n; i++) {
        uint32_t d = (uint32_t)__builtin_popcountll(codes[i] ^ q0);
        if (d <= thr) { oi[out] = (uint32_t)i; od[out] = (uint16_t)d; out++; }
    }
    return out;
}

__attribute__((target("avx512f,avx512vpopcntdq,avx512bw,avx512vl")))
static size_t scan_leq_avx512_wn(const uint64_t *codes, size_t words, size_t n,
                                 const uint64_t *q, uint32_t thr,
                                 uint32_t *oi, uint16_t *od) {
    // 8 codes at a time: gather word w of 8 consecutive codes with a stride.
    size_t out = 0, i = 0;
    const __m512i tv = _mm512_set1_epi64((long long)thr);
    const long long sw = (long long)words;
    const __m512i stride = _mm512_set_epi64(7 * sw, 6 * sw, 5 * sw, 4 * sw, 3 * sw, 2 * sw, sw, 0);
    for (; i + 8 <= n; i += 8) {
        const uint64_t *base = codes + i * words;
        __m512i acc = _mm512_setzero_si512();
        for (size_t w = 0; w < words; w++) {
            __m512i v = _mm512_i64gather_epi64(stride, (const void *)(base + w), 8);
            acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(v, _mm512_set1_epi64((long long)q[w]))));
        }
        __mmask8 m = _mm512_cmple_epu64_mask(acc, tv);
        if (__builtin_expect(m != 0, 0)) {
            uint64_t d[8];
            _mm512_storeu_si512((void *)d, acc);
            while (m) { int k = __builtin_ctz(m); oi[out] = (uint32_t)(i + k); od[out] = (uint16_t)d[k]; out++; m &= (__mmask8)(m - 1); }
        }
    }
    if (i < n) {
        size_t got = scan_leq_scalar(codes + i * words, words, n - i, q, thr, oi + out, od + out);
        for (size_t j = 0; j < got; j++) oi[out + j] += (uint32_t)i;
        out += got;
    }
    return out;
}

__attribute__((target("avx512f,avx512vpopcntdq,avx512bw,avx512vl")))
static size_t scan_leq_avx512_w2(const uint64_t *codes, size_t n, const uint64_t *q,
                                 uint32_t thr, uint32_t *oi, uint16_t *od) {
    // Two codes per 128-bit lane pair: popcount each word, add neighbours.
    size_t out = 0, i = 0;
    const __m512i qv = _mm512_set_epi64((long long)q[1], (long long)q[0], (long long)q[1], (long long)q[0],
                                        (long long)q[1], (long long)q[0], (long long)q[1], (long long)q[0]);
    const __m512i tv = _mm512_set1_epi64((long long)thr);
    for (; i + 8 <= n; i += 8) {
        __m512i a = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512((const void *)(codes + 2 * i)), qv));
        __m512i b = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512((const void *)(codes + 2 * i + 8)), qv));
        // a = [c0w0 c0w1 c1w0 c1w1 ...]; sum pairs: even + odd lanes.
        __m512i idxEven = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
        __m512i idxOdd = _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1);
        __m512i d = _mm512_add_epi64(_mm512_permutex2var_epi64(a, idxEven, b),
                                     _mm512_permutex2var_epi64(a, idxOdd, b));
        __mmask8 m = _mm512_cmple_epu64_mask(d, tv);
        if (__builtin_expect(m != 0, 0)) {
            uint64_t dd[8];
            _mm512_storeu_si512((void *)dd, d);
            while (m) { int k = __builtin_ctz(m); oi[out] = (uint32_t)(i + k); od[out] = (uint16_t)dd[k]; out++; m &= (__mmask8)(m - 1); }
        }
    }
    if (i < n) {
        size_t got = scan_leq_scalar(codes + i * 2, 2, n - i, q, thr, oi + out, od + out);
        for (size_t j = 0; j < got; j++) oi[out + j] += (uint32_t)i;
        out += got;
    }
    return out;
}

static int vectorised_state = -1;

static int detect(void) {
    if (vectorised_state < 0) {
        __builtin_cpu_init();
        const char *force = getenv("GDH_SCALAR_KERNELS");
        if (force && force[0] == '1') { vectorised_state = 0; return 0; }
        vectorised_state = (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq") &&
                            __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) ? 1 : 0;
    }
    return vectorised_state;
}
#else
static int detect(void) { return 0; }
#endif

int gdh_kernels_vectorised(void) { return detect(); }

size_t gdh_scan_leq(const uint64_t *codes, size_t words, size_t n,
                    const uint64_t *q, uint32_t threshold,
                    uint32_t *out_index, uint16_t *out_dist) {
#if GDH_HAVE_X86
    if (detect()) {
        if (words == 1) return scan_leq_avx512_w1(codes, n, q[0], threshold, out_index, out_dist);
        if (words == 2) return scan_leq_avx512_w2(codes, n, q, threshold, out_index, out_dist);
        return scan_leq_avx512_wn(codes, words, n, q, threshold, out_index, out_dist);
    }
#endif
    return scan_leq_scalar(codes, words, n, q, threshold, out_index, out_dist);
}

size_t gdh_scan_leq_reference(const uint64_t *codes, size_t words, size_t n,
                              const uint64_t *q, uint32_t threshold,
                              uint32_t *out_index, uint16_t *out_dist) {
    return scan_leq_scalar(codes, words, n, q, threshold, out_index, out_dist);
}


/* The value of each byte as a hex digit, or 0x80 (not a digit). */
static const uint8_t hex_values[256] = {
#define X 0x80
#define X16 X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X
    X16, X16, X16,
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, X, X, X, X, X, X,
    X, 10, 11, 12, 13, 14, 15, X, X, X, X, X, X, X, X, X, X16,
    X, 10, 11, 12, 13, 14, 15, X, X, X, X, X, X, X, X, X, X16,
    X16, X16, X16, X16, X16, X16, X16, X16,
#undef X16
#undef X
};

long gdh_hex_decode(const uint8_t *digits, size_t n, uint64_t *out) {
    uint8_t bad = 0;
    size_t w = 0;
    for (size_t start = 0; start < n; start += 16, w++) {
        size_t end = start + 16 < n ? start + 16 : n;
        uint64_t v = 0;
        for (size_t i = start; i < end; i++) {
            uint8_t d = hex_values[digits[i]];
            bad |= d;
            v = (v << 4) | (d & 0x0F);
        }
        out[w] = v << (4 * (16 - (end - start)) & 63);
    }
    if (!(bad & 0x80)) return -1;
    for (size_t i = 0; i < n; i++)
        if (hex_values[digits[i]] & 0x80) return (long)i;
    return -1;
}
