// The object categories of the synthetic data set. Each is a parametric composition of
// parts (polygons, ellipses, arcs, polylines) in normalised coordinates (x right, y
// down, the object roughly within -1...1), with per-instance variation of proportions
// drawn from the figure's random stream. Photos fill the parts; sketches trace them.

import Foundation

/// One part of a figure: a filled region (first contour outside, further contours
/// holes) or an open or closed line of a given width.
struct Part {
    var contours: [[Vec2]]
    var filled: Bool
    var closed: Bool
    /// Line width in normalised units (unfilled parts only).
    var width: Double
    /// Which colour of the instance's palette: 0...2 free colours, 3 dark, 4 light.
    var role: Int
    /// Brightness multiplier of the role colour.
    var tint: Double = 1
    var inSketch = true
    var inPhoto = true
}

/// A figure under construction, with the random stream that varies its proportions.
struct Figure {
    var rng: Rand
    var parts: [Part] = []

    init(rng: Rand) { self.rng = rng }

    mutating func u(_ lo: Double, _ hi: Double) -> Double { rng.u(lo, hi) }
    mutating func int(_ lo: Int, _ hi: Int) -> Int { rng.int(lo, hi) }
    mutating func chance(_ p: Double) -> Bool { rng.chance(p) }

    /// Adds a filled region.
    /// Adds a filled region; holes are re-oriented against the outline so that they cut.
    mutating func fill(_ pts: [Vec2], role: Int, tint: Double = 1, holes: [[Vec2]] = [], sketch: Bool = true) {
        let outer = Geo.signedArea(pts) >= 0
        let cut = holes.map { (Geo.signedArea($0) >= 0) == outer ? Array($0.reversed()) : $0 }
        parts.append(Part(contours: [pts] + cut, filled: true, closed: true, width: 0, role: role,
                          tint: tint, inSketch: sketch))
    }

    /// Adds a line (a closed loop when `closed`).
    mutating func line(_ pts: [Vec2], width: Double, role: Int, closed: Bool = false, sketch: Bool = true) {
        parts.append(Part(contours: [pts], filled: false, closed: closed, width: width, role: role, inSketch: sketch))
    }

    /// The parts moved and scaled so that their bounding box is centred on the origin
    /// with its larger half-extent 1.
    func normalisedParts() -> [Part] {
        var lo = Vec2(.infinity, .infinity), hi = Vec2(-.infinity, -.infinity)
        for p in parts {
            for c in p.contours {
                for q in c {
                    lo = Vec2(min(lo.x, q.x), min(lo.y, q.y))
                    hi = Vec2(max(hi.x, q.x), max(hi.y, q.y))
                }
            }
        }
        guard lo.x.isFinite, hi.x.isFinite else { return parts }
        let centre = lo.lerp(hi, 0.5)
        let half = max(hi.x - lo.x, hi.y - lo.y) / 2
        let s = half > 0 ? 1 / half : 1
        return parts.map { p in
            var q = p
            q.contours = p.contours.map { c in c.map { ($0 - centre) * s } }
            q.width = p.width * s
            return q
        }
    }
}

// MARK: - Geometry helpers

/// Shape constructors in normalised coordinates.
enum Geo {
    static func p(_ x: Double, _ y: Double) -> Vec2 { Vec2(x, y) }

    /// Twice the signed area of a polygon (positive when counter-clockwise with y up).
    static func signedArea(_ pts: [Vec2]) -> Double {
        var s = 0.0
        for (k, a) in pts.enumerated() {
            let b = pts[(k + 1) % pts.count]
            s += a.x * b.y - b.x * a.y
        }
        return s
    }

    /// An ellipse centred on (cx, cy), rotated by `rot` radians.
    static func ellipse(_ cx: Double, _ cy: Double, _ rx: Double, _ ry: Double, rot: Double = 0, n: Int = 40) -> [Vec2] {
        (0..<n).map { k in
            let t = Double(k) / Double(n) * 2 * Double.pi
            return Vec2(cx, cy) + Vec2(rx * cos(t), ry * sin(t)).rotated(rot)
        }
    }

    static func circle(_ cx: Double, _ cy: Double, _ r: Double, n: Int = 40) -> [Vec2] {
        ellipse(cx, cy, r, r, n: n)
    }

    /// Points on an elliptical arc from angle `a0` to `a1` (radians; y down, so π/2 is
    /// straight down), inclusive.
    static func arc(_ cx: Double, _ cy: Double, _ rx: Double, _ ry: Double, _ a0: Double, _ a1: Double, n: Int = 24) -> [Vec2] {
        (0...n).map { k in
            let t = a0 + (a1 - a0) * Double(k) / Double(n)
            return Vec2(cx + rx * cos(t), cy + ry * sin(t))
        }
    }

    static func rect(_ x0: Double, _ y0: Double, _ x1: Double, _ y1: Double) -> [Vec2] {
        [Vec2(x0, y0), Vec2(x1, y0), Vec2(x1, y1), Vec2(x0, y1)]
    }

    /// A rectangle with corners rounded by radius `r`.
    static func roundRect(_ x0: Double, _ y0: Double, _ x1: Double, _ y1: Double, _ r: Double) -> [Vec2] {
        let rr = min(r, (x1 - x0) / 2, (y1 - y0) / 2)
        let h = Double.pi / 2
        return arc(x1 - rr, y0 + rr, rr, rr, -h, 0, n: 6) + arc(x1 - rr, y1 - rr, rr, rr, 0, h, n: 6)
            + arc(x0 + rr, y1 - rr, rr, rr, h, 2 * h, n: 6) + arc(x0 + rr, y0 + rr, rr, rr, 2 * h, 3 * h, n: 6)
    }

    /// A star (or, with inner == outer, a regular polygon) with `n` points, the first
    /// pointing up.
    static func star(_ cx: Double, _ cy: Double, outer: Double, inner: Double, n: Int, rot: Double = 0) -> [Vec2] {
        (0..<(2 * n)).map { k in
            let t = -Double.pi / 2 + rot + Double(k) * Double.pi / Double(n)
            let r = k % 2 == 0 ? outer : inner
            return Vec2(cx + r * cos(t), cy + r * sin(t))
        }
    }

    /// A shape symmetric about x = cx from y0 (top) to y1 (bottom), whose half-width at
    /// fraction t of the height is `halfWidth(t)`.
    static func profile(_ cx: Double, _ y0: Double, _ y1: Double, n: Int = 24, _ halfWidth: (Double) -> Double) -> [Vec2] {
        let right = (0...n).map { k -> Vec2 in
            let t = Double(k) / Double(n)
            return Vec2(cx + halfWidth(t), y0 + (y1 - y0) * t)
        }
        let left = right.reversed().map { Vec2(2 * cx - $0.x, $0.y) }
        return right + left
    }

    /// A quadratic Bézier curve from a through control c to b.
    static func curve(_ a: Vec2, _ c: Vec2, _ b: Vec2, n: Int = 16) -> [Vec2] {
        (0...n).map { k in
            let t = Double(k) / Double(n)
            return a.lerp(c, t).lerp(c.lerp(b, t), t)
        }
    }

    /// A leaf (two arcs meeting in points) from a to b with maximum half-width w.
    static func leaf(_ a: Vec2, _ b: Vec2, width w: Double, n: Int = 10) -> [Vec2] {
        let d = b - a, len = d.length
        guard len > 0 else { return [a] }
        let normal = Vec2(-d.y / len, d.x / len)
        let side1 = (0...n).map { k -> Vec2 in
            let t = Double(k) / Double(n)
            return a.lerp(b, t) + normal * (w * sin(Double.pi * t))
        }
        let side2 = (1..<n).reversed().map { k -> Vec2 in
            let t = Double(k) / Double(n)
            return a.lerp(b, t) - normal * (w * sin(Double.pi * t))
        }
        return side1 + side2
    }

    /// A thick straight bar from a to b (a rectangle of the given width).
    static func bar(_ a: Vec2, _ b: Vec2, width w: Double) -> [Vec2] {
        let d = b - a, len = max(d.length, 1e-9)
        let n = Vec2(-d.y / len, d.x / len) * (w / 2)
        return [a + n, b + n, b - n, a - n]
    }

    /// Points on a sine wave from a to b with `waves` periods and amplitude `amp`.
    static func wave(_ a: Vec2, _ b: Vec2, amp: Double, waves: Double, n: Int = 32) -> [Vec2] {
        let d = b - a, len = max(d.length, 1e-9)
        let normal = Vec2(-d.y / len, d.x / len)
        return (0...n).map { k in
            let t = Double(k) / Double(n)
            return a.lerp(b, t) + normal * (amp * sin(2 * Double.pi * waves * t))
        }
    }
}

/// One category: its folder name and its builder.
struct SynthCategory {
    let name: String
    let build: (inout Figure) -> Void
}

enum Categories {
    /// Every category, in a stable order (`--classes N` takes the first N).
    static let all: [SynthCategory] = basic + more

    private static let basic: [SynthCategory] = [
        SynthCategory(name: "house", build: house), SynthCategory(name: "tree", build: tree),
        SynthCategory(name: "car", build: car), SynthCategory(name: "fish", build: fish),
        SynthCategory(name: "star", build: star), SynthCategory(name: "cup", build: cup),
        SynthCategory(name: "umbrella", build: umbrella), SynthCategory(name: "key", build: key),
        SynthCategory(name: "flower", build: flower), SynthCategory(name: "sun", build: sun),
        SynthCategory(name: "moon", build: moon), SynthCategory(name: "bicycle", build: bicycle),
        SynthCategory(name: "airplane", build: airplane), SynthCategory(name: "sailboat", build: sailboat),
        SynthCategory(name: "lamp", build: lamp), SynthCategory(name: "chair", build: chair),
        SynthCategory(name: "table", build: table), SynthCategory(name: "cat", build: cat),
        SynthCategory(name: "bottle", build: bottle), SynthCategory(name: "guitar", build: guitar),
    ]

    private static let more: [SynthCategory] = [
        SynthCategory(name: "mushroom", build: mushroom), SynthCategory(name: "apple", build: apple),
        SynthCategory(name: "ladder", build: ladder), SynthCategory(name: "clock", build: clock),
        SynthCategory(name: "glasses", build: glasses), SynthCategory(name: "hammer", build: hammer),
        SynthCategory(name: "bell", build: bell), SynthCategory(name: "arrow", build: arrow),
        SynthCategory(name: "lightning", build: lightning), SynthCategory(name: "diamond", build: diamond),
        SynthCategory(name: "cloud", build: cloud), SynthCategory(name: "heart", build: heart),
        SynthCategory(name: "candle", build: candle), SynthCategory(name: "kite", build: kite),
        SynthCategory(name: "rocket", build: rocket), SynthCategory(name: "teapot", build: teapot),
        SynthCategory(name: "envelope", build: envelope), SynthCategory(name: "balloon", build: balloon),
        SynthCategory(name: "pencil", build: pencil), SynthCategory(name: "crown", build: crown),
    ]
}

// MARK: - Builders (1)

extension Categories {
    typealias G = Geo

    static func house(_ f: inout Figure) {
        let w = f.u(0.8, 1.3), h = f.u(0.55, 1.0), roof = f.u(0.35, 0.85), over = f.u(0, 0.15)
        let peak = f.u(-0.1, 0.1) * w
        f.fill(G.rect(-w / 2, 0, w / 2, h), role: 0)
        let roofY = { (x: Double) in -roof * (1 - abs(x - peak) / (w / 2 + over)) }
        if f.chance(0.6) {
            let cx = f.rng.sign() * w * f.u(0.18, 0.3), cw = w * f.u(0.07, 0.11)
            let top = roofY(cx) - roof * f.u(0.25, 0.45)
            f.fill([G.p(cx - cw, roofY(cx - cw) + 0.05), G.p(cx - cw, top), G.p(cx + cw, top),
                    G.p(cx + cw, roofY(cx + cw) + 0.05)], role: 2)
        }
        f.fill([G.p(-w / 2 - over, 0.02), G.p(peak, -roof), G.p(w / 2 + over, 0.02)], role: 1)
        let dw = w * f.u(0.14, 0.22), dh = h * f.u(0.45, 0.7), dx = f.u(-0.25, 0.25) * w
        f.fill(G.rect(dx - dw / 2, h - dh, dx + dw / 2, h), role: 2)
        let ws = w * f.u(0.12, 0.18), wy = h * f.u(0.2, 0.35)
        for side in [-1.0, 1.0] {
            let wx = dx + side * (dw / 2 + ws / 2 + w * f.u(0.06, 0.12))
            guard abs(wx) + ws / 2 < w / 2 - 0.02 else { continue }
            f.fill(G.rect(wx - ws / 2, wy, wx + ws / 2, wy + ws), role: 4)
            f.line([G.p(wx, wy), G.p(wx, wy + ws)], width: 0.025, role: 3)
            f.line([G.p(wx - ws / 2, wy + ws / 2), G.p(wx + ws / 2, wy + ws / 2)], width: 0.025, role: 3)
        }
    }

    static func tree(_ f: inout Figure) {
        let tw = f.u(0.07, 0.15), th = f.u(0.35, 0.75), cr = f.u(0.5, 0.75)
        f.fill([G.p(-tw * 1.3, 1), G.p(tw * 1.3, 1), G.p(tw, 1 - th - 0.2), G.p(-tw, 1 - th - 0.2)], role: 1)
        let cy = 1 - th - cr * f.u(0.8, 0.95), rx = cr * f.u(0.85, 1.2)
        let bumps = Double(f.int(5, 9)), amp = f.u(0.04, 0.1), phase = f.u(0, 6.3)
        let crown = (0..<72).map { k -> Vec2 in
            let t = Double(k) / 72 * 2 * Double.pi
            let r = 1 + amp * abs(sin(bumps * t / 2 + phase))
            return G.p(rx * r * cos(t), cy + cr * r * sin(t))
        }
        f.fill(crown, role: 0)
        if f.chance(0.5) {
            for _ in 0..<f.int(3, 6) {
                let a = f.u(0, 6.3), d = f.u(0.2, 0.7)
                f.fill(G.circle(rx * d * cos(a), cy + cr * d * sin(a), 0.05, n: 12), role: 2)
            }
        }
    }

    static func car(_ f: inout Figure) {
        let bh = f.u(0.28, 0.42), ch = f.u(0.28, 0.42), wr = f.u(0.17, 0.26)
        let c0 = f.u(-0.6, -0.4), c1 = f.u(0.25, 0.55), slant = f.u(0.1, 0.25)
        f.fill([G.p(c0, -bh + 0.02), G.p(c0 + slant, -bh - ch), G.p(c1 - slant * 0.8, -bh - ch), G.p(c1 + 0.05, -bh + 0.02)], role: 0)
        let mid = (c0 + c1) / 2
        f.fill([G.p(c0 + slant + 0.06, -bh - ch + 0.06), G.p(mid - 0.03, -bh - ch + 0.06), G.p(mid - 0.03, -bh - 0.03),
                G.p(c0 + 0.12, -bh - 0.03)], role: 4)
        f.fill([G.p(mid + 0.03, -bh - ch + 0.06), G.p(c1 - slant * 0.8 - 0.04, -bh - ch + 0.06), G.p(c1 - 0.05, -bh - 0.03),
                G.p(mid + 0.03, -bh - 0.03)], role: 4)
        f.fill(G.roundRect(-1, -bh, 1, 0.18, f.u(0.05, 0.14)), role: 0)
        f.fill(G.ellipse(0.93, -bh * 0.55, 0.06, 0.05, n: 12), role: 2)
        for x in [-f.u(0.5, 0.65), f.u(0.5, 0.65)] {
            f.fill(G.circle(x, 0.18, wr), role: 3)
            f.fill(G.circle(x, 0.18, wr * 0.5, n: 20), role: 4)
        }
    }

    static func fish(_ f: inout Figure) {
        let ry = f.u(0.28, 0.5), tail = f.u(0.25, 0.45), fin = f.u(0.12, 0.3)
        f.fill([G.p(0.55, 0), G.p(1.0, -tail), G.p(0.9, 0), G.p(1.0, tail)], role: 1)
        f.fill([G.p(-0.25, -ry * 0.85), G.p(0.05 + f.u(-0.1, 0.1), -ry - fin), G.p(0.3, -ry * 0.7)], role: 1)
        f.fill(G.ellipse(0, 0, 0.72, ry), role: 0)
        f.fill(G.circle(-0.45, -ry * 0.2, 0.09, n: 16), role: 4)
        f.fill(G.circle(-0.46, -ry * 0.2, 0.045, n: 12), role: 3)
        f.line(G.arc(-0.5, 0, 0.25, ry * 0.7, -0.9, 0.9, n: 10), width: 0.03, role: 3)
        if f.chance(0.5) {
            for k in 0..<f.int(2, 4) {
                let x = 0.1 * Double(k) - 0.05
                f.line(G.arc(x, 0, 0.15, ry * 0.5, -0.8, 0.8, n: 8), width: 0.025, role: 2)
            }
        }
    }

    static func star(_ f: inout Figure) {
        let inner = f.u(0.36, 0.55)
        f.fill(G.star(0, 0, outer: 1, inner: inner, n: 5, rot: f.u(-0.08, 0.08)), role: 0)
        if f.chance(0.35) {
            f.fill(G.star(0, 0.05, outer: 0.45, inner: inner * 0.45, n: 5), role: 1, sketch: false)
        }
    }

    static func cup(_ f: inout Figure) {
        let tw = f.u(0.45, 0.65), bw = tw * f.u(0.65, 0.95), h = f.u(0.8, 1.3), rimH = 0.1
        let hr = f.u(0.22, 0.35)
        f.line(G.arc(bw * 0.5 + tw * 0.5 - 0.02, -h / 2 + h * 0.45, hr, h * 0.3, -1.5, 1.5, n: 18),
               width: f.u(0.06, 0.1), role: 0)
        if f.chance(0.5) { f.fill(G.ellipse(0, h / 2, tw * 1.5, 0.1), role: 2) }
        f.fill([G.p(-tw, -h / 2), G.p(tw, -h / 2)] + G.arc(0, h / 2 - 0.06, bw, 0.06, 0, Double.pi, n: 10), role: 0)
        f.fill(G.ellipse(0, -h / 2, tw, rimH), role: 0, tint: 0.6)
        if f.chance(0.4) {
            f.line(G.wave(G.p(-0.1, -h / 2 - 0.1), G.p(-0.1, -h / 2 - 0.5), amp: 0.05, waves: 1.5), width: 0.03, role: 4)
            f.line(G.wave(G.p(0.12, -h / 2 - 0.12), G.p(0.12, -h / 2 - 0.45), amp: 0.05, waves: 1.5), width: 0.03, role: 4)
        }
    }

    static func umbrella(_ f: inout Figure) {
        let ry = f.u(0.45, 0.8), n = f.int(4, 6), shaft = f.u(0.9, 1.3), scallop = f.u(0.06, 0.14)
        var canopy = G.arc(0, 0, 1, ry, Double.pi, 2 * Double.pi, n: 30)
        let seg = 2.0 / Double(n)
        for k in (0..<n).reversed() {
            let cx = -1 + seg * (Double(k) + 0.5)
            canopy += G.arc(cx, 0, seg / 2, scallop, 0, -Double.pi, n: 8).dropFirst()
        }
        f.line([G.p(0, -ry - 0.1), G.p(0, shaft)], width: 0.05, role: 3)
        f.fill(canopy, role: 0)
        for k in 1..<n {
            let x = -1 + seg * Double(k)
            f.line(G.curve(G.p(0, -ry), G.p(x * 0.6, -ry * 0.7), G.p(x, -scallop)), width: 0.02, role: 1)
        }
        let hr = f.u(0.1, 0.16)
        f.line(G.arc(-hr, shaft, hr, hr, 0, Double.pi, n: 10), width: 0.06, role: 3)
    }

    static func key(_ f: inout Figure) {
        let r = f.u(0.25, 0.38), sw = f.u(0.06, 0.1), end = f.u(0.8, 1.0)
        f.fill(G.rect(-0.6 + r * 0.7, -sw, end, sw), role: 0)
        let teeth = f.int(2, 3)
        for k in 0..<teeth {
            let x = end - 0.08 - Double(k) * f.u(0.14, 0.2), d = f.u(0.12, 0.25)
            f.fill(G.rect(x - 0.05, sw - 0.01, x + 0.05, sw + d), role: 0)
        }
        let head = f.chance(0.5) ? G.circle(-0.6, 0, r) : G.roundRect(-0.6 - r, -r, -0.6 + r, r, r * 0.4)
        f.fill(head, role: 0, holes: [G.circle(-0.6 - r * 0.15, 0, r * f.u(0.3, 0.45), n: 20)])
    }

    static func flower(_ f: inout Figure) {
        let cr = f.u(0.1, 0.17), n = f.int(5, 8), pl = f.u(0.25, 0.4), pw = f.u(0.1, 0.18)
        let cy = -0.45, bend = f.u(-0.25, 0.25)
        f.line(G.curve(G.p(0, cy + cr), G.p(bend, 0.3), G.p(bend * 0.3, 1)), width: 0.05, role: 1)
        let ly = f.u(0.3, 0.6), side = f.rng.sign()
        f.fill(G.leaf(G.p(bend * 0.4, ly), G.p(bend * 0.4 + side * f.u(0.3, 0.45), ly - f.u(0.1, 0.3)), width: f.u(0.06, 0.12)), role: 1)
        let rot = f.u(0, 1.3)
        for k in 0..<n {
            let a = rot + Double(k) * 2 * Double.pi / Double(n)
            let c = G.p(0, cy) + Vec2(cos(a), sin(a)) * (cr + pl * 0.45)
            f.fill(G.ellipse(c.x, c.y, pl / 2, pw, rot: a, n: 20), role: 0, tint: k % 2 == 0 ? 1 : 0.88)
        }
        f.fill(G.circle(0, cy, cr, n: 24), role: 2)
    }

    static func sun(_ f: inout Figure) {
        let r = f.u(0.42, 0.58), n = f.int(8, 12), gap = f.u(0.05, 0.12), len = f.u(0.2, 1 - r - 0.1)
        let tri = f.chance(0.5), rot = f.u(0, 1)
        for k in 0..<n {
            let a = rot + Double(k) * 2 * Double.pi / Double(n)
            let dir = Vec2(cos(a), sin(a)), side = Vec2(-sin(a), cos(a))
            let p0 = dir * (r + gap), p1 = dir * (r + gap + len)
            if tri {
                f.fill([p0 + side * 0.07, p1, p0 - side * 0.07], role: 0)
            } else {
                f.line([p0, p1], width: 0.06, role: 0)
            }
        }
        f.fill(G.circle(0, 0, r, n: 48), role: 0)
        if f.chance(0.25) {
            f.fill(G.circle(-r * 0.35, -r * 0.2, r * 0.08, n: 10), role: 3)
            f.fill(G.circle(r * 0.35, -r * 0.2, r * 0.08, n: 10), role: 3)
            f.line(G.arc(0, 0.05, r * 0.45, r * 0.35, 0.4, 2.7, n: 12), width: 0.04, role: 3)
        }
    }

    static func moon(_ f: inout Figure) {
        let d = f.u(0.35, 0.65), r2 = f.u(0.82, 1.0)
        let xi = (d * d + 1 - r2 * r2) / (2 * d), yi = (max(0, 1 - xi * xi)).squareRoot()
        let alpha = atan2(yi, xi), beta = atan2(yi, xi - d)
        let outer = G.arc(0, 0, 1, 1, alpha, 2 * Double.pi - alpha, n: 40)
        let inner = G.arc(d, 0, r2, r2, 2 * Double.pi - beta, beta, n: 32)
        f.fill(outer + inner.dropFirst().dropLast(), role: 0)
        if f.chance(0.3) {
            f.fill(G.circle(-0.55, -0.1, 0.08, n: 12), role: 0, tint: 0.75, sketch: false)
            f.fill(G.circle(-0.45, 0.35, 0.06, n: 12), role: 0, tint: 0.75, sketch: false)
        }
    }

    static func bicycle(_ f: inout Figure) {
        let r = f.u(0.3, 0.4), wx = f.u(0.55, 0.68), tyre = f.u(0.05, 0.08)
        let rear = G.p(-wx, 0.25), front = G.p(wx, 0.25)
        let bb = G.p(f.u(-0.15, 0.05), 0.3), seat = G.p(-wx * f.u(0.3, 0.45), -0.3 - f.u(0, 0.15))
        let head = G.p(wx * f.u(0.6, 0.75), -0.3 - f.u(0, 0.1))
        for c in [rear, front] {
            f.fill(G.circle(c.x, c.y, r), role: 3, holes: [G.circle(c.x, c.y, r - tyre)])
            if f.chance(0.5) {
                for k in 0..<4 {
                    let a = Double(k) * Double.pi / 4
                    f.line([c + Vec2(cos(a), sin(a)) * (r - tyre), c - Vec2(cos(a), sin(a)) * (r - tyre)], width: 0.012, role: 4)
                }
            }
        }
        let fw = f.u(0.04, 0.06)
        f.line([rear, bb, seat, rear], width: fw, role: 0)
        f.line([seat, head, bb], width: fw, role: 0)
        f.line([head, front], width: fw, role: 0)
        f.fill(G.ellipse(seat.x - 0.02, seat.y - 0.07, 0.14, 0.045, n: 16), role: 3)
        f.line([head, head + G.p(-0.05, -0.15), head + G.p(0.12, -0.18)], width: 0.04, role: 3)
        f.fill(G.circle(bb.x, bb.y, 0.06, n: 14), role: 3)
    }
}

// MARK: - Builders (2)

extension Categories {
    static func airplane(_ f: inout Figure) {
        let fw = f.u(0.09, 0.14), span = f.u(0.8, 1.0), sweep = f.u(0.1, 0.35), chord = f.u(0.18, 0.3)
        let wy = f.u(-0.2, 0.0), ts = f.u(0.25, 0.4)
        for s in [-1.0, 1.0] {
            f.fill([G.p(s * fw * 0.8, wy), G.p(s * span, wy + sweep), G.p(s * span, wy + sweep + chord * 0.5),
                    G.p(s * fw * 0.8, wy + chord)], role: 1)
            f.fill([G.p(s * fw * 0.6, 0.72), G.p(s * ts, 0.82 + sweep * 0.3), G.p(s * ts, 0.9 + sweep * 0.3),
                    G.p(s * fw * 0.6, 0.88)], role: 1)
            if f.chance(0.6) {
                f.fill(G.ellipse(s * span * 0.45, wy + sweep * 0.45 + 0.03, 0.05, 0.11, n: 14), role: 2)
            }
        }
        let body = G.profile(0, -1, 1, n: 30) { t in
            t < 0.15 ? fw * (t / 0.15).squareRoot() : fw * (1 - 0.6 * max(0, t - 0.7) / 0.3)
        }
        f.fill(body, role: 0)
        f.fill(G.ellipse(0, -0.82, fw * 0.45, 0.07, n: 14), role: 4)
    }

    static func sailboat(_ f: inout Figure) {
        let hw = f.u(0.7, 1.0), hd = f.u(0.2, 0.35), mast = f.u(0.9, 1.2), boom = f.u(0.5, 0.8)
        let mx = f.u(-0.15, 0.1)
        f.line([G.p(mx, 0.45), G.p(mx, 0.45 - mast)], width: 0.035, role: 3)
        f.fill([G.p(mx + 0.04, 0.5 - mast), G.p(mx + 0.04, 0.35), G.p(mx + boom, 0.35)], role: 4)
        if f.chance(0.75) {
            f.fill([G.p(mx - 0.04, 0.6 - mast), G.p(mx - 0.04, 0.35), G.p(mx - boom * f.u(0.5, 0.8), 0.35)], role: 1)
        }
        if f.chance(0.5) {
            f.fill([G.p(mx, 0.45 - mast), G.p(mx + 0.2, 0.5 - mast), G.p(mx, 0.56 - mast)], role: 2)
        }
        let sheer = f.u(-0.06, 0.06)
        f.fill([G.p(-hw, 0.4 + sheer), G.p(hw, 0.4 - sheer), G.p(hw * f.u(0.6, 0.8), 0.4 + hd), G.p(-hw * f.u(0.6, 0.8), 0.4 + hd)], role: 0)
        if f.chance(0.5) {
            f.line(G.wave(G.p(-1.05, 0.45 + hd), G.p(1.05, 0.45 + hd), amp: 0.03, waves: f.u(3, 5)), width: 0.03, role: 2)
        }
    }

    static func lamp(_ f: inout Figure) {
        let tw = f.u(0.2, 0.35), bw = f.u(0.5, 0.7), sh = f.u(0.45, 0.7), stem = f.u(0.9, 1.3)
        let top = -1.0, bottom = top + sh
        f.fill(G.rect(-0.035, bottom, 0.035, bottom + stem), role: 3)
        let baseW = f.u(0.3, 0.5), baseH = f.u(0.08, 0.16)
        f.fill(G.profile(0, bottom + stem, bottom + stem + baseH, n: 8) { t in baseW * (0.6 + 0.4 * t) }, role: 1)
        f.fill([G.p(-tw, top), G.p(tw, top), G.p(bw, bottom), G.p(-bw, bottom)], role: 0)
        if f.chance(0.4) {
            f.line([G.p(bw * 0.6, bottom), G.p(bw * 0.6, bottom + 0.3)], width: 0.015, role: 3)
            f.fill(G.circle(bw * 0.6, bottom + 0.32, 0.03, n: 10), role: 3)
        }
    }

    static func chair(_ f: inout Figure) {
        let w = f.u(0.4, 0.55), back = f.u(0.7, 1.0), leg = f.u(0.6, 0.9), post = f.u(0.05, 0.08)
        let seatY = 0.0, seatH = f.u(0.08, 0.14)
        for s in [-1.0, 1.0] {
            f.fill(G.rect(s * w - post, seatY - back, s * w + post, seatY), role: 0)
            f.fill(G.rect(s * (w + 0.05) - post, seatY + seatH, s * (w + 0.05) + post, seatY + seatH + leg), role: 0)
        }
        f.fill(G.rect(-w, seatY - back, w, seatY - back + f.u(0.12, 0.22)), role: 0)
        let slats = f.int(1, 3)
        for k in 1...slats {
            let x = -w + 2 * w * Double(k) / Double(slats + 1)
            f.fill(G.rect(x - post * 0.6, seatY - back + 0.15, x + post * 0.6, seatY), role: 1)
        }
        f.fill(G.rect(-w - 0.12, seatY, w + 0.12, seatY + seatH), role: 1)
        if f.chance(0.5) {
            f.fill(G.rect(-w - 0.05, seatY + seatH + leg * 0.6, w + 0.05, seatY + seatH + leg * 0.6 + 0.04), role: 0)
        }
    }

    static func table(_ f: inout Figure) {
        let top = f.u(0.08, 0.16), leg = f.u(0.7, 1.1), lw = f.u(0.05, 0.1), inset = f.u(0.05, 0.2)
        let y0 = -0.3
        for s in [-1.0, 1.0] {
            let x = s * (1 - inset)
            f.fill(G.rect(x - lw, y0 + top, x + lw, y0 + top + leg), role: 1)
        }
        if f.chance(0.5) {
            for s in [-1.0, 1.0] {
                let x = s * (1 - inset - 0.25)
                f.fill(G.rect(x - lw * 0.8, y0 + top, x + lw * 0.8, y0 + top + leg * 0.85), role: 1, tint: 0.75)
            }
        }
        if f.chance(0.6) { f.fill(G.rect(-1 + inset, y0 + top, 1 - inset, y0 + top + f.u(0.08, 0.15)), role: 1, tint: 0.85) }
        f.fill(G.rect(-1, y0, 1, y0 + top), role: 0)
        if f.chance(0.4) {
            let vx = f.u(-0.5, 0.5)
            f.fill(G.profile(vx, y0 - f.u(0.3, 0.5), y0, n: 12) { t in 0.06 + 0.1 * sin(Double.pi * t) }, role: 2)
        }
    }

    static func cat(_ f: inout Figure) {
        let hr = f.u(0.28, 0.36), bw = f.u(0.4, 0.58), bh = f.u(0.5, 0.65), ear = f.u(0.18, 0.3)
        let hy = -0.35, by = hy + hr + bh * 0.7
        let tailSide = f.rng.sign()
        f.line(G.curve(G.p(tailSide * bw * 0.8, by + bh * 0.7), G.p(tailSide * (bw + 0.45), by + bh * 0.6),
                       G.p(tailSide * (bw + 0.3), by - bh * f.u(0.2, 0.6))), width: 0.09, role: 0)
        f.fill(G.ellipse(0, by, bw, bh), role: 0)
        for s in [-1.0, 1.0] {
            f.fill([G.p(s * hr * 0.25, hy - hr * 0.8), G.p(s * hr * f.u(0.7, 1.0), hy - hr - ear), G.p(s * hr * 0.95, hy - hr * 0.2)], role: 0)
        }
        f.fill(G.circle(0, hy, hr), role: 0)
        for s in [-1.0, 1.0] {
            f.fill(G.ellipse(s * hr * 0.4, hy - hr * 0.1, hr * 0.12, hr * 0.18, n: 14), role: 3)
            for k in 0..<3 {
                let dy = Double(k - 1) * 0.05
                f.line([G.p(s * hr * 0.3, hy + hr * 0.3 + dy * 0.3), G.p(s * (hr + 0.2), hy + hr * 0.2 + dy * 1.6)], width: 0.015, role: 3)
            }
        }
        f.fill([G.p(-0.05, hy + hr * 0.18), G.p(0.05, hy + hr * 0.18), G.p(0, hy + hr * 0.3)], role: 3)
        if f.chance(0.4) {
            for s in [-1.0, 1.0] { f.fill(G.ellipse(s * bw * 0.4, by + bh * 0.9, bw * 0.25, 0.1, n: 16), role: 0, tint: 0.85) }
        }
    }

    static func bottle(_ f: inout Figure) {
        let bw = f.u(0.28, 0.42), nw = f.u(0.09, 0.14), sh = f.u(-0.2, 0.1), neck = f.u(0.25, 0.45)
        let capH = f.u(0.08, 0.15), top = -1.0 + capH
        let shoulderTop = top + neck
        let outline = [G.p(-bw, 1), G.p(bw, 1), G.p(bw, sh)]
            + G.curve(G.p(bw, sh), G.p(bw, shoulderTop), G.p(nw, shoulderTop), n: 10).dropFirst()
            + [G.p(nw, top), G.p(-nw, top)]
            + G.curve(G.p(-nw, shoulderTop), G.p(-bw, shoulderTop), G.p(-bw, sh), n: 10)
        f.fill(outline, role: 0)
        f.fill(G.rect(-nw * 1.15, -1, nw * 1.15, top + 0.02), role: 2)
        if f.chance(0.7) {
            let ly = f.u(0.05, 0.35)
            f.fill(G.rect(-bw, ly, bw, ly + f.u(0.25, 0.45)), role: 4)
        }
        if f.chance(0.5) {
            f.fill(G.roundRect(-bw * 0.7, sh + 0.1, -bw * 0.5, 0.85, 0.05), role: 4, tint: 1.1, sketch: false)
        }
    }

    static func guitar(_ f: inout Figure) {
        let r1 = f.u(0.36, 0.46), r2 = r1 * f.u(0.65, 0.85), waist = f.u(0.55, 0.8)
        let y1 = 1 - r1, y2 = y1 - r1 - r2 * 0.7
        let top = y2 - r2
        let body = G.profile(0, top, 1, n: 40) { t in
            let y = top + (1 - top) * t
            let a = max(0, r2 * r2 - (y - y2) * (y - y2)).squareRoot()
            let b = max(0, r1 * r1 - (y - y1) * (y - y1)).squareRoot()
            let m = max(a, b)
            return y > y2 && y < y1 ? max(m, r2 * waist) : m
        }
        f.fill(G.rect(-0.06, -1, 0.06, top + 0.1), role: 1)
        f.fill(G.rect(-0.09, -1.2, 0.09, -0.95), role: 1, tint: 0.8)
        f.fill(body, role: 0)
        f.fill(G.circle(0, y2 + r2 * 0.75, r2 * f.u(0.3, 0.45), n: 24), role: 3)
        f.fill(G.rect(-r1 * 0.4, y1 + 0.1, r1 * 0.4, y1 + 0.18), role: 3)
        for k in 0..<f.int(3, 4) {
            let x = -0.03 + 0.02 * Double(k)
            f.line([G.p(x, -1.05), G.p(x, y1 + 0.14)], width: 0.008, role: 4)
        }
    }

    static func mushroom(_ f: inout Figure) {
        let rx = f.u(0.75, 1.0), ry = f.u(0.4, 0.75), sw = f.u(0.15, 0.26), sh = f.u(0.55, 0.85)
        let capY = 1 - sh
        f.fill(G.profile(0, capY - 0.05, 1, n: 10) { t in sw * (0.9 + 0.25 * t) }, role: 4)
        let cap = G.arc(0, capY, rx, ry, Double.pi, 2 * Double.pi, n: 36) + G.arc(0, capY, rx, 0.08, 0, Double.pi, n: 12).dropFirst().dropLast()
        f.fill(cap, role: 0)
        for _ in 0..<f.int(2, 6) {
            let a = f.u(Double.pi * 1.15, Double.pi * 1.85), d = f.u(0.3, 0.75)
            f.fill(G.ellipse(rx * d * cos(a), capY + ry * d * sin(a), f.u(0.06, 0.12), f.u(0.05, 0.09), n: 14), role: 4)
        }
        if f.chance(0.4) {
            f.line([G.p(-0.5, 1), G.p(0.5, 1)] , width: 0.03, role: 1)
        }
    }

    static func apple(_ f: inout Figure) {
        let dip = f.u(0.12, 0.25), w = f.u(0.9, 1.1), bottomDip = f.u(0.03, 0.1)
        let body = (0..<60).map { k -> Vec2 in
            let t = Double(k) / 60 * 2 * Double.pi
            let fromTop = atan2(sin(t - 1.5 * Double.pi), cos(t - 1.5 * Double.pi))
            let fromBottom = atan2(sin(t - 0.5 * Double.pi), cos(t - 0.5 * Double.pi))
            let r = 1 - dip * exp(-fromTop * fromTop / 0.12) - bottomDip * exp(-fromBottom * fromBottom / 0.1)
            return G.p(w * r * cos(t), r * sin(t) * 0.92)
        }
        f.line(G.curve(G.p(0, -0.75), G.p(0.02, -0.95), G.p(f.u(0.05, 0.15), -1.12)), width: 0.06, role: 3)
        f.fill(body, role: 0)
        if f.chance(0.7) {
            let s = f.rng.sign()
            f.fill(G.leaf(G.p(0.04 * s, -0.92), G.p(s * f.u(0.3, 0.45), -1.05 - f.u(0, 0.15)), width: f.u(0.08, 0.13)), role: 1)
        }
        if f.chance(0.5) { f.fill(G.ellipse(-0.45, -0.3, 0.12, 0.2, rot: 0.5, n: 16), role: 4, sketch: false) }
    }
}

// MARK: - Builders (3)

extension Categories {
    static func ladder(_ f: inout Figure) {
        let bw = f.u(0.28, 0.45), tw = bw * f.u(0.75, 1.0), rw = f.u(0.05, 0.08), n = f.int(4, 7)
        for s in [-1.0, 1.0] {
            f.fill([G.p(s * tw - rw, -1), G.p(s * tw + rw, -1), G.p(s * bw + rw, 1), G.p(s * bw - rw, 1)], role: 0)
        }
        for k in 0..<n {
            let y = -0.85 + 1.7 * (Double(k) + 0.5) / Double(n)
            let hw = tw + (bw - tw) * (y + 1) / 2
            f.fill(G.rect(-hw, y - rw * 0.6, hw, y + rw * 0.6), role: 1)
        }
    }

    static func clock(_ f: inout Figure) {
        let rim = f.u(0.05, 0.13), alarm = f.chance(0.35)
        if alarm {
            for s in [-1.0, 1.0] {
                f.fill(G.arc(s * 0.55, -0.78, 0.28, 0.22, Double.pi, 2 * Double.pi, n: 14).map { $0.rotatedAbout(G.p(s * 0.55, -0.78), s * 0.6) },
                       role: 0)
                f.line([G.p(s * 0.55, 0.8), G.p(s * 0.75, 1.05)], width: 0.06, role: 3)
            }
        }
        f.fill(G.circle(0, 0, 1, n: 56), role: 0, holes: [G.circle(0, 0, 1 - rim, n: 48)])
        f.fill(G.circle(0, 0, 1 - rim, n: 48), role: 4)
        let ticks = f.chance(0.5) ? 12 : 4
        for k in 0..<ticks {
            let a = Double(k) * 2 * Double.pi / Double(ticks), long = k % 3 == 0
            let d = Vec2(cos(a), sin(a))
            f.line([d * (0.85 - rim), d * ((long ? 0.68 : 0.76) - rim)], width: long ? 0.05 : 0.03, role: 3)
        }
        let h = f.u(0, 6.3), m = f.u(0, 6.3)
        f.line([G.p(0, 0), Vec2(cos(h), sin(h)) * 0.42], width: 0.07, role: 3)
        f.line([G.p(0, 0), Vec2(cos(m), sin(m)) * 0.68], width: 0.045, role: 3)
        f.fill(G.circle(0, 0, 0.06, n: 12), role: 3)
    }

    static func glasses(_ f: inout Figure) {
        let rx = f.u(0.28, 0.42), ry = rx * f.u(0.6, 0.95), gap = f.u(0.12, 0.25), frame = f.u(0.04, 0.08)
        let round = f.chance(0.5), cx = gap / 2 + rx
        for s in [-1.0, 1.0] {
            let outer = round ? G.ellipse(s * cx, 0, rx, ry) : G.roundRect(s * cx - rx, -ry, s * cx + rx, ry, ry * 0.5)
            let inner = round ? G.ellipse(s * cx, 0, rx - frame, ry - frame)
                : G.roundRect(s * cx - rx + frame, -ry + frame, s * cx + rx - frame, ry - frame, ry * 0.45)
            f.fill(inner, role: 4, sketch: false)
            f.fill(outer, role: 0, holes: [inner])
            f.line([G.p(s * (cx + rx), -ry * 0.4), G.p(s * (cx + rx + f.u(0.12, 0.25)), -ry * 0.55 - f.u(0, 0.15))], width: frame, role: 0)
        }
        f.line(G.arc(0, -ry * 0.2, gap / 2 + frame, ry * 0.3, Double.pi, 2 * Double.pi, n: 10), width: frame, role: 0)
    }

    static func hammer(_ f: inout Figure) {
        let hw = f.u(0.06, 0.1), hl = f.u(0.45, 0.6), hh = f.u(0.2, 0.32), claw = f.u(0.3, 0.5)
        f.fill(G.roundRect(-hw, -0.7, hw, 1, hw * 0.8), role: 1)
        let y0 = -1.0, y1 = y0 + hh
        let head = [G.p(-hl, y0), G.p(0.2, y0 + 0.03), G.p(0.2 + claw, y0 - 0.12), G.p(0.2 + claw * 0.7, (y0 + y1) / 2),
                    G.p(0.2 + claw, y1 + 0.1), G.p(0.2, y1 - 0.03), G.p(-hl, y1)]
        f.fill(head, role: 3, tint: 1.6)
        f.fill(G.rect(-hl - 0.1, y0 - 0.03, -hl + 0.05, y1 + 0.03), role: 3, tint: 1.4)
        if f.chance(0.5) { f.fill(G.rect(-hw * 1.3, 0.5, hw * 1.3, 1), role: 2) }
    }

    static func bell(_ f: inout Figure) {
        let top = f.u(0.2, 0.3), flare = f.u(0.75, 1.0), h = f.u(1.3, 1.6)
        let y0 = -h / 2 - 0.1, y1 = y0 + h
        f.line(G.arc(0, y0 - 0.1, 0.12, 0.12, -Double.pi * 1.1, Double.pi * 0.1, n: 12), width: 0.06, role: 3)
        f.fill(G.circle(0, y1 + 0.06, f.u(0.1, 0.16), n: 16), role: 3)
        let shape = G.profile(0, y0, y1, n: 30) { t in
            let dome = top + 0.25 * (1 - (1 - t) * (1 - t))
            return t < 0.15 ? dome * (0.6 + 0.4 * (t / 0.15).squareRoot()) : dome + (flare - top - 0.25) * pow(t, 3)
        }
        f.fill(shape, role: 0)
        f.fill(G.ellipse(0, y1, flare, 0.08), role: 0, tint: 0.7)
        if f.chance(0.4) { f.fill(G.rect(-top - 0.1, y0 + h * 0.35, top + 0.1, y0 + h * 0.42), role: 2) }
    }

    static func arrow(_ f: inout Figure) {
        let sw = f.u(0.05, 0.09), hl = f.u(0.3, 0.5), hw = f.u(0.2, 0.35), fl = f.u(0.2, 0.35)
        f.fill(G.rect(-1, -sw, 1 - hl * 0.8, sw), role: 1)
        f.fill([G.p(1 - hl, -hw), G.p(1, 0), G.p(1 - hl, hw), G.p(1 - hl * 0.8, 0)], role: 0)
        if f.chance(0.8) {
            for s in [-1.0, 1.0] {
                f.fill([G.p(-1 + fl, s * sw), G.p(-1 + fl * 0.35, s * (sw + 0.18)), G.p(-1.05, s * (sw + 0.18)), G.p(-1 + 0.03, s * sw)], role: 2)
            }
        }
    }

    static func lightning(_ f: inout Figure) {
        let j = { (f: inout Figure) in f.u(-0.08, 0.08) }
        let pts = [G.p(0.1 + j(&f), -1), G.p(-0.45 + j(&f), 0.15), G.p(-0.02 + j(&f), 0.1 + j(&f)), G.p(-0.3 + j(&f), 1),
                   G.p(0.5 + j(&f), -0.25), G.p(0.08 + j(&f), -0.2 + j(&f)), G.p(0.55 + j(&f), -1)]
        f.fill(pts, role: 0)
    }

    static func diamond(_ f: inout Figure) {
        let tw = f.u(0.35, 0.6), crown = f.u(0.25, 0.45), girdle = -0.55 + crown, tip = f.u(0.9, 1.1)
        let tl = G.p(-tw, -0.55), tr = G.p(tw, -0.55), gl = G.p(-1, girdle), gr = G.p(1, girdle)
        let gm = G.p(0, girdle), bot = G.p(0, girdle + tip)
        let tm = G.p(0, -0.55)
        let gml = G.p(-0.5, girdle), gmr = G.p(0.5, girdle)
        f.fill([tl, tm, gml], role: 0, tint: 1.15)
        f.fill([tm, tr, gmr], role: 0, tint: 1.05)
        f.fill([tl, gml, gl], role: 0, tint: 0.9)
        f.fill([tr, gr, gmr], role: 0, tint: 0.8)
        f.fill([tm, gmr, gml], role: 0, tint: 1.25)
        f.fill([gl, gml, bot], role: 0, tint: 0.7)
        f.fill([gml, gm, gmr, bot], role: 0, tint: 0.95)
        f.fill([gmr, gr, bot], role: 0, tint: 0.6)
    }

    static func cloud(_ f: inout Figure) {
        let n = f.int(3, 5), flat = f.u(0.2, 0.4)
        var circles: [(x: Double, y: Double, r: Double)] = []
        for i in 0..<n {
            let t = Double(i) / Double(n - 1), edge = abs(2 * t - 1)
            let r = f.u(0.32, 0.45) * (1.15 - 0.45 * edge) * (4 / Double(n + 1))
            let x = (2 * t - 1) * (1 - r)
            circles.append((x, flat - r * f.u(0.35, 0.7) - 0.15 * (1 - edge), r))
        }
        // The upper envelope of the circles, closed by a gently rounded base.
        var pts: [Vec2] = []
        for k in 0...60 {
            let x = 1 - 2 * Double(k) / 60
            var y = flat
            for c in circles where abs(x - c.x) < c.r {
                y = min(y, c.y - (c.r * c.r - (x - c.x) * (x - c.x)).squareRoot())
            }
            pts.append(G.p(x, y))
        }
        pts += G.arc(0, flat, 1, 0.08, Double.pi, 0, n: 12).dropFirst().dropLast()
        f.fill(pts, role: 4)
        if f.chance(0.3) {
            for k in 0..<f.int(2, 4) {
                let x = -0.5 + 0.35 * Double(k)
                f.line([G.p(x, flat + 0.25), G.p(x - 0.1, flat + 0.5)], width: 0.04, role: 2)
            }
        }
    }

    static func heart(_ f: inout Figure) {
        let sx = f.u(0.85, 1.15), sy = f.u(0.85, 1.1), lobe = f.u(4, 6)
        let pts = (0..<64).map { k -> Vec2 in
            let t = Double(k) / 64 * 2 * Double.pi
            let x = 16 * pow(sin(t), 3)
            let y = 13 * cos(t) - lobe * cos(2 * t) - 2 * cos(3 * t) - cos(4 * t)
            return G.p(x / 16 * sx, -y / 16 * sy)
        }
        f.fill(pts, role: 0)
        if f.chance(0.3) { f.fill(G.ellipse(-0.45, -0.35, 0.12, 0.2, rot: -0.6, n: 14), role: 4, sketch: false) }
    }

    static func candle(_ f: inout Figure) {
        let cw = f.u(0.16, 0.3), ch = f.u(0.8, 1.3), fh = f.u(0.35, 0.55), fw = f.u(0.09, 0.16)
        let topY = 1 - ch
        if f.chance(0.5) { f.fill(G.ellipse(0, 1, cw + f.u(0.2, 0.4), 0.1), role: 2) }
        f.fill(G.rect(-cw, topY, cw, 1), role: 0)
        f.fill(G.ellipse(0, topY, cw, 0.05, n: 20), role: 0, tint: 1.15)
        if f.chance(0.5) {
            let x = f.u(-cw * 0.6, cw * 0.6)
            f.fill(G.profile(x, topY, topY + f.u(0.15, 0.35), n: 8) { t in 0.04 * (1 - 0.3 * t) + 0.01 }, role: 0, tint: 1.1)
        }
        f.line([G.p(0, topY), G.p(0.01, topY - 0.1)], width: 0.025, role: 3)
        let flame = G.profile(0, topY - 0.1 - fh, topY - 0.08, n: 16) { t in fw * pow(sin(Double.pi * pow(t, 0.6)), 0.9) }
        f.fill(flame, role: 2, tint: 1.2)
        f.fill(G.profile(0, topY - 0.1 - fh * 0.5, topY - 0.1, n: 10) { t in fw * 0.45 * sin(Double.pi * pow(t, 0.6)) }, role: 4, sketch: false)
    }

    static func kite(_ f: inout Figure) {
        let kw = f.u(0.45, 0.7), cross = f.u(-0.55, -0.3), bottom = f.u(0.3, 0.5)
        let top = G.p(0, -1), l = G.p(-kw, cross), r = G.p(kw, cross), b = G.p(0, bottom), c = G.p(0, cross)
        let tailEnd = G.p(f.u(-0.6, 0.6), 1.2)
        let tail = G.wave(b, tailEnd, amp: 0.08, waves: f.u(1, 2), n: 24)
        f.line(tail, width: 0.02, role: 3)
        for k in 1...f.int(2, 4) {
            let p = tail[min(tail.count - 1, k * tail.count / 5)]
            f.fill([p + G.p(-0.12, -0.06), p + G.p(-0.12, 0.06), p, p + G.p(0.12, -0.06), p + G.p(0.12, 0.06), p], role: 2)
        }
        f.fill([top, r, c], role: 0)
        f.fill([r, b, c], role: 1)
        f.fill([b, l, c], role: 0)
        f.fill([l, top, c], role: 1)
        f.line([top, b], width: 0.025, role: 3)
        f.line([l, r], width: 0.025, role: 3)
    }
}

extension Vec2 {
    /// This point rotated by `angle` radians about `centre`.
    func rotatedAbout(_ centre: Vec2, _ angle: Double) -> Vec2 { centre + (self - centre).rotated(angle) }
}

// MARK: - Builders (4)

extension Categories {
    static func rocket(_ f: inout Figure) {
        let bw = f.u(0.18, 0.26), nose = f.u(0.3, 0.5), base = f.u(0.45, 0.6), fin = f.u(0.2, 0.35)
        if f.chance(0.6) {
            let fl = f.u(0.25, 0.45)
            f.fill(G.profile(0, base + 0.05, base + 0.05 + fl, n: 12) { t in bw * 0.8 * (1 - t) * (0.6 + 0.4 * sin(Double.pi * t)) + 0.01 }, role: 2)
        }
        f.fill([G.p(-bw * 0.7, base - 0.02), G.p(bw * 0.7, base - 0.02), G.p(bw * 0.85, base + 0.08), G.p(-bw * 0.85, base + 0.08)], role: 3)
        for s in [-1.0, 1.0] {
            f.fill([G.p(s * bw * 0.9, base - 0.4), G.p(s * (bw + fin), base + 0.05), G.p(s * (bw + fin * 0.9), base + 0.12),
                    G.p(s * bw * 0.9, base)], role: 1)
        }
        let t0 = nose / (base + 1)
        f.fill(G.profile(0, -1, base, n: 30) { t in
            t < t0 ? bw * (sin(Double.pi / 2 * t / t0)).squareRoot() : bw * (1 - 0.12 * (t - t0) / (1 - t0))
        }, role: 0)
        let wy = -1 + nose + f.u(0.12, 0.3), wr = bw * f.u(0.45, 0.65)
        f.fill(G.circle(0, wy, wr * 1.25, n: 20), role: 3, holes: [G.circle(0, wy, wr, n: 20)])
        f.fill(G.circle(0, wy, wr, n: 20), role: 4)
    }

    static func teapot(_ f: inout Figure) {
        let rx = f.u(0.5, 0.65), ry = f.u(0.38, 0.52), spout = f.u(0.35, 0.5), lid = rx * f.u(0.45, 0.65)
        let cy = 0.2
        f.line(G.arc(-rx, cy - ry * 0.05, f.u(0.22, 0.32), ry * 0.55, Double.pi * 0.5, Double.pi * 1.5, n: 16), width: 0.07, role: 0)
        f.fill([G.p(rx * 0.7, cy + ry * 0.35), G.p(rx * 0.85, cy - ry * 0.1)]
            + G.curve(G.p(rx + spout * 0.5, cy - ry * 0.3), G.p(rx + spout * 0.8, cy - ry * 0.6), G.p(rx + spout, cy - ry - 0.15), n: 8)
            + [G.p(rx + spout + 0.06, cy - ry - 0.05)]
            + G.curve(G.p(rx + spout * 0.8, cy - ry * 0.35), G.p(rx + spout * 0.5, cy), G.p(rx * 0.8, cy + ry * 0.5), n: 8), role: 0)
        f.fill(G.ellipse(0, cy, rx, ry), role: 0)
        f.fill(G.arc(0, cy - ry * 0.9, lid, ry * 0.35, Double.pi, 2 * Double.pi, n: 16), role: 1)
        f.fill(G.circle(0, cy - ry * 0.9 - ry * 0.38, 0.07, n: 12), role: 1)
        f.fill(G.rect(-rx * 0.55, cy + ry * 0.92, rx * 0.55, cy + ry + 0.06), role: 1)
        if f.chance(0.4) { f.line(G.arc(0, cy, rx * 0.98, ry * 0.3, 0.2, Double.pi - 0.2, n: 14), width: 0.04, role: 2) }
    }

    static func envelope(_ f: inout Figure) {
        let h = f.u(0.55, 0.75), flap = f.u(0.0, 0.35), open = f.chance(0.3)
        f.fill(G.rect(-1, -h, 1, h), role: 4, tint: f.u(0.85, 1.0))
        if open {
            f.fill([G.p(-1, -h), G.p(0, -h - f.u(0.35, 0.6)), G.p(1, -h)], role: 4, tint: 0.8)
        } else {
            f.fill([G.p(-1, -h), G.p(1, -h), G.p(0, flap)], role: 4, tint: 0.75)
        }
        f.line([G.p(-1, h), G.p(-0.15, -0.05 + flap * 0.3)], width: 0.025, role: 3)
        f.line([G.p(1, h), G.p(0.15, -0.05 + flap * 0.3)], width: 0.025, role: 3)
        if f.chance(0.4) { f.fill(G.rect(0.55, -h + 0.1, 0.85, -h + 0.45), role: 0) }
    }

    static func balloon(_ f: inout Figure) {
        let rx = f.u(0.45, 0.6), ry = rx * f.u(1.1, 1.35), cy = -1 + ry
        let body = (0..<48).map { k -> Vec2 in
            let t = Double(k) / 48 * 2 * Double.pi
            let squeeze = sin(t) > 0 ? 1 - 0.25 * pow(sin(t), 4) : 1
            return G.p(rx * cos(t) * squeeze, cy + ry * sin(t))
        }
        let knot = cy + ry
        let string = G.wave(G.p(0, knot + 0.07), G.p(f.u(-0.2, 0.2), 1.1), amp: f.u(0.03, 0.08), waves: f.u(1.5, 3), n: 24)
        f.line(string, width: 0.015, role: 3)
        f.fill([G.p(0, knot - 0.02), G.p(0.06, knot + 0.08), G.p(-0.06, knot + 0.08)], role: 0)
        f.fill(body, role: 0)
        if f.chance(0.7) { f.fill(G.ellipse(-rx * 0.4, cy - ry * 0.35, rx * 0.12, ry * 0.22, rot: 0.4, n: 14), role: 4, sketch: false) }
    }

    static func pencil(_ f: inout Figure) {
        let hw = f.u(0.13, 0.22), tip = f.u(0.25, 0.4), ferrule = f.u(0.1, 0.16), eraser = f.u(0.1, 0.2)
        let bodyEnd = 1 - tip, back = -1 + eraser + ferrule
        f.fill(G.rect(back, -hw, bodyEnd, hw), role: 0)
        f.line([G.p(back, -hw / 3), G.p(bodyEnd, -hw / 3)], width: 0.015, role: 0, sketch: false)
        f.line([G.p(back, hw / 3), G.p(bodyEnd, hw / 3)], width: 0.015, role: 0, sketch: f.chance(0.5))
        f.fill([G.p(bodyEnd, -hw), G.p(1, 0), G.p(bodyEnd, hw)], role: 4, tint: 0.85)
        f.fill([G.p(1 - tip * 0.3, -hw * 0.3), G.p(1, 0), G.p(1 - tip * 0.3, hw * 0.3)], role: 3)
        f.fill(G.rect(-1 + eraser, -hw * 1.05, back, hw * 1.05), role: 4, tint: 0.7)
        f.line([G.p(-1 + eraser + ferrule * 0.5, -hw), G.p(-1 + eraser + ferrule * 0.5, hw)], width: 0.015, role: 3)
        f.fill(G.roundRect(-1, -hw, -1 + eraser + 0.02, hw, hw * 0.5), role: 1)
    }

    static func crown(_ f: inout Figure) {
        let n = f.int(3, 5), h = f.u(0.5, 0.9), dip = f.u(0.25, 0.5), band = f.u(0.18, 0.3), w = f.u(0.8, 1.0)
        var outline: [Vec2] = [G.p(-w, 0.4)]
        for k in 0...(2 * n) {
            let x = -w + 2 * w * Double(k) / Double(2 * n)
            outline.append(G.p(x, k % 2 == 0 ? 0.4 - band - h : 0.4 - band - h + dip + h * 0.2))
        }
        outline.append(G.p(w, 0.4))
        f.fill(outline, role: 0)
        f.fill(G.rect(-w, 0.4 - band, w, 0.4 + band * 0.2), role: 1)
        for k in 0...n {
            let x = -w + 2 * w * Double(k) / Double(n)
            f.fill(G.circle(x, 0.4 - band - h - 0.06, 0.07, n: 12), role: 2)
        }
        for k in 0..<f.int(1, 3) {
            let x = -w * 0.5 + w * Double(k) * 0.5
            f.fill(G.ellipse(x, 0.4 - band * 0.4, 0.08, 0.06, n: 12), role: 2)
        }
    }
}
