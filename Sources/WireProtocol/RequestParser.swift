import HammingCode

/// Parses one request line (PROTOCOL.md sections 1, 3 and 4).
public enum RequestParser {
    /// Longest key, in UTF-8 bytes.
    public static let maxKeyBytes = 256
    /// Largest k of KNN (at most 7 digits).
    public static let maxK = 1_000_000
    /// Largest radius of RANGE.
    public static let maxRadius = 65_535
    /// Largest m the parser lets through for REBUILD (the daemon checks it against the width).
    public static let maxSubstrings = 100_000

    /// Parses one line's bytes, without its `\n`; one trailing `\r` is removed here.
    /// Works in place on contiguous input (`[UInt8]`, `ArraySlice`, `String.UTF8View`, ...).
    public static func parse(_ line: some Collection<UInt8>) -> Result<Command, ProtocolError> {
        if let r = line.withContiguousStorageIfAvailable({ parse(buffer: $0) }) { return r }
        return Array(line).withUnsafeBufferPointer { parse(buffer: $0) }
    }

    /// Parses one line's bytes (without its `\n`), as `parse(_:)` does, without a generic
    /// collection in between (the daemon's path).
    public static func parse(bytes: UnsafeRawBufferPointer) -> Result<Command, ProtocolError> {
        parse(buffer: bytes.assumingMemoryBound(to: UInt8.self))
    }

    /// The key and code of a well-formed `ADD <key> CODE <hex>` line (without its `\n`)
    /// whose code has `width`: what `parse` and the daemon's check of the code against the
    /// database's width would make of it, without a `Command` or a copy of the digits.
    /// Nil for every other line, including every malformed ADD: `parse` then answers it, or
    /// rejects it with its error.
    public static func addCode(_ bytes: UnsafeRawBufferPointer, width: CodeWidth) -> (key: String, code: HammingCode)? {
        let whole = bytes.assumingMemoryBound(to: UInt8.self)
        var n = whole.count
        if n > 0 && whole[n - 1] == 0x0D { n -= 1 }
        let p = UnsafeBufferPointer(rebasing: whole[0..<n])
        // "ADD " in any case of letters, checked before anything else is looked at.
        guard n > 4, isWord(p, 0..<3, "ADD"), p[3] == 0x20, firstInvalidUTF8(p) == nil else { return nil }
        var tokens = Tokens()
        guard let count = try? tokenize(p, into: &tokens), count == 4, isWord(p, tokens[2], "CODE"),
              let k = try? key(p, tokens[1]),
              let code = try? HammingCode(hexBytes: UnsafeBufferPointer(rebasing: p[tokens[3]]), width: width)
        else { return nil }
        return (k, code)
    }

    /// Parses a line given as a string (without its `\n`).
    public static func parse(_ line: String) -> Result<Command, ProtocolError> {
        parse(line.utf8)
    }

    /// Parses one line, throwing instead of returning a `Result`.
    public static func parseLine(_ line: some Collection<UInt8>) throws(ProtocolError) -> Command {
        try parse(line).get()
    }

    /// Whether the response to this request line is a multi-line `OK <n>` (KNN, RANGE,
    /// STATS and METRICS), judged from the first token like the daemon does. A malformed request gets a
    /// single-line `ERR`, which a reader expecting a list accepts too. A trailing `\n` or
    /// `\r\n` is ignored.
    public static func expectsList(requestLine: some Collection<UInt8>) -> Bool {
        if let r = requestLine.withContiguousStorageIfAvailable({ expectsList(bytes: $0) }) { return r }
        return Array(requestLine).withUnsafeBufferPointer { expectsList(bytes: $0) }
    }

    /// `expectsList(requestLine:)` of a line's bytes.
    public static func expectsList(bytes b: UnsafeBufferPointer<UInt8>) -> Bool {
        var n = 0
        while n < b.count && b[n] != 0x20 && b[n] != 0x0A {
            if n == 8 { return false }  // longer than "METRICS\r"
            n += 1
        }
        if n > 0 && b[n - 1] == 0x0D { n -= 1 }
        return isWord(b, 0..<n, "KNN") || isWord(b, 0..<n, "RANGE") || isWord(b, 0..<n, "STATS") || isWord(b, 0..<n, "METRICS")
    }

    public static func expectsList(requestLine: String) -> Bool {
        expectsList(requestLine: requestLine.utf8)
    }

    /// Why `key` is not a key the daemon accepts (BADKEY's message, or the rule for an
    /// empty key or one with a space), or nil when it is one. Clients check keys with it
    /// before sending anything. (A key ending in CR is refused too: `GET <key>\r` would
    /// parse, the final CR being framing, but `ADD <key> ...` with it is a BADKEY.)
    public static func keyProblem(_ key: String) -> String? {
        var key = key
        return key.withUTF8 { keyProblem(bytes: $0) }
    }

    /// `keyProblem` of a key given as its bytes: nil when they are a key the daemon
    /// accepts (1 to `maxKeyBytes` bytes of UTF-8, no white space or control character:
    /// the parser's own check of a key token).
    public static func keyProblem(bytes: UnsafeBufferPointer<UInt8>) -> String? {
        guard !bytes.isEmpty, !bytes.contains(0x20) else {
            return "a key is 1 to \(maxKeyBytes) bytes of UTF-8 without white space"
        }
        if let bad = firstInvalidUTF8(bytes) {
            return "key is not valid UTF-8 (bad byte at offset \(bad))"
        }
        do {
            _ = try key(bytes, 0..<bytes.count)
            return nil
        } catch {
            return error.message
        }
    }

    // MARK: - Implementation

    static func parse(buffer whole: UnsafeBufferPointer<UInt8>) -> Result<Command, ProtocolError> {
        var n = whole.count
        if n > 0 && whole[n - 1] == 0x0D { n -= 1 }
        let p = UnsafeBufferPointer(rebasing: whole[0..<n])
        do {
            return .success(try parseStripped(p))
        } catch {
            return .failure(error)
        }
    }

    /// At most this many tokens are located; more is an arity error anyway.
    static let maxTokens = 5

    static func parseStripped(_ p: UnsafeBufferPointer<UInt8>) throws(ProtocolError) -> Command {
        guard p.count > 0 else { throw ProtocolError(.badRequest, "empty request line") }
        if let bad = firstInvalidUTF8(p) {
            throw ProtocolError(.badRequest, "request is not valid UTF-8 (bad byte at offset \(bad))")
        }
        var tokens = Tokens()
        let args = try tokenize(p, into: &tokens) - 1
        let cmd = tokens[0]
        // The frequent commands first: a case is a string comparison.
        switch foldedWord(p, cmd) {
        case "ADD": return try add(p, tokens, args)
        case "DEL":
            try arity(args, 1, "DEL <key>")
            return .del(key: try key(p, tokens[1]))
        case "KNN": return try knn(p, tokens, args)
        case "GET":
            try arity(args, 1, "GET <key>")
            return .get(key: try key(p, tokens[1]))
        case "RANGE": return try range(p, tokens, args)
        case "PING": try arity(args, 0, "PING"); return .ping
        case "QUIT": try arity(args, 0, "QUIT"); return .quit
        case "STATS": try arity(args, 0, "STATS"); return .stats
        case "METRICS": try arity(args, 0, "METRICS"); return .metrics
        case "COMPACT": try arity(args, 0, "COMPACT"); return .compact
        case "VERIFY": try arity(args, 0, "VERIFY"); return .verify
        case "REENCODE": try arity(args, 0, "REENCODE"); return .reencode
        case "REBUILD": return try rebuild(p, tokens, args)
        case "BACKUP": return try backup(p, tokens, args)
        default:
            throw ProtocolError(.badRequest, "unknown command \(quote(p, cmd)) (commands: PING ADD DEL GET KNN RANGE STATS METRICS COMPACT REBUILD VERIFY REENCODE BACKUP QUIT)")
        }
    }

    /// The first `maxTokens` tokens of a line, held inline (no allocation per request).
    struct Tokens {
        private var ranges: (Range<Int>, Range<Int>, Range<Int>, Range<Int>, Range<Int>) = (0..<0, 0..<0, 0..<0, 0..<0, 0..<0)
        private(set) var count = 0

        mutating func append(_ r: Range<Int>) {
            precondition(count < RequestParser.maxTokens, "more tokens than maxTokens")
            withUnsafeMutableBytes(of: &ranges) { $0.storeBytes(of: r, toByteOffset: count * MemoryLayout<Range<Int>>.stride, as: Range<Int>.self) }
            count += 1
        }

        subscript(i: Int) -> Range<Int> {
            precondition(i >= 0 && i < count, "token index out of range")
            return withUnsafeBytes(of: ranges) { $0.load(fromByteOffset: i * MemoryLayout<Range<Int>>.stride, as: Range<Int>.self) }
        }
    }

    /// Splits the line at its spaces: exactly one between tokens, none at either end.
    /// Locates the first `maxTokens` tokens into `tokens`; returns how many there are.
    @inline(__always)
    static func tokenize(_ p: UnsafeBufferPointer<UInt8>, into tokens: inout Tokens) throws(ProtocolError) -> Int {
        if p[0] == 0x20 {
            throw ProtocolError(.badRequest, "malformed request: leading space (tokens are separated by exactly one space)")
        }
        var tokenCount = 0
        var start = 0
        var i = 0
        let n = p.count
        while i < n {
            if p[i] == 0x20 {
                if i + 1 < n && p[i + 1] == 0x20 {
                    throw ProtocolError(.badRequest, "malformed request: two spaces in a row at offset \(i) (tokens are separated by exactly one space)")
                }
                if i + 1 == n {
                    throw ProtocolError(.badRequest, "malformed request: trailing space (tokens are separated by exactly one space)")
                }
                if tokenCount < maxTokens { tokens.append(start..<i) }
                tokenCount += 1
                start = i + 1
            }
            i += 1
        }
        if tokenCount < maxTokens { tokens.append(start..<n) }
        return tokenCount + 1
    }

    @inline(__always)
    static func rebuild(_ p: UnsafeBufferPointer<UInt8>, _ tokens: Tokens, _ args: Int) throws(ProtocolError) -> Command {
        guard args <= 1 else {
            throw ProtocolError(.badRequest, "wrong number of arguments: usage is 'REBUILD' or 'REBUILD <m>', got \(args) arguments")
        }
        if args == 0 { return .rebuild(m: nil) }
        guard let m = decimal(p, tokens[1], maxDigits: nil), m >= 1, m <= maxSubstrings else {
            throw ProtocolError(.badRequest, "m must be a decimal integer from 1 to \(maxSubstrings), got \(quote(p, tokens[1]))")
        }
        return .rebuild(m: m)
    }

    @inline(__always)
    static func backup(_ p: UnsafeBufferPointer<UInt8>, _ tokens: Tokens, _ args: Int) throws(ProtocolError) -> Command {
        try arity(args, 1, "BACKUP <path>")
        for i in tokens[1] where p[i] < 0x20 || p[i] == 0x7F {
            throw ProtocolError(.badRequest, "BACKUP path contains the control character 0x\(LineSafety.hex2(UInt32(p[i]))): \(quote(p, tokens[1]))")
        }
        let path = string(p, tokens[1])
        guard path.hasPrefix("/") else {
            throw ProtocolError(.badRequest, "BACKUP needs an absolute path (the daemon's working directory is not the client's), got \(quote(p, tokens[1]))")
        }
        return .backup(path: path)
    }

    @inline(__always)
    static func add(_ p: UnsafeBufferPointer<UInt8>, _ tokens: Tokens, _ args: Int) throws(ProtocolError) -> Command {
        try arity(args, 3, "ADD <key> CODE|IMAGE|IMAGE64 <value>")
        let k = try key(p, tokens[1])
        let s = try source(p, tokens[2], tokens[3])
        switch s {
        case .sketch, .sketch64:
            throw ProtocolError(.badRequest, "ADD does not take \(s.word): use CODE, IMAGE or IMAGE64")
        default:
            return .add(key: k, from: s)
        }
    }

    @inline(__always)
    static func knn(_ p: UnsafeBufferPointer<UInt8>, _ tokens: Tokens, _ args: Int) throws(ProtocolError) -> Command {
        try arity(args, 3, "KNN <k> CODE|IMAGE|IMAGE64|SKETCH|SKETCH64 <value>")
        guard let k = decimal(p, tokens[1], maxDigits: 7), k >= 1, k <= maxK else {
            throw ProtocolError(.badRequest, "k must be a decimal integer from 1 to \(maxK), got \(quote(p, tokens[1]))")
        }
        return .knn(k: k, query: try source(p, tokens[2], tokens[3]))
    }

    @inline(__always)
    static func range(_ p: UnsafeBufferPointer<UInt8>, _ tokens: Tokens, _ args: Int) throws(ProtocolError) -> Command {
        try arity(args, 3, "RANGE <r> CODE|IMAGE|IMAGE64|SKETCH|SKETCH64 <value>")
        guard let r = decimal(p, tokens[1], maxDigits: nil), r <= maxRadius else {
            throw ProtocolError(.badRequest, "radius must be a decimal integer from 0 to \(maxRadius), got \(quote(p, tokens[1]))")
        }
        return .range(radius: r, query: try source(p, tokens[2], tokens[3]))
    }

    static func arity(_ got: Int, _ expected: Int, _ usage: String) throws(ProtocolError) {
        guard got != expected else { return }
        if expected == 0 {
            throw ProtocolError(.badRequest, "\(usage) takes no arguments, got \(got)")
        }
        throw ProtocolError(.badRequest, "wrong number of arguments: usage is '\(usage)', got \(got) argument\(got == 1 ? "" : "s")")
    }

    static func key(_ p: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) throws(ProtocolError) -> String {
        guard r.count <= maxKeyBytes else {
            throw ProtocolError(.badKey, "key is \(r.count) bytes long, the limit is \(maxKeyBytes): \(quote(p, r))")
        }
        var ascii = true
        for i in r {
            if p[i] < 0x20 || p[i] == 0x7F {
                throw ProtocolError(.badKey, "key contains the control character 0x\(LineSafety.hex2(UInt32(p[i]))) at byte \(i - r.lowerBound + 1): \(quote(p, r))")
            }
            if p[i] >= 0x80 { ascii = false }
        }
        let key = string(p, r)
        if !ascii {
            // Unicode white space (U+00A0, U+2003, U+3000, ...) and C1 controls are not allowed either.
            for scalar in key.unicodeScalars where scalar.properties.isWhitespace || (0x80...0x9F).contains(scalar.value) {
                throw ProtocolError(.badKey, "key contains the white-space or control character U+\(String(scalar.value, radix: 16, uppercase: true)): \(quote(p, r))")
            }
        }
        return key
    }

    static func source(_ p: UnsafeBufferPointer<UInt8>, _ w: Range<Int>, _ v: Range<Int>) throws(ProtocolError) -> CodeSource {
        switch foldedWord(p, w) {
        case "CODE": return .code(hexDigits: Array(UnsafeBufferPointer(rebasing: p[v])))
        case "IMAGE": return .image(path: string(p, v))
        case "IMAGE64": return .image64(string(p, v))
        case "SKETCH": return .sketch(path: string(p, v))
        case "SKETCH64": return .sketch64(string(p, v))
        default:
            throw ProtocolError(.badRequest, "unknown code source \(quote(p, w)) (expected CODE, IMAGE, IMAGE64, SKETCH or SKETCH64)")
        }
    }

    /// The decimal value of a token made only of ASCII digits (saturating at Int.max / 10),
    /// or nil when it is empty, has another character, or has more than `maxDigits` digits.
    static func decimal(_ p: UnsafeBufferPointer<UInt8>, _ r: Range<Int>, maxDigits: Int?) -> Int? {
        guard !r.isEmpty else { return nil }
        if let maxDigits, r.count > maxDigits { return nil }
        var v = 0
        for i in r {
            let d = p[i] &- 0x30
            guard d <= 9 else { return nil }
            if v < Int.max / 100 { v = v * 10 + Int(d) }
        }
        return v
    }

    @inline(__always)
    static func string(_ p: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: p[r]), as: UTF8.self)
    }

    static func quote(_ p: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) -> String {
        LineSafety.quote(UnsafeBufferPointer(rebasing: p[r]))
    }

    /// Whether token `r` of `p` is `word` (upper case) in any case of its ASCII letters, as
    /// `foldedWord(p, r) == word` says, without making a string.
    @inline(__always)
    static func isWord(_ p: UnsafeBufferPointer<UInt8>, _ r: Range<Int>, _ word: StaticString) -> Bool {
        guard r.count == word.utf8CodeUnitCount else { return false }
        for i in 0..<r.count {
            let c = p[r.lowerBound + i]
            if (c >= 0x61 && c <= 0x7A ? c &- 0x20 : c) != word.utf8Start[i] { return false }
        }
        return true
    }

    /// The token with ASCII letters upper-cased, if it is at most 8 bytes (every command
    /// and source word is); otherwise "".
    static func foldedWord(_ p: UnsafeBufferPointer<UInt8>, _ r: Range<Int>) -> String {
        foldedWord(UnsafeBufferPointer(rebasing: p[r]))
    }

    static func foldedWord(_ w: some Collection<UInt8>) -> String {
        let count = w.count
        guard count > 0, count <= 8 else { return "" }
        return String(unsafeUninitializedCapacity: count) { out in
            var j = 0
            for b in w {
                out[j] = (b >= 0x61 && b <= 0x7A) ? b &- 0x20 : b
                j += 1
            }
            return j
        }
    }

    /// Offset of the first byte that is not part of well-formed UTF-8, or nil.
    static func firstInvalidUTF8(_ p: UnsafeBufferPointer<UInt8>) -> Int? {
        let n = p.count
        guard let base = p.baseAddress else { return nil }
        let raw = UnsafeRawPointer(base)
        var i = 0
        while i < n {
            // ASCII fast path, 8 bytes at a time.
            while i + 8 <= n && raw.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080 == 0 {
                i += 8
            }
            guard i < n else { break }
            let b = p[i]
            if b < 0x80 { i += 1; continue }
            @inline(__always) func cont(_ j: Int) -> Bool { j < n && p[j] & 0xC0 == 0x80 }
            switch b {
            case 0xC2...0xDF:
                guard cont(i + 1) else { return i }
                i += 2
            case 0xE0...0xEF:
                guard cont(i + 1), cont(i + 2) else { return i }
                let b1 = p[i + 1]
                if b == 0xE0 && b1 < 0xA0 { return i }   // overlong
                if b == 0xED && b1 >= 0xA0 { return i }  // surrogate
                i += 3
            case 0xF0...0xF4:
                guard cont(i + 1), cont(i + 2), cont(i + 3) else { return i }
                let b1 = p[i + 1]
                if b == 0xF0 && b1 < 0x90 { return i }   // overlong
                if b == 0xF4 && b1 >= 0x90 { return i }  // above U+10FFFF
                i += 4
            default:
                return i
            }
        }
        return nil
    }
}
