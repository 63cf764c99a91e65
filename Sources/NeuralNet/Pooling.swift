/// `nn.MaxPool2d(kernel, stride, padding)` (padding with −∞); the gradient goes to the
/// first maximum of each window, as in PyTorch.
public final class MaxPool2d: StatelessLayer, Layer {
    public let kernel, stride, padding: Int
    private var argmax: [Int] = []
    private var inputShape: [Int] = []

    public init(kernel: Int, stride: Int? = nil, padding: Int = 0) {
        self.kernel = kernel
        self.stride = stride ?? kernel
        self.padding = padding
    }

    public func forward(_ x: Tensor) -> Tensor {
        let ho = (x.h + 2 * padding - kernel) / stride + 1, wo = (x.w + 2 * padding - kernel) / stride + 1
        var out = Tensor(uninitialized: [x.n, x.c, ho, wo])
        argmax = [Int](repeating: 0, count: out.count)
        inputShape = x.shape
        let h = x.h, w = x.w, k = kernel, s = stride, p = padding
        x.data.withUnsafeBufferPointer { xp in
        out.data.withUnsafeMutableBufferPointer { op in
        argmax.withUnsafeMutableBufferPointer { ap in
            for plane in 0..<(x.n * x.c) {
                let src = plane * h * w
                for oy in 0..<ho {
                    let y0 = max(0, oy * s - p), y1 = min(h, oy * s - p + k)
                    for ox in 0..<wo {
                        let x0 = max(0, ox * s - p), x1 = min(w, ox * s - p + k)
                        var best = -Float.infinity, at = src + y0 * w + x0
                        for iy in y0..<y1 {
                            let row = src + iy * w
                            for ix in x0..<x1 where xp[row + ix] > best {
                                best = xp[row + ix]
                                at = row + ix
                            }
                        }
                        let o = (plane * ho + oy) * wo + ox
                        op[o] = best
                        ap[o] = at
                    }
                }
            }
        }}}
        return out
    }

    public func backward(_ g: Tensor) -> Tensor {
        var dx = Tensor(zeros: inputShape)
        for i in 0..<g.count { dx.data[argmax[i]] += g.data[i] }
        return dx
    }
}

/// Average pooling over the windows [start(i), end(i)) of each axis; shared by
/// `AvgPool2d` (fixed windows, padding counted) and `AdaptiveAvgPool2d`.
private func averagePool(_ x: Tensor, outH: Int, outW: Int,
                         rows: (Int) -> (Int, Int), cols: (Int) -> (Int, Int), divisor: (Int, Int) -> Float) -> Tensor {
    var out = Tensor(zeros: [x.n, x.c, outH, outW])
    for plane in 0..<(x.n * x.c) {
        let src = plane * x.h * x.w
        for oy in 0..<outH {
            let (y0, y1) = rows(oy)
            for ox in 0..<outW {
                let (x0, x1) = cols(ox)
                var s: Float = 0
                for iy in max(0, y0)..<min(x.h, y1) { for ix in max(0, x0)..<min(x.w, x1) { s += x.data[src + iy * x.w + ix] } }
                out.data[(plane * outH + oy) * outW + ox] = s / divisor(oy, ox)
            }
        }
    }
    return out
}

private func averagePoolBackward(_ g: Tensor, inputShape: [Int],
                                 rows: (Int) -> (Int, Int), cols: (Int) -> (Int, Int), divisor: (Int, Int) -> Float) -> Tensor {
    var dx = Tensor(zeros: inputShape)
    let h = inputShape[2], w = inputShape[3]
    for plane in 0..<(g.n * g.c) {
        let dst = plane * h * w
        for oy in 0..<g.h {
            let (y0, y1) = rows(oy)
            for ox in 0..<g.w {
                let (x0, x1) = cols(ox)
                let v = g.data[(plane * g.h + oy) * g.w + ox] / divisor(oy, ox)
                for iy in max(0, y0)..<min(h, y1) { for ix in max(0, x0)..<min(w, x1) { dx.data[dst + iy * w + ix] += v } }
            }
        }
    }
    return dx
}

/// `nn.AvgPool2d(kernel, stride, padding)` with count_include_pad = true.
public final class AvgPool2d: StatelessLayer, Layer {
    public let kernel, stride, padding: Int
    private var inputShape: [Int] = []

    public init(kernel: Int, stride: Int? = nil, padding: Int = 0) {
        self.kernel = kernel
        self.stride = stride ?? kernel
        self.padding = padding
    }

    private func window(_ o: Int) -> (Int, Int) { (o * stride - padding, o * stride - padding + kernel) }

    public func forward(_ x: Tensor) -> Tensor {
        inputShape = x.shape
        let ho = (x.h + 2 * padding - kernel) / stride + 1, wo = (x.w + 2 * padding - kernel) / stride + 1
        let area = Float(kernel * kernel)
        return averagePool(x, outH: ho, outW: wo, rows: window, cols: window, divisor: { _, _ in area })
    }

    public func backward(_ g: Tensor) -> Tensor {
        let area = Float(kernel * kernel)
        return averagePoolBackward(g, inputShape: inputShape, rows: window, cols: window, divisor: { _, _ in area })
    }
}

/// `nn.AdaptiveAvgPool2d((outH, outW))`: window i spans [⌊i·H/outH⌋, ⌈(i+1)·H/outH⌉).
public final class AdaptiveAvgPool2d: StatelessLayer, Layer {
    public let outH, outW: Int
    private var inputShape: [Int] = []

    public init(_ outH: Int, _ outW: Int) {
        self.outH = outH
        self.outW = outW
    }

    private static func window(_ i: Int, _ inSize: Int, _ outSize: Int) -> (Int, Int) {
        (i * inSize / outSize, ((i + 1) * inSize + outSize - 1) / outSize)
    }

    public func forward(_ x: Tensor) -> Tensor {
        inputShape = x.shape
        let h = x.h, w = x.w, oh = outH, ow = outW
        let rows = { Self.window($0, h, oh) }, cols = { Self.window($0, w, ow) }
        return averagePool(x, outH: oh, outW: ow, rows: rows, cols: cols) { oy, ox in
            let (y0, y1) = rows(oy), (x0, x1) = cols(ox)
            return Float((y1 - y0) * (x1 - x0))
        }
    }

    public func backward(_ g: Tensor) -> Tensor {
        let h = inputShape[2], w = inputShape[3], oh = outH, ow = outW
        let rows = { Self.window($0, h, oh) }, cols = { Self.window($0, w, ow) }
        return averagePoolBackward(g, inputShape: inputShape, rows: rows, cols: cols) { oy, ox in
            let (y0, y1) = rows(oy), (x0, x1) = cols(ox)
            return Float((y1 - y0) * (x1 - x0))
        }
    }
}
