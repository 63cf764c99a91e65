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
        guard let bits = Statistics.dictionary(try client.request(Command.stats.requestLine))?["bits"].flatMap({ Int($0) }) else {
            throw fail("the daemon did not report its code width")
        }
        let parsed = ImportFile(parsing: data, bits: bits)
        if !parsed.problems.isEmpty {
            for p in parsed.problems.prefix(10) { FileHandle.standardError.write(Data("gdh: \(file): \(p)\n".utf8)) }
            if parsed.problems.count > 10 { FileHandle.standardError.write(Data("gdh: ... and \(parsed.problems.count - 10) more\n".utf8)) }
            throw fail("nothing was imported")
        }
        let (added, errors, seconds, firstError) = try send(parsed.entries, over: client)
        if json {
            printJSON(["added": added, "errors": errors, "seconds": seconds, "codes_per_second": Double(added) / max(seconds, 1e-9)])
        } else {
            print(String(format: "added %d codes in %.2f s (%.0f codes/s)", added, seconds, Double(added) / max(seconds, 1e-9)))
        }
        if let firstError { throw fail("\(errors) codes were refused; first: \(firstError)") }
    }

    /// Pipelines the entries with a progress bar: codes added, codes refused, seconds, and
    /// the first refusal with its file line.
    func send(_ entries: [ImportFile.Entry], over client: LineClient) throws -> (Int, Int, Double, String?) {
        var progress = ProgressBar(total: entries.count, label: "import")
        let start = Date()
        var received = 0, errors = 0
        var firstError: String?
        do {
            try client.pipeline(count: entries.count, window: window, bytes: { entries[$0].command.appendRequestLine(to: &$1) }) { i, r in
                received = i + 1
                if case .error(let code, let message) = r {
                    errors += 1
                    if firstError == nil { firstError = "line \(entries[i].line): ERR \(code) \(message)" }
                }
                progress.update(received)
            }
        } catch {
            progress.finish()
            throw fail("\(error) after \(received) of \(entries.count) codes were acknowledged")
        }
        progress.update(received, force: true)
        progress.finish()
        return (entries.count - errors, errors, Date().timeIntervalSince(start), firstError)
    }
}
