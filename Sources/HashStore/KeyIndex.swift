import CHammingKernels
#if canImport(Glibc)
import Glibc
#endif

/// External keys in memory: id → key bytes (an append-only arena), and key → id
/// (an open-addressing hash table of ids). Rebuilt from the `items` database at open;
/// LMDB stays the durable truth, so no second key B-tree costs disk space.
///
/// Not synchronised: the store serialises mutation against reads.
final class KeyIndex {
    /// Key bytes of all ids, back to back; replaced or deleted keys leave garbage
    /// that is dropped at the next open.
    private var arena: [UInt8] = []
    /// Per id: arena offset << 9 | length (lengths are ≤ 256), or 0 for an id never
    /// assigned; `removedBit` set once the key was deleted. An id names one key for its
    /// whole life (a key added again gets a new id), so a removed id's entry still names
    /// the key it had: answers streamed after a delete resolve ids of their snapshot.
    private var location: [UInt64] = []
    private static let removedBit: UInt64 = 1 << 63
    /// Hash slots: the high 32 bits of the key's hash << 32 | id + 1; 0 is empty,
    /// `tombstone` a deleted entry. The home slot is the stored hash bits mod the size, so
    /// growing never reads a key, and a probe compares key bytes only when the 32 hash
    /// bits match.
    private var slots: [UInt64]
    private var used = 0     // live entries
    private var filled = 0   // live entries + tombstones
    private static let tombstone = UInt64.max

    init(capacity: Int = 1024) {
        var c = 1024
        while c < capacity * 2 { c <<= 1 }
        slots = [UInt64](repeating: 0, count: c)
    }

    var count: Int { used }

    /// The key of a live id, as bytes: a value (copy-on-write), valid for as long as it
    /// is kept, whatever the index does later.
    func keyBytes(_ id: UInt32) -> ArraySlice<UInt8>? {
        let i = Int(id)
        guard i < location.count, location[i] != 0, location[i] & KeyIndex.removedBit == 0 else { return nil }
        let off = Int(location[i] >> 9), len = Int(location[i] & 0x1FF)
        return arena[off..<(off + len)]
    }

    /// The key an id has or had (also after its delete), handed to `body` as a pointer
    /// valid only during the call; an id never assigned gives an empty buffer.
    func withKeyBytes<T>(ofAnyID id: UInt32, _ body: (UnsafeBufferPointer<UInt8>) -> T) -> T {
        let i = Int(id)
        let loc = i < location.count ? location[i] & ~KeyIndex.removedBit : 0
        let off = Int(loc >> 9), len = Int(loc & 0x1FF)
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
                            let loc = lp[Int(UInt32(truncatingIfNeeded: s) - 1)]
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

    /// A hint before a look-up or insert of `key` a little later: starts loading its home
    /// slot's cache line, so that a batch's look-ups overlap their misses.
    @inline(__always)
    func prefetch(_ key: String) {
        prefetch(hash: KeyIndex.hash(key.utf8))
    }

    @inline(__always)
    func prefetch(hash: UInt64) {
        let i = Int(truncatingIfNeeded: hash >> 32) & (slots.count - 1)
        slots.withUnsafeBufferPointer { gdh_prefetch_write($0.baseAddress! + i) }
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

    /// Records a new key for a new id (the key must not be present).
    func insert(_ key: some Collection<UInt8>, id: UInt32) {
        if (filled + 1) * 2 > slots.count { rehash(to: max(slots.count, used * 4)) }
        let i = Int(id)
        if i >= location.count { location.append(contentsOf: repeatElement(0, count: max(i + 1, location.count * 2) - location.count)) }
        KeyIndex.withBytes(key) { b in
            location[i] = UInt64(arena.count) << 9 | UInt64(b.count)
            arena.append(contentsOf: b)
            place((KeyIndex.hash(bytes: b) >> 32) << 32 | UInt64(id + 1))
        }
        used += 1
        filled += 1
    }

    /// Puts a slot value (tag << 32 | id + 1) in the first empty slot of its run.
    @inline(__always)
    private func place(_ entry: UInt64) {
        let mask = slots.count - 1
        var i = Int(truncatingIfNeeded: entry >> 32) & mask
        while slots[i] != 0 { i = (i + 1) & mask }
        slots[i] = entry
    }

    /// Forgets a key; returns its id if it was present.
    @discardableResult
    func remove(_ key: some Collection<UInt8>) -> UInt32? {
        KeyIndex.withBytes(key) { b in
            let (i, found) = find(b)
            guard found else { return nil }
            let id = UInt32(truncatingIfNeeded: slots[i]) - 1
            slots[i] = KeyIndex.tombstone
            location[Int(id)] |= KeyIndex.removedBit
            used -= 1
            return id
        }
    }

    private func rehash(to size: Int) {
        var c = 1024
        while c < size { c <<= 1 }
        let old = slots
        slots = [UInt64](repeating: 0, count: c)
        for s in old where s != 0 && s != KeyIndex.tombstone { place(s) }
        filled = used
    }

    /// Bytes held in memory, for STATS.
    var memoryBytes: Int { arena.capacity + location.capacity * 8 + slots.count * 8 }
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
