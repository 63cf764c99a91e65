import Foundation
import Testing
import WireProtocol
@testable import GDHClient

@Suite("ImportFile")
struct ImportFileTests {
    @Test("key hex lines become ADDs with their file line; comments, empty lines and CR are skipped")
    func wellFormed() {
        let text = "# header\r\na-1 00000000000000ff\r\n\nb-2 FFFFffff00000000\n#x y\nc 0123456789abcdef"
        let f = ImportFile(parsing: Array(text.utf8), bits: 64)
        #expect(f.problems.isEmpty)
        #expect(f.entries.map(\.line) == [2, 4, 6])
        #expect(f.entries.map(\.command.requestLine) == [
            "ADD a-1 CODE 00000000000000ff", "ADD b-2 CODE FFFFffff00000000", "ADD c CODE 0123456789abcdef",
        ])
    }

    @Test("after gdh dump's first line no line is a comment: keys that begin with # are items")
    func dumpMarker() {
        let text = ImportFile.dumpMarker + "\r\n#a 00000000000000ff\n\n#note text\nb 000000000000ff00\n"
        let f = ImportFile(parsing: Array(text.utf8), bits: 64)
        #expect(f.entries.map(\.line) == [2, 5])
        #expect(f.entries.map(\.command.requestLine) == ["ADD #a CODE 00000000000000ff", "ADD b CODE 000000000000ff00"])
        // A would-be comment after the marker is a bad item line, reported, not skipped.
        #expect(f.problems == ["line 4: the code must be 16 hex digits for this 64-bit database"])
        // The marker counts only as the first line; elsewhere it is a comment as before.
        let later = ImportFile(parsing: Array(("a 00000000000000ff\n" + ImportFile.dumpMarker + "\n#b 00000000000000ff\n").utf8), bits: 64)
        #expect(later.entries.map(\.line) == [1] && later.problems.isEmpty)
    }

    @Test("every malformed line is reported with its number, the good ones are still parsed")
    func malformed() {
        let long = String(repeating: "k", count: RequestParser.maxKeyBytes + 1)
        let lines = [
            "ok 00000000",         // 1: fine
            "two  spaces",         // 2: three parts
            "nohex",               // 3: one part
            "\(long) 00000000",    // 4: key too long
            "bad\u{7}key 00000000", // 5: control character
            "short 0000000",       // 6: 7 digits
            "nothex 0000000g",     // 7: not hex
            "k\u{A0}ey 00000000",  // 8: Unicode white space
        ]
        var bytes = Array(lines.joined(separator: "\n").utf8)
        bytes += [0x0A, 0xFF, 0x20, 0x30, 0x0A]  // 9: invalid UTF-8 key
        let f = ImportFile(parsing: bytes, bits: 32)
        #expect(f.entries.map(\.line) == [1])
        #expect(f.problems.map { $0.split(separator: ":").first.map(String.init) ?? "" }
            == ["line 2", "line 3", "line 4", "line 5", "line 6", "line 7", "line 8", "line 9"])
        #expect(f.problems[0].contains("1 to \(RequestParser.maxKeyBytes) bytes"))
        #expect(f.problems[4] == "line 6: the code must be 8 hex digits for this 32-bit database")
    }

    /// The file's reading as first written: a split at every \n, then at spaces, the key
    /// checked by parsing `GET <key>` (the reference for the reader on bytes).
    static func reference(_ data: [UInt8], bits: Int) -> (entries: [ImportFile.Entry], problems: [String]) {
        var entries: [ImportFile.Entry] = [], problems: [String] = []
        var lineNumber = 0
        var comments = true
        for raw in data.split(separator: 0x0A, omittingEmptySubsequences: false) {
            lineNumber += 1
            var bytes = raw
            if bytes.last == 0x0D { bytes = bytes.dropLast() }
            if lineNumber == 1 && bytes.elementsEqual(ImportFile.dumpMarker.utf8) { comments = false; continue }
            if bytes.isEmpty || (comments && bytes.first == UInt8(ascii: "#")) { continue }
            let parts = bytes.split(separator: 0x20, omittingEmptySubsequences: false)
            guard parts.count == 2, let key = String(validating: parts[0], as: UTF8.self),
                  !key.isEmpty, !key.contains(" "), case .success = RequestParser.parse("GET " + key),
                  // A key ending in CR passed `GET <key>` (the parser drops one final CR as
                  // framing) and was then refused by the daemon as BADKEY; it is now refused
                  // before anything is sent, like every other control character.
                  key.utf8.last != 0x0D else {
                problems.append("line \(lineNumber): expected `key hex` with a key of 1 to \(RequestParser.maxKeyBytes) bytes and no spaces")
                continue
            }
            guard parts[1].count == bits / 4, parts[1].allSatisfy(ImportFile.isHexDigit) else {
                problems.append("line \(lineNumber): the code must be \(bits / 4) hex digits for this \(bits)-bit database")
                continue
            }
            entries.append(ImportFile.Entry(line: lineNumber, command: .add(key: key, from: .code(hexDigits: Array(parts[1])))))
        }
        return (entries, problems)
    }

    @Test("random files read as the split-based reference reads them")
    func againstReference() {
        var rng = UInt64(0x9E37_79B9_7F4A_7C15)
        func next() -> UInt64 { rng = rng &* 6364136223846793005 &+ 1442695040888963407; return rng >> 33 }
        let pieces: [[UInt8]] = [Array("k".utf8), Array("key-7".utf8), Array("é".utf8), Array("#".utf8), [0x20], [0x20, 0x20],
                                 [0x0A], [0x0D, 0x0A], [0x0D], Array("0123abcd".utf8), Array("0123ABCD".utf8), Array("0000000g".utf8),
                                 [0x09], [0x7F], [0xFF], [0xC2, 0xA0], Array(ImportFile.dumpMarker.utf8)]
        for _ in 0..<3_000 {
            var data: [UInt8] = []
            for _ in 0..<Int(next() % 24) { data += pieces[Int(next() % UInt64(pieces.count))] }
            let f = ImportFile(parsing: data, bits: 32)
            let r = Self.reference(data, bits: 32)
            #expect(f.entries == r.entries, "\(data)")
            #expect(f.problems == r.problems, "\(data)")
        }
    }

    @Test("every request line parses back to the command it came from")
    func roundTrip() throws {
        let f = ImportFile(parsing: Array("é🐈 0000000000000000\nx ABCDEF0123456789\n".utf8), bits: 64)
        for e in f.entries {
            #expect(try RequestParser.parseLine(e.command.requestLine.utf8) == e.command)
        }
    }
}

@Suite("Image requests and query results")
struct ImageRequestTests {
    func scratch() throws -> String {
        let dir = NSTemporaryDirectory() + "gdh-client-test-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir + "/sub dir", withIntermediateDirectories: true)
        for f in ["b.png", "a.JPG", "sub dir/c.jpeg", "notes.txt"] {
            try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir + "/" + f))
        }
        return dir
    }

    @Test("image files are found recursively, by extension in any case, sorted")
    func files() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try ImageRequests.files(under: dir, extensions: ["png", "jpg", "jpeg"]) == ["a.JPG", "b.png", "sub dir/c.jpeg"])
    }

    @Test("an image is sent by path, or inline when asked or when its path holds a space")
    func addCommand() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(ImageRequests.add(key: "b.png", path: dir + "/b.png", inline: false) == .add(key: "b.png", from: .image(path: dir + "/b.png")))
        let inline = Command.add(key: "b.png", from: .image64(Data([1, 2, 3]).base64EncodedString()))
        #expect(ImageRequests.add(key: "b.png", path: dir + "/b.png", inline: true) == inline)
        #expect(ImageRequests.add(key: "c", path: dir + "/sub dir/c.jpeg", inline: false)
            == .add(key: "c", from: .image64(Data([1, 2, 3]).base64EncodedString())))
        #expect(ImageRequests.add(key: "x", path: dir + "/missing.png", inline: true) == nil)
    }

    @Test("results name their files under the root when they exist; the page shows each")
    func results() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let neighbors = try #require(Neighbor.list(.list(["b.png 3", "gone.png 7"])))
        let results = QueryResult.resolve(neighbors, root: dir)
        #expect(results == [QueryResult(key: "b.png", distance: 3, path: dir + "/b.png"), QueryResult(key: "gone.png", distance: 7, path: nil)])
        let page = QueryResult.page(queryName: "q<1>.png", query: Data([9]), results: results)
        #expect(page.contains("<title>gdh query: q&lt;1&gt;.png</title>"))
        #expect(page.contains("src=\"data:image/png;base64,\(Data([9]).base64EncodedString())\" alt=\"query\""))
        #expect(page.contains("alt=\"b.png\"><figcaption>b.png<br>distance 3</figcaption>"))
        #expect(page.contains("border:1px dashed #ccc\"></div><figcaption>gone.png<br>distance 7</figcaption>"))
        #expect(page.hasSuffix("</body></html>\n"))
    }
}
