import Foundation
import ImageIO
import Testing
@testable import Datasets

private func options(seed: UInt64 = 7, size: Int = 48, photo: PhotoStyle = .standard,
                     sketch: SketchStyle = .standard) -> SynthOptions {
    SynthOptions(classes: 3, photosPerClass: 2, seed: seed, size: size, photoStyle: photo, sketchStyle: sketch)
}

/// Luminance of every pixel, 0...1.
private func luminance(_ image: RGBImage) -> [Double] {
    (0..<(image.width * image.height)).map { i in
        let p = image.pixels
        return (0.299 * Double(p[3 * i]) + 0.587 * Double(p[3 * i + 1]) + 0.114 * Double(p[3 * i + 2])) / 255
    }
}

private func fraction(_ values: [Double], _ test: (Double) -> Bool) -> Double {
    Double(values.filter(test).count) / Double(max(1, values.count))
}

/// Standard deviation of all channel values, 0...255.
private func spread(_ image: RGBImage) -> Double {
    let v = image.pixels.map(Double.init)
    let mean = v.reduce(0, +) / Double(v.count)
    return (v.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(v.count)).squareRoot()
}

/// Distinct colours after quantising each channel to 8 levels.
private func colourCount(_ image: RGBImage) -> Int {
    var seen = Set<Int>()
    for i in 0..<(image.width * image.height) {
        let p = image.pixels
        seen.insert(Int(p[3 * i] >> 5) << 6 | Int(p[3 * i + 1] >> 5) << 3 | Int(p[3 * i + 2] >> 5))
    }
    return seen.count
}

@Test func synthHasEnoughStableCategories() {
    let names = Synth.categoryNames
    #expect(names.count >= 30)
    #expect(Set(names).count == names.count)
    #expect(names.prefix(3) == ["house", "tree", "car"])
    #expect(names.allSatisfy { !$0.isEmpty && $0.allSatisfy { $0.isLetter && $0.isLowercase } })
}

@Test func synthIsDeterministic() {
    let o = options()
    #expect(Synth.photo(category: 1, index: 3, options: o) == Synth.photo(category: 1, index: 3, options: o))
    #expect(Synth.sketch(category: 1, index: 3, options: o) == Synth.sketch(category: 1, index: 3, options: o))
    #expect(Synth.photo(category: 1, index: 3, options: o) != Synth.photo(category: 1, index: 3, options: options(seed: 8)))
    #expect(Synth.sketch(category: 1, index: 3, options: o) != Synth.sketch(category: 1, index: 3, options: options(seed: 8)))
    #expect(Synth.photo(category: 1, index: 3, options: o) != Synth.photo(category: 1, index: 4, options: o))
}

@Test func synthPhotosAreColourfulAndCluttered() {
    let o = options(size: 64)
    for category in [0, 5, 10, 20, 30] {
        let image = Synth.photo(category: category, index: 0, options: o)
        #expect(image.width == 64 && image.height == 64)
        #expect(fraction(luminance(image)) { $0 > 0.95 } < 0.5, "photo \(category) mostly white")
        #expect(spread(image) > 20, "photo \(category) nearly uniform")
        #expect(colourCount(image) > 20, "photo \(category) has few colours")
    }
    // Colour is not a property of the class: the mean colours of instances differ.
    let means = (0..<4).map { i -> [Double] in
        let p = Synth.photo(category: 2, index: i, options: o).pixels
        return (0..<3).map { c in stride(from: c, to: p.count, by: 3).map { Double(p[$0]) }.reduce(0, +) / Double(p.count / 3) }
    }
    #expect(Set(means.map { $0.map { Int($0 / 8) } }).count > 1)
}

@Test func synthSketchesAreDarkStrokesOnWhite() {
    let o = options(size: 64)
    for category in [0, 7, 14, 21, 35] {
        let image = Synth.sketch(category: category, index: 1, options: o)
        let lum = luminance(image)
        let dark = fraction(lum) { $0 < 0.5 }
        #expect(dark > 0.005 && dark < 0.3, "sketch \(category): \(dark) dark")
        #expect(fraction(lum) { $0 > 0.9 } > 0.6, "sketch \(category) not mostly white")
        let p = image.pixels
        var chroma = 0
        for i in 0..<(64 * 64) {
            let r = Int(p[3 * i]), g = Int(p[3 * i + 1]), b = Int(p[3 * i + 2])
            chroma = max(chroma, abs(r - g), abs(g - b))
        }
        #expect(chroma <= 2, "sketch \(category) is not grey")
    }
}

@Test func synthEveryCategoryRenders() {
    for category in Synth.categoryNames.indices {
        for size in [32, 128] where size == 32 || category % 4 == 0 {
            let o = options(size: size)
            let photo = Synth.photo(category: category, index: category, options: o)
            let sketch = Synth.sketch(category: category, index: category, options: o)
            #expect(photo.width == size && sketch.height == size)
            #expect(fraction(luminance(sketch)) { $0 < 0.6 } > 0.002, "\(Synth.categoryNames[category]) at \(size): empty sketch")
        }
    }
}

@Test func synthStylesDiffer() {
    let flat = Synth.photo(category: 3, index: 0, options: options(photo: .flat))
    let standard = Synth.photo(category: 3, index: 0, options: options())
    let grainy = Synth.photo(category: 3, index: 0, options: options(photo: .grainy))
    #expect(flat != standard && grainy != standard)
    #expect(colourCount(flat) < colourCount(standard))
    // Total ink (sum of 1 - luminance) over a few sketches.
    let inkOf = { (s: SketchStyle) in
        (0..<6).map { i in luminance(Synth.sketch(category: 4, index: i, options: options(size: 96, sketch: s))).map { 1 - $0 }.reduce(0, +) }
            .reduce(0, +)
    }
    #expect(inkOf(.clean) < inkOf(.standard))
    #expect(inkOf(.standard) < inkOf(.shaky))
}

@Test func synthRejectsBadOptions() {
    let n = Synth.categoryNames.count
    for bad in [SynthOptions(classes: 0, photosPerClass: 1), SynthOptions(classes: n + 1, photosPerClass: 1),
                SynthOptions(classes: 1, photosPerClass: 0), SynthOptions(classes: 1, photosPerClass: 1, sketchesPerClass: 0),
                SynthOptions(classes: 1, photosPerClass: 1, size: 31), SynthOptions(classes: 1, photosPerClass: 1, size: 1025)] {
        #expect(throws: SynthError.self) { try bad.validate() }
    }
    #expect(throws: Never.self) { try SynthOptions(classes: n, photosPerClass: 1, size: 32).validate() }
}

@Test func synthWritesTheLayout() throws {
    let root = NSTemporaryDirectory() + "synth-test-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: root) }
    let o = SynthOptions(classes: 2, photosPerClass: 3, sketchesPerClass: 2, seed: 3, size: 32)
    var calls = 0
    let summary = try Synth.write(to: root, options: o) { done, total in
        calls += 1
        #expect(total == 10 && done <= total)
    }
    #expect(calls == 10)
    #expect(summary.classes == ["house", "tree"] && summary.photos == 6 && summary.sketches == 4)
    let fm = FileManager.default
    #expect(try fm.contentsOfDirectory(atPath: root + "/images").sorted() == ["house", "tree"])
    #expect(try fm.contentsOfDirectory(atPath: root + "/images/tree").sorted() == ["0.png", "1.png", "2.png"])
    #expect(try fm.contentsOfDirectory(atPath: root + "/sketches/house").sorted() == ["0.png", "1.png"])
    let decoded = try ImageDecoder.decode(contentsOf: root + "/images/tree/2.png")
    #expect(decoded == Synth.photo(category: 1, index: 2, options: o))
    #expect(try ImageDecoder.decode(contentsOf: root + "/sketches/house/1.png") == Synth.sketch(category: 0, index: 1, options: o))
    // Writing again with fewer images removes the stale ones.
    _ = try Synth.write(to: root, options: SynthOptions(classes: 2, photosPerClass: 1, seed: 3, size: 32))
    #expect(try fm.contentsOfDirectory(atPath: root + "/images/tree") == ["0.png"])
}

@Test func synthRefusesUnsuitableDirectories() throws {
    let root = NSTemporaryDirectory() + "synth-test-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: root) }
    try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    let o = SynthOptions(classes: 1, photosPerClass: 1, size: 32)
    try Synth.checkOutputDirectory(root)
    try Data("x".utf8).write(to: URL(fileURLWithPath: root + "/notes.txt"))
    #expect(throws: SynthError.self) { try Synth.write(to: root, options: o) }
    #expect(throws: SynthError.self) { try Synth.checkOutputDirectory(root + "/notes.txt") }
    #expect(throws: SynthError.self) { try Synth.write(to: root, options: SynthOptions(classes: 0, photosPerClass: 1)) }
}

/// Mean over some instances of each sketch's histogram of stroke orientations (8 bins
/// over 0...π, weighted by gradient magnitude, normalised): a descriptor that does not
/// depend on where the figure is or how much ink it has.
private func meanOrientations(_ category: Int, _ indices: Range<Int>) -> [Double] {
    var mean = [Double](repeating: 0, count: 8)
    let size = 48
    for i in indices {
        let lum = luminance(Synth.sketch(category: category, index: i, options: options(size: size)))
        var h = [Double](repeating: 0, count: 8)
        for y in 1..<(size - 1) {
            for x in 1..<(size - 1) {
                let gx = lum[y * size + x + 1] - lum[y * size + x - 1], gy = lum[(y + 1) * size + x] - lum[(y - 1) * size + x]
                let m = (gx * gx + gy * gy).squareRoot()
                guard m > 0.05 else { continue }
                var a = atan2(gy, gx)
                if a < 0 { a += Double.pi }
                h[min(7, Int(a / Double.pi * 8))] += m
            }
        }
        let total = max(1e-9, h.reduce(0, +))
        for b in 0..<8 { mean[b] += h[b] / total / Double(indices.count) }
    }
    return mean
}

private func distance(_ a: [Double], _ b: [Double]) -> Double {
    zip(a, b).map { ($0 - $1) * ($0 - $1) }.reduce(0, +).squareRoot()
}

@Test func synthCategoriesAreDistinguishable() {
    let names = Synth.categoryNames
    for (a, b) in [("ladder", "sun"), ("pencil", "house")] {
        guard let ia = names.firstIndex(of: a), let ib = names.firstIndex(of: b) else {
            Issue.record("missing category \(a) or \(b)")
            continue
        }
        let half1 = meanOrientations(ia, 0..<8), half2 = meanOrientations(ia, 8..<16), other = meanOrientations(ib, 0..<8)
        let between = distance(half1, other), within = distance(half1, half2)
        #expect(between > within, "\(a) vs \(b): \(between) between, \(within) within")
    }
}
