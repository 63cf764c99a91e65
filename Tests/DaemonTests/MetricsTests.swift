import Foundation
import GDHClient
import Testing
import WireProtocol
@testable import Daemon

@Suite("METRICS: Prometheus text exposition")
struct MetricsTests {
    @Test("a command's index is that of its name, for every command")
    func commandIndex() {
        let code = CodeSource.code(hexDigits: Array("00".utf8))
        let all: [Command] = [.ping, .quit, .stats, .metrics, .compact, .verify, .reencode, .rebuild(m: 2),
                              .backup(path: "/x"), .add(key: "k", from: code), .del(key: "k"), .get(key: "k"),
                              .knn(k: 1, query: code), .range(radius: 1, query: code)]
        #expect(Set(all.map { MetricsRegistry.index(of: $0) }).count == all.count)
        for c in all {
            #expect(MetricsRegistry.index(of: c) == MetricsRegistry.index(of: c.name), "\(c.name)")
            #expect(MetricsRegistry.commands[MetricsRegistry.index(of: c)] == c.name)
        }
    }

    @Test("counters, cumulative histograms and gauges render exactly")
    func rendering() {
        let registry = MetricsRegistry()
        var b = MetricsBatch()
        let add = MetricsRegistry.index(of: "ADD")
        b.answered(command: add, seconds: 0.00004, text: "OK 0\n")      // first bucket (≤ 50 µs)
        b.answered(command: add, seconds: 0.0003, text: "OK 1\n")       // ≤ 500 µs
        b.answered(command: add, seconds: 20, text: "ERR INTERNAL disk full\n")  // +Inf
        b.answered(command: MetricsRegistry.invalidIndex, seconds: 0.001, text: "ERR BADREQUEST x\n")
        b.received(bytes: 100)
        b.committed(size: 3)
        b.committed(size: 9000)
        registry.merge(&b)
        #expect(b.isEmpty)
        registry.merge(&b)  // nothing more
        let lines = registry.render(gauges: [("gdh_items", "Items stored.", 2)])
        #expect(lines.contains("gdh_requests_total{command=\"ADD\"} 3"))
        #expect(lines.contains("gdh_requests_total{command=\"invalid\"} 1"))
        #expect(lines.contains("gdh_requests_total{command=\"KNN\"} 0"))
        #expect(lines.contains("gdh_errors_total{code=\"BADREQUEST\"} 1"))
        #expect(lines.contains("gdh_errors_total{code=\"INTERNAL\"} 1"))
        #expect(lines.contains("gdh_request_duration_seconds_bucket{command=\"ADD\",le=\"0.00005\"} 1"))
        #expect(lines.contains("gdh_request_duration_seconds_bucket{command=\"ADD\",le=\"0.00025\"} 1"))
        #expect(lines.contains("gdh_request_duration_seconds_bucket{command=\"ADD\",le=\"0.0005\"} 2"))
        #expect(lines.contains("gdh_request_duration_seconds_bucket{command=\"ADD\",le=\"10\"} 2"))
        #expect(lines.contains("gdh_request_duration_seconds_bucket{command=\"ADD\",le=\"+Inf\"} 3"))
        #expect(lines.contains("gdh_request_duration_seconds_count{command=\"ADD\"} 3"))
        #expect(!lines.contains { $0.hasPrefix("gdh_request_duration_seconds_count{command=\"KNN\"") })
        #expect(lines.contains("gdh_commits_total 2"))
        #expect(lines.contains("gdh_commit_batch_size_bucket{le=\"2\"} 0"))
        #expect(lines.contains("gdh_commit_batch_size_bucket{le=\"4\"} 1"))
        #expect(lines.contains("gdh_commit_batch_size_bucket{le=\"8192\"} 1"))
        #expect(lines.contains("gdh_commit_batch_size_bucket{le=\"+Inf\"} 2"))
        #expect(lines.contains("gdh_commit_batch_size_sum 9003"))
        #expect(lines.contains("gdh_received_bytes_total 100"))
        #expect(lines.suffix(3) == ["# HELP gdh_items Items stored.", "# TYPE gdh_items gauge", "gdh_items 2"])
        // Each metric family is declared once, before its samples.
        let types = lines.filter { $0.hasPrefix("# TYPE ") }.map { $0.split(separator: " ")[2] }
        #expect(Set(types).count == types.count)
    }

    @Test("METRICS over the socket: valid exposition lines that count this connection's requests")
    func overTheSocket() throws {
        let d = try TestDaemon()
        let c = try d.client()
        for i in 0..<5 { #expect(try c.request("ADD k\(i) CODE \(hex64(UInt64(i)))").isOK) }
        _ = try c.request("GET nope")
        _ = try c.request("FROB")
        _ = try c.request("KNN 2 CODE 0000000000000000")
        guard case .list(let lines) = try c.request("METRICS") else { Issue.record("METRICS is not a list"); return }
        let sample = try Regex(#"^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9][0-9.e+-]*$"#)
        for l in lines where !l.hasPrefix("# ") {
            #expect(l.wholeMatch(of: sample) != nil, "not a sample line: \(l)")
        }
        #expect(lines.contains("gdh_requests_total{command=\"ADD\"} 5"))
        #expect(lines.contains("gdh_requests_total{command=\"GET\"} 1"))
        #expect(lines.contains("gdh_requests_total{command=\"invalid\"} 1"))
        #expect(lines.contains("gdh_errors_total{code=\"NOTFOUND\"} 1"))
        #expect(lines.contains("gdh_errors_total{code=\"BADREQUEST\"} 1"))
        #expect(lines.contains("gdh_request_duration_seconds_count{command=\"KNN\"} 1"))
        #expect(lines.contains("gdh_items 5"))
        #expect(lines.contains("gdh_connections 1"))
        #expect(lines.contains { $0 == "gdh_commits_total 5" })
        #expect(lines.contains("gdh_commit_batch_size_bucket{le=\"1\"} 5"))
        // A second METRICS counts the first.
        guard case .list(let again) = try c.request("METRICS") else { return }
        #expect(again.contains("gdh_requests_total{command=\"METRICS\"} 1"))
    }
}

@Test("latency bucket labels are the bounds written out")
func latencyLabels() {
    #expect(MetricsRegistry.latencyLabels.map { Double($0)! } == MetricsRegistry.latencyBounds)
}
