import CLMDB
import Foundation

/// Which items the stored tables may not cover (their pending ids): the ids with a record in
/// `pending`, and every item id at or above the tables' watermark.
///
/// Ids are given out in ascending order (meta `next_id`), so the tables' watermark, meta
/// `tables_next_id`, is the next id when the codes they were built from were taken: every
/// id at or above it was given out later, and counts as pending without a record. A new
/// item therefore costs one put (`items`), not two. Below the watermark an id's change puts
/// a `pending` record as before, and a fold trims the records it covers.
///
/// The watermark is written in the transaction that makes tables the stored ones (an inline
/// fold's, or the switch of a fold beside the writes). A database whose tables were stored
/// before watermarks has no `tables_next_id`: every pending id there has its record, and
/// writes go on putting one for every id until the first fold writes a watermark.
enum PendingIDs {
    /// The meta key of the stored tables' watermark.
    static let watermarkKey = "tables_next_id"

    /// The stored tables' watermark; nil when none is recorded (tables stored before
    /// watermarks, or none stored); `corrupt` when it is not an id.
    static func watermark(_ txn: Transaction, meta: MDB_dbi) throws -> UInt32? {
        guard let text = try txn.getString(meta, watermarkKey) else { return nil }
        guard let w = UInt32(text) else {
            throw StoreError.corrupt("meta \(watermarkKey) \(text) is not an id")
        }
        return w
    }

    /// Records the watermark of the tables stored in this transaction.
    static func setWatermark(_ txn: Transaction, meta: MDB_dbi, _ w: UInt32) throws {
        try txn.putString(meta, watermarkKey, String(w))
    }

    /// The ids with a record in `pending`, ascending.
    static func explicit(_ txn: Transaction, pending: MDB_dbi) throws -> [UInt32] {
        var ids: [UInt32] = []
        try txn.forEach(pending) { k, _ in
            if k.count == 4 { ids.append(k.loadUnaligned(as: UInt32.self)) }
        }
        return ids
    }

    /// The item ids at or above watermark `w` (nil: none), ascending.
    static func implicit(_ txn: Transaction, items: MDB_dbi, watermark w: UInt32?) throws -> [UInt32] {
        guard let w else { return [] }
        var ids: [UInt32] = []
        try txn.forEachKey(items, from: w) { ids.append($0); return true }
        return ids
    }

    /// Every pending id, ascending and distinct: `explicit` and `implicit` merged.
    static func all(_ txn: Transaction, items: MDB_dbi, pending: MDB_dbi, watermark w: UInt32?) throws -> [UInt32] {
        let a = try explicit(txn, pending: pending), b = try implicit(txn, items: items, watermark: w)
        guard !b.isEmpty else { return a }
        guard !a.isEmpty else { return b }
        var out: [UInt32] = []
        out.reserveCapacity(a.count + b.count)
        var i = 0, j = 0
        while i < a.count || j < b.count {
            if j == b.count || (i < a.count && a[i] < b[j]) {
                out.append(a[i]); i += 1
            } else if i == a.count || b[j] < a[i] {
                out.append(b[j]); j += 1
            } else {
                out.append(a[i]); i += 1; j += 1
            }
        }
        return out
    }
}

/// The ids changed while a fold beside the writes runs (`HashStore.foldChanged`): a set of
/// the ids below `rangeStart`, and every id from `rangeStart` on given out since, which
/// needs no recording (ids are given out in ascending order: the ids from `rangeStart` up
/// to the next id are all new since the range began). A bulk load of new ids thus records
/// nothing per write.
struct ChangedIDs {
    /// Changed ids below `rangeStart`.
    private(set) var below = Set<UInt32>()
    /// Every id from here up to the next id is changed (new).
    private(set) var rangeStart: UInt32

    /// Recording from now on, when `next` is the next id.
    init(next: UInt32) { rangeStart = next }

    /// Records a committed change of `id`.
    @inline(__always)
    mutating func record(_ id: UInt32) {
        if id < rangeStart { below.insert(id) }
    }

    /// The ids changed, ascending, when `next` is the next id.
    func ids(next: UInt32) -> [UInt32] {
        var list = below.sorted()
        if rangeStart < next { list.append(contentsOf: rangeStart..<next) }
        return list
    }

    /// The ids changed (ascending, when `next` is the next id); recording then starts afresh.
    mutating func take(next: UInt32) -> [UInt32] {
        defer { self = ChangedIDs(next: max(next, rangeStart)) }
        return ids(next: next)
    }

    /// Whether `id` (below `rangeStart`) was recorded.
    func containsBelow(_ id: UInt32) -> Bool { below.contains(id) }
}
