// The synthetic sketch/photo data set: public API, photo and sketch rendering, and the
// writer of the plain layout DIR/images/<class>/<n>.png and DIR/sketches/<class>/<n>.png.

import Foundation
import ImageIO

/// How synthetic photos look.
public enum PhotoStyle: String, CaseIterable, Sendable {
    /// Textured, shaded parts in random colours on cluttered backgrounds.
    case standard
    /// Flat cartoon colours without texture or shading, on a plain background.
    case flat
    /// As standard, then heavy noise, low contrast and a colour cast.
    case grainy
}

/// How synthetic sketches look.
public enum SketchStyle: String, CaseIterable, Sendable {
    /// Hand-drawn jitter, varying width, some missing, doubled and extra strokes.
    case standard
    /// Much stronger jitter and more extra strokes.
    case shaky
    /// Thin, precise strokes without extras.
    case clean
}

/// What to generate.
public struct SynthOptions: Sendable {
    /// How many categories (the first `classes` of `Synth.categoryNames`).
    public var classes: Int
    public var photosPerClass: Int
    public var sketchesPerClass: Int
    public var seed: UInt64
    /// Width and height of every image, in pixels.
    public var size: Int
    public var photoStyle: PhotoStyle
    public var sketchStyle: SketchStyle

    /// Options; `sketchesPerClass` defaults to `photosPerClass`.
    public init(classes: Int, photosPerClass: Int, sketchesPerClass: Int? = nil, seed: UInt64 = 1, size: Int = 128,
                photoStyle: PhotoStyle = .standard, sketchStyle: SketchStyle = .standard) {
        self.classes = classes
        self.photosPerClass = photosPerClass
        self.sketchesPerClass = sketchesPerClass ?? photosPerClass
        self.seed = seed
        self.size = size
        self.photoStyle = photoStyle
        self.sketchStyle = sketchStyle
    }

    /// The valid image sizes.
    public static let sizes = 32...1024
    /// The most images of one kind per class.
    public static let maxPerClass = 1_000_000

    /// Throws `SynthError` when an option is out of range.
    public func validate() throws {
        let n = Synth.categoryNames.count
        guard (1...n).contains(classes) else {
            throw SynthError("classes must be 1 to \(n), got \(classes)")
        }
        guard (1...Self.maxPerClass).contains(photosPerClass) else {
            throw SynthError("photos per class must be 1 to \(Self.maxPerClass), got \(photosPerClass)")
        }
        guard (1...Self.maxPerClass).contains(sketchesPerClass) else {
            throw SynthError("sketches per class must be 1 to \(Self.maxPerClass), got \(sketchesPerClass)")
        }
        guard Self.sizes.contains(size) else {
            throw SynthError("size must be \(Self.sizes.lowerBound) to \(Self.sizes.upperBound) pixels, got \(size)")
        }
    }
}

/// What `Synth.write` wrote.
public struct SynthSummary: Sendable {
    /// The class (folder) names, in category order.
    public var classes: [String]
    public var photos: Int
    public var sketches: Int
}

/// A bad option, an unusable output directory, or a failure to write.
public struct SynthError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The synthetic data generator.
public enum Synth {
    /// The category names (folder names), at least 30, in a stable order.
    public static var categoryNames: [String] { Categories.all.map(\.name) }

    /// Photo `index` of `category` (an index into `categoryNames`). Deterministic in
    /// (options.seed, category, index, size, photo style).
    public static func photo(category: Int, index: Int, options: SynthOptions) -> RGBImage {
        let (figure, start) = drawFigure(category: category, index: index, options: options, stream: 0x5054)
        var rng = start
        return PhotoRenderer(size: options.size, style: options.photoStyle)
            .render(figure.normalisedParts(), rng: &rng)
    }

    /// Sketch `index` of `category`, from a random stream unrelated to the photo's:
    /// its own proportions, pose and strokes. Deterministic in (options.seed, category,
    /// index, size, sketch style).
    public static func sketch(category: Int, index: Int, options: SynthOptions) -> RGBImage {
        let (figure, start) = drawFigure(category: category, index: index, options: options, stream: 0x534B)
        var rng = start
        return SketchRenderer(size: options.size, style: options.sketchStyle)
            .render(figure.normalisedParts(), rng: &rng)
    }

    /// The figure of (category, index) built from the random stream `stream` names (photos
    /// and sketches draw from different ones), and that stream where the figure left it.
    static func drawFigure(category: Int, index: Int, options: SynthOptions, stream: UInt64) -> (Figure, Rand) {
        checkArguments(category, options)
        var figure = Figure(rng: Rand(seed: mixSeed(options.seed, UInt64(category), UInt64(bitPattern: Int64(index)), stream)))
        Categories.all[category].build(&figure)
        return (figure, figure.rng)
    }

    private static func checkArguments(_ category: Int, _ options: SynthOptions) {
        precondition(Categories.all.indices.contains(category),
                     "category \(category) out of range 0..<\(Categories.all.count)")
        precondition(SynthOptions.sizes.contains(options.size),
                     "size \(options.size) out of range \(SynthOptions.sizes)")
    }
}

// MARK: - Pose

/// Where and how a figure is placed in the frame.
struct Pose {
    var centre: Vec2
    var scale: Double
    var rotation: Double
    var flip: Bool

    /// A normalised point in pixels.
    func apply(_ p: Vec2) -> Vec2 {
        centre + Vec2(flip ? -p.x : p.x, p.y).rotated(rotation) * scale
    }

    /// A random pose: the figure's larger extent a fraction `extent` of the frame,
    /// rotated by up to ±`maxRotation` radians, flipped half the time, and moved to a
    /// random place where it fits (centred when it does not).
    static func random(_ parts: [Part], size: Int, extent: ClosedRange<Double>, maxRotation: Double,
                       rng: inout Rand) -> Pose {
        let s = rng.u(extent.lowerBound, extent.upperBound) * Double(size) / 2
        var pose = Pose(centre: Vec2(0, 0), scale: s, rotation: rng.u(-maxRotation, maxRotation), flip: rng.chance(0.5))
        var lo = Vec2(.infinity, .infinity), hi = Vec2(-.infinity, -.infinity)
        for part in parts {
            for c in part.contours {
                for p in c {
                    let q = pose.apply(p)
                    lo = Vec2(min(lo.x, q.x), min(lo.y, q.y))
                    hi = Vec2(max(hi.x, q.x), max(hi.y, q.y))
                }
            }
        }
        guard lo.x.isFinite, hi.x.isFinite else {
            pose.centre = Vec2(Double(size) / 2, Double(size) / 2)
            return pose
        }
        let margin = Double(size) * 0.02
        func place(_ lo: Double, _ hi: Double) -> Double {
            let a = margin - lo, b = Double(size) - margin - hi
            return a <= b ? rng.u(a, b) : (Double(size) - lo - hi) / 2
        }
        pose.centre = Vec2(place(lo.x, hi.x), place(lo.y, hi.y))
        return pose
    }
}

// MARK: - Writer

extension Synth {
    /// Checks that `directory` can receive the layout: it does not exist, is empty, or
    /// already holds images/ and sketches/ folders. Throws `SynthError` otherwise.
    public static func checkOutputDirectory(_ directory: String) throws {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard !directory.isEmpty else { throw SynthError("the output directory must not be empty") }
        guard fm.fileExists(atPath: directory, isDirectory: &isDir) else { return }
        guard isDir.boolValue else {
            throw SynthError("'\(directory)' exists and is not a directory")
        }
        let contents: [String]
        do { contents = try fm.contentsOfDirectory(atPath: directory) } catch {
            throw SynthError("cannot list '\(directory)': \(error.localizedDescription)")
        }
        if contents.isEmpty { return }
        for sub in ["images", "sketches"] {
            var subIsDir: ObjCBool = false
            let path = (directory as NSString).appendingPathComponent(sub)
            guard fm.fileExists(atPath: path, isDirectory: &subIsDir), subIsDir.boolValue else {
                throw SynthError("'\(directory)' is not empty and has no \(sub)/ folder: choose a new or empty directory")
            }
        }
    }

    /// Writes `options.classes` categories to `directory` as
    /// images/<class>/<n>.png and sketches/<class>/<n>.png (n from 0), rendering on
    /// every core. In a directory that already holds the layout, numbered PNGs of the
    /// written classes beyond the new counts are removed so that no stale images mix
    /// in. `progress(done, total)` is called after every image, one call at a time.
    public static func write(to directory: String, options: SynthOptions,
                             progress: ((Int, Int) -> Void)? = nil) throws -> SynthSummary {
        try options.validate()
        try checkOutputDirectory(directory)
        let names = Array(categoryNames.prefix(options.classes))
        for kind in ["images", "sketches"] {
            let keep = kind == "images" ? options.photosPerClass : options.sketchesPerClass
            for name in names {
                let dir = path(directory, kind, name)
                try makeDirectory(dir)
                try removeStale(in: dir, keeping: keep)
            }
        }
        let photos = options.classes * options.photosPerClass
        let total = photos + options.classes * options.sketchesPerClass
        let state = WriteState(total: total, progress: progress)
        DispatchQueue.concurrentPerform(iterations: total) { job in
            guard !state.failed else { return }
            let isPhoto = job < photos
            let per = isPhoto ? options.photosPerClass : options.sketchesPerClass
            let local = isPhoto ? job : job - photos
            let (category, index) = (local / per, local % per)
            do {
                let image = isPhoto ? photo(category: category, index: index, options: options)
                    : sketch(category: category, index: index, options: options)
                let file = path(directory, isPhoto ? "images" : "sketches", names[category]) + "/\(index).png"
                try writePNG(image, to: file)
                state.finished()
            } catch {
                state.fail(error)
            }
        }
        if let error = state.error { throw error }
        return SynthSummary(classes: names, photos: photos, sketches: total - photos)
    }

    private static func path(_ root: String, _ kind: String, _ name: String) -> String {
        ((root as NSString).appendingPathComponent(kind) as NSString).appendingPathComponent(name)
    }

    private static func makeDirectory(_ dir: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw SynthError("cannot create '\(dir)': \(error.localizedDescription)")
        }
    }

    /// Removes files named <n>.png with n >= keep (the generator's own names) from dir.
    private static func removeStale(in dir: String, keeping keep: Int) throws {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        for name in names where name.hasSuffix(".png") {
            let stem = name.dropLast(4)
            guard !stem.isEmpty, stem.allSatisfy(\.isASCII), stem.allSatisfy(\.isNumber),
                  let n = Int(stem), n >= keep else { continue }
            do { try FileManager.default.removeItem(atPath: dir + "/" + name) } catch {
                throw SynthError("cannot remove stale '\(dir)/\(name)': \(error.localizedDescription)")
            }
        }
    }

    private static func writePNG(_ image: RGBImage, to file: String) throws {
        let bytes: [UInt8]
        do { bytes = try ImageDecoder.encodePNG(image) } catch {
            throw SynthError("cannot encode '\(file)': \(error)")
        }
        do { try Data(bytes).write(to: URL(fileURLWithPath: file)) } catch {
            throw SynthError("cannot write '\(file)': \(error.localizedDescription)")
        }
    }
}

/// Shared progress and the first error of a parallel write.
private final class WriteState: @unchecked Sendable {
    private let lock = NSLock()
    private let total: Int
    private let progress: ((Int, Int) -> Void)?
    private var done = 0
    private var firstError: Error?

    init(total: Int, progress: ((Int, Int) -> Void)?) {
        self.total = total
        self.progress = progress
    }

    var failed: Bool { lock.withLock { firstError != nil } }
    var error: Error? { lock.withLock { firstError } }

    func finished() {
        lock.withLock {
            done += 1
            progress?(done, total)
        }
    }

    func fail(_ error: Error) {
        lock.withLock { if firstError == nil { firstError = error } }
    }
}

// MARK: - Photos

/// Random colours: any hue, not tied to a category.
enum Colours {
    static func random(_ rng: inout Rand, vivid: Bool = false) -> RGB {
        if !vivid && rng.chance(0.1) {
            let v = Float(rng.u(0.12, 0.95))
            return RGB(v, v, v)
        }
        return vivid ? .hsv(rng.unit(), rng.u(0.5, 1), rng.u(0.6, 1)) : .hsv(rng.unit(), rng.u(0.2, 1), rng.u(0.25, 1))
    }

    /// The palette of one instance: three free colours (the first distinct from the
    /// background), a dark and a light one (roles 3 and 4).
    static func palette(_ rng: inout Rand, avoiding background: RGB, vivid: Bool) -> [RGB] {
        var main = random(&rng, vivid: vivid)
        for _ in 0..<8 where main.distance(background) < 0.35 { main = random(&rng, vivid: vivid) }
        let dark = RGB.hsv(rng.unit(), rng.u(0, 0.5), rng.u(0.05, 0.28))
        let light = RGB.hsv(rng.unit(), rng.u(0, 0.25), rng.u(0.8, 1))
        return [main, random(&rng, vivid: vivid), random(&rng, vivid: vivid), dark, light]
    }
}

/// Renders photos: background, clutter, the figure's filled and shaded parts, finish.
struct PhotoRenderer {
    let size: Int
    let style: PhotoStyle
    var k: Double { Double(size) / 128 }

    func render(_ parts: [Part], rng: inout Rand) -> RGBImage {
        let noise = NoiseField(&rng, n: 32)
        var canvas = Canvas(width: size, height: size, color: .white)
        let light = Vec2(1, 0).rotated(rng.u(0, 2 * Double.pi))
        let background = drawBackground(&canvas, noise: noise, light: light, rng: &rng)
        let palette = Colours.palette(&rng, avoiding: background, vivid: style == .flat)
        let pose = Pose.random(parts, size: size, extent: 0.45...0.9, maxRotation: Double.pi / 6, rng: &rng)
        let shade = style == .flat ? 0 : Float(rng.u(0.15, 0.4))
        let outline = style == .flat && rng.chance(0.5)
        for part in parts where part.inPhoto {
            let px = part.contours.map { $0.map(pose.apply) }
            var colour = palette[max(0, min(4, part.role))] * Float(part.tint)
            colour = RGB(min(1, colour.r), min(1, colour.g), min(1, colour.b))
            let paint = partPaint(colour, px, shade: shade, light: light, noise: noise, rng: &rng)
            draw(&canvas, part, px, paint: paint, width: part.width * pose.scale)
            if outline && part.filled {
                for c in px { strokeLine(&canvas, c + [c[0]], width: 1.3 * k, paint: Paint(RGB(0.08, 0.08, 0.08))) }
            }
        }
        if style != .flat && rng.chance(0.35) {
            for _ in 0..<rng.int(1, 2) { clutter(&canvas, extent: 0.04...0.12, noise: noise, light: light, rng: &rng) }
        }
        finish(&canvas, noise: noise, rng: &rng)
        return canvas.image()
    }

    private func draw(_ canvas: inout Canvas, _ part: Part, _ px: [[Vec2]], paint: Paint, width: Double) {
        if part.filled {
            if let m = Raster.fill(px, width: size, height: size) { canvas.draw(m, paint) }
            return
        }
        for c in px where !c.isEmpty {
            strokeLine(&canvas, part.closed ? c + [c[0]] : c, width: max(0.8, width), paint: paint)
        }
    }

    private func strokeLine(_ canvas: inout Canvas, _ pts: [Vec2], width: Double, paint: Paint, opacity: Float = 1) {
        let widths = [Double](repeating: width, count: pts.count)
        if let m = Raster.stroke(pts, widths: widths, width: size, height: size) { canvas.draw(m, paint, opacity: opacity) }
    }

    /// A paint for a region with the given pixel contours: flat in the flat style,
    /// otherwise shaded along the light and, often, textured.
    private func partPaint(_ colour: RGB, _ px: [[Vec2]], shade: Float, light: Vec2, noise: NoiseField,
                           rng: inout Rand) -> Paint {
        var paint = Paint(colour)
        guard style != .flat else { return paint }
        var lo = Vec2(.infinity, .infinity), hi = Vec2(-.infinity, -.infinity)
        for c in px {
            for p in c {
                lo = Vec2(min(lo.x, p.x), min(lo.y, p.y))
                hi = Vec2(max(hi.x, p.x), max(hi.y, p.y))
            }
        }
        guard lo.x.isFinite, hi.x.isFinite else { return paint }
        paint.centre = lo.lerp(hi, 0.5)
        paint.radius = max(1, (hi - lo).length / 2)
        paint.light = light
        paint.shade = shade
        let area = (hi.x - lo.x) * (hi.y - lo.y)
        if area > 40 * k * k && rng.chance(0.65) { addTexture(&paint, noise: noise, rng: &rng) }
        return paint
    }

    /// Gives a paint a random texture with a second colour derived from or unrelated to
    /// its base.
    private func addTexture(_ paint: inout Paint, noise: NoiseField, rng: inout Rand) {
        let c = paint.base
        switch rng.int(0, 2) {
        case 0: paint.alt = c * Float(rng.u(0.5, 0.8))
        case 1: paint.alt = c.mix(.white, Float(rng.u(0.3, 0.6)))
        default: paint.alt = Colours.random(&rng)
        }
        paint.amount = Float(rng.u(0.25, 0.6))
        paint.offset = Vec2(rng.u(0, 500), rng.u(0, 500))
        let angle = rng.u(0, Double.pi)
        switch rng.int(0, 4) {
        case 0, 1:
            paint.noise = noise
            paint.texture = .noise(cell: rng.u(1.5, 5) * k)
            paint.amount = Float(rng.u(0.35, 0.8))
        case 2: paint.texture = .stripes(angle: angle, period: rng.u(3, 9) * k)
        case 3:
            let period = rng.u(4, 9) * k
            paint.texture = .dots(angle: angle, period: period, radius: period * rng.u(0.2, 0.35))
        default: paint.texture = .checker(angle: angle, period: rng.u(3, 8) * k)
        }
    }

    /// Paints the background and returns its mean colour.
    private func drawBackground(_ canvas: inout Canvas, noise: NoiseField, light: Vec2, rng: inout Rand) -> RGB {
        if style == .flat {
            let c = RGB.hsv(rng.unit(), rng.u(0, 0.35), rng.u(0.75, 1))
            canvas = Canvas(width: size, height: size, color: c)
            return c
        }
        canvas.fillGradient(Colours.random(&rng), Colours.random(&rng), direction: Vec2(1, 0).rotated(rng.u(0, 2 * Double.pi)))
        canvas.modulate(noise, cell: rng.u(8, 30) * k, amount: Float(rng.u(0.05, 0.2)), offset: Vec2(rng.u(0, 900), rng.u(0, 900)))
        if rng.chance(0.4) {
            let s = Double(size), y = rng.u(0.55, 0.85) * s, tilt = rng.u(-0.1, 0.1) * s
            let floor = [Vec2(-1, y - tilt), Vec2(s + 1, y + tilt), Vec2(s + 1, s + 1), Vec2(-1, s + 1)]
            let paint = partPaint(Colours.random(&rng), [floor], shade: 0.2, light: light, noise: noise, rng: &rng)
            if let m = Raster.fill([floor], width: size, height: size) { canvas.draw(m, paint) }
        }
        for _ in 0..<rng.int(3, 9) { clutter(&canvas, extent: 0.05...0.35, noise: noise, light: light, rng: &rng) }
        return canvas.mean()
    }

    /// One unrelated shape: an ellipse, box, blob, ring, straight or wavy line.
    private func clutter(_ canvas: inout Canvas, extent: ClosedRange<Double>, noise: NoiseField, light: Vec2,
                         rng: inout Rand) {
        let s = Double(size)
        let c = Vec2(rng.u(0, s), rng.u(0, s)), r = rng.u(extent.lowerBound, extent.upperBound) * s
        let rot = rng.u(0, Double.pi), opacity = Float(rng.u(0.5, 1))
        let kind = rng.int(0, 5)
        if kind >= 4 {
            let end = c + Vec2(cos(rot), sin(rot)) * (r * rng.u(1.5, 4))
            let pts = kind == 4 ? [c, end] : Geo.wave(c, end, amp: r * rng.u(0.05, 0.2), waves: rng.u(1, 3))
            strokeLine(&canvas, pts, width: rng.u(1, 6) * k, paint: Paint(Colours.random(&rng)), opacity: opacity)
            return
        }
        var contours: [[Vec2]]
        switch kind {
        case 0: contours = [Geo.ellipse(c.x, c.y, r, r * rng.u(0.3, 1), rot: rot)]
        case 1: contours = [Geo.rect(-r, -r * rng.u(0.2, 1), r, r * rng.u(0.2, 1)).map { c + $0.rotated(rot) }]
        case 2:
            let n = rng.int(3, 7)
            contours = [(0..<n).map { i in c + Vec2(1, 0).rotated(rot + Double(i) * 2 * Double.pi / Double(n)) * (r * rng.u(0.4, 1)) }]
        default:
            let ry = r * rng.u(0.4, 1)
            contours = [Geo.ellipse(c.x, c.y, r, ry, rot: rot), Array(Geo.ellipse(c.x, c.y, r * 0.6, ry * 0.6, rot: rot).reversed())]
        }
        let paint = partPaint(Colours.random(&rng), contours, shade: Float(rng.u(0, 0.3)), light: light, noise: noise, rng: &rng)
        if let m = Raster.fill(contours, width: size, height: size) { canvas.draw(m, paint, opacity: opacity) }
    }

    /// Sensor noise; for the grainy style also blotches, low contrast and a colour cast.
    private func finish(_ canvas: inout Canvas, noise: NoiseField, rng: inout Rand) {
        switch style {
        case .flat:
            return
        case .standard:
            canvas.addGrain(&rng, sigma: rng.u(0.005, 0.025), chroma: 0.5)
        case .grainy:
            canvas.modulate(noise, cell: Double(size) / 6, amount: Float(rng.u(0.08, 0.2)), offset: Vec2(rng.u(0, 99), rng.u(0, 99)))
            let cast = RGB(Float(rng.u(0.75, 1.25)), Float(rng.u(0.75, 1.25)), Float(rng.u(0.75, 1.25)))
            canvas.grade(contrast: Float(rng.u(0.45, 0.7)), pivot: Float(rng.u(0.4, 0.6)), cast: cast, lift: Float(rng.u(-0.05, 0.1)))
            canvas.addGrain(&rng, sigma: rng.u(0.05, 0.1), chroma: 0.6)
        }
    }
}

// MARK: - Sketches

/// How one sketch is drawn: the hand's imprecision, pen and habits.
struct Hand {
    /// Amplitude (pixels) and wavelength of the slow drift that distorts shapes.
    var drift: Double
    var driftLength: Double
    /// Amplitude (pixels) and wavelength of the faster wobble of a line.
    var wobble: Double
    var wobbleLength: Double
    /// Amplitude of a fast tremor (pixels).
    var tremor: Double
    var width: Double
    /// Relative variation of the width along a stroke, and tapering at its ends.
    var widthVariation: Double
    var taper: Bool
    var dropPart: Double
    var dropSegment: Double
    var double: Double
    var extras: ClosedRange<Int>
    /// How far (pixels) a stroke may overshoot its end.
    var overshoot: Double
    var ink: Float
    /// Resampling step (pixels).
    var spacing: Double

    static func random(_ style: SketchStyle, size: Int, rng: inout Rand) -> Hand {
        let k = Double(size) / 128
        switch style {
        case .standard:
            return Hand(drift: rng.u(1.0, 2.8) * k, driftLength: rng.u(50, 110) * k, wobble: rng.u(0.3, 1.0) * k,
                        wobbleLength: rng.u(8, 18) * k, tremor: 0.15 * k, width: max(1, rng.u(1.0, 2.4) * k),
                        widthVariation: rng.u(0.15, 0.35), taper: true, dropPart: 0.08, dropSegment: 0.15, double: 0.15,
                        extras: 0...2, overshoot: rng.u(2, 5) * k, ink: Float(rng.u(0.02, 0.3)), spacing: 1.5 * k)
        case .shaky:
            return Hand(drift: rng.u(2.5, 4.5) * k, driftLength: rng.u(40, 90) * k, wobble: rng.u(1.1, 1.8) * k,
                        wobbleLength: rng.u(9, 15) * k, tremor: 0.3 * k, width: max(1, rng.u(1.0, 2.6) * k),
                        widthVariation: rng.u(0.3, 0.5), taper: true, dropPart: 0.12, dropSegment: 0.25, double: 0.35,
                        extras: 2...4, overshoot: rng.u(5, 9) * k, ink: Float(rng.u(0.02, 0.35)), spacing: 1.5 * k)
        case .clean:
            return Hand(drift: 0.3 * k, driftLength: 100 * k, wobble: 0.1 * k, wobbleLength: 12 * k, tremor: 0,
                        width: max(0.8, rng.u(0.8, 1.1) * k), widthVariation: 0, taper: false, dropPart: 0, dropSegment: 0, double: 0,
                        extras: 0...0, overshoot: 0, ink: Float(rng.u(0, 0.1)), spacing: 1.5 * k)
        }
    }
}

/// A smooth random displacement along a stroke (a sum of sinusoids of arc length).
struct Jitter {
    var terms: [(ax: Double, ay: Double, length: Double, px: Double, py: Double)] = []
    var shift: Vec2

    init(_ hand: Hand, rng: inout Rand) {
        shift = Vec2(rng.normal(), rng.normal()) * (hand.drift * 0.4)
        let specs = [(hand.drift, hand.driftLength), (hand.wobble, hand.wobbleLength), (hand.tremor, 6 * hand.spacing)]
        for (amp, length) in specs where amp > 0 {
            terms.append((amp * rng.normal(), amp * rng.normal(), length * rng.u(0.8, 1.25),
                          rng.u(0, 2 * Double.pi), rng.u(0, 2 * Double.pi)))
        }
    }

    func at(_ s: Double) -> Vec2 {
        var d = shift
        for t in terms {
            let w = 2 * Double.pi * s / t.length
            d = d + Vec2(t.ax * sin(w + t.px), t.ay * sin(w + t.py))
        }
        return d
    }
}

/// Renders sketches: the figure's outlines as hand-drawn strokes on white.
struct SketchRenderer {
    let size: Int
    let style: SketchStyle
    var k: Double { Double(size) / 128 }

    func render(_ parts: [Part], rng: inout Rand) -> RGBImage {
        let hand = Hand.random(style, size: size, rng: &rng)
        let pose = Pose.random(parts, size: size, extent: 0.55...0.9, maxRotation: Double.pi / 12, rng: &rng)
        var canvas = Canvas(width: size, height: size, color: .white)
        let boxes = parts.map { box($0.contours.map { $0.map(pose.apply) }) }
        // Only details (parts much smaller than the largest) are ever left out.
        let largest = boxes.map(area).max() ?? 0
        for (i, part) in parts.enumerated() where part.inSketch {
            if area(boxes[i]) < 0.25 * largest && rng.chance(hand.dropPart) { continue }
            for contour in part.contours where !contour.isEmpty {
                drawStroke(contour.map(pose.apply), closed: part.closed || part.filled, hand: hand, canvas: &canvas, rng: &rng)
            }
        }
        let filledBoxes = parts.indices.filter { parts[$0].filled && parts[$0].inSketch }.map { boxes[$0] }
        let all = box(boxes.map { [$0.lo, $0.hi] })
        for _ in 0..<rng.int(hand.extras.lowerBound, hand.extras.upperBound) {
            drawExtra(all, filledBoxes, hand: hand, canvas: &canvas, rng: &rng)
        }
        return canvas.image()
    }

    private func box(_ contours: [[Vec2]]) -> (lo: Vec2, hi: Vec2) {
        var lo = Vec2(.infinity, .infinity), hi = Vec2(-.infinity, -.infinity)
        for c in contours {
            for p in c {
                lo = Vec2(min(lo.x, p.x), min(lo.y, p.y))
                hi = Vec2(max(hi.x, p.x), max(hi.y, p.y))
            }
        }
        return lo.x.isFinite && hi.x.isFinite ? (lo, hi) : (Vec2(0, 0), Vec2(0, 0))
    }

    private func area(_ b: (lo: Vec2, hi: Vec2)) -> Double { (b.hi.x - b.lo.x) * (b.hi.y - b.lo.y) }

    /// Draws a line through `pts` by hand, sometimes twice, slightly offset.
    func drawStroke(_ pts: [Vec2], closed: Bool, hand: Hand, canvas: inout Canvas, rng: inout Rand) {
        let passes = rng.chance(hand.double) ? 2 : 1
        var length = 0.0
        for i in pts.indices.dropFirst() { length += (pts[i] - pts[i - 1]).length }
        if closed, let first = pts.first, let last = pts.last { length += (first - last).length }
        for pass in 0..<passes {
            // A small shape is drawn with proportionally smaller deviations.
            var h = hand
            h.drift *= min(1, length / (80 * k)) * (pass > 0 ? 0.6 : 1)
            h.wobble *= min(1, length / (30 * k))
            let offset = pass == 0 ? Vec2(0, 0) : Vec2(rng.normal(), rng.normal()) * (1.2 * k)
            for piece in handPath(pts, closed: closed, hand: h, rng: &rng) where !piece.isEmpty {
                let moved = piece.map { $0 + offset }
                let widths = strokeWidths(moved.count, hand: hand, rng: &rng)
                let ink = max(0, min(1, hand.ink + Float(rng.u(-0.05, 0.05))))
                let opacity = style == .clean ? 1 : Float(rng.u(0.8, 1))
                if let m = Raster.stroke(moved, widths: widths, width: size, height: size) {
                    canvas.draw(m, Paint(RGB(ink, ink, ink)), opacity: opacity)
                }
            }
        }
    }

    /// Pen widths along a stroke of `n` points: varying pressure, tapered ends.
    private func strokeWidths(_ n: Int, hand: Hand, rng: inout Rand) -> [Double] {
        let length = rng.u(15, 40) * k, phase = rng.u(0, 2 * Double.pi)
        let base = hand.width * rng.u(0.85, 1.15)
        let taperPoints = max(1.0, 5 * k / hand.spacing)
        return (0..<n).map { i in
            let s = Double(i) * hand.spacing
            var w = base * (1 + hand.widthVariation * sin(2 * Double.pi * s / length + phase))
            if hand.taper {
                let fromEnd = Double(min(i, n - 1 - i))
                w *= min(1, 0.4 + 0.6 * fromEnd / taperPoints)
            }
            return max(0.5, w)
        }
    }

    /// The jittered pieces of one pass over a line: resampled, started at a random
    /// place (closed lines), with overshoot or a gap at the end and sometimes a
    /// missing stretch.
    private func handPath(_ pts: [Vec2], closed: Bool, hand: Hand, rng: inout Rand) -> [[Vec2]] {
        var dense = resample(closed ? pts + [pts[0]] : pts, spacing: hand.spacing)
        if dense.count < 3 {
            return [dense.count == 1 ? [dense[0], dense[0]] : dense]
        }
        if closed {
            dense.removeLast()
            let n = dense.count, start = rng.int(0, n - 1)
            let extra = Int(rng.u(-0.4, 1) * hand.overshoot / hand.spacing)
            let count = max(n / 2, min(n + n / 3, n + 1 + extra))
            dense = (0..<count).map { dense[(start + $0) % n] }
        } else {
            let a = rng.u(0, hand.overshoot * 0.6), b = rng.u(0, hand.overshoot * 0.6)
            dense = extend(dense, a, b, spacing: hand.spacing)
        }
        let jitter = Jitter(hand, rng: &rng)
        dense = dense.enumerated().map { $0.element + jitter.at(Double($0.offset) * hand.spacing) }
        guard dense.count > 8, rng.chance(hand.dropSegment) else { return [dense] }
        let cut = max(2, Int(Double(dense.count) * rng.u(0.12, 0.3)))
        if closed || rng.chance(0.5) { return [Array(dense.dropLast(cut))] }
        let at = rng.int(1, max(1, dense.count - cut - 1))
        return [Array(dense[0..<at]), Array(dense[min(dense.count, at + cut)...])].filter { $0.count >= 2 }
    }

    /// Extends a polyline past its first point by `a` and past its last by `b` pixels.
    private func extend(_ pts: [Vec2], _ a: Double, _ b: Double, spacing: Double) -> [Vec2] {
        guard pts.count >= 2 else { return pts }
        func tangent(_ p: Vec2, _ q: Vec2) -> Vec2 {
            let d = p - q
            return d.length > 0 ? d * (1 / d.length) : Vec2(0, 0)
        }
        let t0 = tangent(pts[0], pts[1]), t1 = tangent(pts[pts.count - 1], pts[pts.count - 2])
        let before = stride(from: a, to: 0, by: -spacing).map { pts[0] + t0 * $0 }
        let after = stride(from: spacing, through: b, by: spacing).map { pts[pts.count - 1] + t1 * $0 }
        return before + pts + after
    }

    /// Points every `spacing` pixels along a polyline, ending at its last point.
    func resample(_ pts: [Vec2], spacing: Double) -> [Vec2] {
        guard var prev = pts.first else { return [] }
        var out = [prev]
        var carry = 0.0
        for q in pts.dropFirst() {
            let d = q - prev, len = d.length
            if len == 0 { continue }
            var t = spacing - carry
            while t <= len {
                out.append(prev + d * (t / len))
                t += spacing
            }
            carry = len - (t - spacing)
            prev = q
        }
        if carry > spacing * 0.3 { out.append(prev) } else if out.count > 1 { out[out.count - 1] = prev }
        return out
    }

    /// A scribble near the figure, hatching inside a part, or a ground line.
    private func drawExtra(_ all: (lo: Vec2, hi: Vec2), _ filled: [(lo: Vec2, hi: Vec2)], hand: Hand,
                           canvas: inout Canvas, rng: inout Rand) {
        let choice = rng.unit()
        if choice < 0.4 || filled.isEmpty {
            var p = Vec2(rng.u(all.lo.x, all.hi.x + 1), rng.u(all.lo.y, all.hi.y + 1))
            var dir = rng.u(0, 2 * Double.pi)
            var pts = [p]
            for _ in 0..<rng.int(3, 6) {
                dir += rng.u(-1.5, 1.5)
                p = p + Vec2(cos(dir), sin(dir)) * (rng.u(5, 15) * k)
                pts.append(p)
            }
            drawStroke(pts, closed: false, hand: hand, canvas: &canvas, rng: &rng)
        } else if choice < 0.8 {
            let b = filled[rng.int(0, filled.count - 1)]
            let c = b.lo.lerp(b.hi, 0.5), angle = rng.u(0, Double.pi)
            let len = max(3 * k, min(b.hi.x - b.lo.x, b.hi.y - b.lo.y) * rng.u(0.4, 0.8))
            let along = Vec2(cos(angle), sin(angle)), across = Vec2(-sin(angle), cos(angle))
            let n = rng.int(3, 7), gap = rng.u(2.5, 5) * k
            for i in 0..<n {
                let o = c + across * ((Double(i) - Double(n - 1) / 2) * gap)
                drawStroke([o - along * (len / 2), o + along * (len / 2)], closed: false, hand: hand, canvas: &canvas, rng: &rng)
            }
        } else {
            let y = all.hi.y + rng.u(1, 5) * k
            drawStroke([Vec2(all.lo.x - rng.u(2, 10) * k, y), Vec2(all.hi.x + rng.u(2, 10) * k, y)], closed: false,
                       hand: hand, canvas: &canvas, rng: &rng)
        }
    }
}
