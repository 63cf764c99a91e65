import ArgumentParser
import Foundation
import GDHCommandLine
import GDH
import HammingCode
import NeuralNet
import Safetensors

struct BenchEncode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encode",
        abstract: "Encoding speed of the GDH networks: images through H, sketches through G_I and H.",
        discussion: """
        Builds the named configuration with seeded random weights (for timing only; such a
        model is never a default), optionally writes it as a model file so that
        Tools/bench_networks.py runs PyTorch and onnxruntime on the same weights, and times
        batch-1 encodes. Also reports the GFLOP/s of the convolution layers next to a
        1024³ sgemm measured in the same run, and the peak resident memory.
        """
    )
    @Option(help: "Configuration: small, paper or lite0.") var config: String = "small"
    @Option(help: "Input size in pixels (default: the configuration's).") var imageSize: Int?
    @Flag(help: "lite0: the backbone's ImageNet weights (Tools/models/efficientnet-lite0-imagenet.safetensors or GDH_BACKBONE) instead of random ones.")
    var imagenet = false
    @Option(help: "Code bits.") var bits: Int = 64
    @Option(help: "The generator's normalisation: batch (category-level) or instance (fine-grained).") var norm: String = "batch"
    @Option(help: "Threads per layer (the plans' and OpenBLAS's).") var threads: Int = 1
    @Option(help: "Encodes to time (each kind).") var count: Int = 50
    @Option(help: "Images per batch.") var batch: Int = 1
    @Option(help: "Seed of the random weights and inputs.") var seed: UInt64 = 1
    @Option(help: "Also write the model to this file.") var writeModel: String?
    @Option(help: "A safetensors file with F32 `image` and `sketch` tensors (1, 3, S, S): their H outputs (before the sign) go into the JSON as `check`, and they are the timed inputs.")
    var checkInput: String?
    @Flag(help: "Time the layers' own forward passes (im2col + sgemm, the training path) instead of the inference plans.")
    var layers = false
    @Option(help: "Convolution kernels: best (what the CPU has), avx512, avx2 or c.") var kernels: String = "best"
    @Option(help: "Also measure throughput with this many concurrent streams, each an encoder of its own on one thread (as gdhd's encoder pool runs); 0 skips it.")
    var streams: Int = 0
    @Flag(help: "Print the time of each step of the plans (median over --count forward passes) and exit.") var profile = false
    @Flag(help: "Print one JSON object.") var json = false

    func validate() throws {
        guard var c = GDHConfiguration.named(config, bits: bits) else { throw ValidationError("--config is small, paper or lite0") }
        if let imageSize { c.imageSize = imageSize }
        if let p = c.problem { throw ValidationError(p) }
        if imagenet && c.hashNetKind != .lite0 { throw ValidationError("--imagenet is for the lite0 configuration") }
        guard NormKind(rawValue: norm) != nil else { throw ValidationError("--norm is batch or instance") }
        guard ["best", "avx512", "avx2", "c"].contains(kernels) else { throw ValidationError("--kernels is best, avx512, avx2 or c") }
        guard (1...64).contains(threads), count >= 1, (1...64).contains(batch), (0...64).contains(streams) else {
            throw ValidationError("--threads 1-64, --count ≥ 1, --batch 1-64, --streams 0-64")
        }
    }

    func run() throws {
        guard var c = GDHConfiguration.named(config, bits: bits), let normKind = NormKind(rawValue: norm) else { return }
        c.norm = normKind
        if let imageSize { c.imageSize = imageSize }
        setBLASThreads(threads)
        var rng = SplitMix64(seed: seed)
        let (model, encoder) = try makeEncoder(c, &rng)
        var input = Tensor(zeros: [batch, 3, c.imageSize, c.imageSize])
        for i in 0..<input.count { input.data[i] = Float.random(in: -1...1, using: &rng) }
        var check: [String: [Float]]?
        if let checkInput {
            let (image, outputs) = try checkOutputs(checkInput, c, model, encoder)
            check = outputs
            if batch == 1 { input = image }
        }
        if profile {
            printProfile(encoder, input)
            return
        }
        let (imageTimes, sketchTimes, convGFLOPs) = try timeEncodes(input, model, encoder)
        let sgemm = measureSgemmGFLOPs()
        let streamRates = streams > 0 ? try measureStreams(model, input) : nil
        report(c, encoder, imageTimes, sketchTimes, convGFLOPs: convGFLOPs, sgemm: sgemm, check: check, streamRates: streamRates)
    }

    /// The model with seeded random weights (ImageNet's in lite0's backbone with
    /// --imagenet), written out with --write-model, and its encoder on the chosen kernels.
    func makeEncoder(_ c: GDHConfiguration, _ rng: inout SplitMix64) throws -> (GDHModel, GDHEncoder) {
        let model = try GDHModel(configuration: c)
        for net in [model.generatorI, model.hashNet] {
            for (name, p) in net.parameters where name.hasSuffix("weight") && p.value.rank > 1 {
                Initializer.normal(&p.value, std: 0.02, using: &rng)
            }
        }
        if imagenet { try PretrainedBackbone.read(contentsOf: PretrainedBackbone.defaultPath()).load(into: model.hashNet) }
        if let writeModel { try model.write(to: writeModel) }
        let encoder = try GDHEncoder(model: model, threads: threads)
        let level = ["avx512": 2, "avx2": 1, "c": 0][kernels] ?? DirectConvolution.bestKernel
        guard level <= DirectConvolution.bestKernel else {
            throw Failure("this CPU has no \(kernels) kernels (best: \(DirectConvolution.kernelName(DirectConvolution.bestKernel)))")
        }
        encoder.kernelLevel = level
        return (model, encoder)
    }

    /// The --check-input image and the H outputs (before the sign) of its image and sketch.
    func checkOutputs(_ path: String, _ c: GDHConfiguration, _ model: GDHModel, _ encoder: GDHEncoder) throws
        -> (image: Tensor, outputs: [String: [Float]]) {
        let f = try SafetensorsFile.read(contentsOf: path)
        guard let im = f["image"], let sk = f["sketch"], im.shape == [1, 3, c.imageSize, c.imageSize], sk.shape == im.shape else {
            throw Failure("\(path) needs F32 image and sketch tensors of shape [1, 3, \(c.imageSize), \(c.imageSize)]")
        }
        let image = Tensor(shape: im.shape, data: try im.floats()), sketch = Tensor(shape: sk.shape, data: try sk.floats())
        let outputs = layers
            ? ["image_h": model.hashNet.forward(image).data, "sketch_h": model.hashNet.forward(model.generatorI.forward(sketch)).data]
            : ["image_h": try encoder.imageOutputs(image).data, "sketch_h": try encoder.sketchOutputs(sketch).data]
        return (image, outputs)
    }

    /// --profile: each plan's steps, median over --count passes of one item.
    func printProfile(_ encoder: GDHEncoder, _ input: Tensor) {
        let one = Tensor(shape: [1] + Array(input.shape.dropFirst()), data: Array(input.data.prefix(input.count / batch)))
        for (name, plan) in [("H", encoder.hashPlan), ("G_I", encoder.generatorPlan)] {
            let steps = plan.profile(one, repeats: count)
            print("\(name): \(String(format: "%.3f", steps.reduce(0) { $0 + $1.ms })) ms in \(steps.count) steps")
            for s in steps { print(String(format: "  %8.3f ms  %@", s.ms, s.label)) }
        }
    }

    /// --count timed image encodes, then as many sketch encodes (after one of each to
    /// warm up), and the convolutions' GFLOP/s over them.
    func timeEncodes(_ input: Tensor, _ model: GDHModel, _ encoder: GDHEncoder) throws
        -> (images: [UInt64], sketches: [UInt64], convGFLOPs: Double) {
        let encodeImage: (Tensor) throws -> Void, encodeSketch: (Tensor) throws -> Void
        if layers {
            encodeImage = { _ = encoder.codes(model.hashNet.forward($0)) }
            encodeSketch = { _ = encoder.codes(model.hashNet.forward(model.generatorI.forward($0))) }
        } else {
            encodeImage = { _ = try encoder.encodeImages($0) }
            encodeSketch = { _ = try encoder.encodeSketches($0) }
        }
        try encodeImage(input)
        try encodeSketch(input)
        var imageTimes = [UInt64](), sketchTimes = [UInt64]()
        ConvProfiler.reset()
        ConvProfiler.enabled = true
        // Images in one loop, then sketches in another, as the peers in
        // Tools/bench_networks.py are timed: alternating the two networks would evict each
        // other's weights and activations from the caches between calls.
        for _ in 0..<count {
            let t0 = now()
            try encodeImage(input)
            imageTimes.append(now() - t0)
        }
        for _ in 0..<count {
            let t0 = now()
            try encodeSketch(input)
            sketchTimes.append(now() - t0)
        }
        ConvProfiler.enabled = false
        return (imageTimes, sketchTimes, ConvProfiler.gflops)
    }

    /// Images and sketches per second of --streams encoders of one thread each, in
    /// rounds of --count encodes per stream until at least a second has passed.
    func measureStreams(_ model: GDHModel, _ input: Tensor) throws -> (images: Double, sketches: Double) {
        let encoders = try (0..<streams).map { _ in try GDHEncoder(model: try model.replica(), threads: 1) }
        func rate(_ sketches: Bool) -> Double {
            let t0 = now()
            var items = 0
            repeat {
                DispatchQueue.concurrentPerform(iterations: streams) { i in
                    for _ in 0..<count {
                        _ = sketches ? try? encoders[i].encodeSketches(input) : try? encoders[i].encodeImages(input)
                    }
                }
                items += streams * count * batch
            } while now() - t0 < 1_000_000_000
            return Double(items) / (Double(now() - t0) / 1e9)
        }
        _ = rate(false)
        return (rate(false), rate(true))
    }

    func report(_ c: GDHConfiguration, _ encoder: GDHEncoder, _ imageTimes: [UInt64], _ sketchTimes: [UInt64],
                convGFLOPs: Double, sgemm: Double, check: [String: [Float]]?, streamRates: (images: Double, sketches: Double)?) {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let image = summary(imageTimes), sketch = summary(sketchTimes)
        let perImage = (image["median"] ?? 1) / Double(batch), perSketch = (sketch["median"] ?? 1) / Double(batch)
        var out: [String: Any] = [
            "config": c.name, "image_size": c.imageSize, "bits": bits, "threads": threads, "batch": batch,
            "image_ms": image, "sketch_ms": sketch,
            "images_per_s": 1000 / perImage, "sketches_per_s": 1000 / perSketch,
            "conv_gflops": convGFLOPs, "sgemm_gflops": sgemm, "conv_fraction_of_sgemm": convGFLOPs / sgemm,
            "peak_rss_mb": Double(usage.ru_maxrss) / 1024,
            "openblas_coretype": ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "unset",
            "path": layers ? "layers (im2col + sgemm)" : "plan (\(DirectConvolution.kernelName(encoder.kernelLevel)))",
            "plan_memory_mb": Double(encoder.planMemoryBytes) / 1_048_576,
        ]
        if let check { out["check"] = check.mapValues { $0.map(Double.init) } }
        if let streamRates {
            out["streams"] = streams
            out["stream_images_per_s"] = streamRates.images
            out["stream_sketches_per_s"] = streamRates.sketches
        }
        if json {
            printJSON(out)
        } else {
            print(String(format: "%@ (%d px, %d threads, %@): image %.2f ms (%.1f/s), sketch %.2f ms (%.1f/s); conv %.1f GFLOP/s vs sgemm %.1f (%.0f%%); peak RSS %.0f MB",
                         c.name, c.imageSize, threads, out["path"] as! String, perImage, 1000 / perImage, perSketch, 1000 / perSketch,
                         convGFLOPs, sgemm, 100 * convGFLOPs / sgemm, Double(usage.ru_maxrss) / 1024))
            if let streamRates {
                print(String(format: "%d streams of one thread: %.1f images/s, %.1f sketches/s", streams, streamRates.images, streamRates.sketches))
            }
        }
    }
}
