import ArgumentParser
import Datasets
import Evaluation
import Foundation
import GDHCommandLine
import GDH
import HammingCode

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: Siblings.abstract(of: "eval"),
        discussion: """
        Query sketches are encoded as sign(H(G_I(sketch))), gallery photos as sign(H(photo)), each \
        prepared exactly as the daemon prepares its input; the gallery is ranked for every query \
        through the daemon's multi-index. mAP@all, precision@K and acc@K are tie-aware: items at \
        equal Hamming distance count with their expected precision over every order of the tie.

        The split: --split random|zeroshot|all (made from --seed), or a split file. Without \
        --split, MODEL.split.json (written by gdh train next to the model) is used when it exists, \
        else a random split with seed 0 (the trainer's default).

        The baseline (--baseline hog-itq) fits PCA + ITQ on the split's training items, never on \
        its queries or gallery; an `all` split has none, so it needs --fit-data DIR (another dataset).
        """
    )

    @Option(help: ArgumentHelp("The model file to evaluate.", valueName: "path")) var model: String?
    @Option(help: ArgumentHelp("Evaluate a baseline instead of a model: hog-itq.", valueName: "name")) var baseline: String?
    @Option(help: ArgumentHelp("The dataset directory.", valueName: "dir")) var data: String
    @Option(help: ArgumentHelp("random, zeroshot, all, or a split file (default: MODEL.split.json if present, else random).", valueName: "split"))
    var split: String?
    @Option(help: "Seed of a random or zero-shot split.") var seed: UInt64 = 0
    @Option(help: ArgumentHelp("Dataset layout: plain, sketchy or tuberlin (default: detected; tuberlin must be given).", valueName: "layout"))
    var layout: String?
    @Option(help: ArgumentHelp("TU-Berlin layout: the directory of photos, a folder per class.", valueName: "dir")) var photos: String?
    @Option(help: ArgumentHelp("Sketchy layout: the augmentation folder (default: the first in sorted order).", valueName: "name"))
    var augmentation: String?
    @Option(help: "Baseline: code bits (32 to 1024 in steps of 32).") var bits: Int = 64
    @Option(help: "Baseline: the side images are resized to before HOG.") var hogSize: Int = 64
    @Option(help: ArgumentHelp("Baseline: fit on every item of this other dataset (needed for --split all).", valueName: "dir"))
    var fitData: String?
    @Option(help: ArgumentHelp("Write the split used to this file (JSON).", valueName: "path")) var writeSplit: String?
    @Option(help: ArgumentHelp("Write the precision-recall curve to this file (SVG).", valueName: "path")) var prSvg: String?
    @Option(help: "Threads for encoding (two encoders from 2 on).") var threads: Int = 2
    @Flag(help: "Print one JSON object (sorted keys) instead of text.") var json = false

    func validate() throws {
        guard (model == nil) != (baseline == nil) else { throw ValidationError("give either --model MODEL or --baseline hog-itq") }
        if let baseline, baseline != "hog-itq" { throw ValidationError("unknown baseline \(baseline): the baseline is hog-itq") }
        if let layout, DatasetLayout(rawValue: layout) == nil { throw ValidationError("--layout must be plain, sketchy or tuberlin") }
        guard (1...64).contains(threads) else { throw ValidationError("--threads must be 1 to 64") }
        guard (try? CodeWidth(bits: bits)) != nil else { throw ValidationError("--bits must be 32 to 1024 in steps of 32") }
        guard hogSize >= 16, hogSize % 8 == 0, hogSize <= 512 else { throw ValidationError("--hog-size must be a multiple of 8 from 16 to 512") }
        if fitData != nil && baseline == nil { throw ValidationError("--fit-data is for --baseline only") }
    }

    func run() throws {
        let dataset: Dataset
        do {
            dataset = try Dataset.load(root: data, layout: layout.flatMap(DatasetLayout.init), augmentation: augmentation, photosRoot: photos)
        } catch { throw Failure("\(error)") }
        let (chosen, origin) = try chooseSplit(dataset)
        let resolved: ResolvedSplit
        do { resolved = try chosen.resolve(against: dataset) } catch {
            throw Failure("the split (\(origin)) does not match the data in \(data): \(error)")
        }
        if let writeSplit {
            do { try chosen.write(to: writeSplit) } catch { throw Failure("\(error)") }
        }
        let report = try evaluate(dataset, resolved)
        if let prSvg {
            guard FileManager.default.createFile(atPath: prSvg, contents: Data(report.prCurveSVG().utf8)) else {
                throw Failure("cannot write \(prSvg)")
            }
        }
        if report.skippedUnreadable > 0 {
            note("warning: skipped \(report.skippedUnreadable) unreadable query or gallery files")
        }
        output(report, split: chosen, origin: origin)
    }

    /// The split and where it came from (Split.chosen; a note when it is the model's).
    func chooseSplit(_ dataset: Dataset) throws -> (Split, String) {
        do {
            let c = try Split.chosen(option: split, model: model, dataset: dataset, seed: seed)
            if c.fromModel { note("using the training split \(model ?? "").split.json") }
            return (c.split, c.origin)
        } catch {
            throw Failure("\(error)")
        }
    }

    func evaluate(_ dataset: Dataset, _ resolved: ResolvedSplit) throws -> RetrievalReport {
        if baseline != nil { return try evaluateBaseline(dataset, resolved) }
        guard let model else { throw Failure("no model given") }
        let gdh: GDHModel
        do { gdh = try GDHModel.read(contentsOf: model) } catch { throw Failure("\(error)") }
        let lock = NSLock()
        var bars: [String: ProgressBar] = [:]
        do {
            return try ModelEvaluator(model: gdh, threads: threads).evaluate(dataset, resolved) { stage, done, total in
                lock.lock(); defer { lock.unlock() }
                var bar = bars[stage] ?? ProgressBar(total: total, label: "encode \(stage)")
                bar.update(done, force: done == total)
                if done == total { bar.finish() }
                bars[stage] = bar
            }
        } catch { throw Failure("\(error)") }
    }

    func evaluateBaseline(_ dataset: Dataset, _ resolved: ResolvedSplit) throws -> RetrievalReport {
        var fit: ResolvedSplit?
        if let fitData {
            guard canonicalPath(fitData) != canonicalPath(data) else {
                throw Failure("--fit-data must be another dataset than --data (fitting on the test items is transductive)")
            }
            do { fit = ResolvedSplit.everythingForTraining(try Dataset.load(root: fitData)) } catch {
                throw Failure("--fit-data: \(error)")
            }
        }
        do {
            return try BaselineEvaluator.hogITQ(dataset: dataset, resolved: resolved, fit: fit, bits: bits, seed: seed,
                                                hog: HOG(imageSize: hogSize), threads: threads)
        } catch { throw Failure("\(error)") }
    }

    func output(_ report: RetrievalReport, split: Split, origin: String) {
        if json {
            var object = report.jsonObject
            object["split"] = ["kind": split.kind.rawValue, "seed": split.seed, "origin": origin,
                               "test_classes": split.testClasses.count] as [String: Any]
            object["data"] = data
            if let model { object["model"] = model }
            printJSON(object)
            return
        }
        print("split: \(origin) (\(split.testClasses.count) test classes)")
        for line in report.textLines { print(line) }
        if let prSvg { print("precision-recall curve: \(prSvg)") }
    }

    func note(_ message: String) {
        FileHandle.standardError.write(Data((message + "\n").utf8))
    }
}
