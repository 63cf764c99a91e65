import Datasets
import Foundation
import HammingCode
import ImageIO
import Testing
@testable import Evaluation

/// A grey image of side `n` from a value function.
func greyImage(_ n: Int, _ value: (Int, Int) -> UInt8) -> RGBImage {
    var pixels = [UInt8](repeating: 0, count: n * n * 3)
    for y in 0..<n { for x in 0..<n { for c in 0..<3 { pixels[(y * n + x) * 3 + c] = value(x, y) } } }
    return RGBImage(width: n, height: n, pixels: pixels)
}

@Test func hogPutsAVerticalEdgeInTheHorizontalGradientBin() {
    let hog = HOG(imageSize: 16)
    #expect(HOG().dimension == 1764)
    // Dark left half, bright right half: the gradient points along x (0°, bin 0).
    let vertical = greyImage(16) { x, _ in x < 8 ? 0 : 255 }
    let h = hog.cellHistograms(HOG.grey(vertical), side: 16)
    let cell = Array(h[0..<9])  // top-left cell holds column 7, next to the edge
    #expect(cell[0] > 0 && cell[1...].allSatisfy { $0 == 0 })
    // A horizontal edge: 90°, halfway between the 80° and 100° bins.
    let horizontal = greyImage(16) { _, y in y < 8 ? 0 : 255 }
    let hh = Array(hog.cellHistograms(HOG.grey(horizontal), side: 16)[0..<9])
    #expect(hh[4] > 0 && abs(hh[4] - hh[5]) < 1e-4)
    #expect(hh.enumerated().allSatisfy { $0.offset == 4 || $0.offset == 5 || $0.element == 0 })
    // Blocks are L2-Hys normalised: unit length (or zero), no value above the clip after renormalising twice.
    let f = hog.features(vertical)
    #expect(f.count == hog.dimension)
    let block = f[0..<36]
    #expect(abs(block.reduce(0) { $0 + $1 * $1 } - 1) < 1e-3)
    #expect(hog.features(greyImage(16) { _, _ in 90 }).allSatisfy { $0 == 0 })
}

/// Points around `clusters` random centres in `dimension` dimensions: row-major features and labels.
func clustered(clusters: Int, perCluster: Int, dimension: Int, noise: Float, seed: UInt64,
               centresSeed: UInt64 = 99) -> (features: [Float], labels: [Int]) {
    var c = SplitMix64(seed: centresSeed)
    let centres = (0..<(clusters * dimension)).map { _ in 3 * ITQ.gaussian(&c) }
    var rng = SplitMix64(seed: seed)
    var features: [Float] = [], labels: [Int] = []
    for k in 0..<clusters {
        for _ in 0..<perCluster {
            for j in 0..<dimension { features.append(centres[k * dimension + j] + noise * ITQ.gaussian(&rng)) }
            labels.append(k)
        }
    }
    return (features, labels)
}

@Test func itqGivesBalancedCodesAndGoodRetrievalOnClusteredData() throws {
    let d = 48, bits = 32
    let train = clustered(clusters: 16, perCluster: 20, dimension: d, noise: 1, seed: 1)
    let itq = try ITQ.fit(train.features, count: 320, dimension: d, bits: bits, seed: 5)
    // Each step is optimal in B or in R, so the quantization loss never grows.
    #expect(itq.quantizationLoss.count == 50)
    #expect(zip(itq.quantizationLoss, itq.quantizationLoss.dropFirst()).allSatisfy { $1 <= $0 * (1 + 1e-4) })
    #expect(itq.quantizationLoss.last! < itq.quantizationLoss.first!)
    let codes = try itq.codes(train.features, count: 320)
    let ones = (0..<bits).map { i in Double(codes.filter { $0.bit(i) }.count) / 320 }
    #expect(abs(ones.reduce(0, +) / Double(bits) - 0.5) < 0.1)
    #expect(ones.allSatisfy { $0 > 0.1 && $0 < 0.9 })

    let queries = clustered(clusters: 16, perCluster: 3, dimension: d, noise: 1, seed: 2)
    let gallery = clustered(clusters: 16, perCluster: 10, dimension: d, noise: 1, seed: 3)
    let report = Retrieval.evaluate(queryCodes: try itq.codes(queries.features, count: 48), queryLabels: queries.labels,
                                    galleryCodes: try itq.codes(gallery.features, count: 160), galleryLabels: gallery.labels,
                                    classNames: (0..<16).map { "c\($0)" })
    #expect(report.mapAll > 0.5, "mAP \(report.mapAll), chance about 1/16")
    // The same seed gives the same codes (ITQ.fit runs OpenBLAS on one thread whatever
    // other suites beside this one set).
    let again = try ITQ.fit(train.features, count: 320, dimension: d, bits: bits, seed: 5)
    #expect(try again.codes(queries.features, count: 48) == itq.codes(queries.features, count: 48))
}

@Test func pcaFindsTheDominantDirectionAndRotationsAreOrthogonal() throws {
    // Variance 9 along axis 2, 1 along the others.
    var rng = SplitMix64(seed: 4)
    var x: [Float] = []
    for _ in 0..<400 { for j in 0..<4 { x.append((j == 2 ? 3 : 1) * ITQ.gaussian(&rng)) } }
    let (_, centred) = ITQ.centre(x, count: 400, dimension: 4)
    let w = try ITQ.principalComponents(centred, count: 400, dimension: 4, components: 1)
    #expect(abs(abs(w[2]) - 1) < 0.05)
    var g = SplitMix64(seed: 6)
    let r = try ITQ.polarFactor((0..<16).map { _ in ITQ.gaussian(&g) }, size: 4)
    let rtr = ITQ.multiply(r, r, m: 4, k: 4, n: 4, transposeA: true)
    for i in 0..<4 { for j in 0..<4 { #expect(abs(rtr[i * 4 + j] - (i == j ? 1 : 0)) < 1e-4) } }
    #expect(throws: LinearAlgebraError.self) { try ITQ.fit([1, 2, 3, 4], count: 2, dimension: 2, bits: 32, seed: 0) }
}

/// A plain dataset of two classes: vertical stripes and horizontal stripes, random phase.
func stripesDataset(_ root: String, perClass: Int) throws -> Dataset {
    var rng = SplitMix64(seed: 11)
    for (c, vertical) in [("hstripes", false), ("vstripes", true)] {
        for side in ["images", "sketches"] {
            let dir = "\(root)/\(side)/\(c)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            for i in 0..<perClass {
                let phase = Int(rng.next() % 8), period = 4 + Int(rng.next() % 4)
                let image = greyImage(32) { x, y in ((vertical ? x : y) + phase) % period < period / 2 ? 20 : 230 }
                let png = try ImageDecoder.encodePNG(image)
                _ = FileManager.default.createFile(atPath: "\(dir)/\(i).png", contents: Data(png))
            }
        }
    }
    return try Dataset.load(root: root)
}

func temporaryDirectory() throws -> String {
    let p = NSTemporaryDirectory() + "gdh-eval-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
    return p
}

@Test func hogITQBaselineFitsOnTrainingItemsOnly() throws {
    let root = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: root) }
    let dataset = try stripesDataset(root, perClass: 10)
    let split = try Split.make(dataset, kind: .random, seed: 0, queryFraction: 0.3, galleryFraction: 0.5)
    let resolved = try split.resolve(against: dataset)
    let report = try BaselineEvaluator.hogITQ(dataset: dataset, resolved: resolved, fit: nil, bits: 32, seed: 0,
                                              hog: HOG(imageSize: 32))
    #expect(report.method == "hog-itq" && report.queries == 6 && report.gallery == 10)
    #expect(report.mapAll > 0.6, "mAP \(report.mapAll)")
    #expect(report.mapAll <= 1)

    // An `all` split has nothing to fit on: refuse rather than fit on the test items.
    let all = try Split.make(dataset, kind: .all, seed: 0).resolve(against: dataset)
    let error = #expect(throws: EvaluationError.self) {
        try BaselineEvaluator.hogITQ(dataset: dataset, resolved: all, fit: nil, bits: 32, seed: 0, hog: HOG(imageSize: 32))
    }
    #expect(error?.description.contains("--fit-data") == true)
    let fitted = try BaselineEvaluator.hogITQ(dataset: dataset, resolved: all, fit: resolved, bits: 32, seed: 0,
                                              hog: HOG(imageSize: 32))
    #expect(fitted.queries == 20 && fitted.gallery == 20)
}
