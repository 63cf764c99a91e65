import CLMDB
import Foundation
import HammingCode
import MultiIndex
#if canImport(Glibc)
import Glibc
#endif

extension HashStore {
    /// Fills the mirror from LMDB: codes and keys from `items`, tables from `tables`
    /// plus `pending` (or rebuilt, when the stored tables do not fit the setting).
    func loadMirror(tablesM: Int?) throws {
        var pending = [UInt32]()
        var stored: [(offsets: [UInt32], ids: [UInt32])] = []
        var storedLayout: SubstringLayout?
        do {
            try env.read { txn in
                let n = try txn.count(dbItems)
                index.codes.reserve(Int(nextID))
                _ = n
                try txn.forEach(dbItems) { k, v in
                    let (id, code, key) = try ItemRecord.decode(key: k, value: v, width: width)
                    index.codes.set(id, code)
                    keys.insert(key, id: id)
                }
                try txn.forEach(dbPending) { k, _ in
                    if k.count == 4 { pending.append(k.loadUnaligned(as: UInt32.self)) }
                }
                if let tm = tablesM, index.fixedM == nil || index.fixedM == tm,
                   let layout = try? SubstringLayout(width: width, count: tm) {
                    for j in 0..<tm {
                        guard let table = try? StoredTable.read(txn, dbTables, table: j, bits: layout.sizes[j]) else { return }
                        stored.append((table.offsets, table.ids))
                    }
                    storedLayout = layout
                }
            }
        } catch let e as StoreError {
            throw e
        } catch {
            throw StoreError.io("cannot load database: \(error)")
        }
        if let layout = storedLayout, stored.count == layout.count,
           (try? index.load(layout: layout, tables: stored, pending: pending)) != nil,
           (try? index.check()) != nil {
            return
        }
        // No usable stored tables: build them and store them.
        try foldTables(m: nil)
    }

    enum Change {
        case insert(UInt32, String, HammingCode)
        case replace(UInt32, HammingCode)
        case remove(UInt32, String)
    }

    /// Adds the ids of committed changes to whichever of `verifyChanged` and `foldChanged`
    /// is recording (under the write lock).
    func recordChanged(_ changes: [Change]) {
        for change in changes {
            switch change {
            case .insert(let id, _, _), .replace(let id, _), .remove(let id, _):
                verifyChanged?.insert(id)
                foldChanged?.insert(id)
            }
        }
    }
}
