import Foundation
import ImageIO

/// Decoded, resized images by path, prepared the way the daemon prepares its input
/// (`GDH.ImagePreparation`): read at most `maxFileBytes`, decode with the
/// hardened codecs (large JPEGs reduced in the DCT domain to no less than 2·size), then
/// resize to size × size with the given filter.
///
/// Images are decoded when first asked for and kept until `maxBytes` of pixels are held;
/// after that, new images are decoded on every request and not kept. A file that fails
/// to decode is remembered (`unreadable`) and fails again at once. Thread-safe.
public final class ImageCache: @unchecked Sendable {
    public let size: Int
    public let filter: ResizeFilter
    public let maxBytes: Int
    public let maxFileBytes: Int
    public let maxPixels: Int

    private let lock = NSLock()
    private var images: [String: RGBImage] = [:]
    private var failures: [String: String] = [:]
    private var heldBytes = 0

    /// `size`: the side of the square output; `maxBytes`: the pixel bytes kept in memory.
    public init(size: Int, filter: ResizeFilter, maxBytes: Int = 1 << 30,
                maxFileBytes: Int = 64 << 20, maxPixels: Int = ImageDecoder.defaultMaxPixels) {
        precondition(size > 0, "image size must be positive")
        self.size = size
        self.filter = filter
        self.maxBytes = maxBytes
        self.maxFileBytes = maxFileBytes
        self.maxPixels = maxPixels
    }

    /// The image at `path`, size × size. Throws `DatasetError` naming the file when it
    /// cannot be read or decoded.
    public func image(_ path: String) throws -> RGBImage {
        lock.lock()
        if let hit = images[path] { lock.unlock(); return hit }
        if let reason = failures[path] { lock.unlock(); throw DatasetError("\(path): \(reason)") }
        lock.unlock()
        let image: RGBImage
        do {
            image = try ImageCache.load(path, size: size, filter: filter, maxFileBytes: maxFileBytes, maxPixels: maxPixels)
        } catch {
            let reason = "\(error)"
            lock.lock(); failures[path] = reason; lock.unlock()
            throw DatasetError("\(path): \(reason)")
        }
        lock.lock()
        if images[path] == nil && heldBytes + image.pixels.count <= maxBytes {
            images[path] = image
            heldBytes += image.pixels.count
        }
        lock.unlock()
        return image
    }

    /// Files that failed to decode so far, sorted.
    public var unreadable: [String] {
        lock.lock(); defer { lock.unlock() }
        return failures.keys.sorted()
    }

    /// Why each unreadable file failed.
    public var failureReasons: [String: String] {
        lock.lock(); defer { lock.unlock() }
        return failures
    }

    /// Pixel bytes held in memory.
    public var cachedBytes: Int {
        lock.lock(); defer { lock.unlock() }
        return heldBytes
    }

    /// Images held in memory.
    public var cachedCount: Int {
        lock.lock(); defer { lock.unlock() }
        return images.count
    }

    /// "warning: skipped N unreadable files (first: ...)", or nil when every file was read.
    public var warning: String? { ImageCache.warning(unreadable: unreadable) }

    /// The warning line for a list of unreadable files, or nil when it is empty.
    public static func warning(unreadable: [String]) -> String? {
        guard let first = unreadable.first else { return nil }
        let noun = unreadable.count == 1 ? "file" : "files"
        return "warning: skipped \(unreadable.count) unreadable \(noun) (first: \(first))"
    }

    /// Reads (bounded), decodes and resizes one image (no caching).
    public static func load(_ path: String, size: Int, filter: ResizeFilter,
                            maxFileBytes: Int = 64 << 20, maxPixels: Int = ImageDecoder.defaultMaxPixels) throws -> RGBImage {
        try ImageDecoder.decode(ImageDecoder.readFile(path, maxBytes: maxFileBytes), resizedTo: size, filter: filter, maxPixels: maxPixels)
    }
}

/// Which of a list of files decode.
public struct ReadabilityCheck: Sendable {
    /// One flag per input path, in order.
    public var readable: [Bool]
    /// The paths that failed, in input order.
    public var unreadable: [String]
    /// Why each failed, parallel to `unreadable`.
    public var reasons: [String]

    /// "warning: skipped N unreadable files (first: ...)", or nil when every file was read.
    public var warning: String? { ImageCache.warning(unreadable: unreadable) }
}

extension ImageCache {
    /// Decodes every file (at a reduced size where the codec allows: `size` as in the
    /// cache) to find the unreadable ones up front, on `threads` threads.
    public static func checkReadable(paths: [String], size: Int = 64, threads: Int = 1) -> ReadabilityCheck {
        var reasons = [String?](repeating: nil, count: paths.count)
        let lock = NSLock()
        let workers = max(1, min(threads, paths.count))
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            for i in stride(from: w, to: paths.count, by: workers) {
                do {
                    let bytes = try ImageDecoder.readFile(paths[i], maxBytes: 64 << 20)
                    _ = try ImageDecoder.decode(bytes, atLeast: (2 * size, 2 * size))
                } catch {
                    lock.lock(); reasons[i] = "\(error)"; lock.unlock()
                }
            }
        }
        var check = ReadabilityCheck(readable: reasons.map { $0 == nil }, unreadable: [], reasons: [])
        for (i, r) in reasons.enumerated() {
            if let r { check.unreadable.append(paths[i]); check.reasons.append(r) }
        }
        return check
    }
}
