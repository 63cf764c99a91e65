import CLMDB
import Foundation
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
    /// LMDB or the file system failed for a reason none of the cases below names;
    /// nothing was applied.
    case io(String)
    /// A directory opened read-only (`ReadOnlyStore`) is missing or holds no gdh database.
    case notADatabase(String)
    /// No room for a file to grow: the file system is full (ENOSPC), a quota is used up
    /// (EDQUOT) or the file size limit is reached (EFBIG, RLIMIT_FSIZE); also LMDB's short
    /// write (which it reports as EIO) when the file system or that limit has no room
    /// left. Nothing was applied; reads go on, and writes succeed again once there is room.
    case diskFull(String)
    /// LMDB's map is full and was not grown (MDB_MAP_FULL after 40 doublings).
    case mapFull(String)
    /// LMDB found the data file damaged or not an LMDB file (MDB_CORRUPTED,
    /// MDB_PAGE_NOTFOUND, MDB_INVALID).
    case damaged(String)
    /// LMDB's reader table is full (MDB_READERS_FULL): too many read transactions at once.
    case readersFull(String)
    /// The data or lock file was made by an incompatible LMDB (MDB_VERSION_MISMATCH).
    case versionMismatch(String)

    public var description: String {
        switch self {
        case .locked(let s), .mismatch(let s), .invalid(let s), .corrupt(let s), .full(let s), .io(let s),
             .notADatabase(let s), .diskFull(let s), .mapFull(let s), .damaged(let s), .readersFull(let s),
             .versionMismatch(let s):
            return s
        }
    }
}

extension StoreError {
    /// The one place where a failure of LMDB or of the file system becomes a `StoreError`.
    /// The message is `context: failure` (the failure's own text when `context` is nil).
    /// The case comes from the failure: an `LMDBError`'s code (`kind(lmdbCode:)`), or the
    /// case of a `StoreError` that names a storage failure (disk full, map full, damaged,
    /// readers full, version mismatch); anything else is `io`. `dataPath` is the file being
    /// written: with it, an EIO (LMDB's short write) counts as a full disk when that file
    /// has no room to grow (`noRoomToGrow`).
    static func storage(_ error: Error, _ context: String?, dataPath: String? = nil) -> StoreError {
        let message = context.map { "\($0): \(error)" } ?? "\(error)"
        switch error {
        case let e as LMDBError:
            if e.code == EIO, let dataPath, noRoomToGrow(dataPath) {
                return .diskFull(message + " (no room left for \(dataPath) to grow)")
            }
            return kind(lmdbCode: e.code)(message)
        case .diskFull? as StoreError?: return .diskFull(message)
        case .mapFull? as StoreError?: return .mapFull(message)
        case .damaged? as StoreError?: return .damaged(message)
        case .readersFull? as StoreError?: return .readersFull(message)
        case .versionMismatch? as StoreError?: return .versionMismatch(message)
        default: return .io(message)
        }
    }

    /// The case for an LMDB return code or an errno value (LMDB passes system errors on).
    static func kind(lmdbCode code: Int32) -> (String) -> StoreError {
        switch code {
        case MDB_MAP_FULL: return StoreError.mapFull
        case ENOSPC, EDQUOT, EFBIG: return StoreError.diskFull
        case MDB_CORRUPTED, MDB_PAGE_NOTFOUND, MDB_INVALID: return StoreError.damaged
        case MDB_READERS_FULL: return StoreError.readersFull
        case MDB_VERSION_MISMATCH: return StoreError.versionMismatch
        default: return StoreError.io
        }
    }

    /// Whether `path` (a file, or the file to be created) cannot grow: its file system
    /// has less than 1 MiB free for this process, or the file is within 1 MiB of the file
    /// size limit (RLIMIT_FSIZE). LMDB reports a write cut short by either as EIO.
    static func noRoomToGrow(_ path: String) -> Bool {
        let slack = 1 << 20
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_FSIZE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max,
           HashStore.fileSize(path) + slack > Int(clamping: limit.rlim_cur) {
            return true
        }
        var fs = statvfs()
        let dir = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        guard statvfs(dir.isEmpty ? "/" : dir, &fs) == 0 else { return false }
        let blocks = geteuid() == 0 ? fs.f_bfree : fs.f_bavail
        return Int(clamping: blocks) * Int(fs.f_frsize) < slack
    }
}
