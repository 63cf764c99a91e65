import CImageCodecs

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An 8-bit RGB image, row-major, 3 bytes per pixel, no row padding.
public struct RGBImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    /// RGB, row-major: pixel (x, y) starts at `(y * width + x) * 3`.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0, "negative image size")
        let (wh, o1) = width.multipliedReportingOverflow(by: height)
        let (count, o2) = wh.multipliedReportingOverflow(by: 3)
        precondition(!o1 && !o2 && pixels.count == count,
                     "RGBImage: \(pixels.count) bytes for \(width)x\(height) RGB")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// The RGB value of pixel (x, y).
    public func pixel(x: Int, y: Int) -> (r: UInt8, g: UInt8, b: UInt8) {
        precondition(x >= 0 && x < width && y >= 0 && y < height, "pixel out of bounds")
        let i = (y * width + x) * 3
        return (pixels[i], pixels[i + 1], pixels[i + 2])
    }
}

public enum ImageError: Error, CustomStringConvertible, Equatable, Sendable {
    /// Not PNG or JPEG, or a variant that is refused (12-bit JPEG, 2-component JPEG, ...).
    case unsupportedFormat(String)
    /// width * height exceeds the pixel limit (refused before any image-sized allocation).
    case tooLarge(width: Int, height: Int, limit: Int)
    /// Corrupt, truncated or undecodable data (also: decoder out of memory).
    case corrupt(String)
    /// Reading the file failed, or the file exceeds `maxBytes`.
    case io(String)

    public var description: String {
        switch self {
        case .unsupportedFormat(let m): return "unsupported image format: \(m)"
        case .tooLarge(let w, let h, let limit):
            return "image too large: \(w)x\(h) = \(w * h) pixels exceeds the limit of \(limit)"
        case .corrupt(let m): return "corrupt image: \(m)"
        case .io(let m): return "image I/O error: \(m)"
        }
    }
}

public enum ImageFormat: Sendable, Equatable {
    case png, jpeg
}

public enum ImageDecoder {
    public static let defaultMaxPixels = 40_000_000

    private static let errCapacity = 256

    /// Reads only the header: format and size. Does not decode pixels.
    public static func probe(_ data: [UInt8]) throws -> (format: ImageFormat, width: Int, height: Int) {
        var format: Int32 = 0
        var w: UInt32 = 0
        var h: UInt32 = 0
        var rc: Int32 = 0
        let message = withErrorBuffer { err, errLen in
            rc = data.withUnsafeBufferPointer { d in
                gdh_image_probe(d.baseAddress, d.count, &format, &w, &h, err, errLen)
            }
        }
        if rc != 0 {
            throw mapError(rc, message, width: Int(w), height: Int(h), limit: Int.max)
        }
        let fmt: ImageFormat = format == Int32(GDH_IMAGE_FORMAT_PNG) ? .png : .jpeg
        return (fmt, Int(w), Int(h))
    }

    /// Decodes PNG or JPEG bytes to 8-bit RGB (alpha composited over white).
    /// Images with more than `maxPixels` pixels are refused (`.tooLarge`) from
    /// their header alone, before the pixel buffer is allocated.
    ///
    /// With `atLeast` (width, height), a JPEG much larger than that is decoded reduced by
    /// 1/2, 1/4 or 1/8 in libjpeg's DCT domain (the 1/8 reduction is the mean of each
    /// 8 x 8 block), to the smallest such size that still covers `atLeast`: several times
    /// faster for photos, and a resize to a small size afterwards gives nearly the same
    /// pixels. PNGs always decode at full size.
    public static func decode(_ data: [UInt8], maxPixels: Int = defaultMaxPixels,
                              atLeast: (width: Int, height: Int)? = nil) throws -> RGBImage {
        precondition(maxPixels >= 0, "maxPixels must be >= 0")
        let header = try probe(data)
        var (w, h) = (header.width, header.height)
        // w, h < 2^31, so w * h cannot overflow Int.
        if w * h > maxPixels {
            throw ImageError.tooLarge(width: w, height: h, limit: maxPixels)
        }
        var reduce: (UInt32, UInt32)?
        if let atLeast, header.format == .jpeg {
            let minW = UInt32(clamping: max(1, atLeast.width)), minH = UInt32(clamping: max(1, atLeast.height))
            let d = Int(gdh_jpeg_reduction(UInt32(w), UInt32(h), minW, minH))
            if d > 1 {
                reduce = (minW, minH)
                (w, h) = ((w + d - 1) / d, (h + d - 1) / d)
            }
        }
        let count = w * h * 3
        var rc: Int32 = 0
        var outW: UInt32 = 0
        var outH: UInt32 = 0
        var message = ""
        let pixels = [UInt8](unsafeUninitializedCapacity: count) { buf, initialized in
            message = withErrorBuffer { err, errLen in
                rc = data.withUnsafeBufferPointer { d in
                    if let (minW, minH) = reduce {
                        return gdh_image_decode_rgb8_reduced(d.baseAddress, d.count, UInt64(maxPixels), minW, minH,
                                                             buf.baseAddress, count, &outW, &outH, err, errLen)
                    }
                    return gdh_image_decode_rgb8(d.baseAddress, d.count, UInt64(maxPixels),
                                                 buf.baseAddress, count, &outW, &outH, err, errLen)
                }
            }
            if rc != 0 {
                // Keep the array's contents defined even though it is discarded.
                if let base = buf.baseAddress { base.initialize(repeating: 0, count: count) }
            }
            initialized = count
        }
        if rc != 0 {
            throw mapError(rc, message, width: Int(outW), height: Int(outH), limit: maxPixels)
        }
        guard Int(outW) == w, Int(outH) == h else {
            throw ImageError.corrupt("header size \(w)x\(h) differs from decoded size \(outW)x\(outH)")
        }
        return RGBImage(width: w, height: h, pixels: pixels)
    }

    /// Reads a file (at most `maxBytes` bytes, else `.io`) and decodes it.
    public static func decode(contentsOf path: String, maxBytes: Int = 64 << 20,
                              maxPixels: Int = defaultMaxPixels) throws -> RGBImage {
        try decode(readFile(path, maxBytes: maxBytes), maxPixels: maxPixels)
    }

    /// Decodes an image and resizes it to `size` × `size` with `filter`: the preparation of
    /// every network input (the daemon's, training's, evaluation's). A large JPEG is
    /// decoded reduced in the DCT domain to no less than 2·size first.
    public static func decode(_ data: [UInt8], resizedTo size: Int, filter: ResizeFilter,
                              maxPixels: Int = defaultMaxPixels) throws -> RGBImage {
        try decode(data, maxPixels: maxPixels, atLeast: (2 * size, 2 * size)).resized(width: size, height: size, filter: filter)
    }

    /// Encodes an RGB image as a (non-interlaced, 8-bit RGB) PNG with libpng.
    public static func encodePNG(_ image: RGBImage) throws -> [UInt8] {
        guard image.width > 0, image.height > 0 else {
            throw ImageError.unsupportedFormat("cannot encode an empty \(image.width)x\(image.height) image")
        }
        guard image.pixels.count == image.width * image.height * 3 else {
            throw ImageError.corrupt("pixel buffer has \(image.pixels.count) bytes, expected \(image.width * image.height * 3)")
        }
        guard image.width <= Int(Int32.max) / 3, image.height <= Int(Int32.max) else {
            throw ImageError.tooLarge(width: image.width, height: image.height, limit: Int(Int32.max) / 3)
        }
        var out: UnsafeMutablePointer<UInt8>? = nil
        var outLen = 0
        var rc: Int32 = 0
        let message = withErrorBuffer { err, errLen in
            rc = image.pixels.withUnsafeBufferPointer { p in
                gdh_png_encode_rgb8(p.baseAddress, UInt32(image.width), UInt32(image.height),
                                    &out, &outLen, err, errLen)
            }
        }
        defer { gdh_image_free(out) }
        guard rc == 0, let out else {
            throw mapError(rc == 0 ? Int32(GDH_IMAGE_ENOMEM) : rc, message,
                           width: image.width, height: image.height, limit: Int.max)
        }
        return Array(UnsafeBufferPointer(start: out, count: outLen))
    }

    // MARK: - Helpers

    private static func withErrorBuffer(_ body: (UnsafeMutablePointer<CChar>, Int) -> Void) -> String {
        var buf = [CChar](repeating: 0, count: errCapacity)
        return buf.withUnsafeMutableBufferPointer { b -> String in
            body(b.baseAddress!, b.count)
            b[b.count - 1] = 0
            return String(cString: b.baseAddress!)
        }
    }

    private static func mapError(_ rc: Int32, _ message: String, width: Int, height: Int, limit: Int) -> ImageError {
        let msg = message.isEmpty ? "decoder error \(rc)" : message
        switch rc {
        case Int32(GDH_IMAGE_EUNSUPPORTED):
            return .unsupportedFormat(msg)
        case Int32(GDH_IMAGE_ETOOLARGE):
            return .tooLarge(width: width, height: height, limit: limit)
        case Int32(GDH_IMAGE_ENOMEM):
            return .corrupt("out of memory while decoding: \(msg)")
        default:
            return .corrupt(msg)
        }
    }

    /// The bytes of a file, refused (`.io`) when it is a directory or longer than
    /// `maxBytes`: the size is checked before reading and again while reading (a pipe or
    /// a growing file), so no more than `maxBytes + 1` bytes are ever held.
    public static func readFile(_ path: String, maxBytes: Int) throws -> [UInt8] {
        precondition(maxBytes >= 0, "maxBytes must be >= 0")
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            throw ImageError.io("cannot open \(path): \(errnoString())")
        }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) != 0 {
            throw ImageError.io("cannot stat \(path): \(errnoString())")
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            throw ImageError.io("\(path) is a directory")
        }
        if (st.st_mode & S_IFMT) == S_IFREG && Int(st.st_size) > maxBytes {
            throw ImageError.io("\(path) is \(st.st_size) bytes, more than the limit of \(maxBytes)")
        }
        var result: [UInt8] = []
        if (st.st_mode & S_IFMT) == S_IFREG { result.reserveCapacity(Int(st.st_size)) }
        let chunk = 1 << 20
        var scratch = [UInt8](repeating: 0, count: chunk)
        while true {
            let want = min(chunk, maxBytes + 1 - result.count)
            let n = scratch.withUnsafeMutableBytes { read(fd, $0.baseAddress, want) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ImageError.io("cannot read \(path): \(errnoString())")
            }
            if n == 0 { break }
            result.append(contentsOf: scratch[0..<n])
            if result.count > maxBytes {
                throw ImageError.io("\(path) is more than the limit of \(maxBytes) bytes")
            }
        }
        return result
    }

    private static func errnoString() -> String {
        String(cString: strerror(errno))
    }
}
