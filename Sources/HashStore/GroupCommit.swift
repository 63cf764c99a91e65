import CLMDB
import Foundation
import HammingCode
import MultiIndex
#if canImport(Glibc)
import Glibc
#endif

/// A write, as the writer applies it.
public enum WriteOp: Sendable {
    /// Stores a code under a key; `source` is the image it was encoded from (nil: a code
    /// given directly, which drops any source the key had).
    case add(key: String, code: HammingCode, source: ItemSource? = nil)
    case delete(key: String)
    /// REENCODE's write: the new code of item `id`, applied only while `key` is still that
    /// item and its stored source is still `source`. A client write made since the
    /// re-encoding read the item (a new code, a delete) wins; the outcome is then `skipped`.
    case reencode(key: String, id: UInt32, code: HammingCode, source: ItemSource)
}

extension WriteOp {
    /// The key the write is about.
    var key: String {
        switch self {
        case .add(let key, _, _), .delete(let key), .reencode(let key, _, _, _): return key
        }
    }
}

/// The outcome of one write.
public enum WriteOutcome: Sendable, Equatable {
    /// The item's id (new, or kept when the key existed).
    case added(id: UInt32)
    /// Whether the key existed.
    case deleted(Bool)
    /// A `reencode` write not applied: the item had changed or gone.
    case skipped
}

extension HashStore {
    // MARK: - Writes (the writer thread)

    /// Applies a batch of writes in one transaction (group commit) and, once it is
    /// durable, to the mirror. Either every write of the batch is applied or none is:
    /// on failure the error is thrown and nothing changed.
    ///
    /// `codesModel` is the identity of the model that encoded the batch's items with a
    /// source; it is recorded when the store has no model identity yet.
    public func apply(_ batch: [WriteOp], codesModel: String? = nil) throws -> [WriteOutcome] {
        guard !batch.isEmpty else { return [] }
        var phases = ApplyPhases()
        writesWaiting.withLock { $0 += 1 }
        yieldToPause()
        writerLock.lock()
        writesWaiting.withLock { $0 -= 1 }
        defer { writerLock.unlock() }
        phases.mark(\.writerLock)
        let written: BatchWrite
        do {
            written = try retryingWhenMapFull(grow: growMap) { try writeBatch(batch, codesModel: codesModel, &phases) }
        } catch let e as StoreError {
            throw e
        } catch {
            throw StoreError.storage(error, "write failed, nothing was applied", dataPath: dataPath)
        }
        phases.mark(\.commit)
        commits += 1
        applyToMirror(written, &phases)
        reclaimKeysIfNeeded()
        phases.mark(\.reclaim)
        // The batch is durable: a failed fold must not turn it into an error. The
        // delta keeps answers exact; the fold is tried again after the next batch.
        do {
            try foldIfNeeded()
            lastFoldError = nil
        } catch {
            lastFoldError = "\(error)"
        }
        phases.mark(\.fold)
        lastApplyPhases = phases
        if let limit = HashStore.traceSlowWrites, phases.total * 1e3 >= limit { traceSlowWrite(phases, ops: batch.count) }
        return written.outcomes
    }

    /// Lets COMPACT's pause, when it waits for `writerLock`, take the lock before this
    /// batch: the lock is not fair, and a writer with batches queued back to back took it
    /// again at once, so that the compaction's thread waited 125 ms for it at 10M items
    /// while the writes it must replay in the pause piled up (9,165 of them, a pause of
    /// 80 ms). Waits at most 10 ms.
    private func yieldToPause() {
        pauseWaiting.waitWhilePositive(pollingEvery: 250, atMost: 40)
    }

    /// For diagnosis: `GDH_TRACE_SLOW_WRITES=<ms>` prints to standard error every write batch
    /// that took at least that long in `apply`, with its phases.
    static let traceSlowWrites = ProcessInfo.processInfo.environment["GDH_TRACE_SLOW_WRITES"].flatMap(Double.init)

    private func traceSlowWrite(_ phases: ApplyPhases, ops: Int) {
        let parts = phases.named.map { String(format: "%@ %.1f", $0.0, $0.1 * 1e3) }.joined(separator: ", ")
        let line = String(format: "slow write batch: %d ops, %.1f ms (%@ ms); items %d, delta %d, folds %d\n",
                          ops, phases.total * 1e3, parts, index.count, index.deltaEntries, folds)
        FileHandle.standardError.write(Data(line.utf8))
    }

    /// Where the last `apply` spent its time (seconds): waiting for the writer lock, the
    /// transaction's puts, its commit (with the sync), waiting for the mirror's write lock,
    /// the mirror update, the key index's reclaim (`reclaimKeysIfNeeded`, seldom), the fold
    /// check (a fold inline, or the start of one beside).
    public struct ApplyPhases: Sendable {
        public var writerLock = 0.0, puts = 0.0, commit = 0.0, mirrorLock = 0.0, mirror = 0.0, reclaim = 0.0, fold = 0.0
        private var last = DispatchTime.now().uptimeNanoseconds

        /// Charges the time since the previous mark to `phase`.
        mutating func mark(_ phase: WritableKeyPath<ApplyPhases, Double>) {
            let now = DispatchTime.now().uptimeNanoseconds
            self[keyPath: phase] += Double(now - last) / 1e9
            last = now
        }

        public var total: Double { writerLock + puts + commit + mirrorLock + mirror + reclaim + fold }

        /// Named phases, in order.
        public var named: [(String, Double)] {
            [("writer_lock", writerLock), ("puts", puts), ("commit", commit), ("mirror_lock", mirrorLock),
             ("mirror", mirror), ("key_reclaim", reclaim), ("fold", fold)]
        }
    }

    /// A batch being written in its transaction, and once committed what the mirror
    /// needs of it (`applyToMirror`).
    struct BatchWrite {
        var outcomes: [WriteOutcome] = []
        var changes = Changes()
        /// The id the next new key gets.
        var nextID: UInt32
        /// Ids below this get a `pending` record (`HashStore.pendingBelow`).
        var pendingBelow: UInt32
        /// Whether a write of the batch stored a source.
        var storedSource = false
        /// The model identity and the number of items with a source after the batch.
        var model: String?
        var imageItems = 0
        /// One item record's bytes (storage reused from write to write).
        var record: [UInt8] = []
    }

    /// Writes the batch in one write transaction and commits it (synced). Nothing touches
    /// the mirror here; `keys` is only read, `batchKeys` tracks the batch's own keys.
    func writeBatch(_ batch: [WriteOp], codesModel: String?, _ phases: inout ApplyPhases) throws -> BatchWrite {
        try env.write { txn in
            defer { phases.mark(\.puts) }
            var b = BatchWrite(nextID: nextID, pendingBelow: pendingBelow, model: recordedModel)
            // Keys touched earlier in this batch: id, or nil when deleted.
            batchKeys.reset(for: batch.count)
            b.outcomes.reserveCapacity(batch.count)
            b.changes.reserve(batch.count, words: width.words)
            // The key index slot of the write a few places ahead is fetched while this
            // one is applied.
            // Each key is hashed once, a few writes ahead (`hashes` is a ring).
            let ahead = 8
            // The key index does not change during the transaction: one `hints` serves it.
            let hints = keys.hints
            var hashes = (0..<min(ahead, batch.count)).map { KeyIndex.hash(batch[$0].key.utf8) }
            for h in hashes { hints.prefetch(hash: h) }
            for (i, op) in batch.enumerated() {
                let hash = hashes[i % ahead]
                if i + ahead < batch.count {
                    hashes[i % ahead] = KeyIndex.hash(batch[i + ahead].key.utf8)
                    hints.prefetch(hash: hashes[i % ahead])
                }
                let key = HashedKey(key: op.key, hash: hash)
                switch op {
                case .add(_, let code, let source):
                    try writeAdd(txn, key: key, code: code, source: source, &b)
                case .reencode(_, let id, let code, let source):
                    try writeReencode(txn, key: key, id: id, code: code, source: source, &b)
                case .delete:
                    try writeDelete(txn, key: key, &b)
                }
            }
            if b.nextID != nextID { try txn.putString(dbMeta, "next_id", String(b.nextID)) }
            try writeModelIdentity(txn, codesModel: codesModel, &b)
            return b
        }
    }

    /// A write's key with its `KeyIndex.hash`.
    struct HashedKey {
        let key: String
        let hash: UInt64
    }

    /// The id a key has at this point of the batch (nil: none, or deleted in the batch).
    private func currentID(of k: HashedKey) -> UInt32? {
        batchKeys.state(of: k.key, hash: k.hash) ?? keys.lookup(k.key, hash: k.hash)
    }

    /// The item record (code, then key) and, for an id below `pendingBelow`, its `pending`
    /// record (an id at or above the watermark is pending without one: `PendingIDs`).
    private func putItem(_ txn: Transaction, _ id: UInt32, _ key: String, _ code: HammingCode, flags: UInt32,
                         _ b: inout BatchWrite) throws {
        b.record.removeAll(keepingCapacity: true)
        ItemRecord.encode(code: code, key: key, into: &b.record)
        try b.record.withUnsafeBytes { try txn.put(dbItems, id: id, value: $0, flags: flags) }
        if id < b.pendingBelow {
            let empty: [UInt8] = []
            try empty.withUnsafeBytes { try txn.put(dbPending, id: id, value: $0, flags: flags) }
        }
    }

    private func writeAdd(_ txn: Transaction, key k: HashedKey, code: HammingCode, source: ItemSource?,
                          _ b: inout BatchWrite) throws {
        let key = k.key
        guard code.width == width else {
            throw StoreError.invalid("code has \(code.width.bits) bits, the database \(width.bits)")
        }
        let existing = currentID(of: k)
        let id: UInt32
        // A new id is above every stored one: appending keeps LMDB's pages full.
        var flags: UInt32 = 0
        if let existing {
            id = existing
            b.changes.replace(id, code)
        } else {
            guard b.nextID < UInt32.max else { throw StoreError.full("the database has used all 2^32 - 1 ids") }
            id = b.nextID
            b.nextID += 1
            flags = UInt32(MDB_APPEND)
            b.changes.insert(id, k, code)
        }
        try putItem(txn, id, key, code, flags: flags, &b)
        if let source {
            b.storedSource = true
            try source.encoded.withUnsafeBytes { try txn.put(dbSources, id: id, value: $0) }
        } else if existing != nil {
            try txn.delete(dbSources, id: id)
        }
        batchKeys.set(key, hash: k.hash, id)
        b.outcomes.append(.added(id: id))
    }

    private func writeReencode(_ txn: Transaction, key k: HashedKey, id: UInt32, code: HammingCode, source: ItemSource,
                               _ b: inout BatchWrite) throws {
        let key = k.key
        guard currentID(of: k) == id, code.width == width,
              let stored = try txn.get(dbSources, id: id), stored.elementsEqual(source.encoded) else {
            b.outcomes.append(.skipped)
            return
        }
        try putItem(txn, id, key, code, flags: 0, &b)
        b.changes.replace(id, code)
        b.outcomes.append(.added(id: id))
    }

    private func writeDelete(_ txn: Transaction, key k: HashedKey, _ b: inout BatchWrite) throws {
        let key = k.key
        guard let id = currentID(of: k) else {
            b.outcomes.append(.deleted(false))
            return
        }
        try txn.delete(dbItems, id: id)
        try txn.delete(dbPending, id: id)
        try txn.delete(dbSources, id: id)
        b.changes.remove(id, k)
        batchKeys.set(key, hash: k.hash, nil)
        b.outcomes.append(.deleted(true))
    }

    /// The model identity describes the items with a source: recorded with the first of
    /// them, dropped with the last.
    private func writeModelIdentity(_ txn: Transaction, codesModel: String?, _ b: inout BatchWrite) throws {
        b.imageItems = try txn.count(dbSources)
        if b.imageItems == 0, b.model != nil {
            try txn.deleteString(dbMeta, HashStore.modelIdentityKey)
            b.model = nil
        } else if b.imageItems > 0, b.model == nil, b.storedSource, let codesModel {
            try txn.putString(dbMeta, HashStore.modelIdentityKey, codesModel)
            b.model = codesModel
        }
    }
}
