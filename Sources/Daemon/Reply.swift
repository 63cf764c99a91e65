import HashStore
import NIOCore
import WireProtocol

/// One answer as the connection writes it: text built whole, or a KNN/RANGE answer
/// written out piece by piece (`NeighborStream`).
enum Reply {
    case text(String)
    /// `OK <n>`: a write's answer, formatted into the output without a string.
    case ok(UInt64)
    case stream(NeighborStream)

    /// Writes `OK <n>\n` at the end of `buffer`; returns its length.
    static func writeOK(_ n: UInt64, into buffer: inout ByteBuffer) -> Int {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: "OK " + up to 20 digits + "\n"
        return withUnsafeMutableBytes(of: &digits) { raw in
            var end = raw.count - 1
            raw[end] = UInt8(ascii: "\n")
            var v = n
            repeat {
                end -= 1
                raw[end] = UInt8(ascii: "0") + UInt8(v % 10)
                v /= 10
            } while v > 0
            end -= 3
            raw[end] = UInt8(ascii: "O"); raw[end + 1] = UInt8(ascii: "K"); raw[end + 2] = UInt8(ascii: " ")
            let line = UnsafeRawBufferPointer(rebasing: raw[end...])
            buffer.writeBytes(line)
            return line.count
        }
    }
}

/// A KNN or RANGE answer too large to build whole, written to the socket in pieces as
/// the connection can take them (PROTOCOL.md section 6, "Large answers"): the bytes are
/// exactly those of the whole answer. The results (ids and distances, 8 bytes each) are
/// fixed when the query runs; keys are looked up piece by piece under the store's read
/// lock, so a connection holds at most one piece of text at a time, and the answer is the
/// store as it was at the query even when items are deleted while it is written.
///
/// Used on its connection's event loop only.
final class NeighborStream {
    /// Answers with more results than this are streamed; smaller ones are built whole.
    static let threshold = 2048
    /// Bytes of text per piece.
    static let pieceBytes = 64 * 1024

    private let store: HashStore
    private let results: [UInt64]
    /// Results written so far; -1 before the count line.
    private var next = -1

    /// Keeps the keys of the results' ids resolvable (deleted or not) while the answer
    /// lives (`HashStore.pinKeys`, taken before the search).
    private let pin: KeyPin

    init(store: HashStore, results: [UInt64], pin: KeyPin) {
        self.store = store
        self.results = results
        self.pin = pin
    }

    var count: Int { results.count }
    var isFinished: Bool { next == results.count }

    /// The whole answer as one text (for answers of at most `threshold` results): its
    /// exact size first, then the bytes, in two passes over the keys.
    func text() -> String {
        var size = ResponseFormatter.countLineBytes(results.count)
        _ = store.forEachKey(of: results[...]) { key, distance in
            size += ResponseFormatter.neighborLineBytes(keyBytes: key.count, distance: distance)
            return true
        }
        return String(unsafeUninitializedCapacity: size) { out in
            var at = 0
            ResponseFormatter.writeCountLine(results.count, into: out, at: &at)
            _ = store.forEachKey(of: results[...]) { key, distance in
                ResponseFormatter.writeNeighborLine(key: key, distance: distance, into: out, at: &at)
                return true
            }
            next = results.count
            return at
        }
    }

    /// Writes the next piece, whole lines only, into `out` (at least
    /// `ResponseFormatter.neighborLineMaxBytes` long); returns the bytes written.
    func writePiece(into out: UnsafeMutableBufferPointer<UInt8>) -> Int {
        precondition(out.count >= ResponseFormatter.neighborLineMaxBytes, "piece buffer too small")
        var at = 0
        if next < 0 {
            ResponseFormatter.writeCountLine(results.count, into: out, at: &at)
            next = 0
        }
        let limit = out.count - ResponseFormatter.neighborLineMaxBytes
        next += store.forEachKey(of: results[next...]) { key, distance in
            guard at <= limit else { return false }
            ResponseFormatter.writeNeighborLine(key: key, distance: distance, into: out, at: &at)
            return true
        }
        return at
    }
}
