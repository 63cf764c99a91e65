import CNeuralKernels
import Dispatch
import Foundation

/// How a `GroupedConv2d` pads its input (with zeros).
public enum ConvPadding: Equatable, Sendable {
    /// p on every side, as `nn.Conv2d(padding=p)`.
    case symmetric(Int)
    /// TensorFlow's SAME, as efficientnet-pytorch's `Conv2dDynamicSamePadding`: for input
    /// size i, kernel k and stride s the output is ceil(i / s), the padding
    /// total = max((out − 1)·s + k − i, 0), of which total / 2 goes before (top, left) and
    /// the rest after (bottom, right); computed for each input size, rows and columns apart.
    case same

    /// (before, after, output size) along one dimension of `size` values.
    public func amounts(size i: Int, kernel k: Int, stride s: Int) -> (before: Int, after: Int, out: Int) {
        switch self {
        case .symmetric(let p):
            return (p, p, (i + 2 * p - k) / s + 1)
        case .same:
            let out = (i + s - 1) / s
            let total = max((out - 1) * s + k - i, 0)
            return (total / 2, total - total / 2, out)
        }
    }
}

/// 2-D convolution with groups, PyTorch `nn.Conv2d(groups:)` (dilation 1): weight
/// (out, in / groups, k, k), bias (out); output channel o reads the input channels of its
/// group o / (out / groups). Padding is symmetric or TensorFlow's SAME (`ConvPadding`).
///
/// Three ways to compute: groups = 1 runs an internal `Conv2d` (the direct kernels or
/// im2col + GEMM) sharing this layer's parameters, on an explicitly zero-padded copy of the
/// input when the padding is SAME (the gradient of the padded input is cropped);
/// depthwise convolutions (in / groups = 1, out a multiple of in) run the C kernels of
/// depthwise_kernels.c, split between the training threads by (sample, channel) planes
/// (the weight gradient by channel, summing the samples inside: the same sums for any
/// thread count); other groupings run plain loops.
public final class GroupedConv2d: Layer {
    public let inChannels, outChannels, kernel, stride: Int
    public let padding: ConvPadding
    public let groups: Int
    public let weight: Parameter   // (out, in / groups, k, k)
    public let bias: Parameter?    // (out)
    public var training = true {
        didSet { inner?.training = training }
    }

    /// groups = 1: the convolution that does the work (padding p for `.symmetric(p)`,
    /// none for `.same`, whose padding is explicit); its parameters are this layer's.
    let inner: Conv2d?
    /// The depthwise kernels' level (2 AVX-512, 1 AVX2 + FMA, 0 C; clamped to the CPU's):
    /// the best by default, lower in tests.
    var kernelLevel = DirectConvolution.bestKernel
    private var input = Tensor(zeros: [0])   // the last forward's input (unpadded)
    private var scratch: [Float] = []

    public init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, padding: ConvPadding = .symmetric(0),
                groups: Int, bias: Bool = true) {
        precondition(groups >= 1 && inChannels % groups == 0 && outChannels % groups == 0,
                     "GroupedConv2d: groups \(groups) must divide \(inChannels) and \(outChannels)")
        precondition(kernel >= 1 && stride >= 1, "GroupedConv2d: kernel and stride must be positive")
        if case .symmetric(let p) = padding { precondition(p >= 0, "GroupedConv2d: negative padding") }
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.groups = groups
        if groups == 1 {
            var p = 0
            if case .symmetric(let q) = padding { p = q }
            let conv = Conv2d(inChannels, outChannels, kernel: kernel, stride: stride, padding: p, bias: bias)
            inner = conv
            weight = conv.weight
            self.bias = conv.bias
        } else {
            inner = nil
            weight = Parameter(Tensor(zeros: [outChannels, inChannels / groups, kernel, kernel]))
            self.bias = bias ? Parameter(Tensor(zeros: [outChannels])) : nil
        }
    }

    public var parameters: [(String, Parameter)] {
        [("weight", weight)] + (bias.map { [("bias", $0)] } ?? [])
    }

    /// Whether this is a depthwise convolution (one input channel per group; the output
    /// channels a multiple of the input's).
    public var isDepthwise: Bool { groups == inChannels && groups > 1 }

    /// The padding on each side and the output size for an input of height × width.
    public func paddedGeometry(height: Int, width: Int) -> (padTop: Int, padLeft: Int, padBottom: Int, padRight: Int, outH: Int, outW: Int) {
        let r = padding.amounts(size: height, kernel: kernel, stride: stride)
        let c = padding.amounts(size: width, kernel: kernel, stride: stride)
        return (r.before, c.before, r.after, c.after, r.out, c.out)
    }

    /// The geometry the depthwise kernels take.
    func depthwiseGeometry(height: Int, width: Int) -> gdh_dw_geometry {
        let g = paddedGeometry(height: height, width: width)
        return gdh_dw_geometry(channels: Int32(inChannels), multiplier: Int32(outChannels / inChannels), height: Int32(height),
                               width: Int32(width), kernel: Int32(kernel), stride: Int32(stride), pad_top: Int32(g.padTop),
                               pad_left: Int32(g.padLeft), out_h: Int32(g.outH), out_w: Int32(g.outW))
    }

    /// Whether the depthwise C kernels take this layer.
    var usesDepthwiseKernels: Bool { isDepthwise && kernel <= Int(GDH_DW_MAX_KERNEL) }

    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4 && x.c == inChannels, "GroupedConv2d expects (N, \(inChannels), H, W), got \(x.shape)")
        let g = paddedGeometry(height: x.h, width: x.w)
        precondition(g.outH > 0 && g.outW > 0, "GroupedConv2d: input \(x.h)x\(x.w) is smaller than the kernel")
        input = x
        if let conv = inner {
            guard padding == .same, g.padTop + g.padLeft + g.padBottom + g.padRight > 0 else { return conv.forward(x) }
            return conv.forward(zeroPad(x, top: g.padTop, left: g.padLeft, bottom: g.padBottom, right: g.padRight))
        }
        let started = ConvProfiler.enabled ? DispatchTime.now().uptimeNanoseconds : 0
        defer {
            if ConvProfiler.enabled {
                ConvProfiler.record(start: started, flops: 2 * Double(x.n * outChannels * (inChannels / groups) * kernel * kernel * g.outH * g.outW))
            }
        }
        if usesDepthwiseKernels { return depthwiseForward(x) }
        return loopForward(x)
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        let x = input
        let g = paddedGeometry(height: x.h, width: x.w)
        precondition(gradOutput.shape == [x.n, outChannels, g.outH, g.outW], "GroupedConv2d.backward: bad gradient shape \(gradOutput.shape)")
        if let conv = inner {
            let dx = conv.backward(gradOutput)
            guard padding == .same, g.padTop + g.padLeft + g.padBottom + g.padRight > 0 else { return dx }
            return crop(dx, top: g.padTop, left: g.padLeft, height: x.h, width: x.w)
        }
        if usesDepthwiseKernels { return depthwiseBackward(gradOutput) }
        return loopBackward(gradOutput)
    }

    // MARK: Depthwise

    private func depthwiseForward(_ x: Tensor) -> Tensor {
        var geo = depthwiseGeometry(height: x.h, width: x.w)
        var out = Tensor(uninitialized: [x.n, outChannels, Int(geo.out_h), Int(geo.out_w)])
        let planes = x.n * inChannels
        let threads = min(trainingThreads, planes)
        let per = gdh_depthwise_scratch_floats(&geo)
        ensureScratch(&scratch, per * threads)
        let level = Int32(kernelLevel)
        x.data.withUnsafeBufferPointer { xp in
        weight.value.data.withUnsafeBufferPointer { wp in
        (bias?.value.data ?? []).withUnsafeBufferPointer { bp in
        scratch.withUnsafeMutableBufferPointer { sp in
        out.data.withUnsafeMutableBufferPointer { op in
            let b = bias == nil ? nil : bp.baseAddress
            let (xb, wb, ob, sb) = (xp.baseAddress!, wp.baseAddress!, op.baseAddress!, sp.baseAddress!)
            parallel(threads, threads) { t in
                let r = split(planes, threads, t)
                var g = geo
                gdh_depthwise_forward(&g, xb, wb, b, ob, r.lowerBound, r.upperBound, sb + t * per, level)
            }
        }}}}}
        return out
    }

    private func depthwiseBackward(_ gradOutput: Tensor) -> Tensor {
        let x = input
        var geo = depthwiseGeometry(height: x.h, width: x.w)
        let planes = x.n * inChannels
        let threads = min(trainingThreads, planes)
        let per = gdh_depthwise_scratch_floats(&geo)
        ensureScratch(&scratch, per * threads)
        let level = Int32(kernelLevel)
        var dx = Tensor(uninitialized: x.shape)
        x.data.withUnsafeBufferPointer { xp in
        gradOutput.data.withUnsafeBufferPointer { gp in
        weight.value.data.withUnsafeBufferPointer { wp in
        weight.grad.data.withUnsafeMutableBufferPointer { dwp in
        scratch.withUnsafeMutableBufferPointer { sp in
        dx.data.withUnsafeMutableBufferPointer { dxp in
            let (xb, gb, wb, dwb, sb, dxb) = (xp.baseAddress!, gp.baseAddress!, wp.baseAddress!, dwp.baseAddress!, sp.baseAddress!, dxp.baseAddress!)
            parallel(threads, threads) { t in
                let r = split(planes, threads, t)
                var g = geo
                gdh_depthwise_input_grad(&g, gb, wb, dxb, r.lowerBound, r.upperBound, sb + t * per, level)
            }
            // By input channel (all the samples inside): each weight's sum is one thread's,
            // in sample order, whatever the thread count.
            let wThreads = min(trainingThreads, inChannels)
            parallel(wThreads, wThreads) { t in
                let cs = split(inChannels, wThreads, t)
                var g = geo
                gdh_depthwise_weight_grad(&g, Int32(x.n), xb, gb, dwb, Int32(cs.lowerBound), Int32(cs.upperBound), sb + t * per, level)
            }
        }}}}}}
        if let b = bias { addChannelSums(gradOutput, into: b) }
        return dx
    }

    /// `loopBackward`'s weight gradient, by output channel (so no two threads write the
    /// same value), added to `dwb`.
    private func loopWeightGrad(_ x: Tensor, _ g: (padTop: Int, padLeft: Int, padBottom: Int, padRight: Int, outH: Int, outW: Int), _ xb: UnsafePointer<Float>, _ gb: UnsafePointer<Float>,
                                _ dwb: UnsafeMutablePointer<Float>) {
        let (ho, wo, k, s) = (g.outH, g.outW, kernel, stride)
        let cinG = inChannels / groups, coutG = outChannels / groups
        trainingParallel(outChannels) { co in
            let group = co / coutG
            for ci in 0..<cinG {
                for ki in 0..<k {
                    for kj in 0..<k {
                        var sum: Float = 0
                        for n in 0..<x.n {
                            let src = xb + (n * inChannels + group * cinG + ci) * x.h * x.w
                            let gr = gb + (n * outChannels + co) * ho * wo
                            for oy in 0..<ho {
                                let iy = oy * s + ki - g.padTop
                                guard iy >= 0 && iy < x.h else { continue }
                                for ox in 0..<wo {
                                    let ix = ox * s + kj - g.padLeft
                                    if ix >= 0 && ix < x.w { sum += gr[oy * wo + ox] * src[iy * x.w + ix] }
                                }
                            }
                        }
                        dwb[((co * cinG + ci) * k + ki) * k + kj] += sum
                    }
                }
            }
        }
    }

    // MARK: Other groupings: plain loops

    private func loopForward(_ x: Tensor) -> Tensor {
        let g = paddedGeometry(height: x.h, width: x.w)
        let (ho, wo, k, s) = (g.outH, g.outW, kernel, stride)
        let cinG = inChannels / groups, coutG = outChannels / groups
        var out = Tensor(uninitialized: [x.n, outChannels, ho, wo])
        x.data.withUnsafeBufferPointer { xp in
        weight.value.data.withUnsafeBufferPointer { wp in
        out.data.withUnsafeMutableBufferPointer { op in
            let (xb, wb, ob) = (xp.baseAddress!, wp.baseAddress!, op.baseAddress!)
            let biasValues = bias?.value.data
            trainingParallel(x.n * outChannels) { plane in
                let n = plane / outChannels, co = plane % outChannels, group = co / coutG
                let b = biasValues?[co] ?? 0
                for oy in 0..<ho {
                    for ox in 0..<wo {
                        var sum: Float = 0
                        for ci in 0..<cinG {
                            let src = xb + (n * inChannels + group * cinG + ci) * x.h * x.w
                            let w = wb + (co * cinG + ci) * k * k
                            for ki in 0..<k {
                                let iy = oy * s + ki - g.padTop
                                guard iy >= 0 && iy < x.h else { continue }
                                for kj in 0..<k {
                                    let ix = ox * s + kj - g.padLeft
                                    if ix >= 0 && ix < x.w { sum += w[ki * k + kj] * src[iy * x.w + ix] }
                                }
                            }
                        }
                        ob[(plane * ho + oy) * wo + ox] = sum + b
                    }
                }
            }
        }}}
        return out
    }

    private func loopBackward(_ gradOutput: Tensor) -> Tensor {
        let x = input
        let g = paddedGeometry(height: x.h, width: x.w)
        let (ho, wo, k, s) = (g.outH, g.outW, kernel, stride)
        let cinG = inChannels / groups, coutG = outChannels / groups
        var dx = Tensor(zeros: x.shape)
        x.data.withUnsafeBufferPointer { xp in
        gradOutput.data.withUnsafeBufferPointer { gp in
        weight.value.data.withUnsafeBufferPointer { wp in
        weight.grad.data.withUnsafeMutableBufferPointer { dwp in
        dx.data.withUnsafeMutableBufferPointer { dxp in
            let (xb, gb, wb, dwb, dxb) = (xp.baseAddress!, gp.baseAddress!, wp.baseAddress!, dwp.baseAddress!, dxp.baseAddress!)
            // The input gradient by input plane, the weight gradient by output channel: no
            // two threads write the same value.
            trainingParallel(x.n * inChannels) { plane in
                let n = plane / inChannels, c = plane % inChannels, group = c / cinG, ci = c % cinG
                let d = dxb + plane * x.h * x.w
                for co in (group * coutG)..<((group + 1) * coutG) {
                    let gr = gb + (n * outChannels + co) * ho * wo, w = wb + (co * cinG + ci) * k * k
                    for oy in 0..<ho {
                        for ox in 0..<wo {
                            let v = gr[oy * wo + ox]
                            for ki in 0..<k {
                                let iy = oy * s + ki - g.padTop
                                guard iy >= 0 && iy < x.h else { continue }
                                for kj in 0..<k {
                                    let ix = ox * s + kj - g.padLeft
                                    if ix >= 0 && ix < x.w { d[iy * x.w + ix] += w[ki * k + kj] * v }
                                }
                            }
                        }
                    }
                }
            }
            loopWeightGrad(x, g, xb, gb, dwb)
        }}}}}
        if let b = bias { addChannelSums(gradOutput, into: b) }
        return dx
    }
}

/// x zero-padded by the given amounts on each side (planes split between the training threads).
func zeroPad(_ x: Tensor, top: Int, left: Int, bottom: Int, right: Int) -> Tensor {
    let ho = x.h + top + bottom, wo = x.w + left + right
    var out = Tensor(zeros: [x.n, x.c, ho, wo])
    x.data.withUnsafeBufferPointer { xp in
        out.data.withUnsafeMutableBufferPointer { op in
            let (xb, ob) = (xp.baseAddress!, op.baseAddress!)
            trainingChannels(x.n * x.c) { planes in
                for plane in planes {
                    for y in 0..<x.h {
                        (ob + (plane * ho + y + top) * wo + left).update(from: xb + (plane * x.h + y) * x.w, count: x.w)
                    }
                }
            }
        }
    }
    return out
}

/// The height × width window of each plane of g at (top, left): the gradient of `zeroPad`.
func crop(_ g: Tensor, top: Int, left: Int, height: Int, width: Int) -> Tensor {
    var out = Tensor(uninitialized: [g.n, g.c, height, width])
    g.data.withUnsafeBufferPointer { gp in
        out.data.withUnsafeMutableBufferPointer { op in
            let (gb, ob) = (gp.baseAddress!, op.baseAddress!)
            trainingChannels(g.n * g.c) { planes in
                for plane in planes {
                    for y in 0..<height {
                        (ob + (plane * height + y) * width).update(from: gb + (plane * g.h + y + top) * g.w + left, count: width)
                    }
                }
            }
        }
    }
    return out
}
