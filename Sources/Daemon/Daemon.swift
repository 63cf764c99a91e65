import Foundation
import GDH
import HashStore
import Logging
import MultiIndex
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// Everything `gdhd` is started with.
public struct DaemonConfiguration: Sendable {
    public var databasePath: String
    public var socketPath: String
    /// Code width for a new database (an existing one must match when given).
    public var bits: Int?
    /// m, the multi-index substrings per code, fixed (`gdhd --substrings`); nil keeps the
    /// database's setting.
    public var m: Int?
    /// The longest request line accepted, in bytes (without the `\n`).
    public var maxLineBytes: Int = 4 << 20
    /// Mode of the socket file.
    public var socketMode: mode_t = 0o600
    /// Query threads; 0 means one per core.
    public var queryThreads: Int = 0
    /// Event-loop threads; 0 means one per core.
    public var loopThreads: Int = 0
    public var planner: PlannerMode = .automatic
    /// Run queries on the event loops (true, the default: they answer from memory in
    /// microseconds) or on the query thread pool.
    public var inlineReads = true
    public var initialMapSize: Int = 64 << 20
    /// A GDH model file: image and sketch requests are encoded with it.
    public var modelPath: String?
    /// Directories under which IMAGE and SKETCH paths may be read.
    public var allowRoots: [String] = []
    /// Encoder replicas (0: one per core).
    public var encoderThreads: Int = 0

    public init(databasePath: String, socketPath: String) {
        self.databasePath = databasePath
        self.socketPath = socketPath
    }
}

public enum DaemonError: Error, CustomStringConvertible {
    case socket(String)
    case model(String)
    public var description: String {
        switch self { case .socket(let s), .model(let s): return s }
    }
}

/// The daemon: opens the store, listens on the Unix socket, serves until `shutdown`.
public final class Daemon: @unchecked Sendable {
    public let configuration: DaemonConfiguration
    public let store: HashStore
    private let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private let pool: NIOThreadPool
    private let writer: Writer
    private let service: Service
    private var serverChannel: Channel?
    private let handlers = NIOLockedValueBox<[ObjectIdentifier: (Channel, ConnectionHandler)]>([:])
    private let stopped = NIOLockedValueBox(false)
    private let stopCondition = NSCondition()
    private var finished = false

    /// Opens (or creates) the database. Throws `StoreError` with a clear message.
    public init(configuration: DaemonConfiguration, encoder givenEncoder: CodeEncoder? = nil, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        // Refuse a live socket before creating anything on disk.
        try Daemon.clearStaleSocket(configuration.socketPath)
        var encoder = givenEncoder
        if encoder == nil, let path = configuration.modelPath {
            let model = try GDHModel.read(contentsOf: path)
            encoder = try ModelEncoder(model: model, poolSize: configuration.encoderThreads > 0 ? configuration.encoderThreads : System.coreCount,
                                       allowRoots: configuration.allowRoots)
            logger.info("model loaded", metadata: [
                "model": "\(path)", "config": "\(model.configuration.name)", "bits": "\(model.configuration.bits)",
                "identity": "\(encoder?.modelIdentity ?? "?")",
            ])
        }
        // A new database takes the model's code width unless --bits says otherwise.
        var options = StoreOptions(bits: configuration.bits ?? encoder?.bits, substrings: configuration.m)
        options.initialMapSize = configuration.initialMapSize
        options.backgroundFolds = true
        do {
            store = try HashStore(directory: configuration.databasePath, options: options)
        } catch StoreError.mismatch(let m) where configuration.bits == nil && encoder != nil {
            throw DaemonError.model("the model produces \(options.bits ?? 0)-bit codes, but \(m)")
        }
        store.planner = configuration.planner
        if let encoder, encoder.bits != store.width.bits {
            store.close()
            throw DaemonError.model("the model produces \(encoder.bits)-bit codes but the database \(configuration.databasePath) holds \(store.width.bits)-bit codes")
        }
        if let loaded = encoder?.modelIdentity, let stored = store.modelIdentity, stored != loaded {
            logger.warning("database codes were made by model \(stored); this daemon runs model \(loaded); image and sketch queries answer ERR MODELMISMATCH until REENCODE")
        }
        let cores = System.coreCount
        group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.loopThreads > 0 ? configuration.loopThreads : cores)
        pool = NIOThreadPool(numberOfThreads: configuration.queryThreads > 0 ? configuration.queryThreads : cores)
        pool.start()
        let metrics = MetricsRegistry()
        writer = Writer(store: store, logger: logger, encoder: encoder, metrics: metrics)
        writer.start()
        service = Service(store: store, writer: writer, pool: pool, encoder: encoder, logger: logger, metrics: metrics)
        service.inlineReads = configuration.inlineReads
    }

    /// Binds the socket (replacing a stale socket file, refusing a live one) and starts serving.
    public func start() throws {
        let path = configuration.socketPath
        try Daemon.clearStaleSocket(path)
        let maxLine = configuration.maxLineBytes
        let service = self.service
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .childChannelOption(ChannelOptions.autoRead, value: true)
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { [weak self] channel in
                let handler = ConnectionHandler(service: service, maxLineBytes: maxLine, eventLoop: channel.eventLoop)
                let id = ObjectIdentifier(channel)
                self?.handlers.withLockedValue { $0[id] = (channel, handler) }
                channel.closeFuture.whenComplete { _ in
                    self?.handlers.withLockedValue { _ = $0.removeValue(forKey: id) }
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        // The socket is created with the umask; narrow it so the file is never wider than asked.
        let oldMask = umask(0o777 & ~configuration.socketMode)
        defer { umask(oldMask) }
        do {
            serverChannel = try bootstrap.bind(unixDomainSocketPath: path).wait()
        } catch {
            throw DaemonError.socket("cannot listen on \(path): \(error)")
        }
        chmod(path, configuration.socketMode)
        logger.info("gdhd serving", metadata: [
            "socket": "\(path)", "database": "\(configuration.databasePath)",
            "bits": "\(store.width.bits)", "items": "\(store.count)",
        ])
    }

    /// A socket file left by a daemon that died is removed; a live one (something
    /// accepts connections on it) or a non-socket file is refused.
    static func clearStaleSocket(_ path: String) throws {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        guard (st.st_mode & S_IFMT) == S_IFSOCK else {
            throw DaemonError.socket("\(path) exists and is not a socket; refusing to replace it")
        }
        // A connection that succeeds means a live daemon (tried on a loop of its own, which
        // goes away with the probe).
        let loop = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? loop.syncShutdownGracefully() }
        if let probe = try? ClientBootstrap(group: loop).connect(unixDomainSocketPath: path).wait() {
            try? probe.close().wait()
            throw DaemonError.socket("another daemon is listening on \(path)")
        }
        unlink(path)
    }

    /// Stops accepting, answers every request already read, commits every queued
    /// write, closes the connections and the database. Safe to call more than once.
    public func shutdown() {
        let already = stopped.withLockedValue { s -> Bool in
            defer { s = true }
            return s
        }
        if already { waitUntilStopped(); return }
        logger.info("gdhd stopping")
        try? serverChannel?.close().wait()
        // Remove the socket file now, before another daemon could take the path over.
        unlink(configuration.socketPath)
        // Let every connection finish what it has read: replies are written in order.
        let connections = handlers.withLockedValue { Array($0.values) }
        for (channel, handler) in connections {
            let drained = channel.eventLoop.flatSubmit {
                handler.stop()
                return handler.drained(on: channel.eventLoop)
            }
            _ = try? drained.wait()
        }
        writer.drainAndStop()
        for (channel, _) in connections {
            _ = try? channel.eventLoop.submit { channel.flush() }.wait()
            try? channel.close().wait()
        }
        try? pool.syncShutdownGracefully()
        try? group.syncShutdownGracefully()
        store.close()
        logger.info("gdhd stopped")
        stopCondition.lock()
        finished = true
        stopCondition.broadcast()
        stopCondition.unlock()
    }

    /// Blocks until `shutdown` has finished.
    public func waitUntilStopped() {
        stopCondition.lock()
        while !finished { stopCondition.wait() }
        stopCondition.unlock()
    }
}
