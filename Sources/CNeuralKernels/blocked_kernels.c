// Channel-blocked inference kernels (NCHWc8): a value of C channels (C a multiple of 8)
// over P = H·W positions is stored as [C/8][P][8], the eight channels of a block side by
// side at each position. Depthwise convolutions then run on whole vectors of eight
// channels with no transposes (one weight vector per tap, one input vector per position),
// and 1×1 convolutions are a matrix product whose input is read as scalars broadcast
// against vectors of 16 output-channel weights, accumulated in a register tile of
// positions × output channels (what onnxruntime's MLAS does with its NCHWc16 layout).
//
// The bodies are plain C with vector types, compiled three times (AVX-512, AVX2 + FMA,
// the baseline), tile sizes chosen per level so the accumulators fit the registers; the
// caller picks the level as for the direct kernels (gdh_conv_kernel_level).
#include "neural_kernels.h"
#include "kernel_math.h"
#include <string.h>

#define INLINE static inline __attribute__((always_inline))
#define BL 8   // channels per block

typedef gdh_v8 bk_v8;
typedef float bk_v16 __attribute__((vector_size(64), aligned(4)));

// Floats from one block to the next of a blocked value of P positions. Kept as one
// function so that padding the blocks apart stays a one-line change: padding planes of 32·k
// positions by a cache line (against L1 set conflicts at 112², 64², 32²) was measured and
// made no difference (a 16 → 96 1×1 layer at 112²: 0.50 ms either way in isolation).
INLINE long bk_stride(long P) { return P * BL; }

long gdh_blocked_floats(int channels, long plane) { return (long)(channels / BL) * bk_stride(plane); }

INLINE bk_v8 bk_act8(bk_v8 v, int act) {
    const bk_v8 zero = {0, 0, 0, 0, 0, 0, 0, 0}, six = zero + 6.0f;
    if (act == GDH_ACT_RELU || act == GDH_ACT_RELU6) v = __builtin_elementwise_max(v, zero);
    if (act == GDH_ACT_RELU6) v = __builtin_elementwise_min(v, six);
    return v;
}

INLINE bk_v16 bk_act16(bk_v16 v, int act) {
    const bk_v16 zero = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, six = zero + 6.0f;
    if (act == GDH_ACT_RELU || act == GDH_ACT_RELU6) v = __builtin_elementwise_max(v, zero);
    if (act == GDH_ACT_RELU6) v = __builtin_elementwise_min(v, six);
    return v;
}

INLINE bk_v8 bk_lo(bk_v16 v) { return __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7); }
INLINE bk_v8 bk_hi(bk_v16 v) { return __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15); }

// MARK: - Layout changes

// Blocks [b0, b1): to_blocks = planes → blocks, else blocks → planes.
INLINE void bk_reorder_body(const float *x, long plane, float *y, int b0, int b1, int to_blocks) {
    for (int b = b0; b < b1; b++) {
        const float *src = x + (to_blocks ? (long)b * BL * plane : (long)b * bk_stride(plane));
        float *dst = y + (to_blocks ? (long)b * bk_stride(plane) : (long)b * BL * plane);
        long p = 0;
        for (; p + 8 <= plane; p += 8) {
            bk_v8 r[8], o[8];
            if (to_blocks) {
                for (int c = 0; c < BL; c++) r[c] = *(const bk_v8 *)(src + c * plane + p);
                gdh_transpose8(r, o);
                for (int q = 0; q < 8; q++) *(bk_v8 *)(dst + (p + q) * BL) = o[q];
            } else {
                for (int q = 0; q < 8; q++) r[q] = *(const bk_v8 *)(src + (p + q) * BL);
                gdh_transpose8(r, o);
                for (int c = 0; c < BL; c++) *(bk_v8 *)(dst + c * plane + p) = o[c];
            }
        }
        for (; p < plane; p++) {
            for (int c = 0; c < BL; c++) {
                if (to_blocks) dst[p * BL + c] = src[c * plane + p];
                else dst[c * plane + p] = src[p * BL + c];
            }
        }
    }
}

// MARK: - 1×1 convolution

// Output channels are packed in groups of 16 (one AVX-512 vector).
#define PW_GROUP 16

// One tile: positions [p0, p0 + NP) × output blocks [ob0, ob0 + 2·NZ + NH): NZ vectors of
// 16 channels (two blocks each) and NH (0 or 1) of 8, the last block of an odd count (a
// whole vector there would waste half its multiply-adds). ob0 is even.
INLINE void pw_tile(const float *x, long xs, int in_c, const float *packed, const float *bias, const float *res,
                    int act, float *y, long ys, int yb0, int ob0, long p0, const int NZ, const int NH, const int NP) {
    // Fixed sizes (not NP × NZ: a variable-length array stays in memory).
    bk_v16 acc[12][2];
    bk_v8 acch[12];
    const long gstride = (long)in_c * PW_GROUP;
    const float *wg = packed + (long)(ob0 / 2) * gstride;
    for (int c = 0; c < NZ; c++) {
        const bk_v16 bv = *(const bk_v16 *)(bias + (long)(ob0 / 2 + c) * PW_GROUP);
        for (int p = 0; p < NP; p++) acc[p][c] = bv;
    }
    if (NH) {
        const bk_v8 bh = *(const bk_v8 *)(bias + (long)(ob0 / 2 + NZ) * PW_GROUP);
        for (int p = 0; p < NP; p++) acch[p] = bh;
    }
    const int blocks = in_c / BL;
    for (int cb = 0; cb < blocks; cb++) {
        const float *xb = x + (long)cb * xs + p0 * BL;
        const float *wb = wg + (long)cb * BL * PW_GROUP;
        // Not unrolled: unrolled, the compiler hoists the weight loads of every l and
        // spills the accumulators of the widest tiles.
#pragma clang loop unroll(disable)
        for (int l = 0; l < BL; l++) {
            bk_v16 w[2];
            for (int c = 0; c < NZ; c++) w[c] = *(const bk_v16 *)(wb + c * gstride + l * PW_GROUP);
            const bk_v8 wh = NH ? *(const bk_v8 *)(wb + NZ * gstride + l * PW_GROUP) : (bk_v8){0, 0, 0, 0, 0, 0, 0, 0};
            for (int p = 0; p < NP; p++) {
                const float s = xb[p * BL + l];
                for (int c = 0; c < NZ; c++) acc[p][c] += w[c] * s;
                if (NH) acch[p] += wh * s;
            }
        }
    }
    for (int c = 0; c < NZ; c++) {
        const long o0 = (long)(ob0 + 2 * c - yb0) * ys + p0 * BL, o1 = o0 + ys;
        for (int p = 0; p < NP; p++) {
            bk_v16 v = acc[p][c];
            if (res) {
                const bk_v8 r0 = *(const bk_v8 *)(res + o0 + p * BL), r1 = *(const bk_v8 *)(res + o1 + p * BL);
                v += __builtin_shufflevector(r0, r1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            }
            v = bk_act16(v, act);
            *(bk_v8 *)(y + o0 + p * BL) = bk_lo(v);
            *(bk_v8 *)(y + o1 + p * BL) = bk_hi(v);
        }
    }
    if (NH) {
        const long o0 = (long)(ob0 + 2 * NZ - yb0) * ys + p0 * BL;
        for (int p = 0; p < NP; p++) {
            bk_v8 v = acch[p];
            if (res) v += *(const bk_v8 *)(res + o0 + p * BL);
            *(bk_v8 *)(y + o0 + p * BL) = bk_act8(v, act);
        }
    }
}

// The tile of np ≤ 12 positions, fully unrolled for its size.
#define PW_TILE_CASES(NZ, NH) \
    switch (np) { \
    case 1: pw_tile(x, xs, in_c, packed, bias, res, act, y, ys, yb0, ob0, p0, NZ, NH, 1); break; \
    case 2: pw_tile(x, xs, in_c, packed, bias, res, act, y, ys, yb0, ob0, p0, NZ, NH, 2); break; \
    case 3: pw_tile(x, xs, in_c, packed, bias, res, act, y, ys, yb0, ob0, p0, NZ, NH, 3); break; \
    case 4: pw_tile(x, xs, in_c, packed, bias, res, act, y, ys, yb0, ob0, p0, NZ, NH, 4); break; \
    case 5: pw_tile(x, xs, in_c, packed, bias, res, act, y, ys, yb0, ob0, p0, NZ, NH, 5); break; \
    case 6: pw_tile(x, xs, in_c, packed, bias, res, act, y, ys, yb0, ob0, p0, NZ, NH, 6); break; \
    case 7: pw_tile(x, xs, in_c, packed, bias, res, act, y, ys, yb0, ob0, p0, NZ, NH, 7); break; \
    case 8: pw_tile(x, xs, in_c, packed, bias, res, act, y, ys, yb0, ob0, p0, NZ, NH, 8); break; \
    case 9: pw_tile(x, xs, in_c, packed, bias, res, act, y, ys, yb0, ob0, p0, NZ, NH, 9); break; \
    case 10: pw_tile(x, xs, in_c, packed, bias, res, act, y, ys, yb0, ob0, p0, NZ, NH, 10); break; \
    case 11: pw_tile(x, xs, in_c, packed, bias, res, act, y, ys, yb0, ob0, p0, NZ, NH, 11); break; \
    default: pw_tile(x, xs, in_c, packed, bias, res, act, y, ys, yb0, ob0, p0, NZ, NH, 12); break; \
    }

// The first work item of part `part` of `parts`, when parts take contiguous runs of items of
// equal cost: an item costs the blocks of its channel tile (the last tile of a layer whose
// width is not a whole number of tiles is cheaper; splitting by item count left one thread
// with four times the other's work on 144->40 layers, for example).
static long pw_split(long ptiles, long ctiles, long blocks, long tile_blocks, int weights_outer, int part, int parts) {
    const long target = ptiles * blocks * part / parts;
    if (weights_outer) {  // channel tiles outermost: ptiles items of each tile
        const long full = ptiles * tile_blocks;
        const long ct = target / full < ctiles - 1 ? target / full : ctiles - 1;
        const long nb = ct < ctiles - 1 ? tile_blocks : blocks - ct * tile_blocks;
        const long i = (target - ct * full + nb - 1) / nb;
        return ct * ptiles + (i < ptiles ? i : ptiles);
    }
    const long pt = target / blocks;  // position tiles outermost: each costs `blocks`
    return pt * ctiles + (target - pt * blocks + tile_blocks - 1) / tile_blocks;
}

// Work items are (position tile, channel tile) pairs. On planes of more than 24 position
// tiles channel tiles are innermost, so that a position tile's input stays in L1 while every
// tile of output channels reads it; on smaller planes (7x7 to 16x16, where the weights are
// the larger operand) position tiles are innermost, so that each tile of weights is read
// from memory once (measured: lite0 H at 224 px 9.5-9.8 -> 9.0-9.3 ms on one thread). Part
// `part` of `parts` takes a contiguous run of items of about equal cost (pw_split). Channel tiles are 2·NZMAX blocks of
// [ob_lo, ob_hi) (ob_lo even; the last tile what is left); position tiles split P evenly
// in tiles of at most NPMAX (16 positions as 8 + 8, not 12 + 4). Blocks of x are xs floats
// apart, of y and res ys, y's first block being output block yb0.
INLINE void pw_body(const float *x, long xs, long P, int in_c, const float *packed, const float *bias, const float *res,
                    int act, float *y, long ys, int ob_lo, int ob_hi, int yb0, int part, int parts,
                    const int NZMAX, const int NPMAX) {
    const int tile_blocks = 2 * NZMAX;
    const long ptiles = (P + NPMAX - 1) / NPMAX, ctiles = (ob_hi - ob_lo + tile_blocks - 1) / tile_blocks;
    const long npt = (P + ptiles - 1) / ptiles;
    const int weights_outer = ptiles <= 24;
    const long i0 = pw_split(ptiles, ctiles, ob_hi - ob_lo, tile_blocks, weights_outer, part, parts);
    const long i1 = pw_split(ptiles, ctiles, ob_hi - ob_lo, tile_blocks, weights_outer, part + 1, parts);
    for (long t = i0; t < i1; t++) {
        const long pt = weights_outer ? t % ptiles : t / ctiles, ct = weights_outer ? t / ptiles : t % ctiles;
        const long p0 = pt * npt;
        const int ob0 = ob_lo + (int)ct * tile_blocks;
        const int np = (int)(P - p0 < npt ? P - p0 : npt);
        const int nb = ob_hi - ob0 < tile_blocks ? ob_hi - ob0 : tile_blocks;
        if (nb == 4) { PW_TILE_CASES(2, 0) }
        else if (nb == 3) { PW_TILE_CASES(1, 1) }
        else if (nb == 2) { PW_TILE_CASES(1, 0) }
        else { PW_TILE_CASES(0, 1) }
    }
}

// MARK: - Depthwise convolution

// One output (eight channels) over the taps inside the input: rows [ky_lo, ky_hi) of the
// kernel from input row iy0, columns from input column ix0 (negative at the left border).
INLINE bk_v8 dwb_column(const float *xb, int W, const bk_v8 *wk, bk_v8 bv, int k, int iy0, int ky_lo, int ky_hi, int ix0) {
    const int kx_lo = ix0 < 0 ? -ix0 : 0, kx_hi = W - ix0 < k ? W - ix0 : k;
    bk_v8 acc = bv;
    for (int ki = ky_lo; ki < ky_hi; ki++) {
        const float *row = xb + ((long)(iy0 + ki) * W + ix0) * BL;
        for (int kj = kx_lo; kj < kx_hi; kj++) acc += *(const bk_v8 *)(row + (long)kj * BL) * wk[ki * k + kj];
    }
    return acc;
}

// Output rows of one block of eight channels straight from the input (no padded copy: at
// these sizes copying cost more than the taps). Per row, the taps whose input rows exist;
// columns whose taps all fall inside the row (the interior) go T at a time with the kernel
// size K and the stride S constants, so that the input vectors neighbouring outputs share
// are loaded once; the few border columns one at a time, over the taps inside.
INLINE void dwb_rows(const gdh_dw_geometry *g, const float *xb, const bk_v8 *wk, bk_v8 bv, int r0, int r1,
                     const float *res, int act, float *yb, const int T, const int K, const int S) {
    const int H = g->height, W = g->width, pt = g->pad_top, pl = g->pad_left, ow = g->out_w;
    // Interior columns: ox·S − pl ≥ 0 and ox·S − pl + K − 1 ≤ W − 1.
    int ox_a = (pl + S - 1) / S, ox_b = W - K + pl >= 0 ? (W - K + pl) / S + 1 : 0;
    if (ox_b > ow) ox_b = ow;
    if (ox_a > ox_b) ox_a = ox_b;
    for (int oy = r0; oy < r1; oy++) {
        const int iy0 = oy * S - pt;
        const int ky_lo = iy0 < 0 ? -iy0 : 0, ky_hi = H - iy0 < K ? H - iy0 : K;
        bk_v8 *yr = (bk_v8 *)(yb + (long)oy * ow * BL);
        const bk_v8 *rr = res ? (const bk_v8 *)(res + (long)oy * ow * BL) : 0;
        int ox = ox_a;
        for (; ox + T <= ox_b; ox += T) {
            bk_v8 acc[8];   // T ≤ 8 (a fixed size: a variable-length array stays in memory)
            for (int j = 0; j < T; j++) acc[j] = bv;
            for (int ki = ky_lo; ki < ky_hi; ki++) {
                const float *row = xb + ((long)(iy0 + ki) * W + (long)ox * S - pl) * BL;
                for (int kj = 0; kj < K; kj++) {
                    const bk_v8 wv = wk[ki * K + kj];
                    for (int j = 0; j < T; j++) acc[j] += *(const bk_v8 *)(row + (long)(j * S + kj) * BL) * wv;
                }
            }
            for (int j = 0; j < T; j++) yr[ox + j] = bk_act8(rr ? acc[j] + rr[ox + j] : acc[j], act);
        }
        // The rest of the interior, then the borders, one column at a time.
        for (int pass = 0; pass < 3; pass++) {
            const int c0 = pass == 0 ? ox : pass == 1 ? 0 : ox_b;
            const int c1 = pass == 0 ? ox_b : pass == 1 ? ox_a : ow;
            for (int c = c0; c < c1; c++) {
                const bk_v8 acc = dwb_column(xb, W, wk, bv, K, iy0, ky_lo, ky_hi, c * S - pl);
                yr[c] = bk_act8(rr ? acc + rr[c] : acc, act);
            }
        }
    }
}

// Small planes (EfficientNet's last stages: 4x4 to 16x16 at 128 px, 7x7 to 14x14 at 224)
// have almost no interior columns, so dwb_rows would take nearly every output through the
// border loop of dwb_column. Here the input width W, kernel K, stride S and left padding
// PL are constants and a whole output row of OW columns is one register tile: which taps
// of which column fall inside the row is decided at compile time, with no branch per tap.
INLINE void dwb_rows_fixed(const gdh_dw_geometry *g, const float *xb, const bk_v8 *wk, bk_v8 bv, int r0, int r1,
                           const float *res, int act, float *yb, const int W, const int K, const int S, const int PL,
                           const int OW) {
    const int H = g->height, pt = g->pad_top;
    for (int oy = r0; oy < r1; oy++) {
        const int iy0 = oy * S - pt;
        const int ky_lo = iy0 < 0 ? -iy0 : 0, ky_hi = H - iy0 < K ? H - iy0 : K;
        bk_v8 acc[16];   // OW ≤ 16 (a fixed size: a variable-length array stays in memory)
        for (int j = 0; j < OW; j++) acc[j] = bv;
        for (int ki = ky_lo; ki < ky_hi; ki++) {
            const bk_v8 *row = (const bk_v8 *)(xb + (long)(iy0 + ki) * W * BL);
            for (int kj = 0; kj < K; kj++) {
                const bk_v8 wv = wk[ki * K + kj];
                for (int j = 0; j < OW; j++) {
                    const int ix = j * S + kj - PL;
                    if (ix >= 0 && ix < W) acc[j] += row[ix] * wv;
                }
            }
        }
        bk_v8 *yr = (bk_v8 *)(yb + (long)oy * OW * BL);
        const bk_v8 *rr = res ? (const bk_v8 *)(res + (long)oy * OW * BL) : 0;
        for (int j = 0; j < OW; j++) yr[j] = bk_act8(rr ? acc[j] + rr[j] : acc[j], act);
    }
}

// The widths, kernels and strides of EfficientNet-Lite0's small planes at 128 and 224 px
// (and any other network's of the same shapes), with TensorFlow SAME padding; returns 0
// for other geometries and for rows wider than OWMAX accumulators (the level's registers).
INLINE int dwb_fixed(const gdh_dw_geometry *g, const float *xb, const bk_v8 *wk, bk_v8 bv, int r0, int r1,
                     const float *res, int act, float *yb, const int OWMAX) {
    const int W = g->width, K = g->kernel, S = g->stride;
    if (g->pad_left != (S == 1 ? (K - 1) / 2 : (K - 2) / 2) || g->out_w != (W + S - 1) / S) return 0;
#define DWF(w, k, s) \
    if (W == (w) && K == (k) && S == (s) && ((w) + (s) - 1) / (s) <= OWMAX) { \
        dwb_rows_fixed(g, xb, wk, bv, r0, r1, res, act, yb, w, k, s, (s) == 1 ? ((k) - 1) / 2 : ((k) - 2) / 2, \
                       ((w) + (s) - 1) / (s)); \
        return 1; \
    }
    DWF(4, 3, 1) DWF(4, 5, 1) DWF(7, 3, 1) DWF(7, 5, 1) DWF(8, 3, 1) DWF(8, 5, 1) DWF(8, 5, 2)
    DWF(14, 3, 1) DWF(14, 5, 1) DWF(14, 5, 2) DWF(16, 5, 1) DWF(16, 3, 2) DWF(28, 3, 2)
#undef DWF
    return 0;
}

// Tiles of T outputs for the common kernels and strides; others with T = 1.
INLINE void dwb_body(const gdh_dw_geometry *g, const float *x, const float *w8, const float *b8, const float *res,
                     int act, float *y, int blk0, int blk1, int r0, int r1, const int T) {
    const int s = g->stride, k = g->kernel;
    const long plane = (long)g->height * g->width, oplane = (long)g->out_h * g->out_w;
    const bk_v8 zero = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int b = blk0; b < blk1; b++) {
        const float *xb = x + (long)b * bk_stride(plane);
        const bk_v8 *wk = (const bk_v8 *)(w8 + (long)b * k * k * BL);
        const bk_v8 bv = b8 ? *(const bk_v8 *)(b8 + (long)b * BL) : zero;
        const float *rb = res ? res + (long)b * bk_stride(oplane) : 0;
        float *yb = y + (long)b * bk_stride(oplane);
        if (dwb_fixed(g, xb, wk, bv, r0, r1, rb, act, yb, 2 * T)) continue;
        if (k == 3 && s == 1) dwb_rows(g, xb, wk, bv, r0, r1, rb, act, yb, T, 3, 1);
        else if (k == 3 && s == 2) dwb_rows(g, xb, wk, bv, r0, r1, rb, act, yb, T / 2, 3, 2);
        else if (k == 5 && s == 1) dwb_rows(g, xb, wk, bv, r0, r1, rb, act, yb, T, 5, 1);
        else if (k == 5 && s == 2) dwb_rows(g, xb, wk, bv, r0, r1, rb, act, yb, T / 2, 5, 2);
        else {
            // Any kernel and stride: the same loops without constants (columns one at a time).
            const int H = g->height, W = g->width, pt = g->pad_top, pl = g->pad_left, ow = g->out_w;
            for (int oy = r0; oy < r1; oy++) {
                const int iy0 = oy * s - pt;
                const int ky_lo = iy0 < 0 ? -iy0 : 0, ky_hi = H - iy0 < k ? H - iy0 : k;
                for (int c = 0; c < ow; c++) {
                    bk_v8 acc = dwb_column(xb, W, wk, bv, k, iy0, ky_lo, ky_hi, c * s - pl);
                    const long o = ((long)oy * ow + c) * BL;
                    if (rb) acc += *(const bk_v8 *)(rb + o);
                    *(bk_v8 *)(yb + o) = bk_act8(acc, act);
                }
            }
        }
    }
}

// MARK: - A 1×1 expansion fused with the depthwise convolution after it

// Channels of the expanded value per pass (four blocks: one register tile of the 1×1).
#define ED_BLOCKS 4

// The expanded rows of ED_BLOCKS blocks live in `buf` (blocks bs floats apart, `cap` rows
// each) instead of memory: for each group of blocks, bands of output rows are computed
// from the expanded input rows they read; rows the next band reads too are moved to the
// top of the buffer, not computed again.
INLINE void ed_body(const float *x, int in_c, const float *packed, const float *bias, int act_expand,
                    const gdh_dw_geometry *g, const float *w8, const float *b8, int act, float *y, int r0, int r1,
                    float *buf, long buf_floats, const int NZMAX, const int NPMAX, const int T) {
    const int H = g->height, W = g->width, s = g->stride, k = g->kernel, pt = g->pad_top;
    const int mid_blocks = g->channels / BL;
    const long xs = bk_stride((long)H * W), ys = bk_stride((long)g->out_h * g->out_w), row = (long)W * BL;
    const long cap = buf_floats / (ED_BLOCKS * row), bs = cap * row;
    const int R = cap >= k ? (int)((cap - k) / s + 1) : 1;
    for (int cb0 = 0; cb0 < mid_blocks; cb0 += ED_BLOCKS) {
        const int nb = mid_blocks - cb0 < ED_BLOCKS ? mid_blocks - cb0 : ED_BLOCKS;
        int lo = 0, hi = 0;   // expanded input rows [lo, hi) in the buffer
        for (int b0 = r0; b0 < r1; b0 += R) {
            const int b1 = r1 - b0 < R ? r1 : b0 + R;
            int need_lo = b0 * s - pt, need_hi = (b1 - 1) * s - pt + k;
            if (need_lo < 0) need_lo = 0;
            if (need_hi > H) need_hi = H;
            if (need_hi < need_lo) need_hi = need_lo;
            if (need_lo < hi && need_lo >= lo) {
                if (need_lo > lo)
                    for (int j = 0; j < nb; j++)
                        memmove(buf + j * bs, buf + j * bs + (need_lo - lo) * row, (size_t)((hi - need_lo) * row) * sizeof(float));
            } else {
                hi = need_lo;
            }
            lo = need_lo;
            if (need_hi > hi) {
                pw_body(x + hi * row, xs, (long)(need_hi - hi) * W, in_c, packed, bias, 0, act_expand,
                        buf + (hi - lo) * row, bs, cb0, cb0 + nb, cb0, 0, 1, NZMAX, NPMAX);
                hi = need_hi;
            }
            gdh_dw_geometry band = *g;
            band.height = hi - lo;
            band.pad_top = pt + lo;
            for (int j = 0; j < nb; j++)
                dwb_body(&band, buf + j * bs, w8 + (long)(cb0 + j) * k * k * BL, b8 ? b8 + (long)(cb0 + j) * BL : 0, 0, act,
                         y + (long)(cb0 + j) * ys, 0, 1, b0, b1, T);
        }
    }
}

// MARK: - A convolution of few input channels (the stem)

// Output rows of a k×k, stride-s convolution of a planar input of few channels (an RGB
// image) into blocked output, 16·NZ channels of groups [g0, g0 + NZ) for NP outputs of a
// row at a time; the input is optionally mapped x·a[c] + b[c] first (the network's input
// normalisation; padding stays zero, as after the map). CHECK: the tile touches the padding.
INLINE void sd_tile(const float *x, int C, int H, int W, int k, int s, int pt, int pl, int ow, long P, const float *packed,
                    long gw, const float *bias, const float *a, const float *b, int act, float *y, int g0, int oy, int ox,
                    const int NZ, const int NP, const int CHECK) {
    bk_v16 acc[8][2];
    for (int c = 0; c < NZ; c++) {
        const bk_v16 bv = *(const bk_v16 *)(bias + (long)(g0 + c) * PW_GROUP);
        for (int p = 0; p < NP; p++) acc[p][c] = bv;
    }
    for (int ci = 0; ci < C; ci++) {
        const float sa = a ? a[ci] : 1.0f, sb = a ? b[ci] : 0.0f;
        const float *xc = x + (long)ci * H * W;
        for (int ki = 0; ki < k; ki++) {
            const int iy = oy * s + ki - pt;
            if (CHECK && (iy < 0 || iy >= H)) continue;
            const float *row = xc + (long)iy * W;
            for (int kj = 0; kj < k; kj++) {
                const float *wt = packed + ((long)(ci * k + ki) * k + kj) * gw + (long)g0 * PW_GROUP;
                bk_v16 w[2];
                for (int c = 0; c < NZ; c++) w[c] = *(const bk_v16 *)(wt + c * PW_GROUP);
                for (int p = 0; p < NP; p++) {
                    const int ix = (ox + p) * s + kj - pl;
                    if (CHECK && (ix < 0 || ix >= W)) continue;
                    const float v = row[ix] * sa + sb;
                    for (int c = 0; c < NZ; c++) acc[p][c] += w[c] * v;
                }
            }
        }
    }
    for (int c = 0; c < NZ; c++) {
        const long o0 = (long)(2 * (g0 + c)) * bk_stride(P) + ((long)oy * ow + ox) * BL, o1 = o0 + bk_stride(P);
        for (int p = 0; p < NP; p++) {
            const bk_v16 v = bk_act16(acc[p][c], act);
            *(bk_v8 *)(y + o0 + p * BL) = bk_lo(v);
            *(bk_v8 *)(y + o1 + p * BL) = bk_hi(v);
        }
    }
}

INLINE void sd_body(const float *x, int C, int H, int W, int k, int s, int pt, int pl, int oh, int ow, const float *packed,
                    const float *bias, const float *a, const float *b, int act, float *y, int out_c, int r0, int r1,
                    const int NZMAX) {
    const long P = (long)oh * ow, gw = (long)out_c;   // out_c a multiple of 16: groups × 16 floats per tap
    const int groups = out_c / PW_GROUP;
    // Interior columns: every tap inside the row.
    int ox_a = (pl + s - 1) / s, ox_b = W - k + pl >= 0 ? (W - k + pl) / s + 1 : 0;
    if (ox_b > ow) ox_b = ow;
    if (ox_a > ox_b) ox_a = ox_b;
    for (int oy = r0; oy < r1; oy++) {
        const int rows_inside = oy * s - pt >= 0 && oy * s - pt + k <= H;
        for (int g0 = 0; g0 < groups; g0 += NZMAX) {
            const int nz = groups - g0 < NZMAX ? groups - g0 : NZMAX;
#define SD(NZ, NP, CK) sd_tile(x, C, H, W, k, s, pt, pl, ow, P, packed, gw, bias, a, b, act, y, g0, oy, ox, NZ, NP, CK)
            int ox = 0;
            for (; ox < ox_a; ox++) { if (nz == 2) SD(2, 1, 1); else SD(1, 1, 1); }
            if (rows_inside) {
                for (; ox + 8 <= ox_b; ox += 8) { if (nz == 2) SD(2, 8, 0); else SD(1, 8, 0); }
            } else {
                for (; ox + 8 <= ox_b; ox += 8) { if (nz == 2) SD(2, 8, 1); else SD(1, 8, 1); }
            }
            for (; ox < ow; ox++) { if (nz == 2) SD(2, 1, 1); else SD(1, 1, 1); }
#undef SD
        }
    }
}

// MARK: - Global average pooling

INLINE void gap_body(const float *x, int channels, long plane, float *y) {
    const float inv = 1.0f / (float)plane;
    for (int b = 0; b < channels / BL; b++) {
        const bk_v8 *xb = (const bk_v8 *)(x + (long)b * bk_stride(plane));
        bk_v8 s0 = {0, 0, 0, 0, 0, 0, 0, 0}, s1 = s0;
        long p = 0;
        for (; p + 2 <= plane; p += 2) { s0 += xb[p]; s1 += xb[p + 1]; }
        if (p < plane) s0 += xb[p];
        *(bk_v8 *)(y + b * BL) = (s0 + s1) * inv;
    }
}

// MARK: - Levels

#define BK_LEVEL(SUFFIX, ATTR, NCMAX, NPMAX, DWT) \
    ATTR static void pw_##SUFFIX(const float *x, long P, int in_c, const float *packed, const float *bias, \
                                 const float *res, int act, float *y, int out_c, int part, int parts) { \
        pw_body(x, bk_stride(P), P, in_c, packed, bias, res, act, y, bk_stride(P), 0, out_c / BL, 0, part, parts, \
                NCMAX, NPMAX); } \
    ATTR static void dwb_##SUFFIX(const gdh_dw_geometry *g, const float *x, const float *w8, const float *b8, \
                                  const float *res, int act, float *y, int blk0, int blk1, int r0, int r1) { \
        dwb_body(g, x, w8, b8, res, act, y, blk0, blk1, r0, r1, DWT); } \
    ATTR static void reorder_##SUFFIX(const float *x, long plane, float *y, int b0, int b1, int to_blocks) { \
        bk_reorder_body(x, plane, y, b0, b1, to_blocks); } \
    ATTR static void ed_##SUFFIX(const float *x, int in_c, const float *packed, const float *bias, int act_expand, \
                                 const gdh_dw_geometry *g, const float *w8, const float *b8, int act, float *y, int r0, int r1, \
                                 float *buf, long buf_floats) { \
        ed_body(x, in_c, packed, bias, act_expand, g, w8, b8, act, y, r0, r1, buf, buf_floats, NCMAX, NPMAX, DWT); } \
    ATTR static void sd_##SUFFIX(const float *x, int C, int H, int W, int k, int s, int pt, int pl, int oh, int ow, \
                                 const float *packed, const float *bias, const float *a, const float *b, int act, float *y, \
                                 int out_c, int r0, int r1) { \
        sd_body(x, C, H, W, k, s, pt, pl, oh, ow, packed, bias, a, b, act, y, out_c, r0, r1, NCMAX); } \
    ATTR static void gap_##SUFFIX(const float *x, int channels, long plane, float *y) { gap_body(x, channels, plane, y); }

// Baseline: a 16-float vector is four SSE registers (16 in all): 1 × 3 accumulators.
BK_LEVEL(c, , 1, 3, 2)
#if defined(__x86_64__)
// AVX2: two YMM registers per vector, 1 × 6 accumulators (12 of 16 registers).
BK_LEVEL(avx2, __attribute__((target("avx2,fma"))), 1, 6, 4)
// AVX-512: one ZMM register per vector, 2 × 12 accumulators (24 of 32 registers).
BK_LEVEL(avx512, __attribute__((target("avx512f,avx512vl,avx2,fma"))), 2, 12, 8)
#endif
#define BK_DISPATCH GDH_LEVEL_DISPATCH

// MARK: - Entry points

void gdh_blocked_reorder(const float *x, int channels, long plane, float *y, int blk_begin, int blk_end,
                         int to_blocks, int level) {
    if (channels % BL != 0 || blk_begin < 0 || blk_end > channels / BL) return;
    BK_DISPATCH(reorder, x, plane, y, blk_begin, blk_end, to_blocks);
}

long gdh_blocked_pointwise_packed_floats(int in_c, int out_c) {
    return (long)((out_c + PW_GROUP - 1) / PW_GROUP) * in_c * PW_GROUP;
}

long gdh_blocked_pointwise_bias_floats(int out_c) { return (long)((out_c + PW_GROUP - 1) / PW_GROUP) * PW_GROUP; }

void gdh_blocked_pointwise_pack(const float *w, const float *scale, int in_c, int out_c, float *packed) {
    const long n = gdh_blocked_pointwise_packed_floats(in_c, out_c);
    memset(packed, 0, (size_t)n * sizeof(float));
    for (int o = 0; o < out_c; o++) {
        const float sc = scale ? scale[o] : 1.0f;
        float *dst = packed + (long)(o / PW_GROUP) * in_c * PW_GROUP + o % PW_GROUP;
        for (int c = 0; c < in_c; c++) dst[(long)c * PW_GROUP] = w[(long)o * in_c + c] * sc;
    }
}

void gdh_blocked_pointwise(const float *x, long positions, int in_c, const float *packed, const float *bias,
                           const float *residual, int act, float *y, int out_c, int part, int parts, int level) {
    if (in_c % BL != 0 || out_c % BL != 0 || in_c <= 0 || out_c <= 0 || positions <= 0 || parts <= 0) return;
    BK_DISPATCH(pw, x, positions, in_c, packed, bias, residual, act, y, out_c, part, parts);
}

void gdh_blocked_depthwise(const gdh_dw_geometry *g, const float *x, const float *w8, const float *b8,
                           const float *residual, int act, float *y, int blk_begin, int blk_end,
                           int row_begin, int row_end, int level) {
    if (g->kernel > GDH_DW_MAX_KERNEL || g->out_h <= 0 || g->out_w <= 0 || g->multiplier != 1 ||
        g->channels % BL != 0 || row_begin >= row_end || blk_begin >= blk_end) return;
    BK_DISPATCH(dwb, g, x, w8, b8, residual, act, y, blk_begin, blk_end, row_begin, row_end);
}

void gdh_blocked_global_average(const float *x, int channels, long plane, float *y, int level) {
    if (channels % BL != 0 || plane <= 0) return;
    BK_DISPATCH(gap, x, channels, plane, y);
}

void gdh_blocked_small_conv(const float *x, int channels, int height, int width, int kernel, int stride, int pad_top,
                            int pad_left, int out_h, int out_w, const float *packed, const float *bias, const float *scale,
                            const float *shift, int act, float *y, int out_c, int row_begin, int row_end, int level) {
    if (out_c % PW_GROUP != 0 || out_c <= 0 || channels <= 0 || kernel <= 0 || stride <= 0 || out_h <= 0 || out_w <= 0 ||
        row_begin < 0 || row_end > out_h || row_begin >= row_end) return;
    BK_DISPATCH(sd, x, channels, height, width, kernel, stride, pad_top, pad_left, out_h, out_w, packed, bias, scale, shift,
                act, y, out_c, row_begin, row_end);
}

long gdh_blocked_expand_depthwise_scratch_floats(const gdh_dw_geometry *g, long budget) {
    const long least = (long)ED_BLOCKS * g->width * BL * (g->kernel + 2L * g->stride);
    return least > budget ? least : budget;
}

void gdh_blocked_expand_depthwise(const float *x, int in_c, const float *packed, const float *bias, int act_expand,
                                  const gdh_dw_geometry *g, const float *w8, const float *b8, int act, float *y,
                                  int row_begin, int row_end, float *scratch, long scratch_floats, int level) {
    if (g->kernel > GDH_DW_MAX_KERNEL || g->out_h <= 0 || g->out_w <= 0 || g->multiplier != 1 || g->channels % BL != 0 ||
        in_c % BL != 0 || in_c <= 0 || row_begin < 0 || row_end > g->out_h || row_begin >= row_end) return;
    if (scratch_floats < gdh_blocked_expand_depthwise_scratch_floats(g, 0)) return;
    BK_DISPATCH(ed, x, in_c, packed, bias, act_expand, g, w8, b8, act, y, row_begin, row_end, scratch, scratch_floats);
}
