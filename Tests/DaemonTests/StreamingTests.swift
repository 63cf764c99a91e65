import Foundation
import HammingCode
import Testing
@testable import Daemon

/// Large KNN and RANGE answers are written piece by piece (PROTOCOL.md section 6, "Large
/// answers"): the bytes must be those of the whole answer, the answer the store at the
/// query's instant, and what follows it on the connection must come after it.
@Suite("Streamed answers", .serialized)
struct StreamingTests {
    /// `n` items `item-<i>` with seeded random 64-bit codes, added over one pipelined connection.
    private func fill(_ d: TestDaemon, _ n: Int, seed: UInt64) throws -> [UInt64] {
        var rng = SplitMix64(seed: seed)
        let codes = (0..<n).map { _ in rng.next() }
        let raw = try RawSocket(path: d.socket)
        var script = ""
        for (i, c) in codes.enumerated() { script += "ADD item-\(i) CODE \(hex64(c))\n" }
        raw.send(script)
        let acks = raw.readLines(n)
        #expect(acks.count == n)
        #expect(acks.last == "OK \(n - 1)")
        return codes
    }

    /// The exact answer text of a brute-force scan: `(distance, id)` order, ids = indices.
    private func expected(_ codes: [UInt64?], query: UInt64, radius: Int = 64, k: Int = .max) -> String {
        var hits: [(Int, Int)] = []
        for (i, c) in codes.enumerated() {
            guard let c else { continue }
            let dist = (c ^ query).nonzeroBitCount
            if dist <= radius { hits.append((dist, i)) }
        }
        hits.sort { $0 < $1 }
        if hits.count > k { hits.removeLast(hits.count - k) }
        var out = "OK \(hits.count)\n"
        for (dist, i) in hits { out += "item-\(i) \(dist)\n" }
        return out
    }

    @Test("a RANGE and a KNN far above the streaming threshold equal a scan byte for byte; PING after them comes last")
    func sameBytes() throws {
        let d = try TestDaemon(bits: 64)
        let n = 30_000
        let codes = try fill(d, n, seed: 7)
        let q: UInt64 = 0x0123_4567_89ab_cdef
        let raw = try RawSocket(path: d.socket)
        raw.send("RANGE 64 CODE \(hex64(q))\nKNN 12345 CODE \(hex64(q))\nRANGE 29 CODE \(hex64(q))\nPING\n")
        raw.shutdownWrite()
        let all = raw.readToEnd()
        let want = expected(codes, query: q) + expected(codes, query: q, k: 12345)
            + expected(codes, query: q, radius: 29) + "OK PONG\n"
        #expect(all.utf8.count == want.utf8.count)
        #expect(all == want)
    }

    /// A client that asked for every item (`RANGE 64` around `q`) and read only the count
    /// line, one byte at a time so that nothing after it is consumed: the rest of the
    /// answer waits in the daemon.
    private func unreadAnswer(_ d: TestDaemon, query q: UInt64, count n: Int) throws -> RawSocket {
        let slow = try RawSocket(path: d.socket)
        slow.send("RANGE 64 CODE \(hex64(q))\n")
        var first = [UInt8]()
        var byte: UInt8 = 0
        while first.last != 0x0A, read(slow.fd, &byte, 1) == 1 { first.append(byte) }
        #expect(String(decoding: first, as: UTF8.self) == "OK \(n)\n")
        return slow
    }

    @Test("deletes and adds while a client has not read its streamed answer do not change that answer")
    func snapshot() throws {
        let d = try TestDaemon(bits: 64)
        // About 2 MB of answer: far more than the socket and channel buffers hold, so most
        // of it is still to be written when the writes below are acknowledged.
        let n = 150_000
        var codes: [UInt64?] = try fill(d, n, seed: 11)
        let q: UInt64 = 0
        let want = expected(codes, query: q)
        let slow = try unreadAnswer(d, query: q, count: n)
        // Delete the items the answer lists last (the farthest), and add nearer ones.
        let far = codes.indices.filter { (codes[$0]! ^ q).nonzeroBitCount >= 38 }
        #expect(far.count > 1000)
        let writer = try RawSocket(path: d.socket)
        var script = ""
        for i in far { script += "DEL item-\(i)\n" }
        for j in 0..<1000 { script += "ADD new-\(j) CODE \(hex64(UInt64(j)))\n" }
        writer.send(script)
        let acks = writer.readLines(far.count + 1000)
        #expect(acks.count == far.count + 1000)
        #expect(acks.prefix(far.count).allSatisfy { $0 == "OK 1" })
        // Now read the rest of the answer: it is the store before those writes.
        slow.send("PING\n")
        slow.shutdownWrite()
        let rest = slow.readToEnd()
        #expect("OK \(n)\n" + rest == want + "OK PONG\n")
        // A new query sees the writes.
        for i in far { codes[i] = nil }
        let now = try RawSocket(path: d.socket)
        now.send("RANGE 64 CODE \(hex64(q))\n")
        now.shutdownWrite()
        let after = now.readToEnd()
        #expect(after.hasPrefix("OK \(n - far.count + 1000)\n"))
        #expect(after.contains("new-999 "))
        #expect(!after.contains("item-\(far[0]) "))
    }

    @Test("deleting nearly every item while an answer is unread (garbage enough to reclaim keys) does not change it; the keys are reclaimed once it is out")
    func snapshotAcrossReclaim() throws {
        let d = try TestDaemon(bits: 64)
        let n = 150_000
        var codes: [UInt64?] = try fill(d, n, seed: 13)
        let q: UInt64 = 0
        let want = expected(codes, query: q)
        let slow = try unreadAnswer(d, query: q, count: n)
        // 140,000 deletes: their keys' bytes and id entries outweigh the keys left, so the
        // key index reclaims after the batches, but must keep what the pinned answer needs.
        let writer = try RawSocket(path: d.socket)
        var script = ""
        for i in 10_000..<n { script += "DEL item-\(i)\n" }
        writer.send(script)
        #expect(writer.readLines(n - 10_000).allSatisfy { $0 == "OK 1" })
        let keyMemory = { () throws -> Int in
            let lines = listLines(try d.client().request("STATS")) ?? []
            return lines.first { $0.hasPrefix("key_memory_bytes ") }.flatMap { Int($0.split(separator: " ")[1]) } ?? -1
        }
        let pinned = try keyMemory()
        slow.send("PING\n")
        slow.shutdownWrite()
        #expect("OK \(n)\n" + slow.readToEnd() == want + "OK PONG\n")
        // The answer is out (its pin dropped): the batches that follow let the reclaim drop
        // them (a reclaim goes a piece a batch; one begun under the pin keeps them, the next
        // one drops them).
        writer.send("DEL item-0\n")
        #expect(writer.readLines(1) == ["OK 1"])
        var batches = 1
        while try keyMemory() >= pinned / 2 && batches < 40 {
            writer.send("DEL item-\(batches)\n")
            #expect(writer.readLines(1) == ["OK 1"])
            batches += 1
        }
        #expect(try keyMemory() < pinned / 2, "after \(batches) batches")
        for i in 10_000..<n { codes[i] = nil }
        for i in 0..<batches { codes[i] = nil }
        let now = try RawSocket(path: d.socket)
        now.send("RANGE 64 CODE \(hex64(q))\n")
        now.shutdownWrite()
        #expect(now.readToEnd() == expected(codes, query: q))
    }

    @Test("a client that leaves in the middle of a streamed answer, and one that never reads, do not stop the daemon")
    func abandoned() throws {
        let d = try TestDaemon(bits: 64)
        _ = try fill(d, 100_000, seed: 3)
        do {
            let gone = try RawSocket(path: d.socket)
            gone.send("RANGE 64 CODE 0000000000000000\nPING\n")
            #expect(gone.readLines(1) == ["OK 100000"])
        }   // closed here, most of the answer unread
        let stuck = try RawSocket(path: d.socket)
        stuck.send("RANGE 64 CODE 0000000000000000\nKNN 100000 CODE ffffffffffffffff\n")
        let c = try d.client()
        #expect(okText(try c.request("PING")) == "PONG")
        #expect(okText(try c.request("ADD late CODE 0000000000000001")) == "100000")
        // Stopping writes the unread answers out without waiting for the reader.
        let started = Date()
        d.stop()
        #expect(Date().timeIntervalSince(started) < 20)
        _ = stuck
    }
}
