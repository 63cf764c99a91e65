import CLMDB
import Foundation
import HammingCode
import MultiIndex
#if canImport(Glibc)
import Glibc
#endif

/// Options for opening (and on first use, creating) a database.
public struct StoreOptions: Sendable {
    /// Code width for a new database; an existing one must match when given.
    public var bits: Int?
    /// Fixed substring count m; nil keeps the stored setting (automatic for a new one).
    public var substrings: Int?
    /// Initial map size in bytes; the map doubles whenever it fills up.
    public var initialMapSize: Int = 64 << 20
    /// Delta entries (per table, on average) after which the writer folds the tables.
    /// nil: max(262,144, N / 4), and a sixteenth (at least 65,536) once the writer has been
    /// idle a second or a minute has passed since the last fold (`HashStore.foldIfNeeded`).
    public var foldThreshold: Int?
    /// Fold beside the writes: the tables are built from a copy of the codes on a thread of
    /// their own, and the writer pauses only for the copy and for storing and installing
    /// them (`HashStore.foldBeside`). Off: the batch that passes the threshold folds inline.
    public var backgroundFolds = false
    /// Bytes per chunk of a stored table (`TableChunks`), small enough that writing one
    /// chunk keeps writes waiting well under 50 ms; tests make it smaller.
    var tableChunkBytes = HashStore.defaultTableChunkBytes
    /// Ids copied per piece of a fold's snapshot (each piece under the writer lock).
    var copyPieceIDs = 262_144

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
/// - `tables`: (generation, chunk, table) as a u32 (`TableChunks`) → a chunk of a table's
///   stored form (`StoredTable`): ids grouped by substring value, ascending per bucket,
///   and the bucket sizes in unary; meta `tables_generation` names the generation in use;
/// - `pending`: ids below the tables' watermark (meta `tables_next_id`, the next id when the
///   tables' codes were taken) changed since the tables were written. Every item id at or
///   above the watermark counts as pending without a record (`PendingIDs`).
///
/// and an exact in-memory mirror (codes by id, multi-index tables, keys) that all
/// queries read, so no query touches LMDB. LMDB is the durable truth: the mirror is
/// rebuilt from it at open and changed only after a commit has succeeded.
///
/// Threading: searches and look-ups may run on any number of threads at once; every
/// write, compaction, rebuild and verify must come from one writer thread at a time.
///
/// The class is cut into files by concern: this one holds the state, opening (environment
/// and schema) and closing, and the map's growth; `Settings.swift` the settings kept in
/// `meta`; `Mirror.swift` loading the mirror and applying committed changes to it;
/// `Reads.swift` the queries (any thread); `GroupCommit.swift` `apply` (a batch in one
/// transaction); `Folds.swift` folds (inline and beside the writes) and REBUILD;
/// `TableChunks.swift` where the stored tables' chunks live; `Compaction.swift` COMPACT (its
/// change log and replay); `Backup.swift` BACKUP;
/// `ItemSources.swift` the stored sources REENCODE reads; `Verification.swift` VERIFY.
public final class HashStore {
    public static let formatVersion = 1
    public let directory: String
    public let width: CodeWidth
    public var dataPath: String { directory + "/data.mdb" }

    var env: Environment
    var dbMeta: MDB_dbi = 0
    var dbItems: MDB_dbi = 0
    var dbTables: MDB_dbi = 0
    var dbPending: MDB_dbi = 0
    var dbSources: MDB_dbi = 0
    let lockFD: Int32
    private var closed = false

    let index: MultiIndex
    let keys: KeyIndex
    let rw = ReadWriteLock()
    var nextID: UInt32
    let foldThreshold: Int?
    let backgroundFolds: Bool
    /// `StoreOptions.tableChunkBytes` and `copyPieceIDs`.
    let tableChunkBytes: Int
    let copyPieceIDs: Int
    /// Ids of the key index a reclaim goes through after each batch (`reclaimKeysIfNeeded`):
    /// about a millisecond's work.
    let keyReclaimPiece = 65_536
    /// While a fold builds tables beside the writes: the ids written since its snapshot
    /// (under `rw`).
    var foldChanged: ChangedIDs?
    /// The watermark of the stored tables (meta `tables_next_id`): item ids at or above it
    /// count as pending without a `pending` record. `UInt32.max` for a database whose
    /// tables were stored before watermarks (every pending id has its record). Under
    /// `writerLock`.
    var storedWatermark = UInt32.max
    /// The watermark of the tables a fold beside the writes is building (the next id when
    /// its snapshot began), until the fold ends. Under `writerLock`.
    var foldWatermark: UInt32?
    /// Writes put a `pending` record for the ids below this: the stored watermark, or a
    /// running fold's when higher (its tables become the stored ones at its switch, and
    /// every id they may miss below their watermark must be in `pending` by then).
    var pendingBelow: UInt32 { max(storedWatermark, foldWatermark ?? 0) }
    /// One fold beside the writes at a time (automatic, or REBUILD).
    let foldLock = NSLock()
    /// An automatic fold thread has been started and not finished (under `writerLock`).
    var foldScheduled = false
    /// When the last automatic fold ended (or the store opened), in `DispatchTime` nanoseconds
    /// (under `writerLock`).
    var lastFoldEnded = DispatchTime.now().uptimeNanoseconds
    /// How long after the last automatic fold a write folds a delta past the small limit
    /// (`foldIfNeeded`): a minute; tests shorten it. Under `writerLock`.
    var trickleFoldNanoseconds: UInt64 = 60_000_000_000
    /// The last fold beside the writes: seconds of its steps (the copy and the store and
    /// install pause the writer; the build does not).
    public internal(set) var lastFoldSteps: [(String, Double)] = []
    /// Automatic fold threads running; `close` waits for them.
    let foldThreads = DispatchGroup()

    /// The meta key recording which model made the image codes.
    static let modelIdentityKey = "model_identity"
    /// The recorded model identity and the number of items with a stored source, mirrored
    /// from LMDB (read under `rw`).
    var recordedModel: String?
    var imageItemCount = 0

    /// The map size, kept beside the environment so STATS never touches an
    /// environment that COMPACT is swapping.
    var mapBytes = 0
    /// The last failure of an automatic fold (the writes themselves had committed).
    public internal(set) var lastFoldError: String?

    /// Bumped by each committed batch that removes keys (under `rw`): the key index tags
    /// the removes with it, and `pinKeys` records it (`reclaimKeysIfNeeded`).
    var keyGeneration: UInt64 = 0
    /// Generations pinned by readers that will still resolve ids to keys.
    let keyPins = KeyPins()
    /// Times the key index's garbage was given back.
    public internal(set) var keyReclaims = 0

    /// The phases of the last write batch (`apply`), for benchmarks.
    public internal(set) var lastApplyPhases = ApplyPhases()

    /// Counters for STATS.
    public internal(set) var commits = 0
    public internal(set) var folds = 0
    /// Keys touched by the batch being written (writer thread only; storage reused).
    var batchKeys = BatchKeys()
    /// Held for reading by a backup (which reads the environment off the writer thread)
    /// and for writing by the environment swap of COMPACT.
    let envSwap = ReadWriteLock()
    /// Held by every write to LMDB and the mirror (`apply`, folds, `rebuild`, model
    /// identity, `verify`) and by COMPACT's start and its final catch-up and swap, which
    /// run on another thread than the writer's.
    let writerLock = NSLock()
    /// Batches of `apply` waiting for `writerLock`: a fold beside the writes lets them in
    /// between its pieces (`yieldToWriter`).
    let writesWaiting = Guarded(0)
    /// COMPACT's pause waiting for `writerLock`: the next batch of `apply` lets it in
    /// first (`yieldToPause`).
    let pauseWaiting = Guarded(0)
    /// One COMPACT at a time; VERIFY holds it too (its snapshot must outlive no swap).
    let compactLock = NSLock()
    /// While a VERIFY runs: the ids written since its snapshot (under `rw`).
    var verifyChanged: Set<UInt32>?
    /// Measured by the last COMPACT: the changes replayed before its final step and in it.
    public internal(set) var lastCompactReplayed = (catchUp: 0, final: 0)
    /// The steps of the last COMPACT's pause: (name, seconds since the pause began).
    public internal(set) var lastCompactSteps: [(String, Double)] = []
    /// The last COMPACT's steps from its start: (name, seconds since the start).
    public internal(set) var lastCompactTimeline: [(String, Double)] = []
    /// How long writes waited for the last COMPACT's final step (seconds).
    public var lastCompactPause: Double { lastCompactSteps.last?.1 ?? 0 }

    // MARK: - Open and close

    /// Opens the database in `directory`, creating the directory and the database on first
    /// use: takes the directory's lock, opens the environment, reads (or writes) the
    /// settings in `meta`, then loads the mirror.
    public init(directory: String, options: StoreOptions = StoreOptions()) throws {
        self.directory = directory
        self.foldThreshold = options.foldThreshold
        self.backgroundFolds = options.backgroundFolds
        self.tableChunkBytes = options.tableChunkBytes
        self.copyPieceIDs = max(1, options.copyPieceIDs)
        let fd = try HashStore.lockDirectory(directory)
        lockFD = fd
        var opened = false
        defer { if !opened { Glibc.close(fd) } }
        env = try HashStore.openEnvironment(directory, initialMapSize: options.initialMapSize)
        let settings: StoredSettings
        do {
            let dbs: Databases
            (dbs, settings) = try HashStore.openSchema(env, options: options, directory: directory)
            (dbMeta, dbItems, dbTables, dbPending, dbSources) = dbs
        } catch {
            env.close()
            throw error
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
        storedWatermark = settings.tablesNextID ?? UInt32.max
        recordedModel = settings.model
        imageItemCount = settings.imageItems
        mapBytes = env.mapSize
        do {
            try loadMirror(tablesM: settings.tablesM, generation: settings.tablesGeneration)
        } catch {
            env.close()
            throw error
        }
        opened = true
    }

    /// Creates the directory if needed and takes its lock (`gdhd.lock`, one daemon per
    /// database: an exclusive lock held for the life of the store). Returns the lock's
    /// descriptor; `locked` when another process holds it.
    private static func lockDirectory(_ directory: String) throws -> Int32 {
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw StoreError.io("cannot create database directory \(directory): \(String(cString: strerror(errno)))")
        }
        let fd = open(directory + "/gdhd.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw StoreError.io("cannot open \(directory)/gdhd.lock: \(String(cString: strerror(errno)))")
        }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            Glibc.close(fd)
            throw StoreError.locked("database \(directory) is in use by another process")
        }
        return fd
    }

    /// Removes what a crashed COMPACT left and opens the environment on `data.mdb`, with a
    /// map at least twice the file (the directory's lock held).
    private static func openEnvironment(_ directory: String, initialMapSize: Int) throws -> Environment {
        // A compaction that died before its rename left only a temporary copy; one that
        // died after it, a second name of the old file.
        unlink(directory + "/data.mdb.compact")
        unlink(directory + "/data.mdb.old")

        let fileSize = HashStore.fileSize(directory + "/data.mdb")
        var mapSize = max(initialMapSize, 1 << 20)
        while mapSize < fileSize * 2 { mapSize *= 2 }
        do {
            return try Environment(path: directory + "/data.mdb", mapSize: mapSize, maxDatabases: HashStore.maxDatabases)
        } catch {
            throw StoreError.storage(error, "cannot open database \(directory)", dataPath: directory + "/data.mdb")
        }
    }

    /// Opens (creating) the databases, reads or creates the settings and removes stray
    /// stored-table chunks (`TableChunks`), in one write transaction. The caller closes
    /// `env` when this throws.
    private static func openSchema(_ env: Environment, options: StoreOptions, directory: String) throws
        -> (Databases, StoredSettings) {
        do {
            var dbs: Databases = (0, 0, 0, 0, 0)
            let settings = try env.write { txn in
                dbs = try HashStore.openDatabases(txn, create: true)
                let settings = try StoredSettings.readOrCreate(txn, meta: dbs.0, sources: dbs.4, options: options, directory: directory)
                // What a fold that died left of another generation of tables.
                try TableChunks.removeOthers(txn, dbs.2, keep: settings.tablesGeneration)
                return settings
            }
            return (dbs, settings)
        } catch let e as StoreError {
            throw e
        } catch {
            throw StoreError.storage(error, "cannot read database \(directory)", dataPath: directory + "/data.mdb")
        }
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

    /// Room ahead (twice the file and 64 MiB), so that writes during a copy or a VERIFY
    /// seldom need to grow the map, which waits for them (writer lock held).
    func growMapAhead() throws {
        let file = HashStore.fileSize(dataPath)
        while env.mapSize < 2 * file + (64 << 20) { try growMap() }
    }

    /// Doubles the map. LMDB remaps the file, so this waits for copies (backup, COMPACT)
    /// that read the environment from another thread.
    func growMap() throws {
        try envSwap.withWriteLock {
            let size = env.mapSize * 2
            do { try env.setMapSize(size) } catch {
                throw StoreError.storage(error, "cannot grow the map to \(size) bytes", dataPath: dataPath)
            }
            rw.withWriteLock { mapBytes = size }
        }
    }

    /// Hands the allocator's free pages back to the system (`malloc_trim`): the old code
    /// block, tables and key arena a fold, a COMPACT or a key reclaim leaves free in the
    /// middle of the heap would otherwise stay resident. Call with no store lock held (it
    /// takes the allocator's locks, one arena at a time).
    static func releaseFreeMemory() {
        #if canImport(Glibc)
        _ = malloc_trim(0)
        #endif
    }

    /// LMDB's limit of named databases for every environment the store opens (the five
    /// of `openDatabases`, and room to spare).
    static let maxDatabases: UInt32 = 8

    /// The handles of meta, items, tables, pending and sources, in that order.
    typealias Databases = (MDB_dbi, MDB_dbi, MDB_dbi, MDB_dbi, MDB_dbi)

    /// The names of the databases, in the order of `Databases`.
    static let databaseNames = ["meta", "items", "tables", "pending", "sources"]

    /// Opens the five databases (meta, items, tables, pending, sources), the one list of
    /// their names and flags: at open (creating them), after COMPACT's swap, on its copy.
    static func openDatabases(_ txn: Transaction, create: Bool) throws -> Databases {
        let c = create ? UInt32(MDB_CREATE) : 0
        let ints = c | UInt32(MDB_INTEGERKEY)
        let n = databaseNames
        return (try txn.openDatabase(n[0], flags: c), try txn.openDatabase(n[1], flags: ints),
                try txn.openDatabase(n[2], flags: ints), try txn.openDatabase(n[3], flags: ints),
                try txn.openDatabase(n[4], flags: ints))
    }

    static func fsyncPath(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw StoreError.io("cannot open \(path) to sync it") }
        defer { Glibc.close(fd) }
        guard fsync(fd) == 0 else {
            let e = errno
            throw StoreError.kind(lmdbCode: e)("cannot sync \(path): \(String(cString: strerror(e)))")
        }
    }
}
