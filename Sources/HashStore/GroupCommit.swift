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
        writerLock.lock()
        defer { writerLock.unlock() }
        var attempt = 0
        while true {
            do {
                let (outcomes, changes, newNext, model, images) = try writeBatch(batch, codesModel: codesModel)
                commits += 1
                rw.withWriteLock {
                    recordedModel = model
                    imageItemCount = images
                    if verifyChanged != nil || foldChanged != nil { recordChanged(changes) }
                    for change in changes {
                        switch change {
                        case .insert(let id, let key, let code):
                            keys.insert(key.utf8, id: id)
                            index.upsert(id, code)
                        case .replace(let id, let code):
                            index.upsert(id, code)
                        case .remove(let id, let key):
                            keys.remove(key.utf8)
                            index.remove(id)
                        }
                    }
                    nextID = newNext
                }
                // The batch is durable: a failed fold must not turn it into an error. The
                // delta keeps answers exact; the fold is tried again after the next batch.
                do {
                    try foldIfNeeded()
                    lastFoldError = nil
                } catch {
                    lastFoldError = "\(error)"
                }
                return outcomes
            } catch let e as LMDBError where e.isMapFull && attempt < 40 {
                attempt += 1
                try growMap()
            } catch let e as StoreError {
                throw e
            } catch {
                throw StoreError.io("write failed, nothing was applied: \(error)")
            }
        }
    }

    func writeBatch(_ batch: [WriteOp], codesModel: String?) throws
        -> ([WriteOutcome], [Change], UInt32, String?, Int) {
        try env.write { txn in
            var storedSource = false
            var next = nextID
            // Keys touched earlier in this batch: id, or nil when deleted.
            batchKeys.reset(for: batch.count)
            var outcomes = [WriteOutcome](), changes = [Change]()
            outcomes.reserveCapacity(batch.count)
            var record = [UInt8]()
            let empty: [UInt8] = []
            /// The item record (code, then key) and its `pending` mark.
            func putItem(_ id: UInt32, _ key: String, _ code: HammingCode, flags: UInt32) throws {
                record.removeAll(keepingCapacity: true)
                ItemRecord.encode(code: code, key: key, into: &record)
                try record.withUnsafeBytes { try txn.put(dbItems, id: id, value: $0, flags: flags) }
                try empty.withUnsafeBytes { try txn.put(dbPending, id: id, value: $0, flags: flags) }
            }
            for op in batch {
                switch op {
                case .add(let key, let code, let source):
                    guard code.width == width else {
                        throw StoreError.invalid("code has \(code.width.bits) bits, the database \(width.bits)")
                    }
                    let existing: UInt32? = batchKeys.state(of: key) ?? keys.lookup(key)
                    let id: UInt32
                    // A new id is above every stored one: appending keeps LMDB's pages full.
                    var flags: UInt32 = 0
                    if let existing {
                        id = existing
                        changes.append(.replace(id, code))
                    } else {
                        guard next < UInt32.max else { throw StoreError.full("the database has used all 2^32 - 1 ids") }
                        id = next
                        next += 1
                        flags = UInt32(MDB_APPEND)
                        changes.append(.insert(id, key, code))
                    }
                    try putItem(id, key, code, flags: flags)
                    if let source {
                        storedSource = true
                        try source.encoded.withUnsafeBytes { try txn.put(dbSources, id: id, value: $0) }
                    } else if existing != nil {
                        try txn.delete(dbSources, id: id)
                    }
                    batchKeys.set(key, id)
                    outcomes.append(.added(id: id))
                case .reencode(let key, let id, let code, let source):
                    let existing: UInt32? = batchKeys.state(of: key) ?? keys.lookup(key)
                    guard existing == id, code.width == width,
                          let stored = try txn.get(dbSources, id: id), stored.elementsEqual(source.encoded) else {
                        outcomes.append(.skipped)
                        continue
                    }
                    try putItem(id, key, code, flags: 0)
                    changes.append(.replace(id, code))
                    outcomes.append(.added(id: id))
                case .delete(let key):
                    let existing: UInt32? = batchKeys.state(of: key) ?? keys.lookup(key)
                    if let id = existing {
                        try txn.delete(dbItems, id: id)
                        try txn.delete(dbPending, id: id)
                        try txn.delete(dbSources, id: id)
                        changes.append(.remove(id, key))
                        batchKeys.set(key, nil)
                        outcomes.append(.deleted(true))
                    } else {
                        outcomes.append(.deleted(false))
                    }
                }
            }
            if next != nextID { try txn.putString(dbMeta, "next_id", String(next)) }
            // The model identity describes the items with a source: recorded with the
            // first of them, dropped with the last.
            let images = try txn.count(dbSources)
            var model = recordedModel
            if images == 0, model != nil {
                try txn.deleteString(dbMeta, HashStore.modelIdentityKey)
                model = nil
            } else if images > 0, model == nil, storedSource, let codesModel {
                try txn.putString(dbMeta, HashStore.modelIdentityKey, codesModel)
                model = codesModel
            }
            return (outcomes, changes, next, model, images)
        }
    }
}
