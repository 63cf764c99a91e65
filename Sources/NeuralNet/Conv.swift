import Dispatch

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

/// Copies image patches into columns (zeros where the kernel overhangs the border), for
/// the grid rows `gridRows` (all by default): a (channels·kh·kw) × (rows·gridW) matrix.
func im2col(_ g: PatchGeometry, _ img: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>, gridRows: Range<Int>? = nil) {
    let rows = gridRows ?? 0..<g.gridH
    let width = rows.count * g.gridW
    var row = 0
    for c in 0..<g.channels {
        for ki in 0..<g.kh {
            for kj in 0..<g.kw {
                let dst = col + row * width
                for oy in rows {
                    var iy = oy * g.stride - g.padding + ki
                    let d = dst + (oy - rows.lowerBound) * g.gridW
                    if g.reflect {
                        iy = reflectIndex(iy, g.height)
                        let src = img + (c * g.height + iy) * g.width
                        if g.stride == 1 {
                            // The middle of the row is a copy; only the borders reflect.
                            let lo = min(g.gridW, max(0, g.padding - kj))
                            let hi = max(lo, min(g.gridW, g.width + g.padding - kj))
                            if hi > lo { (d + lo).update(from: src + (lo - g.padding + kj), count: hi - lo) }
                            for ox in 0..<lo { d[ox] = src[reflectIndex(ox - g.padding + kj, g.width)] }
                            for ox in hi..<g.gridW { d[ox] = src[reflectIndex(ox - g.padding + kj, g.width)] }
                        } else {
                            for ox in 0..<g.gridW { d[ox] = src[reflectIndex(ox * g.stride - g.padding + kj, g.width)] }
                        }
                        continue
                    }
                    if iy < 0 || iy >= g.height {
                        d.update(repeating: 0, count: g.gridW)
                        continue
                    }
                    let src = img + (c * g.height + iy) * g.width
                    if g.stride == 1 {
                        // Stride 1: the row is a plain copy between zero borders.
                        let lo = min(g.gridW, max(0, g.padding - kj))
                        let hi = max(lo, min(g.gridW, g.width + g.padding - kj))
                        if lo > 0 { d.update(repeating: 0, count: lo) }
                        if hi > lo { (d + lo).update(from: src + (lo - g.padding + kj), count: hi - lo) }
                        if hi < g.gridW { (d + hi).update(repeating: 0, count: g.gridW - hi) }
                        continue
                    }
                    for ox in 0..<g.gridW {
                        let ix = ox * g.stride - g.padding + kj
                        d[ox] = (ix >= 0 && ix < g.width) ? src[ix] : 0
                    }
                }
                row += 1
            }
        }
    }
}

/// The adjoint of `im2col`: adds every column entry back into its image position.
func col2im(_ g: PatchGeometry, _ col: UnsafePointer<Float>, _ img: UnsafeMutablePointer<Float>) {
    var row = 0
    for c in 0..<g.channels {
        for ki in 0..<g.kh {
            for kj in 0..<g.kw {
                let src = col + row * g.cols
                for oy in 0..<g.gridH {
                    let iy = oy * g.stride - g.padding + ki
                    if iy < 0 || iy >= g.height { continue }
                    let dst = img + (c * g.height + iy) * g.width
                    let s = src + oy * g.gridW
                    for ox in 0..<g.gridW {
                        let ix = ox * g.stride - g.padding + kj
                        if ix >= 0 && ix < g.width { dst[ix] += s[ox] }
                    }
                }
                row += 1
            }
        }
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

    private var input = Tensor(zeros: [0])   // the (padded) input of the last forward
    private var scratch: [Float] = []
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
        let p = paddingMode == .zeros ? padding : 0
        let ho = (x.h + 2 * p - kernelH) / stride + 1
        let wo = (x.w + 2 * p - kernelW) / stride + 1
        return PatchGeometry(channels: x.c, height: x.h, width: x.w, kh: kernelH, kw: kernelW,
                             stride: stride, padding: p, gridH: ho, gridW: wo)
    }

    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4 && x.c == inChannels, "Conv2d expects (N, \(inChannels), H, W), got \(x.shape)")
        let started = ConvProfiler.enabled ? DispatchTime.now().uptimeNanoseconds : 0
        // Reflection padding happens inside im2col: no padded copy of the input is made.
        let xin = x
        input = x
        var g = geometry(x)
        if paddingMode == .reflect && padding > 0 {
            g.padding = padding
            g.reflect = true
            g.gridH = (x.h + 2 * padding - kernelH) / stride + 1
            g.gridW = (x.w + 2 * padding - kernelW) / stride + 1
        }
        var out = Tensor(uninitialized: [xin.n, outChannels, g.gridH, g.gridW])
        // The columns are made a band of output rows at a time, so that they stay in cache
        // (and a 7×7 convolution of a large image does not need hundreds of megabytes).
        let bandRows = max(1, min(g.gridH, Conv2d.bandFloats / max(1, g.rows * g.gridW)))
        if scratch.count < g.rows * bandRows * g.gridW {
            scratch = [Float](unsafeUninitializedCapacity: g.rows * bandRows * g.gridW) { _, n in n = g.rows * bandRows * g.gridW }
        }
        let imageSize = xin.c * xin.h * xin.w, outSize = outChannels * g.cols
        xin.data.withUnsafeBufferPointer { xp in
        weight.value.data.withUnsafeBufferPointer { wp in
        scratch.withUnsafeMutableBufferPointer { colp in
        out.data.withUnsafeMutableBufferPointer { op in
            for n in 0..<xin.n {
                let o = op.baseAddress! + n * outSize
                if let b = bias {
                    for oc in 0..<outChannels {
                        (o + oc * g.cols).update(repeating: b.value.data[oc], count: g.cols)
                    }
                }
                var y0 = 0
                while y0 < g.gridH {
                    let y1 = min(g.gridH, y0 + bandRows)
                    let width = (y1 - y0) * g.gridW
                    im2col(g, xp.baseAddress! + n * imageSize, colp.baseAddress!, gridRows: y0..<y1)
                    gemm(m: outChannels, n: width, k: g.rows, wp.baseAddress!, lda: g.rows,
                         colp.baseAddress!, ldb: width, beta: bias == nil ? 0 : 1, o + y0 * g.gridW, ldc: g.cols)
                    y0 = y1
                }
            }
        }}}}
        if ConvProfiler.enabled {
            ConvProfiler.record(start: started, flops: 2 * Double(xin.n * outChannels * g.rows * g.cols))
        }
        return out
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        let xin = paddingMode == .reflect && padding > 0 ? reflectionPad(input, padding) : input
        let g = geometry(xin)
        precondition(gradOutput.shape == [xin.n, outChannels, g.gridH, g.gridW], "Conv2d.backward: bad gradient shape")
        var dx = Tensor(zeros: xin.shape)
        var dcol = [Float](repeating: 0, count: g.rows * g.cols)
        if scratch.count < g.rows * g.cols { scratch = [Float](repeating: 0, count: g.rows * g.cols) }
        let imageSize = xin.c * xin.h * xin.w, outSize = outChannels * g.cols
        xin.data.withUnsafeBufferPointer { xp in
        gradOutput.data.withUnsafeBufferPointer { gp in
        weight.value.data.withUnsafeBufferPointer { wp in
        weight.grad.data.withUnsafeMutableBufferPointer { dwp in
        scratch.withUnsafeMutableBufferPointer { colp in
        dcol.withUnsafeMutableBufferPointer { dcolp in
        dx.data.withUnsafeMutableBufferPointer { dxp in
            for n in 0..<xin.n {
                let gn = gp.baseAddress! + n * outSize
                im2col(g, xp.baseAddress! + n * imageSize, colp.baseAddress!)
                // dW += g_n · colsᵀ
                gemm(transB: true, m: outChannels, n: g.rows, k: g.cols, gn, lda: g.cols,
                     colp.baseAddress!, ldb: g.cols, beta: 1, dwp.baseAddress!, ldc: g.rows)
                // dcols = Wᵀ · g_n, then back into the image
                gemm(transA: true, m: g.rows, n: g.cols, k: outChannels, wp.baseAddress!, lda: g.rows,
                     gn, ldb: g.cols, dcolp.baseAddress!, ldc: g.cols)
                col2im(g, dcolp.baseAddress!, dxp.baseAddress! + n * imageSize)
            }
        }}}}}}}
        if let b = bias { addChannelSums(gradOutput, into: b) }
        return paddingMode == .reflect && padding > 0 ? reflectionPadBackward(dx, padding) : dx
    }
}

/// Adds the per-channel sums of an NCHW gradient into a bias gradient.
func addChannelSums(_ g: Tensor, into bias: Parameter) {
    let plane = g.h * g.w
    for n in 0..<g.n {
        for c in 0..<g.c {
            var s: Float = 0
            let base = (n * g.c + c) * plane
            for i in 0..<plane { s += g.data[base + i] }
            bias.grad.data[c] += s
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
        var col = [Float](unsafeUninitializedCapacity: g.rows * g.cols) { _, n in n = g.rows * g.cols }
        let inSize = inChannels * g.cols, outSize = outChannels * g.height * g.width
        x.data.withUnsafeBufferPointer { xp in
        weight.value.data.withUnsafeBufferPointer { wp in
        col.withUnsafeMutableBufferPointer { colp in
        out.data.withUnsafeMutableBufferPointer { op in
            for n in 0..<x.n {
                gemm(transA: true, m: g.rows, n: g.cols, k: inChannels, wp.baseAddress!, lda: g.rows,
                     xp.baseAddress! + n * inSize, ldb: g.cols, colp.baseAddress!, ldc: g.cols)
                col2im(g, colp.baseAddress!, op.baseAddress! + n * outSize)
            }
        }}}}
        if ConvProfiler.enabled {
            ConvProfiler.record(start: started, flops: 2 * Double(x.n * inChannels * g.rows * g.cols))
        }
        if let b = bias {
            let plane = g.height * g.width
            for n in 0..<x.n {
                for c in 0..<outChannels {
                    let v = b.value.data[c], base = (n * outChannels + c) * plane
                    for i in 0..<plane { out.data[base + i] += v }
                }
            }
        }
        return out
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        let x = input
        let g = geometry(x)
        var dx = Tensor(zeros: x.shape)
        var col = [Float](repeating: 0, count: g.rows * g.cols)
        let inSize = inChannels * g.cols, outSize = outChannels * g.height * g.width
        x.data.withUnsafeBufferPointer { xp in
        gradOutput.data.withUnsafeBufferPointer { gp in
        weight.value.data.withUnsafeBufferPointer { wp in
        weight.grad.data.withUnsafeMutableBufferPointer { dwp in
        col.withUnsafeMutableBufferPointer { colp in
        dx.data.withUnsafeMutableBufferPointer { dxp in
            for n in 0..<x.n {
                im2col(g, gp.baseAddress! + n * outSize, colp.baseAddress!)
                // dx_n = W · cols(g_n)
                gemm(m: inChannels, n: g.cols, k: g.rows, wp.baseAddress!, lda: g.rows,
                     colp.baseAddress!, ldb: g.cols, dxp.baseAddress! + n * inSize, ldc: g.cols)
                // dW += x_n · cols(g_n)ᵀ
                gemm(transB: true, m: inChannels, n: g.rows, k: g.cols, xp.baseAddress! + n * inSize, lda: g.cols,
                     colp.baseAddress!, ldb: g.cols, beta: 1, dwp.baseAddress!, ldc: g.rows)
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
    var dx = Tensor(zeros: [g.n, g.c, h, w])
    for plane in 0..<(g.n * g.c) {
        let src = plane * g.h * g.w, dst = plane * h * w
        for oy in 0..<g.h {
            let iy = reflectIndex(oy - p, h)
            for ox in 0..<g.w {
                dx.data[dst + iy * w + reflectIndex(ox - p, w)] += g.data[src + oy * g.w + ox]
            }
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
