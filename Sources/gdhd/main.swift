import ArgumentParser
import Daemon
import Foundation
import HammingCode
import Logging
import MultiIndex

struct GDHD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gdhd",
        abstract: "The gdh-index daemon: a persistent Hamming-space hash index served on a Unix socket.",
        discussion: """
        Creates the database on first start (with --bits, else the --model code width, else \
        64 bits), refuses a second daemon on the same database, and \
        answers the line protocol of Protocol/PROTOCOL.md. SIGTERM or SIGINT: finish the \
        requests already read, commit, remove the socket and exit 0.
        """
    )

    @Option(name: .long, help: ArgumentHelp("Database directory (created if missing).", valueName: "dir"))
    var db: String

    @Option(name: .long, help: ArgumentHelp("Unix socket path to listen on.", valueName: "path"))
    var socket: String = "/tmp/gdh.sock"

    @Option(name: .long, help: ArgumentHelp("Code width of a new database: 32 to 1024 in steps of 32. An existing database must match.", valueName: "bits"))
    var bits: Int?

    @Option(name: .customLong("substrings"), help: ArgumentHelp("Fixed substring count m for the multi-index tables (default: automatic, b / log2 N).", valueName: "m"))
    var m: Int?

    @Option(name: .long, help: ArgumentHelp("Longest request line accepted, in bytes.", valueName: "n"))
    var maxLineBytes: Int = 4 << 20

    @Option(name: .long, help: ArgumentHelp("Socket file mode, octal.", valueName: "mode"))
    var socketMode: String = "600"

    @Option(name: .long, help: ArgumentHelp("Search path: auto (planner), mih or scan.", valueName: "mode"))
    var planner: String = "auto"

    @Option(name: .long, help: ArgumentHelp("Query pool threads (0: one per core); used with --pool-queries.", valueName: "n"))
    var threads: Int = 0

    @Flag(name: .long, help: "Run queries on a thread pool instead of the event loops (for workloads of long RANGE queries).")
    var poolQueries = false

    @Option(name: .long, help: ArgumentHelp("A GDH model file (safetensors): ADD ... IMAGE and KNN/RANGE ... SKETCH/IMAGE are encoded with it. If the database's image codes were made by another model, those requests answer ERR MODELMISMATCH until REENCODE.", valueName: "file"))
    var model: String?

    @Option(name: .long, help: ArgumentHelp("A directory under which IMAGE and SKETCH paths may be read (repeatable).", valueName: "dir"))
    var allowRoot: [String] = []

    @Option(name: .long, help: ArgumentHelp("Encoder replicas (0: one per core).", valueName: "n"))
    var encoderThreads: Int = 0

    @Option(name: .long, help: ArgumentHelp("Log level: trace, debug, info, notice, warning, error, critical.", valueName: "level"))
    var logLevel: String = "info"

    func validate() throws {
        if let bits, (try? CodeWidth(bits: bits)) == nil {
            throw ValidationError("--bits must be 32 to 1024 in steps of 32, not \(bits)")
        }
        if let m, m < 1 { throw ValidationError("--substrings must be positive") }
        guard maxLineBytes >= 1024 else { throw ValidationError("--max-line-bytes must be at least 1024") }
        guard let mode = Int(socketMode, radix: 8), mode >= 0, mode <= 0o777 else {
            throw ValidationError("--socket-mode must be an octal mode such as 600")
        }
        guard PlannerMode(rawValue: planner) != nil else { throw ValidationError("--planner must be auto, mih or scan") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level \(logLevel)") }
    }

    func run() throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        var logger = Logger(label: "gdhd")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        var config = DaemonConfiguration(databasePath: db, socketPath: socket)
        config.bits = bits
        config.m = m
        config.maxLineBytes = maxLineBytes
        config.socketMode = mode_t(Int(socketMode, radix: 8) ?? 0o600)
        config.planner = PlannerMode(rawValue: planner) ?? .automatic
        config.queryThreads = threads
        config.inlineReads = !poolQueries
        config.modelPath = model
        config.allowRoots = allowRoot
        config.encoderThreads = encoderThreads
        let daemon: Daemon
        do {
            daemon = try Daemon(configuration: config, logger: logger)
            try daemon.start()
        } catch {
            FileHandle.standardError.write(Data("gdhd: \(error)\n".utf8))
            throw ExitCode(1)
        }
        let watcher = SignalWatcher { _ in daemon.shutdown() }
        daemon.waitUntilStopped()
        withExtendedLifetime(watcher) {}
    }
}

GDHD.main()
