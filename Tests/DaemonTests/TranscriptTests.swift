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

    @Test("each transcript replays exactly", arguments: TranscriptTests.files)
    func replay(file: String) throws {
        let text = try String(contentsOf: TranscriptTests.directory.appendingPathComponent(file), encoding: .utf8)
        var bits = 64
        var steps: [(request: String, expected: [String])] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# bits: "), let b = Int(line.dropFirst(8)) { bits = b; continue }
            if line.hasPrefix("#") || line.isEmpty { continue }
            if line.hasPrefix("> ") || line == ">" {
                steps.append((String(line.dropFirst(2)), []))
            } else if line.hasPrefix("< ") || line.hasPrefix("<~ ") {
                steps[steps.count - 1].expected.append(String(line))
            } else {
                Issue.record("\(file): unreadable line \(line)")
            }
        }
        let daemon = try TestDaemon(bits: bits)
        let socket = try RawSocket(path: daemon.socket)
        for (request, expected) in steps {
            socket.send(request + "\n")
            let got = socket.readLines(expected.count)
            #expect(got.count == expected.count, "\(file): \(request) answered \(got)")
            for (g, e) in zip(got, expected) {
                if e.hasPrefix("<~ ") {
                    let pattern = "^" + e.dropFirst(3) + "$"
                    #expect(g.range(of: pattern, options: .regularExpression) != nil, "\(file): \(request) → \(g) !~ \(pattern)")
                } else {
                    #expect(g == String(e.dropFirst(2)), "\(file): \(request)")
                }
            }
        }
    }
}
