import Foundation
import Testing
import NeuralNet
import Safetensors
import HammingCode
@testable import GDH

let fixtureDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

func loadFixture(_ name: String) throws -> SafetensorsFile {
    try SafetensorsFile.read(contentsOf: fixtureDirectory.appendingPathComponent(name + ".safetensors").path)
}

func tensor(_ f: SafetensorsFile, _ name: String) throws -> Tensor {
    guard let t = f[name] else { throw ModelError("fixture has no \(name)") }
    return Tensor(shape: t.shape, data: try t.floats())
}

/// max |a − b| relative to max(1, max |b|).
func relativeDifference(_ a: Tensor, _ b: Tensor) -> Float {
    guard a.shape == b.shape else { return .infinity }
    var d: Float = 0, s: Float = 1
    for i in 0..<a.count { d = max(d, abs(a.data[i] - b.data[i])); s = max(s, abs(b.data[i])) }
    return d / s
}

/// Builds the network a fixture describes, loads its `param.` tensors, runs forward and
/// backward, and compares output, input gradient and the saved parameter gradients.
func checkNetwork(_ name: String, tolerance: Float = 1e-4) throws {
    let f = try loadFixture(name)
    let m = f.metadata
    let net: Chain
    switch m["network"] {
    case "generator":
        net = Generator.make(ngf: Int(m["ngf"]!)!, blocks: Int(m["n_blocks"]!)!, norm: NormKind(rawValue: m["norm"]!)!,
                             attention: m["attention"] == "true")
    case "hashnet":
        net = HashNet.make(widths: m["widths"]!.split(separator: ",").map { Int($0)! },
                           blocks: m["blocks"]!.split(separator: ",").map { Int($0)! }, bits: Int(m["bits"]!)!)
    default:
        net = Discriminator.make(ndf: Int(m["ndf"]!)!, norm: NormKind(rawValue: m["norm"]!)!)
    }
    var state: [String: Tensor] = [:]
    for n in f.names where n.hasPrefix("param.") { state[n] = try tensor(f, n) }
    try net.load(state, prefix: "param.", strict: true)
    net.training = m["mode"] == "train"
    net.zeroGrad()
    let y = net.forward(try tensor(f, "input"))
    let dOut = relativeDifference(y, try tensor(f, "output"))
    #expect(dOut <= tolerance, "\(name) output differs by \(dOut)")
    let dx = net.backward(try tensor(f, "grad_output"))
    let dIn = relativeDifference(dx, try tensor(f, "grad_input"))
    #expect(dIn <= tolerance, "\(name) grad_input differs by \(dIn)")
    let params = Dictionary(uniqueKeysWithValues: net.parameters)
    for n in f.names where n.hasPrefix("grad.") {
        let key = String(n.dropFirst(5))
        guard let p = params[key] else { Issue.record("\(name): the network has no parameter \(key)"); continue }
        let d = relativeDifference(p.grad, try tensor(f, n))
        #expect(d <= tolerance, "\(name) \(n) differs by \(d)")
    }
    let buffers = Dictionary(uniqueKeysWithValues: net.buffers)
    for n in f.names where n.hasPrefix("buffer.") {
        let key = String(n.dropFirst(7))
        guard let b = buffers[key] else { Issue.record("\(name): no buffer \(key)"); continue }
        #expect(relativeDifference(b.value, try tensor(f, n)) <= tolerance, "\(name) \(n)")
    }
}

@Suite("GDH networks against PyTorch")
struct GDHNetworkTests {
    @Test("whole networks match PyTorch forward and backward", arguments: [
        "generator_small_batch_eval", "generator_small_instance_train", "hashnet_small_eval",
        "hashnet_small_train", "discriminator_small_train",
    ])
    func network(name: String) throws {
        try checkNetwork(name)
    }

    @Test("the paper hash net has ResNet-18's tensor names and sizes")
    func resnet18Names() {
        let net = HashNet.make(widths: [64, 128, 256, 512], blocks: [2, 2, 2, 2], bits: 64)
        let names = Set(net.parameters.map(\.0))
        #expect(names.contains("layer2.0.downsample.0.weight"))
        #expect(names.contains("layer4.1.bn2.bias"))
        #expect(names.contains("fc.weight"))
        #expect(!names.contains("layer1.0.downsample.0.weight"))
        let count = net.parameters.reduce(0) { $0 + $1.1.value.count }
        // torchvision resnet18 has 11,689,512 parameters with a 1000-way fc (513,000 of them).
        #expect(count == 11_689_512 - 513_000 + 512 * 64 + 64)
    }
}

@Suite("GDH model files")
struct ModelFileTests {
    @Test("a model file round-trips bit-exactly and keeps its configuration")
    func roundTrip() throws {
        var config = GDHConfiguration.small(bits: 32)
        config.imageSize = 32
        let model = try GDHModel(configuration: config, training: true)
        var rng = SystemRandomNumberGenerator()
        for (_, p) in model.hashNet.parameters { Initializer.normal(&p.value, using: &rng) }
        let path = NSTemporaryDirectory() + "gdh-model-\(UUID().uuidString).safetensors"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try model.write(to: path)
        let back = try GDHModel.read(contentsOf: path)
        #expect(back.configuration == config)
        #expect(back.stateDict() == model.stateDict())
        #expect(back.generatorS != nil)
        let file = try SafetensorsFile.read(contentsOf: path)
        #expect(file.metadata["bits"] == "32")
        #expect(file.names.contains("G_I.resnet_blocks.0.conv1.weight"))
        #expect(file.names.contains("H.layer1.0.bn1.running_mean"))
    }

    @Test("files that are not models, or do not fit their configuration, are refused")
    func refused() throws {
        let path = NSTemporaryDirectory() + "gdh-bad-\(UUID().uuidString).safetensors"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try SafetensorsFile(tensors: [:], metadata: ["format": "other"]).write(to: path)
        #expect(throws: ModelError.self) { try GDHModel.read(contentsOf: path) }
        var config = GDHConfiguration.small(bits: 32)
        config.imageSize = 32
        let model = try GDHModel(configuration: config)
        try model.write(to: path)
        var file = try SafetensorsFile.read(contentsOf: path)
        file.tensors["H.fc.weight"] = try TensorData(floats: [Float](repeating: 0, count: 6), shape: [2, 3])
        try file.write(to: path)
        #expect(throws: ModelError.self) { try GDHModel.read(contentsOf: path) }
        file.tensors.removeValue(forKey: "H.fc.weight")
        try file.write(to: path)
        #expect(throws: ModelError.self) { try GDHModel.read(contentsOf: path) }
        #expect(throws: ModelError.self) { try GDHModel.read(contentsOf: path + ".missing") }
        let bad = GDHConfiguration.small(bits: 40)
        #expect(bad.problem != nil)
        // The resize filter is an enum: a file naming another one has no readable configuration.
        let json = String(decoding: try JSONEncoder().encode(GDHConfiguration.small()), as: UTF8.self)
        #expect(json.contains("\"resize\":\"area\""))
        let cubic = json.replacingOccurrences(of: "\"resize\":\"area\"", with: "\"resize\":\"cubic\"")
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(GDHConfiguration.self, from: Data(cubic.utf8)) }
        let bilinear = json.replacingOccurrences(of: "\"resize\":\"area\"", with: "\"resize\":\"bilinear\"")
        #expect(try JSONDecoder().decode(GDHConfiguration.self, from: Data(bilinear.utf8)).resize == .bilinear)
    }
}

@Suite("GDH networks as inference plans")
struct GDHPlanTests {
    /// The compiled plan (BatchNorm folded, fused activations and residuals, direct
    /// convolution kernels) against PyTorch's outputs, on every kernel level and 1 and 2 threads.
    @Test("plans of whole networks match PyTorch", arguments: [
        "generator_small_batch_eval", "generator_small_instance_train", "hashnet_small_eval",
    ])
    func plan(name: String) throws {
        let f = try loadFixture(name)
        let m = f.metadata
        let net: Chain = m["network"] == "generator"
            ? Generator.make(ngf: Int(m["ngf"]!)!, blocks: Int(m["n_blocks"]!)!, norm: NormKind(rawValue: m["norm"]!)!,
                             attention: m["attention"] == "true")
            : HashNet.make(widths: m["widths"]!.split(separator: ",").map { Int($0)! },
                           blocks: m["blocks"]!.split(separator: ",").map { Int($0)! }, bits: Int(m["bits"]!)!)
        var state: [String: Tensor] = [:]
        for n in f.names where n.hasPrefix("param.") { state[n] = try tensor(f, n) }
        try net.load(state, prefix: "param.", strict: true)
        // InstanceNorm has no running statistics: its train and eval outputs are the same.
        net.training = false
        let input = try tensor(f, "input"), expected = try tensor(f, "output")
        for level in 0...DirectConvolution.bestKernel {
            for threads in [1, 2] {
                let plan = InferencePlan(net, inputShape: Array(input.shape.dropFirst()), threads: threads)
                plan.kernelLevel = level
                plan.parallelWork = 0
                plan.adaptiveThreads = false
                let d = relativeDifference(plan.forward(input), expected)
                #expect(d <= 1e-4, "\(name), \(DirectConvolution.kernelName(level)), \(threads) thread(s): differs by \(d)")
            }
        }
    }

    @Test("plans equal the layers for assorted configurations", arguments: 0..<8)
    func assortedConfigurations(seed: Int) throws {
        var rng = SplitMix64(seed: UInt64(100 + seed))
        func pick(_ xs: [Int]) -> Int { xs[Int(rng.next() % UInt64(xs.count))] }
        let size = pick([16, 20, 28, 36, 44, 52])
        let w0 = pick([3, 4, 8, 16])
        let config = GDHConfiguration(name: "assorted", imageSize: size, bits: pick([32, 64, 96]), ngf: pick([1, 2, 3, 5, 8]),
                                      generatorBlocks: pick([0, 1, 2]), norm: rng.next() % 2 == 0 ? .batch : .instance,
                                      attention: rng.next() % 2 == 0, ndf: 4,
                                      hashWidths: [w0, w0 * pick([1, 2]), 16 * pick([1, 2]), 32 * pick([1, 2])],
                                      hashBlocks: [pick([1, 2]), 1, pick([1, 2]), 1], resize: .area)
        #expect(config.problem == nil)
        let model = try GDHModel(configuration: config)
        for net in [model.generatorI, model.hashNet] {
            for (name, p) in net.parameters {
                var t = p.value
                Initializer.normal(&t, mean: name.hasSuffix("norm.weight") || name.contains("bn") && name.hasSuffix("weight") ? 1 : 0,
                                   std: 0.1, using: &rng)
                p.value = t
            }
            for (name, b) in net.buffers where name.hasSuffix("running_var") {
                b.value = Tensor(shape: b.value.shape, data: b.value.data.map { _ in Float.random(in: 0.5...1.5, using: &rng) })
            }
        }
        model.setTraining(false)
        var x = Tensor(zeros: [2, 3, size, size])
        for i in 0..<x.count { x.data[i] = Float.random(in: -1...1, using: &rng) }
        let encoder = try GDHEncoder(model: model, threads: 2)
        let image = try encoder.imageOutputs(x), sketch = try encoder.sketchOutputs(x)
        let label = "\(size) px, ngf \(config.ngf), \(config.generatorBlocks) blocks, \(config.norm), attention \(config.attention), widths \(config.hashWidths)"
        #expect(relativeDifference(image, model.hashNet.forward(x)) <= 1e-4, "image: \(label)")
        #expect(relativeDifference(sketch, model.hashNet.forward(model.generatorI.forward(x))) <= 1e-4, "sketch: \(label)")
    }

    @Test("the paper's ResNet-18 hash net as a plan equals its layers")
    func paperHashNet() {
        let config = GDHConfiguration.paper(bits: 64)
        let net = HashNet.make(widths: config.hashWidths, blocks: config.hashBlocks, bits: 64)
        var rng = SplitMix64(seed: 3)
        for (name, p) in net.parameters {
            var t = p.value
            Initializer.normal(&t, mean: name.hasSuffix("bn1.weight") || name.hasSuffix("bn2.weight") ? 1 : 0, std: 0.05, using: &rng)
            p.value = t
        }
        net.training = false
        var x = Tensor(zeros: [1, 3, 96, 96])
        for i in 0..<x.count { x.data[i] = Float.random(in: -1...1, using: &rng) }
        let reference = net.forward(x)
        let y = InferencePlan(net, inputShape: [3, 96, 96], threads: 2).forward(x)
        #expect(relativeDifference(y, reference) <= 1e-4)
    }
}

/// A small model assembled from the PyTorch fixtures' weights (G_I from the batch-norm
/// generator, H from the eval hash net): 32 px, 32-bit codes.
func fixtureModel() throws -> GDHModel {
    let config = GDHConfiguration(name: "fixture", imageSize: 32, bits: 32, ngf: 4, generatorBlocks: 2, norm: .batch,
                                  attention: true, ndf: 4, hashWidths: [4, 8, 8, 16], hashBlocks: [1, 1, 1, 1], resize: .area)
    let model = try GDHModel(configuration: config)
    for (net, file) in [(model.generatorI, "generator_small_batch_eval"), (model.hashNet, "hashnet_small_eval")] {
        let f = try loadFixture(file)
        var state: [String: Tensor] = [:]
        for n in f.names where n.hasPrefix("param.") { state[n] = try tensor(f, n) }
        try net.load(state, prefix: "param.")
    }
    model.setTraining(false)
    return model
}

@Suite("GDH encoders")
struct EncoderTests {
    @Test("the pool shares the cores among the encoders at work")
    func poolThreads() throws {
        let pool = try EncoderPool(model: try fixtureModel(), size: 2)
        let cores = max(1, ProcessInfo.processInfo.activeProcessorCount)
        #expect(pool.currentShare == cores)
        pool.withEncoder { first in
            #expect(first.threads == cores && pool.currentShare == cores)
            pool.withEncoder { second in
                #expect(second !== first)
                #expect(pool.currentShare == max(1, cores / 2))
            }
            #expect(pool.currentShare == cores)
        }
    }

    @Test("image codes are the signs of PyTorch's hash-net outputs")
    func imageCodes() throws {
        let encoder = try GDHEncoder(model: try fixtureModel())
        let f = try loadFixture("hashnet_small_eval")
        let out = try tensor(f, "output")
        let codes = try encoder.encodeImages(try tensor(f, "input"))
        #expect(codes.count == 2)
        for (n, code) in codes.enumerated() {
            for i in 0..<32 where abs(out.data[n * 32 + i]) > 1e-4 {
                #expect(code.bit(i) == (out.data[n * 32 + i] > 0), "image \(n) bit \(i)")
            }
        }
    }

    @Test("sketch codes go through G_I; batches equal single encodes; bad shapes are refused")
    func sketchCodes() throws {
        let model = try fixtureModel()
        let encoder = try GDHEncoder(model: model)
        var rng = SystemRandomNumberGenerator()
        var batch = Tensor(zeros: [3, 3, 32, 32])
        for i in 0..<batch.count { batch.data[i] = Float.random(in: -1...1, using: &rng) }
        let together = try encoder.encodeSketches(batch)
        let per = batch.count / 3
        for n in 0..<3 {
            let one = Tensor(shape: [1, 3, 32, 32], data: Array(batch.data[(n * per)..<((n + 1) * per)]))
            #expect(try encoder.encodeSketches(one) == [together[n]])
        }
        let synthetic = try encoder.synthesize(batch)
        #expect(try encoder.encodeImages(synthetic) == together)
        #expect(throws: ModelError.self) { try encoder.encodeImages(Tensor(zeros: [1, 3, 16, 16])) }
        // A pool of replicas gives the same codes from any thread.
        let pool = try EncoderPool(model: model, size: 2)
        let results = UnsafeMutableBufferPointer<[HammingCode]>.allocate(capacity: 4)
        defer { results.deallocate() }
        DispatchQueue.concurrentPerform(iterations: 4) { i in
            results.initializeElement(at: i, to: (try? pool.withEncoder { try $0.encodeSketches(batch) }) ?? [])
        }
        for i in 0..<4 { #expect(results[i] == together) }
    }
}
