import Foundation
import GDHClient
import HammingCode
import HashStore
import Testing
import WireProtocol
@testable import Daemon

func hex64(_ x: UInt64) -> String {
    let s = String(x, radix: 16)
    return String(repeating: "0", count: 16 - s.count) + s
}

@Suite("Daemon end to end", .serialized)
struct EndToEndTests {
    @Test("the socket file is created with mode 0600")
    func socketMode() throws {
        let d = try TestDaemon()
        var st = stat()
        #expect(stat(d.socket, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o600)
    }

    @Test("a stale socket file is replaced; a live one is refused")
    func staleSocket() throws {
        let d = try TestDaemon()
        // Live: a second daemon (on another database) must not take the socket.
        var config = DaemonConfiguration(databasePath: d.dir + "-other", socketPath: d.socket)
        config.loopThreads = 1
        #expect(throws: DaemonError.self) { try Daemon(configuration: config, logger: .init(label: "t")) }
        // Nothing was created for the refused daemon.
        #expect(!FileManager.default.fileExists(atPath: d.dir + "-other"))
        // Stale: the daemon is gone but its socket file is left behind.
        d.stop()
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(d.socket.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in raw.copyBytes(from: bytes); raw[bytes.count] = 0 }
        _ = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        close(fd)
        #expect(FileManager.default.fileExists(atPath: d.socket))
        try d.start()
        #expect(okText(try d.client().request("PING")) == "PONG")
    }

    @Test("a second daemon on the same database is refused")
    func exclusiveDatabase() throws {
        let d = try TestDaemon()
        var config = DaemonConfiguration(databasePath: d.dir, socketPath: d.socket + "2")
        config.loopThreads = 1
        #expect(throws: (any Error).self) { try Daemon(configuration: config, logger: .init(label: "t")) }
    }

    @Test("data persists across a restart")
    func restart() throws {
        let d = try TestDaemon(bits: 64)
        let c = try d.client()
        for i in 0..<500 { c.send("ADD key\(i) CODE \(hex64(UInt64(i) &* 0x9E37_79B9_7F4A_7C15))") }
        for _ in 0..<500 { #expect(okText(try c.receive()) != nil) }
        #expect(okText(try c.request("DEL key7")) == "1")
        let before = listLines(try c.request("KNN 20 CODE 0123456789abcdef"))
        d.stop()
        try d.start()
        let c2 = try d.client()
        #expect(listLines(try c2.request("KNN 20 CODE 0123456789abcdef")) == before)
        #expect(okText(try c2.request("GET key8")) == hex64(8 &* 0x9E37_79B9_7F4A_7C15))
        #expect(try c2.request("GET key7") == .error(code: "NOTFOUND", message: "no item has key 'key7'"))
        #expect(okText(try c2.request("VERIFY")).map { $0.hasPrefix("499 ") } == true)
        #expect(okText(try c2.request("ADD new CODE 0000000000000000")) == "500")
    }

    @Test("malformed, binary and oversized lines get ERR and change nothing")
    func garbage() throws {
        let d = try TestDaemon(bits: 64, maxLineBytes: 1024)
        let c = try d.client()
        #expect(okText(try c.request("ADD a CODE 00000000000000ff")) == "0")
        let stateBefore = listLines(try c.request("KNN 10 CODE 0000000000000000"))
        let raw = try RawSocket(path: d.socket)
        raw.send([0xff, 0xfe, 0x00, 0x41, 0x0a])                      // invalid UTF-8 with NUL
        raw.send(String(repeating: "A", count: 5000) + "\n")          // over the limit
        raw.send("ADD b CODE " + String(repeating: "0", count: 3000) + "\n")
        raw.send("\r\n")
        raw.send("DEL a\u{1}\n")
        raw.send("PING\r\n")                                          // CRLF works
        let lines = raw.readLines(6)
        #expect(lines.count == 6)
        #expect(lines[0].hasPrefix("ERR BADREQUEST "))
        #expect(lines[1].hasPrefix("ERR TOOLONG "))
        #expect(lines[2].hasPrefix("ERR TOOLONG "))
        #expect(lines[3].hasPrefix("ERR BADREQUEST "))
        #expect(lines[4].hasPrefix("ERR BADKEY "))
        #expect(lines[5] == "OK PONG")
        // A huge line sent in pieces is refused without being buffered, and the
        // connection goes on.
        for _ in 0..<64 { raw.send(String(repeating: "x", count: 65536)) }
        raw.send("\nPING\n")
        let after = raw.readLines(2)
        #expect(after.first?.hasPrefix("ERR TOOLONG ") == true)
        #expect(after.last == "OK PONG")
        #expect(listLines(try c.request("KNN 10 CODE 0000000000000000")) == stateBefore)
        #expect(okText(try c.request("VERIFY")) == "1 0")
    }

    @Test("pipelined requests are answered in order, and a half-closed client gets every answer")
    func pipelining() throws {
        let d = try TestDaemon(bits: 64)
        let raw = try RawSocket(path: d.socket)
        var script = ""
        for i in 0..<300 { script += "ADD k\(i) CODE \(hex64(UInt64(i)))\nGET k\(i)\n" }
        script += "KNN 1 CODE 0000000000000000\nDEL k0\nGET k0\n"
        raw.send(script)
        raw.shutdownWrite()
        let lines = raw.readToEnd().split(separator: "\n").map(String.init)
        #expect(lines.count == 600 + 2 + 2)
        for i in 0..<300 {
            #expect(lines[2 * i] == "OK \(i)")
            #expect(lines[2 * i + 1] == "OK \(hex64(UInt64(i)))")
        }
        #expect(lines[600] == "OK 1")
        #expect(lines[601] == "k0 0")
        #expect(lines[602] == "OK 1")
        #expect(lines[603].hasPrefix("ERR NOTFOUND"))
    }

    @Test("concurrent clients mixing writes and queries see their own writes; totals add up")
    func concurrentClients() throws {
        let d = try TestDaemon(bits: 128)
        let clients = 8, perClient = 300
        let failures = NSLock()
        nonisolated(unsafe) var problems: [String] = []
        DispatchQueue.concurrentPerform(iterations: clients) { c in
            do {
                let client = try d.client()
                var rng = SystemRandomNumberGenerator()
                for i in 0..<perClient {
                    let code = String(format: "%016llx%016llx", rng.next() as UInt64, rng.next() as UInt64)
                    guard okText(try client.request("ADD c\(c)-\(i) CODE \(code)")) != nil else { throw ClientError("add failed") }
                    // Read-your-writes: the new code is its own nearest neighbour.
                    guard let top = listLines(try client.request("KNN 1 CODE \(code)")), top.first?.hasSuffix(" 0") == true else {
                        throw ClientError("own write not visible")
                    }
                    if i % 50 == 0 { _ = try client.request("DEL c\(c)-\(i)") }
                }
            } catch {
                failures.lock(); problems.append("\(error)"); failures.unlock()
            }
        }
        #expect(problems.isEmpty, "\(problems)")
        let c = try d.client()
        let stats = listLines(try c.request("STATS")) ?? []
        #expect(stats.contains("items \(clients * (perClient - perClient / 50))"))
        #expect(okText(try c.request("VERIFY"))?.hasPrefix("\(clients * (perClient - perClient / 50)) ") == true)
    }

    @Test("KNN and RANGE over the socket equal a brute-force scan")
    func searchMatchesBruteForce() throws {
        let d = try TestDaemon(bits: 64)
        let c = try d.client()
        // Two clusters (distances bunch up, so ties and the range edge are exercised) and
        // uniform codes.
        let width = try CodeWidth(bits: 64)
        var clustered = SyntheticCodes(width: width, kind: .clustered(centres: 2, flip: 0.08), seed: 11)
        var uniform = SplitMix64(seed: 12)
        var codes: [UInt64] = []
        for i in 0..<3000 {
            let x = i % 3 == 0 ? SyntheticCodes.random(width, using: &uniform).words[0] : clustered.next().code.words[0]
            codes.append(x)
            c.send("ADD i\(i) CODE \(hex64(x))")
        }
        for _ in 0..<3000 { _ = try c.receive() }
        for _ in 0..<10 {
            let q = clustered.next().code.words[0]
            let truth = codes.enumerated().map { (i: $0.offset, d: ($0.element ^ q).nonzeroBitCount) }
                .sorted { $0.d != $1.d ? $0.d < $1.d : $0.i < $1.i }
            let knn = listLines(try c.request("KNN 25 CODE \(hex64(q))")) ?? []
            #expect(knn == truth.prefix(25).map { "i\($0.i) \($0.d)" })
            let range = listLines(try c.request("RANGE 6 CODE \(hex64(q))")) ?? []
            #expect(range == truth.filter { $0.d <= 6 }.map { "i\($0.i) \($0.d)" })
        }
    }
}

@Suite("Regressions")
struct RegressionTests {
    @Test("STATS and queries during COMPACT do not crash (the environment swap is locked)")
    func statsDuringCompact() throws {
        let d = try TestDaemon(bits: 64)
        let c = try d.client()
        for i in 0..<20_000 { c.send("ADD k\(i) CODE \(hex64(UInt64(i) &* 0x9E37_79B9_7F4A_7C15))") }
        for _ in 0..<20_000 { _ = try c.receive() }
        /// Shared with the reader thread, under a lock.
        final class State: @unchecked Sendable {
            let lock = NSLock()
            var done = false, failures = 0
            func finished() -> Bool { lock.lock(); defer { lock.unlock() }; return done }
            func fail() { lock.lock(); failures += 1; lock.unlock() }
        }
        let state = State()
        let readerDone = DispatchSemaphore(value: 0)
        let reader = Thread {
            defer { readerDone.signal() }
            guard let r = try? d.client() else { state.fail(); return }
            while !state.finished() {
                if (try? r.request("STATS")).flatMap(listLines) == nil { state.fail() }
                if (try? r.request("KNN 3 CODE 0000000000000000")).flatMap(listLines)?.count != 3 { state.fail() }
            }
        }
        reader.start()
        for _ in 0..<5 { #expect(okText(try c.request("COMPACT")) != nil) }
        state.lock.lock(); state.done = true; state.lock.unlock()
        readerDone.wait()
        #expect(state.failures == 0)
        #expect(okText(try c.request("VERIFY")) == "20000 0")
    }

    @Test("an invalid --substrings is refused before it is stored")
    func badSubstringsNotStored() throws {
        let d = try TestDaemon(bits: 64)
        d.stop()
        #expect(throws: (any Error).self) { try d.start(m: 2) }
        try d.start()
        #expect(listLines(try d.client().request("STATS"))?.contains("substrings_setting auto") == true)
    }

    @Test("a second with no write folds a delta past a sixteenth of the items: STATS shows the fold and an empty delta, answers stay exact")
    func idleFold() throws {
        let d = try TestDaemon(bits: 32, m: 2)
        let c = try d.client()
        func figure(_ name: String) throws -> Int? { try statsOf(c)[name].flatMap { Int($0) } }
        let folds0 = try figure("folds") ?? -1
        var codes: [UInt32] = []
        try c.pipeline(count: 70_000, window: 2000, line: { i in
            let v = UInt32(truncatingIfNeeded: UInt64(i) &* 0x9E37_79B9_7F4A_7C15 >> 32)
            codes.append(v)
            return "ADD i\(i) CODE \(String(format: "%08x", v))"
        }) { _, r in #expect(r.isOK) }
        // 140,000 delta entries (2 tables): past 65,536 a table, under the bulk threshold.
        var folds = try figure("folds") ?? -1
        for _ in 0..<500 where folds == folds0 {
            usleep(20_000)
            folds = try figure("folds") ?? -1
        }
        #expect(folds == folds0 + 1)
        #expect(try figure("delta_entries") == 0)
        let q: UInt32 = 0x1234_5678
        let want = codes.map { ($0 ^ q).nonzeroBitCount }.sorted().prefix(10)
        guard let lines = listLines(try c.request("KNN 10 CODE \(String(format: "%08x", q))")) else {
            Issue.record("KNN did not answer a list"); return
        }
        #expect(lines.map { Int($0.split(separator: " ")[1])! } == Array(want))
    }

    @Test("a database opened with a delta past a sixteenth of the items (pending ids) is folded after a quiet second, with no write")
    func idleFoldAtStart() throws {
        let dir = NSTemporaryDirectory() + "gdh-e2e-idle-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Written by the store itself, inline folds only, the bulk threshold not reached: the
        // 70,000 items are above the stored tables' watermark, pending at the next open.
        var opts = StoreOptions(bits: 32, substrings: 2)
        opts.backgroundFolds = false
        let store = try HashStore(directory: dir, options: opts)
        let w = try CodeWidth(bits: 32)
        for start in stride(from: 0, to: 70_000, by: 10_000) {
            _ = try store.apply(try (start..<start + 10_000).map { i in
                let v = UInt32(truncatingIfNeeded: UInt64(i) &* 0x9E37_79B9_7F4A_7C15 >> 32)
                return .add(key: "p\(i)", code: try HammingCode(hex: String(format: "%08x", v), width: w))
            })
        }
        store.close()
        let d = try TestDaemon(bits: 32, m: 2, dir: dir)
        let c = try d.client()
        func figure(_ name: String) throws -> Int? { try statsOf(c)[name].flatMap { Int($0) } }
        let folds0 = try figure("folds") ?? -1
        var delta = try figure("delta_entries") ?? -1
        #expect(delta == 140_000)
        for _ in 0..<500 where delta != 0 {
            usleep(20_000)
            delta = try figure("delta_entries") ?? -1
        }
        #expect(delta == 0)
        #expect(try figure("folds") == folds0 + 1)
        #expect(try figure("items") == 70_000)
    }

    @Test("BACKUP under write load: the restored copy holds every write acknowledged before it, a prefix of the concurrent ones, and passes VERIFY")
    func backupUnderWriteLoad() throws {
        let d = try TestDaemon()
        let c = try d.client()
        try c.pipeline(count: 3000, window: 500, line: { "ADD a\($0) CODE \(hex64(UInt64($0) &* 0x9E37_79B9_7F4A_7C15))" }) { _, r in
            #expect(r.isOK)
        }
        // Another connection adds c0, c1, ... one at a time while the backup is taken.
        final class Load: @unchecked Sendable {
            let lock = NSLock()
            var acked = 0, stop = false
        }
        let load = Load()
        let writer = Thread {
            guard let w = try? d.client() else { return }
            var i = 0
            while !load.lock.withLock({ load.stop }) {
                guard (try? w.request("ADD c\(i) CODE \(hex64(UInt64(i) &+ 77))"))?.isOK == true else { break }
                i += 1
                load.lock.withLock { load.acked = i }
            }
        }
        writer.start()
        while load.lock.withLock({ load.acked }) < 20 { usleep(1000) }
        let path = d.dir + "-backup.mdb"
        defer { unlink(path) }
        let ackedBefore = load.lock.withLock { load.acked }
        let answer = try c.request("BACKUP \(path)")
        let ackedAfter = load.lock.withLock { load.acked }
        load.lock.withLock { load.stop = true }
        guard case .ok(let bytes) = answer else { Issue.record("BACKUP answered \(answer)"); return }
        #expect(Int(bytes) == Int((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? -1))
        // A second BACKUP to the same path is refused and leaves the file alone.
        guard case .error(let code, _) = try c.request("BACKUP \(path)") else { Issue.record("second BACKUP was accepted"); return }
        #expect(code == "BADREQUEST")
        while !writer.isFinished { usleep(1000) }
        d.stop()

        // Restore: the file as data.mdb of an empty directory.
        let restored = d.dir + "-restored"
        defer { try? FileManager.default.removeItem(atPath: restored) }
        try FileManager.default.createDirectory(atPath: restored, withIntermediateDirectories: false)
        try FileManager.default.copyItem(atPath: path, toPath: restored + "/data.mdb")
        let store = try HashStore(directory: restored)
        defer { store.close() }
        for i in 0..<3000 {
            #expect(store.get("a\(i)")?.hex == hex64(UInt64(i) &* 0x9E37_79B9_7F4A_7C15))
        }
        var j = 0
        while let code = store.get("c\(j)") {
            #expect(code.hex == hex64(UInt64(j) &+ 77))
            j += 1
        }
        #expect(j >= ackedBefore)
        #expect(j <= ackedAfter + 1)
        #expect(store.count == 3000 + j)
        #expect(try store.verify().items == 3000 + j)
    }
}
