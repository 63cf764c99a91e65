import HammingCode

// Installing tables built from a snapshot in steps, so that the mutator waits only for the
// last few changes: the changes made since the snapshot are captured on the mutator's side
// (their current codes, a quick copy), carried over to the snapshot's positions and indexed
// in a delta of the new tables on any thread, and the install carries over only what
// changed since the last capture before it swaps the parts in.
extension MultiIndex {
    /// Tables built from a snapshot on their way in: the snapshot's positions, with the
    /// changes carried over so far, and the new tables' delta indexing them.
    public final class StagedTables: @unchecked Sendable {
        let prepared: PreparedTables
        var delta: [DeltaTable]
        var deltaEntries = 0
        /// The positions that may have entries in the new tables or delta.
        var marks: [UInt64]
        /// Live positions of the snapshot's storage.
        var live: Int
        /// Every change carried over so far was the add of a new id.
        var appendOnly = true
        public var layout: SubstringLayout { prepared.layout }

        fileprivate init(_ prepared: PreparedTables) {
            self.prepared = prepared
            let n = prepared.view.count
            // Every position of the snapshot is live and has its entries in the new tables.
            var marks = [UInt64](repeating: ~0, count: n / 64 + 1)
            marks[n / 64] = n % 64 == 0 ? 0 : (UInt64(1) << UInt64(n % 64)) - 1
            self.marks = marks
            live = n
            // Room for the entries until the next fold, as for the codes (`SnapshotRoom`).
            let room = SnapshotRoom.headroom(n)
            delta = prepared.layout.sizes.map { DeltaTable(bits: $0, room: room) }
        }
    }

    /// The current state of some ids, captured on the mutator's side for `carry`.
    public struct CapturedChanges: @unchecked Sendable {
        fileprivate var ids: [UInt32] = []
        /// `words` words per id: its code, or nothing when `live` is false.
        fileprivate var codes: [UInt64] = []
        fileprivate var live: [Bool] = []
        public var count: Int { ids.count }
    }

    /// Stages tables built from a snapshot (any thread; `prepared` must not be installed).
    public static func stage(_ prepared: PreparedTables) -> StagedTables {
        precondition(prepared.compacted === prepared.view, "tables not built from a snapshot")
        return StagedTables(prepared)
    }

    /// The current code (or absence) of each id (the mutator's side): a copy, cheap.
    public func capture(_ changed: some Sequence<UInt32>) -> CapturedChanges {
        var c = CapturedChanges()
        let words = codes.storage.words
        for id in changed {
            c.ids.append(id)
            if let p = codes.position(of: id) {
                c.live.append(true)
                c.codes.append(contentsOf: UnsafeBufferPointer(start: codes.pointer(position: p), count: words))
            } else {
                c.live.append(false)
                c.codes.append(contentsOf: repeatElement(0, count: words))
            }
        }
        return c
    }

    /// Carries captured changes over to staged tables (any thread, one at a time per
    /// staged tables): in ascending id order, so that new ids take positions in id order.
    public static func carry(_ captured: CapturedChanges, into staged: StagedTables) {
        let words = staged.prepared.view.words
        let order = captured.ids.indices.sorted { captured.ids[$0] < captured.ids[$1] }
        captured.codes.withUnsafeBufferPointer { all in
            carry(ids: order.map { captured.ids[$0] }, into: staged) { k in
                captured.live[order[k]] ? all.baseAddress! + order[k] * words : nil
            }
        }
    }

    /// Gives the staged storage the current state of each id (`ids` ascending and distinct;
    /// `current(k)`: the code of `ids[k]`, nil when it is not live) and indexes each touched
    /// position in the staged delta.
    private static func carry(ids: [UInt32], into st: StagedTables, current: (Int) -> UnsafePointer<UInt64>?) {
        // Nothing to carry: the delta stays as it is (`reserve` would allocate its bitmap).
        guard !ids.isEmpty else { return }
        let s = st.prepared.view
        st.deltaEntries += withDeltaBatch(delta: &st.delta, marks: &st.marks, tables: st.prepared.tables, storage: s,
                                          layout: st.prepared.layout, reserving: ids.count) { batch in
            // The delta's bitmap word and hash slot of each table, a few ids ahead: at
            // millions of items these are cache misses, and a fold beside a bulk load carries
            // every id written while it ran.
            func prefetch(_ k: Int) {
                guard k < ids.count, let src = current(k) else { return }
                batch.prefetch(src)
            }
            for k in 0..<min(DeltaBatch.ahead, ids.count) { prefetch(k) }
            for (k, id) in ids.enumerated() {
                prefetch(k + DeltaBatch.ahead)
                if let src = current(k) {
                    if let q = s.position(of: id) {
                        // A write copied with its final code (a new id below the copy's end,
                        // added while the copy went on) is already indexed where it is: by the
                        // tables built over the copy, or by the delta of an earlier carry.
                        // Only a code that differs is a replacement (which keeps the next fold
                        // from merging into these tables).
                        let dst = s.codes + q * s.words
                        if (0..<s.words).contains(where: { dst[$0] != src[$0] }) {
                            dst.update(from: src, count: s.words)
                            st.appendOnly = false
                            batch.index(position: q)
                        }
                    } else {
                        s.append(id, src)
                        st.live += 1
                        batch.index(position: s.count - 1)
                    }
                } else if let q = s.position(of: id), s.isLive(position: q) {
                    s.clear(position: q)
                    st.live -= 1
                    st.appendOnly = false
                }
            }
        }
    }

    /// Puts staged tables in use (the mutator's side; once). `changed` holds every id added,
    /// replaced or removed since the last capture carried into them (since the snapshot
    /// when none was); their current state is carried over first. The tables' entries of
    /// old codes are stale, as after any change.
    @discardableResult
    public func install(_ staged: StagedTables, changedSince changed: some Sequence<UInt32>) -> Retired {
        let retired = Retired(parts: [codes.storage], arrays: (tables, delta, mayHaveEntries))
        let ids = Set(changed).sorted()
        MultiIndex.carry(ids: ids, into: staged) { k in
            codes.position(of: ids[k]).map { UnsafePointer(codes.pointer(position: $0)) }
        }
        codes.adopt(changed: staged.prepared.view, live: staged.live)
        // Handed over, not shared: a copy kept in `staged` would make the next write copy
        // the delta and marks (copy on write) under the mutator's lock.
        let delta = staged.delta, marks = staged.marks
        staged.delta = []
        staged.marks = []
        replaceTables(staged.prepared.layout, staged.prepared.tables, appendOnly: staged.appendOnly, marks: marks,
                      delta: delta, deltaEntries: staged.deltaEntries)
        return retired
    }
}
