// Exact k-NN by multi-index probing.
extension MultiIndex {
    /// Exact K-NN by probing radius s = 0, 1, … in each table in turn.
    ///
    /// Stopping rule (Norouzi et al.): after table j (0-based) at substring radius s,
    /// every item at distance ≤ s·m + j has been found. Proof: an item missed so far has
    /// d_i ≥ s+1 in tables i ≤ j and d_i ≥ s in tables i > j, so its distance is at least
    /// (j+1)(s+1) + (m−j−1)s = s·m + j + 1. Hence once K found items lie within s·m + j,
    /// the K nearest are among the found ones, ties included (every item at the K-th
    /// distance is within the bound, so ties break by id exactly as a scan would).
    ///
    /// Each item is counted once: it is accepted only at its first encounter, the
    /// lexicographically smallest (d_j, j) over tables, and only from the bucket of its
    /// current substring (a stale entry never matches).
    ///
    /// Returns nil when `mayGiveUp` and the planner predicts that finishing costs more
    /// than a linear scan.
    func knnByProbing(_ q: UnsafePointer<UInt64>, k: Int, stats: inout SearchStats, mayGiveUp: Bool) -> [UInt64]? {
        let m = layout.count
        let qsub = substrings(of: q)
        let maxSize = layout.sizes.max() ?? 0
        var top = TopK(k: k)
        let n = Double(count)
        for s in 0...maxSize {
            if mayGiveUp && s > 0 && shouldGiveUp(level: s, top: top, k: k, n: n, stats: stats) {
                return nil
            }
            stats.radius = s
            for j in 0..<m {
                if s <= layout.sizes[j] {
                    probe(table: j, radius: s, query: q, qsub: qsub, limits: nil, stats: &stats,
                          wants: { d, pos in top.accepts(TopK.key(d, codes.id(atPosition: pos))) },
                          keep: { d, pos in top.insert(TopK.key(d, codes.id(atPosition: pos))) })
                }
                if top.isFull && top.worstDistance <= s * m + j { return top.sortedPacked() }
            }
        }
        return top.sortedPacked()
    }
}
