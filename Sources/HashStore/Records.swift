import CLMDB
import HammingCode

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
