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
        do {
            try env.write { txn in try txn.putString(dbMeta, "substrings", String(m)) }
        } catch {
            throw StoreError.storage(error, nil, dataPath: dataPath)
        }
        rw.withWriteLock { index.fixedM = m }
    }

    /// Records that `identity` made the stored image codes (after every stored image was
    /// encoded again with it), or with nil removes the record (the codes' model is then
    /// unknown). Writer thread.
    public func setModelIdentity(_ identity: String?) throws {
        writerLock.lock()
        defer { writerLock.unlock() }
        do {
            try retryingWhenMapFull(grow: growMap) { try env.write { txn in
                if let identity {
                    try txn.putString(dbMeta, HashStore.modelIdentityKey, identity)
                } else {
                    try txn.deleteString(dbMeta, HashStore.modelIdentityKey)
                }
            } }
        } catch let e as StoreError {
            throw e
        } catch {
            throw StoreError.storage(error, "cannot record the model identity", dataPath: dataPath)
        }
        rw.withWriteLock { recordedModel = identity }
    }
}

/// The settings a database keeps in `meta`, as stored (read at every open, by the store
/// and by `ReadOnlyStore`).
struct StoredSettings {
    /// Code width b.
    var bits: Int
    /// The fixed substring count m; nil: `auto`.
    var substrings: Int?
    /// The id the next new key gets.
    var nextID: UInt32
    /// m of the stored tables; nil when none are stored.
    var tablesM: Int?
    /// The generation of the stored tables in `tables` (`TableChunks`; 0: the layout of one
    /// value per table written before chunks).
    var tablesGeneration = 0
    /// The stored tables' watermark (meta `tables_next_id`, `PendingIDs`); nil for tables
    /// stored before watermarks, or none stored.
    var tablesNextID: UInt32?
    /// The identity of the model that made the image codes (`model_identity`).
    var model: String?
    /// Items with a stored source (records in `sources`).
    var imageItems: Int

    /// The settings in `txn`, or nil when `meta` holds none (a database not yet set up);
    /// `mismatch` for another format version, `corrupt` when they cannot be read.
    static func read(_ txn: Transaction, meta: MDB_dbi, sources: MDB_dbi, directory: String) throws -> StoredSettings? {
        guard let format = try txn.getString(meta, "format") else { return nil }
        guard format == String(HashStore.formatVersion) else {
            throw StoreError.mismatch("database format \(format) is not supported (this build reads \(HashStore.formatVersion))")
        }
        guard let bitsText = try txn.getString(meta, "bits"), let bits = Int(bitsText),
              let nextText = try txn.getString(meta, "next_id"), let next = UInt32(nextText) else {
            throw StoreError.corrupt("database \(directory) has unreadable settings")
        }
        let mText = try txn.getString(meta, "substrings") ?? "auto"
        return StoredSettings(
            bits: bits, substrings: mText == "auto" ? nil : Int(mText), nextID: next,
            tablesM: try txn.getString(meta, "tables_m").flatMap { Int($0) },
            tablesGeneration: try TableChunks.generation(txn, meta: meta),
            tablesNextID: try PendingIDs.watermark(txn, meta: meta),
            model: try txn.getString(meta, HashStore.modelIdentityKey),
            imageItems: try txn.count(sources))
    }
}

extension StoredSettings {
    /// The settings in `txn` (a write transaction), checked against `options`: `mismatch`
    /// for another code width; a substring count given in `options` becomes the setting
    /// (`invalid` when no layout has that many). A database without settings gets them:
    /// `options`' width (64 when not given) and substring setting, next id 0.
    static func readOrCreate(_ txn: Transaction, meta: MDB_dbi, sources: MDB_dbi, options: StoreOptions,
                             directory: String) throws -> StoredSettings {
        if var stored = try StoredSettings.read(txn, meta: meta, sources: sources, directory: directory) {
            if let want = options.bits, want != stored.bits {
                throw StoreError.mismatch("database \(directory) holds \(stored.bits)-bit codes, not \(want)")
            }
            if let want = options.substrings, want != stored.substrings {
                if let w = try? CodeWidth(bits: stored.bits) {
                    do { _ = try SubstringLayout(width: w, count: want) } catch {
                        throw StoreError.invalid("\(error)")
                    }
                }
                try txn.putString(meta, "substrings", String(want))
                stored.substrings = want
            }
            return stored
        }
        let bits = options.bits ?? 64
        try txn.putString(meta, "format", String(HashStore.formatVersion))
        try txn.putString(meta, "bits", String(bits))
        try txn.putString(meta, "substrings", options.substrings.map { String($0) } ?? "auto")
        try txn.putString(meta, "next_id", "0")
        return StoredSettings(bits: bits, substrings: options.substrings, nextID: 0, tablesM: nil, model: nil, imageItems: 0)
    }
}
