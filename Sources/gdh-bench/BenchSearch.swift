import ArgumentParser
import Foundation
import GDHClient
import GDHCommandLine
import HammingCode
import MultiIndex
import WireProtocol

struct BenchSearch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "search",
        abstract: "Exact k-NN and range search in process, one thread, one query at a time."
    )
    @Option(help: "File of database codes.") var codes: String
    @Option(help: "File of query codes.") var queries: String
    @Option(help: "Code width.") var bits: Int
    @Option(name: .short, help: "Neighbours per query.") var k: Int = 10
    @Option(help: "Radius for the range search (omit to skip it).") var radius: Int?
    @Option(help: "Planner: auto, mih or scan.") var planner: String = "auto"
    @Option(name: .customLong("substrings"), help: "Fixed substring count m (default automatic).") var m: Int?
    @Option(help: "A uint16 little-endian (queries x k) file of true k-NN distances to check against.") var truth: String?
    @Option(help: "Fraction of the codes (0 to 0.9) added after the tables are built, so that searches also look them up in the delta, as between two folds of gdhd.")
    var delta: Double = 0
    @Flag(help: "Print one JSON object.") var json = false

    func validate() throws {
        guard delta >= 0 && delta <= 0.9 else { throw ValidationError("--delta must be 0 to 0.9") }
    }

    func run() throws {
        let width = try CodeWidth(bits: bits)
        guard let mode = PlannerMode(rawValue: planner) else { throw ValidationError("--planner must be auto, mih or scan") }
        let db = try readCodes(codes, width: width)
        let qs = try readCodes(queries, width: width)
        let t0 = now()
        let index = try MultiIndex(width: width, m: m)
        index.codes.reserve(db.count)
        let inTables = db.count - Int(Double(db.count) * delta)
        for (i, c) in db.prefix(inTables).enumerated() { index.codes.set(UInt32(i), c) }
        try index.rebuild(m: m ?? SubstringLayout.automaticCount(for: width, items: db.count))
        let buildSeconds = Double(now() - t0) / 1e9
        for i in inTables..<db.count { index.upsert(UInt32(i), db[i]) }
        index.planner = mode
        var truthRows: [UInt16] = []
        if let truth, let d = FileManager.default.contents(atPath: truth) {
            truthRows = d.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
        }
        // Warm up caches and the branch predictors.
        for q in qs.prefix(20) { _ = index.knn(q, k: k) }
        var times = [UInt64](), paths = ["mih": 0, "scan": 0]
        var mismatches = 0
        times.reserveCapacity(qs.count)
        for (qi, q) in qs.enumerated() {
            var stats = SearchStats()
            let t = now()
            let r = index.knn(q, k: k, stats: &stats)
            times.append(now() - t)
            paths[stats.path.rawValue, default: 0] += 1
            if truthRows.count >= (qi + 1) * k {
                let want = truthRows[(qi * k)..<((qi + 1) * k)].map(Int.init).prefix(min(k, db.count))
                if r.map(\.distance) != Array(want) { mismatches += 1 }
            }
        }
        var rangeTimes = [UInt64](), rangeResults = 0
        if let radius {
            for q in qs.prefix(20) { _ = index.range(q, radius: radius) }
            for q in qs {
                let t = now()
                let r = index.range(q, radius: radius)
                rangeTimes.append(now() - t)
                rangeResults += r.count
            }
        }
        var out: [String: Any] = [
            "n": db.count, "bits": bits, "m": index.m, "k": k, "build_s": buildSeconds, "delta_items": db.count - inTables,
            "knn_ms": summary(times), "paths": paths, "mismatches": mismatches,
            "checked": !truthRows.isEmpty, "planner": planner,
        ]
        if let radius {
            out["range_ms"] = summary(rangeTimes)
            out["radius"] = radius
            out["range_mean_results"] = Double(rangeResults) / Double(max(1, qs.count))
        }
        if json {
            printJSON(out)
        } else {
            let s = summary(times)
            print(String(format: "n=%d bits=%d m=%d build %.2fs  knn median %.4f ms  p99 %.4f ms  paths %@  mismatches %d",
                         db.count, bits, index.m, buildSeconds, s["median"] ?? 0, s["p99"] ?? 0, "\(paths)", mismatches))
        }
    }
}

struct BenchSocket: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "socket",
        abstract: "k-NN queries over the socket from N concurrent clients, one query in flight per client."
    )
    @OptionGroup var connection: ConnectionOptions
    @Option(help: "File of query codes.") var queries: String
    @Option(help: "Code width.") var bits: Int
    @Option(name: .short, help: "Neighbours per query.") var k: Int = 10
    @Option(help: "Concurrent clients.") var clients: Int = 1
    @Option(help: "Queries per client.") var count: Int = 2000
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        let width = try CodeWidth(bits: bits)
        let lines = try readCodes(queries, width: width).map { "KNN \(k) CODE \($0.hex)" }
        guard !lines.isEmpty else { throw Failure("no queries in \(queries)") }
        let perClient = count
        /// What the client threads report, under a lock.
        final class Collected: @unchecked Sendable {
            let lock = NSLock()
            var times = [UInt64](), failures = [String]()
            func add(_ t: [UInt64], _ failure: String?) {
                lock.lock(); defer { lock.unlock() }
                times += t
                if let failure { failures.append(failure) }
            }
        }
        let collected = Collected()
        let group = DispatchGroup()
        let socketPath = connection.socketPath
        let start = now()
        for c in 0..<clients {
            group.enter()
            Thread {
                defer { group.leave() }
                var times = [UInt64]()
                times.reserveCapacity(perClient)
                do {
                    let client = try LineClient(socketPath: socketPath)
                    for i in 0..<perClient {
                        let t = now()
                        let r = try client.request(lines[(c * 7919 + i) % lines.count])
                        times.append(now() - t)
                        if case .error(let code, let m) = r { throw Failure("ERR \(code) \(m)") }
                    }
                    collected.add(times, nil)
                } catch {
                    collected.add(times, "\(error)")
                }
            }.start()
        }
        group.wait()
        let seconds = Double(now() - start) / 1e9
        let all = collected.times
        if let f = collected.failures.first { throw Failure("a client failed: \(f)") }
        let qps = Double(all.count) / seconds
        if json {
            printJSON(["clients": clients, "queries": all.count, "seconds": seconds, "qps": qps, "latency_ms": summary(all)])
        } else {
            let s = summary(all)
            print(String(format: "%d clients: %d queries in %.2fs = %.0f q/s; latency median %.3f ms p99 %.3f ms",
                         clients, all.count, seconds, qps, s["median"] ?? 0, s["p99"] ?? 0))
        }
    }
}

struct BenchIngest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingest",
        abstract: "Pipelined ADDs over the socket; every code is acknowledged only once durable."
    )
    @OptionGroup var connection: ConnectionOptions
    @Option(help: "File of codes to add.") var codes: String
    @Option(help: "Code width.") var bits: Int
    @Option(help: "How many codes (default all).") var count: Int?
    @Option(help: "Key prefix.") var prefix: String = "b"
    @Option(help: "Requests kept in flight.") var window: Int = 4000
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        let width = try CodeWidth(bits: bits)
        let cs = try readCodes(codes, width: width, limit: count)
        let client = try connection.connect()
        let start = now()
        // Each line written as bytes, as a loader formats its keys: the client's own cost
        // (on the daemon's two cores) stays small beside the daemon's.
        let head = Command.addWord + Array(prefix.utf8)
        try client.pipeline(count: cs.count, window: window, bytes: { i, out in
            out.append(contentsOf: head)
            appendDecimal(i, to: &out)
            out.append(contentsOf: Command.codeWord)
            cs[i].appendHex(to: &out)
        }) { _, r in
            if case .error(let code, let m) = r { throw Failure("ERR \(code) \(m)") }
        }
        let seconds = Double(now() - start) / 1e9
        let rate = Double(cs.count) / seconds
        if json {
            printJSON(["codes": cs.count, "seconds": seconds, "codes_per_second": rate])
        } else {
            print(String(format: "ingested %d codes in %.2fs = %.0f codes/s", cs.count, seconds, rate))
        }
    }
}
