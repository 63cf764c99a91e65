import Foundation
import WireProtocol
#if canImport(Glibc)
import Glibc
#endif

public struct ClientError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Connecting to a Unix stream socket.
public enum UnixSocket {
    /// A connected descriptor (the caller closes it); on failure nothing stays open.
    public static func connect(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ClientError("cannot create a socket: \(String(cString: strerror(errno)))") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            close(fd)
            throw ClientError("socket path \(path) is too long")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else {
            let e = String(cString: strerror(errno))
            close(fd)
            throw ClientError("cannot connect to \(path): \(e) (is gdhd running? see --socket)")
        }
        return fd
    }
}

/// A blocking client connection to the daemon's Unix socket. Requests may be
/// pipelined: `send` any number, then `receive` their responses in order.
public final class LineClient {
    private let fd: Int32
    private var reader = ResponseReader(maxLineBytes: 64 << 20)
    private var readBuffer = [UInt8](repeating: 0, count: 1 << 16)
    private var outBuffer: [UInt8] = []

    public init(socketPath: String) throws {
        // The descriptor is stored only once connected: a class whose initialiser throws
        // after its properties are set runs its deinit, which would close it a second time
        // (and so whatever another thread had opened under the same number meanwhile).
        fd = try UnixSocket.connect(socketPath)
    }

    deinit { close(fd) }

    /// The process id of the daemon at the other end (the socket's peer credentials),
    /// or nil where the system does not tell.
    public var peerProcessID: Int32? {
        // struct ucred { pid_t pid; uid_t uid; gid_t gid; } (Glibc hides it behind _GNU_SOURCE).
        var cred: (pid: Int32, uid: UInt32, gid: UInt32) = (0, 0, 0)
        var len = socklen_t(MemoryLayout.size(ofValue: cred))
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0, cred.pid > 0 else { return nil }
        return cred.pid
    }

    /// Queues one request line (without `\n`); `flush` or `receive` sends it.
    public func send(_ line: String) {
        var line = line
        line.withUTF8 { bytes in send { $0.append(contentsOf: bytes) } }
    }

    /// Queues one request line that `write` appends to the buffer it is given (without
    /// `\n`): no String made.
    public func send(_ write: (inout [UInt8]) -> Void) {
        let start = outBuffer.count
        write(&outBuffer)
        outBuffer.withUnsafeBufferPointer { b in
            reader.expect(multiLine: RequestParser.expectsList(bytes: UnsafeBufferPointer(rebasing: b[start...])))
        }
        outBuffer.append(0x0A)
    }

    /// Sends every queued request.
    public func flush() throws {
        var off = 0
        while off < outBuffer.count {
            let n = outBuffer.withUnsafeBytes { write(fd, $0.baseAddress! + off, outBuffer.count - off) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ClientError("cannot send to the daemon: \(String(cString: strerror(errno)))")
            }
            off += n
        }
        outBuffer.removeAll(keepingCapacity: true)
    }

    /// Requests sent whose responses have not been received.
    public var awaiting: Int { reader.awaiting }

    /// The next response, in request order (blocks).
    public func receive() throws -> Response {
        if !outBuffer.isEmpty { try flush() }
        while true {
            do {
                if let r = try reader.next() { return r }
            } catch {
                throw ClientError("unexpected answer from the daemon: \(error)")
            }
            let n = readBuffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ClientError("cannot read from the daemon: \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw ClientError("the daemon closed the connection") }
            reader.feed(readBuffer[0..<n])
        }
    }

    /// Sends `count` requests (`line(i)` for i in 0..<count) keeping at most `window`
    /// unanswered, in chunks of a quarter window, and hands each response to
    /// `response(i, r)` in order. The daemon batches such a stream into shared commits.
    public func pipeline(count: Int, window: Int, line: (Int) -> String,
                         response: (Int, Response) throws -> Void) throws {
        try pipeline(count: count, window: window, bytes: { i, out in
            var s = line(i)
            s.withUTF8 { out.append(contentsOf: $0) }
        }, response: response)
    }

    /// `pipeline` with request i written by `line(i, &buffer)`, which appends its bytes
    /// (without `\n`) to the buffer: no String per request.
    public func pipeline(count: Int, window: Int, bytes line: (Int, inout [UInt8]) -> Void,
                         response: (Int, Response) throws -> Void) throws {
        var sent = 0, received = 0
        while received < count {
            while sent < count && sent - received < window {
                let end = min(count, sent + max(1, window / 4))
                for i in sent..<end { send { line(i, &$0) } }
                sent = end
                try flush()
            }
            try response(received, try receive())
            received += 1
        }
    }

    /// Sends one request and waits for its response.
    public func request(_ line: String) throws -> Response {
        send(line)
        return try receive()
    }
}
