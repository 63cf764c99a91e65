/// Latencies in nanoseconds, counted in logarithmic buckets 2^(i/16) wide (each about 4.4%
/// wider than the one before), so that millions of requests cost 8 KiB and any percentile
/// is known to within one bucket. The largest value is kept exactly.
public struct LatencyHistogram: Sendable {
    static let perOctave = 16
    static let bucketCount = 64 * perOctave
    public private(set) var counts = [UInt64](repeating: 0, count: LatencyHistogram.bucketCount)
    public private(set) var count: UInt64 = 0
    public private(set) var sum: UInt64 = 0
    public private(set) var max: UInt64 = 0

    public init() {}

    /// The bucket of a value: floor(16 · log2(ns)), 0 for 0 and 1 ns.
    static func bucket(_ ns: UInt64) -> Int {
        guard ns > 1 else { return 0 }
        let octave = 63 - ns.leadingZeroBitCount
        // The fraction of the octave from the bits below the top one.
        let below = octave >= 32 ? ns >> UInt64(octave - 32) : ns << UInt64(32 - octave)
        let fraction = Double(below & 0xFFFF_FFFF) / 4_294_967_296.0
        var sub = Int((Double(perOctave) * log2(1 + fraction)))
        sub = Swift.min(sub, perOctave - 1)
        return octave * perOctave + sub
    }

    /// The largest value a bucket holds (its upper bound).
    static func upperBound(_ bucket: Int) -> Double {
        pow(2, Double(bucket + 1) / Double(perOctave))
    }

    public mutating func record(_ ns: UInt64) {
        counts[Self.bucket(ns)] += 1
        count += 1
        sum &+= ns
        if ns > max { max = ns }
    }

    public mutating func merge(_ other: LatencyHistogram) {
        for i in counts.indices { counts[i] += other.counts[i] }
        count += other.count
        sum &+= other.sum
        max = Swift.max(max, other.max)
    }

    /// The p-quantile (0 < p ≤ 1) in nanoseconds: the upper bound of the bucket that holds
    /// it, never above the largest value recorded; 0 when empty.
    public func quantile(_ p: Double) -> Double {
        guard count > 0 else { return 0 }
        let rank = Swift.max(1, UInt64((Double(count) * p).rounded(.up)))
        var seen: UInt64 = 0
        for (i, c) in counts.enumerated() {
            seen += c
            if seen >= rank { return Swift.min(Self.upperBound(i), Double(max)) }
        }
        return Double(max)
    }

    public var mean: Double { count == 0 ? 0 : Double(sum) / Double(count) }
}

#if canImport(Glibc)
import Glibc
#endif
