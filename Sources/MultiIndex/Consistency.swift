// Consistency checks: every table entry names a valid position, and every live item can be
// found in every table under its current substring. Whole (`check`) or in pieces beside
// mutations (`checkStep`).
extension MultiIndex {
    /// A problem found by `check()`.
    public struct Inconsistency: Error, CustomStringConvertible {
        public let description: String
    }

    /// Checks that every live item can be found in every table under its current
    /// substring, and that every table entry names a valid position. Returns the number of
    /// stale entries (entries of deleted or changed items awaiting a rebuild).
    public func check() throws -> Int {
        var p = CheckProgress()
        while try !checkStep(&p, budget: .max) {}
        return p.stale
    }

    /// Where a `check` run in pieces (`checkStep`) has got to.
    public struct CheckProgress: Sendable {
        var table = 0, entry = 0, bucket = 0, id = 0
        var stale = 0
        var generation = -1
        var tablesDone = false
        public init() {}
        /// The stale entries counted, once `checkStep` has returned true.
        public var staleEntries: Int { stale }
    }

    /// `check()` in pieces, for running beside mutations: each call looks at about `budget`
    /// table entries or ids and must hold the owner's read lock for its duration; between
    /// calls the index may change. Table entries are checked against the tables of one
    /// generation (a fold in between starts that pass again); items are checked by id, each
    /// against the tables as they are at its call. Returns true when done.
    public func checkStep(_ p: inout CheckProgress, budget: Int) throws -> Bool {
        if !p.tablesDone {
            try checkTablesStep(&p, budget: budget)
            return false
        }
        return try checkItemsStep(&p, budget: budget)
    }

    /// The table pass of `checkStep`: about `budget` entries, bucket by bucket; counts the
    /// stale ones and sets `tablesDone` after the last table.
    private func checkTablesStep(_ p: inout CheckProgress, budget: Int) throws {
        if p.generation != generation { p = CheckProgress(); p.generation = generation }
        var left = budget
        while p.table < layout.count && left > 0 {
            let j = p.table
            let (offsets, ids) = tables[j].buffers
            if p.entry == 0 && p.bucket == 0 {
                guard offsets.count == (1 << layout.sizes[j]) + 1, offsets.last.map(Int.init) == ids.count else {
                    throw Inconsistency(description: "table \(j) has a malformed offset array")
                }
            }
            while p.bucket < offsets.count - 1 && left > 0 {
                left -= max(1, try checkBucket(p.bucket, of: j, offsets: offsets, ids: ids, stale: &p.stale))
                p.bucket += 1
            }
            if p.bucket == offsets.count - 1 {
                p.stale += delta[j].staleCount(codes: codes, layout: layout, table: j)
                p.table += 1
                p.bucket = 0
                p.entry = 0
            }
        }
        if p.table == layout.count { p.tablesDone = true }
    }

    /// Checks bucket v of base table j (ascending valid positions) and counts its stale
    /// entries into `stale`; returns how many entries it holds.
    private func checkBucket(_ v: Int, of j: Int, offsets: UnsafeBufferPointer<UInt32>, ids: UnsafeBufferPointer<UInt32>,
                             stale: inout Int) throws -> Int {
        let lo = Int(offsets[v]), hi = Int(offsets[v + 1])
        guard lo <= hi else { throw Inconsistency(description: "table \(j) offsets decrease at \(v)") }
        var prev: Int64 = -1
        for i in lo..<hi {
            let q = Int(ids[i])
            guard Int64(q) > prev, q < codes.positionCount else {
                throw Inconsistency(description: "table \(j) bucket \(v) is not in ascending position order")
            }
            prev = Int64(q)
            if !codes.isLive(position: q) || layout.substring(j, of: codes.pointer(position: q)) != UInt32(v) { stale += 1 }
        }
        return hi - lo
    }

    /// The item pass of `checkStep`: about `budget` ids (entries of the id → position map),
    /// each live one found in every table under its current substring, in ascending id
    /// order. Returns true after the last id.
    private func checkItemsStep(_ p: inout CheckProgress, budget: Int) throws -> Bool {
        let (next, done) = try codes.storage.forEachMapped(from: p.id, below: Int.max, budget: budget) { id, i in
            let ptr = codes.pointer(position: i)
            for j in 0..<layout.count {
                let v = layout.substring(j, of: ptr)
                if !tables[j].contains(v, UInt32(i)) && !delta[j].contains(v, UInt32(i)) {
                    throw Inconsistency(description: "item \(id) is missing from table \(j)")
                }
            }
        }
        p.id = next
        return done
    }
}
