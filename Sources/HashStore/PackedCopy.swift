import CLMDB
import Foundation
#if canImport(Glibc)
import Glibc
#endif

extension HashStore {
    /// Writes a packed copy of one snapshot of the database (a read transaction; writes go
    /// on) to a new file at `path` (mode 0600), synced, and returns its environment open
    /// (without syncing commits and without a lock file) for the caller to close. On
    /// failure the file is removed.
    ///
    /// LMDB's compacting copy (`mdb_env_copy2` with `MDB_CP_COMPACT`) leaves out the free
    /// pages but copies the others as they are, and after many deletes LMDB's B-tree pages
    /// are as little as a quarter full (it merges a page only below that): 1M items with 90%
    /// deleted compacted to 13.2 MB, against 5.1 MB for a database holding only the
    /// survivors (`gdh-bench deletes`). Here every record is put again, in key order with `MDB_APPEND`, into a
    /// fresh environment, so that every page is full: the copy costs what the live items
    /// cost. The records go over in transactions of about `chunkBytes` (the copy's commits
    /// are not synced; memory stays bounded), and after each the writeback of the pages
    /// written so far is started (`Environment.flushBehind`): left to the end, the sync of
    /// hundreds of MB filled the disk's queue and the writer's commits waited 80-165 ms
    /// behind it at 10M items (LMDB's own copy writes with O_DIRECT, which this cannot).
    ///
    /// A file with a database the store does not know (one another program added) gets
    /// LMDB's compacting copy instead, which copies everything. Caller holds `envSwap`'s
    /// read lock or the writer lock.
    func writePackedCopy(to path: String, mapSize: Int, chunkBytes: Int = 8 << 20) throws -> Environment {
        // No lock file: only this environment uses the copy until it is closed.
        let target = try Environment(path: path, mapSize: mapSize, maxDatabases: HashStore.maxDatabases, noSync: true,
                                     lockFile: false)
        let packed: Bool
        do {
            packed = try env.read { src -> Bool in
                guard try HashStore.onlyOwnDatabases(src) else { return false }
                let dst = try target.write { try HashStore.openDatabases($0, create: true) }
                for (from, to) in [(dbMeta, dst.0), (dbItems, dst.1), (dbTables, dst.2), (dbPending, dst.3), (dbSources, dst.4)] {
                    try HashStore.appendAll(src, from, into: target, to, chunkBytes: chunkBytes)
                }
                return true
            }
        } catch {
            target.close()
            unlink(path)
            throw error
        }
        var copy: Environment?
        do {
            if packed {
                copy = target
            } else {
                target.close()
                unlink(path)
                try env.copyCompacted(to: path)
                // LMDB's copy creates the file with mode 0666 less the umask.
                chmod(path, 0o600)
                copy = try Environment(path: path, mapSize: mapSize, maxDatabases: HashStore.maxDatabases, noSync: true,
                                       lockFile: false)
            }
            try copy!.sync()
            try HashStore.fsyncPath(path)
            return copy!
        } catch {
            copy?.close()
            unlink(path)
            throw error
        }
    }

    /// Whether the named databases of the file are exactly the store's (`openDatabases`):
    /// the keys of LMDB's main database are their names.
    static func onlyOwnDatabases(_ txn: Transaction) throws -> Bool {
        let own = Set(HashStore.databaseNames)
        var ok = true
        try txn.forEach(1) { k, _ in
            if !own.contains(String(decoding: k, as: UTF8.self)) { ok = false }
        }
        return ok
    }

    /// Puts every record of `from` (in `src`, in key order) into the empty database `to`
    /// of `target` with `MDB_APPEND`, which fills each page before starting the next; a
    /// transaction per `chunkBytes` of keys and values.
    static func appendAll(_ src: Transaction, _ from: MDB_dbi, into target: Environment, _ to: MDB_dbi,
                          chunkBytes: Int) throws {
        var c: OpaquePointer?
        try check(mdb_cursor_open(src.txn, from, &c), "mdb_cursor_open")
        defer { mdb_cursor_close(c) }
        var k = MDB_val(), v = MDB_val()
        var rc = mdb_cursor_get(c, &k, &v, MDB_FIRST)
        while rc == 0 {
            try target.write { t in
                // One cursor for the transaction's puts: it stays on the last page, where
                // `mdb_put` would search down from the root for every record.
                var w: OpaquePointer?
                try check(mdb_cursor_open(t.txn, to, &w), "mdb_cursor_open")
                defer { mdb_cursor_close(w) }
                var bytes = 0
                while rc == 0 && bytes < chunkBytes {
                    try check(mdb_cursor_put(w, &k, &v, UInt32(MDB_APPEND)), "mdb_cursor_put (packed copy)")
                    bytes += k.mv_size + v.mv_size
                    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)
                }
            }
            target.flushBehind()
        }
        if rc != MDB_NOTFOUND { try check(rc, "mdb_cursor_get (packed copy)") }
    }
}
