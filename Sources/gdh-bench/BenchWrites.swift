import ArgumentParser
import Foundation
import GDHCommandLine
import HammingCode
import HashStore

/// The writer's side of an ingest, in process: batches of `ADD <key> CODE` writes applied to
/// a durable store on disk the way gdhd's writer applies them (one transaction and sync a
/// batch, folds beside the writes), with no socket, no parser and no client. Reports the
/// time of each phase of `HashStore.apply` per write (`ApplyPhases`: the transaction's puts,
/// its commit with the sync, the mirror update) and the process's CPU per write, which
/// includes the folds' thread. Runs alternate with a fresh store each, so that a change to
/// the write path can be compared run by run on a noisy machine.
struct BenchWrites: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "writes",
        abstract: "The writer's side of an ingest in process: time per write of each phase of a batch, and CPU per write."
    )

    @Option(help: "File of codes to add (Tools/gen_codes.py).") var codes: String
    @Option(help: "Code width.") var bits: Int
    @Option(help: "How many codes (default all).") var count: Int?
    @Option(help: "Writes per batch (gdhd's batches during a pipelined load are about 2,000 to 5,000).") var batch: Int = 2_500
    @Option(help: "Runs, each on a fresh store.") var runs: Int = 1
    @Option(help: "Directory for the temporary databases (removed afterwards).") var dir: String = NSTemporaryDirectory()
    @Flag(help: "No folds during the load (the delta takes every write), to see what they cost the writer.") var noFolds = false
    @Flag(help: "Print one JSON object.") var json = false

    func validate() throws {
        guard batch > 0, runs > 0 else { throw ValidationError("--batch and --runs must be positive") }
    }

    func run() throws {
        let width = try CodeWidth(bits: bits)
        let all = try readCodes(codes, width: width, limit: count)
        guard !all.isEmpty else { throw Failure("\(codes) holds no code") }
        let keys = (0..<all.count).map { "b\($0)" }
        var results: [[String: Any]] = []
        for r in 0..<runs {
            let path = dir + "/gdh-bench-writes-\(getpid())-\(r)"
            defer { try? FileManager.default.removeItem(atPath: path) }
            var options = StoreOptions(bits: bits)
            options.backgroundFolds = true
            if noFolds { options.foldThreshold = Int(Int32.max) }
            let store = try HashStore(directory: path, options: options)
            var phases = [String: Double]()
            let cpu0 = processCPUSeconds(), t0 = now()
            var ops = [WriteOp]()
            ops.reserveCapacity(batch)
            for start in stride(from: 0, to: all.count, by: batch) {
                ops.removeAll(keepingCapacity: true)
                for i in start..<min(all.count, start + batch) { ops.append(.add(key: keys[i], code: all[i])) }
                _ = try store.apply(ops)
                for (name, s) in store.lastApplyPhases.named { phases[name, default: 0] += s }
            }
            let seconds = Double(now() - t0) / 1e9, cpu = processCPUSeconds() - cpu0
            store.close()
            let perWrite = phases.mapValues { $0 * 1e6 / Double(all.count) }
            results.append(["writes_per_second": Double(all.count) / seconds, "cpu_us_per_write": cpu * 1e6 / Double(all.count),
                            "phase_us_per_write": perWrite])
            if !json {
                let parts = ["puts", "commit", "mirror", "fold"].map { String(format: "%@ %.3f", $0, perWrite[$0] ?? 0) }
                print(String(format: "run %d: %.0f writes/s, CPU %.3f µs a write; phases µs a write: %@",
                             r + 1, Double(all.count) / seconds, cpu * 1e6 / Double(all.count), parts.joined(separator: ", ")))
            }
        }
        if json { printJSON(["writes": all.count, "bits": bits, "batch": batch, "runs": results]) }
    }

    /// User and system CPU of the whole process (every thread, the folds' too).
    private func processCPUSeconds() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
    }
}
