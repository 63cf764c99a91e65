/// How a request is ordered against the requests before it on its connection
/// (Protocol/PROTOCOL.md, section 6).
enum RequestOrder<Reply> {
    /// ADD of a code and DEL: handed to the writer as soon as the request before it, when
    /// that is such a write too, has been handed over (a pipelining client gets group commit).
    case pipelinedWrite
    /// Every other request: runs once every earlier request on the connection is answered,
    /// so it sees the effect of all of them.
    case afterEarlier
    /// A line answered without running anything (a parse error): its answer is written in
    /// its turn. It ends a run of pipelined writes like any other non-write.
    case answered(Reply)

    var isPipelinedWrite: Bool {
        if case .pipelinedWrite = self { return true }
        return false
    }
}

extension RequestOrder: Equatable where Reply: Equatable {}

/// The ordering, read-your-writes and back-pressure rules of one connection, as a plain
/// value with no I/O: the connection handler feeds it what arrives (`receive`) and what
/// finishes (`answer`), and performs the actions it hands back (`nextAction`) in order.
///
/// - A request runs when every earlier request is answered, or, for a pipelined write,
///   as soon as the request just before it is a pipelined write that has run.
///   Requests run in arrival order.
/// - Answers are written in arrival order, whatever order they finish in.
/// - Past `maxInFlight` unanswered requests reading pauses; it resumes once at most
///   half of that many are unanswered.
/// - After the answer of a request received with `closes: true` (QUIT) is written, the
///   connection closes.
struct ConnectionState<Request, Reply> {
    enum Action {
        /// Start the request; report its answer with `answer(_:_:)`.
        case run(UInt64, Request)
        /// Write this answer (the next one in request order).
        case write(Reply)
        case pauseReading
        case resumeReading
        /// Every answer up to the closing request is written: flush and close.
        case close
    }

    let maxInFlight: Int
    /// Sequence number of the next request to arrive (the count received so far).
    private(set) var received: UInt64 = 0
    /// Answers written so far: requests `0..<written` are done.
    private(set) var written: UInt64 = 0
    /// Answers of requests `written..<received`, nil while unfinished.
    private var answers = FIFO<Reply?>()
    /// Requests that arrived but may not run yet, in arrival order.
    private var waiting = FIFO<(seq: UInt64, request: Request, order: RequestOrder<Reply>)>()
    /// The latest request that ran, and whether it was a pipelined write.
    private var lastRun: UInt64?
    private var lastRunWasWrite = false
    private var closingSeq: UInt64?
    private(set) var readingPaused = false
    private var actions = FIFO<Action>()

    init(maxInFlight: Int) {
        precondition(maxInFlight >= 2)
        self.maxInFlight = maxInFlight
    }

    /// Requests received and not yet answered (written).
    var inFlight: Int { Int(received - written) }
    /// Every request received so far is answered.
    var allAnswered: Bool { received == written }

    /// A request arrived; returns its sequence number.
    @discardableResult
    mutating func receive(_ request: Request, order: RequestOrder<Reply>, closes: Bool = false) -> UInt64 {
        let seq = received
        received += 1
        if closes { closingSeq = seq }
        if case .answered(let reply) = order {
            answers.append(reply)
            flushAnswers()
            return seq
        }
        answers.append(nil)
        if waiting.isEmpty && mayRun(seq, order) {
            start(seq, request, order)
        } else {
            waiting.append((seq, request, order))
        }
        pauseIfFull()
        return seq
    }

    /// Whether a pipelined write received now would run at once: nothing waits before it,
    /// and every earlier request is answered or the one just before it is a pipelined write
    /// that ran. The handler then takes it with `receiveRunningWrite` and starts it itself.
    var writeWouldRun: Bool { waiting.isEmpty && mayRun(received, .pipelinedWrite) }

    /// Actions wait to be taken.
    var hasActions: Bool { !actions.isEmpty }

    /// `receive(_:order: .pipelinedWrite)` of a write that `writeWouldRun`, without the
    /// request and its `run` action: the caller starts it. Returns its sequence number.
    mutating func receiveRunningWrite() -> UInt64 {
        precondition(writeWouldRun, "receiveRunningWrite of a write that may not run yet")
        let seq = received
        received += 1
        answers.append(nil)
        ran(seq, write: true)
        pauseIfFull()
        return seq
    }

    /// Past `maxInFlight` unanswered requests, reading pauses.
    private mutating func pauseIfFull() {
        if !readingPaused && inFlight >= maxInFlight {
            readingPaused = true
            actions.append(.pauseReading)
        }
    }

    /// Request `seq` finished with this answer.
    mutating func answer(_ seq: UInt64, _ reply: Reply) {
        precondition(seq >= written && seq < received, "answer for a request that is not in flight")
        let i = Int(seq - written)
        precondition(answers[i] == nil, "request answered twice")
        answers[i] = reply
        flushAnswers()
    }

    /// The next thing to do, in order; nil when there is nothing.
    mutating func nextAction() -> Action? { actions.popFirst() }

    private func mayRun(_ seq: UInt64, _ order: RequestOrder<Reply>) -> Bool {
        if written == seq { return true }
        return order.isPipelinedWrite && lastRunWasWrite && lastRun == seq - 1
    }

    private mutating func start(_ seq: UInt64, _ request: Request, _ order: RequestOrder<Reply>) {
        ran(seq, write: order.isPipelinedWrite)
        actions.append(.run(seq, request))
    }

    /// Request `seq` starts (`write`: a pipelined write).
    private mutating func ran(_ seq: UInt64, write: Bool) {
        lastRun = seq
        lastRunWasWrite = write
    }

    /// Whether request `seq` is the next one to be written.
    func isNextToWrite(_ seq: UInt64) -> Bool { seq == written && !answers.isEmpty }

    /// The `n` requests from the next one to be written on (none answered yet) are answered,
    /// and the caller has written their answers itself, in order. What that lets run or be
    /// written next follows as actions.
    mutating func answerWrittenHead(_ n: Int) {
        precondition(n <= answers.count, "more answers than requests in flight")
        for _ in 0..<n {
            guard case .some(nil) = answers.popFirst() else { preconditionFailure("request answered twice") }
            written += 1
            if closingSeq == written - 1 { actions.append(.close) }
        }
        flushAnswers(progressed: n > 0)
    }

    private mutating func flushAnswers(progressed wrote: Bool = false) {
        var progressed = wrote
        while let first = answers.first, let reply = first {
            _ = answers.popFirst()
            actions.append(.write(reply))
            written += 1
            progressed = true
            if closingSeq == written - 1 { actions.append(.close) }
        }
        guard progressed else { return }
        while let head = waiting.first, mayRun(head.seq, head.order) {
            _ = waiting.popFirst()
            start(head.seq, head.request, head.order)
        }
        if readingPaused && inFlight <= maxInFlight / 2 {
            readingPaused = false
            actions.append(.resumeReading)
        }
    }
}

/// A first-in first-out queue on one array: appends at the end, removal from a moving
/// head, storage reused once it empties (no allocation in a steady state).
struct FIFO<Element> {
    private var storage: [Element] = []
    private var head = 0

    var isEmpty: Bool { head == storage.count }
    var count: Int { storage.count - head }
    var first: Element? { isEmpty ? nil : storage[head] }

    subscript(i: Int) -> Element {
        get { storage[head + i] }
        set { storage[head + i] = newValue }
    }

    mutating func append(_ e: Element) {
        // Reclaim the consumed prefix once it is most of the array.
        if head > 0 && head >= storage.count / 2 && storage.count >= 64 {
            storage.removeFirst(head)
            head = 0
        }
        storage.append(e)
    }

    mutating func popFirst() -> Element? {
        guard !isEmpty else { return nil }
        let e = storage[head]
        head += 1
        if head == storage.count {
            storage.removeAll(keepingCapacity: true)
            head = 0
        }
        return e
    }
}
