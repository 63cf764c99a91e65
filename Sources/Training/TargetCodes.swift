import Foundation
import GDH
import HammingCode
import NeuralNet

/// The initial weights of Docs/training.md, by tensor name and shape: G and D convolutions
/// N(0, 0.02) with zero bias and BatchNorm weights N(1, 0.02); H convolutions Kaiming normal
/// (fan-out), BatchNorm weight 1, bias 0, the linear head N(0, 0.01).
public enum TrainingInit {
    public static func initialize(_ model: GDHModel, seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let gan: [Chain] = [model.generatorI, model.generatorS, model.discriminatorI, model.discriminatorS].compactMap { $0 }
        for net in gan {
            for (name, p) in net.parameters {
                if name.hasSuffix("bias") { p.value.zero(); continue }
                if p.value.rank == 1 { Initializer.normal(&p.value, mean: 1, std: 0.02, using: &rng) } else {
                    Initializer.normal(&p.value, std: 0.02, using: &rng)
                }
            }
        }
        for (name, p) in model.hashNet.parameters {
            switch (name.hasSuffix("bias"), p.value.rank) {
            case (true, _): p.value.zero()
            case (false, 1): p.value = Tensor(repeating: 1, shape: p.value.shape)
            case (false, 2): Initializer.normal(&p.value, std: 0.01, using: &rng)
            default:
                let fanOut = p.value.shape[0] * p.value.shape[2] * p.value.shape[3]
                Initializer.normal(&p.value, std: (2 / Float(fanOut)).squareRoot(), using: &rng)
            }
        }
    }
}

/// The discrete target codes of the training items, in {-1, +1}: `photos[i]` for training
/// photo i, `sketches[j]` for training sketch j (rows of `bits`).
public struct TargetCodes: Equatable {
    public let bits: Int
    public let classes: Int
    public var photos: [Float]
    public var sketches: [Float]

    /// Every item of class k starts at a random code c_k drawn from `seed`.
    public init(bits: Int, classes: Int, photoLabels: [Int], sketchLabels: [Int], seed: UInt64) {
        self.bits = bits
        self.classes = classes
        var rng = SplitMix64(seed: seed)
        let classCodes = (0..<classes).map { _ in (0..<bits).map { _ in rng.next() & 1 == 1 ? Float(1) : -1 } }
        photos = photoLabels.flatMap { classCodes[$0] }
        sketches = sketchLabels.flatMap { classCodes[$0] }
    }

    public init(bits: Int, classes: Int, photos: [Float], sketches: [Float]) {
        self.bits = bits
        self.classes = classes
        self.photos = photos
        self.sketches = sketches
    }

    /// The targets of the given items as a (count, bits) tensor.
    public func rows(_ indices: [Int], sketches fromSketches: Bool) -> Tensor {
        let source = fromSketches ? sketches : photos
        var data = [Float]()
        data.reserveCapacity(indices.count * bits)
        for i in indices { data += source[(i * bits)..<((i + 1) * bits)] }
        return Tensor(shape: [indices.count, bits], data: data)
    }

    /// D-step then B-step. D = (Y_IᵀY_I + Y_SᵀY_S + I)⁻¹(Y_IᵀB_I + Y_SᵀB_S): with one-hot
    /// labels the matrix is diagonal (class counts + 1), so row k of D is the sum of class
    /// k's codes over its count + 1. Then B = sign(Y D + ν·H), sign(0) = +1.
    /// `photoOutputs`/`sketchOutputs`: each item's latest H output (rows of `bits`).
    public mutating func update(photoLabels: [Int], sketchLabels: [Int], photoOutputs: [Float], sketchOutputs: [Float], nu: Float) {
        var d = [Double](repeating: 0, count: classes * bits)
        var counts = [Double](repeating: 1, count: classes)
        for (i, y) in photoLabels.enumerated() {
            counts[y] += 1
            for k in 0..<bits { d[y * bits + k] += Double(photos[i * bits + k]) }
        }
        for (i, y) in sketchLabels.enumerated() {
            counts[y] += 1
            for k in 0..<bits { d[y * bits + k] += Double(sketches[i * bits + k]) }
        }
        for y in 0..<classes { for k in 0..<bits { d[y * bits + k] /= counts[y] } }
        func bStep(_ labels: [Int], _ outputs: [Float]) -> [Float] {
            var b = [Float](repeating: 0, count: labels.count * bits)
            for (i, y) in labels.enumerated() {
                for k in 0..<bits {
                    let v = d[y * bits + k] + Double(nu) * Double(outputs[i * bits + k])
                    b[i * bits + k] = v >= 0 ? 1 : -1
                }
            }
            return b
        }
        photos = bStep(photoLabels, photoOutputs)
        sketches = bStep(sketchLabels, sketchOutputs)
    }
}
