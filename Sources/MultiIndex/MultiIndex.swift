import CHammingKernels
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

/// Exact Hamming k-NN and range search over codes held in a `CodeArray`, by
/// multi-index hashing (Norouzi, Punjani, Fleet) or by a linear popcount scan.
///
/// Symbols follow the papers: b bits per code, m substrings (tables), N items,
/// K neighbours, r a radius, s the substring radius being probed.
///
/// Each table j is direct-addressed: `offsets[v] ..< offsets[v+1]` index the code
/// positions (see `CodeArray`) whose substring j equals v, in ascending order. Items added
/// or changed since the last `rebuild` live in a small per-table delta map; entries whose
/// item has since been changed or deleted are stale and are recognised at verification
/// (the position's current substring no longer equals the bucket's value, or it is a
/// hole), so answers stay exact at all times. A rebuild also compacts the positions, so
/// that scans and tables cost the live items only; results always carry ids.
///
/// Not synchronised: any number of concurrent searches, or one mutation, at a time.
public final class MultiIndex {
    public let codes: CodeArray
    public var width: CodeWidth { codes.width }
    /// The substring split (m = layout.count).
    public private(set) var layout: SubstringLayout
    /// The operator's fixed m, or nil to choose m from N at every rebuild.
    public var fixedM: Int?
    public var planner: PlannerMode = .automatic
    public var costs = PlannerCosts()

    private var tables: [BaseTable]
    private var delta: [DeltaTable]
    /// Entries in the delta maps (stale ones included).
    public private(set) var deltaEntries: Int = 0
    /// Bit p set when position p may have entries in some table. A position without them
    /// is appended to the delta directly, without looking for an existing entry.
    private var mayHaveEntries: [UInt64] = []
    /// True while every change since the tables were built was the add of a new id (no
    /// replace, no remove): the tables then hold no stale entry, and a fold may merge the
    /// new positions into them instead of building them again (`BaseTable.merged`).
    private var appendOnly = true

    /// Creates an empty index. `m` nil chooses m automatically.
    public init(width: CodeWidth, m: Int? = nil) throws {
        codes = CodeArray(width: width)
        fixedM = m
        let mm = m ?? SubstringLayout.automaticCount(for: width, items: 0)
        layout = try SubstringLayout(width: width, count: mm)
        tables = layout.sizes.map { BaseTable(bits: $0) }
        delta = layout.sizes.map { DeltaTable(bits: $0) }
    }

    public var count: Int { codes.liveCount }
    public var m: Int { layout.count }

    // MARK: - Mutation

    /// Adds a new id or replaces the code of a live one.
    public func upsert(_ id: UInt32, _ code: HammingCode) {
        if codes.set(id, code) { appendOnly = false }
        indexInDelta(position: codes.position(of: id)!)
    }

    /// Deletes an id; returns whether it was live. Its position becomes a hole and its
    /// table entries stale, until the next rebuild.
    @discardableResult
    public func remove(_ id: UInt32) -> Bool {
        let was = codes.remove(id)
        if was { appendOnly = false }
        return was
    }

    /// Makes sure every table can find live position `i` under its current code: adds a
    /// delta entry for each table whose bucket does not already hold it.
    func indexInDelta(position i: Int) {
        guard codes.isLive(position: i) else { return }
        let p = codes.pointer(position: i)
        let id = UInt32(i)
        if i >> 6 >= mayHaveEntries.count {
            mayHaveEntries.append(contentsOf: repeatElement(0, count: max(i >> 6 + 1, mayHaveEntries.count * 2) - mayHaveEntries.count))
        }
        let known = (mayHaveEntries[i >> 6] >> UInt64(i & 63)) & 1 == 1
        for j in 0..<layout.count {
            let v = layout.substring(j, of: p)
            // Each (bucket, id) pair is held once: the first-encounter rule depends on it.
            if known && (tables[j].contains(v, id) || delta[j].contains(v, id)) { continue }
            delta[j].append(v, id)
            deltaEntries += 1
        }
        mayHaveEntries[i >> 6] |= UInt64(1) << UInt64(i & 63)
    }

    /// Marks every position as possibly having entries (after loading tables from
    /// storage), or exactly the live ones (after a rebuild).
    private func resetEntryMarks(allSlots: Bool) {
        let n = codes.positionCount
        mayHaveEntries = [UInt64](repeating: 0, count: n / 64 + 1)
        if allSlots {
            for i in 0..<n { mayHaveEntries[i >> 6] |= UInt64(1) << UInt64(i & 63) }
        } else {
            codes.storage.forEachLivePosition { i in mayHaveEntries[i >> 6] |= UInt64(1) << UInt64(i & 63) }
        }
    }

    /// Rebuilds every table from the live codes (folding in the delta), with a new m
    /// if given, else the fixed m, else m chosen from N and b.
    public func rebuild(m newM: Int? = nil) throws {
        install(try prepareTables(m: newM))
    }

    /// New tables built from the current codes, not yet in use, with the compacted code
    /// positions they refer to (when the current ones had holes or were out of id order).
    public struct PreparedTables {
        public let layout: SubstringLayout
        fileprivate let tables: [BaseTable]
        fileprivate let compacted: CodeStorage?
        fileprivate let view: CodeStorage
        /// The base table j: offsets (2^size + 1) and the positions of its entries, which
        /// `idAtPosition` turns into ids. Valid while this value lives and the index is
        /// not mutated.
        public func table(_ j: Int) -> (offsets: UnsafeBufferPointer<UInt32>, ids: UnsafeBufferPointer<UInt32>) {
            tables[j].buffers
        }
        /// The id at each position of the tables (as `table`, valid while this value lives).
        public var idAtPosition: UnsafePointer<UInt32> { UnsafePointer(view.ids) }
    }

    /// Builds tables from the live codes with m = `newM`, else the fixed m, else m
    /// chosen from N and b, over compacted positions. Only reads the codes: may run beside
    /// searches, but not beside a mutation. `install` then swaps them in.
    public func prepareTables(m newM: Int? = nil) throws -> PreparedTables {
        let mm = newM ?? fixedM ?? SubstringLayout.automaticCount(for: width, items: count)
        let newLayout = try SubstringLayout(width: width, count: mm)
        let compacted = codes.compacted()
        let view = compacted ?? codes.storage
        return PreparedTables(layout: newLayout, tables: MultiIndex.buildTables(view, newLayout), compacted: compacted, view: view)
    }

    /// The base tables of a layout over the codes at the positions of `storage`.
    fileprivate static func buildTables(_ storage: CodeStorage, _ layout: SubstringLayout) -> [BaseTable] {
        (0..<layout.count).map { BaseTable.build(codes: storage, layout: layout, table: $0) }
    }

    /// The live codes copied at dense positions in ascending id order, with the layout to
    /// build tables for: what a fold beside mutations builds from. Made on the mutator's
    /// side (it reads the codes); `build()` then runs on any thread, touching only the copy,
    /// while the index goes on changing; `install(_:changedSince:)` puts the result in use.
    public final class TableSnapshot: @unchecked Sendable {
        public let layout: SubstringLayout
        fileprivate let storage: CodeStorage
        /// The tables in use when the copy was taken, when they cover exactly its first
        /// positions with no stale entry (only new ids added since they were built, at the
        /// same positions in the copy): `build` then merges the later positions into them.
        fileprivate let mergeBase: [BaseTable]?
        fileprivate init(layout: SubstringLayout, storage: CodeStorage, mergeBase: [BaseTable]?) {
            self.layout = layout
            self.storage = storage
            self.mergeBase = mergeBase
        }

        /// Builds the tables over the copy (any thread; reads nothing of the index but the
        /// old tables, which are never changed).
        public func build() -> PreparedTables {
            let tables = mergeBase.map { base in
                (0..<layout.count).map { BaseTable.merged(base[$0], codes: storage, layout: layout, table: $0) }
            } ?? MultiIndex.buildTables(storage, layout)
            return PreparedTables(layout: layout, tables: tables, compacted: storage, view: storage)
        }

        /// Whether `build` merges into the old tables (tests and fold timings).
        public var merges: Bool { mergeBase != nil }
    }

    /// A snapshot for `TableSnapshot.build()` with m = `newM`, else the fixed m, else m
    /// chosen from N and b. Copies the live codes (the mutator's side).
    public func snapshotForTables(m newM: Int? = nil) throws -> TableSnapshot {
        let mm = newM ?? fixedM ?? SubstringLayout.automaticCount(for: width, items: count)
        let newLayout = try SubstringLayout(width: width, count: mm)
        // Merging needs the copy's first positions to be the tables' own: no holes, in id
        // order, every table covering the same prefix, and nothing replaced or removed.
        let base = tables.first?.count ?? 0
        let merge = appendOnly && codes.ordered && codes.holes == 0 && newLayout.sizes == layout.sizes
            && base <= codes.positionCount && tables.allSatisfy { $0.count == base }
        return TableSnapshot(layout: newLayout, storage: codes.denseCopy(), mergeBase: merge ? tables : nil)
    }

    /// Puts tables built from a snapshot in use. `changed` holds every id added, replaced
    /// or removed since the snapshot (each at least once): their current state is carried
    /// over to the snapshot's positions (a new id takes the next position, a removed one
    /// leaves a hole) and indexed in the delta; the tables' entries of their old codes are
    /// stale, as after any change.
    /// What `install(_:changedSince:)` replaced: drop it outside the owner's locks, since
    /// freeing the old codes and tables takes a while at millions of items.
    public final class Retired {
        fileprivate let parts: [AnyObject]
        fileprivate let arrays: ([BaseTable], [DeltaTable], [UInt64])
        fileprivate init(parts: [AnyObject], arrays: ([BaseTable], [DeltaTable], [UInt64])) {
            self.parts = parts
            self.arrays = arrays
        }
    }

    @discardableResult
    public func install(_ prepared: PreparedTables, changedSince changed: some Sequence<UInt32>) -> Retired {
        let retired = Retired(parts: [codes.storage], arrays: (tables, delta, mayHaveEntries))
        let s = prepared.view
        precondition(prepared.compacted === s, "tables not built from a snapshot")
        // Positions that have entries in the new tables: the snapshot's, all live.
        let snapshotCount = s.count
        var marks = [UInt64](repeating: ~0, count: snapshotCount / 64 + 1)
        marks[snapshotCount / 64] = snapshotCount % 64 == 0 ? 0 : (UInt64(1) << UInt64(snapshotCount % 64)) - 1
        var touched: [Int] = []
        var live = snapshotCount
        var stillAppendOnly = true
        // In ascending id order, so that new ids (above every id of the snapshot) take
        // positions in id order and the positions stay ordered.
        for id in changed.sorted() {
            if let p = codes.position(of: id) {
                let src = codes.pointer(position: p)
                if let q = s.position(of: id) {
                    (s.codes + q * s.words).update(from: src, count: s.words)
                    touched.append(q)
                    stillAppendOnly = false
                } else {
                    s.append(id, src)
                    live += 1
                    touched.append(s.count - 1)
                }
            } else if let q = s.position(of: id), s.isLive(position: q) {
                s.clear(position: q)
                live -= 1
                stillAppendOnly = false
            }
        }
        codes.adopt(changed: s, live: live)
        layout = prepared.layout
        tables = prepared.tables
        generation += 1
        delta = prepared.layout.sizes.map { DeltaTable(bits: $0) }
        deltaEntries = 0
        mayHaveEntries = marks
        appendOnly = stillAppendOnly
        for p in touched { indexInDelta(position: p) }
        return retired
    }

    /// Puts prepared tables (and their compacted positions) in use and empties the delta.
    /// The codes must not have changed since `prepareTables`.
    public func install(_ prepared: PreparedTables) {
        if let s = prepared.compacted { codes.adopt(s) }
        precondition(prepared.view === codes.storage, "prepared tables are out of date")
        layout = prepared.layout
        tables = prepared.tables
        generation += 1
        delta = prepared.layout.sizes.map { DeltaTable(bits: $0) }
        deltaEntries = 0
        appendOnly = true
        resetEntryMarks(allSlots: false)
    }

    /// Replaces the tables with ones loaded from storage (offsets and ids per table),
    /// then indexes the given ids (changed since those tables were written) in the delta.
    /// Compacts the positions first; entries of ids that are not live are dropped.
    public func load(layout newLayout: SubstringLayout,
                     tables loaded: [(offsets: [UInt32], ids: [UInt32])],
                     pending: some Sequence<UInt32>) throws {
        precondition(loaded.count == newLayout.count)
        if let s = codes.compacted() { codes.adopt(s) }
        var newTables = [BaseTable]()
        for (j, t) in loaded.enumerated() {
            guard t.offsets.count == (1 << newLayout.sizes[j]) + 1, t.offsets.first == 0,
                  Int(t.offsets[t.offsets.count - 1]) == t.ids.count else {
                throw BaseTable.Malformed(description: "stored table \(j) has a malformed offset array")
            }
            var offsets = [UInt32](repeating: 0, count: t.offsets.count)
            var positions = [UInt32]()
            positions.reserveCapacity(t.ids.count)
            for v in 0..<(t.offsets.count - 1) {
                let lo = Int(t.offsets[v]), hi = Int(t.offsets[v + 1])
                guard lo <= hi else { throw BaseTable.Malformed(description: "stored table \(j) offsets decrease at \(v)") }
                for i in lo..<hi {
                    if let p = codes.position(of: t.ids[i]) { positions.append(UInt32(p)) }
                }
                offsets[v + 1] = UInt32(positions.count)
            }
            newTables.append(try BaseTable(bits: newLayout.sizes[j], offsets: offsets, ids: positions))
        }
        layout = newLayout
        tables = newTables
        generation += 1
        delta = newLayout.sizes.map { DeltaTable(bits: $0) }
        deltaEntries = 0
        appendOnly = false
        resetEntryMarks(allSlots: true)
        for id in pending {
            if let p = codes.position(of: id) { indexInDelta(position: p) }
        }
    }


    // MARK: - Consistency

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

    /// Bumped whenever the tables are replaced (a fold or a load), so that a check in
    /// pieces knows to start its table pass again.
    private var generation = 0

    /// `check()` in pieces, for running beside mutations: each call looks at about `budget`
    /// table entries or ids and must hold the owner's read lock for its duration; between
    /// calls the index may change. Table entries are checked against the tables of one
    /// generation (a fold in between starts that pass again); items are checked by id, each
    /// against the tables as they are at its call. Returns true when done.
    public func checkStep(_ p: inout CheckProgress, budget: Int) throws -> Bool {
        if !p.tablesDone {
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
                    let v = p.bucket
                    let lo = Int(offsets[v]), hi = Int(offsets[v + 1])
                    guard lo <= hi else { throw Inconsistency(description: "table \(j) offsets decrease at \(v)") }
                    var prev: Int64 = -1
                    for i in lo..<hi {
                        let q = Int(ids[i])
                        guard Int64(q) > prev, q < codes.positionCount else {
                            throw Inconsistency(description: "table \(j) bucket \(v) is not in ascending position order")
                        }
                        prev = Int64(q)
                        if !codes.isLive(position: q) || layout.substring(j, of: codes.pointer(position: q)) != UInt32(v) { p.stale += 1 }
                    }
                    left -= max(1, hi - lo)
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
            return false
        }
        let end = p.id + min(codes.storage.idCapacity - p.id, budget)
        while p.id < end {
            let id = UInt32(p.id)
            p.id += 1
            guard let i = codes.position(of: id) else { continue }
            let ptr = codes.pointer(position: i)
            for j in 0..<layout.count {
                let v = layout.substring(j, of: ptr)
                if !tables[j].contains(v, UInt32(i)) && !delta[j].contains(v, UInt32(i)) {
                    throw Inconsistency(description: "item \(id) is missing from table \(j)")
                }
            }
        }
        return p.id >= codes.storage.idCapacity
    }

    // MARK: - Search

    /// The K nearest live items to `query`, ordered by (distance, id); exact.
    public func knn(_ query: HammingCode, k: Int, stats: inout SearchStats) -> [Neighbor] {
        knnPacked(query, k: k, stats: &stats).map(Neighbor.init(packed:))
    }

    /// `knn` as packed results `distance << 32 | id`, ascending (8 bytes a result).
    public func knnPacked(_ query: HammingCode, k: Int, stats: inout SearchStats) -> [UInt64] {
        precondition(query.width == width, "query width does not match the index")
        guard k > 0, count > 0 else { stats.path = .linearScan; return [] }
        return query.words.withUnsafeBufferPointer { qp in
            let q = qp.baseAddress!
            if planner != .linearScan, codes.positionCount > 64 {
                if let r = knnByProbing(q, k: k, stats: &stats, mayGiveUp: planner == .automatic) {
                    stats.path = .multiIndex
                    return r
                }
                stats.switchedToScan = true
            }
            stats.path = .linearScan
            return knnByScan(q, k: k)
        }
    }

    public func knn(_ query: HammingCode, k: Int) -> [Neighbor] {
        var s = SearchStats()
        return knn(query, k: k, stats: &s)
    }

    /// Every live item within distance ≤ r of `query`, ordered by (distance, id); exact.
    public func range(_ query: HammingCode, radius r: Int, stats: inout SearchStats) -> [Neighbor] {
        rangePacked(query, radius: r, stats: &stats).map(Neighbor.init(packed:))
    }

    /// `range` as packed results `distance << 32 | id`, ascending: 8 bytes a result, the
    /// form a large answer is kept in while it is written out.
    public func rangePacked(_ query: HammingCode, radius r: Int, stats: inout SearchStats) -> [UInt64] {
        precondition(query.width == width, "query width does not match the index")
        guard r >= 0, count > 0 else { stats.path = .linearScan; return [] }
        let r = min(r, width.bits)
        return query.words.withUnsafeBufferPointer { qp in
            let q = qp.baseAddress!
            if planner != .linearScan, codes.positionCount > 64 {
                if let res = rangeByProbing(q, radius: r, stats: &stats, mayGiveUp: planner == .automatic) {
                    stats.path = .multiIndex
                    return res
                }
                stats.switchedToScan = true
            }
            stats.path = .linearScan
            return rangeByScan(q, radius: r)
        }
    }

    public func range(_ query: HammingCode, radius r: Int) -> [Neighbor] {
        var s = SearchStats()
        return range(query, radius: r, stats: &s)
    }

    // MARK: Linear scan

    private static let block = 4096

    func knnByScan(_ q: UnsafePointer<UInt64>, k: Int) -> [UInt64] {
        var top = TopK(k: k)
        let words = codes.words, n = codes.positionCount, bits = width.bits
        let ordered = codes.ordered
        let idx = UnsafeMutablePointer<UInt32>.allocate(capacity: Self.block)
        let dist = UnsafeMutablePointer<UInt16>.allocate(capacity: Self.block)
        defer { idx.deallocate(); dist.deallocate() }
        var start = 0
        while start < n {
            let len = min(Self.block, n - start)
            // When ids ascend with the scan, once K are kept a later item must be strictly
            // nearer than the K-th to enter: ties go to the older id.
            var threshold = bits
            if top.isFull {
                let w = top.worstDistance
                if ordered {
                    if w == 0 { break }
                    threshold = w - 1
                } else {
                    threshold = w
                }
            }
            let got = gdh_scan_leq(codes.base + start * words, words, len, q, UInt32(threshold), idx, dist)
            for i in 0..<got {
                let p = start + Int(idx[i])
                guard codes.isLive(position: p) else { continue }
                let key = TopK.key(Int(dist[i]), codes.id(atPosition: p))
                if top.accepts(key) { top.insert(key) }
            }
            start += len
        }
        return top.sortedPacked()
    }

    func rangeByScan(_ q: UnsafePointer<UInt64>, radius r: Int) -> [UInt64] {
        var keys = [UInt64]()
        let words = codes.words, n = codes.positionCount
        let idx = UnsafeMutablePointer<UInt32>.allocate(capacity: Self.block)
        let dist = UnsafeMutablePointer<UInt16>.allocate(capacity: Self.block)
        defer { idx.deallocate(); dist.deallocate() }
        var start = 0
        while start < n {
            let len = min(Self.block, n - start)
            let got = gdh_scan_leq(codes.base + start * words, words, len, q, UInt32(r), idx, dist)
            for i in 0..<got {
                let p = start + Int(idx[i])
                if codes.isLive(position: p) { keys.append(TopK.key(Int(dist[i]), codes.id(atPosition: p))) }
            }
            start += len
        }
        keys.sort()
        return keys
    }

    private var scanCost: Double {
        Double(codes.positionCount * codes.words) * costs.scanPerWord
    }

    // MARK: Multi-index probing

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
        var qsub = [UInt32](repeating: 0, count: m)
        for j in 0..<m { qsub[j] = layout.substring(j, of: q) }
        let maxSize = layout.sizes.max() ?? 0
        var top = TopK(k: k)
        let words = codes.words
        let n = Double(count)
        for s in 0...maxSize {
            if mayGiveUp && s > 0 && shouldGiveUp(level: s, top: top, k: k, n: n, stats: stats) {
                return nil
            }
            stats.radius = s
            for j in 0..<m {
                let size = layout.sizes[j]
                if s <= size {
                    enumerateValues(qsub[j], bits: size, radius: s) { v in
                        stats.probes += 1
                        forEachCandidate(table: j, value: v) { pos in
                            stats.candidates += 1
                            guard codes.isLive(position: Int(pos)) else { return }
                            let p = codes.pointer(position: Int(pos))
                            let key = TopK.key(hammingDistance(p, q, words: words), codes.id(atPosition: Int(pos)))
                            guard top.accepts(key) else { return }
                            guard layout.substring(j, of: p) == v,
                                  firstEncounter(p, qsub: qsub, table: j, radius: s, limits: nil) else { return }
                            top.insert(key)
                        }
                    }
                }
                if top.isFull && top.worstDistance <= s * m + j { return top.sortedPacked() }
            }
        }
        return top.sortedPacked()
    }

    /// Exact range search for radius r = q·m + a (0 ≤ a < m): tables 0…a are probed up to
    /// substring radius q and the others up to q−1. A missed item would have d_i ≥ q+1
    /// in a+1 tables and d_i ≥ q in the rest: distance ≥ q·m + a + 1 > r.
    func rangeByProbing(_ qp: UnsafePointer<UInt64>, radius r: Int, stats: inout SearchStats, mayGiveUp: Bool) -> [UInt64]? {
        let m = layout.count
        let q = r / m, a = r % m
        var limits = [Int](repeating: 0, count: m)
        for j in 0..<m { limits[j] = min(layout.sizes[j], j <= a ? q : q - 1) }
        if mayGiveUp {
            var probes = 0.0, cands = 0.0
            for j in 0..<m where limits[j] >= 0 {
                var p = 0.0
                for s in 0...limits[j] { p += binomial(layout.sizes[j], s) }
                probes += p
                cands += p * Double(count) / Double(1 << layout.sizes[j])
            }
            if probes * costs.probe + cands * costs.candidate > scanCost { return nil }
        }
        var qsub = [UInt32](repeating: 0, count: m)
        for j in 0..<m { qsub[j] = layout.substring(j, of: qp) }
        var keys = [UInt64]()
        let words = codes.words
        let budget = mayGiveUp ? scanCost * 2 : .infinity
        let maxLimit = limits.max() ?? -1
        if maxLimit < 0 { return [] }
        var gaveUp = false
        levels: for s in 0...maxLimit {
            stats.radius = s
            for j in 0..<m where s <= limits[j] {
                enumerateValues(qsub[j], bits: layout.sizes[j], radius: s) { v in
                    stats.probes += 1
                    forEachCandidate(table: j, value: v) { pos in
                        stats.candidates += 1
                        guard codes.isLive(position: Int(pos)) else { return }
                        let p = codes.pointer(position: Int(pos))
                        let d = hammingDistance(p, qp, words: words)
                        guard d <= r, layout.substring(j, of: p) == v,
                              firstEncounter(p, qsub: qsub, table: j, radius: s, limits: limits) else { return }
                        keys.append(TopK.key(d, codes.id(atPosition: Int(pos))))
                    }
                }
                if Double(stats.probes) * costs.probe + Double(stats.candidates) * costs.candidate > budget {
                    gaveUp = true
                    break levels
                }
            }
        }
        if gaveUp { return nil }
        keys.sort()
        return keys
    }

    /// Whether (radius, table) is the first probe that reaches this item: no other table
    /// j' has (d_j', j') < (radius, table) among the probes made (d_j' ≤ limits[j']).
    @inline(__always)
    private func firstEncounter(_ p: UnsafePointer<UInt64>, qsub: [UInt32], table: Int, radius s: Int, limits: [Int]?) -> Bool {
        for j in 0..<layout.count where j != table {
            let dj = (layout.substring(j, of: p) ^ qsub[j]).nonzeroBitCount
            if let limits, dj > limits[j] { continue }
            if dj < s || (dj == s && j < table) { return false }
        }
        return true
    }

    /// Before probing level s: estimates the cost of the levels still needed and
    /// compares it with a scan. The K-th distance found so far bounds the final
    /// K-th distance from above, so no level past floor(that / m) is ever needed.
    private func shouldGiveUp(level s: Int, top: TopK, k: Int, n: Double, stats: SearchStats) -> Bool {
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

    @inline(__always)
    private func forEachCandidate(table j: Int, value v: UInt32, _ body: (UInt32) -> Void) {
        tables[j].forEach(v, body)
        if deltaEntries > 0 { delta[j].forEach(v, body) }
    }
}

/// C(n, k) as a Double, for cost estimates.
func binomial(_ n: Int, _ k: Int) -> Double {
    if k < 0 || k > n { return 0 }
    var r = 1.0
    for i in 0..<min(k, n - k) { r = r * Double(n - i) / Double(i + 1) }
    return r
}
