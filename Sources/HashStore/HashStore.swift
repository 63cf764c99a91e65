import CLMDB
import Foundation
import HammingCode
import MultiIndex
#if canImport(Glibc)
import Glibc
#endif

/// Errors of the store, each with a message fit for a client.
public enum StoreError: Error, CustomStringConvertible, Equatable {
    /// Another process holds the database.
    case locked(String)
    /// The database exists with other settings than asked for.
    case mismatch(String)
    /// A bad argument (for example a substring count out of range).
    case invalid(String)
    /// Stored data disagree with themselves (VERIFY).
    case corrupt(String)
    /// The id space (2^32 − 1 ids) is used up.
    case full(String)
    /// LMDB or the file system failed; nothing was applied.
    case io(String)
    /// A directory opened read-only (`ReadOnlyStore`) is missing or holds no gdh database.
    case notADatabase(String)

    public var description: String {
        switch self {
        case .locked(let s), .mismatch(let s), .invalid(let s), .corrupt(let s), .full(let s), .io(let s), .notADatabase(let s):
            return s
        }
    }
}

/// Where an item's code came from, kept so that REENCODE can encode it again.
public enum ItemSource: Sendable, Equatable {
    /// An image file (an absolute path).
    case path(String)
    /// Image bytes sent inline (IMAGE64).
    case inline([UInt8])

    var encoded: [UInt8] {
        switch self {
        case .path(let p): return [1] + Array(p.utf8)
        case .inline(let b): return [2] + b
        }
    }

    init?(encoded b: UnsafeRawBufferPointer) {
        guard let kind = b.first else { return nil }
        let rest = Array(b.dropFirst())
        switch kind {
        case 1: self = .path(String(decoding: rest, as: UTF8.self))
        case 2: self = .inline(rest)
        default: return nil
        }
    }
}

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

/// Options for opening (and on first use, creating) a database.
public struct StoreOptions: Sendable {
    /// Code width for a new database; an existing one must match when given.
    public var bits: Int?
    /// Fixed substring count m; nil keeps the stored setting (automatic for a new one).
    public var substrings: Int?
    /// Initial map size in bytes; the map doubles whenever it fills up.
    public var initialMapSize: Int = 64 << 20
    /// Delta entries (per table, on average) after which the writer folds the tables.
    /// nil: max(65,536, N / 8).
    public var foldThreshold: Int?
    /// Fold beside the writes: the tables are built from a copy of the codes on a thread of
    /// their own, and the writer pauses only for the copy and for storing and installing
    /// them (`HashStore.foldBeside`). Off: the batch that passes the threshold folds inline.
    public var backgroundFolds = false

    public init(bits: Int? = nil, substrings: Int? = nil) {
        self.bits = bits
        self.substrings = substrings
    }
}

/// The persistent hash store: one LMDB environment in a directory, holding
///
/// - `meta`: format version, code width, substring setting, next id, the m of the stored tables,
///   and the identity of the model that made the image codes (`model_identity`, absent when
///   unknown or when no item was encoded from an image);
/// - `items`: id (u32) → code bytes (b/8) followed by the external key's UTF-8 bytes;
/// - `tables`: table j (u32) → the table as one value (`StoredTable`): ids grouped by
///   substring value, ascending per bucket, and the bucket sizes in unary;
/// - `pending`: ids added or changed since the tables were written.
///
/// and an exact in-memory mirror (codes by id, multi-index tables, keys) that all
/// queries read, so no query touches LMDB. LMDB is the durable truth: the mirror is
/// rebuilt from it at open and changed only after a commit has succeeded.
///
/// Threading: searches and look-ups may run on any number of threads at once; every
/// write, compaction, rebuild and verify must come from one writer thread at a time.
public final class HashStore {
    public static let formatVersion = 1
    public let directory: String
    public let width: CodeWidth
    public var dataPath: String { directory + "/data.mdb" }

    private var env: Environment
    private var dbMeta: MDB_dbi = 0
    private var dbItems: MDB_dbi = 0
    private var dbTables: MDB_dbi = 0
    private var dbPending: MDB_dbi = 0
    private var dbSources: MDB_dbi = 0
    private let lockFD: Int32
    private var closed = false

    private let index: MultiIndex
    private let keys: KeyIndex
    private let rw = ReadWriteLock()
    private var nextID: UInt32
    private let foldThreshold: Int?
    private let backgroundFolds: Bool
    /// While a fold builds tables beside the writes: the ids written since its snapshot
    /// (under `rw`).
    private var foldChanged: Set<UInt32>?
    /// One fold beside the writes at a time (automatic, or REBUILD).
    private let foldLock = NSLock()
    /// An automatic fold thread has been started and not finished (under `writerLock`).
    private var foldScheduled = false
    /// The last fold beside the writes: seconds of its steps (the copy and the store and
    /// install pause the writer; the build does not).
    public private(set) var lastFoldSteps: [(String, Double)] = []
    /// Automatic fold threads running; `close` waits for them.
    private let foldThreads = DispatchGroup()

    /// The meta key recording which model made the image codes.
    static let modelIdentityKey = "model_identity"
    /// The recorded model identity and the number of items with a stored source, mirrored
    /// from LMDB (read under `rw`).
    private var recordedModel: String?
    private var imageItemCount = 0

    /// The map size, kept beside the environment so STATS never touches an
    /// environment that COMPACT is swapping.
    private var mapBytes = 0
    /// The last failure of an automatic fold (the writes themselves had committed).
    public private(set) var lastFoldError: String?

    /// Counters for STATS.
    public private(set) var commits = 0
    public private(set) var folds = 0
    /// Keys touched by the batch being written (writer thread only; storage reused).
    private var batchKeys = BatchKeys()
    /// Held for reading by a backup (which reads the environment off the writer thread)
    /// and for writing by the environment swap of COMPACT.
    private let envSwap = ReadWriteLock()
    /// Held by every write to LMDB and the mirror (`apply`, folds, `rebuild`, model
    /// identity, `verify`) and by COMPACT's start and its final catch-up and swap, which
    /// run on another thread than the writer's.
    private let writerLock = NSLock()
    /// One COMPACT at a time; VERIFY holds it too (its snapshot must outlive no swap).
    private let compactLock = NSLock()
    /// While a VERIFY runs: the ids written since its snapshot (under `rw`).
    private var verifyChanged: Set<UInt32>?
    /// Measured by the last COMPACT: the changes replayed before its final step and in it.
    public private(set) var lastCompactReplayed = (catchUp: 0, final: 0)
    /// The steps of the last COMPACT's pause: (name, seconds since the pause began).
    public private(set) var lastCompactSteps: [(String, Double)] = []
    /// How long writes waited for the last COMPACT's final step (seconds).
    public var lastCompactPause: Double { lastCompactSteps.last?.1 ?? 0 }

    // MARK: - Open and close

    public init(directory: String, options: StoreOptions = StoreOptions()) throws {
        self.directory = directory
        self.foldThreshold = options.foldThreshold
        self.backgroundFolds = options.backgroundFolds
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw StoreError.io("cannot create database directory \(directory): \(String(cString: strerror(errno)))")
        }
        // One daemon per database: an exclusive lock held for the life of the store.
        let fd = open(directory + "/gdhd.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw StoreError.io("cannot open \(directory)/gdhd.lock: \(String(cString: strerror(errno)))")
        }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            Glibc.close(fd)
            throw StoreError.locked("database \(directory) is in use by another process")
        }
        lockFD = fd
        var opened = false
        defer { if !opened { Glibc.close(fd) } }

        // A compaction that died before its rename left only a temporary copy; one that
        // died after it, a second name of the old file.
        unlink(directory + "/data.mdb.compact")
        unlink(directory + "/data.mdb.old")

        let fileSize = HashStore.fileSize(directory + "/data.mdb")
        var mapSize = max(options.initialMapSize, 1 << 20)
        while mapSize < fileSize * 2 { mapSize *= 2 }
        do {
            env = try Environment(path: directory + "/data.mdb", mapSize: mapSize, maxDatabases: 8)
        } catch {
            throw StoreError.io("cannot open database \(directory): \(error)")
        }

        // Read or create the settings.
        var settings: StoredSettings
        do {
            var dbs = (MDB_dbi(0), MDB_dbi(0), MDB_dbi(0), MDB_dbi(0), MDB_dbi(0))
            settings = try env.write { txn in
                dbs = try HashStore.openDatabases(txn, create: true)
                if var stored = try StoredSettings.read(txn, meta: dbs.0, sources: dbs.4, directory: directory) {
                    if let want = options.bits, want != stored.bits {
                        throw StoreError.mismatch("database \(directory) holds \(stored.bits)-bit codes, not \(want)")
                    }
                    if let want = options.substrings, want != stored.substrings {
                        if let w = try? CodeWidth(bits: stored.bits) {
                            do { _ = try SubstringLayout(width: w, count: want) } catch {
                                throw StoreError.invalid("\(error)")
                            }
                        }
                        try txn.putString(dbs.0, "substrings", String(want))
                        stored.substrings = want
                    }
                    return stored
                }
                let bits = options.bits ?? 64
                try txn.putString(dbs.0, "format", String(HashStore.formatVersion))
                try txn.putString(dbs.0, "bits", String(bits))
                try txn.putString(dbs.0, "substrings", options.substrings.map { String($0) } ?? "auto")
                try txn.putString(dbs.0, "next_id", "0")
                return StoredSettings(bits: bits, substrings: options.substrings, nextID: 0, tablesM: nil, model: nil, imageItems: 0)
            }
            (dbMeta, dbItems, dbTables, dbPending, dbSources) = dbs
        } catch let e as StoreError {
            env.close()
            throw e
        } catch {
            env.close()
            throw StoreError.io("cannot read database \(directory): \(error)")
        }

        do {
            width = try CodeWidth(bits: settings.bits)
            if let m = settings.substrings { _ = try SubstringLayout(width: width, count: m) }
            index = try MultiIndex(width: width, m: settings.substrings)
        } catch {
            env.close()
            throw StoreError.invalid("\(error)")
        }
        keys = KeyIndex()
        nextID = settings.nextID
        recordedModel = settings.model
        imageItemCount = settings.imageItems
        mapBytes = env.mapSize
        do {
            try loadMirror(tablesM: settings.tablesM)
        } catch {
            env.close()
            throw error
        }
        opened = true
    }

    /// Fills the mirror from LMDB: codes and keys from `items`, tables from `tables`
    /// plus `pending` (or rebuilt, when the stored tables do not fit the setting).
    private func loadMirror(tablesM: Int?) throws {
        var pending = [UInt32]()
        var stored: [(offsets: [UInt32], ids: [UInt32])] = []
        var storedLayout: SubstringLayout?
        do {
            try env.read { txn in
                let n = try txn.count(dbItems)
                index.codes.reserve(Int(nextID))
                _ = n
                try txn.forEach(dbItems) { k, v in
                    let (id, code, key) = try ItemRecord.decode(key: k, value: v, width: width)
                    index.codes.set(id, code)
                    keys.insert(key, id: id)
                }
                try txn.forEach(dbPending) { k, _ in
                    if k.count == 4 { pending.append(k.loadUnaligned(as: UInt32.self)) }
                }
                if let tm = tablesM, index.fixedM == nil || index.fixedM == tm,
                   let layout = try? SubstringLayout(width: width, count: tm) {
                    for j in 0..<tm {
                        guard let table = try? StoredTable.read(txn, dbTables, table: j, bits: layout.sizes[j]) else { return }
                        stored.append((table.offsets, table.ids))
                    }
                    storedLayout = layout
                }
            }
        } catch let e as StoreError {
            throw e
        } catch {
            throw StoreError.io("cannot load database: \(error)")
        }
        if let layout = storedLayout, stored.count == layout.count,
           (try? index.load(layout: layout, tables: stored, pending: pending)) != nil,
           (try? index.check()) != nil {
            return
        }
        // No usable stored tables: build them and store them.
        try foldTables(m: nil)
    }

    /// Closes the environment and releases the database lock; later calls do nothing (a
    /// second close of the lock's descriptor would close another file's).
    public func close() {
        guard !closed else { return }
        foldThreads.wait()
        closed = true
        env.close()
        flock(lockFD, LOCK_UN)
        Glibc.close(lockFD)
    }

    static func fileSize(_ path: String) -> Int {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_size) : 0
    }

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

    /// The code stored under a key.
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

    /// The identity of the model that made the stored image codes (meta `model_identity`),
    /// or nil: unknown (a database written before identities were recorded) or no item
    /// encoded from an image. Recorded by the first write that stores an item with a
    /// source (`apply(_:codesModel:)`) and by `setModelIdentity`; removed in the
    /// transaction that removes the last item with a source.
    public var modelIdentity: String? { rw.withReadLock { recordedModel } }

    /// Items that were encoded from an image (that have a stored source).
    public var imageItems: Int { rw.withReadLock { imageItemCount } }

    /// `codes_model` of STATS and `gdh inspect`: the recorded identity; `unknown` when items
    /// encoded from an image exist but no identity was recorded (a database from before
    /// identities); `none` when no item was encoded from an image.
    public static func codesModel(identity: String?, imageItems: Int) -> String {
        identity ?? (imageItems > 0 ? "unknown" : "none")
    }

    /// This store's `codes_model`.
    public var codesModel: String {
        rw.withReadLock { HashStore.codesModel(identity: recordedModel, imageItems: imageItemCount) }
    }

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

    private enum Change {
        case insert(UInt32, String, HammingCode)
        case replace(UInt32, HammingCode)
        case remove(UInt32, String)
    }

    private func writeBatch(_ batch: [WriteOp], codesModel: String?) throws
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

    /// Adds the ids of committed changes to whichever of `verifyChanged` and `foldChanged`
    /// is recording (under the write lock).
    private func recordChanged(_ changes: [Change]) {
        for change in changes {
            switch change {
            case .insert(let id, _, _), .replace(let id, _), .remove(let id, _):
                verifyChanged?.insert(id)
                foldChanged?.insert(id)
            }
        }
    }

    /// Room ahead (twice the file and 64 MiB), so that writes during a copy or a VERIFY
    /// seldom need to grow the map, which waits for them (writer lock held).
    private func growMapAhead() throws {
        let file = HashStore.fileSize(dataPath)
        while env.mapSize < 2 * file + (64 << 20) { try growMap() }
    }

    /// Doubles the map. LMDB remaps the file, so this waits for copies (backup, COMPACT)
    /// that read the environment from another thread.
    private func growMap() throws {
        try envSwap.withWriteLock {
            let size = env.mapSize * 2
            do { try env.setMapSize(size) } catch {
                throw StoreError.io("cannot grow the map to \(size) bytes: \(error)")
            }
            rw.withWriteLock { mapBytes = size }
        }
    }

    /// Folds the delta into new tables once it has grown past the threshold, or once
    /// deletes have left as many holes in the code positions (a fold compacts them).
    private func foldIfNeeded() throws {
        let limit = foldThreshold ?? max(65_536, index.count / 8)
        // Holes cost scan time whatever the delta holds, so they are folded away sooner.
        let holeLimit = foldThreshold ?? max(16_384, index.count / 8)
        if index.deltaEntries > limit * max(1, index.m) || index.codes.holes > holeLimit
            || (index.fixedM == nil && index.count >= 65_536
            && SubstringLayout.automaticCount(for: width, items: index.count) != index.m
            && index.deltaEntries > index.count / 8) {
            guard backgroundFolds else { try foldTables(m: nil); return }
            // Beside the writes; the delta keeps answers exact meanwhile.
            guard !foldScheduled, foldChanged == nil else { return }
            foldScheduled = true
            foldThreads.enter()
            let t = Thread { [self] in
                defer { foldThreads.leave() }
                var failure: String?
                do { try foldBeside(m: nil, setting: false) } catch { failure = "\(error)" }
                writerLock.lock()
                foldScheduled = false
                lastFoldError = failure
                writerLock.unlock()
            }
            t.name = "gdhd-fold"
            t.start()
        }
    }

    /// A fold that lets writes go on while the tables are built (any thread but the
    /// writer's, which must not hold `writerLock`):
    ///
    /// 1. Under the writer lock: copy the live codes (`MultiIndex.snapshotForTables`) and
    ///    start recording the ids written from then on (`foldChanged`).
    /// 2. No lock: build the tables from the copy.
    /// 3. Under the writer lock: store the tables with `pending` = the recorded ids still
    ///    live, in one transaction (as an inline fold does, so a crash at any instant leaves
    ///    the old tables and pending or the new ones), then install them, carrying the
    ///    recorded ids' current codes over to the new positions and the delta.
    ///
    /// With `setting`, m (when given) becomes the database's substring setting first.
    private func foldBeside(m: Int?, setting: Bool) throws {
        foldLock.lock()
        defer { foldLock.unlock() }
        let snapshot: MultiIndex.TableSnapshot
        var steps: [(String, Double)] = []
        var t = DispatchTime.now().uptimeNanoseconds
        func step(_ name: String) {
            let now = DispatchTime.now().uptimeNanoseconds
            steps.append((name, Double(now - t) / 1e9))
            t = now
        }
        writerLock.lock()
        t = DispatchTime.now().uptimeNanoseconds
        do {
            if setting, let m { try storeSubstringSetting(m) }
            do { snapshot = try index.snapshotForTables(m: m) } catch { throw StoreError.invalid("\(error)") }
            rw.withWriteLock { foldChanged = [] }
        } catch {
            writerLock.unlock()
            throw error
        }
        step("copy")
        writerLock.unlock()
        if HashStore.foldTestPause == "copied" { usleep(500_000) }
        let prepared = snapshot.build()
        if HashStore.foldTestPause == "built" { usleep(500_000) }
        step("build")
        writerLock.lock()
        t = DispatchTime.now().uptimeNanoseconds
        let changed = rw.withReadLock { foldChanged ?? [] }
        do {
            try storeTables(prepared, pending: changed.filter { index.codes.isLive($0) }.sorted())
        } catch {
            rw.withWriteLock { foldChanged = nil }
            writerLock.unlock()
            throw error
        }
        step("store")
        if HashStore.foldTestPause == "stored" { usleep(500_000) }
        let retired = rw.withWriteLock { () -> MultiIndex.Retired in
            defer { foldChanged = nil }
            return index.install(prepared, changedSince: changed)
        }
        step("install")
        lastFoldSteps = steps
        writerLock.unlock()
        // The old codes and tables are freed here, with no lock held.
        withExtendedLifetime(retired) {}
    }

    /// Builds tables from the current codes (m: the given one, else the setting),
    /// stores them with an empty `pending` in one transaction, then swaps them in.
    private func foldTables(m: Int?) throws {
        let prepared: MultiIndex.PreparedTables
        do {
            prepared = try index.prepareTables(m: m)
        } catch {
            throw StoreError.invalid("\(error)")
        }
        try storeTables(prepared, pending: [])
        rw.withWriteLock { index.install(prepared) }
    }

    /// Stores prepared tables, with `pending` holding exactly the given ids, in one
    /// transaction (writer lock held); counts the commit and the fold.
    private func storeTables(_ prepared: MultiIndex.PreparedTables, pending: [UInt32]) throws {
        var attempt = 0
        while true {
            do {
                try env.write { txn in
                    try txn.clear(dbTables)
                    for j in 0..<prepared.layout.count {
                        let (offsets, ids) = prepared.table(j)
                        var key = UInt32(j)
                        let w = prepared.layout.sizes[j]
                        try withUnsafeBytes(of: &key) { kb in
                            try txn.putReserved(dbTables, key: kb, size: StoredTable.encodedSize(bits: w, ids: ids.count)) { out in
                                StoredTable.encode(offsets: offsets, ids: ids, bits: w, idAt: prepared.idAtPosition, into: out)
                            }
                        }
                    }
                    try txn.clear(dbPending)
                    let empty: [UInt8] = []
                    for id in pending { try empty.withUnsafeBytes { try txn.put(dbPending, id: id, value: $0, flags: 0) } }
                    try txn.putString(dbMeta, "tables_m", String(prepared.layout.count))
                }
                break
            } catch let e as LMDBError where e.isMapFull && attempt < 40 {
                attempt += 1
                try growMap()
            } catch {
                throw StoreError.io("cannot store the tables: \(error)")
            }
        }
        commits += 1
        folds += 1
    }

    /// Recomputes the tables from the stored codes, with m substrings if given (kept
    /// as the setting from then on). Returns the m in use.
    public func rebuild(m: Int? = nil) throws -> Int {
        if backgroundFolds {
            try foldBeside(m: m, setting: true)
            return rw.withReadLock { index.m }
        }
        writerLock.lock()
        defer { writerLock.unlock() }
        if let m { try storeSubstringSetting(m) }
        try foldTables(m: m)
        return rw.withReadLock { index.m }
    }

    /// Makes m the database's fixed substring setting (writer lock held); `invalid` when
    /// no layout has m substrings.
    private func storeSubstringSetting(_ m: Int) throws {
        do { _ = try SubstringLayout(width: width, count: m) } catch {
            throw StoreError.invalid("\(error)")
        }
        try env.write { txn in try txn.putString(dbMeta, "substrings", String(m)) }
        rw.withWriteLock { index.fixedM = m }
    }

    /// Writes a compacted copy of the database and swaps it in while writes go on.
    ///
    /// 1. Under the writer lock (a moment): the environment starts logging the changes of
    ///    every committed write transaction.
    /// 2. No lock: LMDB copies the database, compacted, from one read transaction into
    ///    `data.mdb.compact`; writes continue. Then the logged changes are replayed on the
    ///    copy in rounds (each a transaction on the copy) until few are left.
    /// 3. Under the writer lock (the pause writes see): the last changes are replayed, the
    ///    copy is synced, renamed over the data file and the directory synced; the
    ///    environment is reopened on it.
    ///
    /// Replaying a change the copy already holds is harmless (every change is a blind
    /// put, delete or empty), so logging may start before the copy's snapshot. A crash at
    /// any point leaves the old file whole (the copy is only a temporary file until the
    /// rename) or the new one complete. The tables are not folded (a fold happens by the
    /// usual thresholds, or with REBUILD). Any thread. Returns the file size before and after.
    public func compact() throws -> (before: Int, after: Int) {
        compactLock.lock()
        defer { compactLock.unlock() }
        let before = HashStore.fileSize(dataPath)
        let tmp = directory + "/data.mdb.compact"
        unlink(tmp)
        let log = ChangeLog()
        writerLock.lock()
        do { try growMapAhead() } catch { writerLock.unlock(); throw error }
        env.log = log
        let mapSize = env.mapSize
        writerLock.unlock()
        testPoint("started")
        var copy: Environment?
        var swapped = false
        defer {
            if !swapped {
                writerLock.lock()
                env.log = nil
                writerLock.unlock()
                copy?.close()
                unlink(tmp)
                unlink(tmp + "-lock")
            }
        }
        do {
            try envSwap.withReadLock { try env.copyCompacted(to: tmp) }
            chmod(tmp, 0o600)
            // The bulk of the copy reaches the disk now, not in the pause.
            try HashStore.fsyncPath(tmp)
            copy = try Environment(path: tmp, mapSize: mapSize, maxDatabases: 8, noSync: true)
        } catch {
            throw StoreError.io("compaction copy failed, the database is unchanged: \(error)")
        }
        let target = copy!
        let dbis = try copyDatabases(target)
        testPoint("copied")
        // Catch up while writes go on, until little is left for the pause (a round takes
        // about as long as the writes it replays took to arrive, so the rounds shrink).
        var caughtUp = 0
        for _ in 0..<50 {
            if log.count < 256 && log.bytes < 256 << 10 { break }
            caughtUp += try replay(log.take(), into: target, dbis: dbis)
        }
        do { try target.sync() } catch {
            throw StoreError.io("compaction catch-up failed, the database is unchanged: \(error)")
        }
        testPoint("caught-up")
        writerLock.lock()
        defer { writerLock.unlock() }
        let t0 = DispatchTime.now().uptimeNanoseconds
        var steps: [(String, Double)] = []
        func step(_ name: String) { steps.append((name, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)) }
        env.log = nil
        let last: Int
        do {
            last = try replay(log.take(), into: target, dbis: dbis)
            step("replay")
            try target.sync()
            step("sync")
            target.close()
            step("close-copy")
            copy = nil
            try HashStore.fsyncPath(tmp)
            step("fsync-copy")
        } catch let e as StoreError {
            throw e
        } catch {
            throw StoreError.io("compaction catch-up failed, the database is unchanged: \(error)")
        }
        unlink(tmp + "-lock")
        testPoint("replayed")
        // The swap itself runs under the mirror's write lock too: no reader touches the
        // environment while it is closed. Queries read the mirror, so they only wait for this step.
        let (renamed, renameError, reopenError): (Bool, Int32, Error?) = envSwap.withWriteLock { rw.withWriteLock {
            let mapSize = env.mapSize
            step("locks")
            env.close()
            step("close")
            // A second name for the old file, so that the rename does not free its blocks
            // (150 ms for 750 MB here) inside the pause; it is unlinked after the pause.
            unlink(oldPath)
            _ = link(dataPath, oldPath)
            let renamed = rename(tmp, dataPath) == 0
            let renameError = errno
            if renamed { try? HashStore.fsyncPath(directory) }
            step("rename")
            // A fresh lock file: one left open by another process (an LMDB tool) would
            // still describe the old file.
            unlink(dataPath + "-lock")
            testPoint("renamed")
            do {
                env = try Environment(path: dataPath, mapSize: mapSize, maxDatabases: 8)
                (dbMeta, dbItems, dbTables, dbPending, dbSources) = try env.write { try HashStore.openDatabases($0, create: false) }
                mapBytes = env.mapSize
                return (renamed, renameError, nil)
            } catch {
                return (renamed, renameError, error)
            }
        } }
        swapped = renamed
        step("reopen")
        lastCompactSteps = steps
        writerLock.unlock()
        unlink(oldPath)
        writerLock.lock()
        commits += 1
        lastCompactReplayed = (caughtUp, last)
        if let reopenError {
            throw StoreError.io("cannot reopen the database after compaction: \(reopenError)")
        }
        guard renamed else {
            throw StoreError.io("cannot replace the data file: \(String(cString: strerror(renameError)))")
        }
        return (before, HashStore.fileSize(dataPath))
    }

    /// For the crash tests only: `GDH_TEST_COMPACT_PAUSE=<phase>` makes COMPACT sleep 0.5 s
    /// at that point (started, copied, caught-up, replayed, renamed), so that a test can
    /// kill the process there.
    private static let testPause = ProcessInfo.processInfo.environment["GDH_TEST_COMPACT_PAUSE"]
    /// The same for a fold beside the writes: `copied`, `built` or `stored`.
    private static let foldTestPause = ProcessInfo.processInfo.environment["GDH_TEST_FOLD_PAUSE"]
    private func testPoint(_ phase: String) {
        if HashStore.testPause == phase { usleep(500_000) }
    }

    /// The old data file's second name during a COMPACT swap.
    private var oldPath: String { directory + "/data.mdb.old" }

    /// Opens the five databases (meta, items, tables, pending, sources), the one list of
    /// their names and flags: at open (creating them), after COMPACT's swap, on its copy.
    static func openDatabases(_ txn: Transaction, create: Bool)
        throws -> (MDB_dbi, MDB_dbi, MDB_dbi, MDB_dbi, MDB_dbi) {
        let c = create ? UInt32(MDB_CREATE) : 0
        let ints = c | UInt32(MDB_INTEGERKEY)
        return (try txn.openDatabase("meta", flags: c), try txn.openDatabase("items", flags: ints),
                try txn.openDatabase("tables", flags: ints), try txn.openDatabase("pending", flags: ints),
                try txn.openDatabase("sources", flags: ints))
    }

    /// The copy's handles for this environment's databases.
    private func copyDatabases(_ target: Environment) throws -> [MDB_dbi: MDB_dbi] {
        do {
            let c = try target.write { try HashStore.openDatabases($0, create: false) }
            return [dbMeta: c.0, dbItems: c.1, dbTables: c.2, dbPending: c.3, dbSources: c.4]
        } catch {
            throw StoreError.io("compaction copy is unreadable, the database is unchanged: \(error)")
        }
    }

    /// Replays logged changes on the compaction copy in one transaction, growing the
    /// copy's map when it fills. Returns the number of changes.
    private func replay(_ batches: [ChangeBatch], into target: Environment, dbis: [MDB_dbi: MDB_dbi]) throws -> Int {
        guard !batches.isEmpty else { return 0 }
        var attempt = 0
        while true {
            do {
                try target.write { txn in
                    for b in batches { try b.replay(into: txn, dbis: dbis) }
                }
                return batches.reduce(0) { $0 + $1.ops.count }
            } catch let e as LMDBError where e.isMapFull && attempt < 40 {
                attempt += 1
                try target.setMapSize(target.mapSize * 2)
            }
        }
    }

    /// Writes a consistent, compacted copy of the database to `path` (a new file, never
    /// an existing one) while writes go on: LMDB's copy reads one snapshot in a read
    /// transaction. The copy is written beside the destination, synced, then hard-linked
    /// into place (which fails rather than replace a file that appeared meanwhile) and the
    /// directory synced, so `path` never holds a partial copy. Any thread;
    /// the environment swap of a COMPACT waits for a running backup. Returns the size.
    ///
    /// Restore: put the file as `data.mdb` in an empty directory and open that.
    public func backup(to path: String) throws -> Int {
        guard path.hasPrefix("/") else { throw StoreError.invalid("backup path must be absolute: \(path)") }
        var st = stat()
        if lstat(path, &st) == 0 { throw StoreError.invalid("\(path) exists; a backup never replaces a file") }
        let slash = path.lastIndex(of: "/")!
        let parent = slash == path.startIndex ? "/" : String(path[..<slash])
        guard path.index(after: slash) < path.endIndex else { throw StoreError.invalid("backup path names a directory: \(path)") }
        guard stat(parent, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
            throw StoreError.invalid("the directory \(parent) does not exist")
        }
        let tmp = path + ".partial"
        unlink(tmp)
        do {
            try envSwap.withReadLock { try env.copyCompacted(to: tmp) }
            chmod(tmp, 0o600)
            try HashStore.fsyncPath(tmp)
            guard link(tmp, path) == 0 else {
                throw StoreError.invalid("cannot create \(path): \(String(cString: strerror(errno)))")
            }
            unlink(tmp)
            try HashStore.fsyncPath(parent)
        } catch let e as StoreError {
            unlink(tmp)
            throw e
        } catch {
            unlink(tmp)
            throw StoreError.io("backup to \(path) failed: \(error)")
        }
        return HashStore.fileSize(path)
    }

    static func fsyncPath(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw StoreError.io("cannot open \(path) to sync it") }
        defer { Glibc.close(fd) }
        guard fsync(fd) == 0 else { throw StoreError.io("cannot sync \(path): \(String(cString: strerror(errno)))") }
    }

    /// Records that `identity` made the stored image codes (after every stored image was
    /// encoded again with it), or with nil removes the record (the codes' model is then
    /// unknown). Writer thread.
    public func setModelIdentity(_ identity: String?) throws {
        writerLock.lock()
        defer { writerLock.unlock() }
        var attempt = 0
        while true {
            do {
                try env.write { txn in
                    if let identity {
                        try txn.putString(dbMeta, HashStore.modelIdentityKey, identity)
                    } else {
                        try txn.deleteString(dbMeta, HashStore.modelIdentityKey)
                    }
                }
                break
            } catch let e as LMDBError where e.isMapFull && attempt < 40 {
                attempt += 1
                try growMap()
            } catch {
                throw StoreError.io("cannot record the model identity: \(error)")
            }
        }
        rw.withWriteLock { recordedModel = identity }
    }

    /// Every item that has a stored source: id, key and source, in id order, from one
    /// read transaction (a snapshot; any thread: writes go on meanwhile).
    public func sources() throws -> [(id: UInt32, key: String, source: ItemSource)] {
        do {
            let found: [(UInt32, ItemSource)] = try envSwap.withReadLock {
                try env.read { txn in
                    var out: [(UInt32, ItemSource)] = []
                    try txn.forEach(dbSources) { k, v in
                        if let s = ItemSource(encoded: v) { out.append((k.loadUnaligned(as: UInt32.self), s)) }
                    }
                    return out
                }
            }
            // An id names one key for life, also after a delete since the snapshot.
            return rw.withReadLock {
                found.map { id, s in (id, keys.withKeyBytes(ofAnyID: id) { String(decoding: $0, as: UTF8.self) }, s) }
            }
        } catch {
            throw StoreError.io("cannot read the item sources: \(error)")
        }
    }

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
        let bytes = width.bytes
        writerLock.lock()
        var holdsWriterLock = true
        try growMapAhead()
        defer {
            if holdsWriterLock { writerLock.unlock() }
            rw.withWriteLock { verifyChanged = nil }
        }
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
                var pending = Set<UInt32>()
                try txn.forEach(dbPending) { k, _ in pending.insert(k.loadUnaligned(as: UInt32.self)) }
                // Items, a chunk at a time under the read lock. Record pointers stay valid
                // for the transaction.
                var notPending = 0
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
                // The stored tables: well formed, and every item not pending is in them.
                guard let tmText = try txn.getString(dbMeta, "tables_m"), let tm = Int(tmText),
                      let layout = try? SubstringLayout(width: width, count: tm) else {
                    throw StoreError.corrupt("the stored tables are missing")
                }
                var stale = 0
                for j in 0..<tm {
                    guard let table = try StoredTable.read(txn, dbTables, table: j, bits: layout.sizes[j]) else {
                        throw StoreError.corrupt("stored table \(j) is missing")
                    }
                    var seen = 0
                    var v = 0
                    var i = 0
                    // Entries a chunk at a time under the read lock; an item's substring
                    // comes from the mirror unless a write changed it since the snapshot.
                    while i < table.ids.count {
                        let end = min(table.ids.count, i + 65_536)
                        try rw.withReadLock {
                            for e in i..<end {
                                while Int(table.offsets[v + 1]) <= e { v += 1 }
                                let id = table.ids[e]
                                if pending.contains(id) { continue }
                                let sub: UInt32?
                                if verifyChanged!.contains(id) {
                                    sub = try txn.get(dbItems, id: id).flatMap { rec in
                                        (try? HammingCode(bytes: rec[0..<bytes], width: width)).map { c in
                                            c.words.withUnsafeBufferPointer { layout.substring(j, of: $0.baseAddress!) }
                                        }
                                    }
                                } else {
                                    sub = index.codes.isLive(id) ? layout.substring(j, of: index.codes.pointer(id)) : nil
                                }
                                if sub == UInt32(v) { seen += 1 } else { stale += 1 }
                            }
                        }
                        i = end
                    }
                    guard seen == notPending else {
                        throw StoreError.corrupt("stored table \(j) holds \(seen) of the \(notPending) items it should")
                    }
                }
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
            throw StoreError.io("verify could not read the database: \(error)")
        }
    }
}
