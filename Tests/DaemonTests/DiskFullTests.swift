import Foundation
import GDHClient
import Testing
import WireProtocol

/// `gdhd` under a file size limit (RLIMIT_FSIZE, with SIGXFSZ ignored so that a write past
/// it fails with EFBIG, or comes up short, instead of killing the process): the data file
/// runs out of room as on a full disk, without root, a mount or a quota. `prlimit`
/// (util-linux) sets the limit and later raises it on the running daemon.
private let prlimitPath = "/usr/bin/prlimit"

@Suite("A full disk", .serialized, .enabled(if: FileManager.default.isExecutableFile(atPath: prlimitPath)))
struct DiskFullTests {
    @Test("a write with no room for the data file answers ERR DISKFULL; reads go on, nothing acknowledged is lost, writes resume once there is room")
    func fileSizeLimit() throws {
        let id = UUID().uuidString.prefix(8)
        let dir = NSTemporaryDirectory() + "gdh-full-\(id)"
        let socket = NSTemporaryDirectory() + "gdh-full-\(id).sock"
        defer {
            try? FileManager.default.removeItem(atPath: dir)
            unlink(socket)
        }
        let gdhd = productsDirectory().appendingPathComponent("gdhd").path
        let limit = 2 << 20
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "trap '' XFSZ; exec \(prlimitPath) --fsize=\(limit):unlimited -- \"$0\" \"$@\"",
                       gdhd, "--db", dir, "--socket", socket, "--log-level", "critical", "--bits", "64"]
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
        let client = try connect(socket)

        // ADDs with long keys until the data file has no room left.
        let pad = String(repeating: "k", count: 200)
        var sent: [(String, String)] = []
        var acked: [(String, String)] = []
        var refusal: Response?
        var answered = 0
        var i = 0
        while refusal == nil && i < 200_000 {
            for _ in 0..<100 {
                let key = "\(pad)-\(i)", code = hex64(UInt64(i) &* 0x2545_F491_4F6C_DD1D)
                client.send("ADD \(key) CODE \(code)")
                sent.append((key, code))
                i += 1
            }
            try client.flush()
            // A batch after a refused one may still fit (LMDB reuses free pages): every OK
            // is an acknowledged write.
            while client.awaiting > 0 {
                let r = try client.receive()
                if case .ok = r { acked.append(sent[answered]) } else if refusal == nil { refusal = r }
                answered += 1
            }
        }
        guard case .error(let code, let message)? = refusal else {
            Issue.record("no write was refused under a \(limit)-byte file size limit (\(acked.count) acknowledged)")
            return
        }
        #expect(code == "DISKFULL", "a full disk answered \(code) \(message)")
        #expect(!message.isEmpty)
        #expect(acked.count > 100)

        // Reads go on; writes are still refused while there is no room.
        for (key, code) in acked.suffix(50) { #expect(try client.request("GET \(key)") == .ok(code)) }
        #expect(try client.request("PING") == .ok("PONG"))
        switch try client.request("ADD \(pad)-again CODE 00000000000000ff") {
        case .error(let again, _): #expect(again == "DISKFULL")
        case .ok: acked.append(("\(pad)-again", "00000000000000ff"))
        case let other: Issue.record("unexpected \(other)")
        }

        // Room again (the limit lifted on the running daemon): writes resume.
        let raise = Process()
        raise.executableURL = URL(fileURLWithPath: prlimitPath)
        raise.arguments = ["--pid", String(p.processIdentifier), "--fsize=unlimited"]
        try raise.run()
        raise.waitUntilExit()
        #expect(raise.terminationStatus == 0)
        guard case .ok = try client.request("ADD after-room CODE 00000000000000ff") else {
            Issue.record("writes did not resume once there was room")
            return
        }
        acked.append(("after-room", "00000000000000ff"))

        // Nothing acknowledged was lost: a daemon started afresh on the files has every
        // acknowledged item, and VERIFY passes.
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let q = Process()
        q.executableURL = URL(fileURLWithPath: gdhd)
        q.arguments = ["--db", dir, "--socket", socket, "--log-level", "critical"]
        try q.run()
        defer { kill(q.processIdentifier, SIGKILL); q.waitUntilExit() }
        let c = try connect(socket)
        for (key, _) in acked { c.send("GET \(key)") }
        try c.flush()
        for (key, code) in acked {
            #expect(try c.receive() == .ok(code), "acknowledged \(key) was lost")
        }
        guard case .ok(let v) = try c.request("VERIFY") else { Issue.record("VERIFY failed"); return }
        #expect(Int(v.split(separator: " ")[0]) == acked.count)
    }

    private func connect(_ socket: String) throws -> LineClient {
        for _ in 0..<200 {
            if let c = try? LineClient(socketPath: socket), (try? c.request("PING")) == .ok("PONG") { return c }
            usleep(25_000)
        }
        throw ClientError("gdhd did not start")
    }
}
