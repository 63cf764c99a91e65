import ArgumentParser
import Foundation
import GDHCommandLine
import HammingCode
import HashStore
import MultiIndex

/// Maintenance under write load (issue 9 item 3): one thread writes durable batches all
/// the time while another runs `HashStore.compact` (or `verify`, or `rebuild`); every
/// batch's latency is recorded, so the longest wait of any write during the operation is
/// measured, not inferred.
struct BenchCompact: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compact",
        abstract: "Write latency while COMPACT (or VERIFY, REBUILD) runs beside a writer, on a store of --n items."
    )

    enum Operation: String, ExpressibleByArgument { case compact, verify, rebuild, none }

    @Option(help: "The operation run during the writes: compact, verify, rebuild, or none (a 1 s sleep: the control).")
    var operation: Operation = .compact

    @Option(help: "Items stored before the compaction.") var n: Int = 10_000_000
    @Option(help: "Fraction of the items deleted before it (so that there is something to compact).") var delete: Double = 0.2
    @Option(help: "Writes per batch of the writer during the measurement.") var batch: Int = 100
    @Option(help: "Seconds of writes before and after the compaction.") var margin: Double = 2
    @Option(help: "Random seed of the codes.") var seed: UInt64 = 1
    @Option(help: "Directory for the temporary database (removed afterwards).") var dir: String = NSTemporaryDirectory()
    @Flag(help: "Fold (and REBUILD) inline on the writer, as before folds moved beside the writes.") var inlineFolds = false
    @Flag(help: "Print one JSON object.") var json = false

    /// What the operation's thread tells the writing thread, under a lock.
    final class Shared: @unchecked Sendable {
        let lock = NSLock()
        var compacting = false, done = false
        var start: UInt64 = 0, end: UInt64 = 0
        var result: Result<(before: Int, after: Int), Error>?
        var verified: (items: Int, stale: Int)?
        /// The slowest write batches: latency, whether during the operation, start relative
        /// to the operation's start (s), and where `apply` spent the time.
        var slowest: [(ms: Double, during: Bool, at: Double, phases: [(String, Double)])] = []
    }

    func run() throws {
        let width = try CodeWidth(bits: 64)
        var rng = SplitMix64(seed: seed)
        let root = dir + "/gdh-bench-compact-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: root) }
        var options = StoreOptions(bits: 64)
        options.backgroundFolds = !inlineFolds
        let store = try HashStore(directory: root, options: options)
        defer { store.close() }
        let doomed = try fill(store, width: width, &rng)
        let foldsBefore = store.folds
        let shared = Shared()
        let t = Thread {
            Thread.sleep(forTimeInterval: margin)
            shared.lock.lock(); shared.compacting = true; shared.start = now(); shared.lock.unlock()
            let r = Result { try runOperation(store, shared) }
            shared.lock.lock(); shared.compacting = false; shared.end = now(); shared.result = r; shared.lock.unlock()
            Thread.sleep(forTimeInterval: margin)
            shared.lock.lock(); shared.done = true; shared.lock.unlock()
        }
        t.start()
        let (during, outside) = try write(store, shared, doomed: doomed, width: width, &rng)
        let (before, after) = try shared.result!.get()
        report(store, shared, before: before, after: after, during: during, outside: outside, folds: store.folds - foldsBefore)
    }

    /// Stores --n items, deletes --delete of them (so that there is something to compact)
    /// and folds, so that no fold falls into the measurement; returns how many were deleted.
    func fill(_ store: HashStore, width: CodeWidth, _ rng: inout SplitMix64) throws -> Int {
        var ops = [WriteOp]()
        for i in 0..<n {
            ops.append(.add(key: "item-\(i)", code: SyntheticCodes.random(width, using: &rng)))
            if ops.count == 20_000 { _ = try store.apply(ops); ops.removeAll(keepingCapacity: true) }
        }
        if !ops.isEmpty { _ = try store.apply(ops); ops.removeAll() }
        let doomed = Int(Double(n) * delete)
        for start in stride(from: 0, to: doomed, by: 20_000) {
            _ = try store.apply((start..<min(doomed, start + 20_000)).map { .delete(key: "item-\($0 * (n / max(1, doomed)))") })
        }
        // An empty delta, so that no fold falls into the measurement.
        _ = try store.rebuild()
        return doomed
    }

    /// The measured operation: file sizes before and after for COMPACT, zeros otherwise.
    func runOperation(_ store: HashStore, _ shared: Shared) throws -> (before: Int, after: Int) {
        switch operation {
        case .compact: return try store.compact()
        case .verify:
            let v = try store.verify()
            shared.lock.lock(); shared.verified = v; shared.lock.unlock()
            return (0, 0)
        case .rebuild:
            _ = try store.rebuild()
            return (0, 0)
        case .none:
            Thread.sleep(forTimeInterval: 1)
            return (0, 0)
        }
    }

    /// Durable batches of --batch writes until the operation's thread is done; each
    /// batch's latency, during the operation and outside it.
    func write(_ store: HashStore, _ shared: Shared, doomed: Int, width: CodeWidth, _ rng: inout SplitMix64) throws
        -> (during: [UInt64], outside: [UInt64]) {
        var during: [UInt64] = [], outside: [UInt64] = []
        var i = 0
        while true {
            shared.lock.lock(); let done = shared.done; shared.lock.unlock()
            if done { break }
            var w = [WriteOp]()
            for _ in 0..<batch {
                // Replacements of live items and new keys, half and half.
                w.append(.add(key: i % 2 == 0 ? "item-\(doomed + (i * 7919) % (n - doomed))" : "new-\(i)",
                              code: SyntheticCodes.random(width, using: &rng)))
                i += 1
            }
            let t0 = now()
            _ = try store.apply(w)
            let t1 = now()
            shared.lock.lock()
            // A batch that overlaps the compaction in any way counts as during it.
            let overlaps = shared.compacting || (shared.start != 0 && t1 >= shared.start && (shared.end == 0 || t0 <= shared.end))
            shared.lock.unlock()
            if overlaps { during.append(t1 - t0) } else { outside.append(t1 - t0) }
            let ms = Double(t1 - t0) / 1e6
            if shared.slowest.count < 5 || ms > shared.slowest.last!.ms {
                let at = shared.start == 0 ? -1 : (Double(t0) - Double(shared.start)) / 1e9
                shared.slowest.append((ms, overlaps, at, store.lastApplyPhases.named))
                shared.slowest.sort { $0.ms > $1.ms }
                if shared.slowest.count > 5 { shared.slowest.removeLast() }
            }
        }
        return (during, outside)
    }

    func report(_ store: HashStore, _ shared: Shared, before: Int, after: Int, during: [UInt64], outside: [UInt64], folds: Int) {
        func pct(_ xs: [UInt64], _ p: Double) -> Double {
            let s = xs.sorted()
            return s.isEmpty ? 0 : Double(s[min(s.count - 1, Int(Double(s.count) * p))]) / 1e6
        }
        let out: [String: Any] = [
            "operation": operation.rawValue, "verified_items": shared.verified?.items ?? -1,
            "n": n, "live": store.count, "bytes_before": before, "bytes_after": after,
            "operation_s": Double(shared.end - shared.start) / 1e9, "final_pause_ms": store.lastCompactPause * 1e3,
            "replayed_catch_up": store.lastCompactReplayed.catchUp, "replayed_final": store.lastCompactReplayed.final,
            "batches_during": during.count, "writes_during": during.count * batch, "batch": batch,
            "max_ms_during": pct(during, 1), "p999_ms_during": pct(during, 0.999), "p50_ms_during": pct(during, 0.5),
            "max_ms_outside": pct(outside, 1), "p999_ms_outside": pct(outside, 0.999), "p50_ms_outside": pct(outside, 0.5),
            "folds_during_measurement": folds,
            "pause_steps_ms": Dictionary(store.lastCompactSteps.map { ($0.0, $0.1 * 1e3) }, uniquingKeysWith: { a, _ in a }),
            "fold_steps_ms": Dictionary(store.lastFoldSteps.map { ($0.0, $0.1 * 1e3) }, uniquingKeysWith: { a, _ in a }),
            "compact_timeline_s": store.lastCompactTimeline.map { [$0.0: $0.1] },
            "slowest_batches": shared.slowest.map { b -> [String: Any] in
                ["ms": b.ms, "during": b.during, "at_s": b.at,
                 "phases_ms": Dictionary(b.phases.map { ($0.0, $0.1 * 1e3) }, uniquingKeysWith: { a, _ in a })]
            },
        ]
        if json {
            printJSON(out)
        } else {
            print(String(format: "n=%d \(operation.rawValue) %.2f s (%d -> %d bytes), final pause %.1f ms; write batches during: %d, p50 %.2f p99.9 %.2f max %.2f ms; outside: p50 %.2f p99.9 %.2f max %.2f ms",
                         n, Double(shared.end - shared.start) / 1e9, before, after, store.lastCompactPause * 1e3, during.count,
                         pct(during, 0.5), pct(during, 0.999), pct(during, 1), pct(outside, 0.5), pct(outside, 0.999), pct(outside, 1)))
        }
    }
}
