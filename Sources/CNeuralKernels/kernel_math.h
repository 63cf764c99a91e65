// Vectorisable e^x and tanh shared by the inference and training kernels (private to the
// C target: not part of the module's public header).
#ifndef GDH_KERNEL_MATH_H
#define GDH_KERNEL_MATH_H

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

// Calls NAME_avx512, NAME_avx2 or NAME_c (bodies compiled for each level) by `level`
// (2, 1, 0), clamped to what the CPU has (gdh_conv_kernel_level); `level` is a variable
// of the caller.
#if defined(__x86_64__)
#define GDH_LEVEL_DISPATCH(NAME, ...) do { \
        const int best_ = gdh_conv_kernel_level(); \
        if (level < 0 || level > best_) level = best_; \
        if (level >= 2) NAME##_avx512(__VA_ARGS__); \
        else if (level == 1) NAME##_avx2(__VA_ARGS__); \
        else NAME##_c(__VA_ARGS__); \
    } while (0)
#else
#define GDH_LEVEL_DISPATCH(NAME, ...) do { (void)level; NAME##_c(__VA_ARGS__); } while (0)
#endif

// Eight floats (one AVX2 register, two SSE ones), loaded and stored unaligned.
typedef float gdh_v8 __attribute__((vector_size(32), aligned(4)));

// o[j][i] = r[i][j] for an 8 × 8 block of floats, in registers.
static inline __attribute__((always_inline)) void gdh_transpose8(const gdh_v8 *r, gdh_v8 *o) {
    gdh_v8 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
        u[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        u[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
        u[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
    }
    for (int j = 0; j < 4; j++) {
        o[j] = __builtin_shufflevector(u[j], u[j + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        o[j + 4] = __builtin_shufflevector(u[j], u[j + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
}

#endif
