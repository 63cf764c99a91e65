import Foundation
import HammingCode
import HashStore
import Logging
import MultiIndex
import NIOCore
import NIOEmbedded
import NIOPosix
import Testing
import WireProtocol
@testable import Daemon

/// A connection (its ConnectionHandler, which splits the lines itself) in an `EmbeddedChannel`, as SwiftNIO
/// tests its own handlers: no socket, and every step taken by the test. The service runs
/// on a real store; the writer's thread is not started: `commit()` performs the queued
/// writes on the test's thread, which is the embedded loop's.
final class EmbeddedConnection {
    let dir = NSTemporaryDirectory() + "gdh-embedded-\(UUID().uuidString.prefix(8))"
    let store: HashStore
    let writer: Writer
    let pool = NIOThreadPool(numberOfThreads: 1)
    let channel = EmbeddedChannel()

    init(maxLineBytes: Int = 1024, maxInFlight: Int = 4096) throws {
        store = try HashStore(directory: dir, options: StoreOptions(bits: 64))
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        writer = Writer(store: store, logger: logger)
        pool.start()
        let service = Service(store: store, writer: writer, pool: pool, encoder: nil, logger: logger)
        let handler = ConnectionHandler(service: service, maxLineBytes: maxLineBytes, maxInFlight: maxInFlight,
                                        eventLoop: channel.eventLoop)
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.connect(to: SocketAddress(unixDomainSocketPath: "/tmp/gdh-embedded.sock")).wait()
    }

    deinit {
        _ = try? channel.finish()
        try? pool.syncShutdownGracefully()
        store.close()
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// One read burst: the bytes arrive together (channelRead, then channelReadComplete).
    func send(_ text: String) throws {
        try channel.writeInbound(ByteBuffer(string: text))
    }

    /// The writer's turn: the queued writes in one transaction, their answers delivered.
    func commit() {
        writer.performQueuedJobs()
        channel.embeddedEventLoop.run()
    }

    /// Each buffer written to the socket since the last call, as text.
    func written() throws -> [String] {
        var out: [String] = []
        while let b = try channel.readOutbound(as: ByteBuffer.self) { out.append(String(buffer: b)) }
        return out
    }

    /// The last auto-read setting the handler made (reading paused: false); nil if none.
    var autoRead: Bool? {
        channel.options.last { $0.option is ChannelOptions.Types.AutoReadOption }?.value as? Bool
    }
}

let zero64 = "0000000000000000"

@Suite("ConnectionHandler in an EmbeddedChannel")
struct ConnectionHandlerTests {
    @Test("the answers of one read burst go out in order, in one write")
    func oneBurstOneWrite() throws {
        let c = try EmbeddedConnection()
        try c.send("PING\nGET nope\nbogus\nKNN 1 CODE \(zero64)\n")
        let out = try c.written()
        #expect(out.count == 1)
        let lines = out.joined().split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.count == 5)
        #expect(lines[0] == "OK PONG")
        #expect(lines[1] == "ERR NOTFOUND no item has key 'nope'")
        #expect(lines[2].hasPrefix("ERR BADREQUEST unknown command 'bogus'"))
        #expect(lines[3] == "OK 0")
    }

    @Test("a read waits for the writes before it; a batch's answers go out in one write")
    func readYourWrites() throws {
        let c = try EmbeddedConnection()
        try c.send("ADD a CODE 00000000000000ff\nADD b CODE 000000000000ffff\nGET a\nPING\n")
        #expect(try c.written().isEmpty)
        #expect(c.store.count == 0)
        c.commit()
        #expect(try c.written() == ["OK 0\nOK 1\nOK 00000000000000ff\nOK PONG\n"])
        #expect(c.store.count == 2)
    }

    @Test("a burst's pipelined writes reach the writer together: one transaction, answers in order")
    func burstIsOneBatch() throws {
        let c = try EmbeddedConnection()
        let commitsBefore = c.store.commits
        try c.send("ADD a CODE 00000000000000ff\nDEL zz\nADD a CODE 000000000000ffff\nADD b CODE \(zero64)\nDEL a\n")
        c.commit()
        #expect(try c.written() == ["OK 0\nOK 0\nOK 0\nOK 1\nOK 1\n"])
        #expect(c.store.commits == commitsBefore + 1)
        #expect(c.store.count == 1)
    }

    @Test("ADDs taken on the fast path and lines taken the general way keep their order and answers")
    func fastAndGeneralAddsInterleaved() throws {
        let c = try EmbeddedConnection()
        // Fast ADDs, then a malformed one and one of another width (answered ERR in their
        // turn), a lower-case ADD, a DEL, a GET that must see every write before it, and
        // ADDs after the GET, which wait for it.
        try c.send("ADD a CODE 00000000000000ff\nADD b CODE 000000000000ffff\nADD c CODE 00000000000000fg\n"
            + "ADD d CODE 00000000000000ff00\nadd e code 00000000000000AA\nDEL a\nGET b\nADD f CODE \(zero64)\nADD b CODE \(zero64)\n")
        c.commit()
        c.commit()
        let lines = try c.written().joined().split(separator: "\n").map(String.init)
        #expect(lines.count == 9)
        #expect(Array(lines[0..<2]) == ["OK 0", "OK 1"])
        #expect(lines[2].hasPrefix("ERR BADCODE"))
        #expect(lines[3].hasPrefix("ERR BADCODE"))
        #expect(Array(lines[4...]) == ["OK 2", "OK 1", "OK 000000000000ffff", "OK 3", "OK 1"])
        #expect(c.store.count == 3)
        #expect(c.store.get("b")?.hex == zero64)
        #expect(c.store.get("e")?.hex == "00000000000000aa")
    }

    @Test("writes refused by a stopping writer are each answered SHUTDOWN in their turn; the rest still runs")
    func refusedWrites() throws {
        let c = try EmbeddedConnection()
        c.writer.refuseJobs()
        try c.send("PING\nADD a CODE 00000000000000ff\nDEL b\nPING\n")
        c.commit()
        let lines = try c.written().joined().split(separator: "\n").map(String.init)
        #expect(lines.count == 4)
        #expect(lines[0] == "OK PONG")
        #expect(lines[1].hasPrefix("ERR SHUTDOWN"))
        #expect(lines[2].hasPrefix("ERR SHUTDOWN"))
        #expect(lines[3] == "OK PONG")
        #expect(c.store.count == 0)
    }

    @Test("OK <n> is formatted into the buffer as the string form would be")
    func okLines() {
        for n: UInt64 in [0, 1, 9, 10, 99, 100, 4_294_967_295, 10_000_000_000, UInt64.max] {
            var buffer = ByteBuffer(string: "x")
            let length = Reply.writeOK(n, into: &buffer)
            #expect(String(buffer: buffer) == "xOK \(n)\n")
            #expect(length == "OK \(n)\n".utf8.count)
        }
    }

    @Test("reading pauses at the in-flight limit and resumes once at most half are unanswered")
    func backPressure() throws {
        let c = try EmbeddedConnection(maxInFlight: 4)
        try c.send("ADD a CODE \(zero64)\nADD b CODE \(zero64)\nADD c CODE \(zero64)\n")
        #expect(c.autoRead == nil)
        try c.send("ADD d CODE \(zero64)\n")
        #expect(c.autoRead == false)
        c.commit()
        #expect(try c.written() == ["OK 0\nOK 1\nOK 2\nOK 3\n"])
        #expect(c.autoRead == true)
    }

    @Test("QUIT: answered, then the channel closes and nothing after it runs")
    func quit() throws {
        let c = try EmbeddedConnection()
        try c.send("PING\nQUIT\nADD x CODE \(zero64)\n")
        // The answers, then the empty write whose completion closes the channel.
        #expect(try c.written() == ["OK PONG\nOK BYE\n", ""])
        #expect(!c.channel.isActive)
        c.commit()
        #expect(c.store.count == 0)
    }

    @Test("an over-long line, arriving over several reads, is answered TOOLONG and the next line runs")
    func tooLong() throws {
        let c = try EmbeddedConnection(maxLineBytes: 64)
        try c.send("PING\n" + String(repeating: "x", count: 50))
        try c.send(String(repeating: "y", count: 50))
        try c.send("\nPING\n")
        let text = try c.written().joined()
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.count == 3)
        #expect(lines[0] == "OK PONG" && lines[2] == "OK PONG")
        #expect(lines[1].hasPrefix("ERR TOOLONG"))
    }

    @Test("half-close: every request read is answered, then the channel closes")
    func halfClose() throws {
        let c = try EmbeddedConnection()
        try c.send("ADD a CODE 00000000000000ff\nGET a\n")
        c.channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(c.channel.isActive)
        #expect(try c.written().isEmpty)
        c.commit()
        #expect(try c.written().joined() == "OK 0\nOK 00000000000000ff\n")
        #expect(!c.channel.isActive)
    }

    @Test("a large answer goes out in pieces whose bytes are the whole answer; the next request follows it")
    func streamed() throws {
        let c = try EmbeddedConnection()
        let width = try CodeWidth(bits: 64)
        var rng = SplitMix64(seed: 3)
        let pad = String(repeating: "k", count: 200)
        _ = try c.store.apply((0..<3000).map { .add(key: "\(pad)-\($0)", code: SyntheticCodes.random(width, using: &rng)) })
        try c.send("KNN 3000 CODE \(zero64)\nPING\n")
        c.channel.embeddedEventLoop.run()
        let out = try c.written()
        #expect(out.count > 8)
        var stats = SearchStats()
        let whole = ResponseFormatter.neighbors(c.store.knn(try HammingCode(hex: zero64, width: width), k: 3000, stats: &stats))
        #expect(out.joined() == whole + "OK PONG\n")
    }

    @Test("reading pauses at the in-flight limit also while a streamed answer waits for the socket")
    func backPressureBehindAStream() throws {
        let c = try EmbeddedConnection(maxInFlight: 4)
        let width = try CodeWidth(bits: 64)
        var rng = SplitMix64(seed: 5)
        let pad = String(repeating: "k", count: 200)
        _ = try c.store.apply((0..<3000).map { .add(key: "\(pad)-\($0)", code: SyntheticCodes.random(width, using: &rng)) })
        // The client reads nothing: the socket stops being writable while the answer streams.
        c.channel.isWritable = false
        try c.send("KNN 3000 CODE \(zero64)\n")
        c.channel.embeddedEventLoop.run()
        #expect(c.autoRead == nil)
        // Writes pipelined behind the stream: they wait for it, unanswered; the fourth
        // reaches the limit and reading stops although the stream holds the actions back.
        try c.send("ADD a CODE \(zero64)\nADD b CODE \(zero64)\nADD c CODE \(zero64)\n")
        #expect(c.autoRead == nil)
        try c.send("ADD d CODE \(zero64)\n")
        #expect(c.autoRead == false)
        // The socket drains: the rest of the answer goes out, then the writes run.
        c.channel.isWritable = true
        c.channel.pipeline.fireChannelWritabilityChanged()
        c.channel.embeddedEventLoop.run()
        var stats = SearchStats()
        let whole = ResponseFormatter.neighbors(c.store.knn(try HammingCode(hex: zero64, width: width), k: 3000, stats: &stats))
        #expect(try c.written().joined() == whole)
        #expect(c.autoRead == false)
        c.commit()
        #expect(try c.written().joined() == "OK 3000\nOK 3001\nOK 3002\nOK 3003\n")
        #expect(c.autoRead == true)
    }
}

@Suite("LineSplitter")
struct LineSplitterTests {
    /// The frames a splitter of `maxLength` gives for `input` fed in the given pieces
    /// (nil: a line too long).
    func frames(_ pieces: [ArraySlice<UInt8>], maxLength: Int) -> [String?] {
        var splitter = LineSplitter(maxLength: maxLength)
        var out: [String?] = []
        for p in pieces {
            Array(p).withUnsafeBytes { bytes in
                splitter.split(bytes) { frame in
                    switch frame {
                    case .line(let b): out.append(String(decoding: b, as: UTF8.self))
                    case .tooLong: out.append(nil)
                    }
                    return true
                }
            }
            #expect(splitter.heldBytes <= maxLength)
        }
        return out
    }

    static let input = Array("PING\r\nGET a\n\n12345678\n123456789\n\(String(repeating: "z", count: 50))\nlast\ntail".utf8)
    static let expected: [String?] = ["PING\r", "GET a", "", "12345678", nil, nil, "last"]

    @Test("lines at the limit pass, longer ones become one tooLong each, an unfinished last line is never given")
    func whole() {
        #expect(frames([Self.input[...]], maxLength: 8) == Self.expected)
    }

    @Test("the same frames however the bytes are split into reads")
    func everySplit() {
        let input = Self.input
        for cut in 0...input.count {
            #expect(frames([input[..<cut], input[cut...]], maxLength: 8) == Self.expected, "cut at \(cut)")
        }
        for a in stride(from: 0, through: input.count, by: 3) {
            for b in a...input.count {
                #expect(frames([input[..<a], input[a..<b], input[b...]], maxLength: 8) == Self.expected, "cuts at \(a), \(b)")
            }
        }
        #expect(frames(input.indices.map { input[$0...$0] }, maxLength: 8) == Self.expected)
    }

    @Test("an over-long line is reported when its end arrives, not before, and is not held")
    func tooLongAtEnd() {
        var splitter = LineSplitter(maxLength: 8)
        var out: [String?] = []
        let take = { (frame: FramedLine) -> Bool in
            switch frame {
            case .line(let b): out.append(String(decoding: b, as: UTF8.self))
            case .tooLong: out.append(nil)
            }
            return true
        }
        for _ in 0..<100 {
            Array("0123456789".utf8).withUnsafeBytes { splitter.split($0, take) }
            #expect(splitter.heldBytes == 0)
        }
        #expect(out.isEmpty)
        Array("\nok\n".utf8).withUnsafeBytes { splitter.split($0, take) }
        #expect(out == [nil, "ok"])
    }

    @Test("a large line read in pieces is given whole; the room it took is not kept")
    func largeLineRoom() {
        var splitter = LineSplitter(maxLength: 1 << 20)
        let line = Array(repeating: UInt8(ascii: "x"), count: 300_000)
        var lengths: [Int] = []
        let take = { (frame: FramedLine) -> Bool in
            if case .line(let b) = frame { lengths.append(b.count) }
            return true
        }
        for start in stride(from: 0, to: line.count, by: 65_536) {
            Array(line[start..<min(line.count, start + 65_536)]).withUnsafeBytes { splitter.split($0, take) }
        }
        #expect(lengths.isEmpty && splitter.heldBytes == line.count)
        Array("\nPING\nGE".utf8).withUnsafeBytes { splitter.split($0, take) }
        #expect(lengths == [300_000, 4])
        #expect(splitter.heldBytes == 2 && splitter.heldCapacity <= LineSplitter.keptCapacity)
    }

    @Test("when the taker says stop, no further line is given and the rest of the read is dropped")
    func stop() {
        var splitter = LineSplitter(maxLength: 64)
        var out: [String] = []
        Array("PING\nQUIT\nGET a\nGET b\nunfinished".utf8).withUnsafeBytes { bytes in
            splitter.split(bytes) { frame in
                if case .line(let b) = frame { out.append(String(decoding: b, as: UTF8.self)) }
                return out.last != "QUIT"
            }
        }
        #expect(out == ["PING", "QUIT"])
        #expect(splitter.heldBytes == 0)
    }
}
