// Grouped convolutions in the inference plans: depthwise ones as one fused step
// (convolution, folded BatchNorm, activation, residual) on the depthwise kernels of
// depthwise_kernels.c; groups = 1 through the ordinary convolution step (after an
// explicit zero padding for TensorFlow SAME); other groupings through the layer's forward.
import CNeuralKernels
import Dispatch
import Foundation

/// Depthwise convolution with its BatchNorm folded into the weights (per-channel scale)
/// and the bias (per-channel shift), then activation(· + residual), in one pass of
/// gdh_depthwise_infer: each thread pads its channels' planes into its own scratch and
/// finishes their output rows. Split between threads by channels, or by output rows when
/// there are fewer than four channels per thread.
final class DepthwiseConvStep: PlanStep {
    let input: Int, output: Int, residual: Int?
    let inputs: [Int]
    let outputShape: [Int]
    let geometry: gdh_dw_geometry
    let weights: [Float]   // (out, k, k), BatchNorm scale folded in
    let bias: [Float]      // (out): conv bias · scale + shift
    let act: Int32, slope: Float
    let flops: Double
    /// Eight channels side by side (gdh_depthwise_infer_lanes) instead of plane by plane;
    /// then `weights` and `bias` are packed [block][k·k][8] and [block][8].
    let lanes: Bool
    /// Scratch floats of one thread.
    let perThread: Int
    var scratchFloats: Int { perThread * ConvStep.maxThreads }
    var label: String {
        "depthwise \(geometry.channels)->\(outputShape[0]) k\(geometry.kernel) s\(geometry.stride) \(geometry.height)x\(geometry.width)"
    }

    init(_ conv: GroupedConv2d, input x: PlanValue, batchNorm: BatchNorm2d?, activation: Activation.Kind?, residual: PlanValue?,
         builder: PlanBuilder) {
        precondition(x.shape.count == 3 && x.c == conv.inChannels, "GroupedConv2d expects (\(conv.inChannels), H, W), got \(x.shape)")
        precondition(conv.usesDepthwiseKernels, "DepthwiseConvStep: not a depthwise convolution")
        var g = conv.depthwiseGeometry(height: x.h, width: x.w)
        precondition(g.out_h > 0 && g.out_w > 0, "GroupedConv2d: input \(x.h)x\(x.w) is smaller than the kernel")
        geometry = g
        let o = conv.outChannels, kk = conv.kernel * conv.kernel
        let (folded, shifted) = conv.foldedDepthwise(batchNorm)
        lanes = g.multiplier == 1 && (builder.depthwiseLanes ?? DepthwiseConvStep.usesLanes(outputPixels: Int(g.out_h * g.out_w)))
        if lanes {
            (weights, bias) = packDepthwiseLanes(folded, shifted, channels: o, taps: kk)
        } else {
            weights = folded
            bias = shifted
        }
        (act, slope) = activationCode(activation)
        outputShape = [o, Int(g.out_h), Int(g.out_w)]
        (input, self.residual, output, inputs) = builder.stepValues(x, residual: residual, output: outputShape)
        flops = 2 * Double(o * kk * outputShape[1] * outputShape[2])
        perThread = (Int(lanes ? gdh_depthwise_lanes_scratch_floats(&g) : gdh_depthwise_scratch_floats(&g)) + 15) & ~15
    }

    /// Output planes of at most this many pixels go by channel lanes: measured with `gdh
    /// bench depthwise` (GDH_DW_LANES=0 or 1 forces one form there), on a Zen 4 EPYC
    /// lanes win on every EfficientNet-Lite0 layer at 128 and 224 px but the 32-channel
    /// 64×64 and 112×112 ones (Docs/benchmarks.md).
    static let lanesMaxPixels = 3600
    static func usesLanes(outputPixels: Int) -> Bool {
        switch ProcessInfo.processInfo.environment["GDH_DW_LANES"] {
        case "0": return false
        case "1": return true
        default: return outputPixels <= lanesMaxPixels
        }
    }

    func run(_ m: PlanMemory) {
        let started = ConvProfiler.enabled ? DispatchTime.now().uptimeNanoseconds : 0
        defer { if ConvProfiler.enabled { ConvProfiler.record(start: started, flops: flops) } }
        let threads = flops / 2 >= Double(m.parallelWork) ? min(m.threads, ConvStep.maxThreads) : 1
        let channels = Int(geometry.channels), rows = Int(geometry.out_h)
        // Lanes: blocks of eight channels split between the threads; planes: channels, or
        // output rows when there are too few channels for a balanced split.
        let blocks = (channels + 7) / 8, byChannels = lanes || channels >= 4 * threads
        let parts = lanes ? min(threads, blocks) : byChannels ? threads : min(threads, rows)
        let src = m[input], dst = m[output], res = residual.map { UnsafePointer(m[$0]) }
        let scratch = m.scratch, per = perThread, level = m.kernelLevel, (act, slope) = (act, slope), lanes = lanes
        weights.withUnsafeBufferPointer { wp in
            bias.withUnsafeBufferPointer { bp in
                parallel(parts, parts) { i in
                    var g = geometry
                    if lanes {
                        let bs = split(blocks, parts, i)
                        gdh_depthwise_infer_lanes(&g, src, wp.baseAddress, bp.baseAddress, res, act, slope, dst,
                                                  Int32(bs.lowerBound), Int32(bs.upperBound), scratch + i * per, level)
                        return
                    }
                    let cs = byChannels ? split(channels, parts, i) : 0..<channels
                    let rs = byChannels ? 0..<rows : split(rows, parts, i)
                    gdh_depthwise_infer(&g, src, wp.baseAddress, bp.baseAddress, res, act, slope, dst,
                                        Int32(cs.lowerBound), Int32(cs.upperBound), Int32(rs.lowerBound), Int32(rs.upperBound),
                                        scratch + i * per, level)
                }
            }
        }
    }
}

extension GroupedConv2d {
    /// The weights (out × kernel²) with an inference BatchNorm's scale folded in, and the
    /// bias · scale + shift per output channel.
    func foldedDepthwise(_ batchNorm: BatchNorm2d?) -> (weights: [Float], bias: [Float]) {
        let o = outChannels, kk = kernel * kernel
        let (scale, shift) = batchNormFold(batchNorm, channels: o)
        let w = weight.value.data
        return ((0..<(o * kk)).map { w[$0] * scale[$0 / kk] }, (0..<o).map { (bias?.value.data[$0] ?? 0) * scale[$0] + shift[$0] })
    }
}

/// Depthwise weights (channels × taps) and biases packed for eight channels in the vector
/// lanes: [block][tap][8] and [block][8], zeros past the last channel.
func packDepthwiseLanes(_ w: [Float], _ b: [Float], channels o: Int, taps kk: Int) -> (weights: [Float], bias: [Float]) {
    let blocks = (o + 7) / 8
    var w8 = [Float](repeating: 0, count: blocks * kk * 8), b8 = [Float](repeating: 0, count: blocks * 8)
    for c in 0..<o {
        for t in 0..<kk { w8[((c / 8) * kk + t) * 8 + c % 8] = w[c * kk + t] }
        b8[c] = b[c]
    }
    return (w8, b8)
}

/// Zero padding by different amounts on each side (TensorFlow SAME before a convolution
/// whose own padding is symmetric).
final class PadStep: PlanStep {
    let input: Int, output: Int
    let c, h, w, top, left, bottom, right: Int
    var inputs: [Int] { [input] }
    var scratchFloats: Int { 0 }
    var label: String { "pad \(top),\(left),\(bottom),\(right) \(h)x\(w)" }

    init(input x: PlanValue, output: PlanValue, top: Int, left: Int, bottom: Int, right: Int) {
        input = x.id; self.output = output.id
        c = x.c; h = x.h; w = x.w
        self.top = top; self.left = left; self.bottom = bottom; self.right = right
    }

    func run(_ m: PlanMemory) {
        let src = m[input], dst = m[output]
        let ho = h + top + bottom, wo = w + left + right
        for ch in 0..<c {
            let s = src + ch * h * w, d = dst + ch * ho * wo
            d.update(repeating: 0, count: top * wo)
            for y in 0..<h {
                let row = d + (top + y) * wo
                row.update(repeating: 0, count: left)
                (row + left).update(from: s + y * w, count: w)
                (row + left + w).update(repeating: 0, count: right)
            }
            (d + (top + h) * wo).update(repeating: 0, count: bottom * wo)
        }
    }
}

extension PlanBuilder {
    /// A grouped convolution with its BatchNorm (eval) folded in, then
    /// activation(· + residual): depthwise ones fused into one `DepthwiseConvStep`, groups = 1
    /// as a `Conv2d` (after a `PadStep` for asymmetric SAME padding), others through the
    /// layers' own forward passes.
    public func groupedConvolution(_ conv: GroupedConv2d, _ x: PlanValue, batchNorm: BatchNorm2d? = nil,
                                   activation: Activation.Kind? = nil, residual: PlanValue? = nil) -> PlanValue {
        precondition(x.shape.count == 3, "GroupedConv2d expects (C, H, W), got \(x.shape)")
        if let y = blockedDepthwise(conv, x, batchNorm: batchNorm, activation: activation, residual: residual) { return y }
        let (x, residual) = (plain(x), plain(residual))
        if let inner = conv.inner {
            var v = x
            let p = conv.paddedGeometry(height: x.h, width: x.w)
            if conv.padding == .same, p.padTop + p.padLeft + p.padBottom + p.padRight > 0 {
                let padded = newValue([x.c, x.h + p.padTop + p.padBottom, x.w + p.padLeft + p.padRight])
                steps.append(PadStep(input: x, output: padded, top: p.padTop, left: p.padLeft, bottom: p.padBottom, right: p.padRight))
                v = padded
            }
            return convolution(inner, v, batchNorm: batchNorm, activation: activation, residual: residual)
        }
        if conv.usesDepthwiseKernels {
            let step = DepthwiseConvStep(conv, input: x, batchNorm: batchNorm, activation: activation, residual: residual, builder: self)
            steps.append(step)
            return PlanValue(id: step.output, shape: step.outputShape)
        }
        var v = fallback(conv, x)
        if let batchNorm { v = fallback(batchNorm, v) }
        if let r = residual { return add(v, r, activation: activation) }
        if let activation { v = fallback(Activation(activation), v) }
        return v
    }
}
