// Convolution steps of the inference plans: Conv2d (positions or channels in the
// vector lanes) and ConvTranspose2d (by output phases).
import CNeuralKernels
import Dispatch
import Foundation

/// Convolution: pad and phase-split the input, run the direct kernel over flat positions,
/// then bias + residual + activation into the compact output.
final class ConvStep: PlanStep {
    let input: Int, output: Int, residual: Int?
    let inputs: [Int]
    let outputShape: [Int]
    let c, h, w, o, ho, wo, stride, pad, kernel: Int
    let reflect: Bool
    /// Layers with few positions put output channels in the vector lanes (AVX-512 only):
    /// blocks of `channelBlock` channels, weights `channelPacked`, the valid `positions`.
    /// Their input is only padded (no phase split): taps `channelTaps` and `positions` are
    /// offsets in planes of `channelPitch` columns; the output is written compact.
    let channelBlock: Int
    let channelPacked: [Float]
    let channelPacked16: [Float]
    let positions: [Int]
    let channelTaps: [Int]
    let channelPitch: Int
    let planeH, pitch: Int
    let direct: Bool          // 1×1, stride 1, no padding: the input is used as it is
    let taps: [Int]
    let packed: [Float]
    let bias: [Float]
    let act: Int32, slope: Float
    let flops: Double
    var preparedFloats: Int { direct ? 0 : c * stride * stride * planeH * pitch + pitch * (stride + 2) * 2 + 64 }
    var accFloats: Int { ho * pitch * o + 64 }
    var scratchFloats: Int {
        let rows = preparedFloats <= privatePrepareLimit ? accFloatsAligned + ConvStep.maxThreads * preparedFloatsAligned : 0
        return max(preparedFloats + (direct ? 0 : accFloats), channelScratchPerThread * ConvStep.maxThreads, rows)
    }
    var accFloatsAligned: Int { direct ? 0 : (accFloats + 15) & ~15 }
    var preparedFloatsAligned: Int { (preparedFloats + 15) & ~15 }
    private let label0: String
    var label: String { label0 + (channelBlock > 0 ? " (channel lanes)" : "") }
    /// Rows × columns for an h × w plane of a 1×1 layer: columns a multiple of 16 (at most
    /// 256) that divides h·w when w is not one already.
    static func flatRows(_ h: Int, _ w: Int) -> (Int, Int) {
        if w % 16 == 0 { return (h, w) }
        let n = h * w
        for cols in Swift.stride(from: min(n, 256) / 16 * 16, through: 16, by: -16) where n % cols == 0 { return (n / cols, cols) }
        return (h, w)
    }

    /// Output positions up to which the channel-lane kernel is used.
    static let channelKernelPositions = 64

    init(_ conv: Conv2d, input x: PlanValue, batchNorm: BatchNorm2d?, activation: Activation.Kind?, residual: PlanValue?, builder: PlanBuilder) {
        precondition(x.shape.count == 3 && x.c == conv.inChannels, "Conv2d expects (\(conv.inChannels), H, W), got \(x.shape)")
        precondition(conv.kernelH == conv.kernelW, "square kernels only")
        // A 1×1, stride-1, unpadded layer maps each position to itself, so its planes may be
        // read as rows of any width: one a multiple of 16 lets the row tiles finish the
        // output in registers (see `fusesEpilogue`; 56×56 runs as 14 rows of 224).
        let flat = conv.kernelH == 1 && conv.stride == 1 && conv.padding == 0 && x.h * x.w > ConvStep.channelKernelPositions
        (h, w) = flat ? ConvStep.flatRows(x.h, x.w) : (x.h, x.w)
        c = x.c; o = conv.outChannels
        label0 = "conv \(c)->\(o) k\(conv.kernelH) s\(conv.stride) \(x.h)x\(x.w)"
        stride = conv.stride; pad = conv.padding
        reflect = conv.paddingMode == .reflect && pad > 0
        if reflect { precondition(pad < h && pad < w, "reflection padding \(pad) needs a larger image than \(h)x\(w)") }
        let k = conv.kernelH
        kernel = k
        ho = (h + 2 * pad - k) / stride + 1
        wo = (w + 2 * pad - k) / stride + 1
        precondition(ho > 0 && wo > 0, "Conv2d: input \(h)x\(w) is smaller than the kernel")
        direct = k == 1 && stride == 1 && pad == 0
        planeH = (h + 2 * pad + stride - 1) / stride
        pitch = direct ? w : (w + 2 * pad + stride - 1) / stride
        taps = phaseTaps(kernel: k, stride: stride, plane: planeH * pitch, pitch: pitch)
        let (scale, shift) = batchNormFold(batchNorm, channels: o)
        let kk = k * k, (outs, ins) = (o, c)
        let wt = conv.weight.value.data
        packed = wt.withUnsafeBufferPointer { packDirectWeights($0.baseAddress!, outs: outs, ins: ins, taps: kk, scale: scale) }
        let lanes = ConvStep.channelLayout(wt, scale: scale, outs: o, ins: c, k: k, stride: stride, pad: pad, w: w, ho: ho, wo: wo)
        channelBlock = lanes.block
        channelPacked = lanes.packed
        channelPacked16 = lanes.packed16
        positions = lanes.positions
        channelTaps = lanes.taps
        channelPitch = lanes.pitch
        bias = (0..<o).map { (conv.bias?.value.data[$0] ?? 0) * scale[$0] + shift[$0] }
        (act, slope) = activationCode(activation)
        outputShape = flat ? [o, x.h, x.w] : [o, ho, wo]
        (input, self.residual, output, inputs) = builder.stepValues(x, residual: residual, output: outputShape)
        flops = 2 * Double(o * c * kk * ho * wo)
    }

    /// The channel-lane kernel's weights (BatchNorm's scale folded in) and offsets, for
    /// output planes of at most `channelKernelPositions` and a multiple of 16 channels;
    /// block 0 and empty arrays where that kernel is not used.
    static func channelLayout(_ wt: [Float], scale: [Float], outs: Int, ins: Int, k: Int, stride: Int, pad: Int,
                              w: Int, ho: Int, wo: Int)
        -> (block: Int, packed: [Float], packed16: [Float], positions: [Int], taps: [Int], pitch: Int) {
        guard gdh_conv_channels_kernel_available() != 0 && outs % 16 == 0 && ho * wo <= ConvStep.channelKernelPositions else {
            return (0, [], [], [], [], 0)
        }
        let kk = k * k
        func pack(_ block: Int) -> [Float] {
            var q = [Float](repeating: 0, count: outs * ins * kk)
            for oc in 0..<outs {
                for ic in 0..<ins {
                    for t in 0..<kk { q[(((oc / block) * ins + ic) * kk + t) * block + oc % block] = wt[(oc * ins + ic) * kk + t] * scale[oc] }
                }
            }
            return q
        }
        let block = outs % 32 == 0 ? 32 : 16
        // Blocks of 16 as well when 32-channel blocks would be too few to share between
        // threads (splitting the positions instead costs more, measured).
        let packed16 = block == 32 && outs / 32 < ConvStep.maxThreads ? pack(16) : []
        let cp = w + 2 * pad
        var list: [Int] = []
        for y in 0..<ho { for x in 0..<wo { list.append(y * stride * cp + x * stride) } }
        return (block, pack(block), packed16, list, (0..<kk).map { ($0 / k) * cp + $0 % k }, cp)
    }

    func run(_ m: PlanMemory) {
        let started = ConvProfiler.enabled ? DispatchTime.now().uptimeNanoseconds : 0
        defer { if ConvProfiler.enabled { ConvProfiler.record(start: started, flops: flops) } }
        let threads = flops / 2 >= Double(m.parallelWork) ? m.threads : 1
        let src = m[input], dst = m[output]
        let prepared = direct ? src : m.scratch
        let cstride = direct ? h * w : stride * stride * planeH * pitch
        let acc = direct ? dst : m.scratch + preparedFloats
        let length = ho * pitch
        if channelBlock > 0 && m.kernelLevel >= 2 {
            runChannelLanes(m, threads: threads)
            return
        }
        if threads > 1 && preparedFloats <= privatePrepareLimit {
            runRows(m, threads: min(threads, ConvStep.maxThreads))
            return
        }
        if !direct {
            parallel(threads, threads) { i in
                let r = split(c, threads, i)
                gdh_conv_prepare(src, Int32(h), Int32(w), Int32(pad), reflect ? 1 : 0, Int32(stride), Int32(kernel),
                                 prepared, cstride, Int32(planeH), Int32(pitch), Int32(r.lowerBound), Int32(r.upperBound))
            }
        }
        if fusesEpilogue(m) {
            parallel(threads, threads) { i in _ = fusedRows(m, prepared, cstride, split(ho, threads, i)) }
            return
        }
        taps.withUnsafeBufferPointer { tp in
            packed.withUnsafeBufferPointer { wp in
                parallel(threads, threads) { i in
                    let rows = split(ho, threads, i)
                    gdh_conv_direct_rows(prepared, cstride, Int32(c), tp.baseAddress, Int32(taps.count), wp.baseAddress,
                                         Int32(o), acc, length, pitch, Int32(wo), Int32(rows.lowerBound), Int32(rows.upperBound),
                                         m.kernelLevel)
                }
            }
        }
        let res = residual.map { m[$0] }
        bias.withUnsafeBufferPointer { bp in
            parallel(threads, threads) { i in
                let r = split(o, threads, i)
                gdh_conv_epilogue(acc, length, pitch, Int32(ho), Int32(wo), bp.baseAddress, res, ho * wo, act, slope,
                                  dst, ho * wo, 0, wo, 1, Int32(r.lowerBound), Int32(r.upperBound))
            }
        }
    }

    /// Whether the row tiles can finish this layer in registers (output width a multiple of
    /// 16 with AVX-512, of 8 with AVX2; no activation, ReLU, ReLU6 or leaky ReLU): no
    /// accumulator buffer, no separate epilogue pass.
    private func fusesEpilogue(_ m: PlanMemory) -> Bool {
        let level = min(Int(m.kernelLevel), DirectConvolution.bestKernel)
        return level >= 1 && wo % (level == 2 ? 16 : 8) == 0 && registerActivation(act)
    }

    /// Output rows `rows` computed and finished straight into the output.
    private func fusedRows(_ m: PlanMemory, _ prepared: UnsafePointer<Float>, _ cstride: Int, _ rows: Range<Int>) -> Bool {
        let res = residual.map { UnsafePointer(m[$0]) }
        return taps.withUnsafeBufferPointer { tp in
            packed.withUnsafeBufferPointer { wp in
                bias.withUnsafeBufferPointer { bp in
                    gdh_conv_direct_rows_fused(prepared, cstride, Int32(c), tp.baseAddress, Int32(taps.count), wp.baseAddress,
                                               Int32(o), m[output], ho * wo, pitch, Int32(wo), Int32(rows.lowerBound),
                                               Int32(rows.upperBound), bp.baseAddress, res, act, slope, m.kernelLevel) != 0
                }
            }
        }
    }

    /// A small layer on several threads in one fork-join: each thread prepares its own
    /// copy of the input, then computes and finishes a band of output rows.
    private func runRows(_ m: PlanMemory, threads: Int) {
        let src = m[input], dst = m[output]
        let cstride = direct ? h * w : stride * stride * planeH * pitch
        let acc = direct ? dst : m.scratch
        let length = ho * pitch, count = ho * wo
        let res = residual.map { m[$0] }
        taps.withUnsafeBufferPointer { tp in
        packed.withUnsafeBufferPointer { wp in
        bias.withUnsafeBufferPointer { bp in
            parallel(threads, threads) { i in
                let fused = fusesEpilogue(m)
                if direct && splitsChannels(threads) {
                    // A 1×1 layer: each thread a band of output channels over every position,
                    // so that each reads only its part of the weights.
                    let ob = Int(GDH_CONV_OC_BLOCK), blocks = split((o + ob - 1) / ob, threads, i)
                    let c0 = blocks.lowerBound * ob, c1 = min(o, blocks.upperBound * ob)
                    guard c1 > c0 else { return }
                    let w = wp.baseAddress! + blocks.lowerBound * c * taps.count * ob
                    if fused {
                        _ = gdh_conv_direct_rows_fused(src, cstride, Int32(c), tp.baseAddress, Int32(taps.count), w, Int32(c1 - c0),
                                                   dst + c0 * count, count, pitch, Int32(wo), 0, Int32(ho), bp.baseAddress! + c0,
                                                   res.map { UnsafePointer($0 + c0 * count) }, act, slope, m.kernelLevel)
                        return
                    }
                    gdh_conv_direct_rows(src, cstride, Int32(c), tp.baseAddress, Int32(taps.count), w, Int32(c1 - c0),
                                         dst + c0 * count, length, pitch, Int32(wo), 0, Int32(ho), m.kernelLevel)
                    gdh_conv_epilogue(dst, length, pitch, Int32(ho), Int32(wo), bp.baseAddress, res, count, act, slope,
                                      dst, count, 0, wo, 1, Int32(c0), Int32(c1))
                    return
                }
                let prepared = direct ? src : m.scratch + accFloatsAligned + i * preparedFloatsAligned
                let rows = split(ho, threads, i)
                if !direct {
                    // Only the plane rows this band reads: the thread mostly reads rows it wrote
                    // in the layer before (the same bands), not the other core's.
                    gdh_conv_prepare_rows(src, Int32(h), Int32(w), Int32(pad), reflect ? 1 : 0, Int32(stride), Int32(kernel),
                                          prepared, cstride, Int32(planeH), Int32(pitch), 0, Int32(c),
                                          Int32(rows.lowerBound), Int32(rows.upperBound + (kernel - 1) / stride + 1))
                }
                if fused {
                    _ = fusedRows(m, prepared, cstride, rows)
                    return
                }
                gdh_conv_direct_rows(prepared, cstride, Int32(c), tp.baseAddress, Int32(taps.count), wp.baseAddress,
                                     Int32(o), acc, length, pitch, Int32(wo), Int32(rows.lowerBound), Int32(rows.upperBound),
                                     m.kernelLevel)
                gdh_conv_epilogue(acc + rows.lowerBound * pitch, length, pitch, Int32(rows.count), Int32(wo), bp.baseAddress,
                                  res.map { $0 + rows.lowerBound * wo }, count, act, slope,
                                  dst + rows.lowerBound * wo, count, 0, wo, 1, 0, Int32(o))
            }
        }}}
    }

    /// Whether a 1×1 layer on `threads` threads splits its output channels instead of its
    /// rows: on small planes (EfficientNet's 14×14 at 224 px, 2.9-3.0 ms instead of 3.7-4.0
    /// over its eleven 1×1 layers on two threads) each thread then reads only its part of
    /// the weights. GDH_SPLIT_OC = 0 or 1 forces the choice, for measurements.
    private func splitsChannels(_ threads: Int) -> Bool {
        ConvStep.splitOverride ?? (ho * wo <= 200 && (o + Int(GDH_CONV_OC_BLOCK) - 1) / Int(GDH_CONV_OC_BLOCK) >= 4 * threads)
    }
    /// GDH_SPLIT_OC, read once (not on every layer run).
    private static let splitOverride: Bool? = ["0": false, "1": true][ProcessInfo.processInfo.environment["GDH_SPLIT_OC"] ?? ""]

    /// Output channels in the vector lanes: pad the input (no phase split), run the
    /// channel-lane kernel straight into the output, then the epilogue in place. These
    /// layers are small, so each thread pads its own copy of the input and finishes its
    /// part alone: one fork-join per layer instead of three.
    private func runChannelLanes(_ m: PlanMemory, threads: Int) {
        let src = m[input], dst = m[output]
        let padded = pad > 0
        let plane = padded ? (h + 2 * pad) * channelPitch : h * w
        let parts = min(threads, ConvStep.maxThreads)
        let narrow = o / channelBlock < parts && !channelPacked16.isEmpty
        let block = narrow ? 16 : channelBlock
        let blocks = o / block, count = ho * wo
        let byBlocks = blocks >= parts
        let res = residual.map { m[$0] }
        channelTaps.withUnsafeBufferPointer { tp in
        (narrow ? channelPacked16 : channelPacked).withUnsafeBufferPointer { wp in
        positions.withUnsafeBufferPointer { pp in
        bias.withUnsafeBufferPointer { bp in
            parallel(parts, parts) { i in
                let prepared = padded ? m.scratch + i * channelScratchPerThread : src
                if padded {
                    gdh_conv_prepare(src, Int32(h), Int32(w), Int32(pad), reflect ? 1 : 0, 1, 1, prepared, plane,
                                     Int32(h + 2 * pad), Int32(channelPitch), 0, Int32(c))
                }
                // The part's channel blocks, or its positions when there are fewer blocks than parts.
                let b = byBlocks ? split(blocks, parts, i) : 0..<blocks
                let p = byBlocks ? 0..<count : split(count, parts, i, align: 8)
                // ReLU, ReLU6 and leaky ReLU are applied by the kernel, tanh and sigmoid after it.
                let fused = registerActivation(act)
                gdh_conv_direct_channels(prepared, plane, Int32(c), tp.baseAddress, Int32(channelTaps.count), wp.baseAddress,
                                         Int32(block), pp.baseAddress! + p.lowerBound, Int32(p.count),
                                         dst + p.lowerBound, count, Int32(b.lowerBound), Int32(b.upperBound),
                                         fused ? bp.baseAddress : nil, fused ? res.map { UnsafePointer($0 + p.lowerBound) } : nil,
                                         fused ? act : Int32(GDH_ACT_NONE), slope)
                if !fused {
                    let rows = byBlocks ? Int32(ho) : 1, cols = byBlocks ? Int32(wo) : Int32(p.count)
                    gdh_conv_epilogue(dst + p.lowerBound, count, Int(cols), rows, cols, bp.baseAddress, res.map { $0 + p.lowerBound },
                                      count, act, slope, dst + p.lowerBound, count, 0, Int(cols), 1,
                                      Int32(b.lowerBound * block), Int32(b.upperBound * block))
                }
            }
        }}}}
    }

    /// Threads a channel-lane layer may use (each needs its own padded input).
    static let maxThreads = max(1, min(16, ProcessInfo.processInfo.activeProcessorCount))
    var channelScratchPerThread: Int { channelBlock > 0 && pad > 0 ? (c * (h + 2 * pad) * channelPitch + 64 + 15) & ~15 : 0 }
}

/// Whether the convolution kernels apply an activation code in registers (none, ReLU,
/// ReLU6, leaky ReLU); tanh and sigmoid go through gdh_conv_epilogue.
func registerActivation(_ act: Int32) -> Bool {
    act == Int32(GDH_ACT_NONE) || act == Int32(GDH_ACT_RELU) || act == Int32(GDH_ACT_RELU6) || act == Int32(GDH_ACT_LEAKY)
}

/// Transposed convolution as stride × stride phases of outputs, each a stride-1
/// convolution of the zero-padded input with the kernel taps of that phase.
final class TransposedConvStep: PlanStep {
    struct Phase {
        let py, px, rows, cols: Int
        let taps: [Int]
        let packed: [Float]
    }
    let input: Int, output: Int
    var inputs: [Int] { [input] }
    let outputShape: [Int]
    let c, h, w, o, ho, wo, stride, q, pitch: Int
    let phases: [Phase]
    let bias: [Float]
    let act: Int32, slope: Float
    let flops: Double
    var preparedFloats: Int { c * (h + 2 * q) * pitch + 4 * pitch + 64 }
    /// Where each phase's accumulators start, relative to the accumulator area (which
    /// follows the prepared input in `run` and comes first in `runRows`).
    let accOffsets: [Int]
    var accAreaAligned: Int { (phases.reduce(0) { $0 + $1.rows * pitch * o + 64 } + 15) & ~15 }
    var scratchFloats: Int {
        let shared = preparedFloats + accAreaAligned
        guard preparedFloats <= privatePrepareLimit else { return shared }
        // Accumulators, then one private prepared input per thread (see runRows).
        return max(shared, accAreaAligned + ConvStep.maxThreads * ((preparedFloats + 15) & ~15))
    }
    var label: String { "deconv \(c)->\(o) s\(stride) \(h)x\(w)" }

    init(_ conv: ConvTranspose2d, input x: PlanValue, batchNorm: BatchNorm2d?, activation: Activation.Kind?, builder: PlanBuilder) {
        precondition(x.shape.count == 3 && x.c == conv.inChannels, "ConvTranspose2d expects (\(conv.inChannels), H, W), got \(x.shape)")
        c = x.c; h = x.h; w = x.w; o = conv.outChannels; stride = conv.stride
        let k = conv.kernel, p = conv.padding, s = stride
        ho = (h - 1) * s - 2 * p + k + conv.outputPadding
        wo = (w - 1) * s - 2 * p + k + conv.outputPadding
        // Output row oy = m·s + py takes input row m + dy through tap ki where
        // oy + p − ki = s·(m + dy), so dy = (py + p − ki) / s for the taps with that remainder.
        func tapsOf(_ phase: Int) -> [(k: Int, d: Int)] {
            (0..<k).compactMap { ki in
                let t = phase + p - ki
                return ((t % s) + s) % s == 0 ? (ki, Int((Double(t) / Double(s)).rounded(.down))) : nil
            }
        }
        func count(_ phase: Int, _ size: Int) -> Int { phase < size ? (size - phase + s - 1) / s : 0 }
        var need = 0
        for ph in 0..<s {
            let n = max(count(ph, ho), count(ph, wo)), inSize = min(h, w)
            for t in tapsOf(ph) { need = max(need, -t.d, n + t.d - inSize) }
        }
        q = need
        pitch = w + 2 * q
        let (scale, shift) = batchNormFold(batchNorm, channels: o)
        let ob = Int(GDH_CONV_OC_BLOCK), blocks = (o + ob - 1) / ob
        let wt = conv.weight.value.data   // (in, out, k, k)
        var list: [Phase] = []
        for py in 0..<s {
            for px in 0..<s {
                let ty = tapsOf(py), tx = tapsOf(px)
                var offsets: [Int] = [], pairs: [(Int, Int)] = []
                for a in ty { for b in tx { offsets.append((a.d + q) * pitch + b.d + q); pairs.append((a.k, b.k)) } }
                var packed = [Float](repeating: 0, count: blocks * c * pairs.count * ob)
                for oc in 0..<o {
                    for ic in 0..<c {
                        for (t, (ki, kj)) in pairs.enumerated() {
                            packed[(((oc / ob) * c + ic) * pairs.count + t) * ob + oc % ob] = wt[((ic * o + oc) * k + ki) * k + kj] * scale[oc]
                        }
                    }
                }
                list.append(Phase(py: py, px: px, rows: count(py, ho), cols: count(px, wo), taps: offsets, packed: packed))
            }
        }
        phases = list
        var offsets: [Int] = [], t = 0
        for ph in list { offsets.append(t); t += ph.rows * pitch * o + 64 }
        accOffsets = offsets
        bias = (0..<o).map { (conv.bias?.value.data[$0] ?? 0) * scale[$0] + shift[$0] }
        (act, slope) = activationCode(activation)
        outputShape = [o, ho, wo]
        input = x.id
        output = builder.newValue(outputShape).id
        flops = 2 * Double(c * o * k * k * h * w)
    }

    func run(_ m: PlanMemory) {
        let started = ConvProfiler.enabled ? DispatchTime.now().uptimeNanoseconds : 0
        defer { if ConvProfiler.enabled { ConvProfiler.record(start: started, flops: flops) } }
        let threads = flops / 2 >= Double(m.parallelWork) ? m.threads : 1
        if threads > 1 && preparedFloats <= privatePrepareLimit {
            runRows(m, threads: min(threads, ConvStep.maxThreads))
            return
        }
        let src = m[input], dst = m[output], prepared = m.scratch
        let cstride = (h + 2 * q) * pitch
        parallel(threads, threads) { i in
            let r = split(c, threads, i)
            gdh_conv_prepare(src, Int32(h), Int32(w), Int32(q), 0, 1, 1, prepared, cstride, Int32(h + 2 * q), Int32(pitch),
                             Int32(r.lowerBound), Int32(r.upperBound))
        }
        let accs = m.scratch + preparedFloats
        for (k, ph) in phases.enumerated() where ph.rows > 0 && ph.cols > 0 {
            let acc = accs + accOffsets[k], length = ph.rows * pitch
            if ph.taps.isEmpty { acc.update(repeating: 0, count: length * o); continue }
            ph.taps.withUnsafeBufferPointer { tp in
                ph.packed.withUnsafeBufferPointer { wp in
                    parallel(threads, threads) { i in
                        let rows = split(ph.rows, threads, i)
                        gdh_conv_direct_rows(prepared, cstride, Int32(c), tp.baseAddress, Int32(ph.taps.count), wp.baseAddress,
                                             Int32(o), acc, length, pitch, Int32(ph.cols), Int32(rows.lowerBound),
                                             Int32(rows.upperBound), m.kernelLevel)
                    }
                }
            }
        }
        bias.withUnsafeBufferPointer { bp in
            parallel(threads, threads) { i in
                let r = split(o, threads, i)
                for (k, ph) in phases.enumerated() where ph.rows > 0 && ph.cols > 0 {
                    gdh_conv_epilogue(accs + accOffsets[k], ph.rows * pitch, pitch, Int32(ph.rows), Int32(ph.cols), bp.baseAddress,
                                      nil, 0, act, slope, dst, ho * wo, ph.py * wo + ph.px, stride * wo, stride,
                                      Int32(r.lowerBound), Int32(r.upperBound))
                }
            }
        }
    }

    /// A small layer on several threads in one fork-join: each thread zero-pads its own
    /// copy of the input, then computes and finishes a band of rows of every phase.
    private func runRows(_ m: PlanMemory, threads: Int) {
        let src = m[input], dst = m[output]
        let cstride = (h + 2 * q) * pitch
        let privateBase = accAreaAligned
        bias.withUnsafeBufferPointer { bp in
            parallel(threads, threads) { i in
                let prepared = m.scratch + privateBase + i * ((preparedFloats + 15) & ~15)
                // The padded rows that this thread's bands of every phase read.
                var lo = Int.max, hi = 0
                for ph in phases where ph.rows > 0 && !ph.taps.isEmpty {
                    let rows = split(ph.rows, threads, i), offsets = ph.taps.map { $0 / pitch }
                    guard !rows.isEmpty else { continue }
                    lo = min(lo, rows.lowerBound + offsets.min()!)
                    hi = max(hi, rows.upperBound + offsets.max()! + 1)
                }
                if lo < hi {
                    gdh_conv_prepare_rows(src, Int32(h), Int32(w), Int32(q), 0, 1, 1, prepared, cstride, Int32(h + 2 * q), Int32(pitch),
                                          0, Int32(c), Int32(lo), Int32(hi))
                }
                for (k, ph) in phases.enumerated() where ph.rows > 0 && ph.cols > 0 {
                    let acc = m.scratch + accOffsets[k], length = ph.rows * pitch
                    let rows = split(ph.rows, threads, i)
                    if ph.taps.isEmpty {
                        for ch in 0..<o { (acc + ch * length + rows.lowerBound * pitch).update(repeating: 0, count: rows.count * pitch) }
                    } else {
                        ph.taps.withUnsafeBufferPointer { tp in
                            ph.packed.withUnsafeBufferPointer { wp in
                                gdh_conv_direct_rows(prepared, cstride, Int32(c), tp.baseAddress, Int32(ph.taps.count),
                                                     wp.baseAddress, Int32(o), acc, length, pitch, Int32(ph.cols),
                                                     Int32(rows.lowerBound), Int32(rows.upperBound), m.kernelLevel)
                            }
                        }
                    }
                    gdh_conv_epilogue(acc + rows.lowerBound * pitch, length, pitch, Int32(rows.count), Int32(ph.cols), bp.baseAddress,
                                      nil, 0, act, slope, dst, ho * wo, (rows.lowerBound * stride + ph.py) * wo + ph.px, stride * wo, stride,
                                      0, Int32(o))
                }
            }
        }
    }
}
