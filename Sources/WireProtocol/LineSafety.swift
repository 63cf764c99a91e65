/// Keeps text that goes into a response on one line, and quotes user input for messages.
enum LineSafety {
    /// Longest part of a user token echoed in a message, in bytes.
    static let quoteLimit = 64

    @inline(__always)
    static func isUnsafe(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        return v < 0x20 || (v >= 0x7F && v <= 0x9F) || v == 0x2028 || v == 0x2029
    }

    /// True when the UTF-8 bytes of `s` contain nothing `singleLine` would change.
    static func isSingleLine(_ s: String) -> Bool {
        var prev: UInt8 = 0, prev2: UInt8 = 0
        for b in s.utf8 {
            if b < 0x20 || b == 0x7F { return false }
            // U+0080...U+009F is C2 80...C2 9F; U+2028/U+2029 is E2 80 A8/A9.
            if prev == 0xC2 && b >= 0x80 && b <= 0x9F { return false }
            if prev2 == 0xE2 && prev == 0x80 && (b == 0xA8 || b == 0xA9) { return false }
            prev2 = prev
            prev = b
        }
        return true
    }

    /// `s` with every control character (C0, DEL, C1) and U+2028/U+2029 replaced by a space.
    static func singleLine(_ s: String) -> String {
        if isSingleLine(s) { return s }
        var out = String.UnicodeScalarView()
        for u in s.unicodeScalars { out.append(isUnsafe(u) ? " " : u) }
        return String(out)
    }

    /// `'token'` with control characters escaped (`\x09`, `\u{85}`) and at most
    /// `quoteLimit` bytes of the token shown (then `...`).
    static func quote(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
        var end = min(bytes.count, quoteLimit)
        let truncated = end < bytes.count
        // Do not cut a UTF-8 sequence: back up to the start of the cut character.
        if truncated {
            var j = end
            while j > 0 && bytes[j] & 0xC0 == 0x80 && end - j < 3 { j -= 1 }
            if bytes[j] & 0xC0 != 0x80 { end = j }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[0..<end]), as: UTF8.self)
        var out = "'"
        out.reserveCapacity(end + 8)
        for u in text.unicodeScalars {
            if isUnsafe(u) {
                out += u.value < 0x80 ? "\\x" + hex2(u.value) : "\\u{" + String(u.value, radix: 16) + "}"
            } else {
                out.unicodeScalars.append(u)
            }
        }
        out += truncated ? "...'" : "'"
        return out
    }

    static func quote(_ s: String) -> String {
        var s = s
        return s.withUTF8 { quote($0) }
    }

    static func hex2(_ v: UInt32) -> String {
        let digits = Array("0123456789ABCDEF".unicodeScalars)
        return String(digits[Int(v >> 4) & 0xF]) + String(digits[Int(v) & 0xF])
    }
}
