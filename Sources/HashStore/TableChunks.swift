import CLMDB
import Foundation
import MultiIndex

/// Where the stored tables live in `tables`: each table's `StoredTable` bytes are cut into
/// chunks, each one LMDB value under a u32 key that names its generation, chunk and table:
///
///     key = generation << 24 | chunk << 10 | table      (table < 1024, chunk < 16384)
///
/// meta `tables_generation` names the generation in use (absent: 0). Generation 0 is the
/// layout written before chunks existed (key = table j, the whole table in one value): it
/// is read as a generation whose tables have one chunk each. A fold beside the writes
/// writes generation g + 1 (1 ... 255, then 1 again) in small transactions, then switches
/// `tables_generation` in one short transaction; keys of other generations are left over
/// (a fold that died, or the old tables not yet deleted) and are removed at open and
/// before a generation's keys are written again. Each generation is one contiguous key range.
enum TableChunks {
    /// Chunks a table is cut into at most; a larger table gets larger chunks.
    static let maxChunks = 1 << 14
    /// Tables a generation holds at most (m ≤ 1024 for every supported width).
    static let maxTables = 1 << 10

    /// The key of chunk `chunk` of table `table` in generation `generation`.
    static func key(generation: Int, chunk: Int, table: Int) -> UInt32 {
        precondition(generation >= 0 && generation < 256 && chunk < maxChunks && table < maxTables)
        return UInt32(generation) << 24 | UInt32(chunk) << 10 | UInt32(table)
    }

    /// The keys of a generation: one contiguous range.
    static func keys(of generation: Int) -> ClosedRange<UInt32> {
        let lo = UInt32(generation) << 24
        return lo...(lo + ((1 << 24) - 1))
    }

    /// The keys outside generation `keep`: up to two ranges.
    static func keys(outside keep: Int) -> [ClosedRange<UInt32>] {
        let kept = keys(of: keep)
        var ranges: [ClosedRange<UInt32>] = []
        if kept.lowerBound > 0 { ranges.append(0...(kept.lowerBound - 1)) }
        if kept.upperBound < UInt32.max { ranges.append((kept.upperBound + 1)...UInt32.max) }
        return ranges
    }

    /// The generation written after `g`: 1 ... 255, then 1 again (0 is only ever the legacy one).
    static func next(after g: Int) -> Int { g >= 255 ? 1 : g + 1 }

    /// The bytes per chunk for a table of `size` bytes: `preferred`, or more when the table
    /// would need more than `maxChunks` chunks (at least 64, so chunk 0 holds the header).
    static func chunkBytes(size: Int, preferred: Int) -> Int {
        max(64, preferred, (size + maxChunks - 1) / maxChunks)
    }

    /// The generation in use (meta `tables_generation`; 0 when absent).
    static func generation(_ txn: Transaction, meta: MDB_dbi) throws -> Int {
        guard let text = try txn.getString(meta, "tables_generation") else { return 0 }
        guard let g = Int(text), g >= 0, g < 256 else {
            throw StoreError.corrupt("meta tables_generation \(text) is not a generation")
        }
        return g
    }

    /// The keys of `tables` that lie in `range`, ascending (at most `limit` of them).
    static func keys(_ txn: Transaction, _ dbi: MDB_dbi, in range: ClosedRange<UInt32>, limit: Int = .max) throws -> [UInt32] {
        var found: [UInt32] = []
        try txn.forEachKey(dbi, from: range.lowerBound) { k in
            guard k <= range.upperBound, found.count < limit else { return false }
            found.append(k)
            return true
        }
        return found
    }

    /// Deletes every key of `tables` outside generation `keep` (what a fold that died, or one
    /// whose old tables were not yet deleted, left). Returns how many it deleted.
    @discardableResult
    static func removeOthers(_ txn: Transaction, _ dbi: MDB_dbi, keep: Int) throws -> Int {
        var stray: [UInt32] = []
        for range in keys(outside: keep) { stray += try keys(txn, dbi, in: range) }
        for k in stray { try txn.delete(dbi, id: k) }
        return stray.count
    }
}

extension Transaction {
    /// Calls `body` with each u32 key of an integer-keyed database from `start` on, in
    /// order, while it returns true.
    func forEachKey(_ dbi: MDB_dbi, from start: UInt32, _ body: (UInt32) throws -> Bool) throws {
        var c: OpaquePointer?
        try check(mdb_cursor_open(txn, dbi, &c), "mdb_cursor_open")
        defer { mdb_cursor_close(c) }
        var first = start
        try withUnsafeMutableBytes(of: &first) { kb in
            var k = MDB_val(mv_size: 4, mv_data: kb.baseAddress), v = MDB_val()
            var op = MDB_SET_RANGE
            while true {
                let rc = mdb_cursor_get(c, &k, &v, op)
                if rc == MDB_NOTFOUND { return }
                try check(rc, "mdb_cursor_get")
                guard k.mv_size == 4 else { throw StoreError.corrupt("a key of \(k.mv_size) bytes in an integer-keyed database") }
                if try !body(k.mv_data.loadUnaligned(as: UInt32.self)) { return }
                op = MDB_NEXT
            }
        }
    }
}
