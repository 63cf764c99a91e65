#if canImport(Glibc)
import Glibc
#endif

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
        defer { compact() }
        while let r = try nextLine() {
            if collecting {
                listLines.append(string(r))
                remaining -= 1
                if remaining == 0 { return finishList() }
                continue
            }
            guard head < expectations.count else {
                throw .unexpectedResponse(line: string(r))
            }
            let multiLine = expectations[head]
            if startsWithWord(r, "ERR") {
                popExpectation()
                let rest = r.count > 4 ? r.lowerBound + 4..<r.upperBound : r.upperBound..<r.upperBound
                if let sp = buffer[rest].firstIndex(of: 0x20) {
                    return .error(code: string(rest.lowerBound..<sp), message: string(sp + 1..<rest.upperBound))
                }
                return .error(code: string(rest), message: "")
            }
            guard startsWithWord(r, "OK") else {
                throw .malformed(line: string(r), reason: "expected OK or ERR")
            }
            let text = r.count > 3 ? string(r.lowerBound + 3..<r.upperBound) : ""
            guard multiLine else {
                popExpectation()
                return .ok(text)
            }
            guard let n = Self.count(text) else {
                throw .malformed(line: string(r), reason: "expected OK <count> for a list")
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
    /// The bytes of `r` in the buffer as a string (invalid UTF-8 repaired).
    private func string(_ r: Range<Int>) -> String {
        buffer.withUnsafeBufferPointer { String(decoding: UnsafeBufferPointer(rebasing: $0[r]), as: UTF8.self) }
    }

    /// Whether line `r` is `word` alone or `word` and a space and more.
    private func startsWithWord(_ r: Range<Int>, _ word: StaticString) -> Bool {
        let n = word.utf8CodeUnitCount
        guard r.count >= n, r.count == n || buffer[r.lowerBound + n] == 0x20 else { return false }
        let w = word.utf8Start
        for i in 0..<n where buffer[r.lowerBound + i] != w[i] { return false }
        return true
    }

    /// The next complete line's bytes in the buffer (without its `\n` and one `\r`); they
    /// stay in place until `compact` (at the end of `next`).
    private mutating func nextLine() throws(ResponseReaderError) -> Range<Int>? {
        let from = max(start, scanned)
        let found = buffer.withUnsafeBufferPointer { b -> Int? in
            guard from < b.count, let p = memchr(b.baseAddress! + from, 0x0A, b.count - from) else { return nil }
            return UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self) - b.baseAddress!
        }
        guard let nl = found else {
            scanned = buffer.count
            if buffer.count - start > maxLineBytes { throw .lineTooLong(limit: maxLineBytes) }
            return nil
        }
        var end = nl
        if end > start && buffer[end - 1] == 0x0D { end -= 1 }
        guard end - start <= maxLineBytes else { throw .lineTooLong(limit: maxLineBytes) }
        let line = start..<end
        start = nl + 1
        scanned = start
        return line
    }

    /// Drops the bytes of the lines already read.
    private mutating func compact() {
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
            scanned = 0
        } else if start >= 4096 && start * 2 >= buffer.count {
            buffer.removeSubrange(0..<start)
            scanned -= start
            start = 0
        }
    }
}
