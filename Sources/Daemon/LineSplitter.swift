import Glibc
import NIOCore

/// One framed request: a line's bytes (without `\n`), or the news that a line was longer
/// than the limit (its bytes were dropped as they arrived). The bytes are valid only
/// during the call that hands them over.
public enum FramedLine {
    case line(UnsafeRawBufferPointer)
    case tooLong
}

/// Splits the inbound byte stream at `\n`, inside the connection's handler (no decoder
/// stage in the pipeline, no buffer or message per line). A line longer than `maxLength`
/// bytes is not buffered: once the limit is passed its bytes are discarded as they
/// arrive, and one `.tooLong` is given when its `\n` comes. Bytes after the last `\n` at
/// end of input are never given (an unfinished request is not executed).
///
/// Complete lines are handed over straight from the read's buffer; only the unfinished
/// tail of a read (at most `maxLength` bytes) is copied, to be completed by the next.
public struct LineSplitter {
    public let maxLength: Int
    /// The start of an unfinished line (at most `maxLength` bytes).
    private var partial: [UInt8] = []
    /// True while discarding the rest of an over-long line.
    private var discarding = false
    /// The most room kept for unfinished lines between two of them.
    static let keptCapacity = 64 << 10

    public init(maxLength: Int) {
        self.maxLength = maxLength
    }

    /// Bytes held for a line not finished yet.
    public var heldBytes: Int { partial.count }
    /// Room held for them.
    var heldCapacity: Int { partial.capacity }

    /// Gives `body` each line finished by `bytes`, in order, and keeps the unfinished tail.
    /// When `body` returns false no further line is given, and the rest of `bytes` is
    /// dropped (the connection is closing).
    public mutating func split(_ bytes: UnsafeRawBufferPointer, _ body: (FramedLine) -> Bool) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        let n = bytes.count
        var start = 0
        if discarding || !partial.isEmpty {
            guard let nl = Self.newline(base, from: 0, to: n) else {
                if discarding { return }
                if partial.count + n > maxLength {
                    discarding = true
                    clearPartial()
                } else {
                    partial.append(contentsOf: UnsafeRawBufferPointer(start: base, count: n))
                }
                return
            }
            start = nl + 1
            let more: Bool
            if discarding || partial.count + nl > maxLength {
                discarding = false
                clearPartial()
                more = body(.tooLong)
            } else {
                partial.append(contentsOf: UnsafeRawBufferPointer(start: base, count: nl))
                more = partial.withUnsafeBytes { body(.line($0)) }
                clearPartial()
            }
            guard more else { return }
        }
        while start < n, let nl = Self.newline(base, from: start, to: n) {
            let length = nl - start
            let more = length > maxLength ? body(.tooLong) : body(.line(UnsafeRawBufferPointer(start: base + start, count: length)))
            start = nl + 1
            guard more else { return }
        }
        let tail = n - start
        if tail > maxLength {
            discarding = true
        } else if tail > 0 {
            partial.append(contentsOf: UnsafeRawBufferPointer(start: base + start, count: tail))
        }
    }

    /// Empties `partial`, keeping room for the usual short tail but not a large line's (an
    /// inline image would otherwise hold megabytes per idle connection).
    private mutating func clearPartial() {
        if partial.capacity > Self.keptCapacity { partial = [] } else { partial.removeAll(keepingCapacity: true) }
    }

    @inline(__always)
    private static func newline(_ base: UnsafeRawPointer, from: Int, to: Int) -> Int? {
        guard let p = memchr(base + from, 0x0A, to - from) else { return nil }
        return UnsafeRawPointer(p) - base
    }
}
