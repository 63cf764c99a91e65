import Dispatch
import HashStore
import NIOCore
import WireProtocol

/// One client connection: parses each framed line, runs it through the service and
/// writes the answers back in request order. The ordering, read-your-writes and
/// back-pressure rules are `ConnectionState`'s (PROTOCOL.md section 6); this handler only
/// performs its actions: it runs requests, collects answers into one outbound buffer and
/// flushes it once per read burst or per delivery of answers, pauses and resumes reading.
///
/// Writes of codes and deletes reach the writer with this handler as their `WriteSink`:
/// the writer hands back the outcomes of a whole batch in one task on this event loop.
final class ConnectionHandler: ChannelInboundHandler, WriteSink, @unchecked Sendable {
    typealias InboundIn = FramedLine
    typealias OutboundOut = ByteBuffer

    private let service: Service
    private let maxLineBytes: Int
    private var state: ConnectionState<Command>
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

    let eventLoop: EventLoop

    init(service: Service, maxLineBytes: Int, maxInFlight: Int = 4096, eventLoop: EventLoop) {
        self.service = service
        self.maxLineBytes = maxLineBytes
        self.eventLoop = eventLoop
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
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        let now = DispatchTime.now().uptimeNanoseconds
        switch unwrapInboundIn(data) {
        case .tooLong:
            observed.received(bytes: maxLineBytes + 1)
            timing.append((now, MetricsRegistry.invalidIndex))
            state.receive(.ping, order: .answered(ResponseFormatter.error(ProtocolError.tooLong(limit: maxLineBytes))))
        case .line(let buffer):
            observed.received(bytes: buffer.readableBytes + 1)
            switch RequestParser.parse(buffer.readableBytesView) {
            case .failure(let error):
                timing.append((now, MetricsRegistry.invalidIndex))
                state.receive(.ping, order: .answered(ResponseFormatter.error(error)))
            case .success(let cmd):
                timing.append((now, MetricsRegistry.index(of: cmd.name)))
                if cmd == .quit { closing = true }
                state.receive(cmd, order: isPipelinedWrite(cmd) ? .pipelinedWrite : .afterEarlier, closes: cmd == .quit)
            }
        }
        perform(context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushOutput(context: context)
        context.fireChannelReadComplete()
    }

    /// The writer's outcomes for a batch of this connection's writes (on the event loop).
    func writesDone(_ outcomes: [(UInt64, Result<WriteOutcome, Error>)]) {
        for (seq, result) in outcomes { state.answer(seq, service.answer(result)) }
        performAndFlush()
    }

    /// After answers that arrived from outside a read burst: act on them and write them out.
    private func performAndFlush() {
        perform(context: context)
        if let context { flushOutput(context: context) }
    }

    /// Does what the state asks, until it asks nothing more. Without a context (the
    /// channel is gone) requests still run, in order, and their answers are dropped:
    /// every request that was read is executed.
    private func perform(context: ChannelHandlerContext?) {
        while let action = state.nextAction() {
            switch action {
            case .run(let seq, let cmd):
                // METRICS counts every request answered before it on this connection.
                if cmd == .metrics { service.metrics.merge(&observed) }
                switch service.execute(cmd, on: eventLoop, sink: self, seq: seq) {
                case .now(let text):
                    state.answer(seq, text)
                case .later(let future):
                    future.whenComplete { result in
                        switch result {
                        case .success(let text): self.state.answer(seq, text)
                        case .failure(let error): self.state.answer(seq, self.service.render(error))
                        }
                        self.performAndFlush()
                    }
                case .queued:
                    break
                }
            case .write(let text):
                if let t = timing.popFirst() {
                    let seconds = Double(DispatchTime.now().uptimeNanoseconds &- t.start) / 1e9
                    observed.answered(command: t.command, seconds: seconds, text: text)
                }
                guard let context else { break }
                if output == nil { output = context.channel.allocator.buffer(capacity: 4096) }
                output!.writeString(text)
            case .pauseReading:
                _ = context?.channel.setOption(ChannelOptions.autoRead, value: false)
            case .resumeReading:
                _ = context?.channel.setOption(ChannelOptions.autoRead, value: true)
            case .close:
                guard let context else { break }
                flushOutput(context: context)
                context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0))).whenComplete { _ in
                    context.close(promise: nil)
                }
            }
        }
        if state.allAnswered && !drainWaiters.isEmpty {
            let waiters = drainWaiters
            drainWaiters.removeAll()
            for p in waiters { p.succeed(()) }
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
        if state.allAnswered { return loop.makeSucceededVoidFuture() }
        let p = loop.makePromise(of: Void.self)
        drainWaiters.append(p)
        return p.futureResult
    }

    /// The client closed its sending side: answer everything read, then close.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            closing = true
            drained(on: context.eventLoop).whenComplete { _ in
                self.flushOutput(context: context)
                context.close(promise: nil)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        service.logger.debug("connection error: \(error)")
        context.close(promise: nil)
    }
}
