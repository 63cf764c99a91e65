import Foundation
import Testing
@testable import Datasets

/// An in-memory dataset: `classes` classes, each with `photos` photos and `sketches`
/// sketches; sketch i of a class is paired with photo i % photos.
func syntheticDataset(classes: Int, photos: Int, sketches: Int, layout: DatasetLayout = .sketchy) -> Dataset {
    let names = (0..<classes).map { "c\($0)" }
    var ps: [DatasetItem] = [], ss: [DatasetItem] = []
    for (label, c) in names.enumerated() {
        let first = ps.count
        for i in 0..<photos { ps.append(DatasetItem(path: "photo/\(c)/p\(i).jpg", label: label)) }
        for i in 0..<sketches {
            ss.append(DatasetItem(path: "sketch/\(c)/p\(i % photos)-\(i).png", label: label, pair: first + i % photos))
        }
    }
    return Dataset(root: "/data", layout: layout, classes: names, photos: ps, sketches: ss)
}

func paths(_ entries: [SplitEntry]) -> Set<String> { Set(entries.map(\.path)) }

@Test func randomSplitIsDeterministicDisjointAndHoldsOutTheFractions() throws {
    let d = syntheticDataset(classes: 4, photos: 10, sketches: 20)
    let a = try Split.make(d, kind: .random, seed: 7)
    #expect(try Split.make(d, kind: .random, seed: 7) == a)
    #expect(try Split.make(d, kind: .random, seed: 8) != a)
    #expect(paths(a.trainPhotos).isDisjoint(with: paths(a.gallery)))
    #expect(paths(a.trainSketches).isDisjoint(with: paths(a.queries)))
    #expect(paths(a.trainPhotos).union(paths(a.gallery)) == Set(d.photos.map(\.path)))
    #expect(paths(a.trainSketches).union(paths(a.queries)) == Set(d.sketches.map(\.path)))
    for c in d.classes {
        #expect(a.gallery.filter { $0.label == c }.count == 2)
        #expect(a.queries.filter { $0.label == c }.count == 4)
    }
    #expect(a.testClasses == d.classes)
    // Queries prefer sketches of gallery photos: every query's photo is in the gallery.
    let gallery = paths(a.gallery)
    #expect(a.queries.allSatisfy { $0.pair.map(gallery.contains) == true })
}

@Test func randomSplitKeepsOneOfEachForTrainingAndRefusesSingletons() throws {
    let tiny = syntheticDataset(classes: 2, photos: 2, sketches: 2)
    let s = try Split.make(tiny, kind: .random, seed: 0, queryFraction: 0.9, galleryFraction: 0.01)
    #expect(s.gallery.count == 2 && s.trainPhotos.count == 2)
    #expect(s.queries.count == 2 && s.trainSketches.count == 2)
    let single = syntheticDataset(classes: 2, photos: 1, sketches: 3)
    let error = #expect(throws: DatasetError.self) { try Split.make(single, kind: .random, seed: 0) }
    #expect(error?.description.contains("class c0 has 1 photo(s)") == true)
}

@Test func zeroShotHoldsOutWholeClasses() throws {
    let d = syntheticDataset(classes: 8, photos: 3, sketches: 4)
    let s = try Split.make(d, kind: .zeroshot, seed: 1)
    #expect(s.testClasses.count == 2)
    #expect(try Split.make(d, kind: .zeroshot, seed: 1) == s)
    let test = Set(s.testClasses)
    #expect(s.queries.count == 8 && s.gallery.count == 6)
    #expect(s.queries.allSatisfy { test.contains($0.label) } && s.gallery.allSatisfy { test.contains($0.label) })
    #expect(s.trainPhotos.allSatisfy { !test.contains($0.label) } && s.trainSketches.allSatisfy { !test.contains($0.label) })
    #expect(s.trainPhotos.count == 18 && s.trainSketches.count == 24)
    let two = try Split.make(syntheticDataset(classes: 2, photos: 1, sketches: 1), kind: .zeroshot, seed: 0, testClassFraction: 0.9)
    #expect(two.testClasses.count == 1)
    #expect(throws: DatasetError.self) { try Split.make(syntheticDataset(classes: 1, photos: 2, sketches: 2), kind: .zeroshot, seed: 0) }
}

@Test func allSplitHasNoTrainingItems() throws {
    let d = syntheticDataset(classes: 3, photos: 2, sketches: 2)
    let s = try Split.make(d, kind: .all, seed: 0)
    #expect(s.trainPhotos.isEmpty && s.trainSketches.isEmpty)
    #expect(s.queries.count == 6 && s.gallery.count == 6)
    let empty = Dataset(root: "/x", layout: .plain, classes: [], photos: [], sketches: [])
    #expect(throws: DatasetError.self) { try Split.make(empty, kind: .all, seed: 0) }
}

@Test func splitFileRoundTripsAndResolves() throws {
    let dir = try TempDir()
    defer { dir.cleanup() }
    let d = syntheticDataset(classes: 3, photos: 5, sketches: 6)
    let s = try Split.make(d, kind: .random, seed: 42)
    let file = dir.path + "/model.split.json"
    try s.write(to: file)
    let text = try String(contentsOfFile: file, encoding: .utf8)
    #expect(text.contains("\"format\" : \"gdh-index-split\""))
    #expect(text.contains("\"version\" : 1"))
    #expect(try Split.read(contentsOf: file) == s)
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["model.split.json"])

    let r = try s.resolve(against: d)
    #expect(r.queries.count == s.queries.count && r.gallery.count == s.gallery.count)
    #expect(r.queries.map(\.path) == s.queries.map(\.path))
    #expect(r.gallery.map { d.classes[$0.label] } == s.gallery.map(\.label))
    // Query pairs index the gallery.
    for q in r.queries {
        let pair = try #require(q.pair)
        #expect(r.gallery[pair].path.hasPrefix((q.path as NSString).deletingLastPathComponent.replacingOccurrences(of: "sketch/", with: "photo/")))
    }
}

@Test func resolveRejectsSplitsThatDoNotMatchTheData() throws {
    let d = syntheticDataset(classes: 3, photos: 3, sketches: 3)
    var s = try Split.make(d, kind: .all, seed: 0)
    s.gallery.append(SplitEntry(path: "photo/c0/gone.jpg", label: "c0"))
    let missing = #expect(throws: DatasetError.self) { try s.resolve(against: d) }
    #expect(missing?.description.contains("photo/c0/gone.jpg is not in the dataset") == true)

    var wrongClass = try Split.make(d, kind: .all, seed: 0)
    wrongClass.queries[0].label = "c2"
    #expect(throws: DatasetError.self) { try wrongClass.resolve(against: d) }

    var extraClass = try Split.make(d, kind: .all, seed: 0)
    extraClass.classes.append("unicorn")
    let unknown = #expect(throws: DatasetError.self) { try extraClass.resolve(against: d) }
    #expect(unknown?.description.contains("unicorn") == true)
}

@Test func readRejectsOtherFiles() throws {
    let dir = try TempDir()
    defer { dir.cleanup() }
    try dir.write("x.json", bytes: Array(#"{"format": "something-else", "version": 1}"#.utf8))
    let error = #expect(throws: DatasetError.self) { try Split.read(contentsOf: dir.path + "/x.json") }
    #expect(error?.description.contains("not a gdh-index split file") == true)
    #expect(throws: DatasetError.self) { try Split.read(contentsOf: dir.path + "/none.json") }
}

@Test func seededShuffleIsAPermutationAndReproducible() {
    let x = seededShuffle(Array(0..<50), seed: 3)
    #expect(x == seededShuffle(Array(0..<50), seed: 3))
    #expect(x != seededShuffle(Array(0..<50), seed: 4))
    #expect(x.sorted() == Array(0..<50) && x != Array(0..<50))
}

@Test func chosenSplitPrefersTheOptionThenTheModelsSplitThenRandom() throws {
    let d = syntheticDataset(classes: 4, photos: 10, sketches: 20)
    let dir = NSTemporaryDirectory() + "gdh-split-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let model = dir + "/m.safetensors"
    // No option, no split beside the model: random with the seed.
    let none = try Split.chosen(option: nil, model: model, dataset: d, seed: 3)
    #expect(none.split == (try Split.make(d, kind: .random, seed: 3)) && none.origin == "random, seed 3" && !none.fromModel)
    // The model's training split when it exists.
    let trained = try Split.make(d, kind: .zeroshot, seed: 9)
    try trained.write(to: model + ".split.json")
    let beside = try Split.chosen(option: nil, model: model, dataset: d, seed: 3)
    #expect(beside.split == trained && beside.fromModel && beside.origin == "file \(model).split.json")
    // An option wins over the model's split: a kind, or a file.
    let all = try Split.chosen(option: "all", model: model, dataset: d, seed: 3)
    #expect(all.split == (try Split.make(d, kind: .all, seed: 3)) && !all.fromModel)
    let file = try Split.chosen(option: model + ".split.json", model: nil, dataset: d, seed: 0)
    #expect(file.split == trained && !file.fromModel)
    // Neither a kind nor an existing file.
    #expect(throws: DatasetError.self) { try Split.chosen(option: dir + "/nope", model: nil, dataset: d, seed: 0) }
}
