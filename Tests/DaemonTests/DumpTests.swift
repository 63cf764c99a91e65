import Foundation
import GDHClient
import Testing
import WireProtocol

/// Sends the lines and reads their answers, pipelined 500 at a time.
private func pipelined(_ client: LineClient, _ lines: [String]) throws -> [Response] {
    var answers: [Response] = []
    for start in stride(from: 0, to: lines.count, by: 500) {
        let part = lines[start..<min(lines.count, start + 500)]
        for l in part { client.send(l) }
        try client.flush()
        for _ in part { answers.append(try client.receive()) }
    }
    return answers
}

/// The keys whose code differs between the expected map and what the daemon answers
/// (missing keys included).
private func differences(_ client: LineClient, _ want: [String: String]) throws -> [String] {
    let keys = want.keys.sorted()
    let got = try pipelined(client, keys.map { "GET \($0)" })
    return zip(keys, got).compactMap { key, r in r == .ok(want[key]!) ? nil : key }
}

private func statsValue(_ client: LineClient, _ name: String) throws -> String? {
    guard case .list(let lines) = try client.request("STATS") else { return nil }
    return lines.first { $0.hasPrefix(name + " ") }.map { String($0.dropFirst(name.count + 1)) }
}

private func inspectJSON(_ dir: String) throws -> [String: Any] {
    let r = try runProduct("gdh-db", ["inspect", "--json", dir])
    #expect(r.status == 0, "\(r.err)")
    return (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any]) ?? [:]
}

@Suite("gdh dump and gdh inspect (gdh-db) beside gdhd", .serialized)
struct DumpTests {
    @Test("a dump taken while gdhd runs, imported into a fresh gdhd, gives every key the same code")
    func dumpImportRoundTrip() throws {
        let a = try DaemonProcess(bits: 64)
        let client = try LineClient(socketPath: a.socket)
        // Keys in several scripts; some deleted, some replaced, one deleted and added again
        // (a new id, so it comes later in the dump).
        let scripts = ["кот", "猫", "γάτα", "🐱", "cat", "ü-straße", "k#1", "#k"]
        var want: [String: String] = [:]
        var lines: [String] = []
        var nextID = 0
        func add(_ key: String, _ code: String) {
            lines.append("ADD \(key) CODE \(code)")
            if want[key] == nil { nextID += 1 }
            want[key] = code
        }
        for i in 0..<3000 {
            add("\(scripts[i % scripts.count])-\(i)", hex64(UInt64(i + 1) &* 0x9E37_79B9_7F4A_7C15))
        }
        for i in stride(from: 0, to: 3000, by: 7) {
            let key = "\(scripts[i % scripts.count])-\(i)"
            lines.append("DEL \(key)")
            want[key] = nil
        }
        // Replacements; those of deleted keys add them again with new ids.
        for i in stride(from: 1, to: 3000, by: 5) {
            add("\(scripts[i % scripts.count])-\(i)", hex64(UInt64(i) &* 0xD1B5_4A32_D192_ED03))
        }
        add("кот-0", "ffffffffffffffff")
        for r in try pipelined(client, lines) {
            guard case .ok = r else { Issue.record("unexpected \(r)"); return }
        }
        #expect(try differences(client, want).isEmpty)

        // The dump, while the daemon runs and a client keeps asking it.
        let dump = NSTemporaryDirectory() + "gdh-dump-\(UUID().uuidString.prefix(8)).txt"
        defer { unlink(dump) }
        let d = try runProduct("gdh-db", ["dump", a.dir, "--out", dump])
        #expect(d.status == 0, "\(d.err)")
        #expect(d.out == "wrote \(want.count) items to \(dump)\n")
        #expect(try client.request("PING") == .ok("PONG"))
        let text = try String(contentsOfFile: dump, encoding: .utf8)
        #expect(text.hasPrefix("#gdh-dump 1\n"))
        #expect(text.split(separator: "\n").count == want.count + 1)
        #expect(text.hasSuffix("кот-0 ffffffffffffffff\n"), "the re-added key has the newest id")
        let inspectA = try inspectJSON(a.dir)
        #expect(inspectA["items"] as? Int == want.count)
        #expect(inspectA["next_id"] as? Int == nextID)
        #expect(inspectA["lock_file"] as? Bool == true)

        // Restore into a fresh daemon with `gdh import`, and compare every key.
        let b = try DaemonProcess(bits: 64)
        let imported = try runClient(["import", "--socket", b.socket, dump])
        #expect(imported.status == 0, "\(imported.err)")
        let clientB = try LineClient(socketPath: b.socket)
        #expect(try differences(clientB, want).isEmpty)
        #expect(try statsValue(clientB, "items") == String(want.count))
        #expect(try statsValue(client, "items") == String(want.count))
        // The restored database dumps to the same lines (its ids were given in dump order),
        // and inspect counts the same items.
        let again = try runProduct("gdh-db", ["dump", b.dir])
        #expect(again.status == 0)
        #expect(again.out == text)
        let inspectB = try inspectJSON(b.dir)
        #expect(inspectB["items"] as? Int == want.count)
        #expect(inspectB["next_id"] as? Int == want.count)

        // The comparison is not vacuous: one key lost on the restored side is found.
        let lost = want.keys.sorted()[want.count / 2]
        #expect(try clientB.request("DEL \(lost)") == .ok("1"))
        #expect(try differences(clientB, want) == [lost])
    }

    @Test("gdh-db: usage errors exit 64, a directory without a database exits 1 and gets no file, `#` keys come back through gdh import")
    func errorsAndMessages() throws {
        let missing = try runProduct("gdh-db", ["inspect"])
        #expect(missing.status == 64)
        #expect(missing.err.contains("Usage: gdh inspect"))
        let empty = NSTemporaryDirectory() + "gdh-empty-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: empty) }
        for verb in ["inspect", "dump"] {
            let r = try runProduct("gdh-db", [verb, empty])
            #expect(r.status == 1)
            #expect(r.err == "gdh \(verb): \(empty) holds no gdh database (no data.mdb)\n")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: empty).isEmpty)
        let nowhere = try runProduct("gdh-db", ["dump", empty + "/nope"])
        #expect(nowhere.status == 1 && nowhere.err.hasPrefix("gdh dump: "))
        #expect(!FileManager.default.fileExists(atPath: empty + "/nope"))

        let a = try DaemonProcess(bits: 64)
        let client = try LineClient(socketPath: a.socket)
        #expect(try client.request("ADD #hash CODE 00000000000000ff") == .ok("0"))
        #expect(try client.request("ADD plain CODE 000000000000ff00") == .ok("1"))
        let r = try runProduct("gdh-db", ["dump", a.dir])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out == "#gdh-dump 1\n#hash 00000000000000ff\nplain 000000000000ff00\n")
        // The key that begins with `#` comes back through gdh import.
        let file = NSTemporaryDirectory() + "gdh-dump-\(UUID().uuidString.prefix(8)).txt"
        defer { unlink(file) }
        try r.out.write(toFile: file, atomically: true, encoding: .utf8)
        let b = try DaemonProcess(bits: 64)
        #expect(try runClient(["import", "--socket", b.socket, file]).status == 0)
        let clientB = try LineClient(socketPath: b.socket)
        #expect(try clientB.request("GET #hash") == .ok("00000000000000ff"))
        #expect(try clientB.request("GET plain") == .ok("000000000000ff00"))
        #expect(try runProduct("gdh-db", ["dump", a.dir, "--out", a.dir + "/dump.txt"]).status == 64)
        let tables = try runProduct("gdh-db", ["dump", "--tables", a.dir])
        #expect(tables.status == 0)
        #expect(tables.out.hasPrefix("tables "))
        #expect(tables.out.contains("pending "))
        let inspect = try runProduct("gdh-db", ["inspect", a.dir])
        #expect(inspect.status == 0)
        #expect(inspect.out.hasPrefix("format 1\nbits 64\nitems 2\nnext_id 2\n"))
    }
}
