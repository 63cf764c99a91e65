import Testing
import HammingCode
@testable import MultiIndex

/// The reference for `LinearScan`: each live code's distance by a popcount per word,
/// then every item sorted by (distance, id).
func popcountLoop(_ items: [UInt32: HammingCode], _ q: HammingCode) -> [Neighbor] {
    var out = [Neighbor]()
    for (id, c) in items {
        var d = 0
        for i in 0..<q.words.count { d += (c.words[i] ^ q.words[i]).nonzeroBitCount }
        out.append(Neighbor(id: id, distance: d))
    }
    return out.sorted()
}

@Suite("LinearScan against a per-code popcount loop")
struct LinearScanTests {
    /// Codes around a centre: exact copies (ties at distance 0), one-bit flips (ties at 1),
    /// noisy copies and random codes.
    func make(_ centre: HammingCode, _ rng: inout SplitMix) -> HammingCode {
        switch rng.next() % 10 {
        case 0: return centre
        case 1, 2: return centre.flipping(Int(rng.next() % UInt64(centre.width.bits)))
        case 3, 4, 5: return noisy(centre, p: 0.1, &rng)
        default: return randomCode(centre.width, &rng)
        }
    }

    @Test("k-NN and range equal the loop over widths, k, radii and deletes, ids added in order or not",
          arguments: [64, 128, 256, 96, 160])
    func matchesPopcountLoop(bits: Int) throws {
        let w = try CodeWidth(bits: bits)
        for ascending in [true, false] {
            var rng = SplitMix(seed: UInt64(bits) &* 31 &+ (ascending ? 1 : 2))
            let scan = LinearScan(width: w)
            var items: [UInt32: HammingCode] = [:]
            let centre = randomCode(w, &rng)
            // More positions than one block of the kernel, and gaps in the ids.
            let n = LinearScan.block + 1900
            var ids = (0..<UInt32(n)).map { $0 * 3 }
            if !ascending { ids.shuffle(using: &rng) }
            for id in ids { let c = make(centre, &rng); scan.upsert(id, c); items[id] = c }
            // Deletes leave holes; replacements keep their positions (so the order stays).
            for _ in 0..<1500 {
                let id = ids[Int(rng.next() % UInt64(n))]
                if rng.next() % 3 == 0 {
                    if items[id] != nil { let c = make(centre, &rng); scan.upsert(id, c); items[id] = c }
                } else {
                    #expect(scan.remove(id) == (items[id] != nil))
                    items[id] = nil
                }
            }
            #expect(scan.count == items.count)
            #expect(scan.codes.positionCount == n)
            #expect(scan.codes.ordered == ascending)
            let queries = [centre, centre.flipping(0), noisy(centre, p: 0.05, &rng), randomCode(w, &rng)]
            for (t, q) in queries.enumerated() {
                let truth = popcountLoop(items, q)
                for k in [1, 3, 10, 100, 500, 1000, n + 5] {
                    #expect(scan.knn(q, k: k) == Array(truth.prefix(k)),
                            "knn k=\(k) bits=\(bits) ascending=\(ascending) query \(t)")
                }
                for r in [0, 1, 2, bits / 8, bits / 4, bits / 2, bits, bits + 10] {
                    #expect(scan.range(q, radius: r) == truth.filter { $0.distance <= r },
                            "range r=\(r) bits=\(bits) ascending=\(ascending) query \(t)")
                }
            }
            #expect(scan.knn(centre, k: 0).isEmpty)
            #expect(scan.range(centre, radius: -1).isEmpty)
        }
    }

    @Test("an empty scan and one emptied by deletes answer nothing")
    func empty() throws {
        let w = try CodeWidth(bits: 64)
        let scan = LinearScan(width: w)
        let c = HammingCode(zeroOf: w)
        #expect(scan.knn(c, k: 5).isEmpty && scan.range(c, radius: 64).isEmpty)
        scan.upsert(7, c)
        #expect(scan.knn(c, k: 5) == [Neighbor(id: 7, distance: 0)])
        #expect(scan.remove(7) && !scan.remove(7))
        #expect(scan.knn(c, k: 5).isEmpty && scan.range(c, radius: 64).isEmpty)
    }
}
