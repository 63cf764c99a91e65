import ArgumentParser
import Foundation
import GDHClient
import GDHCommandLine
import WireProtocol

struct GDH: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gdh",
        abstract: "Client for the gdh-index daemon (gdhd).",
        discussion: """
        Talks to gdhd over its Unix socket (--socket, else $GDH_SOCKET, else /tmp/gdh.sock).
        Exit status: 0 on success, 1 when the daemon answers ERR or cannot be reached
        (the message goes to standard error), 64 on a usage error.
        """,
        subcommands: [
            Ping.self, Add.self, Import.self, Get.self, Del.self, Knn.self, RangeQuery.self,
            Stats.self, Metrics.self, Compact.self, Backup.self, Rebuild.self, Verify.self, Reencode.self, AddImages.self, Query.self, Generate.self,
            // Run by gdh-train, gdh-bench and gdh-db (main.swift), listed here for the help.
            SiblingCommand<SynthVerb>.self, SiblingCommand<TrainVerb>.self, SiblingCommand<EvalVerb>.self,
            SiblingCommand<BenchVerb>.self, SiblingCommand<InspectVerb>.self, SiblingCommand<DumpVerb>.self,
        ]
    )
}

/// Prints `gdh: <message>` on standard error; throw the result to exit with status 1.
func fail(_ message: String) -> ExitCode {
    FileHandle.standardError.write(Data("gdh: \(message)\n".utf8))
    return ExitCode(1)
}

/// Runs one request and returns its successful response; ERR becomes exit 1.
func roundTrip(_ options: ConnectionOptions, _ command: Command) throws -> Response {
    do {
        let client = try options.connect()
        let response = try client.request(command.requestLine)
        if case .error(let code, let message) = response {
            throw fail("ERR \(code) \(message)")
        }
        return response
    } catch let e as ExitCode {
        throw e
    } catch {
        throw fail("\(error)")
    }
}

/// Checks a key with the daemon's own parser, so bad input fails before anything is sent.
func validateKey(_ key: String) throws {
    if let problem = RequestParser.keyProblem(key) { throw ValidationError(problem) }
}

struct Ping: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check that the daemon answers.")
    @OptionGroup var connection: ConnectionOptions
    func run() throws {
        if case .ok(let t) = try roundTrip(connection, .ping) { print(t) }
    }
}

struct Add: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Store a code under a key (replacing the key's code if it exists); prints the item id.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The item's key: 1 to 256 bytes, no spaces.") var key: String
    @Argument(help: "The code as hex, bits/4 digits.") var hex: String
    func validate() throws { try validateKey(key) }
    func run() throws {
        if case .ok(let t) = try roundTrip(connection, .add(key: key, from: .code(hexDigits: Array(hex.utf8)))) { print(t) }
    }
}

struct Get: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the code stored under a key.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The item's key.") var key: String
    @Flag(help: "Print JSON.") var json = false
    func validate() throws { try validateKey(key) }
    func run() throws {
        guard case .ok(let hex) = try roundTrip(connection, .get(key: key)) else { return }
        if json { printJSON(["key": key, "code": hex]) } else { print(hex) }
    }
}

struct Del: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a key; prints 1 if it existed, 0 if not.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The item's key.") var key: String
    func validate() throws { try validateKey(key) }
    func run() throws {
        if case .ok(let t) = try roundTrip(connection, .del(key: key)) { print(t) }
    }
}

/// Checks -k against the protocol's limit.
func validateK(_ k: Int) throws {
    guard (1...RequestParser.maxK).contains(k) else { throw ValidationError("-k must be 1 to \(RequestParser.maxK)") }
}

/// Prints neighbour lines (`key distance`) as text or JSON.
func printNeighbors(_ response: Response, json: Bool) {
    guard case .list(let lines) = response, let neighbors = Neighbor.list(response) else { return }
    if json {
        let items: [[String: Any]] = neighbors.map { ["key": $0.key, "distance": $0.distance] }
        printJSON(["count": items.count, "results": items])
    } else {
        for l in lines { print(l) }
    }
}

struct Knn: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The k nearest items to a code: `key distance` lines, nearest first.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The query code as hex.") var hex: String
    @Option(name: .short, help: "How many neighbours (1 to \(RequestParser.maxK)).") var k: Int = 10
    @Flag(help: "Print JSON.") var json = false
    func validate() throws { try validateK(k) }
    func run() throws {
        printNeighbors(try roundTrip(connection, .knn(k: k, query: .code(hexDigits: Array(hex.utf8)))), json: json)
    }
}

struct RangeQuery: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "range", abstract: "Every item within Hamming distance r of a code, nearest first.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The query code as hex.") var hex: String
    @Option(name: .short, help: "The radius (0 to \(RequestParser.maxRadius)).") var r: Int
    @Flag(help: "Print JSON.") var json = false
    func validate() throws {
        guard (0...RequestParser.maxRadius).contains(r) else { throw ValidationError("-r must be 0 to \(RequestParser.maxRadius)") }
    }
    func run() throws {
        printNeighbors(try roundTrip(connection, .range(radius: r, query: .code(hexDigits: Array(hex.utf8)))), json: json)
    }
}

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the daemon's statistics as `name value` lines.")
    @OptionGroup var connection: ConnectionOptions
    @Flag(help: "Print JSON.") var json = false
    func run() throws {
        let response = try roundTrip(connection, .stats)
        guard case .list(let lines) = response else { return }
        if json {
            var d: [String: Any] = [:]
            for (name, value) in Statistics.pairs(response) ?? [] { d[name] = Int(value).map { $0 as Any } ?? value }
            printJSON(d)
        } else {
            for l in lines { print(l) }
        }
    }
}

struct Metrics: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the daemon's metrics in the Prometheus text exposition format.",
        discussion: "For a node-exporter textfile collector: gdh metrics > /var/lib/node_exporter/gdh.prom.$$ && mv /var/lib/node_exporter/gdh.prom.$$ /var/lib/node_exporter/gdh.prom")
    @OptionGroup var connection: ConnectionOptions
    func run() throws {
        guard case .list(let lines) = try roundTrip(connection, .metrics) else { return }
        for l in lines { print(l) }
    }
}

struct Compact: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Compact the database file; prints its size before and after, in bytes.")
    @OptionGroup var connection: ConnectionOptions
    func run() throws {
        if case .ok(let t) = try roundTrip(connection, .compact) { print(t) }
    }
}

struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a consistent copy of the database to a new file while the daemon serves; prints its size in bytes.",
        discussion: "The daemon writes the file (so DEST is on its machine, a path it may write) and syncs it. Restore: stop the daemon, put the file as data.mdb in an empty directory, start gdhd --db on that directory (Docs/operations.md).")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The backup file to create (must not exist); relative paths are taken from this directory.") var dest: String
    func run() throws {
        let path = dest.hasPrefix("/") ? dest : FileManager.default.currentDirectoryPath + "/" + dest
        guard !path.contains(" ") else { throw fail("the backup path cannot contain a space (the protocol separates tokens by spaces): \(path)") }
        if case .ok(let t) = try roundTrip(connection, .backup(path: path)) { print(t) }
    }
}

struct Rebuild: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Recompute the multi-index tables (optionally with a new substring count); prints the m in use.")
    @OptionGroup var connection: ConnectionOptions
    @Option(name: .customLong("substrings"), help: "New substring count m, kept as the database's setting.") var m: Int?
    func run() throws {
        if case .ok(let t) = try roundTrip(connection, .rebuild(m: m)) { print(t) }
    }
}

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check that items and tables agree; prints the item count and stale table entries.")
    @OptionGroup var connection: ConnectionOptions
    func run() throws {
        if case .ok(let t) = try roundTrip(connection, .verify) { print(t) }
    }
}

struct Reencode: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Encode every stored image again with the daemon's model; prints how many were encoded and how many failed.")
    @OptionGroup var connection: ConnectionOptions
    func run() throws {
        if case .ok(let t) = try roundTrip(connection, .reencode) { print(t) }
    }
}
