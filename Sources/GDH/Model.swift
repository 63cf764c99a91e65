import Foundation
import NeuralNet
import Safetensors

public struct ModelError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// A GDH model: the generators G_I (sketch → image) and G_S (image → sketch), the
/// discriminators D_I and D_S, and the hashing network H. Inference needs G_I and H
/// only; a model file may hold just those.
///
/// Model file: safetensors with tensors named `G_I.<name>`, `G_S.<name>`, `D_I.<name>`,
/// `D_S.<name>`, `H.<name>` (PyTorch state_dict names inside each network) and metadata
/// `format` = `gdh-index-model`, `format_version` = `1`, `config` (JSON of
/// `GDHConfiguration`), `bits`, `image_size` and `preprocessing` (text).
public final class GDHModel {
    public static let format = "gdh-index-model"
    public static let formatVersion = "1"

    public let configuration: GDHConfiguration
    public let generatorI: Chain
    public let hashNet: Chain
    /// Present for training (and in full model files).
    public let generatorS: Chain?
    public let discriminatorI: Chain?
    public let discriminatorS: Chain?

    /// Networks with their initial (untrained) weights.
    public init(configuration c: GDHConfiguration, training: Bool = false) throws {
        if let p = c.problem { throw ModelError("bad model configuration: \(p)") }
        configuration = c
        generatorI = Generator.make(ngf: c.ngf, blocks: c.generatorBlocks, norm: c.norm, attention: c.attention)
        hashNet = GDHModel.makeHashNet(c)
        generatorS = training ? Generator.make(ngf: c.ngf, blocks: c.generatorBlocks, norm: c.norm, attention: c.attention) : nil
        discriminatorI = training ? Discriminator.make(ndf: c.ndf, norm: c.norm) : nil
        discriminatorS = training ? Discriminator.make(ndf: c.ndf, norm: c.norm) : nil
    }

    /// The hashing network of a configuration, with its initial weights.
    public static func makeHashNet(_ c: GDHConfiguration) -> Chain {
        switch c.hashNetKind {
        case .resnet: return HashNet.make(widths: c.hashWidths, blocks: c.hashBlocks, bits: c.bits)
        case .lite0: return EfficientNetLite0.make(outputs: c.bits, input: EfficientNetLite0.inputNormalization())
        }
    }

    /// A model trained without a generator (`noGenerator`) has no G_I in its file: its
    /// `generatorI` is never run and never stored.
    private var networks: [(String, Chain)] {
        inferenceNetworks
            + [("G_S", generatorS), ("D_I", discriminatorI), ("D_S", discriminatorS)].compactMap { n, c in c.map { (n, $0) } }
    }

    /// G_I (unless the model was trained without one) and H.
    private var inferenceNetworks: [(String, Chain)] {
        configuration.usesGenerator ? [("G_I", generatorI), ("H", hashNet)] : [("H", hashNet)]
    }

    /// The inference networks' tensors, and the training ones' when present.
    public func stateDict() -> [String: Tensor] {
        var d: [String: Tensor] = [:]
        for (prefix, net) in networks { for (k, v) in net.stateDict() { d[prefix + "." + k] = v } }
        return d
    }

    /// What determines the codes, as a content hash: `sha256:` followed by the first 16
    /// hexadecimal digits (the first 64 bits) of SHA-256 over
    ///
    /// - `gdh-index model identity 1\n`;
    /// - the configuration as JSON with sorted keys, preceded by its byte length;
    /// - the number of inference tensors (`G_I.*` and `H.*`, parameters and BatchNorm
    ///   statistics), then for each, in byte order of the names: the name's byte length
    ///   and UTF-8 bytes, the rank, each dimension, and the values as little-endian float32.
    ///
    /// Every length, count and dimension is a little-endian u64. The training networks
    /// (G_S, D_I, D_S) do not count, so a full training file and its inference-only export
    /// have the same identity; any changed inference weight changes it. Computed on every
    /// call (it reads every weight): keep the result.
    public var identity: String {
        var h = SHA256()
        func u64(_ v: Int) {
            var le = UInt64(v).littleEndian
            withUnsafeBytes(of: &le) { h.update($0) }
        }
        func bytes(_ b: [UInt8]) {
            u64(b.count)
            h.update(b)
        }
        h.update(Array("gdh-index model identity 1\n".utf8))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        bytes([UInt8]((try? encoder.encode(configuration)) ?? Data()))
        var tensors: [([UInt8], Tensor)] = []
        for (prefix, net) in inferenceNetworks {
            for (k, v) in net.stateDict() { tensors.append((Array((prefix + "." + k).utf8), v)) }
        }
        tensors.sort { $0.0.lexicographicallyPrecedes($1.0) }
        u64(tensors.count)
        for (name, t) in tensors {
            bytes(name)
            u64(t.shape.count)
            for d in t.shape { u64(d) }
            #if _endian(little)
            t.data.withUnsafeBytes { h.update($0) }
            #else
            h.update(t.data.flatMap { f -> [UInt8] in
                let b = f.bitPattern.littleEndian
                return withUnsafeBytes(of: b) { Array($0) }
            })
            #endif
        }
        return "sha256:" + SHA256.hex(Array(h.finalize().prefix(8)))
    }

    public var preprocessingDescription: String {
        "RGB; resize (\(configuration.resize)) to \(configuration.imageSize)x\(configuration.imageSize); scale v/255 to [-1, 1] with mean 0.5 and std 0.5 per channel; code bit = 1 where H(x) > 0"
    }

    public func write(to path: String) throws {
        try file().write(to: path)
    }

    /// The model as a safetensors file (tensors and metadata), ready to encode or write.
    public func file() throws -> SafetensorsFile {
        var file = SafetensorsFile()
        for (name, t) in stateDict() { file.tensors[name] = try TensorData(floats: t.data, shape: t.shape) }
        let json = try JSONEncoder().encode(configuration)
        file.metadata = [
            "format": GDHModel.format, "format_version": GDHModel.formatVersion,
            "config": String(decoding: json, as: UTF8.self), "bits": String(configuration.bits),
            "image_size": String(configuration.imageSize), "preprocessing": preprocessingDescription,
        ]
        return file
    }

    /// Reads a model file; the training networks are loaded when the file has them.
    public static func read(contentsOf path: String) throws -> GDHModel {
        let file: SafetensorsFile
        do { file = try SafetensorsFile.read(contentsOf: path) } catch {
            throw ModelError("cannot read model \(path): \(error)")
        }
        guard file.metadata["format"] == format else {
            throw ModelError("\(path) is not a gdh-index model (metadata format is \(file.metadata["format"] ?? "missing"))")
        }
        guard file.metadata["format_version"] == formatVersion else {
            throw ModelError("\(path) has model format version \(file.metadata["format_version"] ?? "?"), this build reads \(formatVersion)")
        }
        guard let json = file.metadata["config"],
              let config = try? JSONDecoder().decode(GDHConfiguration.self, from: Data(json.utf8)) else {
            throw ModelError("\(path) has no readable model configuration")
        }
        var tensors: [String: Tensor] = [:]
        for (name, t) in file.tensors {
            do { tensors[name] = Tensor(shape: t.shape, data: try t.floats()) } catch {
                throw ModelError("tensor \(name) in \(path): \(error)")
            }
        }
        let training = tensors.keys.contains { $0.hasPrefix("G_S.") }
        let model = try GDHModel(configuration: config, training: training)
        do {
            for (prefix, net) in model.networks { try net.load(tensors, prefix: prefix + ".", strict: true) }
            let known = Set(model.networks.map { $0.0 + "." })
            if let stray = tensors.keys.sorted().first(where: { name in !known.contains { name.hasPrefix($0) } }) {
                throw ModelError("unexpected tensor \(stray)")
            }
        } catch {
            throw ModelError("model \(path) does not fit its configuration: \(error)")
        }
        return model
    }

    /// Inference mode everywhere (BatchNorm uses running statistics).
    public func setTraining(_ on: Bool) {
        for (_, net) in networks { net.training = on }
    }

    /// An independent copy for another thread (weights are shared copy-on-write).
    public func replica() throws -> GDHModel {
        let copy = try GDHModel(configuration: configuration, training: generatorS != nil)
        let state = stateDict()
        for (prefix, net) in copy.networks { try net.load(state, prefix: prefix + ".", strict: false) }
        copy.setTraining(false)
        return copy
    }
}
