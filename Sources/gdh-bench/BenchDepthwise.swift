import ArgumentParser
import Foundation
import GDHCommandLine
import HammingCode
import NeuralNet

/// `gdh bench depthwise`: the inference step time of EfficientNet-Lite0's depthwise
/// convolutions (fused with their BatchNorm and ReLU6) at batch 1, with the GFLOP/s and
/// the memory traffic it implies; optionally the training layer's forward and backward.
struct BenchDepthwise: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "depthwise",
        abstract: "Time EfficientNet-Lite0's depthwise convolutions (inference steps; optionally training).",
        discussion: """
        Each layer is a GroupedConv2d (groups = channels, TensorFlow SAME) + BatchNorm2d (eval)
        + ReLU6, lowered into one inference step; the time is the step's median over --repeats
        batch-1 passes. GFLOP/s counts 2·k²·C·Ho·Wo per sample; GB/s counts the input, output
        and weight bytes once. --training also times the layer's training forward and
        backward at --batch.
        """
    )
    @Option(parsing: .upToNextOption, help: "Input sizes of the network in pixels.") var sizes: [Int] = [128, 224]
    @Option(parsing: .upToNextOption, help: "Thread counts.") var threads: [Int] = [1, 2]
    @Option(help: "Timed passes per layer.") var repeats: Int = 200
    @Option(help: "Convolution kernels: best (what the CPU has), avx512, avx2 or c.") var kernels: String = "best"
    @Flag(help: "Also time the training layer's forward and backward at --batch.") var training = false
    @Option(help: "Batch of the training timings.") var batch: Int = 32
    @Flag(help: "Print one JSON object per line.") var json = false

    /// Channels, kernel, stride and the input's size as a divisor of the network's input.
    static let layers: [(channels: Int, kernel: Int, stride: Int, divisor: Int)] = [
        (32, 3, 1, 2), (96, 3, 2, 2), (144, 3, 1, 4), (144, 5, 2, 4), (240, 5, 1, 8), (240, 3, 2, 8),
        (480, 3, 1, 16), (480, 5, 1, 16), (672, 5, 1, 16), (672, 5, 2, 16), (1152, 5, 1, 32), (1152, 3, 1, 32),
    ]

    func validate() throws {
        guard ["best", "avx512", "avx2", "c"].contains(kernels) else { throw ValidationError("--kernels is best, avx512, avx2 or c") }
        guard sizes.allSatisfy({ (32...2048).contains($0) }), threads.allSatisfy({ (1...64).contains($0) }),
              repeats >= 1, (1...1024).contains(batch) else {
            throw ValidationError("--sizes 32-2048, --threads 1-64, --repeats ≥ 1, --batch 1-1024")
        }
    }

    func run() throws {
        let level = ["avx512": 2, "avx2": 1, "c": 0][kernels].map { min($0, DirectConvolution.bestKernel) } ?? DirectConvolution.bestKernel
        if !json { print("depthwise steps, \(DirectConvolution.kernelName(level)) kernels, batch 1, median of \(repeats)") }
        var rng = SplitMix64(seed: 1)
        func random(_ shape: [Int], scale: Float) -> Tensor {
            Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in (Float(rng.next() >> 40) / Float(1 << 24) * 2 - 1) * scale })
        }
        for size in sizes {
            if !json {
                print("\n\(size) px")
                print("layer                      input    output      ms/t1   GFLOP/s    GB/s  " +
                      threads.dropFirst().map { String(format: "   ms/t%-2d GFLOP/s    GB/s", $0) }.joined())
            }
            for l in BenchDepthwise.layers {
                let h = max(1, size / l.divisor)
                let conv = GroupedConv2d(l.channels, l.channels, kernel: l.kernel, stride: l.stride, padding: .same,
                                         groups: l.channels, bias: false)
                let bn = BatchNorm2d(l.channels, eps: 1e-3)
                let net = Chain([("dw", conv), ("bn", bn), (nil, Activation(.relu6))])
                conv.weight.value = random(conv.weight.value.shape, scale: 0.3)
                bn.runningMean = random([l.channels], scale: 0.2)
                bn.runningVar = Tensor(shape: [l.channels], data: random([l.channels], scale: 0.5).data.map { abs($0) + 0.5 })
                net.training = false
                let p = conv.paddedGeometry(height: h, width: h)
                let x = random([1, l.channels, h, h], scale: 2)
                let flops = 2 * Double(l.kernel * l.kernel * l.channels * p.outH * p.outW)
                let bytes = 4 * Double(l.channels * (h * h + p.outH * p.outW + l.kernel * l.kernel))
                var cells: [String] = []
                for t in threads {
                    let plan = InferencePlan(net, inputShape: [l.channels, h, h], threads: t)
                    plan.kernelLevel = level
                    plan.adaptiveThreads = false
                    plan.parallelWork = 0   // the step splits between the threads, however small
                    let profile = plan.profile(x, repeats: repeats)
                    let ms = profile.filter { $0.label.hasPrefix("depthwise") }.map(\.ms).reduce(0, +)
                    let gflops = flops / (ms * 1e6), gbs = bytes / (ms * 1e6)
                    if json {
                        printJSON(["size": size, "channels": l.channels, "kernel": l.kernel, "stride": l.stride, "input": h,
                                   "output": p.outH, "threads": t, "ms": ms, "gflops": gflops, "gb_per_s": gbs,
                                   "kernels": DirectConvolution.kernelName(level)] as [String: Any])
                    }
                    cells.append(String(format: "%9.4f %9.2f %7.2f", ms, gflops, gbs))
                }
                if !json {
                    let name = String(format: "%4dch k%d s%d", l.channels, l.kernel, l.stride)
                    print(String(format: "%-22@ %4dx%-4d %4dx%-4d ", name, h, h, p.outH, p.outW) + cells.joined(separator: "  "))
                }
                if training { timeTraining(conv, size: size, h: h, random: random) }
            }
        }
    }

    /// The training layer's forward and backward at --batch on each thread count (median of 3 after one warm-up).
    private func timeTraining(_ conv: GroupedConv2d, size: Int, h: Int, random: (_ shape: [Int], _ scale: Float) -> Tensor) {
        conv.training = true
        retainFreedMemory()   // as the trainer: freed tensors are reused, not page-faulted in again
        let x = random([batch, conv.inChannels, h, h], 2)
        var cells: [String] = []
        for t in threads {
            TrainingThreads.$override.withValue(t) {
                var fwd: [UInt64] = [], bwd: [UInt64] = []
                var g: Tensor?
                for i in 0..<4 {
                    let t0 = now()
                    let y = conv.forward(x)
                    let t1 = now()
                    if g == nil { g = random(y.shape, 1) }
                    _ = conv.backward(g!)
                    let t2 = now()
                    if i > 0 { fwd.append(t1 - t0); bwd.append(t2 - t1) }
                }
                let f = summary(fwd)["median"] ?? 0, b = summary(bwd)["median"] ?? 0
                if json {
                    printJSON(["size": size, "channels": conv.inChannels, "kernel": conv.kernel, "stride": conv.stride, "input": h,
                               "threads": t, "batch": batch, "training_forward_ms": f, "training_backward_ms": b] as [String: Any])
                }
                cells.append(String(format: "t%d fwd %7.2f ms bwd %7.2f ms", t, f, b))
            }
        }
        if !json { print("    training, batch \(batch): " + cells.joined(separator: "   ")) }
    }
}
