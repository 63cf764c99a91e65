import Testing
import HammingCode
@testable import WireProtocol

/// Parses a string line (no `\n`).
func parse(_ s: String) -> Result<Command, ProtocolError> { RequestParser.parse(s) }
func parseBytes(_ b: [UInt8]) -> Result<Command, ProtocolError> { RequestParser.parse(b) }

func command(_ s: String) -> Command? {
    if case .success(let c) = parse(s) { return c }
    return nil
}

func failure(_ r: Result<Command, ProtocolError>) -> ProtocolError? {
    if case .failure(let e) = r { return e }
    return nil
}

func errorCode(_ s: String) -> ErrorCode? { failure(parse(s))?.code }

let hex16 = "00000000000000ff"
func codeSource(_ s: String) -> CodeSource { .code(hexDigits: Array(s.utf8)) }

@Suite("RequestParser: happy paths")
struct ParserHappyPaths {
    @Test("commands without arguments")
    func noArgs() {
        #expect(command("PING") == .ping)
        #expect(command("QUIT") == .quit)
        #expect(command("STATS") == .stats)
        #expect(command("COMPACT") == .compact)
        #expect(command("VERIFY") == .verify)
        #expect(command("REBUILD") == .rebuild(m: nil))
    }

    @Test("command names are case-insensitive", arguments: ["ping", "Ping", "pInG", "PING"])
    func caseInsensitive(word: String) {
        #expect(command(word) == .ping)
    }

    @Test("lower-case and mixed-case commands and source words")
    func lowerCaseEverything() {
        #expect(command("add k code \(hex16)") == .add(key: "k", from: codeSource(hex16)))
        #expect(command("knn 3 Code \(hex16)") == .knn(k: 3, query: codeSource(hex16)))
        #expect(command("range 2 cOdE \(hex16)") == .range(radius: 2, query: codeSource(hex16)))
        #expect(command("Rebuild 4") == .rebuild(m: 4))
        #expect(command("del k") == .del(key: "k"))
        #expect(command("get k") == .get(key: "k"))
        #expect(command("stats") == .stats)
        #expect(command("compact") == .compact)
        #expect(command("verify") == .verify)
        #expect(command("quit") == .quit)
        #expect(command("add k image64 QUJD") == .add(key: "k", from: .image64("QUJD")))
        #expect(command("knn 1 sketch64 QUJD") == .knn(k: 1, query: .sketch64("QUJD")))
    }

    @Test("keys are case-sensitive and kept as sent")
    func keysCaseSensitive() {
        #expect(command("GET Cat-1") == .get(key: "Cat-1"))
        #expect(command("GET cat-1") == .get(key: "cat-1"))
        #expect(command("DEL ключ-🐈") == .del(key: "ключ-🐈"))
    }

    @Test("ADD with each allowed source")
    func add() {
        #expect(command("ADD cat-1 CODE \(hex16)") == .add(key: "cat-1", from: codeSource(hex16)))
        #expect(command("ADD cat-1 IMAGE /tmp/cat.jpg") == .add(key: "cat-1", from: .image(path: "/tmp/cat.jpg")))
        #expect(command("ADD cat-1 IMAGE64 aGVsbG8=") == .add(key: "cat-1", from: .image64("aGVsbG8=")))
    }

    @Test("the hex digits are kept raw; width is checked later")
    func rawDigits() {
        // Any token is accepted by the parser; BADCODE comes from code(width:).
        #expect(command("ADD k CODE xyz") == .add(key: "k", from: codeSource("xyz")))
        #expect(command("KNN 1 CODE ABCDEF") == .knn(k: 1, query: codeSource("ABCDEF")))
    }

    @Test("KNN and RANGE with every source")
    func queries() {
        #expect(command("KNN 2 CODE \(hex16)") == .knn(k: 2, query: codeSource(hex16)))
        #expect(command("KNN 2 IMAGE /a/b.png") == .knn(k: 2, query: .image(path: "/a/b.png")))
        #expect(command("KNN 2 IMAGE64 AAAA") == .knn(k: 2, query: .image64("AAAA")))
        #expect(command("KNN 2 SKETCH /a/s.png") == .knn(k: 2, query: .sketch(path: "/a/s.png")))
        #expect(command("KNN 2 SKETCH64 BBBB") == .knn(k: 2, query: .sketch64("BBBB")))
        #expect(command("RANGE 0 CODE \(hex16)") == .range(radius: 0, query: codeSource(hex16)))
        #expect(command("RANGE 7 SKETCH /s") == .range(radius: 7, query: .sketch(path: "/s")))
        #expect(command("RANGE 7 SKETCH64 QQ==") == .range(radius: 7, query: .sketch64("QQ==")))
        #expect(command("RANGE 7 IMAGE /i") == .range(radius: 7, query: .image(path: "/i")))
        #expect(command("RANGE 7 IMAGE64 QQ==") == .range(radius: 7, query: .image64("QQ==")))
    }

    @Test("DEL, GET, REBUILD <m>")
    func others() {
        #expect(command("DEL cat-1") == .del(key: "cat-1"))
        #expect(command("GET cat-1") == .get(key: "cat-1"))
        #expect(command("REBUILD 8") == .rebuild(m: 8))
        #expect(command("REBUILD 1") == .rebuild(m: 1))
        #expect(command("REBUILD 100000") == .rebuild(m: 100000))
        #expect(command("REBUILD 0008") == .rebuild(m: 8))
    }

    @Test("one trailing CR is removed, only one")
    func crlf() {
        #expect(command("PING\r") == .ping)
        #expect(command("GET k\r") == .get(key: "k"))
        #expect(command("ADD k CODE \(hex16)\r") == .add(key: "k", from: codeSource(hex16)))
        #expect(errorCode("PING\r\r") == .badRequest)
        #expect(errorCode("GET k\r\r") == .badKey)
        #expect(errorCode("\r") == .badRequest)
    }

    @Test("all input collection kinds are accepted")
    func collections() throws {
        let line = "KNN 5 CODE \(hex16)"
        let expected = Command.knn(k: 5, query: codeSource(hex16))
        #expect(RequestParser.parse(Array(line.utf8)) == .success(expected))
        #expect(RequestParser.parse(ArraySlice(Array(("xx" + line).utf8))[2...]) == .success(expected))
        #expect(RequestParser.parse(line.utf8) == .success(expected))
        #expect(RequestParser.parse(Substring("  " + line).dropFirst(2).utf8) == .success(expected))
        #expect(RequestParser.parse(ContiguousArray(line.utf8)) == .success(expected))
        // A non-contiguous collection goes through a copy.
        #expect(RequestParser.parse(line.utf8.lazy.map { $0 }) == .success(expected))
        #expect(RequestParser.parse(Array(line.utf8).reversed().reversed()) == .success(expected))
        #expect(try RequestParser.parseLine(Array(line.utf8)) == expected)
    }

    @Test("a large IMAGE64 payload is kept intact")
    func bigPayload() {
        let payload = String(repeating: "QUJDRA==", count: 300_000)  // 2.4 MB
        #expect(command("ADD big IMAGE64 \(payload)") == .add(key: "big", from: .image64(payload)))
        #expect(command("KNN 10 SKETCH64 \(payload)") == .knn(k: 10, query: .sketch64(payload)))
    }

    @Test("requestLine round-trips through the parser")
    func roundTrip() {
        let cmds: [Command] = [
            .ping, .quit, .stats, .compact, .verify, .rebuild(m: nil), .rebuild(m: 12),
            .add(key: "a", from: codeSource(hex16)), .add(key: "é", from: .image(path: "/x")),
            .add(key: "b", from: .image64("AA==")), .del(key: "x"), .get(key: "y"),
            .knn(k: 1_000_000, query: .sketch(path: "/s")), .range(radius: 65535, query: .sketch64("Zg==")),
        ]
        for c in cmds {
            #expect(parse(c.requestLine) == .success(c), "\(c.requestLine)")
            var bytes: [UInt8] = [0x41]
            c.appendRequestLine(to: &bytes)
            #expect(bytes == [0x41] + Array(c.requestLine.utf8), "\(c.requestLine)")
        }
    }

    @Test("appendDecimal writes what String(n) does", arguments: [0, 1, 9, 10, 99, 100, 4_294_967_295, Int.max])
    func decimal(_ n: Int) {
        var out: [UInt8] = [0x2D]
        appendDecimal(n, to: &out)
        #expect(out == [0x2D] + Array(String(n).utf8))
    }

    @Test("isWrite and isMultiLineResponse")
    func properties() {
        let src = codeSource(hex16)
        let writes: [Command] = [.add(key: "k", from: src), .del(key: "k"), .compact, .rebuild(m: nil), .rebuild(m: 3)]
        let reads: [Command] = [.ping, .quit, .stats, .verify, .get(key: "k"), .knn(k: 1, query: src), .range(radius: 1, query: src)]
        for c in writes { #expect(c.isWrite, "\(c.name)") }
        for c in reads { #expect(!c.isWrite, "\(c.name)") }
        let lists: [Command] = [.stats, .knn(k: 1, query: src), .range(radius: 1, query: src)]
        for c in lists { #expect(c.isMultiLineResponse) }
        for c in writes + [.ping, .quit, .verify, .get(key: "k")] { #expect(!c.isMultiLineResponse) }
    }
}

@Suite("RequestParser: framing and spacing")
struct ParserFraming {
    @Test("empty line")
    func empty() {
        #expect(errorCode("") == .badRequest)
        #expect(failure(parseBytes([]))?.code == .badRequest)
    }

    @Test("bad spacing", arguments: [
        " PING", "PING ", "  PING", "PING  ", " ", "  ",
        "GET  k", "GET k ", " GET k", "ADD k  CODE \(hex16)", "ADD k CODE  \(hex16)",
        "KNN 1 CODE \(hex16) ", "REBUILD ", "REBUILD  4",
    ])
    func spacing(line: String) {
        let e = failure(parse(line))
        #expect(e?.code == .badRequest)
        #expect(e?.message.contains("space") == true)
    }

    @Test("tab is not a separator")
    func tab() {
        #expect(errorCode("PING\t") == .badRequest)
        #expect(errorCode("GET\tk") == .badRequest)
        #expect(errorCode("GET k\t") == .badKey)
    }

    @Test("invalid UTF-8", arguments: [
        [0xFF], [0x50, 0x49, 0x4E, 0x47, 0x80], [0xC0, 0x80], [0xE0, 0x80, 0x80],
        [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xF5, 0x80, 0x80, 0x80], [0xC3],
        [0xE2, 0x82], [0xF0, 0x9F, 0x98],
    ] as [[UInt8]])
    func badUTF8(bytes: [UInt8]) {
        let e = failure(parseBytes(bytes))
        #expect(e?.code == .badRequest)
        #expect(e?.message.contains("UTF-8") == true)
        let line = Array("GET key".utf8) + bytes
        #expect(failure(parseBytes(line))?.code == .badRequest)
        // Deep inside a long ASCII payload (past the 8-byte fast path).
        let long = Array("ADD k IMAGE64 ".utf8) + Array(repeating: UInt8(ascii: "A"), count: 1001) + bytes + Array("AAAA".utf8)
        #expect(failure(parseBytes(long))?.code == .badRequest)
    }

    @Test("valid multi-byte UTF-8 passes validation")
    func goodUTF8() {
        for s in ["é", "€", "𝄞", "\u{7FF}", "\u{800}", "\u{FFFF}", "\u{10000}", "\u{10FFFF}", "\u{D7FF}", "\u{E000}"] {
            #expect(command("GET a\(s)b") == .get(key: "a\(s)b"))
        }
        let long = String(repeating: "abcdefg", count: 20) + "日本"
        #expect(command("GET \(long)") == .get(key: long))
    }

    @Test("validator agrees with the standard library on random bytes")
    func validatorFuzz() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<3000 {
            let n = Int.random(in: 0...24, using: &rng)
            let pool: [UInt8] = [0x41, 0x80, 0xBF, 0xC2, 0xDF, 0xE0, 0xA0, 0xED, 0x9F, 0xEF, 0xF0, 0x90, 0xF4, 0x8F, 0xF5, 0xFF, 0xC0]
            let bytes = (0..<n).map { _ in pool.randomElement(using: &rng)! }
            let ours = bytes.withUnsafeBufferPointer { RequestParser.firstInvalidUTF8($0) } == nil
            var it = bytes.makeIterator()
            var decoder = UTF8()
            var valid = true
            loop: while true {
                switch decoder.decode(&it) {
                case .scalarValue: continue
                case .emptyInput: break loop
                case .error: valid = false; break loop
                }
            }
            #expect(ours == valid, "\(bytes)")
        }
    }
}

@Suite("RequestParser: commands and arity")
struct ParserArity {
    @Test("unknown command")
    func unknown() {
        let e = failure(parse("FROB x"))
        #expect(e?.code == .badRequest)
        #expect(e?.message.hasPrefix("unknown command 'FROB'") == true)
        #expect(errorCode("PINGPING") == .badRequest)
        #expect(errorCode("PIN") == .badRequest)
        #expect(errorCode("HELLOWORLDLONGCOMMAND") == .badRequest)
        #expect(errorCode("ΡΙΝG") == .badRequest)  // Greek letters
    }

    @Test("extra or missing tokens", arguments: [
        "PING x", "QUIT now", "STATS all", "COMPACT x", "VERIFY x y", "REBUILD 4 5",
        "DEL", "DEL a b", "GET", "GET a b",
        "ADD", "ADD k", "ADD k CODE", "ADD k CODE \(hex16) extra", "ADD k CODE \(hex16) a b c d e f",
        "KNN", "KNN 1", "KNN 1 CODE", "KNN 1 CODE \(hex16) x",
        "RANGE", "RANGE 1", "RANGE 1 CODE", "RANGE 1 CODE \(hex16) x",
    ])
    func arity(line: String) {
        let e = failure(parse(line))
        #expect(e?.code == .badRequest, "\(line)")
        #expect(e?.message.isEmpty == false)
    }

    @Test("arity is checked before values")
    func arityFirst() {
        #expect(errorCode("ADD \(String(repeating: "x", count: 300)) CODE") == .badRequest)
        #expect(errorCode("KNN 0 CODE") == .badRequest)
    }

    @Test("many tokens do not blow up")
    func manyTokens() {
        let line = "ADD" + String(repeating: " a", count: 100_000)
        let e = failure(parse(line))
        #expect(e?.code == .badRequest)
        #expect(e?.message.contains("100000") == true)
    }

    @Test("unknown source word")
    func unknownSource() {
        let e = failure(parse("KNN 1 HEX \(hex16)"))
        #expect(e?.code == .badRequest)
        #expect(e?.message.contains("'HEX'") == true)
        #expect(errorCode("ADD k BYTES \(hex16)") == .badRequest)
        #expect(errorCode("ADD k CODES \(hex16)") == .badRequest)
        #expect(errorCode("RANGE 1 IMAGE6 x") == .badRequest)
    }

    @Test("SKETCH on ADD is refused", arguments: ["SKETCH /tmp/s.png", "SKETCH64 QUJD", "sketch /x", "Sketch64 QQ=="])
    func sketchOnAdd(tail: String) {
        let e = failure(parse("ADD k \(tail)"))
        #expect(e?.code == .badRequest)
        #expect(e?.message.contains("SKETCH") == true)
    }
}

@Suite("RequestParser: values")
struct ParserValues {
    @Test("k bounds and syntax")
    func k() {
        #expect(command("KNN 1 CODE \(hex16)") == .knn(k: 1, query: codeSource(hex16)))
        #expect(command("KNN 1000000 CODE \(hex16)") == .knn(k: 1_000_000, query: codeSource(hex16)))
        #expect(command("KNN 999999 CODE \(hex16)") == .knn(k: 999_999, query: codeSource(hex16)))
        #expect(command("KNN 0000001 CODE \(hex16)") == .knn(k: 1, query: codeSource(hex16)))
        for bad in ["0", "1000001", "9999999", "00000001", "01000000", "-1", "+1", "1a", "a", "1.0", "1e3",
                    "0x10", "１", "99999999999999999999999", "٣"] {
            let e = failure(parse("KNN \(bad) CODE \(hex16)"))
            #expect(e?.code == .badRequest, "k=\(bad)")
            #expect(e?.message.hasPrefix("k must be") == true, "k=\(bad)")
        }
    }

    @Test("r bounds and syntax")
    func r() {
        #expect(command("RANGE 0 CODE \(hex16)") == .range(radius: 0, query: codeSource(hex16)))
        #expect(command("RANGE 65535 CODE \(hex16)") == .range(radius: 65535, query: codeSource(hex16)))
        #expect(command("RANGE 000000065535 CODE \(hex16)") == .range(radius: 65535, query: codeSource(hex16)))
        #expect(command("RANGE 64 CODE \(hex16)") == .range(radius: 64, query: codeSource(hex16)))
        for bad in ["65536", "100000", "-0", "-1", "+3", "3x", "x", "99999999999999999999999999999", "1_0"] {
            let e = failure(parse("RANGE \(bad) CODE \(hex16)"))
            #expect(e?.code == .badRequest, "r=\(bad)")
            #expect(e?.message.hasPrefix("radius must be") == true, "r=\(bad)")
        }
    }

    @Test("REBUILD m syntax")
    func m() {
        for bad in ["0", "100001", "-4", "+4", "4x", "four", "99999999999999999999999999"] {
            let e = failure(parse("REBUILD \(bad)"))
            #expect(e?.code == .badRequest, "m=\(bad)")
            #expect(e?.message.hasPrefix("m must be") == true, "m=\(bad)")
        }
    }

    @Test("key length: 256 bytes accepted, 257 refused")
    func keyLength() {
        let k256 = String(repeating: "k", count: 256)
        let k257 = String(repeating: "k", count: 257)
        #expect(command("GET \(k256)") == .get(key: k256))
        #expect(command("DEL \(k256)") == .del(key: k256))
        #expect(command("ADD \(k256) CODE \(hex16)") == .add(key: k256, from: codeSource(hex16)))
        for line in ["GET \(k257)", "DEL \(k257)", "ADD \(k257) CODE \(hex16)"] {
            let e = failure(parse(line))
            #expect(e?.code == .badKey)
            #expect(e?.message.contains("257") == true)
            #expect(e!.message.utf8.count < 200)  // the key is not echoed in full
        }
        // The limit is in bytes, not characters: 128 two-byte characters = 256 bytes.
        let e128 = String(repeating: "é", count: 128)
        #expect(command("GET \(e128)") == .get(key: e128))
        #expect(errorCode("GET \(e128)a") == .badKey)
        let emoji = String(repeating: "🐈", count: 64)  // 256 bytes
        #expect(command("GET \(emoji)") == .get(key: emoji))
        #expect(errorCode("GET \(emoji)🐈") == .badKey)
    }

    @Test("control characters in keys", arguments: Array(0x00...0x1F).filter { $0 != 0x20 } + [0x7F])
    func keyControl(byte: Int) {
        for line in [
            Array("GET a".utf8) + [UInt8(byte)] + Array("b".utf8),
            Array("GET ".utf8) + [UInt8(byte)],
            Array("DEL ".utf8) + [UInt8(byte)] + Array("x".utf8),
            Array("ADD x".utf8) + [UInt8(byte)] + Array(" CODE \(hex16)".utf8),
        ] {
            if byte == 0x0D && line.last == 0x0D { continue }  // a final CR is line framing
            let e = failure(parseBytes(line))
            #expect(e?.code == .badKey, "byte \(byte)")
            #expect(e?.message.contains("control character") == true)
            #expect(e.map { !$0.message.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F } } == true)
        }
    }

    @Test("non-ASCII letters are allowed in keys, C1 controls and Unicode white space are not")
    func keyNonASCII() {
        #expect(command("GET a\u{E9}b") == .get(key: "a\u{E9}b"))
        #expect(errorCode("GET a\u{85}b") == .badKey)
        #expect(errorCode("GET a\u{A0}b") == .badKey)
    }
}

@Suite("CodeSource.code(width:)")
struct SourceCode {
    @Test("valid digits of either case give the code")
    func valid() throws {
        let w = try CodeWidth(bits: 64)
        let c = try codeSource(hex16).code(width: w)
        #expect(c == (try HammingCode(hex: hex16, width: w)))
        #expect(try codeSource("00000000000000FF").code(width: w) == c)
        let w256 = try CodeWidth(bits: 256)
        let h = String(repeating: "aB", count: 32)
        #expect(try codeSource(h).code(width: w256).hex == h.lowercased())
    }

    @Test("wrong length, non-hex digits → BADCODE")
    func bad() throws {
        let w = try CodeWidth(bits: 64)
        for s in ["0", "000000000000000", "00000000000000000", "000000000000000g", "00000000 0000000", "zzzzzzzzzzzzzzzz", "０000000000000000"] {
            #expect(throws: ProtocolError.self) { try codeSource(s).code(width: w) }
            do {
                _ = try codeSource(s).code(width: w)
            } catch {
                #expect(error.code == .badCode, "\(s)")
                #expect(!error.message.isEmpty && !error.message.contains("\n"))
            }
        }
        do {
            _ = try codeSource("123").code(width: w)
            Issue.record("expected an error")
        } catch {
            #expect(error == ProtocolError(.badCode, "code must be 16 hex digits, got 3"))
        }
    }

    @Test("parsed line to code end to end")
    func endToEnd() throws {
        let w = try CodeWidth(bits: 32)
        guard case .knn(let k, let q) = command("knn 4 code DEADbeef") else { Issue.record("no parse"); return }
        #expect(k == 4)
        #expect(try q.code(width: w).hex == "deadbeef")
        guard case .add(_, let q2) = command("ADD k CODE deadbee") else { Issue.record("no parse"); return }
        #expect(throws: ProtocolError.self) { try q2.code(width: w) }
    }

    @Test("image and sketch sources need a model")
    func noModel() throws {
        let w = try CodeWidth(bits: 64)
        for s in [CodeSource.image(path: "/x"), .image64("QQ=="), .sketch(path: "/y"), .sketch64("QQ==")] {
            do {
                _ = try s.code(width: w)
                Issue.record("expected NOMODEL")
            } catch {
                #expect(error.code == .noModel)
                #expect(error.message.contains(s.word))
            }
            #expect(!s.isCode)
        }
        #expect(codeSource("ab").isCode)
    }
}

@Suite("Error messages")
struct ErrorMessages {
    @Test("messages echo user input on one line, truncated")
    func echoSafety() {
        let lines: [[UInt8]] = [
            Array("FROB\u{01}\u{1B}[31m".utf8),
            Array("X".utf8) + [0x0B, 0x0C, 0x7F],
            Array(String(repeating: "Z", count: 10_000).utf8),
            Array(("K" + String(repeating: "é", count: 100)).utf8),
            Array("KNN \u{85}\u{2028}x CODE 00".utf8),
            Array("RANGE \u{1F} CODE 00".utf8),
            Array("ADD k \u{2029}WORD 00".utf8),
            Array("GET \(String(repeating: "ab\u{7}", count: 100))".utf8),
            Array("REBUILD \u{0}".utf8),
        ]
        for l in lines {
            guard let e = failure(parseBytes(l)) else { Issue.record("parsed: \(l)"); continue }
            #expect(!e.message.isEmpty)
            #expect(!e.message.unicodeScalars.contains { LineSafety.isUnsafe($0) }, "\(e.message)")
            #expect(e.message.utf8.count < 400, "\(e.message.utf8.count)")
            let wire = ResponseFormatter.error(e)
            #expect(wire.utf8.filter { $0 == 0x0A }.count == 1 && wire.hasSuffix("\n"))
        }
        let e = failure(parse(String(repeating: "Z", count: 10_000)))!
        #expect(e.message.contains("'" + String(repeating: "Z", count: 64) + "...'"))
    }

    @Test("escapes are readable")
    func escapes() {
        let e = failure(parseBytes(Array("FR".utf8) + [0x01] + Array("OB".utf8)))!
        #expect(e.message.hasPrefix("unknown command 'FR\\x01OB'"))
    }

    @Test("truncation does not split a UTF-8 character")
    func truncationBoundary() {
        for prefix in 0..<4 {
            let tok = String(repeating: "a", count: prefix) + String(repeating: "🐈", count: 40)
            let e = failure(parse(tok))!
            #expect(!e.message.contains("\u{FFFD}"))
            #expect(e.message.contains("...'"))
        }
    }

    @Test("ProtocolError keeps messages one non-empty line")
    func protocolErrorInit() {
        let e = ProtocolError(.internalError, "disk\nfull\r\n\u{2028}")
        #expect(e.message == "disk full   ")
        #expect(ProtocolError(.corrupt, "").message == ErrorCode.corrupt.defaultMessage)
        #expect(ProtocolError(code: .notFound, message: "x") == ProtocolError(.notFound, "x"))
        #expect(ProtocolError.notFound(key: "nope").message == "no item has key 'nope'")
        #expect(ProtocolError.tooLong(limit: 4_194_304).code == .tooLong)
        #expect(ProtocolError.shutdown.code == .shutdown)
        #expect(ProtocolError(.badKey, "m").description == "BADKEY m")
    }

    @Test("error codes spell as in section 5")
    func codes() {
        #expect(ErrorCode.allCases.map(\.rawValue) == [
            "BADREQUEST", "BADKEY", "BADCODE", "NOTFOUND", "TOOLONG", "NOMODEL", "MODELMISMATCH", "BADIMAGE", "FORBIDDEN", "CORRUPT", "DISKFULL", "SHUTDOWN", "INTERNAL",
        ])
        for c in ErrorCode.allCases { #expect(!c.defaultMessage.isEmpty) }
    }

    @Test("every parser error message is one non-empty line (fuzz)")
    func fuzz() {
        var rng = SystemRandomNumberGenerator()
        let words = ["ADD", "add", "DEL", "GET", "KNN", "RANGE", "STATS", "PING", "REBUILD", "CODE", "IMAGE",
                     "SKETCH", "SKETCH64", "IMAGE64", "0", "1", "65536", "1000001", "k", "", " ", "\r", "\n",
                     "\u{0}", "\u{7F}", "é", "\u{2028}", hex16, "-1", String(repeating: "q", count: 300)]
        for _ in 0..<5000 {
            let n = Int.random(in: 0...6, using: &rng)
            var bytes: [UInt8] = []
            for i in 0..<n {
                if i > 0 && Bool.random(using: &rng) { bytes.append(0x20) }
                bytes += Array(words.randomElement(using: &rng)!.utf8)
                if Int.random(in: 0..<10, using: &rng) == 0 { bytes.append(UInt8.random(in: 0...255, using: &rng)) }
            }
            switch parseBytes(bytes) {
            case .success(let c):
                var appended: [UInt8] = []
                c.appendRequestLine(to: &appended)
                #expect(appended == Array(c.requestLine.utf8))
                // Whatever parses re-serializes to an equivalent request (a value ending
                // in CR cannot be re-sent without another CR, as one final CR is framing).
                if c.requestLine.utf8.last != 0x0D { #expect(parse(c.requestLine) == .success(c)) }
            case .failure(let e):
                #expect(!e.message.isEmpty)
                #expect(!e.message.unicodeScalars.contains { LineSafety.isUnsafe($0) })
            }
        }
    }
}

@Suite("Keys and Unicode white space")
struct UnicodeKeyTests {
    @Test("Unicode white space and C1 controls in a key are refused", arguments: ["\u{00A0}", "\u{2003}", "\u{3000}", "\u{0085}", "\u{2028}"])
    func refused(ch: String) {
        guard case .failure(let e) = RequestParser.parse("GET a\(ch)b") else {
            Issue.record("accepted a key with U+\(String(ch.unicodeScalars.first!.value, radix: 16))")
            return
        }
        #expect(e.code == .badKey)
        #expect(!e.message.contains("\n"))
    }

    @Test("other non-ASCII keys are accepted")
    func accepted() {
        #expect(RequestParser.parse("GET ключ/日本/🐈") == .success(.get(key: "ключ/日本/🐈")))
    }
}

@Suite("RequestParser.addCode: the daemon's fast path for ADD <key> CODE <hex>")
struct AddCodeFastPathTests {
    /// What `parse` and the daemon's width check make of `line`: the key and code of a
    /// storable ADD of a code, or nil.
    func general(_ line: [UInt8], width: CodeWidth) -> (String, HammingCode)? {
        guard case .success(.add(let key, let source)) = RequestParser.parse(line), source.isCode,
              let code = try? source.code(width: width) else { return nil }
        return (key, code)
    }

    func fast(_ line: [UInt8], width: CodeWidth) -> (String, HammingCode)? {
        line.withUnsafeBytes { RequestParser.addCode($0, width: width) }.map { ($0.key, $0.code) }
    }

    func agree(_ line: [UInt8], width: CodeWidth, sourceLocation: SourceLocation = #_sourceLocation) {
        let g = general(line, width: width), f = fast(line, width: width)
        #expect(g?.0 == f?.0 && g?.1 == f?.1, "\(String(decoding: line, as: UTF8.self).debugDescription)", sourceLocation: sourceLocation)
    }

    @Test("takes what parse takes, and nothing else, on hand-picked lines")
    func handPicked() throws {
        let w64 = try CodeWidth(bits: 64), w128 = try CodeWidth(bits: 128)
        let lines = [
            "ADD a CODE 00000000000000ff", "add a code 00000000000000FF", "Add k1 Code 0123456789abcdef\r",
            "ADD a CODE 00000000000000ff\r\r", "ADD a CODE 00000000000000f", "ADD a CODE 00000000000000fg",
            "ADD a CODE 00000000000000ff00000000000000ff", "ADD  a CODE 00000000000000ff", "ADD a CODE 00000000000000ff ",
            " ADD a CODE 00000000000000ff", "ADD a CODE", "ADD a CODES 00000000000000ff", "ADD a IMAGE /x.png",
            "ADD a SKETCH 00000000000000ff", "ADDX a CODE 00000000000000ff", "ADD\ta CODE 00000000000000ff",
            "ADD ключ CODE 00000000000000ff", "ADD a\u{00A0}b CODE 00000000000000ff", "ADD a\u{7F} CODE 00000000000000ff",
            "ADD \(String(repeating: "k", count: 256)) CODE 00000000000000ff",
            "ADD \(String(repeating: "k", count: 257)) CODE 00000000000000ff",
            "ADD a CODE 00000000000000ff extra", "ADD", "ADD ", "", "\r", "aDd a cOdE ffffffffffffffff",
            "ADD a CODE ０００００００００００００ff", "ADD a CODe 00000000000000ff", "ADD a CODE\u{0}00000000000000ff",
        ]
        for line in lines {
            agree(Array(line.utf8), width: w64)
            agree(Array(line.utf8), width: w128)
        }
        #expect(fast(Array("ADD a CODE 00000000000000ff".utf8), width: w64)?.0 == "a")
        #expect(fast(Array("add a code 00000000000000FF".utf8), width: w64) != nil)
        #expect(fast(Array("ADD a CODE 00000000000000ff".utf8), width: w128) == nil)
        // Invalid UTF-8 anywhere is left to parse.
        agree(Array("ADD a CODE 00000000000000ff".utf8) + [0xFF], width: w64)
        agree([0x41, 0x44, 0x44, 0x20, 0xC3, 0x28, 0x20] + Array("CODE 00000000000000ff".utf8), width: w64)
    }

    @Test("agrees with parse on random mutations of ADD lines")
    func randomMutations() throws {
        var rng = SplitMix64(seed: 5)
        let w64 = try CodeWidth(bits: 64)
        let alphabet = Array("ADDCODEaddcode 0123456789abcdefABCDEFxyz\r\t\u{7F}".utf8) + [0x80, 0xC3, 0xA9, 0xFF, 0x00]
        for _ in 0..<20_000 {
            let hex = String(rng.next(), radix: 16)
            var line = Array("ADD key\(rng.next() % 100) CODE \(String(repeating: "0", count: 16 - hex.count) + hex)".utf8)
            for _ in 0..<Int(rng.next() % 3) {
                let i = Int(rng.next() % UInt64(line.count + 1))
                switch rng.next() % 3 {
                case 0: line.insert(alphabet[Int(rng.next() % UInt64(alphabet.count))], at: i)
                case 1: if i < line.count { line.remove(at: i) }
                default: if i < line.count { line[i] = alphabet[Int(rng.next() % UInt64(alphabet.count))] }
                }
            }
            agree(line, width: w64)
        }
    }
}
