import Testing
import HammingCode
@testable import NeuralNet

func randomTensor(_ shape: [Int], _ rng: inout SplitMix64, scale: Float = 1) -> Tensor {
    var t = Tensor(zeros: shape)
    for i in 0..<t.count { t.data[i] = Float.random(in: -scale...scale, using: &rng) }
    return t
}

/// Checks a layer's input gradient (and its parameters' gradients) against central
/// finite differences of L = Σ y·g, at a sample of coordinates, in float32.
func gradientCheck(_ layer: Layer, input shape: [Int], seed: UInt64, samples: Int = 12,
                   eps: Float = 1e-2, tolerance: Float = 2e-2, sourceLocation: SourceLocation = #_sourceLocation) {
    var rng = SplitMix64(seed: seed)
    let x = randomTensor(shape, &rng)
    let y = layer.forward(x)
    let g = randomTensor(y.shape, &rng)
    layer.parameters.forEach { $0.1.zeroGrad() }
    let dx = layer.backward(g)
    func loss(_ input: Tensor) -> Float {
        let out = layer.forward(input)
        var s: Double = 0
        for i in 0..<out.count { s += Double(out.data[i] * g.data[i]) }
        return Float(s)
    }
    func compare(_ analytic: Float, _ numeric: Float, _ what: String) {
        let scale = max(1, abs(analytic), abs(numeric))
        #expect(abs(analytic - numeric) / scale <= tolerance, "\(what): analytic \(analytic) numeric \(numeric)", sourceLocation: sourceLocation)
    }
    for _ in 0..<samples {
        let i = Int.random(in: 0..<x.count, using: &rng)
        var xp = x, xm = x
        xp.data[i] += eps
        xm.data[i] -= eps
        compare(dx.data[i], (loss(xp) - loss(xm)) / (2 * eps), "\(type(of: layer)) d/dx[\(i)]")
    }
    for (name, p) in layer.parameters {
        for _ in 0..<min(samples, p.value.count) {
            let i = Int.random(in: 0..<p.value.count, using: &rng)
            let analytic = p.grad.data[i]
            let v = p.value.data[i]
            p.value.data[i] = v + eps
            let lp = loss(x)
            p.value.data[i] = v - eps
            let lm = loss(x)
            p.value.data[i] = v
            compare(analytic, (lp - lm) / (2 * eps), "\(type(of: layer)).\(name)[\(i)]")
        }
    }
}

func randomize(_ layer: Layer, seed: UInt64) {
    var rng = SplitMix64(seed: seed)
    for (_, p) in layer.parameters { p.value = randomTensor(p.value.shape, &rng, scale: 0.5) }
}

@Suite("Finite-difference gradient checks")
struct GradientCheckTests {
    @Test("convolutions")
    func convolutions() {
        let layers: [(Layer, [Int])] = [
            (Conv2d(3, 4, kernel: 3, stride: 1, padding: 1), [2, 3, 6, 6]),
            (Conv2d(3, 4, kernel: 3, stride: 2, padding: 1), [2, 3, 7, 7]),
            (Conv2d(2, 3, kernel: 5, stride: 1, padding: 2, paddingMode: .reflect), [2, 2, 6, 6]),
            (Conv2d(3, 2, kernel: 4, stride: 2, padding: 1, bias: false), [1, 3, 8, 8]),
            (ConvTranspose2d(3, 2, kernel: 3, stride: 2, padding: 1, outputPadding: 1), [2, 3, 4, 4]),
            (ConvTranspose2d(2, 3, kernel: 4, stride: 2, padding: 1), [1, 2, 3, 3]),
        ]
        for (k, (layer, shape)) in layers.enumerated() {
            randomize(layer, seed: UInt64(k + 1))
            gradientCheck(layer, input: shape, seed: UInt64(100 + k))
        }
    }

    @Test("normalisation, activations, pooling and the rest")
    func others() {
        let bn = BatchNorm2d(3)
        randomize(bn, seed: 5)
        let inorm = InstanceNorm2d(3, affine: true)
        randomize(inorm, seed: 6)
        let lin = Linear(6, 4)
        randomize(lin, seed: 7)
        let layers: [(Layer, [Int])] = [
            (bn, [3, 3, 4, 4]), (inorm, [2, 3, 4, 4]), (lin, [3, 6]),
            (Activation(.tanh), [2, 3, 3, 3]), (Activation(.sigmoid), [2, 3, 3, 3]),
            (Activation(.leakyReLU(0.2)), [2, 3, 3, 3]), (Softmax(dim: 1), [2, 4, 3, 3]), (Softmax(dim: -1), [3, 7]),
            (MaxPool2d(kernel: 3, stride: 2, padding: 1), [2, 2, 7, 7]), (AvgPool2d(kernel: 2), [2, 2, 6, 6]),
            (AdaptiveAvgPool2d(3, 3), [2, 2, 7, 7]), (Upsample(scale: 2, mode: .nearest), [2, 2, 3, 3]),
            (Upsample(scale: 2, mode: .bilinear), [2, 2, 3, 4]), (ReflectionPad2d(2), [2, 2, 4, 4]), (ZeroPad2d(1), [2, 2, 3, 3]),
        ]
        for (k, (layer, shape)) in layers.enumerated() {
            gradientCheck(layer, input: shape, seed: UInt64(200 + k))
        }
    }

    @Test("losses")
    func losses() {
        var rng = SplitMix64(seed: 3)
        let x = randomTensor([4, 5], &rng), t = randomTensor([4, 5], &rng)
        let labels = [0, 4, 2, 2]
        let cases: [(Tensor) -> (Float, Tensor)] = [
            { Loss.mse($0, t) }, { Loss.l1($0, t) }, { Loss.crossEntropy($0, labels) },
        ]
        for f in cases {
            let (_, grad) = f(x)
            for i in [0, 3, 7, 11, 19] {
                var xp = x, xm = x
                xp.data[i] += 1e-2
                xm.data[i] -= 1e-2
                let numeric = (f(xp).0 - f(xm).0) / 2e-2
                #expect(abs(numeric - grad.data[i]) < 2e-3)
            }
        }
    }
}
