import Datasets
import Dispatch
import Evaluation
import Foundation
import GDH
import ImageIO
import NeuralNet

/// How a run ended.
public enum TrainingOutcome: Equatable, Sendable {
    case finished
    /// Stopped on request (SIGINT); the checkpoint holds everything to resume.
    case interrupted
}

/// The GDH training loop: epochs of steps over the training set, the D-step and B-step of
/// the target codes after each epoch, the learning-rate schedule, checkpoints, a CSV of the
/// losses and a progress line.
public final class GDHTrainer {
    public let settings: TrainingSettings
    public let set: TrainingSet
    public let augmenter: Augmenter
    public private(set) var step: GDHTrainStep
    public private(set) var progress: TrainingProgress
    var targets: TargetCodes
    var photoOutputs: [Float]
    var sketchOutputs: [Float]
    /// Called with each progress line.
    public var log: (String) -> Void = { print($0) }
    /// Progress lines every this many steps.
    public var logEvery = 10

    /// A new run (initial weights from the seed), or the run saved in `resume`.
    /// `augmenter`: one made by `Augmenter.forSettings` (its cache may be warm already).
    /// `pretrained`: the ImageNet weights named by `settings.backbone.pretrained` (needed for
    /// a new run that starts from them; a resumed run has them in its checkpoint).
    public init(settings: TrainingSettings, set: TrainingSet, resume: String? = nil, augmenter: Augmenter? = nil,
                maxCacheBytes: Int = 1 << 30, pretrained: PretrainedBackbone? = nil) throws {
        if let p = settings.problem { throw TrainingError(p) }
        if let p = set.problem { throw TrainingError(p) }
        guard set.photoPaths.count >= settings.batch else {
            throw TrainingError("the training part has \(set.photoPaths.count) photos, fewer than one batch of \(settings.batch)")
        }
        self.settings = settings
        self.set = set
        let c = settings.configuration
        self.augmenter = augmenter ?? Augmenter.forSettings(settings, maxCacheBytes: maxCacheBytes)
        let bits = c.bits
        if let resume {
            let (s, state) = try Checkpoint.read(resume, expecting: settings, classes: set.classes,
                                                 photos: set.photoPaths.count, sketches: set.sketchPaths.count)
            step = s
            progress = state.progress
            targets = state.targets
            photoOutputs = state.photoOutputs
            sketchOutputs = state.sketchOutputs
        } else {
            let model = try GDHModel(configuration: c, training: true)
            TrainingInit.initialize(model, seed: settings.seed)
            if let wanted = settings.backbone?.pretrained {
                guard let pretrained else { throw TrainingError("this run starts from the backbone weights \(wanted), which were not given") }
                guard pretrained.identity == wanted else {
                    throw TrainingError("the backbone weights given are \(pretrained.identity), the settings name \(wanted)")
                }
                do { try pretrained.load(into: model.hashNet) } catch { throw TrainingError("\(error)") }
            }
            step = try GDHTrainStep(model: model, objective: settings.objective, seed: settings.seed, learningRate: settings.learningRate,
                                    backbone: settings.backbone)
            progress = TrainingProgress()
            targets = TargetCodes(bits: bits, classes: set.classes.count, photoLabels: set.photoLabels,
                                  sketchLabels: set.sketchLabels, seed: settings.seed &+ 303)
            photoOutputs = [Float](repeating: 0, count: set.photoPaths.count * bits)
            sketchOutputs = [Float](repeating: 0, count: set.sketchPaths.count * bits)
        }
    }

    public var stepsPerEpoch: Int { BatchSampler.steps(set, batch: settings.batch) }
    public var totalSteps: Int { stepsPerEpoch * settings.epochs }

    /// Trains until the last epoch or until `shouldStop` answers true (checked after every
    /// step); writes `checkpoint` after every epoch, every `checkpointSeconds` and when stopped.
    public func run(checkpoint: String, csv: String?, checkpointSeconds: Double = 600,
                    shouldStop: @escaping () -> Bool = { false }) throws -> TrainingOutcome {
        let csvLog = try csv.map { try LossLog(path: $0, append: progress.globalStep > 0) }
        var lastSave = Date()
        let started = Date(), secondsBefore = progress.seconds, stepsBefore = progress.globalStep
        var window = (start: Date(), steps: 0)
        while progress.epoch < settings.epochs {
            let e = progress.epoch
            step.learningRate = settings.learningRate(epoch: e)
            let plans = BatchSampler.plan(set, batch: settings.batch, seed: settings.seed, epoch: e)
            var next = prepare(plans, e, progress.stepInEpoch)
            while progress.stepInEpoch < plans.count {
                let s = progress.stepInEpoch
                let batch = try next.wait()
                if s + 1 < plans.count { next = prepare(plans, e, s + 1) }
                let losses = step.step(batch)
                record(plans[s])
                progress.stepInEpoch += 1
                progress.globalStep += 1
                progress.seconds = secondsBefore + Date().timeIntervalSince(started)
                window.steps += 1
                let rate = Double(window.steps * 2 * settings.batch) / max(1e-9, Date().timeIntervalSince(window.start))
                try csvLog?.append(progress, lr: step.learningRate, losses, imagesPerSecond: rate)
                if progress.globalStep % logEvery == 0 || progress.stepInEpoch == plans.count {
                    log(progressLine(losses, imagesPerSecond: rate, stepsDone: progress.globalStep - stepsBefore, since: started))
                }
                if window.steps >= 50 { window = (Date(), 0) }
                if shouldStop() {
                    try save(checkpoint)
                    return .interrupted
                }
                if Date().timeIntervalSince(lastSave) > checkpointSeconds { try save(checkpoint); lastSave = Date() }
            }
            targets.update(photoLabels: set.photoLabels, sketchLabels: set.sketchLabels, photoOutputs: photoOutputs,
                           sketchOutputs: sketchOutputs, nu: settings.objective.nu)
            progress.epoch += 1
            progress.stepInEpoch = 0
            try save(checkpoint)
            lastSave = Date()
        }
        return .finished
    }

    /// The batch of step s of epoch e, prepared on another thread while the current step runs.
    private func prepare(_ plans: [BatchPlan], _ e: Int, _ s: Int) -> PendingBatch {
        let pending = PendingBatch()
        guard s < plans.count else { return pending }
        let plan = plans[s], set = self.set, aug = augmenter, seed = settings.seed, t = targets
        pending.group.enter()
        DispatchQueue.global().async {
            do {
                let (photos, sketches) = try aug.tensors(set, plan, seed: seed, epoch: e, step: s)
                pending.result = .success(TrainingBatch(
                    photos: photos, sketches: sketches, photoLabels: plan.photos.map { set.photoLabels[$0] },
                    sketchLabels: plan.sketches.map { set.sketchLabels[$0] },
                    photoTargets: t.rows(plan.photos, sketches: false), sketchTargets: t.rows(plan.sketches, sketches: true)))
            } catch {
                pending.result = .failure(TrainingError("cannot prepare a batch: \(error)"))
            }
            pending.group.leave()
        }
        return pending
    }

    /// Keeps each item's latest H output for the B-step.
    private func record(_ plan: BatchPlan) {
        let bits = settings.configuration.bits
        let hI = step.lastPhotoOutputs, hS = step.lastSketchOutputs
        for (row, i) in plan.photos.enumerated() {
            photoOutputs.replaceSubrange((i * bits)..<((i + 1) * bits), with: hI.data[(row * bits)..<((row + 1) * bits)])
        }
        for (row, j) in plan.sketches.enumerated() {
            sketchOutputs.replaceSubrange((j * bits)..<((j + 1) * bits), with: hS.data[(row * bits)..<((row + 1) * bits)])
        }
    }

    public func save(_ path: String) throws {
        try Checkpoint.write(path, step: step, state: Checkpoint.State(
            settings: settings, progress: progress, targets: targets, photoOutputs: photoOutputs,
            sketchOutputs: sketchOutputs, classes: set.classes))
    }

    /// The inference model (G_I and H; H only without a generator) as a model file.
    public func exportModel(to path: String) throws {
        var c = settings.configuration
        if !settings.objective.generator { c.noGenerator = true }
        let out = try GDHModel(configuration: c, training: false)
        let state = step.model.stateDict()
        try out.generatorI.load(state, prefix: "G_I.", strict: false)
        try out.hashNet.load(state, prefix: "H.", strict: false)
        try AtomicFile.write(out.file().encode(), to: path)
    }

    private func progressLine(_ l: StepLosses, imagesPerSecond: Double, stepsDone: Int, since: Date) -> String {
        let elapsed = Date().timeIntervalSince(since)
        let left = Double(totalSteps - progress.globalStep) * elapsed / Double(max(1, stepsDone))
        var parts = ["epoch \(progress.epoch + 1)/\(settings.epochs)", "step \(progress.stepInEpoch)/\(stepsPerEpoch)"]
        if settings.objective.generator {
            parts.append(String(format: "G %.3f", l.generator))
            if settings.objective.cycle { parts.append(String(format: "cyc %.3f", l.cycleS + l.cycleI)) }
            if settings.objective.adversarial {
                parts.append(String(format: "adv %.3f D %.3f", l.adversarialI + l.adversarialS, l.discriminatorI + l.discriminatorS))
            }
        }
        parts.append(String(format: "hash %.3f tri %.3f", l.hash, l.triplet))
        parts.append(String(format: "%.1f img/s", imagesPerSecond))
        parts.append("\(formatDuration(left)) left")
        return parts.joined(separator: "  ")
    }
}

func formatDuration(_ s: Double) -> String {
    let t = Int(max(0, s).rounded())
    return t >= 3600 ? String(format: "%dh%02dm", t / 3600, (t / 60) % 60) : String(format: "%dm%02ds", t / 60, t % 60)
}

/// A batch being prepared on another thread.
final class PendingBatch: @unchecked Sendable {
    let group = DispatchGroup()
    var result: Result<TrainingBatch, Error> = .failure(TrainingError("no batch"))
    func wait() throws -> TrainingBatch {
        group.wait()
        return try result.get()
    }
}

/// The losses of every step as CSV lines.
public final class LossLog {
    let handle: FileHandle
    static let header = "epoch,step,global_step,lr," + StepLosses.columnNames.joined(separator: ",") + ",images_per_s,seconds\n"

    init(path: String, append: Bool) throws {
        let fm = FileManager.default
        if !append || !fm.fileExists(atPath: path) {
            guard fm.createFile(atPath: path, contents: Data(Self.header.utf8)) else { throw TrainingError("cannot create \(path)") }
        }
        guard let h = FileHandle(forWritingAtPath: path) else { throw TrainingError("cannot write \(path)") }
        h.seekToEndOfFile()
        handle = h
    }

    func append(_ p: TrainingProgress, lr: Float, _ l: StepLosses, imagesPerSecond: Double) throws {
        let values = l.columns.map { String(format: "%.6g", $0) }.joined(separator: ",")
        let line = "\(p.epoch),\(p.stepInEpoch),\(p.globalStep),\(lr),\(values),\(String(format: "%.2f", imagesPerSecond)),\(String(format: "%.1f", p.seconds))\n"
        do { try handle.write(contentsOf: Data(line.utf8)) } catch { throw TrainingError("cannot write the loss log: \(error)") }
    }

    deinit { try? handle.close() }

    /// An SVG of the losses in a CSV written by this class: the mean of each term per epoch.
    public static func svgFile(csvPath: String) throws -> String {
        guard let text = try? String(contentsOfFile: csvPath, encoding: .utf8) else { throw TrainingError("cannot read \(csvPath)") }
        let rows = text.split(separator: "\n").dropFirst().map { $0.split(separator: ",").map { Double($0) ?? .nan } }
        let names = StepLosses.columnNames
        var series: [(name: String, points: [(Double, Double)])] = []
        for (k, name) in names.enumerated() {
            var sums: [Int: (Double, Int)] = [:]
            for r in rows where r.count > 4 + k {
                let e = Int(r[0]); let v = r[4 + k]
                if v.isFinite { sums[e, default: (0, 0)].0 += v; sums[e, default: (0, 0)].1 += 1 }
            }
            let points = sums.keys.sorted().map { (Double($0 + 1), sums[$0]!.0 / Double(max(1, sums[$0]!.1))) }
            if points.contains(where: { $0.1 != 0 }) { series.append((name: name, points: points)) }
        }
        return SVGPlot.lines(title: "GDH training losses (mean per epoch)", xLabel: "epoch", yLabel: "loss", series: series, logY: true)
    }
}
