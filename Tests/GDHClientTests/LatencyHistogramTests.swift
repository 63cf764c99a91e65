import Foundation
import GDHClient
import HammingCode
import Testing

@Suite("LatencyHistogram")
struct LatencyHistogramTests {
    @Test("quantiles are within one bucket (4.5%) of the exact ones, and the maximum is exact")
    func quantiles() {
        var rng = SplitMix64(seed: 5)
        var values = [UInt64]()
        var h = LatencyHistogram()
        for _ in 0..<100_000 {
            // Spread over six decades, as request latencies are.
            let v = UInt64(pow(10, 3 + 6 * Double(rng.next() % 1_000_000) / 1e6))
            values.append(v)
            h.record(v)
        }
        values.sort()
        for p in [0.5, 0.9, 0.99, 0.999] {
            let exact = Double(values[Int((Double(values.count) * p).rounded(.up)) - 1])
            let got = h.quantile(p)
            #expect(got >= exact * 0.999 && got <= exact * 1.045, "p\(p): \(got) vs \(exact)")
        }
        #expect(h.max == values.last!)
        #expect(h.quantile(1) == Double(values.last!))
        var a = LatencyHistogram(), b = LatencyHistogram()
        for (i, v) in values.enumerated() { if i % 2 == 0 { a.record(v) } else { b.record(v) } }
        a.merge(b)
        #expect(a.counts == h.counts && a.count == h.count && a.max == h.max)
        #expect(LatencyHistogram().quantile(0.5) == 0)
    }

    @Test("buckets are monotonic in the value")
    func monotonic() {
        var h = LatencyHistogram()
        for v: UInt64 in [0, 1, 2, 3, 1000, 1001, 1 << 40, UInt64.max] { h.record(v) }
        #expect(h.count == 8)
        #expect(h.max == UInt64.max)
        #expect(h.quantile(0.25) <= 2.2)
    }
}
