import CHammingKernels
#if canImport(Glibc)
import Glibc
#endif

/// The stored form of one multi-index table (one LMDB value in `tables`):
///
///     u32 format (1) | u32 substring bits w | u32 n (ids)
///     n × u32 ids, grouped by bucket, ascending within a bucket
///     ceil((n + 2^w) / 64) × u64: the bucket sizes in unary, bucket 0 first
///     (size c as c one-bits then a zero-bit; bit i of the stream is bit i % 64 of word i / 64)
///
/// Unary sizes take n + 2^w bits instead of the 32 × 2^w of an offset array, so the
/// stored tables cost about 4 bytes per id per table (the offsets are rebuilt at open).
enum StoredTable {
    static let format: UInt32 = 1

    struct Malformed: Error, CustomStringConvertible {
        let description: String
    }

    static func encodedSize(bits w: Int, ids n: Int) -> Int {
        12 + 4 * n + 8 * ((n + (1 << w) + 63) / 64)
    }

    /// Writes the table into `out` (exactly `encodedSize` bytes). With `idAt`, the table's
    /// entries are positions and `idAt[p]` the id stored for position p; with `idOffset` d
    /// as well, `idAt[p]` is p + d for every p (`PreparedTables.idOffset`) and is not read.
    static func encode(offsets: UnsafeBufferPointer<UInt32>, ids: UnsafeBufferPointer<UInt32>, bits w: Int,
                       idAt: UnsafePointer<UInt32>? = nil, idOffset: UInt32? = nil, into out: UnsafeMutableRawBufferPointer) {
        let n = ids.count
        out.storeBytes(of: format.littleEndian, toByteOffset: 0, as: UInt32.self)
        out.storeBytes(of: UInt32(w).littleEndian, toByteOffset: 4, as: UInt32.self)
        out.storeBytes(of: UInt32(n).littleEndian, toByteOffset: 8, as: UInt32.self)
        if idAt != nil, let d = idOffset {
            // The id at position p is p + d.
            for i in 0..<n { out.storeBytes(of: (ids[i] &+ d).littleEndian, toByteOffset: 12 + 4 * i, as: UInt32.self) }
        } else if let idAt {
            // A bucket's positions are scattered over all the codes: fetch ahead.
            let ahead = 32
            for i in 0..<n {
                if i + ahead < n { gdh_prefetch(idAt + Int(ids[i + ahead])) }
                out.storeBytes(of: idAt[Int(ids[i])].littleEndian, toByteOffset: 12 + 4 * i, as: UInt32.self)
            }
        } else {
            for i in 0..<n { out.storeBytes(of: ids[i].littleEndian, toByteOffset: 12 + 4 * i, as: UInt32.self) }
        }
        let base = 12 + 4 * n
        let words = (n + (1 << w) + 63) / 64
        // The unary sizes: zero the stream, then set each bucket's run of ones a word at a
        // time (a bucket's zero-bit is the gap before the next run).
        let stream = out.baseAddress! + base
        memset(stream, 0, 8 * words)
        func setOnes(from start: Int, count c: Int) {
            var i = start, left = c
            while left > 0 {
                let bit = i & 63, take = min(64 - bit, left)
                let mask = take == 64 ? ~UInt64(0) : ((UInt64(1) << UInt64(take)) - 1) << UInt64(bit)
                let at = 8 * (i >> 6)
                let old = UInt64(littleEndian: stream.loadUnaligned(fromByteOffset: at, as: UInt64.self))
                stream.storeBytes(of: (old | mask).littleEndian, toByteOffset: at, as: UInt64.self)
                i += take
                left -= take
            }
        }
        var pos = 0
        for v in 0..<(1 << w) {
            let c = Int(offsets[v + 1] &- offsets[v])
            if c > 0 { setOnes(from: pos, count: c) }
            pos += c + 1
        }
    }

    /// Reads a stored table back into offsets (2^w + 1) and ids, checking its shape.
    static func decode(_ blob: UnsafeRawBufferPointer, bits w: Int) throws -> (offsets: [UInt32], ids: [UInt32]) {
        guard blob.count >= 12 else { throw Malformed(description: "stored table is truncated") }
        let fmt = UInt32(littleEndian: blob.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
        let storedBits = Int(UInt32(littleEndian: blob.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
        let n = Int(UInt32(littleEndian: blob.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
        guard fmt == format else { throw Malformed(description: "stored table has format \(fmt), expected \(format)") }
        guard storedBits == w else { throw Malformed(description: "stored table has \(storedBits)-bit substrings, expected \(w)") }
        guard blob.count == encodedSize(bits: w, ids: n) else {
            throw Malformed(description: "stored table is \(blob.count) bytes, expected \(encodedSize(bits: w, ids: n))")
        }
        var ids = [UInt32](repeating: 0, count: n)
        for i in 0..<n { ids[i] = UInt32(littleEndian: blob.loadUnaligned(fromByteOffset: 12 + 4 * i, as: UInt32.self)) }
        let buckets = 1 << w
        var offsets = [UInt32](repeating: 0, count: buckets + 1)
        let base = 12 + 4 * n
        let totalBits = n + buckets
        var v = 0, count = 0, ones = 0
        var i = 0
        while i < totalBits && v < buckets {
            let word = UInt64(littleEndian: blob.loadUnaligned(fromByteOffset: base + 8 * (i >> 6), as: UInt64.self))
            if (word >> UInt64(i & 63)) & 1 == 1 {
                count += 1
                ones += 1
                guard ones <= n else { throw Malformed(description: "stored table sizes exceed its \(n) ids") }
            } else {
                offsets[v + 1] = offsets[v] + UInt32(count)
                v += 1
                count = 0
            }
            i += 1
        }
        guard v == buckets, Int(offsets[buckets]) == n else {
            throw Malformed(description: "stored table sizes do not add up to its \(n) ids")
        }
        // Every bit after the last bucket is padding and must be zero.
        var setBits = 0
        for w in 0..<((totalBits + 63) / 64) {
            setBits += UInt64(littleEndian: blob.loadUnaligned(fromByteOffset: base + 8 * w, as: UInt64.self)).nonzeroBitCount
        }
        guard setBits == n else { throw Malformed(description: "stored table has stray bits after its last bucket") }
        return (offsets, ids)
    }
}
