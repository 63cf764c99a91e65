import CHammingKernels
import HammingCode

/// Exact Hamming k-NN and range search by comparing the query with every live code: the
/// brute-force index (norouzi/mih's `linscan`, FAISS's `IndexBinaryFlat`). It is the scan
/// path of `MultiIndex`, over the same `CodeArray`, and the oracle the tests compare the
/// multi-index with (itself checked against a plain popcount loop).
///
/// The interface is the multi-index's, minus its tables: `upsert`, `remove`, `knn`, `range`.
/// Answers are exact and ordered by (distance, id); ties at the K-th distance go to the
/// smaller id, whatever order the ids were added in.
///
/// The scan reads the positions of `codes` front to back in blocks of `block`, with the C
/// kernel `gdh_scan_leq` (AVX-512 where the CPU has it), so it costs the live codes plus the
/// holes since the last compaction.
///
/// Not synchronised: any number of concurrent searches, or one mutation, at a time.
public final class LinearScan {
    public let codes: CodeArray
    public var width: CodeWidth { codes.width }
    /// N: the live items.
    public var count: Int { codes.liveCount }

    /// Creates an empty index.
    public init(width: CodeWidth) {
        codes = CodeArray(width: width)
    }

    /// A scan over codes that another index (a `MultiIndex`) holds and changes.
    init(codes: CodeArray) {
        self.codes = codes
    }

    /// Adds a new id or replaces the code of a live one.
    public func upsert(_ id: UInt32, _ code: HammingCode) {
        codes.set(id, code)
    }

    /// Deletes an id; returns whether it was live.
    @discardableResult
    public func remove(_ id: UInt32) -> Bool {
        codes.remove(id)
    }

    /// The K nearest live items to `query`, ordered by (distance, id).
    public func knn(_ query: HammingCode, k: Int) -> [Neighbor] {
        precondition(query.width == width, "query width does not match the index")
        guard k > 0, count > 0 else { return [] }
        return query.withWords { knnPacked(words: $0.baseAddress!, k: k) }.map(Neighbor.init(packed:))
    }

    /// Every live item within distance ≤ r of `query`, ordered by (distance, id).
    public func range(_ query: HammingCode, radius r: Int) -> [Neighbor] {
        precondition(query.width == width, "query width does not match the index")
        guard r >= 0, count > 0 else { return [] }
        let r = min(r, width.bits)
        return query.withWords { rangePacked(words: $0.baseAddress!, radius: r) }.map(Neighbor.init(packed:))
    }

    // MARK: The scan (packed results `distance << 32 | id`, ascending)

    /// Positions per call of the kernel.
    static let block = 4096

    /// `knn` for a query's words (`width.words` of them) and k > 0.
    func knnPacked(words q: UnsafePointer<UInt64>, k: Int) -> [UInt64] {
        var top = TopK(k: k)
        let bits = width.bits, ordered = codes.ordered
        scanBlocks(q, threshold: {
            guard top.isFull else { return bits }
            // When ids ascend with the scan, once K are kept a later item must be strictly
            // nearer than the K-th to enter: ties go to the older id. Nothing is nearer
            // than 0, so the scan can stop there.
            let w = top.worstDistance
            if !ordered { return w }
            return w == 0 ? nil : w - 1
        }) { key in
            if top.accepts(key) { top.insert(key) }
        }
        return top.sortedPacked()
    }

    /// `range` for a query's words and 0 ≤ r ≤ b.
    func rangePacked(words q: UnsafePointer<UInt64>, radius r: Int) -> [UInt64] {
        var keys = [UInt64]()
        scanBlocks(q, threshold: { r }) { keys.append($0) }
        keys.sort()
        return keys
    }

    /// Runs the kernel over every position, a block at a time: before each block
    /// `threshold()` gives the largest distance still wanted (nil: stop the scan), and
    /// `body` gets each live position within it as its key `distance << 32 | id`, in
    /// position order.
    @inline(__always)
    private func scanBlocks(_ q: UnsafePointer<UInt64>, threshold: () -> Int?, _ body: (UInt64) -> Void) {
        let words = codes.words, n = codes.positionCount
        let idx = UnsafeMutablePointer<UInt32>.allocate(capacity: Self.block)
        let dist = UnsafeMutablePointer<UInt16>.allocate(capacity: Self.block)
        defer { idx.deallocate(); dist.deallocate() }
        var start = 0
        while start < n {
            let len = min(Self.block, n - start)
            guard let t = threshold() else { break }
            let got = gdh_scan_leq(codes.base + start * words, words, len, q, UInt32(t), idx, dist)
            for i in 0..<got {
                let p = start + Int(idx[i])
                guard codes.isLive(position: p) else { continue }
                body(TopK.key(Int(dist[i]), codes.id(atPosition: p)))
            }
            start += len
        }
    }
}
