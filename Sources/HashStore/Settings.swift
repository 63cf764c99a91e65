import CLMDB
import Foundation
import HammingCode
import MultiIndex
#if canImport(Glibc)
import Glibc
#endif

extension HashStore {
    /// The identity of the model that made the stored image codes (meta `model_identity`),
    /// or nil: unknown (a database written before identities were recorded) or no item
    /// encoded from an image. Recorded by the first write that stores an item with a
    /// source (`apply(_:codesModel:)`) and by `setModelIdentity`; removed in the
    /// transaction that removes the last item with a source.
    public var modelIdentity: String? { rw.withReadLock { recordedModel } }

    /// Items that were encoded from an image (that have a stored source).
    public var imageItems: Int { rw.withReadLock { imageItemCount } }

    /// `codes_model` of STATS and `gdh inspect`: the recorded identity; `unknown` when items
    /// encoded from an image exist but no identity was recorded (a database from before
    /// identities); `none` when no item was encoded from an image.
    public static func codesModel(identity: String?, imageItems: Int) -> String {
        identity ?? (imageItems > 0 ? "unknown" : "none")
    }

    /// This store's `codes_model`.
    public var codesModel: String {
        rw.withReadLock { HashStore.codesModel(identity: recordedModel, imageItems: imageItemCount) }
    }

    /// Makes m the database's fixed substring setting (writer lock held); `invalid` when
    /// no layout has m substrings.
    func storeSubstringSetting(_ m: Int) throws {
        do { _ = try SubstringLayout(width: width, count: m) } catch {
            throw StoreError.invalid("\(error)")
        }
        try env.write { txn in try txn.putString(dbMeta, "substrings", String(m)) }
        rw.withWriteLock { index.fixedM = m }
    }

    /// Records that `identity` made the stored image codes (after every stored image was
    /// encoded again with it), or with nil removes the record (the codes' model is then
    /// unknown). Writer thread.
    public func setModelIdentity(_ identity: String?) throws {
        writerLock.lock()
        defer { writerLock.unlock() }
        var attempt = 0
        while true {
            do {
                try env.write { txn in
                    if let identity {
                        try txn.putString(dbMeta, HashStore.modelIdentityKey, identity)
                    } else {
                        try txn.deleteString(dbMeta, HashStore.modelIdentityKey)
                    }
                }
                break
            } catch let e as LMDBError where e.isMapFull && attempt < 40 {
                attempt += 1
                try growMap()
            } catch {
                throw StoreError.io("cannot record the model identity: \(error)")
            }
        }
        rw.withWriteLock { recordedModel = identity }
    }
}
