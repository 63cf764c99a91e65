import Foundation
import HammingCode

/// How a split divides a dataset.
public enum SplitKind: String, Codable, Sendable, CaseIterable {
    /// Per class: some sketches are queries and some photos the gallery; the rest trains.
    case random
    /// Whole classes held out: their sketches are the queries, their photos the gallery.
    case zeroshot
    /// Everything is query or gallery, nothing trains (a dataset kept apart from training).
    case all
}

/// One file of a split, by path and class name, so a split file stays valid when the
/// dataset gains classes or files.
public struct SplitEntry: Codable, Hashable, Sendable {
    /// Relative to the dataset's root, as in `DatasetItem.path`.
    public var path: String
    /// The class name.
    public var label: String
    /// For a sketch: the path of its paired photo, if known.
    public var pair: String?

    public init(path: String, label: String, pair: String? = nil) {
        self.path = path
        self.label = label
        self.pair = pair
    }
}

/// A division of a dataset into training items, query sketches and gallery photos.
/// Stored as JSON (`write(to:)`, `read(contentsOf:)`) so that training and evaluation
/// use the same items, and so that results can be reproduced.
public struct Split: Codable, Equatable, Sendable {
    public static let format = "gdh-index-split"
    public static let version = 1

    public var kind: SplitKind
    public var seed: UInt64
    public var layout: DatasetLayout
    /// Every class of the dataset, sorted.
    public var classes: [String]
    /// The classes queries and gallery come from (all of them except for zero-shot).
    public var testClasses: [String]
    public var trainPhotos: [SplitEntry]
    public var trainSketches: [SplitEntry]
    /// Query sketches.
    public var queries: [SplitEntry]
    /// Gallery photos.
    public var gallery: [SplitEntry]

    public init(kind: SplitKind, seed: UInt64, layout: DatasetLayout, classes: [String], testClasses: [String],
                trainPhotos: [SplitEntry], trainSketches: [SplitEntry], queries: [SplitEntry], gallery: [SplitEntry]) {
        self.kind = kind
        self.seed = seed
        self.layout = layout
        self.classes = classes
        self.testClasses = testClasses
        self.trainPhotos = trainPhotos
        self.trainSketches = trainSketches
        self.queries = queries
        self.gallery = gallery
    }

    enum CodingKeys: String, CodingKey {
        case format, version, kind, seed, layout, classes, testClasses, trainPhotos, trainSketches, queries, gallery
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let format = try c.decodeIfPresent(String.self, forKey: .format)
        guard format == Split.format else {
            throw DatasetError("not a gdh-index split file (format is \(format ?? "missing"), expected \(Split.format))")
        }
        let version = try c.decode(Int.self, forKey: .version)
        guard version == Split.version else {
            throw DatasetError("split file version \(version) is not supported (this build reads \(Split.version))")
        }
        kind = try c.decode(SplitKind.self, forKey: .kind)
        seed = try c.decode(UInt64.self, forKey: .seed)
        layout = try c.decode(DatasetLayout.self, forKey: .layout)
        classes = try c.decode([String].self, forKey: .classes)
        testClasses = try c.decode([String].self, forKey: .testClasses)
        trainPhotos = try c.decode([SplitEntry].self, forKey: .trainPhotos)
        trainSketches = try c.decode([SplitEntry].self, forKey: .trainSketches)
        queries = try c.decode([SplitEntry].self, forKey: .queries)
        gallery = try c.decode([SplitEntry].self, forKey: .gallery)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(Split.format, forKey: .format)
        try c.encode(Split.version, forKey: .version)
        try c.encode(kind, forKey: .kind)
        try c.encode(seed, forKey: .seed)
        try c.encode(layout, forKey: .layout)
        try c.encode(classes, forKey: .classes)
        try c.encode(testClasses, forKey: .testClasses)
        try c.encode(trainPhotos, forKey: .trainPhotos)
        try c.encode(trainSketches, forKey: .trainSketches)
        try c.encode(queries, forKey: .queries)
        try c.encode(gallery, forKey: .gallery)
    }

    /// Writes the split as pretty-printed JSON with sorted keys, atomically (a temporary
    /// file in the same directory, then a rename).
    public func write(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        var data = try encoder.encode(self)
        data.append(0x0A)
        let temp = path + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: temp, contents: data) else {
            throw DatasetError("cannot write split file \(temp): \(String(cString: strerror(errno)))")
        }
        guard rename(temp, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temp)
            throw DatasetError("cannot write split file \(path): \(reason)")
        }
    }

    /// Reads a split file written by `write(to:)`.
    public static func read(contentsOf path: String) throws -> Split {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DatasetError("cannot read split file \(path)")
        }
        do {
            return try JSONDecoder().decode(Split.self, from: data)
        } catch let e as DatasetError {
            throw DatasetError("\(path): \(e.description)")
        } catch {
            throw DatasetError("\(path) is not a valid split file: \(error)")
        }
    }
}

// MARK: - Making splits

extension Split {
    /// Splits a dataset. `random`: per class, `queryFraction` of its sketches become
    /// queries and `galleryFraction` of its photos the gallery (at least one of each, and
    /// at least one of each left to train); sketches whose paired photo is in the gallery
    /// are preferred as queries, so that acc@K can be measured. `zeroshot`: round(
    /// `testClassFraction` × classes) whole classes (at least one, at least one left) are
    /// held out. `all`: every sketch a query, every photo in the gallery. Deterministic
    /// for a given dataset and seed (a seeded Fisher-Yates shuffle over SplitMix64).
    public static func make(_ dataset: Dataset, kind: SplitKind, seed: UInt64, queryFraction: Double = 0.2,
                            galleryFraction: Double = 0.2, testClassFraction: Double = 0.25) throws -> Split {
        guard !dataset.photos.isEmpty, !dataset.sketches.isEmpty else {
            throw DatasetError("cannot split an empty dataset")
        }
        var split = Split(kind: kind, seed: seed, layout: dataset.layout, classes: dataset.classes, testClasses: [],
                          trainPhotos: [], trainSketches: [], queries: [], gallery: [])
        let groups = SplitGroups(dataset)
        switch kind {
        case .random:
            for f in [queryFraction, galleryFraction] where !(f > 0 && f < 1) {
                throw DatasetError("query and gallery fractions must be between 0 and 1, not \(f)")
            }
            split.testClasses = dataset.classes
            for label in dataset.classes.indices {
                try split.addRandom(label: label, groups: groups, seed: seed,
                                    queryFraction: queryFraction, galleryFraction: galleryFraction)
            }
        case .zeroshot:
            try split.addZeroShot(groups: groups, seed: seed, fraction: testClassFraction)
        case .all:
            split.testClasses = dataset.classes
            split.queries = dataset.sketches.map(groups.entry)
            split.gallery = dataset.photos.map(groups.entry)
        }
        return split
    }

    /// Held-out count: round(fraction × n), at least 1 and at most n - 1.
    static func heldOut(_ fraction: Double, of n: Int) -> Int {
        min(n - 1, max(1, Int((fraction * Double(n)).rounded())))
    }

    mutating func addRandom(label: Int, groups: SplitGroups, seed: UInt64,
                            queryFraction: Double, galleryFraction: Double) throws {
        let name = classes[label]
        let photos = groups.photos[label], sketches = groups.sketches[label]
        guard photos.count >= 2, sketches.count >= 2 else {
            throw DatasetError("""
                class \(name) has \(photos.count) photo(s) and \(sketches.count) sketch(es): a random split needs \
                at least 2 of each (one to test, one to train)
                """)
        }
        var rng = SplitMix64(seed: seed ^ stableHash(name))
        let shuffledPhotos = seededShuffle(photos, using: &rng)
        let nGallery = Split.heldOut(galleryFraction, of: photos.count)
        let galleryIDs = Set(shuffledPhotos.prefix(nGallery))
        var shuffledSketches = seededShuffle(sketches, using: &rng)
        // Sketches of gallery photos first (a stable partition keeps the shuffle's order).
        let pairedFirst = shuffledSketches.filter { groups.pairOf($0).map(galleryIDs.contains) ?? false }
        shuffledSketches = pairedFirst + shuffledSketches.filter { !(groups.pairOf($0).map(galleryIDs.contains) ?? false) }
        let nQueries = Split.heldOut(queryFraction, of: sketches.count)
        let queryIDs = Set(shuffledSketches.prefix(nQueries))
        // Keep dataset order inside each part.
        for p in photos {
            if galleryIDs.contains(p) { gallery.append(groups.photoEntry(p)) } else { trainPhotos.append(groups.photoEntry(p)) }
        }
        for s in sketches {
            if queryIDs.contains(s) { queries.append(groups.sketchEntry(s)) } else { trainSketches.append(groups.sketchEntry(s)) }
        }
    }

    mutating func addZeroShot(groups: SplitGroups, seed: UInt64, fraction: Double) throws {
        guard classes.count >= 2 else {
            throw DatasetError("a zero-shot split needs at least 2 classes, the dataset has \(classes.count)")
        }
        guard fraction > 0 && fraction < 1 else {
            throw DatasetError("the test class fraction must be between 0 and 1, not \(fraction)")
        }
        var rng = SplitMix64(seed: seed ^ 0x5A45_524F_5348_4F54)
        let nTest = Split.heldOut(fraction, of: classes.count)
        let test = Set(seededShuffle(Array(classes.indices), using: &rng).prefix(nTest))
        testClasses = test.sorted().map { classes[$0] }
        for label in classes.indices {
            let photos = groups.photos[label].map(groups.photoEntry), sketches = groups.sketches[label].map(groups.sketchEntry)
            if test.contains(label) {
                gallery += photos
                queries += sketches
            } else {
                trainPhotos += photos
                trainSketches += sketches
            }
        }
    }
}

/// A dataset's item indices grouped by class, and their split entries.
struct SplitGroups {
    let dataset: Dataset
    /// Per label, indices into `dataset.photos` / `dataset.sketches`.
    var photos: [[Int]]
    var sketches: [[Int]]

    init(_ dataset: Dataset) {
        self.dataset = dataset
        photos = Array(repeating: [], count: dataset.classes.count)
        sketches = photos
        for (i, p) in dataset.photos.enumerated() { photos[p.label].append(i) }
        for (i, s) in dataset.sketches.enumerated() { sketches[s.label].append(i) }
    }

    func pairOf(_ sketch: Int) -> Int? { dataset.sketches[sketch].pair }

    func photoEntry(_ i: Int) -> SplitEntry { entry(dataset.photos[i]) }
    func sketchEntry(_ i: Int) -> SplitEntry { entry(dataset.sketches[i]) }

    func entry(_ item: DatasetItem) -> SplitEntry {
        let pair = item.pair.flatMap { $0 < dataset.photos.count ? dataset.photos[$0].path : nil }
        return SplitEntry(path: item.path, label: dataset.classes[item.label], pair: pair)
    }
}

/// A uniform integer in 0..<n (n > 0) by rejection, so every value is equally likely.
func uniform(below n: Int, using rng: inout SplitMix64) -> Int {
    let bound = UInt64(n)
    let limit = UInt64.max - UInt64.max % bound
    while true {
        let x = rng.next()
        if x < limit { return Int(x % bound) }
    }
}

/// Fisher-Yates with SplitMix64: the same permutation for the same seed on every
/// platform and Swift version (the standard library's shuffle makes no such promise).
public func seededShuffle<T>(_ items: [T], using rng: inout SplitMix64) -> [T] {
    var a = items
    if a.count < 2 { return a }
    for i in stride(from: a.count - 1, to: 0, by: -1) {
        a.swapAt(i, uniform(below: i + 1, using: &rng))
    }
    return a
}

/// `seededShuffle(_:using:)` with a fresh SplitMix64 of `seed`.
public func seededShuffle<T>(_ items: [T], seed: UInt64) -> [T] {
    var rng = SplitMix64(seed: seed)
    return seededShuffle(items, using: &rng)
}

/// FNV-1a of the UTF-8 bytes: a per-class seed that does not depend on other classes.
func stableHash(_ s: String) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
    return h
}

// MARK: - Resolving

/// A split mapped onto a loaded dataset: items with label indices into `classes` (the
/// split's classes). Pairs: a query's `pair` indexes `gallery`, a training sketch's
/// `pair` indexes `trainPhotos` (nil when the paired photo is elsewhere or unknown).
public struct ResolvedSplit: Sendable {
    /// The directory item paths are relative to.
    public let root: String
    public let kind: SplitKind
    public let classes: [String]
    public let testClasses: [String]
    public var trainPhotos: [DatasetItem]
    public var trainSketches: [DatasetItem]
    public var queries: [DatasetItem]
    public var gallery: [DatasetItem]

    public init(root: String, kind: SplitKind, classes: [String], testClasses: [String], trainPhotos: [DatasetItem],
                trainSketches: [DatasetItem], queries: [DatasetItem], gallery: [DatasetItem]) {
        self.root = root
        self.kind = kind
        self.classes = classes
        self.testClasses = testClasses
        self.trainPhotos = trainPhotos
        self.trainSketches = trainSketches
        self.queries = queries
        self.gallery = gallery
    }

    /// The item's file as a path usable to open it.
    public func absolutePath(_ item: DatasetItem) -> String { Dataset.join(root, item.path) }

    /// Every photo and sketch of a dataset as training items (for fitting a baseline on a
    /// dataset kept apart from the evaluation data).
    public static func everythingForTraining(_ dataset: Dataset) -> ResolvedSplit {
        ResolvedSplit(root: dataset.root, kind: .all, classes: dataset.classes, testClasses: [],
                      trainPhotos: dataset.photos, trainSketches: dataset.sketches, queries: [], gallery: [])
    }
}

extension Split {
    /// Maps the split's entries to the dataset's items. Errors name the first entry whose
    /// file is not in the dataset, whose class differs from the dataset's, or a class the
    /// dataset does not have.
    public func resolve(against dataset: Dataset) throws -> ResolvedSplit {
        let known = Set(dataset.classes)
        if let missing = classes.first(where: { !known.contains($0) }) {
            throw DatasetError("the split's class \(missing) is not in the dataset \(dataset.root)")
        }
        let labelOf = Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($1, $0) })
        let photoClass = Dictionary(dataset.photos.map { ($0.path, dataset.classes[$0.label]) }, uniquingKeysWith: { a, _ in a })
        let sketchClass = Dictionary(dataset.sketches.map { ($0.path, dataset.classes[$0.label]) }, uniquingKeysWith: { a, _ in a })
        func items(_ entries: [SplitEntry], _ inDataset: [String: String], _ what: String) throws -> [DatasetItem] {
            try entries.map { e in
                guard let actual = inDataset[e.path] else {
                    throw DatasetError("the split's \(what) \(e.path) is not in the dataset \(dataset.root)")
                }
                guard actual == e.label, let label = labelOf[e.label] else {
                    throw DatasetError("the split puts \(e.path) in class \(e.label), the dataset in class \(actual)")
                }
                return DatasetItem(path: e.path, label: label)
            }
        }
        var r = ResolvedSplit(root: dataset.root, kind: kind, classes: classes, testClasses: testClasses,
                              trainPhotos: try items(trainPhotos, photoClass, "photo"),
                              trainSketches: try items(trainSketches, sketchClass, "sketch"),
                              queries: try items(queries, sketchClass, "query sketch"),
                              gallery: try items(gallery, photoClass, "gallery photo"))
        r.queries = Split.linkPairs(r.queries, queries, to: gallery)
        r.trainSketches = Split.linkPairs(r.trainSketches, trainSketches, to: trainPhotos)
        return r
    }

    static func linkPairs(_ items: [DatasetItem], _ entries: [SplitEntry], to photos: [SplitEntry]) -> [DatasetItem] {
        let index = Dictionary(photos.enumerated().map { ($1.path, $0) }, uniquingKeysWith: { a, _ in a })
        return zip(items, entries).map { item, entry in
            var item = item
            item.pair = entry.pair.flatMap { index[$0] }
            return item
        }
    }
}

// MARK: - The split an evaluation uses

extension Split {
    /// The split `gdh eval` uses, and where it came from: `option` (`random`, `zeroshot`,
    /// `all`, made with `seed`, or the path of a split file) when given; otherwise the
    /// training split beside `model` (`MODEL.split.json`) when that file exists
    /// (`fromModel` is then true); otherwise `random` with `seed`.
    public static func chosen(option: String?, model: String?, dataset: Dataset, seed: UInt64)
        throws -> (split: Split, origin: String, fromModel: Bool)
    {
        if option == nil, let model, FileManager.default.fileExists(atPath: model + ".split.json") {
            let path = model + ".split.json"
            return (try read(contentsOf: path), "file \(path)", true)
        }
        let name = option ?? SplitKind.random.rawValue
        if let kind = SplitKind(rawValue: name) {
            return (try make(dataset, kind: kind, seed: seed), "\(kind.rawValue), seed \(seed)", false)
        }
        guard FileManager.default.fileExists(atPath: name) else {
            throw DatasetError("--split must be random, zeroshot, all or a split file; \(name) does not exist")
        }
        return (try read(contentsOf: name), "file \(name)", false)
    }
}
