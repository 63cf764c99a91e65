import NIOCore

/// One framed request: a line's bytes (without `\n`), or the news that a line was
/// longer than the limit (its bytes were dropped as they arrived).
public enum FramedLine: Equatable {
    case line(ByteBuffer)
    case tooLong
}

/// Splits the inbound byte stream at `\n`. A line longer than `maxLength` bytes is not
/// buffered: once the limit is passed its bytes are discarded as they arrive, and one
/// `.tooLong` is emitted when its `\n` comes. Bytes after the last `\n` at end of
/// input are dropped (an unfinished request is not executed).
public struct LineDecoder: ByteToMessageDecoder {
    public typealias InboundOut = FramedLine

    public let maxLength: Int
    /// True while discarding the rest of an over-long line.
    private var discarding = false
    /// How far into the buffer a `\n` has already been looked for.
    private var scanned = 0

    public init(maxLength: Int) {
        self.maxLength = maxLength
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let readable = buffer.readableBytesView
        let from = readable.index(readable.startIndex, offsetBy: scanned)
        if let nl = readable[from...].firstIndex(of: UInt8(ascii: "\n")) {
            let length = nl - readable.startIndex
            scanned = 0
            if discarding {
                buffer.moveReaderIndex(forwardBy: length + 1)
                discarding = false
                context.fireChannelRead(wrapInboundOut(.tooLong))
                return .continue
            }
            if length > maxLength {
                buffer.moveReaderIndex(forwardBy: length + 1)
                context.fireChannelRead(wrapInboundOut(.tooLong))
                return .continue
            }
            let line = buffer.readSlice(length: length)!
            buffer.moveReaderIndex(forwardBy: 1)
            context.fireChannelRead(wrapInboundOut(.line(line)))
            return .continue
        }
        // No line end yet.
        if discarding || buffer.readableBytes > maxLength {
            discarding = true
            buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
            scanned = 0
        } else {
            scanned = buffer.readableBytes
        }
        return .needMoreData
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
        return .needMoreData
    }
}
