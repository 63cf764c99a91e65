import Foundation
import GDH
import GDHClient
import HashStore
import ImageIO
import Logging
import Testing
import WireProtocol
@testable import Daemon

/// Model B of the model-change tests: the fixture model (model A, `writeFixtureModel`)
/// with its last hash layer negated, so that every code it makes is the bitwise
/// complement of model A's (H(x) is never exactly 0 on these images).
func writeNegatedFixtureModel(to path: String) throws {
    try writeFixtureModel(to: path)
    let model = try GDHModel.read(contentsOf: path)
    for (name, p) in model.hashNet.parameters where name.hasPrefix("fc.") {
        for i in 0..<p.value.count { p.value.data[i] = -p.value.data[i] }
    }
    try model.write(to: path)
}

/// A working directory with models A and B and a few images under `images`.
final class ModelChangeFixture {
    let work: String
    var images: String { work + "/images" }
    var modelA: String { work + "/model-a.safetensors" }
    var modelB: String { work + "/model-b.safetensors" }
    let identityA: String
    let identityB: String

    init() throws {
        work = NSTemporaryDirectory() + "gdh-models-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: work + "/images", withIntermediateDirectories: true)
        try writeFixtureModel(to: work + "/model-a.safetensors")
        try writeNegatedFixtureModel(to: work + "/model-b.safetensors")
        identityA = try GDHModel.read(contentsOf: work + "/model-a.safetensors").identity
        identityB = try GDHModel.read(contentsOf: work + "/model-b.safetensors").identity
        for i in 0..<3 {
            try Data(try ImageDecoder.encodePNG(pattern(i))).write(to: URL(fileURLWithPath: "\(work)/images/p\(i).png"))
        }
    }

    func path(of model: String) -> String? {
        switch model {
        case "a": return modelA
        case "b": return modelB
        default: return nil
        }
    }

    /// `configure` for TestDaemon: the given model (nil: none), the images allowed.
    func using(_ model: String?) -> (inout DaemonConfiguration) -> Void {
        let images = self.images
        return {
            $0.modelPath = model
            $0.allowRoots = [images]
            $0.encoderThreads = 1
        }
    }

    deinit { try? FileManager.default.removeItem(atPath: work) }
}

/// Log messages kept by `CapturingLogHandler`.
final class LogRecord: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [(Logger.Level, String)] = []
    func append(_ e: (Logger.Level, String)) { lock.lock(); entries.append(e); lock.unlock() }
    func removeAll() { lock.lock(); entries.removeAll(); lock.unlock() }
    func messages(at level: Logger.Level) -> [String] {
        lock.lock()
        defer { lock.unlock() }
        return entries.filter { $0.0 == level }.map(\.1)
    }
}

/// A log handler that keeps the messages (for the start-up warning).
struct CapturingLogHandler: LogHandler {
    let messages: LogRecord
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String,
             file: String, function: String, line: UInt) {
        messages.append((level, message.description))
    }
}

func statsOf(_ c: LineClient) throws -> [String: String] {
    var d: [String: String] = [:]
    for l in listLines(try c.request("STATS")) ?? [] {
        let p = l.split(separator: " ", maxSplits: 1).map(String.init)
        if p.count == 2 { d[p[0]] = p[1] }
    }
    return d
}

func errCode(_ r: Response) -> String? {
    if case .error(let code, _) = r { return code }
    return nil
}

func errMessage(_ r: Response) -> String? {
    if case .error(_, let message) = r { return message }
    return nil
}

@Suite("The database records which model made its image codes", .serialized)
struct ModelIdentityDaemonTests {
    @Test("model A's database under model B: MODELMISMATCH until REENCODE, hex requests unaffected")
    func modelChange() throws {
        let f = try ModelChangeFixture()
        #expect(f.identityA != f.identityB)
        let sketch64 = Data(try ImageDecoder.encodePNG(pattern(2))).base64EncodedString()
        let d = try TestDaemon(bits: nil, configure: f.using(f.modelA))
        var c = try d.client()
        #expect(try statsOf(c)["codes_model"] == "none")
        #expect(okText(try c.request("ADD hex CODE 0000000f")) == "0")
        #expect(try statsOf(c)["codes_model"] == "none")
        #expect(okText(try c.request("ADD p0 IMAGE \(f.images)/p0.png")) == "1")
        #expect(okText(try c.request("ADD p1 IMAGE64 \(sketch64)")) == "2")
        var s = try statsOf(c)
        #expect(s["model"] == f.identityA && s["codes_model"] == f.identityA)
        guard let codeA = okText(try c.request("GET p0")), let code1A = okText(try c.request("GET p1")) else {
            Issue.record("GET failed"); return
        }

        // Restart with model B: a warning, and MODELMISMATCH for everything that would
        // compare model B's codes with model A's.
        d.stop()
        let logged = LogRecord()
        try d.start(configure: f.using(f.modelB), logger: Logger(label: "test") { _ in CapturingLogHandler(messages: logged) })
        let warnings = logged.messages(at: .warning)
        #expect(warnings.contains("database codes were made by model \(f.identityA); this daemon runs model \(f.identityB); image and sketch queries answer ERR MODELMISMATCH until REENCODE"), "\(warnings)")
        c = try d.client()
        s = try statsOf(c)
        #expect(s["model"] == f.identityB && s["codes_model"] == f.identityA)
        for line in [
            "KNN 3 SKETCH \(f.images)/p0.png", "KNN 3 SKETCH64 \(sketch64)", "KNN 3 IMAGE \(f.images)/p0.png",
            "KNN 3 IMAGE64 \(sketch64)", "RANGE 32 SKETCH \(f.images)/p1.png", "RANGE 0 SKETCH64 \(sketch64)",
            "RANGE 5 IMAGE \(f.images)/p0.png", "RANGE 5 IMAGE64 \(sketch64)",
            "ADD p2 IMAGE \(f.images)/p2.png", "ADD p2 IMAGE64 \(sketch64)",
        ] {
            let r = try c.request(line)
            #expect(errCode(r) == "MODELMISMATCH", "\(line) → \(r)")
            let m = errMessage(r) ?? ""
            #expect(m.contains(f.identityA) && m.contains(f.identityB) && m.contains("REENCODE"), "\(m)")
        }
        // Requests the parser refuses keep their own error.
        #expect(errCode(try c.request("ADD p2 SKETCH \(f.images)/p2.png")) == "BADREQUEST")
        // Hex requests and the rest work.
        #expect(listLines(try c.request("KNN 1 CODE 0000000f")) == ["hex 0"])
        #expect(listLines(try c.request("RANGE 0 CODE 0000000f")) == ["hex 0"])
        #expect(okText(try c.request("ADD hex2 CODE 000000ff")) == "3")
        #expect(okText(try c.request("GET p0")) == codeA)
        #expect(okText(try c.request("DEL hex2")) == "1")
        #expect(okText(try c.request("VERIFY"))?.hasPrefix("3 ") == true)
        #expect(try statsOf(c)["items"] == "3")

        // REENCODE: model B's codes (the complements of model A's), and queries work.
        #expect(okText(try c.request("REENCODE")) == "2 0")
        s = try statsOf(c)
        #expect(s["model"] == f.identityB && s["codes_model"] == f.identityB)
        let complement = { (hex: String) -> String in
            String(hex.map { String(15 - Int(String($0), radix: 16)!, radix: 16) }.joined())
        }
        #expect(okText(try c.request("GET p0")) == complement(codeA))
        #expect(okText(try c.request("GET p1")) == complement(code1A))
        #expect(okText(try c.request("GET hex")) == "0000000f")
        #expect(listLines(try c.request("KNN 3 IMAGE \(f.images)/p0.png"))?.contains("p0 0") == true)
        #expect(listLines(try c.request("KNN 3 SKETCH64 \(sketch64)"))?.count == 3)
        #expect(okText(try c.request("ADD p2 IMAGE \(f.images)/p2.png")) == "4")

        // Model B again: no mismatch.
        d.stop()
        logged.removeAll()
        try d.start(configure: f.using(f.modelB), logger: Logger(label: "test") { _ in CapturingLogHandler(messages: logged) })
        #expect(logged.messages(at: .warning).isEmpty)
        c = try d.client()
        #expect(listLines(try c.request("KNN 3 SKETCH \(f.images)/p0.png"))?.count == 3)
        #expect(try statsOf(c)["codes_model"] == f.identityB)

        // Back to model A: a mismatch again, the other way round.
        d.stop()
        try d.start(configure: f.using(f.modelA))
        c = try d.client()
        let r = try c.request("KNN 3 SKETCH \(f.images)/p0.png")
        #expect(errCode(r) == "MODELMISMATCH")
        #expect(errMessage(r) == "the database's image codes were made by model \(f.identityB), this daemon runs model \(f.identityA): run REENCODE to encode the stored images with this model")
        // Without a model: NOMODEL as before, and STATS tells which model the codes need.
        d.stop()
        try d.start(configure: f.using(nil))
        c = try d.client()
        #expect(errCode(try c.request("KNN 3 SKETCH \(f.images)/p0.png")) == "NOMODEL")
        s = try statsOf(c)
        #expect(s["model"] == "none" && s["codes_model"] == f.identityB)
        // `gdh stats` prints both lines.
        let out = try runClient(["stats", "--socket", d.socket])
        #expect(out.status == 0)
        #expect(out.out.contains("\nmodel none\n") && out.out.contains("\ncodes_model \(f.identityB)\n"), "\(out.out)")
    }

    @Test("REENCODE runs beside client writes: they are answered before it ends, and a client's change to an item wins")
    func reencodeBesideWrites() throws {
        let f = try ModelChangeFixture()
        let d = try TestDaemon(bits: nil, configure: f.using(f.modelA))
        let n = 2000
        let images = try (0..<3).map { Data(try ImageDecoder.encodePNG(pattern($0))).base64EncodedString() }
        let c = try d.client()
        try c.pipeline(count: n, window: 256, line: { "ADD p\($0) IMAGE64 \(images[$0 % 3])" }) { i, r in
            #expect(okText(r) == String(i))
        }
        guard let oldCode = okText(try c.request("GET p10")) else { Issue.record("GET failed"); return }
        d.stop()
        try d.start(configure: f.using(f.modelB))
        let admin = try d.client()
        let writer = try d.client()
        admin.send("REENCODE")
        try admin.flush()
        // Items late in REENCODE's order (ids 1400 and 1500, in its sixth batch) change
        // while it runs: a code replaces one image, a delete removes another.
        let t0 = Date()
        #expect(okText(try writer.request("ADD p1400 CODE 0000000f")) == "1400")
        #expect(okText(try writer.request("DEL p1500")) == "1")
        #expect(okText(try writer.request("ADD hex CODE 000000ff")) == String(n))
        let writesAnswered = Date().timeIntervalSince(t0)
        let answer = try admin.receive()
        let reencodeAnswered = Date().timeIntervalSince(t0)
        #expect(writesAnswered < reencodeAnswered / 2, "writes \(writesAnswered) s, REENCODE \(reencodeAnswered) s")
        #expect(okText(answer) == "\(n - 2) 0")
        #expect(okText(try writer.request("GET p1400")) == "0000000f")
        #expect(errCode(try writer.request("GET p1500")) == "NOTFOUND")
        #expect(okText(try writer.request("GET p10")) != oldCode)
        #expect(try statsOf(writer)["codes_model"] == f.identityB)
        #expect(try statsOf(writer)["items"] == String(n))
        #expect(okText(try writer.request("VERIFY"))?.hasPrefix("\(n) ") == true)
    }

    @Test("an old database without a recorded model keeps working with any model")
    func oldDatabase() throws {
        let f = try ModelChangeFixture()
        let d = try TestDaemon(bits: nil, configure: f.using(f.modelA))
        #expect(okText(try d.client().request("ADD p0 IMAGE \(f.images)/p0.png")) == "0")
        d.stop()
        // A database written before identities were recorded has no `model_identity`.
        do {
            let store = try HashStore(directory: d.dir)
            try store.setModelIdentity(nil)
            store.close()
        }
        try d.start(configure: f.using(f.modelB))
        var c = try d.client()
        var s = try statsOf(c)
        #expect(s["model"] == f.identityB && s["codes_model"] == "unknown")
        #expect(listLines(try c.request("KNN 1 IMAGE \(f.images)/p0.png"))?.count == 1)
        #expect(listLines(try c.request("RANGE 32 SKETCH \(f.images)/p0.png"))?.count == 1)
        // The first image stored records the daemon's model.
        #expect(okText(try c.request("ADD p1 IMAGE \(f.images)/p1.png")) == "1")
        #expect(try statsOf(c)["codes_model"] == f.identityB)
        d.stop()
        try d.start(configure: f.using(f.modelA))
        c = try d.client()
        #expect(errCode(try c.request("KNN 1 IMAGE \(f.images)/p0.png")) == "MODELMISMATCH")
        // Once no item is encoded from an image, no model is recorded and any model fits.
        #expect(okText(try c.request("DEL p0")) == "1")
        #expect(okText(try c.request("ADD p1 CODE 00000000")) == "1")
        s = try statsOf(c)
        #expect(s["codes_model"] == "none")
        #expect(listLines(try c.request("KNN 1 IMAGE \(f.images)/p0.png"))?.count == 1)
    }

    @Test("a database of hex codes only fits any model")
    func hexOnly() throws {
        let f = try ModelChangeFixture()
        let d = try TestDaemon(bits: nil, configure: f.using(f.modelA))
        #expect(okText(try d.client().request("ADD a CODE 00000001")) == "0")
        #expect(okText(try d.client().request("REENCODE")) == "0 0")
        #expect(try statsOf(try d.client())["codes_model"] == "none")
        d.stop()
        try d.start(configure: f.using(f.modelB))
        let c = try d.client()
        #expect(listLines(try c.request("KNN 1 SKETCH \(f.images)/p0.png"))?.count == 1)
        #expect(okText(try c.request("ADD p0 IMAGE \(f.images)/p0.png")) == "1")
        #expect(try statsOf(c)["codes_model"] == f.identityB)
    }
}
