import ArgumentParser
import Foundation
import GDHClient
import GDHCommandLine
import WireProtocol

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Add many codes from a file of `key hex` lines (pipelined, batched by the daemon).",
        discussion: """
        FILE holds one `key hex` pair per line (one space between them); empty lines and
        lines starting with # are skipped; - reads standard input. Every line is checked
        before anything is sent: a malformed file adds nothing. Prints a summary: codes
        added, seconds, codes per second.
        """
    )
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The file of `key hex` lines, or - for standard input.") var file: String
    @Option(help: "Requests kept in flight.") var window: Int = 4000
    @Flag(help: "Print the summary as JSON.") var json = false

    func validate() throws {
        guard window >= 1 && window <= 4000 else { throw ValidationError("--window must be 1 to 4000") }
    }

    func run() throws {
        let data: Data
        if file == "-" {
            data = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            guard let d = FileManager.default.contents(atPath: file) else { throw fail("cannot read \(file)") }
            data = d
        }
        let client = try connection.connect()
        // The database's width, to check every code before sending.
        guard case .list(let stats) = try client.request("STATS"),
              let bits = stats.first(where: { $0.hasPrefix("bits ") }).flatMap({ Int($0.dropFirst(5)) }) else {
            throw fail("the daemon did not report its code width")
        }
        var lines: [String] = []
        var fileLines: [Int] = []   // the file's line number of each request
        var problems: [String] = []
        var lineNumber = 0
        for raw in data.split(separator: 0x0A, omittingEmptySubsequences: false) {
            lineNumber += 1
            var bytes = raw
            if bytes.last == 0x0D { bytes = bytes.dropLast() }
            if bytes.isEmpty || bytes.first == UInt8(ascii: "#") { continue }
            let parts = bytes.split(separator: 0x20, omittingEmptySubsequences: false)
            guard parts.count == 2, let key = String(bytes: parts[0], encoding: .utf8),
                  (try? validateKey(key)) != nil else {
                problems.append("line \(lineNumber): expected `key hex` with a key of 1 to 256 bytes and no spaces")
                continue
            }
            let hex = parts[1]
            guard hex.count == bits / 4, hex.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) || ($0 >= 65 && $0 <= 70) }) else {
                problems.append("line \(lineNumber): the code must be \(bits / 4) hex digits for this \(bits)-bit database")
                continue
            }
            lines.append("ADD \(key) CODE \(String(decoding: hex, as: UTF8.self))")
            fileLines.append(lineNumber)
        }
        if !problems.isEmpty {
            for p in problems.prefix(10) { FileHandle.standardError.write(Data("gdh: \(file): \(p)\n".utf8)) }
            if problems.count > 10 { FileHandle.standardError.write(Data("gdh: ... and \(problems.count - 10) more\n".utf8)) }
            throw fail("nothing was imported")
        }
        var progress = ProgressBar(total: lines.count, label: "import")
        let start = Date()
        var received = 0, errors = 0
        var firstError: String?
        do {
            try client.pipeline(count: lines.count, window: window, line: { lines[$0] }) { i, r in
                received = i + 1
                if case .error(let code, let message) = r {
                    errors += 1
                    if firstError == nil { firstError = "line \(fileLines[i]): ERR \(code) \(message)" }
                }
                progress.update(received)
            }
        } catch {
            progress.finish()
            throw fail("\(error) after \(received) of \(lines.count) codes were acknowledged")
        }
        progress.update(received, force: true)
        progress.finish()
        let seconds = Date().timeIntervalSince(start)
        let added = lines.count - errors
        if json {
            printJSON(["added": added, "errors": errors, "seconds": seconds, "codes_per_second": Double(added) / max(seconds, 1e-9)])
        } else {
            print(String(format: "added %d codes in %.2f s (%.0f codes/s)", added, seconds, Double(added) / max(seconds, 1e-9)))
        }
        if let firstError { throw fail("\(errors) codes were refused; first: \(firstError)") }
    }
}
