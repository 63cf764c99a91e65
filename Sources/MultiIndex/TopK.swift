/// One search result: an item id and its Hamming distance to the query.
public struct Neighbor: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let id: UInt32
    public let distance: Int

    public init(id: UInt32, distance: Int) {
        self.id = id
        self.distance = distance
    }

    /// Results are ordered by (distance, id): ties at a distance go to the older item.
    public static func < (a: Neighbor, b: Neighbor) -> Bool {
        a.distance != b.distance ? a.distance < b.distance : a.id < b.id
    }

    /// From a packed result `distance << 32 | id` (`TopK.key`).
    public init(packed: UInt64) {
        self.init(id: UInt32(truncatingIfNeeded: packed), distance: Int(packed >> 32))
    }

    /// This result packed as `distance << 32 | id`: packed results order as results do.
    public var packed: UInt64 { UInt64(distance) << 32 | UInt64(id) }

    public var description: String { "\(id)@\(distance)" }
}

/// The K smallest (distance, id) pairs seen so far, as a binary max-heap of packed
/// keys `distance << 32 | id`, so one integer comparison orders by distance then id.
struct TopK {
    let k: Int
    private(set) var heap: [UInt64] = []

    init(k: Int) {
        self.k = k
        heap.reserveCapacity(min(k, 4096))
    }

    var isFull: Bool { heap.count >= k }
    var count: Int { heap.count }

    /// The largest kept key; only meaningful when not empty.
    var worst: UInt64 { heap[0] }
    var worstDistance: Int { Int(heap[0] >> 32) }

    @inline(__always)
    static func key(_ distance: Int, _ id: UInt32) -> UInt64 { UInt64(distance) << 32 | UInt64(id) }

    /// Whether a pair with this key would be kept.
    @inline(__always)
    func accepts(_ key: UInt64) -> Bool { heap.count < k || key < heap[0] }

    mutating func insert(_ key: UInt64) {
        if heap.count < k {
            heap.append(key)
            var i = heap.count - 1
            while i > 0 {
                let p = (i - 1) >> 1
                if heap[p] >= heap[i] { break }
                heap.swapAt(p, i)
                i = p
            }
        } else if key < heap[0] {
            heap[0] = key
            var i = 0
            let n = heap.count
            while true {
                let l = 2 * i + 1, r = l + 1
                var largest = i
                if l < n && heap[l] > heap[largest] { largest = l }
                if r < n && heap[r] > heap[largest] { largest = r }
                if largest == i { break }
                heap.swapAt(i, largest)
                i = largest
            }
        }
    }

    /// The kept pairs, nearest first.
    func sorted() -> [Neighbor] {
        heap.sorted().map(Neighbor.init(packed:))
    }

    /// The kept keys, ascending (the heap's storage, sorted in place).
    consuming func sortedPacked() -> [UInt64] {
        var h = heap
        heap = []
        h.sort()
        return h
    }
}
