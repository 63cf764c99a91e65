/// Builds response text exactly as PROTOCOL.md section 2 specifies. Every result ends in `\n`.
public enum ResponseFormatter {
    /// `OK <text>\n`. `text` is sent as given (it must be one line; the daemon's texts are).
    public static func ok(_ text: String) -> String {
        "OK " + text + "\n"
    }

    /// `OK <n>\n` then each line and `\n`. Control characters in a line are replaced by a
    /// space so a line can never break the framing.
    public static func list(_ lines: [String]) -> String {
        var size = 4 + decimalLength(lines.count)
        for l in lines { size += l.utf8.count + 1 }
        var out = String()
        out.reserveCapacity(size)
        out += "OK "
        out += String(lines.count)
        out += "\n"
        for l in lines {
            out += LineSafety.singleLine(l)
            out += "\n"
        }
        return out
    }

    /// `OK <n>\n` then `<name> <value>\n` per pair (STATS).
    public static func stats(_ pairs: [(String, String)]) -> String {
        list(pairs.map { $0.0 + " " + $0.1 })
    }

    /// `OK <n>\n` then `<key> <distance>\n` per neighbour (KNN and RANGE), built in one
    /// buffer of the exact size. Keys are written as given: keys accepted by the parser
    /// never contain spaces or control characters.
    public static func neighbors(_ items: [(key: String, distance: Int)]) -> String {
        let size = neighborsSize(items)
        return String(unsafeUninitializedCapacity: size) { writeNeighbors(items, into: $0) }
    }

    /// The UTF-8 bytes of `neighbors(_:)`.
    public static func neighborsBytes(_ items: [(key: String, distance: Int)]) -> [UInt8] {
        let size = neighborsSize(items)
        return [UInt8](unsafeUninitializedCapacity: size) { buf, count in
            count = writeNeighbors(items, into: buf)
        }
    }

    /// The most bytes `writeNeighborLine` and `writeCountLine` write: a key of
    /// `RequestParser.maxKeyBytes`, a space, a distance, a newline; or `OK <n>\n`.
    public static let neighborLineMaxBytes = RequestParser.maxKeyBytes + 24

    /// The length of `OK <n>\n`.
    public static func countLineBytes(_ n: Int) -> Int { 4 + decimalLength(n) }

    /// The length of a `<key> <distance>\n` line.
    @inline(__always)
    public static func neighborLineBytes(keyBytes: Int, distance: Int) -> Int { keyBytes + decimalLength(distance) + 2 }

    /// Writes `OK <n>\n`, the first line of a list answer, at `out[at...]`.
    public static func writeCountLine(_ n: Int, into out: UnsafeMutableBufferPointer<UInt8>, at: inout Int) {
        out[at] = 0x4F; out[at + 1] = 0x4B; out[at + 2] = 0x20  // "OK "
        at += 3
        writeDecimal(n, out, &at)
        out[at] = 0x0A; at += 1
    }

    /// Writes one `<key> <distance>\n` line of a KNN or RANGE answer at `out[at...]`
    /// (a streamed answer is its count line, then these lines: the same bytes as
    /// `neighbors(_:)`).
    @inline(__always)
    public static func writeNeighborLine(key: UnsafeBufferPointer<UInt8>, distance: Int,
                                         into out: UnsafeMutableBufferPointer<UInt8>, at: inout Int) {
        if let src = key.baseAddress, key.count > 0 {
            (out.baseAddress! + at).update(from: src, count: key.count)
        }
        at += key.count
        out[at] = 0x20; at += 1
        writeDecimal(distance, out, &at)
        out[at] = 0x0A; at += 1
    }

    /// `ERR <CODE> <message>\n`; the message is made one non-empty line.
    public static func error(_ error: ProtocolError) -> String {
        let m = LineSafety.singleLine(error.message)
        return "ERR " + error.code.rawValue + " " + (m.isEmpty ? error.code.defaultMessage : m) + "\n"
    }

    /// `ERR <CODE> <message>\n`.
    public static func error(_ code: ErrorCode, _ message: String) -> String {
        error(ProtocolError(code, message))
    }

    /// The wire text of a `Response` (useful for tests and proxies).
    public static func format(_ response: Response) -> String {
        switch response {
        case .ok(let t): return ok(t)
        case .list(let lines): return list(lines)
        case .error(let code, let message):
            let m = LineSafety.singleLine(message)
            return "ERR " + LineSafety.singleLine(code) + " " + (m.isEmpty ? "error" : m) + "\n"
        }
    }

    // MARK: - Implementation

    @inline(__always)
    static func digitCount(_ x: UInt) -> Int {
        var n = 1
        var x = x
        while x >= 10 { x /= 10; n += 1 }
        return n
    }

    @inline(__always)
    static func decimalLength(_ v: Int) -> Int {
        (v < 0 ? 1 : 0) + digitCount(v.magnitude)
    }

    static func neighborsSize(_ items: [(key: String, distance: Int)]) -> Int {
        var size = countLineBytes(items.count)
        for it in items { size += neighborLineBytes(keyBytes: it.key.utf8.count, distance: it.distance) }
        return size
    }

    @inline(__always)
    static func writeDecimal(_ v: Int, _ out: UnsafeMutableBufferPointer<UInt8>, _ at: inout Int) {
        if v < 0 { out[at] = 0x2D; at += 1 }
        var x = v.magnitude
        let len = digitCount(x)
        var j = at + len - 1
        repeat {
            out[j] = UInt8(truncatingIfNeeded: x % 10) &+ 0x30
            x /= 10
            j -= 1
        } while x > 0
        at += len
    }

    static func writeNeighbors(_ items: [(key: String, distance: Int)], into out: UnsafeMutableBufferPointer<UInt8>) -> Int {
        var at = 0
        writeCountLine(items.count, into: out, at: &at)
        for it in items {
            var key = it.key
            key.withUTF8 { writeNeighborLine(key: $0, distance: it.distance, into: out, at: &at) }
        }
        return at
    }
}
