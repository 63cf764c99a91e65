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
    /// Table j of generation `generation` as stored in `tables` (its chunks, in order;
    /// `TableChunks`), decoded (copied out of the memory map: the arrays outlive the
    /// transaction), with its stored size; nil when its first chunk is not stored,
    /// `corrupt` when it is malformed or a chunk is missing. LMDB errors are thrown as they are.
    static func read(_ txn: Transaction, _ dbi: MDB_dbi, generation g: Int, table j: Int, bits w: Int) throws
        -> (offsets: [UInt32], ids: [UInt32], storedBytes: Int)? {
        guard let first = try txn.get(dbi, id: TableChunks.key(generation: g, chunk: 0, table: j)) else { return nil }
        do {
            let size = try expectedSize(header: first, bits: w)
            if first.count >= size {
                guard try txn.get(dbi, id: TableChunks.key(generation: g, chunk: 1, table: j)) == nil else {
                    throw Malformed(description: "stored table has a chunk after its last byte")
                }
                let t = try decode(first, bits: w)
                return (t.offsets, t.ids, first.count)
            }
            let whole = try gather(txn, dbi, generation: g, table: j, first: first, size: size)
            let t = try whole.withUnsafeBytes { try decode($0, bits: w) }
            return (t.offsets, t.ids, whole.count)
        } catch let e as Malformed {
            throw StoreError.corrupt("stored table \(j): \(e)")
        }
    }

    /// The encoded size a table's header (the first 12 bytes of chunk 0) announces, after
    /// checking its format and width.
    private static func expectedSize(header: UnsafeRawBufferPointer, bits w: Int) throws -> Int {
        guard header.count >= 12 else { throw Malformed(description: "stored table is truncated") }
        let fmt = UInt32(littleEndian: header.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
        let storedBits = Int(UInt32(littleEndian: header.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
        guard fmt == format else { throw Malformed(description: "stored table has format \(fmt), expected \(format)") }
        guard storedBits == w else { throw Malformed(description: "stored table has \(storedBits)-bit substrings, expected \(w)") }
        let n = Int(UInt32(littleEndian: header.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
        return encodedSize(bits: w, ids: n)
    }

    /// A table's chunks 0, 1, ... joined until they hold `size` bytes; `Malformed` when one
    /// is missing, when they overshoot, or when a chunk follows the last.
    private static func gather(_ txn: Transaction, _ dbi: MDB_dbi, generation g: Int, table j: Int,
                               first: UnsafeRawBufferPointer, size: Int) throws -> [UInt8] {
        var whole = [UInt8]()
        whole.reserveCapacity(size)
        whole.append(contentsOf: first)
        var c = 1
        while whole.count < size {
            guard c < TableChunks.maxChunks,
                  let chunk = try txn.get(dbi, id: TableChunks.key(generation: g, chunk: c, table: j)) else {
                throw Malformed(description: "stored table chunk \(c) is missing")
            }
            whole.append(contentsOf: chunk)
            c += 1
        }
        guard whole.count == size else {
            throw Malformed(description: "stored table chunks hold \(whole.count) bytes, expected \(size)")
        }
        if c < TableChunks.maxChunks, try txn.get(dbi, id: TableChunks.key(generation: g, chunk: c, table: j)) != nil {
            throw Malformed(description: "stored table has a chunk after its last byte")
        }
        return whole
    }

    /// Reads the stored tables of `layout` in generation `generation`, in order (table 0
    /// first), and hands each to `body`, decoded and checked (`decode`); `corrupt` when one
    /// is missing or malformed, LMDB errors as they are. The one reader and validator of
    /// the stored tables: opening the store, VERIFY, and `ReadOnlyStore`'s report and dump
    /// all use it.
    static func forEach(_ txn: Transaction, _ dbi: MDB_dbi, generation g: Int, layout: SubstringLayout,
                        _ body: (Int, (offsets: [UInt32], ids: [UInt32], storedBytes: Int)) throws -> Void) throws {
        for j in 0..<layout.count {
            guard let t = try read(txn, dbi, generation: g, table: j, bits: layout.sizes[j]) else {
                throw StoreError.corrupt("stored table \(j) is missing")
            }
            try body(j, t)
        }
    }
}
