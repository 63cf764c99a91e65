import Foundation
import GDH
import HammingCode
import NeuralNet

/// What the GDH objective includes and how its terms are weighted (Docs/training.md,
/// "The objective, step by step"; the switches are the ablations).
public struct TrainingObjective: Codable, Equatable, Sendable {
    /// G_I migrates sketches before H; false: sketches go straight into H, no G, no D.
    public var generator = true
    /// Cycle-consistency terms (weight `cycleWeight` each way).
    public var cycle = true
    /// Least-squares adversarial terms and the discriminator step.
    public var adversarial = true
    /// Keep the hashing loss away from G_I (the public code's behaviour).
    public var detachHash = false
    public var cycleWeight: Float = 10
    /// λ_hash, λ_pair, λ_tri, the triplet margin and ν of the B-step.
    public var lambdaHash: Float = 1
    public var lambdaPair: Float = 1
    public var lambdaTri: Float = 1
    public var margin: Float = 1
    public var nu: Float = 0.1
    /// Past fakes kept for the discriminators.
    public var poolSize = 50
    /// H's learning rate is the schedule's times this (1: the paper's single rate).
    public var hashLearningRateFactor: Float = 1
    /// Adam's ε of every optimiser (PyTorch's default 1e-8). The lite0 step fixture uses a
    /// large one, so that weights whose gradient is float noise do not move by ±lr.
    public var adamEpsilon: Float = 1e-8

    public init() {}

    private enum CodingKeys: String, CodingKey {
        case generator, cycle, adversarial, detachHash, cycleWeight, lambdaHash, lambdaPair, lambdaTri, margin, nu, poolSize,
             hashLearningRateFactor, adamEpsilon
    }

    /// Every key as written, except `adamEpsilon`, which settings saved before it existed
    /// (checkpoints of earlier runs) lack: those read as PyTorch's 1e-8 they trained with.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        generator = try c.decode(Bool.self, forKey: .generator)
        cycle = try c.decode(Bool.self, forKey: .cycle)
        adversarial = try c.decode(Bool.self, forKey: .adversarial)
        detachHash = try c.decode(Bool.self, forKey: .detachHash)
        cycleWeight = try c.decode(Float.self, forKey: .cycleWeight)
        lambdaHash = try c.decode(Float.self, forKey: .lambdaHash)
        lambdaPair = try c.decode(Float.self, forKey: .lambdaPair)
        lambdaTri = try c.decode(Float.self, forKey: .lambdaTri)
        margin = try c.decode(Float.self, forKey: .margin)
        nu = try c.decode(Float.self, forKey: .nu)
        poolSize = try c.decode(Int.self, forKey: .poolSize)
        hashLearningRateFactor = try c.decode(Float.self, forKey: .hashLearningRateFactor)
        adamEpsilon = try c.decodeIfPresent(Float.self, forKey: .adamEpsilon) ?? 1e-8
    }

    /// A short name of the variant for tables ("gdh", "no-generator", ...).
    public var variantName: String {
        var parts: [String] = []
        if !generator { return "no-generator" }
        if !cycle { parts.append("no-cycle") }
        if !adversarial { parts.append("no-adversarial") }
        if detachHash { parts.append("detach-hash") }
        if lambdaTri == 0 { parts.append("no-triplet") }
        return parts.isEmpty ? "gdh" : parts.joined(separator: "+")
    }
}

/// One batch: B photos and B sketches (B, 3, S, S) in [-1, 1], their class labels, and
/// the current target codes of those items (B, bits) in {-1, +1}.
public struct TrainingBatch {
    public var photos: Tensor
    public var sketches: Tensor
    public var photoLabels: [Int]
    public var sketchLabels: [Int]
    public var photoTargets: Tensor
    public var sketchTargets: Tensor

    public init(photos: Tensor, sketches: Tensor, photoLabels: [Int], sketchLabels: [Int],
                photoTargets: Tensor, sketchTargets: Tensor) {
        self.photos = photos
        self.sketches = sketches
        self.photoLabels = photoLabels
        self.sketchLabels = sketchLabels
        self.photoTargets = photoTargets
        self.sketchTargets = sketchTargets
    }

    public var count: Int { photos.shape[0] }
}

/// The losses of one step, computed before the update. Terms a variant does not have are 0.
public struct StepLosses: Equatable, Sendable {
    public var generator: Float = 0
    public var adversarialI: Float = 0
    public var adversarialS: Float = 0
    public var cycleS: Float = 0
    public var cycleI: Float = 0
    public var hash: Float = 0
    public var triplet: Float = 0
    public var discriminatorI: Float = 0
    public var discriminatorS: Float = 0

    public init() {}

    /// In the order of the fixture's `losses` columns.
    public var columns: [Float] {
        [generator, adversarialI, adversarialS, cycleS, cycleI, hash, triplet, discriminatorI, discriminatorS]
    }
    public static let columnNames = ["L_G", "L_adv_I", "L_adv_S", "L_cyc_S", "L_cyc_I", "L_hash", "L_tri", "L_D_I", "L_D_S"]
}

/// The GDH training step: the generator step (G_I, G_S and H by one Adam) and the
/// discriminator step (D_I and D_S by another), exactly as Docs/training.md gives them.
///
/// The layers keep what their backward needs from their last forward only, so each
/// network's backward runs before that network's next forward: the order of the forward
/// calls is still the document's (BatchNorm's running statistics depend on it), and the
/// gradients are those of the summed loss.
public final class GDHTrainStep {
    public let model: GDHModel
    public let objective: TrainingObjective
    /// G_I and G_S (empty without a generator), H, and the discriminators.
    public let optimizerG: Adam
    public let optimizerH: Adam
    public let optimizerD: Adam?
    public var poolI: ImagePool
    public var poolS: ImagePool
    /// The H outputs of the last step, photos and sketches (B, bits): the B-step uses them.
    public private(set) var lastPhotoOutputs = Tensor(zeros: [0])
    public private(set) var lastSketchOutputs = Tensor(zeros: [0])

    /// The layers of H whose tensors stay fixed (`BackboneTraining.freezeStages`): no updates,
    /// BatchNorm in inference mode.
    public let frozen: [Layer]

    public init(model: GDHModel, objective: TrainingObjective, seed: UInt64, learningRate: Float = 2e-4,
                backbone: BackboneTraining? = nil) throws {
        guard let gS = model.generatorS, let dI = model.discriminatorI, let dS = model.discriminatorS else {
            throw ModelError("training needs a full model (G_I, G_S, D_I, D_S and H)")
        }
        self.model = model
        self.objective = objective
        model.setTraining(true)
        // A step frees and reallocates the same tensors: keep their memory in the process
        // instead of paying page faults and zeroing for it again every step.
        retainFreedMemory()
        let g = objective.generator ? model.generatorI.parameters.map { $0.1 } + gS.parameters.map { $0.1 } : []
        optimizerG = Adam(g, lr: learningRate, betas: (0.5, 0.999), eps: objective.adamEpsilon)
        frozen = backbone.map { EfficientNetLite0.frozenLayers(of: model.hashNet, stages: $0.freezeStages) } ?? []
        for layer in frozen { layer.training = false }
        let fixed = Set(frozen.flatMap { $0.parameters.map { ObjectIdentifier($0.1) } })
        let trained = model.hashNet.parameters.filter { !fixed.contains(ObjectIdentifier($0.1)) }
        // The backbone (all but the head `_fc`) learns at its scale of H's rate.
        let scales = trained.map { name, _ in backbone.map { EfficientNetLite0.isBackbone(name) ? $0.learningRateScale : 1 } ?? 1 }
        optimizerH = Adam(trained.map { $0.1 }, lr: learningRate * objective.hashLearningRateFactor, betas: (0.5, 0.999),
                          eps: objective.adamEpsilon, lrScales: scales)
        optimizerD = objective.generator && objective.adversarial
            ? Adam(dI.parameters.map { $0.1 } + dS.parameters.map { $0.1 }, lr: learningRate, betas: (0.5, 0.999),
                   eps: objective.adamEpsilon)
            : nil
        poolI = ImagePool(capacity: objective.poolSize, seed: seed &+ 101)
        poolS = ImagePool(capacity: objective.poolSize, seed: seed &+ 202)
    }

    public var learningRate: Float {
        get { optimizerG.lr }
        set {
            optimizerG.lr = newValue
            optimizerH.lr = newValue * objective.hashLearningRateFactor
            optimizerD?.lr = newValue
        }
    }

    /// One step on `batch`; returns its losses (before the update).
    @discardableResult
    public func step(_ batch: TrainingBatch) -> StepLosses {
        precondition(batch.count > 0 && batch.sketches.shape == batch.photos.shape, "a batch needs photos and sketches of one shape")
        var losses = StepLosses()
        optimizerG.zeroGrad()
        optimizerH.zeroGrad()
        guard objective.generator, let gS = model.generatorS else {
            let h = model.hashNet.forward(stack(batch.photos, batch.sketches))
            let (_, dh) = hashLoss(h, batch, &losses)
            _ = model.hashNet.backward(dh)
            losses.generator = losses.hash * objective.lambdaHash
            optimizerH.step()
            return losses
        }
        let gI = model.generatorI
        // 1-4: sketches to photos, their cycle, D_I's verdict, and the hashing loss.
        let fakeI = gI.forward(batch.sketches)
        let towardsSketch = cycleAndVerdict(fakeI, back: gS, original: batch.sketches, critic: model.discriminatorI)
        var dFakeI = towardsSketch.gradient
        losses.cycleS = towardsSketch.cycle
        losses.adversarialI = towardsSketch.adversarial
        let h = model.hashNet.forward(stack(batch.photos, fakeI))
        let (_, dh) = hashLoss(h, batch, &losses)
        let dStack = model.hashNet.backward(scaled(dh, objective.lambdaHash))
        if !objective.detachHash { dFakeI.accumulate(half(dStack, second: true)) }
        _ = gI.backward(dFakeI)
        // 5: photos to sketches and back, D_S's verdict.
        let fakeS = gS.forward(batch.photos)
        let (dFakeS, cycleI, adversarialS) = cycleAndVerdict(fakeS, back: gI, original: batch.photos, critic: model.discriminatorS)
        losses.cycleI = cycleI
        losses.adversarialS = adversarialS
        _ = gS.backward(dFakeS)
        losses.generator = losses.adversarialI + losses.adversarialS + losses.cycleS + losses.cycleI
            + objective.lambdaHash * losses.hash
        optimizerG.step()
        optimizerH.step()
        if objective.adversarial { discriminatorStep(batch, fakeI: fakeI, fakeS: fakeS, &losses) }
        return losses
    }

    /// The terms on one direction's fake: the cycle back to `original` through `back` (then
    /// `back`'s backward, so that it may run forward again) and the critic's verdict, in that
    /// order. Returns the gradient they send into `fake` and the two weighted losses (0 for
    /// a term the objective drops).
    private func cycleAndVerdict(_ fake: Tensor, back: Chain, original: Tensor, critic: Chain?)
        -> (gradient: Tensor, cycle: Float, adversarial: Float) {
        var dFake = Tensor(zeros: fake.shape)
        var cycle: Float = 0, adversarial: Float = 0
        if objective.cycle {
            let (l, g) = Loss.l1(back.forward(fake), original)
            cycle = objective.cycleWeight * l
            dFake.accumulate(back.backward(scaled(g, objective.cycleWeight)))
        }
        if objective.adversarial, let critic {
            let (l, g) = lsgan(critic.forward(fake), target: 1)
            adversarial = l
            dFake.accumulate(critic.backward(g))
        }
        return (dFake, cycle, adversarial)
    }

    /// 7-8: the discriminators on real images and on fakes from the pools.
    private func discriminatorStep(_ batch: TrainingBatch, fakeI: Tensor, fakeS: Tensor, _ losses: inout StepLosses) {
        guard let dI = model.discriminatorI, let dS = model.discriminatorS, let opt = optimizerD else { return }
        opt.zeroGrad()
        let pooledI = poolI.query(fakeI), pooledS = poolS.query(fakeS)
        func half(_ d: Chain, _ x: Tensor, target: Float) -> Float {
            let (l, g) = lsgan(d.forward(x), target: target)
            _ = d.backward(scaled(g, 0.5))
            return 0.5 * l
        }
        losses.discriminatorI = half(dI, batch.photos, target: 1) + half(dI, pooledI, target: 0)
        losses.discriminatorS = half(dS, batch.sketches, target: 1) + half(dS, pooledS, target: 0)
        opt.step()
    }

    /// L_hash of h = H(cat[photos, sketch side]) and its gradient with respect to h.
    private func hashLoss(_ h: Tensor, _ batch: TrainingBatch, _ losses: inout StepLosses) -> (Float, Tensor) {
        let hI = half(h, second: false), hS = half(h, second: true)
        lastPhotoOutputs = hI
        lastSketchOutputs = hS
        let t = HashObjective.loss(photoOutputs: hI, sketchOutputs: hS, photoTargets: batch.photoTargets,
                                   sketchTargets: batch.sketchTargets, photoLabels: batch.photoLabels,
                                   sketchLabels: batch.sketchLabels, objective: objective)
        losses.triplet = t.triplet
        losses.hash = t.hash
        return (t.hash, stack(t.dPhotos, t.dSketches))
    }
}

/// L_hash = mean((h_I − b_I)²) + mean((h_S − b_S)²) + λ_pair·mean((h_I − h_S)²) + λ_tri·L_tri
/// and its gradients with respect to h_I and h_S.
public enum HashObjective {
    public static func loss(photoOutputs hI: Tensor, sketchOutputs hS: Tensor, photoTargets: Tensor, sketchTargets: Tensor,
                            photoLabels: [Int], sketchLabels: [Int], objective: TrainingObjective)
        -> (hash: Float, triplet: Float, dPhotos: Tensor, dSketches: Tensor) {
        let (lI, gI) = Loss.mse(hI, photoTargets)
        let (lS, gS) = Loss.mse(hS, sketchTargets)
        let (lP, gP) = Loss.mse(hI, hS)   // d/dh_I = gP, d/dh_S = −gP
        var dI = gI, dS = gS
        dI.accumulate(scaled(gP, objective.lambdaPair))
        dS.accumulate(scaled(gP, -objective.lambdaPair))
        let tri = TripletRanking.loss(anchors: hS, photos: hI, anchorLabels: sketchLabels,
                                      photoLabels: photoLabels, margin: objective.margin)
        dS.accumulate(scaled(tri.dAnchors, objective.lambdaTri))
        dI.accumulate(scaled(tri.dPhotos, objective.lambdaTri))
        return (lI + lS + objective.lambdaPair * lP + objective.lambdaTri * tri.loss, tri.loss, dI, dS)
    }
}

/// The triplet ranking term of Docs/training.md: anchor = sketch i's H output, positive =
/// photo i's, negative = the first photo after i (cyclically) of another class;
/// d = mean squared difference over the bits.
public enum TripletRanking {
    public static func loss(anchors a: Tensor, photos p: Tensor, anchorLabels: [Int], photoLabels: [Int], margin: Float)
        -> (loss: Float, dAnchors: Tensor, dPhotos: Tensor) {
        let b = a.shape[0], bits = a.shape[1]
        var da = Tensor(zeros: a.shape), dp = Tensor(zeros: p.shape)
        var total: Double = 0
        let scale = 1 / Float(bits)
        for i in 0..<b {
            guard let n = negative(of: i, anchorLabels: anchorLabels, photoLabels: photoLabels) else { continue }
            var dPos: Float = 0, dNeg: Float = 0
            for k in 0..<bits {
                let x = a.data[i * bits + k] - p.data[i * bits + k], y = a.data[i * bits + k] - p.data[n * bits + k]
                dPos += x * x
                dNeg += y * y
            }
            let value = margin + dPos * scale - dNeg * scale
            guard value > 0 else { continue }
            total += Double(value)
            let g = 2 * scale / Float(b)
            for k in 0..<bits {
                let ai = a.data[i * bits + k], pi = p.data[i * bits + k], pn = p.data[n * bits + k]
                da.data[i * bits + k] += g * ((ai - pi) - (ai - pn))
                dp.data[i * bits + k] -= g * (ai - pi)
                dp.data[n * bits + k] += g * (ai - pn)
            }
        }
        return (Float(total / Double(b)), da, dp)
    }

    /// n(i): the first photo after i in batch order, cyclically, of another class than sketch i.
    public static func negative(of i: Int, anchorLabels: [Int], photoLabels: [Int]) -> Int? {
        let b = photoLabels.count
        return (1..<max(1, b)).lazy.map { (i + $0) % b }.first { photoLabels[$0] != anchorLabels[i] }
    }
}

/// CycleGAN's pool of past fakes, with the generator of Docs/training.md so that the
/// PyTorch reference draws the same.
public struct ImagePool {
    public let capacity: Int
    public private(set) var images: [[Float]] = []
    public var rng: SplitMix64

    public init(capacity: Int, seed: UInt64) {
        self.capacity = capacity
        rng = SplitMix64(seed: seed)
    }

    /// The batch the discriminator sees in place of `batch` (N, ...), updating the pool.
    public mutating func query(_ batch: Tensor) -> Tensor {
        guard capacity > 0 else { return batch }
        let n = batch.shape[0], size = batch.count / max(1, n)
        var out = batch
        for i in 0..<n {
            let image = Array(batch.data[(i * size)..<((i + 1) * size)])
            if images.count < capacity {
                images.append(image)
                continue
            }
            if (rng.next() >> 40) < (1 << 23) {
                let k = Int(rng.next() % UInt64(capacity))
                out.data.replaceSubrange((i * size)..<((i + 1) * size), with: images[k])
                images[k] = image
            }
        }
        return out
    }

    /// Restores pooled images (each of `size` floats) and the generator's state.
    public mutating func restore(images saved: [[Float]], rngState: UInt64) {
        images = Array(saved.prefix(capacity))
        rng.state = rngState
    }
}

// MARK: - Small tensor helpers

/// cat[a, b] along the batch dimension.
func stack(_ a: Tensor, _ b: Tensor) -> Tensor {
    var shape = a.shape
    shape[0] += b.shape[0]
    return Tensor(shape: shape, data: a.data + b.data)
}

/// The first or second half of a tensor along the batch dimension.
func half(_ t: Tensor, second: Bool) -> Tensor {
    var shape = t.shape
    shape[0] /= 2
    let size = t.count / 2
    return Tensor(shape: shape, data: Array(second ? t.data[size...] : t.data[..<size]))
}

func scaled(_ t: Tensor, _ s: Float) -> Tensor {
    if s == 1 { return t }
    var out = t
    for i in 0..<out.count { out.data[i] *= s }
    return out
}

/// The least-squares GAN term: mean((out − target)²) and its gradient.
func lsgan(_ out: Tensor, target: Float) -> (loss: Float, grad: Tensor) {
    Loss.mse(out, Tensor(repeating: target, shape: out.shape))
}
