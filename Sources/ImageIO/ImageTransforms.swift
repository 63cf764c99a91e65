/// Resampling filter for `RGBImage.resized`.
/// Model files name it by its raw value (`"area"`, `"bilinear"`).
public enum ResizeFilter: String, Codable, Sendable, Equatable, CaseIterable {
    /// Box filter with exact pixel-area weights: each output pixel is the
    /// area-weighted mean of the source pixels its footprint covers (OpenCV
    /// `INTER_AREA` when downscaling; equal to PIL `BOX` for integer factors).
    case area
    /// Bilinear with half-pixel centres and no antialiasing:
    /// `src = (dst + 0.5) * in / out - 0.5`, clamped at the borders
    /// (torch `interpolate(mode: "bilinear", align_corners: False, antialias: False)`,
    /// PIL `BILINEAR` when upscaling).
    case bilinear
}

/// Per-axis resampling taps: output index o uses source indices
/// `index[start[o] ..< start[o + 1]]` with weights `weight[...]` (summing to 1).
struct ResampleTaps {
    var start: [Int] = [0]
    var index: [Int] = []
    var weight: [Float] = []

    /// Exact area weights, computed in integers: in units of 1/(inSize*outSize),
    /// output o spans [o*inSize, (o+1)*inSize) and source i spans [i*outSize, (i+1)*outSize).
    static func area(inSize n: Int, outSize m: Int) -> ResampleTaps {
        var taps = ResampleTaps()
        for o in 0..<m {
            let lo = o * n, hi = (o + 1) * n
            var i = lo / m
            while i < n && i * m < hi {
                let overlap = min(hi, (i + 1) * m) - max(lo, i * m)
                if overlap > 0 {
                    taps.index.append(i)
                    taps.weight.append(Float(Double(overlap) / Double(n)))
                }
                i += 1
            }
            taps.start.append(taps.index.count)
        }
        return taps
    }

    static func bilinear(inSize n: Int, outSize m: Int) -> ResampleTaps {
        var taps = ResampleTaps()
        let scale = Double(n) / Double(m)
        for o in 0..<m {
            var src = (Double(o) + 0.5) * scale - 0.5
            if src < 0 { src = 0 }
            let i0 = min(Int(src.rounded(.down)), n - 1)
            let i1 = min(i0 + 1, n - 1)
            let lambda = min(max(src - Double(i0), 0), 1)
            if i1 == i0 || lambda == 0 {
                taps.index.append(i0)
                taps.weight.append(1)
            } else {
                taps.index.append(i0)
                taps.weight.append(Float(1 - lambda))
                taps.index.append(i1)
                taps.weight.append(Float(lambda))
            }
            taps.start.append(taps.index.count)
        }
        return taps
    }

    static func make(_ filter: ResizeFilter, inSize: Int, outSize: Int) -> ResampleTaps {
        switch filter {
        case .area: return area(inSize: inSize, outSize: outSize)
        case .bilinear: return bilinear(inSize: inSize, outSize: outSize)
        }
    }
}

@inline(__always)
private func roundToByte(_ v: Float) -> UInt8 {
    // Round half up, then clamp.
    let r = (v + 0.5).rounded(.down)
    if r <= 0 { return 0 }
    if r >= 255 { return 255 }
    return UInt8(r)
}

extension RGBImage {
    /// Resizes to `width` x `height` (both > 0) with a separable filter:
    /// horizontal pass into a Float buffer, then vertical pass, rounding
    /// half up once at the end.
    public func resized(width outW: Int, height outH: Int, filter: ResizeFilter) -> RGBImage {
        precondition(outW > 0 && outH > 0, "resize target must be positive, got \(outW)x\(outH)")
        precondition(width > 0 && height > 0, "cannot resize an empty image")
        precondition(pixels.count == width * height * 3, "pixel buffer size mismatch")
        if outW == width && outH == height { return self }

        let inW = width, inH = height
        let tx = ResampleTaps.make(filter, inSize: inW, outSize: outW)
        let ty = ResampleTaps.make(filter, inSize: inH, outSize: outH)

        // Horizontal: inH x outW x 3 floats.
        var tmp = [Float](repeating: 0, count: inH * outW * 3)
        pixels.withUnsafeBufferPointer { src in
            tmp.withUnsafeMutableBufferPointer { dst in
                for y in 0..<inH {
                    let srow = y * inW * 3
                    let drow = y * outW * 3
                    for ox in 0..<outW {
                        var r: Float = 0, g: Float = 0, b: Float = 0
                        for t in tx.start[ox]..<tx.start[ox + 1] {
                            let w = tx.weight[t]
                            let s = srow + tx.index[t] * 3
                            r += w * Float(src[s])
                            g += w * Float(src[s + 1])
                            b += w * Float(src[s + 2])
                        }
                        let d = drow + ox * 3
                        dst[d] = r
                        dst[d + 1] = g
                        dst[d + 2] = b
                    }
                }
            }
        }

        // Vertical: outH x outW x 3 bytes.
        let rowLen = outW * 3
        var out = [UInt8](repeating: 0, count: outH * rowLen)
        var acc = [Float](repeating: 0, count: rowLen)
        tmp.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                acc.withUnsafeMutableBufferPointer { acc in
                    for oy in 0..<outH {
                        for k in 0..<rowLen { acc[k] = 0 }
                        for t in ty.start[oy]..<ty.start[oy + 1] {
                            let w = ty.weight[t]
                            let s = ty.index[t] * rowLen
                            for k in 0..<rowLen { acc[k] += w * src[s + k] }
                        }
                        let d = oy * rowLen
                        for k in 0..<rowLen { dst[d + k] = roundToByte(acc[k]) }
                    }
                }
            }
        }
        return RGBImage(width: outW, height: outH, pixels: out)
    }

    /// The centred `width` x `height` window (torchvision `CenterCrop`
    /// convention: offset = round((size - crop) / 2), ties to even). A crop
    /// larger than the image is padded with black, as torchvision does.
    public func centerCropped(width cw: Int, height ch: Int) -> RGBImage {
        precondition(cw > 0 && ch > 0, "crop size must be positive, got \(cw)x\(ch)")
        precondition(pixels.count == width * height * 3, "pixel buffer size mismatch")
        if cw == width && ch == height { return self }

        func offset(_ size: Int, _ crop: Int) -> Int {
            if crop <= size {
                return Int((Double(size - crop) / 2).rounded(.toNearestOrEven))
            }
            // torchvision pads (crop - size) // 2 on the left/top first.
            return -((crop - size) / 2)
        }
        let x0 = offset(width, cw), y0 = offset(height, ch)
        var out = [UInt8](repeating: 0, count: cw * ch * 3)
        let xs = max(0, -x0), xe = min(cw, width - x0) // destination columns with a source
        if xs < xe {
            pixels.withUnsafeBufferPointer { src in
                out.withUnsafeMutableBufferPointer { dst in
                    for y in 0..<ch {
                        let sy = y0 + y
                        if sy < 0 || sy >= height { continue }
                        let s = (sy * width + x0 + xs) * 3
                        let d = (y * cw + xs) * 3
                        let n = (xe - xs) * 3
                        dst.baseAddress!.advanced(by: d)
                            .update(from: src.baseAddress!.advanced(by: s), count: n)
                    }
                }
            }
        }
        return RGBImage(width: cw, height: ch, pixels: out)
    }

    /// CHW float planes scaled to [-1, 1]: (v/255 - 0.5) / 0.5.
    /// Layout: `[R plane (height*width), G plane, B plane]`, each row-major.
    public func normalizedCHW() -> [Float] {
        precondition(pixels.count == width * height * 3, "pixel buffer size mismatch")
        var table = [Float](repeating: 0, count: 256)
        for v in 0..<256 { table[v] = (Float(v) / 255 - 0.5) / 0.5 }
        let n = width * height
        var out = [Float](repeating: 0, count: 3 * n)
        pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                table.withUnsafeBufferPointer { lut in
                    for i in 0..<n {
                        dst[i] = lut[Int(src[3 * i])]
                        dst[n + i] = lut[Int(src[3 * i + 1])]
                        dst[2 * n + i] = lut[Int(src[3 * i + 2])]
                    }
                }
            }
        }
        return out
    }
}
