import NIOConcurrencyHelpers
import WireProtocol

/// What one connection (or the writer) observed since it last merged into the daemon's
/// `MetricsRegistry`: plain counters, no lock, merged once per read burst or delivery.
struct MetricsBatch {
    /// Requests by command (`MetricsRegistry.commands` order).
    var requests = [UInt64](repeating: 0, count: MetricsRegistry.commands.count)
    /// Latency histogram per command: counts per bucket (`latencyBounds`, then +Inf).
    var latency = [[UInt64]](repeating: [UInt64](repeating: 0, count: MetricsRegistry.latencyBounds.count + 1),
                             count: MetricsRegistry.commands.count)
    var latencySum = [Double](repeating: 0, count: MetricsRegistry.commands.count)
    var errors: [String: UInt64] = [:]
    var receivedBytes: UInt64 = 0
    var sentBytes: UInt64 = 0
    var commits: UInt64 = 0
    /// Commit batch size histogram (`batchBounds`, then +Inf).
    var batch = [UInt64](repeating: 0, count: MetricsRegistry.batchBounds.count + 1)
    var batchSum: UInt64 = 0
    var isEmpty = true

    /// A request of command index `c` answered after `seconds`, with the answer `text`.
    mutating func answered(command c: Int, seconds: Double, text: String) {
        answered(command: c, seconds: seconds, bytes: text.utf8.count)
        if text.hasPrefix("ERR ") {
            let code = text.utf8.dropFirst(4).prefix { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\n") }
            errors[String(decoding: code, as: UTF8.self), default: 0] += 1
        }
    }

    /// A request answered without error after `seconds`, in `bytes` bytes (a streamed answer).
    mutating func answered(command c: Int, seconds: Double, bytes: Int) {
        isEmpty = false
        requests[c] += 1
        latency[c][MetricsRegistry.bucket(seconds, MetricsRegistry.latencyBounds)] += 1
        latencySum[c] += seconds
        sentBytes += UInt64(bytes)
    }

    mutating func received(bytes: Int) {
        isEmpty = false
        receivedBytes += UInt64(bytes)
    }

    /// One commit of `size` writes.
    mutating func committed(size: Int) {
        isEmpty = false
        commits += 1
        batch[MetricsRegistry.bucket(Double(size), MetricsRegistry.batchBounds)] += 1
        batchSum += UInt64(size)
    }

    /// Back to all zero, without new storage.
    mutating func reset() {
        for c in requests.indices {
            requests[c] = 0
            latencySum[c] = 0
            for b in latency[c].indices { latency[c][b] = 0 }
        }
        errors.removeAll(keepingCapacity: true)
        receivedBytes = 0
        sentBytes = 0
        commits = 0
        for b in batch.indices { batch[b] = 0 }
        batchSum = 0
        isEmpty = true
    }

    mutating func add(_ o: MetricsBatch) {
        guard !o.isEmpty else { return }
        isEmpty = false
        for c in requests.indices {
            requests[c] += o.requests[c]
            latencySum[c] += o.latencySum[c]
            for b in latency[c].indices { latency[c][b] += o.latency[c][b] }
        }
        for (k, v) in o.errors { errors[k, default: 0] += v }
        receivedBytes += o.receivedBytes
        sentBytes += o.sentBytes
        commits += o.commits
        for b in batch.indices { batch[b] += o.batch[b] }
        batchSum += o.batchSum
    }
}

/// The daemon's counters and histograms, rendered for `METRICS` in the Prometheus text
/// exposition format (version 0.0.4).
final class MetricsRegistry: @unchecked Sendable {
    /// Label values of `command`: the protocol's command words, and `invalid` for lines
    /// that did not parse.
    static let commands = ["PING", "QUIT", "STATS", "METRICS", "COMPACT", "VERIFY", "REENCODE", "REBUILD", "BACKUP",
                           "ADD", "DEL", "GET", "KNN", "RANGE", "invalid"]
    static let invalidIndex = commands.count - 1
    private static let commandIndex: [String: Int] = Dictionary(uniqueKeysWithValues: commands.enumerated().map { ($1, $0) })
    /// Upper bounds of the latency buckets, in seconds.
    static let latencyBounds: [Double] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                          0.1, 0.25, 0.5, 1, 2.5, 10]
    /// The same bounds as `le` label values, written out in decimal.
    static let latencyLabels = ["0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
                                "0.05", "0.1", "0.25", "0.5", "1", "2.5", "10"]
    /// Upper bounds of the commit batch size buckets, in writes.
    static let batchBounds: [Double] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]

    static func index(of commandName: String) -> Int { commandIndex[commandName] ?? invalidIndex }

    /// The index of ADD (`index(of: .add(...))`), for requests taken without a `Command`.
    static let addIndex = 9

    /// `index(of: command.name)` without a string or a dictionary look-up (once per request).
    static func index(of command: Command) -> Int {
        switch command {
        case .ping: return 0
        case .quit: return 1
        case .stats: return 2
        case .metrics: return 3
        case .compact: return 4
        case .verify: return 5
        case .reencode: return 6
        case .rebuild: return 7
        case .backup: return 8
        case .add: return 9
        case .del: return 10
        case .get: return 11
        case .knn: return 12
        case .range: return 13
        }
    }

    @inline(__always)
    static func bucket(_ v: Double, _ bounds: [Double]) -> Int {
        var i = 0
        while i < bounds.count && v > bounds[i] { i += 1 }
        return i
    }

    private let total = NIOLockedValueBox(MetricsBatch())

    /// Adds `b` to the totals and zeroes it (keeping its storage).
    func merge(_ b: inout MetricsBatch) {
        guard !b.isEmpty else { return }
        total.withLockedValue { $0.add(b) }
        b.reset()
    }

    /// One commit of `size` writes (the writer, once per commit).
    func committed(size: Int) {
        total.withLockedValue { $0.committed(size: size) }
    }

    var snapshot: MetricsBatch { total.withLockedValue { $0 } }

    /// The exposition text, one string per line, with `gauges` (name, help, value) after
    /// the counters and histograms.
    func render(gauges: [(String, String, Double)]) -> [String] {
        let m = snapshot
        var out: [String] = []
        func header(_ name: String, _ type: String, _ help: String) {
            out.append("# HELP \(name) \(help)")
            out.append("# TYPE \(name) \(type)")
        }
        header("gdh_requests_total", "counter", "Requests answered, by command.")
        for (c, name) in MetricsRegistry.commands.enumerated() {
            out.append("gdh_requests_total{command=\"\(name)\"} \(m.requests[c])")
        }
        header("gdh_errors_total", "counter", "ERR answers, by error code.")
        for code in m.errors.keys.sorted() {
            out.append("gdh_errors_total{code=\"\(code)\"} \(m.errors[code]!)")
        }
        header("gdh_request_duration_seconds", "histogram",
               "Time from reading a request to writing its answer, by command.")
        /// One histogram's samples: cumulative buckets, +Inf, sum and count. `label` is
        /// the series' other labels ("" or `name="value",`).
        func histogram(_ name: String, _ label: String, _ counts: [UInt64], _ bounds: [String], sum: String) {
            var cumulative: UInt64 = 0
            for (b, bound) in bounds.enumerated() {
                cumulative += counts[b]
                out.append("\(name)_bucket{\(label)le=\"\(bound)\"} \(cumulative)")
            }
            cumulative += counts[bounds.count]
            out.append("\(name)_bucket{\(label)le=\"+Inf\"} \(cumulative)")
            let series = label.isEmpty ? "" : "{" + label.dropLast() + "}"
            out.append("\(name)_sum\(series) \(sum)")
            out.append("\(name)_count\(series) \(cumulative)")
        }
        for (c, name) in MetricsRegistry.commands.enumerated() where m.requests[c] > 0 {
            histogram("gdh_request_duration_seconds", "command=\"\(name)\",", m.latency[c], MetricsRegistry.latencyLabels,
                      sum: MetricsRegistry.number(m.latencySum[c]))
        }
        header("gdh_commits_total", "counter", "Write transactions committed (each synced) by the writer.")
        out.append("gdh_commits_total \(m.commits)")
        header("gdh_commit_batch_size", "histogram", "Writes per committed transaction (group commit).")
        histogram("gdh_commit_batch_size", "", m.batch, MetricsRegistry.batchBounds.map { MetricsRegistry.number($0) },
                  sum: String(m.batchSum))
        header("gdh_received_bytes_total", "counter", "Request bytes read from clients.")
        out.append("gdh_received_bytes_total \(m.receivedBytes)")
        header("gdh_sent_bytes_total", "counter", "Answer bytes written to clients.")
        out.append("gdh_sent_bytes_total \(m.sentBytes)")
        for (name, help, value) in gauges {
            header(name, "gauge", help)
            out.append("\(name) \(MetricsRegistry.number(value))")
        }
        return out
    }

    /// A sample value as Prometheus reads it: integers without a fraction.
    static func number(_ v: Double) -> String {
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return String(v)
    }
}
