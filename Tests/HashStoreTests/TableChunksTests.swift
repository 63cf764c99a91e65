import CLMDB
import Foundation
import Testing
import HammingCode
import MultiIndex
@testable import HashStore

/// Stored tables in chunks and generations (`TableChunks`): boundaries, the legacy layout of
/// one value per table, strays left by a fold that died, and folds with tiny chunks.
@Suite("Stored tables in chunks")
struct TableChunksTests {
    /// A table's stored bytes with `ids` entries over `bits`-bit values (ids spread evenly).
    private func encoded(ids n: Int, bits w: Int) -> [UInt8] {
        var offsets = [UInt32](repeating: 0, count: (1 << w) + 1)
        for v in 0..<(1 << w) { offsets[v + 1] = UInt32(n * (v + 1) / (1 << w)) }
        let ids = (0..<n).map { UInt32($0 * 3) }
        return [UInt8](unsafeUninitializedCapacity: StoredTable.encodedSize(bits: w, ids: n)) { out, count in
            offsets.withUnsafeBufferPointer { o in ids.withUnsafeBufferPointer { i in
                StoredTable.encode(offsets: o, ids: i, bits: w, into: UnsafeMutableRawBufferPointer(out))
            } }
            count = StoredTable.encodedSize(bits: w, ids: n)
        }
    }

    @Test("a table reads back whole for every chunk size: exact multiples, one byte over, one chunk, empty tables")
    func chunkBoundaries() throws {
        let dir = tempDir()
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let env = try Environment(path: dir + "/data.mdb", mapSize: 64 << 20, maxDatabases: 8)
        defer { env.close() }
        let dbs = try env.write { try HashStore.openDatabases($0, create: true) }
        for (n, w) in [(0, 6), (1000, 8), (4093, 10)] {
            let bytes = encoded(ids: n, bits: w)
            let size = bytes.count
            #expect(size % 4 == 0)
            for per in [64, 100, size / 4, size / 2, size - 1, size, size + 1, 1 << 20] where per >= 64 {
                let chunks = (size + per - 1) / per
                let g = 1 + per % 200
                try env.write { txn in
                    try bytes.withUnsafeBytes { try HashStore.putChunks(txn, dbs.2, $0, generation: g, table: 3, chunkBytes: per, chunks: 0..<chunks) }
                }
                let back = try env.read { try StoredTable.read($0, dbs.2, generation: g, table: 3, bits: w) }
                let want = try bytes.withUnsafeBytes { try StoredTable.decode($0, bits: w) }
                #expect(back?.ids == want.ids && back?.offsets == want.offsets, "n \(n) chunk \(per)")
                #expect(back?.storedBytes == size)
                // A missing middle chunk or a stray chunk after the last is malformed.
                if chunks > 2 {
                    try env.write { _ = try $0.delete(dbs.2, id: TableChunks.key(generation: g, chunk: 1, table: 3)) }
                    #expect(throws: StoreError.self) { try env.read { try StoredTable.read($0, dbs.2, generation: g, table: 3, bits: w) } }
                }
                try env.write { txn in
                    try bytes.withUnsafeBytes { try HashStore.putChunks(txn, dbs.2, $0, generation: g, table: 3, chunkBytes: per, chunks: 0..<chunks) }
                    try [UInt8](repeating: 0, count: 8).withUnsafeBytes {
                        try txn.put(dbs.2, id: TableChunks.key(generation: g, chunk: chunks, table: 3), value: $0)
                    }
                }
                #expect(throws: StoreError.self) { try env.read { try StoredTable.read($0, dbs.2, generation: g, table: 3, bits: w) } }
                try env.write { try TableChunks.removeOthers($0, dbs.2, keep: 0) }
            }
        }
    }

    @Test("positions turned into ids: a gather through idAt and p + idOffset give the same bytes as the ids themselves")
    func positionsToIDs() throws {
        var rng = SystemRandomNumberGenerator()
        for (n, w) in [(0, 4), (1, 3), (1_000, 6), (5_000, 10)] {
            // A table of positions 0..<n in random buckets, ascending within each.
            let values = (0..<n).map { _ in Int.random(in: 0..<(1 << w), using: &rng) }
            var offsets = [UInt32](repeating: 0, count: (1 << w) + 1)
            for v in values { offsets[v + 1] += 1 }
            for v in 0..<(1 << w) { offsets[v + 1] += offsets[v] }
            let positions = (0..<n).sorted { (values[$0], $0) < (values[$1], $1) }.map { UInt32($0) }
            let d = UInt32.random(in: 0...1_000_000, using: &rng)
            let idAt = (0..<max(1, n)).map { UInt32($0) + d }
            func encode(_ ids: [UInt32], idAt: UnsafePointer<UInt32>?, idOffset: UInt32?) -> [UInt8] {
                [UInt8](unsafeUninitializedCapacity: StoredTable.encodedSize(bits: w, ids: n)) { out, count in
                    offsets.withUnsafeBufferPointer { o in ids.withUnsafeBufferPointer { i in
                        StoredTable.encode(offsets: o, ids: i, bits: w, idAt: idAt, idOffset: idOffset, into: UnsafeMutableRawBufferPointer(out))
                    } }
                    count = StoredTable.encodedSize(bits: w, ids: n)
                }
            }
            let plain = encode(positions.map { $0 + d }, idAt: nil, idOffset: nil)
            idAt.withUnsafeBufferPointer { a in
                #expect(encode(positions, idAt: a.baseAddress!, idOffset: nil) == plain)
                #expect(encode(positions, idAt: a.baseAddress!, idOffset: d) == plain)
            }
            let back = try plain.withUnsafeBytes { try StoredTable.decode($0, bits: w) }
            #expect(back.offsets == offsets && back.ids == positions.map { $0 + d })
        }
    }

    @Test("keys: generations are contiguous ranges, legacy keys are generation 0, generations wrap past 0")
    func keys() {
        #expect(TableChunks.key(generation: 0, chunk: 0, table: 5) == 5)
        #expect(TableChunks.keys(of: 1).contains(TableChunks.key(generation: 1, chunk: 16383, table: 1023)))
        #expect(!TableChunks.keys(of: 1).contains(TableChunks.key(generation: 2, chunk: 0, table: 0)))
        #expect(TableChunks.keys(of: 255).contains(TableChunks.key(generation: 255, chunk: 16383, table: 1023)))
        #expect(TableChunks.keys(outside: 0) == [(1 << 24)...UInt32.max])
        #expect(TableChunks.keys(outside: 255) == [0...((255 << 24) - 1)])
        #expect(TableChunks.keys(outside: 7).count == 2)
        #expect(TableChunks.next(after: 0) == 1 && TableChunks.next(after: 254) == 255 && TableChunks.next(after: 255) == 1)
        #expect(TableChunks.chunkBytes(size: 1 << 30, preferred: 1024) == (1 << 30) / TableChunks.maxChunks)
    }

    /// Adds `n` items (every seventh then deleted) and returns the model.
    private func fill(_ store: HashStore, _ n: Int, _ rng: inout SplitMix64) throws -> [String: HammingCode] {
        let w = try CodeWidth(bits: 64)
        var model: [String: HammingCode] = [:]
        var ops = [WriteOp]()
        for i in 0..<n { let c = code(w, &rng); ops.append(.add(key: "k\(i)", code: c)); model["k\(i)"] = c }
        _ = try store.apply(ops)
        _ = try store.apply(stride(from: 0, to: n, by: 7).map { model["k\($0)"] = nil; return .delete(key: "k\($0)") })
        return model
    }

    /// Every key and a few searches against brute force, and VERIFY.
    private func check(_ store: HashStore, _ model: [String: HammingCode], _ rng: inout SplitMix64) throws {
        let w = try CodeWidth(bits: 64)
        #expect(store.count == model.count)
        for (k, c) in model { #expect(store.get(k) == c, "\(k)") }
        for _ in 0..<5 {
            let q = code(w, &rng)
            var st = SearchStats()
            #expect(store.knn(q, k: 20, stats: &st).map(\.distance) == Array(model.values.map { $0.distance(to: q) }.sorted().prefix(20)))
        }
        #expect(try store.verify().items == model.count)
    }

    /// The keys stored in `tables` (the store closed).
    private func tableKeys(_ dir: String) throws -> [UInt32] {
        let env = try Environment(path: dir + "/data.mdb", mapSize: 256 << 20, maxDatabases: 8)
        defer { env.close() }
        return try env.read { txn in
            let dbs = try HashStore.openDatabases(txn, create: false)
            return try TableChunks.keys(txn, dbs.2, in: 0...UInt32.max)
        }
    }

    @Test("folds and REBUILD with tiny chunks, beside the writes and inline; reopen, strays removed")
    func tinyChunks() throws {
        for background in [true, false] {
            let dir = tempDir()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            var rng = SplitMix64(seed: background ? 5 : 6)
            var opts = StoreOptions(bits: 64)
            opts.backgroundFolds = background
            opts.tableChunkBytes = 256
            opts.copyPieceIDs = 777
            var store = try HashStore(directory: dir, options: opts)
            #expect(try store.rebuild() >= 1)  // an empty database's tables
            var model = try fill(store, 6000, &rng)
            _ = try store.rebuild(m: 3)
            try check(store, model, &rng)
            _ = try store.rebuild()
            store.close()
            // One generation is kept, in many chunks per table.
            let keys = try tableKeys(dir)
            #expect(Set(keys.map { $0 >> 24 }).count == 1)
            #expect(keys.count > 3 * 10)
            store = try HashStore(directory: dir, options: opts)
            try check(store, model, &rng)
            model.merge(try fill(store, 500, &rng)) { $1 }
            store.close()
            // Strays of the next generation (a fold that died) and of an old one: removed at open.
            let gen = Int(keys[0] >> 24)
            try putStrays(dir, generations: [TableChunks.next(after: gen), 0])
            store = try HashStore(directory: dir, options: opts)
            try check(store, model, &rng)
            store.close()
            #expect(try tableKeys(dir) == keys)
        }
    }

    /// Puts stray chunks of the given generations into `tables`.
    private func putStrays(_ dir: String, generations: [Int]) throws {
        let env = try Environment(path: dir + "/data.mdb", mapSize: 256 << 20, maxDatabases: 8)
        defer { env.close() }
        try env.write { txn in
            let dbs = try HashStore.openDatabases(txn, create: false)
            for g in generations {
                for c in 0..<3 {
                    try [UInt8](repeating: 7, count: 100).withUnsafeBytes {
                        try txn.put(dbs.2, id: TableChunks.key(generation: g, chunk: c, table: 0), value: $0)
                    }
                }
            }
        }
    }

    @Test("a database in the legacy layout (one value per table, no tables_generation) opens, verifies, and REBUILD moves it to chunks")
    func legacyLayout() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SplitMix64(seed: 9)
        var store = try HashStore(directory: dir, options: StoreOptions(bits: 64, substrings: 3))
        var model = try fill(store, 5000, &rng)
        _ = try store.rebuild()
        // Some pending ids on top of the tables.
        model.merge(try fill(store, 300, &rng)) { $1 }
        store.close()
        try rewriteAsLegacy(dir)
        #expect(try tableKeys(dir) == [0, 1, 2])
        let report = try ReadOnlyStore(directory: dir).report()
        #expect(report.tablesProblem == nil && report.tables.count == 3)
        store = try HashStore(directory: dir)
        try check(store, model, &rng)
        _ = try store.rebuild()
        try check(store, model, &rng)
        store.close()
        let keys = try tableKeys(dir)
        #expect(keys.allSatisfy { $0 >> 24 == 1 })
        store = try HashStore(directory: dir)
        try check(store, model, &rng)
        store.close()
    }

    /// Rewrites the stored tables as a build before chunks wrote them: table j whole under
    /// key j, no meta `tables_generation`.
    private func rewriteAsLegacy(_ dir: String) throws {
        let env = try Environment(path: dir + "/data.mdb", mapSize: 256 << 20, maxDatabases: 8)
        defer { env.close() }
        try env.write { txn in
            let dbs = try HashStore.openDatabases(txn, create: false)
            let s = try #require(try StoredSettings.read(txn, meta: dbs.0, sources: dbs.4, directory: dir))
            let layout = try SubstringLayout(width: try CodeWidth(bits: s.bits), count: try #require(s.tablesM))
            var whole: [[UInt8]] = []
            try StoredTable.forEach(txn, dbs.2, generation: s.tablesGeneration, layout: layout) { j, t in
                let w = layout.sizes[j]
                let size = StoredTable.encodedSize(bits: w, ids: t.ids.count)
                whole.append([UInt8](unsafeUninitializedCapacity: size) { out, count in
                    t.offsets.withUnsafeBufferPointer { o in t.ids.withUnsafeBufferPointer { i in
                        StoredTable.encode(offsets: o, ids: i, bits: w, into: UnsafeMutableRawBufferPointer(out))
                    } }
                    count = size
                })
            }
            try txn.clear(dbs.2)
            for (j, bytes) in whole.enumerated() { try bytes.withUnsafeBytes { try txn.put(dbs.2, id: UInt32(j), value: $0) } }
            _ = try txn.deleteString(dbs.0, "tables_generation")
        }
    }
}
