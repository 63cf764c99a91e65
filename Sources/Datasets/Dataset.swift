import Foundation

/// One photo or sketch of a dataset.
public struct DatasetItem: Codable, Hashable, Sendable {
    /// The file, relative to the dataset's root (TU-Berlin photos from another directory
    /// are reached with `../` components).
    public var path: String
    /// Index into `Dataset.classes` (or into `ResolvedSplit.classes`).
    public var label: Int
    /// For a sketch: the index of the photo it was drawn from (into `Dataset.photos`, or
    /// into the gallery / training photos of a `ResolvedSplit`), nil if unknown or absent.
    public var pair: Int?

    public init(path: String, label: Int, pair: Int? = nil) {
        self.path = path
        self.label = label
        self.pair = pair
    }
}

/// How a dataset's files are arranged on disk.
public enum DatasetLayout: String, Codable, Sendable, CaseIterable {
    /// `ROOT/images/<class>/*` and `ROOT/sketches/<class>/*`.
    case plain
    /// `ROOT/photo/<augmentation>/<class>/<name>.jpg`, `ROOT/sketch/<augmentation>/<class>/<name>-<n>.png`.
    case sketchy
    /// `ROOT/<class>/*.png` or `ROOT/png/<class>/*.png` (sketches), photos from another directory.
    case tuberlin
}

/// Why a dataset could not be loaded or split.
public struct DatasetError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A set of labelled photos and sketches: classes are the folder names, sorted, and
/// every class has at least one photo and one sketch. Files are sorted by path, so a
/// dataset loads the same way every time.
public struct Dataset: Sendable {
    /// The directory the item paths are relative to (as given, without a trailing "/").
    public let root: String
    public let layout: DatasetLayout
    /// Class names, sorted; `DatasetItem.label` indexes this.
    public let classes: [String]
    public let photos: [DatasetItem]
    public let sketches: [DatasetItem]

    /// Image file extensions that are loaded (compared case-insensitively).
    public static let extensions: Set<String> = ["png", "jpg", "jpeg"]

    public init(root: String, layout: DatasetLayout, classes: [String], photos: [DatasetItem], sketches: [DatasetItem]) {
        self.root = root
        self.layout = layout
        self.classes = classes
        self.photos = photos
        self.sketches = sketches
    }

    /// Loads a dataset. `layout` nil detects plain (`images/` and `sketches/`) or Sketchy
    /// (`photo/` and `sketch/`); TU-Berlin must be asked for and needs `photosRoot` (a
    /// folder per class of photos, e.g. TU-Berlin Extended's). `augmentation` picks
    /// Sketchy's augmentation folder (default: the first in sorted order).
    public static func load(root: String, layout: DatasetLayout? = nil, augmentation: String? = nil,
                            photosRoot: String? = nil) throws -> Dataset {
        let root = trimmedDirectory(root)
        guard isDirectory(root) else { throw DatasetError("dataset directory \(root) does not exist") }
        let chosen = try layout ?? detectLayout(root)
        let tree: ClassTree
        switch chosen {
        case .plain:
            tree = try loadPlain(root)
        case .sketchy:
            tree = try loadSketchy(root, augmentation: augmentation)
        case .tuberlin:
            guard let photosRoot else {
                throw DatasetError("the tuberlin layout needs a photo directory (a folder per class): pass --photos DIR")
            }
            tree = try loadTUBerlin(root, photosRoot: trimmedDirectory(photosRoot))
        }
        return try assemble(root: root, layout: chosen, tree: tree)
    }

    /// The item's file as a path usable to open it.
    public func absolutePath(_ item: DatasetItem) -> String {
        Dataset.join(root, item.path)
    }

    static func join(_ root: String, _ relative: String) -> String {
        if relative.hasPrefix("/") { return relative }
        return (root.isEmpty ? "." : root) + "/" + relative
    }
}

// MARK: - Layouts

/// Per class, the relative paths of its photos and sketches.
struct ClassTree {
    var photos: [String: [String]] = [:]
    var sketches: [String: [String]] = [:]
}

extension Dataset {
    static func detectLayout(_ root: String) throws -> DatasetLayout {
        if isDirectory(root + "/images") && isDirectory(root + "/sketches") { return .plain }
        if isDirectory(root + "/photo") && isDirectory(root + "/sketch") { return .sketchy }
        throw DatasetError("""
            cannot tell the layout of \(root): expected images/ and sketches/ (plain) or photo/ and sketch/ \
            (sketchy); for TU-Berlin pass --layout tuberlin --photos DIR
            """)
    }

    static func loadPlain(_ root: String) throws -> ClassTree {
        ClassTree(photos: try filesPerClass(root, under: "images"), sketches: try filesPerClass(root, under: "sketches"))
    }

    static func loadSketchy(_ root: String, augmentation: String?) throws -> ClassTree {
        let photoAug = try augmentationFolder(root, side: "photo", requested: augmentation)
        let sketchAug = try augmentationFolder(root, side: "sketch", requested: augmentation)
        return ClassTree(photos: try filesPerClass(root, under: "photo/" + photoAug),
                         sketches: try filesPerClass(root, under: "sketch/" + sketchAug))
    }

    static func augmentationFolder(_ root: String, side: String, requested: String?) throws -> String {
        let folders = try subdirectories(root + "/" + side)
        if let requested {
            guard folders.contains(requested) else {
                throw DatasetError("\(root)/\(side) has no augmentation folder \(requested) (found: \(folders.joined(separator: ", ")))")
            }
            return requested
        }
        guard let first = folders.first else { throw DatasetError("\(root)/\(side) has no augmentation folders") }
        return first
    }

    static func loadTUBerlin(_ root: String, photosRoot: String) throws -> ClassTree {
        guard isDirectory(photosRoot) else { throw DatasetError("photo directory \(photosRoot) does not exist") }
        let sketchDir = isDirectory(root + "/png") ? "png" : ""
        var sketches = try filesPerClass(root, under: sketchDir)
        let prefix = relativePath(from: root, to: photosRoot)
        // A photo folder inside the sketch folder is not a class.
        if sketchDir.isEmpty && !prefix.isEmpty && !prefix.contains("/") && prefix != ".." { sketches[prefix] = nil }
        var photos = try filesPerClass(photosRoot, under: "")
        for (c, files) in photos { photos[c] = files.map { prefix.isEmpty ? $0 : prefix + "/" + $0 } }
        return ClassTree(photos: photos, sketches: sketches)
    }

    /// Class folder → sorted image paths relative to `root`, for `root/under/<class>/*`.
    static func filesPerClass(_ root: String, under: String) throws -> [String: [String]] {
        let base = under.isEmpty ? root : root + "/" + under
        var out: [String: [String]] = [:]
        for c in try subdirectories(base) {
            let files = try imageFiles(in: base + "/" + c)
            if files.isEmpty { continue }
            out[c] = files.map { (under.isEmpty ? "" : under + "/") + c + "/" + $0 }
        }
        return out
    }

    /// Builds the dataset: the union of classes (each must have photos and sketches),
    /// labels, and for Sketchy the pairs (a sketch `<name>-<n>` or `<name>` goes with the
    /// photo `<name>` of its class). Other layouts have no pairs: equal file names there
    /// say nothing (`gdh synth` draws sketch n independently of photo n).
    static func assemble(root: String, layout: DatasetLayout, tree: ClassTree) throws -> Dataset {
        let classes = Set(tree.photos.keys).union(tree.sketches.keys).sorted()
        guard !classes.isEmpty else { throw DatasetError("dataset \(root) (\(layout.rawValue) layout) has no images") }
        for c in classes {
            if tree.sketches[c] == nil { throw DatasetError("class \(c) has photos but no sketches in \(root)") }
            if tree.photos[c] == nil { throw DatasetError("class \(c) has sketches but no photos in \(root)") }
        }
        var photos: [DatasetItem] = []
        var sketches: [DatasetItem] = []
        for (label, c) in classes.enumerated() {
            var byStem: [String: Int] = [:]
            for p in tree.photos[c] ?? [] {
                byStem[stem(p)] = byStem[stem(p)] ?? photos.count
                photos.append(DatasetItem(path: p, label: label))
            }
            for s in tree.sketches[c] ?? [] {
                let name = stem(s)
                let pair = layout == .sketchy ? byStem[name] ?? byStem[sketchBaseName(name)] : nil
                sketches.append(DatasetItem(path: s, label: label, pair: pair))
            }
        }
        return Dataset(root: root, layout: layout, classes: classes, photos: photos, sketches: sketches)
    }
}

// MARK: - File system helpers

extension Dataset {
    static func trimmedDirectory(_ path: String) -> String {
        var p = path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        return p
    }

    static func isDirectory(_ path: String) -> Bool {
        var dir: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &dir) && dir.boolValue
    }

    /// Visible subdirectories, sorted.
    static func subdirectories(_ path: String) throws -> [String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else {
            throw DatasetError("cannot read directory \(path)")
        }
        return names.filter { !$0.hasPrefix(".") && isDirectory(path + "/" + $0) }.sorted()
    }

    /// Visible image files (png, jpg, jpeg in any case) directly in `path`, sorted.
    static func imageFiles(in path: String) throws -> [String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else {
            throw DatasetError("cannot read directory \(path)")
        }
        return names.filter { name in
            !name.hasPrefix(".") && extensions.contains((name as NSString).pathExtension.lowercased())
                && !isDirectory(path + "/" + name)
        }.sorted()
    }

    /// The file name without directory and extension.
    static func stem(_ path: String) -> String {
        ((path as NSString).lastPathComponent as NSString).deletingPathExtension
    }

    /// Sketchy's sketch names are `<photo name>-<n>`: the part before the last "-<digits>".
    static func sketchBaseName(_ name: String) -> String {
        guard let dash = name.lastIndex(of: "-") else { return name }
        let suffix = name[name.index(after: dash)...]
        guard !suffix.isEmpty, suffix.allSatisfy(\.isASCII), suffix.allSatisfy(\.isNumber) else { return name }
        return String(name[..<dash])
    }

    /// `to` relative to `from` (both directories), e.g. "../photos"; "" when equal.
    static func relativePath(from: String, to: String) -> String {
        let a = canonicalComponents(from), b = canonicalComponents(to)
        var common = 0
        while common < a.count && common < b.count && a[common] == b[common] { common += 1 }
        let ups = Array(repeating: "..", count: a.count - common)
        return (ups + b[common...]).joined(separator: "/")
    }

    static func canonicalComponents(_ path: String) -> [String] {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        let resolved = URL(fileURLWithPath: absolute).resolvingSymlinksInPath().standardizedFileURL.path
        return resolved.split(separator: "/").map(String.init)
    }
}
