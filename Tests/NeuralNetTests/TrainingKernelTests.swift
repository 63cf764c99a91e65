import Foundation
import Testing
import HammingCode
import CNeuralKernels
@testable import NeuralNet

// The C training kernels (im2col, col2im, the element-wise loops) against the plain Swift
// loops they replaced, on assorted shapes.

/// The Swift im2col the C kernel replaced (zero padding or reflection).
private func referenceIm2col(_ g: PatchGeometry, _ img: [Float]) -> [Float] {
    var col = [Float](repeating: .nan, count: g.rows * g.cols)
    var row = 0
    for c in 0..<g.channels {
        for ki in 0..<g.kh {
            for kj in 0..<g.kw {
                for oy in 0..<g.gridH {
                    for ox in 0..<g.gridW {
                        var iy = oy * g.stride - g.padding + ki, ix = ox * g.stride - g.padding + kj
                        var v: Float = 0
                        if g.reflect {
                            iy = reflectIndex(iy, g.height)
                            ix = reflectIndex(ix, g.width)
                            v = img[(c * g.height + iy) * g.width + ix]
                        } else if iy >= 0 && iy < g.height && ix >= 0 && ix < g.width {
                            v = img[(c * g.height + iy) * g.width + ix]
                        }
                        col[row * g.cols + oy * g.gridW + ox] = v
                    }
                }
                row += 1
            }
        }
    }
    return col
}

/// The Swift col2im the C kernel replaced, with reflection folded in.
private func referenceCol2im(_ g: PatchGeometry, _ col: [Float], into img: inout [Float]) {
    var row = 0
    for c in 0..<g.channels {
        for ki in 0..<g.kh {
            for kj in 0..<g.kw {
                for oy in 0..<g.gridH {
                    var iy = oy * g.stride - g.padding + ki
                    if g.reflect { iy = reflectIndex(iy, g.height) } else if iy < 0 || iy >= g.height { continue }
                    for ox in 0..<g.gridW {
                        var ix = ox * g.stride - g.padding + kj
                        if g.reflect { ix = reflectIndex(ix, g.width) } else if ix < 0 || ix >= g.width { continue }
                        img[(c * g.height + iy) * g.width + ix] += col[row * g.cols + oy * g.gridW + ox]
                    }
                }
                row += 1
            }
        }
    }
}

private func randomArray(_ n: Int, _ rng: inout SplitMix64) -> [Float] {
    (0..<n).map { _ in Float.random(in: -1...1, using: &rng) }
}

/// (channels, height, width, kernel, stride, padding, reflect)
private let patchCases: [(Int, Int, Int, Int, Int, Int, Bool)] = [
    (3, 9, 11, 3, 1, 1, false), (2, 8, 8, 3, 1, 1, true), (3, 13, 10, 7, 1, 3, true), (2, 16, 16, 7, 2, 3, false),
    (4, 8, 8, 4, 2, 1, false), (3, 9, 7, 4, 2, 1, false), (2, 7, 7, 4, 1, 1, false), (5, 6, 6, 1, 1, 0, false),
    (4, 9, 9, 1, 2, 0, false), (2, 10, 12, 3, 2, 1, false), (3, 17, 19, 3, 2, 1, true), (1, 5, 40, 3, 1, 1, true),
    (2, 12, 12, 3, 3, 1, false), (2, 33, 35, 4, 2, 1, false), (3, 20, 20, 3, 1, 0, false), (2, 64, 64, 7, 1, 3, true),
]

private func geometry(_ c: (Int, Int, Int, Int, Int, Int, Bool)) -> PatchGeometry {
    let (ch, h, w, k, s, p, r) = c
    return PatchGeometry(channels: ch, height: h, width: w, kh: k, kw: k, stride: s, padding: p,
                         gridH: (h + 2 * p - k) / s + 1, gridW: (w + 2 * p - k) / s + 1, reflect: r)
}

@Test func im2colMatchesReference() {
    var rng = SplitMix64(seed: 11)
    for c in patchCases {
        let g = geometry(c)
        let img = randomArray(g.channels * g.height * g.width, &rng)
        let expected = referenceIm2col(g, img)
        // Whole grid, and in bands of rows with columns side by side (ld > width).
        var col = [Float](repeating: .nan, count: g.rows * g.cols)
        img.withUnsafeBufferPointer { ip in col.withUnsafeMutableBufferPointer { cp in
            im2col(g, ip.baseAddress!, cp.baseAddress!)
        }}
        #expect(col == expected, "im2col \(c)")
        for band in [1, 2, 3] where band < g.gridH {
            var y0 = 0
            while y0 < g.gridH {
                let y1 = min(g.gridH, y0 + band), ld = (y1 - y0) * g.gridW + 5
                var part = [Float](repeating: .nan, count: g.rows * ld)
                img.withUnsafeBufferPointer { ip in part.withUnsafeMutableBufferPointer { pp in
                    im2col(g, ip.baseAddress!, pp.baseAddress!, gridRows: y0..<y1, ld: ld)
                }}
                var ok = true
                for r in 0..<g.rows {
                    for i in 0..<((y1 - y0) * g.gridW) where part[r * ld + i] != expected[r * g.cols + y0 * g.gridW + i] { ok = false }
                }
                #expect(ok, "im2col band \(band) rows \(y0)..<\(y1) of \(c)")
                y0 = y1
            }
        }
    }
}

@Test func col2imMatchesReference() {
    var rng = SplitMix64(seed: 12)
    for c in patchCases {
        let g = geometry(c)
        let col = randomArray(g.rows * g.cols, &rng)
        let start = randomArray(g.channels * g.height * g.width, &rng)
        var expected = start
        referenceCol2im(g, col, into: &expected)
        // Columns with a leading dimension past their width, as in a group of samples.
        let ld = g.cols + 3
        var wide = [Float](repeating: 7, count: g.rows * ld)
        for r in 0..<g.rows { for i in 0..<g.cols { wide[r * ld + i] = col[r * g.cols + i] } }
        var img = start
        wide.withUnsafeBufferPointer { cp in img.withUnsafeMutableBufferPointer { ip in
            col2im(g, cp.baseAddress!, ip.baseAddress!, ld: ld)
        }}
        let err = zip(img, expected).map { abs($0 - $1) }.max() ?? 0
        #expect(err < 1e-5, "col2im \(c): max error \(err)")
    }
}

@Test func elementwiseKernelsMatchReference() {
    var rng = SplitMix64(seed: 13)
    let n = 1000
    let x = randomArray(n, &rng), g = randomArray(n, &rng)
    for (act, slope) in [(GDH_ACT_RELU, Float(0)), (GDH_ACT_LEAKY, 0.2), (GDH_ACT_TANH, 0), (GDH_ACT_SIGMOID, 0)] {
        var y = [Float](repeating: 0, count: n), dx = y
        gdh_activation_forward(x, &y, n, Int32(act), slope)
        let kept = act == GDH_ACT_RELU || act == GDH_ACT_LEAKY ? x : y
        gdh_activation_backward(g, kept, &dx, n, Int32(act), slope)
        for i in 0..<n {
            let (ey, ed): (Float, Float)
            switch Int(act) {
            case Int(GDH_ACT_RELU): ey = max(x[i], 0); ed = x[i] <= 0 ? 0 : g[i]
            case Int(GDH_ACT_LEAKY): ey = x[i] < 0 ? x[i] * slope : x[i]; ed = x[i] <= 0 ? g[i] * slope : g[i]
            case Int(GDH_ACT_TANH): ey = Float(tanh(Double(x[i]))); ed = g[i] * (1 - y[i] * y[i])
            default: ey = Float(1 / (1 + exp(-Double(x[i])))); ed = g[i] * y[i] * (1 - y[i])
            }
            #expect(abs(y[i] - ey) < 1e-6 && abs(dx[i] - ed) < 1e-6, "activation \(act) at \(i)")
        }
    }
}

@Test func reflectionPadBackwardMatchesReference() {
    var rng = SplitMix64(seed: 14)
    for (h, w, p) in [(5, 6, 1), (8, 8, 3), (4, 9, 2)] {
        let g = Tensor(shape: [2, 3, h + 2 * p, w + 2 * p], data: randomArray(6 * (h + 2 * p) * (w + 2 * p), &rng))
        var expected = Tensor(zeros: [2, 3, h, w])
        for plane in 0..<6 {
            for oy in 0..<(h + 2 * p) {
                for ox in 0..<(w + 2 * p) {
                    expected.data[plane * h * w + reflectIndex(oy - p, h) * w + reflectIndex(ox - p, w)] +=
                        g.data[(plane * (h + 2 * p) + oy) * (w + 2 * p) + ox]
                }
            }
        }
        let got = reflectionPadBackward(g, p)
        let err = zip(got.data, expected.data).map { abs($0 - $1) }.max() ?? 0
        #expect(err < 1e-5, "reflection pad backward \(h)x\(w) p\(p)")
    }
}

/// Grouped convolutions (several samples in one GEMM) give what one sample at a time gives.
@Test func groupedConvolutionsMatchPerSample() {
    let saved = convGroupFloats
    defer { convGroupFloats = saved }
    var rng = SplitMix64(seed: 15)
    let layers: [(Layer, [Int])] = [
        (Conv2d(3, 5, kernel: 3, stride: 1, padding: 1, paddingMode: .reflect), [5, 3, 8, 8]),
        (Conv2d(4, 6, kernel: 4, stride: 2, padding: 1), [5, 4, 9, 9]),
        (Conv2d(3, 4, kernel: 1, stride: 2, bias: false), [3, 3, 8, 8]),
        (ConvTranspose2d(4, 3, kernel: 3, stride: 2, padding: 1, outputPadding: 1), [5, 4, 6, 6]),
    ]
    for (layer, shape) in layers {
        for p in layer.parameters { for i in 0..<p.1.value.count { p.1.value.data[i] = Float.random(in: -0.5...0.5, using: &rng) } }
        let x = Tensor(shape: shape, data: randomArray(shape.reduce(1, *), &rng))
        var results: [(Tensor, Tensor, [Tensor])] = []
        for floats in [1, 1 << 20, 700] {
            convGroupFloats = floats
            layer.zeroGrad()
            let y = layer.forward(x)
            let gy = Tensor(shape: y.shape, data: (0..<y.count).map { Float(($0 * 7) % 13) / 13 - 0.5 })
            let dx = layer.backward(gy)
            results.append((y, dx, layer.parameters.map { $0.1.grad }))
        }
        for r in results.dropFirst() {
            let e1 = zip(r.0.data, results[0].0.data).map { abs($0 - $1) }.max() ?? 0
            let e2 = zip(r.1.data, results[0].1.data).map { abs($0 - $1) }.max() ?? 0
            let e3 = zip(r.2, results[0].2).map { a, b in zip(a.data, b.data).map { abs($0 - $1) }.max() ?? 0 }.max() ?? 0
            #expect(e1 < 1e-4 && e2 < 1e-4 && e3 < 1e-4, "\(type(of: layer)) \(shape): \(e1) \(e2) \(e3)")
        }
    }
}

/// Two training threads (layer loops and GEMMs split between them) give what one gives, up
/// to the order of the weight-gradient sums, on both convolution algorithms.
@Test func trainingLayersOnTwoThreadsMatchOne() {
    var rng = SplitMix64(seed: 16)
    let layers: [(Layer, [Int])] = [
        (Conv2d(8, 3, kernel: 7, padding: 3, paddingMode: .reflect), [4, 8, 16, 16]),
        (Conv2d(16, 24, kernel: 3, padding: 1), [4, 16, 16, 16]),
        (Conv2d(16, 32, kernel: 4, stride: 2, padding: 1), [4, 16, 16, 16]),
        (ConvTranspose2d(16, 8, kernel: 3, stride: 2, padding: 1, outputPadding: 1), [4, 16, 16, 16]),
        (BatchNorm2d(16), [4, 16, 32, 32]),
        (Activation(.tanh), [4, 16, 32, 32]),
    ]
    for (layer, shape) in layers {
        for p in layer.parameters { for i in 0..<p.1.value.count { p.1.value.data[i] = Float.random(in: -0.5...0.5, using: &rng) } }
        let x = Tensor(shape: shape, data: randomArray(shape.reduce(1, *), &rng))
        let algorithms: [ConvAlgorithm] = layer is Conv2d ? [.gemm, .direct] : [.automatic]
        for algorithm in algorithms {
            (layer as? Conv2d)?.algorithm = algorithm
            let results = [1, 2].map { threads in
                TrainingThreads.$override.withValue(threads) { () -> (Tensor, Tensor, [Tensor]) in
                    layer.zeroGrad()
                    let y = layer.forward(x)
                    let gy = Tensor(shape: y.shape, data: (0..<y.count).map { Float(($0 * 7) % 13) / 13 - 0.5 })
                    return (y, layer.backward(gy), layer.parameters.map { $0.1.grad })
                }
            }
            let e1 = zip(results[0].0.data, results[1].0.data).map { abs($0 - $1) }.max() ?? 0
            let e2 = zip(results[0].1.data, results[1].1.data).map { abs($0 - $1) }.max() ?? 0
            let e3 = zip(results[0].2, results[1].2).map { a, b in zip(a.data, b.data).map { abs($0 - $1) }.max() ?? 0 }.max() ?? 0
            #expect(e1 < 1e-4 && e2 < 1e-4 && e3 < 1e-3, "\(type(of: layer)) \(shape) \(algorithm): \(e1) \(e2) \(e3)")
        }
    }
}
