import Foundation
import HammingCode
import NeuralNet

/// Turns prepared images into codes: image code = sign(H(image)), sketch code =
/// sign(H(G_I(sketch))); bit i is 1 where output i is > 0. Inputs are batches
/// (N, 3, S, S) already resized and scaled to [-1, 1] (see `GDHModel.preprocessingDescription`).
///
/// The networks run as inference plans (BatchNorm folded into the convolutions, fused
/// activations and residuals, direct convolution kernels), compiled from the model's
/// weights when the encoder is made: an encoder does not see later changes to them.
/// One encoder runs one batch at a time; `EncoderPool` hands replicas to concurrent callers.
public final class GDHEncoder {
    public let model: GDHModel
    public let width: CodeWidth
    /// The compiled networks (H and G_I).
    public let hashPlan: InferencePlan
    public let generatorPlan: InferencePlan

    /// `threads`: threads each network layer may use (1 inside a pool of one encoder per core).
    public init(model: GDHModel, threads: Int = 1) throws {
        self.model = model
        self.width = try CodeWidth(bits: model.configuration.bits)
        model.setTraining(false)
        let s = model.configuration.imageSize
        hashPlan = InferencePlan(model.hashNet, inputShape: [3, s, s], threads: threads)
        generatorPlan = InferencePlan(model.generatorI, inputShape: [3, s, s], threads: threads)
        retainFreedMemory()
    }

    /// Cores shared with other encoders at work (see `CoreShare`); nil: `threads` always.
    public var coreShare: CoreShare? {
        get { hashPlan.coreShare }
        set { hashPlan.coreShare = newValue; generatorPlan.coreShare = newValue }
    }

    /// Threads each layer may use.
    public var threads: Int {
        get { hashPlan.threads }
        set { hashPlan.threads = newValue; generatorPlan.threads = newValue }
    }

    /// The convolution kernels the plans use (`DirectConvolution.bestKernel` by default).
    public var kernelLevel: Int {
        get { hashPlan.kernelLevel }
        set { hashPlan.kernelLevel = newValue; generatorPlan.kernelLevel = newValue }
    }

    /// Bytes the two plans keep for their values and scratch.
    public var planMemoryBytes: Int { hashPlan.memoryBytes + generatorPlan.memoryBytes }

    private func checkInput(_ batch: Tensor) throws {
        let s = model.configuration.imageSize
        guard batch.rank == 4, batch.shape[1] == 3, batch.shape[2] == s, batch.shape[3] == s else {
            throw ModelError("encoder input must be (N, 3, \(s), \(s)), got \(batch.shape)")
        }
    }

    /// sign(H(x)) for each image of the batch.
    public func encodeImages(_ batch: Tensor) throws -> [HammingCode] {
        try checkInput(batch)
        return codes(hashPlan.forward(batch))
    }

    /// sign(H(G_I(x))) for each sketch of the batch (sign(H(x)) for a model trained
    /// without a generator).
    public func encodeSketches(_ batch: Tensor) throws -> [HammingCode] {
        codes(try sketchOutputs(batch))
    }

    /// H(x) before the sign, (N, b).
    public func imageOutputs(_ batch: Tensor) throws -> Tensor {
        try checkInput(batch)
        return hashPlan.forward(batch)
    }

    /// H(G_I(x)) before the sign, (N, b) (H(x) without a generator).
    public func sketchOutputs(_ batch: Tensor) throws -> Tensor {
        try checkInput(batch)
        guard model.configuration.usesGenerator else { return hashPlan.forward(batch) }
        return hashPlan.forward(generatorPlan.forward(batch))
    }

    /// The synthetic images G_I makes of sketches, (N, 3, S, S) in [-1, 1].
    public func synthesize(_ batch: Tensor) throws -> Tensor {
        try checkInput(batch)
        return generatorPlan.forward(batch)
    }

    /// Codes from hash-net outputs (N, b): bit i set where output i > 0.
    public func codes(_ outputs: Tensor) -> [HammingCode] {
        let b = width.bits
        return (0..<outputs.shape[0]).map { n in
            var words = [UInt64](repeating: 0, count: width.words)
            for i in 0..<b where outputs.data[n * b + i] > 0 {
                words[i >> 6] |= UInt64(1) << UInt64(63 - (i & 63))
            }
            return HammingCode(width: width, words: words)
        }
    }
}

/// A fixed set of encoder replicas for concurrent callers: `withEncoder` blocks until one
/// is free. The cores are shared among the encoders at work (`CoreShare`, asked before
/// every layer): a request that finds the others idle runs its layers on all cores (an
/// interactive query on an idle daemon is answered twice as fast on two cores), and as
/// soon as others start, each layer gets cores / (encoders at work) threads, so the pool
/// does not oversubscribe the machine.
public final class EncoderPool: @unchecked Sendable {
    private var free: [GDHEncoder]
    private let condition = NSCondition()
    private let share: CoreShare
    public let size: Int
    public let width: CodeWidth
    public let configuration: GDHConfiguration

    public init(model: GDHModel, size: Int) throws {
        precondition(size >= 1)
        share = CoreShare()
        var encoders = [try GDHEncoder(model: model, threads: share.cores)]
        for _ in 1..<size { encoders.append(try GDHEncoder(model: try model.replica(), threads: share.cores)) }
        for e in encoders { e.coreShare = share }
        free = encoders
        self.size = size
        width = encoders[0].width
        configuration = model.configuration
        // The plans do not use OpenBLAS; keep its threads from spinning beside them.
        setBLASThreads(1)
    }

    /// Threads a layer gets now (cores / encoders at work).
    public var currentShare: Int { share.threads }

    /// Runs `body` with a free encoder. `spread`: the encoder's layers may use the cores
    /// the other encoders leave idle (for interactive queries); without it the encoder
    /// runs on one thread (bulk ingest: several requests in flight keep every core busy,
    /// and splitting tiny layers would only add overhead).
    public func withEncoder<T>(spread: Bool = true, _ body: (GDHEncoder) throws -> T) rethrows -> T {
        condition.lock()
        while free.isEmpty { condition.wait() }
        let e = free.removeLast()
        condition.unlock()
        e.threads = spread ? share.cores : 1
        share.enter()
        defer {
            share.leave()
            condition.lock()
            free.append(e)
            condition.signal()
            condition.unlock()
        }
        return try body(e)
    }
}
