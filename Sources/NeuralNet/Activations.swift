import CNeuralKernels
import Foundation

/// An element-wise activation: y = f(x), dx = g · f′ (from the kept input or output).
public final class Activation: StatelessLayer, Layer {
    /// The function: `relu6` is `nn.ReLU6` (hardtanh(0, 6)), whose gradient passes where
    /// 0 < x < 6 (zero at both ends, as PyTorch's hardtanh_backward).
    public enum Kind: Equatable, Sendable {
        case relu
        case relu6
        case leakyReLU(Float)
        case tanh
        case sigmoid
    }

    public let kind: Kind
    private var kept = Tensor(zeros: [0])   // input (ReLU kinds) or output (tanh, sigmoid)

    public init(_ kind: Kind) { self.kind = kind }

    private var code: (Int32, Float) { activationCode(kind) }

    public func forward(_ x: Tensor) -> Tensor {
        var y = Tensor(uninitialized: x.shape)
        let (act, slope) = code
        x.data.withUnsafeBufferPointer { xp in
            y.data.withUnsafeMutableBufferPointer { yp in
                let x = xp.baseAddress!, y = yp.baseAddress!
                elementParallel(xp.count) { r in gdh_activation_forward(x + r.lowerBound, y + r.lowerBound, r.count, act, slope) }
            }
        }
        switch kind {
        case .relu, .relu6, .leakyReLU: kept = x
        case .tanh, .sigmoid: kept = y
        }
        return y
    }

    public func backward(_ g: Tensor) -> Tensor {
        precondition(g.count == kept.count, "Activation.backward: gradient of \(g.shape) for an output of \(kept.shape)")
        var dx = Tensor(uninitialized: g.shape)
        let (act, slope) = code
        g.data.withUnsafeBufferPointer { gp in
        kept.data.withUnsafeBufferPointer { kp in
        dx.data.withUnsafeMutableBufferPointer { dp in
            let g = gp.baseAddress!, k = kp.baseAddress!, d = dp.baseAddress!
            elementParallel(gp.count) { r in
                gdh_activation_backward(g + r.lowerBound, k + r.lowerBound, d + r.lowerBound, r.count, act, slope)
            }
        }}}
        return dx
    }
}

/// Softmax over one dimension (`dim`), as `torch.softmax(x, dim)`.
public final class Softmax: StatelessLayer, Layer {
    public let dim: Int
    private var y = Tensor(zeros: [0])

    public init(dim: Int) { self.dim = dim }

    /// (outer, length, inner) for the softmax dimension of `shape`.
    private func split(_ shape: [Int]) -> (Int, Int, Int) {
        let d = dim < 0 ? shape.count + dim : dim
        return (shape[..<d].reduce(1, *), shape[d], shape[(d + 1)...].reduce(1, *))
    }

    public func forward(_ x: Tensor) -> Tensor {
        let (outer, len, inner) = split(x.shape)
        var out = x
        for o in 0..<outer {
            for i in 0..<inner {
                let base = o * len * inner + i
                var mx = -Float.infinity
                for k in 0..<len { mx = max(mx, x.data[base + k * inner]) }
                var s: Float = 0
                for k in 0..<len { let e = exp(x.data[base + k * inner] - mx); out.data[base + k * inner] = e; s += e }
                for k in 0..<len { out.data[base + k * inner] /= s }
            }
        }
        y = out
        return out
    }

    public func backward(_ g: Tensor) -> Tensor {
        let (outer, len, inner) = split(g.shape)
        var dx = g
        for o in 0..<outer {
            for i in 0..<inner {
                let base = o * len * inner + i
                var dot: Float = 0
                for k in 0..<len { dot += g.data[base + k * inner] * y.data[base + k * inner] }
                for k in 0..<len {
                    let j = base + k * inner
                    dx.data[j] = y.data[j] * (g.data[j] - dot)
                }
            }
        }
        return dx
    }
}
