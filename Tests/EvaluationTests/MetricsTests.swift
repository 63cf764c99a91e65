import Datasets
import Foundation
import HammingCode
import Testing
@testable import Evaluation

// MARK: - Brute force over tie orders

/// Every order of `items` (distance, relevant) that a tie-breaking search could give:
/// all permutations, stably sorted by distance (each order within a tie equally often).
func tieOrders(_ items: [(Int, Bool)]) -> [[(Int, Bool)]] {
    var out: [[(Int, Bool)]] = []
    func permute(_ prefix: [(Int, Bool)], _ rest: [(Int, Bool)]) {
        if rest.isEmpty {
            out.append(prefix.enumerated().sorted { a, b in
                a.element.0 != b.element.0 ? a.element.0 < b.element.0 : a.offset < b.offset
            }.map(\.element))
            return
        }
        for i in rest.indices {
            var r = rest
            let x = r.remove(at: i)
            permute(prefix + [x], r)
        }
    }
    permute([], items)
    return out
}

/// Plain (non-interpolated) AP of one ranked list.
func plainAP(_ ranked: [(Int, Bool)]) -> Double {
    var hits = 0, sum = 0.0
    for (i, item) in ranked.enumerated() where item.1 {
        hits += 1
        sum += Double(hits) / Double(i + 1)
    }
    return hits == 0 ? 0 : sum / Double(hits)
}

func ranking(_ items: [(Int, Bool)], bits: Int = 4) -> TiedRanking {
    TiedRanking(distances: items.map(\.0), relevant: items.map(\.1), bits: bits)
}

/// Random small galleries: up to 6 items at distances 0...3.
func randomCases(_ count: Int, seed: UInt64) -> [[(Int, Bool)]] {
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { _ in
        let n = 1 + Int(rng.next() % 6)
        return (0..<n).map { _ in (Int(rng.next() % 4), rng.next() % 2 == 0) }
    }
}

func mean(_ xs: [Double]) -> Double { xs.reduce(0, +) / Double(xs.count) }

@Test func tieAwareAPEqualsTheMeanOverAllTieOrders() {
    for items in randomCases(40, seed: 1) where items.contains(where: \.1) {
        let expected = mean(tieOrders(items).map(plainAP))
        let got = ranking(items).averagePrecision()
        #expect(abs((got ?? -1) - expected) < 1e-9, "items \(items)")
    }
    // A tie of everything: 2 relevant of 4.
    let all = [(0, true), (0, false), (0, true), (0, false)]
    #expect(abs((ranking(all).averagePrecision() ?? 0) - mean(tieOrders(all).map(plainAP))) < 1e-12)
}

@Test func tieAwareAPIsPlainAPWithoutTies() {
    let items = [(0, true), (1, false), (2, true), (3, true), (4, false)]
    #expect(abs((ranking(items, bits: 8).averagePrecision() ?? 0) - plainAP(items)) < 1e-12)
    #expect(abs(plainAP(items) - (1 + 2.0 / 3 + 3.0 / 4) / 3) < 1e-12)
    #expect(ranking([(0, false), (1, false)]).averagePrecision() == nil)
}

@Test func precisionAtKIsTheExpectedPrecisionOverTieOrders() {
    for items in randomCases(30, seed: 2) {
        for k in 1...7 {
            let cut = min(k, items.count)
            let expected = mean(tieOrders(items).map { order in
                Double(order.prefix(cut).filter(\.1).count) / Double(cut)
            })
            #expect(abs(ranking(items).precision(at: k) - expected) < 1e-9, "k \(k) items \(items)")
        }
    }
}

@Test func accuracyAtKIsTheProbabilityThePairIsInTheFirstK() {
    // Item 0 is the pair; its probability of landing in the first K over tie orders.
    for items in randomCases(30, seed: 3) {
        let tagged = items.enumerated().map { ($0.element.0, $0.offset == 0) }
        for k in [1, 2, 3, 10] {
            let expected = mean(tieOrders(tagged).map { order in order.prefix(k).contains { $0.1 } ? 1.0 : 0 })
            #expect(abs(ranking(items).probabilityWithin(k, distance: items[0].0) - expected) < 1e-9)
        }
    }
}

// MARK: - Through the multi-index

let width32 = try! CodeWidth(bits: 32)

/// A 32-bit code with its first `d` bits set (distance d from the zero code).
func code(ones d: Int) -> HammingCode {
    let bits: UInt64 = d == 0 ? 0 : ~UInt64(0) << UInt64(64 - d)
    return HammingCode(width: width32, words: [bits])
}

@Test func identicalCodesScoreChanceWhateverTheGalleryOrder() {
    // 36 classes, 5 photos each, all codes equal: insertion-order tie breaking would
    // inflate mAP for queries of the first classes; tie-aware mAP does not depend on order.
    let labels = (0..<180).map { $0 / 5 }
    let zero = code(ones: 0)
    let gallery = [HammingCode](repeating: zero, count: 180)
    let report = Retrieval.evaluate(queryCodes: [zero, zero, zero], queryLabels: [0, 17, 35], galleryCodes: gallery,
                                    galleryLabels: labels, classNames: (0..<36).map { "c\($0)" })
    let expected = ranking(Array(repeating: (0, false), count: 175) + Array(repeating: (0, true), count: 5), bits: 32).averagePrecision() ?? 0
    #expect(abs(report.mapAll - expected) < 1e-12)
    // Insertion-order tie breaking would give class 0's query AP 1 and class 35's about 0.03.
    #expect(report.mapAll < 0.06)
    #expect(Set(report.perClassAP.values).count == 1)
    #expect(abs(report.precisionAt200 - 5.0 / 180) < 1e-12)
    #expect(report.perClassAP.count == 3)
}

@Test func evaluateRanksThroughTheIndexAndCountsQueriesWithoutRelevantItems() {
    // Gallery: distances 0..5 from the zero query; labels alternate.
    let gallery = (0..<6).map { code(ones: $0) }
    let labels = [0, 1, 0, 1, 0, 1]
    let report = Retrieval.evaluate(queryCodes: [code(ones: 0), code(ones: 0)], queryLabels: [0, 7],
                                    galleryCodes: gallery, galleryLabels: labels, queryPairs: [2, nil],
                                    classNames: ["a", "b"])
    #expect(report.queries == 2 && report.gallery == 6 && report.bits == 32)
    #expect(report.queriesWithoutRelevant == 1)
    #expect(abs(report.mapAll - (1 + 2.0 / 3 + 3.0 / 5) / 3) < 1e-12)
    #expect(abs(report.precisionAt200 - 0.5) < 1e-12)
    #expect(abs((report.precisionAtK["10"] ?? 0) - 0.5) < 1e-12)
    #expect(report.acc1 == 0 && report.acc10 == 1 && report.pairedQueries == 1)
    #expect(report.perClassAP["a"] != nil && report.perClassAP["b"] == nil)
    // PR curve: one point per radius, recall never decreasing, all retrieved at radius 32.
    #expect(report.prCurve.count == 33)
    #expect(zip(report.prCurve, report.prCurve.dropFirst()).allSatisfy { $0.recall <= $1.recall })
    #expect(report.prCurve[0].precision == 1 && abs(report.prCurve[0].recall - 1.0 / 3) < 1e-12)
    #expect(report.prCurve[32].recall == 1 && report.prCurve[32].precision == 0.5)
}

@Test func reportJSONHasTheDocumentedKeys() throws {
    var report = Retrieval.evaluate(queryCodes: [code(ones: 1)], queryLabels: [0], galleryCodes: [code(ones: 0), code(ones: 3)],
                                    galleryLabels: [0, 1], classNames: ["a", "b"])
    report.method = "test"
    let object = report.jsonObject
    for key in ["map_all", "precision_at_200", "queries", "gallery", "acc_1", "acc_10", "search_ms_per_query",
                "encode_ms_per_query", "ties", "bits", "method", "pr_curve", "queries_without_relevant"] {
        #expect(object[key] != nil, "missing \(key)")
    }
    #expect(object["acc_1"] is NSNull)
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    let text = String(decoding: data, as: UTF8.self)
    #expect(text.contains("\"map_all\":1"))
    #expect(text.contains("tie-aware"))
    // Codable round trip too.
    let decoded = try JSONDecoder().decode(RetrievalReport.self, from: try JSONEncoder().encode(report))
    #expect(decoded.mapAll == report.mapAll && decoded.prCurve == report.prCurve)
    #expect(report.textLines.contains { $0.hasPrefix("mAP@all: 1.0000 (tie-aware") })
}

@Test func svgLineChartHasAxesSeriesAndEscapedLegend() {
    let svg = SVGPlot.lines(title: "loss <train>", xLabel: "epoch", yLabel: "loss",
                            series: [(name: "G & D", points: [(1, 0.5), (2, 0.25), (3, 0.125)]),
                                     (name: "hash", points: [(1, 2), (2, .nan), (3, 1)])], logY: true)
    #expect(svg.hasPrefix("<svg xmlns=\"http://www.w3.org/2000/svg\""))
    #expect(svg.hasSuffix("</svg>\n"))
    #expect(svg.components(separatedBy: "<polyline").count == 3)
    #expect(svg.contains("loss &lt;train&gt;") && svg.contains("G &amp; D"))
    #expect(svg.contains("(log scale)"))
    #expect(!svg.contains("nan,") && !svg.contains("inf"))
    #expect(svg.contains(">0.2<") && svg.contains(">0.5<") && svg.contains(">1<"))
    let empty = SVGPlot.lines(title: "empty", xLabel: "x", yLabel: "y", series: [])
    #expect(empty.contains("<rect") && !empty.contains("<polyline"))
    let ticks = SVGPlot.ticks(0, 1)
    #expect(ticks.count == 6 && ticks.first == 0 && abs((ticks.last ?? 0) - 1) < 1e-9)
}

@Test func unreadableGalleryItemsAreDroppedAndPairsRenumbered() {
    let gallery = [DatasetItem(path: "g0", label: 0), DatasetItem(path: "g1", label: 0), DatasetItem(path: "g2", label: 1)]
    let queries = [DatasetItem(path: "q0", label: 1, pair: 2), DatasetItem(path: "q1", label: 0, pair: 0),
                   DatasetItem(path: "q2", label: 0)]
    let report = scoreCodes(queries: queries, queryCodes: [code(ones: 0), code(ones: 0), nil], gallery: gallery,
                            galleryCodes: [nil, code(ones: 3), code(ones: 0)], classes: ["a", "b"])
    #expect(report.queries == 2 && report.gallery == 2)
    // q0's pair (g2, now gallery index 1) is at distance 0, alone: acc@1 = 1; q1's pair is gone.
    #expect(report.pairedQueries == 1 && report.acc1 == 1)
    // q0: AP 1; q1: its one relevant photo (g1) comes after g2, AP 1/2.
    #expect(report.mapAll == 0.75)
}
