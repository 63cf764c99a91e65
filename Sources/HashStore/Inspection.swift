import CLMDB
import Foundation
import HammingCode
#if canImport(Glibc)
import Glibc
#endif

/// A database opened read-only, without a daemon: what `gdh inspect` and `gdh dump` read,
/// as LMDB's `mdb_stat` and `mdb_dump` read an environment.
///
/// It never changes the database and never creates a file in its directory. The
/// environment is opened with MDB_RDONLY and LMDB's existing lock file `data.mdb-lock`:
/// its read transactions are registered there, so a running gdhd does not reuse the pages
/// they see, and reading beside the daemon is safe. Only when the lock file is missing or
/// not writable (a data file copied alone, a read-only directory) is MDB_NOLOCK added,
/// which creates nothing but is safe only while no daemon writes (`usesLockFile`).
/// No gdhd lock is taken. Each method reads one snapshot: one read transaction.
public final class ReadOnlyStore {
    public let directory: String
    public let width: CodeWidth
    /// Whether LMDB's lock file is used (false: MDB_NOLOCK).
    public let usesLockFile: Bool
    /// Open until `close` (or deinit); transactions on it only inside `read`.
    private let env: Environment
    private var dbMeta: MDB_dbi = 0, dbItems: MDB_dbi = 0, dbTables: MDB_dbi = 0, dbPending: MDB_dbi = 0, dbSources: MDB_dbi = 0
    private var closed = false

    /// Opens the database in `directory`; `notADatabase` when the directory is missing or
    /// holds none, and nothing is created either way.
    public init(directory: String) throws {
        self.directory = directory
        var st = stat()
        guard stat(directory, &st) == 0 else {
            throw StoreError.notADatabase("\(directory): \(String(cString: strerror(errno)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            throw StoreError.notADatabase("\(directory) is not a directory")
        }
        let data = directory + "/data.mdb"
        guard stat(data, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            throw StoreError.notADatabase("\(directory) holds no gdh database (no data.mdb)")
        }
        usesLockFile = access(data + "-lock", W_OK) == 0
        do {
            env = try Environment(path: data, access: .readOnly(lockFile: usesLockFile), maxDatabases: HashStore.maxDatabases)
        } catch {
            throw StoreError.notADatabase("cannot open \(data): \(error)")
        }
        // Handles opened in a read transaction outlive it only if it is committed.
        let settings: StoredSettings
        do {
            let txn = try Transaction(env: env.env, readOnly: true)
            do {
                let dbs = try HashStore.openDatabases(txn, create: false)
                (dbMeta, dbItems, dbTables, dbPending, dbSources) = dbs
                guard let s = try StoredSettings.read(txn, meta: dbs.0, sources: dbs.4, directory: directory) else {
                    throw StoreError.notADatabase("\(directory) holds no gdh database (no settings)")
                }
                settings = s
                try txn.commit()
            } catch {
                txn.abort()
                throw error
            }
            width = try CodeWidth(bits: settings.bits)
        } catch let e as StoreError {
            env.close()
            throw e
        } catch let e as LMDBError where e.code == MDB_NOTFOUND {
            env.close()
            throw StoreError.notADatabase("\(directory) holds no gdh database (\(e))")
        } catch {
            env.close()
            throw StoreError.corrupt("cannot read the settings of \(directory): \(error)")
        }
    }

    deinit { close() }

    public func close() {
        guard !closed else { return }
        closed = true
        env.close()
    }

    /// One read transaction. When a daemon has grown the file past the map this process
    /// opened with, LMDB refuses the transaction until the map adopts the new size (0).
    private func read<T>(_ body: (Transaction) throws -> T) throws -> T {
        do {
            for _ in 0..<3 {
                do {
                    return try env.read(body)
                } catch let e as LMDBError where e.code == MDB_MAP_RESIZED {
                    try env.setMapSize(0)
                }
            }
            return try env.read(body)
        } catch let e as StoreError {
            throw e
        } catch {
            throw StoreError.storage(error, "cannot read \(directory)")
        }
    }

    /// The settings of a snapshot (`corrupt` if they vanished, which a gdhd never does).
    private func settings(_ txn: Transaction) throws -> StoredSettings {
        guard let s = try StoredSettings.read(txn, meta: dbMeta, sources: dbSources, directory: directory) else {
            throw StoreError.corrupt("the settings of \(directory) are gone")
        }
        return s
    }

    // MARK: - inspect

    /// Settings, counts, LMDB page figures and the shapes of the stored tables, from one
    /// snapshot. A missing or malformed stored table is reported in `tablesProblem`.
    public func report() throws -> StoreReport {
        try read { txn in
            let s = try settings(txn)
            let info = env.info
            var databases: [StoreReport.Database] = []
            for (name, dbi) in [("meta", dbMeta), ("items", dbItems), ("tables", dbTables), ("pending", dbPending), ("sources", dbSources)] {
                let st = try txn.stat(dbi)
                databases.append(StoreReport.Database(
                    name: name, entries: st.ms_entries, depth: Int(st.ms_depth), branchPages: st.ms_branch_pages,
                    leafPages: st.ms_leaf_pages, overflowPages: st.ms_overflow_pages))
            }
            var tables: [StoreReport.Table] = []
            var problem: String?
            if let tm = s.tablesM {
                do {
                    let layout = try SubstringLayout(width: width, count: tm)
                    try StoredTable.forEach(txn, dbTables, generation: s.tablesGeneration, layout: layout) { j, t in
                        var values = 0, largest = 0
                        for v in 0..<(t.offsets.count - 1) {
                            let c = Int(t.offsets[v + 1] - t.offsets[v])
                            if c > 0 { values += 1 }
                            largest = max(largest, c)
                        }
                        tables.append(StoreReport.Table(
                            number: j, offset: layout.offsets[j], bits: layout.sizes[j], entries: t.ids.count,
                            values: values, largest: largest, storedBytes: t.storedBytes))
                    }
                } catch let e as LMDBError {
                    throw e
                } catch {
                    problem = "\(error)"
                }
            } else {
                problem = "no tables are stored"
            }
            return StoreReport(
                format: HashStore.formatVersion, bits: s.bits, items: try txn.count(dbItems), nextID: s.nextID,
                substrings: s.tablesM, substringsSetting: s.substrings.map { String($0) } ?? "auto",
                pending: try PendingIDs.all(txn, items: dbItems, pending: dbPending, watermark: s.tablesNextID).count,
                tablesNextID: s.tablesNextID, imageItems: s.imageItems,
                codesModel: HashStore.codesModel(identity: s.model, imageItems: s.imageItems),
                fileBytes: HashStore.fileSize(directory + "/data.mdb"), mapBytes: info.me_mapsize,
                pageBytes: env.pageSize, pagesUsed: info.me_last_pgno + 1, freePages: try txn.freePages(),
                lockFile: usesLockFile, databases: databases, tables: tables, tablesProblem: problem)
        }
    }

    // MARK: - dump

    /// Calls `body` with every item in id order, from one snapshot: its id, its key's bytes
    /// (valid only during the call) and its code.
    public func forEachItem(_ body: (UInt32, Slice<UnsafeRawBufferPointer>, HammingCode) throws -> Void) throws {
        try read { txn in
            try txn.forEach(dbItems) { k, v in
                let (id, code, key) = try ItemRecord.decode(key: k, value: v, width: width)
                try body(id, key, code)
            }
        }
    }

    /// Writes every item as a `key hex` line, the format `gdh import` reads (the key's
    /// bytes, one space, the code as bits/4 lower-case hex digits, a line feed), in id
    /// order, from one snapshot; `write` gets the text in pieces of about 64 KiB.
    /// `corrupt` for a key that could not be read back as one token of a line. Each piece
    /// handed to `write` is valid only during that call. Returns how many items it wrote.
    @discardableResult
    public func dumpItems(_ write: (UnsafeRawBufferPointer) throws -> Void) throws -> Int {
        var items = 0
        var out = DumpBuffer()
        try forEachItem { id, key, code in
            guard !key.contains(where: { $0 <= 0x20 || $0 == 0x7F }) else {
                throw StoreError.corrupt("item \(id) has a key with white space or a control character")
            }
            out.bytes.append(contentsOf: key)
            out.bytes.append(0x20)
            code.appendHex(to: &out.bytes)
            out.bytes.append(0x0A)
            items += 1
            try out.flushIfFull(write)
        }
        try out.flush(write)
        return items
    }

    /// The stored tables, decoded, and the pending ids, from one snapshot.
    public func storedTables() throws -> StoredTables {
        try read { txn in
            let s = try settings(txn)
            var tables: [StoredTables.Table] = []
            if let tm = s.tablesM {
                let layout: SubstringLayout
                do { layout = try SubstringLayout(width: width, count: tm) } catch {
                    throw StoreError.corrupt("the stored tables have m = \(tm): \(error)")
                }
                try StoredTable.forEach(txn, dbTables, generation: s.tablesGeneration, layout: layout) { j, t in
                    tables.append(StoredTables.Table(offset: layout.offsets[j], bits: layout.sizes[j], offsets: t.offsets, ids: t.ids))
                }
            }
            let pending = try PendingIDs.all(txn, items: dbItems, pending: dbPending, watermark: s.tablesNextID)
            return StoredTables(tables: tables, pending: pending)
        }
    }

    /// Writes the stored tables decoded, then the pending ids (`StoredTables.write`); each
    /// piece handed to `write` is valid only during that call.
    public func dumpTables(_ write: (UnsafeRawBufferPointer) throws -> Void) throws {
        try storedTables().write(write)
    }
}

/// Text handed to `write` in pieces of about 64 KiB.
private struct DumpBuffer {
    var bytes: [UInt8] = []

    init() { bytes.reserveCapacity(72 << 10) }

    mutating func flushIfFull(_ write: (UnsafeRawBufferPointer) throws -> Void) throws {
        if bytes.count >= 64 << 10 { try flush(write) }
    }

    mutating func flush(_ write: (UnsafeRawBufferPointer) throws -> Void) throws {
        if !bytes.isEmpty { try bytes.withUnsafeBytes(write) }
        bytes.removeAll(keepingCapacity: true)
    }

    mutating func append(_ s: String) { bytes.append(contentsOf: s.utf8) }
}

/// The stored multi-index tables as LMDB holds them (entries of deleted and re-coded items
/// included, until the next fold) and the ids written since they were stored.
public struct StoredTables: Sendable, Equatable {
    public struct Table: Sendable, Equatable {
        /// The substring's first bit in the code (0 = most significant) and its width w.
        public let offset: Int
        public let bits: Int
        /// 2^w + 1 offsets into `ids`: the ids of value v are ids[offsets[v] ..< offsets[v + 1]].
        public let offsets: [UInt32]
        public let ids: [UInt32]

        /// The substring values with entries, ascending, each with its ids (ascending).
        public var buckets: [(value: UInt32, ids: ArraySlice<UInt32>)] {
            var out: [(value: UInt32, ids: ArraySlice<UInt32>)] = []
            for v in 0..<(offsets.count - 1) where offsets[v] != offsets[v + 1] {
                out.append((UInt32(v), ids[Int(offsets[v])..<Int(offsets[v + 1])]))
            }
            return out
        }
    }

    /// Table j of the stored tables (none when the database stores no tables).
    public let tables: [Table]
    /// The pending ids, ascending: items added or re-coded since the tables were stored (the
    /// records of `pending` and the item ids from the watermark on, `PendingIDs`).
    public let pending: [UInt32]

    /// The text of `gdh dump --tables` (Docs/operations.md):
    ///
    ///     tables <m>
    ///     table <j> offset <o> bits <w> entries <n> values <v>
    ///     <value> <id> <id> ...         one line per substring value with entries, ascending
    ///     pending <count>
    ///     <id>                          one line per pending id, ascending
    ///
    /// A value is written as ceil(w/4) lower-case hex digits, its first bit most significant.
    /// Each piece handed to `write` is valid only during that call.
    public func write(_ write: (UnsafeRawBufferPointer) throws -> Void) throws {
        var out = DumpBuffer()
        out.append("tables \(tables.count)\n")
        for (j, t) in tables.enumerated() {
            let values = t.buckets.count
            out.append("table \(j) offset \(t.offset) bits \(t.bits) entries \(t.ids.count) values \(values)\n")
            let digits = (t.bits + 3) / 4
            for v in 0..<(t.offsets.count - 1) where t.offsets[v] != t.offsets[v + 1] {
                for d in stride(from: digits - 1, through: 0, by: -1) {
                    let nibble = UInt8(truncatingIfNeeded: (v >> (4 * d)) & 0xF)
                    out.bytes.append(nibble < 10 ? 48 + nibble : 87 + nibble)
                }
                for e in Int(t.offsets[v])..<Int(t.offsets[v + 1]) {
                    out.bytes.append(0x20)
                    out.append(String(t.ids[e]))
                }
                out.bytes.append(0x0A)
                try out.flushIfFull(write)
            }
        }
        out.append("pending \(pending.count)\n")
        for id in pending {
            out.append(String(id))
            out.bytes.append(0x0A)
            try out.flushIfFull(write)
        }
        try out.flush(write)
    }
}

/// What `gdh inspect` prints: a database's settings and counts (named as in STATS),
/// LMDB's page figures per named database, and the shapes of the stored tables.
public struct StoreReport: Sendable, Equatable {
    public struct Database: Sendable, Equatable {
        public let name: String
        public let entries: Int
        public let depth: Int
        public let branchPages: Int
        public let leafPages: Int
        public let overflowPages: Int
    }

    public struct Table: Sendable, Equatable {
        /// j, the substring's first bit and its width w.
        public let number: Int
        public let offset: Int
        public let bits: Int
        /// Ids stored (stale ones of deleted or re-coded items included).
        public let entries: Int
        /// Distinct substring values with entries, and the most entries of one value.
        public let values: Int
        public let largest: Int
        /// Bytes of the table's value in LMDB.
        public let storedBytes: Int
    }

    public let format: Int
    public let bits: Int
    public let items: Int
    public let nextID: UInt32
    /// m of the stored tables (meta `tables_m`), the m gdhd uses at open; nil: none stored.
    public let substrings: Int?
    public let substringsSetting: String
    /// Items added or re-coded since the tables were stored: the records in `pending` and
    /// the item ids from the watermark on (`PendingIDs`).
    public let pending: Int
    /// The stored tables' watermark (meta `tables_next_id`); nil when none is recorded
    /// (tables stored before watermarks: every pending id has a record in `pending`).
    public let tablesNextID: UInt32?
    public let imageItems: Int
    public let codesModel: String
    public let fileBytes: Int
    public let mapBytes: Int
    public let pageBytes: Int
    /// Pages the environment has used (LMDB's last page number + 1), and of them the
    /// ones on LMDB's free list (reused by later writes; `COMPACT` drops them).
    public let pagesUsed: Int
    public let freePages: Int
    /// Whether the read went through LMDB's lock file (false: MDB_NOLOCK).
    public let lockFile: Bool
    public let databases: [Database]
    public let tables: [Table]
    /// Why the stored tables could not be read; gdhd rebuilds them at its next start.
    public let tablesProblem: String?

    /// The `name value` lines of the settings and counts, in a fixed order.
    public var fields: [(String, String)] {
        [
            ("format", String(format)),
            ("bits", String(bits)),
            ("items", String(items)),
            ("next_id", String(nextID)),
            ("substrings", substrings.map { String($0) } ?? "none"),
            ("substrings_setting", substringsSetting),
            ("pending", String(pending)),
            ("tables_next_id", tablesNextID.map { String($0) } ?? "none"),
            ("image_items", String(imageItems)),
            ("codes_model", codesModel),
            ("file_bytes", String(fileBytes)),
            ("map_bytes", String(mapBytes)),
            ("page_bytes", String(pageBytes)),
            ("pages_used", String(pagesUsed)),
            ("free_pages", String(freePages)),
            ("lock_file", lockFile ? "yes" : "no"),
        ]
    }

    /// The text of `gdh inspect`: the fields, then a table of the LMDB databases and one of
    /// the stored multi-index tables, separated by empty lines.
    public var text: String {
        var lines = fields.map { "\($0.0) \($0.1)" }
        lines.append("")
        lines += StoreReport.columns(
            ["database", "entries", "depth", "branch_pages", "leaf_pages", "overflow_pages"],
            databases.map { [$0.name] + [$0.entries, $0.depth, $0.branchPages, $0.leafPages, $0.overflowPages].map { String($0) } })
        lines.append("")
        lines += StoreReport.columns(
            ["table", "offset", "bits", "entries", "values", "largest", "stored_bytes"],
            tables.map { [$0.number, $0.offset, $0.bits, $0.entries, $0.values, $0.largest, $0.storedBytes].map { String($0) } })
        if let tablesProblem { lines.append("stored tables unusable: \(tablesProblem)") }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The object of `gdh inspect --json`: the fields with numbers as numbers (`substrings`
    /// null when no tables are stored, `lock_file` a boolean), `databases` by name and
    /// `tables` in order, `tables_problem` when there is one.
    public var jsonObject: [String: Any] {
        var o: [String: Any] = [
            "format": format, "bits": bits, "items": items, "next_id": Int(nextID),
            "substrings": substrings.map { $0 as Any } ?? NSNull(), "substrings_setting": substringsSetting,
            "pending": pending, "tables_next_id": tablesNextID.map { Int($0) as Any } ?? NSNull(), "image_items": imageItems, "codes_model": codesModel,
            "file_bytes": fileBytes, "map_bytes": mapBytes, "page_bytes": pageBytes,
            "pages_used": pagesUsed, "free_pages": freePages, "lock_file": lockFile,
        ]
        o["databases"] = Dictionary(uniqueKeysWithValues: databases.map {
            ($0.name, ["entries": $0.entries, "depth": $0.depth, "branch_pages": $0.branchPages,
                       "leaf_pages": $0.leafPages, "overflow_pages": $0.overflowPages])
        })
        o["tables"] = tables.map {
            ["table": $0.number, "offset": $0.offset, "bits": $0.bits, "entries": $0.entries,
             "values": $0.values, "largest": $0.largest, "stored_bytes": $0.storedBytes]
        }
        if let tablesProblem { o["tables_problem"] = tablesProblem }
        return o
    }

    /// Rows under a header, the first column left-aligned and the others right-aligned.
    private static func columns(_ header: [String], _ rows: [[String]]) -> [String] {
        let all = [header] + rows
        let widths = header.indices.map { c in all.map { $0[c].count }.max() ?? 0 }
        return all.map { row in
            row.indices.map { c in
                let pad = String(repeating: " ", count: widths[c] - row[c].count)
                return c == 0 ? row[c] + pad : pad + row[c]
            }.joined(separator: "  ")
        }
    }
}
