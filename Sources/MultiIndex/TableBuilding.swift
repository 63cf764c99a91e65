import HammingCode

// Replacing the tables: a rebuild in place, a fold built beside mutations from a snapshot,
// and tables loaded from storage. Each ends in `replaceTables`, with an empty delta.
extension MultiIndex {
    /// Rebuilds every table from the live codes (folding in the delta), with a new m
    /// if given, else the fixed m, else m chosen from N and b.
    public func rebuild(m newM: Int? = nil) throws {
        install(try prepareTables(m: newM))
    }

    /// New tables built from the current codes, not yet in use, with the compacted code
    /// positions they refer to (when the current ones had holes or were out of id order).
    public struct PreparedTables {
        public let layout: SubstringLayout
        let tables: [BaseTable]
        let compacted: CodeStorage?
        let view: CodeStorage
        /// The base table j: offsets (2^size + 1) and the positions of its entries, which
        /// `idAtPosition` turns into ids. The memory is the table's own and never changes:
        /// valid while this value lives, installed or not.
        public func table(_ j: Int) -> (offsets: UnsafeBufferPointer<UInt32>, ids: UnsafeBufferPointer<UInt32>) {
            tables[j].buffers
        }
        /// The id at each position of the tables. Valid while this value lives and the index
        /// is not mutated: these positions may be the index's own (always once installed),
        /// whose arrays move when an add grows them.
        public var idAtPosition: UnsafePointer<UInt32> { UnsafePointer(view.ids) }
        /// d when the id at every position p is p + d (positions in id order, no holes, no
        /// id skipped: a database only ever added to), so that `idAtPosition` need not be read.
        public var idOffset: UInt32? {
            let n = view.count
            guard n > 0, view.ascending, view.liveCount == n, Int(view.ids[n - 1]) - Int(view.ids[0]) == n - 1 else { return nil }
            return view.ids[0]
        }
    }

    /// The layout of a fold: m = `newM`, else the fixed m, else m chosen from N and b.
    fileprivate func foldLayout(m newM: Int?) throws -> SubstringLayout {
        let mm = newM ?? fixedM ?? SubstringLayout.automaticCount(for: width, items: count)
        return try SubstringLayout(width: width, count: mm)
    }

    /// Builds tables from the live codes with m = `newM`, else the fixed m, else m
    /// chosen from N and b, over compacted positions. Only reads the codes: may run beside
    /// searches, but not beside a mutation. `install` then swaps them in.
    public func prepareTables(m newM: Int? = nil) throws -> PreparedTables {
        let newLayout = try foldLayout(m: newM)
        let compacted = codes.compacted()
        let view = compacted ?? codes.storage
        return PreparedTables(layout: newLayout, tables: MultiIndex.buildTables(view, newLayout), compacted: compacted, view: view)
    }

    /// The base tables of a layout over the codes at the positions of `storage`.
    fileprivate static func buildTables(_ storage: CodeStorage, _ layout: SubstringLayout) -> [BaseTable] {
        (0..<layout.count).map { BaseTable.build(codes: storage, layout: layout, table: $0) }
    }

    /// Puts prepared tables (and their compacted positions) in use and empties the delta.
    /// The codes must not have changed since `prepareTables`.
    public func install(_ prepared: PreparedTables) {
        if let s = prepared.compacted { codes.adopt(s) }
        precondition(prepared.view === codes.storage, "prepared tables are out of date")
        replaceTables(prepared.layout, prepared.tables, appendOnly: true, marks: entryMarks(allPositions: false))
    }

    // MARK: Folds beside mutations

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
            // The copy's id → position map, rebased for its live ids (see `CodeStorage`).
            if storage.unmapped { storage.rebuildMap(room: SnapshotRoom.headroom(storage.liveCount)) }
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
        let newLayout = try foldLayout(m: newM)
        // Merging needs the copy's first positions to be the tables' own: no holes, in id
        // order, every table covering the same prefix, and nothing replaced or removed.
        let base = tables.first?.count ?? 0
        let merge = appendOnly && codes.ordered && codes.holes == 0 && newLayout.sizes == layout.sizes
            && base <= codes.positionCount && tables.allSatisfy { $0.count == base }
        return TableSnapshot(layout: newLayout, storage: codes.denseCopy(), mergeBase: merge ? tables : nil)
    }

    /// A snapshot for `TableSnapshot.build()` taken in pieces, so that the mutator pauses
    /// only for one piece at a time: `startSnapshot`, then `continueSnapshot` until it
    /// returns true, then `finishSnapshot`; each on the mutator's side, with mutations in
    /// between. The caller records every id changed from `startSnapshot` on and hands
    /// them to `finishSnapshot` and `install(_:changedSince:)`, which carries their
    /// current state over (an id copied before or after its change alike).
    public final class SnapshotCopy: @unchecked Sendable {
        fileprivate let layout: SubstringLayout
        fileprivate let storage: CodeStorage
        fileprivate let mergeBase: [BaseTable]?
        /// Ids below this are copied: one past the highest id placed when the copy started
        /// (new ids are above it, and all among the changed ones, carried in id order).
        fileprivate let idEnd: Int
        /// The next id to copy.
        fileprivate var nextID = 0
        fileprivate init(layout: SubstringLayout, storage: CodeStorage, mergeBase: [BaseTable]?, idEnd: Int) {
            self.layout = layout
            self.storage = storage
            self.mergeBase = mergeBase
            self.idEnd = idEnd
        }
    }

    /// How much room a snapshot of the current codes takes (the mutator's side).
    public struct SnapshotSizing: Sendable {
        fileprivate let words: Int, live: Int
    }

    public var snapshotSizing: SnapshotSizing {
        SnapshotSizing(words: codes.storage.words, live: codes.liveCount)
    }

    /// Room for a snapshot's copy, allocated on any thread, and the part the copy will fill
    /// zeroed there (at millions of items its page faults take tens of milliseconds, which
    /// the copy's pieces under the mutator's lock need not spend); the headroom is left
    /// untouched. It grows if the codes have grown since the sizing.
    public final class SnapshotRoom: @unchecked Sendable {
        fileprivate let storage: CodeStorage
        public init(_ z: SnapshotSizing) {
            // No id map: the copy's is built for its live ids once it is complete.
            storage = CodeStorage(words: z.words, capacity: z.live + SnapshotRoom.headroom(z.live), idCapacity: 0)
            storage.touch(positions: z.live)
        }

        /// Room for the ids added after a fold's snapshot of `live` items until the next
        /// fold is installed: the next fold starts after at most a quarter of the items (or
        /// 262,144) in the delta, and the writes go on while it runs. The writer then never
        /// grows the codes or their id map between two folds, each growth a copy of all of
        /// them under the writer's lock. Room for codes that is never used costs no memory
        /// (it is not touched); the id map's costs 4 bytes an id.
        static func headroom(_ live: Int) -> Int { live / 2 + min(live, 1 << 20) + 1024 }
    }

    /// Starts a snapshot in pieces (m as for `snapshotForTables`) in `room` (allocated here
    /// when nil); copies nothing yet. With `below`, only ids below it are copied: the caller
    /// records every id from `below` on as changed (new ids given out in ascending order),
    /// so they reach the snapshot's positions by `install`'s carry, appended in id order,
    /// which keeps the tables fit for the next fold's merge.
    public func startSnapshot(m newM: Int? = nil, room: SnapshotRoom? = nil, below: UInt32? = nil) throws -> SnapshotCopy {
        let newLayout = try foldLayout(m: newM)
        let base = tables.first?.count ?? 0
        let merge = appendOnly && codes.ordered && codes.holes == 0 && newLayout.sizes == layout.sizes
            && base <= codes.positionCount && tables.allSatisfy { $0.count == base }
        let s = (room ?? SnapshotRoom(snapshotSizing)).storage
        precondition(s.count == 0 && s.words == codes.storage.words, "snapshot room in use or of another width")
        s.beginUnmapped()
        let end = min(codes.storage.idEnd, below.map { Int($0) } ?? Int.max)
        return SnapshotCopy(layout: newLayout, storage: s, mergeBase: merge ? tables : nil, idEnd: end)
    }

    /// Copies the live codes of the next ids of a snapshot in pieces (about `count` entries
    /// of the id → position map: live ids, and dead ids of its dense part), at the next
    /// dense positions (so in ascending id order); true once every id is copied.
    public func continueSnapshot(_ copy: SnapshotCopy, ids count: Int) -> Bool {
        let st = codes.storage
        let (next, done) = st.forEachMapped(from: copy.nextID, below: copy.idEnd, budget: count) { id, p in
            copy.storage.appendUnmapped(id, st.codes + p * st.words)
        }
        copy.nextID = done ? copy.idEnd : next
        return done
    }

    /// The snapshot a copy in pieces made, given the ids changed since `startSnapshot`.
    /// The old tables are merged into only when they still cover the copy's first
    /// positions: no id of the copy's range was removed meanwhile (a removal before its
    /// piece would shift the later positions).
    public func finishSnapshot(_ copy: SnapshotCopy, changed: some Sequence<UInt32>) -> TableSnapshot {
        precondition(copy.nextID >= copy.idEnd, "snapshot not fully copied")
        let removed = changed.contains { Int($0) < copy.idEnd && codes.position(of: $0) == nil }
        return TableSnapshot(layout: copy.layout, storage: copy.storage, mergeBase: removed ? nil : copy.mergeBase)
    }

    /// What `install(_:changedSince:)` replaced: drop it outside the owner's locks, since
    /// freeing the old codes and tables takes a while at millions of items.
    public final class Retired {
        let parts: [AnyObject]
        let arrays: ([BaseTable], [DeltaTable], [UInt64])
        init(parts: [AnyObject], arrays: ([BaseTable], [DeltaTable], [UInt64])) {
            self.parts = parts
            self.arrays = arrays
        }
    }

    /// Puts tables built from a snapshot in use. `changed` holds every id added, replaced
    /// or removed since the snapshot (each at least once): their current state is carried
    /// over to the snapshot's positions (a new id takes the next position, a removed one
    /// leaves a hole) and indexed in the delta; the tables' entries of their old codes are
    /// stale, as after any change. (`stage` and `install(_:changedSince:)` of staged tables
    /// in one step.)
    @discardableResult
    public func install(_ prepared: PreparedTables, changedSince changed: some Sequence<UInt32>) -> Retired {
        install(MultiIndex.stage(prepared), changedSince: changed)
    }

    // MARK: Loading

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
            newTables.append(try tableOfPositions(t, bits: newLayout.sizes[j], table: j))
        }
        replaceTables(newLayout, newTables, appendOnly: false, marks: entryMarks(allPositions: true))
        for id in pending {
            if let p = codes.position(of: id) { indexInDelta(position: p) }
        }
    }

    /// Stored table j (entries by id) as a table of the current positions; entries of ids
    /// that are not live are dropped.
    private func tableOfPositions(_ t: (offsets: [UInt32], ids: [UInt32]), bits: Int, table j: Int) throws -> BaseTable {
        guard t.offsets.count == (1 << bits) + 1, t.offsets.first == 0,
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
        return try BaseTable(bits: bits, offsets: offsets, ids: positions)
    }
}
