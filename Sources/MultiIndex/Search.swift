import HammingCode

/// Which search path answered a query.
public enum SearchPath: String, Sendable {
    case multiIndex = "mih"
    case linearScan = "scan"
}

/// How the planner may answer a query.
public enum PlannerMode: String, Sendable, CaseIterable {
    /// Estimate both costs and take the cheaper one (the default).
    case automatic = "auto"
    /// Always probe the multi-index tables.
    case multiIndex = "mih"
    /// Always scan every code.
    case linearScan = "scan"
}

/// What one query did; returned with every answer.
public struct SearchStats: Sendable, Equatable {
    public var path: SearchPath = .multiIndex
    /// Bucket look-ups made in the tables.
    public var probes: Int = 0
    /// Ids read from posting lists (before de-duplication).
    public var candidates: Int = 0
    /// The substring radius the probing reached.
    public var radius: Int = 0
    /// True when probing was started and then abandoned for a scan.
    public var switchedToScan: Bool = false
    public init() {}
}

/// Costs, in nanoseconds, with which the planner compares the two paths.
/// Measured on the development machine (Docs/design.md); only their ratios matter.
public struct PlannerCosts: Sendable {
    /// Scanning one 64-bit word of codes (memory bandwidth bound).
    public var scanPerWord: Double = 0.35
    /// One bucket look-up, including enumerating its substring value.
    public var probe: Double = 12
    /// Reading and checking one candidate id from a posting list.
    public var candidate: Double = 6
    public init() {}
}

// The public search API: each form checks its arguments and goes through `search`, which
// picks the path; the `Neighbor` forms unpack the packed ones.
extension MultiIndex {
    /// The K nearest live items to `query`, ordered by (distance, id); exact.
    public func knn(_ query: HammingCode, k: Int, stats: inout SearchStats) -> [Neighbor] {
        knnPacked(query, k: k, stats: &stats).map(Neighbor.init(packed:))
    }

    public func knn(_ query: HammingCode, k: Int) -> [Neighbor] {
        var s = SearchStats()
        return knn(query, k: k, stats: &s)
    }

    /// `knn` as packed results `distance << 32 | id`, ascending (8 bytes a result).
    public func knnPacked(_ query: HammingCode, k: Int, stats: inout SearchStats) -> [UInt64] {
        precondition(query.width == width, "query width does not match the index")
        guard k > 0, count > 0 else { stats.path = .linearScan; return [] }
        return search(query, stats: &stats,
                      byProbing: { knnByProbing($0, k: k, stats: &$1, mayGiveUp: $2) },
                      byScan: { scan.knnPacked(words: $0, k: k) })
    }

    /// Every live item within distance ≤ r of `query`, ordered by (distance, id); exact.
    public func range(_ query: HammingCode, radius r: Int, stats: inout SearchStats) -> [Neighbor] {
        rangePacked(query, radius: r, stats: &stats).map(Neighbor.init(packed:))
    }

    public func range(_ query: HammingCode, radius r: Int) -> [Neighbor] {
        var s = SearchStats()
        return range(query, radius: r, stats: &s)
    }

    /// `range` as packed results `distance << 32 | id`, ascending: 8 bytes a result, the
    /// form a large answer is kept in while it is written out.
    public func rangePacked(_ query: HammingCode, radius r: Int, stats: inout SearchStats) -> [UInt64] {
        precondition(query.width == width, "query width does not match the index")
        guard r >= 0, count > 0 else { stats.path = .linearScan; return [] }
        let r = min(r, width.bits)
        return search(query, stats: &stats,
                      byProbing: { rangeByProbing($0, radius: r, stats: &$1, mayGiveUp: $2) },
                      byScan: { scan.rangePacked(words: $0, radius: r) })
    }

    // MARK: The planner

    /// Answers a query by probing, unless the planner says scan or there are 64 positions
    /// or fewer: `byProbing` gets the query's words, the stats and whether it may give up
    /// for a scan, and returns nil when it did. Otherwise, or after giving up, by `byScan`.
    /// Records the path taken in `stats`.
    @inline(__always)
    private func search(_ query: HammingCode, stats: inout SearchStats,
                        byProbing: (UnsafePointer<UInt64>, inout SearchStats, Bool) -> [UInt64]?,
                        byScan: (UnsafePointer<UInt64>) -> [UInt64]) -> [UInt64] {
        query.withWords { qp in
            let q = qp.baseAddress!
            if planner != .linearScan, codes.positionCount > 64 {
                if let r = byProbing(q, &stats, planner == .automatic) {
                    stats.path = .multiIndex
                    return r
                }
                stats.switchedToScan = true
            }
            stats.path = .linearScan
            return byScan(q)
        }
    }

    /// What a scan of every position costs.
    var scanCost: Double {
        Double(codes.positionCount * codes.words) * costs.scanPerWord
    }

    /// Before probing level s of a k-NN search: estimates the cost of the levels still
    /// needed and compares it with a scan. The K-th distance found so far bounds the final
    /// K-th distance from above, so no level past floor(that / m) is ever needed.
    func shouldGiveUp(level s: Int, top: TopK, k: Int, n: Double, stats: SearchStats) -> Bool {
        let m = layout.count
        let lastLevel: Int
        if top.isFull {
            lastLevel = top.worstDistance / m
            if lastLevel < s { return false }
        } else {
            lastLevel = s
        }
        var estimate = 0.0
        let observed = stats.probes > 0 ? Double(stats.candidates) / Double(stats.probes) : 0
        for level in s...lastLevel {
            for j in 0..<m where level <= layout.sizes[j] {
                let probes = binomial(layout.sizes[j], level)
                let occupancy = max(n / Double(1 << layout.sizes[j]), observed * 0.5)
                estimate += probes * (costs.probe + occupancy * costs.candidate)
            }
            if estimate > scanCost { return true }
        }
        return false
    }

    /// Before a range search: whether probing table j up to substring radius `limits[j]`
    /// (none where it is negative) is expected to cost more than a scan, counting the
    /// buckets and the items expected in them at a uniform spread.
    func rangeProbingCostsMore(limits: [Int]) -> Bool {
        var probes = 0.0, cands = 0.0
        for j in 0..<layout.count where limits[j] >= 0 {
            var p = 0.0
            for s in 0...limits[j] { p += binomial(layout.sizes[j], s) }
            probes += p
            cands += p * Double(count) / Double(1 << layout.sizes[j])
        }
        return probes * costs.probe + cands * costs.candidate > scanCost
    }
}

/// C(n, k) as a Double, for cost estimates.
func binomial(_ n: Int, _ k: Int) -> Double {
    if k < 0 || k > n { return 0 }
    var r = 1.0
    for i in 0..<min(k, n - k) { r = r * Double(n - i) / Double(i + 1) }
    return r
}
