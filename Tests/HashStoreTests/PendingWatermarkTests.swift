import CLMDB
import Foundation
import Testing
import HammingCode
import MultiIndex
@testable import HashStore

/// The stored tables' watermark (meta `tables_next_id`, `PendingIDs`): new ids need no
/// `pending` record, ids below it do; legacy databases without it; VERIFY and open against
/// a damaged one.
@Suite("Pending ids and the tables' watermark")
struct PendingWatermarkTests {
    private let w = try! CodeWidth(bits: 64)

    /// What is on disk (the store closed): the watermark and the `pending` records.
    private func onDisk(_ dir: String) throws -> (watermark: UInt32?, nextID: UInt32, records: [UInt32]) {
        let env = try Environment(path: dir + "/data.mdb", mapSize: 256 << 20, maxDatabases: 8)
        defer { env.close() }
        return try env.read { txn in
            let dbs = try HashStore.openDatabases(txn, create: false)
            let s = try #require(try StoredSettings.read(txn, meta: dbs.0, sources: dbs.4, directory: dir))
            return (s.tablesNextID, s.nextID, try PendingIDs.explicit(txn, pending: dbs.3))
        }
    }

    /// Changes the closed database in one write transaction.
    private func edit(_ dir: String, _ body: (Transaction, HashStore.Databases) throws -> Void) throws {
        let env = try Environment(path: dir + "/data.mdb", mapSize: 256 << 20, maxDatabases: 8)
        defer { env.close() }
        try env.write { txn in try body(txn, try HashStore.openDatabases(txn, create: false)) }
    }

    /// Applies `n` adds of new keys `prefix0…`, returning them.
    private func add(_ store: HashStore, _ prefix: String, _ n: Int, _ rng: inout SplitMix64,
                     into model: inout [String: HammingCode]) throws {
        var ops = [WriteOp]()
        for i in 0..<n {
            let c = code(w, &rng)
            ops.append(.add(key: "\(prefix)\(i)", code: c))
            model["\(prefix)\(i)"] = c
        }
        _ = try store.apply(ops)
    }

    /// Every key, k-NN and range searches against brute force, and VERIFY.
    private func expectExact(_ store: HashStore, _ model: [String: HammingCode], _ rng: inout SplitMix64,
                             sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(store.count == model.count, sourceLocation: sourceLocation)
        for (k, c) in model { #expect(store.get(k) == c, "\(k)", sourceLocation: sourceLocation) }
        for _ in 0..<6 {
            let q = code(w, &rng)
            var st = SearchStats()
            let want = model.values.map { $0.distance(to: q) }.sorted()
            #expect(store.knn(q, k: 25, stats: &st).map(\.distance) == Array(want.prefix(25)), sourceLocation: sourceLocation)
            #expect(store.range(q, radius: 22, stats: &st).map(\.distance) == want.filter { $0 <= 22 },
                    sourceLocation: sourceLocation)
        }
        #expect(try store.verify().items == model.count, sourceLocation: sourceLocation)
    }

    @Test("after a fold new ids get no pending record; a crash leaves them above the watermark, out of the tables, and open finds them")
    func newIDsAboveTheWatermark() throws {
        for background in [false, true] {
            let dir = tempDir()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            var rng = SplitMix64(seed: background ? 11 : 12)
            var opts = StoreOptions(bits: 64)
            opts.backgroundFolds = background
            var store = try HashStore(directory: dir, options: opts)
            var model: [String: HammingCode] = [:]
            try add(store, "a", 3000, &rng, into: &model)
            _ = try store.rebuild()
            #expect(store.storedWatermark == 3000)
            // New ids after the fold: items only, no pending record.
            try add(store, "b", 2500, &rng, into: &model)
            try add(store, "c", 700, &rng, into: &model)
            try expectExact(store, model, &rng)
            // Nothing more happens on disk after a commit: closing leaves what a kill would.
            store.close()
            let disk = try onDisk(dir)
            #expect(disk.watermark == 3000 && disk.nextID == 6200)
            #expect(disk.records.isEmpty)
            let reader = try ReadOnlyStore(directory: dir)
            let tables = try reader.storedTables()
            let report = try reader.report()
            reader.close()
            #expect(tables.pending == Array(3000..<6200))
            #expect(report.pending == 3200 && report.tablesNextID == 3000)
            for t in tables.tables { #expect(t.ids.allSatisfy { $0 < 3000 }) }
            store = try HashStore(directory: dir, options: opts)
            // Loaded, not rebuilt (a rebuild at open would hide a missing pending id).
            #expect(store.folds == 0)
            try expectExact(store, model, &rng)
            // The delta holds the ids above the watermark: 3,200 items in every table.
            #expect(store.index.deltaEntries >= 3200 * store.index.m)
            store.close()
        }
    }

    @Test("re-codes and deletes of ids below the watermark put and drop pending records; reopen, fold, reopen")
    func changesBelowTheWatermark() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SplitMix64(seed: 21)
        var store = try HashStore(directory: dir, options: StoreOptions(bits: 64, substrings: 4))
        var model: [String: HammingCode] = [:]
        try add(store, "a", 4000, &rng, into: &model)
        _ = try store.rebuild()
        // Below the watermark: re-code 0..<50 (one twice), delete 50..<80; above it: new
        // ids, one re-coded and one deleted.
        var ops = [WriteOp]()
        for i in 0..<50 { let c = code(w, &rng); ops.append(.add(key: "a\(i)", code: c)); model["a\(i)"] = c }
        let again = code(w, &rng)
        ops.append(.add(key: "a7", code: again)); model["a7"] = again
        for i in 50..<80 { ops.append(.delete(key: "a\(i)")); model["a\(i)"] = nil }
        _ = try store.apply(ops)
        try add(store, "n", 100, &rng, into: &model)
        let recoded = code(w, &rng)
        _ = try store.apply([.add(key: "n3", code: recoded), .delete(key: "n4")])
        model["n3"] = recoded
        model["n4"] = nil
        // A re-code of a deleted key is a new id.
        let back = code(w, &rng)
        _ = try store.apply([.add(key: "a60", code: back)])
        model["a60"] = back
        try expectExact(store, model, &rng)
        store.close()
        var disk = try onDisk(dir)
        #expect(disk.watermark == 4000)
        #expect(disk.records == Array(0..<50))
        store = try HashStore(directory: dir)
        #expect(store.folds == 0)
        try expectExact(store, model, &rng)
        _ = try store.rebuild()
        try expectExact(store, model, &rng)
        store.close()
        disk = try onDisk(dir)
        #expect(disk.watermark == disk.nextID && disk.records.isEmpty)
        store = try HashStore(directory: dir)
        try expectExact(store, model, &rng)
        store.close()
    }

    @Test("a database stored before watermarks (every pending id a record, no tables_next_id) opens, writes records until its first fold")
    func legacyPendingRecords() throws {
        for background in [false, true] {
            let dir = tempDir()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            var rng = SplitMix64(seed: background ? 31 : 32)
            var opts = StoreOptions(bits: 64, substrings: 4)
            opts.backgroundFolds = background
            var store = try HashStore(directory: dir, options: opts)
            var model: [String: HammingCode] = [:]
            try add(store, "a", 3000, &rng, into: &model)
            _ = try store.rebuild()
            try add(store, "b", 400, &rng, into: &model)
            var ops = [WriteOp]()
            for i in 0..<20 { let c = code(w, &rng); ops.append(.add(key: "a\(i)", code: c)); model["a\(i)"] = c }
            for i in 20..<30 { ops.append(.delete(key: "a\(i)")); model["a\(i)"] = nil }
            _ = try store.apply(ops)
            store.close()
            // What an older build leaves: a record for every pending id, no watermark.
            try edit(dir) { txn, dbs in
                #expect(try txn.deleteString(dbs.0, PendingIDs.watermarkKey))
                let empty: [UInt8] = []
                for id in UInt32(3000)..<3400 { try empty.withUnsafeBytes { try txn.put(dbs.3, id: id, value: $0) } }
            }
            #expect(try onDisk(dir).records.count == 420)
            store = try HashStore(directory: dir, options: opts)
            #expect(store.storedWatermark == UInt32.max && store.folds == 0)
            try expectExact(store, model, &rng)
            // Until a fold writes a watermark, every write puts its record.
            try add(store, "c", 300, &rng, into: &model)
            store.close()
            #expect(try onDisk(dir).records.count == 720)
            #expect(try onDisk(dir).watermark == nil)
            store = try HashStore(directory: dir, options: opts)
            #expect(store.folds == 0)
            try expectExact(store, model, &rng)
            _ = try store.rebuild()
            try add(store, "d", 200, &rng, into: &model)
            try expectExact(store, model, &rng)
            store.close()
            let disk = try onDisk(dir)
            #expect(disk.watermark == 3700 && disk.records.isEmpty)
            store = try HashStore(directory: dir, options: opts)
            try expectExact(store, model, &rng)
            store.close()
        }
    }

    @Test("VERIFY reports a watermark past next_id, one that is not an id, one raised over ids the tables lack, and a lost pending record")
    func verifyCatchesDamage() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SplitMix64(seed: 41)
        let store = try HashStore(directory: dir, options: StoreOptions(bits: 64, substrings: 4))
        defer { store.close() }
        var model: [String: HammingCode] = [:]
        try add(store, "a", 2000, &rng, into: &model)
        _ = try store.rebuild()
        try add(store, "b", 300, &rng, into: &model)
        let c = code(w, &rng)
        _ = try store.apply([.add(key: "a5", code: c)])
        model["a5"] = c
        try expectExact(store, model, &rng)
        // Damage written through the store's own environment, then put back.
        func damaged(_ change: (Transaction) throws -> Void, _ undo: (Transaction) throws -> Void,
                     _ what: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
            try store.env.write { try change($0) }
            let e = #expect(throws: StoreError.self, "\(what)", sourceLocation: sourceLocation) { _ = try store.verify() }
            if let e, case .corrupt = e {} else { Issue.record("\(what): \(String(describing: e))", sourceLocation: sourceLocation) }
            try store.env.write { try undo($0) }
            #expect(try store.verify().items == model.count, "after undoing \(what)", sourceLocation: sourceLocation)
        }
        let meta = store.dbMeta, pending = store.dbPending
        let restore: (Transaction) throws -> Void = { try $0.putString(meta, PendingIDs.watermarkKey, "2000") }
        try damaged({ try $0.putString(meta, PendingIDs.watermarkKey, "2400") }, restore, "a watermark past next_id")
        try damaged({ try $0.putString(meta, PendingIDs.watermarkKey, "lots") }, restore, "a watermark that is not an id")
        try damaged({ try $0.putString(meta, PendingIDs.watermarkKey, "2300") }, restore, "a raised watermark")
        try damaged({ _ = try $0.delete(pending, id: 5) }, { txn in
            try [UInt8]().withUnsafeBytes { try txn.put(pending, id: 5, value: $0) }
        }, "a lost pending record")
    }

    @Test("open rebuilds the tables when the watermark is past next_id or claims ids the tables lack; no item is lost")
    func openWithDamagedWatermark() throws {
        for bad in ["2300", "9999", "2150"] {
            let dir = tempDir()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            var rng = SplitMix64(seed: 51)
            var store = try HashStore(directory: dir, options: StoreOptions(bits: 64, substrings: 4))
            var model: [String: HammingCode] = [:]
            try add(store, "a", 2000, &rng, into: &model)
            _ = try store.rebuild()
            try add(store, "b", 300, &rng, into: &model)
            store.close()
            try edit(dir) { txn, dbs in try txn.putString(dbs.0, PendingIDs.watermarkKey, bad) }
            store = try HashStore(directory: dir, options: StoreOptions(bits: 64, substrings: 4))
            #expect(store.folds == 1, "rebuilt at open (watermark \(bad))")
            try expectExact(store, model, &rng)
            // Later ids still count as pending after another reopen.
            try add(store, "c", 100, &rng, into: &model)
            store.close()
            store = try HashStore(directory: dir, options: StoreOptions(bits: 64, substrings: 4))
            #expect(store.folds == 0)
            try expectExact(store, model, &rng)
            store.close()
        }
    }

    @Test("folds beside a bulk load: the watermark moves up, few pending records remain, reopen finds every item")
    func foldsBesideBulkLoad() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SplitMix64(seed: 61)
        var opts = StoreOptions(bits: 64)
        opts.foldThreshold = 1500
        opts.backgroundFolds = true
        opts.copyPieceIDs = 1000
        var store = try HashStore(directory: dir, options: opts)
        var model: [String: HammingCode] = [:]
        for round in 0..<60 {
            var ops = [WriteOp]()
            for j in 0..<300 {
                let n = round * 300 + j
                let key = n % 10 == 9 ? "k\(n / 3)" : "k\(n)"  // some re-codes of older keys
                let c = code(w, &rng)
                ops.append(.add(key: key, code: c))
                model[key] = c
            }
            if round % 7 == 3 { ops.append(.delete(key: "k\(round * 100)")); model["k\(round * 100)"] = nil }
            _ = try store.apply(ops)
        }
        store.close()  // waits for the fold threads
        #expect(store.folds >= 2)
        let disk = try onDisk(dir)
        let watermark = try #require(disk.watermark)
        #expect(watermark > 0 && watermark <= disk.nextID)
        #expect(disk.records.allSatisfy { $0 < watermark })
        store = try HashStore(directory: dir, options: opts)
        #expect(store.folds == 0)
        try expectExact(store, model, &rng)
        store.close()
    }

    @Test("ChangedIDs: new ids from the range need no record; take hands back every id changed, ascending")
    func changedIDs() {
        var c = ChangedIDs(next: 100)
        for id: UInt32 in [5, 100, 101, 7, 5, 150] { c.record(id) }
        #expect(c.ids(next: 103) == [5, 7, 100, 101, 102])
        #expect(c.take(next: 103) == [5, 7, 100, 101, 102])
        #expect(c.rangeStart == 103 && c.below.isEmpty)
        c.record(101)
        c.record(104)
        #expect(c.containsBelow(101) && !c.containsBelow(104))
        #expect(c.take(next: 106) == [101, 103, 104, 105])
    }
}
