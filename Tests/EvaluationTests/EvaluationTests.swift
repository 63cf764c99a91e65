import Datasets
import Foundation
import GDH
import Testing
@testable import Evaluation

@Test func modelEvaluatorRunsEndToEndOnATinyUntrainedModel() throws {
    let root = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: root) }
    _ = try stripesDataset(root, perClass: 4)
    // One unreadable gallery candidate: skipped and counted, not fatal.
    _ = FileManager.default.createFile(atPath: root + "/images/vstripes/zz-broken.png", contents: Data([0x89, 0x50, 0x4E, 0x47]))
    let withBroken = try Dataset.load(root: root)
    let resolved = try Split.make(withBroken, kind: .all, seed: 0).resolve(against: withBroken)
    var config = GDHConfiguration.small(bits: 32)
    config.imageSize = 16
    let model = try GDHModel(configuration: config)
    var stages: Set<String> = []
    let report = try ModelEvaluator(model: model, threads: 2).evaluate(withBroken, resolved) { stage, done, total in
        stages.insert(stage)
        #expect(done <= total)
    }
    #expect(stages == ["sketches", "photos"])
    #expect(report.method == "gdh" && report.bits == 32)
    #expect(report.queries == 8 && report.gallery == 8 && report.skippedUnreadable == 1)
    #expect(report.mapAll >= 0 && report.mapAll <= 1)
    #expect(report.encodeMsPerQuery != nil && report.encodeMsPerImage != nil)
    // The plain layout has no pairs: no acc@K.
    #expect(report.pairedQueries == 0 && report.acc1 == nil)
    // One thread gives the same codes, hence the same numbers.
    let single = try ModelEvaluator(model: model, threads: 1).evaluate(withBroken, resolved, progress: nil)
    #expect(single.mapAll == report.mapAll && single.precisionAt200 == report.precisionAt200)
}
