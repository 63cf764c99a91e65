import CLMDB
import HammingCode

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
            model: try txn.getString(meta, HashStore.modelIdentityKey),
            imageItems: try txn.count(sources))
    }
}

/// An item record in `items`: id (u32, native byte order) → the code's bytes (b/8, most
/// significant first: the bytes of the hex form) followed by the key's UTF-8 bytes.
enum ItemRecord {
    /// Appends the record's value for `code` and `key` to `out`.
    static func encode(code: HammingCode, key: String, into out: inout [UInt8]) {
        code.appendBytes(to: &out)
        out.append(contentsOf: key.utf8)
    }

    /// The id, code and key bytes of a stored record; `corrupt` when the record is
    /// malformed. The key bytes point into `value`, so they are valid exactly as long as
    /// it is (for a value from LMDB: until the next update or the transaction's end).
    @inline(__always)
    static func decode(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, width: CodeWidth) throws
        -> (id: UInt32, code: HammingCode, key: Slice<UnsafeRawBufferPointer>) {
        let bytes = width.bytes
        guard key.count == 4, value.count > bytes, let code = try? HammingCode(bytes: value[0..<bytes], width: width) else {
            throw StoreError.corrupt("item record of \(value.count) bytes is malformed")
        }
        return (key.loadUnaligned(as: UInt32.self), code, value[bytes...])
    }
}

extension StoredTable {
    /// Table j as stored in `tables`, decoded (copied out of the memory map: the arrays
    /// outlive the transaction), with the size of its stored value; nil when it is not
    /// stored, `corrupt` when it is malformed. LMDB errors are thrown as they are.
    static func read(_ txn: Transaction, _ dbi: MDB_dbi, table j: Int, bits w: Int) throws
        -> (offsets: [UInt32], ids: [UInt32], storedBytes: Int)? {
        guard let blob = try txn.get(dbi, id: UInt32(j)) else { return nil }
        do {
            let t = try decode(blob, bits: w)
            return (t.offsets, t.ids, blob.count)
        } catch {
            throw StoreError.corrupt("stored table \(j): \(error)")
        }
    }

    /// Reads the stored tables of `layout` in order (table 0 first) and hands each to
    /// `body`, decoded and checked (`decode`); `corrupt` when one is missing or malformed,
    /// LMDB errors as they are. The one reader and validator of the stored tables: opening
    /// the store, VERIFY, and `ReadOnlyStore`'s report and dump all use it.
    static func forEach(_ txn: Transaction, _ dbi: MDB_dbi, layout: SubstringLayout,
                        _ body: (Int, (offsets: [UInt32], ids: [UInt32], storedBytes: Int)) throws -> Void) throws {
        for j in 0..<layout.count {
            guard let t = try read(txn, dbi, table: j, bits: layout.sizes[j]) else {
                throw StoreError.corrupt("stored table \(j) is missing")
            }
            try body(j, t)
        }
    }
}
