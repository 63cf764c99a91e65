import Foundation
import Testing
import HammingCode
@testable import NeuralNet

/// The channel-blocked (NCHWc8) steps against the layers' own forward, on every kernel
/// level and on one and two threads (expectPlanMatches).
@Suite("Channel-blocked inference steps")
struct BlockedPlanTests {
    typealias GroupedCase = InferencePlanTests.GroupedCase

    /// Depthwise geometries: both fast kernels (3, 5) at both strides, a kernel without a
    /// fast form (7), planes narrower than the kernel, single rows and columns, odd and even
    /// sizes, TensorFlow SAME (asymmetric) and symmetric padding.
    static let depthwiseCases: [GroupedCase] = [
        GroupedCase(c: 8, mult: 1, k: 3, stride: 1, same: true, h: 9, w: 11),
        GroupedCase(c: 16, mult: 1, k: 3, stride: 2, same: true, h: 16, w: 15),
        GroupedCase(c: 24, mult: 1, k: 5, stride: 1, same: true, h: 14, w: 14),
        GroupedCase(c: 16, mult: 1, k: 5, stride: 2, same: true, h: 13, w: 18),
        GroupedCase(c: 8, mult: 1, k: 5, stride: 1, same: true, h: 7, w: 7),
        GroupedCase(c: 8, mult: 1, k: 5, stride: 1, same: true, h: 3, w: 2),
        GroupedCase(c: 16, mult: 1, k: 3, stride: 1, same: true, h: 1, w: 37),
        GroupedCase(c: 8, mult: 1, k: 3, stride: 2, same: true, h: 29, w: 1),
        GroupedCase(c: 8, mult: 1, k: 3, stride: 1, same: false, h: 8, w: 21),
        GroupedCase(c: 8, mult: 1, k: 7, stride: 2, same: true, h: 12, w: 11),
        // Planes of 32·k positions, whose blocks are padded apart (bk_stride).
        GroupedCase(c: 16, mult: 1, k: 3, stride: 2, same: true, h: 16, w: 16),
        // Every width with a fixed-row form (dwb_fixed: EfficientNet-Lite0's small planes at
        // 128 and 224 px), some with fewer or more rows than columns.
        GroupedCase(c: 16, mult: 1, k: 3, stride: 1, same: true, h: 4, w: 4),
        GroupedCase(c: 16, mult: 1, k: 5, stride: 1, same: true, h: 4, w: 4),
        GroupedCase(c: 8, mult: 1, k: 3, stride: 1, same: true, h: 7, w: 7),
        GroupedCase(c: 16, mult: 1, k: 3, stride: 1, same: true, h: 8, w: 8),
        GroupedCase(c: 16, mult: 1, k: 5, stride: 1, same: true, h: 5, w: 8),
        GroupedCase(c: 16, mult: 1, k: 5, stride: 2, same: true, h: 8, w: 8),
        GroupedCase(c: 8, mult: 1, k: 3, stride: 1, same: true, h: 14, w: 14),
        GroupedCase(c: 8, mult: 1, k: 5, stride: 2, same: true, h: 14, w: 14),
        GroupedCase(c: 16, mult: 1, k: 5, stride: 1, same: true, h: 16, w: 16),
        GroupedCase(c: 8, mult: 1, k: 3, stride: 2, same: true, h: 28, w: 28),
        GroupedCase(c: 8, mult: 1, k: 5, stride: 1, same: true, h: 9, w: 4),
        // A width with a fixed-row form but padding that is not SAME: the general rows.
        GroupedCase(c: 8, mult: 1, k: 5, stride: 1, same: false, h: 8, w: 8),
    ]

    @Test("depthwise convolution with BatchNorm and an activation", arguments: depthwiseCases)
    func depthwise(_ c: GroupedCase) {
        var rng = SplitMix64(seed: UInt64(c.c * 101 + c.k * 11 + c.stride + c.h * 3 + c.w))
        let conv = GroupedConv2d(c.c, c.c, kernel: c.k, stride: c.stride, padding: c.same ? .same : .symmetric(1), groups: c.c)
        let x = randomTensor([2, c.c, c.h, c.w], &rng, scale: 8)
        for act: Activation.Kind? in [nil, .relu6, .relu] {
            var layers: [(String?, Layer)] = [("dw", conv), ("bn", BatchNorm2d(c.c, eps: 1e-3))]
            if let act { layers.append((nil, Activation(act))) }
            let net = Chain(layers)
            randomize(net, &rng)
            expectPlanMatches(net, input: x, "\(c.testDescription) + BN + \(act.map { "\($0)" } ?? "nothing")", channelBlocks: true)
        }
        let kinds = InferencePlan(Chain([("dw", conv)]), inputShape: [c.c, c.h, c.w], channelBlocks: true).steps.map { "\(type(of: $0))" }
        let single = c.h * c.w == 1
        let expected: [String] = ["BlockedReorderStep", "BlockedDepthwiseStep", "BlockedReorderStep"]
        #expect(single || kinds == expected, "\(c.testDescription): \(kinds)")
    }

    @Test("a depthwise step that ends a residual chain adds the (blocked) input")
    func depthwiseResidual() {
        var rng = SplitMix64(seed: 78)
        let block = ResidualBlock(Chain([
            ("dw", GroupedConv2d(16, 16, kernel: 3, padding: .same, groups: 16)), ("bn", BatchNorm2d(16, eps: 1e-3)),
        ]))
        randomize(block, &rng)
        expectPlanMatches(block, input: randomTensor([2, 16, 11, 10], &rng, scale: 3), "depthwise residual", channelBlocks: true)
        // The same on a plane with a fixed-row form (dwb_fixed).
        expectPlanMatches(block, input: randomTensor([2, 16, 8, 8], &rng, scale: 3), "depthwise residual 8x8", channelBlocks: true)
    }

    struct PointwiseCase: CustomTestStringConvertible, Sendable {
        let c, out, h, w: Int
        var testDescription: String { "\(c)->\(out) \(h)x\(w)" }
    }

    /// 1×1 layers after a depthwise one (so their input is blocked): widths of one, two and
    /// three groups of 16 channels and odd numbers of blocks (8, 24, 40), positions below,
    /// at and above a tile (12) and not a multiple of it.
    static let pointwiseCases: [PointwiseCase] = [
        PointwiseCase(c: 8, out: 8, h: 3, w: 3),
        PointwiseCase(c: 16, out: 24, h: 4, w: 3),
        PointwiseCase(c: 24, out: 40, h: 5, w: 7),
        PointwiseCase(c: 40, out: 16, h: 13, w: 11),
        PointwiseCase(c: 32, out: 96, h: 9, w: 9),
        PointwiseCase(c: 48, out: 8, h: 2, w: 1),
        PointwiseCase(c: 16, out: 48, h: 28, w: 28),
        PointwiseCase(c: 16, out: 40, h: 8, w: 8),
    ]

    @Test("1x1 convolutions on blocked values, with BatchNorm, activations and residuals", arguments: pointwiseCases)
    func pointwise(_ c: PointwiseCase) {
        var rng = SplitMix64(seed: UInt64(c.c * 7 + c.out * 13 + c.h * 17 + c.w))
        let x = randomTensor([2, c.c, c.h, c.w], &rng, scale: 3)
        for act: Activation.Kind? in [nil, .relu6, .relu] {
            let net = Chain([
                ("dw", GroupedConv2d(c.c, c.c, kernel: 3, padding: .same, groups: c.c, bias: false)), ("bn1", BatchNorm2d(c.c, eps: 1e-3)),
                ("pw", Conv2d(c.c, c.out, kernel: 1, bias: true)), ("bn2", BatchNorm2d(c.out, eps: 1e-3)),
            ] + (act.map { [(nil, Activation($0))] } ?? []))
            randomize(net, &rng)
            expectPlanMatches(net, input: x, "\(c.testDescription) + \(act.map { "\($0)" } ?? "nothing")", channelBlocks: true)
            let kinds = InferencePlan(net, inputShape: [c.c, c.h, c.w], channelBlocks: true).steps.map { "\(type(of: $0))" }
            let expected: [String] = ["BlockedReorderStep", "BlockedDepthwiseStep", "BlockedPointwiseStep", "BlockedReorderStep"]
            #expect(kinds == expected, "\(kinds)")
        }
        if c.c == c.out {
            // The residual of a block whose input is already blocked (a previous block's output).
            let first = Chain([("dw", GroupedConv2d(c.c, c.c, kernel: 3, padding: .same, groups: c.c)), ("bn", BatchNorm2d(c.c))])
            let block = ResidualBlock(Chain([
                ("dw", GroupedConv2d(c.c, c.c, kernel: 5, padding: .same, groups: c.c)), (nil, Activation(.relu6)),
                ("pw", Conv2d(c.c, c.out, kernel: 1, bias: false)), ("bn", BatchNorm2d(c.out, eps: 1e-3)),
            ]))
            let net = Chain([("a", first), ("b", block)])
            randomize(net, &rng)
            expectPlanMatches(net, input: x, "\(c.testDescription) residual block", channelBlocks: true)
        }
    }

    @Test("a blocked value read by planar steps, by global pooling and by a linear head")
    func leavingTheBlocks() {
        var rng = SplitMix64(seed: 5)
        // Blocked depthwise → planar 3×3 conv (a reorder) → blocked again → pooling → linear.
        let net = Chain([
            ("dw", GroupedConv2d(16, 16, kernel: 3, stride: 2, padding: .same, groups: 16)), ("bn", BatchNorm2d(16)), (nil, Activation(.relu6)),
            ("c", Conv2d(16, 8, kernel: 3, padding: 1)), (nil, Activation(.relu)),
            ("dw2", GroupedConv2d(8, 8, kernel: 5, padding: .same, groups: 8)), (nil, Activation(.relu6)),
            ("pw", Conv2d(8, 32, kernel: 1)), (nil, Activation(.relu6)),
            (nil, AdaptiveAvgPool2d(1, 1)), (nil, Flatten()), ("fc", Linear(32, 5)),
        ])
        randomize(net, &rng)
        let x = randomTensor([2, 16, 15, 13], &rng, scale: 3)
        expectPlanMatches(net, input: x, "mixed layouts", channelBlocks: true)
        let kinds = InferencePlan(net, inputShape: [16, 15, 13], channelBlocks: true).steps.map { "\(type(of: $0))" }
        let expected: [String] = ["BlockedReorderStep", "BlockedDepthwiseStep", "BlockedReorderStep", "ConvStep", "BlockedReorderStep",
                                  "BlockedDepthwiseStep", "BlockedPointwiseStep", "BlockedAveragePoolStep", "LinearStep"]
        #expect(kinds == expected, "\(kinds)")
        // The same network planar: the same answer up to rounding.
        let a = InferencePlan(net, inputShape: [16, 15, 13], channelBlocks: true).forward(x)
        let b = InferencePlan(net, inputShape: [16, 15, 13], channelBlocks: false).forward(x)
        #expect(planDifference(a, b) <= 1e-5)
    }

    @Test("widths that are not multiples of 8 stay planar")
    func unblockableWidths() {
        var rng = SplitMix64(seed: 6)
        let net = Chain([
            ("dw", GroupedConv2d(12, 12, kernel: 3, padding: .same, groups: 12)), (nil, Activation(.relu6)),
            ("pw", Conv2d(12, 16, kernel: 1)), ("dw2", GroupedConv2d(16, 16, kernel: 3, padding: .same, groups: 16)),
            ("pw2", Conv2d(16, 12, kernel: 1)), (nil, Activation(.sigmoid)),
        ])
        randomize(net, &rng)
        let x = randomTensor([1, 12, 9, 9], &rng, scale: 3)
        expectPlanMatches(net, input: x, "unblockable widths", channelBlocks: true)
        let kinds = InferencePlan(net, inputShape: [12, 9, 9], channelBlocks: true).steps.map { "\(type(of: $0))" }
        let expected: [String] = ["DepthwiseConvStep", "ConvStep", "BlockedReorderStep", "BlockedDepthwiseStep", "BlockedReorderStep", "ConvStep"]
        #expect(kinds == expected, "\(kinds)")
    }

    /// x · scale + shift per channel, as GDH's ChannelAffine (the input normalisation).
    final class TestAffine: StatelessLayer, Layer, PerChannelAffine {
        let scale: [Float], shift: [Float]
        init(_ scale: [Float], _ shift: [Float]) { self.scale = scale; self.shift = shift; super.init() }
        func forward(_ x: Tensor) -> Tensor {
            var y = x
            let plane = x.h * x.w
            for i in 0..<x.count { y.data[i] = x.data[i] * scale[(i / plane) % x.c] + shift[(i / plane) % x.c] }
            return y
        }
        func backward(_ g: Tensor) -> Tensor { g }
    }

    @Test("the stem: a few-channel convolution written blocked, with the input normalisation fused",
          arguments: [(15, 16), (16, 16), (32, 32), (9, 20)])
    func stem(_ size: (Int, Int)) {
        var rng = SplitMix64(seed: UInt64(size.0 * 37 + size.1))
        let affine = TestAffine([0.9, 1.1, -0.7], [0.2, -0.1, 0.05])
        let x = randomTensor([2, 3, size.0, size.1], &rng, scale: 2)
        let nets: [(String, Layer, [String])] = [
            ("SAME stride 2 + affine", Chain([
                ("a", affine), ("_conv_stem", GroupedConv2d(3, 32, kernel: 3, stride: 2, padding: .same, groups: 1, bias: false)),
                ("_bn0", BatchNorm2d(32, eps: 1e-3)), (nil, Activation(.relu6)),
                ("dw", GroupedConv2d(32, 32, kernel: 3, padding: .same, groups: 32)),
            ]), ["BlockedSmallConvStep", "BlockedDepthwiseStep", "BlockedReorderStep"]),
            ("padded stride 1", Chain([("c", Conv2d(3, 16, kernel: 3, padding: 1)), (nil, Activation(.relu))]),
             ["BlockedSmallConvStep", "BlockedReorderStep"]),
            ("5x5 stride 2 with bias, no activation", Chain([("c", Conv2d(2, 16, kernel: 5, stride: 2, padding: 2))]),
             ["BlockedSmallConvStep", "BlockedReorderStep"]),
            ("affine alone", Chain([("a", affine), (nil, Activation(.relu))]), ["AffineStep", "FallbackStep"]),
        ]
        for (label, net, kinds) in nets {
            randomize(net, &rng)
            let input = label.hasPrefix("5x5") ? randomTensor([2, 2, size.0, size.1], &rng, scale: 2) : x
            expectPlanMatches(net, input: input, "\(label) \(size.0)x\(size.1)", channelBlocks: true)
            let got = InferencePlan(net, inputShape: Array(input.shape.dropFirst()), channelBlocks: true).steps.map { "\(type(of: $0))" }
            #expect(got == kinds, "\(label): \(got)")
        }
    }

    struct FusedCase: CustomTestStringConvertible, Sendable {
        let c, mid, out, k, stride, h, w: Int
        var testDescription: String { "\(c)->\(mid) k\(k) s\(stride) ->\(out) \(h)x\(w)" }
    }

    /// Expansion + depthwise fused: both fast kernels and strides, a generic kernel (7),
    /// widths of whole and partial groups of four blocks (40, 144 channels), one-row and
    /// narrow planes, with and without the block's residual.
    static let fusedCases: [FusedCase] = [
        FusedCase(c: 8, mid: 48, out: 8, k: 3, stride: 1, h: 9, w: 11),
        FusedCase(c: 16, mid: 96, out: 24, k: 3, stride: 2, h: 16, w: 15),
        FusedCase(c: 8, mid: 48, out: 16, k: 5, stride: 2, h: 13, w: 18),
        FusedCase(c: 24, mid: 144, out: 24, k: 5, stride: 1, h: 7, w: 7),
        FusedCase(c: 16, mid: 40, out: 16, k: 3, stride: 1, h: 10, w: 3),
        FusedCase(c: 8, mid: 24, out: 8, k: 3, stride: 2, h: 1, w: 9),
        FusedCase(c: 16, mid: 32, out: 16, k: 7, stride: 2, h: 12, w: 12),
    ]

    @Test("a 1x1 expansion fused with its depthwise convolution, in bands of a few rows", arguments: fusedCases)
    func fusedExpansion(_ c: FusedCase) {
        var rng = SplitMix64(seed: UInt64(c.c * 3 + c.mid * 5 + c.k * 7 + c.stride * 11 + c.h * 13 + c.w))
        // A first depthwise layer makes the expansion's input blocked, as in EfficientNet.
        let chain = Chain([
            ("_expand_conv", Conv2d(c.c, c.mid, kernel: 1, bias: false)), ("_bn0", BatchNorm2d(c.mid, eps: 1e-3)), (nil, Activation(.relu6)),
            ("_depthwise_conv", GroupedConv2d(c.mid, c.mid, kernel: c.k, stride: c.stride, padding: .same, groups: c.mid, bias: false)),
            ("_bn1", BatchNorm2d(c.mid, eps: 1e-3)), (nil, Activation(.relu6)),
            ("_project_conv", Conv2d(c.mid, c.out, kernel: 1, bias: false)), ("_bn2", BatchNorm2d(c.out, eps: 1e-3)),
        ])
        let block: Layer = c.stride == 1 && c.c == c.out ? ResidualBlock(chain) : chain
        let net = Chain([("first", GroupedConv2d(c.c, c.c, kernel: 3, padding: .same, groups: c.c)), ("block", block)])
        randomize(net, &rng)
        let x = randomTensor([2, c.c, c.h, c.w], &rng, scale: 3)
        let reference = net.forward(x)
        for level in 0...DirectConvolution.bestKernel {
            for threads in [1, 2] {
                // The least band memory: three output rows per band, so most planes take several.
                let plan = InferencePlan(net, inputShape: [c.c, c.h, c.w], threads: threads,
                                         builder: PlanBuilder(channelBlocks: true, fuseExpansions: true, fuseBandFloats: 0))
                plan.kernelLevel = level
                plan.parallelWork = 0
                plan.adaptiveThreads = false
                let kinds = plan.steps.map { "\(type(of: $0))" }
                #expect(kinds.filter { $0 == "BlockedExpandDepthwiseStep" }.count == 1 && kinds.filter { $0 == "BlockedDepthwiseStep" }.count == 1,
                        "\(c.testDescription): \(kinds)")
                let d = planDifference(plan.forward(x), reference)
                #expect(d <= 1e-4, "\(c.testDescription): \(DirectConvolution.kernelName(level)), \(threads) thread(s): differs by \(d)")
            }
        }
    }
}
