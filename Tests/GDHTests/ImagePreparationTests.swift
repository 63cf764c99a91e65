import Foundation
import ImageIO
import NeuralNet
import Testing
@testable import GDH

@Suite("ImagePreparation")
struct ImagePreparationTests {
    func png(_ w: Int, _ h: Int) throws -> [UInt8] {
        let px = (0..<(w * h * 3)).map { UInt8(truncatingIfNeeded: $0 &* 37) }
        return try ImageDecoder.encodePNG(RGBImage(width: w, height: h, pixels: px))
    }

    @Test("bytes -> (1, 3, S, S) in [-1, 1]: decode, resize with the configured filter, normalise", arguments: [ResizeFilter.area, .bilinear])
    func tensor(filter: ResizeFilter) throws {
        var c = GDHConfiguration.small()
        c.resize = filter
        let bytes = try png(90, 70)
        let t = try ImagePreparation.tensor(bytes, configuration: c)
        #expect(t.shape == [1, 3, c.imageSize, c.imageSize])
        let expected = try ImageDecoder.decode(bytes).resized(width: c.imageSize, height: c.imageSize, filter: filter).normalizedCHW()
        #expect(t.data == expected)
        #expect(t.data.allSatisfy { $0 >= -1 && $0 <= 1 })
    }

    @Test("files are read with ImageIO's bounded reader; the pixel limit holds")
    func bounds() throws {
        let path = NSTemporaryDirectory() + "gdh-prep-\(UUID().uuidString.prefix(8)).png"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let bytes = try png(20, 20)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(try ImagePreparation.read(path) == bytes)
        #expect(throws: ImageError.self) { try ImagePreparation.read(path, maxBytes: bytes.count - 1) }
        #expect(throws: ImageError.self) { try ImagePreparation.read(NSTemporaryDirectory()) }
        #expect(throws: ImageError.tooLarge(width: 20, height: 20, limit: 399)) {
            try ImagePreparation.tensor(bytes, configuration: .small(), maxPixels: 399)
        }
    }
}
