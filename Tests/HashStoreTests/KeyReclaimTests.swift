import Foundation
import Testing
import HammingCode
import MultiIndex
@testable import HashStore

/// Giving back the key index's garbage: removed keys' bytes and the id → location entries of
/// ids no longer held (ids are never reused, so without this both grow with every id).
/// A `KeyIndex` under random inserts, removes and look-ups, with a dictionary beside it.
private struct KeyModel {
    let keys = KeyIndex()
    var oracle: [String: UInt32] = [:]
    var keyOfID: [UInt32: String] = [:]
    var removedAt: [UInt32: UInt64] = [:]
    var next: UInt32 = 0
    var generation: UInt64 = 0

    /// Op 0-2 inserts `key` when absent, 3-4 removes it, any other looks it up; each
    /// checked against the dictionary.
    mutating func step(_ op: UInt64, _ key: String, at step: Int) {
        switch op {
        case 0, 1, 2:
            if oracle[key] == nil {
                keys.insert(key.utf8, id: next)
                oracle[key] = next
                keyOfID[next] = key
                next += 1
            }
        case 3, 4:
            generation += 1
            let id = keys.remove(key.utf8, generation: generation)
            #expect(id == oracle.removeValue(forKey: key), "remove \(key) at step \(step)")
            if let id { removedAt[id] = generation }
        default:
            #expect(keys.lookup(key) == oracle[key], "lookup \(key) at step \(step)")
        }
    }

    /// Every key held resolves both ways; every key removed after `safe` still resolves by id.
    func expectAgrees(safe: UInt64, _ label: String) {
        #expect(keys.count == oracle.count, "\(label)")
        for (key, id) in oracle {
            #expect(keys.lookup(key) == id, "\(label) lookup \(key)")
            #expect(keys.key(id) == key, "\(label) key \(id)")
        }
        for (id, g) in removedAt where g > safe {
            #expect(keys.withKeyBytes(ofAnyID: id) { String(decoding: $0, as: UTF8.self) } == keyOfID[id], "\(label) removed \(id)")
            #expect(keys.key(id) == nil)
        }
    }
}

@Suite("Key index reclamation")
struct KeyReclaimTests {
    @Test("random inserts and removes with reclaims in between agree with a dictionary", arguments: [1, 2, 3])
    func againstDictionary(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var m = KeyModel()
        var safe: UInt64 = 0
        for step in 0..<60_000 {
            let key = "key-\(rng.next() % 4000)-" + String(repeating: "x", count: Int(rng.next() % 40))
            let op = rng.next() % 8
            if op == 5 && step % 97 == 0 {
                // A reader pinned a generation a little while ago.
                safe = m.generation > 20 ? m.generation - 20 : 0
                m.keys.reclaim(keepingRemovedAfter: safe)
            } else {
                m.step(op, key, at: step)
            }
        }
        // Removed ids still resolve while a reclaim may not drop them (removed after `safe`).
        m.expectAgrees(safe: safe, "end")
    }

    @Test("reclaims built in small pieces while keys are inserted and removed between the pieces agree with a dictionary",
          arguments: [UInt64(7), 8, 9])
    func inPiecesAgainstDictionary(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var m = KeyModel()
        let keys = m.keys
        var safe: UInt64 = 0
        var finished = 0, maxSteps = 0, steps = 0
        for step in 0..<40_000 {
            let key = "key-\(rng.next() % 3000)-" + String(repeating: "y", count: Int(rng.next() % 30))
            m.step(rng.next() % 8, key, at: step)
        if keys.reclaiming == nil, step % 301 == 0 {
                safe = m.generation > 30 ? m.generation - 30 : 0
                keys.startReclaim(keepingRemovedAfter: safe)
                steps = 0
            } else if keys.reclaiming != nil, step % 3 == 0 {
                // A piece of a few dozen ids; the swap once a step says so (or, now and then,
                // as soon as the copy is done, with the journal left to the swap).
                steps += 1
                let ready = keys.reclaimStep(budget: 400)
                if let w = keys.reclaiming, ready || (w.scanned && w.zeroDone && w.copyNext == w.held.count && rng.next() % 4 == 0) {
                    withExtendedLifetime(keys.finishReclaim()) {}
                    finished += 1
                    maxSteps = max(maxSteps, steps)
                    if finished % 10 == 0 { m.expectAgrees(safe: safe, "after reclaim \(finished) at step \(step)") }
                }
            }
        }
        if keys.reclaiming != nil {
            while !keys.reclaimStep(budget: 400) {}
            withExtendedLifetime(keys.finishReclaim()) {}
        }
        #expect(finished > 20 && maxSteps > 3, "reclaims \(finished), longest \(maxSteps) steps")
        m.expectAgrees(safe: safe, "end")
        // A whole reclaim (no reader pinned) leaves no removed key.
        safe = m.generation
        keys.reclaim(keepingRemovedAfter: safe)
        m.expectAgrees(safe: safe, "after a whole reclaim")
        #expect(keys.garbageBytes < 8 * Int(m.next) / 2)
    }

    @Test("a reclaim drops removed keys up to the safe generation only, and memory follows the keys held")
    func dropsOnlyWhatIsSafe() {
        let keys = KeyIndex()
        let long = String(repeating: "k", count: 100)
        for i in 0..<50_000 { keys.insert("\(long)-\(i)".utf8, id: UInt32(i)) }
        let full = keys.memoryBytes
        // Remove all but every 100th key, half of them in generation 1, half in 2.
        for i in 0..<50_000 where i % 100 != 0 {
            keys.remove("\(long)-\(i)".utf8, generation: i < 25_000 ? 1 : 2)
        }
        #expect(keys.shouldReclaim(safe: 1))
        keys.reclaim(keepingRemovedAfter: 1)
        #expect(keys.withKeyBytes(ofAnyID: 1) { $0.count } == 0)          // generation 1: dropped
        #expect(keys.withKeyBytes(ofAnyID: 30_001) { String(decoding: $0, as: UTF8.self) } == "\(long)-30001")
        keys.reclaim(keepingRemovedAfter: 2)
        #expect(keys.withKeyBytes(ofAnyID: 30_001) { $0.count } == 0)
        #expect(keys.memoryBytes < full / 4)
        for i in stride(from: 0, to: 50_000, by: 100) {
            #expect(keys.lookup("\(long)-\(i)") == UInt32(i))
            #expect(keys.key(UInt32(i)) == "\(long)-\(i)")
        }
        // New ids go on after the reclaim.
        keys.insert("new".utf8, id: 50_000)
        #expect(keys.lookup("new") == 50_000)
        #expect(keys.key(50_000) == "new")
        #expect(keys.count == 501)
    }

    @Test("the base id minimises the array plus the hash of the ids below it")
    func cheapestBase() {
        // Dense ids: the array from the first.
        #expect(KeyIndex.cheapestBase(held: Array(UInt32(10)..<1000), end: 1000) == 10)
        // A few old survivors, then dense recent ids: the base skips the survivors.
        let held: [UInt32] = [3, 500, 9000] + Array(UInt32(100_000)..<110_000)
        #expect(KeyIndex.cheapestBase(held: held, end: 110_000) == 100_000)
        // Nothing held: no array.
        #expect(KeyIndex.cheapestBase(held: [UInt32](), end: 5000) == 5000)
    }

    @Test("a reclaim begun by a batch of deletes finishes with continueReclaim alone, no further batch")
    func reclaimWithoutBatches() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SplitMix64(seed: 6)
        let w = try CodeWidth(bits: 64)
        let pad = String(repeating: "q", count: 120)
        let store = try HashStore(directory: dir, options: StoreOptions(bits: 64))
        defer { store.close() }
        let n = 300_000
        for start in stride(from: 0, to: n, by: 50_000) {
            _ = try store.apply((start..<start + 50_000).map { .add(key: "\(pad)-\($0)", code: code(w, &rng)) })
        }
        #expect(!store.reclaimUnderWay)
        #expect(!store.continueReclaim())
        let before = store.keyReclaims
        _ = try store.apply((1000..<n).map { .delete(key: "\(pad)-\($0)") })
        // Begun after the deletes' batch, a piece at a time (the ids span several pieces).
        #expect(store.reclaimUnderWay)
        var pieces = 0
        while store.continueReclaim() && pieces < 1000 { pieces += 1 }
        #expect(!store.reclaimUnderWay)
        #expect(store.keyReclaims == before + 1)
        for i in [0, 500, 999] { #expect(store.id(of: "\(pad)-\(i)") == UInt32(i)) }
        #expect(store.id(of: "\(pad)-1000") == nil)
        #expect(try store.apply([.add(key: "new", code: code(w, &rng))]) == [.added(id: UInt32(n))])
    }

    @Test("a pinned reader's deleted keys survive reclaims until the pin is dropped; ids stay unique across a reopen")
    func pinnedStore() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SplitMix64(seed: 5)
        let w = try CodeWidth(bits: 64)
        let pad = String(repeating: "p", count: 120)
        var store: HashStore? = try HashStore(directory: dir, options: StoreOptions(bits: 64))
        let n = 20_000
        for start in stride(from: 0, to: n, by: 5000) {
            _ = try store!.apply((start..<start + 5000).map { .add(key: "\(pad)-\($0)", code: code(w, &rng)) })
        }
        // A reader pins, finds every item, then all but 500 are deleted (enough garbage to reclaim).
        var stats = SearchStats()
        var pin: KeyPin? = store!.pinKeys()
        let results = store!.rangePacked(HammingCode(width: w, words: [0]), radius: 64, stats: &stats)
        #expect(results.count == n)
        try withExtendedLifetime(pin) {
            for start in stride(from: 500, to: n, by: 5000) {
                _ = try store!.apply((start..<min(n, start + 5000)).map { .delete(key: "\(pad)-\($0)") })
            }
            _ = try store!.apply([.add(key: "after", code: code(w, &rng))])
            var resolved = 0
            _ = store!.forEachKey(of: results[...]) { key, _ in
                if String(decoding: key, as: UTF8.self).hasPrefix(pad) { resolved += 1 }
                return true
            }
            #expect(resolved == n)
        }
        let reclaimsPinned = store!.keyReclaims
        // Released: the batches that follow reclaim the deleted keys (a reclaim goes a piece
        // a batch; one begun under the pin keeps them, the next one drops them).
        pin = nil
        func emptied() -> Int {
            var empty = 0
            _ = store!.forEachKey(of: results[...]) { key, _ in
                if key.isEmpty { empty += 1 }
                return true
            }
            return empty
        }
        _ = try store!.apply([.delete(key: "after")])
        var batches = 1
        while emptied() < n - 500 && batches < 40 {
            _ = try store!.apply([.add(key: "after-\(batches)", code: code(w, &rng))])
            batches += 1
        }
        #expect(store!.keyReclaims > reclaimsPinned)
        #expect(emptied() == n - 500, "after \(batches) batches")
        for i in 0..<500 { #expect(store!.id(of: "\(pad)-\(i)") == UInt32(i)) }
        // Ids are never reused, also after reclaims and a reopen.
        store!.close()
        store = try HashStore(directory: dir, options: StoreOptions(bits: 64))
        defer { store!.close() }
        #expect(try store!.apply([.add(key: "fresh", code: code(w, &rng))]) == [.added(id: UInt32(n + batches))])
        #expect(store!.id(of: "\(pad)-499") == 499)
        #expect(store!.id(of: "\(pad)-500") == nil)
    }
}

/// COMPACT frees the old data file in steps only when nobody else can still read it.
@Suite("Old data file release")
struct OldFileReleaseTests {
    private func makeFile(_ path: String, bytes: Int) {
        FileManager.default.createFile(atPath: path, contents: Data(repeating: 7, count: bytes))
    }

    @Test("a file no one holds is removed; one held open keeps every byte for its holder; the live file is never truncated")
    func release() throws {
        let dir = tempDir()
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let old = dir + "/old", live = dir + "/live"
        makeFile(live, bytes: 10)
        // Alone: shrunk and unlinked.
        makeFile(old, bytes: 70 << 20)
        HashStore.releaseOldFile(old, unlessSameAs: live)
        #expect(!FileManager.default.fileExists(atPath: old))
        // Held open by a reader: unlinked only, the reader still sees the whole file.
        makeFile(old, bytes: 40 << 20)
        let reader = open(old, O_RDONLY)
        #expect(reader >= 0)
        HashStore.releaseOldFile(old, unlessSameAs: live)
        #expect(!FileManager.default.fileExists(atPath: old))
        var st = stat()
        #expect(fstat(reader, &st) == 0 && st.st_size == 40 << 20)
        close(reader)
        // A second name of the live file: only that name goes.
        #expect(link(live, old) == 0)
        HashStore.releaseOldFile(old, unlessSameAs: live)
        #expect(!FileManager.default.fileExists(atPath: old))
        #expect(HashStore.fileSize(live) == 10)
    }
}
