import CNeuralKernels
import Foundation

/// Runs body over parts of the channels of x, one per training thread when x has at least
/// 64k elements and a channel for each thread.
@inline(__always)
func normChannels(_ x: Tensor, _ body: (Range<Int>) -> Void) {
    let t = x.count >= 1 << 16 ? min(trainingThreads, x.c) : 1
    parallel(t, t) { body(split(x.c, t, $0)) }
}

/// `nn.BatchNorm2d`: per channel over (N, H, W) in training, with running statistics
/// (momentum, unbiased running variance as PyTorch); running statistics in inference.
public final class BatchNorm2d: Layer {
    public let channels: Int
    public let eps: Float
    public let momentum: Float
    public let weight: Parameter   // γ (C)
    public let bias: Parameter     // β (C)
    public let runningMeanBuffer: Buffer  // (C)
    public let runningVarBuffer: Buffer   // (C)
    public var runningMean: Tensor {
        get { runningMeanBuffer.value }
        set { runningMeanBuffer.value = newValue }
    }
    public var runningVar: Tensor {
        get { runningVarBuffer.value }
        set { runningVarBuffer.value = newValue }
    }
    public var training = true

    /// The last forward's input and statistics; backward recomputes x̂ from them
    /// (cheaper than storing x̂ in every forward, which inference never needs).
    private var input = Tensor(zeros: [0])
    private var mean: [Float] = []
    private var invStd: [Float] = []
    private var usedBatchStats = true

    public init(_ channels: Int, eps: Float = 1e-5, momentum: Float = 0.1) {
        self.channels = channels
        self.eps = eps
        self.momentum = momentum
        weight = Parameter(Tensor(repeating: 1, shape: [channels]))
        bias = Parameter(Tensor(zeros: [channels]))
        runningMeanBuffer = Buffer(Tensor(zeros: [channels]))
        runningVarBuffer = Buffer(Tensor(repeating: 1, shape: [channels]))
    }

    public var parameters: [(String, Parameter)] { [("weight", weight), ("bias", bias)] }
    public var buffers: [(String, Buffer)] { [("running_mean", runningMeanBuffer), ("running_var", runningVarBuffer)] }

    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4 && x.c == channels, "BatchNorm2d expects (N, \(channels), H, W), got \(x.shape)")
        let plane = x.h * x.w
        var mu = [Float](repeating: 0, count: channels)
        var variance = [Float](repeating: 0, count: channels)
        usedBatchStats = training
        if training {
            var unbiased = [Float](repeating: 0, count: channels)
            x.data.withUnsafeBufferPointer { xp in
                mu.withUnsafeMutableBufferPointer { mp in
                variance.withUnsafeMutableBufferPointer { vp in
                unbiased.withUnsafeMutableBufferPointer { up in
                    let (m, v, u) = (mp.baseAddress!, vp.baseAddress!, up.baseAddress!)
                    normChannels(x) { cs in
                        gdh_batchnorm_stats(xp.baseAddress!, Int32(x.n), Int32(channels), plane, m, v, u,
                                            Int32(cs.lowerBound), Int32(cs.upperBound))
                    }
                }}}
            }
            for c in 0..<channels {
                runningMean.data[c] = (1 - momentum) * runningMean.data[c] + momentum * mu[c]
                runningVar.data[c] = (1 - momentum) * runningVar.data[c] + momentum * unbiased[c]
            }
        } else {
            mu = runningMean.data
            variance = runningVar.data
        }
        invStd = variance.map { 1 / sqrt($0 + eps) }
        mean = mu
        input = x
        // y = γ·(x − μ)·σ⁻¹ + β, as one scale and shift per channel.
        var scale = [Float](repeating: 0, count: channels), shift = scale
        for c in 0..<channels {
            scale[c] = weight.value.data[c] * invStd[c]
            shift[c] = bias.value.data[c] - mu[c] * scale[c]
        }
        var out = Tensor(uninitialized: x.shape)
        x.data.withUnsafeBufferPointer { xp in
            out.data.withUnsafeMutableBufferPointer { op in
                scale.withUnsafeBufferPointer { sc in
                shift.withUnsafeBufferPointer { sh in
                    normChannels(x) { cs in
                        gdh_channel_affine(xp.baseAddress!, Int32(x.n), Int32(channels), plane, sc.baseAddress!, sh.baseAddress!,
                                           op.baseAddress!, Int32(cs.lowerBound), Int32(cs.upperBound))
                    }
                }}
            }
        }
        return out
    }

    public func backward(_ g: Tensor) -> Tensor {
        precondition(g.shape == input.shape, "BatchNorm2d.backward: gradient of \(g.shape) for an input of \(input.shape)")
        var dx = Tensor(uninitialized: g.shape)
        input.data.withUnsafeBufferPointer { xp in
        g.data.withUnsafeBufferPointer { gp in
        weight.value.data.withUnsafeBufferPointer { gamma in
        weight.grad.data.withUnsafeMutableBufferPointer { dgamma in
        bias.grad.data.withUnsafeMutableBufferPointer { dbeta in
        dx.data.withUnsafeMutableBufferPointer { dp in
            mean.withUnsafeBufferPointer { mp in
            invStd.withUnsafeBufferPointer { ip in
                normChannels(g) { cs in
                    gdh_batchnorm_backward(xp.baseAddress!, gp.baseAddress!, Int32(g.n), Int32(channels), g.h * g.w,
                                           mp.baseAddress!, ip.baseAddress!, gamma.baseAddress!, usedBatchStats ? 1 : 0,
                                           dgamma.baseAddress!, dbeta.baseAddress!, dp.baseAddress!,
                                           Int32(cs.lowerBound), Int32(cs.upperBound))
                }
            }}
        }}}}}}
        return dx
    }
}

/// `nn.InstanceNorm2d` (track_running_stats = false): per sample and channel over (H, W),
/// in training and inference alike; optional affine γ, β.
public final class InstanceNorm2d: Layer {
    public let channels: Int
    public let eps: Float
    public let weight: Parameter?
    public let bias: Parameter?
    public var training = true

    private var xhat = Tensor(zeros: [0])
    private var invStd: [Float] = []

    public init(_ channels: Int, eps: Float = 1e-5, affine: Bool = false) {
        self.channels = channels
        self.eps = eps
        weight = affine ? Parameter(Tensor(repeating: 1, shape: [channels])) : nil
        bias = affine ? Parameter(Tensor(zeros: [channels])) : nil
    }

    public var parameters: [(String, Parameter)] {
        guard let weight, let bias else { return [] }
        return [("weight", weight), ("bias", bias)]
    }

    public func forward(_ x: Tensor) -> Tensor {
        let plane = x.h * x.w
        var out = Tensor(zeros: x.shape)
        xhat = Tensor(zeros: x.shape)
        invStd = [Float](repeating: 0, count: x.n * channels)
        for n in 0..<x.n {
            for c in 0..<channels {
                let b = (n * channels + c) * plane
                var s: Double = 0
                for i in 0..<plane { s += Double(x.data[b + i]) }
                let mu = s / Double(plane)
                var v: Double = 0
                for i in 0..<plane { let d = Double(x.data[b + i]) - mu; v += d * d }
                let istd = Float(1 / (v / Double(plane) + Double(eps)).squareRoot())
                invStd[n * channels + c] = istd
                let gamma = weight?.value.data[c] ?? 1, beta = bias?.value.data[c] ?? 0
                for i in 0..<plane {
                    let h = Float(Double(x.data[b + i]) - mu) * istd
                    xhat.data[b + i] = h
                    out.data[b + i] = gamma * h + beta
                }
            }
        }
        return out
    }

    public func backward(_ g: Tensor) -> Tensor {
        let plane = g.h * g.w, m = Float(plane)
        var dx = Tensor(zeros: g.shape)
        for n in 0..<g.n {
            for c in 0..<channels {
                let b = (n * channels + c) * plane
                var sumG: Float = 0, sumGX: Float = 0
                for i in 0..<plane { sumG += g.data[b + i]; sumGX += g.data[b + i] * xhat.data[b + i] }
                weight?.grad.data[c] += sumGX
                bias?.grad.data[c] += sumG
                let gamma = weight?.value.data[c] ?? 1, istd = invStd[n * channels + c]
                for i in 0..<plane {
                    dx.data[b + i] = gamma * istd / m * (m * g.data[b + i] - sumG - xhat.data[b + i] * sumGX)
                }
            }
        }
        return dx
    }
}
