import CLMDB
import Foundation
import Testing
import HammingCode
import MultiIndex
@testable import HashStore

func tempDir() -> String {
    let p = NSTemporaryDirectory() + "gdh-store-\(UUID().uuidString)"
    return p
}

func code(_ w: CodeWidth, _ rng: inout SplitMix64) -> HammingCode {
    HammingCode(width: w, words: (0..<w.words).map { _ in rng.next() })
}

/// Brute force over a dictionary of key → code, ordered by (distance, insertion order).
func oracle(_ items: [String: HammingCode], order: [String: UInt32], _ q: HammingCode) -> [(String, Int)] {
    items.map { ($0.key, $0.value.distance(to: q)) }
        .sorted { $0.1 != $1.1 ? $0.1 < $1.1 : order[$0.0]! < order[$1.0]! }
}

@Suite("HashStore on LMDB")
struct HashStoreTests {
    @Test("random batches with repeated keys: every outcome and the final state match a model")
    func repeatedKeysInBatches() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SplitMix64(seed: 11)
        let w = try CodeWidth(bits: 64)
        let store = try HashStore(directory: dir, options: StoreOptions(bits: 64))
        defer { store.close() }
        var model: [String: (UInt32, HammingCode)] = [:]
        var next: UInt32 = 0
        for round in 0..<60 {
            // Batch sizes from 1 to a few thousand, so the batch key table grows and is reused.
            let size = 1 + Int(rng.next() % (round % 7 == 0 ? 3000 : 40))
            var batch = [WriteOp](), want = [WriteOutcome]()
            for _ in 0..<size {
                let key = "k\(rng.next() % 50)"
                if rng.next() % 3 == 0 {
                    batch.append(.delete(key: key))
                    want.append(.deleted(model.removeValue(forKey: key) != nil))
                } else {
                    let c = code(w, &rng)
                    let id = model[key]?.0 ?? next
                    if model[key] == nil { next += 1 }
                    model[key] = (id, c)
                    batch.append(.add(key: key, code: c))
                    want.append(.added(id: id))
                }
            }
            #expect(try store.apply(batch) == want)
        }
        #expect(store.count == model.count)
        for (key, (id, c)) in model {
            #expect(store.id(of: key) == id)
            #expect(store.get(key) == c)
        }
        #expect(try store.verify().items == model.count)
    }

    @Test("create, write, reopen: items, ids and answers persist (codes in place and wider ones in an array)",
          arguments: [128, 288, 512])
    func persistence(bits: Int) throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SplitMix64(seed: UInt64(bits))
        let w = try CodeWidth(bits: bits)
        var items: [String: HammingCode] = [:]
        var ids: [String: UInt32] = [:]
        do {
            let store = try HashStore(directory: dir, options: StoreOptions(bits: bits))
            defer { store.close() }
            var batch = [WriteOp]()
            for i in 0..<3000 {
                let c = code(w, &rng)
                batch.append(.add(key: "k\(i)", code: c))
                items["k\(i)"] = c
            }
            let out = try store.apply(batch)
            for (i, o) in out.enumerated() {
                #expect(o == .added(id: UInt32(i)))
                ids["k\(i)"] = UInt32(i)
            }
            // Replace keeps the id; delete reports existence.
            let c = code(w, &rng)
            #expect(try store.apply([.add(key: "k5", code: c)]) == [.added(id: 5)])
            items["k5"] = c
            #expect(try store.apply([.delete(key: "k6"), .delete(key: "k6"), .delete(key: "nope")]) == [.deleted(true), .deleted(false), .deleted(false)])
            items["k6"] = nil
            // A batch that changes nothing (the mirror gets no change at all).
            #expect(try store.apply([.delete(key: "absent"), .delete(key: "k6")]) == [.deleted(false), .deleted(false)])
            // Add then delete then add again in one batch: a new id.
            #expect(try store.apply([.add(key: "x", code: c), .delete(key: "x"), .add(key: "x", code: c)]) == [.added(id: 3000), .deleted(true), .added(id: 3001)])
            items["x"] = c; ids["x"] = 3001
            #expect(store.get("k5") == c)
            #expect(store.get("k6") == nil)
        }
        let store = try HashStore(directory: dir)
        defer { store.close() }
        #expect(store.width.bits == bits)
        #expect(store.count == items.count)
        #expect(store.get("k5") == items["k5"])
        #expect(store.id(of: "x") == 3001)
        let v = try store.verify()
        #expect(v.items == items.count)
        for _ in 0..<20 {
            let q = code(w, &rng)
            var s = SearchStats()
            let got = store.knn(q, k: 7, stats: &s).map { ($0.key, $0.distance) }
            let want = Array(oracle(items, order: ids, q).prefix(7))
            #expect(got.map(\.0) == want.map(\.0))
            #expect(got.map(\.1) == want.map(\.1))
            let r = store.range(q, radius: 50, stats: &s).map(\.distance)
            #expect(r == oracle(items, order: ids, q).map(\.1).filter { $0 <= 50 })
        }
        // Adding after reopen continues the id sequence.
        #expect(try store.apply([.add(key: "after", code: code(w, &rng))]) == [.added(id: 3002)])
    }

    @Test("a second store on the same directory is refused")
    func exclusive() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try HashStore(directory: dir)
        #expect(throws: StoreError.self) { try HashStore(directory: dir) }
        a.close()
        let b = try HashStore(directory: dir)
        b.close()
    }

    @Test("a width that differs from the database's is refused")
    func widthMismatch() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try HashStore(directory: dir, options: StoreOptions(bits: 64)).close()
        #expect(throws: StoreError.self) { try HashStore(directory: dir, options: StoreOptions(bits: 128)) }
        #expect(throws: StoreError.self) { try HashStore(directory: tempDir(), options: StoreOptions(bits: 40)) }
    }

    @Test("the map grows by itself and rebuild with another m keeps answers exact")
    func growAndRebuild() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var opts = StoreOptions(bits: 64)
        opts.initialMapSize = 1 << 20
        opts.foldThreshold = 500
        let store = try HashStore(directory: dir, options: opts)
        defer { store.close() }
        var rng = SplitMix64(seed: 7)
        let w = try CodeWidth(bits: 64)
        var items: [String: HammingCode] = [:], order: [String: UInt32] = [:]
        for b in 0..<20 {
            var batch = [WriteOp]()
            for i in 0..<1000 {
                let key = "item-\(b)-\(i)-" + String(repeating: "p", count: 40)
                let c = code(w, &rng)
                batch.append(.add(key: key, code: c)); items[key] = c; order[key] = UInt32(b * 1000 + i)
            }
            _ = try store.apply(batch)
        }
        #expect(store.count == 20_000)
        #expect(try store.verify().items == 20_000)
        for m in [3, 5, 8] {
            #expect(try store.rebuild(m: m) == m)
            #expect(try store.verify().stale == 0)
            store.planner = .multiIndex
            let q = code(w, &rng)
            var s = SearchStats()
            #expect(store.knn(q, k: 10, stats: &s).map(\.distance) == oracle(items, order: order, q).prefix(10).map(\.1))
        }
        #expect(throws: StoreError.self) { try store.rebuild(m: 2) }
        #expect(store.statistics().first { $0.0 == "substrings_setting" }?.1 == "8")
    }

    @Test("deleting most items gives the scan positions back; ids, answers and a reopen stay right")
    func deletesGiveSpaceBack() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var opts = StoreOptions(bits: 64)
        opts.foldThreshold = 300
        var store = try HashStore(directory: dir, options: opts)
        var rng = SplitMix64(seed: 19)
        let w = try CodeWidth(bits: 64)
        let centre = code(w, &rng)
        var items: [String: HammingCode] = [:], order: [String: UInt32] = [:]
        for b in 0..<10 {
            var batch = [WriteOp]()
            for i in 0..<1000 {
                // Clustered, so that probing finds neighbours and ties occur.
                var c = centre
                for bit in 0..<64 where rng.next() % 12 == 0 { c = c.flipping(bit) }
                batch.append(.add(key: "k\(b * 1000 + i)", code: c))
                items["k\(b * 1000 + i)"] = c
            }
            for (o, id) in try store.apply(batch).enumerated() {
                if case .added(let i) = id { order["k\(b * 1000 + o)"] = i }
            }
        }
        // Delete 90% in batches of 500, leaving every tenth key.
        let doomed = (0..<10_000).filter { $0 % 10 != 4 }
        for start in stride(from: 0, to: doomed.count, by: 500) {
            _ = try store.apply(doomed[start..<min(start + 500, doomed.count)].map { .delete(key: "k\($0)") })
        }
        for i in doomed { items["k\(i)"] = nil }
        #expect(store.count == 1000)
        #expect(store.scanPositions <= 1000 + 300, "scan positions \(store.scanPositions)")
        func expectExact(_ s: HashStore) {
            for (k, _) in items.prefix(50) { #expect(s.id(of: k) == order[k]) }
            for mode in PlannerMode.allCases {
                s.planner = mode
                for _ in 0..<5 {
                    var q = centre
                    for bit in 0..<64 where rng.next() % 12 == 0 { q = q.flipping(bit) }
                    let want = oracle(items, order: order, q)
                    var st = SearchStats()
                    #expect(s.knn(q, k: 20, stats: &st).map(\.key) == want.prefix(20).map(\.0), "mode \(mode)")
                    #expect(s.range(q, radius: 8, stats: &st).map(\.key) == want.filter { $0.1 <= 8 }.map(\.0))
                }
            }
        }
        expectExact(store)
        // A few more deletes and adds stay in the delta and pending; reopen from that state.
        _ = try store.apply((0..<40).map { .delete(key: "k\($0 * 10 + 4)") })
        for i in 0..<40 { items["k\(i * 10 + 4)"] = nil }
        let added = try store.apply([.add(key: "new", code: centre)])
        if case .added(let i) = added[0] { order["new"] = i; #expect(i == 10_000) }
        items["new"] = centre
        #expect(try store.verify().items == items.count)
        expectExact(store)
        store.close()
        store = try HashStore(directory: dir, options: opts)
        defer { store.close() }
        #expect(store.scanPositions == items.count)
        #expect(try store.verify().items == items.count)
        expectExact(store)
    }

    @Test("compact while another thread writes: every write is kept, the copy catches up, the store verifies")
    func compactDuringWrites() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SplitMix64(seed: 23)
        let w = try CodeWidth(bits: 64)
        var opts = StoreOptions(bits: 64)
        opts.foldThreshold = 4000
        let store = try HashStore(directory: dir, options: opts)
        var model: [String: HammingCode] = [:]
        var batch = [WriteOp]()
        for i in 0..<100_000 {
            let c = code(w, &rng)
            batch.append(.add(key: "key-\(i)", code: c)); model["key-\(i)"] = c
        }
        _ = try store.apply(batch)
        _ = try store.apply((0..<50_000).map { .delete(key: "key-\($0 * 2)") })
        for i in 0..<50_000 { model["key-\(i * 2)"] = nil }
        let done = Atomic(false)
        let result = Atomic<Result<(before: Int, after: Int), Error>?>(nil)
        let t = Thread {
            result.set(Result { try store.compact() })
            done.set(true)
        }
        t.start()
        // Adds, replacements and deletes until the compaction is done (with folds among them).
        var writesDuring = 0, round = 0
        while !done.get() || round < 3 {
            var ops = [WriteOp]()
            for j in 0..<200 {
                let n = round * 200 + j
                switch n % 4 {
                case 0: ops.append(.delete(key: "key-\(n % 100_000)")); model["key-\(n % 100_000)"] = nil
                case 1: let c = code(w, &rng); ops.append(.add(key: "key-\(n % 100_000)", code: c)); model["key-\(n % 100_000)"] = c
                default: let c = code(w, &rng); ops.append(.add(key: "late-\(n)", code: c)); model["late-\(n)"] = c
                }
            }
            _ = try store.apply(ops)
            if !done.get() { writesDuring += ops.count }
            round += 1
        }
        while !done.get() { usleep(1000) }
        let (before, after) = try #require(try result.get()?.get())
        #expect(after < before, "before \(before) after \(after)")
        #expect(writesDuring > 0)
        #expect(store.lastCompactReplayed.catchUp + store.lastCompactReplayed.final > 0)
        #expect(try store.verify().items == model.count)
        for (k, c) in model { #expect(store.get(k) == c, "\(k)") }
        store.close()
        let again = try HashStore(directory: dir)
        defer { again.close() }
        #expect(again.count == model.count)
        #expect(try again.verify().items == model.count)
        for (k, c) in model.prefix(2000) { #expect(again.get(k) == c) }
    }

    @Test("VERIFY beside writes and folds: passes every time and counts the items of its snapshot")
    func verifyDuringWrites() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SplitMix64(seed: 29)
        let w = try CodeWidth(bits: 64)
        var opts = StoreOptions(bits: 64)
        opts.foldThreshold = 3000
        let store = try HashStore(directory: dir, options: opts)
        var model: [String: HammingCode] = [:]
        var batch = [WriteOp]()
        for i in 0..<60_000 {
            let c = code(w, &rng)
            batch.append(.add(key: "key-\(i)", code: c)); model["key-\(i)"] = c
        }
        _ = try store.apply(batch)
        let done = Atomic(false)
        let results = Atomic<[Result<(items: Int, stale: Int), Error>]>([])
        let t = Thread {
            for _ in 0..<6 { let r = Result { try store.verify() }; results.set(results.get() + [r]) }
            done.set(true)
        }
        t.start()
        // Adds, replacements and deletes (and folds) while the checks run.
        var round = 0, counts = Set<Int>()
        while !done.get() {
            var ops = [WriteOp]()
            for j in 0..<300 {
                let n = round * 300 + j
                switch n % 3 {
                case 0: ops.append(.delete(key: "key-\(n % 60_000)")); model["key-\(n % 60_000)"] = nil
                case 1: let c = code(w, &rng); ops.append(.add(key: "key-\(n % 60_000)", code: c)); model["key-\(n % 60_000)"] = c
                default: let c = code(w, &rng); ops.append(.add(key: "late-\(n)", code: c)); model["late-\(n)"] = c
                }
            }
            _ = try store.apply(ops)
            counts.insert(store.count)
            round += 1
        }
        #expect(round > 0)
        let all = results.get()
        #expect(all.count == 6)
        for r in all {
            switch r {
            case .success(let v): #expect(v.items >= 60_000 - round * 100 && v.items <= 60_000 + round * 100, "\(v)")
            case .failure(let e): Issue.record("VERIFY failed beside writes: \(e)")
            }
        }
        #expect(try store.verify().items == model.count)
        for (k, c) in model.prefix(3000) { #expect(store.get(k) == c, "\(k)") }
        store.close()
    }

    @Test("idle and trickle folds: a delta past a sixteenth of the items (at least 65,536 entries a table) is folded when the writer has been idle, or at a write once the interval since the last fold has passed; a smaller one is not")
    func idleAndTrickleFolds() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SplitMix64(seed: 41)
        let w = try CodeWidth(bits: 32)
        var opts = StoreOptions(bits: 32, substrings: 2)
        opts.backgroundFolds = true
        let store = try HashStore(directory: dir, options: opts)
        var model: [String: HammingCode] = [:]
        func add(_ n: Int) throws {
            for start in stride(from: model.count, to: model.count + n, by: 5_000) {
                var ops = [WriteOp]()
                for i in start..<min(start + 5_000, model.count + n) {
                    let c = code(w, &rng)
                    ops.append(.add(key: "k\(i)", code: c))
                    model["k\(i)"] = c
                }
                _ = try store.apply(ops)
            }
        }
        func figure(_ name: String) -> Int { Int(store.statistics().first { $0.0 == name }!.1)! }
        func waitForFolds(_ n: Int) {
            for _ in 0..<1_000 where figure("folds") < n { usleep(10_000) }
        }
        func exact() {
            for _ in 0..<5 {
                let q = code(w, &rng)
                let want = model.values.map { $0.distance(to: q) }.sorted().prefix(20)
                var st = SearchStats()
                #expect(store.knn(q, k: 20, stats: &st).map(\.distance) == Array(want))
            }
        }
        let folds0 = figure("folds")
        // 60,000 entries a table: under the floor of 65,536.
        try add(60_000)
        #expect(!store.wantsIdleFold)
        #expect(!store.foldWhenIdle())
        #expect(figure("delta_entries") == 120_000)
        // 70,000: past the small limit, under the bulk one (262,144).
        try add(10_000)
        #expect(figure("folds") == folds0)
        #expect(store.wantsIdleFold)
        #expect(store.foldWhenIdle())
        // One fold at a time; the writer is told to ask again until it is installed.
        #expect(!store.foldWhenIdle())
        #expect(store.wantsIdleFold)
        waitForFolds(folds0 + 1)
        #expect(figure("folds") == folds0 + 1)
        #expect(figure("delta_entries") == 0)
        #expect(!store.wantsIdleFold)
        exact()
        // A trickle: past the small limit again, no fold at the writes within the interval,
        // one at the first write after it.
        try add(70_000)
        #expect(figure("folds") == folds0 + 1)
        store.writerLock.withLock { store.trickleFoldNanoseconds = 0 }
        try add(10)
        waitForFolds(folds0 + 2)
        #expect(figure("folds") == folds0 + 2)
        #expect(figure("delta_entries") < 100)
        exact()
        store.close()
        // The folded tables were stored: a reopen finds the same items and answers.
        let again = try HashStore(directory: dir, options: opts)
        #expect(try again.verify().items == model.count)
        for _ in 0..<5 {
            let q = code(w, &rng)
            let want = model.values.map { $0.distance(to: q) }.sorted().prefix(20)
            var st = SearchStats()
            #expect(again.knn(q, k: 20, stats: &st).map(\.distance) == Array(want))
        }
        again.close()
    }

    @Test("folds and REBUILD beside the writes: answers exact throughout, stored tables and pending right after a reopen")
    func foldsBesideWrites() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SplitMix64(seed: 31)
        let w = try CodeWidth(bits: 64)
        var opts = StoreOptions(bits: 64)
        opts.foldThreshold = 2000
        opts.backgroundFolds = true
        let store = try HashStore(directory: dir, options: opts)
        var model: [String: HammingCode] = [:]
        let done = Atomic(false)
        let rebuilt = Atomic<[Result<Int, Error>]>([])
        let t = Thread {
            for m in [nil, 4, nil] as [Int?] { rebuilt.set(rebuilt.get() + [Result { try store.rebuild(m: m) }]); usleep(20_000) }
            done.set(true)
        }
        t.start()
        var round = 0
        while !done.get() || round < 40 {
            var ops = [WriteOp]()
            for j in 0..<400 {
                let n = round * 400 + j
                switch n % 5 {
                case 0: ops.append(.delete(key: "k\(n % 9000)")); model["k\(n % 9000)"] = nil
                default: let c = code(w, &rng); ops.append(.add(key: "k\(n % 9000)", code: c)); model["k\(n % 9000)"] = c
                }
            }
            _ = try store.apply(ops)
            if round % 8 == 0 {
                let q = code(w, &rng)
                var st = SearchStats()
                let got = store.knn(q, k: 15, stats: &st).map(\.distance)
                let want = model.values.map { $0.distance(to: q) }.sorted().prefix(15)
                #expect(got == Array(want), "round \(round)")
            }
            round += 1
        }
        for r in rebuilt.get() { if case .failure(let e) = r { Issue.record("REBUILD failed: \(e)") } }
        #expect(store.folds > 3)
        #expect(store.statistics().first { $0.0 == "substrings" }?.1 == "4")
        #expect(try store.verify().items == model.count)
        store.close()
        let again = try HashStore(directory: dir, options: opts)
        defer { again.close() }
        #expect(again.count == model.count)
        #expect(try again.verify().items == model.count)
        for (k, c) in model { #expect(again.get(k) == c, "\(k)") }
        let q = code(w, &rng)
        var st = SearchStats()
        #expect(again.range(q, radius: 20, stats: &st).map(\.distance) == model.values.map { $0.distance(to: q) }.filter { $0 <= 20 }.sorted())
    }

    @Test("compact shrinks the file after deletes and keeps every item")
    func compaction() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SplitMix64(seed: 3)
        let w = try CodeWidth(bits: 64)
        let store = try HashStore(directory: dir, options: StoreOptions(bits: 64))
        var batch = [WriteOp]()
        for i in 0..<60_000 { batch.append(.add(key: "key-number-\(i)", code: code(w, &rng))) }
        _ = try store.apply(batch)
        _ = try store.apply((0..<55_000).map { .delete(key: "key-number-\($0)") })
        let kept = (55_000..<60_000).map { ("key-number-\($0)", store.get("key-number-\($0)")!) }
        let (before, after) = try store.compact()
        #expect(after < before / 3, "before \(before) after \(after)")
        #expect(try store.verify().items == 5000)
        for (k, c) in kept { #expect(store.get(k) == c) }
        // Raw bytes: codes + keys + table ids; the file stays within 2x of them.
        let raw = kept.reduce(0) { $0 + 8 + $1.0.utf8.count + 4 * 4 }
        #expect(after <= 2 * raw + 64 * 4096 + 4 * 4 * (1 << 16), "file \(after) raw \(raw)")
        // Writes still work after the swap, and survive a reopen.
        _ = try store.apply([.add(key: "late", code: kept[0].1)])
        store.close()
        let again = try HashStore(directory: dir)
        defer { again.close() }
        #expect(again.count == 5001)
        #expect(again.get("late") == kept[0].1)
        #expect(try again.verify().items == 5001)
    }
}

@Suite("Packed copies: COMPACT and BACKUP")
struct PackedCopyTests {
    /// A store with `keys` (code of key i from a seeded generator), its tables rebuilt.
    func filled(_ dir: String, _ keys: some Sequence<Int>, deleting doomed: [Int] = []) throws -> HashStore {
        let w = try CodeWidth(bits: 64)
        let store = try HashStore(directory: dir, options: StoreOptions(bits: 64))
        var batch = [WriteOp]()
        for i in keys {
            var r = SplitMix64(seed: UInt64(i) &* 0x9E37_79B9_7F4A_7C15)
            batch.append(.add(key: "item-\(i)", code: code(w, &r)))
            if batch.count == 5000 { _ = try store.apply(batch); batch.removeAll() }
        }
        if !batch.isEmpty { _ = try store.apply(batch) }
        for start in stride(from: 0, to: doomed.count, by: 5000) {
            _ = try store.apply(doomed[start..<min(doomed.count, start + 5000)].map { .delete(key: "item-\($0)") })
        }
        _ = try store.rebuild()
        return store
    }

    @Test("COMPACT after deleting 90% at random leaves the file of a store built with the survivors only")
    func compactAfterDeletes() throws {
        let dirA = tempDir(), dirB = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dirA); try? FileManager.default.removeItem(atPath: dirB) }
        var rng = SplitMix64(seed: 5)
        let n = 40_000
        let survivors = Set((0..<n).filter { _ in rng.next() % 10 == 0 })
        let a = try filled(dirA, 0..<n, deleting: (0..<n).filter { !survivors.contains($0) })
        defer { a.close() }
        let b = try filled(dirB, survivors.sorted())
        defer { b.close() }
        let (before, after) = try a.compact()
        let (_, alone) = try b.compact()
        // LMDB's own compacting copy kept the quarter-full pages the deletes left: about
        // three times the survivors' file.
        #expect(after * 10 <= alone * 11 + 10 * 16 * 4096, "after deletes \(after), survivors only \(alone)")
        #expect(after < before / 3, "before \(before) after \(after)")
        #expect(try a.verify().items == survivors.count)
        let w = try CodeWidth(bits: 64)
        for i in survivors {
            var r = SplitMix64(seed: UInt64(i) &* 0x9E37_79B9_7F4A_7C15)
            #expect(a.get("item-\(i)") == code(w, &r))
        }
        // A backup is the same packed copy.
        let backup = tempDir() + ".mdb"
        defer { unlink(backup) }
        let size = try a.backup(to: backup)
        #expect(size * 10 <= alone * 11 + 10 * 16 * 4096, "backup \(size), survivors only \(alone)")
        #expect(!FileManager.default.fileExists(atPath: backup + ".partial-lock"))
        let restoredDir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: restoredDir) }
        try FileManager.default.createDirectory(atPath: restoredDir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: backup, toPath: restoredDir + "/data.mdb")
        let restored = try HashStore(directory: restoredDir)
        defer { restored.close() }
        #expect(restored.count == survivors.count)
        #expect(try restored.verify().items == survivors.count)
    }

    @Test("a file with a database the store does not know is compacted by LMDB's copy, which keeps it")
    func foreignDatabaseKept() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try filled(dir, 0..<3000, deleting: Array(0..<2000))
        store.close()
        let extra = try Environment(path: dir + "/data.mdb", mapSize: 64 << 20, maxDatabases: HashStore.maxDatabases)
        try extra.write { t in
            let dbi = try t.openDatabase("notes", flags: UInt32(MDB_CREATE))
            try t.putString(dbi, "hello", "world")
        }
        extra.close()
        let again = try HashStore(directory: dir)
        _ = try again.compact()
        #expect(again.count == 1000)
        #expect(try again.verify().items == 1000)
        again.close()
        let check = try Environment(path: dir + "/data.mdb", mapSize: 64 << 20, maxDatabases: HashStore.maxDatabases)
        defer { check.close() }
        let value = try check.read { t in try t.getString(try t.openDatabase("notes", flags: 0), "hello") }
        #expect(value == "world")
    }
}

@Suite("Stored table codec")
struct StoredTableTests {
    @Test("tables round-trip through the stored form, and damage is refused")
    func roundTrip() throws {
        var rng = SplitMix64(seed: 11)
        let w = try CodeWidth(bits: 64)
        let index = try MultiIndex(width: w, m: 5)
        for i in 0..<5000 { index.upsert(UInt32(i), code(w, &rng)) }
        _ = index.remove(17)
        let prepared = try index.prepareTables()
        for j in 0..<prepared.layout.count {
            let (offsets, ids) = prepared.table(j)
            let bits = prepared.layout.sizes[j]
            var blob = [UInt8](repeating: 0xAA, count: StoredTable.encodedSize(bits: bits, ids: ids.count))
            blob.withUnsafeMutableBytes { StoredTable.encode(offsets: offsets, ids: ids, bits: bits, into: $0) }
            let back = try blob.withUnsafeBytes { try StoredTable.decode($0, bits: bits) }
            #expect(back.offsets == Array(offsets))
            #expect(back.ids == Array(ids))
            #expect(throws: (any Error).self) { try blob.withUnsafeBytes { try StoredTable.decode($0, bits: bits + 1) } }
            let cut = Array(blob.dropLast(8))
            #expect(throws: (any Error).self) { try cut.withUnsafeBytes { try StoredTable.decode($0, bits: bits) } }
            var flipped = blob
            flipped[flipped.count - 1] ^= 0xFF
            #expect(throws: (any Error).self) { try flipped.withUnsafeBytes { try StoredTable.decode($0, bits: bits) } }
        }
    }
}

extension StoredTableTests {
    @Test("bucket runs longer than a word, and across word edges, round-trip", arguments: [0, 1, 2])
    func longRuns(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let bits = 6
        // Sizes 0, 1, 63, 64, 65, 130 and random ones, so that runs start at every bit.
        var sizes = [0, 1, 63, 64, 65, 130, 0, 0, 127, 128, 129, 1]
        while sizes.count < 1 << bits { sizes.append(Int(rng.next() % 150)) }
        var offsets: [UInt32] = [0]
        for c in sizes { offsets.append(offsets.last! + UInt32(c)) }
        let ids = (0..<Int(offsets.last!)).map { UInt32($0) }
        var blob = [UInt8](repeating: 0xAA, count: StoredTable.encodedSize(bits: bits, ids: ids.count))
        offsets.withUnsafeBufferPointer { o in
            ids.withUnsafeBufferPointer { i in
                blob.withUnsafeMutableBytes { StoredTable.encode(offsets: o, ids: i, bits: bits, into: $0) }
            }
        }
        let back = try blob.withUnsafeBytes { try StoredTable.decode($0, bits: bits) }
        #expect(back.offsets == offsets)
        #expect(back.ids == ids)
    }
}

/// A flag shared between threads.
final class Atomic<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    init(_ v: T) { value = v }
    func get() -> T { lock.lock(); defer { lock.unlock() }; return value }
    func set(_ v: T) { lock.lock(); value = v; lock.unlock() }
}
