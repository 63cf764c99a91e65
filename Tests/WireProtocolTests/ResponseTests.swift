import Testing
@testable import WireProtocol

@Suite("ResponseFormatter")
struct FormatterTests {
    @Test("single-line OK")
    func ok() {
        #expect(ResponseFormatter.ok("PONG") == "OK PONG\n")
        #expect(ResponseFormatter.ok("12 34") == "OK 12 34\n")
        #expect(ResponseFormatter.ok("BYE") == "OK BYE\n")
    }

    @Test("lists")
    func list() {
        #expect(ResponseFormatter.list([]) == "OK 0\n")
        #expect(ResponseFormatter.list(["a 1", "b 2"]) == "OK 2\na 1\nb 2\n")
        #expect(ResponseFormatter.list(["bad\nline"]) == "OK 1\nbad line\n")
        let many = (0..<1234).map { "l\($0)" }
        let text = ResponseFormatter.list(many)
        #expect(text.hasPrefix("OK 1234\nl0\nl1\n"))
        #expect(text.utf8.filter { $0 == 0x0A }.count == 1235)
    }

    @Test("stats")
    func stats() {
        #expect(ResponseFormatter.stats([("version", "1"), ("bits", "64"), ("scan_kernel", "popcnt")])
            == "OK 3\nversion 1\nbits 64\nscan_kernel popcnt\n")
        #expect(ResponseFormatter.stats([]) == "OK 0\n")
    }

    @Test("neighbours, exact bytes")
    func neighbors() {
        #expect(ResponseFormatter.neighbors([]) == "OK 0\n")
        #expect(ResponseFormatter.neighbors([(key: "cat-1", distance: 8), (key: "cat-2", distance: 16)])
            == "OK 2\ncat-1 8\ncat-2 16\n")
        #expect(ResponseFormatter.neighbors([(key: "é🐈", distance: 0), (key: "x", distance: 1024), (key: "y", distance: 65535)])
            == "OK 3\né🐈 0\nx 1024\ny 65535\n")
        #expect(ResponseFormatter.neighbors([(key: "neg", distance: -5), (key: "max", distance: Int.max)])
            == "OK 2\nneg -5\nmax \(Int.max)\n")
        let k256 = String(repeating: "k", count: 256)
        #expect(ResponseFormatter.neighbors([(key: k256, distance: 9)]) == "OK 1\n\(k256) 9\n")
    }

    @Test("neighbours agree with a naive formatter, and the byte form with the string form")
    func neighborsLarge() {
        var rng = SystemRandomNumberGenerator()
        for n in [1, 9, 10, 11, 99, 100, 1000, 12345] {
            let items = (0..<n).map { i in (key: "key-\(i)-" + String(repeating: "z", count: Int.random(in: 0...40, using: &rng)),
                                            distance: Int.random(in: 0...100_000, using: &rng)) }
            let naive = "OK \(n)\n" + items.map { "\($0.key) \($0.distance)\n" }.joined()
            let s = ResponseFormatter.neighbors(items)
            #expect(s == naive)
            #expect(ResponseFormatter.neighborsBytes(items) == Array(naive.utf8))
        }
    }

    @Test("errors")
    func errors() {
        #expect(ResponseFormatter.error(ProtocolError(.notFound, "no item has key 'nope'")) == "ERR NOTFOUND no item has key 'nope'\n")
        #expect(ResponseFormatter.error(.badRequest, "empty request line") == "ERR BADREQUEST empty request line\n")
        #expect(ResponseFormatter.error(ProtocolError(.internalError, "a\nb\rc")) == "ERR INTERNAL a b c\n")
        #expect(ResponseFormatter.error(ProtocolError(.corrupt, "")) == "ERR CORRUPT \(ErrorCode.corrupt.defaultMessage)\n")
        #expect(ResponseFormatter.error(.tooLong, "x") == "ERR TOOLONG x\n")
        for c in ErrorCode.allCases {
            let line = ResponseFormatter.error(ProtocolError(c, "m\u{2029}\u{85}\u{0}"))
            #expect(line == "ERR \(c.rawValue) m   \n")
        }
    }

    @Test("format(Response) and ResponseReader agree")
    func formatRoundTrip() throws {
        let responses: [(Response, Bool)] = [
            (.ok("PONG"), false), (.list([]), true), (.list(["a 1", "b 2"]), true),
            (.error(code: "NOTFOUND", message: "no item has key 'x'"), false),
            (.error(code: "BADREQUEST", message: "bad"), true), (.ok("3 4"), false),
        ]
        var r = ResponseReader()
        for (resp, multi) in responses {
            r.expect(multiLine: multi)
            r.feed(ResponseFormatter.format(resp))
        }
        #expect(try r.responses() == responses.map(\.0))
        #expect(r.awaiting == 0 && r.bufferedBytes == 0)
    }
}

@Suite("ResponseReader")
struct ReaderTests {
    /// A pipelined exchange: request lines and the daemon's answer bytes.
    static let requests = [
        "PING", "ADD cat-1 CODE 00000000000000ff", "KNN 2 CODE 0000000000000000", "GET nope",
        "STATS", "range 3 code 0000000000000000", "KNN 5 CODE zz", "DEL cat-1", "knn 9 CODE 0000000000000000", "QUIT",
    ]
    static let answer =
        "OK PONG\n" + "OK 0\n" + "OK 2\ncat-1 8\ncat-2 16\n" + "ERR NOTFOUND no item has key 'nope'\n" +
        "OK 3\nversion 1\nbits 64\nitems 2\n" + "OK 0\n" + "ERR BADCODE code must be 16 hex digits, got 2\n" +
        "OK 1\n" + "OK 1\ncat-2 16\n" + "OK BYE\n"
    static let expected: [Response] = [
        .ok("PONG"), .ok("0"), .list(["cat-1 8", "cat-2 16"]), .error(code: "NOTFOUND", message: "no item has key 'nope'"),
        .list(["version 1", "bits 64", "items 2"]), .list([]), .error(code: "BADCODE", message: "code must be 16 hex digits, got 2"),
        .ok("1"), .list(["cat-2 16"]), .ok("BYE"),
    ]

    func freshReader() -> ResponseReader {
        var r = ResponseReader()
        for q in Self.requests { r.expect(requestLine: q) }
        return r
    }

    @Test("all at once")
    func allAtOnce() throws {
        var r = freshReader()
        #expect(r.awaiting == 10)
        r.feed(Self.answer)
        #expect(try r.responses() == Self.expected)
        #expect(r.awaiting == 0)
        #expect(try r.next() == nil)
    }

    @Test("byte by byte")
    func byteByByte() throws {
        var r = freshReader()
        var got: [Response] = []
        for b in Self.answer.utf8 {
            r.feed([b])
            while let resp = try r.next() { got.append(resp) }
        }
        #expect(got == Self.expected)
        #expect(r.bufferedBytes == 0)
    }

    @Test("chunks of every size", arguments: [2, 3, 5, 7, 13, 64, 1000])
    func chunks(size: Int) throws {
        var r = freshReader()
        var got: [Response] = []
        let bytes = Array(Self.answer.utf8)
        var i = 0
        while i < bytes.count {
            r.feed(bytes[i..<min(i + size, bytes.count)])
            got += try r.responses()
            i += size
        }
        #expect(got == Self.expected)
    }

    @Test("a list is returned only when complete")
    func partialList() throws {
        var r = ResponseReader()
        r.expect(multiLine: true)
        r.feed("OK 2\nfirst 1\n")
        #expect(try r.next() == nil)
        r.feed("second 2")
        #expect(try r.next() == nil)
        r.feed("\n")
        #expect(try r.next() == .list(["first 1", "second 2"]))
    }

    @Test("CRLF lines are accepted")
    func crlf() throws {
        var r = ResponseReader()
        r.expect(multiLine: false)
        r.expect(multiLine: true)
        r.feed("OK PONG\r\nOK 1\r\na 1\r\n")
        #expect(try r.responses() == [.ok("PONG"), .list(["a 1"])])
    }

    @Test("expectations from commands and request lines")
    func expectations() throws {
        #expect(RequestParser.expectsList(requestLine: "KNN 1 CODE 00"))
        #expect(RequestParser.expectsList(requestLine: "knn 1 CODE 00\n"))
        #expect(RequestParser.expectsList(requestLine: "RANGE 1 CODE 00\r\n"))
        #expect(RequestParser.expectsList(requestLine: "STATS"))
        #expect(RequestParser.expectsList(requestLine: "stats\r\n"))
        #expect(RequestParser.expectsList(requestLine: "Stats\n"))
        #expect(RequestParser.expectsList(requestLine: "METRICS"))
        #expect(RequestParser.expectsList(requestLine: "metrics\r\n"))
        for l in ["PING", "GET k", "ADD k CODE 00", "DEL k", "VERIFY", "COMPACT", "REBUILD", "QUIT", "",
                  " STATS", "STATSX", "STATS\t", "KNNN 1", "KN", "RANGES", "\r\n", "METRICSX", "BACKUP /x"] {
            #expect(!RequestParser.expectsList(requestLine: l), "\(l)")
        }
        var r = ResponseReader()
        r.expect(Command.stats)
        r.expect(Command.ping)
        r.feed("OK 1\na b\nOK PONG\n")
        #expect(try r.responses() == [.list(["a b"]), .ok("PONG")])
    }

    @Test("ERR answers a list request too")
    func errForList() throws {
        var r = ResponseReader()
        r.expect(multiLine: true)
        r.feed("ERR TOOLONG request line is longer than 4194304 bytes\n")
        #expect(try r.next() == .error(code: "TOOLONG", message: "request line is longer than 4194304 bytes"))
    }

    @Test("ERR without message, OK without text")
    func minimal() throws {
        var r = ResponseReader()
        r.expect(multiLine: false)
        r.expect(multiLine: false)
        r.expect(multiLine: false)
        r.feed("ERR X\nERR\nOK\n")
        #expect(try r.responses() == [.error(code: "X", message: ""), .error(code: "", message: ""), .ok("")])
    }

    @Test("protocol violations")
    func violations() {
        var r = ResponseReader()
        r.feed("OK PONG\n")
        #expect(throws: ResponseReaderError.unexpectedResponse(line: "OK PONG")) { try r.next() }

        var r2 = ResponseReader()
        r2.expect(multiLine: false)
        r2.feed("HELLO\n")
        #expect(throws: ResponseReaderError.self) { try r2.next() }

        var r3 = ResponseReader()
        r3.expect(multiLine: true)
        r3.feed("OK PONG\n")
        #expect(throws: ResponseReaderError.self) { try r3.next() }

        var r4 = ResponseReader()
        r4.expect(multiLine: false)
        r4.feed("OKAY\n")
        #expect(throws: ResponseReaderError.self) { try r4.next() }

        var r5 = ResponseReader(maxLineBytes: 100)
        r5.expect(multiLine: false)
        r5.feed(String(repeating: "x", count: 101))
        #expect(throws: ResponseReaderError.lineTooLong(limit: 100)) { try r5.next() }
    }

    @Test("a long pipelined stream with many lists, fed in random chunks")
    func longStream() throws {
        var rng = SystemRandomNumberGenerator()
        var r = ResponseReader()
        var expected: [Response] = []
        var bytes: [UInt8] = []
        for i in 0..<2000 {
            switch i % 4 {
            case 0:
                r.expect(multiLine: false)
                bytes += Array(ResponseFormatter.ok("\(i)").utf8)
                expected.append(.ok("\(i)"))
            case 1:
                r.expect(multiLine: true)
                let items = (0..<(i % 37)).map { (key: "k\($0)", distance: $0 * 3) }
                bytes += ResponseFormatter.neighborsBytes(items)
                expected.append(.list(items.map { "\($0.key) \($0.distance)" }))
            case 2:
                r.expect(multiLine: true)
                bytes += Array(ResponseFormatter.error(.badCode, "bad \(i)").utf8)
                expected.append(.error(code: "BADCODE", message: "bad \(i)"))
            default:
                r.expect(multiLine: true)
                bytes += Array(ResponseFormatter.stats([("items", "\(i)")]).utf8)
                expected.append(.list(["items \(i)"]))
            }
        }
        var got: [Response] = []
        var i = 0
        while i < bytes.count {
            let n = Int.random(in: 1...9000, using: &rng)
            r.feed(bytes[i..<min(i + n, bytes.count)])
            got += try r.responses()
            i += n
        }
        #expect(got == expected)
        #expect(r.awaiting == 0 && r.bufferedBytes == 0)
    }

    @Test("responses carry only their own bytes")
    func responseIsOK() {
        #expect(Response.ok("x").isOK)
        #expect(Response.list([]).isOK)
        #expect(!Response.error(code: "A", message: "b").isOK)
    }
}

@Suite("Neighbor lines and key checks")
struct NeighborTests {
    @Test("a neighbour line parses back to what the formatter wrote")
    func roundTrip() throws {
        let items = [(key: "cat-1", distance: 8), (key: "é🐈", distance: 0), (key: String(repeating: "k", count: 256), distance: 65535)]
        var reader = ResponseReader()
        reader.expect(multiLine: true)
        reader.feed(Array(ResponseFormatter.neighbors(items).utf8))
        let response = try #require(try reader.next())
        #expect(Neighbor.list(response) == items.map { Neighbor(key: $0.key, distance: $0.distance) })
    }

    @Test("malformed lines and answers that are not lists")
    func malformed() {
        #expect(Neighbor(line: "nospace") == nil)
        #expect(Neighbor(line: "k x") == nil)
        #expect(Neighbor(line: "k 12") == Neighbor(key: "k", distance: 12))
        #expect(Neighbor.list(.list(["odd"])) == [Neighbor(key: "odd", distance: -1)])
        #expect(Neighbor.list(.ok("1")) == nil)
        #expect(Neighbor.list(.error(code: "BADCODE", message: "x")) == nil)
    }

    @Test("keyProblem agrees with the parser's BADKEY and rules out empty keys and spaces")
    func keys() {
        #expect(RequestParser.keyProblem("cat-1") == nil)
        #expect(RequestParser.keyProblem(String(repeating: "k", count: RequestParser.maxKeyBytes)) == nil)
        #expect(RequestParser.keyProblem("") != nil)
        #expect(RequestParser.keyProblem("a b") != nil)
        #expect(RequestParser.keyProblem(String(repeating: "k", count: RequestParser.maxKeyBytes + 1))?.contains("limit is 256") == true)
        #expect(RequestParser.keyProblem("a\u{7}b")?.contains("control character") == true)
        // A final CR would pass as framing in `GET <key>`; in a key it is a control character.
        #expect(RequestParser.keyProblem("a\r")?.contains("control character") == true)
    }

    @Test("requestLine parses back to its command")
    func requestLines() throws {
        let commands: [Command] = [
            .ping, .quit, .stats, .metrics, .compact, .verify, .reencode, .rebuild(m: nil), .rebuild(m: 4),
            .add(key: "k", from: .code(hexDigits: Array("00ff".utf8))), .add(key: "k", from: .image(path: "/a.png")),
            .add(key: "k", from: .image64("AAAA")), .del(key: "k"), .get(key: "k"),
            .knn(k: 10, query: .sketch(path: "/s.png")), .knn(k: 1, query: .sketch64("AA==")),
            .range(radius: 3, query: .code(hexDigits: Array("0000".utf8))), .backup(path: "/tmp/b.mdb"),
        ]
        for c in commands { #expect(try RequestParser.parseLine(c.requestLine.utf8) == c, "\(c.requestLine)") }
    }
}

@Suite("Statistics")
struct StatisticsTests {
    @Test("STATS lines read back as the pairs the formatter wrote")
    func roundTrip() throws {
        let pairs = [("version", "1"), ("bits", "64"), ("model", "sha256:0123456789abcdef"), ("note", "two words")]
        var reader = ResponseReader()
        reader.expect(multiLine: true)
        reader.feed(ResponseFormatter.stats(pairs))
        let response = try #require(try reader.next())
        #expect(Statistics.pairs(response)?.map { "\($0.name)=\($0.value)" } == pairs.map { "\($0.0)=\($0.1)" })
        #expect(Statistics.dictionary(response)?["bits"] == "64")
        #expect(Statistics.dictionary(.list(["a 1", "a 2", "nospace"])) == ["a": "1"])
        #expect(Statistics.pairs(.ok("x")) == nil)
    }
}
