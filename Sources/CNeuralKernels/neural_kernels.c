// Direct convolution kernels for inference. The convolution is written as a sum, over
// input channels and kernel taps, of a weight times the input shifted by the tap's
// offset; the caller prepares a padded (and for strides > 1, phase-split) copy of the
// input in which every tap is a constant offset. A register tile holds
// GDH_CONV_OC_BLOCK output channels × up to six vectors of positions; each step loads
// the input vectors once and multiplies them by one broadcast weight per channel.
// The AVX-512 and AVX2 paths are chosen once at run time; the portable C path is the
// reference (GDH_SCALAR_KERNELS=1 forces it).
#include "neural_kernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define GDH_HAVE_X86 1
#endif

#define OB GDH_CONV_OC_BLOCK

static void tile_scalar(const float *in, long cs, int C, const long *off, int T, const float *w,
                        float *out, long ocs, int ob_valid, long p, int n) {
    float acc[OB][96];
    for (int o = 0; o < OB; o++) for (int i = 0; i < n; i++) acc[o][i] = 0;
    for (int c = 0; c < C; c++) {
        const float *ic = in + c * cs + p;
        for (int t = 0; t < T; t++, w += OB) {
            const float *s = ic + off[t];
            for (int o = 0; o < OB; o++) {
                const float wv = w[o];
                for (int i = 0; i < n; i++) acc[o][i] += wv * s[i];
            }
        }
    }
    for (int o = 0; o < ob_valid; o++) memcpy(out + o * ocs + p, acc[o], sizeof(float) * (size_t)n);
}

#if GDH_HAVE_X86
// obv output channels (of the block's GDH_CONV_OC_BLOCK) × nv vectors of 16 positions;
// the last vector masked when `masked`.
static inline __attribute__((always_inline, target("avx512f")))
void tile512(const float *in, long cs, int C, const long *off, int T, const float *w,
             float *out, long ocs, const int obv, long p, const int nv, const int masked, __mmask16 m) {
    __m512 acc[OB][8];
    for (int o = 0; o < obv; o++) for (int v = 0; v < nv; v++) acc[o][v] = _mm512_setzero_ps();
    for (int c = 0; c < C; c++) {
        const float *ic = in + c * cs + p;
        for (int t = 0; t < T; t++, w += OB) {
            const float *s = ic + off[t];
            __m512 x[8];
            for (int v = 0; v < nv; v++)
                x[v] = (masked && v == nv - 1) ? _mm512_maskz_loadu_ps(m, s + 16 * v) : _mm512_loadu_ps(s + 16 * v);
            for (int o = 0; o < obv; o++) {
                const __m512 wv = _mm512_set1_ps(w[o]);
                for (int v = 0; v < nv; v++) acc[o][v] = _mm512_fmadd_ps(wv, x[v], acc[o][v]);
            }
        }
    }
    // Constant trip counts everywhere, so that the accumulators stay in registers.
    for (int o = 0; o < obv; o++) {
        float *d = out + o * ocs + p;
        for (int v = 0; v < nv; v++) {
            if (masked && v == nv - 1) _mm512_mask_storeu_ps(d + 16 * v, m, acc[o][v]);
            else _mm512_storeu_ps(d + 16 * v, acc[o][v]);
        }
    }
}

// A block with fewer than GDH_CONV_OC_BLOCK channels (the last block of a layer such as
// the generator's 3-channel output) computes only those, with up to 8 vectors.
typedef void (*rtile_fn)(const float *, long, int, const long *, int, const float *, float *, long, long, __mmask16);
#define RTILE512(OBV, NV) \
    __attribute__((target("avx512f"))) static void rtile512_##OBV##_##NV(const float *in, long cs, int C, const long *off, int T, \
        const float *w, float *out, long ocs, long p, __mmask16 m) { tile512(in, cs, C, off, T, w, out, ocs, OBV, p, NV, 0, m); } \
    __attribute__((target("avx512f"))) static void rtile512_##OBV##_##NV##m(const float *in, long cs, int C, const long *off, int T, \
        const float *w, float *out, long ocs, long p, __mmask16 m) { tile512(in, cs, C, off, T, w, out, ocs, OBV, p, NV, 1, m); }
#define RTILES512(OBV) RTILE512(OBV, 1) RTILE512(OBV, 2) RTILE512(OBV, 3) RTILE512(OBV, 4) \
    RTILE512(OBV, 5) RTILE512(OBV, 6) RTILE512(OBV, 7) RTILE512(OBV, 8)
RTILES512(1) RTILES512(2) RTILES512(3)
#define RROW(OBV) { rtile512_##OBV##_1, rtile512_##OBV##_2, rtile512_##OBV##_3, rtile512_##OBV##_4, \
    rtile512_##OBV##_5, rtile512_##OBV##_6, rtile512_##OBV##_7, rtile512_##OBV##_8 }
#define RROWM(OBV) { rtile512_##OBV##_1m, rtile512_##OBV##_2m, rtile512_##OBV##_3m, rtile512_##OBV##_4m, \
    rtile512_##OBV##_5m, rtile512_##OBV##_6m, rtile512_##OBV##_7m, rtile512_##OBV##_8m }
static const rtile_fn rtiles[3][8] = { RROW(1), RROW(2), RROW(3) };
static const rtile_fn rtiles_masked[3][8] = { RROWM(1), RROWM(2), RROWM(3) };

#define TILE512(NV) \
    __attribute__((target("avx512f"))) static void tile512_##NV(const float *in, long cs, int C, const long *off, int T, \
        const float *w, float *out, long ocs, int ob_valid, long p) { (void)ob_valid; tile512(in, cs, C, off, T, w, out, ocs, OB, p, NV, 0, 0xFFFF); } \
    __attribute__((target("avx512f"))) static void tile512_##NV##m(const float *in, long cs, int C, const long *off, int T, \
        const float *w, float *out, long ocs, int ob_valid, long p, __mmask16 m) { (void)ob_valid; tile512(in, cs, C, off, T, w, out, ocs, OB, p, NV, 1, m); }
TILE512(1) TILE512(2) TILE512(3) TILE512(4) TILE512(5) TILE512(6)

__attribute__((target("avx512f")))
static void run512(const float *in, long cs, int C, const long *off, int T, const float *w,
                   float *out, long ocs, int ob_valid, long p, long end) {
    if (ob_valid < OB) {
        // Three channels × eight vectors would need 33 registers: seven vectors there.
        const int r = ob_valid - 1, full = ob_valid == 3 ? 7 : 8;
        for (; p + 16 * full <= end; p += 16 * full) rtiles[r][full - 1](in, cs, C, off, T, w, out, ocs, p, 0xFFFF);
        const long n = end - p;
        if (n <= 0) return;
        const int nv = (int)((n + 15) / 16), rem = (int)(n - 16 * (nv - 1));
        if (rem == 16) rtiles[r][nv - 1](in, cs, C, off, T, w, out, ocs, p, 0xFFFF);
        else rtiles_masked[r][nv - 1](in, cs, C, off, T, w, out, ocs, p, (__mmask16)((1u << rem) - 1u));
        return;
    }
    for (; p + 96 <= end; p += 96) tile512_6(in, cs, C, off, T, w, out, ocs, ob_valid, p);
    long n = end - p;
    if (n <= 0) return;
    int nv = (int)((n + 15) / 16);
    int rem = (int)(n - 16 * (nv - 1));
    __mmask16 m = (__mmask16)((1u << rem) - 1u);
    if (rem == 16) {
        switch (nv) {
        case 1: tile512_1(in, cs, C, off, T, w, out, ocs, ob_valid, p); break;
        case 2: tile512_2(in, cs, C, off, T, w, out, ocs, ob_valid, p); break;
        case 3: tile512_3(in, cs, C, off, T, w, out, ocs, ob_valid, p); break;
        case 4: tile512_4(in, cs, C, off, T, w, out, ocs, ob_valid, p); break;
        default: tile512_5(in, cs, C, off, T, w, out, ocs, ob_valid, p); break;
        }
    } else {
        switch (nv) {
        case 1: tile512_1m(in, cs, C, off, T, w, out, ocs, ob_valid, p, m); break;
        case 2: tile512_2m(in, cs, C, off, T, w, out, ocs, ob_valid, p, m); break;
        case 3: tile512_3m(in, cs, C, off, T, w, out, ocs, ob_valid, p, m); break;
        case 4: tile512_4m(in, cs, C, off, T, w, out, ocs, ob_valid, p, m); break;
        case 5: tile512_5m(in, cs, C, off, T, w, out, ocs, ob_valid, p, m); break;
        default: tile512_6m(in, cs, C, off, T, w, out, ocs, ob_valid, p, m); break;
        }
    }
}

// AVX2: nv vectors of 8 positions (up to 2: 8 accumulators; more spill registers).
static inline __attribute__((always_inline, target("avx2,fma")))
void tile256(const float *in, long cs, int C, const long *off, int T, const float *w,
             float *out, long ocs, int ob_valid, long p, const int nv, const int masked, __m256i m) {
    __m256 acc[OB][2];
    for (int o = 0; o < OB; o++) for (int v = 0; v < nv; v++) acc[o][v] = _mm256_setzero_ps();
    for (int c = 0; c < C; c++) {
        const float *ic = in + c * cs + p;
        for (int t = 0; t < T; t++, w += OB) {
            const float *s = ic + off[t];
            __m256 x[2];
            for (int v = 0; v < nv; v++)
                x[v] = (masked && v == nv - 1) ? _mm256_maskload_ps(s + 8 * v, m) : _mm256_loadu_ps(s + 8 * v);
            for (int o = 0; o < OB; o++) {
                const __m256 wv = _mm256_broadcast_ss(w + o);
                for (int v = 0; v < nv; v++) acc[o][v] = _mm256_fmadd_ps(wv, x[v], acc[o][v]);
            }
        }
    }
    for (int o = 0; o < OB; o++) {
        if (o >= ob_valid) break;
        float *d = out + o * ocs + p;
        for (int v = 0; v < nv; v++) {
            if (masked && v == nv - 1) _mm256_maskstore_ps(d + 8 * v, m, acc[o][v]);
            else _mm256_storeu_ps(d + 8 * v, acc[o][v]);
        }
    }
}

#define TILE256(NV) \
    __attribute__((target("avx2,fma"))) static void tile256_##NV(const float *in, long cs, int C, const long *off, int T, \
        const float *w, float *out, long ocs, int ob_valid, long p) { tile256(in, cs, C, off, T, w, out, ocs, ob_valid, p, NV, 0, _mm256_set1_epi32(-1)); } \
    __attribute__((target("avx2,fma"))) static void tile256_##NV##m(const float *in, long cs, int C, const long *off, int T, \
        const float *w, float *out, long ocs, int ob_valid, long p, __m256i m) { tile256(in, cs, C, off, T, w, out, ocs, ob_valid, p, NV, 1, m); }
TILE256(1) TILE256(2)

__attribute__((target("avx2,fma")))
static void run256(const float *in, long cs, int C, const long *off, int T, const float *w,
                   float *out, long ocs, int ob_valid, long p, long end) {
    for (; p + 16 <= end; p += 16) tile256_2(in, cs, C, off, T, w, out, ocs, ob_valid, p);
    long n = end - p;
    if (n <= 0) return;
    int nv = (int)((n + 7) / 8);
    int rem = (int)(n - 8 * (nv - 1));
    int lanes[8];
    for (int i = 0; i < 8; i++) lanes[i] = i < rem ? -1 : 0;
    __m256i m = _mm256_loadu_si256((const __m256i *)lanes);
    if (rem == 8) tile256_1(in, cs, C, off, T, w, out, ocs, ob_valid, p);
    else if (nv == 1) tile256_1m(in, cs, C, off, T, w, out, ocs, ob_valid, p, m);
    else tile256_2m(in, cs, C, off, T, w, out, ocs, ob_valid, p, m);
}
#endif

#if GDH_HAVE_X86
// Output channels in the vector lanes, for layers with few positions: a tile is up to
// eight positions × NV vectors of 16 channels; each step loads NV weight vectors and
// broadcasts one input value per position. The epilogue (bias, residual, ReLU or leaky
// ReLU) is applied in registers before the results are scattered to their channels.
struct channel_epilogue { const float *bias; const float *residual; int act; float slope; };

static inline __attribute__((always_inline, target("avx512f")))
void ctile512(const float *in, long cs, int C, const long *off, int T, const float *w, const int nv,
              const long *pos, const int np, float *out, long ocs, const struct channel_epilogue *e) {
    __m512 acc[8][2];
    for (int j = 0; j < np; j++) for (int v = 0; v < nv; v++) acc[j][v] = _mm512_setzero_ps();
    long q[8];
    for (int j = 0; j < np; j++) q[j] = pos[j];
    for (int c = 0; c < C; c++) {
        const float *ic = in + c * cs;
        for (int t = 0; t < T; t++, w += 16 * nv) {
            const float *b = ic + off[t];
            __m512 wv[2];
            for (int v = 0; v < nv; v++) wv[v] = _mm512_loadu_ps(w + 16 * v);
            for (int j = 0; j < np; j++) {
                const __m512 x = _mm512_set1_ps(b[q[j]]);
                for (int v = 0; v < nv; v++) acc[j][v] = _mm512_fmadd_ps(wv[v], x, acc[j][v]);
            }
        }
    }
    const __m512i lanes = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                             _mm512_set1_epi32((int)ocs));
    __m512 bias[2];
    for (int v = 0; v < nv; v++) bias[v] = e->bias ? _mm512_loadu_ps(e->bias + 16 * v) : _mm512_setzero_ps();
    const __m512 zero = _mm512_setzero_ps(), slope = _mm512_set1_ps(e->slope);
    for (int j = 0; j < np; j++)
        for (int v = 0; v < nv; v++) {
            __m512 y = _mm512_add_ps(acc[j][v], bias[v]);
            if (e->residual) y = _mm512_add_ps(y, _mm512_i32gather_ps(lanes, e->residual + (16 * v) * ocs + j, 4));
            if (e->act == GDH_ACT_RELU) y = _mm512_max_ps(y, zero);
            else if (e->act == GDH_ACT_LEAKY) y = _mm512_mask_mul_ps(y, _mm512_cmp_ps_mask(y, zero, _CMP_LT_OQ), y, slope);
            _mm512_i32scatter_ps(out + (16 * v) * ocs + j, lanes, y, 4);
        }
}

#define CTILE512(NV, NP) \
    __attribute__((target("avx512f"))) static void ctile512_##NV##_##NP(const float *in, long cs, int C, const long *off, int T, \
        const float *w, const long *pos, float *out, long ocs, const struct channel_epilogue *e) { \
        ctile512(in, cs, C, off, T, w, NV, pos, NP, out, ocs, e); }
CTILE512(1, 1) CTILE512(1, 2) CTILE512(1, 3) CTILE512(1, 4) CTILE512(1, 5) CTILE512(1, 6) CTILE512(1, 7) CTILE512(1, 8)
CTILE512(2, 1) CTILE512(2, 2) CTILE512(2, 3) CTILE512(2, 4) CTILE512(2, 5) CTILE512(2, 6) CTILE512(2, 7) CTILE512(2, 8)

typedef void (*ctile_fn)(const float *, long, int, const long *, int, const float *, const long *, float *, long,
                         const struct channel_epilogue *);
static const ctile_fn ctiles[2][8] = {
    { ctile512_1_1, ctile512_1_2, ctile512_1_3, ctile512_1_4, ctile512_1_5, ctile512_1_6, ctile512_1_7, ctile512_1_8 },
    { ctile512_2_1, ctile512_2_2, ctile512_2_3, ctile512_2_4, ctile512_2_5, ctile512_2_6, ctile512_2_7, ctile512_2_8 },
};
#endif

int gdh_conv_channels_kernel_available(void) {
#if GDH_HAVE_X86
    return gdh_conv_kernel_level() >= 2;
#else
    return 0;
#endif
}

void gdh_conv_direct_channels(const float *in, long in_cstride, int channels_in,
                              const long *tap_off, int taps, const float *w_packed, int block,
                              const long *pos, int npos, float *out, long out_cstride,
                              int b_begin, int b_end,
                              const float *bias, const float *residual, int act, float slope) {
#if GDH_HAVE_X86
    if (!gdh_conv_channels_kernel_available() || (block != 16 && block != 32)) return;
    const long wblock = (long)channels_in * taps * block;
    const int nv = block / 16;
    for (int b = b_begin; b < b_end; b++) {
        const float *w = w_packed + b * wblock;
        float *o = out + (long)b * block * out_cstride;
        const struct channel_epilogue e = {
            bias ? bias + b * block : NULL, residual ? residual + (long)b * block * out_cstride : NULL, act, slope,
        };
        for (int j = 0; j < npos; j += 8) {
            const int np = npos - j < 8 ? npos - j : 8;
            struct channel_epilogue at = e;   // the residual of this tile's positions
            if (at.residual) at.residual += j;
            ctiles[nv - 1][np - 1](in, in_cstride, channels_in, tap_off, taps, w, pos + j, o + j, out_cstride, &at);
        }
    }
#else
    (void)in; (void)in_cstride; (void)channels_in; (void)tap_off; (void)taps; (void)w_packed; (void)block;
    (void)pos; (void)npos; (void)out; (void)out_cstride; (void)b_begin; (void)b_end;
    (void)bias; (void)residual; (void)act; (void)slope;
#endif
}

#if GDH_HAVE_X86
// Tiles of whole output rows (no padding columns): vector v of the tile reads the input
// at flat offset vo[v] and is stored at ovo[v]; obv output channels. With an epilogue
// (e != NULL) bias, residual and (leaky) ReLU are applied in registers before the store.
struct rows_epilogue { const float *bias; const float *residual; int act; float slope; };

static inline __attribute__((always_inline, target("avx512f")))
void vtile512(const float *in, long cs, int C, const long *off, int T, const float *w,
              float *out, long ocs, const int obv, const long *vo, const long *ovo, const int nv,
              const struct rows_epilogue *e) {
    __m512 acc[OB][6];
    long q[6];
    for (int v = 0; v < nv; v++) q[v] = vo[v];
    for (int o = 0; o < obv; o++) for (int v = 0; v < nv; v++) acc[o][v] = _mm512_setzero_ps();
    for (int c = 0; c < C; c++) {
        const float *ic = in + c * cs;
        for (int t = 0; t < T; t++, w += OB) {
            const float *s = ic + off[t];
            __m512 x[6];
            for (int v = 0; v < nv; v++) x[v] = _mm512_loadu_ps(s + q[v]);
            for (int o = 0; o < obv; o++) {
                const __m512 wv = _mm512_set1_ps(w[o]);
                for (int v = 0; v < nv; v++) acc[o][v] = _mm512_fmadd_ps(wv, x[v], acc[o][v]);
            }
        }
    }
    // One loop with constant trip counts over the accumulators (an early return or a
    // second store loop made the compiler keep them in memory: half the speed).
    const __m512 zero = _mm512_setzero_ps();
    for (int o = 0; o < obv; o++) {
        const __m512 b = (e && e->bias) ? _mm512_set1_ps(e->bias[o]) : zero;
        for (int v = 0; v < nv; v++) {
            __m512 y = acc[o][v];
            if (e) {
                y = _mm512_add_ps(y, b);
                if (e->residual) y = _mm512_add_ps(y, _mm512_loadu_ps(e->residual + o * ocs + ovo[v]));
                if (e->act == GDH_ACT_RELU) y = _mm512_max_ps(y, zero);
                else if (e->act == GDH_ACT_LEAKY)
                    y = _mm512_mask_mul_ps(y, _mm512_cmp_ps_mask(y, zero, _CMP_LT_OQ), y, _mm512_set1_ps(e->slope));
            }
            _mm512_storeu_ps(out + o * ocs + (e ? ovo[v] : q[v]), y);
        }
    }
}

typedef void (*vtile_fn)(const float *, long, int, const long *, int, const float *, float *, long, const long *,
                         const long *, const struct rows_epilogue *);
#define VTILE512(OBV, NV) \
    __attribute__((target("avx512f"))) static void vtile512_##OBV##_##NV(const float *in, long cs, int C, const long *off, int T, \
        const float *w, float *out, long ocs, const long *vo, const long *ovo, const struct rows_epilogue *e) { \
        vtile512(in, cs, C, off, T, w, out, ocs, OBV, vo, ovo, NV, e); }
#define VTILES512(OBV) VTILE512(OBV, 1) VTILE512(OBV, 2) VTILE512(OBV, 3) VTILE512(OBV, 4) VTILE512(OBV, 5) VTILE512(OBV, 6)
VTILES512(1) VTILES512(2) VTILES512(3) VTILES512(4)
#define VROW(OBV) { vtile512_##OBV##_1, vtile512_##OBV##_2, vtile512_##OBV##_3, vtile512_##OBV##_4, vtile512_##OBV##_5, vtile512_##OBV##_6 }
static const vtile_fn vtiles[4][6] = { VROW(1), VROW(2), VROW(3), VROW(4) };

// The AVX2 row tiles: obv channels x nv vectors of 8 positions (nv <= 2: more spill).
static inline __attribute__((always_inline, target("avx2,fma")))
void vtile256(const float *in, long cs, int C, const long *off, int T, const float *w,
              float *out, long ocs, const int obv, const long *vo, const long *ovo, const int nv,
              const struct rows_epilogue *e) {
    __m256 acc[OB][2];
    long q[2];
    for (int v = 0; v < nv; v++) q[v] = vo[v];
    for (int o = 0; o < obv; o++) for (int v = 0; v < nv; v++) acc[o][v] = _mm256_setzero_ps();
    for (int c = 0; c < C; c++) {
        const float *ic = in + c * cs;
        for (int t = 0; t < T; t++, w += OB) {
            const float *s = ic + off[t];
            __m256 x[2];
            for (int v = 0; v < nv; v++) x[v] = _mm256_loadu_ps(s + q[v]);
            for (int o = 0; o < obv; o++) {
                const __m256 wv = _mm256_broadcast_ss(w + o);
                for (int v = 0; v < nv; v++) acc[o][v] = _mm256_fmadd_ps(wv, x[v], acc[o][v]);
            }
        }
    }
    const __m256 zero = _mm256_setzero_ps();
    for (int o = 0; o < obv; o++) {
        const __m256 b = (e && e->bias) ? _mm256_set1_ps(e->bias[o]) : zero;
        for (int v = 0; v < nv; v++) {
            __m256 y = acc[o][v];
            if (e) {
                y = _mm256_add_ps(y, b);
                if (e->residual) y = _mm256_add_ps(y, _mm256_loadu_ps(e->residual + o * ocs + ovo[v]));
                if (e->act == GDH_ACT_RELU) y = _mm256_max_ps(y, zero);
                else if (e->act == GDH_ACT_LEAKY)
                    y = _mm256_blendv_ps(_mm256_mul_ps(y, _mm256_set1_ps(e->slope)), y, _mm256_cmp_ps(y, zero, _CMP_GT_OQ));
            }
            _mm256_storeu_ps(out + o * ocs + (e ? ovo[v] : q[v]), y);
        }
    }
}

#define VTILE256(OBV, NV) \
    __attribute__((target("avx2,fma"))) static void vtile256_##OBV##_##NV(const float *in, long cs, int C, const long *off, int T, \
        const float *w, float *out, long ocs, const long *vo, const long *ovo, const struct rows_epilogue *e) { \
        vtile256(in, cs, C, off, T, w, out, ocs, OBV, vo, ovo, NV, e); }
VTILE256(1, 1) VTILE256(1, 2) VTILE256(2, 1) VTILE256(2, 2) VTILE256(3, 1) VTILE256(3, 2) VTILE256(4, 1) VTILE256(4, 2)
static const vtile_fn vtiles256[4][6] = {
    { vtile256_1_1, vtile256_1_2 }, { vtile256_2_1, vtile256_2_2 }, { vtile256_3_1, vtile256_3_2 }, { vtile256_4_1, vtile256_4_2 },
};
#endif

static int kernel_level = -1;

int gdh_conv_kernel_level(void) {
    if (kernel_level >= 0) return kernel_level;
    int level = 0;
    const char *env = getenv("GDH_SCALAR_KERNELS");
    if (!(env && env[0] == '1')) {
#if GDH_HAVE_X86
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f")) level = 2;
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) level = 1;
#endif
    }
    kernel_level = level;
    return level;
}

void gdh_conv_direct(const float *in, long in_cstride, int channels_in,
                     const long *tap_off, int taps, const float *w_packed, int channels_out,
                     float *out, long out_cstride, long p_begin, long p_end, int level) {
    const int best = gdh_conv_kernel_level();
    if (level < 0 || level > best) level = best;
    const int blocks = (channels_out + OB - 1) / OB;
    const long wblock = (long)channels_in * taps * OB;
    // Bands of positions whose input (all channels) stays in the L2 cache while every
    // block of output channels passes over it.
    long band = 65536 / (channels_in > 0 ? channels_in : 1);
    band = band < 96 ? 96 : band - band % 96;
    for (long b0 = p_begin; b0 < p_end; b0 += band) {
        const long b1 = b0 + band < p_end ? b0 + band : p_end;
        for (int b = 0; b < blocks; b++) {
            const float *w = w_packed + b * wblock;
            float *o = out + (long)b * OB * out_cstride;
            const int valid = channels_out - b * OB < OB ? channels_out - b * OB : OB;
#if GDH_HAVE_X86
            if (level == 2) { run512(in, in_cstride, channels_in, tap_off, taps, w, o, out_cstride, valid, b0, b1); continue; }
            if (level == 1) { run256(in, in_cstride, channels_in, tap_off, taps, w, o, out_cstride, valid, b0, b1); continue; }
#endif
            for (long p = b0; p < b1; p += 96) {
                const int n = (int)(b1 - p < 96 ? b1 - p : 96);
                tile_scalar(in, in_cstride, channels_in, tap_off, taps, w, o, out_cstride, valid, p, n);
            }
        }
    }
}

#if GDH_HAVE_X86
// Row tiles over output rows [row_begin, row_end) with vectors of `lanes` positions
// (tiles of up to `maxnv` from `table`); with `e`, the output is compact (rows `width`
// apart, channels out_cstride apart) and finished by the epilogue.
static void rows_run(int lanes, int maxnv, const vtile_fn (*table)[6],
                     const float *in, long in_cstride, int channels_in, const long *tap_off, int taps,
                     const float *w_packed, int channels_out, float *out, long out_cstride, long pitch, int width,
                     int row_begin, int row_end, const struct rows_epilogue *e) {
    const int blocks = (channels_out + OB - 1) / OB, per_row = width / lanes;
    const long wblock = (long)channels_in * taps * OB;
    const long out_pitch = e ? width : pitch;
    // Bands of rows whose input stays in the L2 cache across the channel blocks.
    long band = 65536 / (channels_in > 0 ? channels_in : 1) / (pitch > 0 ? pitch : 1);
    if (band < 1) band = 1;
    for (int r0 = row_begin; r0 < row_end; r0 += (int)band) {
        const int r1 = r0 + band < row_end ? r0 + (int)band : row_end;
        const int first = r0 * per_row, last = r1 * per_row;
        for (int b = 0; b < blocks; b++) {
            const float *w = w_packed + b * wblock;
            float *o = out + (long)b * OB * out_cstride;
            const int valid = channels_out - b * OB < OB ? channels_out - b * OB : OB;
            struct rows_epilogue eb;
            if (e) {
                eb = *e;
                if (eb.bias) eb.bias += b * OB;
                if (eb.residual) eb.residual += (long)b * OB * out_cstride;
            }
            for (int i = first; i < last; i += maxnv) {
                const int nv = last - i < maxnv ? last - i : maxnv;
                long vo[6], ovo[6];
                for (int v = 0; v < nv; v++) {
                    const long row = (i + v) / per_row, col = (long)((i + v) % per_row) * lanes;
                    vo[v] = row * pitch + col;
                    ovo[v] = row * out_pitch + col;
                }
                table[valid - 1][nv - 1](in, in_cstride, channels_in, tap_off, taps, w, o, out_cstride, vo, ovo,
                                         e ? &eb : NULL);
            }
        }
    }
}
#endif

/// The vector width of the row tiles at a kernel level (0: none).
static int rows_lanes(int level) { return level == 2 ? 16 : (level == 1 ? 8 : 0); }

void gdh_conv_direct_rows(const float *in, long in_cstride, int channels_in,
                          const long *tap_off, int taps, const float *w_packed, int channels_out,
                          float *out, long out_cstride, long pitch, int width,
                          int row_begin, int row_end, int level) {
    const int best = gdh_conv_kernel_level();
    if (level < 0 || level > best) level = best;
#if GDH_HAVE_X86
    const int lanes = rows_lanes(level);
    if (lanes && width % lanes == 0) {
        rows_run(lanes, level == 2 ? 6 : 2, level == 2 ? vtiles : vtiles256, in, in_cstride, channels_in, tap_off, taps,
                 w_packed, channels_out, out, out_cstride, pitch, width, row_begin, row_end, NULL);
        return;
    }
#endif
    gdh_conv_direct(in, in_cstride, channels_in, tap_off, taps, w_packed, channels_out, out, out_cstride,
                    (long)row_begin * pitch, (long)row_end * pitch, level);
}

int gdh_conv_direct_rows_fused(const float *in, long in_cstride, int channels_in,
                               const long *tap_off, int taps, const float *w_packed, int channels_out,
                               float *out, long out_cstride, long pitch, int width, int row_begin, int row_end,
                               const float *bias, const float *residual, int act, float slope, int level) {
    const int best = gdh_conv_kernel_level();
    if (level < 0 || level > best) level = best;
#if GDH_HAVE_X86
    const int lanes = rows_lanes(level);
    if (lanes && width % lanes == 0 && (act == GDH_ACT_NONE || act == GDH_ACT_RELU || act == GDH_ACT_LEAKY)) {
        const struct rows_epilogue e = { bias, residual, act, slope };
        rows_run(lanes, level == 2 ? 6 : 2, level == 2 ? vtiles : vtiles256, in, in_cstride, channels_in, tap_off, taps,
                 w_packed, channels_out, out, out_cstride, pitch, width, row_begin, row_end, &e);
        return 1;
    }
#endif
    (void)in; (void)in_cstride; (void)channels_in; (void)tap_off; (void)taps; (void)w_packed; (void)channels_out;
    (void)out; (void)out_cstride; (void)pitch; (void)width; (void)row_begin; (void)row_end;
    (void)bias; (void)residual; (void)act; (void)slope;
    return 0;
}

static inline int reflect_index(int i, int n) {
    return i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i);
}

void gdh_conv_prepare(const float *src, int height, int width, int pad, int reflect, int stride, int kernel,
                      float *dst, long dst_cstride, int plane_h, int pitch, int c_begin, int c_end) {
    gdh_conv_prepare_rows(src, height, width, pad, reflect, stride, kernel, dst, dst_cstride, plane_h, pitch,
                          c_begin, c_end, 0, plane_h);
}

void gdh_conv_prepare_rows(const float *src, int height, int width, int pad, int reflect, int stride, int kernel,
                           float *dst, long dst_cstride, int plane_h, int pitch, int c_begin, int c_end,
                           int row_begin, int row_end) {
    if (row_begin < 0) row_begin = 0;
    if (row_end > plane_h) row_end = plane_h;
    const int hp = height + 2 * pad, wp = width + 2 * pad;
    const long plane = (long)plane_h * pitch;
    for (int c = c_begin; c < c_end; c++) {
        const float *s = src + (long)c * height * width;
        float *d = dst + (long)c * dst_cstride;
        for (int a = 0; a < stride && a < kernel; a++) {
            for (int b = 0; b < stride && b < kernel; b++) {
                float *dp = d + (long)(a * stride + b) * plane;
                for (int i = row_begin; i < row_end; i++) {
                    float *row = dp + (long)i * pitch;
                    const int py = i * stride + a;   // row in the padded image
                    int iy = py - pad;
                    if (py >= hp || (!reflect && (iy < 0 || iy >= height))) {
                        memset(row, 0, sizeof(float) * (size_t)pitch);
                        continue;
                    }
                    if (reflect) iy = reflect_index(iy, height);
                    const float *sr = s + (long)iy * width;
                    if (stride == 1) {
                        // The middle is a copy; only the borders pad.
                        for (int j = 0; j < pad && j < pitch; j++)
                            row[j] = reflect ? sr[reflect_index(j - pad, width)] : 0.0f;
                        memcpy(row + pad, sr, sizeof(float) * (size_t)width);
                        for (int j = pad + width; j < pitch; j++)
                            row[j] = (reflect && j < wp) ? sr[reflect_index(j - pad, width)] : 0.0f;
                        continue;
                    }
                    // Columns j whose source column ix = j·stride + b − pad is inside the
                    // image form one run [lo, hi): a strided copy without branches; only
                    // the few columns outside it pad.
                    const int lo0 = pad - b > 0 ? (pad - b + stride - 1) / stride : 0;
                    const int hi0 = (width + pad - b + stride - 1) / stride;
                    const int lo = lo0 < pitch ? lo0 : pitch, hi = hi0 < pitch ? (hi0 > lo ? hi0 : lo) : pitch;
                    const float *first = sr + (lo * stride + b - pad);
                    for (int j = lo; j < hi; j++) row[j] = first[(j - lo) * stride];
                    for (int j = 0; j < pitch; j++) {
                        if (j == lo && hi > lo) { j = hi - 1; continue; }
                        const int px = j * stride + b;
                        const int ix = px - pad;
                        if (px >= wp) row[j] = 0;
                        else if (reflect) row[j] = sr[reflect_index(ix, width)];
                        else row[j] = (ix >= 0 && ix < width) ? sr[ix] : 0.0f;
                    }
                }
            }
        }
    }
}

// e^x for |x| ≤ 88 without a library call, so that loops over it vectorise: x = n·ln 2 + r
// with |r| ≤ ln 2 / 2, e^r by a degree-6 polynomial (relative error about 2e-7), 2^n
// through the exponent bits.
static inline float exp_approx(float x) {
    x = x > 88.0f ? 88.0f : (x < -88.0f ? -88.0f : x);
    // Round to nearest by adding and subtracting 1.5·2^23 (no rint call: it vectorises
    // on any x86-64, and the compiler may not fold it without -ffast-math).
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { unsigned u; float f; } scale = { .u = (unsigned)((int)n + 127) << 23 };
    return p * scale.f;
}

// tanh: an odd polynomial near 0 (where 1 − 2/(e^{2x} + 1) would cancel), the exponential
// form elsewhere.
static inline float tanh_approx(float x) {
    const float t = x < 0 ? -x : x;
    const float t2 = t * t;
    const float poly = t * (1.0f + t2 * (-1.0f / 3.0f + t2 * (2.0f / 15.0f + t2 * (-17.0f / 315.0f + t2 * (62.0f / 2835.0f)))));
    const float big = 1.0f - 2.0f / (exp_approx(2.0f * t) + 1.0f);
    const float y = t < 0.3f ? poly : big;
    return x < 0 ? -y : y;
}

static void activate(float *v, int n, int act, float slope) {
    switch (act) {
    case GDH_ACT_RELU: for (int i = 0; i < n; i++) v[i] = v[i] > 0 ? v[i] : 0; break;
    case GDH_ACT_LEAKY: for (int i = 0; i < n; i++) v[i] = v[i] > 0 ? v[i] : v[i] * slope; break;
    case GDH_ACT_TANH: for (int i = 0; i < n; i++) v[i] = tanh_approx(v[i]); break;
    case GDH_ACT_SIGMOID: for (int i = 0; i < n; i++) v[i] = 1.0f / (1.0f + exp_approx(-v[i])); break;
    default: break;
    }
}

void gdh_conv_epilogue(const float *acc, long acc_cstride, long acc_pitch, int rows, int cols,
                       const float *bias, const float *residual, long res_cstride,
                       int act, float slope,
                       float *out, long out_cstride, long out_offset, long out_ystride, long out_xstride,
                       int o_begin, int o_end) {
    float stack_row[512];
    float *tmp = (out_xstride == 1 || cols <= 512) ? stack_row : malloc(sizeof(float) * (size_t)cols);
    if (!tmp) return;
    for (int o = o_begin; o < o_end; o++) {
        const float b = bias ? bias[o] : 0.0f;
        const float *a = acc + (long)o * acc_cstride;
        const float *r = residual ? residual + (long)o * res_cstride : NULL;
        float *d = out + (long)o * out_cstride + out_offset;
        for (int y = 0; y < rows; y++) {
            const float *ar = a + (long)y * acc_pitch;
            const float *rr = r ? r + (long)y * cols : NULL;
            float *dr = d + (long)y * out_ystride;
            // Contiguous output: sum and activate in place; strided: in a row buffer first.
            float *v = out_xstride == 1 ? dr : tmp;
            if (rr) for (int x = 0; x < cols; x++) v[x] = ar[x] + b + rr[x];
            else for (int x = 0; x < cols; x++) v[x] = ar[x] + b;
            activate(v, cols, act, slope);
            if (out_xstride != 1) for (int x = 0; x < cols; x++) dr[x * out_xstride] = v[x];
        }
    }
    if (tmp != stack_row) free(tmp);
}

void gdh_instance_norm(const float *x, long plane, float eps, const float *gamma, const float *beta,
                       const float *residual, int act, float slope, float *out, int c_begin, int c_end) {
    for (int c = c_begin; c < c_end; c++) {
        const float *xc = x + (long)c * plane;
        float *oc = out + (long)c * plane;
        // Sums in eight float lanes (vectorised), combined in double.
        float lanes[8] = {0};
        long i = 0;
        for (; i + 8 <= plane; i += 8) for (int l = 0; l < 8; l++) lanes[l] += xc[i + l];
        double sum = 0;
        for (int l = 0; l < 8; l++) sum += lanes[l];
        for (; i < plane; i++) sum += xc[i];
        const float mean = (float)(sum / (double)plane);
        float sq[8] = {0};
        for (i = 0; i + 8 <= plane; i += 8) for (int l = 0; l < 8; l++) { const float d = xc[i + l] - mean; sq[l] += d * d; }
        double var = 0;
        for (int l = 0; l < 8; l++) var += sq[l];
        for (; i < plane; i++) { const double d = (double)xc[i] - mean; var += d * d; }
        const float inv = (float)(1.0 / sqrt(var / (double)plane + (double)eps));
        const float scale = (gamma ? gamma[c] : 1.0f) * inv;
        const float shift = (beta ? beta[c] : 0.0f) - mean * scale;
        const float *r = residual ? residual + (long)c * plane : NULL;
        if (r) for (i = 0; i < plane; i++) oc[i] = xc[i] * scale + shift + r[i];
        else for (i = 0; i < plane; i++) oc[i] = xc[i] * scale + shift;
        activate(oc, (int)plane, act, slope);
    }
}

void gdh_linear(const float *x, const float *weight, const float *bias, int in_features, int out_features, float *out) {
    for (int o = 0; o < out_features; o++) {
        const float *w = weight + (long)o * in_features;
        float lanes[16] = {0};
        int i = 0;
        for (; i + 16 <= in_features; i += 16) for (int l = 0; l < 16; l++) lanes[l] += w[i + l] * x[i + l];
        float sum = 0;
        for (int l = 0; l < 16; l++) sum += lanes[l];
        for (; i < in_features; i++) sum += w[i] * x[i];
        out[o] = sum + (bias ? bias[o] : 0.0f);
    }
}

void gdh_maxpool(const float *src, int height, int width, int k, int stride, int pad,
                 float *out, int out_h, int out_w, int c_begin, int c_end, int row_begin, int row_end) {
    // Per output row: the element-wise maximum of the window's input rows (vectorised)
    // into a row padded with -inf, then the maximum across each window of that row.
    const int span = (out_w - 1) * stride + k;          // padded columns the windows cover
    const int padded = span > width + pad ? span : width + pad;
    float stack_row[1024];
    float *buffer = padded <= 1024 ? stack_row : malloc(sizeof(float) * (size_t)padded);
    if (!buffer) return;
    for (int x = 0; x < padded; x++) buffer[x] = -INFINITY;
    float *row = buffer + pad;
    for (int c = c_begin; c < c_end; c++) {
        const float *s = src + (long)c * height * width;
        float *d = out + (long)c * out_h * out_w;
        for (int oy = row_begin; oy < row_end && oy < out_h; oy++) {
            const int y0 = oy * stride - pad;
            const int ya = y0 < 0 ? 0 : y0, yb = y0 + k > height ? height : y0 + k;
            float *dr = d + (long)oy * out_w;
            if (yb <= ya) { for (int ox = 0; ox < out_w; ox++) dr[ox] = -INFINITY; continue; }
            memcpy(row, s + (long)ya * width, sizeof(float) * (size_t)width);
            for (int y = ya + 1; y < yb; y++) {
                const float *r = s + (long)y * width;
                for (int x = 0; x < width; x++) row[x] = r[x] > row[x] ? r[x] : row[x];
            }
            if (k == 3 && stride == 2) {
                for (int ox = 0; ox < out_w; ox++) {
                    const float *w = buffer + 2 * ox;
                    const float m = w[0] > w[1] ? w[0] : w[1];
                    dr[ox] = w[2] > m ? w[2] : m;
                }
                continue;
            }
            for (int ox = 0; ox < out_w; ox++) {
                const float *w = buffer + ox * stride;
                float m = w[0];
                for (int j = 1; j < k; j++) m = w[j] > m ? w[j] : m;
                dr[ox] = m;
            }
        }
    }
    if (buffer != stack_row) free(buffer);
}
