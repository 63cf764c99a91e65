import Foundation
import GDH
import GDHClient
import ImageIO
import NeuralNet
import Safetensors
import Testing
import WireProtocol
@testable import Daemon

/// A model file made from the PyTorch fixtures' weights (Tests/GDHTests/Fixtures): a
/// 32-pixel, 32-bit model. Tests never use random weights as a model.
func writeFixtureModel(to path: String) throws {
    let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("GDHTests/Fixtures")
    let config = GDHConfiguration(name: "fixture", imageSize: 32, bits: 32, ngf: 4, generatorBlocks: 2, norm: .batch,
                                  attention: true, ndf: 4, hashWidths: [4, 8, 8, 16], hashBlocks: [1, 1, 1, 1], resize: .area)
    let model = try GDHModel(configuration: config)
    for (net, file) in [(model.generatorI, "generator_small_batch_eval"), (model.hashNet, "hashnet_small_eval")] {
        let f = try SafetensorsFile.read(contentsOf: fixtures.appendingPathComponent(file + ".safetensors").path)
        var state: [String: Tensor] = [:]
        for n in f.names where n.hasPrefix("param.") { state[n] = Tensor(shape: f[n]!.shape, data: try f[n]!.floats()) }
        try net.load(state, prefix: "param.")
    }
    try model.write(to: path)
}

/// A synthetic picture: stripes and a gradient that differ with `seed`.
func pattern(_ seed: Int, size: Int = 48) -> RGBImage {
    var px = [UInt8]()
    for y in 0..<size {
        for x in 0..<size {
            px += [UInt8((x * (seed + 3) + y * 7) % 256), UInt8((y * (seed + 1) * 5) % 256), UInt8(((x ^ y) * (seed + 2)) % 256)]
        }
    }
    return RGBImage(width: size, height: size, pixels: px)
}

@Suite("Images and sketches through the daemon", .serialized)
struct ImageDaemonTests {
    @Test("ADD IMAGE / IMAGE64, KNN and RANGE by IMAGE and SKETCH, REENCODE, and every bad input refused")
    func imagesEndToEnd() throws {
        let work = NSTemporaryDirectory() + "gdh-img-\(UUID().uuidString.prefix(8))"
        let images = work + "/images"
        try FileManager.default.createDirectory(atPath: images, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        try writeFixtureModel(to: work + "/model.safetensors")
        for i in 0..<3 {
            try Data(try ImageDecoder.encodePNG(pattern(i))).write(to: URL(fileURLWithPath: "\(images)/p\(i).png"))
        }
        try Data([0x89, 0x50, 0x4E, 0x47, 1, 2, 3]).write(to: URL(fileURLWithPath: images + "/broken.png"))
        try Data("not an image".utf8).write(to: URL(fileURLWithPath: work + "/outside.png"))
        let d = try TestDaemon(bits: nil) {
            $0.modelPath = work + "/model.safetensors"
            $0.allowRoots = [images]
            $0.encoderThreads = 2
        }
        let c = try d.client()
        #expect(okText(try c.request("ADD p0 IMAGE \(images)/p0.png")) == "0")
        let b64 = Data(try ImageDecoder.encodePNG(pattern(1))).base64EncodedString()
        #expect(okText(try c.request("ADD p1 IMAGE64 \(b64)")) == "1")
        #expect(okText(try c.request("ADD p2 IMAGE \(images)/../images/p2.png")) == "2")
        // The database took the model's width.
        #expect(listLines(try c.request("STATS"))?.contains("bits 32") == true)
        // An image is its own nearest neighbour; a sketch query answers with every item.
        // (Fixture weights are not trained: different pictures may share a code, so look
        // for the image among the answers at distance 0 rather than in first place.)
        #expect(listLines(try c.request("KNN 3 IMAGE \(images)/p2.png"))?.contains("p2 0") == true)
        #expect(listLines(try c.request("KNN 3 IMAGE64 \(b64)"))?.contains("p1 0") == true)
        #expect(listLines(try c.request("KNN 3 SKETCH \(images)/p0.png"))?.count == 3)
        #expect(listLines(try c.request("RANGE 32 SKETCH64 \(b64)"))?.count == 3)
        let before = try c.request("GET p0")
        // Refusals: outside the roots, missing, corrupt, not base64, a sketch stored.
        let refusals: [(String, String)] = [
            ("ADD x IMAGE \(work)/outside.png", "FORBIDDEN"),
            ("ADD x IMAGE /etc/passwd", "FORBIDDEN"),
            ("ADD x IMAGE \(images)/missing.png", "BADIMAGE"),
            ("ADD x IMAGE \(images)/broken.png", "BADIMAGE"),
            ("ADD x IMAGE64 !!!notbase64", "BADIMAGE"),
            ("ADD x IMAGE64 \(Data("hello".utf8).base64EncodedString())", "BADIMAGE"),
            ("KNN 3 SKETCH \(images)/broken.png", "BADIMAGE"),
            ("ADD x SKETCH \(images)/p0.png", "BADREQUEST"),
        ]
        for (line, code) in refusals {
            guard case .error(let got, _) = try c.request(line) else { Issue.record("\(line) was accepted"); continue }
            #expect(got == code, "\(line)")
        }
        // A PNG header that claims 100,000 x 100,000 pixels is refused before decoding.
        var huge: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52]
        huge += [0x00, 0x01, 0x86, 0xA0, 0x00, 0x01, 0x86, 0xA0, 8, 2, 0, 0, 0]
        huge += [0, 0, 0, 0]
        guard case .error(let hugeCode, _) = try c.request("ADD x IMAGE64 \(Data(huge).base64EncodedString())") else {
            Issue.record("a 100,000 x 100,000 PNG was accepted"); return
        }
        #expect(hugeCode == "BADIMAGE")
        #expect(listLines(try c.request("STATS"))?.contains("items 3") == true)
        #expect(try c.request("GET p0") == before)
        // REENCODE: all three stored images again, same model, same codes.
        #expect(okText(try c.request("REENCODE")) == "3 0")
        #expect(try c.request("GET p0") == before)
        #expect(okText(try c.request("VERIFY")) != nil)
    }

    @Test("a model whose code width differs from the database's is refused")
    func widthMismatch() throws {
        let work = NSTemporaryDirectory() + "gdh-img-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        try writeFixtureModel(to: work + "/model.safetensors")
        let d = try TestDaemon(bits: 64)
        d.stop()
        #expect(throws: DaemonError.self) {
            try d.start { $0.modelPath = work + "/model.safetensors" }
        }
        // Without a model, image requests answer NOMODEL.
        try d.start()
        guard case .error(let code, _) = try d.client().request("KNN 1 SKETCH /tmp/x.png") else { Issue.record("accepted"); return }
        #expect(code == "NOMODEL")
        guard case .error(let code2, _) = try d.client().request("REENCODE") else { Issue.record("accepted"); return }
        #expect(code2 == "NOMODEL")
    }
}

@Suite("gdh add-images and query", .serialized)
struct ImageClientTests {
    @Test("add-images adds a tree once, query finds images and writes an HTML page")
    func addImagesAndQuery() throws {
        let work = NSTemporaryDirectory() + "gdh-cli-\(UUID().uuidString.prefix(8))"
        let images = work + "/photos"
        try FileManager.default.createDirectory(atPath: images + "/cats", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        try writeFixtureModel(to: work + "/model.safetensors")
        for i in 0..<4 {
            try Data(try ImageDecoder.encodePNG(pattern(i))).write(to: URL(fileURLWithPath: "\(images)/\(i % 2 == 0 ? "cats/" : "")p\(i).png"))
        }
        try Data(try ImageDecoder.encodePNG(pattern(9))).write(to: URL(fileURLWithPath: "\(images)/with space.png"))
        let d = try TestDaemon(bits: nil) {
            $0.modelPath = work + "/model.safetensors"
            $0.allowRoots = [images]
        }
        let s = ["--socket", d.socket]
        let first = try runClient(["add-images", images, "--json"] + s)
        #expect(first.status == 0, "\(first.err)")
        // A file whose name has a space cannot be a key: it is skipped and counted.
        #expect(first.out.contains("\"added\":4") && first.out.contains("\"skipped_keys\":1"))
        let again = try runClient(["add-images", images, "--json"] + s)
        #expect(again.out.contains("\"added\":0") && again.out.contains("\"already_present\":4"))
        let sketch = images + "/cats/p0.png"
        let q = try runClient(["query", sketch, "-k", "3", "--root", images, "--image", "--html", work + "/page.html"] + s)
        #expect(q.status == 0, "\(q.err)")
        #expect(q.out.split(separator: "\n").count == 3)
        #expect(q.out.contains("cats/p0.png 0 \(images)/cats/p0.png"))
        let page = try String(contentsOfFile: work + "/page.html", encoding: .utf8)
        #expect(page.contains("data:image/png;base64,"))
        #expect(page.components(separatedBy: "<figure").count == 5)
        let json = try runClient(["query", sketch, "-k", "2", "--json"] + s)
        #expect(json.out.contains("\"count\":2"))
        #expect(try runClient(["reencode"] + s).out == "4 0\n")
        #expect(try runClient(["query", work + "/missing.png"] + s).status == 1)
    }
}
