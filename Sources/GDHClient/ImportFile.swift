import WireProtocol

/// A file of `key hex` lines for `gdh import`, checked whole before anything is sent: one
/// space between key and code, empty lines and lines starting with `#` skipped, a `\r`
/// before the `\n` ignored. Every key must be one the daemon accepts and every code
/// `bits / 4` hex digits. A file whose first line is `dumpMarker` (what `gdh dump` writes)
/// has no comments after it: every later line that is not empty is an item, so keys that
/// begin with `#` come back whole.
public struct ImportFile {
    /// The first line of `gdh dump`'s output (a comment to readers that do not know it).
    public static let dumpMarker = "#gdh-dump 1"

    /// One request of the file: the file's line number (from 1) and the ADD it becomes.
    public struct Entry: Equatable, Sendable {
        public let line: Int
        public let command: Command
    }

    /// The requests, in file order.
    public private(set) var entries: [Entry] = []
    /// One message per malformed line (`line N: ...`), in file order.
    public private(set) var problems: [String] = []

    public init(parsing data: some BidirectionalCollection<UInt8>, bits: Int) {
        if data.withContiguousStorageIfAvailable({ parse($0, bits: bits) }) == nil {
            Array(data).withUnsafeBufferPointer { parse($0, bits: bits) }
        }
    }

    /// Reads the lines of `data` in place (a file of millions of lines is parsed in well
    /// under a second; a generic split over `Data` took most of an import's time).
    private mutating func parse(_ data: UnsafeBufferPointer<UInt8>, bits: Int) {
        let marker = Array(ImportFile.dumpMarker.utf8)
        let digits = bits / 4
        var lineNumber = 0
        var comments = true
        var start = 0
        let n = data.count
        // Like splitting at every \n, empty pieces included: n bytes make (number of \n) + 1 lines.
        while start <= n {
            var end = start
            while end < n && data[end] != 0x0A { end += 1 }
            let next = end + 1
            lineNumber += 1
            if end > start && data[end - 1] == 0x0D { end -= 1 }
            let line = UnsafeBufferPointer(rebasing: data[start..<end])
            start = next
            if lineNumber == 1 && line.elementsEqual(marker) {
                comments = false
                continue
            }
            if line.isEmpty || (comments && line[0] == UInt8(ascii: "#")) { continue }
            guard let space = line.firstIndex(of: 0x20),
                  !line[(space + 1)...].contains(0x20),
                  RequestParser.keyProblem(bytes: UnsafeBufferPointer(rebasing: line[..<space])) == nil else {
                problems.append("line \(lineNumber): expected `key hex` with a key of 1 to \(RequestParser.maxKeyBytes) bytes and no spaces")
                continue
            }
            let hex = UnsafeBufferPointer(rebasing: line[(space + 1)...])
            guard hex.count == digits, hex.allSatisfy(ImportFile.isHexDigit) else {
                problems.append("line \(lineNumber): the code must be \(digits) hex digits for this \(bits)-bit database")
                continue
            }
            let key = String(decoding: UnsafeBufferPointer(rebasing: line[..<space]), as: UTF8.self)
            entries.append(Entry(line: lineNumber, command: .add(key: key, from: .code(hexDigits: Array(hex)))))
        }
    }

    static func isHexDigit(_ b: UInt8) -> Bool {
        (b >= 48 && b <= 57) || (b >= 97 && b <= 102) || (b >= 65 && b <= 70)
    }
}
