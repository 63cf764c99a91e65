import CLMDB
import Foundation
import HammingCode
import MultiIndex
#if canImport(Glibc)
import Glibc
#endif

extension HashStore {
    /// Fills the mirror from LMDB: codes and keys from `items`, tables from `tables`
    /// plus the pending ids (`PendingIDs`: the records of `pending` and every item id from
    /// the watermark `storedWatermark` on), or rebuilt when the stored tables do not fit the
    /// setting or their watermark is past the next id.
    func loadMirror(tablesM: Int?, generation: Int) throws {
        var pending = [UInt32]()
        let watermark = storedWatermark
        var stored: [(offsets: [UInt32], ids: [UInt32])] = []
        var storedLayout: SubstringLayout?
        do {
            try env.read { txn in
                let n = try txn.count(dbItems)
                // Room for the items; the id → position map starts at the first id and is
                // rebased for the live ids when the tables are loaded or built.
                index.codes.reserve(n)
                var implicit: [UInt32] = []
                try txn.forEach(dbItems) { k, v in
                    let (id, code, key) = try ItemRecord.decode(key: k, value: v, width: width)
                    index.codes.set(id, code)
                    keys.insert(key, id: id)
                    if id >= watermark { implicit.append(id) }
                }
                // Ids deleted before this start leave gaps in the id → key array.
                if keys.shouldReclaim(safe: 0) { keys.reclaim(keepingRemovedAfter: 0) }
                pending = try PendingIDs.explicit(txn, pending: dbPending)
                pending += implicit
                // A watermark past the next id would let later ids go without their record
                // below it: the tables are built again below (with a new watermark).
                if let tm = tablesM, watermark == UInt32.max || watermark <= nextID,
                   index.fixedM == nil || index.fixedM == tm,
                   let layout = try? SubstringLayout(width: width, count: tm) {
                    // Tables that cannot be read are built again below.
                    guard (try? StoredTable.forEach(txn, dbTables, generation: generation, layout: layout, { _, table in
                        stored.append((table.offsets, table.ids))
                    })) != nil else { return }
                    storedLayout = layout
                }
            }
        } catch let e as StoreError {
            throw e
        } catch {
            throw StoreError.storage(error, "cannot load database", dataPath: dataPath)
        }
        if let layout = storedLayout, stored.count == layout.count,
           (try? index.load(layout: layout, tables: stored, pending: pending)) != nil,
           (try? index.check()) != nil {
            return
        }
        // No usable stored tables: build them and store them.
        try foldTables(m: nil)
    }

    /// A batch's committed changes, in order, as the mirror applies them: an insert (a new
    /// id with its key and code), a replace (an id's new code) or a remove (an id and its
    /// key). Kept as parallel arrays, the codes packed one after another (`width.words`
    /// words each, in the order of the inserts and replaces), so that a run of them goes to
    /// the index as it is (`MultiIndex.upsert(ids:words:)`) and nothing is copied per write.
    struct Changes {
        enum Kind: UInt8 { case insert, replace, remove }
        private(set) var kinds: [Kind] = []
        private(set) var ids: [UInt32] = []
        /// The key of each insert and remove, with its `KeyIndex.hash` (computed once in
        /// the transaction); nil for a replace.
        private(set) var keys: [HashedKey?] = []
        /// The codes of the inserts and replaces.
        private(set) var words: [UInt64] = []
        private(set) var removes = 0

        var count: Int { kinds.count }

        mutating func reserve(_ n: Int, words w: Int) {
            kinds.reserveCapacity(n)
            ids.reserveCapacity(n)
            keys.reserveCapacity(n)
            words.reserveCapacity(n * w)
        }

        mutating func insert(_ id: UInt32, _ key: HashedKey, _ code: HammingCode) {
            append(.insert, id, key)
            code.withWords { words.append(contentsOf: $0) }
        }

        mutating func replace(_ id: UInt32, _ code: HammingCode) {
            append(.replace, id, nil)
            code.withWords { words.append(contentsOf: $0) }
        }

        mutating func remove(_ id: UInt32, _ key: HashedKey) {
            append(.remove, id, key)
            removes += 1
        }

        private mutating func append(_ kind: Kind, _ id: UInt32, _ key: HashedKey?) {
            kinds.append(kind)
            ids.append(id)
            keys.append(key)
        }
    }

    /// Adds the ids of committed changes to whichever of `verifyChanged` and `foldChanged`
    /// is recording (under the write lock). A fold needs no record of the new ids
    /// (`ChangedIDs`).
    func recordChanged(_ changes: Changes) {
        for id in changes.ids {
            verifyChanged?.insert(id)
            foldChanged?.record(id)
        }
    }

    /// Applies a committed batch to the mirror (keys, codes, tables' delta) and the
    /// settings mirrored from `meta`, under the write lock (writer lock held).
    func applyToMirror(_ b: BatchWrite, _ phases: inout ApplyPhases) {
        rw.withWriteLock {
            phases.mark(\.mirrorLock)
            defer { phases.mark(\.mirror) }
            recordedModel = b.model
            imageItemCount = b.imageItems
            if verifyChanged != nil || foldChanged != nil { recordChanged(b.changes) }
            let c = b.changes
            if c.removes > 0 { keyGeneration += 1 }
            // The codes go to the index a run at a time, straight from the batch's packed
            // words (`MultiIndex.upsert(ids:words:)`, which fetches the delta's cache lines
            // ahead); a remove ends a run, so that the changes apply in order. The key slot
            // of the change a few places ahead is fetched while this one is applied (after
            // `reserve`, so that the hints' address stays the table's).
            let w = width.words
            keys.reserve(c.count)
            let hints = keys.hints
            let ahead = 8
            c.ids.withUnsafeBufferPointer { ids in
                c.words.withUnsafeBufferPointer { words in
                    // The run of inserts and replaces not yet given to the index: changes
                    // runStart ..< i, whose codes start at word runWords.
                    var runStart = 0, runWords = 0, nextWords = 0
                    func flush(upTo i: Int) {
                        if i > runStart {
                            index.upsert(ids: UnsafeBufferPointer(rebasing: ids[runStart..<i]), words: words.baseAddress! + runWords)
                        }
                        runStart = i + 1
                        runWords = nextWords
                    }
                    for i in 0..<c.count {
                        if i + ahead < c.count, let k = c.keys[i + ahead] { hints.prefetch(hash: k.hash) }
                        switch c.kinds[i] {
                        case .insert:
                            let k = c.keys[i]!
                            keys.insert(k.key.utf8, id: ids[i], hash: k.hash)
                            nextWords += w
                        case .replace:
                            nextWords += w
                        case .remove:
                            flush(upTo: i)
                            let k = c.keys[i]!
                            keys.remove(k.key.utf8, generation: keyGeneration, hash: k.hash)
                            index.remove(ids[i])
                        }
                    }
                    flush(upTo: c.count)
                }
            }
            nextID = b.nextID
        }
    }

    /// Gives back the key index's garbage (removed keys' bytes, the id → location entries
    /// of ids no longer held) once it outweighs the keys held, keeping every removed key a
    /// reader may still resolve: those removed after the oldest pinned generation. The
    /// packed index is built beside the one in use a piece after each batch
    /// (`KeyIndex.reclaimStep`, `keyReclaimPiece` ids, under the read lock: queries go on,
    /// and the writer lock, held by the caller, keeps the index from changing meanwhile);
    /// the ids written between the pieces are carried over to it by the last step, and the
    /// swap under the write lock follows it at once. The old buffers are freed outside the lock.
    func reclaimKeysIfNeeded() {
        if keys.reclaiming == nil {
            let started = rw.withReadLock { () -> Bool in
                guard keys.garbageBytes > 1 << 20 else { return false }
                let safe = keyPins.oldest ?? keyGeneration
                guard keys.shouldReclaim(safe: safe) else { return false }
                keys.startReclaim(keepingRemovedAfter: safe)
                return true
            }
            guard started else { return }
        }
        guard rw.withReadLock({ keys.reclaimStep(budget: keyReclaimPiece) }) else { return }
        let old = rw.withWriteLock { keys.finishReclaim() }
        keyReclaims += 1
        // Freeing tens of MB takes milliseconds: not on the writer's time.
        DispatchQueue.global(qos: .utility).async { withExtendedLifetime(old) {} }
    }

    /// Whether a key index reclaim is under way (it goes a piece after each batch).
    public var reclaimUnderWay: Bool { writerLock.withLock { keys.reclaiming != nil } }

    /// Takes the next piece of a key index reclaim under way, as a batch does after its
    /// commit: for the writer while no write comes, so that a reclaim begun by a burst of
    /// deletes also finishes when the writes stop. Returns whether one is still under way.
    @discardableResult
    public func continueReclaim() -> Bool {
        writerLock.lock()
        defer { writerLock.unlock() }
        guard keys.reclaiming != nil else { return false }
        reclaimKeysIfNeeded()
        return keys.reclaiming != nil
    }

    /// Pins the keys of the ids live now: until the pin is released (dropped), every one of
    /// them still resolves by id (`forEachKey`), even if it is deleted meanwhile. Take it
    /// before a search whose results are resolved later (any thread).
    public func pinKeys() -> KeyPin {
        rw.withReadLock { KeyPin(keyPins, generation: keyGeneration) }
    }
}

/// The generations of removes that pinned readers may still ask about (see
/// `HashStore.pinKeys`): a multiset under a lock of its own.
final class KeyPins: @unchecked Sendable {
    private let lock = NSLock()
    private var counts: [UInt64: Int] = [:]

    func add(_ g: UInt64) {
        lock.lock(); counts[g, default: 0] += 1; lock.unlock()
    }

    func remove(_ g: UInt64) {
        lock.lock()
        if let c = counts[g] { counts[g] = c > 1 ? c - 1 : nil }
        lock.unlock()
    }

    /// The oldest generation pinned, or nil when none is.
    var oldest: UInt64? {
        lock.lock(); defer { lock.unlock() }
        return counts.keys.min()
    }
}

/// A reader's hold on the keys of the ids live when it was taken (`HashStore.pinKeys`);
/// released when dropped.
public final class KeyPin: @unchecked Sendable {
    private let pins: KeyPins
    /// Removes tagged with a later generation keep their keys while this pin lives.
    let generation: UInt64

    init(_ pins: KeyPins, generation: UInt64) {
        self.pins = pins
        self.generation = generation
        pins.add(generation)
    }

    deinit { pins.remove(generation) }
}
