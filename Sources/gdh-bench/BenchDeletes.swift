import ArgumentParser
import Dispatch
import Foundation
import GDHCommandLine
import HammingCode
import HashStore
import MultiIndex

/// Space after deletes (issue 9): a store that held N items and lost most of them against a
/// store built with the survivors only. Both are durable stores on disk in a temporary
/// directory; the scans are timed in alternating rounds, so drift of the machine hits both.
/// Then both files are compacted (after a REBUILD of each) and their sizes compared.
struct BenchDeletes: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deletes",
        abstract: "Linear-scan time after deleting most items, against a store built with the survivors only."
    )

    @Option(help: "Items stored before the deletes.") var n: Int = 10_000_000
    @Option(help: "Fraction of items kept.") var keep: Double = 0.1
    @Option(help: "Code length in bits.") var bits: Int = 64
    @Option(help: "Queries per round.") var queries: Int = 50
    @Option(help: "Alternating rounds (each times every query on both stores).") var rounds: Int = 7
    @Option(help: "Writes per committed batch.") var batch: Int = 20_000
    @Option(help: "Random seed of the codes.") var seed: UInt64 = 1
    @Option(help: "Directory for the two temporary databases (removed afterwards).") var dir: String = NSTemporaryDirectory()
    @Flag(help: "Print one JSON object.") var json = false

    func validate() throws {
        guard n > 0, keep > 0, keep < 1, queries > 0, rounds > 0, batch > 0 else {
            throw ValidationError("--n, --queries, --rounds and --batch must be positive and --keep in (0, 1)")
        }
    }

    func run() throws {
        let width = try CodeWidth(bits: bits)
        let stride = max(2, Int((1 / keep).rounded()))
        func code(_ i: Int) -> HammingCode {
            var r = SplitMix64(seed: seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(i))
            return SyntheticCodes.random(width, using: &r)
        }
        let root = dir + "/gdh-bench-deletes-\(getpid())"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }

        func load(_ path: String, _ indices: some Sequence<Int>) throws -> (HashStore, Double) {
            let store = try HashStore(directory: path, options: StoreOptions(bits: bits))
            let t0 = now()
            var ops = [WriteOp]()
            ops.reserveCapacity(batch)
            for i in indices {
                ops.append(.add(key: "item-\(i)", code: code(i)))
                if ops.count == batch { _ = try store.apply(ops); ops.removeAll(keepingCapacity: true) }
            }
            if !ops.isEmpty { _ = try store.apply(ops) }
            return (store, Double(now() - t0) / 1e9)
        }

        let (big, loadSeconds) = try load(root + "/all", 0..<n)
        defer { big.close() }
        let t0 = now()
        var ops = [WriteOp]()
        var deleted = 0
        for i in 0..<n where i % stride != 0 {
            ops.append(.delete(key: "item-\(i)"))
            if ops.count == batch { _ = try big.apply(ops); deleted += ops.count; ops.removeAll(keepingCapacity: true) }
        }
        if !ops.isEmpty { _ = try big.apply(ops); deleted += ops.count }
        let deleteSeconds = Double(now() - t0) / 1e9
        let (small, _) = try load(root + "/survivors", Swift.stride(from: 0, to: n, by: stride))
        defer { small.close() }
        guard big.count == small.count else { throw ValidationError("stores differ: \(big.count) and \(small.count) items") }

        var tb = [UInt64](), ts = [UInt64]()
        let ratios = try timeScans(big, small, width: width, big: &tb, small: &ts)
        // The files: both stores' tables rebuilt (so that neither holds a delta or a
        // stale generation), then COMPACT on each.
        _ = try big.rebuild()
        _ = try small.rebuild()
        let c0 = now()
        let (fileBefore, fileAfter) = try big.compact()
        let compactSeconds = Double(now() - c0) / 1e9
        let (_, fileSurvivors) = try small.compact()
        let out: [String: Any] = [
            "n": n, "bits": bits, "kept": small.count, "deleted": deleted,
            "load_codes_per_s": Double(n) / loadSeconds, "delete_per_s": Double(deleted) / deleteSeconds,
            "positions_after_deletes": big.scanPositions, "positions_survivors_only": small.scanPositions,
            "scan_ms_after_deletes": median(tb) / 1e6, "scan_ms_survivors_only": median(ts) / 1e6,
            "ratio_median": median(ratios), "ratio_min": ratios.min()!, "ratio_max": ratios.max()!,
            "rounds": rounds, "queries": queries,
            "file_before_compact": fileBefore, "file_after_compact": fileAfter, "compact_s": compactSeconds,
            "file_survivors_only_compacted": fileSurvivors, "file_ratio": Double(fileAfter) / Double(fileSurvivors),
        ]
        if json {
            printJSON(out)
        } else {
            print(String(format: "n=%d kept=%d  scan after deletes %.3f ms (%d positions)  survivors only %.3f ms (%d)  ratio %.3f (%.3f-%.3f)",
                         n, small.count, median(tb) / 1e6, big.scanPositions, median(ts) / 1e6, small.scanPositions,
                         median(ratios), ratios.min()!, ratios.max()!))
            print(String(format: "file %d bytes, after COMPACT %d (%.2f s); survivors only, compacted: %d; ratio %.3f",
                         fileBefore, fileAfter, compactSeconds, fileSurvivors, Double(fileAfter) / Double(fileSurvivors)))
        }
    }

    /// Alternating rounds of the same random k-NN queries by linear scan on both stores
    /// (drift of the machine hits both), after a warm-up that checks they agree; each
    /// round's ratio of medians (after deletes / survivors only).
    func timeScans(_ big: HashStore, _ small: HashStore, width: CodeWidth,
                   big tb: inout [UInt64], small ts: inout [UInt64]) throws -> [Double] {
        big.planner = .linearScan
        small.planner = .linearScan
        var qrng = SplitMix64(seed: seed ^ 0x5EED)
        let qs = (0..<queries).map { _ in SyntheticCodes.random(width, using: &qrng) }
        func time(_ store: HashStore) -> [UInt64] {
            qs.map { q in
                var s = SearchStats()
                let t = now()
                _ = store.knn(q, k: 10, stats: &s)
                return now() - t
            }
        }
        // Warm-up, and the answers must agree (same survivors, same codes).
        for q in qs.prefix(5) {
            var s = SearchStats()
            guard big.knn(q, k: 10, stats: &s).map(\.key) == small.knn(q, k: 10, stats: &s).map(\.key) else {
                throw ValidationError("the two stores answer differently")
            }
        }
        var ratios = [Double]()
        for _ in 0..<rounds {
            let b = time(big), s = time(small)
            tb += b; ts += s
            ratios.append(median(b) / median(s))
        }
        return ratios
    }
}
