import CLMDB
import Foundation
import HammingCode
import MultiIndex
#if canImport(Glibc)
import Glibc
#endif

extension HashStore {
    /// Folds the delta into new tables once it has grown past the threshold, or once
    /// deletes have left as many holes in the code positions (a fold compacts them).
    func foldIfNeeded() throws {
        let limit = foldThreshold ?? max(65_536, index.count / 8)
        // Holes cost scan time whatever the delta holds, so they are folded away sooner.
        let holeLimit = foldThreshold ?? max(16_384, index.count / 8)
        if index.deltaEntries > limit * max(1, index.m) || index.codes.holes > holeLimit
            || (index.fixedM == nil && index.count >= 65_536
            && SubstringLayout.automaticCount(for: width, items: index.count) != index.m
            && index.deltaEntries > index.count / 8) {
            guard backgroundFolds else { try foldTables(m: nil); return }
            // Beside the writes; the delta keeps answers exact meanwhile.
            guard !foldScheduled, foldChanged == nil else { return }
            foldScheduled = true
            foldThreads.enter()
            let t = Thread { [self] in
                defer { foldThreads.leave() }
                var failure: String?
                do { try foldBeside(m: nil, setting: false) } catch { failure = "\(error)" }
                HashStore.releaseFreeMemory()
                writerLock.lock()
                foldScheduled = false
                lastFoldError = failure
                writerLock.unlock()
            }
            t.name = "gdhd-fold"
            t.start()
        }
    }

    /// A fold that lets writes go on while the tables are built (any thread but the
    /// writer's, which must not hold `writerLock`):
    ///
    /// 1. Under the writer lock: copy the live codes (`MultiIndex.snapshotForTables`) and
    ///    start recording the ids written from then on (`foldChanged`).
    /// 2. No lock: build the tables from the copy.
    /// 3. Under the writer lock: store the tables with `pending` = the recorded ids still
    ///    live, in one transaction (as an inline fold does, so a crash at any instant leaves
    ///    the old tables and pending or the new ones), then install them, carrying the
    ///    recorded ids' current codes over to the new positions and the delta.
    ///
    /// With `setting`, m (when given) becomes the database's substring setting first.
    func foldBeside(m: Int?, setting: Bool) throws {
        foldLock.lock()
        defer { foldLock.unlock() }
        let snapshot: MultiIndex.TableSnapshot
        var steps: [(String, Double)] = []
        var t = DispatchTime.now().uptimeNanoseconds
        func step(_ name: String) {
            let now = DispatchTime.now().uptimeNanoseconds
            steps.append((name, Double(now - t) / 1e9))
            t = now
        }
        writerLock.lock()
        t = DispatchTime.now().uptimeNanoseconds
        do {
            if setting, let m { try storeSubstringSetting(m) }
            do { snapshot = try index.snapshotForTables(m: m) } catch { throw StoreError.invalid("\(error)") }
            rw.withWriteLock { foldChanged = [] }
        } catch {
            writerLock.unlock()
            throw error
        }
        step("copy")
        writerLock.unlock()
        if HashStore.foldTestPause == "copied" { usleep(500_000) }
        let prepared = snapshot.build()
        if HashStore.foldTestPause == "built" { usleep(500_000) }
        step("build")
        writerLock.lock()
        t = DispatchTime.now().uptimeNanoseconds
        let changed = rw.withReadLock { foldChanged ?? [] }
        do {
            try storeTables(prepared, pending: changed.filter { index.codes.isLive($0) }.sorted())
        } catch {
            rw.withWriteLock { foldChanged = nil }
            writerLock.unlock()
            throw error
        }
        step("store")
        if HashStore.foldTestPause == "stored" { usleep(500_000) }
        let retired = rw.withWriteLock { () -> MultiIndex.Retired in
            defer { foldChanged = nil }
            return index.install(prepared, changedSince: changed)
        }
        step("install")
        lastFoldSteps = steps
        writerLock.unlock()
        // The old codes and tables are freed here, with no lock held.
        withExtendedLifetime(retired) {}
    }

    /// Builds tables from the current codes (m: the given one, else the setting),
    /// stores them with an empty `pending` in one transaction, then swaps them in.
    func foldTables(m: Int?) throws {
        let prepared: MultiIndex.PreparedTables
        do {
            prepared = try index.prepareTables(m: m)
        } catch {
            throw StoreError.invalid("\(error)")
        }
        try storeTables(prepared, pending: [])
        rw.withWriteLock { index.install(prepared) }
    }

    /// Stores prepared tables, with `pending` holding exactly the given ids, in one
    /// transaction (writer lock held); counts the commit and the fold.
    func storeTables(_ prepared: MultiIndex.PreparedTables, pending: [UInt32]) throws {
        do {
            try retryingWhenMapFull(grow: growMap) { try env.write { txn in
                try txn.clear(dbTables)
                for j in 0..<prepared.layout.count {
                    let (offsets, ids) = prepared.table(j)
                    var key = UInt32(j)
                    let w = prepared.layout.sizes[j]
                    try withUnsafeBytes(of: &key) { kb in
                        try txn.putReserved(dbTables, key: kb, size: StoredTable.encodedSize(bits: w, ids: ids.count)) { out in
                            StoredTable.encode(offsets: offsets, ids: ids, bits: w, idAt: prepared.idAtPosition, into: out)
                        }
                    }
                }
                try txn.clear(dbPending)
                let empty: [UInt8] = []
                for id in pending { try empty.withUnsafeBytes { try txn.put(dbPending, id: id, value: $0, flags: 0) } }
                try txn.putString(dbMeta, "tables_m", String(prepared.layout.count))
            } }
        } catch let e as StoreError {
            throw e
        } catch {
            throw StoreError.storage(error, "cannot store the tables", dataPath: dataPath)
        }
        commits += 1
        folds += 1
    }

    /// Recomputes the tables from the stored codes, with m substrings if given (kept
    /// as the setting from then on). Returns the m in use.
    public func rebuild(m: Int? = nil) throws -> Int {
        if backgroundFolds {
            try foldBeside(m: m, setting: true)
            return rw.withReadLock { index.m }
        }
        writerLock.lock()
        defer { writerLock.unlock() }
        if let m { try storeSubstringSetting(m) }
        try foldTables(m: m)
        return rw.withReadLock { index.m }
    }

    /// For the crash tests only: `GDH_TEST_FOLD_PAUSE=<phase>` makes a fold beside the writes
    /// sleep 0.5 s at that point (`copied`, `built` or `stored`).
    private static let foldTestPause = ProcessInfo.processInfo.environment["GDH_TEST_FOLD_PAUSE"]
}
