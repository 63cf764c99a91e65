/// One response of the daemon, as a client reads it.
public enum Response: Equatable, Hashable, Sendable {
    /// `OK <text>` (single-line answer).
    case ok(String)
    /// `OK <n>` and the n lines after it.
    case list([String])
    /// `ERR <CODE> <message>`.
    case error(code: String, message: String)

    public var isOK: Bool {
        if case .error = self { return false }
        return true
    }
}

/// The daemon sent something a `ResponseReader` cannot read. After one of these the
/// connection's framing is lost: close it.
public enum ResponseReaderError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A response arrived while no request was awaiting one.
    case unexpectedResponse(line: String)
    /// A line that is not `OK ...` or `ERR ...`, or a list header without a count.
    case malformed(line: String, reason: String)
    /// A line grew over the reader's limit without a line feed.
    case lineTooLong(limit: Int)

    public var description: String {
        switch self {
        case .unexpectedResponse(let l): return "response without a request: \(LineSafety.quote(l))"
        case .malformed(let l, let why): return "malformed response (\(why)): \(LineSafety.quote(l))"
        case .lineTooLong(let n): return "response line longer than \(n) bytes"
        }
    }
}

/// Incremental client-side reader: feed it the bytes read from the socket, and take
/// complete responses with `next()`.
///
/// Whether `OK <n>` starts a list depends on the request, so register each request when it
/// is sent (in sending order) with `expect(multiLine:)`, `expect(_ command:)` or
/// `expect(requestLine:)`. An `ERR` line is accepted whatever was expected.
public struct ResponseReader: Sendable {
    /// Longest response line accepted (responses are short; this bounds memory).
    public let maxLineBytes: Int

    private var buffer: [UInt8] = []
    /// First unconsumed byte of `buffer`.
    private var start = 0
    /// Bytes of `buffer` before this index are known not to contain a line feed.
    private var scanned = 0

    /// FIFO of "is the answer a list?" for the requests awaiting a response.
    private var expectations: [Bool] = []
    private var head = 0

    /// The list being collected: its lines and how many are still to come.
    private var listLines: [String] = []
    private var remaining = 0
    private var collecting = false

    public init(maxLineBytes: Int = 1 << 20) {
        self.maxLineBytes = maxLineBytes
    }

    /// Registers one sent request whose answer is a list (`true`) or a single line.
    public mutating func expect(multiLine: Bool) {
        expectations.append(multiLine)
    }

    /// Registers one sent request.
    public mutating func expect(_ command: Command) {
        expect(multiLine: command.isMultiLineResponse)
    }

    /// Registers one sent request line (with or without its line ending).
    public mutating func expect(requestLine: some Collection<UInt8>) {
        expect(multiLine: RequestParser.expectsList(requestLine: requestLine))
    }

    public mutating func expect(requestLine: String) {
        expect(requestLine: requestLine.utf8)
    }

    /// Requests sent whose response has not been returned by `next()` yet.
    public var awaiting: Int { expectations.count - head }

    /// Bytes received and not yet consumed by a returned response.
    public var bufferedBytes: Int { buffer.count - start }

    /// Appends bytes read from the connection.
    public mutating func feed(_ bytes: some Sequence<UInt8>) {
        buffer.append(contentsOf: bytes)
    }

    public mutating func feed(_ text: String) {
        feed(text.utf8)
    }

    /// The next complete response, or nil if more bytes are needed.
    public mutating func next() throws(ResponseReaderError) -> Response? {
        while let line = try nextLine() {
            if collecting {
                listLines.append(line)
                remaining -= 1
                if remaining == 0 { return finishList() }
                continue
            }
            guard head < expectations.count else {
                throw .unexpectedResponse(line: line)
            }
            let multiLine = expectations[head]
            let utf8 = line.utf8
            if utf8.starts(with: "ERR".utf8) && (utf8.count == 3 || utf8.dropFirst(3).first == 0x20) {
                popExpectation()
                let rest = line.utf8.count > 4 ? Substring(line.utf8.dropFirst(4)) : ""
                if let sp = rest.firstIndex(of: " ") {
                    return .error(code: String(rest[..<sp]), message: String(rest[rest.index(after: sp)...]))
                }
                return .error(code: String(rest), message: "")
            }
            guard utf8.starts(with: "OK".utf8) && (utf8.count == 2 || utf8.dropFirst(2).first == 0x20) else {
                throw .malformed(line: line, reason: "expected OK or ERR")
            }
            let text = utf8.count > 3 ? String(Substring(utf8.dropFirst(3))) : ""
            guard multiLine else {
                popExpectation()
                return .ok(text)
            }
            guard let n = Self.count(text) else {
                throw .malformed(line: line, reason: "expected OK <count> for a list")
            }
            if n == 0 {
                popExpectation()
                return .list([])
            }
            collecting = true
            remaining = n
            listLines = []
            listLines.reserveCapacity(min(n, 4096))
        }
        return nil
    }

    /// Every complete response available now (after feeding).
    public mutating func responses() throws(ResponseReaderError) -> [Response] {
        var out: [Response] = []
        while let r = try next() { out.append(r) }
        return out
    }

    // MARK: - Implementation

    private mutating func finishList() -> Response {
        collecting = false
        popExpectation()
        let lines = listLines
        listLines = []
        return .list(lines)
    }

    private mutating func popExpectation() {
        head += 1
        if head == expectations.count {
            expectations.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 64 && head * 2 >= expectations.count {
            expectations.removeSubrange(0..<head)
            head = 0
        }
    }

    private static func count(_ s: String) -> Int? {
        let u = s.utf8
        guard !u.isEmpty, u.count <= 18 else { return nil }
        var v = 0
        for b in u {
            guard b >= 0x30 && b <= 0x39 else { return nil }
            v = v * 10 + Int(b - 0x30)
        }
        return v
    }

    /// The next complete line (without `\n` and one `\r`), consuming it.
    private mutating func nextLine() throws(ResponseReaderError) -> String? {
        let from = max(start, scanned)
        guard let nl = buffer[from...].firstIndex(of: 0x0A) else {
            scanned = buffer.count
            if buffer.count - start > maxLineBytes { throw .lineTooLong(limit: maxLineBytes) }
            return nil
        }
        var end = nl
        if end > start && buffer[end - 1] == 0x0D { end -= 1 }
        guard end - start <= maxLineBytes else { throw .lineTooLong(limit: maxLineBytes) }
        let line = String(decoding: buffer[start..<end], as: UTF8.self)
        start = nl + 1
        scanned = start
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
            scanned = 0
        } else if start >= 4096 && start * 2 >= buffer.count {
            buffer.removeSubrange(0..<start)
            scanned -= start
            start = 0
        }
        return line
    }
}
