import ArgumentParser
import Datasets
import Foundation
import GDHCommandLine

extension PhotoStyle: ExpressibleByArgument {}
extension SketchStyle: ExpressibleByArgument {}

/// `gdh synth`: writes a synthetic sketch/photo data set in the plain layout.
struct Synth: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synth",
        abstract: Siblings.abstract(of: "synth"),
        discussion: """
        Each category is a parametric composition of parts. Photos are filled, coloured, \
        textured and shaded on cluttered backgrounds; sketches are drawn independently as \
        hand-drawn strokes on white. The same arguments give the same bytes on any number \
        of cores. The output directory must be new, empty, or already hold the layout \
        (numbered PNGs of the written classes beyond the new counts are then removed).
        """
    )

    @Option(help: ArgumentHelp("The output directory (required unless --list).", valueName: "dir"))
    var out: String?

    @Option(help: "How many categories (the first N of the \(Datasets.Synth.categoryNames.count)).")
    var classes: Int = Datasets.Synth.categoryNames.count

    @Option(name: .customLong("per-class"), help: "Photos per category.")
    var perClass: Int = 100

    @Option(name: .customLong("sketches-per-class"), help: "Sketches per category (default: --per-class).")
    var sketchesPerClass: Int?

    @Option(help: "Seed: the same seed and options give the same images.")
    var seed: UInt64 = 1

    @Option(help: ArgumentHelp("Width and height of the square images (32 to 1024).", valueName: "px"))
    var size: Int = 128

    @Option(name: .customLong("photo-style"),
            help: "standard (textured, shaded, cluttered), flat (cartoon colours, plain background) or grainy (noisy, low contrast, colour cast).")
    var photoStyle: PhotoStyle = .standard

    @Option(name: .customLong("sketch-style"),
            help: "standard (hand-drawn), shaky (strong jitter, more extra strokes) or clean (thin precise strokes, no extras).")
    var sketchStyle: SketchStyle = .standard

    @Flag(name: .customLong("list"), help: "Print the category names, one a line, and exit.")
    var list = false

    var options: SynthOptions {
        SynthOptions(classes: classes, photosPerClass: perClass, sketchesPerClass: sketchesPerClass, seed: seed,
                     size: size, photoStyle: photoStyle, sketchStyle: sketchStyle)
    }

    func validate() throws {
        if list { return }
        guard let out else { throw ValidationError("--out DIR is required") }
        let n = Datasets.Synth.categoryNames.count
        guard (1...n).contains(classes) else { throw ValidationError("--classes must be 1 to \(n), got \(classes)") }
        guard perClass >= 1 else { throw ValidationError("--per-class must be at least 1, got \(perClass)") }
        if let k = sketchesPerClass, k < 1 {
            throw ValidationError("--sketches-per-class must be at least 1, got \(k)")
        }
        guard SynthOptions.sizes.contains(size) else {
            throw ValidationError("--size must be \(SynthOptions.sizes.lowerBound) to \(SynthOptions.sizes.upperBound), got \(size)")
        }
        do {
            try options.validate()
            try Datasets.Synth.checkOutputDirectory(out)
        } catch let e as SynthError {
            throw ValidationError(e.description)
        }
    }

    func run() throws {
        guard !list, let out else {
            for name in Datasets.Synth.categoryNames { print(name) }
            return
        }
        let start = Date()
        let summary: SynthSummary
        do {
            summary = try Datasets.Synth.write(to: out, options: options)
        } catch {
            throw Failure("\(error)")
        }
        let seconds = Date().timeIntervalSince(start)
        print("synth: \(summary.classes.count) classes, \(summary.photos) photos, \(summary.sketches) sketches "
            + "(\(options.size) px, photo \(photoStyle.rawValue), sketch \(sketchStyle.rawValue)) in "
            + String(format: "%.1f", seconds) + " s -> \(out)")
    }
}
