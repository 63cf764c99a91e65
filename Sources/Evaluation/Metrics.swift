import Foundation
import HammingCode
import MultiIndex

/// One point of a precision-recall curve: everything within Hamming distance `radius`
/// of the query is retrieved.
public struct PRPoint: Codable, Equatable, Sendable {
    public var radius: Int
    /// Mean over the queries that retrieve at least one item at this radius.
    public var precision: Double
    /// Mean over the queries (with at least one relevant item).
    public var recall: Double

    public init(radius: Int, precision: Double, recall: Double) {
        self.radius = radius
        self.precision = precision
        self.recall = recall
    }
}

/// A query's ranking reduced to what tie-aware metrics need: per Hamming distance d,
/// how many gallery items lie at d (`count[d]`) and how many of them are relevant
/// (`relevant[d]`). Items at equal distance form a tied group whose order is taken to be
/// uniformly random: every metric is its expected value over those orders.
public struct TiedRanking: Sendable, Equatable {
    public var count: [Int]
    public var relevant: [Int]

    public init(count: [Int], relevant: [Int]) {
        precondition(count.count == relevant.count, "count and relevant must have one entry per distance")
        self.count = count
        self.relevant = relevant
    }

    /// The ranking of `distances` (one per gallery item) with relevance flags.
    public init(distances: [Int], relevant flags: [Bool], bits: Int) {
        var n = [Int](repeating: 0, count: bits + 1), r = n
        for (d, rel) in zip(distances, flags) {
            n[d] += 1
            if rel { r[d] += 1 }
        }
        self.init(count: n, relevant: r)
    }

    public var totalRelevant: Int { relevant.reduce(0, +) }
    public var total: Int { count.reduce(0, +) }

    /// Expected average precision over random orders within tied groups; nil when no item
    /// is relevant. For a group of n items with r relevant, after N items of which R are
    /// relevant, position N + i holds a relevant item with probability r/n, and then the
    /// group's other relevant items before it number (i − 1)(r − 1)/(n − 1) on average,
    /// so the group adds (r/n) · Σ_{i=1..n} (R + 1 + (i − 1)(r − 1)/(n − 1)) / (N + i)
    /// to the sum of precisions (r·(R + 1)/(N + 1) when n = 1).
    public func averagePrecision() -> Double? {
        let totalR = totalRelevant
        guard totalR > 0 else { return nil }
        var sum = 0.0, before = 0, relevantBefore = 0
        for d in count.indices {
            let n = count[d], r = relevant[d]
            if r > 0 {
                sum += TiedRanking.groupPrecisionSum(n: n, r: r, before: before, relevantBefore: relevantBefore)
            }
            before += n
            relevantBefore += r
        }
        return sum / Double(totalR)
    }

    /// One tied group's expected contribution to the sum of precisions at relevant items.
    static func groupPrecisionSum(n: Int, r: Int, before N: Int, relevantBefore R: Int) -> Double {
        if n == 1 { return Double(r * (R + 1)) / Double(N + 1) }
        let slope = Double(r - 1) / Double(n - 1)
        var s = 0.0
        for i in 1...n {
            s += (Double(R + 1) + Double(i - 1) * slope) / Double(N + i)
        }
        return Double(r) / Double(n) * s
    }

    /// Expected precision among the first K items (K larger than the gallery: the gallery
    /// size). The cut falls in some group: it adds (K − N)·r/n expected relevant items.
    public func precision(at k: Int) -> Double {
        let k = min(k, total)
        guard k > 0 else { return 0 }
        var before = 0, hits = 0.0
        for d in count.indices where count[d] > 0 {
            let n = count[d]
            if before + n >= k {
                hits += Double(k - before) * Double(relevant[d]) / Double(n)
                break
            }
            hits += Double(relevant[d])
            before += n
        }
        return hits / Double(k)
    }

    /// The probability that one given item at `distance` is among the first K: all of
    /// its group's n positions are equally likely.
    public func probabilityWithin(_ k: Int, distance: Int) -> Double {
        let before = count[..<distance].reduce(0, +), n = count[distance]
        guard n > 0 else { return 0 }
        return Double(min(n, max(0, k - before))) / Double(n)
    }
}

/// Retrieval quality of one evaluation run.
public struct RetrievalReport: Codable, Sendable {
    /// Tie-aware mean average precision over the whole ranking.
    public var mapAll: Double
    /// Tie-aware precision in the first 200 (or the gallery size when smaller).
    public var precisionAt200: Double
    /// Tie-aware precision at other cut-offs, keyed by K ("10", "100", ...).
    public var precisionAtK: [String: Double]
    public var queries: Int
    public var gallery: Int
    /// Queries with no relevant gallery item (left out of every average).
    public var queriesWithoutRelevant: Int
    public var bits: Int
    /// How ties are treated.
    public var ties: String
    public var prCurve: [PRPoint]
    /// Tie-aware probability that a query's paired photo is ranked first / in the first
    /// ten (over queries whose paired photo is in the gallery); nil without pairs.
    public var acc1: Double?
    public var acc10: Double?
    /// Queries with a paired photo in the gallery.
    public var pairedQueries: Int
    /// Mean time of one full-ranking search in the multi-index, in milliseconds.
    public var searchMsPerQuery: Double
    /// Model time per query sketch and per gallery photo (set by `ModelEvaluator`).
    public var encodeMsPerQuery: Double?
    public var encodeMsPerImage: Double?
    /// Mean AP of each class's queries, by class name.
    public var perClassAP: [String: Double]
    /// What produced the codes ("gdh", "hog-itq", ...).
    public var method: String
    /// Query or gallery files that could not be read and were left out.
    public var skippedUnreadable: Int

    public static let tieDescription = "tie-aware: expected precision over each group of equal Hamming distance"

    /// The report as a JSON-ready dictionary with snake_case keys (nil values as null).
    public var jsonObject: [String: Any] {
        func opt(_ v: Double?) -> Any { v.map { $0 as Any } ?? NSNull() }
        var o: [String: Any] = [
            "map_all": mapAll, "precision_at_200": precisionAt200, "queries": queries, "gallery": gallery,
            "queries_without_relevant": queriesWithoutRelevant, "bits": bits, "ties": ties, "method": method,
            "acc_1": opt(acc1), "acc_10": opt(acc10), "paired_queries": pairedQueries,
            "search_ms_per_query": searchMsPerQuery, "encode_ms_per_query": opt(encodeMsPerQuery),
            "encode_ms_per_image": opt(encodeMsPerImage), "per_class_ap": perClassAP,
            "skipped_unreadable": skippedUnreadable,
            "pr_curve": prCurve.map { ["radius": $0.radius, "precision": $0.precision, "recall": $0.recall] as [String: Any] },
        ]
        for (k, v) in precisionAtK { o["precision_at_\(k)"] = v }
        return o
    }

    /// One line per metric, for people.
    public var textLines: [String] {
        func f(_ v: Double) -> String { String(format: "%.4f", v) }
        var lines = [
            "method: \(method)", "bits: \(bits)",
            "queries: \(queries) (\(queriesWithoutRelevant) without a relevant gallery item, left out)",
            "gallery: \(gallery)",
            "mAP@all: \(f(mapAll)) (\(ties))",
        ]
        for k in precisionAtK.keys.compactMap(Int.init).sorted() {
            lines.append("precision@\(k): \(f(precisionAtK[String(k)] ?? 0)) (tie-aware)")
        }
        if let acc1, let acc10 {
            lines.append("acc@1: \(f(acc1)), acc@10: \(f(acc10)) (\(pairedQueries) paired queries, tie-aware)")
        } else {
            lines.append("acc@1, acc@10: not measured (no query has its paired photo in the gallery)")
        }
        lines.append(String(format: "search: %.3f ms per query (full ranking in the multi-index)", searchMsPerQuery))
        if let e = encodeMsPerQuery { lines.append(String(format: "encode: %.2f ms per query sketch", e)) }
        if let e = encodeMsPerImage { lines.append(String(format: "encode: %.2f ms per gallery photo", e)) }
        if skippedUnreadable > 0 { lines.append("skipped unreadable files: \(skippedUnreadable)") }
        return lines
    }
}

/// Ranks a gallery for each query through `MultiIndex` (the daemon's search code) and
/// computes tie-aware metrics.
public enum Retrieval {
    /// Cut-offs reported as `precisionAtK`.
    public static let cutoffs = [10, 50, 100, 200]

    /// Evaluates query codes against gallery codes: relevant = same label. `queryPairs`:
    /// per query, the gallery index of its paired photo (acc@K is computed when any is set).
    public static func evaluate(queryCodes: [HammingCode], queryLabels: [Int], galleryCodes: [HammingCode],
                                galleryLabels: [Int], queryPairs: [Int?]? = nil, classNames: [String]) -> RetrievalReport {
        precondition(queryCodes.count == queryLabels.count && galleryCodes.count == galleryLabels.count,
                     "one label per code")
        let bits = galleryCodes.first?.width.bits ?? queryCodes.first?.width.bits ?? 0
        var acc = Accumulator(bits: bits)
        if let width = galleryCodes.first?.width, let index = try? MultiIndex(width: width) {
            for (i, c) in galleryCodes.enumerated() { index.upsert(UInt32(i), c) }
            try? index.rebuild()
            for q in queryCodes.indices {
                let start = DispatchTime.now().uptimeNanoseconds
                let neighbors = index.range(queryCodes[q], radius: bits)
                acc.searchNanoseconds += DispatchTime.now().uptimeNanoseconds - start
                let label = queryLabels[q]
                var ranking = TiedRanking(count: .init(repeating: 0, count: bits + 1), relevant: .init(repeating: 0, count: bits + 1))
                for nb in neighbors {
                    ranking.count[nb.distance] += 1
                    if galleryLabels[Int(nb.id)] == label { ranking.relevant[nb.distance] += 1 }
                }
                let pairDistance = queryPairs?[q].flatMap { p in
                    p >= 0 && p < galleryCodes.count ? queryCodes[q].distance(to: galleryCodes[p]) : nil
                }
                acc.add(ranking, label: label, pairDistance: pairDistance)
            }
        }
        return acc.report(queries: queryCodes.count, gallery: galleryCodes.count, classNames: classNames)
    }
}

/// Running sums over queries.
struct Accumulator {
    let bits: Int
    var apSum = 0.0, apCount = 0, withoutRelevant = 0
    var precisionSums: [Int: Double] = [:]
    var classAP: [Int: (sum: Double, count: Int)] = [:]
    var acc1 = 0.0, acc10 = 0.0, paired = 0
    var prPrecision: [Double], prPrecisionCount: [Int], prRecall: [Double]
    var searchNanoseconds: UInt64 = 0

    init(bits: Int) {
        self.bits = bits
        prPrecision = .init(repeating: 0, count: bits + 1)
        prPrecisionCount = .init(repeating: 0, count: bits + 1)
        prRecall = .init(repeating: 0, count: bits + 1)
    }

    mutating func add(_ ranking: TiedRanking, label: Int, pairDistance: Int?) {
        if let d = pairDistance {
            acc1 += ranking.probabilityWithin(1, distance: d)
            acc10 += ranking.probabilityWithin(10, distance: d)
            paired += 1
        }
        guard let ap = ranking.averagePrecision() else { withoutRelevant += 1; return }
        apSum += ap
        apCount += 1
        classAP[label, default: (0, 0)].sum += ap
        classAP[label, default: (0, 0)].count += 1
        for k in Retrieval.cutoffs { precisionSums[k, default: 0] += ranking.precision(at: k) }
        let totalRelevant = Double(ranking.totalRelevant)
        var retrieved = 0, hits = 0
        for t in 0...bits {
            retrieved += ranking.count[t]
            hits += ranking.relevant[t]
            if retrieved > 0 {
                prPrecision[t] += Double(hits) / Double(retrieved)
                prPrecisionCount[t] += 1
            }
            prRecall[t] += Double(hits) / totalRelevant
        }
    }

    func report(queries: Int, gallery: Int, classNames: [String]) -> RetrievalReport {
        let n = Double(max(apCount, 1))
        var perClass: [String: Double] = [:]
        for (label, s) in classAP {
            perClass[label < classNames.count ? classNames[label] : "class \(label)"] = s.sum / Double(s.count)
        }
        let curve = (0...bits).map { t in
            PRPoint(radius: t, precision: prPrecisionCount[t] > 0 ? prPrecision[t] / Double(prPrecisionCount[t]) : 0,
                    recall: prRecall[t] / n)
        }
        var pk: [String: Double] = [:]
        for k in Retrieval.cutoffs { pk[String(k)] = (precisionSums[k] ?? 0) / n }
        return RetrievalReport(
            mapAll: apSum / n, precisionAt200: pk["200"] ?? 0, precisionAtK: pk, queries: queries, gallery: gallery,
            queriesWithoutRelevant: withoutRelevant, bits: bits, ties: RetrievalReport.tieDescription, prCurve: curve,
            acc1: paired > 0 ? acc1 / Double(paired) : nil, acc10: paired > 0 ? acc10 / Double(paired) : nil,
            pairedQueries: paired, searchMsPerQuery: queries > 0 ? Double(searchNanoseconds) / 1e6 / Double(queries) : 0,
            encodeMsPerQuery: nil, encodeMsPerImage: nil, perClassAP: perClass, method: "codes", skippedUnreadable: 0)
    }
}
