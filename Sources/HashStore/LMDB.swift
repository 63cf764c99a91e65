import CLMDB
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One LMDB failure, with LMDB's own message.
public struct LMDBError: Error, CustomStringConvertible, Equatable {
    public let code: Int32
    public let operation: String
    public var description: String {
        "\(operation): \(String(cString: mdb_strerror(code)))"
    }
    public var isMapFull: Bool { code == MDB_MAP_FULL }
}

/// Runs `body` (one write transaction) again after `grow` whenever LMDB reports the map
/// full, up to 40 times (`grow` doubles the map); any other error, a failure of `grow` and
/// a 41st full map are thrown as they are.
func retryingWhenMapFull<T>(grow: () throws -> Void, _ body: () throws -> T) throws -> T {
    var attempt = 0
    while true {
        do {
            return try body()
        } catch let e as LMDBError where e.isMapFull && attempt < 40 {
            attempt += 1
            try grow()
        }
    }
}

@inline(__always)
func check(_ rc: Int32, _ operation: @autoclosure () -> String) throws {
    if rc != 0 { throw LMDBError(code: rc, operation: operation()) }
}

/// An LMDB environment opened on a single data file (MDB_NOSUBDIR), with
/// MDB_NOTLS so transactions are not tied to threads. Every commit is synced
/// (no MDB_NOSYNC): a write acknowledged after `commit` survives a crash.
final class Environment {
    /// LMDB's environment handle: valid until `close`. COMPACT closes the store's
    /// environment and opens a new one, so hold it only under the store's `envSwap` (or
    /// the writer lock).
    private(set) var env: OpaquePointer
    let path: String
    /// While set, every committed write transaction appends its changes here (COMPACT
    /// replays them on its copy). Set and cleared by the one writer, between transactions.
    var log: ChangeLog?

    /// How an environment is opened: for writing (with a map size, optionally without
    /// syncing commits, and with `lockFile` false MDB_NOLOCK: no lock file, for a file
    /// only this environment uses), or read-only (MDB_RDONLY: the map size is the file's
    /// own, and nothing is written to the data file; with `lockFile` false also
    /// MDB_NOLOCK, so that not even LMDB's lock file is created or written).
    enum Access {
        case readWrite(mapSize: Int, noSync: Bool, lockFile: Bool = true)
        case readOnly(lockFile: Bool)
    }

    convenience init(path: String, mapSize: Int, maxDatabases: UInt32, noSync: Bool = false, lockFile: Bool = true) throws {
        try self.init(path: path, access: .readWrite(mapSize: mapSize, noSync: noSync, lockFile: lockFile),
                      maxDatabases: maxDatabases)
    }

    init(path: String, access: Access, maxDatabases: UInt32) throws {
        self.path = path
        var e: OpaquePointer?
        try check(mdb_env_create(&e), "mdb_env_create")
        guard let e else { throw LMDBError(code: EINVAL, operation: "mdb_env_create") }
        env = e
        do {
            try check(mdb_env_set_maxdbs(e, maxDatabases), "mdb_env_set_maxdbs")
            var flags = UInt32(MDB_NOSUBDIR) | UInt32(MDB_NOTLS)
            switch access {
            case .readWrite(let mapSize, let noSync, let lockFile):
                try check(mdb_env_set_mapsize(e, mapSize), "mdb_env_set_mapsize")
                if noSync { flags |= UInt32(MDB_NOSYNC) }
                if !lockFile { flags |= UInt32(MDB_NOLOCK) }
            case .readOnly(let lockFile):
                flags |= UInt32(MDB_RDONLY)
                if !lockFile { flags |= UInt32(MDB_NOLOCK) }
            }
            try check(mdb_env_open(e, path, flags, 0o600), "mdb_env_open \(path)")
        } catch {
            mdb_env_close(e)
            throw error
        }
    }

    func close() { mdb_env_close(env) }

    var mapSize: Int { info.me_mapsize }

    /// LMDB's environment information (map size, last page used, readers).
    var info: MDB_envinfo {
        var info = MDB_envinfo()
        mdb_env_info(env, &info)
        return info
    }

    /// The size of a database page.
    var pageSize: Int {
        var st = MDB_stat()
        mdb_env_stat(env, &st)
        return Int(st.ms_psize)
    }

    /// Grows the map; only while no transaction is open in this process.
    func setMapSize(_ size: Int) throws {
        try check(mdb_env_set_mapsize(env, size), "mdb_env_set_mapsize")
    }

    /// Flushes every committed transaction to disk (for an environment opened with noSync).
    func sync() throws {
        try check(mdb_env_sync(env, 1), "mdb_env_sync")
    }

    /// For an environment opened with noSync: waits for the data file's writeback already
    /// under way, then starts it for every page written since, without waiting for that
    /// (sync_file_range), so that dirty pages do not pile up for one long sync at the end.
    /// Best effort: `sync` still makes the file durable.
    func flushBehind() {
        var fd: Int32 = -1
        guard mdb_env_get_fd(env, &fd) == 0, fd >= 0 else { return }
        _ = gdh_flush_behind(fd)
    }

    /// Writes a compacted copy of the environment to `path` (a file).
    func copyCompacted(to path: String) throws {
        try check(mdb_env_copy2(env, path, UInt32(MDB_CP_COMPACT)), "mdb_env_copy2")
    }

    /// Runs `body` in a write transaction and commits it; aborts on a thrown error. The
    /// transaction, and every buffer it hands out, is valid only inside `body`.
    func write<T>(_ body: (Transaction) throws -> T) throws -> T {
        let txn = try Transaction(env: env, readOnly: false)
        if log != nil { txn.changes = ChangeBatch() }
        do {
            let result = try body(txn)
            try txn.commit()
            if let log, let changes = txn.changes, !changes.isEmpty { log.append(changes) }
            return result
        } catch {
            txn.abort()
            throw error
        }
    }

    /// Runs `body` in a read-only transaction. The transaction, and every value read (a
    /// pointer into the memory map), is valid only inside `body`.
    func read<T>(_ body: (Transaction) throws -> T) throws -> T {
        let txn = try Transaction(env: env, readOnly: true)
        defer { txn.abort() }
        return try body(txn)
    }
}

/// A transaction. Byte buffers handed out by `get` and cursors point into the memory
/// map and are valid only until the next update in this transaction or its end.
final class Transaction {
    /// LMDB's transaction handle: valid until `commit` or `abort` (for a transaction of
    /// `Environment.read`/`write`, until the closure returns).
    let txn: OpaquePointer
    private var finished = false
    /// The changes made, when the environment is recording them.
    var changes: ChangeBatch?

    init(env: OpaquePointer, readOnly: Bool) throws {
        var t: OpaquePointer?
        try check(mdb_txn_begin(env, nil, readOnly ? UInt32(MDB_RDONLY) : 0, &t), "mdb_txn_begin")
        txn = t!
    }

    func commit() throws {
        finished = true
        try check(mdb_txn_commit(txn), "mdb_txn_commit")
    }

    func abort() {
        if !finished { mdb_txn_abort(txn) }
        finished = true
    }

    func openDatabase(_ name: String, flags: UInt32) throws -> MDB_dbi {
        var dbi: MDB_dbi = 0
        try check(mdb_dbi_open(txn, name, flags, &dbi), "mdb_dbi_open \(name)")
        return dbi
    }

    func put(_ dbi: MDB_dbi, key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, flags: UInt32 = 0) throws {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val(mv_size: value.count, mv_data: UnsafeMutableRawPointer(mutating: value.baseAddress))
        try check(mdb_put(txn, dbi, &k, &v, flags), "mdb_put")
        changes?.put(dbi, key, value)
    }

    /// Reserves `size` bytes for a value and lets `fill` write them in place. The buffer
    /// points into the memory map and is valid only during `fill`.
    func putReserved(_ dbi: MDB_dbi, key: UnsafeRawBufferPointer, size: Int, fill: (UnsafeMutableRawBufferPointer) -> Void) throws {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val(mv_size: size, mv_data: nil)
        try check(mdb_put(txn, dbi, &k, &v, UInt32(MDB_RESERVE)), "mdb_put reserve")
        fill(UnsafeMutableRawBufferPointer(start: v.mv_data, count: size))
        changes?.put(dbi, key, UnsafeRawBufferPointer(start: v.mv_data, count: size))
    }

    /// The value stored under `key`, or nil. The buffer points into the memory map: valid
    /// until the next update in this transaction or its end, whichever comes first.
    func get(_ dbi: MDB_dbi, key: UnsafeRawBufferPointer) throws -> UnsafeRawBufferPointer? {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val()
        let rc = mdb_get(txn, dbi, &k, &v)
        if rc == MDB_NOTFOUND { return nil }
        try check(rc, "mdb_get")
        return UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size)
    }

    /// Deletes a key; returns whether it existed.
    @discardableResult
    func delete(_ dbi: MDB_dbi, key: UnsafeRawBufferPointer) throws -> Bool {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        let rc = mdb_del(txn, dbi, &k, nil)
        if rc == MDB_NOTFOUND { return false }
        try check(rc, "mdb_del")
        changes?.delete(dbi, key)
        return true
    }

    /// Empties a database.
    func clear(_ dbi: MDB_dbi) throws {
        try check(mdb_drop(txn, dbi, 0), "mdb_drop")
        changes?.clear(dbi)
    }

    func count(_ dbi: MDB_dbi) throws -> Int {
        try stat(dbi).ms_entries
    }

    /// LMDB's statistics of a database: entries, B-tree depth, pages by kind.
    func stat(_ dbi: MDB_dbi) throws -> MDB_stat {
        var st = MDB_stat()
        try check(mdb_stat(txn, dbi, &st), "mdb_stat")
        return st
    }

    /// Pages on LMDB's free list (free for reuse by later writes), as `mdb_stat -f`
    /// counts them: each record of the free database (handle 0) is a u-size count of
    /// page numbers followed by the numbers.
    func freePages() throws -> Int {
        var pages = 0
        try forEach(0) { _, v in
            if v.count >= MemoryLayout<Int>.size { pages += v.loadUnaligned(as: Int.self) }
        }
        return pages
    }

    /// Calls `body` with every key and value in key order. Both buffers point into the
    /// memory map: valid until the next update in this transaction or its end (so `body`
    /// may keep them while it only reads, as VERIFY does, but not past the transaction).
    func forEach(_ dbi: MDB_dbi, _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Void) throws {
        var c: OpaquePointer?
        try check(mdb_cursor_open(txn, dbi, &c), "mdb_cursor_open")
        defer { mdb_cursor_close(c) }
        var k = MDB_val(), v = MDB_val()
        var op = MDB_FIRST
        while true {
            let rc = mdb_cursor_get(c, &k, &v, op)
            if rc == MDB_NOTFOUND { break }
            try check(rc, "mdb_cursor_get")
            try body(UnsafeRawBufferPointer(start: k.mv_data, count: k.mv_size),
                     UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size))
            op = MDB_NEXT
        }
    }
}

extension Transaction {
    func put(_ dbi: MDB_dbi, id: UInt32, value: UnsafeRawBufferPointer, flags: UInt32 = 0) throws {
        var key = id
        try withUnsafeBytes(of: &key) { try put(dbi, key: $0, value: value, flags: flags) }
    }

    /// `get` by a u32 key; the same lifetime: until the next update or the transaction's end.
    func get(_ dbi: MDB_dbi, id: UInt32) throws -> UnsafeRawBufferPointer? {
        var key = id
        return try withUnsafeBytes(of: &key) { try get(dbi, key: $0) }
    }

    @discardableResult
    func delete(_ dbi: MDB_dbi, id: UInt32) throws -> Bool {
        var key = id
        return try withUnsafeBytes(of: &key) { try delete(dbi, key: $0) }
    }

    func putString(_ dbi: MDB_dbi, _ key: String, _ value: String) throws {
        var k = Array(key.utf8), v = Array(value.utf8)
        try k.withUnsafeMutableBytes { kb in try v.withUnsafeMutableBytes { vb in
            try put(dbi, key: UnsafeRawBufferPointer(kb), value: UnsafeRawBufferPointer(vb))
        } }
    }

    @discardableResult
    func deleteString(_ dbi: MDB_dbi, _ key: String) throws -> Bool {
        let k = Array(key.utf8)
        return try k.withUnsafeBytes { try delete(dbi, key: $0) }
    }

    /// A value as a string (a copy: it outlives the transaction).
    func getString(_ dbi: MDB_dbi, _ key: String) throws -> String? {
        let k = Array(key.utf8)
        return try k.withUnsafeBytes { kb in
            try get(dbi, key: kb).map { String(decoding: $0, as: UTF8.self) }
        }
    }
}

/// The changes of one committed transaction as blind writes (put, delete, empty a
/// database), in order, with their bytes in one flat buffer.
struct ChangeBatch {
    enum Kind: UInt8 { case put, delete, clear }
    struct Op {
        let kind: Kind
        let dbi: MDB_dbi
        let key: Range<Int>
        let value: Range<Int>
    }
    private(set) var ops: [Op] = []
    private(set) var bytes: [UInt8] = []

    var isEmpty: Bool { ops.isEmpty }
    var byteCount: Int { bytes.count }

    private mutating func store(_ b: UnsafeRawBufferPointer) -> Range<Int> {
        let start = bytes.count
        bytes.append(contentsOf: b)
        return start..<bytes.count
    }

    /// Records a put; the key and value bytes are copied, so they need to be valid only
    /// during the call.
    mutating func put(_ dbi: MDB_dbi, _ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) {
        let k = store(key), v = store(value)
        ops.append(Op(kind: .put, dbi: dbi, key: k, value: v))
    }

    mutating func delete(_ dbi: MDB_dbi, _ key: UnsafeRawBufferPointer) {
        ops.append(Op(kind: .delete, dbi: dbi, key: store(key), value: 0..<0))
    }

    mutating func clear(_ dbi: MDB_dbi) {
        ops.append(Op(kind: .clear, dbi: dbi, key: 0..<0, value: 0..<0))
    }

    /// Applies the changes in `txn` (of another environment with the same databases:
    /// `dbis` maps this environment's handles to its). Replaying changes that the target
    /// already holds is harmless: every change is a blind write, so the last one wins.
    func replay(into txn: Transaction, dbis: [MDB_dbi: MDB_dbi]) throws {
        try bytes.withUnsafeBytes { raw in
            for op in ops {
                guard let dbi = dbis[op.dbi] else { throw LMDBError(code: EINVAL, operation: "replay: unknown database \(op.dbi)") }
                switch op.kind {
                case .put:
                    try txn.put(dbi, key: UnsafeRawBufferPointer(rebasing: raw[op.key]), value: UnsafeRawBufferPointer(rebasing: raw[op.value]))
                case .delete:
                    try txn.delete(dbi, key: UnsafeRawBufferPointer(rebasing: raw[op.key]))
                case .clear:
                    try txn.clear(dbi)
                }
            }
        }
    }
}

/// Committed transactions' changes, appended by the writer and taken by a reader
/// (COMPACT's catch-up) in commit order.
final class ChangeLog: @unchecked Sendable {
    private let lock = NSLock()
    private var batches: [ChangeBatch] = []
    private var ops = 0
    private var byteCount = 0

    func append(_ batch: ChangeBatch) {
        lock.lock(); defer { lock.unlock() }
        batches.append(batch)
        ops += batch.ops.count
        byteCount += batch.byteCount
    }

    /// Everything appended so far, emptying the log.
    func take() -> [ChangeBatch] {
        lock.lock(); defer { lock.unlock() }
        let b = batches
        batches = []
        ops = 0
        byteCount = 0
        return b
    }

    /// Bytes of the changes waiting to be taken.
    var bytes: Int {
        lock.lock(); defer { lock.unlock() }
        return byteCount
    }

    /// Changes waiting to be taken.
    var count: Int {
        lock.lock(); defer { lock.unlock() }
        return ops
    }
}
