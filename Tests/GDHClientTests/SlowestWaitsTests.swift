import GDHClient
import HammingCode
import Testing

@Suite("SlowestWaits")
struct SlowestWaitsTests {
    typealias Wait = SlowestWaits.Wait

    /// Waits in [0, 1000) s, each at most 50 ms long, none overlapping another (each in a
    /// slot of its own 100 ms wide), with distinct latencies.
    static func apart(_ n: Int, seed: UInt64) -> [Wait] {
        var g = SplitMix64(seed: seed)
        var slots = Array(0..<10_000)
        var waits: [Wait] = []
        var used = Set<UInt64>()
        for i in 0..<n {
            let j = i + Int(g.next() % UInt64(slots.count - i))
            slots.swapAt(i, j)
            var ns = 1 + g.next() % 50_000_000
            while !used.insert(ns).inserted { ns += 1 }
            waits.append(Wait(nanoseconds: ns, sentAt: Double(slots[i]) * 0.1, command: i % 2 == 0 ? "ADD" : "DEL"))
        }
        return waits
    }

    @Test("waits apart from one another: the list is the slowest ones, slowest first, for every limit")
    func apartTopK() {
        for seed in 1...20 as ClosedRange<UInt64> {
            let waits = Self.apart(300, seed: seed)
            for limit in [1, 2, 5, 17] {
                var s = SlowestWaits(limit: limit)
                for w in waits { s.record(w) }
                let expected = Array(waits.sorted { $0.nanoseconds > $1.nanoseconds }.prefix(limit))
                #expect(s.waits == expected, "seed \(seed) limit \(limit)")
            }
        }
    }

    @Test("the lists of several threads merged are the list of all their waits")
    func mergeEqualsAll() {
        for seed in 1...10 as ClosedRange<UInt64> {
            let waits = Self.apart(400, seed: seed)
            var all = SlowestWaits(limit: 5)
            for w in waits { all.record(w) }
            var parts = [SlowestWaits](repeating: SlowestWaits(limit: 5), count: 7)
            for (i, w) in waits.enumerated() { parts[i % 7].record(w) }
            var merged = SlowestWaits(limit: 5)
            for p in parts { merged.merge(p) }
            #expect(merged.waits == all.waits)
        }
    }

    @Test("the waits of one slow moment count once, by the slowest of them, in any order")
    func oneMomentOnce() {
        // A batch of 64 writes sent within 2 ms of one another, all answered together at
        // 10.050 s; and one other slow write much later.
        var batch: [Wait] = (0..<64).map { i in
            let sent = 10.0 + Double(i) * 0.00003
            return Wait(nanoseconds: UInt64((10.050 - sent) * 1e9), sentAt: sent, command: "ADD")
        }
        let later = Wait(nanoseconds: 20_000_000, sentAt: 300, command: "DEL")
        var g = SplitMix64(seed: 3)
        for round in 0..<5 {
            for i in stride(from: batch.count - 1, to: 0, by: -1) { batch.swapAt(i, Int(g.next() % UInt64(i + 1))) }
            var s = SlowestWaits(limit: 5)
            for w in batch { s.record(w) }
            s.record(later)
            #expect(s.waits.count == 2, "round \(round)")
            #expect(s.waits.first?.sentAt == 10.0)
            #expect(s.waits.last == later)
        }
    }

    @Test("no two kept waits overlap, they come slowest first, and the slowest of all is first")
    func invariants() {
        var g = SplitMix64(seed: 9)
        for _ in 0..<200 {
            var s = SlowestWaits(limit: 1 + Int(g.next() % 6))
            var slowest: UInt64 = 0
            for _ in 0..<(1 + g.next() % 60) {
                let w = Wait(nanoseconds: 1 + g.next() % 3_000_000_000, sentAt: Double(g.next() % 10_000) / 1000,
                             command: "ADD")
                slowest = max(slowest, w.nanoseconds)
                s.record(w)
            }
            #expect(s.waits.count <= s.limit)
            #expect(s.waits.first?.nanoseconds == slowest)
            for i in s.waits.indices {
                for j in s.waits.indices where i < j {
                    #expect(!s.waits[i].overlaps(s.waits[j]))
                    #expect(s.waits[i].nanoseconds >= s.waits[j].nanoseconds)
                }
            }
        }
    }
}
