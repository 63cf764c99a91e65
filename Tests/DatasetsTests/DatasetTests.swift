import Foundation
import ImageIO
import Testing
@testable import Datasets

/// A fresh temporary directory, removed by `cleanup()`.
struct TempDir {
    let path: String

    init() throws {
        let p = NSTemporaryDirectory() + "gdh-datasets-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        path = p
    }

    func cleanup() { try? FileManager.default.removeItem(atPath: path) }

    /// Writes a tiny PNG (4x4, one grey value) at `relative`, creating folders.
    func png(_ relative: String, value: UInt8 = 128) throws {
        let image = RGBImage(width: 4, height: 4, pixels: [UInt8](repeating: value, count: 48))
        try write(relative, bytes: try ImageDecoder.encodePNG(image))
    }

    func write(_ relative: String, bytes: [UInt8]) throws {
        let full = path + "/" + relative
        try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: full, contents: Data(bytes)))
    }
}

/// A plain dataset: `classes` × (`photos` photos, `sketches` sketches).
func makePlain(_ dir: TempDir, classes: [String], photos: Int, sketches: Int) throws {
    for c in classes {
        for i in 0..<photos { try dir.png("images/\(c)/p\(i).png") }
        for i in 0..<sketches { try dir.png("sketches/\(c)/s\(i).png") }
    }
}

@Test func plainLayoutIsDetectedSortedAndLabelled() throws {
    let dir = try TempDir()
    defer { dir.cleanup() }
    try dir.png("images/zebra/b.PNG")
    try dir.png("images/zebra/a.jpg")
    try dir.png("images/cat/x.jpeg")
    try dir.write("images/cat/notes.txt", bytes: Array("ignored".utf8))
    try dir.png("images/cat/.hidden.png")
    try dir.png("sketches/zebra/s.png")
    try dir.png("sketches/cat/x.png")
    let d = try Dataset.load(root: dir.path + "/")
    #expect(d.layout == .plain)
    #expect(d.classes == ["cat", "zebra"])
    #expect(d.photos.map(\.path) == ["images/cat/x.jpeg", "images/zebra/a.jpg", "images/zebra/b.PNG"])
    #expect(d.photos.map(\.label) == [0, 1, 1])
    #expect(d.sketches.map(\.path) == ["sketches/cat/x.png", "sketches/zebra/s.png"])
    // Only Sketchy's names pair sketches with photos.
    #expect(d.sketches.allSatisfy { $0.pair == nil })
    #expect(FileManager.default.fileExists(atPath: d.absolutePath(d.photos[2])))
}

@Test func sketchyLayoutPairsSketchesWithPhotos() throws {
    let dir = try TempDir()
    defer { dir.cleanup() }
    for aug in ["tx_000000000000", "tx_000100000000"] {
        try dir.png("photo/\(aug)/airplane/n1.jpg")
        try dir.png("photo/\(aug)/airplane/n2.jpg")
        try dir.png("photo/\(aug)/bat/m1.jpg")
    }
    for aug in ["tx_000000000000", "tx_000000000010"] {
        try dir.png("sketch/\(aug)/airplane/n1-1.png")
        try dir.png("sketch/\(aug)/airplane/n1-2.png")
        try dir.png("sketch/\(aug)/airplane/n3-1.png")
        try dir.png("sketch/\(aug)/bat/m1-1.png")
    }
    let d = try Dataset.load(root: dir.path)
    #expect(d.layout == .sketchy)
    #expect(d.classes == ["airplane", "bat"])
    #expect(d.photos.allSatisfy { $0.path.hasPrefix("photo/tx_000000000000/") })
    #expect(d.sketches.map(\.pair) == [0, 0, nil, 2])
    let other = try Dataset.load(root: dir.path, augmentation: "tx_000000000000")
    #expect(other.sketches.count == 4)
    #expect(throws: DatasetError.self) { try Dataset.load(root: dir.path, augmentation: "tx_999") }
}

@Test func tuBerlinLayoutNeedsPhotosAndReadsBothFolderStyles() throws {
    let dir = try TempDir()
    defer { dir.cleanup() }
    try dir.png("tub/png/apple/1.png")
    try dir.png("tub/png/bell/2.png")
    try dir.png("ext/apple/a.jpg")
    try dir.png("ext/bell/b.jpg")
    #expect(throws: DatasetError.self) { try Dataset.load(root: dir.path + "/tub", layout: .tuberlin) }
    // Not auto-detected.
    #expect(throws: DatasetError.self) { try Dataset.load(root: dir.path + "/tub") }
    let d = try Dataset.load(root: dir.path + "/tub", layout: .tuberlin, photosRoot: dir.path + "/ext")
    #expect(d.classes == ["apple", "bell"])
    #expect(d.sketches.map(\.path) == ["png/apple/1.png", "png/bell/2.png"])
    #expect(d.photos.map(\.path) == ["../ext/apple/a.jpg", "../ext/bell/b.jpg"])
    #expect(d.photos.allSatisfy { FileManager.default.fileExists(atPath: d.absolutePath($0)) })
    // Without png/: classes directly under the root.
    try dir.png("flat/apple/1.png")
    let partial = #expect(throws: DatasetError.self) {
        try Dataset.load(root: dir.path + "/flat", layout: .tuberlin, photosRoot: dir.path + "/ext")
    }
    #expect(partial?.description.contains("class bell has photos but no sketches") == true)
    try dir.png("flat/bell/1.png")
    let flat = try Dataset.load(root: dir.path + "/flat", layout: .tuberlin, photosRoot: dir.path + "/ext")
    #expect(flat.sketches.map(\.path) == ["apple/1.png", "bell/1.png"])
}

@Test func missingSideOfAClassIsAnErrorNamingIt() throws {
    let dir = try TempDir()
    defer { dir.cleanup() }
    try dir.png("images/cat/a.png")
    try dir.png("images/dog/a.png")
    try dir.png("sketches/cat/a.png")
    let error = #expect(throws: DatasetError.self) { try Dataset.load(root: dir.path) }
    #expect(error?.description.contains("class dog has photos but no sketches") == true)
    try dir.png("sketches/dog/a.png")
    try dir.png("sketches/emu/a.png")
    let reverse = #expect(throws: DatasetError.self) { try Dataset.load(root: dir.path) }
    #expect(reverse?.description.contains("class emu has sketches but no photos") == true)
}

@Test func emptyOrMissingDatasetIsAnError() throws {
    let dir = try TempDir()
    defer { dir.cleanup() }
    try FileManager.default.createDirectory(atPath: dir.path + "/images/cat", withIntermediateDirectories: true)
    try FileManager.default.createDirectory(atPath: dir.path + "/sketches", withIntermediateDirectories: true)
    let empty = #expect(throws: DatasetError.self) { try Dataset.load(root: dir.path) }
    #expect(empty?.description.contains("has no images") == true)
    #expect(throws: DatasetError.self) { try Dataset.load(root: dir.path + "/nope") }
    #expect(throws: DatasetError.self) { try Dataset.load(root: dir.path + "/images") }
}

@Test func imageCacheDecodesOnceAndCountsUnreadableFiles() throws {
    let dir = try TempDir()
    defer { dir.cleanup() }
    try dir.png("a.png", value: 10)
    try dir.png("b.png", value: 200)
    try dir.write("broken.png", bytes: [0x89, 0x50, 0x4E, 0x47, 1, 2, 3])
    let cache = ImageCache(size: 8, filter: .area, maxBytes: 8 * 8 * 3)
    let a = try cache.image(dir.path + "/a.png")
    #expect(a.width == 8 && a.height == 8)
    #expect(a.pixels.allSatisfy { $0 == 10 })
    #expect(try cache.image(dir.path + "/a.png") == a)
    #expect(cache.cachedCount == 1)
    // Over the budget: decoded but not kept.
    #expect(try cache.image(dir.path + "/b.png").pixels[0] == 200)
    #expect(cache.cachedCount == 1 && cache.cachedBytes == 192)
    #expect(throws: DatasetError.self) { try cache.image(dir.path + "/broken.png") }
    #expect(throws: DatasetError.self) { try cache.image(dir.path + "/missing.png") }
    #expect(cache.unreadable == [dir.path + "/broken.png", dir.path + "/missing.png"])
    #expect(cache.warning == "warning: skipped 2 unreadable files (first: \(dir.path)/broken.png)")

    let check = ImageCache.checkReadable(paths: [dir.path + "/a.png", dir.path + "/broken.png", dir.path + "/b.png"], threads: 2)
    #expect(check.readable == [true, false, true])
    #expect(check.unreadable == [dir.path + "/broken.png"])
    #expect(check.warning == "warning: skipped 1 unreadable file (first: \(dir.path)/broken.png)")
}
