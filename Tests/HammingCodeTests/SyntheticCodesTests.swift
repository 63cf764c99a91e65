import Testing
@testable import HammingCode

@Suite("SyntheticCodes")
struct SyntheticCodesTests {
    @Test("random codes are the SplitMix64 stream, word by word (the user guide's gdh generate example)")
    func randomPinned() throws {
        var g = SyntheticCodes(width: try CodeWidth(bits: 64), kind: .random, seed: 7)
        let first = (0..<3).map { _ in g.next() }
        #expect(first.map(\.code.hex) == ["63cbe1e459320dd7", "044c3cd7f43c661c", "e6984080bab12a02"])
        #expect(first.allSatisfy { $0.centre == nil })
        var rng = SplitMix64(seed: 7)
        #expect(SyntheticCodes.random(try CodeWidth(bits: 64), using: &rng).hex == "63cbe1e459320dd7")
    }

    @Test("clustered codes as gdh generate wrote them before the generator moved here")
    func clusteredPinned() throws {
        var g = SyntheticCodes(width: try CodeWidth(bits: 64), kind: .clustered(centres: 10, flip: 0.1), seed: 3)
        let lines = (0..<3).map { i -> String in
            let (code, centre) = g.next()
            return "c\(centre ?? -1)-\(i) \(code.hex)"
        }
        #expect(lines == ["c3-0 2a109a6e822e3b45", "c5-1 a64c3a9ffe14140a", "c9-2 1e3a4f782e45daa1"])
    }

    @Test("clustered codes lie near their centre, the centres are shared across seeds, padding stays zero")
    func clusteredShape() throws {
        let w = try CodeWidth(bits: 96)
        var a = SyntheticCodes(width: w, kind: .clustered(centres: 5, flip: 0.05), seed: 1)
        let b = SyntheticCodes(width: w, kind: .clustered(centres: 5, flip: 0.05), seed: 2)
        #expect(a.centres == b.centres)
        #expect(a.centres.count == 5)
        var total = 0
        for _ in 0..<2000 {
            let (code, centre) = a.next()
            let c = try #require(centre)
            #expect((0..<5).contains(c))
            #expect(code.words[1] & 0xFFFF_FFFF == 0)
            total += code.distance(to: a.centres[c])
        }
        // 96 bits, each flipped with probability 0.05: 4.8 on average.
        let mean = Double(total) / 2000
        #expect(mean > 4.3 && mean < 5.3, "mean distance to the centre \(mean)")
    }
}
