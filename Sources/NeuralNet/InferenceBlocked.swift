// Channel-blocked (NCHWc8) steps of the inference plans: chains of 1×1 and depthwise
// convolutions (EfficientNet's inverted-residual blocks) run on values stored as
// [C/8][H·W][8] (blocked_kernels.c), entered and left through reorder steps; see
// `PlanBuilder.channelBlocks` for when a value is blocked.
import CNeuralKernels
import Dispatch
import Foundation

extension PlanBuilder {
    /// GDH_BLOCKED=0 in the environment turns channel blocks off (for comparisons), read once.
    static let blockedOverride: Bool? = {
        switch ProcessInfo.processInfo.environment["GDH_BLOCKED"] {
        case "0": return false
        case "1": return true
        default: return nil
        }
    }()

    static func blockable(_ a: Activation.Kind?) -> Bool { a == nil || a == .relu || a == .relu6 }

    /// `v` in the planar layout: itself, or (once per value) a reorder of its blocks.
    /// A value of one position has the same bytes in both layouts.
    public func plain(_ v: PlanValue) -> PlanValue {
        guard blockedValues.contains(v.id), v.h * v.w > 1 else { return v }
        if let p = planarOf[v.id] { return p }
        let y = newValue(v.shape)
        steps.append(BlockedReorderStep(input: v, output: y, toBlocks: false))
        planarOf[v.id] = y
        return y
    }

    func plain(_ v: PlanValue?) -> PlanValue? { v.map { plain($0) } }

    /// `v` in the blocked layout (its channels a multiple of 8).
    func blocked(_ v: PlanValue) -> PlanValue {
        if blockedValues.contains(v.id) { return v }
        if let b = blockedOf[v.id] { return b }
        precondition(v.shape.count == 3 && v.c % 8 == 0, "blocked layout of \(v.shape)")
        let y = newValue(v.shape)
        blockedValues.insert(y.id)
        if v.h * v.w > 1 { steps.append(BlockedReorderStep(input: v, output: y, toBlocks: true)) }
        else { steps.append(AliasStep(input: v, output: y)) }
        blockedOf[v.id] = y
        return y
    }

    func isBlocked(_ v: PlanValue) -> Bool { blockedValues.contains(v.id) }

    /// A 1×1 convolution on a blocked input stays blocked (widths multiples of 8, stride 1,
    /// no padding, an activation the kernels fuse).
    func blockedPointwise(_ conv: Conv2d, _ x: PlanValue, batchNorm: BatchNorm2d?, activation: Activation.Kind?,
                          residual: PlanValue?) -> PlanValue? {
        guard channelBlocks, isBlocked(x), conv.kernelH == 1, conv.kernelW == 1, conv.stride == 1, conv.padding == 0,
              conv.inChannels % 8 == 0, conv.outChannels % 8 == 0, PlanBuilder.blockable(activation) else { return nil }
        let step = BlockedPointwiseStep(conv, input: x, batchNorm: batchNorm, activation: activation,
                                        residual: residual.map { blocked($0) }, builder: self)
        steps.append(step)
        blockedValues.insert(step.output)
        return PlanValue(id: step.output, shape: step.outputShape)
    }

    /// A depthwise convolution (multiplier 1, channels a multiple of 8) runs blocked, its
    /// input reordered if it is not blocked yet.
    func blockedDepthwise(_ conv: GroupedConv2d, _ x: PlanValue, batchNorm: BatchNorm2d?, activation: Activation.Kind?,
                          residual: PlanValue?) -> PlanValue? {
        guard channelBlocks, conv.usesDepthwiseKernels, conv.inChannels == conv.outChannels, conv.inChannels % 8 == 0,
              x.shape.count == 3, x.h * x.w > 1, PlanBuilder.blockable(activation) else { return nil }
        let step = BlockedDepthwiseStep(conv, input: blocked(x), batchNorm: batchNorm, activation: activation,
                                        residual: residual.map { blocked($0) }, builder: self)
        steps.append(step)
        blockedValues.insert(step.output)
        return PlanValue(id: step.output, shape: step.outputShape)
    }

    /// Global average pooling of a blocked value (its output, one position, is planar).
    func blockedAveragePool(_ x: PlanValue) -> PlanValue? {
        guard isBlocked(x), x.shape.count == 3 else { return nil }
        let y = newValue([x.c, 1, 1])
        steps.append(BlockedAveragePoolStep(input: x, output: y))
        return y
    }
}

extension Conv2d {
    /// A 1×1 layer's weights packed for gdh_blocked_pointwise with an inference BatchNorm's
    /// scale folded in, and its bias · scale + shift (zeros after the last channel).
    func blockedPointwiseWeights(_ batchNorm: BatchNorm2d?) -> (packed: [Float], bias: [Float]) {
        let (ins, outs) = (inChannels, outChannels)
        let (scale, shift) = batchNormFold(batchNorm, channels: outs)
        var p = [Float](repeating: 0, count: Int(gdh_blocked_pointwise_packed_floats(Int32(ins), Int32(outs))))
        weight.value.data.withUnsafeBufferPointer { w in
            scale.withUnsafeBufferPointer { s in
                p.withUnsafeMutableBufferPointer { gdh_blocked_pointwise_pack(w.baseAddress, s.baseAddress, Int32(ins), Int32(outs), $0.baseAddress) }
            }
        }
        var b = [Float](repeating: 0, count: Int(gdh_blocked_pointwise_bias_floats(Int32(outs))))
        for k in 0..<outs { b[k] = (bias?.value.data[k] ?? 0) * scale[k] + shift[k] }
        return (p, b)
    }
}

/// Planes → blocks or back, split between threads by blocks.
final class BlockedReorderStep: PlanStep {
    let input: Int, output: Int, channels: Int, plane: Int, toBlocks: Bool
    var inputs: [Int] { [input] }
    var scratchFloats: Int { 0 }
    var label: String { toBlocks ? "reorder to blocks \(channels)" : "reorder to planes \(channels)" }

    init(input: PlanValue, output: PlanValue, toBlocks: Bool) {
        self.input = input.id; self.output = output.id
        channels = input.c; plane = input.h * input.w; self.toBlocks = toBlocks
    }

    func run(_ m: PlanMemory) {
        let blocks = channels / 8
        let parts = channels * plane >= m.parallelWork / 4 ? min(m.threads, blocks, ConvStep.maxThreads) : 1
        let x = m[input], y = m[output], level = m.kernelLevel
        parallel(parts, parts) { i in
            let r = split(blocks, parts, i)
            gdh_blocked_reorder(x, Int32(channels), plane, y, Int32(r.lowerBound), Int32(r.upperBound), toBlocks ? 1 : 0, level)
        }
    }
}

/// A value of one position: the same bytes in both layouts.
final class AliasStep: PlanStep {
    let input: Int, output: Int, size: Int
    var inputs: [Int] { [input] }
    var scratchFloats: Int { 0 }
    var label: String { "copy" }

    init(input: PlanValue, output: PlanValue) { self.input = input.id; self.output = output.id; size = input.size }

    func run(_ m: PlanMemory) { m[output].update(from: m[input], count: size) }
}

/// A 1×1 convolution with its BatchNorm folded in, then activation(· + residual), on
/// blocked values (gdh_blocked_pointwise); the work is split between threads in tiles of
/// positions × output channels.
final class BlockedPointwiseStep: PlanStep {
    let input: Int, output: Int, residual: Int?
    let inputs: [Int]
    let outputShape: [Int]
    let c: Int, o: Int, positions: Int
    let packed: [Float], bias: [Float]
    let act: Int32
    let flops: Double
    var scratchFloats: Int { 0 }
    let label: String

    init(_ conv: Conv2d, input x: PlanValue, batchNorm: BatchNorm2d?, activation: Activation.Kind?, residual: PlanValue?,
         builder: PlanBuilder) {
        precondition(x.shape.count == 3 && x.c == conv.inChannels, "Conv2d expects (\(conv.inChannels), H, W), got \(x.shape)")
        c = conv.inChannels; o = conv.outChannels; positions = x.h * x.w
        (packed, bias) = conv.blockedPointwiseWeights(batchNorm)
        act = activationCode(activation).0
        outputShape = [o, x.h, x.w]
        (input, self.residual, output, inputs) = builder.stepValues(x, residual: residual, output: outputShape)
        flops = 2 * Double(c * o * positions)
        label = "conv \(c)->\(o) k1 s1 \(x.h)x\(x.w) (blocked)"
    }

    func run(_ m: PlanMemory) {
        let started = ConvProfiler.enabled ? DispatchTime.now().uptimeNanoseconds : 0
        defer { if ConvProfiler.enabled { ConvProfiler.record(start: started, flops: flops) } }
        let parts = flops / 2 >= Double(m.parallelWork) ? min(m.threads, ConvStep.maxThreads) : 1
        let x = m[input], y = m[output], res = residual.map { UnsafePointer(m[$0]) }
        let (c, o, positions, act, level) = (c, o, positions, act, m.kernelLevel)
        packed.withUnsafeBufferPointer { wp in
            bias.withUnsafeBufferPointer { bp in
                parallel(parts, parts) { i in
                    gdh_blocked_pointwise(x, positions, Int32(c), wp.baseAddress, bp.baseAddress, res, act, y, Int32(o),
                                          Int32(i), Int32(parts), level)
                }
            }
        }
    }
}

/// A depthwise convolution with its BatchNorm folded in, then activation(· + residual), on
/// blocked values (gdh_blocked_depthwise); split between threads by blocks of eight
/// channels, or by output rows when there are too few blocks for an even split.
final class BlockedDepthwiseStep: PlanStep {
    let input: Int, output: Int, residual: Int?
    let inputs: [Int]
    let outputShape: [Int]
    let geometry: gdh_dw_geometry
    let weights: [Float], bias: [Float]   // [block][k·k][8], [block][8]
    let act: Int32
    let flops: Double
    var scratchFloats: Int { 0 }
    let label: String

    init(_ conv: GroupedConv2d, input x: PlanValue, batchNorm: BatchNorm2d?, activation: Activation.Kind?, residual: PlanValue?,
         builder: PlanBuilder) {
        precondition(x.shape.count == 3 && x.c == conv.inChannels && conv.inChannels == conv.outChannels && x.c % 8 == 0,
                     "blocked depthwise convolution of \(conv.inChannels) channels on \(x.shape)")
        let g = conv.depthwiseGeometry(height: x.h, width: x.w)
        precondition(g.out_h > 0 && g.out_w > 0, "GroupedConv2d: input \(x.h)x\(x.w) is smaller than the kernel")
        geometry = g
        let o = conv.outChannels, kk = conv.kernel * conv.kernel
        let (folded, shifted) = conv.foldedDepthwise(batchNorm)
        (weights, bias) = packDepthwiseLanes(folded, shifted, channels: o, taps: kk)
        act = activationCode(activation).0
        outputShape = [o, Int(g.out_h), Int(g.out_w)]
        (input, self.residual, output, inputs) = builder.stepValues(x, residual: residual, output: outputShape)
        flops = 2 * Double(o * kk * outputShape[1] * outputShape[2])
        label = "depthwise \(o) k\(conv.kernel) s\(conv.stride) \(x.h)x\(x.w) (blocked)"
    }

    func run(_ m: PlanMemory) {
        let started = ConvProfiler.enabled ? DispatchTime.now().uptimeNanoseconds : 0
        defer { if ConvProfiler.enabled { ConvProfiler.record(start: started, flops: flops) } }
        let threads = flops / 2 >= Double(m.parallelWork) ? min(m.threads, ConvStep.maxThreads) : 1
        let blocks = Int(geometry.channels) / 8, rows = Int(geometry.out_h)
        let byBlocks = blocks % threads == 0 || blocks >= 4 * threads
        let parts = byBlocks ? min(threads, blocks) : min(threads, rows)
        let x = m[input], y = m[output], res = residual.map { UnsafePointer(m[$0]) }
        let level = m.kernelLevel, act = act
        weights.withUnsafeBufferPointer { wp in
            bias.withUnsafeBufferPointer { bp in
                parallel(parts, parts) { i in
                    var g = geometry
                    let bs = byBlocks ? split(blocks, parts, i) : 0..<blocks
                    let rs = byBlocks ? 0..<rows : split(rows, parts, i)
                    gdh_blocked_depthwise(&g, x, wp.baseAddress, bp.baseAddress, res, act, y, Int32(bs.lowerBound),
                                          Int32(bs.upperBound), Int32(rs.lowerBound), Int32(rs.upperBound), level)
                }
            }
        }
    }
}

final class BlockedAveragePoolStep: PlanStep {
    let input: Int, output: Int, c: Int, plane: Int
    var inputs: [Int] { [input] }
    var scratchFloats: Int { 0 }
    var label: String { "avgpool (blocked)" }

    init(input: PlanValue, output: PlanValue) {
        self.input = input.id; self.output = output.id; c = input.c; plane = input.h * input.w
    }

    func run(_ m: PlanMemory) { gdh_blocked_global_average(m[input], Int32(c), plane, m[output], m.kernelLevel) }
}

/// A layer that maps every channel c to x · scale[c] + shift[c] (an input normalisation):
/// the plan fuses it into a following few-channel convolution, or runs it as a step.
public protocol PerChannelAffine {
    var scale: [Float] { get }
    var shift: [Float] { get }
}

extension PlanBuilder {
    /// x · scale[c] + shift[c] on a planar value.
    public func channelAffine(_ x: PlanValue, scale: [Float], shift: [Float]) -> PlanValue {
        let x = plain(x)
        precondition(x.shape.count == 3 && scale.count == x.c && shift.count == x.c, "affine of \(scale.count) channels on \(x.shape)")
        let y = newValue(x.shape)
        steps.append(AffineStep(input: x, output: y, scale: scale, shift: shift))
        return y
    }

    /// A convolution of at most 4 input channels (an image) into 16·k channels, with its
    /// BatchNorm, an activation the kernels fuse and, when given, the input's affine map,
    /// written blocked (gdh_blocked_small_conv); nil when it does not qualify. `conv` is a
    /// Conv2d with zero padding or a GroupedConv2d of one group (TensorFlow SAME).
    func blockedSmallConvolution(_ layer: Layer, _ x: PlanValue, batchNorm: BatchNorm2d?, activation: Activation.Kind?,
                                 affine: PerChannelAffine?) -> PlanValue? {
        guard channelBlocks, x.shape.count == 3, !isBlocked(x), PlanBuilder.blockable(activation) else { return nil }
        let conv: Conv2d, padTop: Int, padLeft: Int, outH: Int, outW: Int
        if let g = layer as? GroupedConv2d, let inner = g.inner {
            let p = g.paddedGeometry(height: x.h, width: x.w)
            (conv, padTop, padLeft, outH, outW) = (inner, p.padTop, p.padLeft, p.outH, p.outW)
        } else if let c = layer as? Conv2d, c.paddingMode == .zeros || c.padding == 0 {
            (conv, padTop, padLeft) = (c, c.padding, c.padding)
            outH = (x.h + 2 * c.padding - c.kernelH) / c.stride + 1
            outW = (x.w + 2 * c.padding - c.kernelW) / c.stride + 1
        } else {
            return nil
        }
        guard conv.inChannels == x.c, x.c <= 4, conv.outChannels % 16 == 0, conv.kernelH == conv.kernelW,
              conv.padding == 0 || layer is Conv2d, outH > 0, outW > 0, outH * outW > 1 else { return nil }
        let step = BlockedSmallConvStep(conv, input: x, padTop: padTop, padLeft: padLeft, outH: outH, outW: outW,
                                        batchNorm: batchNorm, activation: activation, affine: affine, builder: self)
        steps.append(step)
        blockedValues.insert(step.output)
        return PlanValue(id: step.output, shape: step.outputShape)
    }
}

/// y = x · scale[c] + shift[c], split between threads by rows of the planes.
final class AffineStep: PlanStep {
    let input: Int, output: Int, c: Int, plane: Int
    let scale: [Float], shift: [Float]
    var inputs: [Int] { [input] }
    var scratchFloats: Int { 0 }
    var label: String { "affine \(c)" }

    init(input: PlanValue, output: PlanValue, scale: [Float], shift: [Float]) {
        self.input = input.id; self.output = output.id; c = input.c; plane = input.h * input.w
        self.scale = scale; self.shift = shift
    }

    func run(_ m: PlanMemory) {
        let parts = c * plane >= m.parallelWork / 4 ? min(m.threads, ConvStep.maxThreads) : 1
        let x = m[input], y = m[output], (c, plane, scale, shift) = (c, plane, scale, shift)
        parallel(parts, parts) { i in
            let r = split(plane, parts, i)
            for ch in 0..<c {
                let a = scale[ch], b = shift[ch], xs = x + ch * plane, ys = y + ch * plane
                for k in r { ys[k] = xs[k] * a + b }
            }
        }
    }
}

/// The first convolution of an image network (few input channels) with its BatchNorm,
/// activation and input normalisation, written in the blocked layout; split by output rows.
final class BlockedSmallConvStep: PlanStep {
    let input: Int, output: Int
    let outputShape: [Int]
    let c, h, w, k, stride, padTop, padLeft, o: Int
    let packed: [Float], bias: [Float]
    let scale: [Float]?, shift: [Float]?
    let act: Int32
    let flops: Double
    var inputs: [Int] { [input] }
    var scratchFloats: Int { 0 }
    let label: String

    init(_ conv: Conv2d, input x: PlanValue, padTop: Int, padLeft: Int, outH: Int, outW: Int, batchNorm: BatchNorm2d?,
         activation: Activation.Kind?, affine: PerChannelAffine?, builder: PlanBuilder) {
        c = x.c; h = x.h; w = x.w; k = conv.kernelH; stride = conv.stride; o = conv.outChannels
        self.padTop = padTop; self.padLeft = padLeft
        let (bnScale, bnShift) = batchNormFold(batchNorm, channels: o)
        let wt = conv.weight.value.data, taps = c * k * k
        var p = [Float](repeating: 0, count: taps * o)
        for oc in 0..<o { for t in 0..<taps { p[t * o + oc] = wt[oc * taps + t] * bnScale[oc] } }
        packed = p
        bias = (0..<o).map { (conv.bias?.value.data[$0] ?? 0) * bnScale[$0] + bnShift[$0] }
        scale = affine?.scale
        shift = affine?.shift
        act = activationCode(activation).0
        outputShape = [o, outH, outW]
        input = x.id
        output = builder.newValue(outputShape).id
        flops = 2 * Double(taps * o * outH * outW)
        label = "conv \(c)->\(o) k\(k) s\(stride) \(h)x\(w)\(affine == nil ? "" : " + affine") (blocked)"
    }

    func run(_ m: PlanMemory) {
        let started = ConvProfiler.enabled ? DispatchTime.now().uptimeNanoseconds : 0
        defer { if ConvProfiler.enabled { ConvProfiler.record(start: started, flops: flops) } }
        let rows = outputShape[1]
        let parts = flops / 2 >= Double(m.parallelWork) ? min(m.threads, ConvStep.maxThreads, rows) : 1
        let x = m[input], y = m[output], level = m.kernelLevel
        let (c, h, w, k, stride, padTop, padLeft, o, act, outW) = (c, h, w, k, stride, padTop, padLeft, o, act, outputShape[2])
        packed.withUnsafeBufferPointer { wp in
            bias.withUnsafeBufferPointer { bp in
                (scale ?? []).withUnsafeBufferPointer { sp in
                    (shift ?? []).withUnsafeBufferPointer { tp in
                        parallel(parts, parts) { i in
                            let r = split(rows, parts, i)
                            gdh_blocked_small_conv(x, Int32(c), Int32(h), Int32(w), Int32(k), Int32(stride), Int32(padTop),
                                                   Int32(padLeft), Int32(rows), Int32(outW), wp.baseAddress, bp.baseAddress,
                                                   sp.count > 0 ? sp.baseAddress : nil, tp.count > 0 ? tp.baseAddress : nil,
                                                   act, y, Int32(o), Int32(r.lowerBound), Int32(r.upperBound), level)
                        }
                    }
                }
            }
        }
    }
}

extension PlanBuilder {
    /// Expanded values of this many floats and more are not stored: a 1×1 expansion and the
    /// depthwise convolution after it run as one step (GDH_FUSE_MIN_FLOATS overrides).
    static let fuseMinFloats = Int(ProcessInfo.processInfo.environment["GDH_FUSE_MIN_FLOATS"] ?? "") ?? (1 << 17)
    /// Scratch floats per thread for the bands of a fused expansion (256 KiB: they stay in L2).
    static let fuseBandFloats = 1 << 16

    /// The 1×1 expansion `expand` (+ BatchNorm, activation) of a blocked input fused with the
    /// depthwise `dw` (+ BatchNorm, activation) after it; nil when they do not qualify.
    func blockedExpandDepthwise(_ expand: Conv2d, _ x: PlanValue, batchNorm bn0: BatchNorm2d?, activation act0: Activation.Kind?,
                                depthwise dw: GroupedConv2d, batchNorm bn1: BatchNorm2d?, activation act1: Activation.Kind?) -> PlanValue? {
        guard channelBlocks, isBlocked(x), x.shape.count == 3, expand.kernelH == 1, expand.kernelW == 1, expand.stride == 1,
              expand.padding == 0, expand.inChannels % 8 == 0, expand.outChannels % 8 == 0, PlanBuilder.blockable(act0),
              dw.usesDepthwiseKernels, dw.inChannels == expand.outChannels, dw.outChannels == dw.inChannels,
              PlanBuilder.blockable(act1),
              fuseExpansions ?? (expand.outChannels * x.h * x.w >= PlanBuilder.fuseMinFloats) else { return nil }
        let step = BlockedExpandDepthwiseStep(expand, input: x, batchNorm: bn0, activation: act0, depthwise: dw, batchNorm: bn1,
                                              activation: act1, builder: self)
        steps.append(step)
        blockedValues.insert(step.output)
        return PlanValue(id: step.output, shape: step.outputShape)
    }
}

/// A 1×1 expansion and the depthwise convolution after it, each with its BatchNorm folded
/// in and its activation, in one pass (gdh_blocked_expand_depthwise): the expanded value is
/// computed band by band into each thread's scratch and never stored whole. Split between
/// threads by output rows.
final class BlockedExpandDepthwiseStep: PlanStep {
    let input: Int, output: Int
    let outputShape: [Int]
    let c: Int
    let packed: [Float], expandBias: [Float], weights: [Float], bias: [Float]
    let actExpand: Int32, act: Int32
    let geometry: gdh_dw_geometry
    let perThread: Int
    let flops: Double
    var inputs: [Int] { [input] }
    var scratchFloats: Int { perThread * ConvStep.maxThreads }
    let label: String

    init(_ expand: Conv2d, input x: PlanValue, batchNorm bn0: BatchNorm2d?, activation act0: Activation.Kind?,
         depthwise dw: GroupedConv2d, batchNorm bn1: BatchNorm2d?, activation act1: Activation.Kind?, builder: PlanBuilder) {
        precondition(x.shape.count == 3 && x.c == expand.inChannels, "Conv2d expects (\(expand.inChannels), H, W), got \(x.shape)")
        c = x.c
        let mid = expand.outChannels
        (packed, expandBias) = expand.blockedPointwiseWeights(bn0)
        var g = dw.depthwiseGeometry(height: x.h, width: x.w)
        precondition(g.out_h > 0 && g.out_w > 0, "GroupedConv2d: input \(x.h)x\(x.w) is smaller than the kernel")
        geometry = g
        let (folded, shifted) = dw.foldedDepthwise(bn1)
        (weights, bias) = packDepthwiseLanes(folded, shifted, channels: mid, taps: dw.kernel * dw.kernel)
        actExpand = activationCode(act0).0
        act = activationCode(act1).0
        outputShape = [mid, Int(g.out_h), Int(g.out_w)]
        input = x.id
        output = builder.newValue(outputShape).id
        perThread = (Int(gdh_blocked_expand_depthwise_scratch_floats(&g, builder.fuseBandFloats)) + 15) & ~15
        flops = 2 * Double(c * mid * x.h * x.w) + 2 * Double(mid * dw.kernel * dw.kernel * outputShape[1] * outputShape[2])
        label = "conv \(c)->\(mid) k1 + depthwise k\(dw.kernel) s\(dw.stride) \(x.h)x\(x.w) (blocked)"
    }

    func run(_ m: PlanMemory) {
        let started = ConvProfiler.enabled ? DispatchTime.now().uptimeNanoseconds : 0
        defer { if ConvProfiler.enabled { ConvProfiler.record(start: started, flops: flops) } }
        let rows = outputShape[1]
        let parts = flops / 2 >= Double(m.parallelWork) ? min(m.threads, ConvStep.maxThreads, rows) : 1
        let x = m[input], y = m[output], scratch = m.scratch, per = perThread, level = m.kernelLevel
        let (c, actExpand, act) = (c, actExpand, act)
        packed.withUnsafeBufferPointer { pp in
            expandBias.withUnsafeBufferPointer { ep in
                weights.withUnsafeBufferPointer { wp in
                    bias.withUnsafeBufferPointer { bp in
                        parallel(parts, parts) { i in
                            var g = geometry
                            let r = split(rows, parts, i)
                            gdh_blocked_expand_depthwise(x, Int32(c), pp.baseAddress, ep.baseAddress, actExpand, &g, wp.baseAddress,
                                                         bp.baseAddress, act, y, Int32(r.lowerBound), Int32(r.upperBound),
                                                         scratch + i * per, per, level)
                        }
                    }
                }
            }
        }
    }
}
