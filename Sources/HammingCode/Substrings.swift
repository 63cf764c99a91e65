/// The split of a b-bit code into m consecutive substrings for multi-index hashing
/// (Norouzi, Punjani, Fleet). Sizes differ by at most one bit: the first `b mod m`
/// substrings have `ceil(b/m)` bits, the rest `floor(b/m)`.
public struct SubstringLayout: Hashable, Sendable {
    /// The widest substring a direct-addressed table may use (2^24 buckets).
    public static let maxSubstringBits = 24

    public let width: CodeWidth
    /// m: the number of substrings (tables).
    public let count: Int
    /// Bit offset of each substring within the code (0 = most significant bit).
    public let offsets: [Int]
    /// Width in bits of each substring.
    public let sizes: [Int]

    public enum LayoutError: Error, Equatable, CustomStringConvertible {
        case badCount(m: Int, bits: Int)
        public var description: String {
            switch self {
            case .badCount(let m, let bits):
                let lo = (bits + SubstringLayout.maxSubstringBits - 1) / SubstringLayout.maxSubstringBits
                return "substring count \(m) is not allowed for \(bits)-bit codes (must be \(lo) to \(bits))"
            }
        }
    }

    /// The smallest m whose substrings fit a direct-addressed table.
    public static func minimumCount(for width: CodeWidth) -> Int {
        (width.bits + maxSubstringBits - 1) / maxSubstringBits
    }

    /// m ≈ b / log2(N), the choice of Norouzi et al., kept within the allowed range.
    /// Below 2^16 items m is chosen as for 2^16: tables of tiny substrings only cost
    /// memory, and the planner scans such small sets anyway.
    public static func automaticCount(for width: CodeWidth, items n: Int) -> Int {
        let log2n = max(16.0, log2(Double(max(n, 2))))
        let m = Int((Double(width.bits) / log2n).rounded())
        return min(width.bits, max(minimumCount(for: width), m))
    }

    public init(width: CodeWidth, count m: Int) throws {
        guard m >= SubstringLayout.minimumCount(for: width), m <= width.bits else {
            throw LayoutError.badCount(m: m, bits: width.bits)
        }
        self.width = width
        self.count = m
        var offsets = [Int](), sizes = [Int]()
        let base = width.bits / m, extra = width.bits % m
        var at = 0
        for j in 0..<m {
            let s = base + (j < extra ? 1 : 0)
            offsets.append(at)
            sizes.append(s)
            at += s
        }
        self.offsets = offsets
        self.sizes = sizes
    }

    /// Substring j of a packed code, as an unsigned integer of `sizes[j]` bits. Inlinable:
    /// the tables' indexing and probing call it per code and table from other modules.
    @inlinable @inline(__always)
    public func substring(_ j: Int, of code: UnsafePointer<UInt64>) -> UInt32 {
        extractBits(code, offset: offsets[j], size: sizes[j])
    }

    /// All m substrings of a code.
    public func substrings(of code: HammingCode) -> [UInt32] {
        code.withWords { p in
            (0..<count).map { substring($0, of: p.baseAddress!) }
        }
    }
}

/// Bits [offset, offset+size) of a most-significant-first packed code; size ≤ 32.
@inlinable @inline(__always)
public func extractBits(_ code: UnsafePointer<UInt64>, offset: Int, size: Int) -> UInt32 {
    let w = offset >> 6, o = offset & 63
    let mask = (UInt64(1) << UInt64(size)) &- 1
    if o + size <= 64 {
        return UInt32(truncatingIfNeeded: (code[w] >> UInt64(64 - o - size)) & mask)
    }
    // Spans two words: the high part from word w, the low part from word w+1.
    let hiBits = 64 - o
    let loBits = size - hiBits
    let hi = code[w] & ((UInt64(1) << UInt64(hiBits)) &- 1)
    let lo = code[w + 1] >> UInt64(64 - loBits)
    return UInt32(truncatingIfNeeded: (hi << UInt64(loBits)) | lo)
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
