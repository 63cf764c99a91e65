import Foundation
import ImageIO

/// Histograms of oriented gradients (Dalal & Triggs): the image, resized to
/// `imageSize` × `imageSize` and made grey, gets centred [-1, 0, 1] gradients (borders
/// repeat the edge pixel); each pixel votes its gradient magnitude into `bins` unsigned
/// orientation bins over [0°, 180°) (bin k centred at k·180°/bins, linear between the two
/// nearest centres) of its `cellSize` × `cellSize` cell; blocks of `blockCells` ×
/// `blockCells` cells, one cell apart, are L2-Hys normalised (L2, clip at `clip`, L2
/// again) and concatenated. 64 px, 8 px cells, 2 × 2 blocks, 9 bins: 7·7·36 = 1764 values.
public struct HOG: Sendable, Equatable {
    public var imageSize: Int
    public var cellSize: Int
    public var blockCells: Int
    public var bins: Int
    public var clip: Float

    public init(imageSize: Int = 64, cellSize: Int = 8, blockCells: Int = 2, bins: Int = 9, clip: Float = 0.2) {
        precondition(cellSize > 0 && blockCells > 0 && bins > 0, "HOG parameters must be positive")
        precondition(imageSize / cellSize >= blockCells, "the image must hold at least one block")
        self.imageSize = imageSize
        self.cellSize = cellSize
        self.blockCells = blockCells
        self.bins = bins
        self.clip = clip
    }

    /// Cells per side.
    public var cells: Int { imageSize / cellSize }
    /// Blocks per side.
    public var blocks: Int { cells - blockCells + 1 }
    /// Length of the feature vector.
    public var dimension: Int { blocks * blocks * blockCells * blockCells * bins }

    /// The descriptor of an image (resized with the area filter when it is not square
    /// `imageSize` already).
    public func features(_ image: RGBImage) -> [Float] {
        let sized = image.width == imageSize && image.height == imageSize
            ? image : image.resized(width: imageSize, height: imageSize, filter: .area)
        return normalizedBlocks(cellHistograms(HOG.grey(sized), side: imageSize))
    }

    /// Luma 0.299 R + 0.587 G + 0.114 B, in [0, 1].
    static func grey(_ image: RGBImage) -> [Float] {
        let n = image.width * image.height
        var out = [Float](repeating: 0, count: n)
        image.pixels.withUnsafeBufferPointer { p in
            for i in 0..<n {
                out[i] = (0.299 * Float(p[3 * i]) + 0.587 * Float(p[3 * i + 1]) + 0.114 * Float(p[3 * i + 2])) / 255
            }
        }
        return out
    }

    /// Per cell (row-major), `bins` orientation sums.
    func cellHistograms(_ g: [Float], side: Int) -> [Float] {
        let c = cells
        var hist = [Float](repeating: 0, count: c * c * bins)
        let binWidth = Float.pi / Float(bins)
        for y in 0..<(c * cellSize) {
            let up = max(y - 1, 0), down = min(y + 1, side - 1)
            for x in 0..<(c * cellSize) {
                let left = max(x - 1, 0), right = min(x + 1, side - 1)
                let gx = g[y * side + right] - g[y * side + left]
                let gy = g[down * side + x] - g[up * side + x]
                let magnitude = (gx * gx + gy * gy).squareRoot()
                if magnitude == 0 { continue }
                var angle = atan2(gy, gx)
                if angle < 0 { angle += Float.pi }
                let position = angle / binWidth
                let lower = Int(position.rounded(.down))
                let fraction = position - Float(lower)
                let cell = ((y / cellSize) * c + x / cellSize) * bins
                hist[cell + lower % bins] += magnitude * (1 - fraction)
                hist[cell + (lower + 1) % bins] += magnitude * fraction
            }
        }
        return hist
    }

    /// Blocks (row-major, each its cells row-major) with L2-Hys normalisation.
    func normalizedBlocks(_ hist: [Float]) -> [Float] {
        let c = cells, blockLength = blockCells * blockCells * bins
        var out = [Float]()
        out.reserveCapacity(dimension)
        var block = [Float](repeating: 0, count: blockLength)
        for by in 0..<blocks {
            for bx in 0..<blocks {
                var k = 0
                for cy in by..<(by + blockCells) {
                    for cx in bx..<(bx + blockCells) {
                        let base = (cy * c + cx) * bins
                        for b in 0..<bins { block[k] = hist[base + b]; k += 1 }
                    }
                }
                HOG.l2Normalize(&block)
                for i in block.indices { block[i] = min(block[i], clip) }
                HOG.l2Normalize(&block)
                out += block
            }
        }
        return out
    }

    static func l2Normalize(_ v: inout [Float]) {
        let norm = (v.reduce(0) { $0 + $1 * $1 } + 1e-6).squareRoot()
        for i in v.indices { v[i] /= norm }
    }
}
