// Shared machinery of the inference plans: kernel levels, the fork-join pool, the
// measured split choice, work splitting, activation codes and BatchNorm folding.
import CNeuralKernels
import Dispatch
import Foundation

/// The direct convolution kernels of the inference plans.
public enum DirectConvolution {
    /// The best kernel this CPU runs (GDH_SCALAR_KERNELS=1 in the environment forces 0).
    public static var bestKernel: Int { Int(gdh_conv_kernel_level()) }

    public static func kernelName(_ level: Int) -> String {
        ["portable C", "AVX2+FMA", "AVX-512"][max(0, min(2, level))]
    }
}

/// Cores shared among plans at work (an encoder pool's replicas): each plan that has one
/// asks it before every step and uses at most cores / (plans at work) threads, so that a
/// lone plan uses every core and concurrent ones do not oversubscribe the machine.
public final class CoreShare: @unchecked Sendable {
    private let counter = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
    public let cores: Int

    public init(cores: Int = ProcessInfo.processInfo.activeProcessorCount) {
        self.cores = max(1, cores)
        counter.initialize(to: 0)
    }

    deinit { counter.deallocate() }

    /// A plan (or an encoder) starts work.
    public func enter() { gdh_atomic_add(counter, 1) }
    /// It is done.
    public func leave() { gdh_atomic_add(counter, -1) }
    /// Threads for a step now.
    public var threads: Int { max(1, cores / max(1, Int(gdh_atomic_load(counter)))) }
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
    case .relu6?: return (Int32(GDH_ACT_RELU6), 0)
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
