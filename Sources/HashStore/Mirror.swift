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
    func loadMirror(tablesM: Int?, generation: Int) throws {
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
                    // Tables that cannot be read are built again below.
                    guard (try? StoredTable.forEach(txn, dbTables, generation: generation, layout: layout, { _, table in
                        stored.append((table.offsets, table.ids))
                    })) != nil else { return }
                    storedLayout = layout
                }
            }
        } catch let e as StoreError {
            throw e
        } catch {
            throw StoreError.storage(error, "cannot load database", dataPath: dataPath)
        }
        if let layout = storedLayout, stored.count == layout.count,
           (try? index.load(layout: layout, tables: stored, pending: pending)) != nil,
           (try? index.check()) != nil {
            return
        }
        // No usable stored tables: build them and store them.
        try foldTables(m: nil)
    }

    /// A committed change, as the mirror applies it.
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

    /// Applies a committed batch to the mirror (keys, codes, tables' delta) and the
    /// settings mirrored from `meta`, under the write lock (writer lock held).
    func applyToMirror(_ b: BatchWrite) {
        rw.withWriteLock {
            recordedModel = b.model
            imageItemCount = b.imageItems
            if verifyChanged != nil || foldChanged != nil { recordChanged(b.changes) }
            for change in b.changes {
                switch change {
                case .insert(let id, let key, let code):
                    keys.insert(key.utf8, id: id)
                    index.upsert(id, code)
                case .replace(let id, let code):
                    index.upsert(id, code)
                case .remove(let id, let key):
                    keys.remove(key.utf8)
                    index.remove(id)
                }
            }
            nextID = b.nextID
        }
    }
}
