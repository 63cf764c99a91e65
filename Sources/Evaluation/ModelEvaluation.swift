import Datasets
import Foundation
import GDH
import HammingCode
import ImageIO
import NeuralNet

/// Why an evaluation could not run.
public struct EvaluationError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Evaluates a GDH model on a split: query sketches → sign(H(G_I(sketch))), gallery
/// photos → sign(H(photo)), each prepared exactly as the daemon prepares its input
/// (bounded read, decode to no less than 2S × 2S, resize with the model's filter to
/// S × S, scale to [-1, 1]), then `Retrieval.evaluate`. With two or more threads, two
/// encoders (one per half of the work) run at once.
public struct ModelEvaluator {
    public let model: GDHModel
    public let threads: Int
    /// Images per encoder call.
    public var batchSize = 16

    public init(model: GDHModel, threads: Int) {
        self.model = model
        self.threads = max(1, threads)
    }

    /// `progress(stage, done, total)`: stage is "sketches" or "photos"; called from the
    /// encoding threads, one call at a time.
    public func evaluate(_ dataset: Dataset, _ resolved: ResolvedSplit,
                         progress: ((String, Int, Int) -> Void)?) throws -> RetrievalReport {
        guard !resolved.queries.isEmpty, !resolved.gallery.isEmpty else {
            throw EvaluationError("the split has \(resolved.queries.count) queries and \(resolved.gallery.count) gallery photos: nothing to evaluate")
        }
        let encoders = try makeEncoders()
        let sketches = try encode(resolved.queries.map(dataset.absolutePath), sketch: true, encoders: encoders, progress: progress)
        let photos = try encode(resolved.gallery.map(dataset.absolutePath), sketch: false, encoders: encoders, progress: progress)
        var report = scoreCodes(queries: resolved.queries, queryCodes: sketches.codes,
                                gallery: resolved.gallery, galleryCodes: photos.codes, classes: resolved.classes)
        report.method = model.configuration.usesGenerator ? "gdh" : "gdh-no-generator"
        report.encodeMsPerQuery = sketches.msPerItem
        report.encodeMsPerImage = photos.msPerItem
        report.skippedUnreadable = sketches.unreadable.count + photos.unreadable.count
        return report
    }

    func makeEncoders() throws -> [GDHEncoder] {
        let count = threads >= 2 ? 2 : 1
        let perEncoder = max(1, threads / count)
        var encoders = [try GDHEncoder(model: model, threads: perEncoder)]
        if count == 2 { encoders.append(try GDHEncoder(model: try model.replica(), threads: perEncoder)) }
        // The plans do not use OpenBLAS; keep its threads from spinning beside them.
        setBLASThreads(1)
        return encoders
    }

    /// Codes of the files (nil where unreadable), encoder milliseconds per item, and
    /// the unreadable files. Encoder e takes the e-th contiguous part of the files.
    func encode(_ paths: [String], sketch: Bool, encoders: [GDHEncoder],
                progress: ((String, Int, Int) -> Void)?) throws -> EncodedSet {
        let c = model.configuration
        let filter = c.resize
        let stage = sketch ? "sketches" : "photos"
        let lock = NSLock()
        var result = EncodedSet(codes: .init(repeating: nil, count: paths.count))
        var failure: Error?
        var done = 0
        let parts = encoders.count, chunk = (paths.count + parts - 1) / parts
        DispatchQueue.concurrentPerform(iterations: parts) { part in
            let range = (part * chunk)..<min(paths.count, (part + 1) * chunk)
            for start in stride(from: range.lowerBound, to: range.upperBound, by: batchSize) {
                let batch = start..<min(range.upperBound, start + batchSize)
                do {
                    let (codes, bad, seconds) = try encodeBatch(paths, batch, size: c.imageSize, filter: filter,
                                                                sketch: sketch, encoder: encoders[part])
                    lock.lock()
                    for (i, code) in zip(batch, codes) { result.codes[i] = code }
                    result.unreadable += bad
                    result.seconds += seconds
                    done += batch.count
                    progress?(stage, done, paths.count)
                    lock.unlock()
                } catch {
                    lock.lock(); failure = failure ?? error; lock.unlock()
                    return
                }
            }
        }
        if let failure { throw failure }
        result.encoded = result.codes.lazy.filter { $0 != nil }.count
        return result
    }

    /// One batch: decode what decodes, encode it in one call.
    func encodeBatch(_ paths: [String], _ batch: Range<Int>, size: Int, filter: ResizeFilter, sketch: Bool,
                     encoder: GDHEncoder) throws -> (codes: [HammingCode?], unreadable: [String], seconds: Double) {
        var data: [Float] = []
        var readable: [Int] = []
        var unreadable: [String] = []
        for i in batch {
            guard let image = try? ImageCache.load(paths[i], size: size, filter: filter) else {
                unreadable.append(paths[i])
                continue
            }
            data += image.normalizedCHW()
            readable.append(i)
        }
        var codes = [HammingCode?](repeating: nil, count: batch.count)
        guard !readable.isEmpty else { return (codes, unreadable, 0) }
        let input = Tensor(shape: [readable.count, 3, size, size], data: data)
        let start = DispatchTime.now().uptimeNanoseconds
        let out = sketch ? try encoder.encodeSketches(input) : try encoder.encodeImages(input)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        for (k, i) in readable.enumerated() { codes[i - batch.lowerBound] = out[k] }
        return (codes, unreadable, seconds)
    }
}

/// Codes of a list of files.
struct EncodedSet {
    var codes: [HammingCode?]
    var unreadable: [String] = []
    /// Time inside the encoder (or feature extractor), summed over threads.
    var seconds = 0.0
    var encoded = 0

    var msPerItem: Double? { encoded > 0 ? seconds * 1000 / Double(encoded) : nil }
}

/// Evaluates the readable items: unreadable queries are dropped, unreadable gallery
/// photos too (query pairs are renumbered to the remaining gallery).
func scoreCodes(queries: [DatasetItem], queryCodes: [HammingCode?], gallery: [DatasetItem],
                galleryCodes: [HammingCode?], classes: [String]) -> RetrievalReport {
    var newIndex = [Int?](repeating: nil, count: gallery.count)
    var gCodes: [HammingCode] = [], gLabels: [Int] = []
    for (i, code) in galleryCodes.enumerated() {
        guard let code else { continue }
        newIndex[i] = gCodes.count
        gCodes.append(code)
        gLabels.append(gallery[i].label)
    }
    var qCodes: [HammingCode] = [], qLabels: [Int] = [], qPairs: [Int?] = []
    for (i, code) in queryCodes.enumerated() {
        guard let code else { continue }
        qCodes.append(code)
        qLabels.append(queries[i].label)
        qPairs.append(queries[i].pair.flatMap { $0 < newIndex.count ? newIndex[$0] : nil })
    }
    let anyPair = qPairs.contains { $0 != nil }
    return Retrieval.evaluate(queryCodes: qCodes, queryLabels: qLabels, galleryCodes: gCodes, galleryLabels: gLabels,
                              queryPairs: anyPair ? qPairs : nil, classNames: classes)
}

/// Baselines that need no trained model.
public enum BaselineEvaluator {
    /// HOG features (of the image resized to `hog.imageSize`) with PCA + ITQ to `bits`,
    /// fitted on the training photos and sketches of `fit` (another dataset kept apart)
    /// or else of `resolved`, never on its queries or gallery: a split without training
    /// items and no `fit` is an error.
    public static func hogITQ(dataset: Dataset, resolved: ResolvedSplit, fit: ResolvedSplit?, bits: Int, seed: UInt64,
                              hog: HOG = HOG(), threads: Int = 2) throws -> RetrievalReport {
        let source = fit ?? resolved
        let training = (source.trainPhotos + source.trainSketches).map(source.absolutePath)
        guard !training.isEmpty else {
            throw EvaluationError("""
                the \(resolved.kind.rawValue) split has no training items to fit HOG + ITQ on, and fitting on its queries \
                or gallery would be transductive: pass --fit-data DIR (another dataset)
                """)
        }
        guard !resolved.queries.isEmpty, !resolved.gallery.isEmpty else {
            throw EvaluationError("the split has \(resolved.queries.count) queries and \(resolved.gallery.count) gallery photos: nothing to evaluate")
        }
        let fitFeatures = hogFeatures(training, hog: hog, threads: threads)
        let rows = fitFeatures.features.compactMap { $0 }
        let itq = try ITQ.fit(rows.flatMap { $0 }, count: rows.count, dimension: hog.dimension, bits: bits, seed: seed)
        func codes(_ items: [DatasetItem]) throws -> (codes: [HammingCode?], set: EncodedSet) {
            let f = hogFeatures(items.map(dataset.absolutePath), hog: hog, threads: threads)
            let present = f.features.compactMap { $0 }
            var it = try itq.codes(present.flatMap { $0 }, count: present.count).makeIterator()
            return (f.features.map { $0 == nil ? nil : it.next() }, f.set)
        }
        let q = try codes(resolved.queries), g = try codes(resolved.gallery)
        var report = scoreCodes(queries: resolved.queries, queryCodes: q.codes, gallery: resolved.gallery,
                                galleryCodes: g.codes, classes: resolved.classes)
        report.method = "hog-itq"
        report.encodeMsPerQuery = q.set.msPerItem
        report.encodeMsPerImage = g.set.msPerItem
        report.skippedUnreadable = q.set.unreadable.count + g.set.unreadable.count
        return report
    }

    /// HOG of each file (nil where unreadable), on `threads` threads.
    static func hogFeatures(_ paths: [String], hog: HOG, threads: Int) -> (features: [[Float]?], set: EncodedSet) {
        var features = [[Float]?](repeating: nil, count: paths.count)
        var set = EncodedSet(codes: [])
        let lock = NSLock()
        let workers = max(1, min(threads, paths.count))
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            for i in stride(from: w, to: paths.count, by: workers) {
                let start = DispatchTime.now().uptimeNanoseconds
                let f = (try? ImageCache.load(paths[i], size: hog.imageSize, filter: .area)).map(hog.features)
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                lock.lock()
                features[i] = f
                if f == nil { set.unreadable.append(paths[i]) } else { set.seconds += seconds; set.encoded += 1 }
                lock.unlock()
            }
        }
        return (features, set)
    }
}
