// Depthwise convolution kernels (groups = channels), for training and inference.
//
// Every function works one channel plane at a time through a zero-padded copy of it in
// the caller's scratch memory, split by columns into `stride` phase planes (phase b holds
// the padded columns j·stride + b), so that each kernel tap reads a contiguous run of a
// phase row: an output row is then a weighted sum of shifted rows,
//   y[ox] = Σ_t w[t] · row_t[ox],
// computed in register blocks of 32 (then 8) outputs with constant trip counts that the
// compiler vectorises. The input gradient is the same kind of sum, over the taps that
// reach each input position (per column phase), of rows of the zero-padded output
// gradient; the weight gradient is, per tap, a dot product of the output gradient with
// a shifted phase row.
//
// The bodies are written once in plain C and compiled three times: for AVX-512, for
// AVX2 + FMA and for the baseline, chosen by `level` as the direct kernels choose theirs
// (gdh_conv_kernel_level; GDH_SCALAR_KERNELS=1 forces the baseline).
#include "neural_kernels.h"
#include "kernel_math.h"
#include <string.h>

#define XB 32   // outputs of a wide register block
#define XS 8    // outputs of a narrow block (row ends, narrow planes)
#define MAX_TAPS 128

#define INLINE static inline __attribute__((always_inline))

// Eight floats (one AVX2 register, two SSE ones), loaded and stored unaligned: the blocks
// that the vectoriser left to itself splits badly are written with it.
typedef gdh_v8 dw_v8;

// MARK: - Geometry

INLINE int dw_rows_needed(const gdh_dw_geometry *g) { return (g->out_h - 1) * g->stride + g->kernel; }
INLINE int dw_cols_needed(const gdh_dw_geometry *g) { return (g->out_w - 1) * g->stride + g->kernel; }
// Row pitch of a phase plane: every column a tap of a block reads (a narrow block may
// start at the last output and read XS − 1 past it; wide blocks end within the row).
INLINE long dw_pitch(const gdh_dw_geometry *g) {
    const long phase_w = (dw_cols_needed(g) + g->stride - 1) / g->stride;
    return (phase_w + XS + 7) & ~7L;
}
INLINE long dw_phase_floats(const gdh_dw_geometry *g) { return (long)dw_rows_needed(g) * dw_pitch(g); }
// The phase planes, then one padded row (stride · pitch floats) that strides > 1 split.
INLINE long dw_prepared_floats(const gdh_dw_geometry *g) {
    return ((long)g->stride * dw_phase_floats(g) + (g->stride > 1 ? (long)g->stride * dw_pitch(g) : 0) + 15) & ~15L;
}
// The output gradient as the input gradient reads it: L zeros before each row, zeros after.
INLINE int dw_grad_left(const gdh_dw_geometry *g) { return (g->kernel - 1) / g->stride; }
INLINE long dw_grad_pitch(const gdh_dw_geometry *g) {
    const int s = g->stride;
    const long span = (g->width + g->pad_left + s - 1) / s;
    const long cols = span > g->out_w ? span : g->out_w;
    return (dw_grad_left(g) + cols + XB + 7) & ~7L;
}
// Rows of the padded output gradient: L zero rows, the gradient's, zeros to the last row
// a phase grid reads (and one more).
INLINE long dw_grad_rows(const gdh_dw_geometry *g) {
    const int s = g->stride, uh = (g->height + g->pad_top + s - 1) / s;
    return dw_grad_left(g) + (uh > g->out_h ? uh : g->out_h) + 1;
}
// Per input plane, strides > 1: a phase grid for each column phase and one padded row.
INLINE long dw_grad_phase_floats(const gdh_dw_geometry *g) {
    const int s = g->stride;
    const long uh = (g->height + g->pad_top + s - 1) / s, vw = (g->width + g->pad_left + s - 1) / s;
    return s > 1 ? s * (uh * vw + XS) + s * (vw + XS) + XS : 0;
}
// The output gradient as the weight gradient reads it: rows rounded up to XS, zero-filled.
INLINE long dw_wgrad_pitch(const gdh_dw_geometry *g) { return (g->out_w + XS - 1) & ~(long)(XS - 1); }

long gdh_depthwise_scratch_floats(const gdh_dw_geometry *g) {
    const long forward = dw_prepared_floats(g);
    const long input_grad = (long)g->multiplier * dw_grad_rows(g) * dw_grad_pitch(g) + dw_grad_phase_floats(g);
    const long weight_grad = dw_prepared_floats(g) + (long)g->out_h * dw_wgrad_pitch(g);
    long m = forward > input_grad ? forward : input_grad;
    m = m > weight_grad ? m : weight_grad;
    return ((m + 64 + 15) & ~15L);
}

// Rows [r0, r1) of the padded, phase-split copy of one plane (height × width): phase b,
// row r, column j = src[r − pt][j·stride + b − pl] (0 outside), every entry of each row
// (slack included) written. Stride 2 splits the source row straight into its two phases
// (the interior in one vectorised pass); larger strides pad the row contiguously into
// `tmp` (stride · pitch floats after the phases) first.
INLINE void dw_prepare(const float *src, int height, int width, int pt, int pl, int stride, float *dst,
                       long phase_floats, long pitch, int r0, int r1) {
    float *tmp = dst + (long)stride * phase_floats;
    const long span = (long)stride * pitch;
    // Source columns [0, ncopy) land at padded columns [pl, pl + ncopy).
    long ncopy = width < span - pl ? width : span - pl;
    if (ncopy < 0) ncopy = 0;
    for (int r = r0; r < r1; r++) {
        const int iy = r - pt;
        if (iy < 0 || iy >= height) {
            for (int b = 0; b < stride; b++) memset(dst + (long)b * phase_floats + (long)r * pitch, 0, sizeof(float) * (size_t)pitch);
            continue;
        }
        const float *sr = src + (long)iy * width;
        if (stride == 1) {
            float *row = dst + (long)r * pitch;
            const long lead = pl < pitch ? pl : pitch;
            for (long j = 0; j < lead; j++) row[j] = 0.0f;
            memcpy(row + lead, sr, sizeof(float) * (size_t)ncopy);
            for (long j = lead + ncopy; j < pitch; j++) row[j] = 0.0f;
            continue;
        }
        if (stride == 2) {
            // Straight from the source: even and odd padded columns of the interior in one
            // vectorised pass, the few border columns one by one, zeros after.
            float *restrict e = dst + (long)r * pitch, *restrict o = dst + phase_floats + (long)r * pitch;
            const float *restrict q = sr - pl;
            long jlo = (pl + 1) / 2, jhi = (width + pl) / 2;
            if (jlo > pitch) jlo = pitch;
            if (jhi > pitch) jhi = pitch;
            if (jhi < jlo) jhi = jlo;
            long j = 0;
            for (; j < jlo; j++) {
                const long c0 = 2 * j - pl, c1 = c0 + 1;
                e[j] = c0 >= 0 && c0 < width ? sr[c0] : 0.0f;
                o[j] = c1 >= 0 && c1 < width ? sr[c1] : 0.0f;
            }
            for (; j < jhi; j++) { e[j] = q[2 * j]; o[j] = q[2 * j + 1]; }
            for (; j < pitch && 2 * j - pl < width; j++) {
                const long c0 = 2 * j - pl, c1 = c0 + 1;
                e[j] = c0 >= 0 ? sr[c0] : 0.0f;
                o[j] = c1 >= 0 && c1 < width ? sr[c1] : 0.0f;
            }
            for (; j < pitch; j++) { e[j] = 0.0f; o[j] = 0.0f; }
            continue;
        }
        for (long j = 0; j < pl && j < span; j++) tmp[j] = 0.0f;
        memcpy(tmp + pl, sr, sizeof(float) * (size_t)ncopy);
        for (long j = pl + ncopy; j < span; j++) tmp[j] = 0.0f;
        {
            for (int b = 0; b < stride; b++) {
                float *restrict row = dst + (long)b * phase_floats + (long)r * pitch;
                for (long j = 0; j < pitch; j++) row[j] = tmp[j * stride + b];
            }
        }
    }
}

// MARK: - Weighted sums of rows

// v = act(v + res) over a row (res may be NULL), while the row is in the L1 cache.
INLINE void dw_epilogue(float *restrict v, const float *restrict res, long n, int act, float slope) {
    if (res) for (long i = 0; i < n; i++) v[i] += res[i];
    switch (act) {
    case GDH_ACT_RELU: for (long i = 0; i < n; i++) v[i] = v[i] > 0 ? v[i] : 0.0f; break;
    case GDH_ACT_RELU6:
        for (long i = 0; i < n; i++) { const float a = v[i] > 0 ? v[i] : 0.0f; v[i] = a < 6.0f ? a : 6.0f; }
        break;
    case GDH_ACT_LEAKY: for (long i = 0; i < n; i++) v[i] = v[i] > 0 ? v[i] : v[i] * slope; break;
    case GDH_ACT_TANH: for (long i = 0; i < n; i++) v[i] = tanh_approx(v[i]); break;
    case GDH_ACT_SIGMOID: for (long i = 0; i < n; i++) v[i] = 1.0f / (1.0f + exp_approx(-v[i])); break;
    default: break;
    }
}

// NR output rows of NB outputs at once: dst[r·dstride + i] = init + Σ_t w[t] ·
// rows[t][x0 + r·rstride + i] (rows[t] is the tap's input row for the first output row;
// the others are rstride further), init = init_c, or dst itself with `accumulate`.
// Several rows give a narrow plane independent sums.
INLINE void dw_block_rows8(const float *const *rows, const float *w, int T, long x0, long rstride, float init_c,
                           int accumulate, float *dst, long dstride, const int NR) {
    dw_v8 acc[4];
    for (int r = 0; r < NR; r++)
        acc[r] = accumulate ? *(const dw_v8 *)(dst + r * dstride)
                            : (dw_v8){init_c, init_c, init_c, init_c, init_c, init_c, init_c, init_c};
    for (int t = 0; t < T; t++) {
        const float wv = w[t];
        const float *p = rows[t] + x0;
        for (int r = 0; r < NR; r++) acc[r] += wv * *(const dw_v8 *)(p + r * rstride);
    }
    for (int r = 0; r < NR; r++) *(dw_v8 *)(dst + r * dstride) = acc[r];
}

// One row of XB outputs (four independent vectors).
INLINE void dw_block_wide(const float *const *rows, const float *w, int T, long x0, float init_c, int accumulate, float *dst) {
    float acc[XB];
    if (accumulate) for (int i = 0; i < XB; i++) acc[i] = dst[i];
    else for (int i = 0; i < XB; i++) acc[i] = init_c;
    for (int t = 0; t < T; t++) {
        const float wv = w[t];
        const float *r = rows[t] + x0;
        for (int i = 0; i < XB; i++) acc[i] += wv * r[i];
    }
    for (int i = 0; i < XB; i++) dst[i] = acc[i];
}

INLINE void dw_block_rows_n(const float *const *rows, const float *w, int T, long x0, long rstride, float init_c,
                            int accumulate, float *dst, long dstride, int nr) {
    switch (nr) {
    case 4: dw_block_rows8(rows, w, T, x0, rstride, init_c, accumulate, dst, dstride, 4); break;
    case 3: dw_block_rows8(rows, w, T, x0, rstride, init_c, accumulate, dst, dstride, 3); break;
    case 2: dw_block_rows8(rows, w, T, x0, rstride, init_c, accumulate, dst, dstride, 2); break;
    default: dw_block_rows8(rows, w, T, x0, rstride, init_c, accumulate, dst, dstride, 1); break;
    }
}

// A grid of outputs U in [u0, u1), V in [v0, v1), stored compact at dst (rows v1 − v0
// apart): out(U, V) = init + Σ_t w[t] · rows0[t][U·rstride + V] (init = init_c, or the
// stored value with `accumulate`), then with `epilogue` act(· + res) (res laid out as
// dst). Four rows at a time: blocks of 32 outputs per row, blocks of 8 outputs × the four
// rows for the rest. A partial last block of 8 is stored whole when its overhang lands in
// rows still to be computed (it is computed first, and the next group of rows comes
// later), through a buffer otherwise. Every rows0[t] + U·rstride + V is readable up to
// XS − 1 floats past v1. T ≤ MAX_TAPS.
INLINE void dw_grid(const float *const *rows0, const float *w, int T, long rstride, int u0, int u1, long v0, long v1,
                    float init_c, int accumulate, float *dst, const float *res, int act, float slope, const int epilogue) {
    const long n = v1 - v0, wide = n / XB * XB, full = n / XS * XS;
    const float *rows[MAX_TAPS];
    for (int u = u0; u < u1; u += 4) {
        const int nr = u1 - u < 4 ? u1 - u : 4;
        for (int t = 0; t < T; t++) rows[t] = rows0[t] + (long)u * rstride + v0;
        float *o = dst + (long)(u - u0) * n;
        if (full < n) {
            // The overhang (XS − (n − full) floats past the last row's block) must land in
            // rows still to be computed: for rows narrower than XS it spans several of them.
            if (u + nr < u1 && !accumulate && (long)(u1 - u - nr) * n >= XS - (n - full)) {
                dw_block_rows_n(rows, w, T, full, rstride, init_c, 0, o + full, n, nr);
            } else {
                float buf[4 * XS];
                if (accumulate) for (int r = 0; r < nr; r++) for (long i = 0; i < n - full; i++) buf[r * XS + i] = o[r * n + full + i];
                dw_block_rows_n(rows, w, T, full, rstride, init_c, accumulate, buf, XS, nr);
                for (int r = 0; r < nr; r++) for (long i = 0; i < n - full; i++) o[r * n + full + i] = buf[r * XS + i];
            }
        }
        for (long x = wide; x < full; x += XS) dw_block_rows_n(rows, w, T, x, rstride, init_c, accumulate, o + x, n, nr);
        for (long x = 0; x < wide; x += XB)
            for (int r = 0; r < nr; r++) dw_block_wide(rows, w, T, x + r * rstride, init_c, accumulate, o + (long)r * n + x);
        if (epilogue) dw_epilogue(o, res ? res + (long)(u - u0) * n : NULL, nr * n, act, slope);
    }
}

// Output rows [oy0, oy1) of one output plane from a prepared input plane (rows ow apart).
INLINE void dw_plane_rows(const gdh_dw_geometry *g, const float *prepared, const float *w, float bias,
                          const float *res, int act, float slope, float *out, int oy0, int oy1, const int epilogue) {
    const int k = g->kernel, s = g->stride;
    const long ow = g->out_w, pitch = dw_pitch(g), phase = dw_phase_floats(g);
    const float *rows0[GDH_DW_MAX_KERNEL * GDH_DW_MAX_KERNEL];
    for (int ki = 0; ki < k; ki++)
        for (int kj = 0; kj < k; kj++) rows0[ki * k + kj] = prepared + (long)ki * pitch + (long)(kj % s) * phase + kj / s;
    dw_grid(rows0, w, k * k, (long)s * pitch, oy0, oy1, 0, ow, bias, 0, out + (long)oy0 * ow,
            res ? res + (long)oy0 * ow : NULL, act, slope, epilogue);
}

// MARK: - Bodies

INLINE void dw_forward_body(const gdh_dw_geometry *g, const float *x, const float *w, const float *bias, float *y,
                            long p_begin, long p_end, float *scratch) {
    const int C = g->channels, m = g->multiplier, kk = g->kernel * g->kernel;
    const long in_plane = (long)g->height * g->width, out_plane = (long)g->out_h * g->out_w;
    for (long p = p_begin; p < p_end; p++) {
        const int c = (int)(p % C);
        dw_prepare(x + p * in_plane, g->height, g->width, g->pad_top, g->pad_left, g->stride, scratch,
                   dw_phase_floats(g), dw_pitch(g), 0, dw_rows_needed(g));
        for (int j = 0; j < m; j++) {
            const int co = c * m + j;
            dw_plane_rows(g, scratch, w + (long)co * kk, bias ? bias[co] : 0.0f, NULL, GDH_ACT_NONE, 0,
                          y + (p * m + j) * out_plane, 0, g->out_h, 0);
        }
    }
}

INLINE void dw_infer_body(const gdh_dw_geometry *g, const float *x, const float *w, const float *bias,
                          const float *residual, int act, float slope, float *y, int c_begin, int c_end,
                          int row_begin, int row_end, float *scratch) {
    const int m = g->multiplier, kk = g->kernel * g->kernel, s = g->stride;
    const long in_plane = (long)g->height * g->width, out_plane = (long)g->out_h * g->out_w;
    if (row_begin < 0) row_begin = 0;
    if (row_end > g->out_h) row_end = g->out_h;
    if (row_begin >= row_end) return;
    // Only the padded rows these output rows read.
    const int r0 = row_begin * s, r1 = (row_end - 1) * s + g->kernel;
    for (int c = c_begin; c < c_end; c++) {
        dw_prepare(x + (long)c * in_plane, g->height, g->width, g->pad_top, g->pad_left, s, scratch,
                   dw_phase_floats(g), dw_pitch(g), r0, r1);
        for (int j = 0; j < m; j++) {
            const long co = (long)c * m + j;
            dw_plane_rows(g, scratch, w + co * kk, bias ? bias[co] : 0.0f, residual ? residual + co * out_plane : NULL,
                          act, slope, y + co * out_plane, row_begin, row_end, 1);
        }
    }
}

// The input gradient of one plane is the gradient of its padded copy, cropped:
//   dP[s·U + a][s·V + b] = Σ_{q,p} w[a + s·q][b + s·p] · dy[U − q][V − p]
// for each row phase a and column phase b (s = the stride): a correlation of the output
// gradient, zero-padded by L = (k − 1) / s before its rows and columns, with that phase's
// sub-kernel, on the same register blocks as the forward pass. Stride 1 writes the
// cropped grid straight into dx; larger strides compute a row phase's column phases and
// interleave their rows into dx.
INLINE void dw_input_grad_body(const gdh_dw_geometry *g, const float *dy, const float *w, float *dx,
                               long p_begin, long p_end, float *scratch) {
    const int C = g->channels, m = g->multiplier, k = g->kernel, s = g->stride, kk = k * k;
    const int H = g->height, W = g->width, oh = g->out_h, ow = g->out_w, pt = g->pad_top, pl = g->pad_left;
    const long out_plane = (long)oh * ow, in_plane = (long)H * W;
    const int L = dw_grad_left(g);
    const long gp = dw_grad_pitch(g), grows = dw_grad_rows(g), gplane = grows * gp;
    const int uh = (H + pt + s - 1) / s;
    const long vw = (W + pl + s - 1) / s;
    float *phases = scratch + (long)m * gplane;          // s grids of uh × vw (+ slack)
    float *row = phases + (long)s * (uh * vw + XS);       // one padded row of s · vw (+ slack)
    const float *rows0[GDH_DW_MAX_KERNEL * GDH_DW_MAX_KERNEL];
    float wts[GDH_DW_MAX_KERNEL * GDH_DW_MAX_KERNEL];
    for (long p = p_begin; p < p_end; p++) {
        const int c = (int)(p % C);
        for (int j = 0; j < m; j++) {
            const float *src = dy + (p * m + j) * out_plane;
            float *d = scratch + (long)j * gplane;
            memset(d, 0, sizeof(float) * (size_t)(L * gp));
            for (int u = 0; u < oh; u++) {
                float *r = d + (long)(L + u) * gp;
                for (int i = 0; i < L; i++) r[i] = 0.0f;
                memcpy(r + L, src + (long)u * ow, sizeof(float) * (size_t)ow);
                for (long i = L + ow; i < gp; i++) r[i] = 0.0f;
            }
            memset(d + (long)(L + oh) * gp, 0, sizeof(float) * (size_t)((grows - L - oh) * gp));
        }
        float *dxp = dx + p * in_plane;
        for (int a = 0; a < s; a++) {
            // Grid rows U with 0 ≤ s·U + a − pt < H.
            const int ua0 = pt - a > 0 ? (pt - a + s - 1) / s : 0;
            const int ua1 = H + pt - a > 0 ? (H + pt - a + s - 1) / s : 0;
            if (ua1 <= ua0) continue;
            for (int b = 0; b < s; b++) {
                // Stride 1: the cropped grid, into dx; otherwise all vw columns, into a phase grid.
                float *dst = s == 1 ? dxp : phases + (long)b * (uh * vw + XS);
                const long v0 = s == 1 ? pl : 0, v1 = s == 1 ? pl + W : vw;
                int any = 0;
                for (int j = 0; j < m; j++) {
                    const float *wc = w + (long)(c * m + j) * kk;
                    const float *d = scratch + (long)j * gplane;
                    int T = 0;
                    for (int q = 0; a + s * q < k; q++)
                        for (int pp = 0; b + s * pp < k; pp++) {
                            rows0[T] = d + (long)(L - q) * gp + (L - pp);
                            wts[T++] = wc[(a + s * q) * k + b + s * pp];
                        }
                    if (T == 0) continue;
                    dw_grid(rows0, wts, T, gp, ua0, ua1, v0, v1, 0.0f, any, dst, NULL, GDH_ACT_NONE, 0, 0);
                    any = 1;
                }
                if (!any) memset(dst, 0, sizeof(float) * (size_t)((ua1 - ua0) * (v1 - v0)));
            }
            if (s == 1) continue;
            for (int u = ua0; u < ua1; u++) {
                const long off = (long)(u - ua0) * vw;
                if (s == 2) {
                    const float *restrict e = phases + off, *restrict o = phases + (uh * vw + XS) + off;
                    // Eight of each phase at a time (reading up to 7 past the row: the slack).
                    for (long v = 0; v < vw; v += XS) {
                        const dw_v8 ev = *(const dw_v8 *)(e + v), ov = *(const dw_v8 *)(o + v);
                        *(dw_v8 *)(row + 2 * v) = __builtin_shufflevector(ev, ov, 0, 8, 1, 9, 2, 10, 3, 11);
                        *(dw_v8 *)(row + 2 * v + XS) = __builtin_shufflevector(ev, ov, 4, 12, 5, 13, 6, 14, 7, 15);
                    }
                } else {
                    for (int b = 0; b < s; b++) {
                        const float *ph = phases + (long)b * (uh * vw + XS) + off;
                        for (long v = 0; v < vw; v++) row[v * s + b] = ph[v];
                    }
                }
                memcpy(dxp + (long)(s * u + a - pt) * W, row + pl, sizeof(float) * (size_t)W);
            }
        }
    }
}

// Per tap kj < K of kernel row ki: Σ_y Σ_x g[y][x] · phase row (y·s + ki) at column x + kj/s,
// in eight lanes (a vector type: left to itself the vectoriser picks four for this loop).
INLINE void dw_wgrad_row(const float *prepared, long phase, long pitch, int s, int ki, const float *gpad, long gpitch,
                         int oh, long ow8, const int K, double *sums) {
    dw_v8 acc[GDH_DW_MAX_KERNEL];
    for (int t = 0; t < K; t++) acc[t] = (dw_v8){0, 0, 0, 0, 0, 0, 0, 0};
    for (int y = 0; y < oh; y++) {
        const float *gr = gpad + (long)y * gpitch;
        const float *base = prepared + (long)(y * s + ki) * pitch;
        const float *pr[GDH_DW_MAX_KERNEL];
        for (int t = 0; t < K; t++) pr[t] = base + (long)(t % s) * phase + t / s;
        for (long x0 = 0; x0 < ow8; x0 += XS) {
            const dw_v8 gv = *(const dw_v8 *)(gr + x0);
            for (int t = 0; t < K; t++) acc[t] += gv * *(const dw_v8 *)(pr[t] + x0);
        }
    }
    for (int t = 0; t < K; t++) {
        const dw_v8 v = acc[t];
        const float a = (v[0] + v[4]) + (v[1] + v[5]);
        const float b = (v[2] + v[6]) + (v[3] + v[7]);
        sums[t] += (double)(a + b);
    }
}

INLINE void dw_weight_grad_body(const gdh_dw_geometry *g, int samples, const float *x, const float *dy, float *dw,
                                int c_begin, int c_end, float *scratch) {
    const int C = g->channels, m = g->multiplier, k = g->kernel, s = g->stride, kk = k * k;
    const int oh = g->out_h, ow = g->out_w;
    const long in_plane = (long)g->height * g->width, out_plane = (long)oh * ow;
    const long pitch = dw_pitch(g), phase = dw_phase_floats(g), gpitch = dw_wgrad_pitch(g);
    float *gpad = scratch + dw_prepared_floats(g);
    for (int c = c_begin; c < c_end; c++) {
        for (int j = 0; j < m; j++) {
            const long co = (long)c * m + j;
            double sums[GDH_DW_MAX_KERNEL * GDH_DW_MAX_KERNEL];
            for (int t = 0; t < kk; t++) sums[t] = 0;
            for (int n = 0; n < samples; n++) {
                dw_prepare(x + ((long)n * C + c) * in_plane, g->height, g->width, g->pad_top, g->pad_left, s, scratch,
                           phase, pitch, 0, dw_rows_needed(g));
                const float *src = dy + ((long)n * C * m + co) * out_plane;
                for (int y = 0; y < oh; y++) {
                    float *row = gpad + (long)y * gpitch;
                    memcpy(row, src + (long)y * ow, sizeof(float) * (size_t)ow);
                    for (long i = ow; i < gpitch; i++) row[i] = 0.0f;
                }
                for (int ki = 0; ki < k; ki++) {
                    double *st = sums + ki * k;
                    switch (k) {
                    case 1: dw_wgrad_row(scratch, phase, pitch, s, ki, gpad, gpitch, oh, gpitch, 1, st); break;
                    case 2: dw_wgrad_row(scratch, phase, pitch, s, ki, gpad, gpitch, oh, gpitch, 2, st); break;
                    case 3: dw_wgrad_row(scratch, phase, pitch, s, ki, gpad, gpitch, oh, gpitch, 3, st); break;
                    case 4: dw_wgrad_row(scratch, phase, pitch, s, ki, gpad, gpitch, oh, gpitch, 4, st); break;
                    case 5: dw_wgrad_row(scratch, phase, pitch, s, ki, gpad, gpitch, oh, gpitch, 5, st); break;
                    case 6: dw_wgrad_row(scratch, phase, pitch, s, ki, gpad, gpitch, oh, gpitch, 6, st); break;
                    case 7: dw_wgrad_row(scratch, phase, pitch, s, ki, gpad, gpitch, oh, gpitch, 7, st); break;
                    default: dw_wgrad_row(scratch, phase, pitch, s, ki, gpad, gpitch, oh, gpitch, k, st); break;
                    }
                }
            }
            for (int t = 0; t < kk; t++) dw[co * kk + t] += (float)sums[t];
        }
    }
}

// MARK: - Channel lanes (inference, small planes)

// Eight channels side by side: the padded input of a block of eight channels as
// [rows_needed][cols_needed][8], the weights packed by the caller as [block][k·k][8], so
// that every tap is one vector multiply-add of eight channels' inputs by their eight
// weights; four outputs of a row at once share each weight load. A plane of a few
// pixels (EfficientNet's last stages: 1152 channels of 4 × 4) then costs a few vector
// operations per output instead of a row loop per channel. The result goes through
// [out_h·out_w][8] and is transposed back to planes, with the epilogue per plane.

#define DL 8
INLINE long dl_in_floats(const gdh_dw_geometry *g) { return (long)dw_rows_needed(g) * dw_cols_needed(g) * DL; }

long gdh_depthwise_lanes_scratch_floats(const gdh_dw_geometry *g) {
    return ((dl_in_floats(g) + (long)g->out_h * g->out_w * DL + 64 + 15) & ~15L);
}

INLINE void dl_block(const float *in, long cols, const dw_v8 *wk, int k, int s, int oy, int ox, dw_v8 b, dw_v8 *out,
                     const int NB) {
    dw_v8 acc[4];
    for (int j = 0; j < NB; j++) acc[j] = b;
    for (int ki = 0; ki < k; ki++) {
        const float *row = in + ((long)(oy * s + ki) * cols + (long)ox * s) * DL;
        for (int kj = 0; kj < k; kj++) {
            const dw_v8 wv = wk[ki * k + kj];
            for (int j = 0; j < NB; j++) acc[j] += *(const dw_v8 *)(row + ((long)j * s + kj) * DL) * wv;
        }
    }
    for (int j = 0; j < NB; j++) out[j] = acc[j];
}

INLINE void dw_lanes_body(const gdh_dw_geometry *g, const float *x, const float *w8, const float *b8,
                          const float *residual, int act, float slope, float *y, int blk_begin, int blk_end,
                          float *scratch) {
    const int C = g->channels, H = g->height, W = g->width, k = g->kernel, s = g->stride;
    const int pt = g->pad_top, pl = g->pad_left, oh = g->out_h, ow = g->out_w;
    const long rows = dw_rows_needed(g), cols = dw_cols_needed(g), plane = (long)H * W, oplane = (long)oh * ow;
    float *in = scratch, *out = scratch + dl_in_floats(g);
    const int kk = k * k;
    for (int blk = blk_begin; blk < blk_end; blk++) {
        const int c0 = blk * DL, nc = C - c0 < DL ? C - c0 : DL;
        // Zero the border (every padded row outside the image, the side columns of the others).
        for (long r = 0; r < rows; r++) {
            const long iy = r - pt;
            float *pr = in + r * cols * DL;
            if (iy < 0 || iy >= H) { memset(pr, 0, sizeof(float) * (size_t)(cols * DL)); continue; }
            const long lead = pl < cols ? pl : cols;
            memset(pr, 0, sizeof(float) * (size_t)(lead * DL));
            const long tail0 = pl + W < cols ? pl + W : cols;
            if (tail0 < cols) memset(pr + tail0 * DL, 0, sizeof(float) * (size_t)((cols - tail0) * DL));
            if (nc < DL) for (long j = lead; j < tail0; j++) for (int c = nc; c < DL; c++) pr[j * DL + c] = 0.0f;
        }
        // Interleave the block's planes: 8 × 8 tiles (channels × pixels of a row) that the
        // compiler transposes in registers, then the row's last pixels one by one.
        {
            const float *src = x + (long)c0 * plane;
            const long n = pl + W < cols ? W : cols - pl;
            for (long iy = 0; iy < H; iy++) {
                const long r = iy + pt;
                if (r >= rows) break;
                float *pr = in + (r * cols + pl) * DL;
                const float *sr = src + iy * W;
                long ix = 0;
                if (nc == DL) {
                    for (; ix + 8 <= n; ix += 8) {
                        dw_v8 r[8], o[8];
                        for (int c = 0; c < DL; c++) r[c] = *(const dw_v8 *)(sr + c * plane + ix);
                        gdh_transpose8(r, o);
                        for (int q = 0; q < 8; q++) *(dw_v8 *)(pr + (ix + q) * DL) = o[q];
                    }
                }
                for (; ix < n; ix++) for (int c = 0; c < nc; c++) pr[ix * DL + c] = sr[c * plane + ix];
            }
        }
        const dw_v8 *wk = (const dw_v8 *)(w8 + (long)blk * kk * DL);
        const dw_v8 bv = b8 ? *(const dw_v8 *)(b8 + (long)blk * DL) : (dw_v8){0, 0, 0, 0, 0, 0, 0, 0};
        dw_v8 *ov = (dw_v8 *)out;
        for (int oy = 0; oy < oh; oy++) {
            int ox = 0;
            for (; ox + 4 <= ow; ox += 4) dl_block(in, cols, wk, k, s, oy, ox, bv, ov + (long)oy * ow + ox, 4);
            for (; ox < ow; ox++) dl_block(in, cols, wk, k, s, oy, ox, bv, ov + (long)oy * ow + ox, 1);
        }
        {
            float *dst = y + (long)c0 * oplane;
            long p = 0;
            if (nc == DL) {
                for (; p + 8 <= oplane; p += 8) {
                    dw_v8 r[8], o[8];
                    for (int q = 0; q < 8; q++) r[q] = *(const dw_v8 *)(out + (p + q) * DL);
                    gdh_transpose8(r, o);
                    for (int c = 0; c < DL; c++) *(dw_v8 *)(dst + c * oplane + p) = o[c];
                }
            }
            for (; p < oplane; p++) for (int c = 0; c < nc; c++) dst[c * oplane + p] = out[p * DL + c];
            for (int c = 0; c < nc; c++)
                dw_epilogue(dst + (long)c * oplane, residual ? residual + (long)(c0 + c) * oplane : NULL, oplane, act, slope);
        }
    }
}

// MARK: - Levels

#define DW_FORWARD_ARGS const gdh_dw_geometry *g, const float *x, const float *w, const float *bias, float *y, \
    long p_begin, long p_end, float *scratch
#define DW_INPUT_GRAD_ARGS const gdh_dw_geometry *g, const float *dy, const float *w, float *dx, long p_begin, \
    long p_end, float *scratch
#define DW_WEIGHT_GRAD_ARGS const gdh_dw_geometry *g, int samples, const float *x, const float *dy, float *dw, \
    int c_begin, int c_end, float *scratch
#define DW_INFER_ARGS const gdh_dw_geometry *g, const float *x, const float *w, const float *bias, \
    const float *residual, int act, float slope, float *y, int c_begin, int c_end, int row_begin, int row_end, \
    float *scratch

#define DW_LANES_ARGS const gdh_dw_geometry *g, const float *x, const float *w8, const float *b8, \
    const float *residual, int act, float slope, float *y, int blk_begin, int blk_end, float *scratch

#define DW_LEVEL(SUFFIX, ATTR) \
    ATTR static void dw_lanes_##SUFFIX(DW_LANES_ARGS) { \
        dw_lanes_body(g, x, w8, b8, residual, act, slope, y, blk_begin, blk_end, scratch); } \
    ATTR static void dw_forward_##SUFFIX(DW_FORWARD_ARGS) { dw_forward_body(g, x, w, bias, y, p_begin, p_end, scratch); } \
    ATTR static void dw_input_grad_##SUFFIX(DW_INPUT_GRAD_ARGS) { dw_input_grad_body(g, dy, w, dx, p_begin, p_end, scratch); } \
    ATTR static void dw_weight_grad_##SUFFIX(DW_WEIGHT_GRAD_ARGS) { \
        dw_weight_grad_body(g, samples, x, dy, dw, c_begin, c_end, scratch); } \
    ATTR static void dw_infer_##SUFFIX(DW_INFER_ARGS) { \
        dw_infer_body(g, x, w, bias, residual, act, slope, y, c_begin, c_end, row_begin, row_end, scratch); }

DW_LEVEL(c, )
#if defined(__x86_64__)
DW_LEVEL(avx2, __attribute__((target("avx2,fma"))))
DW_LEVEL(avx512, __attribute__((target("avx512f,avx2,fma"))))
#endif
#define DW_DISPATCH GDH_LEVEL_DISPATCH

void gdh_depthwise_forward(const gdh_dw_geometry *g, const float *x, const float *w, const float *bias, float *y,
                           long p_begin, long p_end, float *scratch, int level) {
    if (g->kernel > GDH_DW_MAX_KERNEL || g->out_h <= 0 || g->out_w <= 0) return;
    DW_DISPATCH(dw_forward, g, x, w, bias, y, p_begin, p_end, scratch);
}

void gdh_depthwise_input_grad(const gdh_dw_geometry *g, const float *dy, const float *w, float *dx,
                              long p_begin, long p_end, float *scratch, int level) {
    if (g->kernel > GDH_DW_MAX_KERNEL || g->out_h <= 0 || g->out_w <= 0) return;
    DW_DISPATCH(dw_input_grad, g, dy, w, dx, p_begin, p_end, scratch);
}

void gdh_depthwise_weight_grad(const gdh_dw_geometry *g, int samples, const float *x, const float *dy, float *dw,
                               int c_begin, int c_end, float *scratch, int level) {
    if (g->kernel > GDH_DW_MAX_KERNEL || g->out_h <= 0 || g->out_w <= 0) return;
    DW_DISPATCH(dw_weight_grad, g, samples, x, dy, dw, c_begin, c_end, scratch);
}

void gdh_depthwise_infer(const gdh_dw_geometry *g, const float *x, const float *w, const float *bias,
                         const float *residual, int act, float slope, float *y, int c_begin, int c_end,
                         int row_begin, int row_end, float *scratch, int level) {
    if (g->kernel > GDH_DW_MAX_KERNEL || g->out_h <= 0 || g->out_w <= 0) return;
    DW_DISPATCH(dw_infer, g, x, w, bias, residual, act, slope, y, c_begin, c_end, row_begin, row_end, scratch);
}

void gdh_depthwise_infer_lanes(const gdh_dw_geometry *g, const float *x, const float *w8, const float *b8,
                               const float *residual, int act, float slope, float *y, int blk_begin, int blk_end,
                               float *scratch, int level) {
    if (g->kernel > GDH_DW_MAX_KERNEL || g->out_h <= 0 || g->out_w <= 0 || g->multiplier != 1) return;
    DW_DISPATCH(dw_lanes, g, x, w8, b8, residual, act, slope, y, blk_begin, blk_end, scratch);
}
