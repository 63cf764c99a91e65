import Foundation
import GDH
import NeuralNet
import Safetensors
import Testing
@testable import Training

/// The first training steps against the PyTorch reference (Tools/gdh_train_torch.py
/// fixture; Tests/TrainingTests/Fixtures/README.md): same initial weights, same batches,
/// every loss term of every step compared, then some weights after the steps.
enum TrainingFixture {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
    static func load() throws -> SafetensorsFile {
        try SafetensorsFile.read(contentsOf: directory.appendingPathComponent("train_steps.safetensors").path)
    }
}

struct FixtureError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

extension SafetensorsFile {
    func tensor(_ name: String) throws -> Tensor {
        guard let t = self[name] else { throw FixtureError("fixture has no tensor \(name)") }
        return Tensor(shape: t.shape, data: try t.floats())
    }
    func labels(_ name: String) throws -> [Int] { try tensor(name).data.map { Int($0) } }
}

/// |a − b| ≤ tolerance · max(|b|, floor), printing the name and both values when not.
func expectRelative(_ a: Float, _ b: Float, _ what: String, tolerance: Float = 1e-3, floor: Float = 1e-3,
                    sourceLocation: SourceLocation = #_sourceLocation) {
    let err = abs(a - b) / max(abs(b), floor)
    #expect(err <= tolerance, "\(what): Swift \(a), PyTorch \(b) (relative \(err))", sourceLocation: sourceLocation)
}

func expectTensorsClose(_ a: Tensor, _ b: Tensor, _ what: String, tolerance: Float = 1e-3,
                        sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(a.shape == b.shape, "\(what): \(a.shape) vs \(b.shape)", sourceLocation: sourceLocation)
    guard a.count == b.count else { return }
    var worst: Float = 0, scale: Float = 1e-6
    for i in 0..<a.count { worst = max(worst, abs(a.data[i] - b.data[i])); scale = max(scale, abs(b.data[i])) }
    #expect(worst / scale <= tolerance, "\(what): max difference \(worst) (scale \(scale))", sourceLocation: sourceLocation)
}

func fixtureModel(_ f: SafetensorsFile) throws -> GDHModel {
    guard let json = f.metadata["config"] else { throw FixtureError("no config") }
    let config = try JSONDecoder().decode(GDHConfiguration.self, from: Data(json.utf8))
    let model = try GDHModel(configuration: config, training: true)
    var state: [String: Tensor] = [:]
    for name in f.names where ["G_I.", "G_S.", "D_I.", "D_S.", "H."].contains(where: { name.hasPrefix($0) }) {
        state[name] = try f.tensor(name)
    }
    try model.generatorI.load(state, prefix: "G_I.")
    try model.hashNet.load(state, prefix: "H.")
    try model.generatorS?.load(state, prefix: "G_S.")
    try model.discriminatorI?.load(state, prefix: "D_I.")
    try model.discriminatorS?.load(state, prefix: "D_S.")
    return model
}

func fixtureBatch(_ f: SafetensorsFile, step t: Int) throws -> TrainingBatch {
    TrainingBatch(photos: try f.tensor("step\(t).x_I"), sketches: try f.tensor("step\(t).x_S"),
                  photoLabels: try f.labels("step\(t).y_I"), sketchLabels: try f.labels("step\(t).y_S"),
                  photoTargets: try f.tensor("step\(t).b_I"), sketchTargets: try f.tensor("step\(t).b_S"))
}

/// Runs the fixture's steps with `objective` and returns each step's losses.
func runFixtureSteps(_ f: SafetensorsFile, _ objective: TrainingObjective) throws -> (GDHTrainStep, [StepLosses]) {
    let seed = UInt64(f.metadata["seed"] ?? "") ?? 7
    let step = try GDHTrainStep(model: try fixtureModel(f), objective: objective, seed: seed, learningRate: Float(f.metadata["lr"] ?? "") ?? 2e-4)
    let steps = Int(f.metadata["steps"] ?? "") ?? 10
    let losses = try (0..<steps).map { try step.step(fixtureBatch(f, step: $0)) }
    return (step, losses)
}

@Suite struct TrainingFixtureTests {
    @Test func fullObjectiveLossesMatchPyTorchForTenSteps() throws {
        let f = try TrainingFixture.load()
        let (step, losses) = try runFixtureSteps(f, TrainingObjective())
        let reference = try f.tensor("losses")
        let columns = StepLosses.columnNames.count
        for (t, l) in losses.enumerated() {
            for (k, v) in l.columns.enumerated() {
                expectRelative(v, reference.data[t * columns + k], "step \(t) \(StepLosses.columnNames[k])")
            }
        }
        let state = step.model.stateDict()
        for name in ["H.fc.weight", "G_I.conv1.weight", "D_I.conv1.weight"] {
            guard let ours = state[name] else { Issue.record("no \(name)"); continue }
            expectTensorsClose(ours, try f.tensor("final." + name), "after 10 steps: \(name)", tolerance: 2e-3)
        }
        // conv1's bias feeds a BatchNorm, so its true gradient is 0 and what both sides
        // compute is rounding noise, which Adam turns into steps of up to lr in either
        // direction: the running mean (which includes that bias) can differ by up to about
        // steps · lr. Compared absolutely within that bound.
        if let ours = state["G_I.conv1_norm.running_mean"] {
            let theirs = try f.tensor("final.G_I.conv1_norm.running_mean")
            for (a, b) in zip(ours.data, theirs.data) { #expect(abs(a - b) <= 10 * 2e-4, "running mean \(a) vs \(b)") }
        }
    }

    @Test func detachedHashLossesMatchPyTorch() throws {
        let f = try TrainingFixture.load()
        var objective = TrainingObjective()
        objective.detachHash = true
        let (_, losses) = try runFixtureSteps(f, objective)
        let reference = try f.tensor("losses_detach")
        for (t, l) in losses.enumerated() {
            for (k, v) in l.columns.enumerated() {
                expectRelative(v, reference.data[t * 9 + k], "detach step \(t) \(StepLosses.columnNames[k])")
            }
        }
        // The detached run differs from the joint one once G_I has been updated.
        let joint = try f.tensor("losses")
        #expect(abs(joint.data[9 * 9 + 5] - reference.data[9 * 9 + 5]) > 0)
    }

    @Test func noGeneratorLossesMatchPyTorch() throws {
        let f = try TrainingFixture.load()
        var objective = TrainingObjective()
        objective.generator = false
        let (_, losses) = try runFixtureSteps(f, objective)
        let reference = try f.tensor("losses_nogen")
        for (t, l) in losses.enumerated() {
            expectRelative(l.hash, reference.data[t * 2], "no-generator step \(t) L_hash")
            expectRelative(l.triplet, reference.data[t * 2 + 1], "no-generator step \(t) L_tri")
        }
    }

    @Test func hashLossAndGradientsMatchPyTorch() throws {
        let f = try TrainingFixture.load()
        let yI = try f.labels("hashloss.y_I"), yS = try f.labels("hashloss.y_S")
        let negatives = try f.labels("hashloss.negatives")
        for i in yS.indices {
            #expect(TripletRanking.negative(of: i, anchorLabels: yS, photoLabels: yI) == negatives[i], "n(\(i))")
        }
        let r = HashObjective.loss(photoOutputs: try f.tensor("hashloss.h_I"), sketchOutputs: try f.tensor("hashloss.h_S"),
                                   photoTargets: try f.tensor("hashloss.b_I"), sketchTargets: try f.tensor("hashloss.b_S"),
                                   photoLabels: yI, sketchLabels: yS, objective: TrainingObjective())
        expectRelative(r.hash, try f.tensor("hashloss.L_hash").data[0], "L_hash", tolerance: 1e-5)
        expectRelative(r.triplet, try f.tensor("hashloss.L_tri").data[0], "L_tri", tolerance: 1e-5)
        expectTensorsClose(r.dPhotos, try f.tensor("hashloss.grad_h_I"), "dL/dh_I", tolerance: 1e-5)
        expectTensorsClose(r.dSketches, try f.tensor("hashloss.grad_h_S"), "dL/dh_S", tolerance: 1e-5)
    }

    @Test func targetCodeUpdateMatchesPyTorch() throws {
        let f = try TrainingFixture.load()
        let yI = try f.labels("codes.y_I"), yS = try f.labels("codes.y_S")
        let bI = try f.tensor("codes.B_I"), bS = try f.tensor("codes.B_S")
        var codes = TargetCodes(bits: bI.shape[1], classes: (yI + yS).max()! + 1, photos: bI.data, sketches: bS.data)
        codes.update(photoLabels: yI, sketchLabels: yS, photoOutputs: try f.tensor("codes.H_I").data,
                     sketchOutputs: try f.tensor("codes.H_S").data, nu: 0.1)
        #expect(codes.photos == (try f.tensor("codes.new_B_I")).data)
        #expect(codes.sketches == (try f.tensor("codes.new_B_S")).data)
    }
}
