import ArgumentParser
import Foundation
import GDHCommandLine
import GDH
import HammingCode
import NeuralNet
import Training

/// `gdh bench train`: milliseconds per GDH training step on random data (the PyTorch
/// reference's `bench` subcommand times the same step in Tools/gdh_train_torch.py).
struct BenchTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Time GDH training steps on random data (same model, batch and threads as the PyTorch reference's bench)."
    )
    @Option(help: "Model configuration: small or paper.") var config: String = "small"
    @Option(help: "Code bits.") var bits: Int = 64
    @Option(help: "Photos (and as many sketches) per step.") var batch: Int = 32
    @Option(help: "Threads for the training kernels.") var threads: Int = 1
    @Option(help: "Timed steps (after 2 warm-up steps).") var steps: Int = 5
    @Flag(help: "Time the no-generator ablation (H only).") var noGenerator = false
    @Flag(help: "Print JSON.") var json = false
    @Flag(help: "Also print the time of each layer (forward and backward, per step), slowest first.") var layers = false

    func validate() throws {
        guard GDHConfiguration.named(config, bits: bits) != nil else { throw ValidationError("--config is small or paper") }
        guard (2...1024).contains(batch), (1...64).contains(threads), (1...10_000).contains(steps) else {
            throw ValidationError("--batch 2-1024, --threads 1-64, --steps 1-10000")
        }
    }

    func run() throws {
        if let core = BLASCoreType.wantedForThisCPU() { Siblings.reexecSelf(setting: "OPENBLAS_CORETYPE", to: core) }
        setTrainingThreads(threads)
        guard let c = GDHConfiguration.named(config, bits: bits) else { throw Failure("unknown configuration \(config)") }
        let model = try GDHModel(configuration: c, training: true)
        TrainingInit.initialize(model, seed: 1)
        var objective = TrainingObjective()
        objective.generator = !noGenerator
        let trainer = try GDHTrainStep(model: model, objective: objective, seed: 1)
        var rng = SplitMix64(seed: 5)
        func images() -> Tensor {
            let shape = [batch, 3, c.imageSize, c.imageSize]
            return Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in Float(rng.next() >> 40) / Float(1 << 24) * 2 - 1 })
        }
        let labels = (0..<batch).map { $0 % 4 }
        let targets = Tensor(shape: [batch, bits], data: (0..<(batch * bits)).map { _ in rng.next() & 1 == 1 ? 1 : -1 })
        let data = TrainingBatch(photos: images(), sketches: images(), photoLabels: labels, sketchLabels: labels,
                                 photoTargets: targets, sketchTargets: targets)
        for _ in 0..<2 { trainer.step(data) }
        LayerProfiler.reset()
        LayerProfiler.enabled = layers
        var times: [UInt64] = []
        for _ in 0..<steps {
            let t0 = now()
            trainer.step(data)
            times.append(now() - t0)
        }
        LayerProfiler.enabled = false
        if layers { printLayerProfile(steps: steps, stepMilliseconds: times.reduce(0, +) / UInt64(steps)) }
        let ms = summary(times)["median"] ?? 0
        let rate = Double(2 * batch) / (ms / 1000)
        if json {
            printJSON(["config": config, "batch": batch, "threads": threads, "ms_per_step": ms, "images_per_s": rate,
                       "variant": noGenerator ? "no-generator" : "gdh", "openblas_coretype": ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "auto"] as [String: Any])
        } else {
            print(String(format: "%@ batch %d, %d thread(s): %.1f ms per step (median of %d), %.1f images/s",
                         config, batch, threads, ms, steps, rate))
        }
    }
}

/// The layer profile of `steps` steps: milliseconds per step, slowest first, and what the
/// layers leave to the rest of the step (losses, optimiser, copies).
func printLayerProfile(steps: Int, stepMilliseconds meanNanoseconds: UInt64) {
    let rows = LayerProfiler.entries.sorted { $0.value.nanoseconds > $1.value.nanoseconds }
    var total = 0.0
    print("ms/step  calls/step  layer (direction, settings, input or gradient shape)")
    for (key, e) in rows {
        let ms = Double(e.nanoseconds) / 1e6 / Double(steps)
        total += ms
        if ms >= 1 { print(String(format: "%7.1f  %10d  %@", ms, e.calls / steps, key)) }
    }
    let step = Double(meanNanoseconds) / 1e6
    print(String(format: "layers %.1f ms of a %.1f ms step (%.0f%%); the rest is losses, optimiser and copies", total, step, 100 * total / max(step, 1e-9)))
}
