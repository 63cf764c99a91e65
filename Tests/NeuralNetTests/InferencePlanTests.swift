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
func expectPlanMatches(_ net: Layer, input: Tensor, _ label: String, tolerance: Float = 1e-4, depthwiseLanes: Bool? = nil,
                       channelBlocks: Bool? = nil) {
    let reference = net.forward(input)
    for level in 0...DirectConvolution.bestKernel {
        for threads in [1, 2] {
            let plan = InferencePlan(net, inputShape: Array(input.shape.dropFirst()), threads: threads, depthwiseLanes: depthwiseLanes,
                                     channelBlocks: channelBlocks)
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
        // 1×1 layers whose planes run as rows of a multiple of 16 (ConvStep.flatRows): 20×12
        // as 1 row of 240, 28×28 (with a residual) as 7 rows of 112; 14×14 stays (196 = 4·49).
        ConvCase(cin: 8, cout: 24, k: 1, stride: 1, pad: 0, reflect: false, h: 20, w: 12),
        ConvCase(cin: 12, cout: 12, k: 1, stride: 1, pad: 0, reflect: false, h: 28, w: 28),
        ConvCase(cin: 6, cout: 16, k: 1, stride: 1, pad: 0, reflect: false, h: 14, w: 14),
        // 1×1 layers split between threads by output channels (small planes, enough
        // channel blocks): an unfused 10×10 and a fused 12×12 (one row of 144) with a residual.
        ConvCase(cin: 8, cout: 42, k: 1, stride: 1, pad: 0, reflect: false, h: 10, w: 10),
        ConvCase(cin: 32, cout: 32, k: 1, stride: 1, pad: 0, reflect: false, h: 12, w: 12),
        // Images so small that whole phase rows are padding.
        ConvCase(cin: 2, cout: 3, k: 3, stride: 2, pad: 1, reflect: false, h: 1, w: 1),
        ConvCase(cin: 2, cout: 5, k: 5, stride: 3, pad: 2, reflect: false, h: 2, w: 1),
    ]

    @Test func flatRowsOfOneByOneLayers() {
        #expect(ConvStep.flatRows(56, 56) == (14, 224))
        #expect(ConvStep.flatRows(28, 28) == (7, 112))
        #expect(ConvStep.flatRows(20, 12) == (1, 240))
        #expect(ConvStep.flatRows(14, 14) == (14, 14))
        #expect(ConvStep.flatRows(64, 64) == (64, 64))
    }

    @Test("convolution with BatchNorm folded, an activation and a residual", arguments: convCases)
    func convolution(_ c: ConvCase) {
        var rng = SplitMix64(seed: UInt64(c.cin * 1000 + c.k * 10 + c.stride))
        let conv = Conv2d(c.cin, c.cout, kernel: c.k, stride: c.stride, padding: c.pad, paddingMode: c.reflect ? .reflect : .zeros)
        let plain = Chain([("conv", conv)])
        randomize(plain, &rng)
        let x = randomTensor([2, c.cin, c.h, c.w], &rng)
        expectPlanMatches(plain, input: x, "\(c.testDescription) alone")
        for act: Activation.Kind in [.relu, .relu6, .leakyReLU(0.2), .tanh, .sigmoid] {
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

    struct GroupedCase: CustomTestStringConvertible, Sendable {
        let c, mult, k, stride: Int
        let same: Bool
        let h, w: Int
        var testDescription: String { "\(c)->\(c * mult) k\(k) s\(stride) \(same ? "same" : "p1") \(h)x\(w)" }
    }

    /// Depthwise k3/k5, strides 1 and 2, SAME on odd and even sizes (asymmetric at stride
    /// 2), symmetric padding, a channel multiplier, rows wider than a 32-output block, and
    /// few channels (the rows are split between the threads instead).
    static let depthwiseCases: [GroupedCase] = [
        GroupedCase(c: 8, mult: 1, k: 3, stride: 2, same: true, h: 15, w: 16),
        GroupedCase(c: 8, mult: 1, k: 3, stride: 2, same: true, h: 16, w: 16),
        GroupedCase(c: 6, mult: 1, k: 3, stride: 1, same: true, h: 9, w: 11),
        GroupedCase(c: 6, mult: 1, k: 5, stride: 1, same: true, h: 14, w: 14),
        GroupedCase(c: 5, mult: 1, k: 5, stride: 2, same: true, h: 13, w: 18),
        GroupedCase(c: 4, mult: 2, k: 3, stride: 2, same: true, h: 7, w: 9),
        GroupedCase(c: 4, mult: 1, k: 3, stride: 1, same: false, h: 8, w: 7),
        GroupedCase(c: 3, mult: 1, k: 3, stride: 1, same: true, h: 5, w: 70),
        GroupedCase(c: 2, mult: 3, k: 5, stride: 2, same: true, h: 11, w: 10),
        GroupedCase(c: 16, mult: 1, k: 5, stride: 1, same: true, h: 1, w: 1),
        // Channel lanes: a partial block of eight, rows of 8·k + r pixels (the transposed
        // tiles and the pixels after them), an even plane at stride 2.
        GroupedCase(c: 21, mult: 1, k: 3, stride: 1, same: true, h: 9, w: 19),
        GroupedCase(c: 24, mult: 1, k: 5, stride: 2, same: true, h: 16, w: 16),
        GroupedCase(c: 16, mult: 1, k: 5, stride: 1, same: true, h: 4, w: 4),
        // Output rows narrower than a block of 8 with few rows left after a group of four
        // (the partial block's overhang once ran past the plane: a heap overflow).
        GroupedCase(c: 3, mult: 1, k: 3, stride: 2, same: true, h: 29, w: 1),
        GroupedCase(c: 2, mult: 1, k: 3, stride: 1, same: true, h: 9, w: 2),
    ]

    @Test("depthwise convolution fused with BatchNorm and ReLU6", arguments: depthwiseCases)
    func depthwise(_ c: GroupedCase) {
        var rng = SplitMix64(seed: UInt64(c.c * 100 + c.k * 10 + c.stride + c.h))
        let conv = GroupedConv2d(c.c, c.c * c.mult, kernel: c.k, stride: c.stride, padding: c.same ? .same : .symmetric(1), groups: c.c)
        // Inputs large enough that ReLU6 clamps at both ends.
        let x = randomTensor([2, c.c, c.h, c.w], &rng, scale: 8)
        for act: Activation.Kind? in [nil, .relu6, .relu, .sigmoid] {
            var layers: [(String?, Layer)] = [("dw", conv), ("bn", BatchNorm2d(c.c * c.mult, eps: 1e-3))]
            if let act { layers.append((nil, Activation(act))) }
            let net = Chain(layers)
            randomize(net, &rng)
            for lanes in [false, true] {
                expectPlanMatches(net, input: x, "\(c.testDescription) + BN + \(act.map { "\($0)" } ?? "nothing")\(lanes ? " (lanes)" : "")",
                                  depthwiseLanes: lanes)
            }
        }
        let plan = InferencePlan(Chain([("dw", conv)]), inputShape: [c.c, c.h, c.w], channelBlocks: false)
        #expect(plan.steps.count == 1 && plan.steps[0] is DepthwiseConvStep, "\(c.testDescription): \(plan.steps.map(\.label))")
    }

    @Test("the stem: groups 1, stride 2, SAME, BatchNorm and ReLU6", arguments: [(15, 16), (16, 16), (17, 17), (9, 20)])
    func stem(_ size: (Int, Int)) {
        var rng = SplitMix64(seed: UInt64(size.0 * 31 + size.1))
        let net = Chain([
            ("_conv_stem", GroupedConv2d(3, 8, kernel: 3, stride: 2, padding: .same, groups: 1, bias: false)),
            ("_bn0", BatchNorm2d(8, eps: 1e-3)), (nil, Activation(.relu6)),
        ])
        randomize(net, &rng)
        expectPlanMatches(net, input: randomTensor([2, 3, size.0, size.1], &rng, scale: 6), "stem \(size.0)x\(size.1)")
        let plan = InferencePlan(net, inputShape: [3, size.0, size.1])
        #expect(plan.steps.contains { $0 is ConvStep } && !plan.steps.contains { $0 is FallbackStep }, "\(plan.steps.map(\.label))")
    }

    /// EfficientNet's inverted residual block: 1×1 expansion + BN + ReLU6, depthwise + BN +
    /// ReLU6, 1×1 projection + BN, plus the input (fused into the projection's step).
    static func invertedResidual(_ c: Int, expand: Int, kernel: Int, stride: Int, out: Int) -> Layer {
        let mid = c * expand
        let chain = Chain([
            ("_expand_conv", Conv2d(c, mid, kernel: 1, bias: false)), ("_bn0", BatchNorm2d(mid, eps: 1e-3)), (nil, Activation(.relu6)),
            ("_depthwise_conv", GroupedConv2d(mid, mid, kernel: kernel, stride: stride, padding: .same, groups: mid, bias: false)),
            ("_bn1", BatchNorm2d(mid, eps: 1e-3)), (nil, Activation(.relu6)),
            ("_project_conv", Conv2d(mid, out, kernel: 1, bias: false)), ("_bn2", BatchNorm2d(out, eps: 1e-3)),
        ])
        return stride == 1 && c == out ? ResidualBlock(chain) : chain
    }

    @Test("an inverted residual block (expansion, depthwise, projection, residual)", arguments: [
        GroupedCase(c: 4, mult: 6, k: 3, stride: 1, same: true, h: 9, w: 9),
        GroupedCase(c: 4, mult: 6, k: 3, stride: 1, same: true, h: 12, w: 16),
        GroupedCase(c: 8, mult: 6, k: 5, stride: 1, same: true, h: 7, w: 8),
        GroupedCase(c: 4, mult: 6, k: 3, stride: 2, same: true, h: 11, w: 12),
        GroupedCase(c: 8, mult: 6, k: 5, stride: 2, same: true, h: 14, w: 13),
    ])
    func invertedResidualBlock(_ c: GroupedCase) {
        var rng = SplitMix64(seed: UInt64(c.c * 7 + c.k + c.stride * 3 + c.h))
        let net = InferencePlanTests.invertedResidual(c.c, expand: c.mult, kernel: c.k, stride: c.stride, out: c.stride == 1 ? c.c : 2 * c.c)
        randomize(net, &rng)
        expectPlanMatches(net, input: randomTensor([2, c.c, c.h, c.w], &rng, scale: 3), "inverted residual \(c.testDescription)")
        let plan = InferencePlan(net, inputShape: [c.c, c.h, c.w], channelBlocks: false)
        let kinds = plan.steps.map { "\(type(of: $0))" }
        #expect(kinds == ["ConvStep", "DepthwiseConvStep", "ConvStep"], "\(c.testDescription): \(plan.steps.map(\.label))")
        // Channel blocks: the depthwise step and the projection run blocked when their widths
        // are multiples of 8 (the expansion reads the planar input).
        expectPlanMatches(net, input: randomTensor([2, c.c, c.h, c.w], &rng, scale: 3), "inverted residual \(c.testDescription) (blocked)",
                          channelBlocks: true)
        let blocked = InferencePlan(net, inputShape: [c.c, c.h, c.w], channelBlocks: true).steps.map { "\(type(of: $0))" }
        // (A blocked projection with a residual reorders the planar input for it.)
        let out = c.stride == 1 ? c.c : 2 * c.c
        var expected: [String] = ["ConvStep", "BlockedReorderStep", "BlockedDepthwiseStep"]
        if out % 8 == 0 {
            if c.stride == 1 { expected.append("BlockedReorderStep") }
            expected += ["BlockedPointwiseStep", "BlockedReorderStep"]
        } else {
            expected += ["BlockedReorderStep", "ConvStep"]
        }
        #expect(blocked == expected, "\(c.testDescription): \(blocked)")
    }

    @Test("a depthwise step that ends a residual chain fuses the residual; other groupings fall back")
    func groupedResidualAndFallback() {
        var rng = SplitMix64(seed: 77)
        let block = ResidualBlock(Chain([
            ("dw", GroupedConv2d(6, 6, kernel: 3, padding: .same, groups: 6)), ("bn", BatchNorm2d(6, eps: 1e-3)),
        ]))
        randomize(block, &rng)
        let x = randomTensor([2, 6, 11, 10], &rng, scale: 3)
        for lanes in [false, true] { expectPlanMatches(block, input: x, "depthwise residual", depthwiseLanes: lanes) }
        #expect(InferencePlan(block, inputShape: [6, 11, 10]).steps.count == 1)
        let grouped = Chain([
            ("g", GroupedConv2d(4, 6, kernel: 3, stride: 2, padding: .same, groups: 2)), ("bn", BatchNorm2d(6)), (nil, Activation(.relu6)),
        ])
        randomize(grouped, &rng)
        expectPlanMatches(grouped, input: randomTensor([2, 4, 9, 8], &rng, scale: 3), "groups 2")
    }

    @Test("fused ReLU6 clamps at 0 and 6 in every epilogue")
    func relu6Clamps() {
        var values: [Float] = [-100, -6, -1e-3, -0, 0, 1e-3, 0.5, 3, 5.999, 6, 6.001, 7, 100]
        for i in 0..<115 { values.append(Float(i - 40) * 0.1) }
        let width = 32   // a multiple of 8 and 16: the fused row tiles
        let x = Tensor(shape: [1, 1, values.count / width, width], data: Array(values.prefix(values.count / width * width)))
        let expected = Tensor(shape: x.shape, data: x.data.map { min(max($0, 0), 6) })
        func identityConv() -> Conv2d {
            let conv = Conv2d(1, 1, kernel: 1)
            conv.weight.value = Tensor(shape: [1, 1, 1, 1], data: [1])
            return conv
        }
        let dw = GroupedConv2d(1, 1, kernel: 1, groups: 1)
        dw.weight.value = Tensor(shape: [1, 1, 1, 1], data: [1])
        let depthwise = GroupedConv2d(2, 2, kernel: 1, groups: 2)
        depthwise.weight.value = Tensor(shape: [2, 1, 1, 1], data: [1, 1])
        let nets: [(String, Layer, Tensor, Tensor)] = [
            ("conv (row tiles)", Chain([("c", identityConv()), (nil, Activation(.relu6))]), x, expected),
            ("conv (epilogue)", Chain([("c", identityConv()), (nil, Activation(.relu6))]),
             Tensor(shape: [1, 1, 1, 127], data: Array(x.data.prefix(127))), Tensor(shape: [1, 1, 1, 127], data: Array(expected.data.prefix(127)))),
            ("grouped conv", Chain([("c", dw), (nil, Activation(.relu6))]), x, expected),
            ("depthwise", Chain([("c", depthwise), (nil, Activation(.relu6))]),
             Tensor(shape: [1, 2, x.h / 2, width], data: x.data), Tensor(shape: [1, 2, x.h / 2, width], data: expected.data)),
        ]
        for (label, net, input, want) in nets {
            net.training = false
            #expect(net.forward(input) == want, "\(label): the layers")
            for level in 0...DirectConvolution.bestKernel {
                let plan = InferencePlan(net, inputShape: Array(input.shape.dropFirst()))
                plan.kernelLevel = level
                #expect(plan.forward(input) == want, "\(label): \(DirectConvolution.kernelName(level))")
            }
        }
        // InstanceNorm's epilogue (and the residual add's, the same C function).
        let norm = Chain([("in", InstanceNorm2d(1)), (nil, Activation(.relu6))])
        norm.training = false
        let big = Tensor(shape: x.shape, data: x.data.map { $0 * 4 })
        expectPlanMatches(norm, input: big, "instance norm + ReLU6")
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
