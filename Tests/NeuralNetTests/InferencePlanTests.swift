import Foundation
import Testing
import HammingCode
@testable import NeuralNet

/// Random weights everywhere and random running statistics in every BatchNorm; inference mode.
func randomize(_ net: Layer, _ rng: inout SplitMix64) {
    for (_, p) in net.parameters { p.value = randomTensor(p.value.shape, &rng, scale: 0.3) }
    for (name, b) in net.buffers {
        b.value = randomTensor(b.value.shape, &rng, scale: 0.5)
        if name.hasSuffix("running_var") { for i in 0..<b.value.count { b.value.data[i] = abs(b.value.data[i]) + 0.5 } }
    }
    net.training = false
}

/// max |a − b| / max(1, max |b|).
func planDifference(_ a: Tensor, _ b: Tensor) -> Float {
    guard a.shape == b.shape else { return .infinity }
    var d: Float = 0, s: Float = 1
    for i in 0..<a.count { d = max(d, abs(a.data[i] - b.data[i])); s = max(s, abs(b.data[i])) }
    return d / s
}

/// The plan's output against the layers' own forward, on every kernel level the CPU has
/// and on one and two threads.
func expectPlanMatches(_ net: Layer, input: Tensor, _ label: String, tolerance: Float = 1e-4) {
    let reference = net.forward(input)
    for level in 0...DirectConvolution.bestKernel {
        for threads in [1, 2] {
            let plan = InferencePlan(net, inputShape: Array(input.shape.dropFirst()), threads: threads)
            plan.kernelLevel = level
            plan.parallelWork = 0   // every layer splits, however small
            plan.adaptiveThreads = false
            let y = plan.forward(input)
            let d = planDifference(y, reference)
            #expect(d <= tolerance, "\(label): \(DirectConvolution.kernelName(level)), \(threads) thread(s): differs by \(d)")
            // A second run over the same memory gives the same answer.
            #expect(plan.forward(input) == y, "\(label): a second run differs")
        }
    }
}

@Suite("Inference plans against the layers' forward")
struct InferencePlanTests {
    struct ConvCase: CustomTestStringConvertible, Sendable {
        let cin, cout, k, stride, pad: Int
        let reflect: Bool
        let h, w: Int
        var testDescription: String { "\(cin)->\(cout) k\(k) s\(stride) p\(pad)\(reflect ? " reflect" : "") \(h)x\(w)" }
    }

    static let convCases: [ConvCase] = [
        ConvCase(cin: 3, cout: 8, k: 7, stride: 1, pad: 3, reflect: true, h: 20, w: 17),
        ConvCase(cin: 5, cout: 6, k: 3, stride: 1, pad: 1, reflect: false, h: 9, w: 33),
        ConvCase(cin: 4, cout: 9, k: 3, stride: 2, pad: 1, reflect: false, h: 15, w: 16),
        ConvCase(cin: 3, cout: 4, k: 7, stride: 2, pad: 3, reflect: false, h: 23, w: 18),
        ConvCase(cin: 6, cout: 5, k: 4, stride: 2, pad: 1, reflect: false, h: 16, w: 12),
        ConvCase(cin: 7, cout: 3, k: 4, stride: 1, pad: 1, reflect: false, h: 6, w: 7),
        ConvCase(cin: 8, cout: 12, k: 1, stride: 1, pad: 0, reflect: false, h: 5, w: 5),
        ConvCase(cin: 8, cout: 12, k: 1, stride: 2, pad: 0, reflect: false, h: 9, w: 8),
        ConvCase(cin: 16, cout: 1, k: 1, stride: 1, pad: 0, reflect: false, h: 11, w: 13),
        ConvCase(cin: 4, cout: 3, k: 5, stride: 3, pad: 2, reflect: true, h: 14, w: 19),
        ConvCase(cin: 32, cout: 20, k: 3, stride: 1, pad: 1, reflect: true, h: 40, w: 40),
        // Few positions and 16 or 32 output channels: the channel-lane kernel (AVX-512).
        ConvCase(cin: 16, cout: 32, k: 3, stride: 2, pad: 1, reflect: false, h: 9, w: 9),
        ConvCase(cin: 8, cout: 16, k: 3, stride: 1, pad: 1, reflect: true, h: 5, w: 6),
        ConvCase(cin: 16, cout: 48, k: 1, stride: 2, pad: 0, reflect: false, h: 7, w: 7),
        ConvCase(cin: 16, cout: 16, k: 3, stride: 1, pad: 1, reflect: false, h: 2, w: 2),
        ConvCase(cin: 5, cout: 64, k: 4, stride: 1, pad: 1, reflect: false, h: 7, w: 8),
        // Images so small that whole phase rows are padding.
        ConvCase(cin: 2, cout: 3, k: 3, stride: 2, pad: 1, reflect: false, h: 1, w: 1),
        ConvCase(cin: 2, cout: 5, k: 5, stride: 3, pad: 2, reflect: false, h: 2, w: 1),
    ]

    @Test("convolution with BatchNorm folded, an activation and a residual", arguments: convCases)
    func convolution(_ c: ConvCase) {
        var rng = SplitMix64(seed: UInt64(c.cin * 1000 + c.k * 10 + c.stride))
        let conv = Conv2d(c.cin, c.cout, kernel: c.k, stride: c.stride, padding: c.pad, paddingMode: c.reflect ? .reflect : .zeros)
        let plain = Chain([("conv", conv)])
        randomize(plain, &rng)
        let x = randomTensor([2, c.cin, c.h, c.w], &rng)
        expectPlanMatches(plain, input: x, "\(c.testDescription) alone")
        for act: Activation.Kind in [.relu, .leakyReLU(0.2), .tanh, .sigmoid] {
            let net = Chain([("conv", conv), ("bn", BatchNorm2d(c.cout)), (nil, Activation(act))])
            randomize(net, &rng)
            expectPlanMatches(net, input: x, "\(c.testDescription) + BN + \(act)")
        }
        let out = conv.forward(Tensor(zeros: [1, c.cin, c.h, c.w]))
        if out.shape[1] == c.cin, out.shape[2] == c.h, out.shape[3] == c.w {
            let block = ResidualBlock(Chain([("conv", conv), ("bn", BatchNorm2d(c.cout))]))
            randomize(block, &rng)
            expectPlanMatches(block, input: x, "\(c.testDescription) residual")
        }
    }

    struct DeconvCase: CustomTestStringConvertible, Sendable {
        let cin, cout, k, stride, pad, outPad, h, w: Int
        var testDescription: String { "\(cin)->\(cout) k\(k) s\(stride) p\(pad) op\(outPad) \(h)x\(w)" }
    }

    @Test("transposed convolution by output phases", arguments: [
        DeconvCase(cin: 8, cout: 4, k: 3, stride: 2, pad: 1, outPad: 1, h: 9, w: 11),
        DeconvCase(cin: 5, cout: 6, k: 4, stride: 2, pad: 1, outPad: 0, h: 7, w: 7),
        DeconvCase(cin: 3, cout: 5, k: 3, stride: 1, pad: 1, outPad: 0, h: 10, w: 6),
        DeconvCase(cin: 4, cout: 3, k: 5, stride: 3, pad: 2, outPad: 2, h: 5, w: 8),
        DeconvCase(cin: 6, cout: 2, k: 2, stride: 3, pad: 0, outPad: 1, h: 4, w: 5),
        DeconvCase(cin: 4, cout: 4, k: 1, stride: 1, pad: 0, outPad: 0, h: 6, w: 6),
    ])
    func transposed(_ c: DeconvCase) {
        var rng = SplitMix64(seed: UInt64(c.cin * 77 + c.k * 7 + c.stride))
        let net = Chain([
            ("deconv", ConvTranspose2d(c.cin, c.cout, kernel: c.k, stride: c.stride, padding: c.pad, outputPadding: c.outPad)),
            ("bn", BatchNorm2d(c.cout)), (nil, Activation(.relu)),
        ])
        randomize(net, &rng)
        expectPlanMatches(net, input: randomTensor([2, c.cin, c.h, c.w], &rng), c.testDescription)
    }

    @Test("pooling, linear head and layers without a fused form")
    func otherLayers() {
        var rng = SplitMix64(seed: 5)
        let net = Chain([
            ("conv", Conv2d(3, 8, kernel: 3, stride: 2, padding: 1, bias: false)), ("bn", BatchNorm2d(8)), (nil, Activation(.relu)),
            (nil, MaxPool2d(kernel: 3, stride: 2, padding: 1)),
            ("in", InstanceNorm2d(8, affine: true)), (nil, Activation(.leakyReLU(0.1))),
            (nil, AvgPool2d(kernel: 2)),
            (nil, AdaptiveAvgPool2d(1, 1)), (nil, Flatten()), ("fc", Linear(8, 10)),
        ])
        randomize(net, &rng)
        expectPlanMatches(net, input: randomTensor([3, 3, 33, 30], &rng), "pool/linear chain")
    }

    @Test("fused tanh and sigmoid are accurate over the whole range", arguments: [Activation.Kind.tanh, .sigmoid])
    func activationAccuracy(_ kind: Activation.Kind) {
        let conv = Conv2d(1, 1, kernel: 1)
        conv.weight.value = Tensor(shape: [1, 1, 1, 1], data: [1])
        let net = Chain([("conv", conv), (nil, Activation(kind))])
        net.training = false
        var values: [Float] = [0, -0, 1e-7, -1e-7, 1e-4, -3e-3, 0.2999, 0.3, 0.3001, -0.3, 1, -1, 5, -5, 9.5, 20, -20, 87, -87, 100, -100]
        for i in 0..<1003 { values.append(Float(i - 501) * 0.05) }
        let x = Tensor(shape: [1, 1, 1, values.count], data: values)
        let y = InferencePlan(net, inputShape: [1, 1, values.count]).forward(x)
        for (i, v) in values.enumerated() {
            let exact = kind == .tanh ? Foundation.tanh(Double(v)) : 1 / (1 + Foundation.exp(-Double(v)))
            let err = abs(Double(y.data[i]) - exact)
            #expect(err <= 1e-6 * abs(exact) + 1e-9, "\(kind)(\(v)) = \(y.data[i]), exact \(exact)")
        }
    }

    @Test("split and unsplit passes give identical bits (the adaptive choice alternates them)")
    func adaptiveSplitIsExact() {
        var rng = SplitMix64(seed: 21)
        let net = Chain([
            ("c1", Conv2d(3, 16, kernel: 7, stride: 2, padding: 3)), ("b1", BatchNorm2d(16)), (nil, Activation(.relu)),
            (nil, MaxPool2d(kernel: 3, stride: 2, padding: 1)),
            ("c2", Conv2d(16, 32, kernel: 3, padding: 1)), ("n2", InstanceNorm2d(32)), (nil, Activation(.relu)),
            ("c3", Conv2d(32, 32, kernel: 3, stride: 2, padding: 1)), (nil, Activation(.relu)),
            ("d", ConvTranspose2d(32, 8, kernel: 3, stride: 2, padding: 1, outputPadding: 1)),
        ])
        randomize(net, &rng)
        let x = randomTensor([1, 3, 48, 48], &rng)
        let plan = InferencePlan(net, inputShape: [3, 48, 48], threads: 2)
        plan.parallelWork = 0   // mode "split": every layer; mode "not split": none of these
        let first = plan.forward(x)
        for pass in 0..<14 { #expect(plan.forward(x) == first, "pass \(pass) differs") }
        #expect(planDifference(first, net.forward(x)) <= 1e-4)
    }

    @Test("values that are no longer needed share memory")
    func memoryReuse() {
        let blocks = (0..<6).map { _ in
            ResidualBlock(Chain([("conv1", Conv2d(16, 16, kernel: 3, padding: 1)), ("bn", BatchNorm2d(16)), (nil, Activation(.relu)),
                                 ("conv2", Conv2d(16, 16, kernel: 3, padding: 1))])) as Layer
        }
        let net = Chain(indexed: blocks)
        var rng = SplitMix64(seed: 9)
        randomize(net, &rng)
        let plan = InferencePlan(net, inputShape: [16, 32, 32])
        // Twelve convolutions, one value each: with reuse far fewer than twelve are kept.
        #expect(plan.memoryBytes < 6 * 16 * 32 * 32 * 4 + (1 << 20), "plan keeps \(plan.memoryBytes) bytes")
        expectPlanMatches(net, input: randomTensor([1, 16, 32, 32], &rng), "six residual blocks")
    }
}
