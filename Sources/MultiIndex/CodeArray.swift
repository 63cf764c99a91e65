import HammingCode

/// The buffers of a `CodeArray`: codes at positions 0 ..< count, the id at each position, a
/// bitmap of the live positions, and each id's position. Owned by one `CodeArray` at a time
/// (or by prepared tables until they are installed).
///
/// Its four pointers stay valid while this object lives and until `reservePositions`
/// (`codes`, `ids`, `live`) or `reserveIDs` (`positionOf`) grows them, which moves them;
/// `append` may do both. Nothing else moves them.
final class CodeStorage {
    static let none = UInt32.max
    let words: Int
    /// Positions in use (live ones and holes).
    var count = 0
    private(set) var capacity: Int
    /// capacity * words words; a hole's code is zero.
    private(set) var codes: UnsafeMutablePointer<UInt64>
    /// The id at each position (a hole keeps the id it had).
    private(set) var ids: UnsafeMutablePointer<UInt32>
    /// Bit p set when position p is live.
    private(set) var live: UnsafeMutablePointer<UInt64>
    /// Position of each id below `idCapacity`, or `none`.
    private(set) var positionOf: UnsafeMutablePointer<UInt32>
    private(set) var idCapacity: Int

    init(words: Int, capacity: Int, idCapacity: Int) {
        self.words = words
        self.capacity = max(64, capacity)
        self.idCapacity = max(64, idCapacity)
        codes = .allocate(capacity: self.capacity * words)
        codes.initialize(repeating: 0, count: self.capacity * words)
        ids = .allocate(capacity: self.capacity)
        ids.initialize(repeating: 0, count: self.capacity)
        live = .allocate(capacity: self.capacity / 64 + 1)
        live.initialize(repeating: 0, count: self.capacity / 64 + 1)
        positionOf = .allocate(capacity: self.idCapacity)
        positionOf.initialize(repeating: CodeStorage.none, count: self.idCapacity)
    }

    deinit {
        codes.deallocate()
        ids.deallocate()
        live.deallocate()
        positionOf.deallocate()
    }

    private static func grown<T>(_ p: UnsafeMutablePointer<T>, from old: Int, to new: Int, fill: T) -> UnsafeMutablePointer<T> {
        let q = UnsafeMutablePointer<T>.allocate(capacity: new)
        q.moveInitialize(from: p, count: old)
        (q + old).initialize(repeating: fill, count: new - old)
        p.deallocate()
        return q
    }

    /// Grows by half (not doubling: the codes are most of the mirror's memory).
    func reservePositions(_ n: Int) {
        guard n > capacity else { return }
        var cap = capacity
        while cap < n { cap += cap / 2 }
        codes = CodeStorage.grown(codes, from: capacity * words, to: cap * words, fill: 0)
        ids = CodeStorage.grown(ids, from: capacity, to: cap, fill: 0)
        live = CodeStorage.grown(live, from: capacity / 64 + 1, to: cap / 64 + 1, fill: 0)
        capacity = cap
    }

    func reserveIDs(_ n: Int) {
        guard n > idCapacity else { return }
        var cap = idCapacity
        while cap < n { cap *= 2 }
        positionOf = CodeStorage.grown(positionOf, from: idCapacity, to: cap, fill: CodeStorage.none)
        idCapacity = cap
    }

    @inline(__always)
    func isLive(position p: Int) -> Bool {
        p < count && (live[p >> 6] >> UInt64(p & 63)) & 1 == 1
    }

    @inline(__always)
    func position(of id: UInt32) -> Int? {
        let i = Int(id)
        guard i < idCapacity else { return nil }
        let p = positionOf[i]
        return p == CodeStorage.none ? nil : Int(p)
    }

    /// Places a new id at the next position.
    func append(_ id: UInt32, _ src: UnsafePointer<UInt64>) {
        reservePositions(count + 1)
        reserveIDs(Int(id) + 1)
        let p = count
        (codes + p * words).update(from: src, count: words)
        ids[p] = id
        live[p >> 6] |= UInt64(1) << UInt64(p & 63)
        positionOf[Int(id)] = UInt32(p)
        count += 1
    }

    /// Takes a copy of `o`'s positions (this storage must be empty, with room for them and
    /// the same id capacity).
    func copyBlocks(from o: CodeStorage) {
        precondition(count == 0 && capacity >= o.count && idCapacity == o.idCapacity && words == o.words)
        codes.update(from: o.codes, count: o.count * words)
        ids.update(from: o.ids, count: o.count)
        live.update(from: o.live, count: o.count / 64 + 1)
        positionOf.update(from: o.positionOf, count: idCapacity)
        count = o.count
    }

    /// Turns a live position into a hole.
    func clear(position p: Int) {
        live[p >> 6] &= ~(UInt64(1) << UInt64(p & 63))
        (codes + p * words).update(repeating: 0, count: words)
        positionOf[Int(ids[p])] = CodeStorage.none
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
    public private(set) var ordered = true
    /// The highest id placed at a position since the last compaction, or -1.
    private var highestPlaced: Int64 = -1
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

    /// Reserves room for ids below `n` and for n positions.
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
        return HammingCode(width: width, words: Array(UnsafeBufferPointer(start: storage.codes + p * words, count: words)))
    }

    /// Stores a code under an id (new or live); returns whether the id was live before.
    @discardableResult
    public func set(_ id: UInt32, _ code: HammingCode) -> Bool {
        precondition(code.width == width, "code width does not match")
        return code.words.withUnsafeBufferPointer { src in
            if let p = storage.position(of: id) {
                (storage.codes + p * words).update(from: src.baseAddress!, count: words)
                return true
            }
            if Int64(id) <= highestPlaced { ordered = false }
            highestPlaced = max(highestPlaced, Int64(id))
            storage.append(id, src.baseAddress!)
            liveCount += 1
            return false
        }
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
            for i in 0..<storage.idCapacity where storage.positionOf[i] != CodeStorage.none {
                try body(UInt32(i))
            }
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
    func compacted() -> CodeStorage? {
        if ordered && holes == 0 { return nil }
        let s = CodeStorage(words: words, capacity: liveCount + liveCount / 8 + 1024, idCapacity: storage.idCapacity)
        forEachLive { id in s.append(id, storage.codes + Int(storage.positionOf[Int(id)]) * words) }
        return s
    }

    /// New storage with the live ids at dense positions in ascending id order, always (a
    /// snapshot that later changes are carried over to). Only reads.
    func denseCopy() -> CodeStorage {
        let s = CodeStorage(words: words, capacity: liveCount + liveCount / 8 + 1024, idCapacity: storage.idCapacity)
        if ordered && holes == 0 {
            // Already dense and in id order: copy the blocks whole.
            s.copyBlocks(from: storage)
        } else {
            forEachLive { id in s.append(id, storage.codes + Int(storage.positionOf[Int(id)]) * words) }
        }
        return s
    }

    /// Puts storage in use that holds the current live ids, possibly with holes and out of
    /// id order (a snapshot with later changes carried over).
    /// `live` live positions, ordered by id (new ids were appended in ascending order).
    func adopt(changed s: CodeStorage, live: Int) {
        precondition(live == liveCount, "carried-over storage is out of date")
        storage = s
        ordered = true
        highestPlaced = s.count > 0 ? Int64(s.ids[s.count - 1]) : -1
    }

    /// Puts storage made by `compacted()` in use; nothing may have changed since.
    func adopt(_ s: CodeStorage) {
        precondition(s.count == liveCount, "compacted storage is out of date")
        storage = s
        ordered = true
        highestPlaced = s.count > 0 ? Int64(s.ids[s.count - 1]) : -1
    }
}
