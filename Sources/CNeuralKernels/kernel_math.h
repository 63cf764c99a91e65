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

#endif
