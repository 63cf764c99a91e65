import Dispatch
import HammingCode
import HashStore
import NIOCore
import WireProtocol

/// One client connection: parses each framed line, runs it through the service and
/// writes the answers back in request order. The ordering, read-your-writes and
/// back-pressure rules are `ConnectionState`'s (PROTOCOL.md section 6); this handler only
/// performs its actions: it runs requests, collects answers into one outbound buffer and
/// flushes it once per read burst or per delivery of answers, pauses and resumes reading.
///
/// A large KNN or RANGE answer (`Reply.stream`) is written piece by piece while the
/// channel is writable: nothing after it is written, and no further request runs, until
/// its last piece is out (the in-flight limit then pauses reading as usual). A slow
/// reader so costs at most a piece and the channel's buffer, not the whole answer.
///
/// Writes of codes and deletes reach the writer with this handler as their `WriteSink`:
/// the writer hands back the outcomes of a whole batch in one task on this event loop.
final class ConnectionHandler: ChannelInboundHandler, WriteSink, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let service: Service
    private let maxLineBytes: Int
    /// The lines of the byte stream.
    private var splitter: LineSplitter
    /// The database's code width (for `ADD <key> CODE <hex>` parsed on the fast path).
    private let codeWidth: CodeWidth
    private var state: ConnectionState<Command, Reply>
    /// The answer being written piece by piece, with its request's timing and the bytes
    /// written so far.
    private var streaming: (stream: NeighborStream, timing: (start: UInt64, command: Int)?, bytes: Int)?
    /// The daemon is stopping: write the rest of a streamed answer without waiting for the
    /// reader, so that stopping never waits on a client.
    private var stopping = false
    private var context: ChannelHandlerContext?
    /// Answers collected and not yet written to the channel.
    private var output: ByteBuffer?
    private var closing = false
    /// Per request not yet answered, in order: when it was read and its command's index.
    private var timing = FIFO<(start: UInt64, command: Int)>()
    /// Observations not yet merged into the service's registry.
    private var observed = MetricsBatch()
    /// Completed once every request read so far is answered.
    private var drainWaiters: [EventLoopPromise<Void>] = []
    /// Pipelined writes started and not yet handed to the writer: they go together at the
    /// end of the read burst or of the delivery that started them (`submitCollected`).
    private var collected: [Writer.Job] = []
    /// When the current read burst began: the arrival time of each of its requests (one
    /// clock read per burst, not per line). Nil between bursts.
    private var burstStart: UInt64?

    let eventLoop: EventLoop

    init(service: Service, maxLineBytes: Int, maxInFlight: Int = 4096, eventLoop: EventLoop) {
        self.service = service
        self.maxLineBytes = maxLineBytes
        self.eventLoop = eventLoop
        splitter = LineSplitter(maxLength: maxLineBytes)
        codeWidth = service.codeWidth
        state = ConnectionState(maxInFlight: maxInFlight)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        service.connectionOpened()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        service.connectionClosed()
        // Nobody reads the rest of a streamed answer: drop it, and run what came after.
        if streaming != nil {
            streaming = nil
            perform(context: nil)
        }
        submitCollected(context: nil)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        let now = burstStart ?? DispatchTime.now().uptimeNanoseconds
        burstStart = now
        let buffer = unwrapInboundIn(data)
        buffer.withUnsafeReadableBytes { bytes in
            splitter.split(bytes) { frame in
                receive(frame, at: now, context: context)
                return !closing
            }
        }
    }

    /// One request line (or an over-long one) read at `now`.
    private func receive(_ frame: FramedLine, at now: UInt64, context: ChannelHandlerContext) {
        switch frame {
        case .tooLong:
            observed.received(bytes: maxLineBytes + 1)
            timing.append((now, MetricsRegistry.invalidIndex))
            state.receive(.ping, order: .answered(.text(ResponseFormatter.error(ProtocolError.tooLong(limit: maxLineBytes)))))
        case .line(let bytes):
            observed.received(bytes: bytes.count + 1)
            // The bulk of an ingest: an ADD of a code that may go to the writer at once
            // (nothing before it waits or is held back by a streamed answer) goes straight
            // into the burst's writes, without a `Command` or an action. Any other line,
            // and any ADD the fast parser does not take (it takes only well-formed ones),
            // goes the general way, which gives the same outcome and the errors.
            if streaming == nil, state.writeWouldRun, let add = RequestParser.addCode(bytes, width: codeWidth) {
                let seq = state.receiveRunningWrite()
                timing.append((now, MetricsRegistry.addIndex))
                collected.append(.write(.add(key: add.key, code: add.code), .sink(self, seq)))
                if state.hasActions { perform(context: context) }
                return
            }
            switch RequestParser.parse(bytes: bytes) {
            case .failure(let error):
                timing.append((now, MetricsRegistry.invalidIndex))
                state.receive(.ping, order: .answered(.text(ResponseFormatter.error(error))))
            case .success(let cmd):
                timing.append((now, MetricsRegistry.index(of: cmd)))
                if cmd == .quit { closing = true }
                state.receive(cmd, order: isPipelinedWrite(cmd) ? .pipelinedWrite : .afterEarlier, closes: cmd == .quit)
            }
        }
        // While a stream holds the actions back, the in-flight limit still stops reading
        // (the queued pause and resume follow once the stream is out).
        if streaming != nil && state.readingPaused {
            _ = context.channel.setOption(ChannelOptions.autoRead, value: false)
        }
        perform(context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        burstStart = nil
        submitCollected(context: context)
        flushOutput(context: context)
        context.fireChannelReadComplete()
    }

    /// The writer's outcomes for a batch of this connection's writes (on the event loop).
    func writesDone(_ outcomes: [(UInt64, Result<WriteOutcome, Error>)]) {
        // The usual case of a pipelining client: successful writes that are the next
        // answers to go out, with nothing held back. Their `OK <n>` lines are written here
        // at once, without an answer and a write action each.
        if let context, streaming == nil, !state.hasActions, let first = outcomes.first,
           state.isNextToWrite(first.0), Self.consecutiveSuccesses(outcomes) {
            let now = DispatchTime.now().uptimeNanoseconds
            for case (_, .success(let outcome)) in outcomes {
                writeOK(Service.number(outcome), context: context, now: now)
            }
            state.answerWrittenHead(outcomes.count)
            performAndFlush()
            return
        }
        for (seq, result) in outcomes { state.answer(seq, service.reply(result)) }
        performAndFlush()
    }

    /// Whether every outcome succeeded and their requests follow one another.
    private static func consecutiveSuccesses(_ outcomes: [(UInt64, Result<WriteOutcome, Error>)]) -> Bool {
        guard let first = outcomes.first?.0 else { return false }
        for (i, (seq, result)) in outcomes.enumerated() {
            guard seq == first &+ UInt64(i), case .success = result else { return false }
        }
        return true
    }

    func collect(_ job: Writer.Job) {
        collected.append(job)
    }

    /// Hands the collected writes to the writer in one go. If it is stopping, each is
    /// answered `ERR SHUTDOWN` in its turn (and what that lets run is collected again).
    private func submitCollected(context: ChannelHandlerContext?) {
        while !collected.isEmpty {
            let jobs = collected
            collected.removeAll(keepingCapacity: true)
            if service.submitCollected(jobs) { return }
            let refused = ResponseFormatter.error(ProtocolError.shutdown)
            for case .write(_, .sink(_, let seq)) in jobs { state.answer(seq, .text(refused)) }
            perform(context: context)
        }
    }

    /// After answers that arrived from outside a read burst: act on them and write them out.
    private func performAndFlush() {
        perform(context: context)
        submitCollected(context: context)
        if let context { flushOutput(context: context) }
    }

    /// Does what the state asks, until it asks nothing more. Without a context (the
    /// channel is gone) requests still run, in order, and their answers are dropped:
    /// every request that was read is executed.
    private func perform(context: ChannelHandlerContext?) {
        // One clock read for the answers written by this call.
        var answeredAt: UInt64?
        func now() -> UInt64 {
            let now = answeredAt ?? DispatchTime.now().uptimeNanoseconds
            answeredAt = now
            return now
        }
        while streaming == nil, let action = state.nextAction() {
            switch action {
            case .run(let seq, let cmd):
                run(seq, cmd)
            case .write(.text(let text)):
                if let t = timing.popFirst() {
                    observed.answered(command: t.command, seconds: Double(now() &- t.start) / 1e9, text: text)
                }
                guard let context else { break }
                if output == nil { output = context.channel.allocator.buffer(capacity: 4096) }
                output!.writeString(text)
            case .write(.ok(let n)):
                writeOK(n, context: context, now: now())
            case .write(.stream(let stream)):
                let t = timing.popFirst()
                guard let context else { break }
                streaming = (stream, t, 0)
                writePieces(context: context)
            case .pauseReading:
                _ = context?.channel.setOption(ChannelOptions.autoRead, value: false)
            case .resumeReading:
                _ = context?.channel.setOption(ChannelOptions.autoRead, value: true)
            case .close:
                guard let context else { break }
                flushAndClose(context: context)
            }
        }
        if streaming == nil && state.allAnswered && !drainWaiters.isEmpty {
            let waiters = drainWaiters
            drainWaiters.removeAll()
            for p in waiters { p.succeed(()) }
        }
    }

    /// Writes the next answer, `OK <n>`, into the output (nowhere when the channel is gone)
    /// and records its request as answered at `now`.
    private func writeOK(_ n: UInt64, context: ChannelHandlerContext?, now: UInt64) {
        var bytes = 0
        if let context {
            if output == nil { output = context.channel.allocator.buffer(capacity: 4096) }
            bytes = Reply.writeOK(n, into: &output!)
        }
        if let t = timing.popFirst() {
            observed.answered(command: t.command, seconds: Double(now &- t.start) / 1e9, bytes: bytes)
        }
    }

    /// Starts request `seq`: its answer now, later (a future), or from the writer (a
    /// pipelined write, collected for the writer until the end of the burst).
    private func run(_ seq: UInt64, _ cmd: Command) {
        // METRICS counts every request answered before it on this connection.
        if cmd == .metrics { service.metrics.merge(&observed) }
        switch service.execute(cmd, on: eventLoop, sink: self, seq: seq) {
        case .now(let text):
            state.answer(seq, text)
        case .later(let future):
            future.whenComplete { result in
                switch result {
                case .success(let reply): self.state.answer(seq, reply)
                case .failure(let error): self.state.answer(seq, .text(self.service.render(error)))
                }
                self.performAndFlush()
            }
        case .queued:
            break
        }
    }

    /// Writes pieces of the streamed answer while the channel takes them (all of them when
    /// stopping); returns whether the last is out, so the caller goes on with the answers
    /// and requests after it.
    @discardableResult
    private func writePieces(context: ChannelHandlerContext) -> Bool {
        guard let current = streaming else { return true }
        if let out = output {
            output = nil
            context.write(wrapOutboundOut(out), promise: nil)
        }
        let stream = current.stream
        var bytes = current.bytes
        var pieces = 0
        // A write can close the channel (the client left), which drops the stream.
        while streaming != nil && !stream.isFinished && (stopping || context.channel.isWritable) {
            // A fast reader gets 1 MiB per turn of the event loop, so that the loop's
            // other connections are served in between.
            if pieces == 16 && !stopping {
                context.eventLoop.execute { self.continuePieces() }
                break
            }
            pieces += 1
            var piece = context.channel.allocator.buffer(capacity: NeighborStream.pieceBytes)
            bytes += piece.writeWithUnsafeMutableBytes(minimumWritableBytes: NeighborStream.pieceBytes) {
                stream.writePiece(into: $0.bindMemory(to: UInt8.self))
            }
            context.writeAndFlush(wrapOutboundOut(piece), promise: nil)
        }
        guard streaming != nil else { return true }
        streaming!.bytes = bytes
        guard stream.isFinished else { return false }
        streaming = nil
        if let t = current.timing {
            let seconds = Double(DispatchTime.now().uptimeNanoseconds &- t.start) / 1e9
            observed.answered(command: t.command, seconds: seconds, bytes: bytes)
        }
        return true
    }

    /// Writes more of a streamed answer, if any, and what follows once it is out.
    private func continuePieces() {
        if streaming != nil, let context, context.channel.isWritable || stopping, writePieces(context: context) {
            performAndFlush()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        continuePieces()
        context.fireChannelWritabilityChanged()
    }

    /// The daemon is stopping: a streamed answer is written out without waiting for the
    /// client to read (on the event loop).
    func stop() {
        stopping = true
        continuePieces()
    }

    /// Writes out the collected answers and closes once every byte written before is
    /// out: a close alone would drop writes still waiting for the socket.
    private func flushAndClose(context: ChannelHandlerContext) {
        flushOutput(context: context)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0))).whenComplete { _ in
            context.close(promise: nil)
        }
    }

    private func flushOutput(context: ChannelHandlerContext) {
        service.metrics.merge(&observed)
        guard let out = output else { return }
        output = nil
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
    }

    /// ADD of a code and DEL go to the writer as soon as the write before them has;
    /// an image ADD (encoded first) and the administrative writes wait their turn.
    private func isPipelinedWrite(_ cmd: Command) -> Bool {
        switch cmd {
        case .add(_, let source): return source.isCode
        case .del: return true
        default: return false
        }
    }

    /// Completes when every request read so far has been answered (on the event loop).
    func drained(on loop: EventLoop) -> EventLoopFuture<Void> {
        if streaming == nil && state.allAnswered { return loop.makeSucceededVoidFuture() }
        let p = loop.makePromise(of: Void.self)
        drainWaiters.append(p)
        return p.futureResult
    }

    /// The client closed its sending side: answer everything read, then close.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            closing = true
            drained(on: context.eventLoop).whenComplete { _ in self.flushAndClose(context: context) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        service.logger.debug("connection error: \(error)")
        context.close(promise: nil)
    }
}
