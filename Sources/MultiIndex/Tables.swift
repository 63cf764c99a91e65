import CHammingKernels
import HammingCode

/// One direct-addressed multi-index table: for each substring value v, the code positions
/// (see `CodeArray`) whose substring equals v are `ids[offsets[v] ..< offsets[v+1]]`, in
/// ascending order. Built by a counting sort over the live positions, or merged; never
/// changed afterwards, so its memory lives exactly as long as the table.
final class BaseTable {
    let bits: Int
    /// 2^bits + 1 entries.
    private let offsets: UnsafeMutablePointer<UInt32>
    private let offsetCount: Int
    /// offsets[2^bits] entries.
    private let ids: UnsafeMutablePointer<UInt32>
    private let idCount: Int

    /// An empty table.
    init(bits: Int) {
        self.bits = bits
        offsetCount = (1 << bits) + 1
        offsets = .allocate(capacity: offsetCount)
        offsets.initialize(repeating: 0, count: offsetCount)
        ids = .allocate(capacity: 1)
        idCount = 0
    }

    struct Malformed: Error, CustomStringConvertible {
        let description: String
    }

    /// A table from stored arrays; checks their shape.
    init(bits: Int, offsets o: [UInt32], ids i: [UInt32]) throws {
        self.bits = bits
        offsetCount = (1 << bits) + 1
        guard o.count == offsetCount else {
            throw Malformed(description: "table has \(o.count) offsets, expected \(offsetCount)")
        }
        guard o.first == 0, Int(o[o.count - 1]) == i.count else {
            throw Malformed(description: "table offsets do not cover its \(i.count) ids")
        }
        for v in 0..<(o.count - 1) where o[v] > o[v + 1] {
            throw Malformed(description: "table offsets decrease at bucket \(v)")
        }
        let off = UnsafeMutablePointer<UInt32>.allocate(capacity: o.count)
        off.initialize(from: o, count: o.count)
        let idp = UnsafeMutablePointer<UInt32>.allocate(capacity: max(1, i.count))
        if !i.isEmpty { idp.initialize(from: i, count: i.count) }
        offsets = off
        ids = idp
        idCount = i.count
    }

    private init(bits: Int, offsets: UnsafeMutablePointer<UInt32>, ids: UnsafeMutablePointer<UInt32>, idCount: Int) {
        self.bits = bits
        self.offsetCount = (1 << bits) + 1
        self.offsets = offsets
        self.ids = ids
        self.idCount = idCount
    }

    deinit {
        offsets.deallocate()
        ids.deallocate()
    }

    /// Table j of `layout` over the live positions of `codes`, by counting sort.
    static func build(codes: CodeStorage, layout: SubstringLayout, table j: Int) -> BaseTable {
        let bits = layout.sizes[j]
        let buckets = 1 << bits
        let offsets = UnsafeMutablePointer<UInt32>.allocate(capacity: buckets + 1)
        offsets.initialize(repeating: 0, count: buckets + 1)
        var n = 0
        let words = codes.words, base = UnsafePointer(codes.codes)
        // Count each value into offsets[v + 1], prefix-sum, then place positions in order.
        codes.forEachLivePosition { p in
            offsets[Int(layout.substring(j, of: base + p * words)) + 1] += 1
            n += 1
        }
        let ids = UnsafeMutablePointer<UInt32>.allocate(capacity: max(1, n))
        for v in 0..<buckets { offsets[v + 1] += offsets[v] }
        let cursor = UnsafeMutablePointer<UInt32>.allocate(capacity: buckets)
        cursor.initialize(from: offsets, count: buckets)
        codes.forEachLivePosition { p in
            let v = Int(layout.substring(j, of: base + p * words))
            ids[Int(cursor[v])] = UInt32(p)
            cursor[v] += 1
        }
        cursor.deallocate()
        return BaseTable(bits: bits, offsets: offsets, ids: ids, idCount: n)
    }

    /// Entries held (the positions the table was built over).
    var count: Int { idCount }

    /// `base` (built over positions 0 ..< base.count of `codes`, none stale) with the
    /// positions base.count ..< codes.count added: equal to `build` over all of them, at a
    /// cost of one sequential pass over the base plus a sort of the new positions, instead
    /// of a counting sort over every code. Every position of `codes` must be live.
    static func merged(_ base: BaseTable, codes: CodeStorage, layout: SubstringLayout, table j: Int) -> BaseTable {
        let bits = layout.sizes[j]
        precondition(base.bits == bits && base.idCount <= codes.count, "merge base does not fit")
        let buckets = 1 << bits
        let words = codes.words, codeBase = UnsafePointer(codes.codes)
        // The new entries as value << 32 | position, sorted: by value, then position.
        var added = [UInt64]()
        added.reserveCapacity(codes.count - base.idCount)
        for p in base.idCount..<codes.count {
            added.append(UInt64(layout.substring(j, of: codeBase + p * words)) << 32 | UInt64(p))
        }
        BaseTable.sortByValue(&added, bits: bits)
        let n = base.idCount + added.count
        let offsets = UnsafeMutablePointer<UInt32>.allocate(capacity: buckets + 1)
        let ids = UnsafeMutablePointer<UInt32>.allocate(capacity: max(1, n))
        // Every new position is above the base's, so a bucket is the base's run followed by
        // the new one, both ascending. Between the buckets that gain entries the base's ids
        // move as one block and its offsets shift by the count added so far: one copy and
        // one add loop per stretch, not a branch per bucket (most buckets gain nothing).
        var k = 0, from = 0
        added.withUnsafeBufferPointer { add in
            while k < add.count {
                let v = Int(add[k] >> 32)
                copyShifted(base, buckets: from...v, shift: k, offsets: offsets, ids: ids)
                var at = Int(base.offsets[v + 1]) + k
                while k < add.count && Int(add[k] >> 32) == v {
                    ids[at] = UInt32(truncatingIfNeeded: add[k]); at += 1; k += 1
                }
                from = v + 1
            }
        }
        copyShifted(base, buckets: from...buckets, shift: k, offsets: offsets, ids: ids)
        precondition(Int(offsets[buckets]) == n, "merge lost entries")
        return BaseTable(bits: bits, offsets: offsets, ids: ids, idCount: n)
    }

    /// For `merged`: buckets `range` of `base` (the last one may be the end mark,
    /// `2^bits`) with `shift` new entries before them: their offsets moved up by `shift`,
    /// their ids copied as one block (a bucket's own new entries are added after it).
    @inline(__always)
    private static func copyShifted(_ base: BaseTable, buckets range: ClosedRange<Int>, shift: Int,
                                    offsets: UnsafeMutablePointer<UInt32>, ids: UnsafeMutablePointer<UInt32>) {
        let s = UInt32(shift)
        for v in range { offsets[v] = base.offsets[v] &+ s }
        let last = min(range.upperBound, base.offsetCount - 2)
        let start = Int(base.offsets[range.lowerBound])
        let end = range.lowerBound <= last ? Int(base.offsets[last + 1]) : start
        if end > start { (ids + start + shift).initialize(from: base.ids + start, count: end - start) }
    }

    /// Sorts `value << 32 | position` words that come in ascending position order by value,
    /// keeping that order within a value: a stable LSD radix sort over the value's `bits`
    /// bits, 12 at a time (two passes for the usual table widths).
    static func sortByValue(_ keys: inout [UInt64], bits: Int) {
        let n = keys.count
        guard n > 1 else { return }
        var other = [UInt64](repeating: 0, count: n)
        let digit = 12, radix = 1 << 12
        var count = [Int](repeating: 0, count: radix + 1)
        var shift = 32
        while shift < 32 + bits {
            let sh = UInt64(shift)
            keys.withUnsafeBufferPointer { src in
                other.withUnsafeMutableBufferPointer { dst in
                    count.withUnsafeMutableBufferPointer { c in
                        for i in 0...radix { c[i] = 0 }
                        for x in src { c[Int((x >> sh) & UInt64(radix - 1)) + 1] += 1 }
                        for i in 0..<radix { c[i + 1] += c[i] }
                        for x in src {
                            let d = Int((x >> sh) & UInt64(radix - 1))
                            dst[c[d]] = x
                            c[d] += 1
                        }
                    }
                }
            }
            swap(&keys, &other)
            shift += digit
        }
    }

    /// The offsets (2^bits + 1) and the positions of the entries. A table never changes
    /// once built: valid while this table lives (an index drops its tables at a fold or a
    /// load, so a caller holding only the index must not keep them past its next fold).
    var buffers: (offsets: UnsafeBufferPointer<UInt32>, ids: UnsafeBufferPointer<UInt32>) {
        (UnsafeBufferPointer(start: offsets, count: offsetCount), UnsafeBufferPointer(start: ids, count: idCount))
    }

    @inline(__always)
    func forEach(_ v: UInt32, _ body: (UInt32) -> Void) {
        let lo = Int(offsets[Int(v)]), hi = Int(offsets[Int(v) + 1])
        var i = lo
        while i < hi { body(ids[i]); i += 1 }
    }

    /// Whether bucket v holds position `id` (binary search: buckets are in ascending order).
    func contains(_ v: UInt32, _ id: UInt32) -> Bool {
        var lo = Int(offsets[Int(v)]), hi = Int(offsets[Int(v) + 1])
        while lo < hi {
            let mid = (lo + hi) >> 1
            let x = ids[mid]
            if x == id { return true }
            if x < id { lo = mid + 1 } else { hi = mid }
        }
        return false
    }
}

/// Entries added since the table was built: substring value → code positions, in flat arrays (no
/// allocation per entry or per bucket). Each bucket with entries has a slot in an
/// open-addressing hash of the values (`slotValue`, `slotHead`, linear probing, at most half
/// full) whose head is its newest entry; `entryNext` chains the entries of a bucket, newest
/// first. A bitmap over the values lets a probe skip the hash look-up for the (usual) empty
/// bucket. About 8 bytes per entry and 16 per bucket with entries.
struct DeltaTable {
    let bits: Int
    private var present: [UInt64] = []
    /// Per slot: value << 32 | newest entry (`none`: empty slot), one word so that a
    /// look-up touches one cache line.
    private var slots: [UInt64] = []
    private var slotsUsed = 0
    /// log2 of the slot count.
    private var slotBits = 0
    /// Per entry: code position << 32 | the bucket's next older entry (`none`: last).
    private var entries: [UInt64] = []
    private static let none = UInt32.max
    private static let emptySlot = UInt64(UInt32.max)

    init(bits: Int) {
        self.bits = bits
    }

    /// An empty delta with room for `entries` entries set aside (not touched: room never
    /// used costs no memory), so that the appends until the next fold do not copy the
    /// entries each time their array doubles.
    init(bits: Int, room entries: Int) {
        self.bits = bits
        self.entries.reserveCapacity(entries)
    }

    @inline(__always)
    private func isPresent(_ v: UInt32) -> Bool {
        !present.isEmpty && (present[Int(v >> 6)] >> UInt64(v & 63)) & 1 == 1
    }

    /// The slot of value v, or of the empty place where it would go.
    @inline(__always)
    private func slot(_ v: UInt32) -> Int {
        let mask = slots.count - 1
        var s = Int(truncatingIfNeeded: (UInt64(v) &* 0x9E37_79B9_7F4A_7C15) >> UInt64(64 - slotBits))
        while true {
            let x = slots[s]
            if UInt32(truncatingIfNeeded: x) == DeltaTable.none || UInt32(truncatingIfNeeded: x >> 32) == v { return s }
            s = (s + 1) & mask
        }
    }

    /// The newest entry of bucket v, or `none`.
    @inline(__always)
    private func head(_ v: UInt32) -> UInt32 {
        isPresent(v) ? UInt32(truncatingIfNeeded: slots[slot(v)]) : DeltaTable.none
    }

    @inline(__always)
    func forEach(_ v: UInt32, _ body: (UInt32) -> Void) {
        var e = head(v)
        while e != DeltaTable.none {
            let x = entries[Int(e)]
            body(UInt32(truncatingIfNeeded: x >> 32))
            e = UInt32(truncatingIfNeeded: x)
        }
    }

    func contains(_ v: UInt32, _ id: UInt32) -> Bool {
        var found = false
        forEach(v) { if $0 == id { found = true } }
        return found
    }

    /// Makes room for `n` more entries without growing the hash or the entries on the way
    /// (so that the addresses `hints()` gives stay those of the table until then).
    mutating func reserve(_ n: Int) {
        if present.isEmpty { present = [UInt64](repeating: 0, count: ((1 << bits) + 63) / 64) }
        while slots.isEmpty || 2 * (slotsUsed + n) > slots.count { growSlots() }
        if entries.capacity < entries.count + n { entries.reserveCapacity(max(entries.count + n, 2 * entries.count)) }
    }

    /// The addresses `append(v, _)` touches first (the bitmap word and the value's home
    /// slot), for a batch of appends to fetch them ahead: taken once for the batch, after
    /// `reserve` of its entries, instead of borrowing the arrays (a retain and a release)
    /// for each hint.
    struct Hints {
        fileprivate let present: UnsafePointer<UInt64>
        fileprivate let slots: UnsafePointer<UInt64>
        fileprivate let shift: UInt64

        /// Starts loading the cache lines of appending value v.
        @inline(__always)
        func prefetch(_ v: UInt32) {
            gdh_prefetch_write(present + Int(v >> 6))
            gdh_prefetch_write(slots + Int(truncatingIfNeeded: (UInt64(v) &* 0x9E37_79B9_7F4A_7C15) >> shift))
        }
    }

    /// `Hints` for the appends of a batch, valid until more entries are appended than
    /// `reserve` made room for (a hint is only a hint: a stale one never faults).
    func hints() -> Hints {
        precondition(!present.isEmpty && !slots.isEmpty, "hints before reserve")
        return Hints(present: present.withUnsafeBufferPointer { $0.baseAddress! },
                     slots: slots.withUnsafeBufferPointer { $0.baseAddress! },
                     shift: UInt64(64 - slotBits))
    }

    mutating func append(_ v: UInt32, _ id: UInt32) {
        if present.isEmpty { present = [UInt64](repeating: 0, count: ((1 << bits) + 63) / 64) }
        if 2 * (slotsUsed + 1) > slots.count { growSlots() }
        let s = slot(v)
        let old = slots[s]
        if UInt32(truncatingIfNeeded: old) == DeltaTable.none { slotsUsed += 1 }
        present[Int(v >> 6)] |= UInt64(1) << UInt64(v & 63)
        precondition(entries.count < Int(DeltaTable.none), "delta table full")
        entries.append(UInt64(id) << 32 | (old & 0xFFFF_FFFF))
        slots[s] = UInt64(v) << 32 | UInt64(entries.count - 1)
    }

    /// Doubles the hash (at least 64 slots) and re-inserts the buckets; entries stay put.
    private mutating func growSlots() {
        let old = slots
        slotBits = max(6, slotBits + 1)
        slots = [UInt64](repeating: DeltaTable.emptySlot, count: 1 << slotBits)
        for x in old where UInt32(truncatingIfNeeded: x) != DeltaTable.none {
            slots[slot(UInt32(truncatingIfNeeded: x >> 32))] = x
        }
    }

    /// Entries whose position is a hole or no longer has this substring value.
    func staleCount(codes: CodeArray, layout: SubstringLayout, table j: Int) -> Int {
        var stale = 0
        for x in slots where UInt32(truncatingIfNeeded: x) != DeltaTable.none {
            let v = UInt32(truncatingIfNeeded: x >> 32)
            forEach(v) { id in
                let p = Int(id)
                if !codes.isLive(position: p) || layout.substring(j, of: codes.pointer(position: p)) != v { stale += 1 }
            }
        }
        return stale
    }
}
