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

/// One code, owning its words: up to 256 bits in place (a code is then a plain value,
/// with no allocation: the write path makes one per request), wider codes in an array.
public struct HammingCode: Hashable, Sendable, CustomStringConvertible {
    public let width: CodeWidth
    /// The words of a code of up to `inlineWords` words; the unused ones zero.
    private var small: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    /// The words of a wider code; empty otherwise.
    private var large: [UInt64] = []
    /// Words held in place.
    static let inlineWords = 4

    /// `width.words` words, most significant bit first (a new array: hot paths read them
    /// through `withWords`).
    public var words: [UInt64] { withWords { Array($0) } }

    /// Calls `body` with the code's `width.words` words, most significant bit first.
    @inline(__always)
    public func withWords<R>(_ body: (UnsafeBufferPointer<UInt64>) throws -> R) rethrows -> R {
        let n = width.words
        guard n <= HammingCode.inlineWords else { return try large.withUnsafeBufferPointer(body) }
        var s = small
        return try withUnsafeMutableBytes(of: &s) { raw in
            try body(UnsafeBufferPointer(start: raw.baseAddress!.assumingMemoryBound(to: UInt64.self), count: n))
        }
    }

    /// Calls `body` with the code's words to change them in place.
    @inline(__always)
    private mutating func withMutableWords<R>(_ body: (UnsafeMutableBufferPointer<UInt64>) throws -> R) rethrows -> R {
        let n = width.words
        guard n <= HammingCode.inlineWords else { return try large.withUnsafeMutableBufferPointer { try body($0) } }
        return try withUnsafeMutableBytes(of: &small) { raw in
            try body(UnsafeMutableBufferPointer(start: raw.baseAddress!.assumingMemoryBound(to: UInt64.self), count: n))
        }
    }

    /// A code of `width` whose words `fill` writes (all `width.words` of them; they start zero).
    @inline(__always)
    init(width: CodeWidth, filling fill: (UnsafeMutableBufferPointer<UInt64>) throws -> Void) rethrows {
        self.width = width
        if width.words > HammingCode.inlineWords { large = [UInt64](repeating: 0, count: width.words) }
        try withMutableWords(fill)
        // Padding bits (a width not a multiple of 64) are zero.
        if width.bits % 64 != 0 { withMutableWords { $0[$0.count - 1] &= ~UInt64(0) << 32 } }
    }

    public init(width: CodeWidth, words: [UInt64]) {
        precondition(words.count == width.words, "word count does not match the width")
        self.init(width: width) { out in _ = out.initialize(from: words) }
    }

    /// A code from `width.words` packed words (most significant bit first).
    public init(width: CodeWidth, copying source: UnsafePointer<UInt64>) {
        self.init(width: width) { out in out.baseAddress!.update(from: source, count: out.count) }
    }

    /// The all-zero code.
    public init(zeroOf width: CodeWidth) {
        self.init(width: width) { _ in }
    }

    public static func == (a: HammingCode, b: HammingCode) -> Bool {
        a.width == b.width && a.withWords { x in b.withWords { y in x.elementsEqual(y) } }
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(width)
        withWords { for w in $0 { hasher.combine(w) } }
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
        self.init(width: width) { out in bad = gdh_hex_decode(digits.baseAddress!, digits.count, out.baseAddress!) }
        if bad >= 0 { throw CodeError.badDigit(position: bad) }
    }

    /// Builds a code from its packed bytes (`bits / 8` bytes, most significant first).
    public init(bytes: some Collection<UInt8>, width: CodeWidth) throws {
        guard bytes.count == width.bytes else {
            throw CodeError.badLength(expected: width.hexDigits, got: bytes.count * 2)
        }
        self.init(width: width) { out in
            let fill = { (b: UnsafeBufferPointer<UInt8>) in
                for i in 0..<b.count { out[i >> 3] |= UInt64(b[i]) << UInt64(56 - 8 * (i & 7)) }
            }
            // Contiguous bytes take the specialised loop (see init(hexUTF8:width:)).
            if bytes.withContiguousStorageIfAvailable(fill) == nil { Array(bytes).withUnsafeBufferPointer(fill) }
        }
    }

    /// Appends the packed bytes (most significant first) to `out`, without an
    /// intermediate array.
    public func appendBytes(to out: inout [UInt8]) {
        withWords { w in
            // A word's bytes at a time (the last word of a width not a multiple of 64 has 4).
            var left = width.bytes
            for x in w {
                let n = min(8, left)
                withUnsafeBytes(of: x.bigEndian) { out.append(contentsOf: UnsafeRawBufferPointer(rebasing: $0.prefix(n))) }
                left -= n
            }
        }
    }

    /// The packed bytes, most significant first (`bits / 8` of them).
    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(width.bytes)
        appendBytes(to: &out)
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
        withWords { w in
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
        return withWords { a in other.withWords { b in hammingDistance(a.baseAddress!, b.baseAddress!, words: a.count) } }
    }

    /// The value of bit `i` (0 is the most significant).
    public func bit(_ i: Int) -> Bool {
        withWords { ($0[i >> 6] >> UInt64(63 - (i & 63))) & 1 == 1 }
    }

    /// A copy with bit `i` flipped.
    public func flipping(_ i: Int) -> HammingCode {
        var c = self
        c.withMutableWords { $0[i >> 6] ^= UInt64(1) << UInt64(63 - (i & 63)) }
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
