import CLMDB
import Foundation
import HammingCode
import MultiIndex
#if canImport(Glibc)
import Glibc
#endif

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

extension HashStore {
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
            throw StoreError.storage(error, "cannot read the item sources")
        }
    }
}
