import CLMDB
import Foundation
import Testing
@testable import HashStore

/// `StoreError.storage`, the one mapping of LMDB and file-system failures to store errors.
@Suite("LMDB failures as store errors")
struct StoreErrorTests {
    /// The case of a mapped failure, by name.
    private func kind(_ e: StoreError) -> String {
        switch e {
        case .locked: return "locked"
        case .mismatch: return "mismatch"
        case .invalid: return "invalid"
        case .corrupt: return "corrupt"
        case .full: return "full"
        case .io: return "io"
        case .notADatabase: return "notADatabase"
        case .diskFull: return "diskFull"
        case .mapFull: return "mapFull"
        case .damaged: return "damaged"
        case .readersFull: return "readersFull"
        case .versionMismatch: return "versionMismatch"
        }
    }

    @Test("each LMDB code and errno maps to its own case; the message is the context and LMDB's text")
    func codes() {
        let cases: [(Int32, String)] = [
            (MDB_MAP_FULL, "mapFull"), (ENOSPC, "diskFull"), (EDQUOT, "diskFull"), (EFBIG, "diskFull"),
            (MDB_CORRUPTED, "damaged"), (MDB_PAGE_NOTFOUND, "damaged"), (MDB_INVALID, "damaged"),
            (MDB_READERS_FULL, "readersFull"), (MDB_VERSION_MISMATCH, "versionMismatch"),
            (EIO, "io"), (EACCES, "io"), (MDB_TXN_FULL, "io"),
        ]
        for (code, expected) in cases {
            let failure = LMDBError(code: code, operation: "mdb_txn_commit")
            let e = StoreError.storage(failure, "write failed, nothing was applied")
            #expect(kind(e) == expected, "code \(code)")
            #expect(e.description == "write failed, nothing was applied: \(failure)")
            #expect(StoreError.storage(failure, nil).description == "\(failure)")
        }
    }

    @Test("a wrapped store error keeps a storage case and its text; others become io, as before")
    func wrapping() {
        let inner = StoreError.diskFull("cannot sync /x: No space left on device")
        let e = StoreError.storage(inner, "compaction copy failed, the database is unchanged")
        #expect(e == .diskFull("compaction copy failed, the database is unchanged: cannot sync /x: No space left on device"))
        #expect(StoreError.storage(StoreError.invalid("bad"), "backup failed") == .io("backup failed: bad"))
        #expect(StoreError.storage(CocoaError(.fileNoSuchFile), "c").description.hasPrefix("c: "))
    }

    @Test("EIO (LMDB's short write) is a full disk only when the file has no room to grow")
    func shortWrite() {
        let dir = tempDir()
        #expect(mkdir(dir, 0o700) == 0)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let eio = LMDBError(code: EIO, operation: "mdb_txn_commit")
        // A temporary directory with room: EIO stays an I/O error.
        #expect(!StoreError.noRoomToGrow(dir + "/data.mdb"))
        #expect(kind(StoreError.storage(eio, "w", dataPath: dir + "/data.mdb")) == "io")
        #expect(kind(StoreError.storage(eio, "w")) == "io")
    }
}
