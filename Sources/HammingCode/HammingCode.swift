import CHammingKernels

/// Fixed-width binary codes: their width, hex text form and Hamming distance.
///
/// A code of `bits` bits (32...1024, a multiple of 32) is held as `words` 64-bit
/// words, most significant bit first: bit 0 of the code is the top bit of word 0.
/// When `bits` is not a multiple of 64 the low 32 bits of the last word are zero,
/// so the padding never adds to a distance. The hex form is exactly `bits / 4`
/// lower-case digits, most significant byte first (upper case is accepted on input).

public enum CodeError: Error, Equatable, CustomStringConvertible {
    case badWidth(Int)
    case badLength(expected: Int, got: Int)
    case badDigit(position: Int)

    public var description: String {
        switch self {
        case .badWidth(let b):
            return "code width \(b) is not supported (32 to 1024 bits in steps of 32)"
        case .badLength(let expected, let got):
            return "code must be \(expected) hex digits, got \(got)"
        case .badDigit(let p):
            return "code has a non-hex character at position \(p + 1)"
        }
    }
}

/// The shape shared by every code of one database.
public struct CodeWidth: Hashable, Sendable, CustomStringConvertible {
    /// b: bits per code.
    public let bits: Int
    /// 64-bit words per code in memory (the last one padded with zero bits).
    public var words: Int { (bits + 63) / 64 }
    /// Bytes per code in its packed, stored form (`bits / 8`).
    public var bytes: Int { bits / 8 }
    /// Hex digits per code in the text form.
    public var hexDigits: Int { bits / 4 }

    public static let supported = stride(from: 32, through: 1024, by: 32)

    public init(bits: Int) throws {
        guard bits >= 32, bits <= 1024, bits % 32 == 0 else { throw CodeError.badWidth(bits) }
        self.bits = bits
    }

    public var description: String { "\(bits) bits" }
}

/// One code, owning its words.
public struct HammingCode: Hashable, Sendable, CustomStringConvertible {
    public let width: CodeWidth
    /// `width.words` words, most significant bit first.
    public private(set) var words: [UInt64]

    public init(width: CodeWidth, words: [UInt64]) {
        precondition(words.count == width.words, "word count does not match the width")
        self.width = width
        var w = words
        if width.bits % 64 != 0 { w[w.count - 1] &= ~UInt64(0) << 32 }
        self.words = w
    }

    /// The all-zero code.
    public init(zeroOf width: CodeWidth) {
        self.width = width
        self.words = Array(repeating: 0, count: width.words)
    }

    /// Parses the hex text form (exactly `bits / 4` digits).
    public init(hex: some StringProtocol, width: CodeWidth) throws {
        try self.init(hexUTF8: Array(hex.utf8), width: width)
    }

    /// Parses the hex text form from its UTF-8 bytes.
    public init(hexUTF8 digits: some Collection<UInt8>, width: CodeWidth) throws {
        // Contiguous bytes (arrays, buffer views) take the specialised loop below; a
        // generic loop over a collection from another module is not specialised and
        // spent most of a write's parsing time in the runtime's metadata look-ups.
        if let parsed = try digits.withContiguousStorageIfAvailable({ try HammingCode(hexBytes: $0, width: width) }) {
            self = parsed
        } else {
            self = try Array(digits).withUnsafeBufferPointer { try HammingCode(hexBytes: $0, width: width) }
        }
    }

    /// Parses the hex text form from a buffer of its UTF-8 bytes.
    public init(hexBytes digits: UnsafeBufferPointer<UInt8>, width: CodeWidth) throws {
        guard digits.count == width.hexDigits else {
            throw CodeError.badLength(expected: width.hexDigits, got: digits.count)
        }
        var bad = -1
        let words = [UInt64](unsafeUninitializedCapacity: width.words) { out, count in
            bad = gdh_hex_decode(digits.baseAddress!, digits.count, out.baseAddress!)
            count = width.words
        }
        if bad >= 0 { throw CodeError.badDigit(position: bad) }
        self.width = width
        self.words = words
    }

    /// Builds a code from its packed bytes (`bits / 8` bytes, most significant first).
    public init(bytes: some Collection<UInt8>, width: CodeWidth) throws {
        guard bytes.count == width.bytes else {
            throw CodeError.badLength(expected: width.hexDigits, got: bytes.count * 2)
        }
        var words = [UInt64](repeating: 0, count: width.words)
        words.withUnsafeMutableBufferPointer { out in
            let fill = { (b: UnsafeBufferPointer<UInt8>) in
                for i in 0..<b.count { out[i >> 3] |= UInt64(b[i]) << UInt64(56 - 8 * (i & 7)) }
            }
            // Contiguous bytes take the specialised loop (see init(hexUTF8:width:)).
            if bytes.withContiguousStorageIfAvailable(fill) == nil { Array(bytes).withUnsafeBufferPointer(fill) }
        }
        self.width = width
        self.words = words
    }

    /// Appends the packed bytes (most significant first) to `out`, without an
    /// intermediate array.
    public func appendBytes(to out: inout [UInt8]) {
        for i in 0..<width.bytes {
            out.append(UInt8(truncatingIfNeeded: words[i >> 3] >> UInt64(56 - 8 * (i & 7))))
        }
    }

    /// The packed bytes, most significant first (`bits / 8` of them).
    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(width.bytes)
        for i in 0..<width.bytes {
            out.append(UInt8(truncatingIfNeeded: words[i >> 3] >> UInt64(56 - 8 * (i & 7))))
        }
        return out
    }

    /// The hex text form: `bits / 4` lower-case digits.
    public var hex: String {
        var out = [UInt8]()
        out.reserveCapacity(width.hexDigits)
        appendHex(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends the hex text form's UTF-8 bytes to `out`, without an intermediate string.
    public func appendHex(to out: inout [UInt8]) {
        let n = width.hexDigits
        // The digits into a small buffer, then one append (not one per digit).
        words.withUnsafeBufferPointer { w in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: n) { d in
                for i in 0..<n {
                    let bit = i * 4
                    let nibble = UInt8(truncatingIfNeeded: (w[bit >> 6] >> UInt64(60 - (bit & 63))) & 0xF)
                    d[i] = nibble < 10 ? 48 + nibble : 87 + nibble
                }
                out.append(contentsOf: d)
            }
        }
    }

    public var description: String { hex }

    /// Hamming distance to another code of the same width.
    public func distance(to other: HammingCode) -> Int {
        precondition(width == other.width, "codes of different widths")
        var d = 0
        for i in 0..<words.count { d &+= (words[i] ^ other.words[i]).nonzeroBitCount }
        return d
    }

    /// The value of bit `i` (0 is the most significant).
    public func bit(_ i: Int) -> Bool {
        (words[i >> 6] >> UInt64(63 - (i & 63))) & 1 == 1
    }

    /// A copy with bit `i` flipped.
    public func flipping(_ i: Int) -> HammingCode {
        var c = self
        c.words[i >> 6] ^= UInt64(1) << UInt64(63 - (i & 63))
        return c
    }
}

/// Hamming distance between two packed codes of `words` words.
@inline(__always)
public func hammingDistance(_ a: UnsafePointer<UInt64>, _ b: UnsafePointer<UInt64>, words: Int) -> Int {
    var d = 0
    for i in 0..<words { d &+= (a[i] ^ b[i]).nonzeroBitCount }
    return d
}
