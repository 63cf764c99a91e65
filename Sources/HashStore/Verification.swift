import CLMDB
import Foundation
import HammingCode
import MultiIndex
#if canImport(Glibc)
import Glibc
#endif

extension HashStore {
    /// Checks that stored items, stored tables and the mirror agree. Returns the item
    /// count and the stale table entries awaiting a rebuild; throws `.corrupt`.
    ///
    /// It reads a snapshot while writes go on: under the writer lock, for a moment, it
    /// opens a read transaction and starts recording the ids that writes change from then
    /// on (`verifyChanged`). The stored side is that transaction; the mirror is compared
    /// for every item no write has changed since, in chunks under the read lock (a changed
    /// item's mirror entry is newer than the snapshot, and its stored record is taken from
    /// the snapshot where the tables need it). The mirror's own check runs at the end in
    /// pieces under the read lock (`MultiIndex.checkStep`). A COMPACT waits for a running VERIFY, so that
    /// the environment is not swapped under the snapshot.
    public func verify() throws -> (items: Int, stale: Int) {
        compactLock.lock()
        defer { compactLock.unlock() }
        writerLock.lock()
        var holdsWriterLock = true
        defer {
            if holdsWriterLock { writerLock.unlock() }
            rw.withWriteLock { verifyChanged = nil }
        }
        try growMapAhead()
        do {
            return try envSwap.withReadLock { try env.read { txn in
                let (count, keyCount) = rw.withWriteLock { () -> (Int, Int) in
                    verifyChanged = []
                    return (index.count, keys.count)
                }
                writerLock.unlock()
                holdsWriterLock = false
                let stored = try txn.count(dbItems)
                guard stored == count else {
                    throw StoreError.corrupt("\(stored) items stored but \(count) in the index")
                }
                guard keyCount == stored else {
                    throw StoreError.corrupt("\(stored) items stored but \(keyCount) keys in the key index")
                }
                let pending = try storedPending(txn)
                let notPending = try verifyItems(txn, pending: pending)
                let stale = try verifyStoredTables(txn, pending: pending, notPending: notPending)
                // The mirror's own check, in pieces: writes go on between them.
                var progress = MultiIndex.CheckProgress()
                while try !rw.withReadLock({ try index.checkStep(&progress, budget: 1 << 16) }) {}
                return (stored, max(stale, progress.staleEntries))
            } }
        } catch let e as StoreError {
            throw e
        } catch let e as MultiIndex.Inconsistency {
            throw StoreError.corrupt(e.description)
        } catch {
            throw StoreError.storage(error, "verify could not read the database", dataPath: dataPath)
        }
    }

    /// The pending ids of the snapshot (`PendingIDs`): the records of `pending`, and every
    /// id from the watermark on. `corrupt` for a watermark that is not an id or lies past
    /// `next_id` (ids given out later would be taken as covered by the tables).
    private func storedPending(_ txn: Transaction) throws -> StoredPending {
        var explicit = Set<UInt32>()
        try txn.forEach(dbPending) { k, _ in
            guard k.count == 4 else { throw StoreError.corrupt("a key of \(k.count) bytes in pending") }
            explicit.insert(k.loadUnaligned(as: UInt32.self))
        }
        let watermark = try PendingIDs.watermark(txn, meta: dbMeta)
        if let watermark {
            guard let text = try txn.getString(dbMeta, "next_id"), let next = UInt32(text), watermark <= next else {
                throw StoreError.corrupt("meta \(PendingIDs.watermarkKey) \(watermark) is past next_id")
            }
        }
        return StoredPending(explicit: explicit, watermark: watermark ?? UInt32.max)
    }

    /// The pending ids of a snapshot: the records, and every id from `watermark` on.
    struct StoredPending {
        let explicit: Set<UInt32>
        let watermark: UInt32

        func contains(_ id: UInt32) -> Bool { id >= watermark || explicit.contains(id) }
    }

    /// Every stored item is well formed and, unless a write changed it since the snapshot,
    /// has the mirror's code and a key that leads back to it. Compared a chunk at a time
    /// under the read lock. Returns the items not pending.
    private func verifyItems(_ txn: Transaction, pending: StoredPending) throws -> Int {
        let bytes = width.bytes
        var notPending = 0
        // Record pointers stay valid for the transaction.
        var chunk: [(UInt32, UnsafeRawBufferPointer)] = []
        chunk.reserveCapacity(4096)
        func checkChunk() throws {
            try rw.withReadLock {
                for (id, v) in chunk where !verifyChanged!.contains(id) {
                    guard index.codes.code(id) == (try? HammingCode(bytes: v[0..<bytes], width: width)) else {
                        throw StoreError.corrupt("item \(id) differs between the store and the index")
                    }
                    guard keys.lookup(v[bytes...]) == id else {
                        throw StoreError.corrupt("item \(id)'s key does not lead back to it")
                    }
                }
            }
            chunk.removeAll(keepingCapacity: true)
        }
        try txn.forEach(dbItems) { k, v in
            let id = k.loadUnaligned(as: UInt32.self)
            guard (try? ItemRecord.decode(key: k, value: v, width: width)) != nil else {
                throw StoreError.corrupt("item \(id) has a malformed record")
            }
            if !pending.contains(id) { notPending += 1 }
            chunk.append((id, v))
            if chunk.count == 4096 { try checkChunk() }
        }
        try checkChunk()
        return notPending
    }

    /// The stored tables are well formed and every item not pending is in each of them.
    /// Returns the stale entries (an item no longer in that bucket).
    private func verifyStoredTables(_ txn: Transaction, pending: StoredPending, notPending: Int) throws -> Int {
        guard let tmText = try txn.getString(dbMeta, "tables_m"), let tm = Int(tmText),
              let layout = try? SubstringLayout(width: width, count: tm) else {
            throw StoreError.corrupt("the stored tables are missing")
        }
        var stale = 0
        try StoredTable.forEach(txn, dbTables, generation: try TableChunks.generation(txn, meta: dbMeta), layout: layout) { j, table in
            let (seen, staleHere) = try verifyStoredTable(txn, j, layout: layout, offsets: table.offsets,
                                                          ids: table.ids, pending: pending)
            stale += staleHere
            guard seen == notPending else {
                throw StoreError.corrupt("stored table \(j) holds \(seen) of the \(notPending) items it should")
            }
        }
        return stale
    }

    /// Stored table j's entries, a chunk at a time under the read lock: an entry is seen
    /// when its item's substring j is the bucket's value, else stale. The substring comes
    /// from the mirror unless a write changed the item since the snapshot (then from the
    /// snapshot's record). Pending items are skipped.
    private func verifyStoredTable(_ txn: Transaction, _ j: Int, layout: SubstringLayout, offsets: [UInt32],
                                   ids: [UInt32], pending: StoredPending) throws -> (seen: Int, stale: Int) {
        let bytes = width.bytes
        var seen = 0, stale = 0
        var v = 0
        var i = 0
        while i < ids.count {
            let end = min(ids.count, i + 65_536)
            try rw.withReadLock {
                for e in i..<end {
                    while Int(offsets[v + 1]) <= e { v += 1 }
                    let id = ids[e]
                    if pending.contains(id) { continue }
                    let sub: UInt32?
                    if verifyChanged!.contains(id) {
                        sub = try txn.get(dbItems, id: id).flatMap { rec in
                            (try? HammingCode(bytes: rec[0..<bytes], width: width)).map { c in
                                c.withWords { layout.substring(j, of: $0.baseAddress!) }
                            }
                        }
                    } else {
                        // The code's pointer is valid while the read lock is held.
                        sub = index.codes.isLive(id) ? layout.substring(j, of: index.codes.pointer(id)) : nil
                    }
                    if sub == UInt32(v) { seen += 1 } else { stale += 1 }
                }
            }
            i = end
        }
        return (seen, stale)
    }
}
