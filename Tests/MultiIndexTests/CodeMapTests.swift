import Testing
import HammingCode
@testable import MultiIndex

/// The id → position map of `CodeStorage`: a dense array from a base id up plus a sorted
/// side table for the live ids below it, checked against a Dictionary.
@Suite("CodeArray id map: dense part from a base, side table below it")
struct CodeMapTests {
    /// Every lookup the map answers, against the oracle: live ids (code and position),
    /// dead and never-used ids, ascending iteration whole and in pieces.
    func expectAgrees(_ codes: CodeArray, _ oracle: [UInt32: HammingCode], probes: [UInt32], _ label: String) {
        let st = codes.storage
        #expect(codes.liveCount == oracle.count, "\(label) live count")
        #expect(st.liveCount == oracle.count, "\(label) storage live count")
        for (id, c) in oracle {
            guard let p = st.position(of: id) else { Issue.record("\(label): id \(id) not found"); continue }
            #expect(st.ids[p] == id && st.isLive(position: p), "\(label): id \(id) at position \(p)")
            #expect(codes.code(id) == c, "\(label): code of \(id)")
        }
        for id in probes where oracle[id] == nil {
            #expect(st.position(of: id) == nil && !codes.isLive(id), "\(label): dead id \(id) found")
        }
        var seen: [UInt32] = []
        codes.forEachLive { seen.append($0) }
        let want = oracle.keys.sorted()
        #expect(seen == want, "\(label) forEachLive")
        // In pieces of 7 map entries, as a check or a snapshot goes.
        var pieces: [UInt32] = []
        var next = 0, done = false, calls = 0
        while !done {
            (next, done) = st.forEachMapped(from: next, below: Int.max, budget: 7) { id, p in
                #expect(st.ids[p] == id)
                pieces.append(id)
            }
            calls += 1
            if calls > 10_000_000 { Issue.record("\(label): iteration does not end"); break }
        }
        #expect(pieces == want, "\(label) forEachMapped in pieces")
    }

    @Test("random adds, updates, deletes and rebases over ids spanning far beyond the live set agree with a Dictionary",
          arguments: [UInt64(1), 2, 3, 4])
    func againstDictionary(seed: UInt64) throws {
        var rng = SplitMix(seed: seed)
        let w = try CodeWidth(bits: 64)
        let codes = CodeArray(width: w, capacity: 16)
        var oracle: [UInt32: HammingCode] = [:]
        var live: [UInt32] = []
        var next: UInt32 = UInt32.random(in: 0..<1000, using: &rng)
        var probes: [UInt32] = []
        var sideTableUsed = 0
        func liveIndex(_ id: UInt32) -> Int? { live.firstIndex(of: id) }
        for step in 0..<6000 {
            let r = Int.random(in: 0..<100, using: &rng)
            if r < 40 {
                // A new id, as a store assigns them: ascending, often with gaps.
                next += UInt32.random(in: 1...(step % 500 < 250 ? 3 : 60), using: &rng)
                let c = randomCode(w, &rng)
                #expect(!codes.set(next, c))
                oracle[next] = c
                live.append(next)
                probes.append(next)
            } else if r < 45 {
                // Any id at all (below the base too, or a dead one again).
                let id = UInt32.random(in: 0...(next + 100), using: &rng)
                let c = randomCode(w, &rng)
                #expect(codes.set(id, c) == (oracle[id] != nil))
                if oracle[id] == nil { live.append(id) }
                oracle[id] = c
                next = max(next, id)
                probes.append(id)
            } else if r < 60, !live.isEmpty {
                let id = live[Int.random(in: 0..<live.count, using: &rng)]
                let c = randomCode(w, &rng)
                #expect(codes.set(id, c))
                oracle[id] = c
            } else if r < 97, !live.isEmpty {
                // Deletes mostly of recent ids, sometimes of old ones: a few old ids outlive the rest.
                let k = Bool.random(using: &rng) ? live.count - 1 - Int.random(in: 0..<min(live.count, 50), using: &rng)
                                                  : Int.random(in: 0..<live.count, using: &rng)
                let id = live.remove(at: k)
                #expect(codes.remove(id))
                oracle[id] = nil
                #expect(!codes.remove(id))
            } else if r < 99 {
                // A compaction: new storage with the map rebased.
                if let s = codes.compacted() { codes.adopt(s) }
            } else {
                // A rebase of the map in place.
                codes.storage.rebuildMap()
            }
            if step % 500 == 0 { expectAgrees(codes, oracle, probes: probes, "seed \(seed) step \(step)") }
            sideTableUsed = max(sideTableUsed, codes.storage.olderLive)
        }
        // The side table was in use (and so was the dense part).
        #expect(sideTableUsed > 0 && codes.storage.liveCount > codes.storage.olderLive)
        expectAgrees(codes, oracle, probes: probes + (0..<200).map { _ in UInt32.random(in: 0...(next + 5000), using: &rng) },
                     "seed \(seed) end")
        codes.storage.rebuildMap()
        expectAgrees(codes, oracle, probes: probes, "seed \(seed) rebuilt")
        let copy = codes.denseCopy()
        codes.adopt(copy)
        expectAgrees(codes, oracle, probes: probes, "seed \(seed) dense copy")
    }

    @Test("after churn over a million ids with a few thousand live, a compaction leaves a map by the live ids, not the span; old live ids go to the side table")
    func memoryFollowsLiveIDs() throws {
        var rng = SplitMix(seed: 9)
        let w = try CodeWidth(bits: 64)
        let codes = CodeArray(width: w)
        var oracle: [UInt32: HammingCode] = [:]
        // 20 ids that live through the churn.
        for id in 0..<20 as Range<UInt32> { let c = randomCode(w, &rng); codes.set(id, c); oracle[id] = c }
        var window: [UInt32] = []
        var next: UInt32 = 20
        for _ in 0..<1_000_000 {
            let c = randomCode(w, &rng)
            codes.set(next, c); oracle[next] = c
            window.append(next)
            next += 1
            if window.count > 5000 {
                let id = takeRandom(&window, &rng)
                codes.remove(id); oracle[id] = nil
            }
        }
        #expect(codes.liveCount == 5020)
        // Before: the dense part spans every id ever placed.
        #expect(codes.storage.mapBytes >= 4 * 1_000_000)
        let s = try #require(codes.compacted())
        codes.adopt(s)
        let st = codes.storage
        // The 20 old ids below the base, in the side table (with the oldest of the window,
        // whose ids lie sparse); the rest dense.
        let older = st.olderCount
        #expect(older >= 20 && older < 5020 / 2 && st.olderLive == older)
        #expect(st.idBase > 20)
        #expect(st.mapBytes < 200_000, "map bytes \(st.mapBytes) for 5,020 live ids")
        #expect(!st.mapIsSparse)
        expectAgrees(codes, oracle, probes: [0, 5, 19, 20, 21, 500_000, next - 1, next, next + 10], "compacted")
        // Old ids: updated, deleted, placed again; new ids still go to the dense part.
        let c = randomCode(w, &rng)
        #expect(codes.set(3, c)); oracle[3] = c
        #expect(codes.remove(4)); oracle[4] = nil
        #expect(st.olderLive == older - 1)
        #expect(!codes.set(4, c)); oracle[4] = c
        #expect(st.olderLive == older && st.olderCount == older)
        let before = st.idCapacity
        for _ in 0..<100 { let c = randomCode(w, &rng); codes.set(next, c); oracle[next] = c; next += 1 }
        #expect(st.idCapacity == before && st.olderCount == older)
        expectAgrees(codes, oracle, probes: [4, 5, 21, next, next + 1], "after changes to old ids")
    }

    @Test("ids placed in descending order grow the dense part down instead of filling the side table")
    func descendingIDs() throws {
        var rng = SplitMix(seed: 4)
        let w = try CodeWidth(bits: 64)
        let codes = CodeArray(width: w, capacity: 64)
        var oracle: [UInt32: HammingCode] = [:]
        for id in stride(from: UInt32(50_000), through: 0, by: -1) {
            let c = randomCode(w, &rng)
            codes.set(id, c); oracle[id] = c
        }
        #expect(!codes.ordered)
        #expect(codes.storage.olderCount < 2048)
        #expect(codes.storage.mapBytes < 4 * 50_001 * 3)
        expectAgrees(codes, oracle, probes: [50_001, 60_000], "descending")
        if let s = codes.compacted() { codes.adopt(s) }
        #expect(codes.ordered && codes.storage.olderCount == 0)
        expectAgrees(codes, oracle, probes: [50_001, 60_000], "descending, compacted")
    }

    @Test("an empty array, one emptied by deletes, and one whose first id is large")
    func edgeCases() throws {
        let w = try CodeWidth(bits: 64)
        let codes = CodeArray(width: w)
        expectAgrees(codes, [:], probes: [0, 1, UInt32.max - 1], "empty")
        codes.storage.rebuildMap()
        expectAgrees(codes, [:], probes: [0, 1], "empty rebuilt")
        var rng = SplitMix(seed: 2)
        var oracle: [UInt32: HammingCode] = [:]
        // The dense part starts at the first id placed.
        for id in [UInt32(3_000_000_000), 3_000_000_001, 3_000_000_100] {
            let c = randomCode(w, &rng); codes.set(id, c); oracle[id] = c
        }
        #expect(codes.storage.mapBytes < 64 * 1024)
        expectAgrees(codes, oracle, probes: [0, 2_999_999_999, 3_000_000_002], "large ids")
        for id in Array(oracle.keys) { codes.remove(id); oracle[id] = nil }
        if let s = codes.compacted() { codes.adopt(s) }
        expectAgrees(codes, oracle, probes: [3_000_000_000, 3_000_000_100], "emptied")
        let c = randomCode(w, &rng)
        codes.set(7, c); oracle[7] = c
        expectAgrees(codes, oracle, probes: [3_000_000_000, 6, 8], "a low id after")
    }
}

@Suite("MultiIndex over a sparse id span")
struct MultiIndexSparseIDTests {
    @Test("churn over a wide id span with old ids kept: snapshots in pieces (with changes between pieces), staged installs and checks stay exact, and the installed map follows the live ids")
    func churnWithFolds() throws {
        var rng = SplitMix(seed: 61)
        let w = try CodeWidth(bits: 64)
        let index = try MultiIndex(width: w, m: 4)
        var items: [UInt32: HammingCode] = [:]
        let centre = randomCode(w, &rng)
        func make() -> HammingCode { noisy(centre, p: 0.12, &rng) }
        for id in 0..<50 as Range<UInt32> { let c = make(); index.upsert(id, c); items[id] = c }
        var window: [UInt32] = []
        var next: UInt32 = 50
        func churn(_ n: Int, _ changed: inout Set<UInt32>) {
            for _ in 0..<n {
                let c = make()
                index.upsert(next, c); items[next] = c; changed.insert(next)
                window.append(next)
                next += 1
                if window.count > 2000 {
                    let id = takeRandom(&window, &rng)
                    index.remove(id); items[id] = nil; changed.insert(id)
                }
                if Int.random(in: 0..<50, using: &rng) == 0 {
                    // An old id replaced, or deleted and... kept deleted.
                    let id = UInt32.random(in: 0..<50, using: &rng)
                    if items[id] != nil {
                        if Bool.random(using: &rng) { let c = make(); index.upsert(id, c); items[id] = c } else { index.remove(id); items[id] = nil }
                        changed.insert(id)
                    }
                }
            }
        }
        for round in 0..<4 {
            var changed = Set<UInt32>()
            churn(60_000, &changed)
            changed = []
            let copy = try index.startSnapshot(m: index.m)
            var pieces = 0
            while !index.continueSnapshot(copy, ids: 4096) {
                pieces += 1
                churn(50, &changed)
            }
            #expect(pieces > 0)
            let snapshot = index.finishSnapshot(copy, changed: changed)
            let staged = MultiIndex.stage(snapshot.build())
            churn(300, &changed)
            MultiIndex.carry(index.capture(changed.sorted()), into: staged)
            var more = Set<UInt32>()
            churn(100, &more)
            index.install(staged, changedSince: more)
            let st = index.codes.storage
            #expect(index.count == items.count)
            #expect(index.codes.ordered, "round \(round)")
            // About 2,000 recent live ids and up to 50 old ones, over a span of 60,000+ ids a round.
            #expect(st.mapBytes < 64 * 1024, "round \(round): map bytes \(st.mapBytes), span \(next)")
            #expect(try index.check() >= 0)
            var p = MultiIndex.CheckProgress()
            while try !index.checkStep(&p, budget: 300) {}
            for t in 0..<6 {
                let q = t % 2 == 0 ? make() : randomCode(w, &rng)
                let truth = bruteForce(items, q)
                #expect(index.knn(q, k: 20) == Array(truth.prefix(20)), "round \(round)")
                #expect(index.range(q, radius: 10) == truth.filter { $0.distance <= 10 }, "round \(round)")
            }
            for id in 0..<50 as Range<UInt32> { #expect(index.codes.code(id) == items[id]) }
            for id in window.suffix(100) { #expect(index.codes.code(id) == items[id]) }
        }
        // A rebuild in place rebases too.
        var changed = Set<UInt32>()
        churn(60_000, &changed)
        #expect(index.codes.storage.mapBytes > 200_000)
        try index.rebuild()
        #expect(index.codes.storage.mapBytes < 64 * 1024)
        #expect(try index.check() == 0)
    }
}

/// Removes and returns a random id of `window` (the last one takes its place): the churn
/// tests' sliding window of ids that may be deleted.
private func takeRandom(_ window: inout [UInt32], _ rng: inout SplitMix) -> UInt32 {
    let k = Int.random(in: 0..<window.count, using: &rng)
    let id = window[k]
    window[k] = window[window.count - 1]
    window.removeLast()
    return id
}
