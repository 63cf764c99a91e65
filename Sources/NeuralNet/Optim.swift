import CNeuralKernels
import Foundation

/// `torch.optim.Adam` (L2 weight decay added to the gradient, bias-corrected moments).
public final class Adam {
    public var lr: Float
    public let beta1, beta2, eps, weightDecay: Float
    public let parameters: [Parameter]
    /// Each parameter's learning rate is `lr` times its scale (all 1 unless given).
    public let lrScales: [Float]
    private var m: [[Float]], v: [[Float]]
    /// Steps taken (t in the bias corrections).
    public private(set) var steps = 0


    public init(_ parameters: [Parameter], lr: Float = 2e-4, betas: (Float, Float) = (0.5, 0.999),
                eps: Float = 1e-8, weightDecay: Float = 0, lrScales: [Float]? = nil) {
        precondition(lrScales == nil || lrScales!.count == parameters.count, "Adam: one learning-rate scale per parameter")
        self.parameters = parameters
        self.lrScales = lrScales ?? [Float](repeating: 1, count: parameters.count)
        self.lr = lr
        beta1 = betas.0
        beta2 = betas.1
        self.eps = eps
        self.weightDecay = weightDecay
        m = parameters.map { [Float](repeating: 0, count: $0.value.count) }
        v = m
    }

    public func step() {
        steps += 1
        let bc1 = 1 - pow(beta1, Float(steps)), bc2 = 1 - pow(beta2, Float(steps))
        for (k, p) in parameters.enumerated() {
            let count = p.value.count
            precondition(p.grad.count == count && m[k].count == count && v[k].count == count, "Adam: parameter \(k) changed size")
            p.value.data.withUnsafeMutableBufferPointer { pp in
            p.grad.data.withUnsafeBufferPointer { gp in
            m[k].withUnsafeMutableBufferPointer { mp in
            v[k].withUnsafeMutableBufferPointer { vp in
                gdh_adam_step(pp.baseAddress!, gp.baseAddress!, mp.baseAddress!, vp.baseAddress!, count,
                              beta1, beta2, bc1, bc2, lr * lrScales[k], eps, weightDecay)
            }}}}
        }
    }

    public func zeroGrad() { parameters.forEach { $0.zeroGrad() } }

    /// The moments and the step count, for checkpoints: `m[k]`, `v[k]` belong to `parameters[k]`.
    public var moments: (m: [[Float]], v: [[Float]], steps: Int) { (m, v, steps) }

    /// Restores moments saved from an optimiser over parameters of the same shapes.
    public func restore(m newM: [[Float]], v newV: [[Float]], steps newSteps: Int) throws {
        guard newM.count == parameters.count, newV.count == parameters.count,
              zip(parameters, zip(newM, newV)).allSatisfy({ $0.value.count == $1.0.count && $0.value.count == $1.1.count }),
              newSteps >= 0 else {
            throw StateDictError(description: "optimiser state does not fit the parameters")
        }
        m = newM
        v = newV
        steps = newSteps
    }
}

/// `torch.optim.SGD` with momentum (no dampening) and L2 weight decay.
public final class SGD {
    public var lr: Float
    public let momentum, weightDecay: Float
    public let parameters: [Parameter]
    private var buffers: [[Float]?]

    public init(_ parameters: [Parameter], lr: Float, momentum: Float = 0, weightDecay: Float = 0) {
        self.parameters = parameters
        self.lr = lr
        self.momentum = momentum
        self.weightDecay = weightDecay
        buffers = Array(repeating: nil, count: parameters.count)
    }

    public func step() {
        for (k, p) in parameters.enumerated() {
            var d = p.grad.data
            for i in 0..<d.count { d[i] += weightDecay * p.value.data[i] }
            if momentum != 0 {
                if var b = buffers[k] {
                    for i in 0..<d.count { b[i] = momentum * b[i] + d[i] }
                    buffers[k] = b
                    d = b
                } else {
                    buffers[k] = d
                }
            }
            for i in 0..<d.count { p.value.data[i] -= lr * d[i] }
        }
    }

    public func zeroGrad() { parameters.forEach { $0.zeroGrad() } }
}

/// Weight initialisers.
public enum Initializer {
    /// N(mean, std), the GAN convention N(0, 0.02).
    public static func normal(_ t: inout Tensor, mean: Float = 0, std: Float = 0.02, using rng: inout some RandomNumberGenerator) {
        for i in stride(from: 0, to: t.count, by: 2) {
            // Box–Muller: two normal values from two uniform ones.
            let u1 = max(Float.random(in: 0..<1, using: &rng), .leastNormalMagnitude)
            let u2 = Float.random(in: 0..<1, using: &rng)
            let r = (-2 * log(u1)).squareRoot()
            t.data[i] = mean + std * r * cos(2 * .pi * u2)
            if i + 1 < t.count { t.data[i + 1] = mean + std * r * sin(2 * .pi * u2) }
        }
    }
}
