import NeuralNet

/// EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant for mobile accelerators: ReLU6
/// instead of swish, no squeeze-and-excitation, the stem and head not scaled) as the
/// PyPI package `efficientnet-lite-pytorch` defines it, with its `state_dict` names:
/// `_conv_stem`, `_bn0`, `_blocks.<i>` (16 inverted-residual blocks), `_conv_head`, `_bn1`,
/// `_fc`. Convolutions pad as TensorFlow's SAME (the package's `Conv2dDynamicSamePadding`),
/// BatchNorm ε is 1e-3 and its momentum 0.01 (the package's `1 - 0.99`).
///
/// As a hashing network `_fc` maps the globally pooled 1,280 features to the code's b real
/// outputs; `imageNetClasses` builds the 1000-way ImageNet classifier instead (used to check
/// the converted weights against PyTorch).
public enum EfficientNetLite0 {
    /// One row of the package's `blocks_args`: repeats, kernel, first stride, expansion,
    /// input and output channels.
    public struct Stage: Sendable {
        public let repeats, kernel, stride, expand, inChannels, outChannels: Int
    }

    /// `r1_k3_s11_e1_i32_o16` … `r1_k3_s11_e6_i192_o320`.
    public static let stages: [Stage] = [
        Stage(repeats: 1, kernel: 3, stride: 1, expand: 1, inChannels: 32, outChannels: 16),
        Stage(repeats: 2, kernel: 3, stride: 2, expand: 6, inChannels: 16, outChannels: 24),
        Stage(repeats: 2, kernel: 5, stride: 2, expand: 6, inChannels: 24, outChannels: 40),
        Stage(repeats: 3, kernel: 3, stride: 2, expand: 6, inChannels: 40, outChannels: 80),
        Stage(repeats: 3, kernel: 5, stride: 1, expand: 6, inChannels: 80, outChannels: 112),
        Stage(repeats: 4, kernel: 5, stride: 2, expand: 6, inChannels: 112, outChannels: 192),
        Stage(repeats: 1, kernel: 3, stride: 1, expand: 6, inChannels: 192, outChannels: 320),
    ]

    public static let stemChannels = 32
    public static let featureChannels = 1280
    public static let imageNetClasses = 1000
    static let bnEps: Float = 1e-3
    static let bnMomentum: Float = 0.01

    /// The stage (0-6) of each of the 16 blocks.
    public static var blockStages: [Int] {
        stages.enumerated().flatMap { i, s in Array(repeating: i, count: s.repeats) }
    }

    /// The network: `input` (if any) first, then stem, blocks, head, global average pooling
    /// and `_fc` to `outputs`.
    public static func make(outputs: Int, input: Layer? = nil) -> Chain {
        func bn(_ c: Int) -> BatchNorm2d { BatchNorm2d(c, eps: bnEps, momentum: bnMomentum) }
        var blocks: [Layer] = []
        for s in stages {
            for r in 0..<s.repeats {
                blocks.append(invertedResidual(inChannels: r == 0 ? s.inChannels : s.outChannels, outChannels: s.outChannels,
                                               kernel: s.kernel, stride: r == 0 ? s.stride : 1, expand: s.expand))
            }
        }
        var layers: [(String?, Layer)] = input.map { [(nil, $0)] } ?? []
        layers += [
            ("_conv_stem", GroupedConv2d(3, stemChannels, kernel: 3, stride: 2, padding: .same, groups: 1, bias: false)),
            ("_bn0", bn(stemChannels)), (nil, Activation(.relu6)),
            ("_blocks", Chain(indexed: blocks)),
            ("_conv_head", Conv2d(stages.last!.outChannels, featureChannels, kernel: 1, bias: false)),
            ("_bn1", bn(featureChannels)), (nil, Activation(.relu6)),
            (nil, AdaptiveAvgPool2d(1, 1)), (nil, Flatten()),
            ("_fc", Linear(featureChannels, outputs)),
        ]
        return Chain(layers)
    }

    /// The package's MBConvBlock without squeeze-and-excitation: [1×1 expansion, BN, ReLU6]
    /// (when expand > 1), k×k depthwise, BN, ReLU6, 1×1 projection, BN; plus the input when
    /// the stride is 1 and the widths agree. No drop-connect (stochastic depth): training
    /// here is deterministic, and the PyTorch reference trainer switches it off too.
    public static func invertedResidual(inChannels: Int, outChannels: Int, kernel: Int, stride: Int, expand: Int) -> Layer {
        func bn(_ c: Int) -> BatchNorm2d { BatchNorm2d(c, eps: bnEps, momentum: bnMomentum) }
        let mid = inChannels * expand
        var layers: [(String?, Layer)] = []
        if expand != 1 {
            layers += [("_expand_conv", Conv2d(inChannels, mid, kernel: 1, bias: false)), ("_bn0", bn(mid)), (nil, Activation(.relu6))]
        }
        layers += [
            ("_depthwise_conv", GroupedConv2d(mid, mid, kernel: kernel, stride: stride, padding: .same, groups: mid, bias: false)),
            ("_bn1", bn(mid)), (nil, Activation(.relu6)),
            ("_project_conv", Conv2d(mid, outChannels, kernel: 1, bias: false)), ("_bn2", bn(outChannels)),
        ]
        let chain = Chain(layers)
        return stride == 1 && inChannels == outChannels ? ResidualBlock(chain) : chain
    }

    /// The layers whose tensors stay fixed when the first `stages` stages are frozen: the stem
    /// (`_conv_stem`, `_bn0`) and the blocks of those stages, in order. Empty for 0.
    public static func frozenLayers(of net: Chain, stages frozen: Int) -> [Layer] {
        guard frozen > 0 else { return [] }
        var out: [Layer] = []
        for c in net.children {
            if c.name == "_conv_stem" || c.name == "_bn0" { out.append(c.layer) }
            if c.name == "_blocks", let blocks = c.layer as? Chain {
                for (i, s) in blockStages.enumerated() where s < frozen { out.append(blocks.children[i].layer) }
            }
        }
        return out
    }

    /// Names of the backbone's tensors (everything but `_fc`), for loading ImageNet weights.
    public static func isBackbone(_ name: String) -> Bool { !name.hasPrefix("_fc.") }
}

/// A fixed per-channel affine map y = x · scale[c] + shift[c] (no parameters): turns the
/// project's [-1, 1] input into the normalisation a pretrained network was trained with.
public final class ChannelAffine: StatelessLayer, Layer, PerChannelAffine {
    public let scale: [Float], shift: [Float]

    public init(scale: [Float], shift: [Float]) {
        precondition(scale.count == shift.count && !scale.isEmpty, "ChannelAffine: one scale and shift per channel")
        self.scale = scale
        self.shift = shift
    }

    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4 && x.c == scale.count, "ChannelAffine: input \(x.shape) for \(scale.count) channels")
        var y = x
        let plane = x.h * x.w
        y.data.withUnsafeMutableBufferPointer { p in
            for n in 0..<x.n {
                for c in 0..<x.c {
                    let base = (n * x.c + c) * plane, a = scale[c], b = shift[c]
                    for i in base..<(base + plane) { p[i] = p[i] * a + b }
                }
            }
        }
        return y
    }

    public func backward(_ g: Tensor) -> Tensor {
        var dx = g
        let plane = g.h * g.w
        dx.data.withUnsafeMutableBufferPointer { p in
            for n in 0..<g.n {
                for c in 0..<g.c {
                    let base = (n * g.c + c) * plane, a = scale[c]
                    for i in base..<(base + plane) { p[i] *= a }
                }
            }
        }
        return dx
    }
}

extension EfficientNetLite0 {
    /// The map from the project's input x = p / 127.5 − 1 (p the 8-bit pixel) to what the
    /// ImageNet weights expect, (p − 127) / 128 (TensorFlow Lite's mean 127 and std 128: on
    /// scikit-image's photos it gave the right classes their highest confidence, coffee's
    /// espresso 0.94 against 0.82 with ImageNet's mean and std; Tools/convert_lite0.py):
    /// x · 127.5/128 + 0.5/128 on every channel.
    public static func inputNormalization() -> Layer {
        ChannelAffine(scale: [Float](repeating: 127.5 / 128, count: 3), shift: [Float](repeating: 0.5 / 128, count: 3))
    }
}
