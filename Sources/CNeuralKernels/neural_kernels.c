// Direct convolution kernels for inference. The convolution is written as a sum, over
// input channels and kernel taps, of a weight times the input shifted by the tap's
// offset; the caller prepares a padded (and for strides > 1, phase-split) copy of the
// input in which every tap is a constant offset. A register tile holds
// GDH_CONV_OC_BLOCK output channels × up to six (AVX-512) vectors of positions; each step loads
// the input vectors once and multiplies them by one broadcast weight per channel.
// The AVX-512 and AVX2 paths are chosen once at run time; the portable C path is the
// reference (GDH_SCALAR_KERNELS=1 forces it).
#include "neural_kernels.h"
#include "kernel_math.h"
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
// The epilogue a tile may apply in registers: bias, residual, then ReLU, ReLU6 or leaky ReLU.
struct epilogue { const float *bias; const float *residual; int act; float slope; };

static inline __attribute__((always_inline, target("avx512f")))
__m512 act512(__m512 y, const struct epilogue *e) {
    const __m512 zero = _mm512_setzero_ps();
    if (e->act == GDH_ACT_RELU) return _mm512_max_ps(y, zero);
    if (e->act == GDH_ACT_RELU6) return _mm512_min_ps(_mm512_max_ps(y, zero), _mm512_set1_ps(6.0f));
    if (e->act == GDH_ACT_LEAKY) return _mm512_mask_mul_ps(y, _mm512_cmp_ps_mask(y, zero, _CMP_LT_OQ), y, _mm512_set1_ps(e->slope));
    return y;
}

static inline __attribute__((always_inline, target("avx2,fma")))
__m256 act256(__m256 y, const struct epilogue *e) {
    const __m256 zero = _mm256_setzero_ps();
    if (e->act == GDH_ACT_RELU) return _mm256_max_ps(y, zero);
    if (e->act == GDH_ACT_RELU6) return _mm256_min_ps(_mm256_max_ps(y, zero), _mm256_set1_ps(6.0f));
    if (e->act == GDH_ACT_LEAKY)
        return _mm256_blendv_ps(_mm256_mul_ps(y, _mm256_set1_ps(e->slope)), y, _mm256_cmp_ps(y, zero, _CMP_GT_OQ));
    return y;
}

// One tile: obv output channels (of the block's GDH_CONV_OC_BLOCK) x nv vectors of
// positions. Vector v reads the input at flat offset vo[v]; it is stored at vo[v], or
// with an epilogue (e != NULL) finished in registers and stored at ovo[v] (the compact
// output of row tiles). With `masked`, only the first `rem` lanes of the last vector
// are loaded and stored. Constant trip counts everywhere, one loop over the
// accumulators at the end: otherwise the compiler keeps them in memory (half the speed).
#define TILE_ARGS const float *in, long cs, int C, const long *off, int T, const float *w, \
                  float *out, long ocs, const long *vo, const long *ovo, int rem, const struct epilogue *e
typedef void (*tile_fn)(TILE_ARGS);

static inline __attribute__((always_inline, target("avx512f")))
void tile512(TILE_ARGS, const int obv, const int nv, const int masked) {
    const __mmask16 m = masked ? (__mmask16)((1u << rem) - 1u) : (__mmask16)0xFFFF;
    __m512 acc[OB][8];
    long q[8];
    for (int v = 0; v < nv; v++) q[v] = vo[v];
    for (int o = 0; o < obv; o++) for (int v = 0; v < nv; v++) acc[o][v] = _mm512_setzero_ps();
    for (int c = 0; c < C; c++) {
        const float *ic = in + c * cs;
        for (int t = 0; t < T; t++, w += OB) {
            const float *s = ic + off[t];
            __m512 x[8];
            for (int v = 0; v < nv; v++)
                x[v] = (masked && v == nv - 1) ? _mm512_maskz_loadu_ps(m, s + q[v]) : _mm512_loadu_ps(s + q[v]);
            for (int o = 0; o < obv; o++) {
                const __m512 wv = _mm512_set1_ps(w[o]);
                for (int v = 0; v < nv; v++) acc[o][v] = _mm512_fmadd_ps(wv, x[v], acc[o][v]);
            }
        }
    }
    for (int o = 0; o < obv; o++) {
        const __m512 b = _mm512_set1_ps((e && e->bias) ? e->bias[o] : 0.0f);
        for (int v = 0; v < nv; v++) {
            __m512 y = acc[o][v];
            const __mmask16 mv = (masked && v == nv - 1) ? m : (__mmask16)0xFFFF;
            if (e) {
                y = _mm512_add_ps(y, b);
                if (e->residual) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mv, e->residual + o * ocs + ovo[v]));
                y = act512(y, e);
            }
            _mm512_mask_storeu_ps(out + o * ocs + (e ? ovo[v] : q[v]), mv, y);
        }
    }
}

static inline __attribute__((always_inline, target("avx2,fma")))
void tile256(TILE_ARGS, const int obv, const int nv, const int masked) {
    int lanes[8];
    for (int i = 0; i < 8; i++) lanes[i] = (!masked || i < rem) ? -1 : 0;
    const __m256i m = _mm256_loadu_si256((const __m256i *)lanes), all = _mm256_set1_epi32(-1);
    __m256 acc[OB][2];
    long q[2];
    for (int v = 0; v < nv; v++) q[v] = vo[v];
    for (int o = 0; o < obv; o++) for (int v = 0; v < nv; v++) acc[o][v] = _mm256_setzero_ps();
    for (int c = 0; c < C; c++) {
        const float *ic = in + c * cs;
        for (int t = 0; t < T; t++, w += OB) {
            const float *s = ic + off[t];
            __m256 x[2];
            for (int v = 0; v < nv; v++)
                x[v] = (masked && v == nv - 1) ? _mm256_maskload_ps(s + q[v], m) : _mm256_loadu_ps(s + q[v]);
            for (int o = 0; o < obv; o++) {
                const __m256 wv = _mm256_broadcast_ss(w + o);
                for (int v = 0; v < nv; v++) acc[o][v] = _mm256_fmadd_ps(wv, x[v], acc[o][v]);
            }
        }
    }
    for (int o = 0; o < obv; o++) {
        const __m256 b = _mm256_set1_ps((e && e->bias) ? e->bias[o] : 0.0f);
        for (int v = 0; v < nv; v++) {
            __m256 y = acc[o][v];
            const __m256i mv = (masked && v == nv - 1) ? m : all;
            if (e) {
                y = _mm256_add_ps(y, b);
                if (e->residual) y = _mm256_add_ps(y, _mm256_maskload_ps(e->residual + o * ocs + ovo[v], mv));
                y = act256(y, e);
            }
            _mm256_maskstore_ps(out + o * ocs + (e ? ovo[v] : q[v]), mv, y);
        }
    }
}

#define TILE_PASS in, cs, C, off, T, w, out, ocs, vo, ovo, rem, e
#define TILES(ISA, TARGET, OBV, NV) \
    __attribute__((target(TARGET))) static void ISA##_##OBV##_##NV(TILE_ARGS) { ISA(TILE_PASS, OBV, NV, 0); } \
    __attribute__((target(TARGET))) static void ISA##_##OBV##_##NV##m(TILE_ARGS) { ISA(TILE_PASS, OBV, NV, 1); }
#define TILES512(OBV) TILES(tile512, "avx512f", OBV, 1) TILES(tile512, "avx512f", OBV, 2) TILES(tile512, "avx512f", OBV, 3) \
    TILES(tile512, "avx512f", OBV, 4) TILES(tile512, "avx512f", OBV, 5) TILES(tile512, "avx512f", OBV, 6) \
    TILES(tile512, "avx512f", OBV, 7) TILES(tile512, "avx512f", OBV, 8)
#define TILES256(OBV) TILES(tile256, "avx2,fma", OBV, 1) TILES(tile256, "avx2,fma", OBV, 2)
TILES512(1) TILES512(2) TILES512(3) TILES512(4)
TILES256(1) TILES256(2) TILES256(3) TILES256(4)
#define ROW512(OBV) { { tile512_##OBV##_1, tile512_##OBV##_1m }, { tile512_##OBV##_2, tile512_##OBV##_2m }, \
    { tile512_##OBV##_3, tile512_##OBV##_3m }, { tile512_##OBV##_4, tile512_##OBV##_4m }, \
    { tile512_##OBV##_5, tile512_##OBV##_5m }, { tile512_##OBV##_6, tile512_##OBV##_6m }, \
    { tile512_##OBV##_7, tile512_##OBV##_7m }, { tile512_##OBV##_8, tile512_##OBV##_8m } }
#define ROW256(OBV) { { tile256_##OBV##_1, tile256_##OBV##_1m }, { tile256_##OBV##_2, tile256_##OBV##_2m } }

// A kernel family: vector width, tiles by [channels - 1][vectors - 1][masked], and the
// most vectors a tile of that many channels takes without spilling registers
// (AVX-512: 32 registers, e.g. 4 x 6 accumulators + 6 inputs + 1 weight; AVX2: 16).
struct isa { int lanes; int maxnv[OB]; tile_fn tiles[OB][8][2]; };
static const struct isa isa512 = { 16, { 8, 8, 7, 6 }, { ROW512(1), ROW512(2), ROW512(3), ROW512(4) } };
static const struct isa isa256 = { 8, { 2, 2, 2, 2 }, { ROW256(1), ROW256(2), ROW256(3), ROW256(4) } };

// Flat positions [p, end) for one block of `valid` channels, no epilogue.
static void run_flat(const struct isa *k, const float *in, long cs, int C, const long *off, int T, const float *w,
                     float *out, long ocs, int valid, long p, long end) {
    const int full = k->maxnv[valid - 1], L = k->lanes;
    long vo[8];
    for (; p + (long)L * full <= end; p += (long)L * full) {
        for (int v = 0; v < full; v++) vo[v] = p + (long)L * v;
        k->tiles[valid - 1][full - 1][0](in, cs, C, off, T, w, out, ocs, vo, NULL, L, NULL);
    }
    const long n = end - p;
    if (n <= 0) return;
    const int nv = (int)((n + L - 1) / L), rem = (int)(n - (long)L * (nv - 1));
    for (int v = 0; v < nv; v++) vo[v] = p + (long)L * v;
    k->tiles[valid - 1][nv - 1][rem != L](in, cs, C, off, T, w, out, ocs, vo, NULL, rem, NULL);
}
#endif

#if GDH_HAVE_X86
// Output channels in the vector lanes, for layers with few positions: a tile is up to
// eight positions × NV vectors of 16 channels; each step loads NV weight vectors and
// broadcasts one input value per position. The epilogue (bias, residual, ReLU, ReLU6 or
// leaky ReLU) is applied in registers before the results are scattered to their channels.

static inline __attribute__((always_inline, target("avx512f")))
void ctile512(const float *in, long cs, int C, const long *off, int T, const float *w, const int nv,
              const long *pos, const int np, float *out, long ocs, const struct epilogue *e) {
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
    for (int j = 0; j < np; j++)
        for (int v = 0; v < nv; v++) {
            __m512 y = _mm512_add_ps(acc[j][v], bias[v]);
            if (e->residual) y = _mm512_add_ps(y, _mm512_i32gather_ps(lanes, e->residual + (16 * v) * ocs + j, 4));
            _mm512_i32scatter_ps(out + (16 * v) * ocs + j, lanes, act512(y, e), 4);
        }
}

#define CTILE512(NV, NP) \
    __attribute__((target("avx512f"))) static void ctile512_##NV##_##NP(const float *in, long cs, int C, const long *off, int T, \
        const float *w, const long *pos, float *out, long ocs, const struct epilogue *e) { \
        ctile512(in, cs, C, off, T, w, NV, pos, NP, out, ocs, e); }
CTILE512(1, 1) CTILE512(1, 2) CTILE512(1, 3) CTILE512(1, 4) CTILE512(1, 5) CTILE512(1, 6) CTILE512(1, 7) CTILE512(1, 8)
CTILE512(2, 1) CTILE512(2, 2) CTILE512(2, 3) CTILE512(2, 4) CTILE512(2, 5) CTILE512(2, 6) CTILE512(2, 7) CTILE512(2, 8)

typedef void (*ctile_fn)(const float *, long, int, const long *, int, const float *, const long *, float *, long,
                         const struct epilogue *);
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
        const struct epilogue e = {
            bias ? bias + b * block : NULL, residual ? residual + (long)b * block * out_cstride : NULL, act, slope,
        };
        for (int j = 0; j < npos; j += 8) {
            const int np = npos - j < 8 ? npos - j : 8;
            struct epilogue at = e;   // the residual of this tile's positions
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
            if (level >= 1) {
                run_flat(level == 2 ? &isa512 : &isa256, in, in_cstride, channels_in, tap_off, taps, w, o, out_cstride,
                         valid, b0, b1);
                continue;
            }
#endif
            for (long p = b0; p < b1; p += 96) {
                const int n = (int)(b1 - p < 96 ? b1 - p : 96);
                tile_scalar(in, in_cstride, channels_in, tap_off, taps, w, o, out_cstride, valid, p, n);
            }
        }
    }
}

#if GDH_HAVE_X86
// Row tiles over output rows [row_begin, row_end) (width a multiple of the vector
// width): with `e`, the output is compact (rows `width` apart, channels out_cstride
// apart) and finished by the epilogue; without, stored at the flat positions.
static void rows_run(const struct isa *k, const float *in, long in_cstride, int channels_in, const long *tap_off,
                     int taps, const float *w_packed, int channels_out, float *out, long out_cstride, long pitch,
                     int width, int row_begin, int row_end, const struct epilogue *e) {
    const int blocks = (channels_out + OB - 1) / OB, per_row = width / k->lanes;
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
            const int valid = channels_out - b * OB < OB ? channels_out - b * OB : OB, maxnv = k->maxnv[valid - 1];
            struct epilogue eb;
            if (e) {
                eb = *e;
                if (eb.bias) eb.bias += b * OB;
                if (eb.residual) eb.residual += (long)b * OB * out_cstride;
            }
            for (int i = first; i < last; i += maxnv) {
                const int nv = last - i < maxnv ? last - i : maxnv;
                long vo[8], ovo[8];
                for (int v = 0; v < nv; v++) {
                    const long row = (i + v) / per_row, col = (long)((i + v) % per_row) * k->lanes;
                    vo[v] = row * pitch + col;
                    ovo[v] = row * out_pitch + col;
                }
                k->tiles[valid - 1][nv - 1][0](in, in_cstride, channels_in, tap_off, taps, w, o, out_cstride, vo, ovo,
                                              k->lanes, e ? &eb : NULL);
            }
        }
    }
}

// The row-tile family for a kernel level and width, or NULL where row tiles do not apply.
static const struct isa *rows_isa(int level, int width) {
    const struct isa *k = level == 2 ? &isa512 : (level == 1 ? &isa256 : NULL);
    return k && width % k->lanes == 0 ? k : NULL;
}
#endif

void gdh_conv_direct_rows(const float *in, long in_cstride, int channels_in,
                          const long *tap_off, int taps, const float *w_packed, int channels_out,
                          float *out, long out_cstride, long pitch, int width,
                          int row_begin, int row_end, int level) {
    const int best = gdh_conv_kernel_level();
    if (level < 0 || level > best) level = best;
#if GDH_HAVE_X86
    const struct isa *k = rows_isa(level, width);
    if (k) {
        rows_run(k, in, in_cstride, channels_in, tap_off, taps, w_packed, channels_out, out, out_cstride, pitch, width,
                 row_begin, row_end, NULL);
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
    const struct isa *k = rows_isa(level, width);
    if (k && (act == GDH_ACT_NONE || act == GDH_ACT_RELU || act == GDH_ACT_RELU6 || act == GDH_ACT_LEAKY)) {
        const struct epilogue e = { bias, residual, act, slope };
        rows_run(k, in, in_cstride, channels_in, tap_off, taps, w_packed, channels_out, out, out_cstride, pitch, width,
                 row_begin, row_end, &e);
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

static void activate(float *v, int n, int act, float slope) {
    switch (act) {
    case GDH_ACT_RELU: for (int i = 0; i < n; i++) v[i] = v[i] > 0 ? v[i] : 0; break;
    case GDH_ACT_LEAKY: for (int i = 0; i < n; i++) v[i] = v[i] > 0 ? v[i] : v[i] * slope; break;
    case GDH_ACT_RELU6:
        for (int i = 0; i < n; i++) { const float x = v[i] > 0 ? v[i] : 0; v[i] = x < 6.0f ? x : 6.0f; }
        break;
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
