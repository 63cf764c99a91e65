// Inference plans: lowering a layer tree into fused steps (PlanBuilder) and running
// them over one preallocated arena (InferencePlan). Steps live in InferenceConvolution
// and InferenceSteps, shared machinery in InferenceSupport.
import CNeuralKernels
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
    var threads: Int
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
    /// Depthwise convolutions by channel lanes (true), plane by plane (false), or as
    /// `DepthwiseConvStep.usesLanes` picks by plane size (nil); tests run both forms.
    let depthwiseLanes: Bool?
    /// Chains of 1×1 and depthwise convolutions on values in the channel-blocked layout
    /// (InferenceBlocked.swift): a depthwise convolution of a multiple of 8 channels makes
    /// its input blocked, a 1×1 convolution on a blocked input stays blocked, any other
    /// step reads a planar copy. On unless GDH_BLOCKED=0, or a test asks for one
    /// depthwise form (`depthwiseLanes`).
    let channelBlocks: Bool
    var blockedValues = Set<Int>()
    var planarOf: [Int: PlanValue] = [:], blockedOf: [Int: PlanValue] = [:]

    /// Fuse every eligible 1×1 expansion with its depthwise convolution (true), none
    /// (false), or those whose expanded value is large (nil, `fuseMinFloats`); tests also
    /// shrink the fused step's band memory (`fuseBandFloats`) to run many bands.
    let fuseExpansions: Bool?
    let fuseBandFloats: Int

    init(depthwiseLanes: Bool? = nil, channelBlocks: Bool? = nil, fuseExpansions: Bool? = nil,
         fuseBandFloats: Int = PlanBuilder.fuseBandFloats) {
        self.depthwiseLanes = depthwiseLanes
        self.channelBlocks = channelBlocks ?? PlanBuilder.blockedOverride ?? (depthwiseLanes == nil)
        self.fuseExpansions = fuseExpansions
        self.fuseBandFloats = fuseBandFloats
    }

    /// Floats a value takes (for blocked values what gdh_blocked_floats says).
    func floats(of id: Int) -> Int {
        let shape = shapes[id]
        guard blockedValues.contains(id), shape.count == 3 else { return shape.reduce(1, *) }
        return Int(gdh_blocked_floats(Int32(shape[0]), shape[1] * shape[2]))
    }

    func newValue(_ shape: [Int]) -> PlanValue {
        shapes.append(shape)
        return PlanValue(id: shapes.count - 1, shape: shape)
    }

    /// Lowers any layer.
    public func lower(_ layer: Layer, _ x: PlanValue) -> PlanValue {
        if let chain = layer as? Chain { return lowerChain(chain.children.map { $0.layer }, x) }
        if let r = layer as? ResidualBlock {
            if let chain = r.block as? Chain { return lowerChain(chain.children.map { $0.layer }, x, residual: x) }
            return add(lower(r.block, x), x, activation: nil)
        }
        if let conv = layer as? Conv2d { return convolution(conv, x) }
        if let conv = layer as? GroupedConv2d { return groupedConvolution(conv, x) }
        if let pool = layer as? AdaptiveAvgPool2d, pool.outH == 1, pool.outW == 1, let y = blockedAveragePool(x) { return y }
        let x = plain(x)
        if let a = layer as? PerChannelAffine, x.shape.count == 3, a.scale.count == x.c {
            return channelAffine(x, scale: a.scale, shift: a.shift)
        }
        if let l = layer as? InferenceLowerable { return l.lower(into: self, input: x) }
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

    /// Lowers layers in a row, fusing Conv → BatchNorm → activation (Conv2d, ConvTranspose2d
    /// and GroupedConv2d: depthwise ones in a `DepthwiseConvStep`); with `residual`, the
    /// result is activation(chain(x) + residual), fused into the last convolution when the
    /// chain ends with a convolution (and BatchNorm) without an activation.
    public func lowerChain(_ layers: [Layer], _ x: PlanValue, residual: PlanValue? = nil,
                           activation final: Activation.Kind? = nil) -> PlanValue {
        var v = x, i = 0, fused = residual == nil
        while i < layers.count {
            if let norm = layers[i] as? InstanceNorm2d, v.shape.count == 3, v.c == norm.channels {
                (v, i) = instanceNorm(norm, layers, at: i, v, residual: residual, activation: final, fused: &fused)
                continue
            }
            // An input normalisation right before a few-channel convolution is fused into it.
            var affine: PerChannelAffine?
            if let a = layers[i] as? PerChannelAffine, i + 1 < layers.count, layers[i + 1] is Conv2d || layers[i + 1] is GroupedConv2d {
                affine = a
                i += 1
            }
            let isConv = layers[i] is Conv2d || layers[i] is ConvTranspose2d || layers[i] is GroupedConv2d
            guard isConv else { v = lower(layers[i], v); i += 1; continue }
            var j = i + 1
            var bn: BatchNorm2d?
            if j < layers.count, let b = layers[j] as? BatchNorm2d, !b.training { bn = b; j += 1 }
            var act: Activation.Kind?
            if j < layers.count, let a = layers[j] as? Activation { act = a.kind; j += 1 }
            var res: PlanValue?
            if j == layers.count, act == nil, let r = residual { res = r; act = final; fused = true }
            if res == nil, let y = blockedSmallConvolution(layers[i], v, batchNorm: bn, activation: act, affine: affine) {
                v = y
                i = j
                continue
            }
            // A 1×1 expansion and the depthwise convolution after it, as one step.
            if res == nil, affine == nil, let expand = layers[i] as? Conv2d, j < layers.count, let dw = layers[j] as? GroupedConv2d {
                var k = j + 1
                var bn1: BatchNorm2d?
                if k < layers.count, let b = layers[k] as? BatchNorm2d, !b.training { bn1 = b; k += 1 }
                var act1: Activation.Kind?
                if k < layers.count, let a = layers[k] as? Activation { act1 = a.kind; k += 1 }
                if !(k == layers.count && residual != nil),
                   let y = blockedExpandDepthwise(expand, v, batchNorm: bn, activation: act, depthwise: dw, batchNorm: bn1, activation: act1) {
                    v = y
                    i = k
                    continue
                }
            }
            if let a = affine { v = channelAffine(v, scale: a.scale, shift: a.shift) }
            if let conv = layers[i] as? Conv2d {
                v = convolution(conv, v, batchNorm: bn, activation: act, residual: res)
            } else if let conv = layers[i] as? GroupedConv2d {
                v = groupedConvolution(conv, v, batchNorm: bn, activation: act, residual: res)
            } else {
                v = transposedConvolution(layers[i] as! ConvTranspose2d, v, batchNorm: bn, activation: act, residual: res)
            }
            i = j
        }
        if !fused, let r = residual { v = add(v, r, activation: final) }
        return v
    }

    /// The value ids of a step that reads `x` (and `residual`, which must have the
    /// output's shape) into a new value of `shape`: input, residual, output, and all inputs.
    func stepValues(_ x: PlanValue, residual: PlanValue?, output shape: [Int]) -> (Int, Int?, Int, [Int]) {
        if let r = residual { precondition(r.shape == shape, "residual \(r.shape) does not fit \(shape)") }
        return (x.id, residual?.id, newValue(shape).id, [x.id] + (residual.map { [$0.id] } ?? []))
    }

    /// `lowerChain`'s InstanceNorm with the activation after it (and the residual when it
    /// ends the chain): its output and the index of the layer after the ones it took.
    private func instanceNorm(_ norm: InstanceNorm2d, _ layers: [Layer], at i: Int, _ x: PlanValue, residual: PlanValue?,
                              activation final: Activation.Kind?, fused: inout Bool) -> (PlanValue, Int) {
        let v = plain(x)
        var j = i + 1
        var act: Activation.Kind?
        if j < layers.count, let a = layers[j] as? Activation { act = a.kind; j += 1 }
        var res: PlanValue?
        if j == layers.count, act == nil, let r = residual { res = plain(r); act = final; fused = true }
        let y = newValue(v.shape)
        steps.append(InstanceNormStep(norm, input: v, residual: res, output: y, activation: act))
        return (y, j)
    }

    /// A 2-D convolution with its BatchNorm folded in, then activation(· + residual).
    public func convolution(_ conv: Conv2d, _ x: PlanValue, batchNorm: BatchNorm2d? = nil,
                            activation: Activation.Kind? = nil, residual: PlanValue? = nil) -> PlanValue {
        if let y = blockedPointwise(conv, x, batchNorm: batchNorm, activation: activation, residual: residual) { return y }
        let step = ConvStep(conv, input: plain(x), batchNorm: batchNorm, activation: activation, residual: plain(residual),
                            builder: self)
        steps.append(step)
        return PlanValue(id: step.output, shape: step.outputShape)
    }

    public func transposedConvolution(_ conv: ConvTranspose2d, _ x: PlanValue, batchNorm: BatchNorm2d? = nil,
                                      activation: Activation.Kind? = nil, residual: PlanValue? = nil) -> PlanValue {
        let step = TransposedConvStep(conv, input: plain(x), batchNorm: batchNorm, activation: activation, builder: self)
        steps.append(step)
        let y = PlanValue(id: step.output, shape: step.outputShape)
        return residual.map { add(y, $0, activation: activation) } ?? y
    }

    /// activation(a + b), element-wise.
    public func add(_ a: PlanValue, _ b: PlanValue, activation: Activation.Kind?) -> PlanValue {
        precondition(a.shape == b.shape, "residual shapes differ: \(a.shape) vs \(b.shape)")
        let (a, b) = (plain(a), plain(b))
        let y = newValue(a.shape)
        steps.append(AddStep(a: a, b: b, output: y, activation: activation))
        return y
    }

    /// x (C, H, W) times a mask (1, H, W) broadcast over the channels.
    public func multiplyByMask(_ x: PlanValue, _ mask: PlanValue) -> PlanValue {
        precondition(mask.c == 1 && mask.h == x.h && mask.w == x.w, "mask \(mask.shape) does not fit \(x.shape)")
        let (x, mask) = (plain(x), plain(mask))
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
    /// Shared with other plans at work: each step uses at most the share's threads.
    public var coreShare: CoreShare?
    private let splitChoice = SplitChoice()
    private let arena: UnsafeMutablePointer<Float>
    private let arenaFloats: Int
    /// Where each value lives in the arena.
    private let pointers: [UnsafeMutablePointer<Float>]
    private let scratchOffset: Int
    private var guardOffset = 0
    static let guardValue = Float(bitPattern: 0x7FC0_DEAD)

    /// Compiles `network` (set to inference mode by the caller) for inputs of `inputShape`
    /// (C, H, W). `depthwiseLanes` forces one form of the depthwise steps, `channelBlocks`
    /// the channel-blocked layout on or off (see PlanBuilder).
    public convenience init(_ network: Layer, inputShape: [Int], threads: Int = 1, depthwiseLanes: Bool? = nil,
                channelBlocks: Bool? = nil) {
        self.init(network, inputShape: inputShape, threads: threads,
                  builder: PlanBuilder(depthwiseLanes: depthwiseLanes, channelBlocks: channelBlocks))
    }

    /// Compiles with a builder of the caller's settings (tests).
    init(_ network: Layer, inputShape: [Int], threads: Int = 1, builder b: PlanBuilder) {
        let x = b.newValue(inputShape)
        let y = b.plain(b.lower(network, x))
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
            let size = b.floats(of: v) + 16
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
        let base = arena
        pointers = (0..<count).map { base + (slotOf[$0] < 0 ? 0 : slotOffset[slotOf[$0]]) }
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
        x.data.withUnsafeBufferPointer { xp in
            out.data.withUnsafeMutableBufferPointer { op in
                for i in 0..<n {
                    let adaptive = adaptiveThreads && threads > 1 && parallelWork < SplitChoice.bigLayerWork
                    var memory = PlanMemory(pointers: pointers, scratch: arena + scratchOffset, threads: threads,
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
                    } else if let share = coreShare, threads > 1 {
                        for s in steps {
                            memory.threads = min(threads, share.threads)
                            s.run(memory)
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
