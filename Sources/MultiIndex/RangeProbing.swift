// Exact range search by multi-index probing.
extension MultiIndex {
    /// Exact range search for radius r = q·m + a (0 ≤ a < m): tables 0…a are probed up to
    /// substring radius q and the others up to q−1. A missed item would have d_i ≥ q+1
    /// in a+1 tables and d_i ≥ q in the rest: distance ≥ q·m + a + 1 > r.
    ///
    /// Returns nil when `mayGiveUp` and the planner predicts, before or while probing,
    /// that it costs more than a linear scan.
    func rangeByProbing(_ qp: UnsafePointer<UInt64>, radius r: Int, stats: inout SearchStats, mayGiveUp: Bool) -> [UInt64]? {
        let m = layout.count
        let q = r / m, a = r % m
        var limits = [Int](repeating: 0, count: m)
        for j in 0..<m { limits[j] = min(layout.sizes[j], j <= a ? q : q - 1) }
        if mayGiveUp && rangeProbingCostsMore(limits: limits) { return nil }
        let qsub = substrings(of: qp)
        var keys = [UInt64]()
        // Probing is abandoned for a scan once it has cost twice what the scan would.
        let budget = mayGiveUp ? scanCost * 2 : .infinity
        let maxLimit = limits.max() ?? -1
        if maxLimit < 0 { return [] }
        for s in 0...maxLimit {
            stats.radius = s
            for j in 0..<m where s <= limits[j] {
                probe(table: j, radius: s, query: qp, qsub: qsub, limits: limits, stats: &stats,
                      wants: { d, _ in d <= r },
                      keep: { d, pos in keys.append(TopK.key(d, codes.id(atPosition: pos))) })
                if Double(stats.probes) * costs.probe + Double(stats.candidates) * costs.candidate > budget { return nil }
            }
        }
        keys.sort()
        return keys
    }
}
