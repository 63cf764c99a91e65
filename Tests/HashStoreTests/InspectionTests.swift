import Foundation
import Testing
import HammingCode
import MultiIndex
@testable import HashStore

/// The directory's entries, to check that a read-only open created nothing.
private func listing(_ dir: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
}

private func fileBytes(_ path: String) -> Data {
    FileManager.default.contents(atPath: path) ?? Data()
}

/// Everything a dump writes, as text.
private func collect(_ body: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) rethrows -> String {
    var bytes = [UInt8]()
    try body { bytes.append(contentsOf: $0) }
    return String(decoding: bytes, as: UTF8.self)
}

/// A store with known contents: 64-bit codes, m = 4 fixed, 1,000 items folded into the
/// tables, then deletes, replacements and adds (pending), two items from images, keys in
/// several scripts. `model` is key → (id, code) after all of it; `folded` the codes by id
/// when the tables were stored.
private struct Fixture {
    let dir = tempDir()
    var model: [String: (id: UInt32, code: HammingCode)] = [:]
    var folded: [UInt32: HammingCode] = [:]
    var pending: [UInt32] = []
    let width = try! CodeWidth(bits: 64)

    /// Builds it; returns the store still open.
    mutating func build() throws -> HashStore {
        var rng = SplitMix64(seed: 41)
        let store = try HashStore(directory: dir, options: StoreOptions(bits: 64, substrings: 4))
        // Clustered codes, so that buckets hold several ids.
        let centre = code(width, &rng)
        func near() -> HammingCode {
            var c = centre
            for bit in 0..<64 where rng.next() % 6 == 0 { c = c.flipping(bit) }
            return c
        }
        let scripts = ["кот", "猫", "γάτα", "🐱", "cat", "#tag"]
        var batch = [WriteOp]()
        for i in 0..<1000 {
            let key = "\(scripts[i % scripts.count])-\(i)"
            let c = near()
            batch.append(.add(key: key, code: c))
            model[key] = (UInt32(i), c)
        }
        _ = try store.apply(batch)
        #expect(try store.rebuild() == 4)
        for (_, v) in model { folded[v.id] = v.code }
        // Deletes, replacements, new items (two of them from images): all after the fold.
        let keys = model.keys.sorted()
        var ops = [WriteOp]()
        for k in keys[0..<10] { ops.append(.delete(key: k)); model[k] = nil }
        for k in keys[10..<15] {
            let c = near()
            ops.append(.add(key: k, code: c))
            model[k]!.code = c
            pending.append(model[k]!.id)
        }
        for i in 0..<3 {
            let c = near()
            ops.append(.add(key: "new-\(i)-ключ", code: c))
            model["new-\(i)-ключ"] = (UInt32(1000 + i), c)
            pending.append(UInt32(1000 + i))
        }
        _ = try store.apply(ops)
        let images: [WriteOp] = [.add(key: "img-1", code: near(), source: .path("/photos/1.png")),
                                 .add(key: "img-2", code: near(), source: .inline([1, 2, 3]))]
        for (o, op) in zip(try store.apply(images, codesModel: "sha256:0123456789abcdef"), images) {
            guard case .added(let id) = o, case .add(let key, let c, _) = op else { continue }
            model[key] = (id, c)
            pending.append(id)
        }
        pending.sort()
        return store
    }
}

@Suite("Read-only inspection and dump", .serialized)
struct InspectionTests {
    @Test("inspect reports the settings, counts, databases and table shapes of a known store")
    func report() throws {
        var f = Fixture()
        defer { try? FileManager.default.removeItem(atPath: f.dir) }
        try f.build().close()
        let reader = try ReadOnlyStore(directory: f.dir)
        defer { reader.close() }
        let r = try reader.report()
        #expect(r.format == 1)
        #expect(r.bits == 64)
        #expect(r.items == f.model.count)
        #expect(r.nextID == 1005)
        #expect(r.substrings == 4)
        #expect(r.substringsSetting == "4")
        #expect(r.pending == f.pending.count)
        #expect(r.imageItems == 2)
        #expect(r.codesModel == "sha256:0123456789abcdef")
        #expect(r.lockFile)
        #expect(r.tablesProblem == nil)
        #expect(r.fileBytes == Int(HashStore.fileSize(f.dir + "/data.mdb")))
        #expect(r.pageBytes == 4096)
        #expect(r.pagesUsed * r.pageBytes <= r.fileBytes && r.pagesUsed > 0)
        #expect(r.freePages < r.pagesUsed)
        #expect(r.mapBytes >= r.fileBytes)
        #expect(r.databases.map(\.name) == ["meta", "items", "tables", "pending", "sources"])
        let db = Dictionary(uniqueKeysWithValues: r.databases.map { ($0.name, $0) })
        #expect(db["items"]?.entries == f.model.count)
        // Records only below the tables' watermark: the new ids are pending without one.
        #expect(r.tablesNextID == 1000)
        #expect(db["pending"]?.entries == f.pending.filter { $0 < 1000 }.count)
        #expect(db["pending"]?.entries == 5)
        #expect(db["sources"]?.entries == 2)
        #expect(db["tables"]?.entries == 4)
        #expect((db["items"]?.depth ?? 0) >= 1)
        // Each table: 16 bits at offsets 0, 16, 32, 48; entries from the fold; values and
        // the largest bucket as a brute-force grouping of the folded codes counts them.
        #expect(r.tables.map(\.offset) == [0, 16, 32, 48])
        #expect(r.tables.map(\.bits) == [16, 16, 16, 16])
        let layout = try SubstringLayout(width: f.width, count: 4)
        for t in r.tables {
            var sizes: [UInt32: Int] = [:]
            for c in f.folded.values { sizes[layout.substrings(of: c)[t.number], default: 0] += 1 }
            #expect(t.entries == 1000)
            #expect(t.values == sizes.count)
            #expect(t.largest == sizes.values.max())
            #expect(t.storedBytes == 12 + 4 * 1000 + 8 * ((1000 + 65_536 + 63) / 64))
        }
        // The text form: the fields as `name value` lines first, named as in STATS.
        let lines = r.text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(Array(lines.prefix(4)) == ["format 1", "bits 64", "items \(f.model.count)", "next_id 1005"])
        #expect(lines.contains("codes_model sha256:0123456789abcdef"))
        #expect(lines.contains { $0.hasPrefix("database") && $0.hasSuffix("overflow_pages") })
        #expect(lines.filter { $0.hasPrefix("table ") || $0.first?.isNumber == true }.count == 5)
        let json = try JSONSerialization.data(withJSONObject: r.jsonObject)
        let back = try #require(try JSONSerialization.jsonObject(with: json) as? [String: Any])
        #expect(back["items"] as? Int == f.model.count)
        #expect((back["tables"] as? [[String: Any]])?.count == 4)
    }

    @Test("dump writes every item as a `key hex` line in id order, and counts keys that begin with #")
    func dumpLines() throws {
        var f = Fixture()
        defer { try? FileManager.default.removeItem(atPath: f.dir) }
        try f.build().close()
        let reader = try ReadOnlyStore(directory: f.dir)
        defer { reader.close() }
        var items = 0
        let text = try collect { items = try reader.dumpItems($0) }
        let want = f.model.sorted { $0.value.id < $1.value.id }.map { "\($0.key) \($0.value.code.hex)\n" }.joined()
        #expect(text == want)
        #expect(items == f.model.count)
        #expect(f.model.keys.contains { $0.hasPrefix("#") }, "the fixture has keys that begin with #")
    }

    @Test("stored tables decode to a brute-force grouping of the folded codes by substring value; pending lists the writes since")
    func tablesDecoded() throws {
        var f = Fixture()
        defer { try? FileManager.default.removeItem(atPath: f.dir) }
        let store = try f.build()
        let reader = try ReadOnlyStore(directory: f.dir)
        defer { reader.close() }
        let layout = try SubstringLayout(width: f.width, count: 4)
        func grouping(_ codes: [UInt32: HammingCode], table j: Int) -> [UInt32: [UInt32]] {
            var g: [UInt32: [UInt32]] = [:]
            for id in codes.keys.sorted() { g[layout.substrings(of: codes[id]!)[j], default: []].append(id) }
            return g
        }
        func check(_ stored: StoredTables, _ codes: [UInt32: HammingCode], pending: [UInt32]) {
            #expect(stored.tables.count == 4)
            #expect(stored.pending == pending)
            for (j, t) in stored.tables.enumerated() {
                #expect(t.offset == layout.offsets[j] && t.bits == layout.sizes[j])
                let got = Dictionary(uniqueKeysWithValues: t.buckets.map { ($0.value, Array($0.ids)) })
                #expect(got == grouping(codes, table: j), "table \(j)")
                #expect(t.buckets.map(\.value) == t.buckets.map(\.value).sorted())
            }
        }
        // Before a fold: the tables as folded (stale entries included), pending = writes since.
        let before = try reader.storedTables()
        check(before, f.folded, pending: f.pending)
        // The text form parses back to the same tables and pending ids.
        let text = try collect { try before.write($0) }
        #expect(parseTables(text) == before)
        // After a fold: exactly the live codes, nothing pending.
        _ = try store.rebuild()
        check(try reader.storedTables(), Dictionary(uniqueKeysWithValues: f.model.values.map { ($0.id, $0.code) }), pending: [])
        store.close()
    }

    @Test("a missing, empty or foreign directory is refused as no database, and nothing is created in it")
    func notADatabase() throws {
        let root = tempDir()
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        func expectRefused(_ dir: String, _ fragment: String) {
            let before = listing(dir)
            do {
                _ = try ReadOnlyStore(directory: dir)
                Issue.record("\(dir) opened")
            } catch StoreError.notADatabase(let m) {
                #expect(m.contains(fragment), "\(m)")
            } catch {
                Issue.record("\(dir): \(error)")
            }
            #expect(listing(dir) == before, "\(dir) changed")
        }
        expectRefused(root + "/missing", "No such file")
        #expect(!FileManager.default.fileExists(atPath: root + "/missing"))
        let empty = root + "/empty"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: false)
        expectRefused(empty, "no data.mdb")
        #expect(listing(empty).isEmpty)
        let other = root + "/other"
        try FileManager.default.createDirectory(atPath: other, withIntermediateDirectories: false)
        FileManager.default.createFile(atPath: other + "/notes.txt", contents: Data("hello".utf8))
        expectRefused(other, "no data.mdb")
        FileManager.default.createFile(atPath: root + "/file", contents: Data())
        expectRefused(root + "/file", "not a directory")
        // A data.mdb that is not LMDB, and an LMDB environment without gdh's databases.
        let garbage = root + "/garbage"
        try FileManager.default.createDirectory(atPath: garbage, withIntermediateDirectories: false)
        FileManager.default.createFile(atPath: garbage + "/data.mdb", contents: Data(repeating: 0x5A, count: 16_384))
        expectRefused(garbage, "data.mdb")
        let foreign = root + "/foreign"
        try FileManager.default.createDirectory(atPath: foreign, withIntermediateDirectories: false)
        let env = try Environment(path: foreign + "/data.mdb", mapSize: 1 << 20, maxDatabases: 8)
        try env.write { txn in
            let dbi = try txn.openDatabase("something", flags: UInt32(0x40000))  // MDB_CREATE
            try txn.putString(dbi, "a", "b")
        }
        env.close()
        let foreignData = fileBytes(foreign + "/data.mdb")
        expectRefused(foreign, "no gdh database")
        #expect(fileBytes(foreign + "/data.mdb") == foreignData)
    }

    @Test("beside an open writer: each read is a snapshot of what was committed, and the reader changes no byte")
    func besideWriter() throws {
        var f = Fixture()
        defer { try? FileManager.default.removeItem(atPath: f.dir) }
        // LMDB's rule for one process holding an environment twice (here the writer and the
        // reader; gdh-db is a process of its own): the second one must be opened while the
        // first has no transaction open, and closed last, so the writer closes first and
        // the reader is not used after that.
        let store = try f.build()
        let reader = try ReadOnlyStore(directory: f.dir)
        #expect(reader.usesLockFile)
        #expect(try reader.report().items == f.model.count)
        // A read-only open takes no gdhd lock: the writer goes on writing, and the reader
        // sees each commit in its next snapshot.
        var rng = SplitMix64(seed: 5)
        _ = try store.apply((0..<50).map { .add(key: "late-\($0)", code: code(f.width, &rng)) })
        #expect(try reader.report().items == f.model.count + 50)
        var lines = 0
        try reader.forEachItem { _, _, _ in
            if lines == 0 { _ = try? store.apply([.add(key: "during-dump", code: code(f.width, &rng))]) }
            lines += 1
        }
        #expect(lines == f.model.count + 50, "the dump is one snapshot")
        #expect(try reader.report().items == f.model.count + 51)
        #expect(try store.verify().items == f.model.count + 51)
        store.close()
        reader.close()
        // With the writer gone, reading leaves data.mdb as it was, byte for byte.
        let data = fileBytes(f.dir + "/data.mdb")
        let names = listing(f.dir)
        let again = try ReadOnlyStore(directory: f.dir)
        #expect(try again.report().items == f.model.count + 51)
        _ = try collect { _ = try again.dumpItems($0) }
        _ = try again.storedTables()
        again.close()
        #expect(fileBytes(f.dir + "/data.mdb") == data)
        #expect(listing(f.dir) == names)
    }

    @Test("a reader opened on a small map follows the writer's file past it (MDB_MAP_RESIZED)")
    func writerGrowsMap() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var opts = StoreOptions(bits: 64)
        opts.initialMapSize = 1 << 20
        let store = try HashStore(directory: dir, options: opts)
        let reader = try ReadOnlyStore(directory: dir)
        let mapBefore = try reader.report().mapBytes
        var rng = SplitMix64(seed: 9)
        let w = try CodeWidth(bits: 64)
        for b in 0..<10 {
            _ = try store.apply((0..<4000).map { .add(key: "grow-\(b)-\($0)-padding-padding", code: code(w, &rng)) })
        }
        let r = try reader.report()
        #expect(r.items == 40_000)
        #expect(r.mapBytes > mapBefore && r.pagesUsed * r.pageBytes > mapBefore)
        var n = 0
        try reader.forEachItem { _, _, _ in n += 1 }
        #expect(n == 40_000)
        store.close()
        reader.close()
    }

    @Test("a data file copied alone opens without LMDB's lock file and creates none")
    func withoutLockFile() throws {
        var f = Fixture()
        defer { try? FileManager.default.removeItem(atPath: f.dir) }
        try f.build().close()
        let copy = tempDir()
        try FileManager.default.createDirectory(atPath: copy, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: copy) }
        try FileManager.default.copyItem(atPath: f.dir + "/data.mdb", toPath: copy + "/data.mdb")
        let reader = try ReadOnlyStore(directory: copy)
        #expect(!reader.usesLockFile)
        let r = try reader.report()
        #expect(!r.lockFile)
        #expect(r.items == f.model.count)
        reader.close()
        #expect(listing(copy) == ["data.mdb"])
    }
}

/// Parses the text of `gdh dump --tables` (the format of `StoredTables.write`).
private func parseTables(_ text: String) -> StoredTables? {
    var lines = text.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }[...]
    guard let first = lines.popFirst(), first.count == 2, first[0] == "tables", let m = Int(first[1]) else { return nil }
    var tables: [StoredTables.Table] = []
    for j in 0..<m {
        guard let h = lines.popFirst(), h.count == 10, h[0] == "table", h[1] == String(j),
              let offset = Int(h[3]), let bits = Int(h[5]), let n = Int(h[7]), let values = Int(h[9]) else { return nil }
        var offsets = [UInt32](repeating: 0, count: (1 << bits) + 1)
        var ids: [UInt32] = []
        var last = -1
        for _ in 0..<values {
            guard let l = lines.popFirst(), l[0].count == (bits + 3) / 4, let v = Int(l[0], radix: 16), v > last else { return nil }
            // Buckets between the last value and this one are empty.
            for u in (last + 1)...v { offsets[u] = UInt32(ids.count) }
            ids += l.dropFirst().compactMap { UInt32($0) }
            last = v
        }
        for u in (last + 1)...(1 << bits) { offsets[u] = UInt32(ids.count) }
        guard ids.count == n else { return nil }
        tables.append(StoredTables.Table(offset: offset, bits: bits, offsets: offsets, ids: ids))
    }
    guard let p = lines.popFirst(), p.count == 2, p[0] == "pending", let count = Int(p[1]) else { return nil }
    let pending = lines.prefix(count).compactMap { $0.count == 1 ? UInt32($0[0]) : nil }
    guard pending.count == count, lines.count == count else { return nil }
    return StoredTables(tables: tables, pending: pending)
}
