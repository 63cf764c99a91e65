import ArgumentParser
import Foundation
import GDHCommandLine
import GDHClient
import HammingCode
import WireProtocol

/// The soak benchmark (issue 9 item 7): many clients for minutes, mixing writes, queries
/// and a COMPACT every minute; per-command latency percentiles, the longest wait any write
/// saw, and the daemon's resident memory over time.
struct BenchSoak: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak",
        abstract: "Many clients mixing ADD, DEL, KNN and RANGE for minutes, with a COMPACT every minute.",
        discussion: """
        Each client keeps one request in flight over its own connection, picking ADD (a random key \
        of the key space, a random code), DEL (a random key), KNN or RANGE (a random code) by the \
        mix. The key space is preloaded to half first. Latencies are per command (p50, p99, p99.9, \
        max); the daemon's VmRSS (its pid from the socket's peer credentials, read in /proc) and \
        item count are sampled over the run. Not a test: it reports, it does not judge.
        """
    )
    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Concurrent clients.") var clients: Int = 64
    @Option(help: "Seconds to run.") var seconds: Double = 600
    @Option(help: "Seconds between COMPACTs (0: none).") var compactEvery: Double = 60
    @Option(help: "Distinct keys the writes use.") var keys: Int = 1_000_000
    @Option(help: "Keys added before the run (default half the key space).") var preload: Int?
    @Option(help: "Weights of add,del,knn,range.") var mix: String = "40,10,40,10"
    @Option(name: .short, help: "Neighbours per KNN.") var k: Int = 10
    @Option(help: "RANGE radius (default bits/16).") var radius: Int?
    @Option(help: "Seconds between memory samples.") var sampleEvery: Double = 10
    @Option(help: "Random seed.") var seed: UInt64 = 1
    @Flag(help: "Print one JSON object.") var json = false

    static let commands = ["ADD", "DEL", "KNN", "RANGE"]

    /// What the client threads and the admin loop report, under a lock.
    final class Shared: @unchecked Sendable {
        let lock = NSLock()
        var histograms = [LatencyHistogram](repeating: LatencyHistogram(), count: BenchSoak.commands.count)
        var errors: [String: Int] = [:]
        var failure: String?
        /// Each COMPACT: when it was sent (seconds from the start) and how long it took.
        var compacts: [(at: Double, seconds: Double)] = []
        /// The slowest writes of the run (ADD and DEL), slowest first.
        var slowWrites = SlowestWaits()
        var samples: [(t: Double, rssMiB: Double, items: Int, fileMiB: Double)] = []
    }

    func run() throws {
        let weights = mix.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard weights.count == 4, weights.allSatisfy({ $0 >= 0 }), weights.reduce(0, +) > 0 else {
            throw ValidationError("--mix must be four non-negative weights add,del,knn,range, for example 40,10,40,10")
        }
        guard clients > 0, seconds > 0, keys > 0 else { throw ValidationError("--clients, --seconds and --keys must be positive") }
        let admin = try connection.connect()
        guard let pid = admin.peerProcessID else { throw Failure("cannot tell the daemon's process id from the socket") }
        let stats = try statsOf(admin)
        guard let bits = stats["bits"].flatMap(Int.init), let width = try? CodeWidth(bits: bits) else {
            throw Failure("STATS did not give the code width")
        }
        let r = radius ?? max(1, bits / 16)
        var rng = SplitMix64(seed: seed)
        // Preload half the key space (pipelined, durable acks).
        let pre = min(keys, preload ?? keys / 2)
        let preCodes = (0..<pre).map { _ in SyntheticCodes.random(width, using: &rng).hex }
        let t0 = now()
        try admin.pipeline(count: pre, window: 4000, line: { "ADD soak-\($0) CODE \(preCodes[$0])" }) { _, resp in
            if case .error(let c, let m) = resp { throw Failure("preload: ERR \(c) \(m)") }
        }
        let preloadSeconds = Double(now() - t0) / 1e9

        let shared = Shared()
        let start = now()
        let deadline = start + UInt64(seconds * 1e9)
        let group = startClients(shared, start: start, deadline: deadline, weights: weights, width: width, radius: r)
        try administer(admin, pid: pid, shared, start: start, deadline: deadline)
        group.wait()
        let elapsed = Double(now() - start) / 1e9
        let end = try statsOf(admin)
        shared.samples.append((elapsed, Double(residentKiB(pid)) / 1024, Int(end["items"] ?? "") ?? 0,
                               (Double(end["file_bytes"] ?? "") ?? 0) / 1_048_576))
        if let f = shared.failure { throw Failure("a client failed: \(f)") }
        report(shared.histograms, errors: shared.errors, compacts: shared.compacts, slowWrites: shared.slowWrites,
               samples: shared.samples,
               elapsed: elapsed, preload: pre, preloadSeconds: preloadSeconds, bits: bits, radius: r)
    }

    /// The client threads: each keeps one request in flight on its connection until the
    /// deadline, picking commands by the mix; their latencies go into `shared` at the end.
    func startClients(_ shared: Shared, start: UInt64, deadline: UInt64, weights: [Int], width: CodeWidth, radius r: Int) -> DispatchGroup {
        let socketPath = connection.socketPath
        let group = DispatchGroup()
        let total = weights.reduce(0, +)
        let keySpace = keys, kk = k
        @Sendable func code(_ g: inout SplitMix64) -> String { SyntheticCodes.random(width, using: &g).hex }
        for c in 0..<clients {
            group.enter()
            let clientSeed = seed &+ 1000 &+ UInt64(c)
            Thread {
                defer { group.leave() }
                var g = SplitMix64(seed: clientSeed)
                var local = [LatencyHistogram](repeating: LatencyHistogram(), count: BenchSoak.commands.count)
                var errors: [String: Int] = [:]
                var slow = SlowestWaits()
                var failure: String?
                do {
                    let client = try LineClient(socketPath: socketPath)
                    while now() < deadline {
                        var pick = Int(g.next() % UInt64(total)), op = 0
                        while pick >= weights[op] { pick -= weights[op]; op += 1 }
                        let line: String
                        switch op {
                        case 0: line = "ADD soak-\(g.next() % UInt64(keySpace)) CODE \(code(&g))"
                        case 1: line = "DEL soak-\(g.next() % UInt64(keySpace))"
                        case 2: line = "KNN \(kk) CODE \(code(&g))"
                        default: line = "RANGE \(r) CODE \(code(&g))"
                        }
                        let t = now()
                        let resp = try client.request(line)
                        let took = now() - t
                        local[op].record(took)
                        if op < 2 { slow.record(took, sentAt: Double(t - start) / 1e9, command: BenchSoak.commands[op]) }
                        if case .error(let code, _) = resp { errors["\(BenchSoak.commands[op]) \(code)", default: 0] += 1 }
                    }
                } catch {
                    failure = "\(error)"
                }
                shared.lock.lock()
                for i in local.indices { shared.histograms[i].merge(local[i]) }
                for (e, n) in errors { shared.errors[e, default: 0] += n }
                shared.slowWrites.merge(slow)
                if let failure, shared.failure == nil { shared.failure = failure }
                shared.lock.unlock()
            }.start()
        }
        return group
    }

    /// Until the deadline, on the admin connection: a COMPACT every --compact-every
    /// seconds and a memory sample every --sample-every.
    func administer(_ admin: LineClient, pid: Int32, _ shared: Shared, start: UInt64, deadline: UInt64) throws {
        var nextCompact = compactEvery > 0 ? start + UInt64(compactEvery * 1e9) : UInt64.max
        var nextSample = start
        while now() < deadline {
            let t = now()
            if t >= nextSample {
                let s = try statsOf(admin)
                shared.lock.lock()
                shared.samples.append((Double(t - start) / 1e9, Double(residentKiB(pid)) / 1024,
                                       Int(s["items"] ?? "") ?? 0, (Double(s["file_bytes"] ?? "") ?? 0) / 1_048_576))
                shared.lock.unlock()
                nextSample += UInt64(sampleEvery * 1e9)
            }
            if t >= nextCompact {
                let c0 = now()
                let resp = try admin.request("COMPACT")
                if case .error(let code, let m) = resp { throw Failure("COMPACT: ERR \(code) \(m)") }
                shared.lock.lock()
                shared.compacts.append((Double(c0 - start) / 1e9, Double(now() - c0) / 1e9))
                shared.lock.unlock()
                nextCompact += UInt64(compactEvery * 1e9)
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    private func report(_ h: [LatencyHistogram], errors: [String: Int], compacts: [(at: Double, seconds: Double)],
                        slowWrites: SlowestWaits,
                        samples: [(t: Double, rssMiB: Double, items: Int, fileMiB: Double)],
                        elapsed: Double, preload: Int, preloadSeconds: Double, bits: Int, radius: Int) {
        let ops = h.reduce(0) { $0 + $1.count }
        let writeMax = max(h[0].max, h[1].max)
        // RSS once the data stopped growing: from the first sample with at least 98% of the
        // final item count to the end.
        let finalItems = samples.last?.items ?? 0
        let steady = samples.first { Double($0.items) >= 0.98 * Double(finalItems) }
        let steadyRSS = samples.filter { $0.t >= (steady?.t ?? 0) }.map(\.rssMiB)
        // Which COMPACT (1-based) a slow write overlapped, if any.
        func duringCompact(_ w: SlowestWaits.Wait) -> Int? {
            compacts.firstIndex { w.overlaps(from: $0.at, to: $0.at + $0.seconds) }.map { $0 + 1 }
        }
        if json {
            var commands: [String: Any] = [:]
            for (i, name) in Self.commands.enumerated() {
                commands[name] = ["count": h[i].count, "per_second": Double(h[i].count) / elapsed,
                                  "p50_ms": h[i].quantile(0.5) / 1e6, "p99_ms": h[i].quantile(0.99) / 1e6,
                                  "p999_ms": h[i].quantile(0.999) / 1e6, "max_ms": Double(h[i].max) / 1e6]
            }
            printJSON([
                "clients": clients, "seconds": elapsed, "keys": keys, "preload": preload, "preload_seconds": preloadSeconds,
                "bits": bits, "radius": radius, "k": k, "mix": mix, "ops": ops, "ops_per_second": Double(ops) / elapsed,
                "commands": commands, "errors": errors, "compact_seconds": compacts.map(\.seconds),
                "compact_started_s": compacts.map(\.at),
                "longest_write_ms": Double(writeMax) / 1e6,
                "slowest_writes": slowWrites.waits.map { w -> [String: Any] in
                    ["command": w.command, "ms": Double(w.nanoseconds) / 1e6, "sent_s": w.sentAt,
                     "during_compact": duringCompact(w).map { $0 as Any } ?? NSNull()]
                },
                "samples": samples.map { ["t": $0.t, "rss_mib": $0.rssMiB, "items": $0.items, "file_mib": $0.fileMiB] },
                "steady_from_s": steady?.t ?? 0,
                "steady_rss_min_mib": steadyRSS.min() ?? 0, "steady_rss_max_mib": steadyRSS.max() ?? 0,
            ])
            return
        }
        print(String(format: "%d clients, %.0f s, %d ops = %.0f ops/s; preload %d keys in %.1f s", clients, elapsed, ops,
                     Double(ops) / elapsed, preload, preloadSeconds))
        for (i, name) in Self.commands.enumerated() {
            print(String(format: "%-6@ %9d  %8.0f/s  p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms", name as NSString,
                         h[i].count, Double(h[i].count) / elapsed, h[i].quantile(0.5) / 1e6, h[i].quantile(0.99) / 1e6,
                         h[i].quantile(0.999) / 1e6, Double(h[i].max) / 1e6))
        }
        print(String(format: "longest write wait %.1f ms; COMPACTs %@ s", Double(writeMax) / 1e6,
                     compacts.map { String(format: "%.2f", $0.seconds) }.joined(separator: ", ")))
        for w in slowWrites.waits {
            let during = duringCompact(w).map { c in String(format: ", during COMPACT %d (sent at %.1f s)", c, compacts[c - 1].at) } ?? ""
            print(String(format: "slow write: %@ %.1f ms, sent at %.3f s%@", w.command as NSString, Double(w.nanoseconds) / 1e6,
                         w.sentAt, during as NSString))
        }
        if !errors.isEmpty { print("errors: \(errors)") }
        for s in samples { print(String(format: "t %6.0f s  rss %7.1f MiB  items %9d  file %7.1f MiB", s.t, s.rssMiB, s.items, s.fileMiB)) }
        print(String(format: "steady from %.0f s: rss %.1f-%.1f MiB", steady?.t ?? 0, steadyRSS.min() ?? 0, steadyRSS.max() ?? 0))
    }

    private func statsOf(_ c: LineClient) throws -> [String: String] {
        guard let stats = Statistics.dictionary(try c.request("STATS")) else { throw Failure("STATS failed") }
        return stats
    }

    private func residentKiB(_ pid: Int32) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0
        }
        return 0
    }
}
