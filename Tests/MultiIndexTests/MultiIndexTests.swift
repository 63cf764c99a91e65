import Testing
import HammingCode
@testable import MultiIndex

typealias SplitMix = SplitMix64

func randomCode(_ w: CodeWidth, _ rng: inout SplitMix) -> HammingCode {
    HammingCode(width: w, words: (0..<w.words).map { _ in rng.next() })
}

/// A code near `center`: each bit flipped with probability p.
func noisy(_ center: HammingCode, p: Double, _ rng: inout SplitMix) -> HammingCode {
    var c = center
    for i in 0..<center.width.bits where Double.random(in: 0..<1, using: &rng) < p { c = c.flipping(i) }
    return c
}

/// An oracle: every live item, distance by distance, ties by id. (`check` uses the other
/// one, a `LinearScan` given the same operations, itself checked in LinearScanTests.)
func bruteForce(_ items: [UInt32: HammingCode], _ q: HammingCode) -> [Neighbor] {
    items.map { Neighbor(id: $0.key, distance: $0.value.distance(to: q)) }.sorted()
}

@Suite("MultiIndex against brute force")
struct MultiIndexTests {
    func check(seed: UInt64, bits: Int, n: Int, clustered: Bool, m: Int?, ops: Int) throws {
        var rng = SplitMix(seed: seed)
        let w = try CodeWidth(bits: bits)
        let index = try MultiIndex(width: w, m: m)
        let oracle = LinearScan(width: w)
        let centres = (0..<8).map { _ in randomCode(w, &rng) }
        func make() -> HammingCode {
            clustered ? noisy(centres[Int.random(in: 0..<centres.count, using: &rng)], p: 0.08, &rng) : randomCode(w, &rng)
        }
        for i in 0..<n {
            let c = make()
            index.upsert(UInt32(i), c)
            oracle.upsert(UInt32(i), c)
            if i == n / 2 { try index.rebuild() }
        }
        // Deletes and replacements after the build go to the delta and stale entries.
        for _ in 0..<ops {
            let id = UInt32.random(in: 0..<UInt32(n), using: &rng)
            if Bool.random(using: &rng) {
                index.remove(id); oracle.remove(id)
            } else {
                let c = make(); index.upsert(id, c); oracle.upsert(id, c)
            }
        }
        #expect(try index.check() >= 0)
        for mode in PlannerMode.allCases {
            index.planner = mode
            for t in 0..<12 {
                let q = t % 3 == 0 ? randomCode(w, &rng) : make()
                let k = [1, 3, 10, 50, n + 5][t % 5]
                let got = index.knn(q, k: k)
                let want = oracle.knn(q, k: k)
                #expect(got == want, "knn k=\(k) mode=\(mode) seed=\(seed) bits=\(bits)")
                let r = Int.random(in: 0...(bits / 3), using: &rng)
                let gotR = index.range(q, radius: r)
                #expect(gotR == oracle.range(q, radius: r), "range r=\(r) mode=\(mode) seed=\(seed)")
            }
        }
    }

    @Test("k-NN and range equal brute force over widths, sizes and m", arguments: [32, 64, 96, 128, 256])
    func matchesBruteForce(bits: Int) throws {
        for seed in UInt64(1)...4 {
            try check(seed: seed &* 7919 &+ UInt64(bits), bits: bits, n: 300 + Int(seed) * 250,
                      clustered: seed % 2 == 0, m: seed == 3 ? nil : SubstringLayout.minimumCount(for: try CodeWidth(bits: bits)) + Int(seed % 3), ops: 200)
        }
    }

    @Test("a batch of upserts (new ids, replacements, across a rebuild and deletes) leaves the index as upserts one at a time do", arguments: [64, 96, 128])
    func batchUpsert(bits: Int) throws {
        var rng = SplitMix(seed: UInt64(bits) &* 31)
        let w = try CodeWidth(bits: bits)
        let m = SubstringLayout.minimumCount(for: w)
        let single = try MultiIndex(width: w, m: m), batched = try MultiIndex(width: w, m: m)
        var items: [UInt32: HammingCode] = [:]
        var next: UInt32 = 0
        // Clustered codes, so that k-NN probes stay near the query in multi-index mode.
        let centres = (0..<4).map { _ in randomCode(w, &rng) }
        func make() -> HammingCode { noisy(centres[Int(rng.next() % 4)], p: 0.06, &rng) }
        for round in 0..<6 {
            // New ids, then replacements of earlier ones (some twice in one batch), mixed.
            var ids: [UInt32] = [], codes: [HammingCode] = []
            for _ in 0..<(300 + round * 50) {
                let id = next > 0 && Int(rng.next() % 3) == 0 ? UInt32(rng.next() % UInt64(next)) : { next += 1; return next - 1 }()
                ids.append(id)
                codes.append(make())
            }
            for (id, c) in zip(ids, codes) { single.upsert(id, c); items[id] = c }
            let words = codes.flatMap(\.words)
            ids.withUnsafeBufferPointer { i in words.withUnsafeBufferPointer { batched.upsert(ids: i, words: $0.baseAddress!) } }
            if round == 2 { try single.rebuild(); try batched.rebuild() }
            if round == 4 { for id in [UInt32(1), 5, 9] { single.remove(id); batched.remove(id); items[id] = nil } }
            #expect(batched.count == single.count && batched.deltaEntries == single.deltaEntries)
            #expect(try batched.check() >= 0)
            for mode in PlannerMode.allCases {
                batched.planner = mode
                let q = make()
                #expect(batched.knn(q, k: 10) == Array(bruteForce(items, q).prefix(10)))
                #expect(batched.range(q, radius: bits / 8) == bruteForce(items, q).filter { $0.distance <= bits / 8 })
            }
        }
        for id in items.keys { #expect(batched.codes.code(id) == items[id]) }
    }

    @Test("rebuild with another m keeps answers exact")
    func rebuildOtherM() throws {
        var rng = SplitMix(seed: 42)
        let w = try CodeWidth(bits: 64)
        let index = try MultiIndex(width: w, m: 4)
        var items: [UInt32: HammingCode] = [:]
        for i in 0..<2000 { let c = randomCode(w, &rng); index.upsert(UInt32(i), c); items[UInt32(i)] = c }
        for m in [3, 5, 8, 16] {
            try index.rebuild(m: m)
            #expect(index.m == m)
            #expect(try index.check() == 0)
            index.planner = .multiIndex
            let q = randomCode(w, &rng)
            #expect(index.knn(q, k: 10) == Array(bruteForce(items, q).prefix(10)))
            #expect(index.range(q, radius: 20) == bruteForce(items, q).filter { $0.distance <= 20 })
        }
    }

    @Test("ties at the k-th distance break by id")
    func tiesByID() throws {
        let w = try CodeWidth(bits: 64)
        let index = try MultiIndex(width: w, m: 4)
        let c = HammingCode(zeroOf: w)
        for i in (0..<200).reversed() { index.upsert(UInt32(i), c) }
        for mode in PlannerMode.allCases {
            index.planner = mode
            #expect(index.knn(c, k: 5).map(\.id) == [0, 1, 2, 3, 4])
        }
    }

    @Test("the planner scans random codes and probes clustered ones")
    func plannerChoice() throws {
        var rng = SplitMix(seed: 9)
        let w = try CodeWidth(bits: 64)
        let random = try MultiIndex(width: w)
        for i in 0..<50_000 { random.upsert(UInt32(i), randomCode(w, &rng)) }
        try random.rebuild()
        var s = SearchStats()
        _ = random.knn(randomCode(w, &rng), k: 10, stats: &s)
        #expect(s.path == .linearScan)
        let clustered = try MultiIndex(width: w)
        let centre = randomCode(w, &rng)
        for i in 0..<50_000 { clustered.upsert(UInt32(i), i % 2 == 0 ? noisy(centre, p: 0.03, &rng) : randomCode(w, &rng)) }
        try clustered.rebuild()
        var s2 = SearchStats()
        _ = clustered.knn(noisy(centre, p: 0.03, &rng), k: 10, stats: &s2)
        #expect(s2.path == .multiIndex)
    }
}

@Suite("MultiIndex positions after deletes")
struct MultiIndexPositionTests {
    @Test("deletes leave holes until a rebuild compacts them; ids, answers and ties by id stay")
    func holesCompactAtRebuild() throws {
        var rng = SplitMix(seed: 77)
        let w = try CodeWidth(bits: 64)
        let index = try MultiIndex(width: w, m: 4)
        var items: [UInt32: HammingCode] = [:]
        let centre = randomCode(w, &rng)
        for i in 0..<4000 {
            let c = i % 3 == 0 ? centre : noisy(centre, p: 0.1, &rng)
            index.upsert(UInt32(i), c)
            items[UInt32(i)] = c
        }
        try index.rebuild()
        #expect(index.codes.positionCount == 4000 && index.codes.ordered)
        // Delete 90%, then re-add a few deleted ids (they go to the end, out of id order).
        for i in 0..<4000 where i % 10 != 7 {
            index.remove(UInt32(i))
            items[UInt32(i)] = nil
        }
        for i in stride(from: 3, to: 600, by: 60) {
            index.upsert(UInt32(i), centre)
            items[UInt32(i)] = centre
        }
        #expect(index.codes.holes == 3600)
        #expect(!index.codes.ordered)
        func expectExact(_ label: String) throws {
            #expect(try index.check() >= 0)
            for mode in PlannerMode.allCases {
                index.planner = mode
                for t in 0..<6 {
                    let q = t == 0 ? centre : noisy(centre, p: 0.1, &rng)
                    let truth = bruteForce(items, q)
                    for k in [1, 5, 30, 5000] {
                        #expect(index.knn(q, k: k) == Array(truth.prefix(k)), "\(label) knn k=\(k) mode=\(mode)")
                    }
                    #expect(index.range(q, radius: 6) == truth.filter { $0.distance <= 6 }, "\(label) range mode=\(mode)")
                }
            }
        }
        try expectExact("with holes")
        try index.rebuild()
        #expect(index.codes.positionCount == items.count)
        #expect(index.codes.holes == 0 && index.codes.ordered)
        #expect(try index.check() == 0)
        for (id, c) in items { #expect(index.codes.code(id) == c) }
        #expect(!index.codes.isLive(0) && index.codes.code(1) == nil)
        try expectExact("compacted")
        // A later insert after the compaction keeps positions in id order.
        index.upsert(9000, centre)
        items[9000] = centre
        #expect(index.codes.ordered)
        try expectExact("after insert")
    }

    @Test("a scan reads only live positions once holes are compacted")
    func scanCostFollowsLiveItems() throws {
        var rng = SplitMix(seed: 5)
        let w = try CodeWidth(bits: 64)
        let index = try MultiIndex(width: w, m: 3)
        for i in 0..<10_000 { index.upsert(UInt32(i), randomCode(w, &rng)) }
        for i in 0..<10_000 where i % 10 != 0 { index.remove(UInt32(i)) }
        #expect(index.codes.positionCount == 10_000)
        try index.rebuild()
        #expect(index.codes.positionCount == 1000)
        var seen: [UInt32] = []
        index.codes.forEachLive { seen.append($0) }
        #expect(seen == (0..<1000).map { UInt32($0 * 10) })
    }
}

@Suite("MultiIndex: tables built from a snapshot while the index changes")
struct MultiIndexSnapshotTests {
    @Test("changes made between the snapshot and the install are carried over; answers, check and ties by id stay exact")
    func carriedOver() throws {
        for (seed, m) in [(UInt64(1), nil), (2, 3), (3, 5)] as [(UInt64, Int?)] {
            var rng = SplitMix(seed: seed)
            let w = try CodeWidth(bits: 64)
            let index = try MultiIndex(width: w, m: m)
            var items: [UInt32: HammingCode] = [:]
            let centre = randomCode(w, &rng)
            func make() -> HammingCode { noisy(centre, p: 0.1, &rng) }
            for i in 0..<4000 { let c = make(); index.upsert(UInt32(i), c); items[UInt32(i)] = c }
            for i in stride(from: 0, to: 4000, by: 7) { index.remove(UInt32(i)); items[UInt32(i)] = nil }
            let snapshot = try index.snapshotForTables()
            // After the snapshot: replacements, deletes, new ids, and a delete of a new id.
            var changed = Set<UInt32>()
            for _ in 0..<600 {
                let id = UInt32.random(in: 0..<4000, using: &rng)
                changed.insert(id)
                if Bool.random(using: &rng) { index.remove(id); items[id] = nil } else { let c = make(); index.upsert(id, c); items[id] = c }
            }
            for i in 4000..<4300 { let c = make(); index.upsert(UInt32(i), c); items[UInt32(i)] = c; changed.insert(UInt32(i)) }
            index.remove(4100); items[4100] = nil
            // Answers during the build come from the old tables and the delta.
            let prepared = snapshot.build()
            index.install(prepared, changedSince: changed)
            #expect(index.count == items.count)
            #expect(index.deltaEntries > 0)
            #expect(try index.check() >= 0)
            var progress = MultiIndex.CheckProgress()
            while try !index.checkStep(&progress, budget: 500) {}
            for id in items.keys.prefix(100) { #expect(index.codes.code(id) == items[id]) }
            for mode in PlannerMode.allCases {
                index.planner = mode
                for t in 0..<10 {
                    let q = t % 2 == 0 ? make() : randomCode(w, &rng)
                    let truth = bruteForce(items, q)
                    #expect(index.knn(q, k: 25) == Array(truth.prefix(25)), "seed \(seed) mode \(mode)")
                    #expect(index.range(q, radius: 12) == truth.filter { $0.distance <= 12 }, "seed \(seed) mode \(mode)")
                }
            }
            // A later fold or change goes on from there.
            let c = make(); index.upsert(1, c); items[1] = c
            try index.rebuild()
            #expect(try index.check() == 0)
            #expect(index.knn(centre, k: 30) == Array(bruteForce(items, centre).prefix(30)))
        }
    }

    @Test("merging adds into the first and last buckets, into an empty base, and with none added, gives the scratch tables")
    func mergeEdges() throws {
        let w = try CodeWidth(bits: 64)
        let zero = HammingCode(zeroOf: w), ones = HammingCode(width: w, words: [~UInt64(0)])
        var rng = SplitMix(seed: 9)
        // Rounds of adds, each then folded by a merge: empty base first, then the extreme
        // buckets on both sides of the base's entries, then a fold with nothing new.
        let rounds: [[HammingCode]] = [[ones, zero], [zero, ones, randomCode(w, &rng), ones],
                                       [], [randomCode(w, &rng), zero, zero], [ones]]
        let index = try MultiIndex(width: w, m: 4)
        var next: UInt32 = 0
        for (r, codes) in rounds.enumerated() {
            for c in codes { index.upsert(next, c); next += 1 }
            let snapshot = try index.snapshotForTables(m: 4)
            #expect(snapshot.merges, "round \(r)")
            let prepared = snapshot.build()
            let scratch = try index.prepareTables(m: 4)
            for j in 0..<4 {
                #expect(Array(prepared.table(j).offsets) == Array(scratch.table(j).offsets), "round \(r) table \(j)")
                #expect(Array(prepared.table(j).ids) == Array(scratch.table(j).ids), "round \(r) table \(j)")
            }
            index.install(prepared, changedSince: [UInt32]())
            #expect(try index.check() == 0)
        }
    }

    @Test("a snapshot copied in pieces with adds, replacements and deletes between the pieces: answers exact after the install; merges only when no copied range lost an id")
    func copiedInPieces() throws {
        for (seed, m, ordered) in [(UInt64(21), nil, true), (22, 3, true), (23, 4, false)] as [(UInt64, Int?, Bool)] {
            var rng = SplitMix(seed: seed)
            let w = try CodeWidth(bits: 64)
            let index = try MultiIndex(width: w, m: m)
            var items: [UInt32: HammingCode] = [:]
            let centre = randomCode(w, &rng)
            func make() -> HammingCode { noisy(centre, p: 0.1, &rng) }
            // Out of id order when not `ordered` (ids added high first), or with holes.
            let ids = ordered ? Array(0..<5000) : Array((0..<5000).reversed())
            for i in ids { let c = make(); index.upsert(UInt32(i), c); items[UInt32(i)] = c }
            if ordered { try index.rebuild() }
            for mutate in [false, true] {
                var changed = Set<UInt32>()
                var next = UInt32(9000 + (mutate ? 1000 : 0))
                let copy = try index.startSnapshot(m: index.m)
                var pieces = 0
                while !index.continueSnapshot(copy, ids: 333) {
                    pieces += 1
                    // Adds only, or also replacements and deletes on both sides of the copy's progress.
                    let c = make(); index.upsert(next, c); items[next] = c; changed.insert(next); next += 1
                    if mutate {
                        let victim = UInt32.random(in: 0..<5000, using: &rng)
                        changed.insert(victim)
                        if pieces % 2 == 0 { index.remove(victim); items[victim] = nil } else { let c = make(); index.upsert(victim, c); items[victim] = c }
                    }
                }
                let snapshot = index.finishSnapshot(copy, changed: changed)
                if ordered && !mutate { #expect(snapshot.merges, "seed \(seed)") }
                if mutate { #expect(!snapshot.merges, "seed \(seed)") }
                let prepared = snapshot.build()
                for _ in 0..<50 { let c = make(); index.upsert(next, c); items[next] = c; changed.insert(next); next += 1 }
                index.install(prepared, changedSince: changed)
                #expect(index.count == items.count)
                #expect(try index.check() >= 0)
                for t in 0..<8 {
                    let q = t % 2 == 0 ? make() : randomCode(w, &rng)
                    let truth = bruteForce(items, q)
                    #expect(index.knn(q, k: 25) == Array(truth.prefix(25)), "seed \(seed) mutate \(mutate)")
                    #expect(index.range(q, radius: 12) == truth.filter { $0.distance <= 12 }, "seed \(seed) mutate \(mutate)")
                }
                for id in items.keys.prefix(200) { #expect(index.codes.code(id) == items[id]) }
            }
        }
    }

    @Test("adds copied by a snapshot in pieces and carried again with the same code leave the index append-only: the next fold merges")
    func copiedAddsKeepMerging() throws {
        var rng = SplitMix(seed: 41)
        let w = try CodeWidth(bits: 64)
        let index = try MultiIndex(width: w, m: 3)
        var items: [UInt32: HammingCode] = [:]
        let centre = randomCode(w, &rng)
        func make() -> HammingCode { noisy(centre, p: 0.1, &rng) }
        var next: UInt32 = 0
        for _ in 0..<3000 { let c = make(); index.upsert(next, c); items[next] = c; next += 1 }
        try index.rebuild()
        for round in 0..<3 {
            // New ids, in order, added between the pieces: the ones below the copy's end are
            // copied too, and all of them are carried at the install.
            var changed = Set<UInt32>()
            let copy = try index.startSnapshot(m: index.m)
            while !index.continueSnapshot(copy, ids: 250) {
                for _ in 0..<40 { let c = make(); index.upsert(next, c); items[next] = c; changed.insert(next); next += 1 }
            }
            let snapshot = index.finishSnapshot(copy, changed: changed)
            #expect(snapshot.merges, "round \(round)")
            let staged = MultiIndex.stage(snapshot.build())
            for _ in 0..<30 { let c = make(); index.upsert(next, c); items[next] = c; changed.insert(next); next += 1 }
            index.install(staged, changedSince: changed)
            #expect(try index.check() == 0)
            #expect(try index.snapshotForTables(m: index.m).merges, "round \(round)")
            for t in 0..<6 {
                let q = t % 2 == 0 ? make() : randomCode(w, &rng)
                let truth = bruteForce(items, q)
                #expect(index.knn(q, k: 20) == Array(truth.prefix(20)), "round \(round)")
                #expect(index.range(q, radius: 12) == truth.filter { $0.distance <= 12 }, "round \(round)")
            }
        }
        // A copied id whose code changed before the install is a replacement: no merge after.
        var changed = Set<UInt32>()
        let copy = try index.startSnapshot(m: index.m)
        _ = index.continueSnapshot(copy, ids: Int.max / 2)
        let victim: UInt32 = 5
        let c = make(); index.upsert(victim, c); items[victim] = c; changed.insert(victim)
        let staged = MultiIndex.stage(index.finishSnapshot(copy, changed: changed).build())
        index.install(staged, changedSince: changed)
        #expect(try !index.snapshotForTables(m: index.m).merges)
        #expect(index.codes.code(victim) == c)
    }

    @Test("a snapshot in pieces copying only the ids below the next id: adds between the pieces reach it by the install's carry, and the next fold still merges")
    func copiedBelowTheNextID() throws {
        for below in [false, true] {
            var rng = SplitMix(seed: 25)
            let w = try CodeWidth(bits: 64)
            let index = try MultiIndex(width: w, m: 4)
            var items: [UInt32: HammingCode] = [:]
            let centre = randomCode(w, &rng)
            func make() -> HammingCode { noisy(centre, p: 0.1, &rng) }
            for i in 0..<5000 { let c = make(); index.upsert(UInt32(i), c); items[UInt32(i)] = c }
            try index.rebuild()
            var next: UInt32 = 5000
            let copy = try index.startSnapshot(m: 4, below: below ? next : nil)
            var changed = [UInt32]()
            // New ids right after the last one, inside the id capacity the copy would reach.
            while !index.continueSnapshot(copy, ids: 700) {
                for _ in 0..<40 { let c = make(); index.upsert(next, c); items[next] = c; changed.append(next); next += 1 }
            }
            let snapshot = index.finishSnapshot(copy, changed: changed)
            #expect(snapshot.merges)
            index.install(snapshot.build(), changedSince: changed)
            #expect(try index.check() == 0)
            for t in 0..<6 {
                let q = t % 2 == 0 ? make() : randomCode(w, &rng)
                #expect(index.knn(q, k: 25) == Array(bruteForce(items, q).prefix(25)), "below \(below)")
            }
            // Carried only, or copied too and carried with the same code (`copiedAddsKeepMerging`),
            // an add keeps the tables fit for a merge.
            #expect(try index.snapshotForTables(m: 4).merges, "below \(below)")
        }
    }

    @Test("staged tables: changes captured in rounds and pieces and carried beside, the rest at the install; answers exact, positions in id order")
    func stagedInRounds() throws {
        for (seed, m) in [(UInt64(31), nil), (32, 3)] as [(UInt64, Int?)] {
            var rng = SplitMix(seed: seed)
            let w = try CodeWidth(bits: 64)
            let index = try MultiIndex(width: w, m: m)
            var items: [UInt32: HammingCode] = [:]
            let centre = randomCode(w, &rng)
            func make() -> HammingCode { noisy(centre, p: 0.1, &rng) }
            for i in 0..<4000 { let c = make(); index.upsert(UInt32(i), c); items[UInt32(i)] = c }
            var next: UInt32 = 4000
            // Adds, replacements (also of ids added since the snapshot) and deletes.
            func churn(_ n: Int, into changed: inout Set<UInt32>) {
                for k in 0..<n {
                    let c = make()
                    switch k % 4 {
                    case 0, 1: index.upsert(next, c); items[next] = c; changed.insert(next); next += 1
                    // As in the store, a removed id never comes back: replace and remove live ones.
                    case 2: let id = items.keys.randomElement(using: &rng)!; index.upsert(id, c); items[id] = c; changed.insert(id)
                    default: let id = items.keys.randomElement(using: &rng)!; index.remove(id); items[id] = nil; changed.insert(id)
                    }
                }
            }
            let staged = MultiIndex.stage(try index.snapshotForTables(m: index.m).build())
            // What a fold records: the ids changed since the last take.
            var recorded = Set<UInt32>()
            for _ in 0..<3 {
                churn(300, into: &recorded)
                let list = recorded.sorted()
                recorded = []
                for start in stride(from: 0, to: list.count, by: 64) {
                    MultiIndex.carry(index.capture(list[start..<min(list.count, start + 64)]), into: staged)
                    // Changes between the pieces are recorded for the next round.
                    churn(5, into: &recorded)
                }
            }
            churn(40, into: &recorded)
            index.install(staged, changedSince: recorded)
            #expect(index.count == items.count)
            #expect(index.codes.ordered)
            var seen: [UInt32] = []
            index.codes.forEachLive { seen.append($0) }
            #expect(seen == items.keys.sorted(), "seed \(seed)")
            #expect(try index.check() >= 0)
            for t in 0..<8 {
                let q = t % 2 == 0 ? make() : randomCode(w, &rng)
                let truth = bruteForce(items, q)
                #expect(index.knn(q, k: 25) == Array(truth.prefix(25)), "seed \(seed)")
                #expect(index.range(q, radius: 12) == truth.filter { $0.distance <= 12 }, "seed \(seed)")
            }
        }
    }

    @Test("idOffset: p + d for every position of adds in id order from any first id; nil after a delete, a gap or an out-of-order add")
    func preparedIDOffset() throws {
        let w = try CodeWidth(bits: 32)
        var rng = SplitMix(seed: 9)
        func check(_ prepared: MultiIndex.PreparedTables, _ n: Int) -> UInt32? {
            guard let d = prepared.idOffset else { return nil }
            for p in 0..<n { #expect(prepared.idAtPosition[p] == UInt32(p) + d) }
            return d
        }
        let index = try MultiIndex(width: w, m: 2)
        for id in UInt32(17)..<1017 { index.upsert(id, randomCode(w, &rng)) }
        #expect(check(try index.prepareTables(), 1000) == 17)
        index.upsert(1018, randomCode(w, &rng))  // 1017 skipped
        #expect(check(try index.prepareTables(), 1001) == nil)
        let gapless = try MultiIndex(width: w, m: 2)
        for id in UInt32(0)..<500 { gapless.upsert(id, randomCode(w, &rng)) }
        gapless.remove(250)
        #expect(check(try gapless.prepareTables(), 499) == nil)
        let shuffled = try MultiIndex(width: w, m: 2)
        for id in (UInt32(0)..<500).shuffled(using: &rng) { shuffled.upsert(id, randomCode(w, &rng)) }
        // Out of order: positions follow the adds until a compaction puts them in id order.
        let prepared = try shuffled.prepareTables()
        if let d = prepared.idOffset { for p in 0..<500 { #expect(prepared.idAtPosition[p] == UInt32(p) + d) } }
    }

    @Test("a fold after adds only merges into the old tables: the same tables as a build from scratch; a replace or delete builds afresh")
    func mergedFolds() throws {
        for (seed, m) in [(UInt64(4), nil), (5, 3), (6, 4)] as [(UInt64, Int?)] {
            var rng = SplitMix(seed: seed)
            let w = try CodeWidth(bits: 64)
            let index = try MultiIndex(width: w, m: m)
            var items: [UInt32: HammingCode] = [:]
            let centre = randomCode(w, &rng)
            func make() -> HammingCode { noisy(centre, p: 0.1, &rng) }
            var next: UInt32 = 0
            func add(_ n: Int) { for _ in 0..<n { let c = make(); index.upsert(next, c); items[next] = c; next += 1 } }
            func compareWithScratch(_ prepared: MultiIndex.PreparedTables) throws {
                let scratch = try index.prepareTables(m: prepared.layout.count)
                #expect(scratch.layout.sizes == prepared.layout.sizes)
                for j in 0..<prepared.layout.count {
                    #expect(Array(prepared.table(j).offsets) == Array(scratch.table(j).offsets), "seed \(seed) table \(j)")
                    #expect(Array(prepared.table(j).ids) == Array(scratch.table(j).ids), "seed \(seed) table \(j)")
                }
            }
            // From empty, then three folds of adds only, with adds between snapshot and install.
            for round in 0..<4 {
                add(round == 0 ? 700 : 1500)
                let snapshot = try index.snapshotForTables(m: index.m)
                #expect(snapshot.merges, "seed \(seed) round \(round)")
                let prepared = snapshot.build()
                try compareWithScratch(prepared)
                let before = next
                add(90)
                index.install(prepared, changedSince: before..<next)
                #expect(try index.check() == 0)
            }
            #expect(index.knn(centre, k: 40) == Array(bruteForce(items, centre).prefix(40)))
            // A replace since the tables were built: the next fold builds afresh.
            let c = make(); index.upsert(3, c); items[3] = c
            let afterReplace = try index.snapshotForTables(m: index.m)
            #expect(!afterReplace.merges)
            index.install(afterReplace.build(), changedSince: [UInt32]())
            #expect(try index.snapshotForTables(m: index.m).merges)
            // A replace carried over at install: also afresh next time.
            let s2 = try index.snapshotForTables(m: index.m)
            let c2 = make(); index.upsert(5, c2); items[5] = c2
            index.install(s2.build(), changedSince: [UInt32(5)])
            #expect(try !index.snapshotForTables(m: index.m).merges)
            // A delete: afresh.
            try index.rebuild()
            #expect(try index.snapshotForTables(m: index.m).merges)
            index.remove(7); items[7] = nil
            #expect(try !index.snapshotForTables(m: index.m).merges)
            try index.rebuild()
            #expect(try index.check() == 0)
            for t in 0..<10 {
                let q = t % 2 == 0 ? make() : randomCode(w, &rng)
                let truth = bruteForce(items, q)
                #expect(index.knn(q, k: 25) == Array(truth.prefix(25)))
                #expect(index.range(q, radius: 12) == truth.filter { $0.distance <= 12 })
            }
        }
    }

    @Test("the check in pieces finds what check() finds on a consistent index, and restarts its table pass after a fold")
    func checkInPieces() throws {
        var rng = SplitMix(seed: 9)
        let w = try CodeWidth(bits: 64)
        let index = try MultiIndex(width: w)
        for i in 0..<3000 { index.upsert(UInt32(i), randomCode(w, &rng)) }
        try index.rebuild()
        for i in 0..<200 { index.upsert(UInt32(i), randomCode(w, &rng)) }
        var p = MultiIndex.CheckProgress()
        var steps = 0
        while try !index.checkStep(&p, budget: 256) {
            steps += 1
            if steps == 3 { try index.rebuild() }   // a fold in the middle
        }
        #expect(p.staleEntries == (try index.check()))
    }
}

@Suite("BaseTable.sortByValue")
struct SortByValueTests {
    @Test("orders by value and keeps position order within a value, for widths around the 12-bit digit", arguments: [1, 5, 12, 13, 21, 24])
    func matchesStableSort(bits: Int) {
        var rng = SplitMix(seed: UInt64(bits))
        let n = 5000
        var keys = (0..<n).map { p in (rng.next() & ((UInt64(1) << UInt64(bits)) - 1)) << 32 | UInt64(p) }
        let expected = keys.sorted()
        BaseTable.sortByValue(&keys, bits: bits)
        #expect(keys == expected)
    }
}
