import CImageCodecs
import Foundation
import HammingCode
import Testing

import ImageIO

// Fixtures are written by Tools/make_image_fixtures.py (Pillow); see fixtures.json.
private let fixturesDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()
    .appendingPathComponent("Fixtures")

struct Fixture: Decodable, Sendable, CustomTestStringConvertible {
    let file: String
    let width: Int
    let height: Int
    let expected: String
    let tolerance: Int
    let covers: String
    let source: String?

    var testDescription: String { "\(file) (\(covers))" }
    var path: String { fixturesDirectory.appendingPathComponent(file).path }
    var isPNG: Bool { file.hasSuffix(".png") }
}

private func fixtureBytes(_ name: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: fixturesDirectory.appendingPathComponent(name)))
}

private func loadFixtures() -> [Fixture] {
    do {
        let data = try Data(contentsOf: fixturesDirectory.appendingPathComponent("fixtures.json"))
        return try JSONDecoder().decode([Fixture].self, from: data)
    } catch {
        fatalError("cannot load Fixtures/fixtures.json: \(error)")
    }
}

private let allFixtures = loadFixtures()


private func crc32(_ bytes: some Sequence<UInt8>) -> UInt32 {
    var c: UInt32 = 0xFFFF_FFFF
    for b in bytes {
        c ^= UInt32(b)
        for _ in 0..<8 { c = (c >> 1) ^ (0xEDB8_8320 & (0 &- (c & 1))) }
    }
    return c ^ 0xFFFF_FFFF
}

private func be32(_ v: UInt32) -> [UInt8] {
    [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)]
}

private func pngChunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
    let t = Array(type.utf8)
    return be32(UInt32(data.count)) + t + data + be32(crc32(t + data))
}

private let pngSignature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

/// Rewrites the IHDR width/height of a PNG and fixes its CRC.
private func patchPNGSize(_ png: [UInt8], width: UInt32, height: UInt32) -> [UInt8] {
    var p = png
    p.replaceSubrange(16..<20, with: be32(width))
    p.replaceSubrange(20..<24, with: be32(height))
    p.replaceSubrange(29..<33, with: be32(crc32(p[12..<29])))
    return p
}

/// Rewrites the size in the first SOFn marker of a JPEG.
private func patchJPEGSize(_ jpeg: [UInt8], width: UInt16, height: UInt16) -> [UInt8] {
    var p = jpeg
    var i = 2
    while i + 9 < p.count {
        precondition(p[i] == 0xFF, "unexpected JPEG layout")
        let marker = p[i + 1]
        let len = Int(p[i + 2]) << 8 | Int(p[i + 3])
        if (0xC0...0xCF).contains(marker) && ![0xC4, 0xC8, 0xCC].contains(marker) {
            p[i + 5] = UInt8(height >> 8); p[i + 6] = UInt8(height & 0xFF)
            p[i + 7] = UInt8(width >> 8); p[i + 8] = UInt8(width & 0xFF)
            return p
        }
        i += 2 + len
    }
    preconditionFailure("no SOF marker")
}

private func decodeError(_ body: () throws -> RGBImage) -> ImageError? {
    do {
        _ = try body()
        return nil
    } catch let e as ImageError {
        return e
    } catch {
        Issue.record("unexpected error type \(error)")
        return nil
    }
}

// MARK: - Fixture decoding

@Suite("ImageIO fixtures")
struct FixtureTests {
    @Test("fixtures folder stays small")
    func fixturesAreSmall() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: fixturesDirectory.path)
        var total = 0
        for n in names {
            let attrs = try FileManager.default.attributesOfItem(atPath: fixturesDirectory.appendingPathComponent(n).path)
            total += (attrs[.size] as? Int) ?? 0
        }
        #expect(total < 200_000)
        #expect(allFixtures.count >= 15)
    }

    @Test("decodes to the expected RGB", arguments: allFixtures)
    func decodesFixture(_ f: Fixture) throws {
        let bytes = try fixtureBytes(f.file)
        let header = try ImageDecoder.probe(bytes)
        #expect(header.format == (f.isPNG ? .png : .jpeg))
        #expect(header.width == f.width && header.height == f.height)

        let img = try ImageDecoder.decode(bytes)
        #expect(img.width == f.width)
        #expect(img.height == f.height)
        let expected = try fixtureBytes(f.expected)
        try #require(img.pixels.count == expected.count)
        if f.tolerance == 0 {
            #expect(f.isPNG)
            #expect(img.pixels == expected, "PNG must decode exactly")
        } else {
            var maxDiff = 0
            for (a, b) in zip(img.pixels, expected) { maxDiff = max(maxDiff, abs(Int(a) - Int(b))) }
            #expect(maxDiff <= f.tolerance, "max |diff| vs Pillow's decode = \(maxDiff)")
        }
        if let source = f.source {
            // Independent of any decoder: compare with what was encoded.
            let src = try fixtureBytes(source)
            var sum = 0
            for (a, b) in zip(img.pixels, src) { sum += abs(Int(a) - Int(b)) }
            let mean = Double(sum) / Double(src.count)
            #expect(mean < 4.0, "mean |diff| vs encoded source = \(mean)")
        }

        let fromFile = try ImageDecoder.decode(contentsOf: f.path)
        #expect(fromFile == img)
    }

    @Test("spot values: RGBA composited over white, palette tRNS, 16-bit")
    func spotValues() throws {
        // png_rgba: alpha pattern [0, 255, 128, 1, 254, 64, 200] starting at (0,0).
        let rgba = try ImageDecoder.decode(fixtureBytes("png_rgba.png"))
        #expect(rgba.pixel(x: 0, y: 0) == (255, 255, 255))          // alpha 0 -> white
        // (1,0): alpha 255 -> source r = 1*255/12 = 21, g = 0, b = (37 + 11) % 256 = 48
        #expect(rgba.pixel(x: 1, y: 0) == (21, 0, 48))
        // (2,0): alpha 128, r = 42, g = 0, b = 85 -> (c*128 + 255*127 + 127) / 255
        #expect(rgba.pixel(x: 2, y: 0) == (148, 127, 170))
        let rgb16 = try ImageDecoder.decode(fixtureBytes("png_rgb16.png"))
        #expect(rgb16.pixel(x: 0, y: 0) == (0, 0, 11))
    }

    @Test("probe reports format and size only")
    func probe() throws {
        let jpeg = try ImageDecoder.probe(fixtureBytes("jpg_progressive.jpg"))
        #expect(jpeg.format == .jpeg && jpeg.width == 37 && jpeg.height == 29)
        let png = try ImageDecoder.probe(fixtureBytes("png_interlaced_rgba.png"))
        #expect(png.format == .png && png.width == 5 && png.height == 3)
    }
}

// MARK: - Hostile input

@Suite("ImageIO hostile input")
struct HostileInputTests {
    /// A syntactically complete PNG (IHDR with valid CRC, an IDAT, IEND) that
    /// claims 100,000 x 100,000 RGB pixels (30 GB decoded).
    static func hugePNG(interlaced: Bool = false) -> [UInt8] {
        var ihdr = be32(100_000) + be32(100_000)
        ihdr += [8, 2, 0, 0, interlaced ? 1 : 0]
        let idat: [UInt8] = [0x78, 0x9C, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01] // zlib("\0")
        return pngSignature + pngChunk("IHDR", ihdr) + pngChunk("IDAT", idat) + pngChunk("IEND", [])
    }

    @Test("PNG claiming 100,000 x 100,000 is refused quickly")
    func hugePNGRefused() throws {
        for interlaced in [false, true] {
            let png = Self.hugePNG(interlaced: interlaced)
            #expect(try ImageDecoder.probe(png).width == 100_000)
            let start = ContinuousClock.now
            let err = decodeError { try ImageDecoder.decode(png) }
            #expect(err == .tooLarge(width: 100_000, height: 100_000, limit: ImageDecoder.defaultMaxPixels))
            #expect(ContinuousClock.now - start < .milliseconds(500))
        }
        // A real fixture with only its IHDR enlarged (valid CRC).
        let patched = patchPNGSize(try fixtureBytes("png_rgba.png"), width: 100_000, height: 100_000)
        #expect(decodeError { try ImageDecoder.decode(patched) }
            == .tooLarge(width: 100_000, height: 100_000, limit: ImageDecoder.defaultMaxPixels))
        // The limit is a parameter.
        let rgb = try fixtureBytes("png_rgb.png")
        #expect(decodeError { try ImageDecoder.decode(rgb, maxPixels: 13 * 11 - 1) }
            == .tooLarge(width: 13, height: 11, limit: 13 * 11 - 1))
        #expect(try ImageDecoder.decode(rgb, maxPixels: 13 * 11).width == 13)
    }

    @Test("C layer refuses before touching the output buffer")
    func cLayerLimits() throws {
        let png = Self.hugePNG()
        let jpeg = patchJPEGSize(try fixtureBytes("jpg_rgb_baseline.jpg"), width: 65_000, height: 65_000)
        for data in [png, jpeg] {
            var out = [UInt8](repeating: 0xAB, count: 3)
            var w: UInt32 = 0, h: UInt32 = 0
            var err = [CChar](repeating: 0, count: 128)
            let rc1 = gdh_image_decode_rgb8(data, data.count, 40_000_000, &out, out.count, &w, &h, &err, 128)
            #expect(rc1 == Int32(GDH_IMAGE_ETOOLARGE))
            #expect(w > 60_000 && h > 60_000)
            // Even without a pixel limit, a too-small buffer is refused, not overrun.
            let rc2 = gdh_image_decode_rgb8(data, data.count, UInt64.max, &out, out.count, &w, &h, &err, 128)
            #expect(rc2 == Int32(GDH_IMAGE_EBUFFER))
            #expect(out == [0xAB, 0xAB, 0xAB])
        }
    }

    @Test("JPEG SOF claiming 65,000 x 65,000 is refused")
    func hugeJPEGRefused() throws {
        for name in ["jpg_rgb_baseline.jpg", "jpg_progressive.jpg", "jpg_grey.jpg", "jpg_cmyk.jpg"] {
            let jpeg = patchJPEGSize(try fixtureBytes(name), width: 65_000, height: 65_000)
            #expect(try ImageDecoder.probe(jpeg).width == 65_000)
            let start = ContinuousClock.now
            #expect(decodeError { try ImageDecoder.decode(jpeg) }
                == .tooLarge(width: 65_000, height: 65_000, limit: ImageDecoder.defaultMaxPixels))
            #expect(ContinuousClock.now - start < .milliseconds(500))
        }
    }

    @Test("progressive JPEG with too many scans is refused")
    func tooManyScans() throws {
        // Repeat the last scan of a progressive file 600 times (limit: 500 scans).
        let jpeg = try fixtureBytes("jpg_progressive.jpg")
        var lastSOS = -1
        for i in 0..<(jpeg.count - 1) where jpeg[i] == 0xFF && jpeg[i + 1] == 0xDA { lastSOS = i }
        try #require(lastSOS > 0 && Array(jpeg.suffix(2)) == [0xFF, 0xD9])
        let scan = jpeg[lastSOS..<(jpeg.count - 2)]
        var crafted = Array(jpeg[0..<(jpeg.count - 2)])
        for _ in 0..<600 { crafted += scan }
        crafted += [0xFF, 0xD9]
        let err = decodeError { try ImageDecoder.decode(crafted) }
        guard case .corrupt(let message) = err else {
            Issue.record("expected .corrupt, got \(String(describing: err))")
            return
        }
        #expect(message.contains("scans"))
    }

    @Test("every truncation of every fixture throws", arguments: allFixtures)
    func truncated(_ f: Fixture) throws {
        let bytes = try fixtureBytes(f.file)
        for cut in 0..<bytes.count {
            let err = decodeError { try ImageDecoder.decode(Array(bytes[0..<cut])) }
            #expect(err != nil, "\(f.file) cut at \(cut) of \(bytes.count) decoded without error")
            if case .unsupportedFormat = err {
                Issue.record("\(f.file) cut at \(cut): reported as unsupported, expected corrupt")
            }
        }
    }

    @Test("empty input")
    func empty() {
        let err = decodeError { try ImageDecoder.decode([]) }
        guard case .corrupt = err else {
            Issue.record("expected .corrupt, got \(String(describing: err))")
            return
        }
    }

    @Test("non-image data is unsupported")
    func nonImage() {
        let samples: [[UInt8]] = [
            Array("hello, this is definitely not an image\n".utf8),
            Array("GIF89a\u{1}\0\u{1}\0\0\0\0;".utf8),
            Array("%PDF-1.7\n%\u{e2}\u{e3}".utf8),
            Array("RIFF\u{10}\0\0\0WEBPVP8 ".utf8),
            [0x42, 0x4D, 0, 0, 0, 0],
            [0],
        ]
        for s in samples {
            let err = decodeError { try ImageDecoder.decode(s) }
            guard case .unsupportedFormat = err else {
                Issue.record("expected .unsupportedFormat for \(s.prefix(8)), got \(String(describing: err))")
                continue
            }
        }
    }

    @Test("random garbage throws")
    func garbage() {
        var rng = SplitMix64(seed: 0x1234_5678)
        for i in 0..<600 {
            let n = Int.random(in: 1...4096, using: &rng)
            var bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            switch i % 3 {
            case 1: // PNG signature then garbage
                bytes.replaceSubrange(0..<min(8, n), with: pngSignature.prefix(min(8, n)))
            case 2: // JPEG SOI then garbage
                bytes.replaceSubrange(0..<min(3, n), with: [0xFF, 0xD8, 0xFF].prefix(min(3, n)))
            default: break
            }
            #expect(decodeError { try ImageDecoder.decode(bytes, maxPixels: 1 << 20) } != nil)
        }
    }

    @Test("mutated fixtures never crash", arguments: allFixtures)
    func mutated(_ f: Fixture) throws {
        let bytes = try fixtureBytes(f.file)
        var rng = SplitMix64(seed: UInt64(crc32(Array(f.file.utf8))))
        for _ in 0..<300 {
            var m = bytes
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                m[Int.random(in: 0..<m.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            // Either an error or a well-formed image; never a crash or overrun.
            if let img = try? ImageDecoder.decode(m, maxPixels: 1 << 20) {
                #expect(img.pixels.count == img.width * img.height * 3)
            }
        }
    }

    @Test("file reading limits")
    func fileErrors() throws {
        let missing = decodeError { try ImageDecoder.decode(contentsOf: "/nonexistent/gdh/image.png") }
        guard case .io = missing else {
            Issue.record("expected .io, got \(String(describing: missing))")
            return
        }
        let f = fixturesDirectory.appendingPathComponent("png_rgb.png").path
        let tooBig = decodeError { try ImageDecoder.decode(contentsOf: f, maxBytes: 10) }
        guard case .io = tooBig else {
            Issue.record("expected .io, got \(String(describing: tooBig))")
            return
        }
        let dir = decodeError { try ImageDecoder.decode(contentsOf: fixturesDirectory.path) }
        guard case .io = dir else {
            Issue.record("expected .io for a directory, got \(String(describing: dir))")
            return
        }
        let size = try fixtureBytes("png_rgb.png").count
        #expect(try ImageDecoder.decode(contentsOf: f, maxBytes: size).width == 13)
    }

    @Test("error descriptions")
    func descriptions() {
        #expect(ImageError.tooLarge(width: 2, height: 3, limit: 5).description.contains("2x3"))
        #expect(ImageError.corrupt("x").description.contains("corrupt"))
    }
}

// MARK: - Transforms

/// Builds an image whose three channels all equal `grey` (row-major).
private func greyImage(_ w: Int, _ h: Int, _ grey: [UInt8]) -> RGBImage {
    RGBImage(width: w, height: h, pixels: grey.flatMap { [$0, $0, $0] })
}

private func channel(_ img: RGBImage, _ c: Int) -> [UInt8] {
    stride(from: c, to: img.pixels.count, by: 3).map { img.pixels[$0] }
}

@Suite("ImageIO transforms")
struct TransformTests {
    @Test("area 4x4 -> 2x2 averages 2x2 blocks exactly")
    func areaDownscale() {
        let r: [UInt8] = [
            10, 20, 100, 200,
            30, 40, 0, 100,
            0, 0, 255, 255,
            0, 4, 255, 255,
        ]
        let g = r.map { 255 - $0 }
        let b: [UInt8] = Array(0..<16).map { UInt8($0 * 16) }
        var px: [UInt8] = []
        for i in 0..<16 { px += [r[i], g[i], b[i]] }
        let out = RGBImage(width: 4, height: 4, pixels: px).resized(width: 2, height: 2, filter: .area)
        #expect(out.width == 2 && out.height == 2)
        #expect(channel(out, 0) == [25, 100, 1, 255])    // 1 = round(1.0); (0+0+0+4)/4
        #expect(channel(out, 1) == [230, 155, 254, 0])
        // b: blocks {0,16,64,80}=40, {32,48,96,112}=72, {128,144,192,208}=168, {160,176,224,240}=200
        #expect(channel(out, 2) == [40, 72, 168, 200])
    }

    @Test("area uses exact fractional pixel areas (6x2 -> 4x1)")
    func areaFractional() {
        let row: [UInt8] = [0, 30, 60, 90, 120, 150]
        let img = greyImage(6, 2, row + row)
        let out = img.resized(width: 4, height: 1, filter: .area)
        // [0,1.5): (0 + 30*.5)/1.5 = 10; [1.5,3): (30*.5 + 60)/1.5 = 50; ...
        #expect(channel(out, 0) == [10, 50, 100, 140])
        // Upscaling 2 -> 4: each source pixel covers two outputs.
        let up = greyImage(2, 1, [10, 200]).resized(width: 4, height: 1, filter: .area)
        #expect(channel(up, 0) == [10, 10, 200, 200])
        // 3 -> 2: [0,1.5) and [1.5,3).
        let odd = greyImage(3, 1, [0, 90, 180]).resized(width: 2, height: 1, filter: .area)
        #expect(channel(odd, 0) == [30, 150])
        // Uniform images stay exactly uniform.
        let flat = greyImage(37, 29, [UInt8](repeating: 77, count: 37 * 29))
        #expect(flat.resized(width: 11, height: 7, filter: .area).pixels.allSatisfy { $0 == 77 })
        #expect(flat.resized(width: 50, height: 41, filter: .bilinear).pixels.allSatisfy { $0 == 77 })
    }

    @Test("bilinear 2x2 -> 4x4 with half-pixel centres")
    func bilinearUpscale() {
        let img = greyImage(2, 2, [0, 100, 200, 40])
        let out = img.resized(width: 4, height: 4, filter: .bilinear)
        // x weights: out0 = p0, out1 = .75 p0 + .25 p1, out2 = .25 p0 + .75 p1, out3 = p1 (same for y)
        #expect(channel(out, 0) == [
            0, 25, 75, 100,
            50, 59, 76, 85,      // 58.75, 76.25 rounded
            150, 126, 79, 55,    // 126.25, 78.75 rounded
            200, 160, 80, 40,
        ])
        #expect(channel(out, 1) == channel(out, 0) && channel(out, 2) == channel(out, 0))
    }

    @Test("bilinear downscale has no antialiasing")
    func bilinearDownscale() {
        // 4 -> 2: src = (o + .5) * 2 - .5 = .5, 2.5 -> mean of pairs.
        let out = greyImage(4, 1, [0, 10, 20, 30]).resized(width: 2, height: 1, filter: .bilinear)
        #expect(channel(out, 0) == [5, 25])
        // 8 -> 2: src = 1.5, 5.5 -> pixels 1,2 and 5,6 only (1, 3, 4, 7 ignored).
        let out8 = greyImage(8, 1, [100, 0, 10, 100, 100, 20, 40, 100])
            .resized(width: 2, height: 1, filter: .bilinear)
        #expect(channel(out8, 0) == [5, 30])
    }

    @Test("resizing to the same size is the identity")
    func identity() throws {
        let img = try ImageDecoder.decode(fixtureBytes("png_rgb.png"))
        #expect(img.resized(width: 13, height: 11, filter: .area) == img)
        #expect(img.resized(width: 13, height: 11, filter: .bilinear) == img)
    }

    @Test("center crop (torchvision offsets, zero padding)")
    func centerCrop() {
        let img = greyImage(5, 4, Array(0..<20).map { UInt8($0) })
        // offsets round((5-3)/2) = 1, round((4-2)/2) = 1
        #expect(channel(img.centerCropped(width: 3, height: 2), 0) == [6, 7, 8, 11, 12, 13])
        // round(1.5) = 2 (ties to even), round(1.0) = 1
        #expect(channel(img.centerCropped(width: 2, height: 2), 0) == [7, 8, 12, 13])
        // larger than the image: padded (left (4-2)/2 = 1, top (3-2)/2 = 0)
        let small = greyImage(2, 2, [1, 2, 3, 4])
        let padded = small.centerCropped(width: 4, height: 3)
        #expect(padded.width == 4 && padded.height == 3)
        #expect(channel(padded, 0) == [0, 1, 2, 0, 0, 3, 4, 0, 0, 0, 0, 0])
        #expect(img.centerCropped(width: 5, height: 4) == img)
    }

    @Test("normalizedCHW layout and range")
    func normalized() throws {
        let img = RGBImage(width: 2, height: 1, pixels: [0, 128, 255, 255, 0, 64])
        let v = img.normalizedCHW()
        #expect(v.count == 6)
        #expect(v[0] == -1 && v[1] == 1)                                     // R plane
        #expect(abs(v[2] - (128.0 / 255 - 0.5) / 0.5) < 1e-6 && v[3] == -1)  // G plane
        #expect(v[4] == 1 && abs(v[5] - (64.0 / 255 - 0.5) / 0.5) < 1e-6)    // B plane

        let photo = try ImageDecoder.decode(fixtureBytes("jpg_rgb_baseline.jpg"))
        let chw = photo.normalizedCHW()
        let n = photo.width * photo.height
        #expect(chw.count == 3 * n)
        #expect(chw.allSatisfy { $0 >= -1 && $0 <= 1 })
        for (x, y) in [(0, 0), (36, 28), (17, 5)] {
            let p = photo.pixel(x: x, y: y)
            let i = y * photo.width + x
            #expect(chw[i] == (Float(p.r) / 255 - 0.5) / 0.5)
            #expect(chw[n + i] == (Float(p.g) / 255 - 0.5) / 0.5)
            #expect(chw[2 * n + i] == (Float(p.b) / 255 - 0.5) / 0.5)
        }
    }
}

// MARK: - Encoding

@Suite("ImageIO PNG encoding")
struct EncodeTests {
    @Test("encode -> decode round trip")
    func roundTrip() throws {
        var rng = SplitMix64(seed: 42)
        for (w, h) in [(1, 1), (17, 9), (300, 7), (64, 64)] {
            let px = (0..<(w * h * 3)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let img = RGBImage(width: w, height: h, pixels: px)
            let png = try ImageDecoder.encodePNG(img)
            #expect(Array(png.prefix(8)) == pngSignature)
            #expect(try ImageDecoder.decode(png) == img)
        }
        for f in allFixtures {
            let img = try ImageDecoder.decode(fixtureBytes(f.file))
            #expect(try ImageDecoder.decode(ImageDecoder.encodePNG(img)) == img)
        }
    }

    @Test("empty images cannot be encoded")
    func emptyEncode() {
        #expect(throws: ImageError.self) {
            try ImageDecoder.encodePNG(RGBImage(width: 0, height: 3, pixels: []))
        }
    }
}

@Suite("Reduced JPEG decoding")
struct ReducedDecodeTests {
    /// 1/8 reduction is the mean of each 8 x 8 block (up to rounding and chroma
    /// subsampling); sizes follow gdh_jpeg_reduction; PNGs and small targets decode whole.
    @Test("JPEGs decode reduced to the smallest size covering the target", arguments: ["jpg_rgb_baseline.jpg", "jpg_progressive.jpg", "jpg_grey.jpg", "jpg_cmyk.jpg"])
    func reduced(file: String) throws {
        let bytes = try fixtureBytes(file)
        let full = try ImageDecoder.decode(bytes)
        #expect(full.width == 37 && full.height == 29)
        // 37 x 29 reduces to 5 x 4 (1/8), 10 x 8 (1/4), 19 x 15 (1/2).
        for (target, d) in [((5, 3), 8), ((8, 4), 4), ((10, 8), 4), ((11, 8), 2), ((19, 15), 2), ((20, 15), 1),
                            ((37, 29), 1), ((100, 100), 1)] {
            let r = try ImageDecoder.decode(bytes, atLeast: (target.0, target.1))
            #expect(r.width == (37 + d - 1) / d && r.height == (29 + d - 1) / d, "\(file) to \(target): \(r.width)x\(r.height), expected 1/\(d)")
            #expect(r.width >= min(target.0, 37) && r.height >= min(target.1, 29))
            if d == 1 { #expect(r.pixels == full.pixels, "\(file) to \(target): a whole decode differs") }
        }
        // Whole 8 x 8 blocks of the full decode against the 1/8 reduction.
        let r8 = try ImageDecoder.decode(bytes, atLeast: (1, 1))
        var total = 0.0, n = 0
        for by in 0..<(29 / 8) {
            for bx in 0..<(37 / 8) {
                for ch in 0..<3 {
                    var sum = 0
                    for y in 0..<8 { for x in 0..<8 { sum += Int(full.pixels[((by * 8 + y) * 37 + bx * 8 + x) * 3 + ch]) } }
                    total += abs(Double(sum) / 64 - Double(r8.pixels[(by * r8.width + bx) * 3 + ch]))
                    n += 1
                }
            }
        }
        #expect(total / Double(n) <= 8, "\(file): block means differ by \(total / Double(n)) on average")
    }

    @Test("PNGs always decode whole; limits apply to the full size")
    func pngAndLimits() throws {
        let png = try fixtureBytes("png_rgb.png")
        let full = try ImageDecoder.decode(png)
        let whole = try ImageDecoder.decode(png, atLeast: (1, 1)).pixels == full.pixels
        #expect(whole, "a PNG was not decoded whole")
        let jpeg = try fixtureBytes("jpg_rgb_baseline.jpg")
        #expect(throws: ImageError.self) { try ImageDecoder.decode(jpeg, maxPixels: 37 * 29 - 1, atLeast: (1, 1)) }
        #expect(gdh_jpeg_reduction(4000, 3000, 512, 512) == 4)
        #expect(gdh_jpeg_reduction(4000, 3000, 128, 128) == 8)
        #expect(gdh_jpeg_reduction(600, 500, 512, 512) == 1)
    }
}
