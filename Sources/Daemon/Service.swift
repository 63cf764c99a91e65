import Foundation
import HammingCode
import HashStore
import Logging
import MultiIndex
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import WireProtocol

/// Executes parsed commands against the store: reads on a thread pool, writes through
/// the single writer. Knows nothing of sockets; `ConnectionHandler` orders the answers.
final class Service: @unchecked Sendable {
    let store: HashStore
    let writer: Writer
    let pool: NIOThreadPool
    let encoder: CodeEncoder?
    let logger: Logger
    let started = Date()
    /// Counters and histograms for METRICS (connections and the writer merge into it).
    let metrics: MetricsRegistry
    /// Run reads on the event loop instead of the query pool.
    var inlineReads = true

    private struct Counters {
        var queries = 0
        var writes = 0
        var connections = 0
        var errors = 0
    }
    private let counters = NIOLockedValueBox(Counters())

    init(store: HashStore, writer: Writer, pool: NIOThreadPool, encoder: CodeEncoder?, logger: Logger,
         metrics: MetricsRegistry = MetricsRegistry()) {
        self.metrics = metrics
        self.store = store
        self.writer = writer
        self.pool = pool
        self.encoder = encoder
        self.logger = logger
    }

    func connectionOpened() { counters.withLockedValue { $0.connections += 1 } }
    func connectionClosed() { counters.withLockedValue { $0.connections -= 1 } }

    /// The width of the database's codes.
    var codeWidth: CodeWidth { store.width }

    /// The code a request names: parsed hex, or the encoder's output for an image or sketch.
    private func code(for source: CodeSource) throws -> HammingCode {
        if source.isCode { return try source.code(width: store.width) }
        guard let encoder else { throw ProtocolError.noModel(for: source) }
        return try encoder.code(for: source)
    }

    /// `ERR MODELMISMATCH` while the stored image codes were made by another model than
    /// the loaded one (until a REENCODE completes); nil when they agree, when either
    /// identity is unknown, or without a model.
    func modelMismatch() -> ProtocolError? {
        guard let loaded = encoder?.modelIdentity, let stored = store.modelIdentity, stored != loaded else { return nil }
        return ProtocolError.modelMismatch(stored: stored, loaded: loaded)
    }

    /// The code a KNN or RANGE request searches with: images and sketches only when the
    /// stored image codes come from the loaded model.
    private func queryCode(for source: CodeSource) throws -> HammingCode {
        if !source.isCode, encoder != nil, let mismatch = modelMismatch() { throw mismatch }
        return try code(for: source)
    }

    /// How a command's answer comes: now, later on the connection's loop, or (a write
    /// of a code, or a delete) through the sink's `writesDone` once it is durable.
    enum Answer {
        case now(Reply)
        case later(EventLoopFuture<Reply>)
        case queued

        static func text(_ s: String) -> Answer { .now(.text(s)) }
        static func later(text: EventLoopFuture<String>) -> Answer { .later(text.map { .text($0) }) }
    }

    /// Runs one command. Never fails: errors become `ERR` lines. `sink` and `seq` name the
    /// request to the writer when the command is a pipelined write (ADD of a code, DEL).
    func execute(_ command: Command, on loop: EventLoop, sink: WriteSink, seq: UInt64) -> Answer {
        switch command {
        case .ping:
            return .text(ResponseFormatter.ok("PONG"))
        case .quit:
            return .text(ResponseFormatter.ok("BYE"))
        case .add(let key, let source):
            // Hex is parsed on the event loop (cheap); images go to the pool first.
            if source.isCode {
                do { return submitWrite(.add(key: key, code: try code(for: source)), sink: sink, seq: seq) } catch {
                    return .text(render(error))
                }
            }
            guard let encoder else { return .text(render(ProtocolError.noModel(for: source))) }
            if let mismatch = modelMismatch() { return .text(render(mismatch)) }
            return .later(text: pool.runIfActive(eventLoop: loop) { try encoder.codeForStorage(source) }
                .flatMap { self.submitWrite(.add(key: key, code: $0.0, source: $0.1), on: loop) }
                .recover { self.render($0) })
        case .del(let key):
            return submitWrite(.delete(key: key), sink: sink, seq: seq)
        case .compact:
            return .later(text: submitAdmin(.compact, on: loop))
        case .rebuild(let m):
            return .later(text: submitAdmin(.rebuild(m: m), on: loop))
        case .verify:
            return .later(text: submitAdmin(.verify, on: loop))
        case .reencode:
            guard encoder != nil else {
                return .text(render(ProtocolError(.noModel, "REENCODE needs a model: start gdhd with --model")))
            }
            return .later(text: submitAdmin(.reencode, on: loop))
        case .get(let key):
            return runRead(on: loop) {
                guard let c = self.store.get(key) else { throw ProtocolError.notFound(key: key) }
                return ResponseFormatter.ok(c.hex)
            }
        case .knn(let k, let source):
            return runSearch(on: loop, heavy: !source.isCode) {
                let q = try self.queryCode(for: source)
                var stats = SearchStats()
                return self.store.knnPacked(q, k: k, stats: &stats)
            }
        case .range(let radius, let source):
            return runSearch(on: loop, heavy: !source.isCode) {
                let q = try self.queryCode(for: source)
                var stats = SearchStats()
                return self.store.rangePacked(q, radius: radius, stats: &stats)
            }
        case .stats:
            return runRead(on: loop) { ResponseFormatter.stats(self.statistics()) }
        case .metrics:
            return runRead(on: loop) { ResponseFormatter.list(self.metricsLines()) }
        case .backup(let path):
            // On the pool: the copy takes as long as the database is large, and reads a
            // snapshot, so writes go on meanwhile.
            counters.withLockedValue { $0.queries += 1 }
            return .later(text: pool.runIfActive(eventLoop: loop) { ResponseFormatter.ok(String(try self.store.backup(to: path))) }
                .recover { self.render($0) })
        }
    }

    /// The METRICS answer's lines: the registry's counters and histograms, then gauges.
    func metricsLines() -> [String] {
        let stats = Dictionary(store.statistics(), uniquingKeysWith: { a, _ in a })
        let c = counters.withLockedValue { $0 }
        func value(_ k: String) -> Double { Double(stats[k] ?? "") ?? 0 }
        return metrics.render(gauges: [
            ("gdh_items", "Items stored.", value("items")),
            ("gdh_image_items", "Items encoded from an image (with a stored source).", Double(store.imageItems)),
            ("gdh_delta_entries", "Table entries added since the last fold.", value("delta_entries")),
            ("gdh_substrings", "Multi-index substrings (tables) in use.", value("substrings")),
            ("gdh_file_bytes", "Size of the database file.", value("file_bytes")),
            ("gdh_map_bytes", "Size of the LMDB memory map.", value("map_bytes")),
            ("gdh_key_memory_bytes", "Memory held by the key index.", value("key_memory_bytes")),
            ("gdh_scan_positions", "Codes a linear scan reads: items plus holes left by deletes since the last fold.",
             Double(store.scanPositions)),
            ("gdh_connections", "Open client connections.", Double(c.connections)),
            ("gdh_uptime_seconds", "Seconds since the daemon started.", Double(Int(Date().timeIntervalSince(started)))),
        ])
    }

    func statistics() -> [(String, String)] {
        let c = counters.withLockedValue { $0 }
        var s: [(String, String)] = [("version", "1")]
        s += store.statistics()
        s += [
            ("connections", String(c.connections)),
            ("uptime_seconds", String(Int(Date().timeIntervalSince(started)))),
            ("queries", String(c.queries)),
            ("writes", String(c.writes)),
            ("errors", String(c.errors)),
            ("scan_kernel", ScanKernel.name),
            ("model", encoder.map { $0.modelIdentity ?? "loaded" } ?? "none"),
            ("codes_model", store.codesModel),
        ]
        return s
    }

    /// Runs a read. Reads answer from memory in microseconds, so by default they run
    /// right on the connection's event loop: a hop to the pool and back costs more than
    /// the query. With `inlineReads` off they go to the query pool instead.
    /// `heavy` reads (image decoding and network passes) always go to the pool.
    private func runRead(on loop: EventLoop, heavy: Bool = false, _ body: @escaping @Sendable () throws -> String) -> Answer {
        counters.withLockedValue { $0.queries += 1 }
        if inlineReads && !heavy {
            do { return .text(try body()) } catch { return .text(render(error)) }
        }
        return .later(text: pool.runIfActive(eventLoop: loop, body).recover { self.render($0) })
    }

    /// Runs a KNN or RANGE search as `runRead` runs a read; its results (packed
    /// `distance << 32 | id`) become the answer on the connection's loop: built whole when
    /// small, else a `NeighborStream` the connection writes out piece by piece.
    private func runSearch(on loop: EventLoop, heavy: Bool, _ body: @escaping @Sendable () throws -> [UInt64]) -> Answer {
        counters.withLockedValue { $0.queries += 1 }
        // Taken before the search: every id it finds keeps its key until the answer is out.
        let pin = store.pinKeys()
        if inlineReads && !heavy {
            do { return .now(reply(for: try body(), pin: pin)) } catch { return .text(render(error)) }
        }
        return .later(pool.runIfActive(eventLoop: loop, body)
            .map { self.reply(for: $0, pin: pin) }
            .recover { .text(self.render($0)) })
    }

    private func reply(for results: [UInt64], pin: KeyPin) -> Reply {
        let stream = NeighborStream(store: store, results: results, pin: pin)
        return results.count <= NeighborStream.threshold ? .text(stream.text()) : .stream(stream)
    }

    /// Queues a write whose outcome goes to `sink` as request `seq`.
    /// A pipelined write goes to its connection, which hands the writes of a read burst
    /// to the writer together (`submitCollected`).
    private func submitWrite(_ op: WriteOp, sink: WriteSink, seq: UInt64) -> Answer {
        sink.collect(.write(op, .sink(sink, seq)))
        return .queued
    }

    /// Hands a connection's collected writes to the writer; false when it is stopping
    /// (none was taken: the caller answers each with `SHUTDOWN`).
    func submitCollected(_ jobs: [Writer.Job]) -> Bool {
        counters.withLockedValue { $0.writes += jobs.count }
        return writer.submit(contentsOf: jobs)
    }

    /// The answer of a write's outcome, a number formatted straight into the output when it succeeded.
    func reply(_ result: Result<WriteOutcome, Error>) -> Reply {
        switch result {
        case .success(let outcome): return .ok(Service.number(outcome))
        case .failure(let e): return .text(render(e))
        }
    }

    /// The answer line of a write's outcome.
    func answer(_ result: Result<WriteOutcome, Error>) -> String {
        switch result {
        case .success(let outcome): return ResponseFormatter.ok(String(Service.number(outcome)))
        case .failure(let e): return render(e)
        }
    }

    /// The number a successful write answers: the item's id for an ADD, whether the key
    /// existed (1 or 0) for a DEL, 0 for a REENCODE write that was skipped.
    static func number(_ outcome: WriteOutcome) -> UInt64 {
        switch outcome {
        case .added(let id): return UInt64(id)
        case .deleted(let existed): return existed ? 1 : 0
        case .skipped: return 0
        }
    }

    /// Queues a write whose answer comes as a future on `loop`.
    private func submitWrite(_ op: WriteOp, on loop: EventLoop) -> EventLoopFuture<String> {
        counters.withLockedValue { $0.writes += 1 }
        let promise = loop.makePromise(of: String.self)
        let accepted = writer.submit(.write(op, .callback { result in promise.succeed(self.answer(result)) }))
        if !accepted { promise.succeed(ResponseFormatter.error(ProtocolError.shutdown)) }
        return promise.futureResult
    }

    private func submitAdmin(_ op: Writer.Admin, on loop: EventLoop) -> EventLoopFuture<String> {
        let promise = loop.makePromise(of: String.self)
        let accepted = writer.submit(.admin(op) { result in
            switch result {
            case .success(let text): promise.succeed(ResponseFormatter.ok(text))
            case .failure(let e): promise.succeed(self.render(e))
            }
        })
        if !accepted { promise.succeed(ResponseFormatter.error(ProtocolError.shutdown)) }
        return promise.futureResult
    }

    /// An error as its `ERR` line.
    func render(_ error: Error) -> String {
        counters.withLockedValue { $0.errors += 1 }
        switch error {
        case let e as ProtocolError:
            return ResponseFormatter.error(e)
        case let e as StoreError:
            switch e {
            case .invalid(let m): return ResponseFormatter.error(.badRequest, m)
            case .corrupt(let m): return ResponseFormatter.error(.corrupt, m)
            case .diskFull(let m):
                logger.error("store failure: \(e)")
                return ResponseFormatter.error(.diskFull, m)
            default:
                logger.error("store failure: \(e)")
                return ResponseFormatter.error(.internalError, e.description)
            }
        case is NIOThreadPoolError.ThreadPoolInactive:
            return ResponseFormatter.error(ProtocolError.shutdown)
        default:
            logger.error("internal failure: \(error)")
            return ResponseFormatter.error(.internalError, "\(error)")
        }
    }
}
