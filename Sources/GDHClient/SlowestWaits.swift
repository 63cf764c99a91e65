/// The slowest waits of a run, at most `limit` of them and no two overlapping in time: the
/// requests of one slow moment (one slow write batch, one stalled thread) wait together, and
/// the slowest of them stands for the moment. Each is kept with when it was sent (seconds
/// from the start of the run) and what it was, so that a long wait can be put beside what
/// the daemon was doing then. Merging the lists of several threads gives the list of all
/// their waits, as if one had recorded them all.
public struct SlowestWaits: Sendable {
    public struct Wait: Sendable, Equatable {
        public let nanoseconds: UInt64
        /// When it was sent, seconds from the start of the run.
        public let sentAt: Double
        public let command: String
        /// When its answer came, seconds from the start of the run.
        public var endedAt: Double { sentAt + Double(nanoseconds) / 1e9 }

        public init(nanoseconds: UInt64, sentAt: Double, command: String) {
            self.nanoseconds = nanoseconds
            self.sentAt = sentAt
            self.command = command
        }

        public func overlaps(_ other: Wait) -> Bool { sentAt < other.endedAt && other.sentAt < endedAt }
        public func overlaps(from start: Double, to end: Double) -> Bool { sentAt < end && start < endedAt }
    }

    public let limit: Int
    /// Slowest first.
    public private(set) var waits: [Wait] = []

    public init(limit: Int = 5) {
        precondition(limit > 0)
        self.limit = limit
    }

    /// A wait that overlaps a kept one is dropped unless it is slower, in which case it takes
    /// the place of every kept wait it overlaps; so waits that overlap one another in a chain
    /// count as one moment, the slowest of them. When the moments are apart, the list is
    /// exactly the `limit` slowest ones.
    public mutating func record(_ wait: Wait) {
        if waits.count == limit, wait.nanoseconds <= waits[limit - 1].nanoseconds { return }
        if waits.contains(where: { $0.overlaps(wait) && $0.nanoseconds >= wait.nanoseconds }) { return }
        waits.removeAll { $0.overlaps(wait) }
        let i = waits.firstIndex { $0.nanoseconds < wait.nanoseconds } ?? waits.count
        waits.insert(wait, at: i)
        if waits.count > limit { waits.removeLast() }
    }

    public mutating func record(_ nanoseconds: UInt64, sentAt: Double, command: String) {
        record(Wait(nanoseconds: nanoseconds, sentAt: sentAt, command: command))
    }

    public mutating func merge(_ other: SlowestWaits) {
        for w in other.waits { record(w) }
    }
}
