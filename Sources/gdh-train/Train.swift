import ArgumentParser
import Datasets
import Dispatch
import Foundation
import GDHCommandLine
import GDH
import NeuralNet
import Training

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: Siblings.abstract(of: "train"),
        discussion: """
        Writes MODEL (the inference networks G_I and H, for gdhd --model and gdh eval) and
        beside it MODEL.ckpt (everything needed to resume, written atomically after every
        epoch, every 10 minutes and on SIGINT), MODEL.split.json (the split: which files were
        held out as queries and gallery), MODEL.losses.csv and MODEL.losses.svg.
        The defaults are the budget of the shipped default model (Tools/models/README.md).
        Exit status: 0 when training finished, 130 when interrupted (resume with --resume
        MODEL.ckpt and the same options), 1 on an error, 64 on a usage error.
        """
    )
    @Option(help: ArgumentHelp("The dataset directory.", valueName: "dir")) var data: String
    @Option(help: ArgumentHelp("The model file to write.", valueName: "file")) var out: String
    @Option(help: "Model configuration: small, paper or lite0 (small's generator with EfficientNet-Lite0 as H, 128 px).") var config: String = "small"
    @Option(help: ArgumentHelp("The hashing network: resnet or lite0 (EfficientNet-Lite0; default: the configuration's).", valueName: "net"))
    var hashnet: String?
    @Option(name: .customLong("init"), help: ArgumentHelp("lite0: start from imagenet weights or from random ones.", valueName: "init")) var initWeights: String = "imagenet"
    @Option(help: ArgumentHelp("lite0: the ImageNet weights (default: Tools/models/efficientnet-lite0-imagenet.safetensors, made by bash Tools/setup_lite0.sh).", valueName: "file"))
    var backbone: String?
    @Option(help: "lite0: the backbone's learning rate as a multiple of the head's.") var backboneLrScale: Float = 0.1
    @Option(help: "lite0: keep the stem and this many of the 7 stages fixed (0-7).") var freezeStages: Int = 0
    @Option(help: "Code bits (32 to 1024 in steps of 32).") var bits: Int = 64
    @Option(help: "Input size in pixels (default: the configuration's).") var imageSize: Int?
    @Option(help: "Epochs over the training photos.") var epochs: Int = 60
    @Option(help: "Photos (and as many sketches) per step.") var batch: Int = 16
    @Option(help: "Seed of the initial weights, the target codes, the batches and the split.") var seed: UInt64 = 0
    @Option(help: "Threads for the training kernels (both cores by default).") var threads: Int = 2
    @Option(help: ArgumentHelp("random, zeroshot, or a split file; gdh eval reads the same split from MODEL.split.json.", valueName: "split"))
    var split: String = "random"
    @Option(help: "Dataset layout: plain, sketchy or tuberlin (default: detected).") var layout: String?
    @Option(help: "Sketchy: the augmentation folder (default: the first).") var augmentation: String?
    @Option(help: ArgumentHelp("TU-Berlin: the folder-per-class directory of photos.", valueName: "dir")) var photos: String?
    @Option(help: ArgumentHelp("Resume from this checkpoint (same options as the run that wrote it).", valueName: "file")) var resume: String?
    @Option(help: "Memory for decoded training images, MB.") var cacheMb: Int = 1024
    @Option(help: "Progress line every this many steps.") var logEvery: Int = 20
    @Option(help: "H's learning rate as a multiple of the schedule's (2e-4 at the start; 10 learned fastest of 1, 5, 10 in Docs/training.md).") var hashLrFactor: Float = 10
    @Flag(help: "Ablation: no generator, sketches go straight into H.") var noGenerator = false
    @Flag(help: "Ablation: no cycle-consistency loss.") var noCycle = false
    @Flag(help: "Ablation: no adversarial loss (and no discriminators).") var noAdversarial = false
    @Flag(help: "Ablation: the hashing loss does not reach G_I (the public code's behaviour).") var detachHash = false
    @Flag(help: "Ablation: the generators without their attention module.") var noAttention = false
    @Flag(help: "Ablation: no triplet ranking term (λ_tri = 0).") var noTriplet = false
    @Flag(help: "Print only the final summary.") var quiet = false

    func validate() throws {
        guard GDHConfiguration.named(config, bits: bits) != nil else { throw ValidationError("--config is small, paper or lite0") }
        if let h = hashnet, HashNetKind(rawValue: h) == nil { throw ValidationError("--hashnet is resnet or lite0") }
        guard initWeights == "imagenet" || initWeights == "random" else { throw ValidationError("--init is imagenet or random") }
        guard (0...7).contains(freezeStages) else { throw ValidationError("--freeze-stages must be 0 to 7") }
        guard backboneLrScale >= 0, backboneLrScale <= 1000 else { throw ValidationError("--backbone-lr-scale must be 0 to 1000") }
        guard (1...64).contains(threads) else { throw ValidationError("--threads must be 1 to 64") }
        guard hashLrFactor > 0, hashLrFactor <= 1000 else { throw ValidationError("--hash-lr-factor must be in (0, 1000]") }
        guard cacheMb >= 0, logEvery >= 1 else { throw ValidationError("--cache-mb ≥ 0 and --log-every ≥ 1") }
        if let l = layout, DatasetLayout(rawValue: l) == nil { throw ValidationError("--layout is plain, sketchy or tuberlin") }
        if split == "all" { throw ValidationError("--split all takes every file as test data and leaves nothing to train on") }
    }

    var settings: TrainingSettings {
        get throws {
            guard var c = GDHConfiguration.named(config, bits: bits) else { throw Failure("unknown configuration \(config)") }
            if let h = hashnet, let kind = HashNetKind(rawValue: h) {
                if kind == .lite0 && c.hashNetKind != .lite0 && imageSize == nil { c.imageSize = GDHConfiguration.lite0().imageSize }
                c.hashNet = kind == .resnet ? nil : kind
            }
            if let s = imageSize { c.imageSize = s }
            if noAttention { c.attention = false }
            var objective = TrainingObjective()
            objective.generator = !noGenerator
            objective.cycle = !noCycle
            objective.adversarial = !noAdversarial
            objective.detachHash = detachHash
            if noTriplet { objective.lambdaTri = 0 }
            objective.hashLearningRateFactor = hashLrFactor
            var s = TrainingSettings(configuration: c, objective: objective, epochs: epochs, batch: batch, seed: seed)
            if c.hashNetKind == .lite0 {
                s.backbone = BackboneTraining(pretrained: try pretrained?.identity, learningRateScale: backboneLrScale,
                                              freezeStages: freezeStages)
            }
            if let p = s.problem { throw ValidationError(p) }
            return s
        }
    }

    /// The ImageNet weights when the run starts from them (lite0 with --init imagenet).
    var pretrained: PretrainedBackbone? {
        get throws {
            let kind = hashnet.flatMap(HashNetKind.init(rawValue:)) ?? GDHConfiguration.named(config, bits: bits)?.hashNetKind
            guard initWeights == "imagenet", kind == .lite0 else { return nil }
            if let cached = PretrainedCache.shared.value { return cached }
            do {
                let b = try PretrainedBackbone.read(contentsOf: backbone ?? PretrainedBackbone.defaultPath())
                PretrainedCache.shared.value = b
                return b
            } catch { throw Failure("\(error)") }
        }
    }

    func run() throws {
        if let core = BLASCoreType.wantedForThisCPU() { Siblings.reexecSelf(setting: "OPENBLAS_CORETYPE", to: core) }
        setTrainingThreads(threads)
        let settings = try self.settings
        let (resolved, splitFile) = try loadSplit()
        let augmenter = Augmenter.forSettings(settings, maxCacheBytes: cacheMb << 20)
        let (set, bad) = augmenter.droppingUnreadable(try trainingSet(resolved))
        if !bad.isEmpty {
            FileHandle.standardError.write(Data("gdh: warning: skipped \(bad.count) unreadable training files (first: \(bad[0]))\n".utf8))
        }
        if let p = set.problem { throw Failure(p) }
        do { try splitFile.write(to: out + ".split.json") } catch { throw Failure("cannot write the split file: \(error)") }
        let trainer: GDHTrainer
        do {
            trainer = try GDHTrainer(settings: settings, set: set, resume: resume, augmenter: augmenter,
                                     pretrained: resume == nil ? try pretrained : nil)
        } catch {
            throw Failure("\(error)")
        }
        trainer.logEvery = logEvery
        trainer.log = { line in if !quiet { print(line); fflush(stdout) } }
        if !quiet {
            print("training \(settings.objective.variantName) (\(settings.configuration.name), \(settings.configuration.bits) bits, \(settings.configuration.imageSize) px): \(set.classes.count) classes, \(set.photoPaths.count) photos, \(set.sketchPaths.count) sketches; \(settings.epochs) epochs of \(trainer.stepsPerEpoch) steps, batch \(settings.batch), \(threads) thread(s), seed \(settings.seed)")
        }
        let stop = StopFlag()
        stop.install()
        let checkpoint = out + ".ckpt"
        let started = Date()
        let outcome: TrainingOutcome
        do {
            outcome = try trainer.run(checkpoint: checkpoint, csv: out + ".losses.csv", shouldStop: { stop.isSet })
        } catch { throw Failure("\(error)") }
        if let svg = try? LossLog.svgFile(csvPath: out + ".losses.csv") { try? svg.write(toFile: out + ".losses.svg", atomically: true, encoding: .utf8) }
        if outcome == .interrupted {
            FileHandle.standardError.write(Data("gdh: interrupted at epoch \(trainer.progress.epoch + 1) step \(trainer.progress.stepInEpoch); checkpoint written to \(checkpoint); resume with --resume \(checkpoint) and the same options\n".utf8))
            throw ExitCode(130)
        }
        do { try trainer.exportModel(to: out) } catch { throw Failure("cannot write the model: \(error)") }
        print(String(format: "wrote %@ (%d steps in %.0f s; checkpoint %@, split %@.split.json, losses %@.losses.csv)",
                     out, trainer.progress.globalStep, Date().timeIntervalSince(started), checkpoint, out, out))
    }

    /// The dataset and its split: made from the seed, or read from a split file.
    func loadSplit() throws -> (ResolvedSplit, Split) {
        do {
            let dataset = try Dataset.load(root: data, layout: layout.flatMap(DatasetLayout.init(rawValue:)),
                                           augmentation: augmentation, photosRoot: photos)
            let made: Split
            if let kind = SplitKind(rawValue: split) {
                made = try Split.make(dataset, kind: kind, seed: seed)
            } else {
                made = try Split.read(contentsOf: split)
            }
            return (try made.resolve(against: dataset), made)
        } catch let e as Failure { throw e } catch { throw Failure("\(error)") }
    }

    func trainingSet(_ r: ResolvedSplit) throws -> TrainingSet {
        let set = TrainingSet(classes: r.classes, photoPaths: r.trainPhotos.map(r.absolutePath), photoLabels: r.trainPhotos.map(\.label),
                              sketchPaths: r.trainSketches.map(r.absolutePath), sketchLabels: r.trainSketches.map(\.label))
        if let p = set.problem { throw Failure(p) }
        return set
    }
}

/// Set by SIGINT (and SIGTERM): the trainer finishes its step, writes its checkpoint and stops.
final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var flag = false
    private var sources: [DispatchSourceSignal] = []

    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return flag }

    func install() {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { [weak self] in
                guard let self else { return }
                self.lock.lock(); self.flag = true; self.lock.unlock()
                FileHandle.standardError.write(Data("gdh: stopping after this step (checkpointing)...\n".utf8))
            }
            s.resume()
            sources.append(s)
        }
    }
}

/// The backbone weights, read once per process.
final class PretrainedCache: @unchecked Sendable {
    static let shared = PretrainedCache()
    var value: PretrainedBackbone?
}
