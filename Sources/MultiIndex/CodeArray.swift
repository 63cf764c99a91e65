import HammingCode

/// Codes by id in one contiguous, growable block of memory, with a bitmap of which
/// ids are live. Ids are dense slots: id i's code starts at word `i * words`.
/// Deleted ids keep their slot (zeroed) until the owner renumbers; scans skip them.
///
/// Not synchronised: the owner serialises mutation against reads.
public final class CodeArray {
    public let width: CodeWidth
    /// Words per code.
    public let words: Int
    /// One past the highest id ever stored.
    public private(set) var slotCount: Int = 0
    /// Live ids.
    public private(set) var liveCount: Int = 0

    private(set) var capacity: Int = 0
    /// slotCount * words words, valid up to slotCount.
    private(set) var codes: UnsafeMutablePointer<UInt64>
    /// Bit i set when id i is live.
    private(set) var live: UnsafeMutablePointer<UInt64>

    public init(width: CodeWidth, capacity: Int = 1024) {
        self.width = width
        self.words = width.words
        let cap = max(64, capacity)
        self.capacity = cap
        codes = .allocate(capacity: cap * width.words)
        codes.initialize(repeating: 0, count: cap * width.words)
        live = .allocate(capacity: cap / 64 + 1)
        live.initialize(repeating: 0, count: cap / 64 + 1)
    }

    deinit {
        codes.deallocate()
        live.deallocate()
    }

    private func grow(toHold n: Int) {
        var cap = capacity
        while cap < n { cap *= 2 }
        let newCodes = UnsafeMutablePointer<UInt64>.allocate(capacity: cap * words)
        newCodes.update(from: codes, count: capacity * words)
        (newCodes + capacity * words).initialize(repeating: 0, count: (cap - capacity) * words)
        codes.deallocate()
        codes = newCodes
        let oldLiveWords = capacity / 64 + 1, newLiveWords = cap / 64 + 1
        let newLive = UnsafeMutablePointer<UInt64>.allocate(capacity: newLiveWords)
        newLive.update(from: live, count: oldLiveWords)
        (newLive + oldLiveWords).initialize(repeating: 0, count: newLiveWords - oldLiveWords)
        live.deallocate()
        live = newLive
        capacity = cap
    }

    /// Reserves room for ids below `n`.
    public func reserve(_ n: Int) {
        if n > capacity { grow(toHold: n) }
    }

    @inline(__always)
    public func isLive(_ id: UInt32) -> Bool {
        let i = Int(id)
        return i < slotCount && (live[i >> 6] >> UInt64(i & 63)) & 1 == 1
    }

    @inline(__always)
    public func pointer(_ id: UInt32) -> UnsafePointer<UInt64> {
        UnsafePointer(codes + Int(id) * words)
    }

    /// All slots' codes, `slotCount * words` words.
    public var base: UnsafePointer<UInt64> { UnsafePointer(codes) }

    public func code(_ id: UInt32) -> HammingCode? {
        guard isLive(id) else { return nil }
        let p = pointer(id)
        return HammingCode(width: width, words: Array(UnsafeBufferPointer(start: p, count: words)))
    }

    /// Stores a code under an id (new or live); returns whether the id was live before.
    @discardableResult
    public func set(_ id: UInt32, _ code: HammingCode) -> Bool {
        precondition(code.width == width, "code width does not match")
        let i = Int(id)
        if i >= capacity { grow(toHold: i + 1) }
        code.words.withUnsafeBufferPointer { src in
            (codes + i * words).update(from: src.baseAddress!, count: words)
        }
        let wasLive = isLive(id)
        if !wasLive {
            live[i >> 6] |= UInt64(1) << UInt64(i & 63)
            liveCount += 1
        }
        if i >= slotCount { slotCount = i + 1 }
        return wasLive
    }

    /// Marks an id dead and zeroes its code; returns whether it was live.
    @discardableResult
    public func remove(_ id: UInt32) -> Bool {
        guard isLive(id) else { return false }
        let i = Int(id)
        live[i >> 6] &= ~(UInt64(1) << UInt64(i & 63))
        (codes + i * words).update(repeating: 0, count: words)
        liveCount -= 1
        return true
    }

    /// Calls `body` with each live id in ascending order.
    public func forEachLive(_ body: (UInt32) throws -> Void) rethrows {
        let liveWords = (slotCount + 63) / 64
        for w in 0..<liveWords {
            var bits = live[w]
            while bits != 0 {
                let b = bits.trailingZeroBitCount
                try body(UInt32(w * 64 + b))
                bits &= bits &- 1
            }
        }
    }
}
