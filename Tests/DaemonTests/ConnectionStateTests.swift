import HammingCode
import Testing
@testable import Daemon

/// Drives a `ConnectionState<String, String>` and records what it asks for.
private struct Driver {
    var state: ConnectionState<String, String>
    var ran: [UInt64] = []
    var writes: [String] = []
    var pauses = 0, resumes = 0, closes = 0
    /// Ran and not answered yet.
    var running: [UInt64] = []

    init(maxInFlight: Int = 8) { state = ConnectionState(maxInFlight: maxInFlight) }

    mutating func drain() {
        while let a = state.nextAction() {
            switch a {
            case .run(let seq, _): ran.append(seq); running.append(seq)
            case .write(let t): writes.append(t)
            case .pauseReading: pauses += 1
            case .resumeReading: resumes += 1
            case .close: closes += 1
            }
        }
    }

    @discardableResult
    mutating func receive(_ name: String, _ order: RequestOrder<String>, closes: Bool = false) -> UInt64 {
        let seq = state.receive(name, order: order, closes: closes)
        drain()
        return seq
    }

    mutating func answer(_ seq: UInt64) {
        running.removeAll { $0 == seq }
        state.answer(seq, "A\(seq)")
        drain()
    }
}

@Suite("ConnectionState: ordering, read-your-writes, back-pressure")
struct ConnectionStateTests {
    @Test("pipelined writes all run at once; answers go out in request order")
    func pipelinedWrites() {
        var d = Driver()
        for i in 0..<4 { d.receive("w\(i)", .pipelinedWrite) }
        #expect(d.ran == [0, 1, 2, 3])
        d.answer(2)
        d.answer(1)
        #expect(d.writes.isEmpty)
        d.answer(0)
        #expect(d.writes == ["A0", "A1", "A2"])
        d.answer(3)
        #expect(d.writes == ["A0", "A1", "A2", "A3"])
        #expect(d.state.allAnswered)
    }

    @Test("a read after writes waits for them; a write after an unanswered read waits for it")
    func readYourWrites() {
        var d = Driver()
        d.receive("w0", .pipelinedWrite)
        d.receive("w1", .pipelinedWrite)
        d.receive("r2", .afterEarlier)
        d.receive("w3", .pipelinedWrite)
        d.receive("w4", .pipelinedWrite)
        #expect(d.ran == [0, 1])
        d.answer(0)
        #expect(d.ran == [0, 1])
        d.answer(1)
        // Only now may the read run; the writes after it wait for its answer.
        #expect(d.ran == [0, 1, 2])
        d.answer(2)
        // w3 runs, and w4 at once after it (the write before it has run).
        #expect(d.ran == [0, 1, 2, 3, 4])
        d.answer(4)
        d.answer(3)
        #expect(d.writes == ["A0", "A1", "A2", "A3", "A4"])
    }

    @Test("an answered line (a parse error) is written in its turn and ends a run of writes")
    func answeredLine() {
        var d = Driver()
        d.receive("w0", .pipelinedWrite)
        d.receive("bad", .answered("ERR BADREQUEST x"))
        d.receive("w2", .pipelinedWrite)
        #expect(d.ran == [0])
        #expect(d.writes.isEmpty)
        d.answer(0)
        #expect(d.writes == ["A0", "ERR BADREQUEST x"])
        #expect(d.ran == [0, 2])
        // An answered line first on an idle connection goes out at once.
        var e = Driver()
        e.receive("bad", .answered("ERR X"))
        #expect(e.writes == ["ERR X"])
    }

    @Test("reading pauses at maxInFlight unanswered requests and resumes at half")
    func backPressure() {
        var d = Driver(maxInFlight: 8)
        for i in 0..<7 { d.receive("w\(i)", .pipelinedWrite) }
        #expect(d.pauses == 0)
        d.receive("w7", .pipelinedWrite)
        #expect(d.pauses == 1)
        #expect(d.state.readingPaused)
        for s in 0..<3 { d.answer(UInt64(s)) }
        #expect(d.resumes == 0)  // 5 in flight
        d.answer(3)
        #expect(d.resumes == 1)  // 4 in flight = half
        #expect(!d.state.readingPaused)
    }

    @Test("the connection closes after the QUIT answer, not before the earlier ones")
    func quit() {
        var d = Driver()
        d.receive("w0", .pipelinedWrite)
        d.receive("quit", .afterEarlier, closes: true)
        #expect(d.ran == [0])
        d.answer(0)
        #expect(d.ran == [0, 1])
        #expect(d.closes == 0)
        d.answer(1)
        #expect(d.writes == ["A0", "A1"])
        #expect(d.closes == 1)
    }

    @Test("random traffic: runs in order, only when allowed, as soon as allowed; every answer in order")
    func randomTraffic() {
        var rng = SplitMix64(seed: 7)
        for _ in 0..<200 {
            var d = Driver(maxInFlight: 2 + Int(rng.next() % 16))
            var orders: [RequestOrder<String>] = []
            let n = 1 + Int(rng.next() % 60)
            var sent = 0
            while sent < n || !d.running.isEmpty {
                if sent < n && (d.running.isEmpty || rng.next() % 2 == 0) {
                    let k = rng.next() % 10
                    let order: RequestOrder<String> = k < 6 ? .pipelinedWrite : k < 9 ? .afterEarlier : .answered("E\(sent)")
                    orders.append(order)
                    d.receive("r\(sent)", order)
                    sent += 1
                } else if !d.running.isEmpty {
                    let i = Int(rng.next() % UInt64(d.running.count))
                    d.answer(d.running[i])
                }
                // Runs are in request order and each one was allowed when it ran.
                #expect(d.ran == d.ran.sorted())
                // The first request that has not run is not one that may run.
                let ranSet = Set(d.ran)
                if let next = (0..<UInt64(sent)).first(where: { !ranSet.contains($0) && orders[Int($0)] != .answered("E\($0)") }) {
                    let allEarlierWritten = d.state.written == next
                    let prevIsRunWrite = next > 0 && orders[Int(next - 1)] == .pipelinedWrite && ranSet.contains(next - 1)
                    let earlierAllRun = (0..<next).allSatisfy { ranSet.contains($0) || orders[Int($0)] == .answered("E\($0)") }
                    #expect(!(earlierAllRun && (allEarlierWritten || (orders[Int(next)] == .pipelinedWrite && prevIsRunWrite))))
                }
                #expect(d.state.inFlight <= d.state.maxInFlight + 1 || d.state.readingPaused)
            }
            // Everything ran and was answered, in order.
            let expected = (0..<n).map { i -> String in
                if case .answered(let t) = orders[i] { return t }
                return "A\(i)"
            }
            #expect(d.writes == expected)
            #expect(d.ran.count == orders.filter { if case .answered = $0 { return false } else { return true } }.count)
            #expect(d.pauses == d.resumes || d.state.readingPaused == false)
        }
    }

    @Test("a write taken with receiveRunningWrite when writeWouldRun, and answers written with answerWrittenHead, leave the state as receive and answer would")
    func runningWriteMatchesReceive() {
        var rng = SplitMix64(seed: 11)
        var headRuns = 0
        for _ in 0..<200 {
            let limit = 2 + Int(rng.next() % 16)
            var general = Driver(maxInFlight: limit)
            var fast = Driver(maxInFlight: limit)
            let n = 1 + Int(rng.next() % 60)
            var sent = 0
            var taken = 0
            while sent < n || !general.running.isEmpty {
                if sent < n && (general.running.isEmpty || rng.next() % 2 == 0) {
                    let k = rng.next() % 10
                    let order: RequestOrder<String> = k < 7 ? .pipelinedWrite : k < 9 ? .afterEarlier : .answered("E\(sent)")
                    general.receive("r\(sent)", order)
                    if order == .pipelinedWrite && fast.state.writeWouldRun && !fast.state.hasActions {
                        // The handler starts the write itself: record it as run.
                        let seq = fast.state.receiveRunningWrite()
                        fast.ran.append(seq)
                        fast.running.append(seq)
                        fast.drain()
                        taken += 1
                    } else {
                        fast.receive("r\(sent)", order)
                    }
                    sent += 1
                } else if rng.next() % 2 == 0, let head = general.running.min(), fast.state.isNextToWrite(head),
                          !fast.state.hasActions {
                    // A run of running requests from the next one to be written on, answered
                    // together: the handler writes them itself (answerWrittenHead).
                    var n = 1
                    while general.running.contains(head + UInt64(n)) && rng.next() % 4 != 0 { n += 1 }
                    for i in 0..<n { general.answer(head + UInt64(i)) }
                    fast.running.removeAll { $0 >= head && $0 < head + UInt64(n) }
                    fast.writes += (0..<n).map { "A\(head + UInt64($0))" }
                    fast.state.answerWrittenHead(n)
                    fast.drain()
                    headRuns += 1
                } else {
                    let seq = general.running[Int(rng.next() % UInt64(general.running.count))]
                    general.answer(seq)
                    fast.answer(seq)
                }
                #expect(fast.ran == general.ran)
                #expect(fast.running == general.running)
                #expect(fast.writes == general.writes)
                #expect(fast.pauses == general.pauses && fast.resumes == general.resumes)
                #expect(fast.state.readingPaused == general.state.readingPaused)
            }
            #expect(fast.writes.count == n)
            if n > 5 { #expect(taken > 0 || !general.ran.isEmpty) }
        }
        #expect(headRuns > 100)
    }
}
