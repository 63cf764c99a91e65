import HammingCode

/// Where a request's code comes from (PROTOCOL.md section 4): the hex digits themselves,
/// or an image or sketch the daemon encodes. ("Source" alone means something else: the
/// image a stored item was encoded from, HashStore's `ItemSource`, kept for REENCODE.)
public enum CodeSource: Equatable, Hashable, Sendable {
    /// `CODE <hex>`: the raw ASCII digits, checked against the database width by `code(width:)`.
    case code(hexDigits: [UInt8])
    /// `IMAGE <path>`.
    case image(path: String)
    /// `IMAGE64 <base64>` (not decoded here).
    case image64(String)
    /// `SKETCH <path>` (KNN and RANGE only).
    case sketch(path: String)
    /// `SKETCH64 <base64>` (KNN and RANGE only; not decoded here).
    case sketch64(String)

    /// The protocol word: `CODE`, `IMAGE`, `IMAGE64`, `SKETCH` or `SKETCH64`.
    public var word: String {
        switch self {
        case .code: return "CODE"
        case .image: return "IMAGE"
        case .image64: return "IMAGE64"
        case .sketch: return "SKETCH"
        case .sketch64: return "SKETCH64"
        }
    }

    /// The token after the word, as sent.
    public var argument: String {
        switch self {
        case .code(let d): return String(decoding: d, as: UTF8.self)
        case .image(let s), .image64(let s), .sketch(let s), .sketch64(let s): return s
        }
    }

    /// True for `CODE <hex>`; the others need a model.
    public var isCode: Bool {
        if case .code = self { return true }
        return false
    }

    /// The code of a `CODE <hex>` source for a database of `width`.
    /// Throws `BADCODE` for a wrong digit count or a non-hex digit, and `NOMODEL` for
    /// the image and sketch sources (their codes come from the daemon's encoder, not from
    /// the request line).
    public func code(width: CodeWidth) throws(ProtocolError) -> HammingCode {
        guard case .code(let digits) = self else { throw ProtocolError.noModel(for: self) }
        do {
            return try HammingCode(hexUTF8: digits, width: width)
        } catch let e as CodeError {
            throw ProtocolError(.badCode, e.description)
        } catch {
            throw ProtocolError(.badCode, "bad code: \(error)")
        }
    }
}

/// One parsed request line.
public enum Command: Equatable, Hashable, Sendable {
    case ping
    case quit
    case stats
    /// `METRICS`: counters, histograms and gauges in the Prometheus text format.
    case metrics
    case compact
    case verify
    /// `REENCODE`: encode every stored image again with the loaded model.
    case reencode
    /// `REBUILD` (m = nil: use the setting) or `REBUILD <m>`.
    case rebuild(m: Int?)
    /// `ADD <key> CODE|IMAGE|IMAGE64 <value>` (never a sketch).
    case add(key: String, from: CodeSource)
    case del(key: String)
    case get(key: String)
    case knn(k: Int, query: CodeSource)
    case range(radius: Int, query: CodeSource)
    /// `BACKUP <path>`: a consistent copy of the database written to an absolute path.
    case backup(path: String)

    /// The command word, upper case.
    public var name: String {
        switch self {
        case .ping: return "PING"
        case .quit: return "QUIT"
        case .stats: return "STATS"
        case .metrics: return "METRICS"
        case .compact: return "COMPACT"
        case .verify: return "VERIFY"
        case .reencode: return "REENCODE"
        case .rebuild: return "REBUILD"
        case .add: return "ADD"
        case .del: return "DEL"
        case .get: return "GET"
        case .knn: return "KNN"
        case .range: return "RANGE"
        case .backup: return "BACKUP"
        }
    }

    /// ADD, DEL, COMPACT, REBUILD and REENCODE change the database (PROTOCOL.md section 6).
    public var isWrite: Bool {
        switch self {
        case .add, .del, .compact, .rebuild, .reencode: return true
        case .ping, .quit, .stats, .metrics, .verify, .get, .knn, .range, .backup: return false
        }
    }

    /// KNN, RANGE, STATS and METRICS answer `OK <n>` followed by n lines; the others one line.
    public var isMultiLineResponse: Bool {
        switch self {
        case .knn, .range, .stats, .metrics: return true
        default: return false
        }
    }

    /// Appends `requestLine`'s bytes to `out` (an ADD of a code without a String made).
    public func appendRequestLine(to out: inout [UInt8]) {
        if case .add(var key, .code(let digits)) = self {
            out.append(contentsOf: Command.addWord)
            key.withUTF8 { out.append(contentsOf: $0) }
            out.append(contentsOf: Command.codeWord)
            out.append(contentsOf: digits)
        } else {
            var line = requestLine
            line.withUTF8 { out.append(contentsOf: $0) }
        }
    }

    /// "ADD " and " CODE ", as `appendRequestLine` writes them.
    public static let addWord = Array("ADD ".utf8), codeWord = Array(" CODE ".utf8)

    /// The request in wire form, without the line feed (for clients and tests).
    public var requestLine: String {
        switch self {
        case .ping, .quit, .stats, .metrics, .compact, .verify, .reencode, .rebuild(nil): return name
        case .rebuild(let m?): return "REBUILD \(m)"
        case .add(let key, let s): return "ADD \(key) \(s.word) \(s.argument)"
        case .del(let key): return "DEL \(key)"
        case .get(let key): return "GET \(key)"
        case .knn(let k, let s): return "KNN \(k) \(s.word) \(s.argument)"
        case .range(let r, let s): return "RANGE \(r) \(s.word) \(s.argument)"
        case .backup(let path): return "BACKUP \(path)"
        }
    }
}

/// Appends n's decimal digits (n >= 0) to `out`.
public func appendDecimal(_ n: Int, to out: inout [UInt8]) {
    precondition(n >= 0, "appendDecimal of a negative number")
    var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // room for 24 digits
    var v = n, k = 0
    withUnsafeMutableBytes(of: &digits) { d in
        repeat {
            d[23 - k] = UInt8(48 + v % 10)
            v /= 10
            k += 1
        } while v > 0
        out.append(contentsOf: UnsafeRawBufferPointer(rebasing: d[(24 - k)...]))
    }
}
