// Inference kernels of the NeuralNet module: a direct convolution over a prepared
// (padded, phase-split) input, the input preparation, a fused epilogue (bias, residual,
// activation) and max pooling. Layouts and contracts are described at each function.
#ifndef GDH_NEURAL_KERNELS_H
#define GDH_NEURAL_KERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Output channels computed together by the convolution kernel; packed weights are laid
/// out in blocks of this many output channels (zero-filled past the last channel).
#define GDH_CONV_OC_BLOCK 4

/// Direct convolution as a sum of shifted products:
///   out[o * out_cstride + p] = Σ_c Σ_t w[o][c][t] · in[c * in_cstride + tap_off[t] + p]
/// for every output channel o < channels_out and flat position p in [p_begin, p_end).
/// `w_packed` holds ceil(channels_out / GDH_CONV_OC_BLOCK) blocks of
/// [channels_in][taps][GDH_CONV_OC_BLOCK] floats. Every `in` index named above for
/// p < p_end must be readable. Writes exactly the named `out` entries. `level` picks the
/// kernel (see gdh_conv_kernel_level; higher than the CPU has, or negative: the best).
void gdh_conv_direct(const float *in, long in_cstride, int channels_in,
                     const long *tap_off, int taps, const float *w_packed, int channels_out,
                     float *out, long out_cstride, long p_begin, long p_end, int level);

/// gdh_conv_direct over output rows [row_begin, row_end) of `width` valid positions each
/// (rows `pitch` apart): with the AVX-512 kernels and a width that is a multiple of 16, or
/// the AVX2 ones and a multiple of 8, only the valid positions are computed (and
/// written); otherwise as gdh_conv_direct over [row_begin·pitch, row_end·pitch).
void gdh_conv_direct_rows(const float *in, long in_cstride, int channels_in,
                          const long *tap_off, int taps, const float *w_packed, int channels_out,
                          float *out, long out_cstride, long pitch, int width,
                          int row_begin, int row_end, int level);

/// gdh_conv_direct_rows with the epilogue of gdh_conv_epilogue applied in registers and
/// the output written compact: out[o * out_cstride + y * width + x] = act(sum + bias[o] +
/// residual[o * out_cstride + y * width + x]) for y in [row_begin, row_end), x < width.
/// Only where the row tiles run (AVX-512 and width a multiple of 16, or AVX2 and a
/// multiple of 8) and act is NONE, RELU, RELU6 or LEAKY: returns 0 (and does nothing) otherwise.
int gdh_conv_direct_rows_fused(const float *in, long in_cstride, int channels_in,
                               const long *tap_off, int taps, const float *w_packed, int channels_out,
                               float *out, long out_cstride, long pitch, int width, int row_begin, int row_end,
                               const float *bias, const float *residual, int act, float slope, int level);

/// The same sum with the output channels in the vector lanes, for layers with few
/// positions: for blocks b in [b_begin, b_end) of `block` (16 or 32) output channels and
/// the `npos` input offsets pos[j] (any stride: the caller lists them):
///   out[o * out_cstride + j] = Σ_c Σ_t w[o][c][t] · in[c * in_cstride + tap_off[t] + pos[j]].
/// `w_packed` holds blocks of [channels_in][taps][block] floats. The epilogue is applied
/// before the store: out = act(sum + bias[o] + residual[o * out_cstride + j]) with act
/// GDH_ACT_NONE, _RELU, _RELU6 or _LEAKY (others: apply them afterwards); bias and residual may be
/// NULL. Only where gdh_conv_channels_kernel_available() (AVX-512); otherwise it does nothing.
void gdh_conv_direct_channels(const float *in, long in_cstride, int channels_in,
                              const long *tap_off, int taps, const float *w_packed, int block,
                              const long *pos, int npos, float *out, long out_cstride,
                              int b_begin, int b_end,
                              const float *bias, const float *residual, int act, float slope);
int gdh_conv_channels_kernel_available(void);

/// Pads one image (channels × height × width, contiguous) by `pad` on every side (zeros,
/// or reflection as nn.ReflectionPad2d when `reflect` is set) and splits the padded
/// image into stride × stride phase planes of plane_h × pitch each:
///   dst[c * dst_cstride + (a * stride + b) * plane_h * pitch + i * pitch + j]
///     = padded[c][i * stride + a][j * stride + b]   (0 outside the padded image).
/// Channels [c_begin, c_end) only; phases a or b ≥ `kernel` (which no tap of a kernel
/// of that size reads) are left unwritten.
void gdh_conv_prepare(const float *src, int height, int width, int pad, int reflect, int stride, int kernel,
                      float *dst, long dst_cstride, int plane_h, int pitch, int c_begin, int c_end);

/// gdh_conv_prepare for the plane rows [row_begin, row_end) only (of every phase).
void gdh_conv_prepare_rows(const float *src, int height, int width, int pad, int reflect, int stride, int kernel,
                           float *dst, long dst_cstride, int plane_h, int pitch, int c_begin, int c_end,
                           int row_begin, int row_end);

/// Activation codes for gdh_conv_epilogue.
/// GDH_ACT_RELU6 is min(max(x, 0), 6) (nn.ReLU6); its gradient passes where 0 < x < 6.
enum { GDH_ACT_NONE = 0, GDH_ACT_RELU = 1, GDH_ACT_LEAKY = 2, GDH_ACT_TANH = 3, GDH_ACT_SIGMOID = 4, GDH_ACT_RELU6 = 5 };

/// For channels o in [o_begin, o_end), rows y < rows and columns x < cols:
///   v = acc[o * acc_cstride + y * acc_pitch + x] + bias[o] + residual[o * res_cstride + y * cols + x]
///   out[o * out_cstride + out_offset + y * out_ystride + x * out_xstride] = act(v)
/// (the strides let the phases of a transposed convolution interleave). bias and
/// residual may be NULL; `slope` is LeakyReLU's. acc and out may be the same buffer when
/// they are indexed alike.
void gdh_conv_epilogue(const float *acc, long acc_cstride, long acc_pitch, int rows, int cols,
                       const float *bias, const float *residual, long res_cstride,
                       int act, float slope,
                       float *out, long out_cstride, long out_offset, long out_ystride, long out_xstride,
                       int o_begin, int o_end);

/// Instance normalisation of channels [c_begin, c_end) of one image (planes of `plane`
/// values): out = act((x − mean) / sqrt(var + eps) · gamma[c] + beta[c] + residual), biased
/// variance as nn.InstanceNorm2d; gamma, beta and residual may be NULL.
void gdh_instance_norm(const float *x, long plane, float eps, const float *gamma, const float *beta,
                       const float *residual, int act, float slope, float *out, int c_begin, int c_end);

/// out[o] = Σ_i weight[o][i] · x[i] + bias[o] (bias may be NULL): a linear layer for one
/// sample, without OpenBLAS (whose threads would spin beside the encoders).
void gdh_linear(const float *x, const float *weight, const float *bias, int in_features, int out_features, float *out);

/// Max pooling of one image (channels [c_begin, c_end) of height × width) with a k × k
/// window, stride and implicit -inf padding: out is channels × out_h × out_w, of which
/// the output rows [row_begin, row_end) are written.
void gdh_maxpool(const float *src, int height, int width, int k, int stride, int pad,
                 float *out, int out_h, int out_w, int c_begin, int c_end, int row_begin, int row_end);

/// Which convolution kernel runs: 2 = AVX-512, 1 = AVX2+FMA, 0 = portable C.
/// GDH_SCALAR_KERNELS=1 in the environment forces 0.
int gdh_conv_kernel_level(void);

/// Relaxed atomic counter operations (for sharing cores among concurrent plans).
static inline int gdh_atomic_load(const int *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void gdh_atomic_add(int *p, int v) { (void)__atomic_add_fetch(p, v, __ATOMIC_RELAXED); }

/// A fork-join pool of `threads` threads (the caller counts as one).
typedef struct gdh_pool gdh_pool;
typedef void (*gdh_task_fn)(void *ctx, int part);
gdh_pool *gdh_pool_create(int threads);
/// Runs fn(ctx, i) for every i < parts on the pool's threads and returns when all are
/// done. If another job is running, runs every part on the calling thread.
void gdh_pool_run(gdh_pool *pool, int parts, gdh_task_fn fn, void *ctx);

// MARK: Training kernels (training_kernels.c)

/// im2col of one image (channels × height × width): for channels [c_begin, c_end), taps
/// (ki, kj) and grid rows oy in [row_begin, row_end), column row r = (c·kh + ki)·kw + kj:
///   col[r · ldcol + (oy − row_begin) · grid_w + ox] = img[c][oy·stride − pad + ki][ox·stride − pad + kj]
/// (0 outside the image, or reflected as nn.ReflectionPad2d when `reflect` is set).
void gdh_im2col(const float *img, int channels, int height, int width, int kh, int kw, int stride, int pad,
                int reflect, int grid_h, int grid_w, int row_begin, int row_end, float *col, long ldcol,
                int c_begin, int c_end);
/// The adjoint of gdh_im2col over all grid rows: adds every column entry into its image
/// position (reflected positions into the pixel they mirror), channels [c_begin, c_end).
void gdh_col2im(const float *col, long ldcol, int channels, int height, int width, int kh, int kw, int stride,
                int pad, int reflect, int grid_h, int grid_w, float *img, int c_begin, int c_end);
/// dst[c · (samples·plane) + s · plane + i] = src[(s · channels + c) · plane + i].
void gdh_group_gather(const float *src, int samples, int channels, long plane, float *dst);
/// The inverse of gdh_group_gather, adding bias[c] (bias may be NULL).
void gdh_group_scatter(const float *src, int samples, int channels, long plane, const float *bias, float *dst);
/// x[s][c][i] += bias[c].
void gdh_add_channel_bias(float *x, int samples, int channels, long plane, const float *bias);
/// sums[c] += Σ_s Σ_i g[s][c][i] (a float sum per sample and channel).
void gdh_channel_sums(const float *g, int samples, int channels, long plane, float *sums);
/// y = act(x) for the GDH_ACT_* codes (x and y distinct buffers); tanh and sigmoid by the
/// inference kernels' approximations (relative error below 1e-6).
void gdh_activation_forward(const float *x, float *y, long n, int act, float slope);
/// dx = g · act′, from the kept input (ReLU kinds) or output (tanh, sigmoid); distinct buffers.
void gdh_activation_backward(const float *g, const float *kept, float *dx, long n, int act, float slope);
/// Per channel mean, biased and unbiased variance of an NCHW tensor, channels
/// [c_begin, c_end) (float sums per plane, combined in double).
void gdh_batchnorm_stats(const float *x, int samples, int channels, long plane, float *mean, float *var,
                         float *unbiased, int c_begin, int c_end);
/// y[s][c][i] = x[s][c][i] · scale[c] + shift[c], channels [c_begin, c_end).
void gdh_channel_affine(const float *x, int samples, int channels, long plane, const float *scale,
                        const float *shift, float *y, int c_begin, int c_end);
/// BatchNorm2d's backward (batch statistics or running ones), adding into dgamma, dbeta;
/// channels [c_begin, c_end).
void gdh_batchnorm_backward(const float *x, const float *g, int samples, int channels, long plane,
                            const float *mean, const float *inv_std, const float *gamma, int batch_stats,
                            float *dgamma, float *dbeta, float *dx, int c_begin, int c_end);
/// One Adam update of n parameters (torch.optim.Adam with L2 weight decay).
void gdh_adam_step(float *p, const float *g, float *m, float *v, long n, float beta1, float beta2,
                   float bc1, float bc2, float lr, float eps, float weight_decay);
/// The gradient of reflection padding by `pad`: g is planes × (h+2p) × (w+2p), dx planes × h × w.
void gdh_reflection_pad_backward(const float *g, int planes, int height, int width, int pad, float *dx);

/// The weight gradient of gdh_conv_direct, over input channels [c_begin, c_end):
///   dw[(o · channels_in + c) · taps + t] += Σ_{y < rows} Σ_{x < width}
///       g[o · g_cstride + y · width + x] · in[c · in_cstride + tap_off[t] + y · pitch + x]
/// (g compact, `in` as prepared for the forward pass). `level` as gdh_conv_direct.
void gdh_conv_weight_grad(const float *in, long in_cstride, int channels_in, const long *tap_off, int taps,
                          const float *g, long g_cstride, int channels_out, int rows, int width, long pitch,
                          float *dw, int c_begin, int c_end, int level);
/// The gradient of padding by `pad` for channels [c_begin, c_end): src holds, per channel
/// (src_cstride apart), the (height + 2·pad) × (width + 2·pad) gradient of the padded
/// image in rows `pitch` apart; dst (channels × height × width) is set to the interior,
/// plus (with `reflect`) the border entries added into the pixels they mirror.
void gdh_unpad_planes(const float *src, long src_cstride, long pitch, int height, int width, int pad, int reflect,
                      float *dst, int c_begin, int c_end);

// MARK: Depthwise convolution (depthwise_kernels.c)

/// A depthwise convolution (nn.Conv2d with groups = channels, dilation 1): output channel
/// co = c · multiplier + j reads only input channel c, with its own kernel × kernel weights
/// w[co][ki][kj]; the input is zero-padded by pad_top / pad_left before the first row and
/// column (and as far as needed after the last), output out_h × out_w:
///   y[co][oy][ox] = Σ w[co][ki][kj] · x[c][oy·stride + ki − pad_top][ox·stride + kj − pad_left].
/// Kernels up to GDH_DW_MAX_KERNEL.
typedef struct gdh_dw_geometry {
    int channels, multiplier, height, width, kernel, stride, pad_top, pad_left, out_h, out_w;
} gdh_dw_geometry;
#define GDH_DW_MAX_KERNEL 11

/// Floats of scratch memory one thread of any of the functions below needs.
long gdh_depthwise_scratch_floats(const gdh_dw_geometry *g);

/// Training forward over input planes p in [p_begin, p_end) of a batch (p = n · channels + c):
/// output planes p · multiplier + j = act-free conv + bias[co] (bias may be NULL).
/// `level` as gdh_conv_direct (2 AVX-512, 1 AVX2 + FMA, 0 C; clamped to the CPU's).
void gdh_depthwise_forward(const gdh_dw_geometry *g, const float *x, const float *w, const float *bias, float *y,
                           long p_begin, long p_end, float *scratch, int level);
/// The input gradient for input planes [p_begin, p_end): dx (set, not added) from dy.
void gdh_depthwise_input_grad(const gdh_dw_geometry *g, const float *dy, const float *w, float *dx,
                              long p_begin, long p_end, float *scratch, int level);
/// The weight gradient of input channels [c_begin, c_end) (all their multiplier output
/// channels) summed over `samples`, added into dw (channels · multiplier × kernel²): float
/// sums per sample and tap, combined in double in sample order.
void gdh_depthwise_weight_grad(const gdh_dw_geometry *g, int samples, const float *x, const float *dy, float *dw,
                               int c_begin, int c_end, float *scratch, int level);
/// Inference on one image: for input channels [c_begin, c_end) and output rows
/// [row_begin, row_end), y = act(conv(x, w) + bias[co] + residual) (a BatchNorm folded into
/// w and bias by the caller; bias and residual may be NULL; act any GDH_ACT_* code).
void gdh_depthwise_infer(const gdh_dw_geometry *g, const float *x, const float *w, const float *bias,
                         const float *residual, int act, float slope, float *y, int c_begin, int c_end,
                         int row_begin, int row_end, float *scratch, int level);
/// Inference by channel lanes (multiplier 1): blocks of eight channels [blk_begin, blk_end)
/// computed side by side, the weights packed as w8[block][kernel²][8] and the bias as
/// b8[block][8] (zeros past the last channel; b8 may be NULL); otherwise as
/// gdh_depthwise_infer over all output rows. The faster form for small planes.
long gdh_depthwise_lanes_scratch_floats(const gdh_dw_geometry *g);
void gdh_depthwise_infer_lanes(const gdh_dw_geometry *g, const float *x, const float *w8, const float *b8,
                               const float *residual, int act, float slope, float *y, int blk_begin, int blk_end,
                               float *scratch, int level);

// MARK: Channel-blocked inference (blocked_kernels.c)

/// The NCHWc8 layout: a value of C channels (C a multiple of 8) over `plane` positions is
/// stored as [C/8][plane][8], its blocks gdh_blocked_floats(8, plane) floats apart (today
/// plane · 8); gdh_blocked_floats(C, plane) in all.
long gdh_blocked_floats(int channels, long plane);
/// Blocks [blk_begin, blk_end) of x (planes, C × plane) go to y
/// in blocks (to_blocks = 1) or back (0); x and y distinct. `level` as gdh_conv_direct.
void gdh_blocked_reorder(const float *x, int channels, long plane, float *y, int blk_begin, int blk_end,
                         int to_blocks, int level);
/// A 1×1 convolution on blocked values (in_c and out_c multiples of 8): y[o] = act(Σ_c w[o][c]
/// · scale[o] · x[c] + bias[o] + residual[o]) at every position, act GDH_ACT_NONE, _RELU or
/// _RELU6. The weights (out_c × in_c, row-major) are packed once by gdh_blocked_pointwise_pack
/// (packed_floats of memory) with the per-channel scale (may be NULL) folded in; bias has
/// bias_floats entries (zeros past out_c). Part `part` of `parts` of the work (the parts cover
/// it exactly once, any split); residual may be NULL.
long gdh_blocked_pointwise_packed_floats(int in_c, int out_c);
long gdh_blocked_pointwise_bias_floats(int out_c);
void gdh_blocked_pointwise_pack(const float *w, const float *scale, int in_c, int out_c, float *packed);
void gdh_blocked_pointwise(const float *x, long positions, int in_c, const float *packed, const float *bias,
                           const float *residual, int act, float *y, int out_c, int part, int parts, int level);
/// A depthwise convolution (multiplier 1, channels a multiple of 8) on blocked values, blocks
/// [blk_begin, blk_end) and output rows [row_begin, row_end): y = act(conv(x, w8) + b8 +
/// residual), the weights packed w8[block][kernel²][8] and b8[block][8] (may be NULL, as may
/// residual), act GDH_ACT_NONE, _RELU or _RELU6.
void gdh_blocked_depthwise(const gdh_dw_geometry *g, const float *x, const float *w8, const float *b8,
                           const float *residual, int act, float *y, int blk_begin, int blk_end,
                           int row_begin, int row_end, int level);
/// A 1×1 convolution (in_c → g->channels, weights and bias as gdh_blocked_pointwise's, act
/// act_expand) and the depthwise convolution g after it (weights and act as
/// gdh_blocked_depthwise's, no residual) in one pass over a blocked input of g->height ×
/// g->width: the expanded value is never stored whole, only bands of it in `scratch` (of
/// scratch_floats, at least scratch_floats(g, 0); scratch_floats(g, budget) is the larger
/// of that least and budget). Output rows [row_begin, row_end).
long gdh_blocked_expand_depthwise_scratch_floats(const gdh_dw_geometry *g, long budget);
void gdh_blocked_expand_depthwise(const float *x, int in_c, const float *packed, const float *bias, int act_expand,
                                  const gdh_dw_geometry *g, const float *w8, const float *b8, int act, float *y,
                                  int row_begin, int row_end, float *scratch, long scratch_floats, int level);
/// A kernel × kernel convolution (stride, zero padding pad_top / pad_left before the first
/// row and column, as far as needed after the last) of a planar input of few channels (an
/// image) into a blocked output of out_c channels (a multiple of 16), output rows
/// [row_begin, row_end): y = act(conv(x′) + bias), x′ = x · scale[c] + shift[c] inside the
/// image (scale and shift may both be NULL: x′ = x), zero in the padding. The weights are
/// packed[((c · kernel + i) · kernel + j) · out_c + o] (BatchNorm folded in by the caller).
void gdh_blocked_small_conv(const float *x, int channels, int height, int width, int kernel, int stride, int pad_top,
                            int pad_left, int out_h, int out_w, const float *packed, const float *bias, const float *scale,
                            const float *shift, int act, float *y, int out_c, int row_begin, int row_end, int level);
/// y[c] = the mean of channel c of a blocked value over its `plane` positions.
void gdh_blocked_global_average(const float *x, int channels, long plane, float *y, int level);

#ifdef __cplusplus
}
#endif

#endif
