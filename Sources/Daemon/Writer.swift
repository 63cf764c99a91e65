import Foundation
import HashStore
import Logging
import NIOCore
import WireProtocol

/// A connection waiting for the outcomes of its writes.
protocol WriteSink: AnyObject {
    /// The loop `writesDone` is called on.
    var eventLoop: EventLoop { get }
    /// Outcomes of writes, by the request sequence numbers they were submitted with, in
    /// submission order.
    func writesDone(_ outcomes: [(UInt64, Result<WriteOutcome, Error>)])
    /// Takes a pipelined write to hand to the writer with the others of its read burst
    /// (`Writer.submit(contentsOf:)`): one lock and one wake-up per burst, not per write.
    func collect(_ job: Writer.Job)
}

/// The single writer: a thread that takes queued writes in arrival order and applies
/// every write waiting at that moment in one transaction (group commit). Nobody is
/// told of success before the transaction is durable. Administrative jobs (COMPACT,
/// REBUILD, VERIFY, REENCODE) start in their place in the queue and run on a thread of
/// their own while writes go on (`HashStore.compact`; `HashStore.rebuild`, a fold beside
/// the writes; `HashStore.verify` on a snapshot; REENCODE sends its new codes through this
/// queue in batches, as conditional writes).
final class Writer: @unchecked Sendable {
    enum Admin {
        case compact
        case rebuild(m: Int?)
        case verify
        case reencode
    }

    /// Who is told that a write is done.
    enum Completion {
        /// A closure, called on the writer thread.
        case callback((Result<WriteOutcome, Error>) -> Void)
        /// Request `seq` of a connection: the outcomes of a batch go to each sink in one
        /// hop to its event loop, not one per write.
        case sink(WriteSink, UInt64)
    }

    enum Job {
        case write(WriteOp, Completion)
        case admin(Admin, (Result<String, Error>) -> Void)
    }

    private let store: HashStore
    private let logger: Logger
    private let encoder: CodeEncoder?
    private let maxBatch: Int
    private let condition = NSCondition()
    /// A key index reclaim was under way after the last batch (the writer's thread only).
    private var idleReclaim = false
    /// The store would fold its delta if no write came for `idleFoldDelay` seconds
    /// (`HashStore.wantsIdleFold`, asked after each batch and each idle fold; the writer's
    /// thread only).
    private var idleFold = false
    static let idleFoldDelay: TimeInterval = 1
    private var queue = WriteQueue<Job>(isAdmin: { if case .admin = $0 { return true } else { return false } })
    private var stopping = false
    private var finished = false
    private var thread: Thread?
    /// Administrative jobs running beside the writer; `drainAndStop` waits for them.
    private let background = DispatchGroup()
    /// One REENCODE at a time.
    private let reencodeLock = NSLock()
    /// Items REENCODE sends to the queue per batch.
    static let reencodeBatch = 256

    private let metrics: MetricsRegistry?

    init(store: HashStore, logger: Logger, encoder: CodeEncoder? = nil, maxBatch: Int = 8192, metrics: MetricsRegistry? = nil) {
        self.metrics = metrics
        self.store = store
        self.logger = logger
        self.encoder = encoder
        self.maxBatch = maxBatch
    }

    func start() {
        let t = Thread { [self] in run() }
        t.name = "gdhd-writer"
        thread = t
        t.start()
    }

    /// Queues a job; false once the writer is stopping (the job is not run).
    func submit(_ job: Job) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        if stopping { return false }
        queue.push(job)
        condition.signal()
        return true
    }

    /// Queues several jobs at once, in order; false once the writer is stopping (none is run).
    func submit(contentsOf jobs: [Job]) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        if stopping { return false }
        queue.push(contentsOf: jobs)
        condition.signal()
        return true
    }

    /// Stops taking jobs, finishes every queued one, and returns when the thread is done.
    func drainAndStop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        while !finished { condition.wait() }
        condition.unlock()
        background.wait()
    }

    private func take() -> [Job]? {
        condition.lock()
        defer { condition.unlock() }
        // Runs `work` without the condition's lock once `delay` has passed with no job
        // coming and no stop asked for.
        func whenIdle(for delay: TimeInterval, _ work: () -> Void) {
            guard !condition.wait(until: Date(timeIntervalSinceNow: delay)) && queue.isEmpty && !stopping else { return }
            condition.unlock()
            work()
            condition.lock()
        }
        while queue.isEmpty && !stopping {
            if idleReclaim {
                // A key index reclaim under way goes a piece after each batch; with no batch
                // coming it takes a piece every couple of milliseconds instead.
                whenIdle(for: 0.002) { idleReclaim = store.continueReclaim() }
            } else if idleFold {
                // After a second with no write, the delta is folded into the tables; while a
                // fold runs, the writer asks again every second (the delta may hold what the
                // writes added during it).
                whenIdle(for: Writer.idleFoldDelay) {
                    store.foldWhenIdle()
                    idleFold = store.wantsIdleFold
                }
            } else {
                condition.wait()
            }
        }
        return queue.isEmpty ? nil : queue.take(maxBatch: maxBatch)
    }

    private func run() {
        // A delta past the small limit at start (the pending ids of a database that stopped
        // before its fold) is folded after a quiet second too.
        idleFold = store.wantsIdleFold
        while let jobs = take() {
            perform(jobs)
            idleReclaim = store.reclaimUnderWay
            idleFold = store.wantsIdleFold
        }
        condition.lock()
        finished = true
        condition.broadcast()
        condition.unlock()
    }

    /// For tests of a connection without the writer thread: refuses every job from now
    /// on, as a writer that is stopping does (without waiting for a thread).
    func refuseJobs() {
        precondition(thread == nil, "the writer thread is running")
        condition.lock()
        stopping = true
        condition.unlock()
    }

    /// For tests of a connection without the writer thread (its sinks on an
    /// `EmbeddedEventLoop`, which only its own thread may use): performs the jobs queued
    /// now, on the calling thread, as the writer thread would. Never with `start()`.
    func performQueuedJobs() {
        precondition(thread == nil, "the writer thread is running")
        condition.lock()
        let jobs = queue.isEmpty ? [] : queue.take(maxBatch: maxBatch)
        condition.unlock()
        if !jobs.isEmpty { perform(jobs) }
    }

    /// One batch the queue gave: an administrative job (alone in its batch) starts beside
    /// the writer; writes are applied in one transaction and their outcomes delivered.
    private func perform(_ jobs: [Job]) {
        if case .admin(let op, let done)? = jobs.first {
            // Beside the writer: writes queued after it go on.
            background.enter()
            let t = Thread { [self] in
                done(Result { try runAdmin(op) })
                background.leave()
            }
            t.name = "gdhd-admin"
            t.start()
            return
        }
        var ops = [WriteOp]()
        var completions = [Completion]()
        ops.reserveCapacity(jobs.count)
        completions.reserveCapacity(jobs.count)
        for case .write(let op, let done) in jobs {
            ops.append(op)
            completions.append(done)
        }
        do {
            let outcomes = try store.apply(ops, codesModel: encoder?.modelIdentity)
            metrics?.committed(size: ops.count)
            Writer.complete(completions, with: outcomes.map { .success($0) })
            if let foldError = store.lastFoldError {
                logger.warning("folding the table delta failed (writes are durable; retried after the next batch): \(foldError)")
            }
        } catch {
            Writer.complete(completions, with: Array(repeating: .failure(error), count: completions.count))
        }
    }

    /// Tells every write of a batch its result: callbacks at once, and each run of
    /// consecutive writes of one connection in one delivery on its event loop.
    private static func complete(_ completions: [Completion], with results: [Result<WriteOutcome, Error>]) {
        var i = 0
        while i < completions.count {
            switch completions[i] {
            case .callback(let done):
                done(results[i])
                i += 1
            case .sink(let sink, _):
                var run = [(UInt64, Result<WriteOutcome, Error>)]()
                while i < completions.count, case .sink(let s, let seq) = completions[i], s === sink {
                    run.append((seq, results[i]))
                    i += 1
                }
                let outcomes = run
                sink.eventLoop.execute { sink.writesDone(outcomes) }
            }
        }
    }

    private func runAdmin(_ op: Admin) throws -> String {
        switch op {
        case .compact:
            let (before, after) = try store.compact()
            return "\(before) \(after)"
        case .rebuild(let m):
            return String(try store.rebuild(m: m))
        case .verify:
            let (items, stale) = try store.verify()
            return "\(items) \(stale)"
        case .reencode:
            return try reencode()
        }
    }

    /// REENCODE, beside the writer: every image stored at its start (a snapshot of the
    /// sources) through the loaded model, in batches of `reencodeBatch` conditional writes
    /// (`WriteOp.reencode`) queued like any client's, so client writes go on between them
    /// and a client's change to an item since the snapshot wins. Items whose image can no
    /// longer be read keep their code and are counted as failed. Each batch is durable
    /// when its writes are answered; a REENCODE stopped part-way (an error, a shutdown)
    /// leaves the applied batches and the old model identity, so running it again
    /// finishes the job.
    private func reencode() throws -> String {
        reencodeLock.lock()
        defer { reencodeLock.unlock() }
        guard let encoder else { return "0 0" }
        let model = encoder.modelIdentity
        var done = 0, failed = 0
        var batch: [WriteOp] = []
        for (id, key, source) in try store.sources() {
            do {
                batch.append(.reencode(key: key, id: id, code: try encoder.reencode(source), source: source))
            } catch {
                failed += 1
                logger.warning("REENCODE could not encode \(key): \(error)")
            }
            if batch.count >= Writer.reencodeBatch {
                done += try applyBeside(batch)
                batch.removeAll()
            }
        }
        if !batch.isEmpty { done += try applyBeside(batch) }
        // Completed: the stored image codes are this model's now (items whose image
        // could not be read keep their old codes; they were logged above).
        if let model {
            let previous = store.modelIdentity
            if store.imageItems > 0, previous != model {
                try store.setModelIdentity(model)
                logger.info("REENCODE: the database's image codes are now made by model \(model) (were \(previous ?? "unknown"))")
            } else if store.imageItems == 0, previous != nil {
                try store.setModelIdentity(nil)
            }
            if failed > 0 {
                logger.warning("REENCODE: \(failed) images could not be encoded again and keep their codes from the previous model")
            }
        }
        return "\(done) \(failed)"
    }

    /// Queues writes from another thread than the writer's and waits until all are
    /// durable; returns how many were applied (not `skipped`). Throws the first failure,
    /// or `SHUTDOWN` when the writer stopped taking jobs (the accepted ones are waited for).
    private func applyBeside(_ ops: [WriteOp]) throws -> Int {
        final class Results: @unchecked Sendable {
            let lock = NSLock()
            var applied = 0
            var failure: Error?
        }
        let results = Results()
        let group = DispatchGroup()
        var refused = false
        for op in ops {
            group.enter()
            let accepted = submit(.write(op, .callback { r in
                results.lock.lock()
                switch r {
                case .success(.skipped): break
                case .success: results.applied += 1
                case .failure(let e): if results.failure == nil { results.failure = e }
                }
                results.lock.unlock()
                group.leave()
            }))
            if !accepted {
                group.leave()
                refused = true
                break
            }
        }
        group.wait()
        results.lock.lock()
        defer { results.lock.unlock() }
        if let f = results.failure { throw f }
        if refused { throw ProtocolError.shutdown }
        return results.applied
    }
}

/// The writer's batching rule, as a plain value: jobs are taken in arrival order; an
/// administrative job is taken alone, in its place; otherwise every write waiting at the
/// front, up to `maxBatch`, stopping before the next administrative job.
///
/// Jobs pushed together (a connection's read burst of writes) stay one array until taken:
/// a batch that is one such array whole is handed over without copying its jobs.
struct WriteQueue<Job> {
    /// Arrivals in order, each the jobs pushed together (an admin job is always alone);
    /// the first of them waits from `offset` on.
    private var segments = FIFO<[Job]>()
    private var offset = 0
    private let isAdmin: (Job) -> Bool

    init(isAdmin: @escaping (Job) -> Bool) { self.isAdmin = isAdmin }

    var isEmpty: Bool { segments.isEmpty }

    mutating func push(_ job: Job) { segments.append([job]) }

    /// Queues jobs that arrived together, in order.
    mutating func push(contentsOf jobs: [Job]) {
        guard !jobs.isEmpty else { return }
        if jobs.contains(where: isAdmin) {
            for j in jobs { push(j) }
        } else {
            segments.append(jobs)
        }
    }

    /// The first waiting segment from `offset` on, moved out: its slot is emptied first,
    /// so the array is not shared and nothing is copied.
    private mutating func popSegment() -> [Job] {
        var s = segments[0]
        segments[0] = []
        _ = segments.popFirst()
        if offset > 0 {
            s.removeFirst(offset)
            offset = 0
        }
        return s
    }

    /// The next batch: one admin job, or 1 to `maxBatch` writes; empty when nothing waits.
    mutating func take(maxBatch: Int) -> [Job] {
        // No segment is held in a local across `popSegment`: it would share the array.
        guard !segments.isEmpty else { return [] }
        if isAdmin(segments[0][offset]) { return popSegment() }
        var batch: [Job]
        if segments[0].count - offset <= maxBatch {
            batch = popSegment()
        } else {
            batch = Array(segments[0][offset..<offset + maxBatch])
            offset += maxBatch
            return batch
        }
        while batch.count < maxBatch, !segments.isEmpty, !isAdmin(segments[0][0]) {
            let room = maxBatch - batch.count
            if segments[0].count <= room {
                batch.append(contentsOf: popSegment())
            } else {
                batch.append(contentsOf: segments[0][0..<room])
                offset = room
            }
        }
        return batch
    }
}
