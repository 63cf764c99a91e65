// The other steps of the inference plans: InstanceNorm, residual add, attention mask,
// pooling, linear, and the fallback through a layer's own forward.
import CNeuralKernels
import Dispatch
import Foundation

final class InstanceNormStep: PlanStep {
    let input: Int, output: Int, residual: Int?, c: Int, plane: Int
    let eps: Float
    let gamma: [Float]?, beta: [Float]?
    let act: Int32, slope: Float
    var inputs: [Int] { [input] + (residual.map { [$0] } ?? []) }
    var scratchFloats: Int { 0 }
    var label: String { "instance norm \(c)" }

    init(_ norm: InstanceNorm2d, input: PlanValue, residual: PlanValue?, output: PlanValue, activation: Activation.Kind?) {
        if let r = residual { precondition(r.shape == input.shape, "residual \(r.shape) does not fit \(input.shape)") }
        self.input = input.id; self.output = output.id; self.residual = residual?.id
        c = input.c; plane = input.h * input.w; eps = norm.eps
        gamma = norm.weight?.value.data
        beta = norm.bias?.value.data
        (act, slope) = activationCode(activation)
    }

    func run(_ m: PlanMemory) {
        let threads = c * plane * 8 >= m.parallelWork ? m.threads : 1
        let x = m[input], y = m[output], res = residual.map { UnsafePointer(m[$0]) }
        func go(_ g: UnsafePointer<Float>?, _ b: UnsafePointer<Float>?) {
            parallel(threads, threads) { i in
                let r = split(c, threads, i)
                gdh_instance_norm(x, plane, eps, g, b, res, act, slope, y, Int32(r.lowerBound), Int32(r.upperBound))
            }
        }
        if let gamma, let beta {
            gamma.withUnsafeBufferPointer { g in beta.withUnsafeBufferPointer { b in go(g.baseAddress, b.baseAddress) } }
        } else {
            go(nil, nil)
        }
    }
}

final class AddStep: PlanStep {
    let a: Int, b: Int, output: Int, size: Int
    let act: Int32, slope: Float
    var inputs: [Int] { [a, b] }
    var scratchFloats: Int { 0 }
    var label: String { "add" }

    init(a: PlanValue, b: PlanValue, output: PlanValue, activation: Activation.Kind?) {
        self.a = a.id; self.b = b.id; self.output = output.id; size = a.size
        (act, slope) = activationCode(activation)
    }

    func run(_ m: PlanMemory) {
        gdh_conv_epilogue(m[a], Int(size), Int(size), 1, Int32(size), nil, m[b], Int(size), act, slope, m[output], Int(size), 0, Int(size), 1, 0, 1)
    }
}

final class MaskStep: PlanStep {
    let input: Int, mask: Int, output: Int, c: Int, plane: Int
    var inputs: [Int] { [input, mask] }
    var scratchFloats: Int { 0 }
    var label: String { "mask" }

    init(input: PlanValue, mask: PlanValue, output: PlanValue) {
        self.input = input.id; self.mask = mask.id; self.output = output.id
        c = input.c; plane = input.h * input.w
    }

    func run(_ m: PlanMemory) {
        let x = m[input], k = m[mask], y = m[output]
        for ch in 0..<c {
            let xs = x + ch * plane, ys = y + ch * plane
            for i in 0..<plane { ys[i] = xs[i] * k[i] }
        }
    }
}

final class MaxPoolStep: PlanStep {
    let input: Int, output: Int, c, h, w, k, stride, pad, ho, wo: Int
    var inputs: [Int] { [input] }
    var scratchFloats: Int { 0 }
    var label: String { "maxpool" }

    init(_ pool: MaxPool2d, input: PlanValue, output: PlanValue) {
        self.input = input.id; self.output = output.id
        c = input.c; h = input.h; w = input.w; k = pool.kernel; stride = pool.stride; pad = pool.padding
        ho = output.h; wo = output.w
    }

    func run(_ m: PlanMemory) {
        // Bands of output rows: after a convolution split the same way, each thread mostly
        // reads rows it wrote itself.
        // (From 16k input values at the default parallelWork: pooling is cheap per value.)
        let threads = c * h * w * 25 >= m.parallelWork ? min(m.threads, ho) : 1
        let src = m[input], dst = m[output]
        parallel(threads, threads) { i in
            let r = split(ho, threads, i)
            gdh_maxpool(src, Int32(h), Int32(w), Int32(k), Int32(stride), Int32(pad), dst, Int32(ho), Int32(wo),
                        0, Int32(c), Int32(r.lowerBound), Int32(r.upperBound))
        }
    }
}

final class GlobalAveragePoolStep: PlanStep {
    let input: Int, output: Int, c: Int, plane: Int
    var inputs: [Int] { [input] }
    var scratchFloats: Int { 0 }
    var label: String { "avgpool" }

    init(input: PlanValue, output: PlanValue) {
        self.input = input.id; self.output = output.id; c = input.c; plane = input.h * input.w
    }

    func run(_ m: PlanMemory) {
        let x = m[input], y = m[output]
        for ch in 0..<c {
            var s: Float = 0
            let xs = x + ch * plane
            for i in 0..<plane { s += xs[i] }
            y[ch] = s / Float(plane)
        }
    }
}

final class LinearStep: PlanStep {
    let input: Int, output: Int, inFeatures: Int, outFeatures: Int
    let weight: [Float], bias: [Float]
    var inputs: [Int] { [input] }
    var scratchFloats: Int { 0 }
    var label: String { "linear" }

    init(_ linear: Linear, input: PlanValue, output: PlanValue) {
        self.input = input.id; self.output = output.id
        inFeatures = linear.inFeatures; outFeatures = linear.outFeatures
        weight = linear.weight.value.data
        bias = linear.bias?.value.data ?? [Float](repeating: 0, count: linear.outFeatures)
    }

    func run(_ m: PlanMemory) {
        weight.withUnsafeBufferPointer { wp in
            bias.withUnsafeBufferPointer { bp in
                gdh_linear(m[input], wp.baseAddress, bp.baseAddress, Int32(inFeatures), Int32(outFeatures), m[output])
            }
        }
    }
}

final class FallbackStep: PlanStep {
    let layer: Layer
    let input: Int, output: Int
    let inShape: [Int], outSize: Int
    var inputs: [Int] { [input] }
    var scratchFloats: Int { 0 }
    var label: String { "layer \(type(of: layer))" }

    init(_ layer: Layer, input: PlanValue, output: PlanValue) {
        self.layer = layer
        self.input = input.id; self.output = output.id
        inShape = input.shape; outSize = output.size
    }

    func run(_ m: PlanMemory) {
        let n = inShape.reduce(1, *)
        let x = Tensor(shape: [1] + inShape, data: Array(UnsafeBufferPointer(start: m[input], count: n)))
        let y = layer.forward(x)
        y.data.withUnsafeBufferPointer { m[output].update(from: $0.baseAddress!, count: outSize) }
    }
}
