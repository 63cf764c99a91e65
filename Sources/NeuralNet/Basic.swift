/// `nn.Linear(in, out)`: y = x·Wᵀ + b for x (N, in), W (out, in), b (out).
public final class Linear: Layer {
    public let inFeatures, outFeatures: Int
    public let weight: Parameter
    public let bias: Parameter?
    public var training = true
    private var input = Tensor(zeros: [0])

    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true) {
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        weight = Parameter(Tensor(zeros: [outFeatures, inFeatures]))
        self.bias = bias ? Parameter(Tensor(zeros: [outFeatures])) : nil
    }

    public var parameters: [(String, Parameter)] {
        [("weight", weight)] + (bias.map { [("bias", $0)] } ?? [])
    }

    public func forward(_ x: Tensor) -> Tensor {
        let n = x.count / inFeatures
        precondition(n * inFeatures == x.count, "Linear expects (N, \(inFeatures)), got \(x.shape)")
        input = x
        var y = Tensor(zeros: [n, outFeatures])
        if let b = bias { for i in 0..<n { for o in 0..<outFeatures { y.data[i * outFeatures + o] = b.value.data[o] } } }
        x.data.withUnsafeBufferPointer { xp in
        weight.value.data.withUnsafeBufferPointer { wp in
        y.data.withUnsafeMutableBufferPointer { yp in
            gemm(transB: true, m: n, n: outFeatures, k: inFeatures, xp.baseAddress!, lda: inFeatures,
                 wp.baseAddress!, ldb: inFeatures, beta: bias == nil ? 0 : 1, yp.baseAddress!, ldc: outFeatures)
        }}}
        return y
    }

    public func backward(_ g: Tensor) -> Tensor {
        let n = g.count / outFeatures
        var dx = Tensor(zeros: input.shape)
        input.data.withUnsafeBufferPointer { xp in
        g.data.withUnsafeBufferPointer { gp in
        weight.value.data.withUnsafeBufferPointer { wp in
        weight.grad.data.withUnsafeMutableBufferPointer { dwp in
        dx.data.withUnsafeMutableBufferPointer { dxp in
            gemm(m: n, n: inFeatures, k: outFeatures, gp.baseAddress!, lda: outFeatures,
                 wp.baseAddress!, ldb: inFeatures, dxp.baseAddress!, ldc: inFeatures)
            gemm(transA: true, m: outFeatures, n: inFeatures, k: n, gp.baseAddress!, lda: outFeatures,
                 xp.baseAddress!, ldb: inFeatures, beta: 1, dwp.baseAddress!, ldc: inFeatures)
        }}}}}
        if let b = bias { for i in 0..<n { for o in 0..<outFeatures { b.grad.data[o] += g.data[i * outFeatures + o] } } }
        return dx
    }
}

/// Element-wise sum of two tensors (a residual connection); both get the gradient.
public enum Residual {
    public static func add(_ a: Tensor, _ b: Tensor) -> Tensor {
        var y = a
        y.accumulate(b)
        return y
    }
}

/// `nn.Upsample(scale_factor: s, mode: nearest | bilinear)`, bilinear with
/// align_corners = false (source = (dst + 0.5) / s − 0.5, clamped at 0).
public final class Upsample: StatelessLayer, Layer {
    public enum Mode: Sendable { case nearest, bilinear }
    public let scale: Int
    public let mode: Mode
    private var inputShape: [Int] = []

    public init(scale: Int, mode: Mode) {
        self.scale = scale
        self.mode = mode
    }

    /// For output index o: the two source indices and the weight of the second.
    private func taps(_ o: Int, _ size: Int) -> (Int, Int, Float) {
        let src = max(0, (Float(o) + 0.5) / Float(scale) - 0.5)
        let i0 = min(Int(src), size - 1)
        let i1 = min(i0 + 1, size - 1)
        return (i0, i1, src - Float(i0))
    }

    public func forward(_ x: Tensor) -> Tensor {
        inputShape = x.shape
        let ho = x.h * scale, wo = x.w * scale
        var out = Tensor(zeros: [x.n, x.c, ho, wo])
        for plane in 0..<(x.n * x.c) {
            let src = plane * x.h * x.w, dst = plane * ho * wo
            for oy in 0..<ho {
                for ox in 0..<wo {
                    let v: Float
                    switch mode {
                    case .nearest:
                        v = x.data[src + (oy / scale) * x.w + ox / scale]
                    case .bilinear:
                        let (y0, y1, fy) = taps(oy, x.h), (x0, x1, fx) = taps(ox, x.w)
                        let top = x.data[src + y0 * x.w + x0] * (1 - fx) + x.data[src + y0 * x.w + x1] * fx
                        let bottom = x.data[src + y1 * x.w + x0] * (1 - fx) + x.data[src + y1 * x.w + x1] * fx
                        v = top * (1 - fy) + bottom * fy
                    }
                    out.data[dst + oy * wo + ox] = v
                }
            }
        }
        return out
    }

    public func backward(_ g: Tensor) -> Tensor {
        var dx = Tensor(zeros: inputShape)
        let h = inputShape[2], w = inputShape[3]
        for plane in 0..<(g.n * g.c) {
            let src = plane * g.h * g.w, dst = plane * h * w
            for oy in 0..<g.h {
                for ox in 0..<g.w {
                    let v = g.data[src + oy * g.w + ox]
                    switch mode {
                    case .nearest:
                        dx.data[dst + (oy / scale) * w + ox / scale] += v
                    case .bilinear:
                        let (y0, y1, fy) = taps(oy, h), (x0, x1, fx) = taps(ox, w)
                        dx.data[dst + y0 * w + x0] += v * (1 - fy) * (1 - fx)
                        dx.data[dst + y0 * w + x1] += v * (1 - fy) * fx
                        dx.data[dst + y1 * w + x0] += v * fy * (1 - fx)
                        dx.data[dst + y1 * w + x1] += v * fy * fx
                    }
                }
            }
        }
        return dx
    }
}

/// `nn.Dropout(p)`: in training, zeroes each value with probability p and scales the
/// rest by 1/(1−p); the identity in inference. `mask` may be set to replay a mask.
public final class Dropout: StatelessLayer, Layer {
    public let p: Float
    public var mask: Tensor?
    public var generator: any RandomNumberGenerator = SystemRandomNumberGenerator()

    public init(p: Float) { self.p = p }

    public func forward(_ x: Tensor) -> Tensor {
        guard training, p > 0 else { mask = nil; return x }
        if mask?.shape != x.shape {
            var m = Tensor(zeros: x.shape)
            for i in 0..<m.count { m.data[i] = Float.random(in: 0..<1, using: &generator) >= p ? 1 : 0 }
            mask = m
        }
        var y = x
        let scale = 1 / (1 - p)
        for i in 0..<y.count { y.data[i] *= mask!.data[i] * scale }
        return y
    }

    public func backward(_ g: Tensor) -> Tensor {
        guard let mask else { return g }
        var dx = g
        let scale = 1 / (1 - p)
        for i in 0..<dx.count { dx.data[i] *= mask.data[i] * scale }
        return dx
    }
}

/// (N, C, H, W) → (N, C·H·W), and back for the gradient.
public final class Flatten: StatelessLayer, Layer {
    private var shape: [Int] = []
    public override init() {}
    public func forward(_ x: Tensor) -> Tensor {
        shape = x.shape
        return x.reshaped([x.shape[0], x.count / x.shape[0]])
    }
    public func backward(_ g: Tensor) -> Tensor { g.reshaped(shape) }
}
