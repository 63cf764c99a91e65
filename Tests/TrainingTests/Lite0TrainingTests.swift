import Foundation
import GDH
import HammingCode
import NeuralNet
import Testing
@testable import Training

/// The lite0 hashing network in training: frozen stages, the backbone's learning-rate
/// scale, the settings' checks.
@Suite struct Lite0TrainingTests {
    static func configuration() -> GDHConfiguration {
        var c = GDHConfiguration.lite0(bits: 32)
        c.imageSize = 32
        return c
    }

    static func batch(_ n: Int, bits: Int, seed: UInt64) -> TrainingBatch {
        var rng = SplitMix64(seed: seed)
        func images() -> Tensor {
            Tensor(shape: [n, 3, 32, 32], data: (0..<(n * 3 * 32 * 32)).map { _ in Float(rng.next() % 2001) / 1000 - 1 })
        }
        func codes() -> Tensor { Tensor(shape: [n, bits], data: (0..<(n * bits)).map { _ in rng.next() % 2 == 0 ? -1 : 1 }) }
        let labels = (0..<n).map { $0 % 2 }
        return TrainingBatch(photos: images(), sketches: images(), photoLabels: labels, sketchLabels: labels,
                             photoTargets: codes(), sketchTargets: codes())
    }

    /// One no-generator step with the stem and two stages frozen: their weights and their
    /// BatchNorm statistics stay, the later stages and the head change.
    @Test func frozenStagesStayAndTheRestLearns() throws {
        let model = try GDHModel(configuration: Self.configuration(), training: true)
        TrainingInit.initialize(model, seed: 3)
        var objective = TrainingObjective()
        objective.generator = false
        let step = try GDHTrainStep(model: model, objective: objective, seed: 3,
                                    backbone: BackboneTraining(pretrained: nil, learningRateScale: 0.5, freezeStages: 2))
        let before = model.hashNet.stateDict()
        step.step(Self.batch(4, bits: 32, seed: 9))
        let after = model.hashNet.stateDict()
        // Stage 0 is block 0, stage 1 blocks 1-2.
        for name in ["_conv_stem.weight", "_bn0.running_mean", "_blocks.0._depthwise_conv.weight", "_blocks.2._bn1.running_var",
                     "_blocks.2._project_conv.weight"] {
            #expect(after[name]!.data == before[name]!.data, "\(name) changed")
        }
        for name in ["_blocks.3._depthwise_conv.weight", "_blocks.3._bn1.running_mean", "_conv_head.weight", "_fc.weight"] {
            #expect(after[name]!.data != before[name]!.data, "\(name) did not change")
        }
        #expect(step.frozen.count == 2 + 3)
    }

    /// A backbone scale of 0 trains the head only (BatchNorm statistics still follow the data).
    @Test func zeroBackboneScaleTrainsOnlyTheHead() throws {
        let model = try GDHModel(configuration: Self.configuration(), training: true)
        TrainingInit.initialize(model, seed: 4)
        var objective = TrainingObjective()
        objective.generator = false
        let step = try GDHTrainStep(model: model, objective: objective, seed: 4,
                                    backbone: BackboneTraining(pretrained: nil, learningRateScale: 0, freezeStages: 0))
        let before = model.hashNet.stateDict()
        step.step(Self.batch(4, bits: 32, seed: 10))
        let after = model.hashNet.stateDict()
        for (name, p) in model.hashNet.parameters where EfficientNetLite0.isBackbone(name) {
            #expect(p.value.data == before[name]!.data, "\(name) changed")
        }
        #expect(after["_fc.weight"]!.data != before["_fc.weight"]!.data)
        #expect(after["_fc.bias"]!.data != before["_fc.bias"]!.data)
    }

    @Test func settingsAreChecked() {
        var s = TrainingSettings(configuration: Self.configuration(), objective: TrainingObjective(), epochs: 1, batch: 4, seed: 0,
                                 backbone: BackboneTraining(pretrained: nil, learningRateScale: 0.1, freezeStages: 8))
        #expect(s.problem?.contains("frozen stages") == true)
        s.backbone?.freezeStages = 7
        #expect(s.problem == nil)
        s.configuration = GDHConfiguration.small(bits: 32)
        #expect(s.problem?.contains("lite0") == true)
        var c = Self.configuration()
        c.imageSize = 100
        #expect(c.problem?.contains("multiple of 32") == true)
    }

    /// A configuration written before `hashNet` existed reads as the ResNet, and lite0's
    /// JSON round-trips.
    @Test func configurationJSON() throws {
        let old = try JSONEncoder().encode(GDHConfiguration.small(bits: 64))
        #expect(!String(decoding: old, as: UTF8.self).contains("hashNet"))
        #expect(try JSONDecoder().decode(GDHConfiguration.self, from: old).hashNetKind == .resnet)
        let lite = try JSONEncoder().encode(Self.configuration())
        #expect(try JSONDecoder().decode(GDHConfiguration.self, from: lite) == Self.configuration())
    }
}
