import Foundation

/// Self-contained SVG charts (no scripts, no external fonts or styles).
public enum SVGPlot {
    static let width = 640.0, height = 420.0
    static let margin = (left: 70.0, right: 170.0, top: 40.0, bottom: 55.0)
    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

    /// A line chart: one polyline per series, axes with ticks and labels, a legend.
    /// `logY` puts the y axis on a log10 scale (non-positive values are left out).
    /// Non-finite points are left out; an empty chart still has its axes.
    public static func lines(title: String, xLabel: String, yLabel: String,
                             series: [(name: String, points: [(Double, Double)])], logY: Bool = false) -> String {
        let cleaned = series.map { s in
            (name: s.name, points: s.points.filter { $0.0.isFinite && $0.1.isFinite && (!logY || $0.1 > 0) })
        }
        let xs = cleaned.flatMap { $0.points.map(\.0) }
        let ys = cleaned.flatMap { $0.points.map { logY ? log10($0.1) : $0.1 } }
        let xRange = paddedRange(xs, pad: false), yRange = paddedRange(ys, pad: true)
        let frame = Frame(x: xRange, y: yRange)
        var svg = header(title: title)
        svg += axes(frame: frame, xLabel: xLabel, yLabel: yLabel, logY: logY)
        for (i, s) in cleaned.enumerated() {
            let color = palette[i % palette.count]
            let pts = s.points.map { p in
                String(format: "%.2f,%.2f", frame.px(p.0), frame.py(logY ? log10(p.1) : p.1))
            }
            if pts.count > 1 {
                svg += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(pts.joined(separator: " "))\"/>\n"
            }
            if pts.count <= 30 {
                for p in pts {
                    let xy = p.split(separator: ",")
                    svg += "<circle cx=\"\(xy[0])\" cy=\"\(xy[1])\" r=\"2.5\" fill=\"\(color)\"/>\n"
                }
            }
        }
        svg += legend(cleaned.map(\.name))
        return svg + "</svg>\n"
    }

    /// Maps data coordinates to the plot area.
    struct Frame {
        let x: (lo: Double, hi: Double)
        let y: (lo: Double, hi: Double)
        var left: Double { margin.left }
        var right: Double { width - margin.right }
        var top: Double { margin.top }
        var bottom: Double { height - margin.bottom }
        func px(_ v: Double) -> Double { left + (v - x.lo) / (x.hi - x.lo) * (right - left) }
        func py(_ v: Double) -> Double { bottom - (v - y.lo) / (y.hi - y.lo) * (bottom - top) }
    }

    /// The data range, widened when empty or flat; `pad` adds 5% on each side.
    static func paddedRange(_ values: [Double], pad: Bool) -> (lo: Double, hi: Double) {
        guard var lo = values.min(), var hi = values.max() else { return (0, 1) }
        if hi - lo < 1e-12 {
            let d = max(abs(lo) * 0.1, 0.5)
            lo -= d
            hi += d
        } else if pad {
            let d = (hi - lo) * 0.05
            lo -= d
            hi += d
        }
        return (lo, hi)
    }

    /// About `count` round tick values (1, 2 or 5 times a power of ten apart) in [lo, hi].
    static func ticks(_ lo: Double, _ hi: Double, count: Int = 6) -> [Double] {
        let raw = (hi - lo) / Double(max(count, 1))
        let magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? 10 * magnitude
        var out: [Double] = []
        var v = ceil(lo / step) * step
        while v <= hi + step * 1e-9 {
            out.append(abs(v) < step * 1e-9 ? 0 : v)
            v += step
        }
        return out
    }

    /// Ticks for a log10 axis (values are log10 of the data): 1, 2 and 5 times powers of
    /// ten, or only the powers of ten when that makes more than eight.
    static func logTicks(_ lo: Double, _ hi: Double) -> [Double] {
        let first = Int(floor(lo)), last = Int(ceil(hi))
        func candidates(_ mantissas: [Double]) -> [Double] {
            (first...max(first, last)).flatMap { e in mantissas.map { log10($0) + Double(e) } }
                .filter { $0 >= lo - 1e-9 && $0 <= hi + 1e-9 }
        }
        let dense = candidates([1, 2, 5])
        return dense.count > 8 ? candidates([1]) : dense
    }

    static func label(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e6 { return String(Int(v)) }
        if abs(v) >= 1e4 || abs(v) < 1e-3 { return String(format: "%.1e", v) }
        return String(format: "%.3g", v)
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    static func header(title: String) -> String {
        """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" \
        viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(Int(width / 2))" y="22" text-anchor="middle" font-size="15">\(escape(title))</text>

        """
    }

    static func axes(frame f: Frame, xLabel: String, yLabel: String, logY: Bool) -> String {
        var s = "<rect x=\"\(f.left)\" y=\"\(f.top)\" width=\"\(f.right - f.left)\" height=\"\(f.bottom - f.top)\" fill=\"none\" stroke=\"#333\"/>\n"
        for t in ticks(f.x.lo, f.x.hi) {
            let x = String(format: "%.2f", f.px(t))
            s += "<line x1=\"\(x)\" y1=\"\(f.bottom)\" x2=\"\(x)\" y2=\"\(f.bottom + 5)\" stroke=\"#333\"/>\n"
            s += "<text x=\"\(x)\" y=\"\(f.bottom + 18)\" text-anchor=\"middle\">\(label(t))</text>\n"
        }
        for t in logY ? logTicks(f.y.lo, f.y.hi) : ticks(f.y.lo, f.y.hi) {
            let y = String(format: "%.2f", f.py(t))
            s += "<line x1=\"\(f.left - 5)\" y1=\"\(y)\" x2=\"\(f.right)\" y2=\"\(y)\" stroke=\"#ddd\"/>\n"
            let text = logY ? label(pow(10, t)) : label(t)
            s += "<text x=\"\(f.left - 8)\" y=\"\(y)\" text-anchor=\"end\" dominant-baseline=\"middle\">\(text)</text>\n"
        }
        let midY = (f.top + f.bottom) / 2
        s += "<text x=\"\((f.left + f.right) / 2)\" y=\"\(height - 12)\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
        let yText = escape(yLabel) + (logY ? " (log scale)" : "")
        s += "<text x=\"18\" y=\"\(midY)\" text-anchor=\"middle\" transform=\"rotate(-90 18 \(midY))\">\(yText)</text>\n"
        return s
    }

    static func legend(_ names: [String]) -> String {
        var s = ""
        let x = width - margin.right + 15
        for (i, name) in names.enumerated() {
            let y = margin.top + 10 + Double(i) * 20
            let color = palette[i % palette.count]
            s += "<line x1=\"\(x)\" y1=\"\(y)\" x2=\"\(x + 20)\" y2=\"\(y)\" stroke=\"\(color)\" stroke-width=\"3\"/>\n"
            s += "<text x=\"\(x + 26)\" y=\"\(y)\" dominant-baseline=\"middle\">\(escape(name))</text>\n"
        }
        return s
    }
}

extension RetrievalReport {
    /// The precision-recall curve (one point per Hamming radius; radii that retrieve
    /// nothing relevant yet are left out) as an SVG chart.
    public func prCurveSVG(title: String? = nil) -> String {
        SVGPlot.lines(title: title ?? "Precision-recall (\(method), \(bits) bits, mAP \(String(format: "%.3f", mapAll)))",
                      xLabel: "recall", yLabel: "precision",
                      series: [(name: method, points: prCurve.filter { $0.recall > 0 }.map { ($0.recall, $0.precision) })])
    }
}
