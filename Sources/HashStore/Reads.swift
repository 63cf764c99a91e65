import CLMDB
import Foundation
import HammingCode
import MultiIndex
#if canImport(Glibc)
import Glibc
#endif

extension HashStore {
    // MARK: - Reads (any thread)

    /// The K nearest items: (key, distance), nearest first, ties by id.
    public func knn(_ query: HammingCode, k: Int, stats: inout SearchStats) -> [(key: String, distance: Int)] {
        rw.withReadLock {
            index.knn(query, k: k, stats: &stats).map { (keys.key($0.id) ?? "", $0.distance) }
        }
    }

    /// Every item within distance ≤ r: (key, distance), nearest first, ties by id.
    public func range(_ query: HammingCode, radius: Int, stats: inout SearchStats) -> [(key: String, distance: Int)] {
        rw.withReadLock {
            index.range(query, radius: radius, stats: &stats).map { (keys.key($0.id) ?? "", $0.distance) }
        }
    }

    /// `knn` as packed results `distance << 32 | id`, ascending (8 bytes a result): the
    /// form a large answer is kept in while it is written out with `forEachKey`.
    public func knnPacked(_ query: HammingCode, k: Int, stats: inout SearchStats) -> [UInt64] {
        rw.withReadLock { index.knnPacked(query, k: k, stats: &stats) }
    }

    /// `range` as packed results `distance << 32 | id`, ascending.
    public func rangePacked(_ query: HammingCode, radius: Int, stats: inout SearchStats) -> [UInt64] {
        rw.withReadLock { index.rangePacked(query, radius: radius, stats: &stats) }
    }

    /// Hands `body` the key and distance of each packed result in turn, under the read
    /// lock, until it returns false; returns how many it accepted. The key bytes are valid
    /// only during the call. An id names one key for its whole life, and a deleted id still
    /// resolves to the key it had, so results taken earlier come out as they were found.
    public func forEachKey(of results: ArraySlice<UInt64>, _ body: (UnsafeBufferPointer<UInt8>, Int) -> Bool) -> Int {
        rw.withReadLock {
            var done = 0
            for r in results {
                let go = keys.withKeyBytes(ofAnyID: UInt32(truncatingIfNeeded: r)) { body($0, Int(r >> 32)) }
                if !go { break }
                done += 1
            }
            return done
        }
    }

    /// The code stored under a key (a value: it outlives the lock).
    public func get(_ key: String) -> HammingCode? {
        rw.withReadLock { keys.lookup(key).flatMap { index.codes.code($0) } }
    }

    /// The id of a key.
    public func id(of key: String) -> UInt32? {
        rw.withReadLock { keys.lookup(key) }
    }

    public var count: Int { rw.withReadLock { index.count } }

    /// Codes a linear scan reads: the live items plus the holes deletes have left since the
    /// last fold (a fold compacts them away once they pass the fold threshold).
    public var scanPositions: Int { rw.withReadLock { index.codes.positionCount } }

    /// The planner mode used by searches.
    public var planner: PlannerMode {
        get { rw.withReadLock { index.planner } }
        set { rw.withWriteLock { index.planner = newValue } }
    }

    /// Named figures for STATS.
    public func statistics() -> [(String, String)] {
        rw.withReadLock {
            [
                ("bits", String(width.bits)),
                ("items", String(index.count)),
                ("substrings", String(index.m)),
                ("substrings_setting", index.fixedM.map { String($0) } ?? "auto"),
                ("delta_entries", String(index.deltaEntries)),
                ("next_id", String(nextID)),
                ("file_bytes", String(HashStore.fileSize(dataPath))),
                ("map_bytes", String(mapBytes)),
                ("commits", String(commits)),
                ("folds", String(folds)),
                ("key_memory_bytes", String(keys.memoryBytes)),
            ]
        }
    }
}
