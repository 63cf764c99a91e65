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
        var lineNumber = 0
        var comments = true
        for raw in data.split(separator: 0x0A, omittingEmptySubsequences: false) {
            lineNumber += 1
            var bytes = raw
            if bytes.last == 0x0D { bytes = bytes.dropLast() }
            if lineNumber == 1 && bytes.elementsEqual(ImportFile.dumpMarker.utf8) {
                comments = false
                continue
            }
            if bytes.isEmpty || (comments && bytes.first == UInt8(ascii: "#")) { continue }
            let parts = bytes.split(separator: 0x20, omittingEmptySubsequences: false)
            guard parts.count == 2, let key = String(validating: parts[0], as: UTF8.self),
                  RequestParser.keyProblem(key) == nil else {
                problems.append("line \(lineNumber): expected `key hex` with a key of 1 to \(RequestParser.maxKeyBytes) bytes and no spaces")
                continue
            }
            let hex = parts[1]
            guard hex.count == bits / 4, hex.allSatisfy(ImportFile.isHexDigit) else {
                problems.append("line \(lineNumber): the code must be \(bits / 4) hex digits for this \(bits)-bit database")
                continue
            }
            entries.append(Entry(line: lineNumber, command: .add(key: key, from: .code(hexDigits: Array(hex)))))
        }
    }

    static func isHexDigit(_ b: UInt8) -> Bool {
        (b >= 48 && b <= 57) || (b >= 97 && b <= 102) || (b >= 65 && b <= 70)
    }
}
