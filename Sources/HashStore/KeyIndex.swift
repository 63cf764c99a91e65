import CHammingKernels
#if canImport(Glibc)
import Glibc
#endif

/// External keys in memory: id → key bytes (an arena), and key → id (an open-addressing
/// hash table of ids). Rebuilt from the `items` database at open; LMDB stays the durable
/// truth, so no second key B-tree costs disk space.
///
/// Memory follows the keys held, not the ids ever assigned (ids are never reused, so they
/// keep growing): `reclaim` drops the bytes of removed keys from the arena, and the id →
/// location map is an array from a base id up (ids are assigned in ascending order) plus a
/// small hash (`OlderLocations`) for the few ids below the base still held, the base chosen
/// at each `reclaim` so that the pair costs least.
///
/// A removed key stays resolvable by id (`withKeyBytes(ofAnyID:)`) until a `reclaim` whose
/// `keepingRemovedAfter` generation is at least the one the remove was tagged with: the
/// store passes the oldest generation a reader still holds results of.
///
/// Not synchronised: the store serialises mutation against reads.
final class KeyIndex {
    /// Key bytes of the ids held, back to back; removed keys leave garbage until `reclaim`.
    private var arena: [UInt8] = []
    /// Per id from `base` up: arena offset << 9 | length (lengths are ≤ 256), or 0 for an
    /// id not held; `removedBit` set once the key was removed. An id names one key for its
    /// whole life (a key added again gets a new id), so a removed id's entry still names
    /// the key it had: answers streamed after a delete resolve ids of their snapshot.
    private var location: [UInt64] = []
    /// The id `location[0]` describes.
    private var base = 0
    /// Locations of ids below `base` (as in `location`).
    private var older = OlderLocations()
    private static let removedBit: UInt64 = 1 << 63
    /// Hash slots: the high 32 bits of the key's hash << 32 | id + 1; 0 is empty,
    /// `tombstone` a deleted entry. The home slot is the stored hash bits mod the size, so
    /// growing never reads a key, and a probe compares key bytes only when the 32 hash
    /// bits match.
    private var slots: [UInt64]
    private var used = 0     // live entries
    private var filled = 0   // live entries + tombstones
    private static let tombstone = UInt64.max
    /// Removed ids whose bytes are still held, with the generation of their remove
    /// (ascending).
    private var removed: [(id: UInt32, generation: UInt64)] = []
    /// Arena bytes of live keys and of removed ones still held.
    private var liveBytes = 0
    private var deadBytes = 0
    /// The garbage the last `reclaim` had to keep (removed keys still pinned, sparse ids).
    private var garbageKept = 0

    init(capacity: Int = 1024) {
        var c = 1024
        while c < capacity * 2 { c <<= 1 }
        slots = [UInt64](repeating: 0, count: c)
    }

    var count: Int { used }

    /// The location word of an id (0: not held).
    @inline(__always)
    private func loc(_ id: UInt32) -> UInt64 {
        let i = Int(id) &- base
        if i >= 0 { return i < location.count ? location[i] : 0 }
        return older.get(id)
    }

    /// The key of a live id, as bytes: a value (copy-on-write), valid for as long as it
    /// is kept, whatever the index does later.
    func keyBytes(_ id: UInt32) -> ArraySlice<UInt8>? {
        let l = loc(id)
        guard l != 0, l & KeyIndex.removedBit == 0 else { return nil }
        let off = Int(l >> 9), len = Int(l & 0x1FF)
        return arena[off..<(off + len)]
    }

    /// The key an id has or had (also after its remove, until reclaimed), handed to `body`
    /// as a pointer valid only during the call; an id not held gives an empty buffer.
    func withKeyBytes<T>(ofAnyID id: UInt32, _ body: (UnsafeBufferPointer<UInt8>) -> T) -> T {
        let l = loc(id) & ~KeyIndex.removedBit
        let off = Int(l >> 9), len = Int(l & 0x1FF)
        return arena.withUnsafeBufferPointer { body(UnsafeBufferPointer(rebasing: $0[off..<(off + len)])) }
    }

    /// The key of a live id, as a string (a copy).
    func key(_ id: UInt32) -> String? {
        keyBytes(id).map { String(decoding: $0, as: UTF8.self) }
    }
    @inline(__always)
    static func hash(_ key: some Collection<UInt8>) -> UInt64 {
        withBytes(key) { hash(bytes: $0) }
    }

    @inline(__always)
    static func hash(bytes key: UnsafeBufferPointer<UInt8>) -> UInt64 {
        // FNV-1a, then a final mix so that every bit depends on every byte.
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        h ^= h >> 33
        h = h &* 0xff51_afd7_ed55_8ccd
        h ^= h >> 33
        return h
    }

    /// The slot holding `key` (`found`), or the first empty one of its probe run.
    @inline(__always)
    private func find(_ key: UnsafeBufferPointer<UInt8>, hash: UInt64? = nil) -> (slot: Int, found: Bool) {
        let mask = slots.count - 1
        let tag = (hash ?? KeyIndex.hash(bytes: key)) >> 32
        var i = Int(truncatingIfNeeded: tag) & mask
        return slots.withUnsafeBufferPointer { sp in
            arena.withUnsafeBufferPointer { ap in
                location.withUnsafeBufferPointer { lp in
                    while true {
                        let s = sp[i]
                        if s == 0 { return (i, false) }
                        if s != KeyIndex.tombstone, s >> 32 == tag {
                            let id = UInt32(truncatingIfNeeded: s) - 1
                            let j = Int(id) &- base
                            let loc = j >= 0 ? lp[j] : older.get(id)
                            let len = Int(loc & 0x1FF)
                            if len == key.count
                                && (len == 0 || memcmp(ap.baseAddress! + Int(loc >> 9), key.baseAddress!, len) == 0) {
                                return (i, true)
                            }
                        }
                        i = (i + 1) & mask
                    }
                }
            }
        }
    }

    /// The key's bytes as one buffer (a String's UTF-8 is contiguous already).
    @inline(__always)
    /// `key`'s bytes as a contiguous buffer, valid only during `body`.
    private static func withBytes<T>(_ key: some Collection<UInt8>, _ body: (UnsafeBufferPointer<UInt8>) -> T) -> T {
        if let r = key.withContiguousStorageIfAvailable(body) { return r }
        return Array(key).withUnsafeBufferPointer(body)
    }

    /// Makes room for `n` more keys, so that the slots do not move before n inserts
    /// (the address `hints` gives stays the table's until then).
    func reserve(_ n: Int) {
        if (filled + n) * 2 > slots.count { rehash(to: max(slots.count, (used + n) * 4)) }
    }

    /// Hints before a batch's look-ups or inserts: each starts loading a key's home slot a
    /// little before it is needed, so that the batch overlaps its misses. Taken once for
    /// a batch (after `reserve` of its inserts): borrowing the slots for each hint would
    /// retain and release them, atomic operations that each wait for the stores before them.
    struct Hints {
        let slots: UnsafePointer<UInt64>
        let mask: Int

        @inline(__always)
        func prefetch(hash: UInt64) { gdh_prefetch_write(slots + (Int(truncatingIfNeeded: hash >> 32) & mask)) }
    }

    /// `Hints` valid until the table grows (no sooner than `reserve` allows; a stale hint
    /// never faults).
    var hints: Hints {
        slots.withUnsafeBufferPointer { Hints(slots: $0.baseAddress!, mask: $0.count - 1) }
    }

    func lookup(_ key: some Collection<UInt8>) -> UInt32? {
        KeyIndex.withBytes(key) { b in
            let (i, found) = find(b)
            return found ? UInt32(truncatingIfNeeded: slots[i]) - 1 : nil
        }
    }

    func lookup(_ key: String) -> UInt32? { lookup(key.utf8) }

    /// A look-up with the key's `KeyIndex.hash` already computed.
    func lookup(_ key: String, hash: UInt64) -> UInt32? {
        var key = key
        return key.withUTF8 { b in
            let (i, found) = find(b, hash: hash)
            return found ? UInt32(truncatingIfNeeded: slots[i]) - 1 : nil
        }
    }

    /// Records a new key for a new id (the key must not be present, the id not held);
    /// `hash`, when given, is the key's `KeyIndex.hash`.
    func insert(_ key: some Collection<UInt8>, id: UInt32, hash: UInt64? = nil) {
        if (filled + 1) * 2 > slots.count { rehash(to: max(slots.count, used * 4)) }
        KeyIndex.withBytes(key) { b in
            setLoc(id, UInt64(arena.count) << 9 | UInt64(b.count))
            arena.append(contentsOf: b)
            liveBytes += b.count
            place(((hash ?? KeyIndex.hash(bytes: b)) >> 32) << 32 | UInt64(id + 1))
        }
        used += 1
        filled += 1
        reclaiming?.journal.append(id)
    }

    /// Sets an id's location word (in the array from `base` up, else in `older`).
    @inline(__always)
    private func setLoc(_ id: UInt32, _ value: UInt64) {
        KeyIndex.setLocation(id, value, base: base, location: &location, older: &older)
    }

    /// Puts a slot value (tag << 32 | id + 1) in the first empty slot of its run.
    @inline(__always)
    private func place(_ entry: UInt64) {
        KeyIndex.place(entry, in: &slots)
    }

    /// Sets the location word of `id` in `location` (which describes the ids from `base`
    /// up, and grows to hold `id`), or in `older` for an id below `base`: for the index in
    /// use and for the packed one a reclaim builds.
    @inline(__always)
    static func setLocation(_ id: UInt32, _ value: UInt64, base: Int, location: inout [UInt64], older: inout OlderLocations) {
        let i = Int(id) - base
        guard i >= 0 else { older.set(id, value); return }
        if i >= location.count { location.append(contentsOf: repeatElement(0, count: i + 1 - location.count)) }
        location[i] = value
    }

    /// Puts `entry` (tag << 32 | id + 1) in the first empty slot of its run in `slots`.
    @inline(__always)
    static func place(_ entry: UInt64, in slots: inout [UInt64]) {
        let mask = slots.count - 1
        var i = Int(truncatingIfNeeded: entry >> 32) & mask
        while slots[i] != 0 { i = (i + 1) & mask }
        slots[i] = entry
    }

    /// Forgets a key; returns its id if it was present. Its bytes stay resolvable by id
    /// until a `reclaim` keeping only removes after `generation`.
    @discardableResult
    func remove(_ key: some Collection<UInt8>, generation: UInt64 = 0, hash: UInt64? = nil) -> UInt32? {
        KeyIndex.withBytes(key) { b in
            let (i, found) = find(b, hash: hash)
            guard found else { return nil }
            let id = UInt32(truncatingIfNeeded: slots[i]) - 1
            slots[i] = KeyIndex.tombstone
            setLoc(id, loc(id) | KeyIndex.removedBit)
            removed.append((id, generation))
            reclaiming?.journal.append(id)
            liveBytes -= b.count
            deadBytes += b.count
            used -= 1
            return id
        }
    }

    private func rehash(to size: Int) {
        slots = KeyIndex.rehashed(slots, size: size)
        filled = used
    }

    /// The live entries of `old` in a new table of at least `size` slots (a power of two,
    /// at least 1,024), without tombstones.
    private static func rehashed(_ old: [UInt64], size: Int) -> [UInt64] {
        var c = 1024
        while c < size { c <<= 1 }
        var slots = [UInt64](repeating: 0, count: c)
        let mask = c - 1
        for s in old where s != 0 && s != KeyIndex.tombstone {
            var i = Int(truncatingIfNeeded: s >> 32) & mask
            while slots[i] != 0 { i = (i + 1) & mask }
            slots[i] = s
        }
        return slots
    }

    /// Bytes held in memory, for STATS.
    var memoryBytes: Int {
        arena.capacity + location.capacity * 8 + slots.count * 8 + older.memoryBytes + removed.capacity * 16
    }

    // MARK: Reclaiming

    /// Bytes that `reclaim` could give back: removed keys' bytes with their location and
    /// `removed` entries, and the array's entries of ids not held.
    var garbageBytes: Int {
        deadBytes + 24 * removed.count + 8 * max(0, location.count - (used + removed.count - older.count))
    }

    /// Whether a reclaim keeping the removes after `safe` is worth its pass: garbage has
    /// grown past half what the held keys cost (bytes, location, about a slot; and 1 MiB),
    /// and past twice what the last reclaim had to keep, or removes the last one had to
    /// keep may go now.
    func shouldReclaim(safe: UInt64) -> Bool {
        let garbage = garbageBytes
        guard garbage > max(1 << 20, (liveBytes + 16 * used) / 2) else { return false }
        return garbage > 2 * garbageKept || (removed.first.map { $0.generation <= safe } ?? false)
    }

    /// Drops removed keys tagged with a generation ≤ `safe` (no reader can still ask for
    /// them), packs the arena with the keys held (ascending id), rebases the id → location
    /// map, and sizes the key → id table for the keys left. Ids do not change.
    func reclaim(keepingRemovedAfter safe: UInt64) {
        startReclaim(keepingRemovedAfter: safe)
        while !reclaimStep(budget: .max) {}
        withExtendedLifetime(finishReclaim()) {}
    }

    /// A reclaim under way: the packed index built beside this one a piece at a time
    /// (`reclaimStep`), while this one goes on changing; every id inserted or removed
    /// meanwhile is journaled and its current state carried over, so that the swap
    /// (`finishReclaim`) has only the last few to carry. A value, worked on as a local
    /// copy by each step (moved out and back: no copy of its arrays, no access checks).
    struct Reclaim {
        let safe: UInt64
        /// One past the ids the array covered at the start (ids inserted later are above it,
        /// and journaled).
        let end: Int
        /// A bit per id below `end`: the removes that may go.
        var dropped: [UInt64]
        /// The ids held at the scan, not dropped, ascending.
        var held: [UInt32] = []
        var olderScanned = false
        /// The next array index (id - the index's base) to scan; then the next `held` to copy.
        var scanNext = 0, copyNext = 0
        var scanned = false
        /// Words of `location` and then `slots` zeroed so far, until `zeroDone` (after which
        /// both may grow or be replaced, with zeroed words).
        var zeroed = 0, zeroDone = false
        /// The packed index being built.
        var arena: [UInt8] = [], location: [UInt64] = [], base = 0, older = OlderLocations(), slots: [UInt64] = []
        var deadBytes = 0
        /// Entries placed in `slots` and tombstones left there.
        var placed = 0, tombstones = 0
        /// Ids inserted or removed since the start and not carried over yet.
        var journal: [UInt32] = []
        /// Entries of `removed` at the start that stay (removed after `safe`), and how many
        /// there were in all.
        let kept: [(id: UInt32, generation: UInt64)]
        let removedBefore: Int

        @inline(__always)
        func isDropped(_ id: UInt32) -> Bool {
            Int(id) < end && dropped[Int(id) >> 6] >> UInt64(id & 63) & 1 == 1
        }

        /// The word of an id in the packed index (0: not there).
        @inline(__always)
        func word(_ id: UInt32) -> UInt64 {
            let i = Int(id) - base
            return i >= 0 ? (i < location.count ? location[i] : 0) : older.get(id)
        }

        @inline(__always)
        mutating func setWord(_ id: UInt32, _ w: UInt64) {
            KeyIndex.setLocation(id, w, base: base, location: &location, older: &older)
        }

        /// Places `tag << 32 | id + 1` in the packed key → id table.
        @inline(__always)
        mutating func place(_ entry: UInt64) {
            KeyIndex.place(entry, in: &slots)
            placed += 1
        }

        /// Turns an id's entry in the packed table into a tombstone (`tag`: its key's hash >> 32).
        mutating func unplace(_ id: UInt32, tag: UInt64) {
            let mask = slots.count - 1
            var i = Int(truncatingIfNeeded: tag) & mask
            while slots[i] != 0 {
                if slots[i] == tag << 32 | UInt64(id + 1) {
                    slots[i] = KeyIndex.tombstone
                    tombstones += 1
                    return
                }
                i = (i + 1) & mask
            }
        }

        /// Gives the packed index the current state of an id whose location word in the
        /// index is `l` (key bytes in `arena`): copies a key not there yet, marks removed
        /// one removed since.
        @inline(__always)
        mutating func carry(_ id: UInt32, _ l: UInt64, _ arena: UnsafeBufferPointer<UInt8>) {
            guard l != 0 else { return }
            let off = Int((l & ~KeyIndex.removedBit) >> 9), len = Int(l & 0x1FF)
            let isRemoved = l & KeyIndex.removedBit != 0
            let nl = word(id)
            let bytes = UnsafeBufferPointer(rebasing: arena[off..<(off + len)])
            if nl == 0 {
                let moved = UInt64(self.arena.count) << 9 | (l & (KeyIndex.removedBit | 0x1FF))
                self.arena.append(contentsOf: bytes)
                setWord(id, moved)
                if isRemoved { deadBytes += len } else { place((KeyIndex.hash(bytes: bytes) >> 32) << 32 | UInt64(id + 1)) }
            } else if isRemoved && nl & KeyIndex.removedBit == 0 {
                setWord(id, nl | KeyIndex.removedBit)
                deadBytes += len
                unplace(id, tag: KeyIndex.hash(bytes: bytes) >> 32)
            }
        }
    }

    /// The reclaim under way, if any.
    private(set) var reclaiming: Reclaim?

    /// Starts a reclaim that drops the removed keys tagged with a generation ≤ `safe` (no
    /// reader can still ask for them), packs the arena with the keys held (ascending id),
    /// rebases the id → location map and sizes the key → id table for the keys left; ids do
    /// not change. O(removes + id span / 64): the rest is `reclaimStep`'s.
    func startReclaim(keepingRemovedAfter safe: UInt64) {
        precondition(reclaiming == nil, "a reclaim is under way")
        let end = base + location.count
        var dropped = [UInt64](repeating: 0, count: end / 64 + 1)
        var kept: [(id: UInt32, generation: UInt64)] = []
        for r in removed {
            if r.generation <= safe { dropped[Int(r.id) >> 6] |= 1 << UInt64(r.id & 63) } else { kept.append(r) }
        }
        reclaiming = Reclaim(safe: safe, end: end, dropped: dropped, kept: kept, removedBefore: removed.count)
    }

    /// Does about `budget` ids' worth of the reclaim under way (scans the array, zeroes the
    /// new array and table, copies held keys to the packed index, then carries over the ids
    /// journaled so far), touching this index only to read it. Returns true once done:
    /// `finishReclaim` then has only the changes made after this step to carry.
    func reclaimStep(budget: Int) -> Bool {
        guard var w = reclaiming else { return true }
        // Worked on here and put back: `w` holds its arrays alone meanwhile.
        reclaiming = nil
        defer { reclaiming = w }
        var left = budget
        if !w.scanned {
            if !w.olderScanned {
                w.held = older.entries().map(\.id).filter { !w.isDropped($0) }.sorted()
                w.olderScanned = true
            }
            // The array as it was at the start (ids above it are journaled).
            let count = w.end - base
            let stop = left >= count - w.scanNext ? count : w.scanNext + left
            let base = self.base, end = w.end
            var held = w.held
            w.held = []
            location.withUnsafeBufferPointer { lp in
                w.dropped.withUnsafeBufferPointer { dp in
                    for i in w.scanNext..<stop where lp[i] != 0 {
                        let id = i + base
                        if id < end && dp[id >> 6] >> UInt64(id & 63) & 1 == 1 { continue }
                        held.append(UInt32(id))
                    }
                }
            }
            w.held = held
            left -= stop - w.scanNext
            w.scanNext = stop
            guard stop == count else { return false }
            // The scan is done: the new base, the array and the table's size. Both are
            // zeroed a piece at a time below (tens of MB at millions of ids: their first
            // touch alone takes milliseconds).
            w.scanned = true
            w.base = KeyIndex.cheapestBase(held: w.held, end: w.end)
            var c = 1024
            while c < used * 4 { c <<= 1 }
            w.location = KeyIndex.unzeroed(max(0, w.end - w.base))
            w.slots = KeyIndex.unzeroed(c)
            w.arena.reserveCapacity(liveBytes + w.kept.count * 32)
            left -= w.held.count / 8
        }
        while !w.zeroDone {
            // Eight words cost about one id of the scan.
            guard left > 0 else { return false }
            let n = w.location.count
            let from = w.zeroed, stop = from + min(w.location.count + w.slots.count - from, left >= Int.max / 8 ? Int.max / 8 : left * 8)
            if from < n { w.location.withUnsafeMutableBufferPointer { $0[from..<min(n, stop)].update(repeating: 0) } }
            if stop > n { w.slots.withUnsafeMutableBufferPointer { $0[max(0, from - n)..<(stop - n)].update(repeating: 0) } }
            left -= (stop - from + 7) / 8
            w.zeroed = stop
            if stop == w.location.count + w.slots.count { w.zeroDone = true }
        }
        // The ids changed so far, then the next held ones. A carry or a copy costs about
        // four ids of the scan, sixteen once the table is past 8 MB: its entry lands at a
        // random place of it (a cache and a TLB miss).
        let cost = w.slots.count > 1 << 20 ? 16 : 4
        if !w.journal.isEmpty && left >= cost {
            let n = min(w.journal.count, left / cost)
            let part = Array(w.journal[..<n])
            w.journal.removeFirst(n)
            carryJournal(part, into: &w)
            left -= cost * n
        }
        if w.copyNext < w.held.count && left >= cost {
            let stop = left / cost >= w.held.count - w.copyNext ? w.held.count : w.copyNext + left / cost
            carry(w.held[w.copyNext..<stop], into: &w)
            left -= cost * (stop - w.copyNext)
            w.copyNext = stop
        }
        // Ready once all is carried: the swap has only what changes after this step.
        return w.copyNext == w.held.count && w.journal.isEmpty
    }

    /// An array of `n` words left unset, for `reclaimStep` to zero in pieces before any use.
    private static func unzeroed(_ n: Int) -> [UInt64] {
        [UInt64](unsafeUninitializedCapacity: n) { _, count in count = n }
    }

    /// Gives the packed index the current state of each id (any order, repeats allowed).
    private func carry(_ ids: some Collection<UInt32>, into w: inout Reclaim) {
        let base = self.base
        arena.withUnsafeBufferPointer { ap in
            location.withUnsafeBufferPointer { lp in
                for id in ids {
                    let i = Int(id) &- base
                    w.carry(id, i >= 0 ? (i < lp.count ? lp[i] : 0) : older.get(id), ap)
                }
            }
        }
    }

    /// `carry` of journaled ids: first room for the inserts among them in a table at most
    /// half full.
    private func carryJournal(_ ids: [UInt32], into w: inout Reclaim) {
        if (w.placed + ids.count + 1) * 2 > w.slots.count {
            w.slots = KeyIndex.rehashed(w.slots, size: (w.placed - w.tombstones + ids.count) * 4)
            w.placed -= w.tombstones
            w.tombstones = 0
        }
        carry(ids, into: &w)
    }

    /// Carries over the last journaled ids and puts the packed index in use (under the
    /// owner's write lock); O(journal). Returns the old buffers, to be dropped outside it.
    func finishReclaim() -> AnyObject {
        guard var w = reclaiming else { return [UInt8]() as AnyObject }
        reclaiming = nil
        precondition(w.scanned && w.zeroDone && w.copyNext == w.held.count, "reclaim not prepared")
        carryJournal(w.journal, into: &w)
        precondition(w.placed - w.tombstones == used, "key index reclaim lost track of the keys")
        let old = (arena, location, slots, older, removed) as AnyObject
        arena = w.arena
        location = w.location
        base = w.base
        older = w.older
        slots = w.slots
        filled = w.placed
        removed = w.kept + removed[w.removedBefore...]
        deadBytes = w.deadBytes
        garbageKept = garbageBytes
        return old
    }

    /// The base id for which the array from it up to `end` (8 bytes an id) and the hash of
    /// the held ids below it (`OlderLocations.bytesPerEntry` each) cost least; `held` ascends.
    static func cheapestBase(held: some Sequence<UInt32>, end: Int) -> Int {
        var best = end, bestCost = Int.max, below = 0
        for id in held {
            let cost = 8 * (end - Int(id)) + OlderLocations.bytesPerEntry * below
            if cost < bestCost { bestCost = cost; best = Int(id) }
            below += 1
        }
        // Every held id in the hash, no array at all.
        return OlderLocations.bytesPerEntry * below < bestCost ? end : best
    }
}

/// Location words of ids below `KeyIndex`'s base: an open-addressing hash with linear
/// probing (id + 1 in one array, the word in another, at most half full). Few entries:
/// the ids that outlived most of their neighbours.
struct OlderLocations {
    private var ids: [UInt32] = []
    private var words: [UInt64] = []
    private(set) var count = 0
    /// Bytes an entry costs on average (12 a slot, 1.5 to 3 slots an entry).
    static let bytesPerEntry = 24

    @inline(__always)
    private func home(_ id: UInt32, mask: Int) -> Int {
        Int(truncatingIfNeeded: (UInt64(id) &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    /// The word of an id, or 0.
    @inline(__always)
    func get(_ id: UInt32) -> UInt64 {
        guard count > 0 else { return 0 }
        let mask = ids.count - 1
        var i = home(id, mask: mask)
        while ids[i] != 0 {
            if ids[i] == id &+ 1 { return words[i] }
            i = (i + 1) & mask
        }
        return 0
    }

    /// Sets an id's word (0 keeps the slot, as a word meaning "not held").
    mutating func set(_ id: UInt32, _ word: UInt64) {
        if (count + 1) * 2 > ids.count { grow() }
        let mask = ids.count - 1
        var i = home(id, mask: mask)
        while ids[i] != 0 && ids[i] != id &+ 1 { i = (i + 1) & mask }
        if ids[i] == 0 { ids[i] = id &+ 1; count += 1 }
        words[i] = word
    }

    private mutating func grow() {
        let old = entries()
        let size = max(16, ids.count * 2)
        ids = [UInt32](repeating: 0, count: size)
        words = [UInt64](repeating: 0, count: size)
        count = 0
        for (id, w) in old { set(id, w) }
    }

    /// The entries with a nonzero word, in no order.
    func entries() -> [(id: UInt32, loc: UInt64)] {
        var out: [(id: UInt32, loc: UInt64)] = []
        for i in ids.indices where ids[i] != 0 && words[i] != 0 { out.append((ids[i] - 1, words[i])) }
        return out
    }

    var memoryBytes: Int { ids.capacity * 4 + words.capacity * 8 }
}

/// The keys a batch of writes has touched so far, with the id each now has (nil: deleted),
/// so that a later write of the batch sees an earlier one before either is in `KeyIndex`.
/// An open-addressing table of `hash tag << 32 | entry + 1` words (hashes from
/// `KeyIndex.hash`; a key's string is compared only when its 32 tag bits match) over a list
/// of the batch's distinct keys; storage is kept between batches.
struct BatchKeys {
    private var slots: [UInt64] = []
    private var entryKey: [String] = []
    private var entryID: [UInt32] = []
    /// The slots in use, to empty them without a pass over the whole table.
    private var touched: [Int] = []
    private static let deleted = UInt32.max

    /// Empties the table, sized for a batch of `count` writes (grows, never shrinks).
    mutating func reset(for count: Int) {
        for i in touched { slots[i] = 0 }
        touched.removeAll(keepingCapacity: true)
        entryKey.removeAll(keepingCapacity: true)
        entryID.removeAll(keepingCapacity: true)
        var c = 16
        while c < count * 2 { c <<= 1 }
        if slots.count < c { slots = [UInt64](repeating: 0, count: c) }
    }

    /// The slot holding `key` (whose `KeyIndex.hash` is `hash`), or the empty one where it would go.
    private func slot(_ key: String, hash: UInt64) -> Int {
        let mask = slots.count - 1, tag = hash >> 32
        var i = Int(truncatingIfNeeded: hash) & mask
        while slots[i] != 0 {
            if slots[i] >> 32 == tag && entryKey[Int(UInt32(truncatingIfNeeded: slots[i]) - 1)] == key { return i }
            i = (i + 1) & mask
        }
        return i
    }

    /// nil: not touched by the batch; .some(nil): deleted by it; .some(id): its id now.
    func state(of key: String, hash: UInt64) -> UInt32?? {
        guard !touched.isEmpty else { return nil }
        let s = slots[slot(key, hash: hash)]
        guard s != 0 else { return nil }
        let id = entryID[Int(UInt32(truncatingIfNeeded: s) - 1)]
        return id == BatchKeys.deleted ? .some(nil) : .some(id)
    }

    mutating func set(_ key: String, hash: UInt64, _ id: UInt32?) {
        precondition(2 * (touched.count + 1) <= slots.count, "BatchKeys sized for fewer writes")
        let i = slot(key, hash: hash)
        if slots[i] == 0 {
            entryKey.append(key)
            entryID.append(0)
            slots[i] = (hash >> 32) << 32 | UInt64(entryKey.count)
            touched.append(i)
        }
        entryID[Int(UInt32(truncatingIfNeeded: slots[i]) - 1)] = id ?? BatchKeys.deleted
    }
}

/// A readers-writer lock that prefers writers, so a stream of queries cannot starve
/// the writer applying committed changes.
final class ReadWriteLock {
    private let lock = UnsafeMutablePointer<pthread_rwlock_t>.allocate(capacity: 1)

    init() {
        var attr = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attr)
        #if os(Linux)
        pthread_rwlockattr_setkind_np(&attr, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        #endif
        lock.initialize(to: pthread_rwlock_t())
        pthread_rwlock_init(lock, &attr)
        pthread_rwlockattr_destroy(&attr)
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    func withReadLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    func withWriteLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}
