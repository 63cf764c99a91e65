import Foundation
import Testing
@testable import Daemon

/// Replays Protocol/transcripts/*.txt over a real socket (format in its README.md).
@Suite("Protocol transcripts")
struct TranscriptTests {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Protocol/transcripts")

    static var files: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [])
            .filter { $0.hasSuffix(".txt") }.sorted()
    }

    @Test("the transcripts exist")
    func present() {
        #expect(TranscriptTests.files.count >= 4)
    }

    enum Step {
        case request(String, expected: [String])
        /// Stop the daemon and start it again on the same database with this model.
        case restart(model: String?)
    }

    /// `a`, `b` or `none` after `# model:` / `# restart: model`.
    static func modelName(_ text: Substring) -> String?? {
        switch text.trimmingCharacters(in: .whitespaces) {
        case "a": return .some("a")
        case "b": return .some("b")
        case "none": return .some(nil)
        default: return nil
        }
    }

    @Test("each transcript replays exactly", arguments: TranscriptTests.files)
    func replay(file: String) throws {
        let text = try String(contentsOf: TranscriptTests.directory.appendingPathComponent(file), encoding: .utf8)
        var bits = 64
        var model: String?
        var usesModels = false
        var steps: [Step] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# bits: "), let b = Int(line.dropFirst(8)) { bits = b; continue }
            if line.hasPrefix("# model: ") {
                guard steps.isEmpty, let m = TranscriptTests.modelName(line.dropFirst(9)) else {
                    Issue.record("\(file): \(line) must name a, b or none, before the first request"); return
                }
                model = m
                usesModels = true
                continue
            }
            if line.hasPrefix("# restart: model ") {
                guard let m = TranscriptTests.modelName(line.dropFirst(17)) else {
                    Issue.record("\(file): \(line) must name a, b or none"); return
                }
                steps.append(.restart(model: m))
                usesModels = true
                continue
            }
            if line.hasPrefix("#") || line.isEmpty { continue }
            if line.hasPrefix("> ") || line == ">" {
                steps.append(.request(String(line.dropFirst(2)), expected: []))
            } else if line.hasPrefix("< ") || line.hasPrefix("<~ "), case .request(let r, let e)? = steps.last {
                steps[steps.count - 1] = .request(r, expected: e + [String(line)])
            } else {
                Issue.record("\(file): unreadable line \(line)")
            }
        }
        // Test models and images, only for transcripts that name a model or a placeholder.
        var fixture: ModelChangeFixture?
        if usesModels || text.contains("{images}") || text.contains("{model-") { fixture = try ModelChangeFixture() }
        func configure(_ m: String?) -> (inout DaemonConfiguration) -> Void {
            guard let fixture else { return { _ in } }
            return fixture.using(m.flatMap { fixture.path(of: $0) })
        }
        // {tmp}: an empty directory of this replay, for files the daemon writes (BACKUP).
        let tmp = NSTemporaryDirectory() + "gdh-transcript-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        func substitute(_ s: String, regex: Bool) -> String {
            var out = s.replacingOccurrences(of: "{tmp}", with: regex ? NSRegularExpression.escapedPattern(for: tmp) : tmp)
            guard let fixture else { return out }
            for (name, value) in [("{images}", fixture.images), ("{model-a}", fixture.identityA), ("{model-b}", fixture.identityB)] {
                out = out.replacingOccurrences(of: name, with: regex ? NSRegularExpression.escapedPattern(for: value) : value)
            }
            return out
        }
        let daemon = try TestDaemon(bits: bits, configure: configure(model))
        var socket = try RawSocket(path: daemon.socket)
        for step in steps {
            guard case .request(let template, let expected) = step else {
                if case .restart(let m) = step {
                    daemon.stop()
                    try daemon.start(configure: configure(m))
                    socket = try RawSocket(path: daemon.socket)
                }
                continue
            }
            let request = substitute(template, regex: false)
            socket.send(request + "\n")
            let got = socket.readLines(expected.count)
            #expect(got.count == expected.count, "\(file): \(request) answered \(got)")
            for (g, e) in zip(got, expected) {
                if e.hasPrefix("<~ ") {
                    let pattern = "^" + substitute(String(e.dropFirst(3)), regex: true) + "$"
                    #expect(g.range(of: pattern, options: .regularExpression) != nil, "\(file): \(request) → \(g) !~ \(pattern)")
                } else {
                    #expect(g == substitute(String(e.dropFirst(2)), regex: false), "\(file): \(request)")
                }
            }
        }
    }
}
