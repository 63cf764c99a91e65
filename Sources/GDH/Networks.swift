import NeuralNet

/// Which normalisation a GDH network uses: BatchNorm for category-level retrieval,
/// InstanceNorm for fine-grained (as in the paper).
public enum NormKind: String, Codable, Sendable {
    case batch
    case instance

    func make(_ channels: Int) -> Layer {
        switch self {
        case .batch: return BatchNorm2d(channels)
        case .instance: return InstanceNorm2d(channels)
        }
    }
}

/// The generator's spatial attention: a 1×1 convolution to one channel, a sigmoid, and
/// the features multiplied by that mask (broadcast over channels). The paper's mask is a
/// thresholded softmax, which passes no gradient (and the public code switches it off);
/// the sigmoid keeps the mask learnable end to end.
public final class SpatialAttention: Layer {
    public let conv: Conv2d
    public var training = true
    private var input = Tensor(zeros: [0])
    private var mask = Tensor(zeros: [0])

    public init(channels: Int) {
        conv = Conv2d(channels, 1, kernel: 1)
    }

    public var parameters: [(String, Parameter)] { conv.parameters }

    /// The mask of the last forward, (N, 1, H, W), values in (0, 1).
    public var lastMask: Tensor { mask }

    public func forward(_ x: Tensor) -> Tensor {
        input = x
        var m = conv.forward(x)
        for i in 0..<m.count { m.data[i] = 1 / (1 + exp(-m.data[i])) }
        mask = m
        var y = x
        let plane = x.h * x.w
        for n in 0..<x.n {
            for c in 0..<x.c {
                let base = (n * x.c + c) * plane, mb = n * plane
                for i in 0..<plane { y.data[base + i] *= m.data[mb + i] }
            }
        }
        return y
    }

    public func backward(_ g: Tensor) -> Tensor {
        let x = input, plane = x.h * x.w
        var dx = g
        var dm = Tensor(zeros: mask.shape)
        for n in 0..<x.n {
            for c in 0..<x.c {
                let base = (n * x.c + c) * plane, mb = n * plane
                for i in 0..<plane {
                    dx.data[base + i] = g.data[base + i] * mask.data[mb + i]
                    dm.data[mb + i] += g.data[base + i] * x.data[base + i]
                }
            }
        }
        for i in 0..<dm.count { let m = mask.data[i]; dm.data[i] *= m * (1 - m) }
        dx.accumulate(conv.backward(dm))
        return dx
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// The ResNet generator of GDH (G_I: sketch → image, G_S: image → sketch), with the
/// public GDH code's tensor names: conv1…conv3 with their `_norm`s, `resnet_blocks.i`,
/// `attention1`, deconv1, deconv2 (transposed) and deconv3.
public enum Generator {
    public static func make(ngf: Int, blocks: Int, norm: NormKind, attention: Bool) -> Chain {
        func block(_ c: Int) -> Layer {
            ResidualBlock(Chain([
                ("conv1", Conv2d(c, c, kernel: 3, padding: 1, paddingMode: .reflect)), ("conv1_norm", norm.make(c)),
                (nil, Activation(.relu)),
                ("conv2", Conv2d(c, c, kernel: 3, padding: 1, paddingMode: .reflect)), ("conv2_norm", norm.make(c)),
            ]))
        }
        var layers: [(String?, Layer)] = [
            // Reflection padding is done inside the convolutions (no padded copies).
            ("conv1", Conv2d(3, ngf, kernel: 7, padding: 3, paddingMode: .reflect)), ("conv1_norm", norm.make(ngf)), (nil, Activation(.relu)),
            ("conv2", Conv2d(ngf, 2 * ngf, kernel: 3, stride: 2, padding: 1)), ("conv2_norm", norm.make(2 * ngf)), (nil, Activation(.relu)),
            ("conv3", Conv2d(2 * ngf, 4 * ngf, kernel: 3, stride: 2, padding: 1)), ("conv3_norm", norm.make(4 * ngf)), (nil, Activation(.relu)),
            ("resnet_blocks", Chain(indexed: (0..<blocks).map { _ in block(4 * ngf) })),
        ]
        if attention { layers.append(("attention1", SpatialAttention(channels: 4 * ngf))) }
        layers += [
            ("deconv1", ConvTranspose2d(4 * ngf, 2 * ngf, kernel: 3, stride: 2, padding: 1, outputPadding: 1)),
            ("deconv1_norm", norm.make(2 * ngf)), (nil, Activation(.relu)),
            ("deconv2", ConvTranspose2d(2 * ngf, ngf, kernel: 3, stride: 2, padding: 1, outputPadding: 1)),
            ("deconv2_norm", norm.make(ngf)), (nil, Activation(.relu)),
            ("deconv3", Conv2d(ngf, 3, kernel: 7, padding: 3, paddingMode: .reflect)), (nil, Activation(.tanh)),
        ]
        return Chain(layers)
    }
}

/// The 70×70 PatchGAN discriminator of the public GDH code: conv1 (no norm), conv2–conv4
/// with `_norm`s, conv5 to one channel; LeakyReLU 0.2.
public enum Discriminator {
    public static func make(ndf: Int, norm: NormKind) -> Chain {
        Chain([
            ("conv1", Conv2d(3, ndf, kernel: 4, stride: 2, padding: 1)), (nil, Activation(.leakyReLU(0.2))),
            ("conv2", Conv2d(ndf, 2 * ndf, kernel: 4, stride: 2, padding: 1)), ("conv2_norm", norm.make(2 * ndf)), (nil, Activation(.leakyReLU(0.2))),
            ("conv3", Conv2d(2 * ndf, 4 * ndf, kernel: 4, stride: 2, padding: 1)), ("conv3_norm", norm.make(4 * ndf)), (nil, Activation(.leakyReLU(0.2))),
            ("conv4", Conv2d(4 * ndf, 8 * ndf, kernel: 4, stride: 1, padding: 1)), ("conv4_norm", norm.make(8 * ndf)), (nil, Activation(.leakyReLU(0.2))),
            ("conv5", Conv2d(8 * ndf, 1, kernel: 4, stride: 1, padding: 1)),
        ])
    }
}

/// torchvision's BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), the
/// shortcut a 1×1 convolution + BatchNorm (`downsample.0`, `downsample.1`) when the
/// stride or the width changes.
public final class BasicBlock: Layer {
    let main: Chain
    let downsample: Chain?
    private var preActivation = Tensor(zeros: [0])
    public var training: Bool = true {
        didSet { main.training = training; downsample?.training = training }
    }

    public init(inPlanes: Int, planes: Int, stride: Int) {
        main = Chain([
            ("conv1", Conv2d(inPlanes, planes, kernel: 3, stride: stride, padding: 1, bias: false)), ("bn1", BatchNorm2d(planes)),
            (nil, Activation(.relu)),
            ("conv2", Conv2d(planes, planes, kernel: 3, stride: 1, padding: 1, bias: false)), ("bn2", BatchNorm2d(planes)),
        ])
        downsample = stride != 1 || inPlanes != planes
            ? Chain(indexed: [Conv2d(inPlanes, planes, kernel: 1, stride: stride, bias: false), BatchNorm2d(planes)])
            : nil
    }

    public func forward(_ x: Tensor) -> Tensor {
        var y = main.forward(x)
        y.accumulate(downsample?.forward(x) ?? x)
        preActivation = y
        for i in 0..<y.count where y.data[i] < 0 { y.data[i] = 0 }
        return y
    }

    public func backward(_ g: Tensor) -> Tensor {
        var gy = g
        for i in 0..<gy.count where preActivation.data[i] <= 0 { gy.data[i] = 0 }
        var dx = main.backward(gy)
        dx.accumulate(downsample?.backward(gy) ?? gy)
        return dx
    }

    public var parameters: [(String, Parameter)] {
        main.parameters + (downsample?.parameters.map { ("downsample." + $0.0, $0.1) } ?? [])
    }

    public var buffers: [(String, Buffer)] {
        main.buffers + (downsample?.buffers.map { ("downsample." + $0.0, $0.1) } ?? [])
    }
}

/// The hashing network H: a torchvision-style ResNet (BasicBlocks; `widths` and `blocks`
/// per stage) whose `fc` maps to b real outputs; the code is their sign. widths
/// [64, 128, 256, 512] with blocks [2, 2, 2, 2] is ResNet-18, names and all.
public enum HashNet {
    public static func make(widths: [Int], blocks: [Int], bits: Int) -> Chain {
        precondition(widths.count == 4 && blocks.count == 4, "a hash net has four stages")
        var layers: [(String?, Layer)] = [
            ("conv1", Conv2d(3, widths[0], kernel: 7, stride: 2, padding: 3, bias: false)), ("bn1", BatchNorm2d(widths[0])),
            (nil, Activation(.relu)), (nil, MaxPool2d(kernel: 3, stride: 2, padding: 1)),
        ]
        var inPlanes = widths[0]
        for stage in 0..<4 {
            var stageBlocks: [Layer] = []
            for b in 0..<blocks[stage] {
                let stride = (stage > 0 && b == 0) ? 2 : 1
                stageBlocks.append(BasicBlock(inPlanes: inPlanes, planes: widths[stage], stride: stride))
                inPlanes = widths[stage]
            }
            layers.append(("layer\(stage + 1)", Chain(indexed: stageBlocks)))
        }
        layers += [(nil, AdaptiveAvgPool2d(1, 1)), (nil, Flatten()), ("fc", Linear(inPlanes, bits))]
        return Chain(layers)
    }
}


extension SpatialAttention: InferenceLowerable {
    /// The mask convolution with its sigmoid fused, then the features times the mask.
    public func lower(into plan: PlanBuilder, input: PlanValue) -> PlanValue {
        plan.multiplyByMask(input, plan.convolution(conv, input, activation: .sigmoid))
    }
}

extension BasicBlock: InferenceLowerable {
    /// relu(main(x) + shortcut(x)), the addition and the ReLU fused into main's last convolution.
    public func lower(into plan: PlanBuilder, input: PlanValue) -> PlanValue {
        let shortcut = downsample.map { plan.lower($0, input) } ?? input
        return plan.lowerChain(main.children.map { $0.layer }, input, residual: shortcut, activation: .relu)
    }
}
