import HammingCode

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
/// The class is cut into files by concern: this one holds the state and its mutation;
/// `TableBuilding.swift` the folds and loads that replace the tables; `Consistency.swift`
/// `check`; `Search.swift` the public search API and the planner; `Probing.swift`,
/// `KNNProbing.swift` and `RangeProbing.swift` the multi-index paths; the scan path is a
/// `LinearScan` over the same codes (`LinearScan.swift`).
///
/// Not synchronised: any number of concurrent searches, or one mutation, at a time.
public final class MultiIndex {
    public let codes: CodeArray
    /// The brute-force index over `codes`: the scan path of every search.
    let scan: LinearScan
    public var width: CodeWidth { codes.width }
    /// The substring split (m = layout.count).
    public private(set) var layout: SubstringLayout
    /// The operator's fixed m, or nil to choose m from N at every rebuild.
    public var fixedM: Int?
    public var planner: PlannerMode = .automatic
    public var costs = PlannerCosts()

    /// One base table per substring (`layout.sizes[j]` bits), built at the last fold or load.
    private(set) var tables: [BaseTable]
    /// One delta table per substring: entries added since the base tables were built.
    private(set) var delta: [DeltaTable]
    /// Entries in the delta maps (stale ones included).
    public private(set) var deltaEntries: Int = 0
    /// Bit p set when position p may have entries in some table. A position without them
    /// is appended to the delta directly, without looking for an existing entry.
    private(set) var mayHaveEntries: [UInt64] = []
    /// True while every change since the tables were built was the add of a new id (no
    /// replace, no remove): the tables then hold no stale entry, and a fold may merge the
    /// new positions into them instead of building them again (`BaseTable.merged`).
    private(set) var appendOnly = true
    /// Bumped whenever the tables are replaced (a fold or a load), so that a check in
    /// pieces knows to start its table pass again.
    private(set) var generation = 0

    /// Creates an empty index. `m` nil chooses m automatically.
    public init(width: CodeWidth, m: Int? = nil) throws {
        codes = CodeArray(width: width)
        scan = LinearScan(codes: codes)
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

    /// `upsert` of `ids.count` codes in order: id k's code is the `width.words` packed words
    /// at `words + k * width.words`. For a batch of writes: the tables, the delta and the
    /// layout are borrowed once for the batch (`DeltaBatch`: no retain and release of each
    /// per code), and the delta's cache lines of the code a few places ahead are fetched
    /// while one is indexed (a bulk load's appends then overlap their misses).
    public func upsert(ids: UnsafeBufferPointer<UInt32>, words: UnsafePointer<UInt64>) {
        guard !ids.isEmpty else { return }
        let w = codes.storage.words, n = ids.count
        deltaEntries += MultiIndex.withDeltaBatch(delta: &delta, marks: &mayHaveEntries, tables: tables,
                                                  storage: codes.storage, layout: layout, reserving: n) { batch in
            for k in 0..<min(DeltaBatch.ahead, n) { batch.prefetch(words + k * w) }
            for k in 0..<n {
                if k + DeltaBatch.ahead < n { batch.prefetch(words + (k + DeltaBatch.ahead) * w) }
                if codes.set(ids[k], words: words + k * w) { appendOnly = false }
                batch.index(position: codes.storage.position(of: ids[k])!)
            }
        }
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
        deltaEntries += MultiIndex.indexInDelta(position: i, storage: codes.storage, layout: layout, tables: tables,
                                                delta: &delta, marks: &mayHaveEntries)
    }

    /// `indexInDelta(position:)` over given parts (the index's own, or tables staged for
    /// an install); returns the delta entries it added.
    static func indexInDelta(position i: Int, storage s: CodeStorage, layout: SubstringLayout, tables: [BaseTable],
                             delta: inout [DeltaTable], marks: inout [UInt64]) -> Int {
        tables.withUnsafeBufferPointer { t in
            delta.withUnsafeMutableBufferPointer { d in
                indexInDelta(position: i, storage: s, layout: layout, tables: t, delta: d, marks: &marks)
            }
        }
    }

    /// `indexInDelta` over borrowed tables and delta (one borrow for a batch of positions).
    @inline(__always)
    static func indexInDelta(position i: Int, storage s: CodeStorage, layout: SubstringLayout,
                             tables: UnsafeBufferPointer<BaseTable>, delta: UnsafeMutableBufferPointer<DeltaTable>,
                             marks: inout [UInt64]) -> Int {
        guard s.isLive(position: i) else { return 0 }
        let p = UnsafePointer(s.codes + i * s.words)
        let id = UInt32(i)
        if i >> 6 >= marks.count {
            marks.append(contentsOf: repeatElement(0, count: max(i >> 6 + 1, marks.count * 2) - marks.count))
        }
        let known = (marks[i >> 6] >> UInt64(i & 63)) & 1 == 1
        var added = 0
        for j in 0..<layout.count {
            let v = layout.substring(j, of: p)
            // Each (bucket, id) pair is held once: the first-encounter rule depends on it.
            if known && (tables[j].contains(v, id) || delta[j].contains(v, id)) { continue }
            delta[j].append(v, id)
            added += 1
        }
        marks[i >> 6] |= UInt64(1) << UInt64(i & 63)
        return added
    }

    /// Delta appends of a batch of positions over parts borrowed once for the batch
    /// (`withDeltaBatch`): the live index's own (`upsert(ids:words:)`) or tables staged for
    /// an install (their carry).
    struct DeltaBatch {
        /// How many codes ahead a batch's loop prefetches.
        static let ahead = 8
        fileprivate let storage: CodeStorage
        fileprivate let layout: SubstringLayout
        fileprivate let tables: UnsafeBufferPointer<BaseTable>
        fileprivate let delta: UnsafeMutableBufferPointer<DeltaTable>
        fileprivate let hints: [DeltaTable.Hints]
        fileprivate var marks: [UInt64]
        fileprivate(set) var added = 0

        /// Starts loading the delta's lines that indexing `code` will touch (its bitmap word
        /// and hash slot in each table).
        @inline(__always)
        func prefetch(_ code: UnsafePointer<UInt64>) {
            for j in 0..<layout.count { hints[j].prefetch(layout.substring(j, of: code)) }
        }

        /// `indexInDelta` of live position `q` of the storage.
        @inline(__always)
        mutating func index(position q: Int) {
            added += MultiIndex.indexInDelta(position: q, storage: storage, layout: layout, tables: tables,
                                             delta: delta, marks: &marks)
        }
    }

    /// Runs `body` with a `DeltaBatch` over `delta`, `marks` and `tables`, after making room
    /// for `n` entries per table (so that the prefetch addresses stay the delta's); returns
    /// the delta entries it added. The delta and marks are moved out for the batch, so that
    /// each stays uniquely referenced while it is changed through a pointer, and put back.
    static func withDeltaBatch(delta: inout [DeltaTable], marks: inout [UInt64], tables: [BaseTable], storage: CodeStorage,
                               layout: SubstringLayout, reserving n: Int, _ body: (inout DeltaBatch) -> Void) -> Int {
        var d = [DeltaTable]()
        swap(&d, &delta)
        defer { swap(&d, &delta) }
        for j in d.indices { d[j].reserve(n) }
        let hints = d.map { $0.hints() }
        return tables.withUnsafeBufferPointer { t in
            d.withUnsafeMutableBufferPointer { dp in
                var batch = DeltaBatch(storage: storage, layout: layout, tables: t, delta: dp, hints: hints, marks: [])
                swap(&batch.marks, &marks)
                body(&batch)
                swap(&batch.marks, &marks)
                return batch.added
            }
        }
    }

    /// Puts new tables in use with an empty delta, the one place a fold or a load changes
    /// the tables: a check in pieces then starts its table pass again. `marks` are the new
    /// `mayHaveEntries` (`entryMarks(allPositions:)`, or ones the caller worked out).
    /// A staged delta (`delta`, with `deltaEntries`) replaces the delta when given.
    func replaceTables(_ newLayout: SubstringLayout, _ newTables: [BaseTable], appendOnly newAppendOnly: Bool, marks: [UInt64],
                       delta staged: [DeltaTable]? = nil, deltaEntries stagedEntries: Int = 0) {
        layout = newLayout
        tables = newTables
        generation += 1
        delta = staged ?? newLayout.sizes.map { DeltaTable(bits: $0) }
        deltaEntries = staged == nil ? 0 : stagedEntries
        mayHaveEntries = marks
        appendOnly = newAppendOnly
    }

    /// `mayHaveEntries` with every position marked (after loading tables from storage,
    /// whose entries are not known), or exactly the live ones (after a rebuild).
    func entryMarks(allPositions: Bool) -> [UInt64] {
        let n = codes.positionCount
        var marks = [UInt64](repeating: 0, count: n / 64 + 1)
        if allPositions {
            for i in 0..<n { marks[i >> 6] |= UInt64(1) << UInt64(i & 63) }
        } else {
            codes.storage.forEachLivePosition { i in marks[i >> 6] |= UInt64(1) << UInt64(i & 63) }
        }
        return marks
    }
}
