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
    ///
    /// The automatic threshold is a quarter of the items (at least 262,144 per table): a
    /// bulk load folds less often (each fold reads all the codes and writes all the tables)
    /// at the price of a larger delta, which searches look up entry by entry (at 10M items
    /// a k-NN query takes about 25% longer with an eighth of them in the delta, 57% with a
    /// quarter; `gdh bench search --delta`). So that the delta does not stay that large
    /// under a trickle of writes, a sixteenth (at least 65,536 per table) is enough once a
    /// minute has passed since the last fold, or once the writer has been idle for a
    /// second (`foldWhenIdle`): after a load, searches find nearly everything in the tables.
    func foldIfNeeded() throws {
        let limit = foldThreshold ?? max(262_144, index.count / 4)
        // Holes cost scan time whatever the delta holds, so they are folded away sooner.
        let holeLimit = foldThreshold ?? max(16_384, index.count / 8)
        if index.deltaEntries > limit * max(1, index.m) || index.codes.holes > holeLimit
            || (index.fixedM == nil && index.count >= 65_536
            && SubstringLayout.automaticCount(for: width, items: index.count) != index.m
            && index.deltaEntries > index.count / 8)
            || (deltaPastSmallLimit && DispatchTime.now().uptimeNanoseconds - lastFoldEnded >= trickleFoldNanoseconds) {
            guard backgroundFolds else { try foldTables(m: nil); return }
            startFoldBeside()
        }
    }

    /// Whether the delta holds more than a sixteenth of the items (at least 65,536 entries
    /// per table): the automatic threshold of a fold after a minute, or after a second with
    /// no write. Never with a fixed `foldThreshold` (tests). Under `writerLock`.
    private var deltaPastSmallLimit: Bool {
        foldThreshold == nil && index.deltaEntries > max(65_536, index.count / 16) * max(1, index.m)
    }

    /// Whether the writer should call `foldWhenIdle` once it has had no write for a while
    /// (it asks after each batch, and again after each call): the delta is past the small
    /// limit, and the last fold beside the writes did not fail (a fold that fails, for a
    /// full disk, is tried again after the next batch, not every second). Still true while
    /// a fold runs: the writer asks again after it, when the delta may hold what the
    /// writes added meanwhile.
    public var wantsIdleFold: Bool {
        writerLock.withLock { backgroundFolds && deltaPastSmallLimit && lastFoldError == nil }
    }

    /// For the writer once it has had no write for a while: starts a fold beside the
    /// writes if the delta holds more than a sixteenth of the items (`foldIfNeeded`) and
    /// none is under way. Returns whether it started one.
    @discardableResult
    public func foldWhenIdle() -> Bool {
        writerLock.withLock {
            guard backgroundFolds, deltaPastSmallLimit else { return false }
            return startFoldBeside()
        }
    }

    /// Starts an automatic fold on a thread of its own unless one is under way (writer lock
    /// held); the delta keeps answers exact meanwhile. Returns whether it started one.
    @discardableResult
    private func startFoldBeside() -> Bool {
        guard !foldScheduled, foldChanged == nil else { return false }
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
            lastFoldEnded = DispatchTime.now().uptimeNanoseconds
            writerLock.unlock()
        }
        t.name = "gdhd-fold"
        t.start()
        return true
    }

    /// A fold that lets writes go on while the tables are built and stored (any thread but
    /// the writer's, which must not hold `writerLock`). The writer waits only for short
    /// steps, each under `writerLock` (`lastFoldSteps` has the longest of each kind):
    ///
    /// 1. Copy the live codes in pieces (`copyCodesBeside`), recording the ids written from
    ///    the first piece on (`foldChanged`). The next id then is the new tables' watermark
    ///    W (`PendingIDs`): from then on writes put a `pending` record for every id below W.
    /// 2. No lock: build the tables from the copy; carry the ids written so far over to it
    ///    and to the new tables' delta (`catchUp`: only their capture holds the lock).
    /// 3. Store the tables as a new generation of chunks (`TableChunks`), one small
    ///    transaction per chunk (`writeGenerationBeside`): until the switch the old tables
    ///    and `pending` stay the truth, and a crash leaves the new chunks as strays that
    ///    open removes. Then catch up again, until few ids are left.
    /// 4. Under the lock (`switchGeneration`): one transaction switches `tables_generation`,
    ///    `tables_m` and the watermark `tables_next_id` = W; the install carries over the
    ///    last few ids and swaps the tables in. Every id below W written since the snapshot
    ///    has its `pending` record (step 1), every id from W on is pending without one, and
    ///    `pending` may hold more: the new tables are the truth with it from the commit on.
    /// 5. `pending` is trimmed to the ids below W written since the snapshot
    ///    (`trimPendingBeside`), and the old generation's chunks deleted
    ///    (`deleteGenerationsBeside`), a piece per transaction; a crash before leaves a
    ///    larger `pending` and strays open removes.
    ///
    /// With `setting`, m (when given) becomes the database's substring setting first.
    func foldBeside(m: Int?, setting: Bool) throws {
        foldLock.lock()
        defer { foldLock.unlock() }
        var steps = FoldSteps()
        let (snapshot, watermark) = try copyCodesBeside(m: m, setting: setting, steps: &steps)
        // From here on, whatever happens, recording stops when the fold ends, and writes put
        // `pending` records below the stored watermark only.
        defer { writerLock.withLock { foldWatermark = nil; rw.withWriteLock { foldChanged = nil } } }
        testPause("copied")
        let prepared = snapshot.build()
        testPause("built")
        steps.step("build")
        let staged = MultiIndex.stage(prepared)
        // The ids below the watermark carried over (the ones `pending` keeps).
        var carried = Set<UInt32>()
        catchUp(staged, &carried, below: watermark, rounds: 1, steps: &steps, name: "catch_up_built")
        let gens = try writeGenerationBeside(prepared, steps: &steps)
        testPause("written")
        catchUp(staged, &carried, below: watermark, rounds: 4, steps: &steps, name: "catch_up")
        let retired = try switchGeneration(staged, to: gens.new, watermark: watermark, carried: &carried, steps: &steps)
        // The old codes and tables are freed here, with no lock held.
        withExtendedLifetime(retired) {}
        testPause("switched")
        try trimPendingBeside(keep: carried, watermark: watermark, steps: &steps)
        try deleteGenerationsBeside(keep: gens.new, steps: &steps)
        writerLock.withLock { lastFoldSteps = steps.list }
    }

    /// The seconds of a fold's steps (`lastFoldSteps`): each step's duration, and for the
    /// steps that hold the writer lock the longest hold (`…_max_hold`).
    struct FoldSteps {
        var list: [(String, Double)] = []
        private var t = DispatchTime.now().uptimeNanoseconds

        /// Ends the step `name`, begun at the end of the previous one.
        mutating func step(_ name: String) {
            let now = DispatchTime.now().uptimeNanoseconds
            list.append((name, Double(now - t) / 1e9))
            t = now
        }

        /// Records a figure beside the steps.
        mutating func note(_ name: String, _ seconds: Double) { list.append((name, seconds)) }

        /// Runs `body` under `lock`, returning its result and the seconds the lock was held.
        static func held<T>(_ lock: NSLock, _ body: () throws -> T) rethrows -> (T, Double) {
            lock.lock()
            let t0 = DispatchTime.now().uptimeNanoseconds
            defer { lock.unlock() }
            let r = try body()
            return (r, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        }
    }

    /// Lets a batch waiting for `writerLock` take it between two pieces of a fold: the
    /// lock is not fair, so without a pause the fold's thread would take it again at once,
    /// and on a busy machine the woken writer may take a while to run. Waits 1 ms, then
    /// while a batch still waits for the lock (at most 50 ms more).
    private func yieldToWriter() {
        usleep(1_000)
        writesWaiting.waitWhilePositive(pollingEvery: 500, atMost: 100)
    }

    /// Step 1 of `foldBeside`: the map grown ahead (`growMapAhead`), then the snapshot of
    /// the live codes, copied a piece at a time under the writer lock into room allocated
    /// with no lock held; the first piece starts
    /// recording `foldChanged` (and with `setting` stores m as the substring setting) and
    /// sets the fold's watermark (`foldWatermark`), the next id then, which it returns with
    /// the snapshot.
    private func copyCodesBeside(m: Int?, setting: Bool, steps: inout FoldSteps) throws
        -> (MultiIndex.TableSnapshot, UInt32) {
        // Room ahead in the map for the new generation's chunks, so that no write batch
        // meanwhile has to grow it (which remaps, and waits for readers of the environment).
        let (_, grown) = try FoldSteps.held(writerLock) { try growMapAhead() }
        steps.note("grow_map", grown)
        let room = MultiIndex.SnapshotRoom(writerLock.withLock { index.snapshotSizing })
        let ((copy, watermark), first) = try FoldSteps.held(writerLock) { () throws -> (MultiIndex.SnapshotCopy, UInt32) in
            if setting, let m { try storeSubstringSetting(m) }
            let c: MultiIndex.SnapshotCopy
            // Ids from `nextID` on are all recorded (`ChangedIDs`) and carried over later.
            do { c = try index.startSnapshot(m: m, room: room, below: nextID) } catch { throw StoreError.invalid("\(error)") }
            // Every id below `nextID` now is in the copy unless a write changes it from here
            // on, and each such write puts its `pending` record (`pendingBelow`).
            foldWatermark = nextID
            rw.withWriteLock { foldChanged = ChangedIDs(next: nextID) }
            return (c, nextID)
        }
        var longest = first
        var done = false
        while !done {
            yieldToWriter()
            let (d, held) = FoldSteps.held(writerLock) { index.continueSnapshot(copy, ids: copyPieceIDs) }
            done = d
            longest = max(longest, held)
        }
        let (snapshot, held) = FoldSteps.held(writerLock) {
            index.finishSnapshot(copy, changed: rw.withReadLock { foldChanged?.ids(next: nextID) ?? [] })
        }
        steps.step("copy")
        steps.note("copy_max_hold", max(longest, held))
        return (snapshot, watermark)
    }

    /// Carries the ids written since the last capture over to staged tables: the recorded
    /// ids are taken under the writer lock (recording then starts afresh), their codes
    /// captured 16,384 ids per hold of the lock (an id changed after the take is recorded
    /// again, so capturing it late is as good), and carried with no lock held. At most
    /// `rounds` rounds, fewer once one finds at most 1,000 ids. `carried` collects the ids
    /// below `watermark`.
    private func catchUp(_ staged: MultiIndex.StagedTables, _ carried: inout Set<UInt32>, below watermark: UInt32,
                         rounds: Int, steps: inout FoldSteps, name: String) {
        var longest = 0.0
        for _ in 0..<rounds {
            // Ascending (across the pieces too): new ids must take positions in id order.
            let (list, took) = FoldSteps.held(writerLock) {
                rw.withWriteLock { foldChanged?.take(next: nextID) ?? [] }
            }
            longest = max(longest, took)
            for start in stride(from: 0, to: list.count, by: 16_384) {
                yieldToWriter()
                let (captured, held) = FoldSteps.held(writerLock) { index.capture(list[start..<min(list.count, start + 16_384)]) }
                longest = max(longest, held)
                MultiIndex.carry(captured, into: staged)
            }
            carried.formUnion(list.prefix { $0 < watermark })
            if list.count <= 1_000 { break }
        }
        steps.step(name)
        steps.note(name + "_max_hold", longest)
    }

    /// Step 3 of `foldBeside`: writes the prepared tables as the generation after the one
    /// in use, each table encoded with no lock held and put one chunk per transaction
    /// under the writer lock (first removing what a fold that died left of that
    /// generation). Returns the generation in use and the one written.
    private func writeGenerationBeside(_ prepared: MultiIndex.PreparedTables, steps: inout FoldSteps) throws -> (old: Int, new: Int) {
        let (gens, first) = try FoldSteps.held(writerLock) { () throws -> (old: Int, new: Int) in
            try storing { try retryingWhenMapFull(grow: growMap) { try env.write { txn in
                let old = try TableChunks.generation(txn, meta: dbMeta)
                let new = TableChunks.next(after: old)
                for k in try TableChunks.keys(txn, dbTables, in: TableChunks.keys(of: new)) { try txn.delete(dbTables, id: k) }
                return (old, new)
            } } }
        }
        var longest = first
        for j in 0..<prepared.layout.count {
            let bytes = HashStore.encodedTable(prepared, j)
            let per = TableChunks.chunkBytes(size: bytes.count, preferred: tableChunkBytes)
            for c in 0..<((bytes.count + per - 1) / per) {
                yieldToWriter()
                let (_, held) = try FoldSteps.held(writerLock) {
                    try storing { try retryingWhenMapFull(grow: growMap) { try env.write { txn in
                        try bytes.withUnsafeBytes { try HashStore.putChunks(txn, dbTables, $0, generation: gens.new, table: j, chunkBytes: per, chunks: c..<(c + 1)) }
                    } } }
                    commits += 1
                }
                longest = max(longest, held)
                if j == 0 && c == 0 { testPause("writing") }
            }
        }
        steps.step("write")
        steps.note("write_max_hold", longest)
        return gens
    }

    /// Step 4 of `foldBeside`, under the writer lock: one transaction makes generation `new`
    /// the stored tables, with their watermark; then the staged tables are installed, the
    /// ids written since the last catch-up carried over (those below the watermark added to
    /// `carried`). Recording goes on, for the trim of `pending`. Returns what the install
    /// replaced.
    private func switchGeneration(_ staged: MultiIndex.StagedTables, to new: Int, watermark: UInt32,
                                  carried: inout Set<UInt32>, steps: inout FoldSteps) throws -> MultiIndex.Retired {
        let m = staged.layout.count
        let ((retired, final, switched), held) = try FoldSteps.held(writerLock) {
            () throws -> (MultiIndex.Retired, [UInt32], Double) in
            let t0 = DispatchTime.now().uptimeNanoseconds
            try storing { try retryingWhenMapFull(grow: growMap) { try env.write { txn in
                try txn.putString(dbMeta, "tables_generation", String(new))
                try txn.putString(dbMeta, "tables_m", String(m))
                try PendingIDs.setWatermark(txn, meta: dbMeta, watermark)
            } } }
            storedWatermark = watermark
            commits += 1
            folds += 1
            let switched = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            return rw.withWriteLock { () -> (MultiIndex.Retired, [UInt32], Double) in
                let final = foldChanged?.take(next: nextID) ?? []
                return (index.install(staged, changedSince: final), final, switched)
            }
        }
        carried.formUnion(final.prefix { $0 < watermark })
        steps.step("switch_install")
        steps.note("switch", switched)
        steps.note("install", held - switched)
        return retired
    }

    /// Step 5 of `foldBeside`: deletes from `pending` the records the new tables cover,
    /// 2,048 records per transaction under the writer lock: every id from the watermark on
    /// (pending without a record), and below it the ids written before the snapshot. Keeps
    /// the ids below the watermark written since (`keep`, and those recorded in
    /// `foldChanged` since the switch, all below its `rangeStart`).
    private func trimPendingBeside(keep: Set<UInt32>, watermark: UInt32, steps: inout FoldSteps) throws {
        var from: UInt32 = 0
        var more = true
        var longest = 0.0
        while more {
            yieldToWriter()
            let (m, held) = try FoldSteps.held(writerLock) { () throws -> Bool in
                let since = rw.withReadLock { foldChanged ?? ChangedIDs(next: 0) }
                return try storing { try env.write { txn in
                    var ids: [UInt32] = []
                    try txn.forEachKey(dbPending, from: from) { k in
                        ids.append(k)
                        return ids.count < 2_048
                    }
                    for id in ids where id >= watermark || (!keep.contains(id) && !since.containsBelow(id)) {
                        try txn.delete(dbPending, id: id)
                    }
                    guard ids.count == 2_048, let last = ids.last, last < UInt32.max else { return false }
                    from = last + 1
                    return true
                } }
            }
            more = m
            longest = max(longest, held)
        }
        steps.step("trim")
        steps.note("trim_max_hold", longest)
    }

    /// Deletes every key of `tables` outside generation `keep`, four per transaction under
    /// the writer lock (a crash before the end leaves the rest to the next open).
    private func deleteGenerationsBeside(keep: Int, steps: inout FoldSteps) throws {
        var left = true
        var longest = 0.0
        while left {
            yieldToWriter()
            let (l, held) = try FoldSteps.held(writerLock) {
                try storing { try env.write { txn in
                    var doomed: [UInt32] = []
                    for range in TableChunks.keys(outside: keep) where doomed.isEmpty {
                        doomed = try TableChunks.keys(txn, dbTables, in: range, limit: 4)
                    }
                    for k in doomed { try txn.delete(dbTables, id: k) }
                    return !doomed.isEmpty
                } }
            }
            left = l
            longest = max(longest, held)
        }
        steps.step("delete")
        steps.note("delete_max_hold", longest)
    }

    /// Builds tables from the current codes (m: the given one, else the setting),
    /// stores them with an empty `pending` and the next id as their watermark in one
    /// transaction, then swaps them in.
    func foldTables(m: Int?) throws {
        let prepared: MultiIndex.PreparedTables
        do {
            prepared = try index.prepareTables(m: m)
        } catch {
            throw StoreError.invalid("\(error)")
        }
        try storeTables(prepared)
        rw.withWriteLock { index.install(prepared) }
    }

    /// Stores prepared tables (built from every current code) as the next generation, with
    /// `pending` emptied and the next id as their watermark, and deletes every other
    /// generation, in one transaction (writer lock held); counts the commit and the fold.
    func storeTables(_ prepared: MultiIndex.PreparedTables) throws {
        let encoded = (0..<prepared.layout.count).map { HashStore.encodedTable(prepared, $0) }
        try storing { try retryingWhenMapFull(grow: growMap) { try env.write { txn in
            let new = TableChunks.next(after: try TableChunks.generation(txn, meta: dbMeta))
            for k in try TableChunks.keys(txn, dbTables, in: TableChunks.keys(of: new)) { try txn.delete(dbTables, id: k) }
            for (j, bytes) in encoded.enumerated() {
                let per = TableChunks.chunkBytes(size: bytes.count, preferred: tableChunkBytes)
                try bytes.withUnsafeBytes { try HashStore.putChunks(txn, dbTables, $0, generation: new, table: j, chunkBytes: per, chunks: 0..<((bytes.count + per - 1) / per)) }
            }
            try HashStore.replacePending(txn, dbPending, with: [])
            try txn.putString(dbMeta, "tables_m", String(prepared.layout.count))
            try txn.putString(dbMeta, "tables_generation", String(new))
            try PendingIDs.setWatermark(txn, meta: dbMeta, nextID)
            try TableChunks.removeOthers(txn, dbTables, keep: new)
        } } }
        storedWatermark = nextID
        commits += 1
        folds += 1
    }

    /// Runs a write of the stored tables, reporting a failure as `cannot store the tables`.
    private func storing<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as StoreError {
            throw e
        } catch {
            throw StoreError.storage(error, "cannot store the tables", dataPath: dataPath)
        }
    }

    /// Table j of prepared tables in the stored form (`StoredTable`), ids in place of positions.
    static func encodedTable(_ prepared: MultiIndex.PreparedTables, _ j: Int) -> [UInt8] {
        let (offsets, ids) = prepared.table(j)
        let w = prepared.layout.sizes[j]
        let size = StoredTable.encodedSize(bits: w, ids: ids.count)
        return [UInt8](unsafeUninitializedCapacity: size) { out, count in
            StoredTable.encode(offsets: offsets, ids: ids, bits: w, idAt: prepared.idAtPosition, idOffset: prepared.idOffset,
                               into: UnsafeMutableRawBufferPointer(out))
            count = size
        }
    }

    /// Puts chunks `chunks` (of `chunkBytes` each, the last one shorter) of a table's
    /// stored bytes under generation g.
    static func putChunks(_ txn: Transaction, _ dbi: MDB_dbi, _ bytes: UnsafeRawBufferPointer, generation g: Int,
                          table j: Int, chunkBytes: Int, chunks: Range<Int>) throws {
        for c in chunks {
            let lo = c * chunkBytes, hi = min(bytes.count, lo + chunkBytes)
            var key = TableChunks.key(generation: g, chunk: c, table: j)
            try withUnsafeBytes(of: &key) { kb in
                try txn.putReserved(dbi, key: kb, size: hi - lo) { out in
                    out.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[lo..<hi]))
                }
            }
        }
    }

    /// Empties `pending` and puts the given ids in it.
    static func replacePending(_ txn: Transaction, _ dbi: MDB_dbi, with ids: [UInt32]) throws {
        try txn.clear(dbi)
        let empty: [UInt8] = []
        for id in ids { try empty.withUnsafeBytes { try txn.put(dbi, id: id, value: $0, flags: 0) } }
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
    /// sleep 1 s, holding no lock, at that point: `copied`, `built`, `writing` (one chunk
    /// of the new generation written), `written` (all of them, before the switch) or
    /// `switched` (the new generation in use, the old one not yet deleted). On entering the
    /// pause it creates `fold-paused` in the database directory, so that a test can wait for
    /// it to kill the process in the pause however long the way there took.
    private static let foldTestPause = ProcessInfo.processInfo.environment["GDH_TEST_FOLD_PAUSE"]

    private func testPause(_ phase: String) {
        guard HashStore.foldTestPause == phase else { return }
        let fd = open(directory + "/fold-paused", O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        if fd >= 0 { Glibc.close(fd) }
        usleep(1_000_000)
    }

    /// The default of `StoreOptions.tableChunkBytes`: 1 MiB, or for the crash tests
    /// `GDH_TEST_TABLE_CHUNK_BYTES` (a daemon's tables in many chunks).
    static let defaultTableChunkBytes =
        ProcessInfo.processInfo.environment["GDH_TEST_TABLE_CHUNK_BYTES"].flatMap { Int($0) } ?? 1 << 20
}

/// A value behind a mutex, for small counters shared between threads.
final class Guarded<Value> {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func withLock<T>(_ body: (inout Value) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
}

extension Guarded where Value == Int {
    /// Sleeps `interval` µs at a time, at most `times` times, while the count is above
    /// zero (a thread giving way to the ones it counts).
    func waitWhilePositive(pollingEvery interval: useconds_t, atMost times: Int) {
        var waits = 0
        while waits < times, withLock({ $0 }) > 0 {
            usleep(interval)
            waits += 1
        }
    }
}
