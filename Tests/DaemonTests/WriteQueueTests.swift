import Foundation
import HammingCode
import HashStore
import Logging
import Testing
@testable import Daemon

@Suite("WriteQueue: the writer's batching rule")
struct WriteQueueTests {
    /// Jobs: positive numbers are writes, negative ones admin jobs.
    private func queue(_ jobs: [Int]) -> WriteQueue<Int> {
        var q = WriteQueue<Int>(isAdmin: { $0 < 0 })
        for j in jobs { q.push(j) }
        return q
    }

    @Test("writes go in bounded batches; an admin job runs alone, in its place")
    func batches() {
        var q = queue([1, 2, 3, -1, -2, 4, 5, 6, 7, 8])
        #expect(q.take(maxBatch: 8) == [1, 2, 3])
        #expect(q.take(maxBatch: 8) == [-1])
        #expect(q.take(maxBatch: 8) == [-2])
        #expect(q.take(maxBatch: 3) == [4, 5, 6])
        #expect(q.take(maxBatch: 3) == [7, 8])
        #expect(q.isEmpty)
        #expect(q.take(maxBatch: 3) == [])
    }

    @Test("jobs pushed together are taken whole, split at maxBatch, merged with later ones, and split at admin jobs")
    func groups() {
        var q = WriteQueue<Int>(isAdmin: { $0 < 0 })
        q.push(contentsOf: [1, 2, 3, 4, 5])
        q.push(contentsOf: [6, 7])
        q.push(contentsOf: [8, -1, 9])
        q.push(10)
        #expect(q.take(maxBatch: 3) == [1, 2, 3])
        #expect(q.take(maxBatch: 3) == [4, 5, 6])
        #expect(q.take(maxBatch: 8) == [7, 8])
        #expect(q.take(maxBatch: 8) == [-1])
        #expect(q.take(maxBatch: 8) == [9, 10])
        #expect(q.isEmpty)
        q.push(contentsOf: [])
        #expect(q.isEmpty)
        q.push(contentsOf: [11, 12])
        #expect(q.take(maxBatch: 2) == [11, 12])
        #expect(q.take(maxBatch: 2) == [])
    }

    @Test("random queues: order kept, every batch admin-alone or 1...max writes, nothing lost")
    func random() {
        var rng = SplitMix64(seed: 3)
        for _ in 0..<300 {
            let n = Int(rng.next() % 100)
            let jobs = (0..<n).map { i in rng.next() % 7 == 0 ? -(i + 1) : i + 1 }
            let maxBatch = 1 + Int(rng.next() % 10)
            var q = queue([])
            var taken: [Int] = []
            var pushed = 0
            while taken.count < n {
                // Interleave arrivals (one job, or several pushed together) and takes.
                let arrivals = Int(rng.next() % 5)
                if rng.next() % 2 == 0 {
                    let end = min(n, pushed + arrivals)
                    q.push(contentsOf: Array(jobs[pushed..<end]))
                    pushed = end
                } else {
                    for _ in 0..<arrivals where pushed < n { q.push(jobs[pushed]); pushed += 1 }
                }
                let batch = q.take(maxBatch: maxBatch)
                if batch.isEmpty { #expect(q.isEmpty); if pushed == n { break }; continue }
                if batch[0] < 0 { #expect(batch.count == 1) } else {
                    #expect(batch.count <= maxBatch)
                    #expect(batch.allSatisfy { $0 > 0 })
                    // A batch stops short of the limit only at an admin job or the end of the queue.
                    if batch.count < maxBatch, let next = q.isEmpty ? nil : q.take(maxBatch: 1).first {
                        #expect(next < 0)
                        taken += batch + [next]
                        continue
                    }
                }
                taken += batch
            }
            #expect(taken == jobs)
        }
    }
}

@Suite("Writer thread")
struct WriterThreadTests {
    @Test("a key index reclaim begun by deletes finishes while no write comes")
    func idleReclaim() throws {
        let dir = NSTemporaryDirectory() + "gdh-writer-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try HashStore(directory: dir, options: StoreOptions(bits: 64))
        defer { store.close() }
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let writer = Writer(store: store, logger: logger)
        writer.start()
        defer { writer.drainAndStop() }
        let w = try CodeWidth(bits: 64)
        var rng = SplitMix64(seed: 8)
        let pad = String(repeating: "r", count: 120)
        let n = 300_000
        _ = try store.apply((0..<n).map { .add(key: "\(pad)-\($0)", code: SyntheticCodes.random(w, using: &rng)) })
        let before = store.keyReclaims
        // A batch of deletes starts a reclaim; one write through the writer takes its next
        // piece, and nothing comes after it.
        _ = try store.apply((1000..<n).map { .delete(key: "\(pad)-\($0)") })
        #expect(store.reclaimUnderWay)
        let done = DispatchSemaphore(value: 0)
        #expect(writer.submit(.write(.add(key: "x", code: SyntheticCodes.random(w, using: &rng)), .callback { _ in done.signal() })))
        done.wait()
        let deadline = Date().addingTimeInterval(10)
        while store.keyReclaims == before && Date() < deadline { usleep(10_000) }
        #expect(store.keyReclaims > before)
        #expect(!store.reclaimUnderWay)
        #expect(store.id(of: "\(pad)-999") == 999 && store.id(of: "\(pad)-1000") == nil)
    }
}
