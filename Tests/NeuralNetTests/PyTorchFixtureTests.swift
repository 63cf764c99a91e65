import Foundation
import Testing
import Safetensors
import HammingCode
@testable import NeuralNet

/// Layer fixtures written by Tools/make_fixtures.py with PyTorch (contract in
/// Tests/NeuralNetTests/Fixtures/README.md): each file holds `input`, `output`,
/// `grad_output`, `grad_input`, `param.*`, `grad.*`, `buffer.*` and the layer settings
/// in its metadata. The Swift layer is built from the metadata, given the parameters,
/// and every tensor is compared with a tolerance relative to the tensor's scale.
enum Fixtures {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    static var layerCases: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [])
            .filter { $0.hasSuffix(".safetensors") && !$0.hasPrefix("adam") && !$0.hasPrefix("sgd")
                && !$0.contains("loss") && !$0.hasPrefix("cross_entropy") && !$0.hasPrefix("generator") && !$0.hasPrefix("hashnet") }
            .sorted()
    }

    static func load(_ name: String) throws -> SafetensorsFile {
        try SafetensorsFile.read(contentsOf: directory.appendingPathComponent(name).path)
    }
}

extension SafetensorsFile {
    func tensor(_ name: String) throws -> Tensor {
        guard let t = self[name] else { throw FixtureError("fixture has no tensor \(name)") }
        return Tensor(shape: t.shape, data: try t.floats())
    }
    func int(_ key: String, _ fallback: Int? = nil) throws -> Int {
        if let v = metadata[key].flatMap({ Int($0) }) { return v }
        // PyTorch tuples such as "(3, 3)" or "[3, 3]": the first element.
        if let s = metadata[key], let v = Int(s.trimmingCharacters(in: CharacterSet(charactersIn: "()[] ")).split(separator: ",").first?.trimmingCharacters(in: .whitespaces) ?? "") { return v }
        if let fallback { return fallback }
        throw FixtureError("fixture metadata has no \(key)")
    }
    func float(_ key: String, _ fallback: Float) -> Float { metadata[key].flatMap { Float($0) } ?? fallback }
    func flag(_ key: String, _ fallback: Bool) -> Bool {
        guard let v = metadata[key]?.lowercased() else { return fallback }
        return v == "true" || v == "1"
    }
}

struct FixtureError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// The largest |a − b| relative to max(1, max |b|); prints like llm.c's checks.
func expectClose(_ a: Tensor, _ b: Tensor, _ what: String, tolerance: Float = 1e-4,
                 sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(a.count == b.count, "\(what): \(a.shape) vs \(b.shape)", sourceLocation: sourceLocation)
    guard a.count == b.count else { return }
    var maxDiff: Float = 0, scale: Float = 1
    for i in 0..<a.count {
        maxDiff = max(maxDiff, abs(a.data[i] - b.data[i]))
        scale = max(scale, abs(b.data[i]))
    }
    #expect(maxDiff / scale <= tolerance, "\(what): max difference \(maxDiff) (scale \(scale))", sourceLocation: sourceLocation)
}

/// Builds the Swift layer a fixture describes.
func makeLayer(_ f: SafetensorsFile) throws -> Layer {
    let kind = f.metadata["layer"] ?? ""
    switch kind {
    case "conv2d":
        return Conv2d(try f.int("in_channels"), try f.int("out_channels"), kernel: try f.int("kernel_size"),
                      stride: try f.int("stride", 1), padding: try f.int("padding", 0),
                      paddingMode: f.metadata["padding_mode"] == "reflect" ? .reflect : .zeros, bias: f.flag("bias", true))
    case "conv_transpose2d":
        return ConvTranspose2d(try f.int("in_channels"), try f.int("out_channels"), kernel: try f.int("kernel_size"),
                               stride: try f.int("stride", 1), padding: try f.int("padding", 0),
                               outputPadding: try f.int("output_padding", 0), bias: f.flag("bias", true))
    case "batchnorm2d", "batch_norm", "batchnorm":
        let bn = BatchNorm2d(try f.int("num_features"), eps: f.float("eps", 1e-5), momentum: f.float("momentum", 0.1))
        if let rm = f["buffer.running_mean_before"] ?? (f.flag("training", true) ? nil : f["buffer.running_mean"]) {
            bn.runningMean = Tensor(shape: rm.shape, data: try rm.floats())
        }
        if let rv = f["buffer.running_var_before"] ?? (f.flag("training", true) ? nil : f["buffer.running_var"]) {
            bn.runningVar = Tensor(shape: rv.shape, data: try rv.floats())
        }
        return bn
    case "instancenorm2d", "instance_norm", "instancenorm":
        return InstanceNorm2d(try f.int("num_features"), eps: f.float("eps", 1e-5), affine: f.flag("affine", false))
    case "grouped_conv2d":
        let padding: ConvPadding = f.metadata["padding"] == "same" ? .same : .symmetric(try f.int("padding", 0))
        return GroupedConv2d(try f.int("in_channels"), try f.int("out_channels"), kernel: try f.int("kernel_size"),
                             stride: try f.int("stride", 1), padding: padding, groups: try f.int("groups", 1), bias: f.flag("bias", true))
    case "relu": return Activation(.relu)
    case "relu6": return Activation(.relu6)
    case "leaky_relu": return Activation(.leakyReLU(f.float("negative_slope", 0.01)))
    case "tanh": return Activation(.tanh)
    case "sigmoid": return Activation(.sigmoid)
    case "softmax": return Softmax(dim: try f.int("dim"))
    case "maxpool2d", "max_pool2d", "maxpool":
        return MaxPool2d(kernel: try f.int("kernel_size"), stride: try f.int("stride", try f.int("kernel_size")), padding: try f.int("padding", 0))
    case "avgpool2d", "avg_pool2d", "avgpool":
        return AvgPool2d(kernel: try f.int("kernel_size"), stride: try f.int("stride", try f.int("kernel_size")), padding: try f.int("padding", 0))
    case "adaptive_avgpool2d", "adaptive_avg_pool2d", "adaptive_avgpool":
        let size = try f.int("output_size")
        return AdaptiveAvgPool2d(size, size)
    case "linear": return Linear(try f.int("in_features"), try f.int("out_features"), bias: f.flag("bias", true))
    case "upsample", "upsample_nearest", "upsample_bilinear":
        let mode = (f.metadata["mode"] ?? (kind.hasSuffix("bilinear") ? "bilinear" : "nearest")) == "bilinear"
        return Upsample(scale: try f.int("scale_factor", 2), mode: mode ? .bilinear : .nearest)
    case "dropout":
        let d = Dropout(p: f.float("p", 0.5))
        d.mask = try f.tensor("buffer.mask")
        return d
    case "reflection_pad2d", "reflection_pad", "reflectionpad2d": return ReflectionPad2d(try f.int("padding"))
    case "zero_pad2d", "zero_pad", "zeropad2d": return ZeroPad2d(try f.int("padding"))
    default: throw FixtureError("unknown layer '\(kind)'")
    }
}

@Suite("Layers against PyTorch fixtures")
struct PyTorchFixtureTests {
    @Test("fixtures are present")
    func present() {
        #expect(Fixtures.layerCases.count >= 20)
    }

    @Test("forward and backward match PyTorch", arguments: Fixtures.layerCases)
    func layer(file: String) throws {
        let f = try Fixtures.load(file)
        let kind = f.metadata["layer"] ?? ""
        let x = try f.tensor("input"), g = try f.tensor("grad_output")
        if kind == "add" {
            let x2 = try f.tensor("input2")
            expectClose(Residual.add(x, x2), try f.tensor("output"), "\(file) output")
            expectClose(g, try f.tensor("grad_input"), "\(file) grad_input")
            expectClose(g, try f.tensor("grad_input2"), "\(file) grad_input2")
            return
        }
        // Convolutions both ways: im2col + GEMM and the direct kernels.
        let algorithms: [ConvAlgorithm] = kind == "conv2d" ? [.gemm, .direct] : [.automatic]
        for algorithm in algorithms {
            let layer = try makeLayer(f)
            (layer as? Conv2d)?.algorithm = algorithm
            layer.training = f.flag("training", true)
            for (name, p) in layer.parameters {
                p.value = try f.tensor("param.\(name)")
                p.zeroGrad()
            }
            let y = layer.forward(x)
            expectClose(y, try f.tensor("output"), "\(file) \(algorithm) output")
            let dx = layer.backward(g)
            expectClose(dx, try f.tensor("grad_input"), "\(file) \(algorithm) grad_input")
            for (name, p) in layer.parameters {
                expectClose(p.grad, try f.tensor("grad.\(name)"), "\(file) \(algorithm) grad.\(name)")
            }
            if layer.training, let bn = layer as? BatchNorm2d {
                expectClose(bn.runningMean, try f.tensor("buffer.running_mean"), "\(file) running_mean")
                expectClose(bn.runningVar, try f.tensor("buffer.running_var"), "\(file) running_var")
            }
        }
    }

    static var groupedCases: [String] {
        Fixtures.layerCases.filter { $0.hasPrefix("grouped_conv2d") || $0.hasPrefix("relu6") }
    }

    @Test("the grouped convolution and ReLU6 fixtures are present")
    func groupedPresent() {
        #expect(PyTorchFixtureTests.groupedCases.count >= 10)
    }

    /// GroupedConv2d (every kernel level the CPU runs; for groups = 1 both algorithms of
    /// its Conv2d) and ReLU6, on one and two training threads.
    @Test("GroupedConv2d and ReLU6 match PyTorch on 1 and 2 training threads", arguments: groupedCases)
    func grouped(file: String) throws {
        let f = try Fixtures.load(file)
        let x = try f.tensor("input"), g = try f.tensor("grad_output")
        let isConv = f.metadata["layer"] == "grouped_conv2d"
        if isConv {
            // The SAME amounts the fixture was made with.
            let layer = try makeLayer(f) as! GroupedConv2d
            let p = layer.paddedGeometry(height: x.h, width: x.w)
            #expect([p.padTop, p.padLeft, p.padBottom, p.padRight] ==
                    [try f.int("pad_top"), try f.int("pad_left"), try f.int("pad_bottom"), try f.int("pad_right")], "\(file) padding")
            #expect([p.outH, p.outW] == Array(try f.tensor("output").shape.suffix(2)), "\(file) output size")
        }
        for threads in [1, 2] {
            for level in 0...(isConv ? DirectConvolution.bestKernel : 0) {
                for algorithm in isConv ? [ConvAlgorithm.gemm, .direct] : [.automatic] {
                    let label = "\(file) \(threads) thread(s) level \(level) \(algorithm)"
                    try TrainingThreads.$override.withValue(threads) {
                        let layer = try makeLayer(f)
                        if let conv = layer as? GroupedConv2d {
                            conv.kernelLevel = level
                            conv.inner?.algorithm = algorithm
                        }
                        for (name, p) in layer.parameters {
                            p.value = try f.tensor("param.\(name)")
                            p.zeroGrad()
                        }
                        expectClose(layer.forward(x), try f.tensor("output"), "\(label) output")
                        expectClose(layer.backward(g), try f.tensor("grad_input"), "\(label) grad_input")
                        for (name, p) in layer.parameters {
                            expectClose(p.grad, try f.tensor("grad.\(name)"), "\(label) grad.\(name)")
                        }
                    }
                }
            }
        }
    }

    struct GroupedCase: CustomTestStringConvertible, Sendable {
        let cin, cout, groups, k, stride: Int
        let same: Bool
        let pad: Int
        let h, w: Int
        var testDescription: String { "\(cin)->\(cout) g\(groups) k\(k) s\(stride) \(same ? "same" : "p\(pad)") \(h)x\(w)" }
    }

    static let oracleCases: [GroupedCase] = [
        GroupedCase(cin: 3, cout: 3, groups: 3, k: 3, stride: 1, same: true, pad: 0, h: 1, w: 1),
        GroupedCase(cin: 2, cout: 2, groups: 2, k: 3, stride: 2, same: true, pad: 0, h: 2, w: 3),
        GroupedCase(cin: 2, cout: 4, groups: 2, k: 5, stride: 2, same: true, pad: 0, h: 3, w: 1),
        GroupedCase(cin: 3, cout: 3, groups: 3, k: 7, stride: 1, same: true, pad: 0, h: 11, w: 13),
        GroupedCase(cin: 3, cout: 3, groups: 3, k: 7, stride: 2, same: true, pad: 0, h: 17, w: 12),
        GroupedCase(cin: 2, cout: 2, groups: 2, k: 1, stride: 1, same: true, pad: 0, h: 5, w: 7),
        GroupedCase(cin: 2, cout: 2, groups: 2, k: 1, stride: 2, same: true, pad: 0, h: 5, w: 8),
        GroupedCase(cin: 2, cout: 2, groups: 2, k: 2, stride: 2, same: true, pad: 0, h: 6, w: 7),
        GroupedCase(cin: 2, cout: 6, groups: 2, k: 4, stride: 3, same: true, pad: 0, h: 10, w: 11),
        GroupedCase(cin: 3, cout: 3, groups: 3, k: 3, stride: 2, same: false, pad: 0, h: 8, w: 9),
        GroupedCase(cin: 3, cout: 3, groups: 3, k: 5, stride: 1, same: false, pad: 4, h: 3, w: 4),
        GroupedCase(cin: 2, cout: 2, groups: 2, k: 3, stride: 3, same: false, pad: 2, h: 7, w: 5),
        // Rows of more than 32 outputs (a wide block, then narrow ones and a partial one).
        GroupedCase(cin: 2, cout: 2, groups: 2, k: 3, stride: 1, same: true, pad: 0, h: 3, w: 45),
        GroupedCase(cin: 2, cout: 2, groups: 2, k: 5, stride: 2, same: true, pad: 0, h: 4, w: 90),
        GroupedCase(cin: 6, cout: 4, groups: 2, k: 3, stride: 2, same: true, pad: 0, h: 7, w: 6),
        GroupedCase(cin: 3, cout: 5, groups: 1, k: 3, stride: 2, same: true, pad: 0, h: 9, w: 10),
        GroupedCase(cin: 3, cout: 5, groups: 1, k: 5, stride: 1, same: false, pad: 2, h: 6, w: 5),
    ]

    /// Forward, input and weight gradients against plain loops in double precision, on every
    /// kernel level the CPU runs and on one and two training threads.
    @Test("GroupedConv2d against brute-force loops on odd sizes", arguments: oracleCases)
    func groupedOracle(_ c: GroupedCase) {
        var rng = SplitMix64(seed: UInt64(c.cin * 131 + c.k * 17 + c.stride * 5 + c.h * 3 + c.w))
        let padding: ConvPadding = c.same ? .same : .symmetric(c.pad)
        let n = 2
        let x = randomTensor([n, c.cin, c.h, c.w], &rng)
        let probe = GroupedConv2d(c.cin, c.cout, kernel: c.k, stride: c.stride, padding: padding, groups: c.groups)
        let p = probe.paddedGeometry(height: c.h, width: c.w)
        let (ho, wo, k, s) = (p.outH, p.outW, c.k, c.stride)
        let w = randomTensor(probe.weight.value.shape, &rng), b = randomTensor([c.cout], &rng)
        let gy = randomTensor([n, c.cout, ho, wo], &rng)
        let cinG = c.cin / c.groups, coutG = c.cout / c.groups
        var y = [Double](repeating: 0, count: n * c.cout * ho * wo)
        var dx = [Double](repeating: 0, count: x.count), dw = [Double](repeating: 0, count: w.count)
        for i in 0..<n {
            for co in 0..<c.cout {
                for oy in 0..<ho {
                    for ox in 0..<wo {
                        let yi = ((i * c.cout + co) * ho + oy) * wo + ox
                        var sum = Double(b.data[co])
                        for ci in 0..<cinG {
                            let ch = (co / coutG) * cinG + ci
                            for ki in 0..<k {
                                for kj in 0..<k {
                                    let iy = oy * s + ki - p.padTop, ix = ox * s + kj - p.padLeft
                                    guard iy >= 0, iy < c.h, ix >= 0, ix < c.w else { continue }
                                    let xi = ((i * c.cin + ch) * c.h + iy) * c.w + ix, wi = ((co * cinG + ci) * k + ki) * k + kj
                                    sum += Double(w.data[wi]) * Double(x.data[xi])
                                    dx[xi] += Double(w.data[wi]) * Double(gy.data[yi])
                                    dw[wi] += Double(x.data[xi]) * Double(gy.data[yi])
                                }
                            }
                        }
                        y[yi] = sum
                    }
                }
            }
        }
        let want = (Tensor(shape: gy.shape, data: y.map { Float($0) }), Tensor(shape: x.shape, data: dx.map { Float($0) }),
                    Tensor(shape: w.shape, data: dw.map { Float($0) }))
        for threads in [1, 2] {
            for level in 0...DirectConvolution.bestKernel {
                TrainingThreads.$override.withValue(threads) {
                    let layer = GroupedConv2d(c.cin, c.cout, kernel: c.k, stride: c.stride, padding: padding, groups: c.groups)
                    layer.kernelLevel = level
                    layer.weight.value = w
                    layer.bias!.value = b
                    layer.zeroGrad()
                    let label = "\(c.testDescription) \(threads) thread(s) level \(level)"
                    expectClose(layer.forward(x), want.0, "\(label) output")
                    expectClose(layer.backward(gy), want.1, "\(label) grad_input")
                    expectClose(layer.weight.grad, want.2, "\(label) grad.weight")
                }
            }
        }
    }

    @Test("losses match PyTorch")
    func losses() throws {
        for (file, fn) in [("mse_loss", 0), ("l1_loss", 1), ("cross_entropy", 2)] {
            let f = try Fixtures.load(file + ".safetensors")
            let x = try f.tensor("input")
            let (loss, grad): (Float, Tensor)
            switch fn {
            case 0: (loss, grad) = Loss.mse(x, try f.tensor("target"))
            case 1: (loss, grad) = Loss.l1(x, try f.tensor("target"))
            default:
                guard let t = f["target"] else { throw FixtureError("no target") }
                (loss, grad) = Loss.crossEntropy(x, try t.int64s().map { Int($0) })
            }
            let want = try f.tensor("output").data[0]
            #expect(abs(loss - want) <= 1e-4 * max(1, abs(want)), "\(file): \(loss) vs \(want)")
            expectClose(grad, try f.tensor("grad_input"), "\(file) grad_input")
        }
    }

    @Test("Adam and SGD steps match PyTorch")
    func optimizers() throws {
        for file in ["adam_step", "sgd_step"] {
            let f = try Fixtures.load(file + ".safetensors")
            let p = Parameter(try f.tensor("param.before"))
            let grad = try f.tensor("grad")
            let step: () -> Void
            if file == "adam_step" {
                let opt = Adam([p], lr: f.float("lr", 2e-4), betas: (f.float("beta1", 0.5), f.float("beta2", 0.999)),
                               eps: f.float("eps", 1e-8), weightDecay: f.float("weight_decay", 0))
                step = { p.grad = grad; opt.step() }
            } else {
                let opt = SGD([p], lr: f.float("lr", 0.1), momentum: f.float("momentum", 0.9), weightDecay: f.float("weight_decay", 1e-4))
                step = { p.grad = grad; opt.step() }
            }
            step()
            expectClose(p.value, try f.tensor("param.after_1"), "\(file) after 1 step")
            step(); step()
            expectClose(p.value, try f.tensor("param.after_3"), "\(file) after 3 steps")
        }
    }
}
