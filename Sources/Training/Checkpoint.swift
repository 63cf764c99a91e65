import Foundation
import GDH
import NeuralNet
import Safetensors

/// A failure of training: bad settings, data, checkpoints or disk. The message is for people.
public struct TrainingError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Everything that fixes a run besides the data: written into checkpoints, compared on resume.
public struct TrainingSettings: Codable, Equatable, Sendable {
    public var configuration: GDHConfiguration
    public var objective: TrainingObjective
    public var epochs: Int
    public var batch: Int
    public var seed: UInt64
    public var learningRate: Float = 2e-4
    /// How a pretrained-capable hashing network (lite0) starts and learns; nil for the ResNet
    /// (and in checkpoints written before there was a choice).
    public var backbone: BackboneTraining?

    public init(configuration: GDHConfiguration, objective: TrainingObjective, epochs: Int, batch: Int, seed: UInt64,
                backbone: BackboneTraining? = nil) {
        self.configuration = configuration
        self.objective = objective
        self.epochs = epochs
        self.batch = batch
        self.seed = seed
        self.backbone = backbone
    }

    /// Decay epochs of the schedule: max(1, round(E / 6)).
    public var decayEpochs: Int { max(1, Int((Double(epochs) / 6).rounded())) }

    /// The learning rate during epoch e (0-based): constant, then linear towards zero.
    public func learningRate(epoch e: Int) -> Float {
        learningRate * min(1, Float(epochs - e) / Float(decayEpochs + 1))
    }

    public var problem: String? {
        if let p = configuration.problem { return p }
        if epochs < 1 || epochs > 100_000 { return "epochs must be 1 to 100000" }
        if batch < 2 || batch > 4096 { return "the batch must be 2 to 4096" }
        if let b = backbone {
            guard configuration.hashNetKind == .lite0 else { return "backbone settings are for the lite0 hashing network only" }
            if let p = b.problem { return p }
        }
        return nil
    }
}

/// The backbone of a lite0 hashing network in training: its start (ImageNet weights,
/// named by their file's identity, or the random initialisation of `TrainingInit`), its
/// learning rate relative to the head's (`_fc`), and how many of its first stages stay fixed.
public struct BackboneTraining: Codable, Equatable, Sendable {
    /// `PretrainedBackbone.identity` of the ImageNet weights the run started from; nil: random.
    public var pretrained: String?
    /// The backbone's learning rate as a multiple of H's.
    public var learningRateScale: Float
    /// The stem and this many of the 7 stages get no updates and keep their BatchNorm
    /// statistics (BatchNorm in inference mode).
    public var freezeStages: Int

    public init(pretrained: String?, learningRateScale: Float = 0.1, freezeStages: Int = 0) {
        self.pretrained = pretrained
        self.learningRateScale = learningRateScale
        self.freezeStages = freezeStages
    }

    public var problem: String? {
        if !(learningRateScale >= 0 && learningRateScale <= 1000) { return "the backbone learning-rate scale must be 0 to 1000" }
        if freezeStages < 0 || freezeStages > EfficientNetLite0.stages.count {
            return "frozen stages must be 0 to \(EfficientNetLite0.stages.count)"
        }
        return nil
    }
}

/// Where a run stands: the next step to take.
public struct TrainingProgress: Codable, Equatable, Sendable {
    public var epoch = 0
    /// Steps of `epoch` already taken.
    public var stepInEpoch = 0
    public var globalStep = 0
    public var seconds: Double = 0
    public init() {}
}

/// The state of a run in one safetensors file, written atomically (temporary file, fsync,
/// rename, directory fsync): the networks under the model file's names, both optimisers'
/// moments, the target codes, the latest H outputs, the pools and their generators.
public enum Checkpoint {
    public static let format = "gdh-index-checkpoint"

    struct State {
        var settings: TrainingSettings
        var progress: TrainingProgress
        var targets: TargetCodes
        var photoOutputs: [Float]
        var sketchOutputs: [Float]
        var classes: [String]
    }

    static func write(_ path: String, step: GDHTrainStep, state: State) throws {
        var file = SafetensorsFile()
        func put(_ name: String, _ values: [Float], _ shape: [Int]? = nil) throws {
            file.tensors[name] = try TensorData(floats: values, shape: shape ?? [values.count])
        }
        for (name, t) in step.model.stateDict() { try put(name, t.data, t.shape) }
        for (tag, opt) in [("G", Optional(step.optimizerG)), ("H", step.optimizerH), ("D", step.optimizerD)] {
            guard let opt else { continue }
            let (m, v, _) = opt.moments
            for k in m.indices { try put("adam.\(tag).m.\(k)", m[k]); try put("adam.\(tag).v.\(k)", v[k]) }
        }
        try put("targets.photos", state.targets.photos)
        try put("targets.sketches", state.targets.sketches)
        try put("outputs.photos", state.photoOutputs)
        try put("outputs.sketches", state.sketchOutputs)
        for (tag, pool) in [("I", step.poolI), ("S", step.poolS)] {
            for (k, image) in pool.images.enumerated() { try put("pool.\(tag).\(k)", image) }
        }
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        file.metadata = [
            "format": format,
            "settings": String(decoding: try enc.encode(state.settings), as: UTF8.self),
            "progress": String(decoding: try enc.encode(state.progress), as: UTF8.self),
            "classes": String(decoding: try enc.encode(state.classes), as: UTF8.self),
            "adam_steps": "\(step.optimizerG.moments.steps) \(step.optimizerH.moments.steps) \(step.optimizerD?.moments.steps ?? 0)",
            "pool_rng": "\(step.poolI.rng.state) \(step.poolS.rng.state)",
        ]
        try AtomicFile.write(file.encode(), to: path)
    }

    /// Reads a checkpoint into `step` (made from the same settings) and returns the rest.
    static func read(_ path: String, expecting settings: TrainingSettings, classes: [String],
                     photos: Int, sketches: Int) throws -> (GDHTrainStep, State) {
        let file: SafetensorsFile
        do { file = try SafetensorsFile.read(contentsOf: path) } catch {
            throw TrainingError("cannot read checkpoint \(path): \(error)")
        }
        guard file.metadata["format"] == format else { throw TrainingError("\(path) is not a gdh-index training checkpoint") }
        let dec = JSONDecoder()
        guard let s = file.metadata["settings"], let saved = try? dec.decode(TrainingSettings.self, from: Data(s.utf8)),
              let p = file.metadata["progress"], let progress = try? dec.decode(TrainingProgress.self, from: Data(p.utf8)),
              let c = file.metadata["classes"], let savedClasses = try? dec.decode([String].self, from: Data(c.utf8)) else {
            throw TrainingError("checkpoint \(path) has unreadable settings")
        }
        guard saved == settings else {
            throw TrainingError("checkpoint \(path) was made with other settings (\(describe(saved))) than this run (\(describe(settings)))")
        }
        guard savedClasses == classes else { throw TrainingError("checkpoint \(path) was trained on other classes") }
        func floats(_ name: String) throws -> [Float] {
            guard let t = file.tensors[name] else { throw TrainingError("checkpoint \(path) lacks \(name)") }
            return try t.floats()
        }
        let model = try GDHModel(configuration: settings.configuration, training: true)
        var tensors: [String: Tensor] = [:]
        for (name, t) in file.tensors where !name.contains("adam.") && !name.hasPrefix("targets.") && !name.hasPrefix("outputs.") && !name.hasPrefix("pool.") {
            tensors[name] = Tensor(shape: t.shape, data: try t.floats())
        }
        do {
            for (prefix, net) in [("G_I", model.generatorI), ("H", model.hashNet)] + [("G_S", model.generatorS), ("D_I", model.discriminatorI), ("D_S", model.discriminatorS)].compactMap({ n, c in c.map { (n, $0) } }) {
                try net.load(tensors, prefix: prefix + ".", strict: true)
            }
        } catch { throw TrainingError("checkpoint \(path) does not fit the model: \(error)") }
        let step = try GDHTrainStep(model: model, objective: settings.objective, seed: settings.seed, learningRate: settings.learningRate,
                                    backbone: settings.backbone)
        let adamSteps = (file.metadata["adam_steps"] ?? "").split(separator: " ").compactMap { Int($0) }
        guard adamSteps.count == 3 else { throw TrainingError("checkpoint \(path) lacks the optimisers' step counts") }
        for (tag, opt, n) in [("G", Optional(step.optimizerG), adamSteps[0]), ("H", step.optimizerH, adamSteps[1]), ("D", step.optimizerD, adamSteps[2])] {
            guard let opt else { continue }
            let count = opt.parameters.count
            try opt.restore(m: try (0..<count).map { try floats("adam.\(tag).m.\($0)") },
                            v: try (0..<count).map { try floats("adam.\(tag).v.\($0)") }, steps: n)
        }
        let rngs = (file.metadata["pool_rng"] ?? "").split(separator: " ").compactMap { UInt64($0) }
        guard rngs.count == 2 else { throw TrainingError("checkpoint \(path) lacks the pools' state") }
        func pool(_ tag: String) -> [[Float]] {
            (0..<settings.objective.poolSize).compactMap { k in (try? floats("pool.\(tag).\(k)")) }
        }
        step.poolI.restore(images: pool("I"), rngState: rngs[0])
        step.poolS.restore(images: pool("S"), rngState: rngs[1])
        let bits = settings.configuration.bits
        let targets = TargetCodes(bits: bits, classes: classes.count, photos: try floats("targets.photos"), sketches: try floats("targets.sketches"))
        guard targets.photos.count == photos * bits, targets.sketches.count == sketches * bits else {
            throw TrainingError("checkpoint \(path) was made on a training set of another size")
        }
        let state = State(settings: settings, progress: progress, targets: targets,
                          photoOutputs: try floats("outputs.photos"), sketchOutputs: try floats("outputs.sketches"), classes: classes)
        return (step, state)
    }

    static func describe(_ s: TrainingSettings) -> String {
        "config \(s.configuration.name)\(s.backbone.map { $0.pretrained == nil ? " (random init)" : " (ImageNet init)" } ?? ""), \(s.configuration.bits) bits, \(s.configuration.imageSize) px, \(s.objective.variantName), epochs \(s.epochs), batch \(s.batch), seed \(s.seed)"
    }
}

/// Writes a file so that it is either the old or the new one after a crash: temporary file
/// in the same directory, fsync, rename, fsync of the directory. A failure (full disk, ...)
/// removes the temporary file and leaves the old one.
public enum AtomicFile {
    public static func write(_ bytes: [UInt8], to path: String) throws {
        let dir = (path as NSString).deletingLastPathComponent
        let temporary = "\(path).tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw TrainingError("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var failure: String?
        bytes.withUnsafeBytes { raw in
            var at = 0
            while at < raw.count {
                let n = Foundation.write(fd, raw.baseAddress! + at, raw.count - at)
                if n < 0 { if errno == EINTR { continue }; failure = String(cString: strerror(errno)); return }
                at += n
            }
        }
        if failure == nil && fsync(fd) != 0 { failure = String(cString: strerror(errno)) }
        close(fd)
        if let failure {
            unlink(temporary)
            throw TrainingError("cannot write \(path): \(failure) (the previous file is kept)")
        }
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw TrainingError("cannot rename \(temporary) to \(path): \(reason)")
        }
        let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }
}
