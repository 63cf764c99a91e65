import CNeuralKernels
import Dispatch
import Foundation

/// Geometry shared by im2col and col2im: an image of `channels` × `height` × `width`
/// seen through a `kh` × `kw` kernel moved with `stride` and zero `padding`, at the
/// positions of a `gridH` × `gridW` grid. Column matrix: (channels·kh·kw) × (gridH·gridW).
struct PatchGeometry {
    var channels, height, width, kh, kw, stride, padding, gridH, gridW: Int
    /// Pad by reflection (as `nn.ReflectionPad2d`) instead of zeros; im2col only.
    var reflect = false
    var rows: Int { channels * kh * kw }
    var cols: Int { gridH * gridW }
}

/// Copies image patches into columns (zeros where the kernel overhangs the border, or the
/// reflection), for the grid rows `gridRows` (all by default) and channels `channels` (all
/// by default): a (channels·kh·kw) × (rows·gridW) matrix whose rows are `ld` apart
/// (rows·gridW by default), so that the columns of several samples can sit side by side.
@inline(__always)
func im2col(_ g: PatchGeometry, _ img: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>,
            gridRows: Range<Int>? = nil, ld: Int? = nil, channels: Range<Int>? = nil) {
    let rows = gridRows ?? 0..<g.gridH
    let cs = channels ?? 0..<g.channels
    gdh_im2col(img, Int32(g.channels), Int32(g.height), Int32(g.width), Int32(g.kh), Int32(g.kw), Int32(g.stride),
               Int32(g.padding), g.reflect ? 1 : 0, Int32(g.gridH), Int32(g.gridW),
               Int32(rows.lowerBound), Int32(rows.upperBound), col, ld ?? rows.count * g.gridW,
               Int32(cs.lowerBound), Int32(cs.upperBound))
}

/// The adjoint of `im2col`: adds every column entry back into its image position
/// (with reflection, into the pixel it mirrors); columns rows `ld` apart.
@inline(__always)
func col2im(_ g: PatchGeometry, _ col: UnsafePointer<Float>, _ img: UnsafeMutablePointer<Float>,
            ld: Int? = nil, channels: Range<Int>? = nil) {
    let cs = channels ?? 0..<g.channels
    gdh_col2im(col, ld ?? g.cols, Int32(g.channels), Int32(g.height), Int32(g.width), Int32(g.kh), Int32(g.kw),
               Int32(g.stride), Int32(g.padding), g.reflect ? 1 : 0, Int32(g.gridH), Int32(g.gridW), img,
               Int32(cs.lowerBound), Int32(cs.upperBound))
}


/// Runs body(i) for i < count, split between the training threads.
@inline(__always)
func trainingParallel(_ count: Int, _ body: (Int) -> Void) {
    parallel(trainingThreads, count, body)
}

/// Runs body(range) over parts of 0..<count (multiples of 16 apart), one per training
/// thread when there are at least 64k elements (below that the hand-over costs more).
@inline(__always)
func elementParallel(_ count: Int, _ body: (Range<Int>) -> Void) {
    let t = count >= 1 << 16 ? trainingThreads : 1
    parallel(t, t) { body(split(count, t, $0, align: 16)) }
}

/// Runs body(channels) over parts of 0..<channels, one per training thread.
@inline(__always)
func trainingChannels(_ channels: Int, _ body: (Range<Int>) -> Void) {
    let t = min(trainingThreads, channels)
    parallel(t, t) { body(split(channels, t, $0)) }
}

/// Samples whose columns go side by side into one GEMM: small images (16×16, 8×8 at
/// batch 32) otherwise make GEMMs of a few dozen columns. Up to `convGroupFloats` floats
/// of columns (1 MiB: measured on the small training step, 256 KiB alike, 4 MiB slower;
/// GDH_CONV_GROUP_FLOATS overrides it for such measurements).
nonisolated(unsafe) var convGroupFloats: Int = {
    if let s = ProcessInfo.processInfo.environment["GDH_CONV_GROUP_FLOATS"], let v = Int(s), v > 0 { return v }
    return 1 << 18
}()

@inline(__always)
func groupSamples(_ n: Int, _ perSample: Int) -> Int {
    max(1, min(n, convGroupFloats / max(1, perSample)))
}

/// A float scratch buffer of at least `count` values (grown, never shrunk).
@inline(__always)
func ensureScratch(_ buffer: inout [Float], _ count: Int) {
    if buffer.count < count {
        buffer = [Float](unsafeUninitializedCapacity: count) { _, n in n = count }
    }
}

public enum PaddingMode: String, Sendable {
    case zeros
    case reflect
}

/// 2-D convolution, PyTorch `nn.Conv2d` (dilation 1, groups 1): weight (out, in, kh, kw),
/// bias (out). Reflection padding pads the input explicitly, zero padding is done in im2col.
/// Forward: per sample, out (O × HoWo) = W (O × C·kh·kw) · im2col(x); backward recomputes
/// the columns instead of keeping them (they are kh·kw times the input).
public final class Conv2d: Layer {
    public let inChannels, outChannels, kernelH, kernelW, stride, padding: Int
    public let paddingMode: PaddingMode
    public let weight: Parameter   // (out, in, kh, kw)
    public let bias: Parameter?    // (out)
    public var training = true
    /// Direct kernels or im2col + GEMM (see ConvDirect.swift); automatic by default.
    public var algorithm: ConvAlgorithm = .automatic

    var input = Tensor(zeros: [0])   // the input of the last forward
    var scratch: [Float] = []
    /// Floats of one band of columns in the forward pass (1 MiB: measured best of 256 KiB-16 MiB).
    static let bandFloats = 1 << 18

    public init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0,
                paddingMode: PaddingMode = .zeros, bias: Bool = true) {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernelH = kernel
        self.kernelW = kernel
        self.stride = stride
        self.padding = padding
        self.paddingMode = paddingMode
        weight = Parameter(Tensor(zeros: [outChannels, inChannels, kernel, kernel]))
        self.bias = bias ? Parameter(Tensor(zeros: [outChannels])) : nil
    }

    public var parameters: [(String, Parameter)] {
        [("weight", weight)] + (bias.map { [("bias", $0)] } ?? [])
    }

    private func geometry(_ x: Tensor) -> PatchGeometry {
        let ho = (x.h + 2 * padding - kernelH) / stride + 1
        let wo = (x.w + 2 * padding - kernelW) / stride + 1
        let reflect = paddingMode == .reflect && padding > 0
        if reflect {
            precondition(padding < x.h && padding < x.w, "reflection padding \(padding) needs a larger image than \(x.h)x\(x.w)")
        }
        return PatchGeometry(channels: x.c, height: x.h, width: x.w, kh: kernelH, kw: kernelW,
                             stride: stride, padding: padding, gridH: ho, gridW: wo, reflect: reflect)
    }

    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4 && x.c == inChannels, "Conv2d expects (N, \(inChannels), H, W), got \(x.shape)")
        if usesDirect(x, backward: false) {
            input = x
            return directForward(x)
        }
        let started = ConvProfiler.enabled ? DispatchTime.now().uptimeNanoseconds : 0
        // Padding (zeros or reflection) happens inside im2col: no padded copy is made.
        input = x
        let g = geometry(x)
        var out = Tensor(uninitialized: [x.n, outChannels, g.gridH, g.gridW])
        let sg = groupSamples(x.n, g.rows * g.cols)
        // One sample at a time: the columns are made a band of output rows at a time, so that
        // they stay in cache (and a 7×7 convolution of a large image does not need hundreds of
        // megabytes). Several samples: their columns side by side, one GEMM, then scattered.
        let bandRows = sg > 1 ? g.gridH : max(1, min(g.gridH, Conv2d.bandFloats / max(1, g.rows * g.gridW)))
        let colFloats = sg > 1 ? g.rows * sg * g.cols : g.rows * bandRows * g.gridW
        let tmpFloats = sg > 1 ? outChannels * sg * g.cols : 0
        ensureScratch(&scratch, colFloats + tmpFloats)
        let biasValues = bias?.value.data ?? []
        x.data.withUnsafeBufferPointer { xp in
        weight.value.data.withUnsafeBufferPointer { wp in
        biasValues.withUnsafeBufferPointer { bp in
        scratch.withUnsafeMutableBufferPointer { sp in
        out.data.withUnsafeMutableBufferPointer { op in
            let colp = sp.baseAddress!, xb = xp.baseAddress!, w = wp.baseAddress!
            if sg > 1 {
                forwardGrouped(g, n: x.n, samples: sg, xb, w, bias == nil ? nil : bp.baseAddress, colp, colp + colFloats, op.baseAddress!)
            } else {
                forwardBanded(g, n: x.n, bandRows: bandRows, xb, w, bias == nil ? nil : bp, colp, op.baseAddress!)
            }
        }}}}}
        if ConvProfiler.enabled {
            ConvProfiler.record(start: started, flops: 2 * Double(x.n * outChannels * g.rows * g.cols))
        }
        return out
    }

    /// Several samples at a time: their columns side by side, one GEMM into `tmp`, then
    /// scattered to the samples' outputs (with the bias).
    private func forwardGrouped(_ g: PatchGeometry, n: Int, samples sg: Int, _ xb: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                                _ bias: UnsafePointer<Float>?, _ colp: UnsafeMutablePointer<Float>,
                                _ tmp: UnsafeMutablePointer<Float>, _ out: UnsafeMutablePointer<Float>) {
        let imageSize = g.channels * g.height * g.width, outSize = outChannels * g.cols
        var n0 = 0
        while n0 < n {
            let s = min(sg, n - n0), ld = s * g.cols
            trainingParallel(s) { i in
                im2col(g, xb + (n0 + i) * imageSize, colp + i * g.cols, ld: ld)
            }
            trainingGemm(m: outChannels, n: ld, k: g.rows, w, lda: g.rows, colp, ldb: ld, tmp, ldc: ld)
            gdh_group_scatter(tmp, Int32(s), Int32(outChannels), g.cols, bias, out + n0 * outSize)
            n0 += s
        }
    }

    /// One sample at a time, the columns made a band of `bandRows` output rows at a time
    /// (so that they stay in cache); the bias is written first and the GEMM adds to it.
    private func forwardBanded(_ g: PatchGeometry, n count: Int, bandRows: Int, _ xb: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                               _ bias: UnsafeBufferPointer<Float>?, _ colp: UnsafeMutablePointer<Float>,
                               _ out: UnsafeMutablePointer<Float>) {
        let imageSize = g.channels * g.height * g.width, outSize = outChannels * g.cols
        for n in 0..<count {
            let o = out + n * outSize
            if let bias {
                for oc in 0..<outChannels { (o + oc * g.cols).update(repeating: bias[oc], count: g.cols) }
            }
            var y0 = 0
            while y0 < g.gridH {
                let y1 = min(g.gridH, y0 + bandRows)
                let width = (y1 - y0) * g.gridW
                trainingChannels(g.channels) { cs in
                    im2col(g, xb + n * imageSize, colp, gridRows: y0..<y1, channels: cs)
                }
                trainingGemm(m: outChannels, n: width, k: g.rows, w, lda: g.rows,
                     colp, ldb: width, beta: bias == nil ? 0 : 1, o + y0 * g.gridW, ldc: g.cols)
                y0 = y1
            }
        }
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        if usesDirect(input, backward: true) { return directBackward(gradOutput) }
        let x = input
        let g = geometry(x)
        precondition(gradOutput.shape == [x.n, outChannels, g.gridH, g.gridW], "Conv2d.backward: bad gradient shape")
        var dx = Tensor(zeros: x.shape)
        let imageSize = x.c * x.h * x.w, outSize = outChannels * g.cols
        let sg = groupSamples(x.n, g.rows * g.cols)
        let colFloats = g.rows * sg * g.cols, gatherFloats = sg > 1 ? outChannels * sg * g.cols : 0
        ensureScratch(&scratch, colFloats + gatherFloats)
        x.data.withUnsafeBufferPointer { xp in
        gradOutput.data.withUnsafeBufferPointer { gp in
        weight.value.data.withUnsafeBufferPointer { wp in
        weight.grad.data.withUnsafeMutableBufferPointer { dwp in
        scratch.withUnsafeMutableBufferPointer { sp in
        dx.data.withUnsafeMutableBufferPointer { dxp in
            let colp = sp.baseAddress!, gathered = colp + colFloats
            let xb = xp.baseAddress!, dxb = dxp.baseAddress!
            var n0 = 0
            while n0 < x.n {
                let s = min(sg, x.n - n0), ld = s * g.cols
                if s > 1 {
                    trainingParallel(s) { i in im2col(g, xb + (n0 + i) * imageSize, colp + i * g.cols, ld: ld) }
                } else {
                    trainingChannels(g.channels) { cs in im2col(g, xb + n0 * imageSize, colp, channels: cs) }
                }
                let gn: UnsafePointer<Float>
                if s > 1 {
                    gdh_group_gather(gp.baseAddress! + n0 * outSize, Int32(s), Int32(outChannels), g.cols, gathered)
                    gn = UnsafePointer(gathered)
                } else {
                    gn = gp.baseAddress! + n0 * outSize
                }
                // dW += g · colsᵀ
                trainingGemm(transB: true, m: outChannels, n: g.rows, k: ld, gn, lda: ld,
                     colp, ldb: ld, beta: 1, dwp.baseAddress!, ldc: g.rows)
                // dcols = Wᵀ · g (over the columns, which are no longer needed), then back into the images
                trainingGemm(transA: true, m: g.rows, n: ld, k: outChannels, wp.baseAddress!, lda: g.rows,
                     gn, ldb: ld, colp, ldc: ld)
                if s > 1 {
                    trainingParallel(s) { i in col2im(g, colp + i * g.cols, dxb + (n0 + i) * imageSize, ld: ld) }
                } else {
                    trainingChannels(g.channels) { cs in col2im(g, colp, dxb + n0 * imageSize, channels: cs) }
                }
                n0 += s
            }
        }}}}}}
        if let b = bias { addChannelSums(gradOutput, into: b) }
        return dx
    }
}

/// Adds the per-channel sums of an NCHW gradient into a bias gradient.
func addChannelSums(_ g: Tensor, into bias: Parameter) {
    g.data.withUnsafeBufferPointer { gp in
        bias.grad.data.withUnsafeMutableBufferPointer { bp in
            gdh_channel_sums(gp.baseAddress!, Int32(g.n), Int32(g.c), g.h * g.w, bp.baseAddress!)
        }
    }
}

/// out += col2im(Wᵀ · x) for `samples` inputs of `channels` × (gridH·gridW) (out zeroed by
/// the caller; W is channels × rows): a transposed convolution, or a convolution's input
/// gradient. Several samples side by side in one GEMM (`groupSamples`).
func transposedConvolution(_ g: PatchGeometry, samples: Int, channels: Int, _ x: UnsafePointer<Float>,
                           weights: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, scratch: inout [Float]) {
    let inSize = channels * g.cols, outSize = g.channels * g.height * g.width
    let sg = groupSamples(samples, g.rows * g.cols)
    let colFloats = g.rows * sg * g.cols, gatherFloats = sg > 1 ? channels * sg * g.cols : 0
    ensureScratch(&scratch, colFloats + gatherFloats)
    scratch.withUnsafeMutableBufferPointer { sp in
        let colp = sp.baseAddress!, gathered = colp + colFloats
        var n0 = 0
        while n0 < samples {
            let s = min(sg, samples - n0), ld = s * g.cols
            let xn: UnsafePointer<Float>
            if s > 1 {
                gdh_group_gather(x + n0 * inSize, Int32(s), Int32(channels), g.cols, gathered)
                xn = UnsafePointer(gathered)
            } else {
                xn = x + n0 * inSize
            }
            // cols = Wᵀ · x, then into the output images
            trainingGemm(transA: true, m: g.rows, n: ld, k: channels, weights, lda: g.rows, xn, ldb: ld, colp, ldc: ld)
            if s > 1 {
                trainingParallel(s) { i in col2im(g, colp + i * g.cols, out + (n0 + i) * outSize, ld: ld) }
            } else {
                trainingChannels(g.channels) { cs in col2im(g, colp, out + n0 * outSize, channels: cs) }
            }
            n0 += s
        }
    }
}

/// Transposed 2-D convolution, PyTorch `nn.ConvTranspose2d` (dilation 1, groups 1):
/// weight (in, out, kh, kw), bias (out); output size (H−1)·stride − 2·padding + k + outputPadding.
/// Its forward is the data gradient of a convolution: cols = Wᵀ · x_n, then col2im.
public final class ConvTranspose2d: Layer {
    public let inChannels, outChannels, kernel, stride, padding, outputPadding: Int
    public let weight: Parameter   // (in, out, k, k)
    public let bias: Parameter?    // (out)
    public var training = true
    private var input = Tensor(zeros: [0])
    private var scratch: [Float] = []

    public init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0,
                outputPadding: Int = 0, bias: Bool = true) {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.outputPadding = outputPadding
        weight = Parameter(Tensor(zeros: [inChannels, outChannels, kernel, kernel]))
        self.bias = bias ? Parameter(Tensor(zeros: [outChannels])) : nil
    }

    public var parameters: [(String, Parameter)] {
        [("weight", weight)] + (bias.map { [("bias", $0)] } ?? [])
    }

    private func geometry(_ x: Tensor) -> PatchGeometry {
        let ho = (x.h - 1) * stride - 2 * padding + kernel + outputPadding
        let wo = (x.w - 1) * stride - 2 * padding + kernel + outputPadding
        return PatchGeometry(channels: outChannels, height: ho, width: wo, kh: kernel, kw: kernel,
                             stride: stride, padding: padding, gridH: x.h, gridW: x.w)
    }

    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4 && x.c == inChannels, "ConvTranspose2d expects (N, \(inChannels), H, W), got \(x.shape)")
        let started = ConvProfiler.enabled ? DispatchTime.now().uptimeNanoseconds : 0
        input = x
        let g = geometry(x)
        var out = Tensor(zeros: [x.n, outChannels, g.height, g.width])
        x.data.withUnsafeBufferPointer { xp in
        weight.value.data.withUnsafeBufferPointer { wp in
        out.data.withUnsafeMutableBufferPointer { op in
            transposedConvolution(g, samples: x.n, channels: inChannels, xp.baseAddress!, weights: wp.baseAddress!,
                                  into: op.baseAddress!, scratch: &scratch)
        }}}
        if ConvProfiler.enabled {
            ConvProfiler.record(start: started, flops: 2 * Double(x.n * inChannels * g.rows * g.cols))
        }
        if let b = bias {
            out.data.withUnsafeMutableBufferPointer { op in
                b.value.data.withUnsafeBufferPointer { bp in
                    gdh_add_channel_bias(op.baseAddress!, Int32(x.n), Int32(outChannels), g.height * g.width, bp.baseAddress!)
                }
            }
        }
        return out
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        let x = input
        let g = geometry(x)
        var dx = Tensor(uninitialized: x.shape)
        let inSize = inChannels * g.cols, outSize = outChannels * g.height * g.width
        let sg = groupSamples(x.n, g.rows * g.cols)
        let colFloats = g.rows * sg * g.cols, gatherFloats = sg > 1 ? 2 * inChannels * sg * g.cols : 0
        ensureScratch(&scratch, colFloats + gatherFloats)
        x.data.withUnsafeBufferPointer { xp in
        gradOutput.data.withUnsafeBufferPointer { gp in
        weight.value.data.withUnsafeBufferPointer { wp in
        weight.grad.data.withUnsafeMutableBufferPointer { dwp in
        scratch.withUnsafeMutableBufferPointer { sp in
        dx.data.withUnsafeMutableBufferPointer { dxp in
            let colp = sp.baseAddress!, gathered = colp + colFloats, dxg = gathered + inChannels * sg * g.cols
            let gb = gp.baseAddress!
            var n0 = 0
            while n0 < x.n {
                let s = min(sg, x.n - n0), ld = s * g.cols
                if s > 1 {
                    trainingParallel(s) { i in im2col(g, gb + (n0 + i) * outSize, colp + i * g.cols, ld: ld) }
                } else {
                    trainingChannels(g.channels) { cs in im2col(g, gb + n0 * outSize, colp, channels: cs) }
                }
                let xn: UnsafePointer<Float>
                if s > 1 {
                    gdh_group_gather(xp.baseAddress! + n0 * inSize, Int32(s), Int32(inChannels), g.cols, gathered)
                    xn = UnsafePointer(gathered)
                    // dx = W · cols(g)
                    trainingGemm(m: inChannels, n: ld, k: g.rows, wp.baseAddress!, lda: g.rows, colp, ldb: ld, dxg, ldc: ld)
                    gdh_group_scatter(dxg, Int32(s), Int32(inChannels), g.cols, nil, dxp.baseAddress! + n0 * inSize)
                } else {
                    xn = xp.baseAddress! + n0 * inSize
                    trainingGemm(m: inChannels, n: g.cols, k: g.rows, wp.baseAddress!, lda: g.rows,
                         colp, ldb: g.cols, dxp.baseAddress! + n0 * inSize, ldc: g.cols)
                }
                // dW += x · cols(g)ᵀ
                trainingGemm(transB: true, m: inChannels, n: g.rows, k: ld, xn, lda: ld,
                     colp, ldb: ld, beta: 1, dwp.baseAddress!, ldc: g.rows)
                n0 += s
            }
        }}}}}}
        if let b = bias { addChannelSums(gradOutput, into: b) }
        return dx
    }
}

// MARK: - Padding

@inline(__always)
func reflectIndex(_ i: Int, _ n: Int) -> Int {
    i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i)
}

/// Reflection padding by p on each side of H and W (p < H, p < W), as `nn.ReflectionPad2d`.
func reflectionPad(_ x: Tensor, _ p: Int) -> Tensor {
    precondition(p < x.h && p < x.w, "reflection padding \(p) needs a larger image than \(x.h)x\(x.w)")
    let ho = x.h + 2 * p, wo = x.w + 2 * p
    var out = Tensor(uninitialized: [x.n, x.c, ho, wo])
    let columns = (0..<wo).map { reflectIndex($0 - p, x.w) }
    x.data.withUnsafeBufferPointer { xp in
        out.data.withUnsafeMutableBufferPointer { op in
            for plane in 0..<(x.n * x.c) {
                let src = plane * x.h * x.w, dst = plane * ho * wo
                for oy in 0..<ho {
                    let row = xp.baseAddress! + src + reflectIndex(oy - p, x.h) * x.w
                    let o = op.baseAddress! + dst + oy * wo
                    // The middle of the row is a straight copy; only the borders reflect.
                    (o + p).update(from: row, count: x.w)
                    for ox in 0..<p { o[ox] = row[columns[ox]] }
                    for ox in (p + x.w)..<wo { o[ox] = row[columns[ox]] }
                }
            }
        }
    }
    return out
}

func reflectionPadBackward(_ g: Tensor, _ p: Int) -> Tensor {
    let h = g.h - 2 * p, w = g.w - 2 * p
    var dx = Tensor(uninitialized: [g.n, g.c, h, w])
    g.data.withUnsafeBufferPointer { gp in
        dx.data.withUnsafeMutableBufferPointer { dp in
            gdh_reflection_pad_backward(gp.baseAddress!, Int32(g.n * g.c), Int32(h), Int32(w), Int32(p), dp.baseAddress!)
        }
    }
    return dx
}

/// `nn.ReflectionPad2d(p)`.
public final class ReflectionPad2d: StatelessLayer, Layer {
    public let padding: Int
    public init(_ padding: Int) { self.padding = padding }
    public func forward(_ x: Tensor) -> Tensor { reflectionPad(x, padding) }
    public func backward(_ g: Tensor) -> Tensor { reflectionPadBackward(g, padding) }
}

/// `nn.ZeroPad2d(p)`.
public final class ZeroPad2d: StatelessLayer, Layer {
    public let padding: Int
    public init(_ padding: Int) { self.padding = padding }

    public func forward(_ x: Tensor) -> Tensor {
        let p = padding, ho = x.h + 2 * p, wo = x.w + 2 * p
        var out = Tensor(zeros: [x.n, x.c, ho, wo])
        for plane in 0..<(x.n * x.c) {
            for y in 0..<x.h {
                for xx in 0..<x.w {
                    out.data[plane * ho * wo + (y + p) * wo + xx + p] = x.data[(plane * x.h + y) * x.w + xx]
                }
            }
        }
        return out
    }

    public func backward(_ g: Tensor) -> Tensor {
        let p = padding, h = g.h - 2 * p, w = g.w - 2 * p
        var dx = Tensor(zeros: [g.n, g.c, h, w])
        for plane in 0..<(g.n * g.c) {
            for y in 0..<h {
                for xx in 0..<w {
                    dx.data[(plane * h + y) * w + xx] = g.data[plane * g.h * g.w + (y + p) * g.w + xx + p]
                }
            }
        }
        return dx
    }
}
