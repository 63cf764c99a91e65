/// The synthetic codes of `gdh generate`, the benchmarks and the tests: one generator on
/// seeded SplitMix64 streams, so a seed replays exactly. It lives here, not in Datasets
/// (which owns synthetic images), because `gdh generate` runs in the thin client, which
/// links no image codecs.
///
/// `random`: every bit a fair coin. `clustered`: each code is one of `centres` random
/// centres with every bit flipped with probability `flip`, like the codes a learned hash
/// gives similar images. The centres depend only on the width and their count, so streams
/// of other seeds draw from the same clusters.
public struct SyntheticCodes: Sendable {
    public enum Kind: Equatable, Sendable {
        case random
        case clustered(centres: Int, flip: Double)
    }

    public let width: CodeWidth
    public let kind: Kind
    /// The centres of clustered codes (empty for random ones).
    public let centres: [HammingCode]
    private var rng: SplitMix64

    public init(width: CodeWidth, kind: Kind, seed: UInt64) {
        precondition(kind == .random || kind.centreCount >= 1, "clustered codes need a centre")
        self.width = width
        self.kind = kind
        var centreRng = SplitMix64(seed: UInt64(width.bits) &* 1_000_003 &+ UInt64(kind.centreCount))
        centres = (0..<kind.centreCount).map { _ in SyntheticCodes.random(width, using: &centreRng) }
        rng = SplitMix64(seed: seed)
    }

    /// The next code, with the index of its centre for clustered codes.
    public mutating func next() -> (code: HammingCode, centre: Int?) {
        guard case .clustered(let count, let flip) = kind else { return (SyntheticCodes.random(width, using: &rng), nil) }
        let c = Int(rng.next() % UInt64(count))
        var words = centres[c].words
        for b in 0..<width.bits where Double(rng.next() >> 11) / Double(1 << 53) < flip {
            words[b >> 6] ^= UInt64(1) << UInt64(63 - (b & 63))
        }
        return (HammingCode(width: width, words: words), c)
    }

    /// A uniformly random code: `width.words` draws of `rng`, most significant word first.
    public static func random(_ width: CodeWidth, using rng: inout SplitMix64) -> HammingCode {
        HammingCode(width: width, words: (0..<width.words).map { _ in rng.next() })
    }
}

extension SyntheticCodes.Kind {
    var centreCount: Int {
        if case .clustered(let n, _) = self { return n }
        return 0
    }
}
