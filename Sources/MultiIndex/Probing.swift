import HammingCode

// What k-NN and range probing share: the query's substrings, the probe of one table at one
// substring radius with its verification and first-encounter rule, and the enumeration of
// the substring values at a radius.
extension MultiIndex {
    /// The query's substring in each table (`layout.count` values).
    func substrings(of q: UnsafePointer<UInt64>) -> [UInt32] {
        var qsub = [UInt32](repeating: 0, count: layout.count)
        for j in 0..<layout.count { qsub[j] = layout.substring(j, of: q) }
        return qsub
    }

    /// Probes table j at substring radius s: looks up every bucket at exactly s bits from
    /// the query's substring `qsub[j]` and verifies each live candidate in it. `wants`
    /// gets the candidate's full distance to `q` and its position and says whether the
    /// search still wants it; `keep` then gets the same two if this probe is the item's
    /// first encounter (`firstEncounter`), so that each item is kept at most once per
    /// query. Counts probes and candidates in `stats`.
    ///
    /// `limits`: the substring radius each table is probed to (a range search), or nil
    /// (a k-NN search, which probes every table at every radius until it stops).
    @inline(__always)
    func probe(table j: Int, radius s: Int, query q: UnsafePointer<UInt64>, qsub: [UInt32], limits: [Int]?,
               stats: inout SearchStats,
               wants: (_ distance: Int, _ position: Int) -> Bool, keep: (_ distance: Int, _ position: Int) -> Void) {
        let words = codes.words
        enumerateValues(qsub[j], bits: layout.sizes[j], radius: s) { v in
            stats.probes += 1
            forEachCandidate(table: j, value: v) { pos in
                stats.candidates += 1
                guard codes.isLive(position: Int(pos)) else { return }
                let p = codes.pointer(position: Int(pos))
                let d = hammingDistance(p, q, words: words)
                guard wants(d, Int(pos)), layout.substring(j, of: p) == v,
                      firstEncounter(p, qsub: qsub, table: j, radius: s, limits: limits) else { return }
                keep(d, Int(pos))
            }
        }
    }

    /// Whether (radius, table) is the first probe that reaches this item: no other table
    /// j' has (d_j', j') < (radius, table) among the probes made (d_j' ≤ limits[j']).
    /// A stale entry never gets here: the caller first checks that the bucket is the
    /// item's current substring.
    @inline(__always)
    private func firstEncounter(_ p: UnsafePointer<UInt64>, qsub: [UInt32], table: Int, radius s: Int, limits: [Int]?) -> Bool {
        for j in 0..<layout.count where j != table {
            let dj = (layout.substring(j, of: p) ^ qsub[j]).nonzeroBitCount
            if let limits, dj > limits[j] { continue }
            if dj < s || (dj == s && j < table) { return false }
        }
        return true
    }

    /// Calls `body` with every `bits`-bit value at Hamming distance exactly `radius`
    /// from `center` (Gosper's hack over masks with `radius` bits set).
    @inline(__always)
    private func enumerateValues(_ center: UInt32, bits: Int, radius: Int, _ body: (UInt32) -> Void) {
        if radius == 0 { body(center); return }
        if radius > bits { return }
        let limit = UInt64(1) << UInt64(bits)
        var mask = (UInt64(1) << UInt64(radius)) - 1
        while mask < limit {
            body(center ^ UInt32(truncatingIfNeeded: mask))
            let c = mask & (~mask &+ 1)
            let r = mask &+ c
            mask = (((r ^ mask) >> 2) / c) | r
        }
    }

    /// Calls `body` with each position in bucket v of table j: the base table's, then the
    /// delta's (stale entries included; `probe` verifies them).
    @inline(__always)
    private func forEachCandidate(table j: Int, value v: UInt32, _ body: (UInt32) -> Void) {
        tables[j].forEach(v, body)
        if deltaEntries > 0 { delta[j].forEach(v, body) }
    }
}
