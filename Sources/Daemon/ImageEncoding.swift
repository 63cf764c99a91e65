import Foundation
import GDH
import HammingCode
import HashStore
import ImageIO
import NeuralNet
import WireProtocol

/// Turns images and sketches into codes. The daemon has one when started with a model.
public protocol CodeEncoder: Sendable {
    /// The code of a query source (image or sketch, by path or inline).
    func code(for source: CodeSource) throws -> HammingCode
    /// The code of an image to store, and the source to keep for REENCODE.
    func codeForStorage(_ source: CodeSource) throws -> (HammingCode, ItemSource)
    /// The code of a stored image source, with the current model.
    func reencode(_ source: ItemSource) throws -> HammingCode
    /// The code width the model produces.
    var bits: Int { get }
    /// The model's identity (`GDHModel.identity`); nil when not known, and then no
    /// identity is recorded or compared.
    var modelIdentity: String? { get }
}

extension CodeEncoder {
    public var modelIdentity: String? { nil }
}

/// The GDH encoder behind the protocol: reads images (paths only under the allowed
/// roots, inline images as base64), decodes them with the hardened codecs, prepares them
/// as the model's configuration says, and runs the encoder pool.
public final class ModelEncoder: CodeEncoder, @unchecked Sendable {
    let pool: EncoderPool
    /// Canonical allowed directories (each ends with "/").
    let roots: [String]
    let maxImageBytes: Int
    let maxPixels: Int

    public var bits: Int { pool.width.bits }
    /// `GDHModel.identity` of the model, computed once.
    public let identity: String
    public var modelIdentity: String? { identity }

    public init(model: GDHModel, poolSize: Int, allowRoots: [String],
                maxImageBytes: Int = ImagePreparation.defaultMaxFileBytes, maxPixels: Int = ImageDecoder.defaultMaxPixels) throws {
        identity = model.identity
        pool = try EncoderPool(model: model, size: max(1, poolSize))
        roots = try allowRoots.map { root in
            guard let real = realpath(root, nil) else {
                throw ModelError("allowed root \(root) does not exist")
            }
            defer { free(real) }
            let s = String(cString: real)
            return s.hasSuffix("/") ? s : s + "/"
        }
        self.maxImageBytes = maxImageBytes
        self.maxPixels = maxPixels
    }

    /// The canonical form of a client's path, if it lies under an allowed root.
    func allowedPath(_ path: String) throws -> String {
        guard !roots.isEmpty else {
            throw ProtocolError(.forbidden, "image paths are not allowed: start gdhd with --allow-root DIR")
        }
        guard let real = realpath(path, nil) else {
            throw ProtocolError(.badImage, "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        defer { free(real) }
        let canonical = String(cString: real)
        guard roots.contains(where: { canonical.hasPrefix($0) }) else {
            throw ProtocolError(.forbidden, "\(path) is outside the allowed directories")
        }
        return canonical
    }

    func bytes(ofFile path: String) throws -> [UInt8] {
        do { return try ImagePreparation.read(path, maxBytes: maxImageBytes) } catch {
            throw ProtocolError(.badImage, "\(error)")
        }
    }

    func bytes(ofBase64 text: String) throws -> [UInt8] {
        guard text.utf8.count <= (maxImageBytes / 3 + 1) * 4 else {
            throw ProtocolError(.badImage, "inline image is larger than \(maxImageBytes) bytes")
        }
        guard let data = Data(base64Encoded: text) else {
            throw ProtocolError(.badImage, "inline image is not valid base64")
        }
        return [UInt8](data)
    }

    /// Decodes and prepares an image: (1, 3, S, S) in [-1, 1].
    func prepare(_ bytes: [UInt8]) throws -> Tensor {
        do { return try ImagePreparation.tensor(bytes, configuration: pool.configuration, maxPixels: maxPixels) } catch {
            throw ProtocolError(.badImage, "\(error)")
        }
    }

    /// `query`: a KNN/RANGE request waiting for its answer (its layers may use idle cores);
    /// otherwise an item being stored or re-encoded (one thread per request: bulk ingest
    /// keeps several requests in flight).
    func encode(_ bytes: [UInt8], sketch: Bool, query: Bool = false) throws -> HammingCode {
        let input = try prepare(bytes)
        let codes = try pool.withEncoder(spread: query) { sketch ? try $0.encodeSketches(input) : try $0.encodeImages(input) }
        return codes[0]
    }

    public func code(for source: CodeSource) throws -> HammingCode {
        switch source {
        case .code: return try source.code(width: pool.width)
        case .image(let p): return try encode(try bytes(ofFile: try allowedPath(p)), sketch: false, query: true)
        case .sketch(let p): return try encode(try bytes(ofFile: try allowedPath(p)), sketch: true, query: true)
        case .image64(let t): return try encode(try bytes(ofBase64: t), sketch: false, query: true)
        case .sketch64(let t): return try encode(try bytes(ofBase64: t), sketch: true, query: true)
        }
    }

    public func codeForStorage(_ source: CodeSource) throws -> (HammingCode, ItemSource) {
        switch source {
        case .image(let p):
            let path = try allowedPath(p)
            return (try encode(try bytes(ofFile: path), sketch: false), .path(path))
        case .image64(let t):
            let b = try bytes(ofBase64: t)
            return (try encode(b, sketch: false), .inline(b))
        default:
            throw ProtocolError(.badRequest, "only images are stored: use ADD <key> IMAGE or IMAGE64")
        }
    }

    public func reencode(_ source: ItemSource) throws -> HammingCode {
        switch source {
        case .path(let p): return try encode(try bytes(ofFile: try allowedPath(p)), sketch: false)
        case .inline(let b): return try encode(b, sketch: false)
        }
    }
}
