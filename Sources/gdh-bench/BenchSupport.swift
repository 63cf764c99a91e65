import Dispatch
import Foundation
import GDHCommandLine
import HammingCode

// Helpers the benchmarks share.

/// Reads a file of packed codes (bits/8 bytes each, most significant byte first).
func readCodes(_ path: String, width: CodeWidth, limit: Int? = nil) throws -> [HammingCode] {
    guard let data = FileManager.default.contents(atPath: path) else { throw Failure("cannot read \(path)") }
    guard data.count % width.bytes == 0 else {
        throw Failure("\(path) is \(data.count) bytes, not a whole number of \(width.bytes)-byte codes")
    }
    let n = min(data.count / width.bytes, limit ?? .max)
    return try data.withUnsafeBytes { raw in
        try (0..<n).map { i in
            try HammingCode(bytes: UnsafeRawBufferPointer(rebasing: raw[(i * width.bytes)..<((i + 1) * width.bytes)]), width: width)
        }
    }
}

/// Median, mean, 90th and 99th percentile of durations in nanoseconds, as milliseconds.
func summary(_ nanos: [UInt64]) -> [String: Double] {
    guard !nanos.isEmpty else { return [:] }
    let s = nanos.sorted()
    func pct(_ p: Double) -> Double { Double(s[min(s.count - 1, Int(Double(s.count) * p))]) / 1e6 }
    return ["median": pct(0.5), "mean": Double(s.reduce(0, +)) / Double(s.count) / 1e6, "p90": pct(0.9), "p99": pct(0.99)]
}

@inline(__always)
func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

func median(_ xs: [UInt64]) -> Double {
    let s = xs.sorted()
    return s.isEmpty ? 0 : Double(s[s.count / 2])
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.isEmpty ? 0 : s[s.count / 2]
}
