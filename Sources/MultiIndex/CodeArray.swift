import HammingCode

/// The buffers of a `CodeArray`: codes at positions 0 ..< count, the id at each position, a
/// bitmap of the live positions, and each id's position. Owned by one `CodeArray` at a time
/// (or by prepared tables until they are installed).
///
/// The id → position map costs memory by the live ids, not by the span of ids ever used
/// (a store assigns ids in ascending order and never reuses one, so under churn the span
/// grows without bound while the live ids stay few): a dense array for the ids from
/// `idBase` up, where new ids go, plus a sorted side table (`older`) for the live ids below
/// `idBase`, the few that outlived most of their neighbours. `rebuildMap` chooses the base
/// where the pair costs least; it runs on storage that nobody reads yet (a compaction, a
/// fold's snapshot), which is then swapped in, so the map follows the live ids at every
/// fold and no mutation waits for it.
///
/// Its pointers stay valid while this object lives and until `reservePositions`
/// (`codes`, `ids`, `live`) or a map change (`positionOf`, `older`) moves them; `append`
/// may do both. Nothing else moves them.
final class CodeStorage {
    static let none = UInt32.max
    let words: Int
    /// Positions in use (live ones and holes).
    var count = 0
    private(set) var capacity: Int
    /// capacity * words words (those of positions from `count` on not initialised); a
    /// hole's code is zero.
    private(set) var codes: UnsafeMutablePointer<UInt64>
    /// The id at each position (a hole keeps the id it had).
    private(set) var ids: UnsafeMutablePointer<UInt32>
    /// Bit p set when position p is live.
    private(set) var live: UnsafeMutablePointer<UInt64>
    /// Live positions.
    private(set) var liveCount = 0
    /// One past the highest id placed at a position (0 when none was).
    private(set) var idEnd = 0
    /// Whether every id was placed above all those before it, so that positions ascend
    /// with ids.
    private(set) var ascending = true

    // The id → position map.

    /// Position of each id from `idBase` to `idBase + idCapacity`, or `none`.
    private(set) var positionOf: UnsafeMutablePointer<UInt32>
    /// The id `positionOf[0]` describes.
    private(set) var idBase = 0
    private(set) var idCapacity: Int
    /// Ids below `idBase` with a position: id << 32 | position, ascending; the position is
    /// `none` once the id is removed (the entry stays until the next `rebuildMap`).
    private(set) var older: UnsafeMutablePointer<UInt64>
    private(set) var olderCount = 0
    private var olderCapacity: Int
    /// Entries of `older` whose position is not `none`.
    private(set) var olderLive = 0
    /// Set while positions are placed by `appendUnmapped`, until `rebuildMap`.
    private(set) var unmapped = false

    /// Bytes an entry of `older` costs, as `rebuildMap` weighs it against 4 bytes a dense
    /// slot: 8 bytes, doubled because a look-up there (a binary search) costs more than
    /// one in the dense array.
    static let olderEntryCost = 16

    init(words: Int, capacity: Int, idCapacity: Int) {
        self.words = words
        self.capacity = max(64, capacity)
        self.idCapacity = max(64, idCapacity)
        // Codes and ids are written before they are read (positions from `count` on never
        // are): left untouched, room that is never used costs no memory.
        codes = .allocate(capacity: self.capacity * words)
        ids = .allocate(capacity: self.capacity)
        live = .allocate(capacity: self.capacity / 64 + 1)
        live.initialize(repeating: 0, count: self.capacity / 64 + 1)
        positionOf = .allocate(capacity: self.idCapacity)
        positionOf.initialize(repeating: CodeStorage.none, count: self.idCapacity)
        olderCapacity = 0
        older = .allocate(capacity: 0)
    }

    deinit {
        codes.deallocate()
        ids.deallocate()
        live.deallocate()
        positionOf.deallocate()
        older.deallocate()
    }

    private static func grown<T>(_ p: UnsafeMutablePointer<T>, from old: Int, to new: Int, fill: T) -> UnsafeMutablePointer<T> {
        let q = UnsafeMutablePointer<T>.allocate(capacity: new)
        q.moveInitialize(from: p, count: old)
        (q + old).initialize(repeating: fill, count: new - old)
        p.deallocate()
        return q
    }

    /// Zeroes the codes and ids of the first `n` positions (at most the capacity) ahead of
    /// their use, so that their pages are in place before a copy under a lock fills them.
    func touch(positions n: Int) {
        let k = min(n, capacity)
        codes.initialize(repeating: 0, count: k * words)
        ids.initialize(repeating: 0, count: k)
    }

    /// `p`'s first `used` elements moved to new room for `new`, the rest left untouched.
    private static func moved<T>(_ p: UnsafeMutablePointer<T>, used: Int, to new: Int) -> UnsafeMutablePointer<T> {
        let q = UnsafeMutablePointer<T>.allocate(capacity: new)
        q.moveInitialize(from: p, count: used)
        p.deallocate()
        return q
    }

    /// Grows by half (not doubling: the codes are most of the mirror's memory).
    func reservePositions(_ n: Int) {
        guard n > capacity else { return }
        var cap = capacity
        while cap < n { cap += cap / 2 }
        codes = CodeStorage.moved(codes, used: count * words, to: cap * words)
        ids = CodeStorage.moved(ids, used: count, to: cap)
        live = CodeStorage.grown(live, from: capacity / 64 + 1, to: cap / 64 + 1, fill: 0)
        capacity = cap
    }

    /// Room in the dense part of the map for the ids below `n`.
    func reserveIDs(_ n: Int) {
        guard n - idBase > idCapacity else { return }
        var cap = idCapacity
        while cap < n - idBase { cap *= 2 }
        positionOf = CodeStorage.grown(positionOf, from: idCapacity, to: cap, fill: CodeStorage.none)
        idCapacity = cap
    }

    @inline(__always)
    func isLive(position p: Int) -> Bool {
        p < count && (live[p >> 6] >> UInt64(p & 63)) & 1 == 1
    }

    @inline(__always)
    func position(of id: UInt32) -> Int? {
        let i = Int(id) &- idBase
        let p: UInt32
        if i >= 0 {
            guard i < idCapacity else { return nil }
            p = positionOf[i]
        } else {
            p = olderPosition(id)
        }
        return p == CodeStorage.none ? nil : Int(p)
    }

    /// The index of the first entry of `older` whose id is not below `id`.
    private func olderIndex(_ id: UInt32) -> Int {
        let key = UInt64(id) << 32
        var lo = 0, n = olderCount
        while n > 0 {
            let half = n / 2
            if older[lo + half] < key { lo += half + 1; n -= half + 1 } else { n = half }
        }
        return lo
    }

    /// The position of an id below `idBase`, or `none`.
    @inline(never)
    private func olderPosition(_ id: UInt32) -> UInt32 {
        let k = olderIndex(id)
        guard k < olderCount, older[k] >> 32 == UInt64(id) else { return CodeStorage.none }
        return UInt32(truncatingIfNeeded: older[k])
    }

    /// Sets an id's position (`none`: no position) in the map.
    @inline(__always)
    private func setPosition(_ id: UInt32, _ p: UInt32) {
        let i = Int(id) &- idBase
        if i >= 0 && i < idCapacity { positionOf[i] = p; return }
        setPositionElsewhere(id, p)
    }

    /// `setPosition` for an id outside the dense part's room: above it the room grows;
    /// below it the dense part grows down (when that about doubles it at most) or the id
    /// goes to `older`. A map with nothing in it yet starts its dense part at the id.
    @inline(never)
    private func setPositionElsewhere(_ id: UInt32, _ p: UInt32) {
        let i = Int(id) - idBase
        if idEnd == 0 && olderCount == 0 && p != CodeStorage.none {
            // Nothing was placed yet: every dense slot is `none`, so the base can move.
            idBase = Int(id)
            positionOf[0] = p
            return
        }
        if i >= idCapacity {
            reserveIDs(Int(id) + 1)
            positionOf[i] = p
            return
        }
        // Below the base.
        let k = olderIndex(id)
        if k < olderCount && older[k] >> 32 == UInt64(id) {
            let was = UInt32(truncatingIfNeeded: older[k])
            if was == CodeStorage.none && p != CodeStorage.none { olderLive += 1 }
            if was != CodeStorage.none && p == CodeStorage.none { olderLive -= 1 }
            older[k] = UInt64(id) << 32 | UInt64(p)
            return
        }
        guard p != CodeStorage.none else { return }
        if idBase - Int(id) <= max(idCapacity, 1024) {
            growDown(to: max(0, min(Int(id), idBase - max(idCapacity, 1024))))
            positionOf[Int(id) - idBase] = p
            return
        }
        if olderCount == olderCapacity {
            let cap = max(16, olderCapacity * 2)
            let q = UnsafeMutablePointer<UInt64>.allocate(capacity: cap)
            q.moveInitialize(from: older, count: olderCount)
            older.deallocate()
            older = q
            olderCapacity = cap
        }
        (older + k + 1).moveInitialize(from: older + k, count: olderCount - k)
        older[k] = UInt64(id) << 32 | UInt64(p)
        olderCount += 1
        olderLive += 1
    }

    /// Moves the dense part's base down to `newBase`, taking over the entries of `older`
    /// from there up (ids placed in descending order).
    private func growDown(to newBase: Int) {
        let shift = idBase - newBase
        let cap = idCapacity + shift
        let q = UnsafeMutablePointer<UInt32>.allocate(capacity: cap)
        q.initialize(repeating: CodeStorage.none, count: shift)
        (q + shift).moveInitialize(from: positionOf, count: idCapacity)
        positionOf.deallocate()
        positionOf = q
        idCapacity = cap
        idBase = newBase
        let k = olderIndex(UInt32(newBase))
        for e in UnsafeBufferPointer(start: older + k, count: olderCount - k) {
            let p = UInt32(truncatingIfNeeded: e)
            if p != CodeStorage.none { olderLive -= 1; positionOf[Int(e >> 32) - newBase] = p }
        }
        olderCount = k
    }

    /// Places a new id at the next position.
    @inline(__always)
    func append(_ id: UInt32, _ src: UnsafePointer<UInt64>) {
        setPosition(id, UInt32(count))
        appendUnmapped(id, src)
    }

    /// Places a new id at the next position without entering it in the map: for a copy
    /// that nobody looks ids up in before `rebuildMap`.
    @inline(__always)
    func appendUnmapped(_ id: UInt32, _ src: UnsafePointer<UInt64>) {
        reservePositions(count + 1)
        let p = count
        (codes + p * words).update(from: src, count: words)
        ids[p] = id
        live[p >> 6] |= UInt64(1) << UInt64(p & 63)
        if Int(id) < idEnd { ascending = false } else { idEnd = Int(id) + 1 }
        count += 1
        liveCount += 1
    }

    /// Starts placing positions with `appendUnmapped` (this storage must be empty).
    func beginUnmapped() {
        precondition(count == 0 && olderCount == 0, "storage in use")
        unmapped = true
    }

    /// Takes a copy of `o`'s positions (this storage must be empty, with room for them);
    /// the map is left to `rebuildMap`.
    func copyBlocks(from o: CodeStorage) {
        precondition(count == 0 && capacity >= o.count && words == o.words)
        codes.update(from: o.codes, count: o.count * words)
        ids.update(from: o.ids, count: o.count)
        live.update(from: o.live, count: o.count / 64 + 1)
        count = o.count
        liveCount = o.liveCount
        idEnd = o.idEnd
        ascending = o.ascending
        unmapped = true
    }

    /// Turns a live position into a hole.
    func clear(position p: Int) {
        live[p >> 6] &= ~(UInt64(1) << UInt64(p & 63))
        (codes + p * words).update(repeating: 0, count: words)
        setPosition(ids[p], CodeStorage.none)
        liveCount -= 1
    }

    /// Calls `body` with each live position in ascending order.
    @inline(__always)
    func forEachLivePosition(_ body: (Int) throws -> Void) rethrows {
        for w in 0..<((count + 63) / 64) {
            var bits = live[w]
            while bits != 0 {
                try body(w * 64 + bits.trailingZeroBitCount)
                bits &= bits &- 1
            }
        }
    }

    /// Calls `body` with each id from `start` below `end` that has a position, and the
    /// position, in ascending id order, looking at about `budget` map entries (ids of
    /// the dense part with no position count). Returns the id to go on from and whether
    /// every id below `end` (and below `idEnd`) has been visited.
    func forEachMapped(from start: Int, below end: Int, budget: Int,
                       _ body: (UInt32, Int) throws -> Void) rethrows -> (next: Int, done: Bool) {
        let stop = min(end, idEnd)
        var next = start, left = budget
        if next < idBase {
            var k = olderIndex(UInt32(clamping: next))
            while k < olderCount && left > 0 {
                let e = older[k]
                let id = Int(e >> 32)
                if id >= stop { return (stop, true) }
                let p = UInt32(truncatingIfNeeded: e)
                if p != CodeStorage.none { try body(UInt32(id), Int(p)) }
                next = id + 1
                k += 1
                left -= 1
            }
            if k < olderCount { return (next, next >= stop) }
            next = idBase
        }
        let denseEnd = min(stop, idBase + idCapacity)
        while next < denseEnd && left > 0 {
            let p = positionOf[next - idBase]
            if p != CodeStorage.none { try body(UInt32(next), Int(p)) }
            next += 1
            left -= 1
        }
        if next >= denseEnd { next = max(next, stop) }
        return (next, next >= stop)
    }

    // MARK: Rebasing the map

    /// Bytes the map takes (dense part and `older`), for tests.
    var mapBytes: Int { idCapacity * 4 + olderCapacity * 8 }

    /// Whether the map holds much more than its live ids need: dead dense slots and dead
    /// `older` entries past 1 MiB and past 16 bytes a live id.
    var mapIsSparse: Bool {
        let denseLive = liveCount - olderLive
        let deadDense = max(0, idEnd - idBase) - denseLive
        let deadOlder = olderCount - olderLive
        return 4 * deadDense + 8 * deadOlder > max(1 << 20, 16 * liveCount)
    }

    /// Builds the map afresh for the live positions (of storage placed with
    /// `appendUnmapped` or `copyBlocks`, or to rebase one that grew sparse): the base is
    /// the id above which a dense array (4 bytes an id up to `idEnd`) and below which the
    /// sorted side table (`olderEntryCost` an id) cost least. O(live ids + dense span);
    /// only this storage is touched, so it runs beside readers of other storage.
    func rebuildMap(room extra: Int? = nil) {
        // The live (id, position) pairs, ascending by id.
        var pairs = [UInt64]()
        pairs.reserveCapacity(liveCount)
        forEachLivePosition { p in pairs.append(UInt64(ids[p]) << 32 | UInt64(p)) }
        if !ascending { pairs.sort() }
        var base = idEnd, below = 0
        var best = CodeStorage.olderEntryCost * pairs.count
        for (k, e) in pairs.enumerated() {
            let cost = 4 * (idEnd - Int(e >> 32)) + CodeStorage.olderEntryCost * k
            if cost < best { best = cost; base = Int(e >> 32); below = k }
        }
        if pairs.isEmpty { base = idEnd; below = 0 }
        // Room for new ids: a quarter of the span, at least 1,024 (or what the caller asks).
        let span = idEnd - base
        let cap = span + max(1024, span / 4, extra ?? 0)
        positionOf.deallocate()
        positionOf = .allocate(capacity: cap)
        positionOf.initialize(repeating: CodeStorage.none, count: cap)
        idCapacity = cap
        idBase = base
        older.deallocate()
        older = .allocate(capacity: below)
        olderCapacity = below
        olderCount = below
        olderLive = below
        pairs.withUnsafeBufferPointer { pp in
            if below > 0 { older.initialize(from: pp.baseAddress!, count: below) }
            for e in pp[below...] { positionOf[Int(e >> 32) - base] = UInt32(truncatingIfNeeded: e) }
        }
        unmapped = false
    }
}

/// Codes by id. Each live id has a **position**; the codes of all positions lie in one
/// contiguous block that a scan reads front to back, and the multi-index tables hold
/// positions. A new id takes the next position; a removed id leaves a hole (zeroed, marked
/// dead) until `compacted()` storage is adopted, which gives the live ids dense positions
/// in ascending id order. So the scan costs the live items plus the holes since the last
/// compaction, whatever ids have been used. Ids themselves never change.
///
/// Not synchronised: the owner serialises mutation against reads.
public final class CodeArray {
    public let width: CodeWidth
    /// Words per code.
    public let words: Int
    /// Live ids.
    public private(set) var liveCount: Int = 0
    /// Whether positions ascend with ids, so that a scan meets ids in ascending order. True
    /// while ids are added in ascending order (as a store assigns them) and after a compaction.
    public var ordered: Bool { storage.ascending }
    /// The buffers in use. Replaced by `adopt` (a compaction or an install); the old object
    /// lives on while anyone holds it, and its pointers are as valid as `CodeStorage` says.
    private(set) var storage: CodeStorage

    public init(width: CodeWidth, capacity: Int = 1024) {
        self.width = width
        self.words = width.words
        storage = CodeStorage(words: width.words, capacity: capacity, idCapacity: capacity)
    }

    /// Positions in use: the live ones and the holes. A scan reads this many codes.
    public var positionCount: Int { storage.count }
    /// Positions left by removed ids since the last compaction.
    public var holes: Int { storage.count - liveCount }

    /// Reserves room for n positions and for ids below `n` (from the first id placed, when
    /// none was yet).
    public func reserve(_ n: Int) {
        storage.reserveIDs(n)
        storage.reservePositions(n)
    }

    @inline(__always)
    public func isLive(_ id: UInt32) -> Bool { storage.position(of: id) != nil }

    /// The code of a live id (`words` words). Valid until the next mutation of this array:
    /// an add may grow the storage and move every code, a compaction (an index's rebuild
    /// or install) puts new storage in use, and a remove zeroes the code in place.
    @inline(__always)
    public func pointer(_ id: UInt32) -> UnsafePointer<UInt64> {
        guard let p = storage.position(of: id) else { preconditionFailure("id \(id) is not live") }
        return UnsafePointer(storage.codes + p * words)
    }

    public func code(_ id: UInt32) -> HammingCode? {
        guard let p = storage.position(of: id) else { return nil }
        return HammingCode(width: width, copying: storage.codes + p * words)
    }

    /// Stores a code under an id (new or live); returns whether the id was live before.
    @discardableResult
    public func set(_ id: UInt32, _ code: HammingCode) -> Bool {
        precondition(code.width == width, "code width does not match")
        return code.withWords { set(id, words: $0.baseAddress!) }
    }

    /// `set` of a code given as `width.words` packed words.
    @discardableResult
    public func set(_ id: UInt32, words src: UnsafePointer<UInt64>) -> Bool {
        if let p = storage.position(of: id) {
            (storage.codes + p * words).update(from: src, count: words)
            return true
        }
        storage.append(id, src)
        liveCount += 1
        return false
    }

    /// Removes an id (its position becomes a hole); returns whether it was live.
    @discardableResult
    public func remove(_ id: UInt32) -> Bool {
        guard let p = storage.position(of: id) else { return false }
        storage.clear(position: p)
        liveCount -= 1
        return true
    }

    /// Calls `body` with each live id in ascending order.
    public func forEachLive(_ body: (UInt32) throws -> Void) rethrows {
        if ordered {
            try storage.forEachLivePosition { try body(storage.ids[$0]) }
        } else {
            _ = try storage.forEachMapped(from: 0, below: Int.max, budget: Int.max) { id, _ in try body(id) }
        }
    }

    // MARK: Positions (for the index of this module)

    /// All positions' codes, `positionCount * words` words. Valid until the next mutation,
    /// as `pointer(_:)`.
    var base: UnsafePointer<UInt64> { UnsafePointer(storage.codes) }

    @inline(__always)
    func isLive(position p: Int) -> Bool { storage.isLive(position: p) }

    /// The code at position p (`words` words, zero at a hole). Valid until the next
    /// mutation, as `pointer(_:)`.
    @inline(__always)
    func pointer(position p: Int) -> UnsafePointer<UInt64> { UnsafePointer(storage.codes + p * words) }

    @inline(__always)
    func id(atPosition p: Int) -> UInt32 { storage.ids[p] }

    @inline(__always)
    func position(of id: UInt32) -> Int? { storage.position(of: id) }

    /// New storage with the live ids at dense positions in ascending id order, or nil when
    /// the current positions are already so (no holes, ordered). Only reads.
    /// Also when the id → position map has grown sparse (`CodeStorage.mapIsSparse`), so
    /// that the new storage's map follows the live ids.
    func compacted() -> CodeStorage? {
        if ordered && holes == 0 && !storage.mapIsSparse { return nil }
        return denseCopy()
    }

    /// New storage with the live ids at dense positions in ascending id order, always (a
    /// snapshot that later changes are carried over to). Only reads.
    func denseCopy() -> CodeStorage {
        let s = CodeStorage(words: words, capacity: liveCount + liveCount / 8 + 1024, idCapacity: 0)
        if ordered && holes == 0 {
            // Already dense and in id order: copy the blocks whole.
            s.copyBlocks(from: storage)
        } else {
            s.beginUnmapped()
            let st = storage
            forEachLive { id in s.appendUnmapped(id, st.codes + st.position(of: id)! * words) }
        }
        s.rebuildMap()
        return s
    }

    /// Puts storage in use that holds the current live ids, possibly with holes and out of
    /// id order (a snapshot with later changes carried over).
    /// `live` live positions; `ordered` follows whether ids were placed in ascending order.
    func adopt(changed s: CodeStorage, live: Int) {
        precondition(live == liveCount, "carried-over storage is out of date")
        precondition(!s.unmapped, "storage without its id map")
        storage = s
    }

    /// Puts storage made by `compacted()` in use; nothing may have changed since.
    func adopt(_ s: CodeStorage) {
        precondition(s.count == liveCount && !s.unmapped, "compacted storage is out of date")
        storage = s
    }
}
