import Datasets
import Dispatch
import Foundation
import GDH
import HammingCode
import ImageIO
import NeuralNet

/// The training items: photos and sketches (absolute paths) with class labels.
public struct TrainingSet: Sendable {
    public var classes: [String]
    public var photoPaths: [String]
    public var photoLabels: [Int]
    public var sketchPaths: [String]
    public var sketchLabels: [Int]

    public init(classes: [String], photoPaths: [String], photoLabels: [Int], sketchPaths: [String], sketchLabels: [Int]) {
        self.classes = classes
        self.photoPaths = photoPaths
        self.photoLabels = photoLabels
        self.sketchPaths = sketchPaths
        self.sketchLabels = sketchLabels
    }

    /// Why this set cannot be trained on, or nil.
    public var problem: String? {
        if photoPaths.isEmpty || sketchPaths.isEmpty { return "the training part has no photos or no sketches" }
        let photoClasses = Set(photoLabels), sketchClasses = Set(sketchLabels)
        if let k = photoClasses.symmetricDifference(sketchClasses).min() {
            let side = photoClasses.contains(k) ? "photos but no sketches" : "sketches but no photos"
            return "class '\(classes[k])' has training \(side)"
        }
        return nil
    }

    /// Sketch indices of each class.
    var sketchesByClass: [[Int]] {
        var out = [[Int]](repeating: [], count: classes.count)
        for (i, y) in sketchLabels.enumerated() { out[y].append(i) }
        return out
    }
}

/// The items of one batch: indices into the training photos and sketches.
public struct BatchPlan: Equatable, Sendable {
    public var photos: [Int]
    public var sketches: [Int]
}

/// Which items each step of an epoch takes (Docs/training.md, "Data"): the training photos
/// shuffled, B per step (the last partial batch dropped), each with a random training
/// sketch of its class. A function of (seed, epoch) only, so a resumed run replays it.
public enum BatchSampler {
    public static func plan(_ set: TrainingSet, batch: Int, seed: UInt64, epoch: Int) -> [BatchPlan] {
        var rng = SplitMix64(seed: seed ^ (0xA5A5_0000 &+ UInt64(epoch) &* 0x1_0000_0001))
        var order = Array(set.photoPaths.indices)
        shuffle(&order, &rng)
        let byClass = set.sketchesByClass
        let steps = order.count / batch
        return (0..<steps).map { s in
            let photos = Array(order[(s * batch)..<((s + 1) * batch)])
            let sketches = photos.map { p -> Int in
                let pool = byClass[set.photoLabels[p]]
                return pool[Int(rng.next() % UInt64(pool.count))]
            }
            return BatchPlan(photos: photos, sketches: sketches)
        }
    }

    /// Fisher–Yates with the given generator (the same order on every platform).
    static func shuffle(_ a: inout [Int], _ rng: inout SplitMix64) {
        guard a.count > 1 else { return }
        for i in stride(from: a.count - 1, to: 0, by: -1) {
            let j = Int(rng.next() % UInt64(i + 1))
            a.swapAt(i, j)
        }
    }

    /// Steps per epoch.
    public static func steps(_ set: TrainingSet, batch: Int) -> Int { set.photoPaths.count / batch }
}

/// Decoded training images at load size L = round(S·286/256), cached, and the random
/// crop + flip of each use.
public final class Augmenter: @unchecked Sendable {
    public let imageSize: Int
    public let loadSize: Int
    let cache: ImageCache

    public init(imageSize: Int, filter: ResizeFilter, maxCacheBytes: Int) {
        self.imageSize = imageSize
        loadSize = Int((Double(imageSize) * 286 / 256).rounded())
        cache = ImageCache(size: loadSize, filter: filter, maxBytes: maxCacheBytes)
    }

    /// The batch tensors of `plan`: each image cropped at a random place and flipped with
    /// probability 1/2, from a generator seeded by (seed, epoch, step).
    public func tensors(_ set: TrainingSet, _ plan: BatchPlan, seed: UInt64, epoch: Int, step: Int) throws -> (Tensor, Tensor) {
        var rng = SplitMix64(seed: seed &+ UInt64(epoch) &* 0x9E37_79B9 &+ UInt64(step) &* 0x85EB_CA6B &+ 0x1234_5678)
        let s = imageSize
        var photos = [Float](), sketches = [Float]()
        photos.reserveCapacity(plan.photos.count * 3 * s * s)
        sketches.reserveCapacity(plan.photos.count * 3 * s * s)
        for i in plan.photos { photos += try augmented(set.photoPaths[i], &rng) }
        for i in plan.sketches { sketches += try augmented(set.sketchPaths[i], &rng) }
        let shape = [plan.photos.count, 3, s, s]
        return (Tensor(shape: shape, data: photos), Tensor(shape: shape, data: sketches))
    }

    /// One image: CHW floats in [-1, 1] of a random S×S crop, flipped or not.
    func augmented(_ path: String, _ rng: inout SplitMix64) throws -> [Float] {
        let image = try cache.image(path)
        let s = imageSize, l = loadSize
        let x0 = Int(rng.next() % UInt64(l - s + 1)), y0 = Int(rng.next() % UInt64(l - s + 1))
        let flip = rng.next() & 1 == 1
        var out = [Float](repeating: 0, count: 3 * s * s)
        image.pixels.withUnsafeBufferPointer { px in
            for y in 0..<s {
                for x in 0..<s {
                    let sx = flip ? x0 + s - 1 - x : x0 + x
                    let p = ((y0 + y) * l + sx) * 3
                    for c in 0..<3 { out[(c * s + y) * s + x] = Float(px[p + c]) / 127.5 - 1 }
                }
            }
        }
        return out
    }

    public static func forSettings(_ s: TrainingSettings, maxCacheBytes: Int) -> Augmenter {
        Augmenter(imageSize: s.configuration.imageSize, filter: s.configuration.resize,
                  maxCacheBytes: maxCacheBytes)
    }

    /// The set without the files that cannot be decoded (each is decoded once here, which
    /// also fills the cache), and those files. Both cores decode.
    public func droppingUnreadable(_ set: TrainingSet) -> (TrainingSet, [String]) {
        let paths = set.photoPaths + set.sketchPaths
        let ok = UnsafeMutableBufferPointer<Bool>.allocate(capacity: paths.count)
        defer { ok.deallocate() }
        DispatchQueue.concurrentPerform(iterations: paths.count) { i in ok[i] = (try? cache.image(paths[i])) != nil }
        let np = set.photoPaths.count
        var out = set
        out.photoPaths = set.photoPaths.indices.filter { ok[$0] }.map { set.photoPaths[$0] }
        out.photoLabels = set.photoPaths.indices.filter { ok[$0] }.map { set.photoLabels[$0] }
        out.sketchPaths = set.sketchPaths.indices.filter { ok[np + $0] }.map { set.sketchPaths[$0] }
        out.sketchLabels = set.sketchPaths.indices.filter { ok[np + $0] }.map { set.sketchLabels[$0] }
        return (out, paths.indices.filter { !ok[$0] }.map { paths[$0] })
    }
}
