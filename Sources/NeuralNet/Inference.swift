import CNeuralKernels
import COpenBLAS
import Dispatch
import Foundation

/// A value of an inference plan: one sample's tensor (its shape without the batch).
public struct PlanValue {
    let id: Int
    public let shape: [Int]
    var c: Int { shape[0] }
    var h: Int { shape.count > 1 ? shape[1] : 1 }
    var w: Int { shape.count > 2 ? shape[2] : 1 }
    var size: Int { shape.reduce(1, *) }
}

/// Layers of other modules that know how to put themselves into an inference plan.
public protocol InferenceLowerable {
    func lower(into plan: PlanBuilder, input: PlanValue) -> PlanValue
}

/// One step of a plan: reads and writes values through the plan's memory.
protocol PlanStep: AnyObject {
    var inputs: [Int] { get }
    var output: Int { get }
    /// Floats of scratch memory the step needs.
    var scratchFloats: Int { get }
    func run(_ m: PlanMemory)
    /// What the step does, for profiles.
    var label: String { get }
}

/// Where the values and the scratch of a running plan are.
struct PlanMemory {
    let pointers: [UnsafeMutablePointer<Float>]
    let scratch: UnsafeMutablePointer<Float>
    let threads: Int
    let kernelLevel: Int32
    let parallelWork: Int
    subscript(_ id: Int) -> UnsafeMutablePointer<Float> { pointers[id] }
}

/// Builds an inference plan from a tree of layers in inference mode: each convolution is
/// fused with the BatchNorm (folded into its weights), the activation and the residual
/// addition that follow it, and runs on the direct convolution kernels of CNeuralKernels;
/// layers without a fused form run through their own `forward`.
public final class PlanBuilder {
    var shapes: [[Int]] = []
    var steps: [PlanStep] = []

    init() {}

    func newValue(_ shape: [Int]) -> PlanValue {
        shapes.append(shape)
        return PlanValue(id: shapes.count - 1, shape: shape)
    }

    /// Lowers any layer.
    public func lower(_ layer: Layer, _ x: PlanValue) -> PlanValue {
        if let l = layer as? InferenceLowerable { return l.lower(into: self, input: x) }
        if let chain = layer as? Chain { return lowerChain(chain.children.map { $0.layer }, x) }
        if let r = layer as? ResidualBlock {
            if let chain = r.block as? Chain { return lowerChain(chain.children.map { $0.layer }, x, residual: x) }
            return add(lower(r.block, x), x, activation: nil)
        }
        if let conv = layer as? Conv2d { return convolution(conv, x) }
        if let conv = layer as? ConvTranspose2d { return transposedConvolution(conv, x) }
        if let pool = layer as? MaxPool2d, x.shape.count == 3 { return maxPool(pool, x) }
        if let pool = layer as? AdaptiveAvgPool2d, pool.outH == 1, pool.outW == 1, x.shape.count == 3 {
            let y = newValue([x.c, 1, 1])
            steps.append(GlobalAveragePoolStep(input: x, output: y))
            return y
        }
        if layer is Flatten { return PlanValue(id: x.id, shape: [x.size]) }
        if let linear = layer as? Linear, x.size == linear.inFeatures {
            let y = newValue([linear.outFeatures])
            steps.append(LinearStep(linear, input: x, output: y))
            return y
        }
        return fallback(layer, x)
    }

    /// Lowers layers in a row, fusing Conv → BatchNorm → activation; with `residual`, the
    /// result is activation(chain(x) + residual), fused into the last convolution when the
    /// chain ends with a convolution (and BatchNorm) without an activation.
    public func lowerChain(_ layers: [Layer], _ x: PlanValue, residual: PlanValue? = nil,
                           activation final: Activation.Kind? = nil) -> PlanValue {
        var v = x, i = 0, fused = residual == nil
        while i < layers.count {
            if let norm = layers[i] as? InstanceNorm2d, v.shape.count == 3, v.c == norm.channels {
                // InstanceNorm with the activation after it (and the residual when it ends the chain).
                var j = i + 1
                var act: Activation.Kind?
                if j < layers.count, let a = layers[j] as? Activation { act = a.kind; j += 1 }
                var res: PlanValue?
                if j == layers.count, act == nil, let r = residual { res = r; act = final; fused = true }
                let y = newValue(v.shape)
                steps.append(InstanceNormStep(norm, input: v, residual: res, output: y, activation: act))
                v = y
                i = j
                continue
            }
            let isConv = layers[i] is Conv2d || layers[i] is ConvTranspose2d
            guard isConv else { v = lower(layers[i], v); i += 1; continue }
            var j = i + 1
            var bn: BatchNorm2d?
            if j < layers.count, let b = layers[j] as? BatchNorm2d, !b.training { bn = b; j += 1 }
            var act: Activation.Kind?
            if j < layers.count, let a = layers[j] as? Activation { act = a.kind; j += 1 }
            var res: PlanValue?
            if j == layers.count, act == nil, let r = residual { res = r; act = final; fused = true }
            if let conv = layers[i] as? Conv2d {
                v = convolution(conv, v, batchNorm: bn, activation: act, residual: res)
            } else {
                v = transposedConvolution(layers[i] as! ConvTranspose2d, v, batchNorm: bn, activation: act, residual: res)
            }
            i = j
        }
        if !fused, let r = residual { v = add(v, r, activation: final) }
        return v
    }

    /// A 2-D convolution with its BatchNorm folded in, then activation(· + residual).
    public func convolution(_ conv: Conv2d, _ x: PlanValue, batchNorm: BatchNorm2d? = nil,
                            activation: Activation.Kind? = nil, residual: PlanValue? = nil) -> PlanValue {
        let step = ConvStep(conv, input: x, batchNorm: batchNorm, activation: activation, residual: residual, builder: self)
        steps.append(step)
        return PlanValue(id: step.output, shape: step.outputShape)
    }

    public func transposedConvolution(_ conv: ConvTranspose2d, _ x: PlanValue, batchNorm: BatchNorm2d? = nil,
                                      activation: Activation.Kind? = nil, residual: PlanValue? = nil) -> PlanValue {
        let step = TransposedConvStep(conv, input: x, batchNorm: batchNorm, activation: activation, builder: self)
        steps.append(step)
        let y = PlanValue(id: step.output, shape: step.outputShape)
        return residual.map { add(y, $0, activation: activation) } ?? y
    }

    /// activation(a + b), element-wise.
    public func add(_ a: PlanValue, _ b: PlanValue, activation: Activation.Kind?) -> PlanValue {
        precondition(a.shape == b.shape, "residual shapes differ: \(a.shape) vs \(b.shape)")
        let y = newValue(a.shape)
        steps.append(AddStep(a: a, b: b, output: y, activation: activation))
        return y
    }

    /// x (C, H, W) times a mask (1, H, W) broadcast over the channels.
    public func multiplyByMask(_ x: PlanValue, _ mask: PlanValue) -> PlanValue {
        precondition(mask.c == 1 && mask.h == x.h && mask.w == x.w, "mask \(mask.shape) does not fit \(x.shape)")
        let y = newValue(x.shape)
        steps.append(MaskStep(input: x, mask: mask, output: y))
        return y
    }

    func maxPool(_ pool: MaxPool2d, _ x: PlanValue) -> PlanValue {
        let ho = (x.h + 2 * pool.padding - pool.kernel) / pool.stride + 1
        let wo = (x.w + 2 * pool.padding - pool.kernel) / pool.stride + 1
        let y = newValue([x.c, ho, wo])
        steps.append(MaxPoolStep(pool, input: x, output: y))
        return y
    }

    /// A layer the plan has no fused form for runs through its own forward on a copy.
    func fallback(_ layer: Layer, _ x: PlanValue) -> PlanValue {
        let probe = layer.forward(Tensor(zeros: [1] + x.shape))
        let y = newValue(Array(probe.shape.dropFirst()))
        steps.append(FallbackStep(layer, input: x, output: y))
        return y
    }
}

/// A network compiled for inference (see `PlanBuilder`): the weights are copied (and
/// BatchNorm folded into them) when the plan is made, so a plan must be rebuilt after the
/// network's parameters change. Runs a batch one sample at a time; memory for every
/// value is laid out once, values that are no longer needed share space.
/// Not thread-safe: one caller at a time.
public final class InferencePlan {
    public let inputShape: [Int]
    public let outputShape: [Int]
    let steps: [PlanStep]
    let inputID: Int, outputID: Int
    /// Threads each step may use (1: everything on the caller's thread).
    public var threads: Int
    /// The convolution kernel: 2 AVX-512, 1 AVX2 + FMA, 0 portable C; the best the CPU
    /// has by default (`DirectConvolution.bestKernel`).
    public var kernelLevel: Int = DirectConvolution.bestKernel
    /// Multiply-adds below which a layer runs on one thread even when `threads` > 1.
    public var parallelWork: Int = defaultParallelWork
    /// With more than one thread, time whole passes with the small layers split and with
    /// only the big ones split, and use the faster (see `SplitChoice`). Off: `parallelWork`
    /// as it is (the tests).
    public var adaptiveThreads = true
    private let splitChoice = SplitChoice()
    private let arena: UnsafeMutablePointer<Float>
    private let arenaFloats: Int
    private let offsets: [Int]
    private let scratchOffset: Int
    private var guardOffset = 0
    static let guardValue = Float(bitPattern: 0x7FC0_DEAD)

    /// Compiles `network` (set to inference mode by the caller) for inputs of `inputShape`
    /// (C, H, W).
    public init(_ network: Layer, inputShape: [Int], threads: Int = 1) {
        let b = PlanBuilder()
        let x = b.newValue(inputShape)
        let y = b.lower(network, x)
        self.inputShape = inputShape
        outputShape = y.shape
        steps = b.steps
        inputID = x.id
        outputID = y.id
        self.threads = max(1, threads)

        // Memory: a value lives from the step that writes it to the last step that reads it
        // (the input and output for the whole run); a freed slot is reused by a later value.
        let count = b.shapes.count
        var lastUse = [Int](repeating: -1, count: count)
        for (k, s) in steps.enumerated() { for i in s.inputs { lastUse[i] = k } }
        lastUse[outputID] = steps.count
        lastUse[inputID] = max(lastUse[inputID], 0)
        var slotOf = [Int](repeating: -1, count: count)
        var slotSize: [Int] = [], slotFreeAt: [Int] = []   // slot free for steps after slotFreeAt
        func place(_ v: Int, at step: Int) {
            let size = b.shapes[v].reduce(1, *) + 16
            var best = -1
            for s in slotSize.indices where slotFreeAt[s] < step {
                if best < 0 || abs(slotSize[s] - size) < abs(slotSize[best] - size) { best = s }
            }
            if best < 0 {
                slotSize.append(size)
                slotFreeAt.append(0)
                best = slotSize.count - 1
            }
            slotSize[best] = max(slotSize[best], size)
            slotFreeAt[best] = Int.max
            slotOf[v] = best
        }
        place(inputID, at: 0)
        slotFreeAt[slotOf[inputID]] = lastUse[inputID]
        for (k, s) in steps.enumerated() {
            // An output that aliases its input (Flatten) already has a slot.
            if slotOf[s.output] < 0 {
                place(s.output, at: k)
                slotFreeAt[slotOf[s.output]] = lastUse[s.output] < 0 ? k : lastUse[s.output]
            }
        }
        var slotOffset: [Int] = [], total = 0
        for size in slotSize { slotOffset.append(total); total += (size + 15) & ~15 }
        scratchOffset = total
        let scratch = steps.map(\.scratchFloats).max() ?? 0
        arenaFloats = total + scratch + 64
        arena = .allocate(capacity: arenaFloats)
        arena.initialize(repeating: 0, count: arenaFloats)
        // A guard band after the scratch: a kernel that writes past its buffers shows up
        // here in debug builds (the tests) instead of as a corrupted heap later.
        (arena + total + scratch).update(repeating: InferencePlan.guardValue, count: 64)
        guardOffset = total + scratch
        offsets = (0..<count).map { slotOf[$0] < 0 ? 0 : slotOffset[slotOf[$0]] }
    }

    deinit { arena.deallocate() }

    /// Bytes of memory the plan keeps for values and scratch.
    public var memoryBytes: Int { arenaFloats * MemoryLayout<Float>.size }

    /// Milliseconds per step (the median over `repeats` forward passes of one sample,
    /// run back to back as in use), with each step's label.
    public func profile(_ x: Tensor, repeats: Int = 5) -> [(label: String, ms: Double)] {
        precondition(Array(x.shape.dropFirst()) == inputShape, "plan input must be (N, \(inputShape)), got \(x.shape)")
        _ = forward(x)   // warm up (and wake the pool's threads)
        var samples = [[UInt64]](repeating: [], count: steps.count)
        for _ in 0..<max(1, repeats) {
            stepTimes = [UInt64](repeating: 0, count: steps.count)
            _ = forward(x)
            for k in steps.indices { samples[k].append(stepTimes![k]) }
        }
        stepTimes = nil
        return steps.indices.map { k in
            let sorted = samples[k].sorted()
            return (steps[k].label, Double(sorted[sorted.count / 2]) / 1e6)
        }
    }

    /// Per-step nanoseconds of the last forward pass while profiling.
    private var stepTimes: [UInt64]?

    /// The network's output for a batch (N, C, H, W): (N, outputShape...).
    public func forward(_ x: Tensor) -> Tensor {
        precondition(Array(x.shape.dropFirst()) == inputShape, "plan input must be (N, \(inputShape)), got \(x.shape)")
        let n = x.shape[0], inSize = inputShape.reduce(1, *), outSize = outputShape.reduce(1, *)
        var out = Tensor(uninitialized: [n] + outputShape)
        let pointers = offsets.map { arena + $0 }
        x.data.withUnsafeBufferPointer { xp in
            out.data.withUnsafeMutableBufferPointer { op in
                for i in 0..<n {
                    let adaptive = adaptiveThreads && threads > 1 && parallelWork < SplitChoice.bigLayerWork
                    let memory = PlanMemory(pointers: pointers, scratch: arena + scratchOffset, threads: threads,
                                            kernelLevel: Int32(kernelLevel),
                                            parallelWork: adaptive ? splitChoice.pick(parallelWork) : parallelWork)
                    defer { if adaptive { splitChoice.finish() } }
                    memory[inputID].update(from: xp.baseAddress! + i * inSize, count: inSize)
                    if stepTimes != nil {
                        for (k, s) in steps.enumerated() {
                            let t = DispatchTime.now().uptimeNanoseconds
                            s.run(memory)
                            stepTimes![k] += DispatchTime.now().uptimeNanoseconds - t
                        }
                    } else {
                        for s in steps { s.run(memory) }
                    }
                    assert((0..<64).allSatisfy { arena[guardOffset + $0].bitPattern == InferencePlan.guardValue.bitPattern },
                           "a plan step wrote past the end of the scratch memory")
                    (op.baseAddress! + i * outSize).update(from: memory[outputID], count: outSize)
                }
            }
        }
        return out
    }
}

/// The direct convolution kernels of the inference plans.
public enum DirectConvolution {
    /// The best kernel this CPU runs (GDH_SCALAR_KERNELS=1 in the environment forces 0).
    public static var bestKernel: Int { Int(gdh_conv_kernel_level()) }

    public static func kernelName(_ level: Int) -> String {
        ["portable C", "AVX2+FMA", "AVX-512"][max(0, min(2, level))]
    }
}

/// The fork-join pool the plans share: one thread per core (the caller included),
/// made when a plan first runs with more than one thread.
nonisolated(unsafe) let sharedPool: OpaquePointer? = gdh_pool_create(Int32(max(1, ProcessInfo.processInfo.activeProcessorCount)))

/// Whether a plan's small layers run split between threads, decided by measurement over
/// whole passes: splitting them pays on this machine when the two vCPUs share a cache and
/// loses when they do not (measured: the small hash net ran 0.11 ms split in the first
/// case, 0.20 ms split and 0.16 ms unsplit in the second), and that changes while a daemon
/// runs. The first sixteen passes alternate (four of them warm-up), then the faster mode
/// (the fastest of its last five passes; not splitting must win by 10%) is used and the
/// other is tried every 16th pass. Layers of
/// `bigLayerWork` multiply-adds and more split in both modes. Both modes give identical
/// results (the same sums in the same order).
final class SplitChoice {
    static let bigLayerWork = 4_000_000
    private var runs = 0
    private var samples: [[Double]] = [[], []]   // recent ns per pass: small layers split, not split
    private var mode = 0
    private var started: UInt64 = 0
    private var active = false

    /// The fastest of a mode's recent passes (noise only ever adds time).
    private func best(_ k: Int) -> Double { samples[k].min() ?? .infinity }

    /// The parallelWork threshold for this pass; call `finish()` after it.
    func pick(_ parallelWork: Int) -> Int {
        runs += 1
        if runs <= 16 {
            mode = runs % 2
        } else {
            // Splitting stays unless not splitting is clearly (10%) faster.
            let faster = best(1) < 0.9 * best(0) ? 1 : 0
            mode = runs % 16 == 0 ? 1 - faster : faster
        }
        active = runs > 4
        started = DispatchTime.now().uptimeNanoseconds
        return mode == 0 ? parallelWork : SplitChoice.bigLayerWork
    }

    func finish() {
        guard active else { return }
        samples[mode].append(Double(DispatchTime.now().uptimeNanoseconds - started))
        if samples[mode].count > 5 { samples[mode].removeFirst() }
        active = false
    }
}

/// Runs body(i) for i in 0..<parts, on the shared pool when `threads` > 1.
@inline(__always)
func parallel(_ threads: Int, _ parts: Int, _ body: (Int) -> Void) {
    if threads <= 1 || parts <= 1 {
        for i in 0..<parts { body(i) }
        return
    }
    withoutActuallyEscaping(body) { escaping in
        var task = escaping
        withUnsafeMutablePointer(to: &task) { pointer in
            gdh_pool_run(sharedPool, Int32(parts), { context, part in
                context!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(Int(part))
            }, pointer)
        }
    }
}

/// [lo, hi) of part i when `count` items are split in `parts`, boundaries on multiples of `align`.
@inline(__always)
func split(_ count: Int, _ parts: Int, _ i: Int, align: Int = 1) -> Range<Int> {
    func at(_ k: Int) -> Int { k == parts ? count : min(count, (count * k / parts) / align * align) }
    return at(i)..<at(i + 1)
}

/// Prepared inputs up to this many floats are made by every thread for itself, so that a
/// small layer runs in one fork-join (see `ConvStep.runRows`).
let privatePrepareLimit = 1 << 17

/// Work (multiply-adds) below which a step stays on one thread (measured on the small
/// configuration: 250k-400k are alike; 100k and below lose; the 295k stride-2 layers gain
/// only since channel-lane layers split 16-channel blocks between threads).
let defaultParallelWork = 250_000

func activationCode(_ a: Activation.Kind?) -> (Int32, Float) {
    switch a {
    case nil: return (Int32(GDH_ACT_NONE), 0)
    case .relu?: return (Int32(GDH_ACT_RELU), 0)
    case .leakyReLU(let s)?: return (Int32(GDH_ACT_LEAKY), s)
    case .tanh?: return (Int32(GDH_ACT_TANH), 0)
    case .sigmoid?: return (Int32(GDH_ACT_SIGMOID), 0)
    }
}

/// Per output channel scale and shift of an inference BatchNorm (identity without one).
func batchNormFold(_ bn: BatchNorm2d?, channels: Int) -> (scale: [Float], shift: [Float]) {
    guard let bn else { return ([Float](repeating: 1, count: channels), [Float](repeating: 0, count: channels)) }
    precondition(bn.channels == channels, "BatchNorm of \(bn.channels) channels after a layer of \(channels)")
    var scale = [Float](repeating: 0, count: channels), shift = scale
    for c in 0..<channels {
        scale[c] = bn.weight.value.data[c] / (bn.runningVar.data[c] + bn.eps).squareRoot()
        shift[c] = bn.bias.value.data[c] - bn.runningMean.data[c] * scale[c]
    }
    return (scale, shift)
}

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
    var label: String { "conv \(c)->\(o) k\(kernel) s\(stride) \(h)x\(w)\(channelBlock > 0 ? " (channel lanes)" : "")" }
    /// Output positions up to which the channel-lane kernel is used.
    static let channelKernelPositions = 64

    init(_ conv: Conv2d, input x: PlanValue, batchNorm: BatchNorm2d?, activation: Activation.Kind?, residual: PlanValue?, builder: PlanBuilder) {
        precondition(x.shape.count == 3 && x.c == conv.inChannels, "Conv2d expects (\(conv.inChannels), H, W), got \(x.shape)")
        precondition(conv.kernelH == conv.kernelW, "square kernels only")
        c = x.c; h = x.h; w = x.w; o = conv.outChannels
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
        let plane = planeH * pitch, s = stride, pt = pitch
        taps = (0..<(k * k)).map { t in
            let ki = t / k, kj = t % k
            return ((ki % s) * s + kj % s) * plane + (ki / s) * pt + kj / s
        }
        let (scale, shift) = batchNormFold(batchNorm, channels: o)
        let kk = k * k, blocks = (o + Int(GDH_CONV_OC_BLOCK) - 1) / Int(GDH_CONV_OC_BLOCK), ob = Int(GDH_CONV_OC_BLOCK)
        var p = [Float](repeating: 0, count: blocks * c * kk * ob)
        let wt = conv.weight.value.data
        for oc in 0..<o {
            let b = oc / ob, lane = oc % ob
            for ic in 0..<c {
                for t in 0..<kk {
                    p[((b * c + ic) * kk + t) * ob + lane] = wt[(oc * c + ic) * kk + t] * scale[oc]
                }
            }
        }
        packed = p
        if gdh_conv_channels_kernel_available() != 0 && o % 16 == 0 && ho * wo <= ConvStep.channelKernelPositions {
            let (outs, ins) = (o, c)
            func pack(_ block: Int) -> [Float] {
                var q = [Float](repeating: 0, count: outs * ins * kk)
                for oc in 0..<outs {
                    for ic in 0..<ins {
                        for t in 0..<kk { q[(((oc / block) * ins + ic) * kk + t) * block + oc % block] = wt[(oc * ins + ic) * kk + t] * scale[oc] }
                    }
                }
                return q
            }
            let block = o % 32 == 0 ? 32 : 16
            channelBlock = block
            channelPacked = pack(block)
            // Blocks of 16 as well when 32-channel blocks would be too few to share between
            // threads (splitting the positions instead costs more, measured).
            channelPacked16 = block == 32 && o / 32 < ConvStep.maxThreads ? pack(16) : []
            let cp = w + 2 * pad
            var list: [Int] = []
            for y in 0..<ho { for x in 0..<wo { list.append(y * stride * cp + x * stride) } }
            positions = list
            channelTaps = (0..<kk).map { ($0 / k) * cp + $0 % k }
            channelPitch = cp
        } else {
            channelBlock = 0
            channelPacked = []
            channelPacked16 = []
            positions = []
            channelTaps = []
            channelPitch = 0
        }
        bias = (0..<o).map { (conv.bias?.value.data[$0] ?? 0) * scale[$0] + shift[$0] }
        (act, slope) = activationCode(activation)
        outputShape = [o, ho, wo]
        if let r = residual { precondition(r.shape == outputShape, "residual \(r.shape) does not fit \(outputShape)") }
        input = x.id
        self.residual = residual?.id
        output = builder.newValue(outputShape).id
        inputs = [x.id] + (residual.map { [$0.id] } ?? [])
        flops = 2 * Double(o * c * kk * ho * wo)
    }

    func run(_ m: PlanMemory) {
        let started = ConvProfiler.enabled ? DispatchTime.now().uptimeNanoseconds : 0
        let threads = flops / 2 >= Double(m.parallelWork) ? m.threads : 1
        let src = m[input], dst = m[output]
        let prepared = direct ? src : m.scratch
        let cstride = direct ? h * w : stride * stride * planeH * pitch
        let acc = direct ? dst : m.scratch + preparedFloats
        let length = ho * pitch
        if channelBlock > 0 && m.kernelLevel >= 2 {
            runChannelLanes(m, threads: threads)
            if ConvProfiler.enabled { ConvProfiler.record(start: started, flops: flops) }
            return
        }
        if threads > 1 && preparedFloats <= privatePrepareLimit {
            runRows(m, threads: min(threads, ConvStep.maxThreads))
            if ConvProfiler.enabled { ConvProfiler.record(start: started, flops: flops) }
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
            if ConvProfiler.enabled { ConvProfiler.record(start: started, flops: flops) }
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
        if ConvProfiler.enabled { ConvProfiler.record(start: started, flops: flops) }
    }

    /// Whether the AVX-512 row tiles can finish this layer in registers (output width a
    /// multiple of 16; no activation, ReLU or leaky ReLU): no accumulator buffer, no
    /// separate epilogue pass.
    private func fusesEpilogue(_ m: PlanMemory) -> Bool {
        m.kernelLevel >= 2 && DirectConvolution.bestKernel >= 2 && wo % 16 == 0
            && (act == Int32(GDH_ACT_NONE) || act == Int32(GDH_ACT_RELU) || act == Int32(GDH_ACT_LEAKY))
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
                let prepared = direct ? src : m.scratch + accFloatsAligned + i * preparedFloatsAligned
                let rows = split(ho, threads, i)
                let fused = fusesEpilogue(m)
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
                // ReLU and leaky ReLU are applied by the kernel, tanh and sigmoid after it.
                let fused = act == Int32(GDH_ACT_NONE) || act == Int32(GDH_ACT_RELU) || act == Int32(GDH_ACT_LEAKY)
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
    var accOffsets: [Int] {
        var offs: [Int] = [], t = preparedFloats
        for ph in phases { offs.append(t); t += ph.rows * pitch * o + 64 }
        return offs
    }
    /// The phases' accumulators (after the prepared input in `run`, first in `runRows`).
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
        bias = (0..<o).map { (conv.bias?.value.data[$0] ?? 0) * scale[$0] + shift[$0] }
        (act, slope) = activationCode(activation)
        outputShape = [o, ho, wo]
        input = x.id
        output = builder.newValue(outputShape).id
        flops = 2 * Double(c * o * k * k * h * w)
    }

    func run(_ m: PlanMemory) {
        let started = ConvProfiler.enabled ? DispatchTime.now().uptimeNanoseconds : 0
        let threads = flops / 2 >= Double(m.parallelWork) ? m.threads : 1
        if threads > 1 && preparedFloats <= privatePrepareLimit {
            runRows(m, threads: min(threads, ConvStep.maxThreads))
            if ConvProfiler.enabled { ConvProfiler.record(start: started, flops: flops) }
            return
        }
        let src = m[input], dst = m[output], prepared = m.scratch
        let cstride = (h + 2 * q) * pitch
        parallel(threads, threads) { i in
            let r = split(c, threads, i)
            gdh_conv_prepare(src, Int32(h), Int32(w), Int32(q), 0, 1, 1, prepared, cstride, Int32(h + 2 * q), Int32(pitch),
                             Int32(r.lowerBound), Int32(r.upperBound))
        }
        let accs = accOffsets
        for (k, ph) in phases.enumerated() where ph.rows > 0 && ph.cols > 0 {
            let acc = m.scratch + accs[k], length = ph.rows * pitch
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
                    gdh_conv_epilogue(m.scratch + accs[k], ph.rows * pitch, pitch, Int32(ph.rows), Int32(ph.cols), bp.baseAddress,
                                      nil, 0, act, slope, dst, ho * wo, ph.py * wo + ph.px, stride * wo, stride,
                                      Int32(r.lowerBound), Int32(r.upperBound))
                }
            }
        }
        if ConvProfiler.enabled { ConvProfiler.record(start: started, flops: flops) }
    }

    /// A small layer on several threads in one fork-join: each thread zero-pads its own
    /// copy of the input, then computes and finishes a band of rows of every phase.
    private func runRows(_ m: PlanMemory, threads: Int) {
        let src = m[input], dst = m[output]
        let cstride = (h + 2 * q) * pitch
        let accs = accOffsets.map { $0 - preparedFloats }
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
                    let acc = m.scratch + accs[k], length = ph.rows * pitch
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
