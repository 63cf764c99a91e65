// Kernels of the training layers: im2col / col2im for the GEMM convolutions, the
// gather and scatter of sample groups, and element-wise loops (activations, BatchNorm,
// Adam) without the bounds and uniqueness checks of Swift arrays. Loop orders (and so
// the sums) follow the Swift code they replace.
#include "neural_kernels.h"
#include "kernel_math.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__SSE2__)
#include <immintrin.h>
#define GDH_TRAIN_SSE 1
#else
#define GDH_TRAIN_SSE 0
#endif

static inline int reflect_at(int i, int n) { return i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i); }

// Both work through a padded copy of one channel plane ((height + 2·pad) × (width + 2·pad),
// zeros or the reflection): every column row is then a plain (stride 1) or every-other
// (stride 2) copy of a padded row, without border cases in the inner loops, whose short
// rows (8 to 64 values) are copied with SSE rather than by calls to memcpy.
#define PLANE_STACK 8192
// The SSE stride-2 loops read (and add zeros) a few floats past a row's last entry.
#define PLANE_SLACK 16

static inline void copy_row(float *restrict d, const float *restrict s, int n) {
    int i = 0;
#if GDH_TRAIN_SSE
    for (; i + 8 <= n; i += 8) {
        _mm_storeu_ps(d + i, _mm_loadu_ps(s + i));
        _mm_storeu_ps(d + i + 4, _mm_loadu_ps(s + i + 4));
    }
    if (i + 4 <= n) { _mm_storeu_ps(d + i, _mm_loadu_ps(s + i)); i += 4; }
    if (i < n && n >= 4) { _mm_storeu_ps(d + n - 4, _mm_loadu_ps(s + n - 4)); return; }
#endif
    for (; i < n; i++) d[i] = s[i];
}

static inline void copy_row2(float *restrict d, const float *restrict s, int n) {
    int i = 0;
#if GDH_TRAIN_SSE
    for (; i + 4 <= n; i += 4) {
        const __m128 a = _mm_loadu_ps(s + 2 * i), b = _mm_loadu_ps(s + 2 * i + 4);
        _mm_storeu_ps(d + i, _mm_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)));
    }
#endif
    for (; i < n; i++) d[i] = s[2 * i];
}

static inline void add_row(float *restrict d, const float *restrict s, int n) {
    int i = 0;
#if GDH_TRAIN_SSE
    for (; i + 8 <= n; i += 8) {
        _mm_storeu_ps(d + i, _mm_add_ps(_mm_loadu_ps(d + i), _mm_loadu_ps(s + i)));
        _mm_storeu_ps(d + i + 4, _mm_add_ps(_mm_loadu_ps(d + i + 4), _mm_loadu_ps(s + i + 4)));
    }
    if (i + 4 <= n) { _mm_storeu_ps(d + i, _mm_add_ps(_mm_loadu_ps(d + i), _mm_loadu_ps(s + i))); i += 4; }
#endif
    for (; i < n; i++) d[i] += s[i];
}

static inline void add_row2(float *restrict d, const float *restrict s, int n) {
    int i = 0;
#if GDH_TRAIN_SSE
    const __m128 z = _mm_setzero_ps();
    for (; i + 4 <= n; i += 4) {
        const __m128 v = _mm_loadu_ps(s + i);
        _mm_storeu_ps(d + 2 * i, _mm_add_ps(_mm_loadu_ps(d + 2 * i), _mm_unpacklo_ps(v, z)));
        _mm_storeu_ps(d + 2 * i + 4, _mm_add_ps(_mm_loadu_ps(d + 2 * i + 4), _mm_unpackhi_ps(v, z)));
    }
#endif
    for (; i < n; i++) d[2 * i] += s[i];
}

// Adds the padded plane src (ph × pw) into dst (height × width).
static void unpad_plane_add(const float *src, int height, int width, int pad, int reflect, float *dst, int ph, int pw) {
    for (int y = 0; y < ph; y++) {
        int iy = y - pad;
        if (!reflect && (iy < 0 || iy >= height)) continue;
        if (reflect) iy = reflect_at(iy, height);
        const float *s = src + (long)y * pw;
        float *d = dst + (long)iy * width;
        if (reflect) for (int x = 0; x < pad; x++) d[reflect_at(x - pad, width)] += s[x];
        add_row(d, s + pad, width);
        if (reflect) for (int x = pad + width; x < pw; x++) d[reflect_at(x - pad, width)] += s[x];
    }
}

void gdh_im2col(const float *img, int channels, int height, int width, int kh, int kw, int stride, int pad,
                int reflect, int grid_h, int grid_w, int row_begin, int row_end, float *col, long ldcol,
                int c_begin, int c_end) {
    (void)channels;
    // Only the padded rows the grid rows read.
    const int y_lo = row_begin * stride, y_hi = (row_end - 1) * stride + kh;
    const int ph = y_hi - y_lo, pw = width + 2 * pad;
    float stack_plane[PLANE_STACK];
    float *padded = (long)ph * pw + PLANE_SLACK <= PLANE_STACK ? stack_plane : malloc(sizeof(float) * ((size_t)ph * pw + PLANE_SLACK));
    const int rows = row_end - row_begin;
    for (int c = c_begin; c < c_end; c++) {
        const float *plane = img + (long)c * height * width;
        if (pad == 0 && stride == 1 && pw == width) {
            // No padding: read the image rows in place.
            for (int ki = 0; ki < kh; ki++)
                for (int kj = 0; kj < kw; kj++) {
                    float *dst = col + ((long)(c * kh + ki) * kw + kj) * ldcol;
                    const float *src = plane + (long)(row_begin + ki) * width + kj;
                    for (int r = 0; r < rows; r++) copy_row(dst + (long)r * grid_w, src + (long)r * width, grid_w);
                }
            continue;
        }
        // The padded rows y_lo ..< y_hi of the plane.
        for (int y = 0; y < ph; y++) {
            float *d = padded + (long)y * pw;
            int iy = y + y_lo - pad;
            if (!reflect && (iy < 0 || iy >= height)) { memset(d, 0, sizeof(float) * (size_t)pw); continue; }
            if (reflect) iy = reflect_at(iy, height);
            const float *s = plane + (long)iy * width;
            for (int x = 0; x < pad; x++) d[x] = reflect ? s[reflect_at(x - pad, width)] : 0;
            memcpy(d + pad, s, sizeof(float) * (size_t)width);
            for (int x = pad + width; x < pw; x++) d[x] = reflect ? s[reflect_at(x - pad, width)] : 0;
        }
        for (int ki = 0; ki < kh; ki++)
            for (int kj = 0; kj < kw; kj++) {
                float *dst = col + ((long)(c * kh + ki) * kw + kj) * ldcol;
                const float *src = padded + (long)ki * pw + kj;
                const long step = (long)stride * pw;
                if (stride == 1) {
                    for (int r = 0; r < rows; r++) copy_row(dst + (long)r * grid_w, src + r * step, grid_w);
                } else if (stride == 2) {
                    for (int r = 0; r < rows; r++) copy_row2(dst + (long)r * grid_w, src + r * step, grid_w);
                } else {
                    for (int r = 0; r < rows; r++) {
                        float *d = dst + (long)r * grid_w;
                        const float *s = src + r * step;
                        for (int ox = 0; ox < grid_w; ox++) d[ox] = s[ox * stride];
                    }
                }
            }
    }
    if (padded != stack_plane) free(padded);
}

void gdh_col2im(const float *col, long ldcol, int channels, int height, int width, int kh, int kw, int stride,
                int pad, int reflect, int grid_h, int grid_w, float *img, int c_begin, int c_end) {
    (void)channels;
    const int ph = (grid_h - 1) * stride + kh, pw = width + 2 * pad;
    const int full_h = height + 2 * pad;
    float stack_plane[PLANE_STACK];
    float *padded = (long)full_h * pw + PLANE_SLACK <= PLANE_STACK ? stack_plane : malloc(sizeof(float) * ((size_t)full_h * pw + PLANE_SLACK));
    for (int c = c_begin; c < c_end; c++) {
        float *plane = img + (long)c * height * width;
        if (pad == 0 && stride == 1 && pw == width) {
            for (int ki = 0; ki < kh; ki++)
                for (int kj = 0; kj < kw; kj++) {
                    const float *src = col + ((long)(c * kh + ki) * kw + kj) * ldcol;
                    float *dst = plane + (long)ki * width + kj;
                    for (int r = 0; r < grid_h; r++) add_row(dst + (long)r * width, src + (long)r * grid_w, grid_w);
                }
            continue;
        }
        memset(padded, 0, sizeof(float) * ((size_t)full_h * pw + PLANE_SLACK));
        for (int ki = 0; ki < kh; ki++)
            for (int kj = 0; kj < kw; kj++) {
                const float *src = col + ((long)(c * kh + ki) * kw + kj) * ldcol;
                float *dst = padded + (long)ki * pw + kj;
                const long step = (long)stride * pw;
                if (stride == 1) {
                    for (int r = 0; r < grid_h; r++) add_row(dst + r * step, src + (long)r * grid_w, grid_w);
                } else if (stride == 2) {
                    for (int r = 0; r < grid_h; r++) add_row2(dst + r * step, src + (long)r * grid_w, grid_w);
                } else {
                    for (int r = 0; r < grid_h; r++) {
                        float *d = dst + r * step;
                        const float *s = src + (long)r * grid_w;
                        for (int ox = 0; ox < grid_w; ox++) d[ox * stride] += s[ox];
                    }
                }
            }
        unpad_plane_add(padded, height, width, pad, reflect, plane, ph < full_h ? ph : full_h, pw);
    }
    if (padded != stack_plane) free(padded);
}

void gdh_group_gather(const float *src, int samples, int channels, long plane, float *dst) {
    const long ld = (long)samples * plane;
    for (int s = 0; s < samples; s++)
        for (int c = 0; c < channels; c++)
            memcpy(dst + c * ld + s * plane, src + ((long)s * channels + c) * plane, sizeof(float) * (size_t)plane);
}

void gdh_group_scatter(const float *src, int samples, int channels, long plane, const float *bias, float *dst) {
    const long ld = (long)samples * plane;
    for (int s = 0; s < samples; s++) {
        for (int c = 0; c < channels; c++) {
            const float *restrict a = src + c * ld + s * plane;
            float *restrict d = dst + ((long)s * channels + c) * plane;
            if (bias) {
                const float b = bias[c];
                for (long i = 0; i < plane; i++) d[i] = a[i] + b;
            } else {
                memcpy(d, a, sizeof(float) * (size_t)plane);
            }
        }
    }
}

void gdh_add_channel_bias(float *x, int samples, int channels, long plane, const float *bias) {
    for (int s = 0; s < samples; s++)
        for (int c = 0; c < channels; c++) {
            float *restrict d = x + ((long)s * channels + c) * plane;
            const float b = bias[c];
            for (long i = 0; i < plane; i++) d[i] += b;
        }
}

void gdh_channel_sums(const float *g, int samples, int channels, long plane, float *sums) {
    for (int s = 0; s < samples; s++)
        for (int c = 0; c < channels; c++) {
            const float *p = g + ((long)s * channels + c) * plane;
            float acc = 0;
            for (long i = 0; i < plane; i++) acc += p[i];
            sums[c] += acc;
        }
}

// Sums of a plane in two SSE accumulators (8 lanes), returned as a double: the element
// loops of BatchNorm are otherwise sequential float (or double) additions that do not
// vectorise.
#if GDH_TRAIN_SSE
static inline double lanes_sum(__m128 a, __m128 b) {
    float lanes[4];
    _mm_storeu_ps(lanes, _mm_add_ps(a, b));
    return (double)lanes[0] + lanes[1] + lanes[2] + lanes[3];
}
#endif

static inline double plane_sum(const float *p, long n) {
    long i = 0;
    double tail = 0;
#if GDH_TRAIN_SSE
    __m128 a = _mm_setzero_ps(), b = _mm_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        a = _mm_add_ps(a, _mm_loadu_ps(p + i));
        b = _mm_add_ps(b, _mm_loadu_ps(p + i + 4));
    }
    tail = lanes_sum(a, b);
#endif
    for (; i < n; i++) tail += p[i];
    return tail;
}

// Σ (q[i] − qmu)·(p[i] − mu), likewise: the centred sum of squares with q = p, qmu = mu.
static inline double plane_centered_dot(const float *q, float qmu, const float *p, long n, float mu) {
    long i = 0;
    double tail = 0;
#if GDH_TRAIN_SSE
    const __m128 m = _mm_set1_ps(mu), qm = _mm_set1_ps(qmu);
    __m128 a = _mm_setzero_ps(), b = _mm_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        a = _mm_add_ps(a, _mm_mul_ps(_mm_sub_ps(_mm_loadu_ps(q + i), qm), _mm_sub_ps(_mm_loadu_ps(p + i), m)));
        b = _mm_add_ps(b, _mm_mul_ps(_mm_sub_ps(_mm_loadu_ps(q + i + 4), qm), _mm_sub_ps(_mm_loadu_ps(p + i + 4), m)));
    }
    tail = lanes_sum(a, b);
#endif
    for (; i < n; i++) tail += ((double)q[i] - qmu) * ((double)p[i] - mu);
    return tail;
}

__attribute__((target_clones("avx2", "default")))
void gdh_activation_forward(const float *restrict x, float *restrict y, long n, int act, float slope) {
    switch (act) {
    case GDH_ACT_RELU:
        for (long i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : 0;
        break;
    case GDH_ACT_LEAKY:
        for (long i = 0; i < n; i++) y[i] = x[i] < 0 ? x[i] * slope : x[i];
        break;
    case GDH_ACT_RELU6:
        for (long i = 0; i < n; i++) { const float v = x[i] > 0 ? x[i] : 0; y[i] = v < 6.0f ? v : 6.0f; }
        break;
    case GDH_ACT_TANH:
        for (long i = 0; i < n; i++) y[i] = tanh_approx(x[i]);
        break;
    case GDH_ACT_SIGMOID:
        for (long i = 0; i < n; i++) y[i] = 1.0f / (1.0f + exp_approx(-x[i]));
        break;
    default:
        memcpy(y, x, sizeof(float) * (size_t)n);
    }
}

__attribute__((target_clones("avx2", "default")))
void gdh_activation_backward(const float *restrict g, const float *restrict kept, float *restrict dx, long n,
                             int act, float slope) {
    // Every load unconditional (a load under the condition keeps the loop scalar).
    switch (act) {
    case GDH_ACT_RELU:
        for (long i = 0; i < n; i++) { const float v = g[i]; dx[i] = kept[i] > 0 ? v : 0.0f; }
        break;
    case GDH_ACT_LEAKY:
        for (long i = 0; i < n; i++) { const float v = g[i]; dx[i] = kept[i] > 0 ? v : v * slope; }
        break;
    case GDH_ACT_RELU6:
        // hardtanh_backward: the gradient where 0 < x < 6 strictly.
        for (long i = 0; i < n; i++) { const float v = g[i], k = kept[i]; dx[i] = (k > 0.0f && k < 6.0f) ? v : 0.0f; }
        break;
    case GDH_ACT_TANH:
        for (long i = 0; i < n; i++) { const float y = kept[i]; dx[i] = g[i] * (1 - y * y); }
        break;
    case GDH_ACT_SIGMOID:
        for (long i = 0; i < n; i++) { const float y = kept[i]; dx[i] = g[i] * (y * (1 - y)); }
        break;
    default:
        memcpy(dx, g, sizeof(float) * (size_t)n);
    }
}

void gdh_batchnorm_stats(const float *x, int samples, int channels, long plane, float *mean, float *var,
                         float *unbiased, int c_begin, int c_end) {
    const long m = (long)samples * plane;
    for (int c = c_begin; c < c_end; c++) {
        double s = 0;
        for (int n = 0; n < samples; n++) s += plane_sum(x + ((long)n * channels + c) * plane, plane);
        const double mu = s / (double)m;
        double v = 0;
        for (int n = 0; n < samples; n++) { const float *p = x + ((long)n * channels + c) * plane; v += plane_centered_dot(p, (float)mu, p, plane, (float)mu); }
        mean[c] = (float)mu;
        var[c] = (float)(v / (double)m);
        unbiased[c] = m > 1 ? (float)(v / (double)(m - 1)) : var[c];
    }
}

void gdh_channel_affine(const float *x, int samples, int channels, long plane, const float *scale,
                        const float *shift, float *y, int c_begin, int c_end) {
    for (int n = 0; n < samples; n++)
        for (int c = c_begin; c < c_end; c++) {
            const long b = ((long)n * channels + c) * plane;
            const float a = scale[c], t = shift[c];
            const float *restrict xp = x + b;
            float *restrict yp = y + b;
            for (long i = 0; i < plane; i++) yp[i] = xp[i] * a + t;
        }
}

void gdh_batchnorm_backward(const float *x, const float *g, int samples, int channels, long plane,
                            const float *mean, const float *inv_std, const float *gamma, int batch_stats,
                            float *dgamma, float *dbeta, float *dx, int c_begin, int c_end) {
    const float m = (float)((long)samples * plane);
    for (int c = c_begin; c < c_end; c++) {
        const float mu = mean[c], istd = inv_std[c];
        double sg = 0, sgx = 0;
        for (int n = 0; n < samples; n++) {
            const long b = ((long)n * channels + c) * plane;
            sg += plane_sum(g + b, plane);
            sgx += plane_centered_dot(g + b, 0, x + b, plane, mu);
        }
        const float sum_g = (float)sg, sum_gx = (float)(sgx * istd);
        dgamma[c] += sum_gx;
        dbeta[c] += sum_g;
        const float k = gamma[c] * istd / m;
        const float gi = gamma[c] * istd;
        for (int n = 0; n < samples; n++) {
            const long b = ((long)n * channels + c) * plane;
            const float *restrict xp = x + b, *restrict gp = g + b;
            float *restrict dp = dx + b;
            if (batch_stats) {
                for (long i = 0; i < plane; i++) {
                    const float xhat = (xp[i] - mu) * istd;
                    dp[i] = k * (m * gp[i] - sum_g - xhat * sum_gx);
                }
            } else {
                for (long i = 0; i < plane; i++) dp[i] = gi * gp[i];
            }
        }
    }
}

void gdh_adam_step(float *p, const float *g, float *m, float *v, long n, float beta1, float beta2,
                   float bc1, float bc2, float lr, float eps, float weight_decay) {
    for (long i = 0; i < n; i++) {
        const float gi = g[i] + weight_decay * p[i];
        m[i] = beta1 * m[i] + (1 - beta1) * gi;
        v[i] = beta2 * v[i] + (1 - beta2) * gi * gi;
        const float denom = sqrtf(v[i] / bc2) + eps;
        p[i] -= lr * (m[i] / bc1) / denom;
    }
}

void gdh_reflection_pad_backward(const float *g, int planes, int height, int width, int pad, float *dx) {
    const int gh = height + 2 * pad, gw = width + 2 * pad;
    memset(dx, 0, sizeof(float) * (size_t)planes * height * width);
    for (int p = 0; p < planes; p++) {
        const float *src = g + (long)p * gh * gw;
        float *dst = dx + (long)p * height * width;
        for (int oy = 0; oy < gh; oy++) {
            float *restrict d = dst + (long)reflect_at(oy - pad, height) * width;
            const float *restrict s = src + (long)oy * gw;
            for (int ox = 0; ox < pad; ox++) d[reflect_at(ox - pad, width)] += s[ox];
            for (int ox = 0; ox < width; ox++) d[ox] += s[ox + pad];
            for (int ox = pad + width; ox < gw; ox++) d[reflect_at(ox - pad, width)] += s[ox];
        }
    }
}

// MARK: - Direct convolution gradients

// dw[o][c][t] += Σ_y Σ_x g[o][y][x] · in[c][tap_off[t] + y·pitch + x], scalar.
static void weight_grad_scalar(const float *in, long in_cstride, int channels_in, const long *tap_off, int taps,
                               const float *g, long g_cstride, int channels_out, int rows, int width, long pitch,
                               float *dw, int c_begin, int c_end) {
    for (int c = c_begin; c < c_end; c++)
        for (int o = 0; o < channels_out; o++)
            for (int t = 0; t < taps; t++) {
                const float *src = in + (long)c * in_cstride + tap_off[t];
                const float *go = g + (long)o * g_cstride;
                float acc = 0;
                for (int y = 0; y < rows; y++)
                    for (int x = 0; x < width; x++) acc += go[(long)y * width + x] * src[(long)y * pitch + x];
                dw[((long)o * channels_in + c) * taps + t] += acc;
            }
}

#if defined(__x86_64__)
static inline __attribute__((always_inline, target("avx2,fma"))) float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// One block of OB output channels × TB taps of one input channel: OB·TB vector sums over
// every output position, 8 at a time (the last 8 of a row masked).
static inline __attribute__((always_inline, target("avx2,fma")))
void weight_grad_block256(const float *src, const long *off, const float *g, long g_cstride, int rows, int width,
                          long pitch, float *dw, long dw_ostride, const int OB, const int TB) {
    __m256 acc[4][3];
    for (int j = 0; j < OB; j++)
        for (int t = 0; t < TB; t++) acc[j][t] = _mm256_setzero_ps();
    const int full = width & ~7, rest = width - full;
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(rest), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int y = 0; y < rows; y++) {
        const float *gy = g + (long)y * width;
        const float *sy = src + (long)y * pitch;
        for (int x = 0; x < full; x += 8) {
            __m256 gv[4], sv[3];
            for (int j = 0; j < OB; j++) gv[j] = _mm256_loadu_ps(gy + (long)j * g_cstride + x);
            for (int t = 0; t < TB; t++) sv[t] = _mm256_loadu_ps(sy + off[t] + x);
            for (int j = 0; j < OB; j++)
                for (int t = 0; t < TB; t++) acc[j][t] = _mm256_fmadd_ps(gv[j], sv[t], acc[j][t]);
        }
        if (rest) {
            __m256 gv[4], sv[3];
            for (int j = 0; j < OB; j++) gv[j] = _mm256_maskload_ps(gy + (long)j * g_cstride + full, mask);
            for (int t = 0; t < TB; t++) sv[t] = _mm256_maskload_ps(sy + off[t] + full, mask);
            for (int j = 0; j < OB; j++)
                for (int t = 0; t < TB; t++) acc[j][t] = _mm256_fmadd_ps(gv[j], sv[t], acc[j][t]);
        }
    }
    for (int j = 0; j < OB; j++)
        for (int t = 0; t < TB; t++) dw[(long)j * dw_ostride + t] += hsum256(acc[j][t]);
}

#define WG_BLOCK(OB, TB) \
    __attribute__((target("avx2,fma"))) static void wg256_##OB##_##TB(const float *src, const long *off, const float *g, \
        long g_cstride, int rows, int width, long pitch, float *dw, long dw_ostride) { \
        weight_grad_block256(src, off, g, g_cstride, rows, width, pitch, dw, dw_ostride, OB, TB); }
WG_BLOCK(1, 1) WG_BLOCK(1, 2) WG_BLOCK(1, 3)
WG_BLOCK(2, 1) WG_BLOCK(2, 2) WG_BLOCK(2, 3)
WG_BLOCK(3, 1) WG_BLOCK(3, 2) WG_BLOCK(3, 3)
WG_BLOCK(4, 1) WG_BLOCK(4, 2) WG_BLOCK(4, 3)
typedef void (*wg_fn)(const float *, const long *, const float *, long, int, int, long, float *, long);
static const wg_fn wg256[4][3] = {
    { wg256_1_1, wg256_1_2, wg256_1_3 }, { wg256_2_1, wg256_2_2, wg256_2_3 },
    { wg256_3_1, wg256_3_2, wg256_3_3 }, { wg256_4_1, wg256_4_2, wg256_4_3 },
};
#endif

void gdh_conv_weight_grad(const float *in, long in_cstride, int channels_in, const long *tap_off, int taps,
                          const float *g, long g_cstride, int channels_out, int rows, int width, long pitch,
                          float *dw, int c_begin, int c_end, int level) {
#if defined(__x86_64__)
    if (level >= 1 && gdh_conv_kernel_level() >= 1) {
        for (int c = c_begin; c < c_end; c++) {
            const float *src = in + (long)c * in_cstride;
            for (int o = 0; o < channels_out; o += 4) {
                const int ob = channels_out - o < 4 ? channels_out - o : 4;
                for (int t = 0; t < taps; t += 3) {
                    const int tb = taps - t < 3 ? taps - t : 3;
                    wg256[ob - 1][tb - 1](src, tap_off + t, g + (long)o * g_cstride, g_cstride, rows, width, pitch,
                                          dw + ((long)o * channels_in + c) * taps + t, (long)channels_in * taps);
                }
            }
        }
        return;
    }
#endif
    (void)level;
    weight_grad_scalar(in, in_cstride, channels_in, tap_off, taps, g, g_cstride, channels_out, rows, width, pitch,
                       dw, c_begin, c_end);
}

void gdh_unpad_planes(const float *src, long src_cstride, long pitch, int height, int width, int pad, int reflect,
                      float *dst, int c_begin, int c_end) {
    const int ph = height + 2 * pad, pw = width + 2 * pad;
    for (int c = c_begin; c < c_end; c++) {
        const float *s = src + (long)c * src_cstride;
        float *d = dst + (long)c * height * width;
        // The interior first (a copy), then what reflection folds back onto it.
        for (int y = 0; y < height; y++) memcpy(d + (long)y * width, s + (long)(y + pad) * pitch + pad, sizeof(float) * (size_t)width);
        if (!reflect || pad == 0) continue;
        for (int y = 0; y < ph; y++) {
            const int iy = reflect_at(y - pad, height);
            const float *sr = s + (long)y * pitch;
            float *dr = d + (long)iy * width;
            if (y < pad || y >= pad + height) add_row(dr, sr + pad, width);
            for (int x = 0; x < pad; x++) dr[reflect_at(x - pad, width)] += sr[x];
            for (int x = pad + width; x < pw; x++) dr[reflect_at(x - pad, width)] += sr[x];
        }
    }
}
