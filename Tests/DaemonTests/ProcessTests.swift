import Foundation
import GDHClient
import HashStore
import Testing
import WireProtocol

/// A `gdhd` process on a temporary database and socket.
final class DaemonProcess {
    let dir: String
    let socket: String
    var process: Process?

    init(bits: Int = 64) throws {
        let id = UUID().uuidString.prefix(8)
        dir = NSTemporaryDirectory() + "gdh-proc-\(id)"
        socket = NSTemporaryDirectory() + "gdh-proc-\(id).sock"
        try start(bits: bits)
    }

    func start(bits: Int? = nil, environment: [String: String] = [:]) throws {
        let p = Process()
        p.executableURL = productsDirectory().appendingPathComponent("gdhd")
        p.arguments = ["--db", dir, "--socket", socket, "--log-level", "warning"] + (bits.map { ["--bits", String($0)] } ?? [])
        if !environment.isEmpty {
            p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        try p.run()
        process = p
        // Wait until it answers.
        for _ in 0..<200 {
            if let c = try? LineClient(socketPath: socket), (try? c.request("PING")) == .ok("PONG") { return }
            usleep(25_000)
        }
        throw ClientError("gdhd did not start")
    }

    func signal(_ sig: Int32) -> Int32 {
        guard let p = process else { return -1 }
        kill(p.processIdentifier, sig)
        p.waitUntilExit()
        process = nil
        return p.terminationStatus
    }

    deinit {
        if let p = process { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        try? FileManager.default.removeItem(atPath: dir)
        unlink(socket)
    }
}

/// Runs the `gdh` client; returns exit status, standard output and standard error.
func runClient(_ args: [String], stdin: String? = nil) throws -> (status: Int32, out: String, err: String) {
    try runProduct("gdh", args, stdin: stdin)
}

/// Runs a built executable (`gdh`, `gdh-db`, ...); returns exit status, standard output and
/// standard error.
func runProduct(_ name: String, _ args: [String], stdin: String? = nil) throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = productsDirectory().appendingPathComponent(name)
    p.arguments = args
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    if let stdin {
        let inp = Pipe()
        p.standardInput = inp
        try p.run()
        inp.fileHandleForWriting.write(Data(stdin.utf8))
        try inp.fileHandleForWriting.close()
    } else {
        try p.run()
    }
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

@Suite("gdhd and gdh as processes", .serialized)
struct ProcessTests {
    @Test("SIGKILL during a stream of ADDs loses no acknowledged write, and VERIFY passes")
    func killDuringWrites() throws {
        let d = try DaemonProcess(bits: 64)
        let client = try LineClient(socketPath: d.socket)
        var acked: [(String, String)] = []
        var sent: [(String, String)] = []
        var killed = false
        var i = 0
        outer: while true {
            for _ in 0..<200 {
                let code = hex64(UInt64(i) &* 0x2545_F491_4F6C_DD1D)
                client.send("ADD key-\(i) CODE \(code)")
                sent.append(("key-\(i)", code))
                i += 1
            }
            do { try client.flush() } catch { break }
            while client.awaiting > 100 {
                guard let r = try? client.receive() else { break outer }
                guard case .ok = r else { Issue.record("unexpected \(r)"); break outer }
                acked.append(sent[acked.count])
                if acked.count >= 3000 && !killed {
                    killed = true
                    _ = d.signal(SIGKILL)
                }
            }
        }
        #expect(killed)
        #expect(acked.count >= 3000)
        try d.start()
        let c = try LineClient(socketPath: d.socket)
        for (key, _) in acked { c.send("GET \(key)") }
        for (key, code) in acked {
            #expect(try c.receive() == .ok(code), "acknowledged \(key) was lost")
        }
        guard case .ok(let v) = try c.request("VERIFY") else { Issue.record("VERIFY failed"); return }
        let items = Int(v.split(separator: " ")[0]) ?? 0
        #expect(items >= acked.count && items <= sent.count)
    }

    @Test("SIGKILL during new keys, re-codes and deletes after a REBUILD: the ids above the tables' watermark (no pending record) are found after the restart without a rebuild, and VERIFY passes")
    func killAboveTheWatermark() throws {
        let d = try DaemonProcess(bits: 64)
        let code: (Int) -> String = { hex64(UInt64($0) &* 0x2545_F491_4F6C_DD1D) }
        let loader = try LineClient(socketPath: d.socket)
        try loader.pipeline(count: 3000, window: 500, line: { "ADD k\($0) CODE \(code($0))" }) { _, r in #expect(r.isOK) }
        #expect(okText(try loader.request("REBUILD")) != nil)
        var expected: [String: String?] = [:]
        for i in 0..<3000 { expected["k\(i)"] = .some(code(i)) }
        // New keys (above the watermark), re-codes and deletes of old keys (below it).
        let client = try LineClient(socketPath: d.socket)
        var sent: [(String, String?)] = []
        var acked = 0
        var i = 3000
        func take() -> Bool {
            guard let r = try? client.receive() else { return false }
            let (key, value) = sent[acked]
            // A DEL of a key already gone is answered as such; an ADD must succeed.
            if value != nil { #expect(r.isOK) }
            expected.updateValue(value, forKey: key)
            acked += 1
            return true
        }
        outer: while true {
            for _ in 0..<100 {
                switch i % 10 {
                case 3: sent.append(("k\(i % 3000)", code(i))); client.send("ADD k\(i % 3000) CODE \(code(i))")
                case 7: sent.append(("k\((i * 7) % 3000)", nil)); client.send("DEL k\((i * 7) % 3000)")
                default: sent.append(("n\(i)", code(i))); client.send("ADD n\(i) CODE \(code(i))")
                }
                i += 1
            }
            do { try client.flush() } catch { break }
            while client.awaiting > 100 {
                if !take() { break outer }
                if acked == 4000 { _ = d.signal(SIGKILL); break outer }
            }
        }
        // Answers the daemon wrote before it died; no more sends (the socket is dead).
        while client.awaiting > 0 && take() {}
        #expect(acked >= 4000)
        var maybe: [String: [String?]] = [:]
        for (key, value) in sent[acked...] { maybe[key, default: []].append(value) }
        try d.start()
        let c = try LineClient(socketPath: d.socket)
        // Loaded from the stored tables and the pending ids: no fold at the start.
        #expect(listLines(try c.request("STATS"))?.contains("folds 0") == true)
        let keys = Array(expected.keys)
        for k in keys { c.send("GET \(k)") }
        try c.flush()
        for k in keys {
            let r = try c.receive()
            let got: String? = if case .ok(let v) = r { v } else { nil }
            if let options = maybe[k] {
                #expect(got == expected[k]! || options.contains(got), "\(k) is \(String(describing: got))")
            } else {
                #expect(got == expected[k]!, "acknowledged \(k): \(String(describing: got))")
            }
        }
        #expect(okText(try c.request("VERIFY")) != nil)
    }

    @Test("SIGKILL during BACKUP: the backup file is absent or complete, the database intact, a retry succeeds")
    func killDuringBackup() throws {
        let d = try DaemonProcess(bits: 64)
        let n = 40_000
        let client = try LineClient(socketPath: d.socket)
        try client.pipeline(count: n, window: 2000, line: { "ADD k\($0) CODE \(hex64(UInt64($0) &* 0x2545_F491_4F6C_DD1D))" }) { _, r in
            #expect(r.isOK)
        }
        let dest = d.dir + "-backup.mdb"
        defer { unlink(dest); unlink(dest + ".partial") }
        var sawAbsent = false
        for delay in [0, 500, 2_000, 8_000, 30_000] as [UInt32] {
            unlink(dest)
            let c = try LineClient(socketPath: d.socket)
            c.send("BACKUP \(dest)")
            try c.flush()
            usleep(delay)
            _ = d.signal(SIGKILL)
            if FileManager.default.fileExists(atPath: dest) {
                // Linked into place only once complete and synced: it opens and holds every item.
                let restored = d.dir + "-restored"
                try? FileManager.default.removeItem(atPath: restored)
                try FileManager.default.createDirectory(atPath: restored, withIntermediateDirectories: false)
                defer { try? FileManager.default.removeItem(atPath: restored) }
                try FileManager.default.copyItem(atPath: dest, toPath: restored + "/data.mdb")
                let store = try HashStore(directory: restored)
                #expect(store.count == n)
                #expect(try store.verify().items == n)
                store.close()
            } else {
                sawAbsent = true
            }
            try d.start()
        }
        // The database is intact, and a backup after the kills (over any leftover .partial) succeeds.
        let c = try LineClient(socketPath: d.socket)
        guard case .ok(let v) = try c.request("VERIFY") else { Issue.record("VERIFY failed"); return }
        #expect(v == "\(n) 0")
        unlink(dest)
        guard case .ok = try c.request("BACKUP \(dest)") else { Issue.record("BACKUP after the kills failed"); return }
        #expect(!FileManager.default.fileExists(atPath: dest + ".partial"))
        // With no delay the kill lands before the copy is complete at least once.
        #expect(sawAbsent)
    }

    @Test("SIGKILL in each phase of COMPACT while writes go on: no acknowledged write lost, the database verifies")
    func killDuringCompact() throws {
        try killInPhases(of: "COMPACT", pause: "GDH_TEST_COMPACT_PAUSE",
                         phases: ["started", "copied", "caught-up", "replayed", "renamed"],
                         writesGoOn: ["started", "copied", "caught-up"])
    }

    @Test("SIGKILL in each phase of REBUILD (a fold beside the writes, its tables stored in chunks) while writes go on: no acknowledged write lost, the database verifies")
    func killDuringRebuild() throws {
        // Chunks of 16 KiB: each table of the 30,000 items is stored in several transactions.
        try killInPhases(of: "REBUILD", pause: "GDH_TEST_FOLD_PAUSE",
                         phases: ["copied", "built", "writing", "written", "switched"],
                         writesGoOn: ["copied", "built", "writing", "written", "switched"],
                         environment: ["GDH_TEST_TABLE_CHUNK_BYTES": "16384"],
                         twoGenerations: ["writing", "written", "switched"], marker: "fold-paused")
    }

    /// Starts `command` on a daemon whose environment variable `pause` makes it wait 1 s at
    /// a phase, writes (new keys, replacements, deletes) until a SIGKILL lands in that
    /// pause, restarts, and checks every acknowledged write and VERIFY; for each of
    /// `phases`. In the `writesGoOn` phases more than 1,000 writes must be acknowledged.
    /// `environment` is added to the paused daemon's. In the `twoGenerations` phases the
    /// kill must find chunks of two generations of stored tables, one of which the restart
    /// removes (so the kill landed between the first chunk written and the last deleted).
    /// With `marker` (a file the daemon creates in the database directory when it enters
    /// the pause) the kill lands 0.25 s after it appears instead of 0.25 s after the command.
    private func killInPhases(of command: String, pause: String, phases: [String], writesGoOn: Set<String>,
                              environment: [String: String] = [:], twoGenerations: Set<String> = [],
                              marker: String? = nil) throws {
        let d = try DaemonProcess(bits: 64)
        let n = 30_000
        let loader = try LineClient(socketPath: d.socket)
        try loader.pipeline(count: n, window: 2000, line: { "ADD k\($0) CODE \(hex64(UInt64($0) &* 0x2545_F491_4F6C_DD1D))" }) { _, r in
            #expect(r.isOK)
        }
        var expected: [String: String?] = [:]
        for i in 0..<n { expected["k\(i)"] = .some(hex64(UInt64(i) &* 0x2545_F491_4F6C_DD1D)) }
        var next = 0
        for phase in phases {
            _ = d.signal(SIGKILL)
            if let marker { unlink(d.dir + "/" + marker) }
            try d.start(environment: environment.merging([pause: phase]) { $1 })
            let admin = try LineClient(socketPath: d.socket)
            admin.send(command)
            try admin.flush()
            // The pause at the phase lasts 1 s from within a few ms of here: the kill
            // lands in it. Writes (new keys, replacements, deletes) go on until then; each
            // acknowledged one must survive.
            let pid = d.process!.processIdentifier
            if let marker {
                let path = d.dir + "/" + marker
                DispatchQueue.global().async {
                    for _ in 0..<3000 where !FileManager.default.fileExists(atPath: path) { usleep(10_000) }
                    // A quarter into the pause, as without a marker (0.75 s left for a late kill).
                    usleep(250_000)
                    kill(pid, SIGKILL)
                }
            } else {
                DispatchQueue.global().asyncAfter(deadline: .now() + 0.25) { kill(pid, SIGKILL) }
            }
            let w = try LineClient(socketPath: d.socket)
            var sent: [(String, String?)] = []
            var acked = 0
            func take() -> Bool {
                guard let r = try? w.receive(), r.isOK else { return false }
                acked += 1
                let (key, code) = sent[sent.count - w.awaiting - 1]
                expected.updateValue(code, forKey: key)
                return true
            }
            outer: while true {
                for _ in 0..<50 {
                    let r = next % 5
                    if r == 1, let victim = sent.last(where: { $0.1 != nil })?.0 {
                        w.send("DEL \(victim)"); sent.append((victim, nil))
                    } else {
                        let key = r == 0 ? "k\(next % n)" : "new\(next)"
                        let code = hex64(UInt64(next) &* 0x9E37_79B9_7F4A_7C15)
                        w.send("ADD \(key) CODE \(code)"); sent.append((key, code))
                    }
                    next += 1
                }
                do { try w.flush() } catch { break }
                while w.awaiting > 200 { if !take() { break outer } }
            }
            while w.awaiting > 0 && take() {}
            _ = d.signal(SIGKILL)
            if writesGoOn.contains(phase) { #expect(acked > 1000, "\(command) phase \(phase): \(acked) writes acknowledged") }
            // A write not acknowledged may or may not have been applied.
            var maybe: [String: [String?]] = [:]
            for (key, code) in sent.suffix(w.awaiting) { maybe[key, default: []].append(code) }
            let chunksAtKill = try tableChunks(d.dir)
            try d.start()
            if twoGenerations.contains(phase) {
                let after = try tableChunks(d.dir)
                #expect(chunksAtKill > after, "\(command) phase \(phase): \(chunksAtKill) chunks at the kill, \(after) after the restart")
            }
            #expect(!FileManager.default.fileExists(atPath: d.dir + "/data.mdb.compact"), "phase \(phase)")
            let c = try LineClient(socketPath: d.socket)
            guard case .ok(let v) = try c.request("VERIFY") else { Issue.record("VERIFY failed after a kill in \(command) \(phase)"); return }
            _ = v
            let keys = Array(expected.keys)
            for k in keys { c.send("GET \(k)") }
            try c.flush()
            for k in keys {
                let r = try c.receive()
                if let options = maybe[k] {
                    let got: String? = if case .ok(let v) = r { v } else { nil }
                    #expect(got == expected[k]! || options.contains(got), "\(command) phase \(phase): \(k) is \(String(describing: got))")
                    expected.updateValue(got, forKey: k)
                } else if let code = expected[k]! {
                    #expect(r == .ok(code), "\(command) phase \(phase): acknowledged \(k) lost")
                } else {
                    #expect(!r.isOK, "\(command) phase \(phase): deleted \(k) is back")
                }
            }
        }
        // Unpaused, the command completes under writes and leaves everything in place.
        _ = d.signal(SIGKILL)
        try d.start()
        let c = try LineClient(socketPath: d.socket)
        #expect(okText(try c.request(command)) != nil)
        #expect(okText(try c.request("VERIFY")) != nil)
    }

    /// The records in `tables` (chunks of stored tables), read beside the daemon if one runs.
    private func tableChunks(_ dir: String) throws -> Int {
        let store = try ReadOnlyStore(directory: dir)
        defer { store.close() }
        return try store.report().databases.first { $0.name == "tables" }?.entries ?? 0
    }

    @Test("SIGTERM answers what was read, commits, removes the socket and exits 0")
    func gracefulStop() throws {
        let d = try DaemonProcess(bits: 64)
        let raw = try RawSocket(path: d.socket)
        var script = ""
        for i in 0..<2000 { script += "ADD t\(i) CODE \(hex64(UInt64(i)))\n" }
        raw.send(script)
        usleep(100_000)
        #expect(d.signal(SIGTERM) == 0)
        #expect(!FileManager.default.fileExists(atPath: d.socket))
        // Every answered ADD is durable.
        let answers = raw.readToEnd().split(separator: "\n")
        try d.start()
        let c = try LineClient(socketPath: d.socket)
        for (i, a) in answers.enumerated() where a.hasPrefix("OK ") {
            #expect(try c.request("GET t\(i)") == .ok(hex64(UInt64(i))))
        }
        #expect(okText(try c.request("VERIFY")) != nil)
    }

    @Test("a second gdhd on the same database exits non-zero with a clear message")
    func secondDaemonRefused() throws {
        let d = try DaemonProcess()
        let p = Process()
        p.executableURL = productsDirectory().appendingPathComponent("gdhd")
        p.arguments = ["--db", d.dir, "--socket", d.socket + ".2"]
        let err = Pipe()
        p.standardError = err
        try p.run()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus != 0)
        #expect(text.contains("in use by another process"))
    }

    @Test("gdh verbs: output, JSON, exit status and messages")
    func clientVerbs() throws {
        let d = try DaemonProcess(bits: 64)
        let s = ["--socket", d.socket]
        #expect(try runClient(["ping"] + s).out == "PONG\n")
        #expect(try runClient(["add", "a", "00000000000000ff"] + s).out == "0\n")
        #expect(try runClient(["add", "b", "000000000000ffff"] + s).out == "1\n")
        #expect(try runClient(["get", "a"] + s).out == "00000000000000ff\n")
        #expect(try runClient(["knn", "0000000000000000", "-k", "5"] + s).out == "a 8\nb 16\n")
        #expect(try runClient(["range", "0000000000000000", "-r", "8"] + s).out == "a 8\n")
        let json = try runClient(["knn", "0000000000000000", "-k", "1", "--json"] + s).out
        #expect(json.contains("\"results\":[{\"distance\":8,\"key\":\"a\"}]"))
        let missing = try runClient(["get", "zz"] + s)
        #expect(missing.status == 1)
        #expect(missing.err.contains("ERR NOTFOUND"))
        let bad = try runClient(["add", "c", "123"] + s)
        #expect(bad.status == 1)
        #expect(bad.err.contains("ERR BADCODE"))
        #expect(try runClient(["del", "b"] + s).out == "1\n")
        #expect(try runClient(["rebuild", "--substrings", "4"] + s).out == "4\n")
        #expect(try runClient(["verify"] + s).out.hasPrefix("1 "))
        #expect(try runClient(["compact"] + s).status == 0)
        #expect(try runClient(["stats", "--json"] + s).out.contains("\"items\":1"))
        let noDaemon = try runClient(["ping", "--socket", d.socket + ".none"])
        #expect(noDaemon.status == 1)
        #expect(noDaemon.err.contains("cannot connect"))
        #expect(try runClient(["knn", "00", "-k", "0"] + s).status == 64)
    }

    @Test("gdh import: all lines or none")
    func importFile() throws {
        let d = try DaemonProcess(bits: 32)
        let s = ["--socket", d.socket]
        let bad = "k1 00000001\nk2 0000000\nk3 00000003\n"
        let r1 = try runClient(["import", "-"] + s, stdin: bad)
        #expect(r1.status == 1)
        #expect(r1.err.contains("line 2"))
        #expect(try runClient(["stats", "--json"] + s).out.contains("\"items\":0"))
        var good = "# a comment\n\n"
        for i in 0..<5000 { good += "key\(i) \(String(format: "%08x", i))\n" }
        let r2 = try runClient(["import", "-"] + s, stdin: good)
        #expect(r2.status == 0, "\(r2.err)")
        #expect(r2.out.hasPrefix("added 5000 codes"))
        #expect(try runClient(["get", "key4095"] + s).out == "00000fff\n")
    }
}
