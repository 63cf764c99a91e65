import ImageIO
import NeuralNet

/// How a model's input is made from image bytes (the model file's `preprocessing`
/// description says the same): decode with the hardened codecs (large JPEGs reduced in
/// the DCT domain to no less than 2S × 2S), resize to S × S with the configured filter,
/// scale to [-1, 1], channels first. The daemon, evaluation and training prepare their
/// images this way.
public enum ImagePreparation {
    /// The files a model reads are bounded by this many bytes unless told otherwise.
    public static let defaultMaxFileBytes = 64 << 20

    /// The decoded, resized image (S × S, RGB).
    public static func image(_ bytes: [UInt8], configuration c: GDHConfiguration,
                             maxPixels: Int = ImageDecoder.defaultMaxPixels) throws -> RGBImage {
        try ImageDecoder.decode(bytes, resizedTo: c.imageSize, filter: c.resize, maxPixels: maxPixels)
    }

    /// The network input of one image: shape (1, 3, S, S), values in [-1, 1].
    public static func tensor(_ bytes: [UInt8], configuration c: GDHConfiguration,
                              maxPixels: Int = ImageDecoder.defaultMaxPixels) throws -> Tensor {
        let image = try image(bytes, configuration: c, maxPixels: maxPixels)
        return Tensor(shape: [1, 3, c.imageSize, c.imageSize], data: image.normalizedCHW())
    }

    /// The bytes of an image file, at most `maxBytes` (ImageIO's bounded reader).
    public static func read(_ path: String, maxBytes: Int = defaultMaxFileBytes) throws -> [UInt8] {
        try ImageDecoder.readFile(path, maxBytes: maxBytes)
    }
}
