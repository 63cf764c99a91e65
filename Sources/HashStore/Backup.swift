import CLMDB
import Foundation
import HammingCode
import MultiIndex
#if canImport(Glibc)
import Glibc
#endif

extension HashStore {
    /// Writes a consistent, packed copy of the database to `path` (a new file, never an
    /// existing one) while writes go on: `writePackedCopy` reads one snapshot in a read
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
            try envSwap.withReadLock { try writePackedCopy(to: tmp, mapSize: env.mapSize).close() }
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
            throw StoreError.storage(error, "backup to \(path) failed", dataPath: tmp)
        }
        return HashStore.fileSize(path)
    }
}
