import NIOCore
import WireProtocol

/// One client connection: parses each framed line, runs it through the service and
/// writes the answers back in request order.
///
/// Ordering (PROTOCOL.md section 6): a run of consecutive writes is handed to the
/// writer back to back, without waiting (so a pipelining client gets group commit);
/// any other request waits until everything before it on this connection has been
/// answered, so it sees the effect of every earlier request. Replies are written in
/// request order whatever order they finish in.
///
/// Back-pressure: past `maxInFlight` unanswered requests the handler stops reading
/// from the socket until half of them are answered.
final class ConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = FramedLine
    typealias OutboundOut = ByteBuffer

    private let service: Service
    private let maxLineBytes: Int
    private let maxInFlight: Int

    /// Every request received so far is answered (its reply written) when this completes.
    private var allAnswered: EventLoopFuture<Void>?
    /// When the previous request was a write: completes once it is in the writer's queue.
    private var lastWriteQueued: EventLoopFuture<Void>?
    private var inFlight = 0
    private var readingPaused = false
    private var closing = false
    private var needsFlush = false

    init(service: Service, maxLineBytes: Int, maxInFlight: Int = 4096) {
        self.service = service
        self.maxLineBytes = maxLineBytes
        self.maxInFlight = maxInFlight
    }

    func channelActive(context: ChannelHandlerContext) {
        service.connectionOpened()
        allAnswered = context.eventLoop.makeSucceededVoidFuture()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        service.connectionClosed()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        let loop = context.eventLoop
        let command: Result<Command, ProtocolError>
        switch unwrapInboundIn(data) {
        case .tooLong:
            command = .failure(.tooLong(limit: maxLineBytes))
        case .line(let buffer):
            command = RequestParser.parse(buffer.readableBytesView)
        }

        let previous = allAnswered ?? loop.makeSucceededVoidFuture()
        let reply: EventLoopFuture<String>
        switch command {
        case .failure(let error):
            // Nothing to run: the answer only has to wait for its turn.
            reply = loop.makeSucceededFuture(ResponseFormatter.error(error))
            lastWriteQueued = nil
        case .success(let cmd) where isPipelinedWrite(cmd):
            // A write may be queued as soon as the write before it is queued; after a
            // read it waits for everything earlier.
            let gate = lastWriteQueued ?? previous
            let queued = loop.makePromise(of: Void.self)
            reply = gate.flatMap {
                let r = self.service.execute(cmd, on: loop)
                queued.succeed(())
                return r
            }
            lastWriteQueued = queued.futureResult
        case .success(let cmd):
            reply = previous.flatMap { self.service.execute(cmd, on: loop) }
            lastWriteQueued = nil
            if cmd == .quit { closing = true }
        }

        inFlight += 1
        if inFlight >= maxInFlight && !readingPaused {
            readingPaused = true
            _ = context.channel.setOption(ChannelOptions.autoRead, value: false)
        }
        let isQuit = closing
        let answered = previous.and(reply).map { (_, text) -> Void in
            var out = context.channel.allocator.buffer(capacity: text.utf8.count)
            out.writeString(text)
            context.write(self.wrapOutboundOut(out), promise: nil)
            self.scheduleFlush(context: context)
            self.inFlight -= 1
            if self.readingPaused && self.inFlight <= self.maxInFlight / 2 {
                self.readingPaused = false
                _ = context.channel.setOption(ChannelOptions.autoRead, value: true)
            }
            if isQuit {
                context.writeAndFlush(self.wrapOutboundOut(context.channel.allocator.buffer(capacity: 0))).whenComplete { _ in
                    context.close(promise: nil)
                }
            }
        }
        allAnswered = answered
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

    /// Coalesces flushes: one per turn of the event loop, not one per reply.
    private func scheduleFlush(context: ChannelHandlerContext) {
        guard !needsFlush else { return }
        needsFlush = true
        context.eventLoop.execute {
            self.needsFlush = false
            context.flush()
        }
    }

    /// Completes when every request read so far has been answered.
    func drained(on loop: EventLoop) -> EventLoopFuture<Void> {
        allAnswered ?? loop.makeSucceededVoidFuture()
    }

    /// The client closed its sending side: answer everything read, then close.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            closing = true
            let done = allAnswered ?? context.eventLoop.makeSucceededVoidFuture()
            done.whenComplete { _ in
                context.flush()
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
