// A small anti-aliased software rasteriser for the synthetic data generator: filled
// polygons (non-zero winding, several contours, exact horizontal coverage on four
// sub-scanlines per pixel row), variable-width strokes (distance-based coverage),
// and paints with lighting gradients and procedural textures.

import Foundation
import HammingCode
import ImageIO

/// A 2-D point or vector (pixel or normalised coordinates; y points down).
struct Vec2: Sendable, Equatable {
    var x: Double
    var y: Double

    init(_ x: Double, _ y: Double) {
        self.x = x
        self.y = y
    }

    static func + (a: Vec2, b: Vec2) -> Vec2 { Vec2(a.x + b.x, a.y + b.y) }
    static func - (a: Vec2, b: Vec2) -> Vec2 { Vec2(a.x - b.x, a.y - b.y) }
    static func * (a: Vec2, s: Double) -> Vec2 { Vec2(a.x * s, a.y * s) }

    var length: Double { (x * x + y * y).squareRoot() }

    /// This vector rotated by `angle` radians.
    func rotated(_ angle: Double) -> Vec2 {
        let c = cos(angle), s = sin(angle)
        return Vec2(x * c - y * s, x * s + y * c)
    }

    /// The point a fraction `t` of the way from `self` to `b`.
    func lerp(_ b: Vec2, _ t: Double) -> Vec2 { Vec2(x + (b.x - x) * t, y + (b.y - y) * t) }
}

/// A linear RGB colour with channels nominally in 0...1.
struct RGB: Sendable, Equatable {
    var r: Float
    var g: Float
    var b: Float

    init(_ r: Float, _ g: Float, _ b: Float) {
        self.r = r
        self.g = g
        self.b = b
    }

    static let white = RGB(1, 1, 1)

    static func * (c: RGB, s: Float) -> RGB { RGB(c.r * s, c.g * s, c.b * s) }

    /// The colour a fraction `t` of the way from `self` to `o`.
    func mix(_ o: RGB, _ t: Float) -> RGB {
        RGB(r + (o.r - r) * t, g + (o.g - g) * t, b + (o.b - b) * t)
    }

    /// Euclidean distance in RGB.
    func distance(_ o: RGB) -> Float {
        let dr = r - o.r, dg = g - o.g, db = b - o.b
        return (dr * dr + dg * dg + db * db).squareRoot()
    }

    /// A colour from hue (0...1, wraps), saturation and value (0...1).
    static func hsv(_ h: Double, _ s: Double, _ v: Double) -> RGB {
        let hh = (h - floor(h)) * 6
        let i = Int(hh) % 6
        let f = hh - floor(hh)
        let p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f))
        let (r, g, b): (Double, Double, Double)
        switch i {
        case 0: (r, g, b) = (v, t, p)
        case 1: (r, g, b) = (q, v, p)
        case 2: (r, g, b) = (p, v, t)
        case 3: (r, g, b) = (p, q, v)
        case 4: (r, g, b) = (t, p, v)
        default: (r, g, b) = (v, p, q)
        }
        return RGB(Float(r), Float(g), Float(b))
    }
}

/// Uniform and normal variates from a `SplitMix64` stream, with explicit arithmetic so
/// that a seed gives the same numbers on every platform and Swift version.
struct Rand {
    var generator: SplitMix64

    init(seed: UInt64) { generator = SplitMix64(seed: seed) }

    /// Uniform in [0, 1).
    mutating func unit() -> Double { Double(generator.next() >> 11) * 0x1p-53 }

    /// Uniform in [lo, hi).
    mutating func u(_ lo: Double, _ hi: Double) -> Double { lo + (hi - lo) * unit() }

    /// Uniform integer in lo...hi.
    mutating func int(_ lo: Int, _ hi: Int) -> Int {
        lo + Int(generator.next() % UInt64(max(1, hi - lo + 1)))
    }

    /// True with probability `p`.
    mutating func chance(_ p: Double) -> Bool { unit() < p }

    /// -1 or +1 with equal probability.
    mutating func sign() -> Double { chance(0.5) ? 1 : -1 }

    /// Approximately standard normal (sum of four uniforms, rescaled).
    mutating func normal() -> Double {
        (unit() + unit() + unit() + unit() - 2) * 1.7320508
    }
}

/// Mixes several integers into a well-spread 64-bit seed (SplitMix64 finaliser).
func mixSeed(_ values: UInt64...) -> UInt64 {
    var h: UInt64 = 0x243F_6A88_85A3_08D3
    for v in values {
        h ^= v &+ 0x9E37_79B9_7F4A_7C15 &+ (h << 6) &+ (h >> 2)
        h = (h ^ (h >> 30)) &* 0xBF58_476D_1CE4_E5B9
        h = (h ^ (h >> 27)) &* 0x94D0_49BB_1331_11EB
        h ^= h >> 31
    }
    return h
}

/// Smooth, tileable value noise on a square lattice, sampled in lattice units.
struct NoiseField: Sendable {
    let n: Int
    let values: [Float]

    init(_ rng: inout Rand, n: Int = 32) {
        self.n = n
        values = (0..<(n * n)).map { _ in Float(rng.unit()) }
    }

    /// Value noise in 0...1 at lattice coordinates (x, y); wraps every `n` cells.
    func at(_ x: Double, _ y: Double) -> Float {
        values.withUnsafeBufferPointer { Self.sample($0, n, x, y) }
    }

    /// Smoothly interpolated value of an n x n lattice at (x, y), wrapping.
    static func sample(_ values: UnsafeBufferPointer<Float>, _ n: Int, _ x: Double, _ y: Double) -> Float {
        let fx = floor(x), fy = floor(y)
        let tx = Float(x - fx), ty = Float(y - fy)
        let sx = tx * tx * (3 - 2 * tx), sy = ty * ty * (3 - 2 * ty)
        let ix = ((Int(fx) % n) + n) % n, iy = ((Int(fy) % n) + n) % n
        let jx = ix + 1 == n ? 0 : ix + 1, jy = iy + 1 == n ? 0 : iy + 1
        let a = values[iy * n + ix], b = values[iy * n + jx]
        let c = values[jy * n + ix], d = values[jy * n + jx]
        let top = a + (b - a) * sx, bottom = c + (d - c) * sx
        return top + (bottom - top) * sy
    }

    /// Two octaves of noise, 0...1.
    func fractal(_ x: Double, _ y: Double) -> Float {
        (at(x, y) * 2 + at(x * 2.03 + 5.1, y * 2.03 + 1.7)) / 3
    }
}

/// A procedural texture, mixed into a paint's base colour.
enum Texture: Sendable {
    case none
    /// Value noise with the given cell size in pixels.
    case noise(cell: Double)
    /// Parallel bands: direction angle (radians) and period (pixels).
    case stripes(angle: Double, period: Double)
    /// A rotated grid of round dots: period and dot radius (pixels).
    case dots(angle: Double, period: Double, radius: Double)
    /// A rotated checkerboard with the given square size (pixels).
    case checker(angle: Double, period: Double)
}

/// How a filled region is coloured: a base colour, a texture mixing in a second colour,
/// and a linear lighting gradient across the region.
struct Paint: Sendable {
    var base: RGB
    var alt: RGB
    var texture: Texture = .none
    /// How strongly the texture shows, 0...1.
    var amount: Float = 0
    /// Offset of the texture pattern (pixels), so parts do not share a phase.
    var offset = Vec2(0, 0)
    var noise: NoiseField?
    /// Unit vector towards the light; brightness rises along it.
    var light = Vec2(0, -1)
    var centre = Vec2(0, 0)
    var radius: Double = 1
    /// Brightness varies by ±shade across the region.
    var shade: Float = 0

    /// A flat colour.
    init(_ c: RGB) {
        base = c
        alt = c
    }

    /// A base colour with a second colour for textures.
    init(base: RGB, alt: RGB) {
        self.base = base
        self.alt = alt
    }

    /// The colour at pixel centre (x, y).
    func color(_ x: Double, _ y: Double) -> RGB {
        var c = base
        if amount > 0 {
            let t = pattern(x + offset.x, y + offset.y)
            c = c.mix(alt, t * amount)
        }
        if shade != 0 {
            let d = ((x - centre.x) * light.x + (y - centre.y) * light.y) / radius
            c = c * (1 + shade * Float(max(-1, min(1, d))))
        }
        return c
    }

    /// The texture's value in 0...1 at (x, y), with soft (anti-aliased) edges.
    private func pattern(_ x: Double, _ y: Double) -> Float {
        switch texture {
        case .none:
            return 0
        case .noise(let cell):
            guard let noise else { return 0 }
            return noise.fractal(x / cell, y / cell)
        case .stripes(let angle, let period):
            let u = x * cos(angle) + y * sin(angle)
            return Float(smoothBand(u / period))
        case .dots(let angle, let period, let radius):
            let p = Vec2(x, y).rotated(angle)
            let du = p.x / period - (p.x / period).rounded(), dv = p.y / period - (p.y / period).rounded()
            let d = (du * du + dv * dv).squareRoot() * period
            return Float(max(0, min(1, radius - d + 0.5)))
        case .checker(let angle, let period):
            let p = Vec2(x, y).rotated(angle)
            let a = smoothBand(p.x / period), b = smoothBand(p.y / period)
            return Float(a + b - 2 * a * b)
        }
    }

    /// 1 on the first half of each unit period, 0 on the second, with ramps ~1/8 wide.
    private func smoothBand(_ u: Double) -> Double {
        let f = u - floor(u)
        let ramp = 0.08
        if f < ramp { return 0.5 + 0.5 * f / ramp }
        if f < 0.5 - ramp { return 1 }
        if f < 0.5 + ramp { return 0.5 - 0.5 * (f - 0.5) / ramp }
        if f < 1 - ramp { return 0 }
        return 0.5 * (f - 1 + ramp) / ramp
    }
}

/// Coverage (0...1) of a shape over a box of pixels.
struct Mask {
    var x0: Int
    var y0: Int
    var w: Int
    var h: Int
    var a: [Float]
}

/// An RGB canvas of Float channels, row-major and interleaved.
struct Canvas {
    let width: Int
    let height: Int
    var data: [Float]

    init(width: Int, height: Int, color: RGB) {
        self.width = width
        self.height = height
        data = [Float](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            data[3 * i] = color.r
            data[3 * i + 1] = color.g
            data[3 * i + 2] = color.b
        }
    }

    /// Blends `paint` over the canvas where the mask covers it.
    mutating func draw(_ m: Mask, _ paint: Paint, opacity: Float = 1) {
        let w = width
        data.withUnsafeMutableBufferPointer { d in
            m.a.withUnsafeBufferPointer { a in
                for j in 0..<m.h {
                    let y = m.y0 + j
                    for i in 0..<m.w {
                        let cov = a[j * m.w + i] * opacity
                        if cov <= 0.002 { continue }
                        let x = m.x0 + i
                        let c = paint.color(Double(x) + 0.5, Double(y) + 0.5)
                        let k = (y * w + x) * 3
                        d[k] += (c.r - d[k]) * cov
                        d[k + 1] += (c.g - d[k + 1]) * cov
                        d[k + 2] += (c.b - d[k + 2]) * cov
                    }
                }
            }
        }
    }

    /// Fills the canvas with a linear gradient from `a` to `b` along direction `dir`.
    mutating func fillGradient(_ a: RGB, _ b: RGB, direction dir: Vec2) {
        let cx = Double(width) / 2, cy = Double(height) / 2
        let reach = (abs(dir.x) * cx + abs(dir.y) * cy) * 2
        for y in 0..<height {
            for x in 0..<width {
                let t = ((Double(x) + 0.5 - cx) * dir.x + (Double(y) + 0.5 - cy) * dir.y) / reach + 0.5
                let c = a.mix(b, Float(max(0, min(1, t))))
                let k = (y * width + x) * 3
                data[k] = c.r
                data[k + 1] = c.g
                data[k + 2] = c.b
            }
        }
    }

    /// Multiplies every pixel by 1 + amount * (2 * noise - 1), noise sampled with the
    /// given cell size (pixels) and offset. The noise is evaluated every other pixel
    /// and interpolated in between (it is smooth at that scale).
    mutating func modulate(_ noise: NoiseField, cell: Double, amount: Float, offset: Vec2 = Vec2(0, 0)) {
        let w = width, h = height, gw = w / 2 + 2, gh = h / 2 + 2
        var grid = [Float](repeating: 0, count: gw * gh)
        noise.values.withUnsafeBufferPointer { v in
            grid.withUnsafeMutableBufferPointer { g in
                for j in 0..<gh {
                    let ny = (Double(2 * j) + offset.y) / cell
                    for i in 0..<gw {
                        let nx = (Double(2 * i) + offset.x) / cell
                        let n = (NoiseField.sample(v, noise.n, nx, ny) * 2
                            + NoiseField.sample(v, noise.n, nx * 2.03 + 5.1, ny * 2.03 + 1.7)) / 3
                        g[j * gw + i] = 1 + amount * (2 * n - 1)
                    }
                }
            }
        }
        grid.withUnsafeBufferPointer { g in
            data.withUnsafeMutableBufferPointer { d in
                for y in 0..<h {
                    let j = y >> 1, j2 = j + (y & 1)
                    for x in 0..<w {
                        let i = x >> 1, i2 = i + (x & 1)
                        let f = (g[j * gw + i] + g[j * gw + i2] + g[j2 * gw + i] + g[j2 * gw + i2]) * 0.25
                        let k = (y * w + x) * 3
                        d[k] *= f
                        d[k + 1] *= f
                        d[k + 2] *= f
                    }
                }
            }
        }
    }

    /// Adds per-pixel noise: a luminance part with standard deviation `sigma` and an
    /// independent per-channel part of `chroma` times that (triangular distributions
    /// from 16-bit slices of the random stream, for speed).
    mutating func addGrain(_ rng: inout Rand, sigma: Double, chroma: Double) {
        let scale = Float(sigma / 0.4082 / 65536), cscale = Float(sigma * chroma / 0.4082 / 65536)
        let n = width * height
        data.withUnsafeMutableBufferPointer { d in
            for i in 0..<n {
                let a = rng.generator.next(), b = rng.generator.next()
                let l = (Float(a & 0xFFFF) + Float((a >> 16) & 0xFFFF) - 65535) * scale
                let c0 = (Float((a >> 32) & 0xFFFF) + Float(a >> 48) - 65535) * cscale
                let c1 = (Float(b & 0xFFFF) + Float((b >> 16) & 0xFFFF) - 65535) * cscale
                let c2 = (Float((b >> 32) & 0xFFFF) + Float(b >> 48) - 65535) * cscale
                d[3 * i] += l + c0
                d[3 * i + 1] += l + c1
                d[3 * i + 2] += l + c2
            }
        }
    }

    /// Maps every channel value v to (v - pivot) * contrast + pivot, then scales each
    /// channel by `cast` and adds `lift`.
    mutating func grade(contrast: Float, pivot: Float, cast: RGB, lift: Float) {
        let mul = [cast.r, cast.g, cast.b]
        for i in 0..<(width * height) {
            for c in 0..<3 {
                let v = (data[3 * i + c] - pivot) * contrast + pivot
                data[3 * i + c] = v * mul[c] + lift
            }
        }
    }

    /// The mean colour of the canvas (estimated from every 4th pixel of every 4th row).
    func mean() -> RGB {
        var s = (0.0, 0.0, 0.0)
        var n = 0
        data.withUnsafeBufferPointer { d in
            for y in stride(from: 0, to: height, by: 4) {
                for x in stride(from: 0, to: width, by: 4) {
                    let k = (y * width + x) * 3
                    s.0 += Double(d[k])
                    s.1 += Double(d[k + 1])
                    s.2 += Double(d[k + 2])
                    n += 1
                }
            }
        }
        let m = Double(max(1, n))
        return RGB(Float(s.0 / m), Float(s.1 / m), Float(s.2 / m))
    }

    /// The canvas as 8-bit RGB, clamped and rounded.
    func image() -> RGBImage {
        var pixels = [UInt8](repeating: 0, count: data.count)
        data.withUnsafeBufferPointer { d in
            pixels.withUnsafeMutableBufferPointer { p in
                for i in 0..<d.count {
                    let v = d[i] * 255 + 0.5
                    p[i] = v > 0 ? (v < 255 ? UInt8(v) : 255) : 0  // NaN becomes 0
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }
}

enum Raster {
    /// One polygon edge, stored from its upper to its lower end.
    private struct Edge {
        var yTop: Double
        var yBottom: Double
        var xAtTop: Double
        var slope: Double
        var winding: Int
    }

    /// Coverage of the union of `contours` under the non-zero winding rule (so a
    /// contour oriented against the first one cuts a hole), clipped to the canvas.
    /// Each pixel row is sampled on `subsamples` scanlines with exact horizontal
    /// coverage; nil when nothing is visible.
    static func fill(_ contours: [[Vec2]], width: Int, height: Int, subsamples: Int = 4) -> Mask? {
        var edges: [Edge] = []
        var lo = Vec2(.infinity, .infinity), hi = Vec2(-.infinity, -.infinity)
        for c in contours where c.count >= 3 {
            for (k, p) in c.enumerated() {
                let q = c[(k + 1) % c.count]
                lo = Vec2(min(lo.x, p.x), min(lo.y, p.y))
                hi = Vec2(max(hi.x, p.x), max(hi.y, p.y))
                if p.y == q.y { continue }
                let (a, b, wind) = p.y < q.y ? (p, q, 1) : (q, p, -1)
                edges.append(Edge(yTop: a.y, yBottom: b.y, xAtTop: a.x, slope: (b.x - a.x) / (b.y - a.y), winding: wind))
            }
        }
        guard !edges.isEmpty, lo.x.isFinite, hi.x.isFinite, lo.y.isFinite, hi.y.isFinite else { return nil }
        let bx0 = max(0, Int(floor(lo.x))), bx1 = min(width - 1, Int(floor(hi.x)))
        let by0 = max(0, Int(floor(lo.y))), by1 = min(height - 1, Int(floor(hi.y)))
        guard bx0 <= bx1, by0 <= by1 else { return nil }
        var mask = Mask(x0: bx0, y0: by0, w: bx1 - bx0 + 1, h: by1 - by0 + 1,
                        a: [Float](repeating: 0, count: (bx1 - bx0 + 1) * (by1 - by0 + 1)))
        var crossings: [(x: Double, w: Int)] = []
        let weight = 1 / Double(subsamples)
        for row in by0...by1 {
            for s in 0..<subsamples {
                let sy = Double(row) + (Double(s) + 0.5) * weight
                crossings.removeAll(keepingCapacity: true)
                edges.withUnsafeBufferPointer { es in
                    for e in es where sy >= e.yTop && sy < e.yBottom {
                        crossings.append((e.xAtTop + (sy - e.yTop) * e.slope, e.winding))
                    }
                }
                guard crossings.count >= 2 else { continue }
                crossings.sort { $0.x < $1.x }
                var winding = 0
                for k in 0..<(crossings.count - 1) {
                    winding += crossings[k].w
                    if winding != 0 {
                        addSpan(&mask, row: row - by0, from: crossings[k].x, to: crossings[k + 1].x, weight: Float(weight))
                    }
                }
            }
        }
        return mask
    }

    /// Adds `weight` times the horizontal overlap of [from, to) with each pixel of a row.
    private static func addSpan(_ m: inout Mask, row: Int, from: Double, to: Double, weight: Float) {
        let left = max(from, Double(m.x0)), right = min(to, Double(m.x0 + m.w))
        guard right > left else { return }
        let il = Int(floor(left)), ir = Int(floor(right))
        let base = row * m.w - m.x0
        if il == ir {
            m.a[base + il] += Float(right - left) * weight
            return
        }
        m.a[base + il] += Float(Double(il + 1) - left) * weight
        if il + 1 < ir {
            for x in (il + 1)..<ir { m.a[base + x] += weight }
        }
        if ir < m.x0 + m.w { m.a[base + ir] += Float(right - Double(ir)) * weight }
    }

    /// Coverage of a polyline stroked with round caps and joins; `widths[k]` is the
    /// width (pixels) at `points[k]`, interpolated along each segment. Widths under one
    /// pixel are drawn one pixel wide with proportionally lower coverage.
    static func stroke(_ points: [Vec2], widths: [Double], width: Int, height: Int) -> Mask? {
        guard points.count >= 1, widths.count == points.count else { return nil }
        let maxW = widths.max() ?? 1
        let pad = max(maxW, 1) / 2 + 1
        var lo = Vec2(.infinity, .infinity), hi = Vec2(-.infinity, -.infinity)
        for p in points {
            lo = Vec2(min(lo.x, p.x), min(lo.y, p.y))
            hi = Vec2(max(hi.x, p.x), max(hi.y, p.y))
        }
        guard lo.x.isFinite, lo.y.isFinite, hi.x.isFinite, hi.y.isFinite else { return nil }
        let bx0 = max(0, Int(floor(lo.x - pad))), bx1 = min(width - 1, Int(floor(hi.x + pad)))
        let by0 = max(0, Int(floor(lo.y - pad))), by1 = min(height - 1, Int(floor(hi.y + pad)))
        guard bx0 <= bx1, by0 <= by1 else { return nil }
        var mask = Mask(x0: bx0, y0: by0, w: bx1 - bx0 + 1, h: by1 - by0 + 1,
                        a: [Float](repeating: 0, count: (bx1 - bx0 + 1) * (by1 - by0 + 1)))
        for k in 0..<points.count {
            let a = points[k], b = points[min(k + 1, points.count - 1)]
            stampSegment(&mask, a, b, widths[k], widths[min(k + 1, points.count - 1)])
        }
        return mask
    }

    /// Max-combines the coverage of one round-capped segment of varying width.
    private static func stampSegment(_ m: inout Mask, _ a: Vec2, _ b: Vec2, _ wa: Double, _ wb: Double) {
        let pad = max(max(wa, wb), 1) / 2 + 1
        let x0 = max(m.x0, Int(floor(min(a.x, b.x) - pad))), x1 = min(m.x0 + m.w - 1, Int(floor(max(a.x, b.x) + pad)))
        let y0 = max(m.y0, Int(floor(min(a.y, b.y) - pad))), y1 = min(m.y0 + m.h - 1, Int(floor(max(a.y, b.y) + pad)))
        guard x0 <= x1, y0 <= y1 else { return }
        let d = b - a
        let len2 = d.x * d.x + d.y * d.y
        m.a.withUnsafeMutableBufferPointer { buf in
            for y in y0...y1 {
                let py = Double(y) + 0.5
                for x in x0...x1 {
                    let px = Double(x) + 0.5
                    var t = len2 > 0 ? ((px - a.x) * d.x + (py - a.y) * d.y) / len2 : 0
                    t = max(0, min(1, t))
                    let ex = px - (a.x + d.x * t), ey = py - (a.y + d.y * t)
                    let dist = (ex * ex + ey * ey).squareRoot()
                    let w = wa + (wb - wa) * t
                    let half = max(w, 1) / 2
                    let cov = Float(max(0, min(1, half - dist + 0.5)) * min(1, w))
                    let k = (y - m.y0) * m.w + (x - m.x0)
                    if cov > buf[k] { buf[k] = cov }
                }
            }
        }
    }
}
